#!/usr/bin/env bash
# Uploaded video processing against plain ffmpeg, in one run: the same file
# (a 720p30 source with audio), the same ffmpeg arguments (printed by
# `streamweave ladder-args --file`), once as plain ffmpeg writing files and
# once as a video on a server (probe, transcode, every file stored under its
# CID with its rows). The overhead is the server's time beyond plain ffmpeg.
# Usage: scripts/bench/vod.sh [media-seconds] [runs]
source "$(dirname "$0")/common.sh"
MEDIA_SECONDS="${1:-60}"
RUNS="${2:-3}"
need ffmpeg curl python3
build

source_file="$WORK/source.mp4"
ffmpeg -hide_banner -loglevel error -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$MEDIA_SECONDS" \
  -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p -c:a aac "$source_file"

NO_COLOR=1 start_server "$WORK/server.log"
"$BIN" keys new --out "$WORK/creator.key" >/dev/null

plain_run() {
  local out="$WORK/plain-$1"
  rm -rf "$out"
  mapfile -t args < <("$BIN" ladder-args --file "$source_file" --out-dir "$out")
  for rendition in 1080p 720p 480p 360p audio; do mkdir -p "$out/$rendition"; done
  local start end
  start=$(date +%s.%N)
  ffmpeg "${args[@]}" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}

server_run() {
  local video id start line end
  video=$("$BIN" upload "$source_file" --server "http://$HTTP" --key "$WORK/creator.key" \
    --title "bench $1" --no-wait 2>/dev/null)
  start=$(date +%s.%N)
  id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$video")
  # The end is the server's own log line, written once the video is recorded
  # ready: waiting on it takes no CPU from ffmpeg (polling the API every
  # 100 ms took a few percent of this machine's two cores).
  line=$(timeout 900 tail -n +1 -f "$WORK/server.log" | grep -m1 -E "video (ready|not processed) video=$id")
  case "$line" in *"video ready"*) ;; *) echo "video $id: $line" >&2; exit 1 ;; esac
  end=$(python3 -c 'import sys, datetime; t = sys.argv[1].split()[0]; print(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())' "$line")
  python3 -c "print($end - $start)"
}

plain=(); served=()
for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  plain+=("$(plain_run "$run")")
  served+=("$(server_run "$run")")
done

echo "$(nproc) cores; a ${MEDIA_SECONDS} s 720p30 source with audio; $RUNS runs each, alternating"
python3 - "${plain[*]}" "${served[*]}" "$MEDIA_SECONDS" <<'PY'
import statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
served = [float(x) for x in sys.argv[2].split()]
media = float(sys.argv[3])
p, s = statistics.median(plain), statistics.median(served)
print("| | median wall s | realtime factor |")
print("| --- | --- | --- |")
print(f"| plain ffmpeg, same arguments | {p:.2f} | {media / p:.2f}x |")
print(f"| streamweave video (probe, transcode, store, rows) | {s:.2f} | {media / s:.2f}x |")
print(f"\noverhead over plain ffmpeg: {100 * (s - p) / p:+.1f}% (runs: plain {plain}, server {served})")
PY
