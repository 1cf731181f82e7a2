#!/usr/bin/env bash
# Voucher acceptance over HTTP (durable: SQLite, then PostgreSQL) with many
# concurrent channels, next to the raw libsecp256k1 recovery rate measured in
# the same run on the same core: the server is confined to CPU 1 and the load
# generator to CPU 0 (taskset), so the generator's own cost does not count
# against the server. PostgreSQL's own processes run where the kernel puts
# them.
#
# Each row is ROUNDS rounds (default 3); a round measures the raw recovery
# rate on the server's core (the server idle) and then the vouchers, so each
# voucher rate is set against the raw rate of its own moment: a machine whose
# speed drifts during the run moves both. The row gives the median round and
# every round's share.
# Usage: [ROUNDS=3] scripts/bench/vouchers.sh [seconds] [channels...]
source "$(dirname "$0")/common.sh"
SECONDS_PER_RUN="${1:-10}"; shift || true
CHANNEL_COUNTS=("${@:-16 64 256}")
ROUNDS="${ROUNDS:-3}"
need curl python3 psql taskset
build
export SERVER_CPUS=1
PG_URL="${STREAMWEAVE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
echo "raw recovery: libsecp256k1 with 1 thread on the server's core (CPU $SERVER_CPUS), measured before each round"
echo
echo "| store | channels | vouchers accepted/s | p50 | p99 | errors | raw recovery/s | rounds' shares | share of raw rate |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
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
    rounds="$WORK/rounds-$store-$channels.jsonl"
    : >"$rounds"
    for _ in $(seq "$ROUNDS"); do
      raw=$(taskset -c "$SERVER_CPUS" "$BIN" bench recover --threads 1 --seconds "$SECONDS_PER_RUN")
      result=$(taskset -c 0 "$BIN" bench vouchers --server "http://$HTTP" --channels "$channels" --seconds "$SECONDS_PER_RUN")
      echo "{\"raw\": $raw, \"vouchers\": $result}" >>"$rounds"
    done
    python3 - "$store" "$rounds" <<'PY'
import json, sys
store, path = sys.argv[1], sys.argv[2]
rounds = [json.loads(line) for line in open(path)]
for r in rounds:
    r["share"] = r["vouchers"]["vouchers_per_second"] / r["raw"]["recoveries_per_second"]
median = sorted(rounds, key=lambda r: r["share"])[len(rounds) // 2]
v, raw = median["vouchers"], median["raw"]
errors = sum(r["vouchers"]["errors"] for r in rounds)
shares = " ".join(f'{r["share"]:.0%}' for r in rounds)
print(f'| {store} | {v["channels"]} | {v["vouchers_per_second"]:.0f} | {v["p50_ms"]:.1f} ms | {v["p99_ms"]:.1f} ms | {errors} | {raw["recoveries_per_second"]:.0f} | {shares} | {median["share"]:.0%} |')
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
