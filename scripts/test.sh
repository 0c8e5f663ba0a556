#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the official OpenAI Python SDK
# against a real keyrelay and a mock upstream. What CI runs (.ci/run) and what README.md gives.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked

# The SDK check needs the `openai` package; it lives in a venv under target/ so the system
# Python stays untouched.
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check openai
cargo build --locked --quiet
"$venv/bin/python" scripts/sdk_check.py target/debug/keyrelay
