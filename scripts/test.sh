#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the official OpenAI and Anthropic
# Python SDKs and the Claude Code and Codex agents against a real keyrelay and a mock upstream.
# What CI runs (.ci/run) and what README.md gives.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/it/man.rs lints man/keyrelay.1 with groff when it is there; install it where we can.
command -v groff >/dev/null || { command -v apt-get >/dev/null &&
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq groff-base) >/dev/null 2>&1; } || true

# tests/it/redis_scale.rs runs a real redis-server (several instances sharing one key pool);
# without it those tests fail, so install it when missing (as root, or through sudo).
if ! command -v redis-server >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

cargo test --locked

# The SDK checks need the `openai` and `anthropic` packages (and `prometheus_client`, whose parser reads
# /metrics); it lives in a venv under target/ so the system
# Python stays untouched.
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check openai anthropic prometheus_client
cargo build --locked --quiet
"$venv/bin/python" scripts/sdk_check.py target/debug/keyrelay
"$venv/bin/python" scripts/sdk_native_check.py target/debug/keyrelay
# What a user runs after installing: one relayed request, status, a clean stop.
bash scripts/smoke.sh target/debug/keyrelay
# 50 concurrent streams for 3 s: every event arrives (the full run is 1,000 x 60 s).
STREAMS=50 STREAM_SECONDS=3 STREAM_MAX_P99_MS=1000 bash scripts/streams.sh target/debug/keyrelay
# Claude Code and Codex from npm, against the same binary and a mock upstream.
bash scripts/agents_check.sh target/debug/keyrelay
