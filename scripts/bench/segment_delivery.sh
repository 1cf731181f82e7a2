#!/usr/bin/env bash
# Segment and playlist delivery: StreamWeave against nginx serving the same
# bytes from the same disk, with wrk at 100 and 1000 connections, in one run,
# for the three ways media is read: a free stream's `/live/...`, a block by
# CID (`/ipfs/{cid}`), and a paid stream through a session's gate
# (`/play/{session}/...`, its vouchers already paid). Each row runs both
# servers in turn for a number of rounds (which goes first alternates) and
# reports each one's median run, the ratio of the medians and each round's
# ratio: on a machine shared with the load generator a single run of either
# server moves by a fifth or more.
# With COUNT_SYSCALLS=1, each run also counts (perf stat) the system calls
# and context switches of the server (nginx's workers) and of wrk, and the
# counts per response are printed after the table, with the machine's TCP
# counters of the run that say how the connections fared (nstat: handshakes
# dropped by a full listen queue and retried, tail-loss probes).
# With SERVER_CPUS and LOAD_CPUS set (say 1 and 0), the server and nginx
# run confined to the first CPUs and wrk to the second (taskset), so that
# neither server shares a core with the load generator.
# Usage: [COUNT_SYSCALLS=1] [SERVER_CPUS=1 LOAD_CPUS=0] scripts/bench/segment_delivery.sh [seconds-per-run] [rounds]
source "$(dirname "$0")/common.sh"
DURATION="${1:-10}"
ROUNDS="${2:-3}"
need wrk nginx ffmpeg curl python3
LOAD=()
PLACEMENT="$(nproc) cores shared by server and wrk"
if [ -n "${LOAD_CPUS:-}" ]; then
  LOAD=(taskset -c "$LOAD_CPUS")
  PLACEMENT="server (nginx) on CPUs ${SERVER_CPUS:-all}, wrk on CPUs $LOAD_CPUS"
fi
COUNTED=""
if [ -n "${COUNT_SYSCALLS:-}" ]; then
  need perf nstat
  for call in sendfile64 sendto recvfrom read write writev epoll_wait epoll_pwait futex; do
    COUNTED+="syscalls:sys_enter_$call,"
  done
  COUNTED+="context-switches"
fi
build
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_server "$WORK/server.log" --dev
# A free stream, for /live and /ipfs, and a paid one, for /play.
publish_free_and_paid 12
SEGMENT_URL=$("$BIN" bench paid-url --server "http://$HTTP" --stream "$PAID_ID" --file 720p/1.m4s)
PLAY_BASE="${SEGMENT_URL%/720p/1.m4s}"
curl -sf "$PLAY_BASE/720p/index.m3u8" >/dev/null
CID=$(curl -sf "http://$HTTP/api/v1/streams/$FREE_ID/segments" | python3 -c '
import json, sys
print(next(s["cid"] for s in json.load(sys.stdin) if s["rendition"] == "720p" and s["sequence"] == 1))')

# The same bytes for nginx, on the same disk, at the same paths.
ROOT_DIR="$WORK/nginx-root"
PLAY_PATH="${PLAY_BASE#http://$HTTP}"
mkdir -p "$ROOT_DIR/live/$FREE_ID/720p" "$ROOT_DIR/ipfs" "$ROOT_DIR$PLAY_PATH/720p"
curl -sf "http://$HTTP/live/$FREE_ID/720p/index.m3u8" -o "$ROOT_DIR/live/$FREE_ID/720p/index.m3u8"
curl -sf "http://$HTTP/live/$FREE_ID/720p/1.m4s" -o "$ROOT_DIR/live/$FREE_ID/720p/1.m4s"
curl -sf "http://$HTTP/ipfs/$CID" -o "$ROOT_DIR/ipfs/$CID"
curl -sf "$PLAY_BASE/720p/index.m3u8" -o "$ROOT_DIR$PLAY_PATH/720p/index.m3u8"
curl -sf "$PLAY_BASE/720p/1.m4s" -o "$ROOT_DIR$PLAY_PATH/720p/1.m4s"
SEGMENT_BYTES=$(stat -c %s "$ROOT_DIR/live/$FREE_ID/720p/1.m4s")
start_nginx "$ROOT_DIR"

# CPU time (user + system, clock ticks) of the processes given, all threads.
cpu_ticks() {
  local total=0 task fields
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*/stat; do
      read -r -a fields <"$task" || continue
      total=$((total + fields[13] + fields[14]))
    done
  done
  echo "$total"
}

calls_per_response() { # URL CONNECTIONS -> one line of counts per response, those not zero
  local requests
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  for side in server wrk; do
    awk -F, -v r="$requests" -v side="$side" -v url="$1" -v c="$2" '
      $3 ~ /^(syscalls:sys_enter_|context-switches)/ && $1 + 0 > 0 {
        name = $3; sub(/^syscalls:sys_enter_/, "", name)
        out = out sprintf(" %s %.3f", name, $1 / r)
      }
      END { printf "%s c=%s %s:%s\n", url, c, side, out }' "$WORK/$side-calls.txt"
  done
}

run_wrk() { # URL CONNECTIONS PIDS... -> "requests/s MB/s p99 non-2xx cpu-us-per-request"
  local url="$1" connections="$2"; shift 2
  local before after
  before=$(cpu_ticks "$@")
  if [ -n "$COUNTED" ]; then
    nstat -n
    perf stat -x, -e "$COUNTED" -p "$(echo "$@" | tr ' ' ',')" -o "$WORK/server-calls.txt" -- sleep "$DURATION" &
    local counting=$!
    (perf stat -x, -e "$COUNTED" -o "$WORK/wrk-calls.txt" -- \
      "${LOAD[@]}" wrk -t2 -c"$connections" -d"${DURATION}s" --latency "$url" >"$WORK/wrk.txt" 2>&1; times >"$WORK/wrk-times.txt")
    wait "$counting"
    calls_per_response "$url" "$connections" >>"$WORK/calls.txt"
    nstat -z TcpExtListenDrops TcpExtTCPSynRetrans TcpExtTCPLossProbes TcpRetransSegs |
      awk -v url="$url" -v c="$connections" '!/^#/ { out = out sprintf(" %s %s", $1, $2) } END { printf "%s c=%s tcp:%s\n", url, c, out }' >>"$WORK/calls.txt"
  else
    ("${LOAD[@]}" wrk -t2 -c"$connections" -d"${DURATION}s" --latency "$url" >"$WORK/wrk.txt" 2>&1; times >"$WORK/wrk-times.txt")
  fi
  after=$(cpu_ticks "$@")
  # The subshell's `times`: its own, then its children's (wrk's) user and
  # system time, as 0m1.234s.
  local wrk_seconds
  wrk_seconds=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } print t }' "$WORK/wrk-times.txt")
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v wrk_seconds="$wrk_seconds" '
    /requests in/ {requests=$1}
    /Requests\/sec/ {rps=$2}
    /Transfer\/sec/ {v=$2; if (v ~ /GB/) m=v*1024; else if (v ~ /MB/) m=v+0; else if (v ~ /KB/) m=v/1024; else m=v/1048576; mb=m}
    / 99%/ {p99=$2}
    /Non-2xx/ {errors=$NF}
    END {n = (requests > 0 ? requests : 1); printf "%.0f %.1f %s %s %.1f %.1f\n", rps, mb, p99, (errors==""?0:errors), ticks*1e6/hz/n, wrk_seconds*1e6/n}' "$WORK/wrk.txt"
}
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

