# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Loopback HTTP servers for the remote-store tests and benchmarks, sourced
# (after lib.sh, when a test uses it): nginx serving a directory, which is
# all an http:// store needs, and tests/integration/faultproxy.py in front
# of it.
#
# Each nginx is a private instance: a generated config, pid file, logs and
# temp paths in its own directory, listening on 127.0.0.1 on a port picked
# free at start, with the master in the foreground of a background job
# (`daemon off`) so that its pid is ours to stop.  It serves files with
# sendfile, keep-alive and byte ranges, like a production static server.
# Every server started here is stopped at exit, before the EXIT trap that
# was set when the first one started (lib.sh's unmount and cleanup): with
# the backend gone, a read still pending in a mount fails at once and the
# unmount cannot hang on it.
#
#   nginx_start ROOT [--tls CERT KEY] [--no-access-log]
#       serves ROOT; sets NGINX_PORT, NGINX_URL (http(s)://127.0.0.1:PORT),
#       NGINX_DIR (config and logs: access.log, error.log), NGINX_PID; each
#       access.log line is: STATUS BYTES METHOD URI range="RANGE" t=SECS PORT
#   nginx_stop DIR           stops the instance whose directory is DIR
#   faultproxy_start UPSTREAM_PORT [faultproxy.py options...]
#       sets FAULTPROXY_PORT, FAULTPROXY_URL, FAULTPROXY_DIR (control,
#       stats.json, proxy.log), FAULTPROXY_PID
#   faultproxy_control DIR KEY=VALUE...   rewrites its control file
#   faultproxy_stop DIR      stops it; its fault counts are in DIR/stats.json
#   versitygw_start BIN DATA LOG ACCESS_KEY SECRET_KEY [ARGS...]
#       versitygw (S3, signatures checked) on a free port of 127.0.0.1,
#       serving the directory DATA (posix backend), the root credentials in
#       its environment (never argv), ARGS before the backend, its output
#       appended to LOG; sets GW_PORT, GW_PID; stopped at exit.  Returns 1,
#       LOG on stderr, when it does not start.
#   at_exit CMD...           runs CMD at exit (last registered, first run)
#   free_port                prints a TCP port nobody listens on right now
#   _wait_listening PORT PID SECS   until PORT accepts (1 if PID died first)
#   _stop_pid PID NAME       SIGTERM, SIGKILL after 10 s, reaped (other
#                            servers a test starts, e.g. versitygw, use these)

_servers_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FAULTPROXY=$_servers_dir/faultproxy.py
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}

_slog() {
        if declare -F log >/dev/null; then
                log "$@"
        else
                printf '[servers] %s\n' "$*" >&2
        fi
}

# ---------------------------------------------------------------- exit hooks

_exit_hooks=()
_exit_hooks_installed=0
_exit_prev_trap=

