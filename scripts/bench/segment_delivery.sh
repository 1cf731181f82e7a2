#!/usr/bin/env bash
# Segment and playlist delivery: StreamWeave against nginx serving the same
# files from the same disk, with wrk at 100 and 1000 connections, in one run.
# Usage: scripts/bench/segment_delivery.sh [seconds-per-run]
source "$(dirname "$0")/common.sh"
DURATION="${1:-10}"
need wrk nginx ffmpeg curl python3
build
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_server "$WORK/server.log"
create_stream "delivery benchmark"
publish 1280x720 12
wait_ended

# The same files for nginx, on the same disk.
ROOT_DIR="$WORK/nginx-root"
mkdir -p "$ROOT_DIR/live/$STREAM_ID/720p"
curl -sf "http://$HTTP/live/$STREAM_ID/720p/index.m3u8" -o "$ROOT_DIR/live/$STREAM_ID/720p/index.m3u8"
curl -sf "http://$HTTP/live/$STREAM_ID/720p/1.m4s" -o "$ROOT_DIR/live/$STREAM_ID/720p/1.m4s"
SEGMENT_BYTES=$(stat -c %s "$ROOT_DIR/live/$STREAM_ID/720p/1.m4s")
start_nginx "$ROOT_DIR"

run_wrk() { # URL CONNECTIONS -> "requests/s MB/s"
  wrk -t2 -c"$2" -d"${DURATION}s" --latency "$1" 2>&1 | awk '
    /Requests\/sec/ {rps=$2}
    /Transfer\/sec/ {v=$2; if (v ~ /GB/) m=v*1024; else if (v ~ /MB/) m=v+0; else if (v ~ /KB/) m=v/1024; else m=v/1048576; mb=m}
    / 99%/ {p99=$2}
    /Non-2xx/ {errors=$NF}
    END {printf "%.0f %.1f %s %s\n", rps, mb, p99, (errors==""?0:errors)}'
}

echo "segment: ${SEGMENT_BYTES} bytes (720p, 2 s); wrk -t2 for ${DURATION}s per run; $(nproc) cores shared by server and wrk"
printf '| file | connections | StreamWeave req/s | StreamWeave MB/s | StreamWeave p99 | nginx req/s | nginx MB/s | nginx p99 | ratio |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for file in "720p/1.m4s" "720p/index.m3u8"; do
  for connections in 100 1000; do
    read -r ours_rps ours_mb ours_p99 ours_err < <(run_wrk "http://$HTTP/live/$STREAM_ID/$file" "$connections")
    read -r nginx_rps nginx_mb nginx_p99 nginx_err < <(run_wrk "http://127.0.0.1:$NGINX_PORT/live/$STREAM_ID/$file" "$connections")
    ratio=$(python3 -c "print(f'{$ours_rps/max($nginx_rps,1):.2f}')")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$file" "$connections" \
      "$ours_rps" "$ours_mb" "$ours_p99" "$nginx_rps" "$nginx_mb" "$nginx_p99" "$ratio"
    if [ "$ours_err" != "0" ] || [ "$nginx_err" != "0" ]; then
      echo "error: non-2xx answers (ours $ours_err, nginx $nginx_err): the comparison is void" >&2; exit 1
    fi
  done
done
