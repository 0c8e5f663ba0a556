#!/usr/bin/env python3
"""The mock upstream and the request recorder of scripts/agents_check.sh (standard library only).

    agents_mock.py serve LOG [--answer TEXT]   mock upstream on 127.0.0.1, a free port
    agents_mock.py tap TARGET LOG              recording relay in front of TARGET (keyrelay)
    agents_mock.py show LOG[:N]...             what was recorded (from line N on), in time order
    agents_mock.py expect LOG --since N --family F [--path SUFFIX] [--cache-control REQLOG_DIR]

`serve` and `tap` print `listening on http://127.0.0.1:PORT` on stdout once they accept
connections, then run until killed. Every request they see is appended to LOG as one JSON line.

The mock speaks three upstream families, each under its own prefix, streaming and not:
- OpenAI: `{base}/openai/chat/completions`, `/responses` (and `/models`);
- Anthropic's Messages API: `{base}/anthropic/v1/messages`, `/messages/count_tokens`, `/models`;
- Gemini: `{base}/gemini/v1beta/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`.
It always answers with the text given by `--answer` (or $AGENTS_MOCK_ANSWER; `{family}` in it
becomes the family that answered), whatever tools the request offers: coding agents offer dozens,
and a tool call would start an agent loop.

The same port is also the agents' HTTP(S) proxy: a request for another host (CONNECT or an
absolute URI) is traffic that would have left the machine; it is recorded as an "escape" and
refused with 403.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sdk_harness import UpstreamReplies

DEFAULT_ANSWER = "Hello from the keyrelay agents mock ({family})."
IO_TIMEOUT = 60.0
USAGE_IN, USAGE_OUT = 21, 9
# Headers worth seeing in a report; every other header is left out, secrets are masked.
SHOWN_HEADERS = ("content-type", "anthropic-version", "anthropic-beta", "accept", "user-agent")
SECRET_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "content-length", "host"}


class Log:
    """Appends one JSON object per line; a lock keeps concurrent handlers' lines whole."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, entry: dict) -> None:
        entry.setdefault("time", time.time())
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def masked_headers(headers) -> dict:
    out = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in SECRET_HEADERS:
            out[lower] = "..." + value[-4:]
        elif lower in SHOWN_HEADERS:
            out[lower] = value
    return out


