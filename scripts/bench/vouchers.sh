#!/usr/bin/env bash
# Voucher acceptance over HTTP (durable, SQLite, group commit) with many
# concurrent channels, next to the raw libsecp256k1 recovery rate measured in
# the same run on the same cores. Usage: scripts/bench/vouchers.sh [seconds] [channels...]
source "$(dirname "$0")/common.sh"
SECONDS_PER_RUN="${1:-10}"; shift || true
CHANNEL_COUNTS=("${@:-16 64 256}")
need curl python3
build
echo "raw recovery, 1 thread: $("$BIN" bench recover --threads 1 --seconds "$SECONDS_PER_RUN")"
RAW=$("$BIN" bench recover --threads "$(nproc)" --seconds "$SECONDS_PER_RUN")
echo "raw recovery, $(nproc) threads: $RAW"
start_server "$WORK/server.log" --dev
echo "| channels | accepted/s | p50 | p99 | errors | share of raw rate |"
echo "| --- | --- | --- | --- | --- | --- |"
for channels in ${CHANNEL_COUNTS[@]}; do
  result=$("$BIN" bench vouchers --server "http://$HTTP" --channels "$channels" --seconds "$SECONDS_PER_RUN")
  python3 - "$result" "$RAW" <<'PY'
import json, sys
r, raw = json.loads(sys.argv[1]), json.loads(sys.argv[2])
share = r["vouchers_per_second"] / raw["recoveries_per_second"]
print(f'| {r["channels"]} | {r["vouchers_per_second"]:.0f} | {r["p50_ms"]:.1f} ms | {r["p99_ms"]:.1f} ms | {r["errors"]} | {share:.0%} |')
PY
done
"$BIN" ledger audit --data-dir "$WORK/data"
