# Shell functions the measuring scripts share (bench.sh, bench_redis.sh, streams.sh, soak.sh):
# sourced by them, not run.

say() { printf '%s\n' "$*" >&2; }
die() { # message: said with the script's name, then exit 1
    say "$(basename "$0" .sh): $*"
    exit 1
}

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

status_kb() { # pid field: a VmRSS/VmHWM-style line of /proc/PID/status, in kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

keyrelay_binary() { # [path]: the binary given, or a release build made now
    if [ -n "${1:-}" ]; then
        realpath "$1"
    else
        cargo build --release --locked --quiet
        echo "$PWD/target/release/keyrelay"
    fi
}

measuring_python() { # the Python for the load scripts: bench.sh's venv (with uvloop) when there
    if [ -x target/bench-venv/bin/python ]; then
        target/bench-venv/bin/python -c 'import uvloop' 2>/dev/null ||
            target/bench-venv/bin/python -m pip install -q uvloop >&2 || true
        echo target/bench-venv/bin/python
    else
        echo python3
    fi
}

find_nginx() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

install_missing() { # package...: apt-get install them (as root, or through sudo)
    [ $# -gt 0 ] || return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}

# For the scripts that keep their processes in PIDS and their files in TMP: stop every process,
# remove the files, and exit with the script's status; `trap_cleanup` installs it.
stop_all_and_exit() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    rm -rf "$TMP"
    exit "$status"
}

trap_cleanup() {
    trap stop_all_and_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
