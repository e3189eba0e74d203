// SPDX-License-Identifier: Apache-2.0

// linkproxy puts a TCP server behind a link like one connection to an
// object store in a data centre: every connection gets its own bandwidth
// (bytes from the server are paced to -mb-per-s) and every byte from the
// client reaches the server -latency-ms later (so each request's first
// byte comes back at least that late).  Parallel connections add up, as
// they do against S3, which is what a loopback server cannot show.
//
// It is test tooling for bench/remote.sh: the Python fault proxy of the
// integration tests paces too, but one Python thread carries only a few
// hundred MB/s for all connections together.
//
// Usage: linkproxy -upstream HOST:PORT [-listen ADDR] [-mb-per-s N]
//
//	[-latency-ms N] [-port-file FILE]
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

type link struct {
	upstream  string
	bytesPerS float64 // 0: unpaced
	latency   time.Duration
}

// delayed is one read from the client, due at the server at due.
type delayed struct {
	data []byte
	due  time.Time
}

// forwardDelayed copies client bytes to the server, each read arriving
// latency after it left the client: a delay line, so a request body in many
// reads is delayed once, not once per read.
func (l *link) forwardDelayed(dst, src net.Conn) {
	queue := make(chan delayed, 1024)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- delayed{buf[:n], time.Now().Add(l.latency)}
			}
			if err != nil {
				return
			}
		}
	}()
	for d := range queue {
		if wait := time.Until(d.due); wait > 0 {
			time.Sleep(wait)
		}
		if _, err := dst.Write(d.data); err != nil {
			break
		}
	}
	for range queue { // let the reader finish
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// burst is how far a paced connection may catch up after sleeping too long.
const burst = 20 * time.Millisecond

// forwardPaced copies server bytes to the client at bytesPerS.
func (l *link) forwardPaced(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	next := time.Now()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if l.bytesPerS > 0 {
				// Sleeps overshoot; a small burst allowance keeps
				// the average at the rate without letting an idle
				// connection save up credit.
				if floor := time.Now().Add(-burst); next.Before(floor) {
					next = floor
				}
				next = next.Add(time.Duration(float64(n) / l.bytesPerS * float64(time.Second)))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			}
		}
		if err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func (l *link) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", l.upstream)
	if err != nil {
		log.Printf("linkproxy: %v", err)
		return
	}
	defer server.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.forwardDelayed(server, client) }()
	go func() { defer wg.Done(); l.forwardPaced(client, server) }()
	wg.Wait()
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "HOST:PORT of the server")
	mbPerS := flag.Float64("mb-per-s", 0, "bandwidth per connection, 10^6 bytes/s (0: unpaced)")
	latencyMs := flag.Float64("latency-ms", 0, "delay of every byte from the client, in ms")
	portFile := flag.String("port-file", "", "write the listening port here")
	flag.Parse()
	if *upstream == "" || *mbPerS < 0 || *latencyMs < 0 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: linkproxy -upstream HOST:PORT [-listen ADDR] [-mb-per-s N] [-latency-ms N] [-port-file FILE]")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("linkproxy: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
			log.Fatalf("linkproxy: %v", err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			log.Fatalf("linkproxy: %v", err)
		}
	}
	l := &link{
		upstream:  *upstream,
		bytesPerS: *mbPerS * 1e6,
		latency:   time.Duration(*latencyMs * float64(time.Millisecond)),
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatalf("linkproxy: %v", err)
		}
		go l.serve(c)
	}
}
