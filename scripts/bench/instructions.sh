#!/usr/bin/env bash
# Instructions per answer: what our server and nginx each execute in user
# space to answer one request for the same bytes, counted by valgrind's
# callgrind. Counts, not seconds: the same binary and requests give the
# same figure whatever else the machine is doing, so a change to the
# request path shows here even when the timed runs of
# segment_delivery.sh spread wider than it. The kernel's share of an
# answer (sendfile, TCP, loopback) is not counted: it is the same calls
# for both servers (segment_delivery.sh with COUNT_SYSCALLS=1 counts them).
#
# Each server runs under callgrind (nginx as one process, no master); for
# each path a warm-up, then the counters are zeroed, wrk makes requests on
# 4 connections for `seconds`, and everything the process executed in that
# window (every thread, background work included) is divided by the
# answers. With DETAIL=1, our 25 costliest functions of each path
# (inclusive, per answer) follow the table. With KEEP_DUMPS=DIR, each
# path's two dumps are kept there (ours-N.cg, nginx-N.cg, N the path's row)
# for callgrind_annotate. With BROWSER_HEADERS=1, wrk sends the headers a
# browser's player sends with each request (user agent, accept, origin,
# referer, fetch metadata) instead of only Host, to both servers. With
# API_FIRST=1, each connection's first request is an API call
# (`/api/v1/payments/config`), as a browser's pooled connection carries
# the watch page's calls before its player's media.
# Usage: [DETAIL=1] [KEEP_DUMPS=DIR] [BROWSER_HEADERS=1] [API_FIRST=1] scripts/bench/instructions.sh [seconds]
source "$(dirname "$0")/common.sh"
SECONDS_PER_PATH="${1:-6}"
need valgrind wrk nginx ffmpeg curl python3
build

# The media, made by a server at full speed: a free stream and a paid one.
start_server "$WORK/server.log" --dev
publish_free_and_paid 8
# The archives are written and checked once a stream ends (SHA-256 of every
# byte): that work is over before anything is counted.
for _ in $(seq 300); do
  [ "$(grep -c 'replica verified' "$WORK/server.log")" -ge 2 ] && break
  sleep 0.2
