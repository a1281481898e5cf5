#!/usr/bin/env bash
# QNP's added latency, side by side with a direct call to the same upstream, in one run.
#
#   benches/proxy/run.sh            # build first: cargo build --profile bench-fast -p qnp
#
# An nginx mock of the OpenAI API (127.0.0.1 only) is the upstream; `qnp serve` sits in front of it.
# Every phase calls the mock directly and then through QNP with the same load, and the difference is
# what QNP adds. Prints a markdown table and writes it to benches/.out/results.md; logs and raw numbers
# stay in benches/.out/proxy-run-<pid>/. See benches/proxy/README.md for the knobs and what they mean.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/benches/.out

# ---- knobs -------------------------------------------------------------------------------------------
DURATION=${DURATION:-10s}          # open-loop and peak phases, each side
ONE_N=${ONE_N:-10000}              # one client, non-stream: requests each side
TTFB_N=${TTFB_N:-1000}             # one client, stream: requests each side
OPEN_RATE=${OPEN_RATE:-1000}       # open loop: requests per second
OPEN_CONC=${OPEN_CONC:-50}         # open loop: connections available to keep up with the rate
PEAK_CONC=${PEAK_CONC:-64}         # peak throughput: connections
READY_RUNS=${READY_RUNS:-5}        # how many times `qnp serve` is started to time readiness
WARMUP_N=${WARMUP_N:-300}          # requests before each measured phase (connection pools, key cache)
BENCH_PLAN=${BENCH_PLAN:-unlimited}  # the key's plan; a plan with a token limit and spend cap adds the
BENCH_PLANS=${BENCH_PLANS:-}         # reserve-and-settle counter updates to every request; BENCH_PLANS is
                                     # the plan table (QNP_PLANS) to define it in
INSTALL_OHA=${INSTALL_OHA:-1}      # 1: `cargo install oha` into benches/.out/oha when it is missing
OHA_INSTALL_TIMEOUT=${OHA_INSTALL_TIMEOUT:-2400}

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
QNP=${QNP_BIN:-$TARGET_DIR/bench-fast/qnp}

# Nothing from the caller's environment may point QNP at real stores or providers.
for v in $(compgen -e | grep -E '^(QNP_|OPENAI_|ANTHROPIC_|GEMINI_)' || true); do unset "$v"; done

RUN=$OUT/proxy-run-$$
# QNP_BENCH_DATA_DIR lets a run put the embedded store elsewhere (e.g. tmpfs) to separate disk from CPU.
DATA=${QNP_BENCH_DATA_DIR:-$OUT/data-$$}
NGX=$RUN/nginx
mkdir -p "$RUN" "$NGX/tmp" "$NGX/logs"
rm -rf "$DATA"
FACTS=$RUN/facts.txt
: >"$FACTS"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2" >>"$FACTS"; }
[[ -x $QNP ]] || die "no QNP binary at $QNP: run 'cargo build --profile bench-fast -p qnp' or set QNP_BIN"

# ---- cleanup: stop everything this script started ---------------------------------------------------
QNP_PID=
NGINX_PID=
CHILD_PID=

# bounded CMD...: runs CMD under a 300 s timeout in the background and waits, so that a signal to this
# script is handled at once (bash defers traps while a foreground command runs) and cleanup can stop it.
bounded() {
    local rc=0
    timeout 300 "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=
    return "$rc"
}

alive() { # alive PID: running and not a zombie
    [[ -n ${1:-} && -r /proc/$1/status ]] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || return 0; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $CHILD_PID ]]; then stop_pid "$CHILD_PID"; fi
    if [[ -n $QNP_PID ]]; then stop_pid "$QNP_PID"; fi
    if [[ -n $NGINX_PID ]]; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do alive "$NGINX_PID" || break; sleep 0.05; done
        alive "$NGINX_PID" && kill -KILL "$NGINX_PID" 2>/dev/null
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- tools -------------------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed"
command -v curl >/dev/null || die "curl is needed"
apt_install() {
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
    log "installing $* with apt-get"
    if [[ ! -f $OUT/.apt-updated ]]; then apt-get update -qq >/dev/null && touch "$OUT/.apt-updated"; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || true)}
