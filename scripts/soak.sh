#!/usr/bin/env bash
# Soak: SOAK_MINUTES (30) of mixed traffic through a release build of keyrelay against a mock
# upstream that fails a fifth of its requests, with clients that drop some of theirs midway;
# then checks that nothing leaked or was lost. Exit status 1 when a check fails.
#
# The mock and the clients are Python asyncio processes (scripts/soak_load.py, uvloop when
# target/bench-venv has it). The mock answers chat completions, streams (10 events, 50 ms
# apart) and embeddings, and fails SOAK_FAILURE_RATE (0.2) of them in four equal parts: 429
# with Retry-After, 500, connection resets (mid-stream for streams) and stalls (silence until
# keyrelay's read timeout, 2 s here, gives up). SOAK_WORKERS (16) client loops send half chat,
# three tenths streams, a fifth embeddings; SOAK_DISCONNECT_RATE (0.1) of them are dropped
# by the client before the answer ends.
#
# Checks:
#   - RSS stays flat: keyrelay's RSS is sampled every 5 s; after the first tenth of the run
#     (warm-up), the median of the last third is within 10% or 4 MB of the first third's;
#   - no in-flight slot leaks: after the load, GET /v1/quota-stats shows 0 in flight;
#   - no key went over its limit: the most requests the mock ever had at once on one
#     (key, model) is at most MAX_CONCURRENT_REQUESTS_PER_KEY (2 here);
#   - nothing lost from key_usage.json: after a clean stop (SIGTERM), the requests counted in
#     the file plus keyrelay's same-key retries (keyrelay_retries_total in /metrics: a retry
#     shares its lease's one outcome) equal the requests the mock saw, and no key has more
#     in the file than the mock saw with it;
#   - keyrelay is alive and exits 0.
#
# Usage: scripts/soak.sh [KEYRELAY_BINARY]   (default: a release build, made first)
#   SOAK_MINUTES (30), SOAK_WORKERS (16), SOAK_FAILURE_RATE (0.2), SOAK_DISCONNECT_RATE (0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/measure_lib.sh
source scripts/measure_lib.sh

MINUTES=${SOAK_MINUTES:-30}
WORKERS=${SOAK_WORKERS:-16}
FAILURE_RATE=${SOAK_FAILURE_RATE:-0.2}
DISCONNECT_RATE=${SOAK_DISCONNECT_RATE:-0.1}
KEYS=8
PER_KEY=2
SAMPLE_EVERY=5
SOAK_SECONDS=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')


KEYRELAY=$(keyrelay_binary "${1:-}")
PYTHON=$(measuring_python)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyrelay-soak.XXXXXX")
PIDS=()
trap_cleanup


# The mock.
"$PYTHON" scripts/soak_load.py mock "$TMP/mock.port" "$FAILURE_RATE" 2>"$TMP/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
for _ in $(seq 200); do
    [ -s "$TMP/mock.port" ] && break
    kill -0 "$MOCK_PID" 2>/dev/null || break
    sleep 0.05
done
[ -s "$TMP/mock.port" ] || { cat "$TMP/mock.err" >&2; die "the mock did not start"; }
MOCK=http://127.0.0.1:$(cat "$TMP/mock.port")

# keyrelay, from an empty environment, with short upstream timeouts so stalls end quickly.
mkdir -p "$TMP/data"
{
    echo "OPENAI_API_BASE=$MOCK/v1"
    for i in $(seq "$KEYS"); do printf 'OPENAI_API_KEY_%d=sk-soak-%04d\n' "$i" "$i"; done
    echo "MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=$PER_KEY"
    echo "TIMEOUT_READ_NON_STREAMING=2"
    echo "TIMEOUT_READ_STREAMING=2"
    echo "GLOBAL_TIMEOUT=10"
    echo "KEYRELAY_LOG=warn"
} >"$TMP/data/.env"
env -i PATH="$PATH" HOME="$TMP" "$KEYRELAY" --dir "$TMP/data" serve --port 0 2>"$TMP/keyrelay.err" &
KEYRELAY_PID=$!
PIDS+=("$KEYRELAY_PID")
line=
for _ in $(seq 100); do
    line=$(head -n 1 "$TMP/keyrelay.err" 2>/dev/null || true)
    [ -z "$line" ] || break
    kill -0 "$KEYRELAY_PID" 2>/dev/null || break
    sleep 0.1
