#!/usr/bin/env bash
# Checks man/keyrelay.1 with groff: any warning (groff still exits 0 on warnings) fails.
# tests/it/man.rs runs the same check under `cargo test`. Preview the page: man -l man/keyrelay.1
set -euo pipefail
cd "$(dirname "$0")/.."

command -v groff >/dev/null || {
    echo "lint-man: groff is not installed (apt-get install groff-base)" >&2
    exit 2
}
warnings=$(LC_ALL=C groff -man -ww -z man/keyrelay.1 2>&1 >/dev/null)
if [ -n "$warnings" ]; then
    printf 'lint-man: groff -man -ww -z man/keyrelay.1:\n%s\n' "$warnings" >&2
    exit 1
fi
