#!/usr/bin/env bash
# Archive throughput on one core: a synthetic one-hour recording (2 s
# segments in the 720p, 480p and 360p rungs) through the directory DAG, the
# CAR and the Piece CID, next to raw sha256 over the same bytes in one run.
# Usage: scripts/bench/archive.sh [minutes]
source "$(dirname "$0")/common.sh"
MINUTES="${1:-60}"
build
"$BIN" bench archive --minutes "$MINUTES" >"$WORK/archive.json"
python3 - "$WORK/archive.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['minutes']} min, {r['renditions']} renditions, {r['segments']} segments, {r['media_mb']} MB of media; one core")
print("| sha256 (bound) | DAG | CAR | DAG + CAR | DAG + CAR / sha256 | Piece CID |")
print("| --- | --- | --- | --- | --- | --- |")
print(f"| {r['sha256_mb_s']} MB/s | {r['dag_mb_s']} MB/s | {r['car_mb_s']} MB/s | {r['dag_and_car_mb_s']} MB/s | {r['dag_and_car_vs_sha256']} | {r['piece_cid_mb_s']} MB/s |")
PY
