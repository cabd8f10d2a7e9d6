#!/usr/bin/env bash
# User-space instructions per request of imsbridge under valgrind's callgrind, for the 357-byte
# PushEvent: the figure bench/README.md follows from change to change.
#
# Usage:  bench/profile.sh [requests]      (default 4000; about 2 minutes)
#         PROFILE_BODY=1m bench/profile.sh 100   (another body of bench/gen_bodies.sh)
#         PROFILE_LOG=info bench/profile.sh      (RUST_LOG of imsbridge; warn by default)
#         PROFILE_TARGET=nginx bench/profile.sh  (nginx of bench/run.sh instead, one process,
#                                                 same token and body: the like-for-like figure)
#
# Sets up the mock Campaign and the imsbridge config the way bench/run.sh does (it runs a
# one-second round of it, which also installs nginx and wrk), builds a release imsbridge with
# line tables into target/prof, runs it under callgrind, sends the requests over 4 keep-alive
# connections, and prints instructions per request with the functions that cost the most.
# Everything listens on 127.0.0.1 only.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

N=${1:-4000}
BODY=${PROFILE_BODY:-1k}
TARGET=${PROFILE_TARGET:-imsbridge}
[[ $TARGET == imsbridge || $TARGET == nginx ]] || { echo "error: PROFILE_TARGET is imsbridge or nginx" >&2; exit 1; }
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT=$ROOT/target/prof/callgrind
PORT=18083
ADMIN_PORT=18093

if ! command -v valgrind >/dev/null; then
  sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq valgrind >/dev/null
fi

echo "setting up with one short bench/run.sh round"
setup_log=$(mktemp)
# imsbridge is in it for nginx too: nginx's config then carries the stand-in IMS's token.
setup_targets=imsbridge
[[ $TARGET == nginx ]] && setup_targets="nginx imsbridge"
KEEP_WORK=1 QUICK=1 TARGETS="$setup_targets" WARMUP=1 DURATION=1 "$BENCH_DIR/run.sh" >"$setup_log" 2>&1 ||
  { cat "$setup_log" >&2; exit 1; }
WORK=$(sed -n 's/^configs and logs kept in //p' "$setup_log")
rm -f "$setup_log"
[[ -d $WORK ]] || { echo "error: bench/run.sh kept no work directory" >&2; exit 1; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building a release imsbridge with line tables (target/prof)"
(cd "$ROOT" && CARGO_TARGET_DIR=target/prof CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --quiet --bin imsbridge --example stand_in_ims)
BIN=$ROOT/target/prof/release

nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
PIDS+=($!)
"$BIN/examples/stand_in_ims" bench-client bench-client-secret >"$WORK/ims.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [[ -s $WORK/ims.log ]] && break; sleep 0.1; done
sed "s|^host = .*|host = \"$(head -1 "$WORK/ims.log")\"|" "$WORK/imsbridge/imsbridge.toml" \
  >"$WORK/profile.toml"

mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out.*
CALLGRIND=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out.%p")
if [[ $TARGET == nginx ]]; then
  # The bench's nginx peer as one process (no master), so that callgrind sees the worker.
  PORT=${NGINX_PORT:-18081}   # bench/run.sh's, which wrote the config
  "${CALLGRIND[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
    -g "master_process off;" >"$WORK/callgrind.log" 2>&1 &
  ready() { curl -s -o /dev/null "http://127.0.0.1:$PORT/"; }   # any answer
else
  env BENCH_CLIENT_SECRET=bench-client-secret RUST_LOG=${PROFILE_LOG:-warn} \
    "${CALLGRIND[@]}" "$BIN/imsbridge" run --config "$WORK/profile.toml" >"$WORK/callgrind.log" 2>&1 &
  ready() { curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz"; }
fi
VG=$!
PIDS+=($VG)
for _ in $(seq 300); do
  ready && break
  sleep 0.2
done

# The first call opens the connection to Campaign (and, in imsbridge, runs argon2 once); it is
# not counted.
curl -sf -o /dev/null --data-binary "@$WORK/bodies/$BODY.xml" \
  -H 'SOAPAction: "nms:rtEvent#PushEvent"' "http://127.0.0.1:$PORT/nl/jsp/soaprouter.jsp"
callgrind_control -i on "$VG" >/dev/null
python3 - "$WORK/bodies/$BODY.xml" "$PORT" "$N" <<'PY'
import socket, sys
body = open(sys.argv[1], "rb").read()
port, n = int(sys.argv[2]), int(sys.argv[3])
request = (b"POST /nl/jsp/soaprouter.jsp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
           b"Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"nms:rtEvent#PushEvent\"\r\n"
           b"Content-Length: %d\r\n\r\n" % (port, len(body))) + body
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]

def answer(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("unexpected answer: " + head.split(b"\r\n")[0].decode())
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += conn.recv(65536)

for _ in range(n // len(conns)):
    for conn in conns:
        conn.sendall(request)
    for conn in conns:
        answer(conn)
PY
callgrind_control -i off "$VG" >/dev/null
kill -TERM "$VG"
wait "$VG" 2>/dev/null || true

FILE=$(ls -t "$OUT"/callgrind.out.* | head -1)
TOTAL=$(sed -n 's/^totals: //p' "$FILE" | tail -1)
echo
echo "$TARGET: user-space instructions per request: $((TOTAL / N))   ($N requests of $BODY, $FILE)"
echo
echo "most costly functions, inclusive, per request:"
callgrind_annotate --inclusive=yes --threshold=100 "$FILE" 2>/dev/null |
  awk -v n="$N" '/^ *[0-9,]+ \(/ { c = $1; gsub(",", "", c); if (c / n >= 500) {
      $1 = ""; $2 = ""; sub(/^ +/, ""); sub(/ \[.*/, ""); sub(/^[^:]*:/, ""); printf "%8d  %s\n", c / n, $0 } }' |
  awk '!seen[substr($0, 11)]++' | head -40
