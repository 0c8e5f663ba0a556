#!/usr/bin/env bash
# Throughput, latency and memory of keyrelay next to the same static upstream called directly
# and through LiteLLM's proxy, and how keyrelay holds up against hostile clients, with a
# verdict for each target.
#
# A fixed upstream (nginx answering every POST with the same realistic answer: a
# chat.completion JSON, a whole chat.completion.chunk SSE stream as text/event-stream under
# /stream/v1, an embedding list) is load-tested with wrk for each kind of request
# (non-streaming chat, streaming chat, embeddings) at 1 connection (1 wrk thread), 32 and
# 256 connections (2 wrk threads): directly, through a release build of keyrelay, and through
# LiteLLM's proxy (pip `litellm[proxy]` in target/bench-venv, one worker, a generated config
# with the same upstream and the same two keys). For each it prints requests/s, p50 and p99
# latency, failed requests, then:
#   - keyrelay/direct and keyrelay/LiteLLM requests/s ratios;
#   - added p50 latency over direct: at 1 connection, what one hop costs a request; at 32 and
#     256 connections it mostly reflects queueing and CPU contention on the shared cores, so
#     it is noisy and can even be negative;
#   - keyrelay's CPU use under load, its RSS idle, after the load and at peak (VmHWM), and
#     LiteLLM's RSS (its processes together);
#   - start to first answered request (spawn to a 200 from GET /health, median of 5);
#   - GET /health against nginx's own static answer (the server layer alone);
#   - the same provider with 5,000 keys against 2 keys (key selection must not grow with
#     the pool);
#   - 500 idle keep-alive connections: threads, and memory per connection;
#   - 64 hostile clients (stalled unauthenticated uploads, half-sent heads, oversized heads,
#     trickled bodies): peak RSS, and an ordinary request's latency while they are connected.
# LiteLLM is some hundred times slower, so it gets shorter runs (BENCH_LITELLM_SECONDS); a
# level where it fails requests is reported with its failures, not hidden.
# With BENCH_COMPARE=/path/to/another/keyrelay, that binary (an older build, say) is measured
# in the same run with the same 2-key configuration, so before/after ratios share one run.
#
# Everything runs on loopback on one machine: wrk, nginx, keyrelay and LiteLLM share the same
# cores, often with other jobs. Absolute numbers are noisy and machine-bound; the ratios and
# the added latency, measured back to back in one run, are what to compare between versions.
#
# Usage: scripts/bench.sh
#   BENCH_SECONDS          duration of each wrk run (default 10)
#   BENCH_LITELLM_SECONDS  duration of each wrk run against LiteLLM (default 5)
#   BENCH_LITELLM=0        leave LiteLLM out (no venv, no install)
#   KEYRELAY_LOG           passed to keyrelay if set (default: keyrelay's own, info: a line per request)
#   BENCH_COMPARE          another keyrelay binary to measure alongside (optional)
#
# Needs wrk, nginx (nginx-light), curl and python3 (with venv); installs whichever is missing
# with apt-get, and LiteLLM with pip into target/bench-venv (kept between runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/measure_lib.sh
source scripts/measure_lib.sh

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
LITELLM_SECONDS=${BENCH_LITELLM_SECONDS:-5}
WITH_LITELLM=${BENCH_LITELLM:-1}
CONNECTIONS=(1 32 256)
KINDS=(chat stream embed)
KEY=sk-bench-0001


# --- tools ---------------------------------------------------------------------------------


missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$(find_nginx)" ] || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ "$WITH_LITELLM" != 0 ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "bench: installing ${missing[*]}"
    install_missing "${missing[@]}"
fi
NGINX=$(find_nginx)
[ -n "$NGINX" ] || die "nginx not found after installing nginx-light"

cargo build --release --locked --quiet
KEYRELAY=$PWD/target/release/keyrelay

# LiteLLM's proxy in its own venv, kept between runs (the install takes minutes).
VENV=$PWD/target/bench-venv
if [ "$WITH_LITELLM" != 0 ] && [ ! -x "$VENV/bin/litellm" ]; then
    say "bench: installing litellm[proxy] into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'litellm[proxy]' || die "pip install 'litellm[proxy]' failed"
fi

# --- scratch space and cleanup -------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyrelay-bench.XXXXXX")
NGINX_PID=
KEYRELAY_PIDS=()
LITELLM_PID=
WRK_PID=


