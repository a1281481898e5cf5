#!/usr/bin/env bash
# The soak: two `qnp serve` processes sharing SecantusDB and dynalite, mixed streamed and whole calls at
# a fixed rate for SECS seconds, the record store blackholed for OUTAGE seconds a third of the way in
# and the upstream's connections reset every five seconds. It reports requests sent, usage rows stored
# (they must be equal), the limit decisions of a 7-requests-a-minute key burst on both processes (exactly
# 7 admitted), RSS at start and end per process and the error mix, and fails if any of them is off.
#
#   benches/soak/run.sh                 # 600 s, 60 s outage, 20 calls a second
#   SECS=120 OUTAGE=20 RATE=50 benches/soak/run.sh
#
# It runs functions/qnp/tests/soak.rs (CI runs the same test for 20 s with a 6 s outage) through
# tests/run.sh, which installs and starts the stand-in servers. The report is written to
# benches/.out/soak.json.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$ROOT/benches/.out"
export QNP_SOAK_SECS=${SECS:-600}
export QNP_SOAK_OUTAGE_SECS=${OUTAGE:-60}
export QNP_SOAK_RATE=${RATE:-20}
export QNP_SOAK_REPORT=$ROOT/benches/.out/soak.json
QNP_TEST_FAST=1 QNP_TEST_SKIP_BROWSER=1 "$ROOT/tests/run.sh" -p qnp --test soak -- --nocapture
echo "soak report: $QNP_SOAK_REPORT"
cat "$QNP_SOAK_REPORT"