# The run of median requests a second among "requests/s ..." lines.
median_run() { sort -n | awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }'; }

echo "segment: ${SEGMENT_BYTES} bytes (720p, 2 s); wrk -t2 for ${DURATION}s per run, ${ROUNDS} rounds a row (the two servers in turn, which goes first alternating): each server's median run; $PLACEMENT"
echo "CPU per request: the server's (or nginx's workers') user and system time over the run, divided by the requests answered / the same for wrk"
printf '| path | connections | StreamWeave req/s | StreamWeave MB/s | StreamWeave p99 | StreamWeave CPU per request (server / wrk) | nginx req/s | nginx MB/s | nginx p99 | nginx CPU per request (server / wrk) | ratio | ratio by round |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for path in $(delivery_paths); do
  label=$(path_label "$path")
  for connections in 100 1000; do
    ours_runs="" nginx_runs="" by_round=""
    for round in $(seq "$ROUNDS"); do
      # The paid session idles out after 2 minutes without a request, as a
      # player's does, and the rows before its own take longer than that.
      curl -sf "$PLAY_BASE/720p/index.m3u8" >/dev/null
      if [ $((round % 2)) -eq 1 ]; then order="ours nginx"; else order="nginx ours"; fi
      for server in $order; do
        if [ "$server" = ours ]; then
          ours=$(run_wrk "http://$HTTP$path" "$connections" "$SERVER_PID")
          ours_runs+="$ours"$'\n'
        else
          # shellcheck disable=SC2086 # NGINX_WORKERS is a list of PIDs
          nginx=$(run_wrk "http://127.0.0.1:$NGINX_PORT$path" "$connections" $NGINX_WORKERS)
          nginx_runs+="$nginx"$'\n'
        fi
      done
      by_round+="$(python3 -c "print(f'{${ours%% *}/max(${nginx%% *},1):.2f}')") "
      read -r _ _ _ ours_err _ <<<"$ours"
      read -r _ _ _ nginx_err _ <<<"$nginx"
      if [ "$ours_err" != "0" ] || [ "$nginx_err" != "0" ]; then
        echo "error: non-2xx answers (ours $ours_err, nginx $nginx_err): the comparison is void" >&2; exit 1
      fi
    done
    read -r ours_rps ours_mb ours_p99 _ ours_cpu ours_wrk < <(printf '%s' "$ours_runs" | median_run)
    read -r nginx_rps nginx_mb nginx_p99 _ nginx_cpu nginx_wrk < <(printf '%s' "$nginx_runs" | median_run)
    ratio=$(python3 -c "print(f'{$ours_rps/max($nginx_rps,1):.2f}')")
    printf '| %s | %s | %s | %s | %s | %s us / %s us | %s | %s | %s | %s us / %s us | %s | %s |\n' "$label" "$connections" \
      "$ours_rps" "$ours_mb" "$ours_p99" "$ours_cpu" "$ours_wrk" "$nginx_rps" "$nginx_mb" "$nginx_p99" "$nginx_cpu" "$nginx_wrk" "$ratio" "${by_round% }"
  done
done
if [ -n "$COUNTED" ]; then
  echo
  echo "System calls and context switches per response (each run, in order; the nginx port is nginx's):"
  cat "$WORK/calls.txt"
fi
