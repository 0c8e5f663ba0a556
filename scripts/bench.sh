#!/usr/bin/env bash
# Throughput, latency and memory of keyrelay as a non-streaming chat completion proxy.
#
# A fixed upstream (nginx answering every POST /v1/chat/completions with the same realistic
# chat.completion JSON) is load-tested with wrk twice per concurrency level: directly, and
# through a release build of keyrelay. At 1 connection (1 wrk thread) and 32 connections
# (2 wrk threads) it prints requests/s, p50 and p99 latency of both, then:
#   - keyrelay/direct requests/s ratio: the share of the upstream's throughput left
#     after going through the proxy;
#   - added p50 latency: at 1 connection, what one hop through keyrelay costs a request; at
#     32 connections it mostly reflects queueing and CPU contention on the shared cores, so
#     it is noisy and can even be negative;
#   - keyrelay's CPU use under load, and its RSS idle, after the load, and at peak (VmHWM).
#
# Everything runs on loopback on one machine: wrk, nginx and keyrelay share the same cores,
# often with other jobs. Absolute numbers are noisy and machine-bound; the ratios and the
# added latency, measured back to back in one run, are what to compare between versions.
#
# Usage: scripts/bench.sh
#   BENCH_SECONDS  duration of each wrk run (default 10)
#   KEYRELAY_LOG   passed to keyrelay if set (default: keyrelay's own, info: a line per request)
#
# Needs wrk, nginx (nginx-light) and curl; installs whichever is missing with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNECTIONS=(1 32)
KEY=sk-bench-0001

say() { printf '%s\n' "$*" >&2; }
die() {
    say "bench: $*"
    exit 1
}

# --- tools ---------------------------------------------------------------------------------

find_nginx() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$(find_nginx)" ] || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    say "bench: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(find_nginx)
[ -n "$NGINX" ] || die "nginx not found after installing nginx-light"

cargo build --release --locked --quiet
KEYRELAY=$PWD/target/release/keyrelay

# --- scratch space and cleanup -------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyrelay-bench.XXXXXX")
NGINX_PID=
KEYRELAY_PID=
WRK_PID=

stop() { # pid: SIGTERM, up to 5 s to exit, then SIGKILL
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    [ -z "$WRK_PID" ] || stop "$WRK_PID"
    [ -z "$KEYRELAY_PID" ] || stop "$KEYRELAY_PID"
    [ -z "$NGINX_PID" ] || stop "$NGINX_PID"
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the upstream: nginx with fixed answers ------------------------------------------------

CHAT_COMPLETION='{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":10,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}'
MODELS='{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}'

free_port() { # a loopback port nobody answers on (nginx start is retried if it was taken since)
    local port
    while :; do
        port=$((20000 + RANDOM % 12000)) # below Linux's ephemeral range (32768+)
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

write_nginx_conf() { # port
    local user_line=
    # As root, nginx would hand its worker to "nobody"; keep it as the current user.
    [ "$(id -u)" -ne 0 ] || user_line="user $(id -un) $(id -gn);"
    cat >"$TMP/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    # wrk and keyrelay's connection pool keep their connections; don't cut them every 1000.
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '$CHAT_COMPLETION';
        }
        location = /v1/models {
            default_type application/json;
            return 200 '$MODELS';
        }
        location / { return 404; }
    }
}
EOF
}

start_nginx() {
    local try
    for try in 1 2 3 4 5; do
        NGINX_PORT=$(free_port)
        write_nginx_conf "$NGINX_PORT"
        "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" \
            >"$TMP/nginx.out" 2>&1 &
        NGINX_PID=$!
        for _ in $(seq 50); do
            if curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/v1/models" 2>/dev/null; then
                return
            fi
            kill -0 "$NGINX_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop "$NGINX_PID"
        NGINX_PID=
        say "bench: nginx did not start on port $NGINX_PORT (try $try):"
        cat "$TMP/nginx.out" "$TMP/nginx-error.log" >&2 2>/dev/null || true
    done
    die "could not start nginx"
}

# --- keyrelay ------------------------------------------------------------------------------

start_keyrelay() {
    mkdir -p "$TMP/data"
    # One key may carry every connection at once: the default of one request per key and
    # model would measure that limit (requests queueing for the key), not the proxy's cost.
    cat >"$TMP/data/.env" <<EOF
OPENAI_API_KEY=$KEY
OPENAI_API_BASE=http://127.0.0.1:$NGINX_PORT/v1
MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=1000
EOF
    # keyrelay merges the real environment over .env: start it from an empty one so stray
    # *_API_KEY or proxy variables cannot change what is measured.
    env -i PATH="$PATH" HOME="$TMP" ${KEYRELAY_LOG:+KEYRELAY_LOG="$KEYRELAY_LOG"} \
        "$KEYRELAY" --dir "$TMP/data" serve --port 0 2>"$TMP/keyrelay.err" &
    KEYRELAY_PID=$!
    local line=
    for _ in $(seq 100); do
        line=$(head -n 1 "$TMP/keyrelay.err" 2>/dev/null || true)
        [ -z "$line" ] || break
        kill -0 "$KEYRELAY_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! $line =~ ^keyrelay\ listening\ on\ http://127\.0\.0\.1:([0-9]+)$ ]]; then
        say "bench: keyrelay did not start; its stderr:"
        cat "$TMP/keyrelay.err" >&2
        exit 1
    fi
    KEYRELAY_PORT=${BASH_REMATCH[1]}
}

