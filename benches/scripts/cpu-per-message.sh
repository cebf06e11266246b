#!/usr/bin/env bash
# Server CPU per echoed message (task-clock ns), for paired comparisons of two builds:
#   benches/scripts/cpu-per-message.sh BIN
# starts `BIN serve --mode echo --codec raw --port 0`, counts its task-clock with `perf stat`
# while `load_client --connections 100 --pipeline 16 --size 64 --duration 3` runs, and prints
# the build, its CPU (ms), the messages echoed and the ns per message. Run two builds
# interleaved (A B B A ...): one run's figure drifts with the machine by more than the
# difference being looked for.
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
load_client=$here/target/release/load_client
. "$here/benches/scripts/common.sh"
scratch_dir
start_server "$out" "$bin" serve --mode echo --codec raw --port 0
perf stat -x, -e task-clock -p "$server" -o "$out/perf" &
perf=$!
sleep 0.3
"$load_client" "$addr" --connections 100 --pipeline 16 --size 64 --duration 3 --warmup 0 \
    >"$out/load.json" 2>/dev/null
kill -INT "$perf"
wait "$perf" || true
stop_server
python3 - "$bin" "$out/perf" "$out/load.json" <<'PY'
import json, sys
bin, perf, load = sys.argv[1:]
ms = float(next(l for l in open(perf) if "task-clock" in l).split(",")[0])
messages = json.load(open(load))["messages"]
print(bin, round(ms), messages, round(ms * 1e6 / messages))
PY
