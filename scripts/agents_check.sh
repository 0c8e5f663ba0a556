#!/usr/bin/env bash
# Proves the two coding agents users run most work unchanged through keyrelay: Claude Code
# (`claude -p`) and OpenAI Codex (`codex exec`), installed from npm at the versions pinned below,
# against a keyrelay in front of a mock upstream (scripts/agents_mock.py). Everything stays on
# 127.0.0.1: the agents' telemetry, update checks and other non-essential traffic are switched off,
# their HTTP(S) proxy is the mock, which records and refuses anything bound elsewhere, and HOME and
# CODEX_HOME are temporary directories.
#
# Usage: scripts/agents_check.sh [PATH/TO/keyrelay]     (default target/debug/keyrelay)
# Prints `ok  <check>: <the agent's answer>` or `FAIL <check>: <why>` per check, followed on a
# failure by the HTTP exchanges of that check (the agent's request, keyrelay's answer, what reached
# the mock); exits 0 only if every check passed.
#
# The agents are installed under target/agents/ and kept there; the install is skipped while the
# pinned versions are in place. Bump the pins on purpose, after checking what npm has
# (`npm view @anthropic-ai/claude-code versions --json`), and run this script.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

CLAUDE_CODE_VERSION=2.1.332
CODEX_VERSION=0.171.0
# Seconds one agent run may take; a mock answers at once, so only a hang gets near it.
AGENT_TIMEOUT=${AGENTS_CHECK_TIMEOUT:-120}
PROXY_KEY=agents-check-proxy-key
MODEL=mock-model

keyrelay=${1:-target/debug/keyrelay}
prefix=$repo/target/agents
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok  $1: $2"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: ${*:2}"; }

# ---- prerequisites and the install ----------------------------------------------------------

for tool in node npm python3 timeout; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL prerequisites: '$tool' is not installed (the agents come from npm and run on node)"
        exit 1
    fi
done
if [ ! -x "$keyrelay" ]; then
    echo "FAIL prerequisites: no keyrelay binary at $keyrelay (run cargo build, or pass its path)"
    exit 1
fi
keyrelay=$(cd "$(dirname "$keyrelay")" && pwd)/$(basename "$keyrelay")