descendants() { # pid: the pid and every process below it
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            print root
            do { grew = 0
                 for (p in parent) if (!(p in seen) && (parent[p] in seen || parent[p] == root)) { seen[p] = 1; print p; grew = 1 }
            } while (grew)
        }'
}

stop_tree() { # pid: the process and its children (LiteLLM's uvicorn workers)
    local pids
    pids=$(descendants "$1")
    stop "$1"
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
}

cleanup() {
    local status=$?
    [ -z "$WRK_PID" ] || stop "$WRK_PID"
    for pid in "${KEYRELAY_PIDS[@]}"; do stop "$pid"; done
    [ -z "$LITELLM_PID" ] || stop_tree "$LITELLM_PID"
    [ -z "$NGINX_PID" ] || stop "$NGINX_PID"
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the upstream: nginx with fixed answers ------------------------------------------------

CHAT_COMPLETION='{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":10,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}'
# A whole streamed answer, as OpenAI sends it: the role, three pieces of content, the finish
# and the usage chunk, then [DONE].
chunk() { # delta finish_reason [usage]
    printf 'data: {"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[%s],"usage":%s}\n\n' \
        "$1" "${2:-null}"
}
CHAT_STREAM=$(
    chunk '{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}'
    for piece in Hello! ' How can I' ' assist you today?'; do
        chunk '{"index":0,"delta":{"content":"'"$piece"'"},"logprobs":null,"finish_reason":null}'
    done
    chunk '{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}'
    chunk '' '{"prompt_tokens":8,"completion_tokens":10,"total_tokens":18}'
    printf 'data: [DONE]\n\n'
)
# 8 dimensions: the shape of OpenAI's answer, not its size (1,536 floats) - the proxy's cost
# per request is what is measured, not the bandwidth of loopback.
EMBEDDINGS='{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,-0.0028842222,0.017282638,-0.013772559,0.0051471367,-0.0051212884,0.011993425]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}'
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
        location = /stream/v1/chat/completions {
            default_type text/event-stream;
            # \$(...) dropped the stream's closing blank line: the two newlines put it back.
            return 200 '$CHAT_STREAM

';
        }
        location = /v1/embeddings {
            default_type application/json;
            return 200 '$EMBEDDINGS';
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
        # Streams come from the same nginx under /stream/v1, as a custom provider.
        echo "STREAMUP_API_BASE=http://127.0.0.1:$NGINX_PORT/stream/v1"
        echo "MAX_CONCURRENT_REQUESTS_PER_KEY_STREAMUP=1000"
        for i in 1 2; do printf 'STREAMUP_API_KEY_%d=sk-bench-%08d\n' "$i" "$i"; done
        # The static upstream answers one vector whatever the input count, so embedding
        # requests are not gathered into one upstream call (LiteLLM does not gather them either).
        echo "EMBEDDING_BATCH_WINDOW_MS=0"
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


cpu_ticks() { # utime + stime of a process, in clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# --- checks before the load ----------------------------------------------------------------

# The request bodies, by kind of request (keyrelay's and LiteLLM's model names are
# "openai/...", "streamup/..."; nginx ignores the model).
body() { # kind
    case $1 in
    chat) echo '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' ;;
    stream) echo '{"model":"streamup/gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}' ;;
    embed) echo '{"model":"openai/text-embedding-3-small","input":"hi"}' ;;
    esac
}
path() { # kind: the path under the base URL
    case $1 in
    chat | stream) echo chat/completions ;;
    embed) echo embeddings ;;
    esac
}
expect() { # kind: what a good answer contains
    case $1 in
    chat) echo '"chat.completion"' ;;
    stream) echo 'data: \[DONE\]' ;;
    embed) echo '"embedding"' ;;
    esac
}

check_answers() { # name base-url [auth header]
    local kind out=$TMP/check.txt code
    for kind in "${KINDS[@]}"; do
        code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 60 -H 'content-type: application/json' ${3:+-H "$3"} \
            -d "$(body "$kind")" "$2/$(path "$kind")")
        if [ "$code" != 200 ] || ! grep -q "$(expect "$kind")" "$out"; then
            die "$1 POST /v1/$(path "$kind") ($kind) answered $code: $(head -c 500 "$out")"
        fi
    done
}

# --- load ----------------------------------------------------------------------------------