[[ -z $NGINX_BIN && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
if [[ -z $NGINX_BIN ]]; then
    apt_install nginx-light || apt_install nginx || die "nginx is needed (apt-get install nginx-light)"
    NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
fi

OHA=${OHA_BIN:-$(command -v oha || true)}
[[ -z $OHA && -x $OUT/oha/bin/oha ]] && OHA=$OUT/oha/bin/oha
if [[ -z $OHA && $INSTALL_OHA == 1 ]] && command -v cargo >/dev/null; then
    log "oha is missing: cargo install oha (one job, niced; takes minutes, once) -> benches/.out/oha"
    t0=$SECONDS
    if CARGO_TARGET_DIR=$OUT/oha-build timeout "$OHA_INSTALL_TIMEOUT" nice -n 10 \
        cargo install oha --locked -j 1 --root "$OUT/oha" >"$OUT/oha-install.log" 2>&1; then
        OHA=$OUT/oha/bin/oha
        rm -rf "$OUT/oha-build"
        log "oha installed in $((SECONDS - t0)) s"
    else
        log "oha install failed or timed out after $((SECONDS - t0)) s (see benches/.out/oha-install.log)"
    fi
fi
WRK=
if [[ -z $OHA ]]; then
    WRK=$(command -v wrk || true)
    if [[ -z $WRK ]]; then apt_install wrk && WRK=$(command -v wrk || true); fi
    [[ -n $WRK ]] || die "neither oha nor wrk is available"
    log "using wrk (no open-loop phase without oha)"
fi

# ---- the mock upstream -------------------------------------------------------------------------------
MOCK=$HERE/mock
# The replies are static files. nginx's static module answers POST with 405, and error_page turns that
# into a 200 with the file (its internal redirect is a GET), so POST works as on the real API.
WWW=$NGX/www
rm -rf "$WWW"
for dir in json stream; do
    mkdir -p "$WWW/$dir/v1/chat"
    cp "$MOCK/embeddings.json" "$WWW/$dir/v1/embeddings"
done
cp "$MOCK/chat.json" "$WWW/json/v1/chat/completions"
# Anthropic Messages replies, for the anthropic/ (translated) route.
mkdir -p "$WWW/anthropic-json/v1" "$WWW/anthropic-stream/v1"
cp "$MOCK/anthropic-message.json" "$WWW/anthropic-json/v1/messages"
cp "$MOCK/anthropic-stream.sse" "$WWW/anthropic-stream/v1/messages"
cp "$MOCK/stream.sse" "$WWW/stream/v1/chat/completions"
# Responses API replies, for the /v1/responses route (openai/ passthrough).
cp "$MOCK/responses.json" "$WWW/json/v1/responses"
cp "$MOCK/responses.sse" "$WWW/stream/v1/responses"
temp_paths=
for t in client_body proxy fastcgi uwsgi scgi; do
    if [[ $t == client_body ]] || ! "$NGINX_BIN" -V 2>&1 | grep -q -- "--without-http_${t}_module"; then
        mkdir -p "$NGX/tmp/$t"
        temp_paths+="    ${t}_temp_path $NGX/tmp/$t;"$'\n'
    fi
done
NGINX_PORT=$(free_port)
cat >"$NGX/nginx.conf" <<EOF
# Generated by benches/proxy/run.sh: an OpenAI-format mock upstream, loopback only.
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
$temp_paths    keepalive_requests 1000000;
    keepalive_timeout 75s;
    types { }
    etag off;
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        root $WWW;
        error_page 405 =200 \$uri;
        location = /json/v1/chat/completions {
            default_type application/json;
        }
        location = /stream/v1/chat/completions {
            default_type text/event-stream;
            add_header Cache-Control no-cache;
        }
        location = /json/v1/responses {
            default_type application/json;
        }
        location = /stream/v1/responses {
            default_type text/event-stream;
            add_header Cache-Control no-cache;
        }
        location = /anthropic-json/v1/messages {
            default_type application/json;
        }
        location = /anthropic-stream/v1/messages {
            default_type text/event-stream;
            add_header Cache-Control no-cache;
        }
        location ~ ^/(json|stream)/v1/embeddings\$ {
            default_type application/json;
        }
        location / {
            default_type application/json;
            return 404 '{"error":{"message":"no such mock route","type":"invalid_request_error"}}';
        }
    }
}
EOF
"$NGINX_BIN" -t -q -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log" || die "nginx config test failed"
"$NGINX_BIN" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log" -g 'daemon off;' &
NGINX_PID=$!
UP=http://127.0.0.1:$NGINX_PORT
for ((i = 0; i < 500; i++)); do
    curl -s -o /dev/null "$UP/" && break
    alive "$NGINX_PID" || die "nginx exited; see $NGX/logs/error.log"
    sleep 0.01