done
CID=$(curl -sf "http://$HTTP/api/v1/streams/$FREE_ID/segments" | python3 -c '
import json, sys
print(next(s["cid"] for s in json.load(sys.stdin) if s["rendition"] == "720p" and s["sequence"] == 1))')
ROOT_DIR="$WORK/nginx-root"
mkdir -p "$ROOT_DIR/live/$FREE_ID/720p" "$ROOT_DIR/ipfs"
curl -sf "http://$HTTP/live/$FREE_ID/720p/index.m3u8" -o "$ROOT_DIR/live/$FREE_ID/720p/index.m3u8"
curl -sf "http://$HTTP/live/$FREE_ID/720p/1.m4s" -o "$ROOT_DIR/live/$FREE_ID/720p/1.m4s"
curl -sf "http://$HTTP/ipfs/$CID" -o "$ROOT_DIR/ipfs/$CID"
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

# The same server on the same data, under callgrind.
start_server_under_callgrind
SEGMENT_URL=$("$BIN" bench paid-url --server "http://$HTTP" --stream "$PAID_ID" --file 720p/1.m4s)
PLAY_BASE="${SEGMENT_URL%/720p/1.m4s}"
PLAY_PATH="${PLAY_BASE#http://$HTTP}"
mkdir -p "$ROOT_DIR$PLAY_PATH/720p"
curl -sf "$PLAY_BASE/720p/index.m3u8" -o "$ROOT_DIR$PLAY_PATH/720p/index.m3u8"
curl -sf "$PLAY_BASE/720p/1.m4s" -o "$ROOT_DIR$PLAY_PATH/720p/1.m4s"

chmod 755 "$WORK"
NGINX_PORT=$(free_port)
nginx_conf "$ROOT_DIR" $'worker_processes 1;\nmaster_process off;' >"$WORK/nginx-one.conf"
valgrind --tool=callgrind --callgrind-out-file="$WORK/nginx.cg" \
  nginx -c "$WORK/nginx-one.conf" -g 'daemon off;' 2>"$WORK/nginx-callgrind.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/ipfs/$CID" -o /dev/null && break; sleep 0.2; done

WRK_HEADERS=()
if [ -n "${BROWSER_HEADERS:-}" ]; then
  WRK_HEADERS=(
    -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
    -H 'Accept: */*'
    -H 'Accept-Language: en-US,en;q=0.9'
    -H 'Accept-Encoding: gzip, deflate, br, zstd'
    -H 'Origin: https://player.example'
    -H 'Referer: https://player.example/watch'
    -H 'Sec-Fetch-Dest: empty'
    -H 'Sec-Fetch-Mode: cors'
    -H 'Sec-Fetch-Site: cross-site'
    -H 'sec-ch-ua-platform: "Linux"'
  )
fi

if [ -n "${API_FIRST:-}" ]; then
  # wrk calls `request` for every request of the thread; its first four
  # are the first of its four connections.
  cat >"$WORK/api-first.lua" <<'LUA'
local sent = 0
request = function()
  sent = sent + 1
  if sent <= 4 then return wrk.format(nil, "/api/v1/payments/config") end
  return wrk.format()
end
LUA
  WRK_HEADERS+=(-s "$WORK/api-first.lua")
fi

# count NAME URL PID OUTPUT -> "answers instructions"; the dump's file in DUMP.
count() {
  local url="$2" pid="$3" out="$4" answers
  wrk -t1 -c4 -d2s "${WRK_HEADERS[@]}" "$url" >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  answers=$(wrk -t1 -c4 -d"${SECONDS_PER_PATH}s" "${WRK_HEADERS[@]}" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  DUMP=""
  for _ in $(seq 50); do
    DUMP=$(ls -t "$out".* 2>/dev/null | head -1 || true)
    [ -n "$DUMP" ] && [ "$DUMP" != "${LAST_DUMP:-}" ] && break
    sleep 0.2
  done
  LAST_DUMP="$DUMP"
  echo "$answers $(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
}

echo "instructions each server executed in user space per answer (callgrind; wrk -t1 -c4 for ${SECONDS_PER_PATH}s a path${BROWSER_HEADERS:+, with the headers of a browser player}${API_FIRST:+, each connection first asked for an API call}, everything the process ran in that window divided by its answers)"
printf '| path | StreamWeave answers | StreamWeave instructions per answer | nginx answers | nginx instructions per answer | ratio |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
DETAILS=""
ROW=0
for path in $(delivery_paths); do
  label=$(path_label "$path")
  ROW=$((ROW + 1))
  # The paid session idles out without requests, as a player's does.
  curl -sf "$PLAY_BASE/720p/index.m3u8" >/dev/null
  read -r ours_answers ours_total < <(LAST_DUMP="${OURS_DUMP:-}" count ours "http://$HTTP$path" "$OURS_PID" "$WORK/ours.cg")
  OURS_DUMP=$(ls -t "$WORK"/ours.cg.* | head -1)
  read -r nginx_answers nginx_total < <(LAST_DUMP="${NGINX_DUMP:-}" count nginx "http://127.0.0.1:$NGINX_PORT$path" "$NGINX_PID" "$WORK/nginx.cg")
  NGINX_DUMP=$(ls -t "$WORK"/nginx.cg.* | head -1)
  if [ -n "${KEEP_DUMPS:-}" ]; then
    mkdir -p "$KEEP_DUMPS"
    cp "$OURS_DUMP" "$KEEP_DUMPS/ours-$ROW.cg"
    cp "$NGINX_DUMP" "$KEEP_DUMPS/nginx-$ROW.cg"
  fi
  python3 - "$label" "$ours_answers" "$ours_total" "$nginx_answers" "$nginx_total" <<'PY'
import sys
label, oa, ot, na, nt = sys.argv[1], *map(int, sys.argv[2:])
o, n = ot / max(oa, 1), nt / max(na, 1)
print(f"| {label} | {oa} | {o:,.0f} | {na} | {n:,.0f} | {o / n:.2f} |")
PY
  if [ -n "${DETAIL:-}" ]; then
    DETAILS+="$label, ours (inclusive, per answer):"$'\n'
    DETAILS+=$(callgrind_annotate --inclusive=yes --tree=none --auto=no --threshold=100 "$OURS_DUMP" 2>/dev/null |
      python3 -c '
import re, sys
answers, seen, shown = int(sys.argv[1]), set(), 0
for line in sys.stdin:  # all of it: the annotator must not meet a closed pipe
    if shown == 25:
        continue
    found = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*?)(?: \[.*\])?$", line)
    if not found or "=>" in line or "PROGRAM TOTALS" in line:
        continue
    name = found.group(2).split(":", 1)[-1]
    if name in seen or not re.search(r"streamweave|axum|hyper|httparse|http::|cid::|multibase|data_encoding|mi_|tokio::net|sha2", name):
        continue
    seen.add(name)
    count = int(found.group(1).replace(",", ""))
    print(f"  {count / answers:9.0f}  {name[:150]}")
    shown += 1
' "$ours_answers")$'\n'

  fi
done
if [ -n "$DETAILS" ]; then printf '\n%s' "$DETAILS"; fi
