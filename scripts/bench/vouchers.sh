#!/usr/bin/env bash
# Voucher acceptance over HTTP (durable: SQLite, then PostgreSQL) with many
# concurrent channels, next to the raw libsecp256k1 recovery rate measured in
# the same run on the same core: the server is confined to CPU 1 and the load
# generator to CPU 0 (taskset), so the generator's own cost does not count
# against the server. PostgreSQL's own processes run where the kernel puts
# them. Usage: scripts/bench/vouchers.sh [seconds] [channels...]
source "$(dirname "$0")/common.sh"
SECONDS_PER_RUN="${1:-10}"; shift || true
CHANNEL_COUNTS=("${@:-16 64 256}")
need curl python3 psql taskset
build
export SERVER_CPUS=1
RAW=$(taskset -c "$SERVER_CPUS" "$BIN" bench recover --threads 1 --seconds "$SECONDS_PER_RUN")
echo "raw recovery on the server's core (CPU $SERVER_CPUS), 1 thread: $RAW"
PG_URL="${STREAMWEAVE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
echo "| store | channels | vouchers accepted/s | p50 | p99 | errors | share of raw rate |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for store in sqlite postgres; do
  extra=()
  if [ "$store" = postgres ]; then
    schema="sw_bench_$$"
    if ! psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null 2>&1; then
      echo "(PostgreSQL at $PG_URL unreachable: skipped)"; continue
    fi
    extra=(--database "$PG_URL?options=-c%20search_path%3D$schema")
  fi
  rm -rf "$WORK/data"
  start_server "$WORK/server-$store.log" --dev "${extra[@]}"
  for channels in ${CHANNEL_COUNTS[@]}; do
    result=$(taskset -c 0 "$BIN" bench vouchers --server "http://$HTTP" --channels "$channels" --seconds "$SECONDS_PER_RUN")
    python3 - "$store" "$result" "$RAW" <<'PY'
import json, sys
store, r, raw = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
share = r["vouchers_per_second"] / raw["recoveries_per_second"]
print(f'| {store} | {r["channels"]} | {r["vouchers_per_second"]:.0f} | {r["p50_ms"]:.1f} ms | {r["p99_ms"]:.1f} ms | {r["errors"]} | {share:.0%} |')
PY
  done
  if [ "$store" = postgres ]; then
    "$BIN" ledger audit --database "${extra[1]}"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    psql "$PG_URL" -qc "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE" >/dev/null
  else
    "$BIN" ledger audit --data-dir "$WORK/data"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
done
