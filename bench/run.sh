#!/usr/bin/env bash
# imsbridge side by side with nginx and haproxy, forwarding SOAP POSTs to a
# mock Adobe Campaign (bench/README.md):
#
#   direct     wrk -> mock Campaign                    (the physical limit)
#   nginx      wrk -> nginx          -> mock Campaign  (sets Authorization only)
#   haproxy    wrk -> haproxy        -> mock Campaign  (sets Authorization only)
#   imsbridge  wrk -> imsbridge      -> mock Campaign  (checks the caller's password,
#              strips the session token from the body, adds the Bearer token of
#              the caller's technical account, fetched from a stand-in IMS)
#   candidate  wrk -> $CANDIDATE_URL -> mock Campaign  (only if CANDIDATE_URL is set)
#
# Then 64 concurrent 10 MB uploads through each proxy, for its peak memory.
#
# Usage:  bench/run.sh                5 rounds x 3 body sizes + uploads (~10 min)
#         QUICK=1 bench/run.sh        1 round, 1k body only, no uploads (~1 min)
# Every setting below can be overridden from the environment.
# Everything listens on 127.0.0.1 only; every load run is bounded in time.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ------------------------------------------------------------------ settings
ROUNDS=${ROUNDS:-5}
BODIES=${BODIES:-1k 64k 1m}               # names of files made by gen_bodies.sh
WARMUP=${WARMUP:-1}                       # seconds per run, not measured
DURATION=${DURATION:-6}                   # seconds per run, measured
CONNS=${CONNS:-32}                        # wrk connections
THREADS=${THREADS:-1}                     # wrk threads (see README: 2 cores)
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}     # mock Campaign
NGINX_PORT=${NGINX_PORT:-18081}
HAPROXY_PORT=${HAPROXY_PORT:-18082}
IMSBRIDGE_PORT=${IMSBRIDGE_PORT:-18083}
IMSBRIDGE_ADMIN_PORT=${IMSBRIDGE_ADMIN_PORT:-18093}
PROXY_WORKERS=${PROXY_WORKERS:-1}         # nginx worker_processes, haproxy nbthread of the proxies
IMSBRIDGE_WORKERS=${IMSBRIDGE_WORKERS:-$PROXY_WORKERS} # server.workers: runtime threads
IMSBRIDGE_LOG=${IMSBRIDGE_LOG:-warn}      # RUST_LOG; "info" logs a line per request
UPLOADS=${UPLOADS:-1}                     # 1 = the 64 x 10 MB upload step
UPLOAD_CONNS=${UPLOAD_CONNS:-64}
UPLOAD_DURATION=${UPLOAD_DURATION:-10}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}   # nginx workers of the mock Campaign
NGINX_REQUEST_BUFFERING=${NGINX_REQUEST_BUFFERING:-off}  # off = stream like HAProxy
BUFFER_KB=${BUFFER_KB:-16}                # nginx client_body_buffer_size = haproxy tune.bufsize
# Injected by nginx and haproxy as "Bearer $TOKEN". Default: the very token imsbridge got
# from the stand-in IMS (about 800 characters, like a real IMS access token), so that every
# proxy sends Campaign the same bytes; without imsbridge, a short static one.
TOKEN=${TOKEN:-}
CANDIDATE_URL=${CANDIDATE_URL:-}          # e.g. http://127.0.0.1:18083
CANDIDATE_CMD=${CANDIDATE_CMD:-}          # optional: command that starts the candidate
CANDIDATE_PID=${CANDIDATE_PID:-}          # optional: pid of a candidate started by hand
KEEP_WORK=${KEEP_WORK:-0}                 # 1 = keep the temp dir (configs, logs)
IMSBRIDGE_CONFIG_EXTRA=${IMSBRIDGE_CONFIG_EXTRA:-} # appended to imsbridge's config (a [state] table)
if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=1
  BODIES=1k
  UPLOADS=0
fi
DEFAULT_TARGETS="direct nginx haproxy imsbridge${CANDIDATE_URL:+ candidate}"
TARGETS=${TARGETS:-$DEFAULT_TARGETS}

