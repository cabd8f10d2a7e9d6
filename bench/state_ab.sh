#!/usr/bin/env bash
# imsbridge with its state in Redis ([state] redis) against the same build without it (state in
# memory), in the same rounds of bench/run.sh at 357 bytes, nginx beside them: what the state
# store costs a caller whose verdict is remembered (bench/README.md).
#
# Usage:  bench/state_ab.sh            (ROUNDS=5 by default; the settings of bench/run.sh apply)
# A redis-server of its own on 127.0.0.1:$REDIS_PORT, without persistence, stopped at the end.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
REDIS_PORT=${REDIS_PORT:-16379}
CANDIDATE_PORT=${CANDIDATE_PORT:-18084}
CANDIDATE_ADMIN_PORT=${CANDIDATE_ADMIN_PORT:-18094}
export ROUNDS=${ROUNDS:-5}

command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/state-$(date +%Y%m%d-%H%M%S)}
export RESULTS_DIR
# The candidate: the same binary and config, the [state] table left out, on its own ports.
export IMSBRIDGE_CONFIG_EXTRA="[state]
redis = \"redis://127.0.0.1:$REDIS_PORT/0\""
export CANDIDATE_URL=http://127.0.0.1:$CANDIDATE_PORT
CANDIDATE_SCRIPT=$(mktemp /tmp/state_ab_candidate.XXXXXX)
trap 'kill "$REDIS_PID" 2>/dev/null || true; rm -f "$CANDIDATE_SCRIPT"' EXIT
cat > "$CANDIDATE_SCRIPT" <<EOT
sed -e 's/127.0.0.1:18083/127.0.0.1:$CANDIDATE_PORT/; s/127.0.0.1:18093/127.0.0.1:$CANDIDATE_ADMIN_PORT/; /^\[state\]/,\$d' \
  "\$BENCH_IMSBRIDGE_CONFIG" > "\$BENCH_IMSBRIDGE_CONFIG.memory"
BENCH_CLIENT_SECRET=bench-client-secret RUST_LOG=warn exec '$ROOT/target/release/imsbridge' run --config "\$BENCH_IMSBRIDGE_CONFIG.memory"
EOT
export CANDIDATE_CMD="bash $CANDIDATE_SCRIPT"
TARGETS="imsbridge candidate nginx" BODIES=1k UPLOADS=0 "$BENCH_DIR/run.sh"

echo
echo "imsbridge with [state] redis (imsbridge) against without (candidate), median of the per-round ratios:"
python3 - "$RESULTS_DIR/raw.tsv" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if r["body"] == "1k"]
by = {}
for r in rows:
    by.setdefault(r["round"], {})[r["target"]] = r
rps = [float(v["imsbridge"]["req_s"]) / float(v["candidate"]["req_s"]) for v in by.values()]
cpu = [float(v["imsbridge"]["proxy_cpu_us_per_req"]) / float(v["candidate"]["proxy_cpu_us_per_req"]) for v in by.values()]
print(f"  req/s x without: {statistics.median(rps):.3f} (rounds: {len(rps)}: {', '.join(f'{x:.3f}' for x in rps)})")
print(f"  CPU us/req x without: {statistics.median(cpu):.3f} ({', '.join(f'{x:.3f}' for x in cpu)})")
PY
echo "redis commands processed: $(redis-cli -p "$REDIS_PORT" info stats | sed -n 's/^total_commands_processed://p' | tr -d '\r')"
