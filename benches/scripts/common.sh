# Sourced by the scripts beside it: starting and stopping the server under test.

# start_server OUT_DIR COMMAND...: runs COMMAND (a server that prints `listening on ADDR` on
# stdout, as `switchboard serve` and `baseline_echo` do; its log goes nowhere, so the run
# measures the server and not its logging), and sets `server` to its PID and `addr` to ADDR.
start_server() {
    local dir=$1
    shift
    "$@" >"$dir/serve" 2>/dev/null &
    server=$!
    for _ in $(seq 50); do grep -q "listening on" "$dir/serve" && break; sleep 0.1; done
    addr=$(awk '/listening on/ {print $3; exit}' "$dir/serve")
    if [ -z "$addr" ]; then
        echo "no 'listening on' line from: $*" >&2
        exit 1
    fi
}

# stop_server: stops the server start_server started.
stop_server() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
}

# scratch_dir: sets `out` to a fresh directory, removed on exit together with any server
# start_server left running.
scratch_dir() {
    out=$(mktemp -d)
    server=
    # A kill that fails (the server already gone) must not stop the clean-up under `set -e`.
    trap '{ [ -n "$server" ] && kill "$server"; } 2>/dev/null || true; rm -rf "$out"' EXIT
}

# require TOOL PACKAGE: stops with an install hint when TOOL is missing.
require() {
    command -v "$1" >/dev/null || { echo "$1 missing: apt-get install -y $2" >&2; exit 1; }
}
