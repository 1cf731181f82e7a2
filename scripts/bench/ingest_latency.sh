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
log = open(sys.argv[1]).read()
rows = [dict((k, int(v)) for k, v in re.findall(r"(\w+_us)=(\d+)", line))
        for line in log.splitlines() if "latency_us=" in line]
if not rows:
    sys.exit("no latency samples in the log")
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] / 1000
print(f"segments: {len(rows)} (all renditions)")
print("| | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- |")
# Where a segment's time went: waiting behind the media stored before it
# (parts, other renditions' segments), writing its blocks, committing its row.
for name, key in [("ingest to playlist", "latency_us"), ("waiting its turn", "waited_us"),
                  ("writing its blocks", "blocks_us"), ("committing its row", "commit_us")]:
    values = [row[key] for row in rows if key in row]
    if values:
        print(f"| {name} | {pct(values, 50):.1f} ms | {pct(values, 90):.1f} ms | {pct(values, 99):.1f} ms | {max(values)/1000:.1f} ms |")
PY
