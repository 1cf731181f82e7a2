#!/usr/bin/env bash
# The watch page's first frame over WHEP (web/bench/first-frame.mjs), for
# this checkout's binary and any other binaries given (an earlier build, to
# compare in one run), with and without an ICE server that never answers.
# Usage: [ROUNDS=8] scripts/bench/first_frame.sh [other binaries...]
source "$(dirname "$0")/common.sh"
need chromium
build
cd "$ROOT/web"
node bench/first-frame.mjs "$BIN" "$@" 2>"$WORK/first-frame.log"
