#!/usr/bin/env bash
# A quick check that an installed keyrelay works on this host: it starts the server on a free
# loopback port with a temporary data directory, relays one chat completion to a local mock
# upstream (python3, standard library), checks /health, `status --json` and the shutdown, and
# cleans up. Nothing leaves the machine.
#
# Usage: scripts/smoke.sh [PATH/TO/keyrelay]   (default: keyrelay on PATH)
set -euo pipefail

KEYRELAY=${1:-$(command -v keyrelay || true)}
[ -n "$KEYRELAY" ] && [ -x "$KEYRELAY" ] || { echo "smoke: no keyrelay binary (give its path)" >&2; exit 2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "smoke: $tool is needed" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyrelay-smoke.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "smoke: FAIL $*" >&2; exit 1; }
ok() { echo "smoke: ok   $*"; }

# The mock upstream: every POST answers one fixed chat completion; its port goes to a file.
python3 - "$TMP/mock.port" <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "smoke-model",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "smoke ok"},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/mock.port" ] && break; sleep 0.1; done
[ -s "$TMP/mock.port" ] || fail "the mock upstream did not start"

mkdir -p "$TMP/data"
cat >"$TMP/data/.env" <<ENV
SMOKE_API_KEY=sk-smoke-0001
SMOKE_API_BASE=http://127.0.0.1:$(cat "$TMP/mock.port")/v1
PROXY_API_KEY=smoke-proxy-key
ENV
"$KEYRELAY" --version >/dev/null || fail "keyrelay --version"
ok "$("$KEYRELAY" --version)"

env -i PATH="$PATH" HOME="$TMP" "$KEYRELAY" --dir "$TMP/data" serve --port 0 2>"$TMP/serve.err" &
SERVER=$!
PIDS+=("$SERVER")
line=
for _ in $(seq 100); do
    line=$(head -n 1 "$TMP/serve.err" 2>/dev/null || true)
    [[ $line == "keyrelay listening on "* ]] && break
    sleep 0.1
done
[[ $line =~ ^keyrelay\ listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]] || fail "serve did not start: $(cat "$TMP/serve.err")"
URL=${BASH_REMATCH[1]}
ok "serve listening on $URL"

[ "$(curl -sS "$URL/health")" = '{"status":"ok"}' ] || fail "/health"
ok "/health"

answer=$(curl -sS -H 'authorization: Bearer smoke-proxy-key' -H 'content-type: application/json' \
    -d '{"model":"smoke/smoke-model","messages":[{"role":"user","content":"hi"}]}' "$URL/v1/chat/completions")
grep -Eq '"content": *"smoke ok"' <<<"$answer" || fail "chat completion through the proxy: $answer"
ok "chat completion relayed through the key pool"

status=$(env -i PATH="$PATH" HOME="$TMP" "$KEYRELAY" --dir "$TMP/data" status --json --url "$URL")
grep -q '"type":"summary"' <<<"$status" && grep -Eq '"requests": *1[,}]' <<<"$status" || fail "status --json: $status"
ok "status --json counts the request"

kill -TERM "$SERVER"
code=0
wait "$SERVER" || code=$?
[ "$code" -eq 0 ] || fail "serve exited $code on SIGTERM"
ok "SIGTERM: clean exit"
echo "smoke: all checks passed"