write_lua() { # file kind
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$(body "$2")'
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

declare -A RPS P50 P99 FAILED CPU

# run_wrk connections target url [script [seconds [tolerate-failures]]]: fills RPS, P50, P99
# and FAILED for "connections target". Failed requests end the bench, unless tolerated (LiteLLM:
# they are reported instead).
run_wrk() {
    local conns=$1 target=$2 url=$3 script=${4:-} seconds=${5:-$SECONDS_PER_RUN} tolerate=${6:-} threads=1 out
    [ "$conns" -eq 1 ] || threads=2
    out=$TMP/wrk-${target//\//-}-$conns.txt
    say "bench: $target, $conns connection(s), ${seconds}s"
    # In the background so that a signal to this script interrupts the wait (and cleanup stops wrk).
    wrk -t"$threads" -c"$conns" -d"${seconds}s" --timeout 10s --latency ${script:+-s "$script"} "$url" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || { cat "$out" >&2; die "wrk failed against $target"; }
    WRK_PID=
    local key="$conns $target"
    # Non-2xx answers, plus connect/read/write errors and timeouts.
    FAILED[$key]=$(awk '/Non-2xx or 3xx responses:/ { n += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i + 0 }
        END { print n + 0 }' "$out")
    if [ "${FAILED[$key]}" -gt 0 ] && [ -z "$tolerate" ]; then
        cat "$out" >&2
        die "$target at $conns connection(s): some requests failed (see wrk's output above)"
    fi
    RPS[$key]=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    if [[ ! ${RPS[$key]} =~ ^[0-9]+$ || ! ${P50[$key]} =~ ^[0-9.]+$ || ! ${P99[$key]} =~ ^[0-9.]+$ ]] ||
        [ "${RPS[$key]}" = 0 ]; then
        [ -n "$tolerate" ] || { cat "$out" >&2; die "$target at $conns connection(s): no requests completed, or wrk's output was not understood"; }
        RPS[$key]=0 P50[$key]=- P99[$key]=-
    fi
}

# keyrelay_load name conns kind: wrk through keyrelay instance `name`, with its CPU use.
keyrelay_load() {
    local name=$1 conns=$2 kind=$3 before after
    before=$(cpu_ticks "${PID[$name]}")
    run_wrk "$conns" "$kind/$name" "http://127.0.0.1:${PORT[$name]}/v1/$(path "$kind")" "$TMP/$kind.lua"
    after=$(cpu_ticks "${PID[$name]}")
    # CPU seconds keyrelay used per wall second of the run: 1.00 = one core busy throughout.
    CPU[$conns $kind/$name]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v s="$SECONDS_PER_RUN" \
        -v r="${RPS[$conns $kind/$name]}" \
        'BEGIN { printf "%.2f cores, %.0f us CPU/request", t / hz / s, t / hz / s / r * 1e6 }')
}

# --- LiteLLM's proxy -----------------------------------------------------------------------

# One worker, no database, no master key, the same two keys, the same upstream.
write_litellm_config() {
    local key model
    {
        echo "model_list:"
        for key in 1 2; do
            for model in "openai/gpt-4o-mini /v1" "streamup/gpt-4o-mini /stream/v1" \
                "openai/text-embedding-3-small /v1"; do
                set -- $model
                cat <<EOF
  - model_name: $1
    litellm_params:
      model: openai/${1#*/}
      api_base: http://127.0.0.1:$NGINX_PORT$2
      api_key: $(printf 'sk-bench-%08d' "$key")
EOF
            done
        done
        cat <<EOF
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  disable_spend_logs: true
  # keyrelay runs without PROXY_API_KEY too: neither checks a client key.
  dangerously_permit_weak_or_unset_master_key: true
EOF
    } >"$TMP/litellm.yaml"
}

# Starts LiteLLM's proxy and waits for its first answer (it takes seconds); sets LITELLM_PORT
# and LITELLM_START_S.
start_litellm() {
    write_litellm_config
    LITELLM_PORT=$(free_port)
    local started=$EPOCHREALTIME
    # Offline: the model cost map ships in the wheel; no proxy variables from the environment.
    env -i PATH="$VENV/bin:$PATH" HOME="$TMP" LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        "$VENV/bin/litellm" --config "$TMP/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
        --num_workers 1 >"$TMP/litellm.out" 2>&1 &
    LITELLM_PID=$!
    for _ in $(seq 1200); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 2>/dev/null; then
            LITELLM_START_S=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
            return
        fi
        kill -0 "$LITELLM_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 40 "$TMP/litellm.out" >&2
    die "LiteLLM's proxy did not start (its output is above)"
}

tree_rss_kb() { # pid: VmRSS of the process and its children, in kB
    local pid sum=0 kb
    for pid in $(descendants "$1"); do
        kb=$(status_kb "$pid" VmRSS 2>/dev/null || true)
        sum=$((sum + ${kb:-0}))
    done
    echo "$sum"
}

# --- start to first answered request ------------------------------------------------------

# python3 -c START_PY binary dir: spawn to the first 200 from GET /health (the port read from
# keyrelay's first line on stderr), the median of 5 starts, in ms.
START_PY='
import os, re, socket, statistics, subprocess, sys, time
binary, data_dir = sys.argv[1], sys.argv[2]
times = []
for _ in range(5):
    started = time.perf_counter()
    proc = subprocess.Popen([binary, "--dir", data_dir, "serve", "--port", "0"], stderr=subprocess.PIPE,
                            env={"PATH": os.environ["PATH"], "HOME": data_dir})
    port = int(re.search(rb":(\d+)\s*$", proc.stderr.readline()).group(1))
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := conn.recv(4096):
        answer += chunk
    times.append(time.perf_counter() - started)
    proc.terminate()
    proc.wait()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
print("%.1f" % (statistics.median(times) * 1000))
'

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
check_answers keyrelay "http://127.0.0.1:${PORT[keyrelay]}/v1"
check_answers keys5000 "http://127.0.0.1:${PORT[keys5000]}/v1"
INSTANCES=(keyrelay)
if [ -n "${BENCH_COMPARE:-}" ]; then
    [ -x "$BENCH_COMPARE" ] || die "BENCH_COMPARE=$BENCH_COMPARE is not an executable"
    start_keyrelay compare "$BENCH_COMPARE" 2
    check_answers compare "http://127.0.0.1:${PORT[compare]}/v1"
    INSTANCES+=(compare)
fi
mkdir -p "$TMP/data-start"
cp "$TMP/data-keyrelay/.env" "$TMP/data-start/"
say "bench: start to first answered request"
START_MS=$(python3 -c "$START_PY" "$KEYRELAY" "$TMP/data-start")
if [ "$WITH_LITELLM" != 0 ]; then
    say "bench: starting LiteLLM's proxy"
    start_litellm
    check_answers litellm "http://127.0.0.1:$LITELLM_PORT/v1"
    LITELLM_IDLE_RSS=$(tree_rss_kb "$LITELLM_PID")
    LITELLM_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')
fi

for kind in "${KINDS[@]}"; do write_lua "$TMP/$kind.lua" "$kind"; done
direct_url() { # kind
    case $1 in
    stream) echo "http://127.0.0.1:$NGINX_PORT/stream/v1/chat/completions" ;;
    *) echo "http://127.0.0.1:$NGINX_PORT/v1/$(path "$1")" ;;
    esac
}
CLK_TCK=$(getconf CLK_TCK)
for conns in "${CONNECTIONS[@]}"; do
    for kind in "${KINDS[@]}"; do
        run_wrk "$conns" "$kind/direct" "$(direct_url "$kind")" "$TMP/$kind.lua"
        for name in "${INSTANCES[@]}"; do keyrelay_load "$name" "$conns" "$kind"; done
        if [ "$WITH_LITELLM" != 0 ]; then
            run_wrk "$conns" "$kind/litellm" "http://127.0.0.1:$LITELLM_PORT/v1/$(path "$kind")" \
                "$TMP/$kind.lua" "$LITELLM_SECONDS" tolerate
        fi
    done
done
LOADED_RSS=$(status_kb "${PID[keyrelay]}" VmRSS)
PEAK_RSS=$(status_kb "${PID[keyrelay]}" VmHWM)
if [ "$WITH_LITELLM" != 0 ]; then
    LITELLM_LOADED_RSS=$(tree_rss_kb "$LITELLM_PID")
    stop_tree "$LITELLM_PID"
    LITELLM_PID=
fi
# 5,000 keys against 2, back to back under the same conditions (LiteLLM stopped by now).
keyrelay_load keys5000 32 chat
run_wrk 32 chat/keys2 "http://127.0.0.1:${PORT[keyrelay]}/v1/$(path chat)" "$TMP/chat.lua"
run_wrk 32 nginx-health "http://127.0.0.1:$NGINX_PORT/health"
run_wrk 32 health "http://127.0.0.1:${PORT[keyrelay]}/health"

# 500 idle keep-alive connections on the loaded instance.
IDLE_CONNS=500
BEFORE_IDLE=$(status_kb "${PID[keyrelay]}" VmRSS)
say "bench: $IDLE_CONNS idle keep-alive connections"
hold_clients "$IDLE_PY" "${PORT[keyrelay]}" "$IDLE_CONNS"
WITH_IDLE=$(status_kb "${PID[keyrelay]}" VmRSS)
IDLE_THREADS=$(status_kb "${PID[keyrelay]}" Threads)
# An ordinary request while they are held.
IDLE_REQUEST_MS=$(curl -sS -o /dev/null -w '%{time_total}' --max-time 10 -H 'content-type: application/json' \
    -d "$(body chat)" "http://127.0.0.1:${PORT[keyrelay]}/v1/chat/completions" | awk '{ printf "%.1f", $1 * 1000 }')
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
        -H 'content-type: application/json' -d "$(body chat)" \
        "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" 2>/dev/null || echo 10)
    HOSTILE_MS[$1]=$(awk -v s="$seconds" 'BEGIN { printf "%.1f", s * 1000 }')
    HOSTILE_PEAK[$1]=$(status_kb "${PID[$1]}" VmHWM)
    HOSTILE_THREADS[$1]=$(status_kb "${PID[$1]}" Threads)
    release_clients
}
hostile_run hostile "$KEYRELAY"
[ -z "${BENCH_COMPARE:-}" ] || hostile_run compare-hostile "$BENCH_COMPARE"

