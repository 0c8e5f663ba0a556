#!/usr/bin/env bash
# What sharing the key pool through Redis costs one instance: the same non-streaming chat
# load (wrk) through a release build of keyrelay with STATE_BACKEND=file and with
# STATE_BACKEND=redis+unix://... (a local redis-server), back to back in one run, at 1 and
# 32 connections; prints requests/s, p50 and p99 for each and the redis/file ratio.
# With Redis every request takes and gives back a lease (two round trips to Redis).
#
# The upstream is nginx answering every chat completion with the same JSON. Everything runs
# on loopback on one machine, so absolute numbers are noisy; compare the two backends.
#
# Usage: scripts/bench_redis.sh        BENCH_SECONDS: duration of each wrk run (default 10)
# Needs wrk, nginx (nginx-light), redis-server, curl; installs whichever is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/measure_lib.sh
source scripts/measure_lib.sh

SECONDS_PER_RUN=${BENCH_SECONDS:-10}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$(find_nginx)" ] || missing+=(nginx-light)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
install_missing "${missing[@]}"
NGINX=$(find_nginx)

cargo build --release --locked --quiet
KEYRELAY=$PWD/target/release/keyrelay

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyrelay-bench-redis.XXXXXX")
PIDS=()
cleanup() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT

# Waits (bounded) until a command succeeds.
until_ok() {
    for _ in $(seq 100); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# --- the upstream and Redis ------------------------------------------------------------------

ANSWER='{"id":"chatcmpl-1","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":10,"total_tokens":18}}'
NGINX_PORT=$((20000 + RANDOM % 12000))
user_line=
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
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /v1/chat/completions { default_type application/json; return 200 '$ANSWER'; }
        location / { return 404; }
    }
}
EOF
"$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >"$TMP/nginx.out" 2>&1 &
PIDS+=($!)
until_ok curl -fsS -X POST "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" || die "nginx did not start"

redis-server --port 0 --unixsocket "$TMP/redis.sock" --save '' --appendonly no --dir "$TMP" >"$TMP/redis.out" 2>&1 &
PIDS+=($!)
until_ok test -S "$TMP/redis.sock" || die "redis-server did not start"

# --- keyrelay with each backend --------------------------------------------------------------

# start_keyrelay name backend: sets STARTED_PORT (not a $(...) subshell, which would lose PIDS).
start_keyrelay() {
    local dir=$TMP/data-$1
    mkdir -p "$dir"
    printf 'OPENAI_API_BASE=http://127.0.0.1:%s/v1\nOPENAI_API_KEY_1=sk-bench-00000001\nOPENAI_API_KEY_2=sk-bench-00000002\nMAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=1000\nSTATE_BACKEND=%s\nKEYRELAY_LOG=warn\n' \
        "$NGINX_PORT" "$2" >"$dir/.env"
    env -i PATH="$PATH" HOME="$TMP" "$KEYRELAY" --dir "$dir" serve --port 0 2>"$TMP/$1.err" &
    PIDS+=($!)
    until_ok grep -q '^keyrelay listening' "$TMP/$1.err" || die "keyrelay ($1) did not start: $(cat "$TMP/$1.err")"
    STARTED_PORT=$(sed -n 's|^keyrelay listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$TMP/$1.err" | head -1)
}

start_keyrelay file file
FILE_PORT=$STARTED_PORT
start_keyrelay redis "redis+unix://$TMP/redis.sock"
REDIS_PORT=$STARTED_PORT

cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
wrk.headers["Content-Type"] = "application/json"
EOF

# measure port connections: "req/s p50_ms p99_ms"
measure() {
    local threads=1
    [ "$2" -lt 2 ] || threads=2
    wrk -t"$threads" -c"$2" -d"${SECONDS_PER_RUN}s" --latency -s "$TMP/post.lua" \
        "http://127.0.0.1:$1/v1/chat/completions" >"$TMP/wrk.out"
    grep -q 'Non-2xx' "$TMP/wrk.out" && die "non-2xx answers: $(cat "$TMP/wrk.out")"
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        $1 == "Requests/sec:" { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END { printf "%.0f %.2f %.2f\n", rps, p50, p99 }' "$TMP/wrk.out"
}

# Warm both up (connections to nginx and Redis).
measure "$FILE_PORT" 4 >/dev/null
measure "$REDIS_PORT" 4 >/dev/null

printf '%-12s %-6s %10s %9s %9s\n' backend conns 'req/s' 'p50 ms' 'p99 ms'
for conns in 1 32; do
    read -r f_rps f_p50 f_p99 < <(measure "$FILE_PORT" "$conns")
    read -r r_rps r_p50 r_p99 < <(measure "$REDIS_PORT" "$conns")
    printf '%-12s %-6s %10s %9s %9s\n' file "$conns" "$f_rps" "$f_p50" "$f_p99"
    printf '%-12s %-6s %10s %9s %9s\n' redis "$conns" "$r_rps" "$r_p50" "$r_p99"
    awk -v r="$r_rps" -v f="$f_rps" -v c="$conns" 'BEGIN { printf "redis/file requests/s at %s connections: %.2f\n", c, r / f }'
done
curl -fsS "http://127.0.0.1:$REDIS_PORT/metrics" | grep '^keyrelay_state_backend' || die "no state backend metrics"
