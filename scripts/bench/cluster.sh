#!/usr/bin/env bash
# One node against a cluster of N nodes behind nginx (round robin), in one
# run on the same machine: durable vouchers accepted per second (each node
# on the same PostgreSQL database; the cluster's nodes also on NATS and one
# S3 bucket) and segment requests per second with wrk. On one machine the
# nodes share its cores, so this measures what clustering costs, not what
# more machines add.
# Then, with a stream live on node 1 for a while: how long after node 1 lists
# a new segment the other nodes list it (each node logs every delivered
# notice's delay; same machine, same clock).
# Usage: scripts/bench/cluster.sh [seconds-per-run] [nodes] [live-seconds]
source "$(dirname "$0")/common.sh"
DURATION="${1:-10}"
NODES="${2:-3}"
LIVE_SECONDS="${3:-60}"
need wrk nginx curl python3 psql ffmpeg
build
start_s3

run_wrk() { # URL CONNECTIONS -> "requests/s errors"
  wrk -t2 -c"$2" -d"${DURATION}s" "$1" 2>&1 | awk '
    /Requests\/sec/ {rps=$2} /Non-2xx/ {errors=$NF}
    END {printf "%.0f %s\n", rps, (errors==""?0:errors)}'
}

measure() { # NAME URL -> a table row
  local name="$1" url="$2" vouchers rps errors
  vouchers=$("$BIN" bench vouchers --server "$url" --channels 64 --seconds "$DURATION")
  create_stream "cluster benchmark"
  publish 640x360 6
  wait_ended
  read -r rps errors < <(run_wrk "$url/live/$STREAM_ID/360p/1.m4s" 100)
  python3 - "$name" "$vouchers" "$rps" "$errors" <<'PY'
import json, sys
name, v, rps, errors = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f'| {name} | {v["vouchers_per_second"]:.0f} | {v["p99_ms"]:.1f} ms | {v["errors"]} | {rps} | {errors} |')
PY
}

echo "$(nproc) cores shared by every node, PostgreSQL, NATS, the S3 server, nginx and the load; ${DURATION}s per run"
echo "| setup | vouchers/s (64 channels) | voucher p99 | voucher errors | segment req/s (wrk, 100 connections) | non-2xx |"
echo "| --- | --- | --- | --- | --- | --- |"

# One node on PostgreSQL.
new_schema one
start_server "$WORK/one.log" --dev --database "$DATABASE"
measure "1 node" "http://$HTTP"
"$BIN" ledger audit --database "$DATABASE" >/dev/null
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true

# N nodes on one database, NATS and a bucket, behind nginx.
new_schema cluster
upstreams=""
# Every node answers for the balancer's address (sign-in messages name it).
LB_PORT=$(free_port)
for node in $(seq "$NODES"); do
  RUST_LOG="info,streamweave::cluster_latency=debug" start_server "$WORK/node$node.log" --dev --database "$DATABASE" --nats "$NATS" \
    --blockstore s3://blocks/bench --blockstore-s3-endpoint "http://127.0.0.1:$S3_PORT" \
    --public-url "http://127.0.0.1:$LB_PORT"
  upstreams+="server $HTTP; "
  FIRST_HTTP="${FIRST_HTTP:-$HTTP}"; FIRST_RTMP="${FIRST_RTMP:-$RTMP}"
done
cat >"$WORK/lb.conf" <<CONF
worker_processes auto;
pid $WORK/lb.pid;
error_log $WORK/lb-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  upstream nodes { $upstreams keepalive 256; }
  server {
    listen 127.0.0.1:$LB_PORT;
    location / {
      proxy_pass http://nodes; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$host:\$server_port;
    }
  }
}
CONF
nginx -c "$WORK/lb.conf" -g 'daemon off;' &
PIDS+=($!)
sleep 0.5
# Streams are created and published through the first node; everything
# else goes through the balancer.
HTTP="$FIRST_HTTP"; RTMP="$FIRST_RTMP"
measure "$NODES nodes behind nginx" "http://127.0.0.1:$LB_PORT"
"$BIN" ledger audit --database "$DATABASE" >/dev/null

# New-segment notices from node 1 to the others, live for a while.
for node in $(seq 2 "$NODES"); do : >"$WORK/node$node.log"; done
create_stream "notice latency"
publish 640x360 "$LIVE_SECONDS"
wait_ended
echo
python3 - "$WORK" "$NODES" "$LIVE_SECONDS" <<'PY'
import re, sys
work, nodes, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3]
values = []
for node in range(2, nodes + 1):
    text = open(f"{work}/node{node}.log").read()
    values += [int(m.group(1)) for m in re.finditer(r'kind="?media"? delay_us=(\d+)', text)]
values.sort()
if not values:
    sys.exit("no notice delays in the nodes' logs")
def pct(p): return values[min(len(values) - 1, int(len(values) * p / 100))] / 1000
print(f"New-segment notices, node 1 to the {nodes - 1} others, {seconds} s live (360p ladder): {len(values)} delivered")
print("| p50 | p90 | p99 | max |\n| --- | --- | --- | --- |")
print(f"| {pct(50):.2f} ms | {pct(90):.2f} ms | {pct(99):.2f} ms | {values[-1]/1000:.2f} ms |")
PY
drop_schemas
