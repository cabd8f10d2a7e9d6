#!/usr/bin/env bash
# This checkout's imsbridge (target `imsbridge`) against an earlier commit's (target
# `candidate`), in the same rounds of bench/run.sh with nginx beside them, each with the same
# config and the same workers: same-round ratios new/old of requests/s and CPU per request,
# and each one's ratio to nginx (bench/README.md).
#
# Usage:  bench/ab.sh                        (BASELINE=66a53eb, ROUNDS=5, BODIES="1k 64k 1m")
#         PROXY_WORKERS=2 BODIES=1k bench/ab.sh    two workers each (nginx worker_processes 2)
#         BASELINE=<commit> bench/ab.sh      another commit
# The baseline is built once (release) from a git worktree under target/ab/; everything listens
# on 127.0.0.1 only, every run is bounded in time (bench/run.sh's settings apply).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BASELINE=${BASELINE:-66a53eb}
CANDIDATE_PORT=${CANDIDATE_PORT:-18084}
CANDIDATE_ADMIN_PORT=${CANDIDATE_ADMIN_PORT:-18094}
export ROUNDS=${ROUNDS:-5}
export BODIES=${BODIES:-1k 64k 1m}
export UPLOADS=${UPLOADS:-0}

# The baseline: a worktree of the commit, built into a target folder of its own.
AB=$ROOT/target/ab
SOURCE=$AB/src-$BASELINE
BIN=${BASELINE_BIN:-$AB/target-$BASELINE/release/imsbridge}
if [[ ! -x $BIN ]]; then
  mkdir -p "$AB"
  if [[ ! -d $SOURCE ]]; then
    git -C "$ROOT" worktree add --force --detach "$SOURCE" "$BASELINE" >/dev/null
  fi
  echo "building $BASELINE (release) into $AB/target-$BASELINE"
  (cd "$SOURCE" && CARGO_TARGET_DIR=$AB/target-$BASELINE cargo build --release --quiet --bin imsbridge)
fi

RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/ab-$BASELINE-$(date +%Y%m%d-%H%M%S)}
export RESULTS_DIR
# The candidate: the baseline binary with imsbridge's very config, on its own ports.
CANDIDATE_SCRIPT=$(mktemp /tmp/ab_candidate.XXXXXX)
trap 'rm -f "$CANDIDATE_SCRIPT"' EXIT
cat > "$CANDIDATE_SCRIPT" <<EOT
sed -e 's/127.0.0.1:18083/127.0.0.1:$CANDIDATE_PORT/; s/127.0.0.1:18093/127.0.0.1:$CANDIDATE_ADMIN_PORT/' \
  "\$BENCH_IMSBRIDGE_CONFIG" > "\$BENCH_IMSBRIDGE_CONFIG.baseline"
BENCH_CLIENT_SECRET=bench-client-secret RUST_LOG=\${IMSBRIDGE_LOG:-warn} exec '$BIN' run --config "\$BENCH_IMSBRIDGE_CONFIG.baseline"
EOT
export CANDIDATE_URL=http://127.0.0.1:$CANDIDATE_PORT
export CANDIDATE_CMD="bash $CANDIDATE_SCRIPT"
TARGETS="imsbridge candidate nginx" "$BENCH_DIR/run.sh"

echo
echo "this checkout (imsbridge) against $BASELINE (candidate), ${PROXY_WORKERS:-1} worker(s) each; medians of the same-round ratios:"
python3 - "$RESULTS_DIR/raw.tsv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
bodies = []
for r in rows:
    if r["body"] not in bodies:
        bodies.append(r["body"])
for body in bodies:
    by = {}
    for r in rows:
        if r["body"] == body:
            by.setdefault(r["round"], {})[r["target"]] = r
    def ratios(a, b, column):
        return [float(v[a][column]) / float(v[b][column]) for v in by.values()]
    def line(label, values):
        return f"  {label:<32} {statistics.median(values):6.3f}   ({', '.join(f'{x:.3f}' for x in values)})"
    print(f"{body}:")
    print(line("req/s new/old", ratios("imsbridge", "candidate", "req_s")))
    print(line("CPU us/req new/old", ratios("imsbridge", "candidate", "proxy_cpu_us_per_req")))
    print(line("req/s new/nginx", ratios("imsbridge", "nginx", "req_s")))
    print(line("req/s old/nginx", ratios("candidate", "nginx", "req_s")))
    print(line("CPU us/req new/nginx", ratios("imsbridge", "nginx", "proxy_cpu_us_per_req")))
PY