done

CHAT_BODY='{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
STREAM_BODY='{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true}'
printf '%s' "$CHAT_BODY" >"$RUN/chat-body.json"
printf '%s' "$STREAM_BODY" >"$RUN/stream-body.json"

# check URL AUTH BODYFILE EXPECT_SUBSTRING: one POST must answer 200 with the substring in the body
check() {
    local url=$1 auth=$2 bodyfile=$3 expect=$4 code
    code=$(curl -sS -o "$RUN/check.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $auth" --data-binary "@$bodyfile" --max-time 10 "$url") || code=000
    if [[ $code != 200 ]] || ! grep -qF -- "$expect" "$RUN/check.out"; then
        log "POST $url answered $code:"
        head -c 2000 "$RUN/check.out" >&2 || true
        echo >&2
        return 1
    fi
}
check "$UP/json/v1/chat/completions" bench "$RUN/chat-body.json" '"object":"chat.completion"' || die "mock chat"
check "$UP/json/v1/embeddings" bench "$RUN/chat-body.json" '"object":"embedding"' || die "mock embeddings"
check "$UP/stream/v1/chat/completions" bench "$RUN/stream-body.json" 'data: [DONE]' || die "mock stream"
log "nginx mock up on $UP (pid $NGINX_PID)"

# ---- QNP ---------------------------------------------------------------------------------------------
qnp_env=(env QNP_DATA_DIR="$DATA" OPENAI_API_KEY=bench ANTHROPIC_API_KEY=bench RUST_LOG=warn)
[[ -z $BENCH_PLANS ]] || qnp_env+=(QNP_PLANS="$BENCH_PLANS")
ANTHROPIC_PATH=anthropic-json
QNP_PORT=
READY_MS=
# start_qnp UPSTREAM_PATH: starts `qnp serve` on a fresh port; sets QNP_PID, QNP_PORT and READY_MS
start_qnp() {
    local upstream=$UP/$1 line
    QNP_PORT=$(free_port)
    line=$(python3 "$HERE/spawn_ready.py" --port "$QNP_PORT" --log "$RUN/qnp.log" --timeout 10 -- \
        "${qnp_env[@]}" QNP_OPENAI_BASE_URL="$upstream" QNP_ANTHROPIC_BASE_URL="$UP/$ANTHROPIC_PATH" \
        "$QNP" serve --listen "127.0.0.1:$QNP_PORT") ||
        { tail -n 20 "$RUN/qnp.log" >&2; die "qnp serve did not start"; }
    QNP_PID=${line%% *}
    READY_MS=${line#* }
}
stop_qnp() { stop_pid "$QNP_PID"; QNP_PID=; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$QNP_PID/status"; }

KEY=$("${qnp_env[@]}" "$QNP" keys create --email bench@example.com --plan "$BENCH_PLAN" 2>"$RUN/keys.log" | tail -n 1) ||
    { cat "$RUN/keys.log" >&2; die "qnp keys create failed"; }
[[ -n $KEY ]] || die "qnp keys create printed no key"

fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
fact qnp_bin "${QNP#"$ROOT"/}"
fact qnp_version "$("$QNP" --version 2>/dev/null || echo unknown)"
fact nginx_version "$("$NGINX_BIN" -v 2>&1 | sed 's|.*nginx/||')"
fact machine "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
fact one_n "$ONE_N"
fact ttfb_n "$TTFB_N"
fact open_rate "$OPEN_RATE"
fact peak_conc "$PEAK_CONC"
fact duration "$DURATION"
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    log "warning: load average is $load1: something else is using the CPU and the numbers will be noisy"
fi

ready=()
for ((r = 1; r <= READY_RUNS; r++)); do
    start_qnp json/v1
    ready+=("$READY_MS")
    log "qnp serve ready in $READY_MS ms (start $r of $READY_RUNS, pid $QNP_PID)"
    if ((r < READY_RUNS)); then stop_qnp; fi
done
fact ready_ms "${ready[*]}"
sleep 1
fact rss_idle_kb "$(rss_kb)"
QURL=http://127.0.0.1:$QNP_PORT/v1/chat/completions
check "$QURL" "$KEY" "$RUN/chat-body.json" '"object":"chat.completion"' || die "a chat completion through QNP failed (log: $RUN/qnp.log)"
DURL=$UP/json/v1/chat/completions

# ---- the load tool -----------------------------------------------------------------------------------
# load NAME URL AUTH BODYFILE MODE   MODE: warm | one | open | peak. Writes $RUN/NAME.json unless warm.
if [[ -n $OHA ]]; then
    fact tool "$("$OHA" --version 2>/dev/null | head -n 1)"
    load() {
        local name=$1 url=$2 auth=$3 bodyfile=$4 mode=$5 args
        case $mode in
            warm) args=(-n "$WARMUP_N" -c 4) ;;
            one) args=(-n "$ONE_N" -c 1) ;;
            open) args=(-z "$DURATION" -q "$OPEN_RATE" --latency-correction -c "$OPEN_CONC") ;;
            peak) args=(-z "$DURATION" -c "$PEAK_CONC") ;;
        esac
        bounded "$OHA" --no-tui --output-format json "${args[@]}" -m POST \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $auth" -D "$bodyfile" "$url" \
            >"$RUN/$name.json" 2>"$RUN/$name.err" || { cat "$RUN/$name.err" >&2; die "oha failed ($name)"; }
        [[ $mode == warm ]] && rm -f "$RUN/$name.json"
        return 0
    }
