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
# once all have joined (errors all along). A voucher's latency runs from
# the start of its signing on the generator's signing thread to the
# answer; its answer's, from being posted to the answer (the server's part).
# With NODES=3 (say), the viewers are spread over a cluster of that many
# nodes instead (one PostgreSQL database, NATS, one S3 bucket; viewer i
# watches and pays through node i mod N), all of them confined to CPU 1;
# PostgreSQL, NATS and the S3 server run where the machine puts them. The
# nginx run is then left out (its files come from a node's own store).
# CLUSTER=1 runs one node that way (on PostgreSQL, NATS and the bucket).
# Clustered runs also count the messages the nodes send one another over
# NATS for 5 s of the measured window (scripts/bench/nats_messages.py).
# With SCHED=1, the paying run also records the scheduler on CPU 1 (`perf
# sched`) for 10 s of its measured window and prints, per command, how long
# its threads ran and how long they waited for the core once woken (the 15
# that ran longest).
# Usage: [NODES=N] [CLUSTER=1] [SCHED=1] scripts/bench/viewers.sh [seconds-per-run] [viewer counts...]
source "$(dirname "$0")/common.sh"
RUN_SECONDS="${1:-30}"
shift || true
COUNTS=("$@")
[ "${#COUNTS[@]}" -gt 0 ] || COUNTS=(1000 10000)
NODES="${NODES:-1}"
need nginx ffmpeg curl python3 taskset
build
export SERVER_CPUS=1
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SERVERS=() SERVER_PIDS=()
if [ "$NODES" -gt 1 ] || [ -n "${CLUSTER:-}" ]; then
  need psql
  start_s3
  new_schema viewers
  trap 'cleanup; drop_schemas' EXIT
  for node in $(seq "$NODES"); do
    DATA_DIR="$WORK/node$node" start_server "$WORK/node$node.log" --dev --database "$DATABASE" --nats "$NATS" \
      --blockstore s3://blocks/viewers --blockstore-s3-endpoint "http://127.0.0.1:$S3_PORT"
    SERVERS+=("http://$HTTP") SERVER_PIDS+=("$SERVER_PID")
    FIRST_HTTP="${FIRST_HTTP:-$HTTP}" FIRST_RTMP="${FIRST_RTMP:-$RTMP}"
  done
  # The stream is created and ingested on the first node.
  HTTP="$FIRST_HTTP" RTMP="$FIRST_RTMP"
else
  start_server "$WORK/server.log" --dev
  SERVERS+=("http://$HTTP") SERVER_PIDS+=("$SERVER_PID")
fi
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

if [ -n "${SCHED:-}" ]; then need perf; fi
for viewers in "${COUNTS[@]}"; do
  echo "paying viewers: $viewers for ${RUN_SECONDS}s" >&2
  if [ -n "${SCHED:-}" ]; then
    # Inside the measured window, which the generator announces once every
    # viewer has joined.
    (for _ in $(seq 600); do grep -q "all viewers joined; measuring" "$WORK/generator-$viewers.log" 2>/dev/null && break; sleep 0.5; done
      sleep 2
      taskset -c 0 perf sched record -C 1 -o "$WORK/sched-$viewers.data" -- sleep 10 >/dev/null 2>&1) &
    SCHED_PID=$!
  fi
  if [ "$NODES" -gt 1 ] || [ -n "${CLUSTER:-}" ]; then
    # What the nodes send one another over NATS, 5 s inside the measured
    # window (one more listener of every subject, on the generator's core).
    (for _ in $(seq 600); do grep -q "all viewers joined; measuring" "$WORK/generator-$viewers.log" 2>/dev/null && break; sleep 0.5; done
      sleep 3
      taskset -c 0 python3 "$ROOT/scripts/bench/nats_messages.py" "$NATS" 5 >"$WORK/nats-$viewers.txt" 2>&1) &
    NATS_COUNT_PID=$!
  fi
  taskset -c 0 "$BIN" bench viewers --server "$(IFS=,; echo "${SERVERS[*]}")" --stream "$STREAM_ID" \
    --viewers "$viewers" --seconds "$RUN_SECONDS" --ramp-seconds 10 \
    --server-pid "$(IFS=,; echo "${SERVER_PIDS[*]}")" >"$WORK/paid-$viewers.json" 2> >(tee "$WORK/generator-$viewers.log" >&2)
  if [ -n "${NATS_COUNT_PID:-}" ]; then wait "$NATS_COUNT_PID" || true; fi
  if [ -n "${SCHED:-}" ]; then
    wait "$SCHED_PID" || true
    perf sched latency -i "$WORK/sched-$viewers.data" --sort runtime 2>/dev/null \
      | awk 'NR<=3 || /\|/' | head -18 >"$WORK/sched-$viewers.txt" || true
  fi