status_kb() { # pid field: a VmRSS/VmHWM-style line of /proc/PID/status, in kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

cpu_ticks() { # utime + stime of a process, in clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# --- checks before the load ----------------------------------------------------------------

check_answers() {
    local url=http://127.0.0.1:$KEYRELAY_PORT/v1 out=$TMP/check.json code
    code=$(curl -sS -o "$out" -w '%{http_code}' -H 'content-type: application/json' \
        -d '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
        "$url/chat/completions")
    if [ "$code" != 200 ] || ! grep -q '"chat.completion"' "$out"; then
        die "keyrelay POST /v1/chat/completions answered $code: $(head -c 500 "$out")"
    fi
    code=$(curl -sS -o "$out" -w '%{http_code}' "$url/models")
    if [ "$code" != 200 ] || ! grep -q 'openai/gpt-4o-mini' "$out"; then
        die "keyrelay GET /v1/models answered $code: $(head -c 500 "$out")"
    fi
}

# --- load ----------------------------------------------------------------------------------

write_lua() { # file model
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"$2","messages":[{"role":"user","content":"hi"}]}'
EOF
}

to_ms() { # a wrk duration such as 71.00us, 1.20ms, 2.00s
    awk -v d="$1" 'BEGIN {
        n = d + 0; unit = d; sub(/^[0-9.]+/, "", unit)
        if (unit == "us") n /= 1000; else if (unit == "s") n *= 1000
        else if (unit == "m") n *= 60000; else if (unit != "ms") { print "?"; exit }
        printf "%.3f", n
    }'
}

declare -A RPS P50 P99 CPU

# run_wrk connections target url script: fills RPS, P50, P99 for "connections target".
run_wrk() {
    local conns=$1 target=$2 url=$3 script=$4 threads=1 out
    [ "$conns" -eq 1 ] || threads=2
    out=$TMP/wrk-$target-$conns.txt
    say "bench: $target, $conns connection(s), ${SECONDS_PER_RUN}s"
    # In the background so that a signal to this script interrupts the wait (and cleanup stops wrk).
    wrk -t"$threads" -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$script" "$url" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || { cat "$out" >&2; die "wrk failed against $target"; }
    WRK_PID=
    if grep -q -e 'Non-2xx or 3xx responses' -e 'Socket errors' "$out"; then
        cat "$out" >&2
        die "$target at $conns connection(s): some requests failed (see wrk's output above)"
    fi
    local key="$conns $target"
    RPS[$key]=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    if [[ ! ${RPS[$key]} =~ ^[1-9][0-9]*$ || ! ${P50[$key]} =~ ^[0-9.]+$ || ! ${P99[$key]} =~ ^[0-9.]+$ ]]; then
        cat "$out" >&2
        die "$target at $conns connection(s): no requests completed, or wrk's output was not understood"
    fi
}

start_nginx
start_keyrelay
IDLE_RSS=$(status_kb "$KEYRELAY_PID" VmRSS)
check_answers

write_lua "$TMP/direct.lua" gpt-4o-mini
write_lua "$TMP/keyrelay.lua" openai/gpt-4o-mini
CLK_TCK=$(getconf CLK_TCK)
for conns in "${CONNECTIONS[@]}"; do
    run_wrk "$conns" direct "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$TMP/direct.lua"
    before=$(cpu_ticks "$KEYRELAY_PID")
    run_wrk "$conns" keyrelay "http://127.0.0.1:$KEYRELAY_PORT/v1/chat/completions" "$TMP/keyrelay.lua"
    after=$(cpu_ticks "$KEYRELAY_PID")
    # CPU seconds keyrelay used per wall second of the run: 1.00 = one core busy throughout.
    CPU[$conns]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v s="$SECONDS_PER_RUN" \
        -v r="${RPS[$conns keyrelay]}" \
        'BEGIN { printf "%.2f cores, %.0f us CPU/request", t / hz / s, t / hz / s / r * 1e6 }')
done
LOADED_RSS=$(status_kb "$KEYRELAY_PID" VmRSS)
PEAK_RSS=$(status_kb "$KEYRELAY_PID" VmHWM)
THREADS=$(status_kb "$KEYRELAY_PID" Threads)

# --- report --------------------------------------------------------------------------------

echo
echo "keyrelay bench: ${SECONDS_PER_RUN}s per run, $(nproc) cores shared by wrk, nginx and keyrelay"
echo
printf '%5s  %-8s  %9s  %8s  %8s\n' conns target 'req/s' 'p50 ms' 'p99 ms'
for conns in "${CONNECTIONS[@]}"; do
    for target in direct keyrelay; do
        key="$conns $target"
        printf '%5s  %-8s  %9s  %8s  %8s\n' "$conns" "$target" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}"
    done
done
echo
for conns in "${CONNECTIONS[@]}"; do
    awk -v c="$conns" -v kr="${RPS[$conns keyrelay]}" -v d="${RPS[$conns direct]}" \
        -v kp="${P50[$conns keyrelay]}" -v dp="${P50[$conns direct]}" -v cpu="${CPU[$conns]}" \
        'BEGIN { printf "%2d conn: keyrelay/direct req/s %.2f, added p50 %+.3f ms; keyrelay CPU %s\n",
                 c, kr / d, kp - dp, cpu }'
done
echo
echo "keyrelay RSS: idle $(mb "$IDLE_RSS") MB, after load $(mb "$LOADED_RSS") MB, peak $(mb "$PEAK_RSS") MB ($THREADS threads)"
