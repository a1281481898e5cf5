#!/usr/bin/env bash
# QNP test entry point (also what .ci/run execs).
#
#   tests/run.sh                  # everything: install deps, start servers, lint, test
#   tests/run.sh -p qnp-shared    # extra args go to `cargo test`
#   QNP_TEST_FAST=1 tests/run.sh  # skip cargo fmt / clippy
#   QNP_TEST_SANITY_ONLY=1 tests/run.sh  # install + start servers + sanity check, then stop
#   QNP_TEST_SKIP_BROWSER=1 tests/run.sh # skip the dashboard journey in Chromium (last step)
#
# The cloud services QNP talks to (MongoDB Atlas, DynamoDB, Secrets Manager) cannot be
# reached from dev or CI machines, so this script installs local stand-ins that speak the
# real protocols (see docs/testing.md), starts them on 127.0.0.1 on free ports, exports
# their addresses as QNP_TEST_* variables, runs the suite and always stops them again.
#
# Everything it installs lives in tests/.deps/ (git-ignored) so a fresh clone on a fresh
# machine needs only Rust, Python 3.11+ with pip and Node 20+ with npm. Reruns are fast:
# installs are skipped when the pinned versions are already there. The exception is the last
# step, "Browser journey (tests/browser)": it drives the dashboard through Debian's Chromium,
# which it installs with apt-get (sudo when not root) if /usr/bin/chromium is missing, and
# runs tests/browser/run.sh (its own npm ci and servers; screenshots in tests/browser/screenshots/).
set -euo pipefail

# Always work from the repo root, wherever we are called from.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEPS="$ROOT/tests/.deps"
VENV="$DEPS/venv"
NODE_PREFIX="$DEPS/node"
LOGS="$DEPS/logs"
mkdir -p "$DEPS" "$LOGS"

# Pinned Python packages. Changing this list changes the stamp, which triggers a
# (fast, incremental) pip install on the next run.
PY_REQUIREMENTS=(
    "secantusdb==0.7.0b3"   # MongoDB wire-protocol server (stands in for Atlas)
    "moto[server]==5.2.5"   # Secrets Manager (moto's DynamoDB loses concurrent updates: unused)
    "cfn-lint==1.58.0"      # offline lint of template.yaml
    "openai==3.57.0"        # real client SDKs for black-box tests
    "anthropic==2.14.0"
    "openai-agents==0.24.0" # the OpenAI Agents SDK, driven by tests/python/test_agents.py
    "pytest==9.2.0"
    "requests==2.34.2"
)
DYNALITE_VERSION="4.0.0"    # DynamoDB stand-in: exact conditional ADD counters under load

# How long to wait for a server to report its port / accept connections.
SERVER_START_TIMEOUT="${QNP_TEST_SERVER_TIMEOUT:-60}"

# Never send loopback traffic through a proxy, should the machine define one.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"
# A one-off build gains nothing from incremental artifacts, which cost gigabytes of disk.
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi
# CI has no stdin: make sure nothing waits for a prompt.
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# ---------------------------------------------------------------------------------------
# Output helpers: section headers and elapsed time per step.
# ---------------------------------------------------------------------------------------
now_ms() { date +%s%3N; }
fmt_ms() { printf '%d.%03ds' "$(($1 / 1000))" "$(($1 % 1000))"; }

SUMMARY=()   # "name: time" lines printed at the end
SCRIPT_START="$(now_ms)"

header() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# step NAME CMD...: run CMD under a header and time it. CMD runs in this shell (so a
# step can export variables and register servers) with errexit in force: a failing
# command inside it ends the script, and the EXIT trap reports which step failed.
CURRENT_STEP=""
CURRENT_STEP_START=0
step() {
    CURRENT_STEP="$1"; shift
    header "$CURRENT_STEP"
    CURRENT_STEP_START="$(now_ms)"
    "$@"
    local took
    took="$(fmt_ms $(($(now_ms) - CURRENT_STEP_START)))"
    printf '<== %s ok in %s\n' "$CURRENT_STEP" "$took"
    SUMMARY+=("$CURRENT_STEP: $took")
    CURRENT_STEP=""
}

