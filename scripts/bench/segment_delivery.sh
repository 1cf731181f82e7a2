#!/usr/bin/env bash
# Segment and playlist delivery: StreamWeave against nginx serving the same
# bytes from the same disk, with wrk at 100 and 1000 connections, in one run,
# for the three ways media is read: a free stream's `/live/...`, a block by
# CID (`/ipfs/{cid}`), and a paid stream through a session's gate
# (`/play/{session}/...`, its vouchers already paid).
# Usage: scripts/bench/segment_delivery.sh [seconds-per-run]
source "$(dirname "$0")/common.sh"
DURATION="${1:-10}"
need wrk nginx ffmpeg curl python3
build
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_server "$WORK/server.log" --dev
# A free stream, for /live and /ipfs.
create_stream "delivery benchmark"
publish 1280x720 12
wait_ended
FREE_ID="$STREAM_ID"
# A paid stream, for /play.
"$BIN" keys new --out "$WORK/creator.key" >/dev/null
"$BIN" streams create --server "http://$HTTP" --key "$WORK/creator.key" \
  --title "paid delivery benchmark" --price 1000 --period-seconds 1 >"$WORK/paid.json"
STREAM_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$WORK/paid.json")
STREAM_KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])' <"$WORK/paid.json")
publish 1280x720 12
wait_ended
PAID_ID="$STREAM_ID"
SEGMENT_URL=$("$BIN" bench paid-url --server "http://$HTTP" --stream "$PAID_ID" --file 720p/1.m4s)
PLAY_BASE="${SEGMENT_URL%/720p/1.m4s}"
curl -sf "$PLAY_BASE/720p/index.m3u8" >/dev/null
CID=$(curl -sf "http://$HTTP/api/v1/streams/$FREE_ID/segments" | python3 -c '
import json, sys
print(next(s["cid"] for s in json.load(sys.stdin) if s["rendition"] == "720p" and s["sequence"] == 1))')

# The same bytes for nginx, on the same disk, at the same paths.
ROOT_DIR="$WORK/nginx-root"
PLAY_PATH="${PLAY_BASE#http://$HTTP}"
mkdir -p "$ROOT_DIR/live/$FREE_ID/720p" "$ROOT_DIR/ipfs" "$ROOT_DIR$PLAY_PATH/720p"
curl -sf "http://$HTTP/live/$FREE_ID/720p/index.m3u8" -o "$ROOT_DIR/live/$FREE_ID/720p/index.m3u8"
curl -sf "http://$HTTP/live/$FREE_ID/720p/1.m4s" -o "$ROOT_DIR/live/$FREE_ID/720p/1.m4s"
curl -sf "http://$HTTP/ipfs/$CID" -o "$ROOT_DIR/ipfs/$CID"
curl -sf "$PLAY_BASE/720p/index.m3u8" -o "$ROOT_DIR$PLAY_PATH/720p/index.m3u8"
curl -sf "$PLAY_BASE/720p/1.m4s" -o "$ROOT_DIR$PLAY_PATH/720p/1.m4s"
SEGMENT_BYTES=$(stat -c %s "$ROOT_DIR/live/$FREE_ID/720p/1.m4s")
start_nginx "$ROOT_DIR"

run_wrk() { # URL CONNECTIONS -> "requests/s MB/s p99 non-2xx"
  wrk -t2 -c"$2" -d"${DURATION}s" --latency "$1" 2>&1 | awk '
    /Requests\/sec/ {rps=$2}
    /Transfer\/sec/ {v=$2; if (v ~ /GB/) m=v*1024; else if (v ~ /MB/) m=v+0; else if (v ~ /KB/) m=v/1024; else m=v/1048576; mb=m}
    / 99%/ {p99=$2}
    /Non-2xx/ {errors=$NF}
    END {printf "%.0f %.1f %s %s\n", rps, mb, p99, (errors==""?0:errors)}'
}

echo "segment: ${SEGMENT_BYTES} bytes (720p, 2 s); wrk -t2 for ${DURATION}s per run; $(nproc) cores shared by server and wrk"
printf '| path | connections | StreamWeave req/s | StreamWeave MB/s | StreamWeave p99 | nginx req/s | nginx MB/s | nginx p99 | ratio |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for path in "/live/$FREE_ID/720p/1.m4s" "/ipfs/$CID" "$PLAY_PATH/720p/1.m4s" \
  "/live/$FREE_ID/720p/index.m3u8" "$PLAY_PATH/720p/index.m3u8"; do
  case "$path" in
    /live/*m4s) label="/live/{id}/720p/1.m4s" ;;
    /ipfs/*) label="/ipfs/{cid} (the same segment)" ;;
    /play/*m4s) label="/play/{session}/720p/1.m4s (paid)" ;;
    /live/*m3u8) label="/live/{id}/720p/index.m3u8" ;;
    *) label="/play/{session}/720p/index.m3u8" ;;
  esac
  for connections in 100 1000; do
    read -r ours_rps ours_mb ours_p99 ours_err < <(run_wrk "http://$HTTP$path" "$connections")
    read -r nginx_rps nginx_mb nginx_p99 nginx_err < <(run_wrk "http://127.0.0.1:$NGINX_PORT$path" "$connections")
    ratio=$(python3 -c "print(f'{$ours_rps/max($nginx_rps,1):.2f}')")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$connections" \
      "$ours_rps" "$ours_mb" "$ours_p99" "$nginx_rps" "$nginx_mb" "$nginx_p99" "$ratio"
    if [ "$ours_err" != "0" ] || [ "$nginx_err" != "0" ]; then
      echo "error: non-2xx answers (ours $ours_err, nginx $nginx_err): the comparison is void" >&2; exit 1
    fi
  done
done
