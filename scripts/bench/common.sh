# Shared by the benchmark scripts: build, start a server, publish a test stream.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release/streamweave"
TOKEN="bench-admin-token"
WORK="$(mktemp -d /tmp/streamweave-bench.XXXXXX)"
PIDS=()
# Stops what the script started and removes its files once they have exited
# (a node still writing to its data directory would leave it half removed);
# with KEEP_WORK=DIR, the logs, metrics and results are copied there first.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP_WORK:-}" ]; then
    mkdir -p "$KEEP_WORK"
    find "$WORK" -maxdepth 1 -type f \( -name '*.log' -o -name '*.metrics' -o -name '*.json' -o -name '*.txt' \) \
      -exec cp {} "$KEEP_WORK/" \;
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    local packages=("${missing[@]/nginx/nginx-light}")
    packages=("${packages[@]/psql/postgresql-client}")
    packages=("${packages[@]/nstat/iproute2}")
    echo "installing: ${packages[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
}

build() {
  # scripts/bench/all builds once for every script (setup rebuilds the web
  # app, and the binary that embeds it after).
  if [ -n "${STREAMWEAVE_BENCH_BUILT:-}" ] && [ -x "$BIN" ]; then return 0; fi
  "$ROOT/scripts/setup"
  cargo build --release --locked -p streamweave-server --bin streamweave >&2
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# What every benchmark's server is started with: one load generator is
# one client address, so no per-address connection cap and no
# per-address request limits.
OPEN_LIMITS=(--max-http-connections-per-ip 0 --rate-limit-api 0 --rate-limit-writes 0
  --rate-limit-playback 0 --rate-limit-wallet 0 --challenges-per-ip-per-minute 1000000)

# start_server_under_callgrind: the server (dev mode) on $WORK/data under
# callgrind, its dumps named $WORK/ours.cg.N; sets HTTP, RTMP and
# OURS_PID once it answers.
start_server_under_callgrind() {
  HTTP="127.0.0.1:$(free_port)"; RTMP="127.0.0.1:$(free_port)"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/ours.cg" \
    "$BIN" serve --data-dir "$WORK/data" --http "$HTTP" --rtmp "$RTMP" --admin-token "$TOKEN" --dev \
    "${OPEN_LIMITS[@]}" 2>"$WORK/ours-callgrind.log" &
  OURS_PID=$!
  PIDS+=("$OURS_PID")
  for _ in $(seq 600); do curl -sf "http://$HTTP/api/openapi.json" >/dev/null && return 0; sleep 0.5; done
  echo "server did not start under callgrind; see $WORK/ours-callgrind.log" >&2; exit 1
}

# start_server LOGFILE [extra args...]: sets HTTP and RTMP. With
# SERVER_CPUS set (e.g. 1), the server runs confined to those CPUs; with
# DATA_DIR set, on that data directory ($WORK/data otherwise).
start_server() {
  local log="$1"; shift
  HTTP="127.0.0.1:$(free_port)"; RTMP="127.0.0.1:$(free_port)"
  local confine=()
  if [ -n "${SERVER_CPUS:-}" ]; then confine=(taskset -c "$SERVER_CPUS"); fi
  "${confine[@]}" "$BIN" serve --data-dir "${DATA_DIR:-$WORK/data}" --http "$HTTP" --rtmp "$RTMP" --admin-token "$TOKEN" \
    "${OPEN_LIMITS[@]}" "$@" 2>"$log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 100); do curl -sf "http://$HTTP/api/openapi.json" >/dev/null && return 0; sleep 0.1; done
  echo "server did not start; see $log" >&2; exit 1
}

# create_stream TITLE: sets STREAM_ID and STREAM_KEY.
create_stream() {
  local body
  body=$(curl -sf -X POST "http://$HTTP/api/v1/streams" -H "Authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "{\"title\": \"$1\"}")
  STREAM_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$body")
  STREAM_KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])' <<<"$body")
}

# publish SIZE SECONDS: publishes a test pattern in real time and waits for it.
publish() {
  ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=$1:rate=30" \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$2" \
    -c:v libx264 -preset ultrafast -g 60 -pix_fmt yuv420p -c:a aac -f flv "rtmp://$RTMP/live/$STREAM_KEY"
}

wait_ended() {
  for _ in $(seq 300); do
    curl -sf "http://$HTTP/api/v1/streams/$STREAM_ID" | grep -q '"state":"ended"' && return 0
    sleep 0.2
  done
  echo "stream did not end" >&2; exit 1
}

