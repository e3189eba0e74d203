// SPDX-License-Identifier: Apache-2.0

// Command check decodes every Kubernetes manifest of cairn's deployment
// strictly into the Kubernetes API types and checks the invariants that the
// CSI node plugin relies on.  A field that is misspelt, misplaced or of the
// wrong type is silently dropped by `kubectl apply` and by most linters; it
// fails here.  The invariants (docs/KUBERNETES.md) are the ones a reviewer
// would otherwise have to remember: Bidirectional mount propagation only in
// privileged containers, every image pinned, the CSIDriver's fields, the
// plugin DaemonSet's sidecars, priority, devices and host paths.
//
// Usage:
//
//	check [-rendered FILE]... DIR...
//
// Each DIR is walked for *.yaml and *.yml files; a directory holding a
// kustomization.yaml is read with its images: overrides applied (the only
// kustomize transformer that changes what is checked here) and must list
// every manifest beside it.  Each -rendered FILE is one multi-document
// stream, typically `kubectl kustomize DIR` output.  All objects from all
// arguments are checked together, so that references (a PV's secret, the
// CSIDriver a volume names) resolve across files.
//
// Exit status: 0 when everything decodes and holds, 1 with one line per
// problem on stderr otherwise, 2 on a usage error.
package main

import (
	"flag"
	"fmt"
	"os"
)

type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var rendered stringList
	flag.Var(&rendered, "rendered", "a rendered multi-document manifest stream to check (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(),
			"usage: check [-rendered FILE]... DIR...\n\n"+
				"Decodes every manifest under each DIR (and each rendered FILE)\n"+
				"strictly into the Kubernetes API types and checks cairn's\n"+
				"deployment invariants.  Exit status: 0 ok, 1 problems found,\n"+
				"2 usage error.\n\nOptions:\n")
		flag.PrintDefaults()
	}
	for _, a := range os.Args[1:] {
		if a == "-h" || a == "-help" || a == "--help" {
			flag.CommandLine.SetOutput(os.Stdout)
			flag.Usage()
			os.Exit(0)
		}
	}
	flag.Parse()
	if flag.NArg() == 0 && len(rendered) == 0 {
		flag.Usage()
		os.Exit(2)
	}

	set := newObjectSet()
	for _, dir := range flag.Args() {
		set.loadDir(dir)
	}
	for _, f := range rendered {
		set.loadFile(f, nil)
	}
	problems := set.check()
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "check: %d problem(s) in %d object(s)\n", len(problems), len(set.objects))
		os.Exit(1)
	}
	fmt.Printf("check: %d object(s) from %d file(s) decoded strictly, all invariants hold\n",
		len(set.objects), set.files)
}
