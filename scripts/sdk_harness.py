"""What the SDK check scripts share: running keyrelay as a process against a temporary data
directory with a clean environment, counting checks, and the chunks an OpenAI-compatible mock
streams. Imported by sdk_check.py and
sdk_native_check.py (Python puts the script's own folder on sys.path)."""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

STARTUP_TIMEOUT = 10.0
IO_TIMEOUT = 10.0

PROXY_VARS = re.compile(r"^(HTTPS?|ALL|NO)_PROXY$", re.I)
PROVIDER_VARS = re.compile(r"_API_KEY(_\d+)?$|_API_BASE$", re.I)


def drop_proxy_settings() -> None:
    """Everything here talks to 127.0.0.1 directly: the SDKs' HTTP clients would otherwise send
    their requests through a proxy named in the environment."""
    for name in [n for n in os.environ if PROXY_VARS.search(n)]:
        del os.environ[name]


def keyrelay_env() -> dict[str, str]:
    """The environment without real provider keys and bases (the process environment wins over
    `.env`, so they would replace the mocks')."""
    env = {k: v for k, v in os.environ.items() if not PROVIDER_VARS.search(k)}
    env.pop("KEYRELAY_DIR", None)
    return env


# The one tool every SDK check offers: its JSON schema, strict (the openai SDK's stream helper
# accepts only strict function tools).
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}


class UpstreamReplies:
    """What every mock upstream's request handler answers with (mixed into a
    `BaseHTTPRequestHandler`): a JSON body, or an event stream written the way real upstreams
    write one, chunked, one SSE event per chunk, each flushed."""

    def send_json(self, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_events(self, events: list[bytes], content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Keyrelay:
    """A running `keyrelay serve --port 0`; its stderr is drained by a thread for good, so the
    pipe never fills however much it logs."""

    LISTENING = re.compile(r"keyrelay listening on http://127\.0\.0\.1:(\d+)\s*$")

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._listening = threading.Event()  # once set, lines are no longer queued
        self.proc = subprocess.Popen(
            [binary, "--dir", str(data_dir), "serve", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=keyrelay_env(),
            text=True,
            errors="replace",
        )
        self._drainer = threading.Thread(target=self._drain, name="keyrelay-stderr", daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))
            if not self._listening.is_set():
                self._lines.put(line)
        self._lines.put(None)  # end of stderr: the process exited

    def wait_port(self) -> int:
        """The port from the `keyrelay listening on ...` line; earlier lines (warnings) are
        skipped."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise RuntimeError(f"no 'keyrelay listening' line within {STARTUP_TIMEOUT:.0f} s")
            if line is None:
                code = self.proc.wait(timeout=IO_TIMEOUT)
                raise RuntimeError(f"keyrelay exited with status {code} before listening")
            match = self.LISTENING.search(line)
            if match:
                self._listening.set()
                return int(match.group(1))

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time. Safe to call twice. Returns the
        exit status, None when it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=IO_TIMEOUT)
                return None
        self._drainer.join(timeout=IO_TIMEOUT)
        return self.proc.returncode

    def expect_clean_stop(self) -> None:
        code = self.stop()
        assert code is not None, f"still running {IO_TIMEOUT:.0f} s after SIGTERM, killed"
        assert code == 0, f"exit status {code} after SIGTERM"


def describe(e: BaseException) -> str:
    if isinstance(e, AssertionError) and str(e):
        return str(e)
    return f"{type(e).__name__}: {e}"


class Tally:
    """Prints one line per check and counts them."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        print(f"ok  {name}", flush=True)

    def fail(self, name: str, reason: str) -> None:
        self.failed += 1
        print(f"FAIL {name}: {reason}", flush=True)

    def run(self, name: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as e:
            self.fail(name, describe(e))
            if os.environ.get("SDK_CHECK_VERBOSE"):
                traceback.print_exc()
        else:
            self.ok(name)


def run_against_keyrelay(binary: str, data_dir: Path, tally: Tally, run_checks: Callable[[int], None]) -> None:
    """Starts keyrelay on `data_dir`, runs `run_checks(port)`, checks the clean exit after
    SIGTERM, and on any failure prints the end of keyrelay's stderr."""
    keyrelay: Keyrelay | None = None
    try:
        try:
            keyrelay = Keyrelay(binary, data_dir)
            port = keyrelay.wait_port()
        except Exception as e:
            tally.fail("keyrelay start-up", describe(e))
            return
        tally.ok("keyrelay start-up")
        run_checks(port)
        # Scripts and supervisors rely on a clean exit after SIGTERM.
        tally.run("keyrelay exits 0 on SIGTERM", keyrelay.expect_clean_stop)
    finally:
        if keyrelay is not None:
            keyrelay.stop()
            if tally.failed:
                print("--- keyrelay stderr (last lines) ---", file=sys.stderr)
                print("\n".join(keyrelay.stderr_tail), file=sys.stderr, flush=True)


# ---- OpenAI-format stream chunks, as a mock upstream sends them -------------------------------


def openai_chunk(model: str, choices: list, usage: dict | None = None) -> dict:
    body = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def delta_choice(delta: dict, finish_reason: str | None = None) -> dict:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def openai_text_chunks(model: str, parts: list[str]) -> list[dict]:
    chunks = [openai_chunk(model, [delta_choice({"role": "assistant", "content": ""})])]
    chunks += [openai_chunk(model, [delta_choice({"content": part})]) for part in parts]
    chunks.append(openai_chunk(model, [delta_choice({}, "stop")]))
    return chunks


def openai_tool_chunks(model: str, call_id: str, name: str, fragments: list[str]) -> list[dict]:
    """As OpenAI sends them: id, type and name in the first fragment only, then argument pieces
    keyed by the tool call's index."""
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    delta = {"role": "assistant", "content": None, "tool_calls": [first]}
    chunks = [openai_chunk(model, [delta_choice(delta)])]
    for fragment in fragments:
        piece = {"index": 0, "function": {"arguments": fragment}}
        chunks.append(openai_chunk(model, [delta_choice({"tool_calls": [piece]})]))
    chunks.append(openai_chunk(model, [delta_choice({}, "tool_calls")]))
    return chunks