# nginx_conf ROOT [PROCESSES]: the configuration of nginx serving ROOT on
# NGINX_PORT (sendfile, open_file_cache, no access log); PROCESSES is its
# process lines (default: a worker per core).
nginx_conf() {
  cat <<CONF
${2:-worker_processes auto;}
worker_rlimit_nofile 65536;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 100000;
  open_file_cache max=1000;
  types { video/mp4 m4s; application/vnd.apple.mpegurl m3u8; }
  server { listen 127.0.0.1:$NGINX_PORT; root $1; }
}
CONF
}

# start_nginx ROOT: nginx serving ROOT (confined like the server when
# SERVER_CPUS is set) on a free port; sets NGINX_PORT and NGINX_PID (the
# master's).
start_nginx() {
  chmod 755 "$WORK"   # nginx workers read as their own user
  NGINX_PORT=$(free_port)
  nginx_conf "$1" >"$WORK/nginx.conf"
  local confine=()
  if [ -n "${SERVER_CPUS:-}" ]; then confine=(taskset -c "$SERVER_CPUS"); fi
  "${confine[@]}" nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  sleep 0.5
}

# publish_free_and_paid SECONDS: on the server started, a free stream and a
# paid one (price 1000 a second), each published for SECONDS at 720p (the
# same test pattern) and ended; sets FREE_ID and PAID_ID.
publish_free_and_paid() {
  create_stream "free delivery benchmark"
  publish 1280x720 "$1"
  wait_ended
  FREE_ID="$STREAM_ID"
  "$BIN" keys new --out "$WORK/creator.key" >/dev/null
  "$BIN" streams create --server "http://$HTTP" --key "$WORK/creator.key" \
    --title "paid delivery benchmark" --price 1000 --period-seconds 1 >"$WORK/paid.json"
  STREAM_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$WORK/paid.json")
  STREAM_KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])' <"$WORK/paid.json")
  publish 1280x720 "$1"
  wait_ended
  PAID_ID="$STREAM_ID"
}

# delivery_paths: the paths the delivery benchmarks ask for, one a line:
# a free stream's segment, the same segment by CID, the paid stream's
# segment, then the two playlists (FREE_ID, CID and PLAY_PATH set).
delivery_paths() {
  printf '%s\n' "/live/$FREE_ID/720p/1.m4s" "/ipfs/$CID" "$PLAY_PATH/720p/1.m4s" \
    "/live/$FREE_ID/720p/index.m3u8" "$PLAY_PATH/720p/index.m3u8"
}

# path_label PATH: how a table names one of the delivery paths.
path_label() {
  case "$1" in
    /live/*m4s) echo "/live/{id}/720p/1.m4s" ;;
    /ipfs/*) echo "/ipfs/{cid} (the same segment)" ;;
    /play/*m4s) echo "/play/{session}/720p/1.m4s (paid)" ;;
    /live/*m3u8) echo "/live/{id}/720p/index.m3u8" ;;
    *) echo "/play/{session}/720p/index.m3u8" ;;
  esac
}

# start_s3: an S3-compatible server (moto, from PyPI, in a virtualenv of its
# own) with a bucket `blocks`, for nodes of a cluster; sets S3_PORT and the
# AWS_* variables the nodes read. Also sets PG_URL and NATS for them.
start_s3() {
  PG_URL="${STREAMWEAVE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
  NATS="${STREAMWEAVE_NATS:-nats://127.0.0.1:4222}"
  local venv="${STREAMWEAVE_VENV:-$HOME/.cache/streamweave/venv}"
  if [ ! -x "$venv/bin/moto_server" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
  fi
  S3_PORT=$(free_port)
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$WORK/s3.log" 2>&1 &
  PIDS+=($!)
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
  for _ in $(seq 100); do curl -sf -X PUT "http://127.0.0.1:$S3_PORT/blocks" >/dev/null && break; sleep 0.1; done
}

# new_schema NAME: a fresh PostgreSQL schema; sets DATABASE (a URL whose
# connections use it). drop_schemas removes every one made.
SCHEMAS=()
new_schema() {
  local schema="sw_bench_${1}_$$"
  psql "$PG_URL" -qc "CREATE SCHEMA $schema" >/dev/null
  SCHEMAS+=("$schema")
  DATABASE="$PG_URL?options=-c%20search_path%3D$schema"
}
drop_schemas() { for schema in "${SCHEMAS[@]}"; do psql "$PG_URL" -qc "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE" >/dev/null || true; done; }