else
    fact tool "$("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2) (fallback: no open-loop phase)"
    load() {
        local name=$1 url=$2 auth=$3 bodyfile=$4 mode=$5 args
        case $mode in
            warm) args=(-t 1 -c 4 -d 2s) ;;
            one) args=(-t 1 -c 1 -d 10s) ;;
            open) return 0 ;;
            peak) args=(-t 2 -c "$PEAK_CONC" -d "$DURATION") ;;
        esac
        BENCH_BODY_FILE=$bodyfile BENCH_AUTH=$auth bounded "$WRK" "${args[@]}" -s "$HERE/wrk.lua" "$url" \
            >"$RUN/$name.wrk" 2>&1 || { cat "$RUN/$name.wrk" >&2; die "wrk failed ($name)"; }
        if [[ $mode != warm ]]; then
            sed -n 's/^BENCH_JSON //p' "$RUN/$name.wrk" >"$RUN/$name.json"
        fi
        return 0
    }
fi

# ---- phases ------------------------------------------------------------------------------------------
log "warm-up: $WARMUP_N requests each side"
load warm-direct "$DURL" bench "$RUN/chat-body.json" warm
load warm-qnp "$QURL" "$KEY" "$RUN/chat-body.json" warm

log "1 client, non-stream: $ONE_N requests each side"
load one-direct "$DURL" bench "$RUN/chat-body.json" one
load one-qnp "$QURL" "$KEY" "$RUN/chat-body.json" one

