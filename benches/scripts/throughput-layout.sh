#!/usr/bin/env bash
# The throughput scenario (100 connections x 16 in flight x 64 B) under different thread
# layouts, to separate what the server does from where the kernel runs the threads:
#   benches/scripts/throughput-layout.sh [ROUNDS]      (default 4 rounds, ~3 min)
# Each round runs, one after the other, the baseline and `switchboard serve --mode echo
# --codec raw` with
#   free      2 workers, no CPU affinity (the e2e scenario); the baseline once more with
#             --thread-per-worker (Switchboard's thread layout: a listener thread, each worker
#             its own runtime and epoll, no work stealing);
#   pinned    2 workers all on CPU 0, load_client on CPU 1 (taskset): no thread of one
#             process ever shares a CPU with the other;
#   1 worker  --workers 1, no affinity.
# and prints one line per run: msgs/s, p99, the busiest connection's messages over the least
# busy one's (load_client --per-connection), the server's CPU per message, and the server's
# context switches over the measured window (load_client's `server_context_switches`) per
# 1,000 messages.
# Needs a release build: cargo build --release -p switchboard-cli -p switchboard-benches
set -euo pipefail
rounds=${1:-4}
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/benches/scripts/common.sh"
bin=$here/target/release
require taskset util-linux
scratch_dir

# Every CPU: the "free" layout.
all_cpus=0-$(($(nproc) - 1))

# run LABEL SERVER_PIN CLIENT_PIN SERVER_COMMAND...
run() {
    local label=$1 server_pin=$2 client_pin=$3
    shift 3
    start_server "$out" taskset -c "$server_pin" "$@"
    taskset -c "$client_pin" "$bin/load_client" "$addr" --connections 100 --pipeline 16 \
        --size 64 --duration 3 --warmup 1 --server-pid "$server" --per-connection \
        >"$out/load.json"
    stop_server
    python3 - "$label" "$out/load.json" <<'PY'
import json, sys
label, path = sys.argv[1:]
r = json.load(open(path))
counts = [c["messages"] for c in r["connections"]]
m = r["messages"]
print(f"{label:28s} {r['msgs_per_s'] / 1e6:6.3f} M msgs/s  p99 {r['latency_us']['p99'] / 1000:6.2f} ms"
      f"  max/min {max(counts) / max(1, min(counts)):5.2f}  {r['server_cpu_s'] * 1e9 / m:5.0f} ns/msg"
      f"  {r['server_context_switches'] / m * 1000:5.2f} switches/1k msgs")
PY
}

export RUST_LOG=warn
sb=("$bin/switchboard" serve --mode echo --codec raw --port 0)
base=("$bin/baseline_echo")
for round in $(seq "$rounds"); do
    echo "round $round"
    run "baseline free" "$all_cpus" "$all_cpus" "${base[@]}"
    run "switchboard free" "$all_cpus" "$all_cpus" "${sb[@]}"
    run "baseline free, per worker" "$all_cpus" "$all_cpus" "${base[@]}" --thread-per-worker
    run "baseline pinned" 0 1 "${base[@]}"
    run "switchboard pinned" 0 1 "${sb[@]}"
    run "baseline 1 worker" "$all_cpus" "$all_cpus" "${base[@]}" --workers 1
    run "switchboard 1 worker" "$all_cpus" "$all_cpus" "${sb[@]}" --workers 1
done
