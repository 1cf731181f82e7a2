#!/usr/bin/env bash
# Glass to glass: a publisher stamps each frame with the clock (a barcode)
# and sends it over RTMP (ffmpeg) or WHIP (a canvas in Chromium); Chromium
# plays it over LL-HLS, plain 2 s-segment HLS and WHEP, reading each
# displayed frame's stamp; then WHEP again with 5 % of WebRTC datagrams
# lost both ways. Usage: scripts/bench/latency.sh [seconds per path]
source "$(dirname "$0")/common.sh"
need ffmpeg chromium
build
node "$ROOT/web/tests/latency.mjs" "$BIN" "${1:-30}"
