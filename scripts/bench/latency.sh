#!/usr/bin/env bash
# Glass to glass: a publisher stamps each frame with the clock (a barcode),
# sends it over RTMP through the ladder, and Chromium plays it with hls.js
# over LL-HLS and then over plain 2 s-segment HLS, reading each displayed
# frame's stamp. Usage: scripts/bench/latency.sh [seconds per path]
source "$(dirname "$0")/common.sh"
need ffmpeg chromium
build
node "$ROOT/web/tests/latency.mjs" "$BIN" "${1:-30}"
