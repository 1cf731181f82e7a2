#!/usr/bin/env bash
# Ingest to playlist: time from ffmpeg writing a segment's last fragment
# (read from its output socket and cut) to the segment being stored and
# listed in our playlist. Usage: scripts/bench/ingest_latency.sh [seconds]
source "$(dirname "$0")/common.sh"
SECONDS_LIVE="${1:-60}"
need ffmpeg curl python3
build
RUST_LOG="info,streamweave::ingest_latency=debug" start_server "$WORK/server.log"
create_stream "ingest latency benchmark"
publish 1280x720 "$SECONDS_LIVE"
wait_ended
python3 - "$WORK/server.log" <<'PY'
import re, sys
values = sorted(int(m.group(1)) for m in re.finditer(r"latency_us=(\d+)", open(sys.argv[1]).read()))
if not values:
    sys.exit("no latency samples in the log")
def pct(p): return values[min(len(values) - 1, int(len(values) * p / 100))] / 1000
print(f"segments: {len(values)} (all renditions)")
print(f"| p50 | p90 | p99 | max |\n| --- | --- | --- | --- |\n| {pct(50):.1f} ms | {pct(90):.1f} ms | {pct(99):.1f} ms | {values[-1]/1000:.1f} ms |")
PY
