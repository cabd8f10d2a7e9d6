#!/usr/bin/env bash
# Soak run, outside CI: 5 minutes of steady load through imsbridge with 2-second IMS tokens and
# every token revoked every 30 seconds (stand-in IMS and Campaign, all on 127.0.0.1).
# The figure to reach: zero failed requests.
#
#   bench/soak.sh [SECONDS] [CONCURRENCY]      (default: 300 16)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --example soak -- "${1:-300}" "${2:-16}"