if [[ -n $OHA ]]; then
    log "open loop: $OPEN_RATE req/s for $DURATION each side"
    load open-direct "$DURL" bench "$RUN/chat-body.json" open
    load open-qnp "$QURL" "$KEY" "$RUN/chat-body.json" open
fi

log "peak: $PEAK_CONC connections for $DURATION each side"
load peak-direct "$DURL" bench "$RUN/chat-body.json" peak
load peak-qnp "$QURL" "$KEY" "$RUN/chat-body.json" peak
sleep 1
fact rss_load_kb "$(rss_kb)"

log "restarting qnp serve against the streaming mock"
stop_qnp
start_qnp stream/v1
log "qnp serve ready in $READY_MS ms (pid $QNP_PID)"
QURL=http://127.0.0.1:$QNP_PORT/v1/chat/completions
DURL=$UP/stream/v1/chat/completions
check "$QURL" "$KEY" "$RUN/stream-body.json" 'data: [DONE]' || die "a streamed completion through QNP failed (log: $RUN/qnp.log)"

log "1 client, stream: $TTFB_N requests each side"
bounded python3 "$HERE/ttfb.py" --url "$DURL" --auth bench --body "$RUN/stream-body.json" -n "$TTFB_N" --max-seconds 120 \
    >"$RUN/ttfb-direct.json" || die "ttfb (direct) failed"
bounded python3 "$HERE/ttfb.py" --url "$QURL" --auth "$KEY" --body "$RUN/stream-body.json" -n "$TTFB_N" --max-seconds 120 \
    >"$RUN/ttfb-qnp.json" || die "ttfb (QNP) failed"
fact rss_stream_kb "$(rss_kb)"
stop_qnp

# ---- anthropic/ route: OpenAI format in, Anthropic Messages upstream, translated both ways ----------
# BENCH_ANTHROPIC=0 skips it (e.g. to compare against a build from before the route existed).
if [[ ${BENCH_ANTHROPIC:-1} == 1 ]]; then
ANTH_CHAT_BODY='{"model":"anthropic/claude-sonnet-5-5","messages":[{"role":"user","content":"Say hello"}]}'
ANTH_STREAM_BODY='{"model":"anthropic/claude-sonnet-5-5","messages":[{"role":"user","content":"Say hello"}],"stream":true}'
ANTH_DIRECT_BODY='{"model":"claude-sonnet-5-5","max_tokens":1024,"messages":[{"role":"user","content":"Say hello"}]}'
printf '%s' "$ANTH_CHAT_BODY" >"$RUN/anth-chat-body.json"
printf '%s' "$ANTH_STREAM_BODY" >"$RUN/anth-stream-body.json"
printf '%s' "$ANTH_DIRECT_BODY" >"$RUN/anth-direct-body.json"
ANTHROPIC_PATH=anthropic-json
start_qnp json/v1
QURL=http://127.0.0.1:$QNP_PORT/v1/chat/completions
DURL=$UP/anthropic-json/v1/messages
check "$QURL" "$KEY" "$RUN/anth-chat-body.json" '"object":"chat.completion"' || die "an anthropic/ completion through QNP failed (log: $RUN/qnp.log)"
log "anthropic/ route, 1 client, non-stream: $ONE_N requests each side"
load warm-anth-direct "$DURL" bench "$RUN/anth-direct-body.json" warm
load warm-anth-qnp "$QURL" "$KEY" "$RUN/anth-chat-body.json" warm
load one-anth-direct "$DURL" bench "$RUN/anth-direct-body.json" one
load one-anth-qnp "$QURL" "$KEY" "$RUN/anth-chat-body.json" one
stop_qnp
ANTHROPIC_PATH=anthropic-stream
start_qnp json/v1
QURL=http://127.0.0.1:$QNP_PORT/v1/chat/completions
DURL=$UP/anthropic-stream/v1/messages
check "$QURL" "$KEY" "$RUN/anth-stream-body.json" 'data: [DONE]' || die "an anthropic/ stream through QNP failed (log: $RUN/qnp.log)"
log "anthropic/ route, 1 client, stream: $TTFB_N requests each side"
bounded python3 "$HERE/ttfb.py" --url "$DURL" --auth bench --body "$RUN/anth-direct-body.json" -n "$TTFB_N" --max-seconds 120 \
    >"$RUN/ttfb-anth-direct.json" || die "ttfb (anthropic direct) failed"