done
# Each node's own account of where its vouchers waited, read before the
# publisher stops (printed after the table).
for i in "${!SERVERS[@]}"; do
  curl -sf "${SERVERS[$i]}/metrics" >"$WORK/node$((i + 1)).metrics" || true
done
kill "$PUBLISHER_PID" 2>/dev/null || true
KINDS="paid nginx"
if [ "$NODES" -gt 1 ] || [ -n "${CLUSTER:-}" ]; then
  if ! "$BIN" ledger audit --database "$DATABASE" >"$WORK/audit.txt" 2>&1; then
    grep -m 20 . "$WORK/audit.txt" >&2
    exit 1
  fi
  KINDS="paid"
else
# The same segments as plain files for nginx.
ROOT_DIR="$WORK/nginx-root"
"$BIN" export --data-dir "$WORK/data" --stream "$STREAM_ID" --out "$ROOT_DIR" >/dev/null
SEGMENTS=$(find "$ROOT_DIR/360p" -name '*.m4s' | wc -l)
start_nginx "$ROOT_DIR"
for viewers in "${COUNTS[@]}"; do
  echo "nginx viewers: $viewers for ${RUN_SECONDS}s" >&2
  taskset -c 0 "$BIN" bench viewers --static-base "http://127.0.0.1:$NGINX_PORT/360p" --static-segments "$SEGMENTS" \
    --viewers "$viewers" --seconds "$RUN_SECONDS" --ramp-seconds 10 \
    --server-pid "$(pgrep -d, -P "$NGINX_PID")" >"$WORK/nginx-$viewers.json"
done
fi

if [ "$NODES" -gt 1 ] || [ -n "${CLUSTER:-}" ]; then
  echo "$NODES nodes (and the first's ffmpeg) on CPU 1, on PostgreSQL, NATS and one S3 bucket; generator and publisher on CPU 0; viewers spread over the nodes join over 10 s, then ${RUN_SECONDS}s measured; 360p stream, 2 s segments, 1 s playlist polls; server CPU and RSS are the nodes' summed"
else
  echo "server (and its ffmpeg) or nginx on CPU 1, generator and publisher on CPU 0; viewers join over 10 s, then ${RUN_SECONDS}s measured; 360p stream, 2 s segments, 1 s playlist polls"
fi
python3 - "$WORK" "$KINDS" "$NODES" "${COUNTS[@]}" <<'PY'
import json, sys
work, kinds, nodes, counts = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4:]
# Clustered runs (NODES > 1, or CLUSTER=1) have no nginx run.
clustered = kinds == ["paid"]
where = f", {nodes} nodes" if nodes > 1 else ", 1 node on the cluster's services" if clustered else ""
def fmt(x, unit=""):
    return "-" if x is None else f"{x:.1f}{unit}"