# --- report --------------------------------------------------------------------------------

ratio() { # a b: a/b, or - when either is missing or b is 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
added_us() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%+.0f", (a - b) * 1000 }'; }
verdict() { # "label" measured condition-in-awk
    local ok
    ok=$(awk -v m="$2" "BEGIN { print (m != \"-\" && ($3)) ? \"ok\" : \"MISSED\" }")
    printf '  %-70s %s\n' "$1: $2" "$ok"
}

echo
echo "keyrelay bench: ${SECONDS_PER_RUN}s per run (LiteLLM ${LITELLM_SECONDS}s), $(nproc) cores shared by wrk, nginx, keyrelay and LiteLLM"
echo "  chat: non-streaming chat completion; stream: the same answer streamed (7 SSE events); embed: embeddings"
echo
printf '%5s  %-17s  %9s  %9s  %9s  %7s\n' conns target 'req/s' 'p50 ms' 'p99 ms' failed
for conns in "${CONNECTIONS[@]}"; do
    for kind in "${KINDS[@]}"; do
        for name in direct "${INSTANCES[@]}" litellm; do
            key="$conns $kind/$name"
            [ -n "${RPS[$key]:-}" ] || continue
            printf '%5s  %-17s  %9s  %9s  %9s  %7s\n' "$conns" "$kind/$name" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${FAILED[$key]}"
        done
    done
done
for key in "32 chat/keys5000" "32 chat/keys2" "32 nginx-health" "32 health"; do
    printf '%5s  %-17s  %9s  %9s  %9s  %7s\n' ${key%% *} "${key#* }" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${FAILED[$key]}"
done
echo
echo "ratios (requests/s) and added p50 latency over direct:"
printf '%5s  %-7s  %-9s  %15s  %17s  %15s  %s\n' conns kind instance '/direct req/s' '/LiteLLM req/s' 'added p50 us' 'CPU'
for conns in "${CONNECTIONS[@]}"; do
    for kind in "${KINDS[@]}"; do
        for name in "${INSTANCES[@]}"; do
            printf '%5s  %-7s  %-9s  %15s  %17s  %15s  %s\n' "$conns" "$kind" "$name" \
                "$(ratio "${RPS[$conns $kind/$name]}" "${RPS[$conns $kind/direct]}")" \
                "$(ratio "${RPS[$conns $kind/$name]}" "${RPS[$conns $kind/litellm]:-}")" \
                "$(added_us "${P50[$conns $kind/$name]}" "${P50[$conns $kind/direct]}")" "${CPU[$conns $kind/$name]}"
        done
        [ -z "${RPS[$conns $kind/litellm]:-}" ] || printf '%5s  %-7s  %-9s  %15s  %17s  %15s\n' "$conns" "$kind" litellm \
            "$(ratio "${RPS[$conns $kind/litellm]}" "${RPS[$conns $kind/direct]}")" 1.00 \
            "$(added_us "${P50[$conns $kind/litellm]}" "${P50[$conns $kind/direct]}")"
    done
done
if [ "$WITH_LITELLM" != 0 ]; then
    for conns in "${CONNECTIONS[@]}"; do
        for kind in "${KINDS[@]}"; do
            if [ "${FAILED[$conns $kind/litellm]:-0}" -gt 0 ] || [ "${RPS[$conns $kind/litellm]}" = 0 ]; then
                echo "LiteLLM fell over at $conns connections ($kind): ${RPS[$conns $kind/litellm]} req/s," \
                    "${FAILED[$conns $kind/litellm]} failed requests (wrk: non-2xx, socket errors, 10 s timeouts)"
            fi
        done
    done
fi
echo
echo "keyrelay: start to first answered request ${START_MS} ms (median of 5); RSS idle $(mb "$IDLE_RSS") MB, after load $(mb "$LOADED_RSS") MB, peak $(mb "$PEAK_RSS") MB"
[ "$WITH_LITELLM" = 0 ] ||
    echo "LiteLLM proxy $LITELLM_VERSION: start to first answer ${LITELLM_START_S} s; RSS idle $(mb "$LITELLM_IDLE_RSS") MB, after load $(mb "$LITELLM_LOADED_RSS") MB"
echo "$IDLE_CONNS idle connections: $IDLE_THREADS threads, $(( (WITH_IDLE - BEFORE_IDLE) / IDLE_CONNS )) KiB each, an ordinary request meanwhile $IDLE_REQUEST_MS ms"
for name in hostile compare-hostile; do
    [ -n "${HOSTILE_MS[$name]:-}" ] || continue
    echo "64 hostile clients ($name): peak RSS $(mb "${HOSTILE_PEAK[$name]}") MB, ${HOSTILE_THREADS[$name]} threads, an ordinary request meanwhile ${HOSTILE_MS[$name]} ms (10000 = gave up)"
done
echo
echo "targets:"
verdict "added p50 at 1 connection, us (<= 100)" "$(added_us "${P50[1 chat/keyrelay]}" "${P50[1 chat/direct]}")" 'm <= 100'
verdict "added p50 at 1 connection, us (issue 13: < 50)" "$(added_us "${P50[1 chat/keyrelay]}" "${P50[1 chat/direct]}")" 'm < 50'
verdict "req/s at 32 connections, share of direct (>= 0.20)" "$(ratio "${RPS[32 chat/keyrelay]}" "${RPS[32 chat/direct]}")" 'm >= 0.20'
verdict "req/s at 32 connections, share of direct (issue 13: >= 0.40)" "$(ratio "${RPS[32 chat/keyrelay]}" "${RPS[32 chat/direct]}")" 'm >= 0.40'
[ "$WITH_LITELLM" = 0 ] ||
    verdict "req/s at 32 connections, times LiteLLM's (>= 200)" "$(ratio "${RPS[32 chat/keyrelay]}" "${RPS[32 chat/litellm]}")" 'm >= 200'
verdict "/health req/s, share of nginx's static answer (>= 0.5)" "$(ratio "${RPS[32 health]}" "${RPS[32 nginx-health]}")" 'm >= 0.5'
verdict "idle RSS, MB (< 10)" "$(mb "$IDLE_RSS")" 'm < 10'
verdict "start to first answered request, ms (< 50)" "$START_MS" 'm < 50'
verdict "5,000 keys vs 2 keys, req/s ratio (>= 0.90)" "$(ratio "${RPS[32 chat/keys5000]}" "${RPS[32 chat/keys2]}")" 'm >= 0.90'
verdict "threads with $IDLE_CONNS idle connections (<= connections + workers + 8)" "$IDLE_THREADS" "m <= $IDLE_CONNS + 64 + 8"
verdict "memory per idle connection, KiB (<= 64)" "$(( (WITH_IDLE - BEFORE_IDLE) / IDLE_CONNS ))" 'm <= 64'
verdict "peak RSS under 64 hostile clients, MB (<= 100)" "$(mb "${HOSTILE_PEAK[hostile]}")" 'm <= 100'
verdict "an ordinary request among them, ms (< 100)" "${HOSTILE_MS[hostile]}" 'm < 100'
