#!/usr/bin/env bash
# Transcode cost: realtime factor of the ladder StreamWeave runs, for a 720p30
# and a 1080p30 source, on this machine. Usage: scripts/bench/transcode.sh [seconds]
source "$(dirname "$0")/common.sh"
MEDIA_SECONDS="${1:-20}"
need ffmpeg python3
build
echo "| source | ladder | media s | wall s | realtime factor | streams per machine (factor, rounded down) |"
echo "| --- | --- | --- | --- | --- | --- |"
for size in 1280x720 1920x1080; do
  height="${size#*x}"
  source_file="$WORK/source-$height.flv"
  ffmpeg -hide_banner -loglevel error -f lavfi -i "testsrc2=size=$size:rate=30" \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$MEDIA_SECONDS" \
    -c:v libx264 -preset ultrafast -g 60 -pix_fmt yuv420p -c:a aac -f flv "$source_file"
  out="$WORK/out-$height"
  mkdir -p "$out"
  mapfile -t args < <("$BIN" ladder-args --source-height "$height" --out-dir "$out")
  # The ladder streams one fragmented MP4 per rendition into a Unix socket
  # the server listens on; here a reader drains each socket into a file.
  mapfile -t sockets < <(printf '%s\n' "${args[@]}" | sed -n 's|^unix://||p')
  python3 - "${sockets[@]}" <<'PY' &
import os, socket, sys, threading
def drain(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    open(path + ".ready", "w").close()
    conn, _ = server.accept()
    with open(path[:-len(".sock")] + ".mp4", "wb") as out:
        while chunk := conn.recv(1 << 20):
            out.write(chunk)
threads = [threading.Thread(target=drain, args=(p,)) for p in sys.argv[1:]]
for t in threads: t.start()
for t in threads: t.join()
PY
  reader=$!
  for socket in "${sockets[@]}"; do
    until [ -e "$socket.ready" ]; do sleep 0.05; done
  done
  start=$(date +%s.%N)
  ffmpeg "${args[@]}" < "$source_file"
  end=$(date +%s.%N)
  wait "$reader"
  ladder=$(for f in "$out"/*.mp4; do [ -s "$f" ] && basename "$f" .mp4; done | sort -rn | tr '\n' ' ')
  python3 -c "
wall = $end - $start
factor = $MEDIA_SECONDS / wall
print(f'| ${height}p30 | $ladder| $MEDIA_SECONDS | {wall:.1f} | {factor:.2f}x | {int(factor)} |')"
done