print("| run | viewers | watching | segments/s | segment p50 | segment p99 | voucher p50 | voucher p99 | voucher answer p50 / p99 | playlist p99 | errors | server CPU | server RSS | generator CPU | setup |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for kind in kinds:
    for n in counts:
        r = json.load(open(f"{work}/{kind}-{n}.json"))
        paid = kind == "paid"
        print("| {} | {} | {} | {:.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            ("StreamWeave, paying" + where) if paid else "nginx, no payment", n, r["viewers_watching"],
            r["segments_per_second"], fmt(r["segments"]["p50_ms"], " ms"), fmt(r["segments"]["p99_ms"], " ms"),
            fmt(r["vouchers"]["p50_ms"], " ms") if paid else "-", fmt(r["vouchers"]["p99_ms"], " ms") if paid else "-",
            (fmt(r["voucher_answers"]["p50_ms"], " ms") + " / " + fmt(r["voucher_answers"]["p99_ms"], " ms")) if paid else "-",
            fmt(r["playlists"]["p99_ms"], " ms"), r["errors"],
            fmt(r.get("server_cpu_percent"), " %"), fmt(r.get("server_peak_rss_mib"), " MiB"),
            fmt(r.get("generator_cpu_percent"), " %"),
            f"{r['setup_ms']/1000:.0f} s" if paid else "-"))
        if paid and r.get("payment_required_retries"):
            print(f"<!-- paid {n}: {r['payment_required_retries']} segments answered 402 although paid ahead (paid and fetched again) -->")
        if r["error_samples"]:
            print(f"<!-- {kind} {n}: {r['error_samples'][:3]} -->")
PY
if [ "$NODES" -gt 1 ] || [ -n "${CLUSTER:-}" ]; then
  for viewers in "${COUNTS[@]}"; do
    echo; echo "Messages between the nodes (NATS, 5 s of the $viewers-viewer run): $(cat "$WORK/nats-$viewers.txt" 2>/dev/null)"
  done
fi
if [ -n "${SCHED:-}" ]; then
  for viewers in "${COUNTS[@]}"; do
    echo; echo "CPU 1's scheduler over 10 s of the $viewers-viewer paying run (perf sched latency: the 15 that ran longest, and how long each waited for the core once woken):"
    cat "$WORK/sched-$viewers.txt" 2>/dev/null || true
  done
fi
python3 - "$WORK" "$NODES" <<'PY'
import re, sys
work, nodes = sys.argv[1], int(sys.argv[2])
def mean(text, name, label=None):
    sel = r'\{stage="%s"\}' % label if label else ''
    total = re.search(r'^\S*%s_sum%s (\S+)$' % (name, sel), text, re.M)
    count = re.search(r'^\S*%s_count%s (\S+)$' % (name, sel), text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None, 0
    return float(total.group(1)) / float(count.group(1)) * 1000, int(float(count.group(1)))
rows = []
for node in range(1, nodes + 1):
    try:
        text = open(f"{work}/node{node}.metrics").read()
    except OSError:
        continue
    stages = [mean(text, "voucher_stage_duration_seconds", s) for s in ("lookup", "recovery", "engine")]
    commit, commits = mean(text, "payments_commit_duration_seconds")
    if stages[0][1] == 0:
        continue
    rows.append(f"| {node} | {stages[0][1]} | " + " | ".join(f"{m:.3f} ms" for m, _ in stages)
                + f" | {commits} | " + ("-" if commit is None else f"{commit:.1f} ms") + " |")
if rows:
    print("\nWhere the nodes' accepted vouchers waited over the whole run (means; their metrics):")
    print("| node | vouchers | lookup | recovery | engine | commits | commit |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
# What reached each node from the others over the whole run, by kind, and
# how long it took on average (the nodes' metrics).
delivered = {}
for node in range(1, nodes + 1):
    try:
        text = open(f"{work}/node{node}.metrics").read()
    except OSError:
        continue
    sums = dict(re.findall(r'^\S*cluster_message_delay_seconds_sum\{kind="([^"]+)"\} (\S+)$', text, re.M))
    for kind, count in re.findall(r'^\S*cluster_message_delay_seconds_count\{kind="([^"]+)"\} (\S+)$', text, re.M):
        count = int(float(count))
        mean = f", {float(sums[kind]) / count * 1000:.2f} ms" if count and kind in sums else ""
        delivered.setdefault(node, {})[kind] = f"{count}{mean}"
if nodes > 1 and delivered:
    print("\nMessages delivered to each node from the others over the whole run, and their mean delay from sent to delivered (its metrics), by kind:")
    kinds = sorted({k for d in delivered.values() for k in d})
    print("| node | " + " | ".join(kinds) + " |")
    print("| --- |" + " --- |" * len(kinds))
    for node, counts in sorted(delivered.items()):
        print(f"| {node} | " + " | ".join(str(counts.get(k, 0)) for k in kinds) + " |")
PY
