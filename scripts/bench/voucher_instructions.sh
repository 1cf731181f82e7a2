#!/usr/bin/env bash
# Instructions per durable voucher: what the server executes in user space to
# accept one voucher over HTTP (SQLite, the embedded default), counted by
# valgrind's callgrind, next to what the signature's recovery alone costs
# inside the same answers. Counts, not seconds: the same binary and vouchers
# give the same figure whatever else the machine is doing, so a change to
# the voucher path shows here even when the timed rounds of vouchers.sh
# spread wider than it. The kernel's share (loopback TCP, the journal's
# fsync) is not counted.
#
# The server runs under callgrind; `bench vouchers` runs once to warm it (its
# own channels), then the counters are zeroed and a second run of `seconds`
# submits vouchers on `channels` channels; everything the process executed
# in that window (every thread: the runtime's, the ledger writer's) is
# divided by the vouchers accepted. The second run's setup (a login and its
# channels) is in the window too: a few dozen requests against thousands of
# vouchers. With DETAIL=1, the 30 costliest functions (inclusive, per
# voucher) follow. With KEEP_DUMP=FILE, the dump is kept there.
# Usage: [DETAIL=1] [KEEP_DUMP=FILE] scripts/bench/voucher_instructions.sh [seconds] [channels]
source "$(dirname "$0")/common.sh"
SECONDS_PER_RUN="${1:-20}"
CHANNELS="${2:-16}"
need valgrind curl python3
build

start_server_under_callgrind

"$BIN" bench vouchers --server "http://$HTTP" --channels "$CHANNELS" --seconds 3 >/dev/null
callgrind_control -z "$OURS_PID" >/dev/null 2>&1
result=$("$BIN" bench vouchers --server "http://$HTTP" --channels "$CHANNELS" --seconds "$SECONDS_PER_RUN")
callgrind_control -d "$OURS_PID" >/dev/null 2>&1
DUMP=""
for _ in $(seq 50); do
  DUMP=$(ls -t "$WORK"/ours.cg.* 2>/dev/null | head -1 || true)
  [ -n "$DUMP" ] && break
  sleep 0.2
done
[ -n "${KEEP_DUMP:-}" ] && cp "$DUMP" "$KEEP_DUMP"

callgrind_annotate --inclusive=yes --tree=none --auto=no --threshold=100 "$DUMP" 2>/dev/null |
  python3 -c '
import json, re, sys
result, detail = json.loads(sys.argv[1]), sys.argv[2] == "1"
vouchers = result["accepted"]
total, recovery, rows, seen = None, 0, [], set()
for line in sys.stdin:
    if "PROGRAM TOTALS" in line:
        total = int(line.split()[0].replace(",", ""))
        continue
    found = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*?)(?: \[.*\])?$", line)
    if not found or "=>" in line:
        continue
    count, name = int(found.group(1).replace(",", "")), found.group(2).split(":", 1)[-1]
    # libsecp256k1 recovery, whichever version prefix the crate gives it.
    if re.search(r"secp256k1_v\d+(?:_\d+)+_ecdsa_recover$", name):
        recovery = max(recovery, count)
    if name not in seen and len(rows) < 30 and re.search(r"streamweave|axum|hyper|httparse|http::|serde|sqlx|sqlite3|secp256k1|keccak|mi_|tokio::net", name):
        seen.add(name)
        rows.append((count, name))
if not vouchers or total is None:
    sys.exit("no vouchers accepted, or no dump")
channels, errors = result["channels"], result["errors"]
print(f"instructions the server executed in user space per durable voucher (callgrind; SQLite; {channels} channels; {vouchers} vouchers accepted, {errors} errors)")
print()
print("| per voucher | instructions | share |")
print("| --- | --- | --- |")
print(f"| everything | {total / vouchers:,.0f} | 100 % |")
print(f"| the signature recovery (libsecp256k1) | {recovery / vouchers:,.0f} | {recovery / total:.0%} |")
print(f"| everything else | {(total - recovery) / vouchers:,.0f} | {(total - recovery) / total:.0%} |")
if detail:
    print()
    print("costliest functions (inclusive, per voucher):")
    for count, name in rows:
        print(f"  {count / vouchers:9.0f}  {name[:150]}")
' "$result" "${DETAIL:-0}"