_run_exit_hooks() {
        local rc=$? i
        set +e
        trap - ERR
        for ((i = ${#_exit_hooks[@]} - 1; i >= 0; i--)); do
                eval "${_exit_hooks[i]}"
        done
        _exit_hooks=()
        if [[ -n "$_exit_prev_trap" ]]; then
                # The earlier trap (lib.sh's _cleanup) reads the exit status from $?.
                (exit "$rc")
                eval "$_exit_prev_trap"
        fi
        exit "$rc"
}

# at_exit CMD [ARGS...]: the words are quoted now and run at exit.
at_exit() {
        local cmd
        printf -v cmd '%q ' "$@"
        _exit_hooks+=("$cmd")
        if ((!_exit_hooks_installed)); then
                local prev
                prev=$(trap -p EXIT)
                if [[ -n "$prev" ]]; then
                        # "trap -- 'CMD' EXIT": let the shell unquote CMD.
                        eval "set -- $prev"
                        _exit_prev_trap=$3
                fi
                trap _run_exit_hooks EXIT
                _exit_hooks_installed=1
        fi
}

# ---------------------------------------------------------------- helpers

free_port() {
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# _wait_listening PORT PID SECS: until something accepts on PORT, or PID dies.
_wait_listening() {
        local port=$1 pid=$2 secs=$3 i
        for ((i = 0; i < secs * 20; i++)); do
                kill -0 "$pid" 2>/dev/null || return 1
                if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                        return 0
                fi
                sleep 0.05
        done
        return 1
}

# _stop_pid PID NAME: SIGTERM, then SIGKILL (with its children) after 10 s.
_stop_pid() {
        local pid=$1 name=$2 i kids
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        kids=$(pgrep -P "$pid" 2>/dev/null || true)
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
                _slog "$name (pid $pid) ignored SIGTERM for 10s; killing it"
                # shellcheck disable=SC2086
                kill -KILL "$pid" $kids 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        return 0
}

# ---------------------------------------------------------------- versitygw

versitygw_start() {
        local bin=$1 data=$2 logf=$3 access_key=$4 secret_key=$5 attempt
        shift 5
        mkdir -p "$data"
        for attempt in 1 2 3 4 5; do
                GW_PORT=$(free_port)
                ROOT_ACCESS_KEY_ID=$access_key ROOT_SECRET_ACCESS_KEY=$secret_key \
                        "$bin" --port "127.0.0.1:$GW_PORT" --region us-east-1 "$@" --quiet \
                        posix "$data" >>"$logf" 2>&1 &
                GW_PID=$!
                if _wait_listening "$GW_PORT" "$GW_PID" 20; then
                        at_exit _stop_pid "$GW_PID" versitygw
                        _slog "versitygw (pid $GW_PID) serves $data at http://127.0.0.1:$GW_PORT"
                        return 0
                fi
                _stop_pid "$GW_PID" versitygw
                _slog "versitygw did not start on port $GW_PORT (attempt $attempt)"
        done
        cat "$logf" >&2
        return 1
}

# ---------------------------------------------------------------- nginx

declare -A _nginx_pids=() # instance dir -> master pid

nginx_start() {
        local root=$1 tls_cert='' tls_key='' access_log=1 dir port conf attempt pid scheme=http
        shift
        while (($#)); do
                case $1 in
                --tls) tls_cert=$2 tls_key=$3; shift 3 ;;
                --no-access-log) access_log=0; shift ;;
                *) _slog "nginx_start: unknown option $1"; return 2 ;;
                esac
        done
        [[ -x "$NGINX_BIN" ]] || { _slog "nginx is not installed (scripts/deps.sh installs it)"; return 1; }
        [[ -d "$root" ]] || { _slog "nginx_start: '$root' is not a directory"; return 1; }
        root=$(realpath "$root")
        dir=$(mktemp -d "${T:-${TMPDIR:-/tmp}}/nginx.XXXXXX")
        mkdir -p "$dir/tmp"
        [[ -n "$tls_cert" ]] && scheme=https
        for attempt in 1 2 3 4 5; do
                port=$(free_port)
                conf=$dir/nginx.conf
                {
                        # As root the workers would run as nobody, who may not be able to
                        # read a scratch directory (mktemp -d makes them 0700).
                        ((EUID == 0)) && echo "user root root;"
                        cat <<EOF
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    types { }
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    # One request a line, fields without spaces: STATUS BYTES METHOD URI range="R" t=SECS PORT
    log_format cairn '\$status \$body_bytes_sent \$request_method \$request_uri '
                     'range="\$http_range" t=\$request_time \$remote_port';
EOF
                        if ((access_log)); then
                                echo "    access_log $dir/access.log cairn;"
                        else
                                echo "    access_log off;"
                        fi
                        echo "    server {"
                        if [[ -n "$tls_cert" ]]; then
                                echo "        listen 127.0.0.1:$port ssl;"
                                echo "        ssl_certificate $tls_cert;"
                                echo "        ssl_certificate_key $tls_key;"
                        else
                                echo "        listen 127.0.0.1:$port;"
                        fi
                        cat <<EOF
        root $root;
        autoindex off;
        location / { try_files \$uri =404; }
    }
}
EOF
                } >"$conf"
                "$NGINX_BIN" -p "$dir" -e "$dir/error.log" -c "$conf" >"$dir/stdout" 2>&1 &
                pid=$!
                if _wait_listening "$port" "$pid" 10; then
                        _nginx_pids[$dir]=$pid
                        at_exit nginx_stop "$dir"
                        NGINX_PORT=$port
                        NGINX_URL=$scheme://127.0.0.1:$port
                        NGINX_DIR=$dir
                        NGINX_PID=$pid
                        _slog "nginx (pid $pid) serves $root at $NGINX_URL"
                        return 0
                fi
                _stop_pid "$pid" nginx
                if ! grep -q 'Address already in use' "$dir/error.log" 2>/dev/null; then
                        break
                fi
                _slog "nginx: port $port was taken meanwhile (attempt $attempt)"
                : >"$dir/error.log"
        done
        _slog "nginx failed to start; its error log ($dir/error.log):"
        cat "$dir/error.log" "$dir/stdout" >&2 2>/dev/null || true
        return 1
}

nginx_stop() {
        local dir=$1 pid=${_nginx_pids[$1]:-}
        [[ -n "$pid" ]] || return 0
        _stop_pid "$pid" nginx
        unset "_nginx_pids[$dir]"
        if grep -qE '\[(emerg|alert|crit)\]' "$dir/error.log" 2>/dev/null; then
                _slog "nginx error log ($dir/error.log) has serious entries:"
                grep -E '\[(emerg|alert|crit)\]' "$dir/error.log" | tail -n 20 >&2
        fi
        return 0
}

# ---------------------------------------------------------------- faultproxy

declare -A _faultproxy_pids=() # instance dir -> pid

faultproxy_start() {
        local upstream_port=$1 dir pid port i
        shift
        dir=$(mktemp -d "${T:-${TMPDIR:-/tmp}}/faultproxy.XXXXXX")
        : >"$dir/control"
        python3 "$FAULTPROXY" --upstream "127.0.0.1:$upstream_port" --control "$dir/control" \
                --stats-file "$dir/stats.json" --log "$dir/proxy.log" "$@" \
                >"$dir/port" 2>"$dir/stderr" &
        pid=$!
        for ((i = 0; i < 200; i++)); do
                port=$(head -n 1 "$dir/port" 2>/dev/null || true)
                [[ "$port" =~ ^[0-9]+$ ]] && break
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
        done
        if ! [[ "$port" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
                _slog "faultproxy failed to start:"
                cat "$dir/stderr" >&2
                _stop_pid "$pid" faultproxy
                return 1
        fi
        _faultproxy_pids[$dir]=$pid
        at_exit faultproxy_stop "$dir"
        FAULTPROXY_PORT=$port
        FAULTPROXY_URL=http://127.0.0.1:$port
        FAULTPROXY_DIR=$dir
        FAULTPROXY_PID=$pid
        _slog "faultproxy (pid $pid) on $FAULTPROXY_URL in front of 127.0.0.1:$upstream_port ($*)"
}

# faultproxy_control DIR KEY=VALUE...: replaces the control file atomically;
# the proxy applies it to the next request (and within half a second).
faultproxy_control() {
        local dir=$1
        shift
        printf '%s\n' "$@" >"$dir/control.tmp"
        mv "$dir/control.tmp" "$dir/control"
}

faultproxy_stop() {
        local dir=$1 pid=${_faultproxy_pids[$1]:-}
        [[ -n "$pid" ]] || return 0
        _stop_pid "$pid" faultproxy
        unset "_faultproxy_pids[$dir]"
        if [[ -s "$dir/stderr" ]]; then
                _slog "faultproxy stderr ($dir/stderr):"
                tail -n 30 "$dir/stderr" >&2
        fi
        return 0
}
