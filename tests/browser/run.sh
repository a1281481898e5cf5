#!/usr/bin/env bash
# The dashboard in a real browser: starts a mock OpenAI upstream, the loopback OpenID provider, a
# Stripe stand-in (tests/browser/mock_stripe.mjs) and `qnp serve` on free loopback ports, then drives
# headless Chromium through the whole user journey (tests/browser/journey.mjs). Everything it starts is
# stopped on exit, whatever happens.
#
#   tests/browser/run.sh                                     # uses target/debug/qnp
#   QNP_BIN=/path/to/qnp tests/browser/run.sh
#   QNP_DASHBOARD_DIR=functions/dashboard/site tests/browser/run.sh   # serve the page from disk
#
# Needs Node 20, python3 and Chromium (Debian: apt-get install chromium; CHROMIUM_PATH overrides
# /usr/bin/chromium).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
QNP_BIN="${QNP_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/qnp}"
# A relative CARGO_TARGET_DIR is relative to the repository, as cargo would read it from there.
[[ "$QNP_BIN" = /* ]] || QNP_BIN="$REPO/$QNP_BIN"
if [[ -n "${QNP_DASHBOARD_DIR:-}" && "$QNP_DASHBOARD_DIR" != /* ]]; then
  QNP_DASHBOARD_DIR="$(cd "$QNP_DASHBOARD_DIR" && pwd)"
fi

if [[ ! -x "$QNP_BIN" ]]; then
  echo "run.sh: no qnp binary at $QNP_BIN (build it with 'cargo build -p qnp' or set QNP_BIN)" >&2
  exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/qnp-browser.XXXXXX")"
PIDS=()

cleanup() {
  local status=$?
  # Each server runs in its own session (setsid), so its whole process group goes at once.
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    for log in "$WORK"/*.log; do
      [[ -s "$log" ]] || continue
      echo "---- last lines of $(basename "$log") ----" >&2
      tail -n 30 "$log" >&2
    done
  fi
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# npm ci, unless node_modules already matches the lock file (npm writes its own copy of the lock there).
ensure_npm() {
  local dir="$1"
  if [[ ! -f "$dir/node_modules/.package-lock.json" || "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# start NAME CMD...: runs CMD in its own session, stdout to NAME.out, stderr to NAME.log.
start() {
  local name="$1"
  shift
  setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PIDS+=("$!")
  LAST_PID=$!
}

# wait_line PID FILE REGEX: prints the first line of FILE matching REGEX, once it appears (30 s max).
wait_line() {
  local pid="$1" file="$2" regex="$3" line
  for _ in $(seq 300); do
    if line="$(grep -m1 -E "$regex" "$file" 2>/dev/null)"; then
      echo "$line"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: process $pid exited before printing /$regex/ to $(basename "$file")" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run.sh: timed out waiting for /$regex/ in $(basename "$file")" >&2
  return 1
}

started=$SECONDS
ensure_npm "$HERE"
ensure_npm "$REPO/tests/oidc"

QNP_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
QNP_URL="http://127.0.0.1:$QNP_PORT"
UPSTREAM_KEY="sk-browser-journey-$RANDOM$RANDOM"

start mock_openai python3 "$REPO/tests/python/mock_openai.py" --port 0 --api-key "$UPSTREAM_KEY"
MOCK_PID=$LAST_PID
start oidc env PORT=0 GOOGLE_REDIRECT_URIS="$QNP_URL/auth/google/callback" node "$REPO/tests/oidc/server.mjs"
OIDC_PID=$LAST_PID
# The Stripe stand-in: its API for async-stripe, its Checkout and portal pages for the browser, and
# signed webhook deliveries to QNP when the browser pays.
WEBHOOK_SECRET="whsec_browser_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
start mock_stripe env PORT=0 QNP_URL="$QNP_URL" STRIPE_WEBHOOK_SECRET="$WEBHOOK_SECRET" node "$HERE/mock_stripe.mjs"
STRIPE_PID=$LAST_PID

MOCK_URL="$(wait_line "$MOCK_PID" "$WORK/mock_openai.out" 'mock_openai listening on' | grep -oE 'http://127\.0\.0\.1:[0-9]+')"
OIDC_URL="$(wait_line "$OIDC_PID" "$WORK/oidc.out" 'oidc listening on' | grep -oE 'http://127\.0\.0\.1:[0-9]+')"
STRIPE_URL="$(wait_line "$STRIPE_PID" "$WORK/mock_stripe.out" 'mock_stripe listening on' | grep -oE 'http://127\.0\.0\.1:[0-9]+')"

# No QNP_KEY_CACHE_SECS here: under `qnp serve` a revocation reaches the proxy's key cache in the same
# process, and the journey checks that a revoked key is refused at once with the default cache.
qnp_env=(
  QNP_DATA_DIR="$WORK/data"
  QNP_PUBLIC_URL="$QNP_URL"
  GOOGLE_CLIENT_ID=google-test-client
  GOOGLE_CLIENT_SECRET=google-test-secret
  QNP_GOOGLE_ISSUER="$OIDC_URL"
  OPENAI_API_KEY="$UPSTREAM_KEY"
  QNP_OPENAI_BASE_URL="$MOCK_URL/v1"
  QNP_BCRYPT_COST=4
  STRIPE_SECRET_KEY=sk_test_browser
  STRIPE_WEBHOOK_SECRET="$WEBHOOK_SECRET"
  QNP_STRIPE_API_BASE="$STRIPE_URL"
  # The README's example plans: the journey upgrades from free ($1.00 cap) to pro ($200.00, 600 rpm).
  QNP_PLANS='[{"name":"free","requests_per_minute":20,"tokens_per_minute":40000,"monthly_spend_cap_usd":1.0},{"name":"pro","stripe_price_id":"price_browser_pro","requests_per_minute":600,"tokens_per_minute":2000000,"monthly_spend_cap_usd":200.0}]'
)
[[ -n "${QNP_DASHBOARD_DIR:-}" ]] && qnp_env+=(QNP_DASHBOARD_DIR="$QNP_DASHBOARD_DIR")
start qnp env -u QNP_KEY_CACHE_SECS -u QNP_PLANS_FILE "${qnp_env[@]}" "$QNP_BIN" serve --listen "127.0.0.1:$QNP_PORT"
QNP_PID=$LAST_PID
wait_line "$QNP_PID" "$WORK/qnp.log" "qnp listening on $QNP_URL" >/dev/null

page="compiled in"
[[ -n "${QNP_DASHBOARD_DIR:-}" ]] && page="from $QNP_DASHBOARD_DIR"
echo "run.sh: qnp $QNP_URL ($QNP_BIN; page $page)," \
  "upstream $MOCK_URL, oidc $OIDC_URL, stripe $STRIPE_URL (ready after $((SECONDS - started)) s)"
QNP_URL="$QNP_URL" STRIPE_MOCK_URL="$STRIPE_URL" node "$HERE/journey.mjs"
