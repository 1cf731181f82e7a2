#!/usr/bin/env bash
# Paying viewers of one live stream, then the same requests without payment
# against nginx serving the same segments, in one run on this machine.
# `streamweave bench viewers` runs N viewers: each polls the live playlist
# every second, pays each new segment with a voucher and fetches it. The
# static run makes the same playlist and segment requests at the same
# moments against nginx (a new segment every 2 s, fetched by each viewer at
# its first poll after it appeared); nginx's CPU is its workers'. The server (with the ladder's ffmpeg, its child) and nginx
# are confined to CPU 1, the load generator and the publishing ffmpeg to
# CPU 0 (taskset), so the generator's cost does not count against either.
# Viewers join one after another over a 10 s ramp; requests are measured
# once all have joined (errors all along).
# Usage: scripts/bench/viewers.sh [seconds-per-run] [viewer counts...]
source "$(dirname "$0")/common.sh"
RUN_SECONDS="${1:-30}"
shift || true
COUNTS=("$@")
[ "${#COUNTS[@]}" -gt 0 ] || COUNTS=(1000 10000)
need nginx ffmpeg curl python3 taskset
build
export SERVER_CPUS=1
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_server "$WORK/server.log" --dev
"$BIN" keys new --out "$WORK/creator.key" >/dev/null
"$BIN" streams create --server "http://$HTTP" --key "$WORK/creator.key" \
  --title "viewers benchmark" --price 1000 --period-seconds 1 >"$WORK/stream.json"
STREAM_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$WORK/stream.json")
STREAM_KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])' <"$WORK/stream.json")
# A 360p source: the ladder is one video rung and audio, so most of the CPU
# goes to viewers. Encoded before the run and sent as is (`-c copy`, looped),
# so the publisher takes next to nothing from the generator's core.
taskset -c 0 ffmpeg -hide_banner -loglevel error -f lavfi -i "testsrc2=size=640x360:rate=30" \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 120 \
  -c:v libx264 -preset ultrafast -g 60 -pix_fmt yuv420p -c:a aac -f flv "$WORK/source.flv"
taskset -c 0 ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$WORK/source.flv" \
  -c copy -f flv "rtmp://$RTMP/live/$STREAM_KEY" &
PUBLISHER_PID=$!
PIDS+=("$PUBLISHER_PID")
for _ in $(seq 100); do
  count=$(curl -sf "http://$HTTP/api/v1/streams/$STREAM_ID/segments" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' || echo 0)
  [ "$count" -ge 6 ] && break
  sleep 0.5
done

for viewers in "${COUNTS[@]}"; do
  echo "paying viewers: $viewers for ${RUN_SECONDS}s" >&2
  taskset -c 0 "$BIN" bench viewers --server "http://$HTTP" --stream "$STREAM_ID" --viewers "$viewers" \
    --seconds "$RUN_SECONDS" --ramp-seconds 10 --server-pid "$SERVER_PID" >"$WORK/paid-$viewers.json"
done
kill "$PUBLISHER_PID" 2>/dev/null || true

# The same segments as plain files for nginx.
ROOT_DIR="$WORK/nginx-root"
"$BIN" export --data-dir "$WORK/data" --stream "$STREAM_ID" --out "$ROOT_DIR" >/dev/null
SEGMENTS=$(find "$ROOT_DIR/360p" -name '*.m4s' | wc -l)
start_nginx "$ROOT_DIR"
for viewers in "${COUNTS[@]}"; do
  echo "nginx viewers: $viewers for ${RUN_SECONDS}s" >&2
  taskset -c 0 "$BIN" bench viewers --static-base "http://127.0.0.1:$NGINX_PORT/360p" --static-segments "$SEGMENTS" \
    --viewers "$viewers" --seconds "$RUN_SECONDS" --ramp-seconds 10 \
    --static-server-pids "$(pgrep -d, -P "$NGINX_PID")" >"$WORK/nginx-$viewers.json"
done

echo "server (and its ffmpeg) or nginx on CPU 1, generator and publisher on CPU 0; viewers join over 10 s, then ${RUN_SECONDS}s measured; 360p stream, 2 s segments, 1 s playlist polls"
python3 - "$WORK" "${COUNTS[@]}" <<'PY'
import json, sys
work, counts = sys.argv[1], sys.argv[2:]
def fmt(x, unit=""):
    return "-" if x is None else f"{x:.1f}{unit}"
print("| run | viewers | watching | segments/s | segment p50 | segment p99 | voucher p50 | voucher p99 | playlist p99 | errors | server CPU | server RSS | generator CPU | setup |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for kind in ("paid", "nginx"):
    for n in counts:
        r = json.load(open(f"{work}/{kind}-{n}.json"))
        paid = kind == "paid"
        print("| {} | {} | {} | {:.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            "StreamWeave, paying" if paid else "nginx, no payment", n, r["viewers_watching"],
            r["segments_per_second"], fmt(r["segments"]["p50_ms"], " ms"), fmt(r["segments"]["p99_ms"], " ms"),
            fmt(r["vouchers"]["p50_ms"], " ms") if paid else "-", fmt(r["vouchers"]["p99_ms"], " ms") if paid else "-",
            fmt(r["playlists"]["p99_ms"], " ms"), r["errors"],
            fmt(r.get("server_cpu_percent"), " %"), fmt(r.get("server_peak_rss_mib"), " MiB"),
            fmt(r.get("generator_cpu_percent"), " %"),
            f"{r['setup_ms']/1000:.0f} s" if paid else "-"))
        if r["error_samples"]:
            print(f"<!-- {kind} {n}: {r['error_samples'][:3]} -->")
PY
