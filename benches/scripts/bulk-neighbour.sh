#!/usr/bin/env bash
# A light connection beside bulk ones on the same worker: how long its round trips wait
# while its neighbours move 64 KiB messages as fast as they can.
#   benches/scripts/bulk-neighbour.sh [ROUNDS] [SWITCHBOARD_BIN ...]   (default 5 rounds)
# Each round starts, one after the other, the baseline (`baseline_echo --workers 1`) and each
# given `switchboard` binary (default: this tree's release build) as `serve --mode echo --codec
# raw --workers 1`. Against each: `load_client --connections 2 --pipeline 4 --size 65536` (the
# bulk neighbours, 4 s) and, starting 0.5 s in, `load_client --connections 1 --pipeline 1
# --size 64` (the light connection, 3 s). One line per run: the light connection's round trip
# p50 / p99 / p99.9 (µs) and the bulk connections' MB/s. Several binaries run interleaved, so
# two builds can be compared in one run of the machine.
# Needs a release build: cargo build --release -p switchboard-cli -p switchboard-benches
set -euo pipefail
rounds=${1:-5}
shift || true
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$here/target/release
. "$here/benches/scripts/common.sh"
if [ $# -eq 0 ]; then set -- "$bin/switchboard"; fi
scratch_dir

# run LABEL SERVER_COMMAND...
run() {
    local label=$1
    shift
    start_server "$out" "$@"
    "$bin/load_client" "$addr" --connections 2 --pipeline 4 --size 65536 --duration 4 \
        --warmup 0 >"$out/bulk.json" 2>/dev/null &
    local bulk=$!
    # The light client starts once the bulk ones are moving; load_client has no event for
    # that, and the bulk run outlasts the light one by 0.5 s on either side.
    sleep 0.5
    "$bin/load_client" "$addr" --connections 1 --pipeline 1 --size 64 --duration 3 \
        --warmup 0 >"$out/light.json" 2>/dev/null
    wait "$bulk"
    stop_server
    python3 - "$label" "$out/light.json" "$out/bulk.json" <<'PY'
import json, sys
label, light, bulk = sys.argv[1:]
l = json.load(open(light))["latency_us"]
b = json.load(open(bulk))
print(f"{label:<40} light p50 {l['p50']:8.0f}  p99 {l['p99']:8.0f}  p99.9 {l['p999']:8.0f} us   bulk {b['mb_per_s']:6.0f} MB/s")
PY
}

for round in $(seq "$rounds"); do
    echo "round $round"
    run baseline "$bin/baseline_echo" --workers 1
    for sb in "$@"; do
        run "$sb" "$sb" serve --mode echo --codec raw --port 0 --workers 1
    done
done
