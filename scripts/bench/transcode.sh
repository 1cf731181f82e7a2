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
  mapfile -t args < <("$BIN" ladder-args --source-height "$height" --out-dir "$out")
  for rendition in 1080p 720p 480p 360p audio; do mkdir -p "$out/$rendition"; done
  start=$(date +%s.%N)
  ffmpeg "${args[@]}" < "$source_file"
  end=$(date +%s.%N)
  ladder=$(for d in "$out"/*/; do [ -f "$d/index.m3u8" ] && basename "$d"; done | sort -rn | tr '\n' ' ')
  python3 -c "
wall = $end - $start
factor = $MEDIA_SECONDS / wall
print(f'| ${height}p30 | $ladder| $MEDIA_SECONDS | {wall:.1f} | {factor:.2f}x | {int(factor)} |')"
done