def cache_controls(value, path: str = "$") -> list[list]:
    """Every `cache_control` in a JSON value, as [json path, value] pairs, in document order."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "cache_control":
                found.append([f"{path}.{key}", item])
            else:
                found.extend(cache_controls(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(cache_controls(item, f"{path}[{i}]"))
    return found


# ---- the mock upstream ----------------------------------------------------------------------


class MockHandler(UpstreamReplies, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    disable_nagle_algorithm = True  # one write per event, no delayed-ACK stalls
    log: Log
    answer: str

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- plumbing

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def text(self) -> str:
        return self.answer.replace("{family}", self.family())

    def words(self) -> list[str]:
        """The answer in several deltas, as a real model streams it."""
        parts = self.text().split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]

    def record(self, family: str, body: dict | None, raw: bytes) -> None:
        body = body if isinstance(body, dict) else {}
        self.log.write({
            "kind": "upstream",
            "family": family,
            "method": self.command,
            "path": self.path,
            "headers": masked_headers(self.headers),
            "model": body.get("model"),
            "stream": bool(body.get("stream")) or "streamGenerateContent" in self.path,
            "tools": len(body.get("tools") or []),
            "fields": sorted(body),
            "cache_control": cache_controls(body),
            "bytes": len(raw),
        })

    # -- the proxy trap: nothing may leave the machine

    def escape(self) -> None:
        self.log.write({"kind": "escape", "method": self.command, "target": self.path,
                        "user_agent": self.headers.get("User-Agent")})
        self.send_json(403, {"error": "keyrelay agents check: no traffic may leave loopback"})
        self.close_connection = True

    def do_CONNECT(self) -> None:
        self.escape()

    # -- routing

    def do_GET(self) -> None:
        if self.path.startswith(("http://", "https://")):
            return self.escape()
        self.record(self.family(), None, b"")
        model = "mock-model"
        if self.path.startswith("/anthropic/") and self.path.split("?")[0].endswith("/models"):
            data = [{"type": "model", "id": model, "display_name": model,
                     "created_at": "2025-01-01T00:00:00Z"}]
            return self.send_json(200, {"data": data, "has_more": False, "first_id": model, "last_id": model})
        if self.path.startswith("/gemini/") and self.path.split("?")[0].endswith("/models"):
            return self.send_json(200, {"models": [{"name": f"models/{model}",
                                                   "supportedGenerationMethods": ["generateContent"]}]})
        if self.path.startswith("/openai/") and self.path.split("?")[0].endswith("/models"):
            return self.send_json(200, {"object": "list", "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "mock"}]})
        self.not_found()

    def do_POST(self) -> None:
        if self.path.startswith(("http://", "https://")):
            return self.escape()
        raw = self.read_body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.record(self.family(), body, raw)
        if not isinstance(body, dict):
            return self.send_json(400, {"error": {"message": "body is not a JSON object"}})
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/openai/") and path.endswith("/chat/completions"):
            return self.openai_chat(body)
        if path.startswith("/openai/") and path.endswith("/responses"):
            return self.openai_responses(body)
        if path.startswith("/anthropic/") and path.endswith("/messages/count_tokens"):
            return self.send_json(200, {"input_tokens": USAGE_IN})
        if path.startswith("/anthropic/") and path.endswith("/messages"):
            return self.anthropic_messages(body)
        if path.startswith("/gemini/") and path.endswith(":generateContent"):
            return self.send_json(200, self.gemini_chunk(self.text(), final=True))
        if path.startswith("/gemini/") and path.endswith(":streamGenerateContent"):
            words = self.words()
            chunks = [self.gemini_chunk(w, final=i == len(words) - 1) for i, w in enumerate(words)]
            return self.send_events([b"data: %s\r\n\r\n" % json.dumps(c).encode() for c in chunks])
        self.not_found()

    def family(self) -> str:
        for family in ("openai", "anthropic", "gemini"):
            if self.path.startswith(f"/{family}/"):
                return family
        return "unknown"

    def not_found(self) -> None:
        self.send_json(404, {"error": {"message": f"mock: no route for {self.command} {self.path}",
                                       "type": "invalid_request_error"}})

    # -- OpenAI chat completions

    def openai_chat(self, body: dict) -> None:
        model = body.get("model") or "mock-model"
        usage = {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                 "total_tokens": USAGE_IN + USAGE_OUT}
        base = {"id": "chatcmpl-agents-mock", "created": 1700000000, "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": self.text()}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            answer = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return self.send_json(200, answer)

        def chunk(delta: dict, finish: str | None = None) -> dict:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": w}) for w in self.words()]
        chunks.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        events = [b"data: %s\n\n" % json.dumps(c).encode() for c in chunks]
        self.send_events(events + [b"data: [DONE]\n\n"])

    # -- OpenAI Responses (what the `openai` provider passes through)

    def openai_responses(self, body: dict) -> None:
        model = body.get("model") or "mock-model"
        text = self.text()
        usage = {"input_tokens": USAGE_IN, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": USAGE_OUT, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": USAGE_IN + USAGE_OUT}
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {"id": "msg_agents_mock", "type": "message", "status": "completed", "role": "assistant",
                "content": [part]}
        response = {"id": "resp_agents_mock", "object": "response", "created_at": 1700000000,
                    "status": "completed", "model": model, "output": [item], "usage": usage,
                    "error": None, "incomplete_details": None}
        if not body.get("stream"):
            return self.send_json(200, response)
        events: list[bytes] = []

        def event(name: str, data: dict) -> None:
            data = {"type": name, "sequence_number": len(events), **data}
            events.append(b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps(data).encode()))

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        event("response.created", {"response": started})
        event("response.in_progress", {"response": started})
        event("response.output_item.added",
              {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}})
        event("response.content_part.added", {**where, "part": {**part, "text": ""}})
        for w in self.words():
            event("response.output_text.delta", {**where, "delta": w, "logprobs": []})
        event("response.output_text.done", {**where, "text": text, "logprobs": []})
        event("response.content_part.done", {**where, "part": part})
        event("response.output_item.done", {"output_index": 0, "item": item})
        event("response.completed", {"response": response})
        self.send_events(events)

    # -- Anthropic Messages

    def anthropic_messages(self, body: dict) -> None:
        model = body.get("model") or "mock-model"
        message = {"id": "msg_agents_mock", "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": self.text()}], "stop_reason": "end_turn",
                   "stop_sequence": None,
                   "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        if not body.get("stream"):
            return self.send_json(200, message)

        def event(name: str, data: dict) -> bytes:
            return b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps({"type": name, **data}).encode())

        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        events = [event("message_start", {"message": start}),
                  event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
                  event("ping", {})]
        events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
                   for w in self.words()]
        events += [event("content_block_stop", {"index": 0}),
                   event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                           "usage": {"output_tokens": USAGE_OUT}}),
                   event("message_stop", {})]
        self.send_events(events)

    # -- Gemini

    def gemini_chunk(self, text: str, final: bool) -> dict:
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        chunk = {"candidates": [candidate], "modelVersion": "mock-model", "responseId": "agents-mock"}
        if final:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = {"promptTokenCount": USAGE_IN, "candidatesTokenCount": USAGE_OUT,
                                      "totalTokenCount": USAGE_IN + USAGE_OUT}
        return chunk


# ---- the recording relay ---------------------------------------------------------------------


class TapHandler(BaseHTTPRequestHandler):
    """Relays every request to keyrelay unchanged and records the request and the answer, so a
    failed check can show what the agent sent and what the proxy said. The answer is streamed
    back as it arrives (close-delimited, which every HTTP/1.1 client reads)."""

    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    disable_nagle_algorithm = True
    log: Log
    target: urllib.parse.SplitResult
    KEEP = 6000  # bytes of each answer kept in the log

    def log_message(self, format: str, *args: object) -> None:
        pass

    def relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=IO_TIMEOUT)
        entry = {"kind": "tap", "time": time.time(), "method": self.command, "path": self.path,
                 "headers": masked_headers(self.headers)}
        try:
            entry["body"] = json.loads(raw) if raw else None
        except ValueError:
            entry["body"] = raw.decode("utf-8", "replace")
        try:
            conn.request(self.command, self.path, body=raw or None, headers=headers)
            resp = conn.getresponse()
            entry["status"] = resp.status
            entry["answer_headers"] = {k.lower(): v for k, v in resp.getheaders()
                                       if k.lower() in ("content-type", "retry-after")}
            self.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            kept = bytearray()
            while chunk := resp.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
                if len(kept) < self.KEEP:
                    kept += chunk[: self.KEEP - len(kept)]
            entry["answer"] = kept.decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
            self.close_connection = True
            self.log.write(entry)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = relay


# ---- reading the log -------------------------------------------------------------------------


def read_log(path: str, since: int) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[since:] if line.strip()]


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def body_summary(body) -> str:
    """The fields an agent's request carries, with the short ones' values."""
    if not isinstance(body, dict):
        return clip(json.dumps(body), 300)
    parts = []
    for key, value in body.items():
        if key in ("messages", "input", "tools", "system", "contents") and isinstance(value, list):
            roles = [m.get("role") or m.get("name") or m.get("type") for m in value if isinstance(m, dict)]
            parts.append(f"{key}=[{len(value)}: {', '.join(str(r) for r in roles[:12])}]")
        else:
            shown = json.dumps(value)
            parts.append(f"{key}={clip(shown, 120)}")
    return clip("; ".join(parts), 1500)


def collapse(entries: list[dict]) -> list[tuple[dict, int]]:
    """Consecutive exchanges that got the same answer to the same route, as one with a count
    (agents retry, each time with small changes)."""
    out: list[tuple[dict, int]] = []
    for e in entries:
        key = (e["kind"], e.get("method"), e.get("path"), e.get("status"), e.get("answer"),
               e.get("target"), e.get("stream"))
        if out and out[-1][0]["_key"] == key:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append(({**e, "_key": key}, 1))
    return out


def show(entries: list[dict]) -> None:
    for e, count in collapse(entries):
        if count > 1:
            print(f"  (the next exchange {count} times, the first one shown)")
        if e["kind"] == "tap":
            print(f"  agent -> keyrelay: {e['method']} {e['path']}  headers {json.dumps(e['headers'])}")
            print(f"    body: {body_summary(e.get('body'))}")
            if "error" in e:
                print(f"    keyrelay answer: none ({e['error']})")
            else:
                print(f"    keyrelay answer: {e['status']} {clip(e.get('answer', ''), 1200)}")
        elif e["kind"] == "upstream":
            print(f"  keyrelay -> mock: {e['method']} {e['path']} ({e['family']}, model {e['model']}, "
                  f"stream {e['stream']}, {e['tools']} tools, {len(e['cache_control'])} cache_control)")
        elif e["kind"] == "escape":
            print(f"  escape attempt: {e['method']} {e['target']} (user agent {e.get('user_agent')})")


def expect(entries: list[dict], family: str, suffix: str, reqlog_dir: str | None) -> str | None:
    """None when the agent's answer came from the `family` endpoints of the mock, one whose path
    ends with `suffix` (and, with `reqlog_dir`, every cache_control the client sent arrived
    unchanged); else why not."""
    escapes = [e for e in entries if e["kind"] == "escape"]
    if escapes:
        return f"traffic tried to leave loopback: {escapes[0]['method']} {escapes[0]['target']}"
    hits = [e for e in entries if e["kind"] == "upstream"]
    if not any(e["family"] == family and e["path"].split("?")[0].endswith(suffix) for e in hits):
        seen = ", ".join(f"{e['method']} {e['path']}" for e in hits) or "nothing"
        wanted = f"{family} endpoint ending in {suffix}" if suffix else f"{family} endpoints"
        return f"the mock's {wanted} got no request (it saw: {seen})"
    if reqlog_dir is None:
        return None
    return cache_control_intact([e for e in hits if e["family"] == family], reqlog_dir, family)


def cache_control_intact(hits: list[dict], reqlog_dir: str, family: str) -> str | None:
    """Compares the cache_control markers of what keyrelay received (its request log) with what
    reached the mock, request by request, for the requests on a `family/*` model that carried
    any."""
    sent = []
    for root, _dirs, files in os.walk(reqlog_dir):
        if "request.json" in files:
            with open(os.path.join(root, "request.json"), encoding="utf-8") as f:
                logged = json.load(f)
            body = logged.get("body")
            model = body.get("model") if isinstance(body, dict) else None
            markers = cache_controls(body)
            if markers and str(model).startswith(f"{family}/"):
                sent.append((root, markers))
    arrived = [e["cache_control"] for e in hits if e["path"].split("?")[0].endswith("/messages")]
    if not sent:
        return "the client sent no cache_control (nothing in keyrelay's request log to compare)"
    for root, markers in sent:
        if markers in arrived:
            continue
        best = max(arrived, key=len, default=[])
        return (f"cache_control not intact: client sent {json.dumps(markers)[:600]} "
                f"({os.path.basename(root)}), the mock got {json.dumps(best)[:600]}")
    return None


# ---- command line ------------------------------------------------------------------------------


def serve(handler: type[BaseHTTPRequestHandler]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("log")
    p.add_argument("--answer", default=os.environ.get("AGENTS_MOCK_ANSWER", DEFAULT_ANSWER))
    p = sub.add_parser("tap")
    p.add_argument("target")
    p.add_argument("log")
    p = sub.add_parser("show")
    p.add_argument("logs", nargs="+", metavar="LOG[:N]")
    p = sub.add_parser("expect")
    p.add_argument("log")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--family", required=True, choices=["openai", "anthropic", "gemini"])
    p.add_argument("--path", default="", metavar="SUFFIX")
    p.add_argument("--cache-control", metavar="REQLOG_DIR")
    args = parser.parse_args()

    if args.command == "serve":
        handler = type("Mock", (MockHandler,), {"log": Log(args.log), "answer": args.answer})
        serve(handler)
    elif args.command == "tap":
        target = urllib.parse.urlsplit(args.target)
        serve(type("Tap", (TapHandler,), {"log": Log(args.log), "target": target}))
    elif args.command == "show":
        entries = []
        for spec in args.logs:
            path, _, since = spec.rpartition(":") if spec.rpartition(":")[2].isdigit() else (spec, "", "0")
            entries += read_log(path, int(since))
        show(sorted(entries, key=lambda e: e["time"]))
    else:
        reason = expect(read_log(args.log, args.since), args.family, args.path, args.cache_control)
        if reason:
            print(reason)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