bounded python3 "$HERE/ttfb.py" --url "$QURL" --auth "$KEY" --body "$RUN/anth-stream-body.json" -n "$TTFB_N" --max-seconds 120 \
    >"$RUN/ttfb-anth-qnp.json" || die "ttfb (anthropic through QNP) failed"
stop_qnp
fi

# ---- /v1/responses route: the Responses API, passed through to the provider's own endpoint ----------
# BENCH_RESPONSES=0 skips it (e.g. to compare against a build from before the route existed).
if [[ ${BENCH_RESPONSES:-1} == 1 ]]; then
RESP_BODY='{"model":"openai/gpt-4o-mini","input":"Say hello"}'
RESP_STREAM_BODY='{"model":"openai/gpt-4o-mini","input":"Say hello","stream":true}'
printf '%s' "$RESP_BODY" >"$RUN/resp-body.json"
printf '%s' "$RESP_STREAM_BODY" >"$RUN/resp-stream-body.json"
start_qnp json/v1
QURL=http://127.0.0.1:$QNP_PORT/v1/responses
DURL=$UP/json/v1/responses
check "$QURL" "$KEY" "$RUN/resp-body.json" '"object":"response"' || die "a response through QNP failed (log: $RUN/qnp.log)"
log "/v1/responses route, 1 client, non-stream: $ONE_N requests each side"
load warm-resp-direct "$DURL" bench "$RUN/resp-body.json" warm
load warm-resp-qnp "$QURL" "$KEY" "$RUN/resp-body.json" warm
load one-resp-direct "$DURL" bench "$RUN/resp-body.json" one
load one-resp-qnp "$QURL" "$KEY" "$RUN/resp-body.json" one
stop_qnp
start_qnp stream/v1
QURL=http://127.0.0.1:$QNP_PORT/v1/responses
DURL=$UP/stream/v1/responses
check "$QURL" "$KEY" "$RUN/resp-stream-body.json" 'response.completed' || die "a streamed response through QNP failed (log: $RUN/qnp.log)"
log "/v1/responses route, 1 client, stream: $TTFB_N requests each side"
bounded python3 "$HERE/ttfb.py" --url "$DURL" --auth bench --body "$RUN/resp-stream-body.json" -n "$TTFB_N" --max-seconds 120 \
    >"$RUN/ttfb-resp-direct.json" || die "ttfb (responses direct) failed"
bounded python3 "$HERE/ttfb.py" --url "$QURL" --auth "$KEY" --body "$RUN/resp-stream-body.json" -n "$TTFB_N" --max-seconds 120 \
    >"$RUN/ttfb-resp-qnp.json" || die "ttfb (responses through QNP) failed"
stop_qnp
fi

# ---- report ------------------------------------------------------------------------------------------
python3 "$HERE/report.py" "$RUN" | tee "$OUT/results.md"
log "table written to benches/.out/results.md; raw results and logs in ${RUN#"$ROOT"/}"
