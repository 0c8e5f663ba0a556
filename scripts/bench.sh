#!/usr/bin/env bash
# Throughput, latency and memory of keyrelay as a non-streaming chat completion proxy, and
# how it holds up against hostile clients, with a verdict for each target.
#
# A fixed upstream (nginx answering every POST /v1/chat/completions with the same realistic
# chat.completion JSON) is load-tested with wrk per concurrency level: directly, and through
# a release build of keyrelay. At 1 connection (1 wrk thread) and 32 connections (2 wrk
# threads) it prints requests/s, p50 and p99 latency, then:
#   - keyrelay/direct requests/s ratio: the share of the upstream's throughput left
#     after going through the proxy;
#   - added p50 latency: at 1 connection, what one hop through keyrelay costs a request; at
#     32 connections it mostly reflects queueing and CPU contention on the shared cores, so
#     it is noisy and can even be negative;
#   - keyrelay's CPU use under load, and its RSS idle, after the load, and at peak (VmHWM);
#   - GET /health against nginx's own static answer (the server layer alone);
#   - the same provider with 5,000 keys against 2 keys (key selection must not grow with
#     the pool);
#   - 500 idle keep-alive connections: threads, and memory per connection;
#   - 64 hostile clients (stalled unauthenticated uploads, half-sent heads, oversized heads,
#     trickled bodies): peak RSS, and an ordinary request's latency while they are connected.
# With BENCH_COMPARE=/path/to/another/keyrelay, that binary (an older build, say) is measured
# in the same run with the same 2-key configuration, so before/after ratios share one run.
#
# Everything runs on loopback on one machine: wrk, nginx and keyrelay share the same cores,
# often with other jobs. Absolute numbers are noisy and machine-bound; the ratios and the
# added latency, measured back to back in one run, are what to compare between versions.
#
# Usage: scripts/bench.sh
#   BENCH_SECONDS  duration of each wrk run (default 10)
#   KEYRELAY_LOG   passed to keyrelay if set (default: keyrelay's own, info: a line per request)
#   BENCH_COMPARE  another keyrelay binary to measure alongside (optional)
#
# Needs wrk, nginx (nginx-light), curl and python3; installs whichever is missing with apt-get.
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
command -v python3 >/dev/null || missing+=(python3)
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
KEYRELAY_PIDS=()
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
    for pid in "${KEYRELAY_PIDS[@]}"; do stop "$pid"; done
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
        location = /health {
            default_type application/json;
            return 200 '{"status":"ok"}';
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

declare -A PORT PID

# start_keyrelay name binary keys [extra .env lines]: an instance with `keys` OpenAI keys.
start_keyrelay() {
    local name=$1 binary=$2 keys=$3 extra=${4:-} dir=$TMP/data-$1
    mkdir -p "$dir"
    {
        echo "OPENAI_API_BASE=http://127.0.0.1:$NGINX_PORT/v1"
        # One key may carry every connection at once: the default of one request per key and
        # model would measure that limit (requests queueing for the key), not the proxy's cost.
        echo "MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=1000"
        for i in $(seq "$keys"); do printf 'OPENAI_API_KEY_%d=sk-bench-%08d\n' "$i" "$i"; done
        [ -z "$extra" ] || printf '%s\n' "$extra"
    } >"$dir/.env"
    # keyrelay merges the real environment over .env: start it from an empty one so stray
    # *_API_KEY or proxy variables cannot change what is measured.
    env -i PATH="$PATH" HOME="$TMP" ${KEYRELAY_LOG:+KEYRELAY_LOG="$KEYRELAY_LOG"} \
        "$binary" --dir "$dir" serve --port 0 2>"$TMP/$name.err" &
    local pid=$!
    KEYRELAY_PIDS+=("$pid")
    local line=
    for _ in $(seq 100); do
        line=$(head -n 1 "$TMP/$name.err" 2>/dev/null || true)
        [ -z "$line" ] || break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! $line =~ ^keyrelay\ listening\ on\ http://127\.0\.0\.1:([0-9]+)$ ]]; then
        say "bench: keyrelay ($name) did not start; its stderr:"
        cat "$TMP/$name.err" >&2
        exit 1
    fi
    PORT[$name]=${BASH_REMATCH[1]}
    PID[$name]=$pid
}

status_kb() { # pid field: a VmRSS/VmHWM-style line of /proc/PID/status, in kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

cpu_ticks() { # utime + stime of a process, in clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# --- checks before the load ----------------------------------------------------------------

check_answers() { # name [auth header]
    local url=http://127.0.0.1:${PORT[$1]}/v1 out=$TMP/check.json code
    code=$(curl -sS -o "$out" -w '%{http_code}' -H 'content-type: application/json' ${2:+-H "$2"} \
        -d '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
        "$url/chat/completions")
    if [ "$code" != 200 ] || ! grep -q '"chat.completion"' "$out"; then
        die "keyrelay ($1) POST /v1/chat/completions answered $code: $(head -c 500 "$out")"
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

# run_wrk connections target url [script]: fills RPS, P50, P99 for "connections target".
run_wrk() {
    local conns=$1 target=$2 url=$3 script=${4:-} threads=1 out
    [ "$conns" -eq 1 ] || threads=2
    out=$TMP/wrk-$target-$conns.txt
    say "bench: $target, $conns connection(s), ${SECONDS_PER_RUN}s"
    # In the background so that a signal to this script interrupts the wait (and cleanup stops wrk).
    wrk -t"$threads" -c"$conns" -d"${SECONDS_PER_RUN}s" --latency ${script:+-s "$script"} "$url" >"$out" 2>&1 &
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

# chat_load name conns: wrk through keyrelay instance `name`, with its CPU use.
chat_load() {
    local name=$1 conns=$2 before after
    before=$(cpu_ticks "${PID[$name]}")
    run_wrk "$conns" "$name" "http://127.0.0.1:${PORT[$name]}/v1/chat/completions" "$TMP/keyrelay.lua"
    after=$(cpu_ticks "${PID[$name]}")
    # CPU seconds keyrelay used per wall second of the run: 1.00 = one core busy throughout.
    CPU[$conns $name]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v s="$SECONDS_PER_RUN" \
        -v r="${RPS[$conns $name]}" \
        'BEGIN { printf "%.2f cores, %.0f us CPU/request", t / hz / s, t / hz / s / r * 1e6 }')
}

# --- idle and hostile clients (python3, plain sockets) ---------------------------------------

# idle_connections port n: opens n keep-alive connections that each sent one request, holds
# them, prints "ready" and waits for stdin to close.
IDLE_PY='
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or not got.endswith(b"}"):
        got += s.recv(4096)
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
'

# hostile port: 64 hostile clients, 16 of each kind; prints "ready" once all are connected and
# have sent what they send, then holds them until stdin closes.
HOSTILE_PY='
import socket, sys
port = int(sys.argv[1])
conns = []
def connect(first):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(first)
    conns.append(s)
for _ in range(16):  # unauthenticated uploads that declare 30 MB and send 1 MB
    try:
        connect(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 30000000\r\n\r\n" + b"x" * (1 << 20))
    except OSError:
        pass  # refused from the head and closed: what should happen
for _ in range(16):  # half-sent heads
    connect(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
for _ in range(16):  # an oversized head, sent in full
    try:
        connect(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n")
    except OSError:
        pass
for _ in range(16):  # a head that never ends, one header at a time
    connect(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 50)
print("ready", flush=True)
sys.stdin.read()
'

# hold_clients script args...: starts a python client holder, waits for "ready"; its stdin is
# fd 7 (closing it releases the clients).
hold_clients() {
    local fifo_in=$TMP/hold.in fifo_out=$TMP/hold.out
    rm -f "$fifo_in" "$fifo_out"
    mkfifo "$fifo_in" "$fifo_out"
    python3 -c "$@" <"$fifo_in" >"$fifo_out" &
    HOLDER_PID=$!
    exec 7>"$fifo_in" 8<"$fifo_out"
    local ready=
    read -r -t 60 ready <&8 || true
    [ "$ready" = ready ] || die "the client holder did not get its connections up"
}

release_clients() {
    exec 7>&- 8<&-
    wait "$HOLDER_PID" 2>/dev/null || true
}

# --- the runs ------------------------------------------------------------------------------

start_nginx
start_keyrelay keyrelay "$KEYRELAY" 2
start_keyrelay keys5000 "$KEYRELAY" 5000
IDLE_RSS=$(status_kb "${PID[keyrelay]}" VmRSS)
check_answers keyrelay
check_answers keys5000
INSTANCES=(keyrelay)
if [ -n "${BENCH_COMPARE:-}" ]; then
    [ -x "$BENCH_COMPARE" ] || die "BENCH_COMPARE=$BENCH_COMPARE is not an executable"
    start_keyrelay compare "$BENCH_COMPARE" 2
    check_answers compare
    INSTANCES+=(compare)
fi

write_lua "$TMP/direct.lua" gpt-4o-mini
write_lua "$TMP/keyrelay.lua" openai/gpt-4o-mini
CLK_TCK=$(getconf CLK_TCK)
for conns in "${CONNECTIONS[@]}"; do
    run_wrk "$conns" direct "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$TMP/direct.lua"
    for name in "${INSTANCES[@]}"; do chat_load "$name" "$conns"; done
done
chat_load keys5000 32
LOADED_RSS=$(status_kb "${PID[keyrelay]}" VmRSS)
PEAK_RSS=$(status_kb "${PID[keyrelay]}" VmHWM)
run_wrk 32 nginx-health "http://127.0.0.1:$NGINX_PORT/health"
run_wrk 32 health "http://127.0.0.1:${PORT[keyrelay]}/health"

# 500 idle keep-alive connections on the loaded instance.
IDLE_CONNS=500
BEFORE_IDLE=$(status_kb "${PID[keyrelay]}" VmRSS)
say "bench: $IDLE_CONNS idle keep-alive connections"
hold_clients "$IDLE_PY" "${PORT[keyrelay]}" "$IDLE_CONNS"
WITH_IDLE=$(status_kb "${PID[keyrelay]}" VmRSS)
IDLE_THREADS=$(status_kb "${PID[keyrelay]}" Threads)
release_clients

# 64 hostile clients against a fresh instance with a proxy key (they are not authenticated).
declare -A HOSTILE_MS HOSTILE_PEAK HOSTILE_THREADS
hostile_run() { # name binary
    start_keyrelay "$1" "$2" 2 "PROXY_API_KEY=bench-proxy-key"
    say "bench: 64 hostile clients against $1"
    hold_clients "$HOSTILE_PY" "${PORT[$1]}"
    # Bounded: a server the hostile clients have stopped would keep an ordinary request forever.
    local seconds
    seconds=$(curl -sS -o /dev/null -w '%{time_total}' --max-time 10 -H 'authorization: Bearer bench-proxy-key' \
        -H 'content-type: application/json' \
        -d '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
        "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" 2>/dev/null || echo 10)
    HOSTILE_MS[$1]=$(awk -v s="$seconds" 'BEGIN { printf "%.1f", s * 1000 }')
    HOSTILE_PEAK[$1]=$(status_kb "${PID[$1]}" VmHWM)
    HOSTILE_THREADS[$1]=$(status_kb "${PID[$1]}" Threads)
    release_clients
}
hostile_run hostile "$KEYRELAY"
[ -z "${BENCH_COMPARE:-}" ] || hostile_run compare-hostile "$BENCH_COMPARE"

# --- report --------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
added_us() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (a - b) * 1000 }'; }
verdict() { # "label" measured condition-in-awk
    local ok
    ok=$(awk -v m="$2" "BEGIN { print ($3) ? \"ok\" : \"MISSED\" }")
    printf '  %-62s %s\n' "$1: $2" "$ok"
}

echo
echo "keyrelay bench: ${SECONDS_PER_RUN}s per run, $(nproc) cores shared by wrk, nginx and keyrelay"
echo
printf '%5s  %-12s  %9s  %8s  %8s\n' conns target 'req/s' 'p50 ms' 'p99 ms'
for key in "1 direct" "1 keyrelay" "1 compare" "32 direct" "32 keyrelay" "32 compare" "32 keys5000" \
    "32 nginx-health" "32 health"; do
    [ -n "${RPS[$key]:-}" ] || continue
    printf '%5s  %-12s  %9s  %8s  %8s\n' ${key%% *} "${key#* }" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}"
done
echo
for name in "${INSTANCES[@]}"; do
    for conns in "${CONNECTIONS[@]}"; do
        printf '%-8s %2d conn: %s/direct req/s %s, added p50 %+d us; CPU %s\n' "$name" "$conns" "$name" \
            "$(ratio "${RPS[$conns $name]}" "${RPS[$conns direct]}")" \
            "$(added_us "${P50[$conns $name]}" "${P50[$conns direct]}")" "${CPU[$conns $name]}"
    done
done
echo
echo "keyrelay RSS: idle $(mb "$IDLE_RSS") MB, after load $(mb "$LOADED_RSS") MB, peak $(mb "$PEAK_RSS") MB"
echo "$IDLE_CONNS idle connections: $IDLE_THREADS threads, $(( (WITH_IDLE - BEFORE_IDLE) / IDLE_CONNS )) KiB each"
for name in hostile compare-hostile; do
    [ -n "${HOSTILE_MS[$name]:-}" ] || continue
    echo "64 hostile clients ($name): peak RSS $(mb "${HOSTILE_PEAK[$name]}") MB, ${HOSTILE_THREADS[$name]} threads, an ordinary request meanwhile ${HOSTILE_MS[$name]} ms (10000 = gave up)"
done
echo
echo "targets:"
verdict "added p50 at 1 connection, us (<= 100)" "$(added_us "${P50[1 keyrelay]}" "${P50[1 direct]}")" 'm <= 100'
verdict "req/s at 32 connections, share of direct (>= 0.20)" "$(ratio "${RPS[32 keyrelay]}" "${RPS[32 direct]}")" 'm >= 0.20'
verdict "/health req/s, share of nginx's static answer (>= 0.5)" "$(ratio "${RPS[32 health]}" "${RPS[32 nginx-health]}")" 'm >= 0.5'
verdict "idle RSS, MB (<= 10)" "$(mb "$IDLE_RSS")" 'm <= 10'
verdict "5,000 keys vs 2 keys, req/s ratio (>= 0.90)" "$(ratio "${RPS[32 keys5000]}" "${RPS[32 keyrelay]}")" 'm >= 0.90'
verdict "threads with $IDLE_CONNS idle connections (<= connections + workers + 8)" "$IDLE_THREADS" "m <= $IDLE_CONNS + 64 + 8"
verdict "memory per idle connection, KiB (<= 64)" "$(( (WITH_IDLE - BEFORE_IDLE) / IDLE_CONNS ))" 'm <= 64'
verdict "peak RSS under 64 hostile clients, MB (<= 100)" "$(mb "${HOSTILE_PEAK[hostile]}")" 'm <= 100'
verdict "an ordinary request among them, ms (< 100)" "${HOSTILE_MS[hostile]}" 'm < 100'