print_summary() {
    [[ ${#SUMMARY[@]} -gt 0 ]] || return 0
    header "Summary (total $(fmt_ms $(($(now_ms) - SCRIPT_START))))"
    printf '  %s\n' "${SUMMARY[@]}"
}

# ---------------------------------------------------------------------------------------
# Server lifecycle. Each server is started with setsid so it leads its own process group:
# stopping the group also stops any worker it forked, and it never touches this script's
# group. The EXIT trap runs on success, failure (set -e) and on INT/TERM/HUP (below).
# ---------------------------------------------------------------------------------------
SERVER_PIDS=()
SERVER_NAMES=()

# alive TARGET: is the process (TARGET=PID) or any process of the group (TARGET=-PGID)
# still running? Unlike `kill -0`, this does not count a dead, not yet reaped (zombie)
# server as running, so a crash is noticed at once instead of after a timeout.
alive() {
    if [[ "$1" == -* ]]; then
        ps -e -o pgid=,stat= | awk -v g="${1#-}" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'
    else
        ps -o stat= -p "$1" 2>/dev/null | grep -qv '^Z'
    fi
}

stop_servers() {
    local i pid target t0
    local -a targets=()
    t0="$(now_ms)"
    # SIGTERM to all first, so their (clean, ~2 s for secantusdb) shutdowns overlap.
    for i in "${!SERVER_PIDS[@]}"; do
        pid="${SERVER_PIDS[$i]}"
        # Signal the whole group only if the server really leads one (setsid worked).
        target="$pid"
        if [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then
            target="-$pid"
        fi
        targets[$i]="$target"
        kill -TERM -- "$target" 2>/dev/null || true
    done
    # Then give each up to 10 s in all, force what is left, and reap every one.
    for i in "${!SERVER_PIDS[@]}"; do
        pid="${SERVER_PIDS[$i]}"
        target="${targets[$i]}"
        while alive "$target" && [[ $(($(now_ms) - t0)) -lt 10000 ]]; do
            sleep 0.1
        done
        if alive "$target"; then
            echo "    ${SERVER_NAMES[$i]} (pid $pid) ignored SIGTERM, sending SIGKILL" >&2
            kill -KILL -- "$target" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true   # reap it so no zombie is left
        printf '    %-10s (pid %s) stopped after %s\n' "${SERVER_NAMES[$i]}" "$pid" "$(fmt_ms $(($(now_ms) - t0)))"
    done
    SERVER_PIDS=()
    SERVER_NAMES=()
}

on_exit() {
    local rc=$?
    set +e
    if [[ -n "$CURRENT_STEP" ]]; then
        local took
        took="$(fmt_ms $(($(now_ms) - CURRENT_STEP_START)))"
        printf '\033[1;31m<== %s FAILED (exit %d) after %s\033[0m\n' "$CURRENT_STEP" "$rc" "$took"
        SUMMARY+=("$CURRENT_STEP: FAILED after $took")
    fi
    if [[ ${#SERVER_PIDS[@]} -gt 0 ]]; then
        header "Stopping test servers"
        stop_servers
    fi
    print_summary
    if [[ $rc -ne 0 ]]; then
        printf '\n\033[1;31mtests/run.sh failed (exit %d). Server logs: %s\033[0m\n' "$rc" "$LOGS"
    fi
    exit "$rc"
}
trap on_exit EXIT
# Turn signals into a normal exit so the EXIT trap stops the servers (which are in
# their own process groups and so do not get the terminal's Ctrl-C themselves).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start_server NAME LOGFILE CMD...: start CMD in the background in its own session.
# Sets LAST_PID.
start_server() {
    local name="$1" log="$2"; shift 2
    # PYTHONUNBUFFERED: the Python servers print their port on stdout, which is
    # block-buffered when redirected to a file; without it we might never see the line.
    PYTHONUNBUFFERED=1 setsid "$@" >"$log" 2>&1 </dev/null &
    LAST_PID=$!
    SERVER_PIDS+=("$LAST_PID")
    SERVER_NAMES+=("$name")
}

# fail_server NAME PID LOG MESSAGE: report why a server did not come up, with its log.
fail_server() {
    echo "error: $1 (pid $2): $4" >&2
    echo "---- last lines of $3 ----" >&2
    tail -n 40 "$3" >&2 || true
    echo "----" >&2
    return 1
}

# wait_for_log_port NAME PID LOG REGEX: poll LOG until REGEX (ending in the port number)
# matches, and print the port. Fails if the process dies or the timeout passes.
wait_for_log_port() {
    local name="$1" pid="$2" log="$3" regex="$4"
    local deadline=$(($(now_ms) + SERVER_START_TIMEOUT * 1000)) match
    while true; do
        match="$(grep -m1 -oE "$regex" "$log" 2>/dev/null || true)"
        if [[ -n "$match" ]]; then
            echo "${match##*:}"
            return 0
        fi
        alive "$pid" || { fail_server "$name" "$pid" "$log" "exited before reporting its port"; return 1; }
        [[ $(now_ms) -lt $deadline ]] || { fail_server "$name" "$pid" "$log" "no port in its log after ${SERVER_START_TIMEOUT}s"; return 1; }
        sleep 0.1
    done
}

# port_open PORT: does 127.0.0.1:PORT accept a TCP connection? (bash's /dev/tcp, no tools)
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for_port NAME PID LOG PORT: poll until PORT accepts connections.
wait_for_port() {
    local name="$1" pid="$2" log="$3" port="$4"
    local deadline=$(($(now_ms) + SERVER_START_TIMEOUT * 1000))
    until port_open "$port"; do
        alive "$pid" || { fail_server "$name" "$pid" "$log" "exited before listening on $port"; return 1; }
        [[ $(now_ms) -lt $deadline ]] || { fail_server "$name" "$pid" "$log" "port $port not open after ${SERVER_START_TIMEOUT}s"; return 1; }
        sleep 0.1
    done
}

# free_port: ask the kernel for an unused port (bind to 0). dynalite's --port 0 does not
# pick one itself. There is a small race until dynalite binds it, hence the retry below.
free_port() {
    "$VENV/bin/python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------------------------------
# 1. Install dependencies into tests/.deps (skipped when already at the pinned versions).
# ---------------------------------------------------------------------------------------
install_python_deps() {
    local py="${QNP_PYTHON:-python3}"
    command -v "$py" >/dev/null || { echo "error: $py not found (need Python 3.11+)" >&2; return 1; }
    "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || { echo "error: $py is $("$py" -V 2>&1); need Python 3.11+" >&2; return 1; }

    # The stamp records what was installed; if it matches and the venv's python still
    # runs, there is nothing to do.
    local stamp="$VENV/.qnp-stamp" want
    want="$("$py" -c 'import sys; print(sys.version.split()[0])') ${PY_REQUIREMENTS[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
        echo "venv up to date ($VENV)"
        return 0
    fi

    # A venv built by another Python (or half-built) is recreated; otherwise pip
    # install just moves the pinned packages to the wanted versions.
    if ! "$VENV/bin/python" -c '' 2>/dev/null \
        || [[ "$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')" != "$("$py" -c 'import sys; print(sys.version.split()[0])')" ]]; then
        rm -rf "$VENV"
        echo "creating venv with $("$py" -V 2>&1)"
        "$py" -m venv "$VENV" || {
            echo "error: '$py -m venv' failed; on Debian: apt-get install python3-venv" >&2
            return 1
        }
    fi
    "$VENV/bin/python" -m pip install --quiet "${PY_REQUIREMENTS[@]}"
    echo "$want" >"$stamp"
    "$VENV/bin/python" -m pip list 2>/dev/null \
        | grep -iE '^(secantusdb|moto|cfn-lint|openai|openai-agents|anthropic|pytest|requests) ' || true
}

install_node_deps() {
    command -v node >/dev/null && command -v npm >/dev/null \
        || { echo "error: node and npm are needed (Node 20+)" >&2; return 1; }
    local pkg="$NODE_PREFIX/node_modules/dynalite/package.json" have=""
    [[ -f "$pkg" ]] && have="$(node -p "require('$pkg').version" 2>/dev/null || true)"
    if [[ "$have" == "$DYNALITE_VERSION" ]]; then
        echo "dynalite $have up to date ($NODE_PREFIX)"
        return 0
    fi
    # The package.json / lock npm writes here stay in the ignored folder on purpose.
    npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --loglevel=error \
        "dynalite@$DYNALITE_VERSION"
    echo "dynalite $(node -p "require('$pkg').version") installed"
}

step "Install Python deps (tests/.deps/venv)" install_python_deps
step "Install dynalite $DYNALITE_VERSION (tests/.deps/node)" install_node_deps

# The loopback OpenID provider for the sign-in tests (tests/oidc, pinned by its package-lock.json).
# npm ci only when the lock file changed since the last install.
install_oidc_provider() {
    local dir="$ROOT/tests/oidc" stamp="$ROOT/tests/oidc/node_modules/.qnp-lock-stamp"
    if [[ -f "$stamp" ]] && cmp -s "$stamp" "$dir/package-lock.json"; then
        echo "oidc-provider already installed"
        return 0
    fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
}
step "Install the test OpenID provider (tests/oidc)" install_oidc_provider

# The coding agents the black-box tests drive (tests/agents, pinned by its package-lock.json).
install_agents() {
    local dir="$ROOT/tests/agents" stamp="$ROOT/tests/agents/node_modules/.qnp-lock-stamp"
    if [[ -f "$stamp" ]] && cmp -s "$stamp" "$dir/package-lock.json"; then
        echo "agents already installed"
    else
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$dir/package-lock.json" "$stamp"
    fi
    export QNP_TEST_CODEX="$dir/node_modules/.bin/codex"
    export QNP_TEST_CLAUDE="$dir/node_modules/.bin/claude"
    "$QNP_TEST_CODEX" --version
    "$QNP_TEST_CLAUDE" --version
}
step "Install the agents (tests/agents)" install_agents

# ---------------------------------------------------------------------------------------
# 2. Start the stand-in servers all at once (each is ready in well under 1 s here), then
#    wait for each.
# ---------------------------------------------------------------------------------------
start_all_servers() {
    local t0 secantus_pid moto_pid dynalite_pid
    t0="$(now_ms)"

    # SecantusDB (MongoDB wire protocol) picks its own port and prints it.
    start_server secantusdb "$LOGS/secantusdb.log" \
        "$VENV/bin/secantusd-py" --host 127.0.0.1 --port 0 --storage-path :memory:
    secantus_pid=$LAST_PID

    # moto (Secrets Manager) picks its own port with -p 0 and prints it.
    start_server moto "$LOGS/moto.log" "$VENV/bin/moto_server" -H 127.0.0.1 -p 0
    moto_pid=$LAST_PID

    # dynalite: we must choose the port. Retry with a new one if it lost the race for it.
    local attempt dynalite_port
    for attempt in 1 2 3; do
        dynalite_port="$(free_port)"
        start_server dynalite "$LOGS/dynalite.log" \
            node "$NODE_PREFIX/node_modules/dynalite/cli.js" \
            --host 127.0.0.1 --port "$dynalite_port" --createTableMs 0 --deleteTableMs 0
        dynalite_pid=$LAST_PID
        if wait_for_port dynalite "$dynalite_pid" "$LOGS/dynalite.log" "$dynalite_port"; then
            break
        fi
        [[ $attempt -lt 3 ]] || return 1
        echo "retrying dynalite on another port" >&2
    done
    echo "dynalite      ready on 127.0.0.1:$dynalite_port after $(fmt_ms $(($(now_ms) - t0)))"

    local mongo_port moto_port
    mongo_port="$(wait_for_log_port secantusdb "$secantus_pid" "$LOGS/secantusdb.log" \
        'secantus listening on 127\.0\.0\.1:[0-9]+')"
    # The line can come a moment before accept() works: make sure it does.
    wait_for_port secantusdb "$secantus_pid" "$LOGS/secantusdb.log" "$mongo_port"
    echo "secantusdb    ready on 127.0.0.1:$mongo_port after $(fmt_ms $(($(now_ms) - t0)))"

    moto_port="$(wait_for_log_port moto "$moto_pid" "$LOGS/moto.log" \
        'Running on http://127\.0\.0\.1:[0-9]+')"
    wait_for_port moto "$moto_pid" "$LOGS/moto.log" "$moto_port"
    echo "moto          ready on 127.0.0.1:$moto_port after $(fmt_ms $(($(now_ms) - t0)))"

    # 3. Addresses and fake credentials for the tests (Rust and Python alike).
    export QNP_TEST_MONGODB_URI="mongodb://127.0.0.1:$mongo_port/?directConnection=true"
    export QNP_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$dynalite_port"
    export QNP_TEST_SECRETSMANAGER_ENDPOINT="http://127.0.0.1:$moto_port"
    export QNP_TEST_PYTHON="$VENV/bin/python"
    # The AWS SDK must never look for real credentials or the EC2 metadata service.
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    export AWS_EC2_METADATA_DISABLED=true
    echo "logs in $LOGS"
    local var
    for var in QNP_TEST_MONGODB_URI QNP_TEST_DYNAMODB_ENDPOINT QNP_TEST_SECRETSMANAGER_ENDPOINT QNP_TEST_PYTHON; do
        echo "  $var=${!var}"
    done
}

# Cheap proof that each server answers its protocol (not just that a port is open), so
# a broken stand-in fails here with a clear message rather than deep inside a test.
sanity_check() {
    "$VENV/bin/python" - <<'PY'
import os, socket, struct, sys
import requests

# MongoDB: a raw OP_MSG {hello: 1, $db: "admin"} (pymongo is not installed).
port = int(os.environ["QNP_TEST_MONGODB_URI"].split(":")[2].split("/")[0])
body = b"\x10hello\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
payload = struct.pack("<I", 0) + b"\x00" + doc                    # flagBits, section kind 0
msg = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload  # OP_MSG header
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(msg)
    head = b""
    while len(head) < 16:
        chunk = s.recv(16 - len(head)); assert chunk, "mongodb closed the connection"; head += chunk
    length, _, response_to, opcode = struct.unpack("<iiii", head)
    rest = b""
    while len(rest) < length - 16:
        chunk = s.recv(length - 16 - len(rest)); assert chunk, "short mongodb reply"; rest += chunk
ok = b"\x01ok\x00" + struct.pack("<d", 1.0) in rest
assert opcode == 2013 and response_to == 1 and ok, f"bad hello reply: opcode={opcode} {rest[:200]!r}"
print(f"  mongodb  hello ok ({length} bytes)")

def aws(endpoint, service, target, content_type):
    # Both servers only look at the credential scope, not the signature.
    r = requests.post(endpoint, data="{}", timeout=10, headers={
        "X-Amz-Target": target,
        "Content-Type": content_type,
        "X-Amz-Date": "20260101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/"
                         f"{service}/aws4_request, SignedHeaders=host, Signature=x",
    })
    assert r.status_code == 200, f"{service} {target}: HTTP {r.status_code} {r.text[:300]}"
    return r.json()

j = aws(os.environ["QNP_TEST_DYNAMODB_ENDPOINT"], "dynamodb",
        "DynamoDB_20120810.ListTables", "application/x-amz-json-1.0")
assert "TableNames" in j, j
print(f"  dynamodb ListTables ok {j}")
j = aws(os.environ["QNP_TEST_SECRETSMANAGER_ENDPOINT"], "secretsmanager",
        "secretsmanager.ListSecrets", "application/x-amz-json-1.1")
assert "SecretList" in j, j
print(f"  secrets  ListSecrets ok {j}")
PY
}

step "Start test servers" start_all_servers
step "Sanity check test servers" sanity_check

if [[ "${QNP_TEST_SANITY_ONLY:-}" == 1 ]]; then
    echo "QNP_TEST_SANITY_ONLY=1: stopping before lint and tests"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# 4. Lint and test. Any failure stops the script (and the trap stops the servers).
# ---------------------------------------------------------------------------------------
if [[ "${QNP_TEST_FAST:-}" == 1 ]]; then
    echo "QNP_TEST_FAST=1: skipping cargo fmt and clippy"
else
    step "cargo fmt --check" cargo fmt --all -- --check
    step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
fi

# Extra arguments go to cargo test. If they select packages (-p/--package), drop
# --workspace: with it, cargo ignores -p and tests every member.
CARGO_TEST_ARGS=(--workspace)
for arg in "$@"; do
    case "$arg" in
        --) break ;;   # what follows goes to the test binaries
        -p | -p* | --package | --package=*) CARGO_TEST_ARGS=(); break ;;
    esac
done
step "cargo test" cargo test "${CARGO_TEST_ARGS[@]}" "$@"

if [[ -f template.yaml ]]; then
    step "cfn-lint template.yaml" "$VENV/bin/cfn-lint" template.yaml
fi

run_pytest() {
    local rc=0
    "$VENV/bin/python" -m pytest -q tests/python || rc=$?
    # Exit 5 = no tests collected: an empty folder is not a failure of the suite.
    if [[ $rc -eq 5 ]]; then
        echo "pytest collected no tests in tests/python"
        return 0
    fi
    return "$rc"
}
if [[ -d tests/python ]]; then
    # The SDK tests drive the real `qnp` binary, which cargo test already built for the CLI tests
    # (a separate `cargo build -p qnp` would rebuild dependencies with other features).
    export QNP_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/qnp"
    step "pytest tests/python" run_pytest
fi

# ---------------------------------------------------------------------------------------
# 5. The dashboard in a real browser: tests/browser/run.sh starts its own mock upstream,
#    OpenID provider and `qnp serve` (the binary pytest used), drives headless Chromium
#    through the whole user journey, and stops them again. Screenshots go to
#    tests/browser/screenshots/ (git-ignored); the journey prints their paths.
# ---------------------------------------------------------------------------------------
ensure_chromium() {
    local chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
    if [[ -x "$chromium" ]]; then
        echo "chromium: $("$chromium" --version 2>/dev/null || echo "$chromium")"
        return 0
    fi
    if [[ -n "${CHROMIUM_PATH:-}" ]]; then
        echo "error: CHROMIUM_PATH=$CHROMIUM_PATH is not an executable" >&2
        return 1
    fi
    command -v apt-get >/dev/null || {
        echo "error: no /usr/bin/chromium and no apt-get to install it: install Chromium and set" \
            "CHROMIUM_PATH, or skip this step with QNP_TEST_SKIP_BROWSER=1" >&2
        return 1
    }
    local -a as_root=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null || {
            echo "error: installing Chromium needs root (no sudo here); run 'apt-get install chromium'" \
                "as root, or skip this step with QNP_TEST_SKIP_BROWSER=1" >&2
            return 1
        }
        as_root=(sudo)
    fi
    echo "installing Debian's chromium with apt-get"
    ${as_root[@]+"${as_root[@]}"} apt-get update -qq
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    [[ -x /usr/bin/chromium ]] || { echo "error: apt-get installed no /usr/bin/chromium" >&2; return 1; }
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null)"
}

browser_journey() {
    ensure_chromium
    # The same binary as the pytest step (cargo test built it); a relative CARGO_TARGET_DIR is
    # relative to the repository, which tests/browser/run.sh resolves too.
    QNP_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/qnp" tests/browser/run.sh
}
if [[ "${QNP_TEST_SKIP_BROWSER:-}" == 1 ]]; then
    header "Browser journey (tests/browser)"
    echo "QNP_TEST_SKIP_BROWSER=1: skipping the dashboard journey in Chromium"
    SUMMARY+=("Browser journey (tests/browser): skipped (QNP_TEST_SKIP_BROWSER=1)")
else
    step "Browser journey (tests/browser)" browser_journey
fi

header "All steps passed"
