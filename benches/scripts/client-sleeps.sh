#!/usr/bin/env bash
# Where the throughput scenario's idle CPU time shows up (100 connections x 16 in flight x 64 B,
# one load_client thread): per round, the stock baseline, the baseline in Switchboard's thread
# layout (--thread-per-worker) and `switchboard serve --mode echo --codec raw`, each measured
# for 1 s inside its load with `perf sched record`, and one line each:
#   msgs/s, the client thread's run time on each CPU (ms), how often it was scheduled in (each
#   time after it slept waiting for answers, or was preempted), the server's threads' run
#   time (ms), and the time the CPUs were idle (ms, both CPUs together).
#   benches/scripts/client-sleeps.sh [ROUNDS]      (default 4 rounds, ~1 min)
# Needs perf (apt-get install -y linux-perf) and a release build:
# cargo build --release -p switchboard-cli -p switchboard-benches
set -euo pipefail
rounds=${1:-4}
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/benches/scripts/common.sh"
bin=$here/target/release
require perf linux-perf
scratch_dir
export RUST_LOG=warn

# run LABEL SERVER_COMMAND...
run() {
    local label=$1 client rate
    shift
    start_server "$out" "$@"
    "$bin/load_client" "$addr" --connections 100 --pipeline 16 --size 64 --duration 3 \
        --warmup 1 --server-pid "$server" >"$out/load.json" &
    client=$!
    sleep 2
    if ! perf sched record -o "$out/sched.data" -- sleep 1 >/dev/null 2>"$out/perf.err"; then
        cat "$out/perf.err" >&2
        kill "$client" 2>/dev/null || true
        exit 1
    fi
    wait "$client"
    stop_server
    rate=$(python3 -c "import json; print(round(json.load(open('$out/load.json'))['msgs_per_s']))")
    perf sched timehist -i "$out/sched.data" 2>/dev/null | awk -v label="$label" -v rate="$rate" '
        NR > 3 && $2 ~ /^\[/ {
            if ($3 ~ /load_client/) { client[$2] += $NF; woken++ }
            else if ($3 ~ /idle/) idle += $NF
            else if ($3 ~ /baseline|actix|tokio|switchboard/) served += $NF
        }
        END {
            printf "%-6s %9d msgs/s  client %4.0f ms on CPU 0, %4.0f on CPU 1, scheduled in %5d times  server %4.0f ms  idle %4.0f ms\n",
                label, rate, client["[0000]"], client["[0001]"], woken, served, idle
        }'
}

for _ in $(seq "$rounds"); do
    run base "$bin/baseline_echo"
    run layout "$bin/baseline_echo" --thread-per-worker
    run sb "$bin/switchboard" serve --mode echo --codec raw --port 0
done