work=$(mktemp -d "${TMPDIR:-/tmp}/keyrelay-agents.XXXXXX")
mock_log=$work/mock.jsonl
: >"$mock_log"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${AGENTS_CHECK_KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE # so that cleanup runs

claude_bin=$prefix/node_modules/.bin/claude
codex_bin=$prefix/node_modules/.bin/codex

installed_version() { # package -> its version under target/agents, or nothing
    node -e 'try { console.log(require(process.argv[1]).version) } catch {}' \
        "$prefix/node_modules/$1/package.json" 2>/dev/null
}

# Even `--version` may write to the agents' home directories: give them temporary ones.
version_env=(env -i PATH="$PATH" HOME="$work/version" CODEX_HOME="$work/version/.codex")

installed() {
    mkdir -p "$work/version/.codex"
    [ "$(installed_version @anthropic-ai/claude-code)" = "$CLAUDE_CODE_VERSION" ] &&
        [ "$(installed_version @openai/codex)" = "$CODEX_VERSION" ] &&
        "${version_env[@]}" "$claude_bin" --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION " &&
        "${version_env[@]}" "$codex_bin" --version 2>/dev/null | grep -q " $CODEX_VERSION\$"
}

install_agents() {
    mkdir -p "$prefix"
    [ -f "$prefix/package.json" ] || echo '{"private": true}' >"$prefix/package.json"
    # Claude Code's native binary comes from its platform package, one of the npm package's
    # optional dependencies, copied into place by its postinstall script: from npm, no other
    # download. Codex's npm package ships its binary the same way.
    npm install --prefix "$prefix" --no-audit --no-fund --no-save --include=optional --loglevel=error \
        "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" "@openai/codex@$CODEX_VERSION" || return 1
    # An npm that skips install scripts leaves Claude Code's placeholder in place: run the
    # package's own postinstall, which takes the binary from the installed platform package.
    if ! "${version_env[@]}" "$claude_bin" --version >/dev/null 2>&1; then
        (cd "$prefix/node_modules/@anthropic-ai/claude-code" && node install.cjs) || return 1
    fi
}

if installed; then
    ok "agents installed" "claude $CLAUDE_CODE_VERSION and codex $CODEX_VERSION already in target/agents"
elif install_agents && installed; then
    ok "agents installed" "claude $CLAUDE_CODE_VERSION and codex $CODEX_VERSION from npm into target/agents"
else
    fail "agents installed" "npm could not install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" \
        "and @openai/codex@$CODEX_VERSION into target/agents"
    exit 1
fi

# ---- mock upstream and keyrelay -------------------------------------------------------------

# start_server NAME COMMAND...: runs the command in the background, waits (blocking on its
# output, no polling) for its `listening on http://127.0.0.1:PORT` line, keeps draining its output
# into $work/NAME.out, and sets $port.
start_server() {
    local name=$1 line fd
    shift
    exec {fd}< <(exec "$@" 2>&1)
    pids+=($!)
    port=
    while IFS= read -r -t 15 -u "$fd" line; do
        echo "$line" >>"$work/$name.out"
        if [[ $line =~ listening\ on\ http://127\.0\.0\.1:([0-9]+) ]]; then
            port=${BASH_REMATCH[1]}
            break
        fi
    done
    # The rest of its output goes to the file, so a full pipe can never block it.
    cat <&"$fd" >>"$work/$name.out" &
    pids+=($!)
    exec {fd}<&-
    [ -n "$port" ]
}

if ! start_server mock python3 scripts/agents_mock.py serve "$mock_log"; then
    fail "mock upstream start-up" "$(tail -5 "$work/mock.out" 2>/dev/null)"
    exit 1
fi
mock=http://127.0.0.1:$port

# keyrelay's data directory: one custom OpenAI-compatible provider `mock`, and the built-in
# `openai`, `anthropic` and `gemini` providers, all pointed at the mock. DEFAULT_PROVIDER takes
# the bare claude-* names Claude Code sends when no model is set. Request logging gives the client's exact
# body, which the cache_control check compares with what reached the mock.
mkdir -p "$work/keyrelay"
cat >"$work/keyrelay/.env" <<EOF
PROXY_API_KEY=$PROXY_KEY
MOCK_API_BASE=$mock/openai
MOCK_API_KEY=sk-mock-openai-0001
OPENAI_API_BASE=$mock/openai
OPENAI_API_KEY=sk-openai-mock-0001
ANTHROPIC_API_BASE=$mock/anthropic/v1
ANTHROPIC_API_KEY=sk-ant-mock-0001
GEMINI_API_BASE=$mock/gemini/v1beta
GEMINI_API_KEY=gemini-mock-0001
DEFAULT_PROVIDER=anthropic
EOF
# A clean environment and a temporary HOME: real provider keys, bases and OAuth variables would win
# over the .env file, and OAuth credentials under ~/.gemini and the like would be imported.
if ! start_server keyrelay env -i PATH="$PATH" HOME="$work/keyrelay-home" SKIP_OAUTH_INIT_CHECK=true \
    "$keyrelay" --dir "$work/keyrelay" serve --port 0 --enable-request-logging; then
    fail "keyrelay start-up" "$(tail -5 "$work/keyrelay.out" 2>/dev/null)"
    exit 1
fi
proxy=http://127.0.0.1:$port
ok "keyrelay start-up" "listening on $proxy, mock upstream on $mock"

# ---- the agents' environment ------------------------------------------------------------------

# A clean environment (nothing of the caller's reaches the agents: no real keys, no settings),
# with every switch that keeps them off the network apart from the proxy, and the mock as their
# HTTP(S) proxy for anything not on loopback.
base_env=(
    PATH="$PATH" TERM=dumb LANG=C.UTF-8 NO_COLOR=1 DO_NOT_TRACK=1
    HTTP_PROXY="$mock" HTTPS_PROXY="$mock" ALL_PROXY="$mock"
    http_proxy="$mock" https_proxy="$mock" all_proxy="$mock"
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
)

claude_env=(
    ANTHROPIC_API_KEY="$PROXY_KEY"
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
    DISABLE_AUTOUPDATER=1
    DISABLE_UPDATES=1
    DISABLE_TELEMETRY=1
    DISABLE_ERROR_REPORTING=1
    DISABLE_INSTALLATION_CHECKS=1
    DISABLE_GROWTHBOOK=1
    CLAUDE_CODE_DISABLE_FEATURE_FLAGS=1
    CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL=1
    CLAUDE_CODE_ENABLE_TELEMETRY=0
    # One retry: a failure should show at once, not after minutes of back-off.
    CLAUDE_CODE_MAX_RETRIES=1
)

# claude_models MODEL -> the variables that send every request of Claude Code (the main model,
# and the small fast one it uses for side tasks) to MODEL.
claude_models() {
    echo "ANTHROPIC_MODEL=$1" "ANTHROPIC_SMALL_FAST_MODEL=$1" "ANTHROPIC_DEFAULT_HAIKU_MODEL=$1" \
        "ANTHROPIC_DEFAULT_SONNET_MODEL=$1" "ANTHROPIC_DEFAULT_OPUS_MODEL=$1"
}

# Codex reads its settings from $CODEX_HOME/config.toml: keyrelay as a model provider speaking
# the Responses API, its key in an environment variable, nothing else enabled that talks to the
# network.
codex_home() { # DIR BASE_URL
    mkdir -p "$1"
    cat >"$1/config.toml" <<EOF
model_provider = "keyrelay"
check_for_update_on_startup = false
web_search = "disabled"

[model_providers.keyrelay]
name = "keyrelay"
base_url = "$2/v1"
env_key = "KEYRELAY_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

# The plugin marketplace and apps are synced from GitHub and OpenAI at start-up.
[features]
plugins = false
remote_plugin = false
apps = false
in_app_updates = false
EOF
}

# ---- running one check -------------------------------------------------------------------------

# run_agent NAME BASE_URL AGENT [VAR=VALUE...] [ARGS...]: one agent run, with those variables, in
# fresh HOME and project directories; its stdout in $work/NAME.stdout, both streams in
# $work/NAME.log; returns the agent's status.
run_agent() {
    local name=$1 base=$2 agent=$3
    shift 3
    local home=$work/$name/home project=$work/$name/project agent_env=(HOME="$work/$name/home")
    rm -rf "$work/$name"
    mkdir -p "$home" "$project"
    while [[ ${1:-} =~ ^[A-Z_]+= ]]; do
        agent_env+=("$1")
        shift
    done
    if [ "$agent" = claude ]; then
        agent_env+=("${claude_env[@]}" ANTHROPIC_BASE_URL="$base")
        set -- "$claude_bin" -p "say hello" "$@"
    else
        codex_home "$home/.codex" "$base"
        agent_env+=(CODEX_HOME="$home/.codex" KEYRELAY_API_KEY="$PROXY_KEY")
        # --strict-config: a key a newer Codex renamed fails the check instead of being ignored
        # (and whatever it switched off switched on again).
        set -- "$codex_bin" exec --strict-config --skip-git-repo-check --ephemeral --sandbox read-only \
            --color never "$@" "say hello"
    fi
    (cd "$project" && timeout "$AGENT_TIMEOUT" env -i "${base_env[@]}" "${agent_env[@]}" "$@" \
        </dev/null >"$work/$name.stdout" 2>"$work/$name.stderr")
    local status=$?
    cat "$work/$name.stdout" "$work/$name.stderr" >"$work/$name.log"
    return $status
}

# agent_error LOG: the agent's own words about what went wrong (its error lines, else its last
# lines), on one line.
agent_error() {
    { grep -E 'API Error|ERROR|[Ee]rror:|issue with' "$1" || tail -n 3 "$1"; } |
        sort -u | head -n 3 | tr '\n' ' ' | cut -c1-600
}

# check NAME FAMILY [--cache-control] [--path SUFFIX] AGENT [VAR=VALUE...] [ARGS...]: runs the
# agent against keyrelay and passes when it exits 0, prints the mock's answer for FAMILY, the
# request reached the mock's FAMILY endpoints (one whose path ends with SUFFIX), nothing tried to
# leave loopback, and with --cache-control every cache_control the agent sent reached the mock
# unchanged. A failure is run once more through a recording relay (agents_mock.py tap) to show
# the exchanges.
check() {
    local name=$1 family=$2 expect_args=()
    shift 2
    while [[ $1 == --* ]]; do
        case $1 in
        --cache-control) expect_args+=(--cache-control "$work/keyrelay/logs/detailed_logs") ;;
        --path) expect_args+=(--path "$2") && shift ;;
        esac
        shift
    done
    local id=check$((passed + failed + 1)) since status reason= answer
    since=$(wc -l <"$mock_log" 2>/dev/null || echo 0)
    local expected="Hello from the keyrelay agents mock ($family)."
    if [ -n "${AGENTS_MOCK_ANSWER:-}" ]; then expected=${AGENTS_MOCK_ANSWER//\{family\}/$family}; fi

    run_agent "$id" "$proxy" "$@"
    status=$?
    answer=$(grep -F -- "$expected" "$work/$id.stdout" | head -1)
    if [ $status -eq 124 ]; then
        reason="no answer within ${AGENT_TIMEOUT}s"
    elif [ $status -ne 0 ]; then
        reason="exit status $status: $(agent_error "$work/$id.log")"
    elif [ -z "$answer" ]; then
        reason="the mock's answer is not in the output: $(agent_error "$work/$id.log")"
    else
        reason=$(python3 scripts/agents_mock.py expect "$mock_log" --since "$since" --family "$family" \
            "${expect_args[@]}")
    fi
    if [ -z "$reason" ]; then
        ok "$name" "$answer"
        return
    fi
    fail "$name" "$reason"
    diagnose "$id" "$@"
}

# diagnose ID AGENT ARGS...: the failed run again, through a recording relay in front of
# keyrelay, with its exchanges and the agent's output printed under the FAIL line.
diagnose() {
    local id=$1
    shift
    local tap_log=$work/$id.tap.jsonl since
    since=$(wc -l <"$mock_log" 2>/dev/null || echo 0)
    if ! start_server "$id-tap" python3 scripts/agents_mock.py tap "$proxy" "$tap_log"; then
        echo "    (the recording relay did not start)"
        return
    fi
    local tap_pid=${pids[-2]}
    run_agent "$id-again" "http://127.0.0.1:$port" "$@" >/dev/null
    kill "$tap_pid" 2>/dev/null
    echo "    what the agent sent and what keyrelay answered (a second run through a recording relay):"
    python3 scripts/agents_mock.py show "$tap_log" "$mock_log:$since" | sed 's/^/  /'
    echo "    the agent's output in the first run (last lines):"
    tail -n 8 "$work/$id.log" | sed 's/^/      /'
}

# ---- the checks ---------------------------------------------------------------------------------

check "claude -p on mock/$MODEL (OpenAI-compatible)" openai \
    claude $(claude_models "mock/$MODEL")
check "claude -p on anthropic/$MODEL (cache_control intact)" anthropic --cache-control \
    claude $(claude_models "anthropic/$MODEL")
check "claude -p on gemini/$MODEL" gemini \
    claude $(claude_models "gemini/$MODEL")
check "claude -p with no model and DEFAULT_PROVIDER=anthropic" anthropic \
    claude
check "codex exec on mock/$MODEL (OpenAI-compatible)" openai --path /chat/completions \
    codex -m "mock/$MODEL"
check "codex exec on anthropic/$MODEL" anthropic \
    codex -m "anthropic/$MODEL"
check "codex exec on openai/$MODEL (Responses pass-through)" openai --path /responses \
    codex -m "openai/$MODEL"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