SOAP_PATH=/nl/jsp/soaprouter.jsp
CLK_TCK=$(getconf CLK_TCK)
RESULTS=${RESULTS_DIR:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)}
RAW=$RESULTS/raw.tsv
UPLOADS_RAW=$RESULTS/uploads.tsv
ROOT=$(cd "$BENCH_DIR/.." && pwd)
IMSBRIDGE_BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=$(mktemp -d /tmp/soapbench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as nobody when started as root

# Environment for a candidate started through CANDIDATE_CMD.
export BENCH_UPSTREAM_ADDR=127.0.0.1:$UPSTREAM_PORT
export BENCH_UPSTREAM_URL=http://$BENCH_UPSTREAM_ADDR
BENCH_LISTEN=${CANDIDATE_URL#*://}
export BENCH_LISTEN=${BENCH_LISTEN%%/*}

# ------------------------------------------------------------------ helpers
die() { echo "error: $*" >&2; exit 1; }
warn() { echo "WARNING: $*" >&2; }
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# All descendants of a pid: children, grandchildren, ...
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# Stop a process this script started, and what it started: TERM, KILL after 5 s.
# shellcheck disable=SC2086  # the pid lists are split into words on purpose
stop_tree() {
  local pids p i left=""
  pids="$1 $(descendants "$1")"
  kill -TERM $pids 2>/dev/null || true
  for (( i = 0; i < 50; i++ )); do
    left=""
    for p in $pids; do
      if alive "$p"; then left="$left $p"; fi
    done
    [[ -z $left ]] && break
    sleep 0.1
  done
  if [[ -n $left ]]; then kill -KILL $left 2>/dev/null || true; fi
  wait "$1" 2>/dev/null || true
}

# CPU time used so far (clock ticks, user + system, all threads) by a pid and
# its descendants, from /proc/PID/stat fields 14 and 15.
cpu_ticks() {
  local p total=0 f
  for p in "$1" $(descendants "$1"); do
    read -ra f <<< "$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null)"
    (( ${#f[@]} > 13 )) || continue
    total=$(( total + f[11] + f[12] ))
  done
  echo "$total"
}

# Machine-wide CPU ticks from /proc/stat, all CPUs: "busy idle steal".
box_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat
}

# Percent of one core: CPU ticks used over a wall time in nanoseconds.
cpu_pct() { # ticks nanoseconds
  awk -v d="$1" -v hz="$CLK_TCK" -v ns="$2" 'BEGIN { printf "%.1f", 100 * d / hz / (ns / 1e9) }'
}

# Peak resident memory: reset the high-water mark of a pid and its descendants
# (clear_refs 5), then read it back (VmHWM, KiB, summed over the processes).
reset_peak_rss() {
  local p
  for p in "$1" $(descendants "$1"); do
    echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true
  done
}

peak_rss_kb() {
  local p total=0 kb
  for p in "$1" $(descendants "$1"); do
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
    total=$(( total + ${kb:-0} ))
  done
  echo "$total"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until something listens on a port; give up after $3 seconds or when
# the process that should listen there has died.
wait_port() {
  local port=$1 pid=$2 i
  for (( i = 0; i < ${3:-10} * 10; i++ )); do
    port_open "$port" && return 0
    if [[ -n $pid ]] && ! alive "$pid"; then return 1; fi
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ cleanup
declare -A PID=()   # everything this script started in the background: name -> pid
WRK_PID=
POLICY_RC_CREATED=

cleanup() {
  local rc=$? name
  trap - EXIT INT TERM
  if [[ -n $WRK_PID ]]; then stop_tree "$WRK_PID"; fi
  for name in "${!PID[@]}"; do stop_tree "${PID[$name]}"; done
  if [[ -n $POLICY_RC_CREATED ]]; then rm -f "$POLICY_RC_CREATED"; fi
  if (( rc != 0 )) || [[ $KEEP_WORK == 1 ]]; then
    echo "configs and logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ install
ensure_packages() {
  local missing=() sudo=""
  command -v nginx >/dev/null || missing+=(nginx)
  [[ -e /usr/lib/nginx/modules/ngx_http_js_module.so ]] || missing+=(libnginx-mod-http-js)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v ps >/dev/null || missing+=(procps)
  if (( ${#missing[@]} == 0 )); then return 0; fi
  if (( EUID != 0 )); then sudo=sudo; fi
  echo "installing Debian packages: ${missing[*]}"
  # Keep apt from starting the system nginx/haproxy services (the stock nginx
  # site listens on *:80), unless a policy is already in place.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=/usr/sbin/policy-rc.d
  fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ -n $POLICY_RC_CREATED ]]; then
    $sudo rm -f "$POLICY_RC_CREATED"
    POLICY_RC_CREATED=
  fi
}

# ------------------------------------------------------------------ servers
# Fill in the @...@ placeholders of a template from bench/conf/.
render() { # template dir port
  sed -e "s|@DIR@|$2|g" -e "s|@PORT@|$3|g" \
      -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@TOKEN@|$TOKEN|g" \
      -e "s|@WORKERS@|$UPSTREAM_WORKERS|g" \
      -e "s|@PROXY_WORKERS@|$PROXY_WORKERS|g" \
      -e "s|@REQUEST_BUFFERING@|$NGINX_REQUEST_BUFFERING|g" \
      -e "s|@BUFFER_BYTES@|$(( BUFFER_KB * 1024 ))|g" \
      "$BENCH_DIR/conf/$1"
}

start() { # name logfile command...: run in the background, remember the pid
  local name=$1 log=$2
  shift 2
  "$@" > "$log" 2>&1 &
  PID[$name]=$!
}

start_nginx() { # name template port
  local d=$WORK/$1
  mkdir -p "$d/tmp"
  if [[ $2 == upstream.nginx.conf ]]; then cp "$BENCH_DIR/conf/mock_campaign.js" "$d/"; fi
  render "$2" "$d" "$3" > "$d/nginx.conf"
  nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" || die "$1: bad nginx config"
  start "$1" "$d/stdout.log" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  wait_port "$3" "${PID[$1]}" || die "$1 did not start, see $d/"
}

start_haproxy() {
  local d=$WORK/haproxy
  mkdir -p "$d"
  render proxy.haproxy.cfg "$d" "$HAPROXY_PORT" > "$d/haproxy.cfg"
  haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy: bad config"
  start haproxy "$d/stdout.log" haproxy -db -f "$d/haproxy.cfg"
  wait_port "$HAPROXY_PORT" "${PID[haproxy]}" || die "haproxy did not start, see $d/"
}

start_candidate() {
  local port=${BENCH_LISTEN##*:}
  if [[ -n $CANDIDATE_CMD ]]; then
    port_open "$port" && die "port $port is busy before the candidate was started"
    start candidate "$WORK/candidate.log" bash -c "exec $CANDIDATE_CMD"
    wait_port "$port" "${PID[candidate]}" 60 || die "candidate did not start, see $WORK/candidate.log"
  else
    port_open "$port" || die "nothing listens at $CANDIDATE_URL (start it, or set CANDIDATE_CMD)"
  fi
}

# imsbridge from this checkout, release build, with one caller: the login
# "mc" and password "secret" that the bodies carry as their session token
# ("mc/secret"), in ims mode, on an OAuth profile served by the stand-in IMS.
start_imsbridge() {
  local d=$WORK/imsbridge i hash
  mkdir -p "$d"
  start ims "$d/ims.log" "$IMSBRIDGE_BIN_DIR/examples/stand_in_ims" bench-client bench-client-secret
  for (( i = 0; i < 100; i++ )); do
    IMS_URL=$(grep -m1 '^http://' "$d/ims.log" || true)
    [[ -n $IMS_URL ]] && break
    alive "${PID[ims]}" || die "the stand-in IMS did not start, see $d/ims.log"
    sleep 0.1
  done
  [[ -n $IMS_URL ]] || die "the stand-in IMS printed no URL, see $d/ims.log"
  hash=$(printf 'secret\n' | "$IMSBRIDGE_BIN_DIR/imsbridge" hash-password)
  cat > "$d/imsbridge.toml" <<EOT
[server]
listen = "127.0.0.1:$IMSBRIDGE_PORT"
admin_listen = "127.0.0.1:$IMSBRIDGE_ADMIN_PORT"
workers = $IMSBRIDGE_WORKERS

[upstream]
url = "http://127.0.0.1:$UPSTREAM_PORT"

[ims]
host = "$IMS_URL"

[profiles.messagecenter]
type = "oauth"
client_id = "bench-client"
client_secret = { env = "BENCH_CLIENT_SECRET" }
scopes = ["openid", "AdobeID", "additional_info.projectedProductContext"]

[[callers]]
name = "message-center"
login = "mc"
password = "$hash"
profile = "messagecenter"

$IMSBRIDGE_CONFIG_EXTRA
EOT
  # A candidate started by CANDIDATE_CMD can run with the same config (bench/state_ab.sh).
  export BENCH_IMSBRIDGE_CONFIG=$d/imsbridge.toml
  start imsbridge "$d/imsbridge.log" env BENCH_CLIENT_SECRET=bench-client-secret \
    RUST_LOG="$IMSBRIDGE_LOG" "$IMSBRIDGE_BIN_DIR/imsbridge" run --config "$d/imsbridge.toml"
  for (( i = 0; i < 100; i++ )); do
    curl -sf -o /dev/null "http://127.0.0.1:$IMSBRIDGE_ADMIN_PORT/readyz" && return 0
    alive "${PID[imsbridge]}" || break
    sleep 0.1
  done
  die "imsbridge did not become ready, see $d/"
}

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$UPSTREAM_PORT$SOAP_PATH" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT$SOAP_PATH" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT$SOAP_PATH" ;;
    imsbridge) echo "http://127.0.0.1:$IMSBRIDGE_PORT$SOAP_PATH" ;;
    candidate) echo "${CANDIDATE_URL%/}$SOAP_PATH" ;;
  esac
}

# The process whose CPU use is reported for a target (none for direct).
proxy_pid() {
  case $1 in
    direct) echo "" ;;
    candidate) echo "${PID[candidate]:-$CANDIDATE_PID}" ;;
    *) echo "${PID[$1]}" ;;
  esac
}

soap_action() {
  if [[ $1 == 1k ]]; then echo '"nms:rtEvent#PushEvent"'; else echo '"nms:rtEvent#PushEvents"'; fi
}

# The Bearer token imsbridge sends Campaign (the stand-in IMS issued it).
# The digest of the Authorization imsbridge sent Campaign (the mock answers with a digest, never
# the token: imsbridge drops an answer's header that holds its token).
ims_seen() {
  curl -sS --max-time 10 -o /dev/null -D - -H 'Content-Type: application/soap+xml; charset=utf-8' \
    -H 'X-Bench-Check: 1' -H "SOAPAction: $(soap_action 1k)" \
    --data-binary "@$WORK/bodies/1k.xml" "$(url_of imsbridge)" |
    tr -d '\r' | sed -n 's/^[Xx]-[Ss]een-[Aa]uthorization: //p'
}

# A token of the stand-in IMS, asked for as imsbridge asks: the same size as imsbridge's.
ims_token() {
  curl -sS --max-time 10 -d grant_type=client_credentials -d client_id=bench-client \
    -d client_secret=bench-client-secret -d scope=openid,AdobeID "$IMS_URL/ims/token/v3" |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p'
}

# What the mock shows for `Authorization: Bearer TOKEN`.
seen_of() { printf 'sha256:%s' "$(printf 'Bearer %s' "$1" | sha256sum | cut -d' ' -f1)"; }

# One request per body size through a target: it must answer 200 with the
# plId, and behind a proxy the upstream must have seen the Bearer token (for
# imsbridge: the one the stand-in IMS issued).
check_target() {
  local t=$1 b auth warned=""
  for b in $BODIES; do
    curl -sS --max-time 10 -o "$WORK/check.body" -D "$WORK/check.hdr" \
      -H 'Content-Type: application/soap+xml; charset=utf-8' -H 'Expect:' \
      -H 'X-Bench-Check: 1' -H "SOAPAction: $(soap_action "$b")" \
      --data-binary "@$WORK/bodies/$b.xml" "$(url_of "$t")" || die "$t: request failed"
    grep -q '^HTTP/1\.[01] 200' "$WORK/check.hdr" ||
      die "$t ($b): got $(head -1 "$WORK/check.hdr")"
    grep -q '<plId>72057594037927936</plId>' "$WORK/check.body" ||
      die "$t ($b): unexpected response body"
    auth=$(tr -d '\r' < "$WORK/check.hdr" | sed -n 's/^[Xx]-[Ss]een-[Aa]uthorization: //p')
    if [[ $t == imsbridge ]]; then
      [[ $auth == "$IMS_SEEN" ]] || die "imsbridge: upstream saw Authorization '$auth'"
    elif [[ $t != direct && $auth != "$(seen_of "$TOKEN")" ]]; then
      if [[ $t != candidate ]]; then die "$t: upstream saw Authorization '$auth'"; fi
      if [[ -z $warned ]]; then
        warn "candidate did not send 'Authorization: Bearer \$TOKEN' upstream (got '$auth'): not like for like"
        warned=1
      fi
    fi
  done
}

# ------------------------------------------------------------------ load
# wrk runs in the background so that Ctrl-C stops it at once (see cleanup);
# `timeout` bounds it even if wrk hangs.
run_wrk() { # url body seconds logfile [connections] [timeout seconds]
  BODY_FILE=$WORK/bodies/$2.xml SOAP_ACTION=$(soap_action "$2") \
    timeout -k 5 $(( $3 + 30 + ${6:-5} )) \
    wrk -t"$THREADS" -c"${5:-$CONNS}" -d"$3s" --timeout "${6:-5}s" \
    -s "$BENCH_DIR/soap_post.lua" "$1" > "$4" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || true
  WRK_PID=
}

RUN_NO=0

measure() { # round body target
  local r=$1 b=$2 t=$3 url log line kv pp pp0=0 pp1=0 up0 up1 t0 t1 box0 box1
  local rps errors pcpu=- pus=- upcpu pcpu_shown idle steal rss=- rss_shown=-
  local -A R=()
  url=$(url_of "$t")
  log=$RESULTS/wrk/r$r-$b-$t.txt
  RUN_NO=$(( RUN_NO + 1 ))
  if (( WARMUP > 0 )); then run_wrk "$url" "$b" "$WARMUP" "$WORK/warmup.txt"; fi

  pp=$(proxy_pid "$t")
  up0=$(cpu_ticks "${PID[upstream]}")
  if [[ -n $pp ]]; then
    pp0=$(cpu_ticks "$pp")
    reset_peak_rss "$pp"
  fi
  box0=$(box_ticks)
  t0=$(date +%s%N)
  run_wrk "$url" "$b" "$DURATION" "$log"
  t1=$(date +%s%N)
  box1=$(box_ticks)
  up1=$(cpu_ticks "${PID[upstream]}")
  if [[ -n $pp ]]; then
    pp1=$(cpu_ticks "$pp")
    rss=$(peak_rss_kb "$pp")
    rss_shown="$(( rss / 1024 )) MB"
  fi

  line=$(grep '^RESULT ' "$log" || true)
  if [[ -z $line ]]; then
    warn "round $r $b $t: wrk gave no result: $(tail -2 "$log" | tr '\n' ' ')"
    return 0
  fi
  for kv in ${line#RESULT }; do R[${kv%%=*}]=${kv#*=}; done

  rps=$(awk -v n="${R[requests]}" -v us="${R[duration_us]}" 'BEGIN { printf "%.1f", n / (us / 1e6) }')
  errors=$(( R[err_connect] + R[err_read] + R[err_write] + R[err_status] + R[err_timeout] ))
  upcpu=$(cpu_pct $(( up1 - up0 )) $(( t1 - t0 )))
  if [[ -n $pp ]]; then
    pcpu=$(cpu_pct $(( pp1 - pp0 )) $(( t1 - t0 )))
    pus=$(awk -v d=$(( pp1 - pp0 )) -v hz="$CLK_TCK" -v n="${R[requests]}" \
      'BEGIN { if (n > 0) printf "%.2f", 1e6 * d / hz / n; else print "-" }')
  fi
  # idle and steal time of the whole machine, % of all CPUs
  read -r idle steal <<< "$(awk -v a="$box0" -v z="$box1" 'BEGIN {
    split(a, x, " "); split(z, y, " ")
    busy = y[1] - x[1]; idle = y[2] - x[2]; steal = y[3] - x[3]; all = busy + idle + steal
    printf "%.1f %.1f", 100 * idle / all, 100 * steal / all }')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$b" "$t" "$rps" \
    "${R[p50_us]}" "${R[p99_us]}" "${R[requests]}" "$errors" "$pcpu" "$pus" "$upcpu" \
    "$idle" "$steal" "$rss" >> "$RAW"
  pcpu_shown=$pcpu
  if [[ $pcpu != - ]]; then pcpu_shown="$pcpu%"; fi
  printf '[%2d/%d] round %d %-4s %-9s %6.0f req/s  p50 %6.2f ms  p99 %6.2f ms  err %d  proxy CPU %s  RSS %s  upstream %s%%  idle %s%%  steal %s%%\n' \
    "$RUN_NO" "$TOTAL_RUNS" "$r" "$b" "$t" "$rps" \
    "$(awk -v u="${R[p50_us]}" 'BEGIN { print u / 1000 }')" \
    "$(awk -v u="${R[p99_us]}" 'BEGIN { print u / 1000 }')" "$errors" "$pcpu_shown" "$rss_shown" "$upcpu" "$idle" "$steal"
}

# Many concurrent large uploads through a proxy: its peak memory shows whether
# it buffers bodies. One run per proxy, after the rounds.
measure_uploads() { # target
  local t=$1 pp log line kv rss errors mbs
  local -A R=()
  pp=$(proxy_pid "$t")
  [[ -n $pp ]] || return 0
  log=$RESULTS/wrk/uploads-$t.txt
  reset_peak_rss "$pp"
  run_wrk "$(url_of "$t")" 10m "$UPLOAD_DURATION" "$log" "$UPLOAD_CONNS" 60
  rss=$(peak_rss_kb "$pp")
  line=$(grep '^RESULT ' "$log" || true)
  if [[ -z $line ]]; then
    warn "uploads $t: wrk gave no result: $(tail -2 "$log" | tr '\n' ' ')"
    return 0
  fi
  for kv in ${line#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
  errors=$(( R[err_connect] + R[err_read] + R[err_write] + R[err_status] + R[err_timeout] ))
  mbs=$(awk -v n="${R[requests]}" -v us="${R[duration_us]}" -v size="$(stat -c %s "$WORK/bodies/10m.xml")" \
    'BEGIN { printf "%.1f", n * size / 1048576 / (us / 1e6) }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${R[requests]}" "$mbs" "$rss" "$errors" >> "$UPLOADS_RAW"
  printf 'uploads %-9s %d x 10 MB in %ds, %s MB/s, peak RSS %d MB, err %d\n' \
    "$t" "${R[requests]}" "$UPLOAD_DURATION" "$mbs" $(( rss / 1024 )) "$errors"
}

# ------------------------------------------------------------------ report
# Numbers on stdin -> "median min max" ("- - -" if none).
median_min_max() {
  sort -g |
    awk '{ v[NR] = $1 }
         END {
           if (NR == 0) { print "- - -"; exit }
           m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
           print m, v[1], v[NR]
         }'
}

# "median min max" over the rounds of one raw.tsv column for (body, target).
stats() { # column body target
  awk -F'\t' -v c="$1" -v b="$2" -v t="$3" '$2 == b && $3 == t && $c != "-" { print $c }' "$RAW" |
    median_min_max
}

# "median min max" of a column's ratio target / reference (e.g. req/s over
# direct's req/s), paired within each round so that drift cancels.
ratio_stats() { # column body target reference
  awk -F'\t' -v c="$1" -v b="$2" -v t="$3" -v ref="$4" '
    $2 == b && $3 == ref && $c != "-" { base[$1] = $c }
    $2 == b && $3 == t && $c != "-" { v[$1] = $c }
    END { for (r in v) if (base[r] > 0) print v[r] / base[r] }' "$RAW" |
    median_min_max
}

column_sum() { # column body target
  awk -F'\t' -v c="$1" -v b="$2" -v t="$3" '$2 == b && $3 == t { s += $c } END { print s + 0 }' "$RAW"
}

report() {
  local b t rps rmin rmax p50 p99 ratio vs_nginx pcpu pus cpu_vs_nginx upcpu rss errors
  local spread spreads="" idle idle_max steal steal_max
  cat "$RESULTS/machine.txt"
  echo
  echo "Medians over $ROUNDS round(s). x direct, x nginx = median of the per-round ratios"
  echo "(same round, so drift cancels): req/s over direct's and nginx's req/s; CPU us/req over"
  echo "nginx's. CPU % = % of one core; CPU us/req = proxy CPU time per request (all threads)."
  echo "RSS = the proxy's peak resident memory during the run."
  echo
  printf '%-9s %-4s %8s %15s %6s %7s %7s %8s %7s %6s %7s %8s %6s %6s %5s\n' \
    target body "req/s" "min..max" spread "p50 ms" "p99 ms" "x direct" "x nginx" "CPU %" "us/req" \
    "us x ngx" "RSS MB" "upstr%" err
  for b in $BODIES; do
    for t in $TARGETS; do
      read -r rps rmin rmax <<< "$(stats 4 "$b" "$t")"
      [[ $rps == - ]] && continue
      read -r p50 _ _ <<< "$(stats 5 "$b" "$t")"
      read -r p99 _ _ <<< "$(stats 6 "$b" "$t")"
      read -r ratio _ _ <<< "$(ratio_stats 4 "$b" "$t" direct)"
      read -r vs_nginx _ _ <<< "$(ratio_stats 4 "$b" "$t" nginx)"
      read -r pcpu _ _ <<< "$(stats 9 "$b" "$t")"
      read -r pus _ _ <<< "$(stats 10 "$b" "$t")"
      read -r cpu_vs_nginx _ _ <<< "$(ratio_stats 10 "$b" "$t" nginx)"
      read -r upcpu _ _ <<< "$(stats 11 "$b" "$t")"
      read -r rss _ _ <<< "$(stats 14 "$b" "$t")"
      errors=$(column_sum 8 "$b" "$t")
      spread=$(awk -v a="$rmin" -v z="$rmax" -v m="$rps" 'BEGIN { printf "%.1f", 100 * (z - a) / m }')
      spreads="$spreads $spread"
      awk -v t="$t" -v b="$b" -v rps="$rps" -v mm="$(printf '%.0f..%.0f' "$rmin" "$rmax")" \
        -v spread="$spread%" -v p50="$p50" -v p99="$p99" -v ratio="$ratio" -v vs_nginx="$vs_nginx" \
        -v pcpu="$pcpu" -v pus="$pus" -v cpu_vs_nginx="$cpu_vs_nginx" -v upcpu="$upcpu" \
        -v rss="$rss" -v errors="$errors" '
        function num(x, fmt) { return (x == "-") ? "-" : sprintf(fmt, x) }
        BEGIN {
          printf "%-9s %-4s %8.0f %15s %6s %7.3f %7.3f %8s %7s %6s %7s %8s %6s %6s %5d\n",
            t, b, rps, mm, spread, p50 / 1000, p99 / 1000, num(ratio, "%.3f"),
            num(vs_nginx, "%.3f"), num(pcpu, "%.0f"), num(pus, "%.1f"),
            num(cpu_vs_nginx, "%.3f"), num(rss == "-" ? "-" : rss / 1024, "%.1f"),
            num(upcpu, "%.0f"), errors
        }'
    done
  done
  echo
  if (( ROUNDS > 1 )); then
    read -r spread rmin rmax <<< "$(tr ' ' '\n' <<< "$spreads" | grep . | median_min_max)"
    echo "noise: req/s spread between rounds, (max - min) / median per row:" \
      "median $spread%, lowest $rmin%, highest $rmax%"
  fi
  read -r idle _ idle_max <<< "$(awk -F'\t' 'NR > 1 { print $12 }' "$RAW" | median_min_max)"
  read -r steal _ steal_max <<< "$(awk -F'\t' 'NR > 1 { print $13 }' "$RAW" | median_min_max)"
  echo "machine during the runs (% of all CPUs): idle median $idle% (max $idle_max%)," \
    "steal median $steal% (max $steal_max%)"
  if [[ -s $UPLOADS_RAW ]]; then
    echo
    echo "$UPLOAD_CONNS concurrent uploads of $(stat -c %s "$WORK/bodies/10m.xml") bytes, ${UPLOAD_DURATION}s each:"
    printf '%-9s %10s %10s %8s %6s\n' target uploads "MB/s" "RSS MB" err
    awk -F'\t' 'NR > 1 { printf "%-9s %10d %10.0f %8.1f %6d\n", $1, $2, $3, $4 / 1024, $5 }' "$UPLOADS_RAW"
  fi
  if has_target imsbridge && has_target nginx; then
    echo
    targets_report
  fi
  echo
  echo "raw per-run results: $RAW"
}

# The figures of the performance issue, each checked against the run above.
targets_report() {
  local b v line
  verdict() { # value op limit -> met/MISSED
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
      if (v == "-" || v == "") { print "n/a"; exit }
      ok = (op == ">=") ? v + 0 >= l : (op == "<=") ? v + 0 <= l : v + 0 < l
      print ok ? "met" : "MISSED" }'
  }
  row() { # figure value op limit
    printf '  %-50s %8s  %s %-5s %s\n' "$1" "$(awk -v v="$2" 'BEGIN { if (v == "" || v == "-") print "-"; else printf "%.3f", v }')" \
      "$3" "$4" "$(verdict "$2" "$3" "$4")"
  }
  echo "targets (imsbridge, issue 18; $PROXY_WORKERS worker(s) each):"
  for b in $BODIES; do
    local speed=1.2 cpu=0.9
    [[ $b == 1k ]] && speed=1.0 cpu=1.0
    read -r v _ _ <<< "$(ratio_stats 4 "$b" imsbridge nginx)"
    row "$b: req/s x nginx" "$v" ">=" "$speed"
    read -r v _ _ <<< "$(ratio_stats 10 "$b" imsbridge nginx)"
    row "$b: CPU us/req x nginx" "$v" "<=" "$cpu"
    if [[ $b == 1k ]]; then
      read -r v _ _ <<< "$(ratio_stats 6 "$b" imsbridge nginx)"
      row "$b: p99 x nginx's p99" "$v" "<=" 1.0
    fi
  done
  if [[ -s $UPLOADS_RAW ]]; then
    line=$(awk -F'\t' '$1 == "imsbridge" { printf "%.1f", $4 / 1024 }' "$UPLOADS_RAW")
    row "$UPLOAD_CONNS x 10 MB uploads: peak RSS MB" "$line" "<" 64
  fi
}

# ------------------------------------------------------------------ main
[[ -z $TOKEN || $TOKEN =~ ^[A-Za-z0-9._~+/=-]+$ ]] || die "TOKEN may only hold base64/JWT characters"
for t in $TARGETS; do
  case $t in direct | nginx | haproxy | imsbridge) ;; candidate) [[ -n $CANDIDATE_URL ]] || die "target candidate needs CANDIDATE_URL" ;;
    *) die "unknown target '$t'" ;; esac
done
ensure_packages
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ports="$UPSTREAM_PORT"
if has_target nginx; then ports="$ports $NGINX_PORT"; fi
if has_target haproxy; then ports="$ports $HAPROXY_PORT"; fi
if has_target imsbridge; then ports="$ports $IMSBRIDGE_PORT $IMSBRIDGE_ADMIN_PORT"; fi
for p in $ports; do
  if port_open "$p"; then die "port $p on 127.0.0.1 is already in use"; fi
done

if has_target imsbridge; then
  echo "building imsbridge (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin imsbridge --example stand_in_ims) ||
    die "cargo build failed"
  IMSBRIDGE_VERSION="$("$IMSBRIDGE_BIN_DIR/imsbridge" --version) ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "no git"))"
fi
"$BENCH_DIR/gen_bodies.sh" "$WORK/bodies"
for b in $BODIES; do
  [[ -f $WORK/bodies/$b.xml ]] || die "no body named '$b' (gen_bodies.sh makes 1k 64k 1m)"
done
mkdir -p "$RESULTS/wrk"

n_targets=$(wc -w <<< "$TARGETS")
n_bodies=$(wc -w <<< "$BODIES")
TOTAL_RUNS=$(( ROUNDS * n_bodies * n_targets ))
{
  echo "date:      $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "machine:   $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
    "$(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
  echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (before the run)"
  echo "software:  $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')," \
    "wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')${IMSBRIDGE_VERSION:+, $IMSBRIDGE_VERSION}"
  echo "load:      wrk -t$THREADS -c$CONNS, ${WARMUP}s warm-up + ${DURATION}s measured per run," \
    "$ROUNDS round(s), targets alternated in each round"
  echo "targets:   $TARGETS${CANDIDATE_URL:+ (candidate = $CANDIDATE_URL)}"
  printf 'bodies:   '
  for b in $BODIES; do printf ' %s = %s bytes' "$b" "$(stat -c %s "$WORK/bodies/$b.xml")"; done
  echo
  echo "peers:     nginx $PROXY_WORKERS worker(s), haproxy $PROXY_WORKERS thread(s), upstream keep-alive, ${BUFFER_KB} KB body buffer," \
    "nginx proxy_request_buffering $NGINX_REQUEST_BUFFERING; mock Campaign: nginx+njs, $UPSTREAM_WORKERS worker(s)"
  if has_target imsbridge; then
    echo "imsbridge: server.workers = $IMSBRIDGE_WORKERS, RUST_LOG=$IMSBRIDGE_LOG, one ims-mode caller" \
      "(password checked, session token stripped from the body, Bearer token of its profile added)"
  fi
} > "$RESULTS/machine.txt"
cat "$RESULTS/machine.txt"
echo "runs:      $TOTAL_RUNS, about $(( (TOTAL_RUNS * (2 * (WARMUP + DURATION) + 1) / 2 + 59) / 60 )) min"
echo

start_nginx upstream upstream.nginx.conf "$UPSTREAM_PORT"
IMS_TOKEN=
IMS_SEEN=
if has_target imsbridge; then
  start_imsbridge
  IMS_SEEN=$(ims_seen)
  [[ $IMS_SEEN == sha256:* ]] || die "imsbridge sent Campaign no Bearer token, see $WORK/imsbridge/"
  IMS_TOKEN=$(ims_token)
  [[ -n $IMS_TOKEN ]] || die "the stand-in IMS gave no token, see $WORK/imsbridge/"
fi
TOKEN=${TOKEN:-${IMS_TOKEN:-bench-static-token-0123456789abcdef}}
export BENCH_TOKEN=$TOKEN
echo "token:     Bearer token of ${#TOKEN} characters${IMS_TOKEN:+ (one of the stand-in IMS, as imsbridge gets)}" |
  tee -a "$RESULTS/machine.txt"
if has_target nginx; then start_nginx nginx proxy.nginx.conf "$NGINX_PORT"; fi
if has_target haproxy; then start_haproxy; fi
if has_target candidate; then start_candidate; fi
for t in $TARGETS; do check_target "$t"; done

printf 'round\tbody\ttarget\treq_s\tp50_us\tp99_us\trequests\terrors\tproxy_cpu_pct\tproxy_cpu_us_per_req\tupstream_cpu_pct\tbox_idle_pct\tbox_steal_pct\tpeak_rss_kb\n' > "$RAW"
read -r -a TARGET_LIST <<< "$TARGETS"
for (( r = 1; r <= ROUNDS; r++ )); do
  # The targets in turn, each round starting one further along: none always runs first (on a
  # warm machine) or last (after the others' connections and caches).
  shift_by=$(( (r - 1) % ${#TARGET_LIST[@]} ))
  ROUND_TARGETS=("${TARGET_LIST[@]:shift_by}" "${TARGET_LIST[@]:0:shift_by}")
  for b in $BODIES; do
    for t in "${ROUND_TARGETS[@]}"; do
      measure "$r" "$b" "$t"
    done
  done
done
if [[ $UPLOADS == 1 ]]; then
  printf 'target\trequests\tmb_per_s\tpeak_rss_kb\terrors\n' > "$UPLOADS_RAW"
  for t in $TARGETS; do measure_uploads "$t"; done
fi

echo
report | tee "$RESULTS/summary.txt"