done
[[ $line =~ ^keyrelay\ listening\ on\ http://127\.0\.0\.1:([0-9]+)$ ]] ||
    { cat "$TMP/keyrelay.err" >&2; die "keyrelay did not start"; }
URL=http://127.0.0.1:${BASH_REMATCH[1]}

say "soak: ${MINUTES} min, $WORKERS client loops, upstream failure rate $FAILURE_RATE, client drop rate $DISCONNECT_RATE"
"$PYTHON" scripts/soak_load.py clients "$URL" "$SOAK_SECONDS" "$WORKERS" "$DISCONNECT_RATE" "$TMP/clients.json" \
    2>"$TMP/clients.err" &
CLIENTS_PID=$!
PIDS+=("$CLIENTS_PID")

# RSS every SAMPLE_EVERY seconds, while the clients run.
: >"$TMP/rss.txt"
deadline=$((SECONDS + SOAK_SECONDS + 120))
while kill -0 "$CLIENTS_PID" 2>/dev/null; do
    kill -0 "$KEYRELAY_PID" 2>/dev/null || die "keyrelay died during the soak: $(tail -n 20 "$TMP/keyrelay.err")"
    [ "$SECONDS" -lt "$deadline" ] || die "the clients did not finish in time"
    echo "$SECONDS $(status_kb "$KEYRELAY_PID" VmRSS) $(status_kb "$KEYRELAY_PID" Threads)" >>"$TMP/rss.txt"
    sleep "$SAMPLE_EVERY"
done
wait "$CLIENTS_PID" || { cat "$TMP/clients.err" >&2; die "the clients failed"; }

# In flight after the load: stalled upstream calls end within the read timeout, so poll a while.
in_flight=
for _ in $(seq 30); do
    in_flight=$(curl -fsS "$URL/v1/quota-stats" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["summary"]["in_flight"])' 2>/dev/null || echo "?")
    [ "$in_flight" != 0 ] || break
    sleep 1
done
curl -fsS "$URL/v1/quota-stats" >"$TMP/quota-stats.json" || true
curl -fsS "$MOCK/_stats" >"$TMP/mock-stats.json"
curl -fsS "$URL/metrics" >"$TMP/metrics.txt"
ALIVE=yes
kill -0 "$KEYRELAY_PID" 2>/dev/null || ALIVE=no
kill -TERM "$KEYRELAY_PID"
EXIT=0
wait "$KEYRELAY_PID" || EXIT=$?

"$PYTHON" - "$TMP" "$PER_KEY" "$SAMPLE_EVERY" "$SOAK_SECONDS" <<'EOF' >"$TMP/report.txt"
import json, statistics, sys
tmp, per_key, every, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
samples = [tuple(map(int, l.split())) for l in open(f"{tmp}/rss.txt") if len(l.split()) == 3]
warm = [s for s in samples if s[0] >= samples[0][0] + total / 10] or samples
third = max(1, len(warm) // 3)
first, last = statistics.median(s[1] for s in warm[:third]), statistics.median(s[1] for s in warm[-third:])
growth_kb = last - first
flat = growth_kb <= max(0.10 * first, 4096)
print(f"RSS (MB): min {min(s[1] for s in samples)/1024:.1f}, max {max(s[1] for s in samples)/1024:.1f}; "
      f"median of the first third after warm-up {first/1024:.1f}, of the last third {last/1024:.1f} "
      f"({len(samples)} samples); threads at most {max(s[2] for s in samples)}")
print("RSS over time (MB, one sample a minute): " + " ".join(f"{s[1]/1024:.1f}" for s in samples[::max(1, 60 // every)]))
mock = json.load(open(f"{tmp}/mock-stats.json"))
clients = json.load(open(f"{tmp}/clients.json"))
print(f"clients: {clients.get('sent', 0)} requests; " + ", ".join(f"{k}: {v}" for k, v in clients.items() if k != "sent"))
print(f"mock: {sum(mock['requests'].values())} requests; outcomes " + ", ".join(f"{k}: {v}" for k, v in sorted(mock["outcomes"].items())))
most = max(mock["max_concurrency"].values(), default=0)
print(f"most requests at once on one (key, model), seen by the mock: {most} (limit {per_key}); "
      + ", ".join(f"{k}: {v}" for k, v in sorted(mock["max_concurrency"].items())))
usage = json.load(open(f"{tmp}/data/key_usage.json"))
in_file = {}
for kid, record in usage["keys"].items():
    in_file[kid] = sum(m.get("today", {}).get("requests", 0) + m.get("lifetime", {}).get("requests", 0)
                       for m in record.get("models", {}).values())
seen = mock["requests"]
# A transient failure is retried once on the same key under the same lease, which reports one
# outcome: the file counts one request where the mock saw two. keyrelay counts those retries.
retries = sum(int(float(l.split()[-1])) for l in open(f"{tmp}/metrics.txt") if l.startswith("keyrelay_retries_total"))
over = {k: (in_file.get(k, 0), seen.get(k, 0)) for k in set(in_file) | set(seen) if in_file.get(k, 0) > seen.get(k, 0)}
lost = sum(seen.values()) - retries - sum(in_file.values())
for pair, n in sorted(mock["max_concurrency"].items()):
    if n > per_key:
        print(f"  over the limit on {pair}: the requests open together (start s, end s, outcome): {mock['peaks'][pair]}")
print(f"key_usage.json: {sum(in_file.values())} requests over {len(in_file)} keys; the mock saw {sum(seen.values())}, "
      f"of which {retries} same-key retries (keyrelay_retries_total); keys with more in the file than the mock saw: {over or 'none'}")
print(f"CHECK flat={int(flat)} growth_mb={growth_kb/1024:.1f} most={most} lost={abs(lost) + sum(a - b for a, b in over.values())}")
EOF

read -r _ FLAT GROWTH MOST LOST < <(sed -n 's/^CHECK flat=\([0-9]*\) growth_mb=\([-0-9.]*\) most=\([0-9]*\) lost=\([0-9]*\)$/x \1 \2 \3 \4/p' "$TMP/report.txt")
FAILED=0
verdict() { # label measured ok(0/1)
    local ok=ok
    [ "$3" = 1 ] || { ok=FAILED; FAILED=1; }
    printf '  %-66s %s\n' "$1: $2" "$ok"
}
echo
echo "keyrelay soak: ${MINUTES} min, $(nproc) cores shared with the mock and the clients"
grep -v '^CHECK ' "$TMP/report.txt"
echo
echo "checks:"
verdict "RSS growth, last third vs first third after warm-up, MB (flat)" "$GROWTH" "$FLAT"
verdict "in flight after the load (0)" "$in_flight" "$([ "$in_flight" = 0 ] && echo 1)"
verdict "most requests at once on one key and model (<= $PER_KEY)" "$MOST" "$([ "$MOST" -le "$PER_KEY" ] && echo 1)"
verdict "requests missing from (or extra in) key_usage.json (0)" "$LOST" "$([ "$LOST" = 0 ] && echo 1)"
verdict "keyrelay alive after the load, exit status on SIGTERM" "$ALIVE, $EXIT" "$([ "$ALIVE" = yes ] && [ "$EXIT" = 0 ] && echo 1)"
exit "$FAILED"
