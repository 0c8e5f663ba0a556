#!/usr/bin/env python3
"""Proves the official `openai` and `anthropic` Python SDKs work unchanged against keyrelay when
the requests cross protocols.

Usage: sdk_native_check.py PATH/TO/keyrelay

Starts six mock upstreams (standard library only) that speak the providers' own wire formats:
an Anthropic Messages API, a Gemini (Generative Language v1beta) API, an OpenAI-compatible API,
Google Vertex AI (with a token endpoint for the repository's test-only service account), Azure
OpenAI's deployments API, and AWS Bedrock Runtime's Converse API (which checks every call's SigV4
signature itself and streams in the binary event-stream framing, CRC32s by binascii.crc32).
Then a keyrelay whose providers point at them, and checks:

- the `openai` SDK against `anthropic/claude-mock`, `gemini/gemini-mock`, `vertex/gemini-mock`,
  `vertex/claude-mock`, `bedrock/anthropic.claude-mock-v1:0` and `azure/gpt-mock-deploy` (chat
  plain and streaming, usage, the stream helper with a tool; embeddings for Gemini, Vertex and
  Azure), which keyrelay translates to Messages, generateContent, rawPredict and Converse requests
  or sends to Azure's URLs with its `api-key` header;
- the `anthropic` SDK through `/v1/messages` to `vertex/claude-mock`, `bedrock/...` and
  `azure/...` (create, stream, tools), translated through the hub;
- the `anthropic` SDK against `openai/gpt-mock` through keyrelay's `/v1/messages` (create, stream,
  tools, the proxy key as Bearer and as x-api-key, count_tokens and the Anthropic error shape),
  which keyrelay translates to Chat Completions;
- the `anthropic` SDK against `anthropic/claude-mock` (create, stream, count_tokens), which
  keyrelay passes through to the Anthropic mock with `cache_control` and betas intact.

Prints `ok  <name>` or `FAIL <name>: reason` per check and `N passed, M failed` last; exits 0 only
if all passed. SDK_CHECK_VERBOSE=1 adds a traceback to each failure.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import struct
import re
import sys
import tempfile
import threading
import traceback
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

import anthropic
import openai
from sdk_harness import (
    IO_TIMEOUT,
    Tally,
    UpstreamReplies,
    WEATHER_PARAMETERS,
    describe,
    drop_proxy_settings,
    openai_chunk,
    openai_text_chunks,
    openai_tool_chunks,
    run_against_keyrelay,
)

PROXY_KEY = "proxy-secret"
OPENAI_KEY = "sk-mock-key-1234"
ANTHROPIC_KEY = "sk-ant-mock-1234"
GEMINI_KEY = "gm-mock-5678"
AZURE_KEY = "azure-mock-key-5150"
AZURE_DEPLOYMENT = "gpt-mock-deploy"
AZURE_EMBED_DEPLOYMENT = "embed-mock-deploy"
AZURE_API_VERSION = "2024-10-21"
BEDROCK_ACCESS_KEY_ID = "AKIAMOCKKEY00001"
BEDROCK_SECRET = "bedrock/mock+secret/Qm7Zt2Vx9Lp4Rn8W"
BEDROCK_REGION = "eu-west-3"

# ---- what every mock answers -----------------------------------------------------------------

# Bedrock upstream (serves `bedrock/anthropic.claude-mock-v1:0` to the openai SDK): a versioned
# id with a `:`, which must reach the URL as `%3A`.
BEDROCK_MODEL = "anthropic.claude-mock-v1:0"
BEDROCK_TEXT_PARTS = ["Hello", " from", " the", " Bedrock", " mock."]
BEDROCK_TEXT = "".join(BEDROCK_TEXT_PARTS)
BEDROCK_TOOL_PREAMBLE = "Let me look."
BEDROCK_TOOL_ID = "tooluse_mock_01"
BEDROCK_TOOL_FRAGMENTS = ['{"city": "Par', 'is", "unit": "cel', 'sius"}']
BEDROCK_USAGE = {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14}

SYSTEM_PROMPT = "Be terse."
TOOL_NAME = "get_weather"
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
WEATHER_SCHEMA = WEATHER_PARAMETERS
# The openai SDK's stream helper only accepts strict function tools.
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "The weather in a city.",
        "strict": True,
        "parameters": WEATHER_SCHEMA,
    },
}
ANTHROPIC_WEATHER_TOOL = {
    "name": TOOL_NAME,
    "description": "The weather in a city.",
    "input_schema": WEATHER_SCHEMA,
}

# OpenAI-compatible upstream (serves `openai/gpt-mock` to the anthropic SDK).
OPENAI_MODEL = "gpt-mock"
OPENAI_TEXT_PARTS = ["Hello", " from", " the", " mock", " upstream", "."]
OPENAI_TEXT = "".join(OPENAI_TEXT_PARTS)
OPENAI_TOOL_CALL_ID = "call_mock_0001"
OPENAI_TOOL_FRAGMENTS = ['{"ci', 'ty": "Par', 'is", "un', 'it": "celsius"}']
OPENAI_USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}

# Anthropic upstream (serves `anthropic/claude-mock` to the openai SDK). The tool's input arrives
# as input_json_delta fragments, the first one empty as Anthropic often sends it.
CLAUDE_MODEL = "claude-mock"
CLAUDE_TEXT_PARTS = ["Hello", " from", " the", " Claude", " mock."]
CLAUDE_TEXT = "".join(CLAUDE_TEXT_PARTS)
CLAUDE_TOOL_PREAMBLE = "Checking."
CLAUDE_TOOL_ID = "toolu_mock_01"
CLAUDE_TOOL_FRAGMENTS = ["", '{"city": "Par', 'is", "unit": "cel', 'sius"}']
CLAUDE_USAGE = {"input_tokens": 11, "output_tokens": 6}
# What the mock's count_tokens answers: no local count could give it.
CLAUDE_COUNTED_TOKENS = 4242
BETA = "prompt-caching-2024-07-31"

# Gemini upstream (serves `gemini/gemini-mock` and `gemini/embedding-mock` to the openai SDK).
GEMINI_MODEL = "gemini-mock"
GEMINI_EMBED_MODEL = "embedding-mock"
GEMINI_TEXT_PARTS = ["Hello", " from", " the", " Gemini", " mock."]
GEMINI_TEXT = "".join(GEMINI_TEXT_PARTS)
GEMINI_USAGE = {"promptTokenCount": 13, "candidatesTokenCount": 8, "totalTokenCount": 21}
# Mostly values float32 cannot hold exactly: vectors cross keyrelay as float32, and comparing
# after rounding both sides to float32 is what proves nothing else was lost.
EMBEDDING_BASE = [0.1, -0.25, 0.3333333333333333, 1e-7, -123.456, 0.0]

assert json.loads("".join(OPENAI_TOOL_FRAGMENTS)) == TOOL_ARGS
assert json.loads("".join(CLAUDE_TOOL_FRAGMENTS)) == TOOL_ARGS


def embedding_for(index: int) -> list[float]:
    return [v + index for v in EMBEDDING_BASE]


# ---- mock plumbing shared by the three upstreams ---------------------------------------------


class Recorder:
    """A mock's record of what reached it: one dict per request, with `method`, `path` (no
    query), `query` (parse_qs form), `headers` (lowercase names) and `body` (parsed JSON)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[dict] = []

    def record(self, entry: dict) -> None:
        with self._lock:
            self._seen.append(entry)

    def seen(self) -> list[dict]:
        with self._lock:
            return list(self._seen)

    def last(self, method: str, path: str) -> dict:
        calls = [c for c in self.seen() if c["method"] == method and c["path"] == path]
        assert calls, f"the upstream never got {method} {path}"
        return calls[-1]


class MockHandler(UpstreamReplies, BaseHTTPRequestHandler):
    """What all three mocks share: reading and recording a request, answering JSON or a
    chunked event stream. Subclasses route and check the credentials."""

    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT  # socket timeout of each connection
    # Headers and body go out in separate writes; with Nagle on, each answer waits ~40 ms for
    # a delayed ACK.
    disable_nagle_algorithm = True
    recorder: Recorder  # set on the subclass made by start_mock

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the check's output to its own lines

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_chunked(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def take_request(self) -> tuple[str, dict, dict]:
        """Reads and records the request; returns its path (no query), query and JSON body
        ({} when empty or not JSON: the checks then see what was wrong)."""
        raw = self.read_body() if self.command == "POST" else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"__not_json__": raw.decode(errors="replace")}
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.recorder.record(
            {
                "method": self.command,
                "path": url.path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        return url.path, query, body


def start_mock(handler: type[MockHandler], name: str) -> tuple[ThreadingHTTPServer, Recorder]:
    recorder = Recorder()
    bound = type(f"Bound{handler.__name__}", (handler,), {"recorder": recorder})
    server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server, recorder


# ---- OpenAI-compatible mock ------------------------------------------------------------------


def openai_completion(with_tool: bool) -> dict:
    if with_tool:
        call = {
            "id": OPENAI_TOOL_CALL_ID,
            "type": "function",
            "function": {"name": TOOL_NAME, "arguments": "".join(OPENAI_TOOL_FRAGMENTS)},
        }
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": OPENAI_TEXT, "refusal": None}
        finish = "stop"
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": OPENAI_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": OPENAI_USAGE,
    }


class OpenAiMock(MockHandler):
    def do_GET(self) -> None:
        path, _, _ = self.take_request()
        if not self.authorised():
            return
        if path == "/v1/models":
            model = {"id": OPENAI_MODEL, "object": "model", "created": 0, "owned_by": "mock"}
            self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.error(404, "invalid_request_error", f"no route {path}")

    def do_POST(self) -> None:
        path, _, body = self.take_request()
        if not self.authorised():
            return
        if path == "/v1/chat/completions":
            self.chat(body)
        else:
            self.error(404, "invalid_request_error", f"no route {path}")

    def authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {OPENAI_KEY}":
            return True
        self.error(401, "invalid_request_error", "Incorrect API key provided.", "invalid_api_key")
        return False

    def chat(self, body: dict) -> None:
        with_tool = bool(body.get("tools"))
        if not body.get("stream"):
            return self.send_json(200, openai_completion(with_tool))
        chunks = (
            openai_tool_chunks(OPENAI_MODEL, OPENAI_TOOL_CALL_ID, TOOL_NAME, OPENAI_TOOL_FRAGMENTS)
            if with_tool
            else openai_text_chunks(OPENAI_MODEL, OPENAI_TEXT_PARTS)
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(openai_chunk(OPENAI_MODEL, [], OPENAI_USAGE))
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
        self.send_events(events + [b"data: [DONE]\n\n"])

    def error(self, status: int, kind: str, message: str, code: str | None = None) -> None:
        error = {"message": message, "type": kind, "param": None, "code": code}
        self.send_json(status, {"error": error})


# ---- Anthropic Messages API mock -------------------------------------------------------------


AZURE_ACTION = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)$")


class AzureMock(OpenAiMock):
    """Azure OpenAI's deployments API: the deployment in the path, `api-version` in the query,
    the key in `api-key` (a bearer is refused, as Azure does for an API key)."""

    def do_POST(self) -> None:
        path, query, body = self.take_request()
        if not self.authorised():
            return
        match = AZURE_ACTION.match(path)
        if not match or query.get("api-version") != [AZURE_API_VERSION]:
            return self.error(404, "invalid_request_error", f"no route {path} {query}", "DeploymentNotFound")
        if match.group(2) == "chat/completions":
            return self.chat(body)
        inputs = body.get("input") or []
        data = [{"object": "embedding", "index": i, "embedding": embedding_for(i)} for i in range(len(inputs))]
        self.send_json(200, {"object": "list", "data": data, "model": "text-embedding-3-small",
                             "usage": {"prompt_tokens": 4, "total_tokens": 4}})

    def authorised(self) -> bool:
        if self.headers.get("api-key") == AZURE_KEY and not self.headers.get("Authorization"):
            return True
        self.error(401, "invalid_request_error", "Access denied due to invalid subscription key.", "401")
        return False


def claude_message(with_tool: bool) -> dict:
    if with_tool:
        content = [
            {"type": "text", "text": CLAUDE_TOOL_PREAMBLE},
            {"type": "tool_use", "id": CLAUDE_TOOL_ID, "name": TOOL_NAME, "input": TOOL_ARGS},
        ]
    else:
        content = [{"type": "text", "text": CLAUDE_TEXT}]
    usage = dict(CLAUDE_USAGE, cache_creation_input_tokens=0, cache_read_input_tokens=0)
    return {
        "id": "msg_mock_01",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE_MODEL,
        "content": content,
        "stop_reason": "tool_use" if with_tool else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def claude_text_block(index: int, parts: list[str]) -> list[dict]:
    start = {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
        for p in parts
    ]
    return [start, {"type": "ping"}, *deltas, {"type": "content_block_stop", "index": index}]


def claude_tool_block(index: int) -> list[dict]:
    # content_block_start shows `input: {}`: the real input is only the joined fragments.
    block = {"type": "tool_use", "id": CLAUDE_TOOL_ID, "name": TOOL_NAME, "input": {}}
    start = {"type": "content_block_start", "index": index, "content_block": block}
    deltas = [
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": fragment},
        }
        for fragment in CLAUDE_TOOL_FRAGMENTS
    ]
    return [start, *deltas, {"type": "content_block_stop", "index": index}]


def claude_stream_events(with_tool: bool) -> list[dict]:
    message = dict(claude_message(False), content=[], stop_reason=None)
    message["usage"] = {"input_tokens": CLAUDE_USAGE["input_tokens"], "output_tokens": 1}
    events = [{"type": "message_start", "message": message}]
    if with_tool:
        events += claude_text_block(0, [CLAUDE_TOOL_PREAMBLE]) + claude_tool_block(1)
    else:
        events += claude_text_block(0, CLAUDE_TEXT_PARTS)
    stop_reason = "tool_use" if with_tool else "end_turn"
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": CLAUDE_USAGE["output_tokens"]},  # cumulative
        }
    )
    events.append({"type": "message_stop"})
    return events


class AnthropicMock(MockHandler):
    def do_GET(self) -> None:
        path, _, _ = self.take_request()
        if not self.authorised():
            return
        if path == "/v1/models":
            model = {
                "type": "model",
                "id": CLAUDE_MODEL,
                "display_name": "Claude Mock",
                "created_at": "2025-09-29T00:00:00Z",
            }
            page = {
                "data": [model],
                "has_more": False,
                "first_id": CLAUDE_MODEL,
                "last_id": CLAUDE_MODEL,
            }
            self.send_json(200, page)
        else:
            self.error(404, "not_found_error", f"no route {path}")

    def do_POST(self) -> None:
        path, _, body = self.take_request()
        if not self.authorised():
            return
        if path == "/v1/messages/count_tokens":
            return self.send_json(200, {"input_tokens": CLAUDE_COUNTED_TOKENS})
        if path != "/v1/messages":
            return self.error(404, "not_found_error", f"no route {path}")
        with_tool = bool(body.get("tools"))
        if not body.get("stream"):
            return self.send_json(200, claude_message(with_tool))
        events = [
            f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
            for e in claude_stream_events(with_tool)
        ]
        self.send_events(events)

    def authorised(self) -> bool:
        if self.headers.get("x-api-key") != ANTHROPIC_KEY:
            self.error(401, "authentication_error", "invalid x-api-key")
            return False
        if not self.headers.get("anthropic-version"):
            self.error(400, "invalid_request_error", "anthropic-version: header is required")
            return False
        return True

    def error(self, status: int, kind: str, message: str) -> None:
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_mock",
        }
        self.send_json(status, body)


# ---- Gemini API mock -------------------------------------------------------------------------


GEMINI_ACTION = re.compile(r"^/v1beta/models/([^/:]+):([A-Za-z]+)$")


def gemini_response(parts: list[dict], usage: dict, finish: bool) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": GEMINI_MODEL,
        "responseId": "resp-mock",
    }


def gemini_function_call() -> dict:
    # No `id`: Gemini usually leaves it out, so keyrelay has to make one up.
    return {"functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS}}


def gemini_stream_events(with_tool: bool) -> list[dict]:
    """Text parts (or one whole functionCall part), then a final event with finishReason STOP
    and the full usageMetadata. Function calls finish with STOP too."""
    partial_usage = {
        "promptTokenCount": GEMINI_USAGE["promptTokenCount"],
        "totalTokenCount": GEMINI_USAGE["promptTokenCount"],
    }
    if with_tool:
        events = [gemini_response([gemini_function_call()], partial_usage, False)]
    else:
        events = [gemini_response([{"text": p}], partial_usage, False) for p in GEMINI_TEXT_PARTS]
    events.append(gemini_response([{"text": ""}], GEMINI_USAGE, True))
    return events


class GeminiMock(MockHandler):
    def do_GET(self) -> None:
        path, _, _ = self.take_request()
        if not self.authorised():
            return
        if path == "/v1beta/models":
            self.send_json(
                200,
                {"models": [self.model_card(GEMINI_MODEL), self.model_card(GEMINI_EMBED_MODEL)]},
            )
        else:
            self.error(404, "NOT_FOUND", f"no route {path}")

    def do_POST(self) -> None:
        path, query, body = self.take_request()
        if not self.authorised():
            return
        match = GEMINI_ACTION.match(path)
        action = match.group(2) if match else None
        if action == "generateContent":
            parts = [gemini_function_call()] if body.get("tools") else [{"text": GEMINI_TEXT}]
            self.send_json(200, gemini_response(parts, GEMINI_USAGE, True))
        elif action == "streamGenerateContent":
            self.stream(query, body)
        elif action == "batchEmbedContents":
            requests = body.get("requests") or []
            embeddings = [{"values": embedding_for(i)} for i in range(len(requests))]
            self.send_json(200, {"embeddings": embeddings})
        else:
            self.error(404, "NOT_FOUND", f"no route {path}")

    def stream(self, query: dict, body: dict) -> None:
        if query.get("alt") != ["sse"]:
            # Without alt=sse the real API streams one JSON array, which this mock does not do.
            return self.error(400, "INVALID_ARGUMENT", "the mock streams only with ?alt=sse")
        events = gemini_stream_events(bool(body.get("tools")))
        self.send_events([f"data: {json.dumps(e)}\r\n\r\n".encode() for e in events])

    @staticmethod
    def model_card(model: str) -> dict:
        embed = model == GEMINI_EMBED_MODEL
        methods = ["embedContent"] if embed else ["generateContent", "countTokens"]
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": methods,
        }

    def authorised(self) -> bool:
        key = self.headers.get("x-goog-api-key")
        if key == GEMINI_KEY:
            return True
        if key is None:
            self.error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
        else:
            self.error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        return False

    def error(self, status: int, kind: str, message: str) -> None:
        self.send_json(status, {"error": {"code": status, "message": message, "status": kind}})


# Vertex AI upstream (serves `vertex/gemini-mock`, `vertex/embedding-mock` and
# `vertex/claude-mock`) with a Google token endpoint at /token: service-account tokens.
VERTEX_TOKEN = "ya29.sdk-mock-token"
VERTEX_BASE_PATH = "/v1/projects/sdk-project/locations/us-central1"
VERTEX_ACTION = re.compile(r"^" + VERTEX_BASE_PATH + r"/publishers/(google|anthropic)/models/([^/:]+):([A-Za-z]+)$")


class VertexMock(GeminiMock):
    def do_POST(self) -> None:
        path, query, body = self.take_request()
        if path == "/token":
            # The JWT itself is verified by tests/it/vertex.rs; here only the SDKs are under test.
            return self.send_json(200, {"access_token": VERTEX_TOKEN, "expires_in": 3600})
        if self.headers.get("authorization") != f"Bearer {VERTEX_TOKEN}":
            return self.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        match = VERTEX_ACTION.match(path)
        publisher, action = (match.group(1), match.group(3)) if match else (None, None)
        if publisher == "anthropic" and action in ("rawPredict", "streamRawPredict"):
            with_tool = bool(body.get("tools"))
            if action == "rawPredict":
                return self.send_json(200, claude_message(with_tool))
            events = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in claude_stream_events(with_tool)]
            return self.send_events(events)
        if action == "generateContent":
            parts = [gemini_function_call()] if body.get("tools") else [{"text": GEMINI_TEXT}]
            return self.send_json(200, gemini_response(parts, GEMINI_USAGE, True))
        if action == "streamGenerateContent":
            return self.stream(query, body)
        if action == "predict":
            instances = body.get("instances") or []
            predictions = [
                {"embeddings": {"values": embedding_for(i), "statistics": {"token_count": 2, "truncated": False}}}
                for i in range(len(instances))
            ]
            return self.send_json(200, {"predictions": predictions})
        self.error(404, "NOT_FOUND", f"no route {path}")


def vertex_key_file(port: int) -> str:
    """The repository's test-only service account key, its token_uri on the mock."""
    key_path = Path(__file__).resolve().parent.parent / "tests/data/vertex/test-service-account.json"
    key = json.loads(key_path.read_text())
    key["token_uri"] = f"http://127.0.0.1:{port}/token"
    return json.dumps(key)


# ---- AWS Bedrock Runtime (Converse) mock -----------------------------------------------------


BEDROCK_ACTION = re.compile(r"^/model/([^/]+)/(converse|converse-stream)$")


def event_stream_message(event_type: str, payload: dict) -> bytes:
    """One application/vnd.amazon.eventstream message: total length, headers length, prelude
    CRC32, string headers (type 7), the JSON payload, message CRC32."""
    headers = b""
    pairs = (
        (":message-type", "event"),
        (":event-type", event_type),
        (":content-type", "application/json"),
    )
    for name, value in pairs:
        n, v = name.encode(), value.encode()
        headers += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 16 + len(headers) + len(body), len(headers))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def bedrock_delta(index: int, delta: dict) -> bytes:
    return event_stream_message("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})


def bedrock_stream_events(with_tool: bool) -> list[bytes]:
    """ConverseStream's messages: text deltas (or a preamble and a toolUse block whose input
    arrives in fragments), messageStop, then the usage in metadata."""
    events = [event_stream_message("messageStart", {"role": "assistant"})]
    if with_tool:
        events.append(bedrock_delta(0, {"text": BEDROCK_TOOL_PREAMBLE}))
        events.append(event_stream_message("contentBlockStop", {"contentBlockIndex": 0}))
        start = {"toolUse": {"toolUseId": BEDROCK_TOOL_ID, "name": TOOL_NAME}}
        events.append(
            event_stream_message("contentBlockStart", {"contentBlockIndex": 1, "start": start})
        )
        events += [bedrock_delta(1, {"toolUse": {"input": f}}) for f in BEDROCK_TOOL_FRAGMENTS]
        events.append(event_stream_message("contentBlockStop", {"contentBlockIndex": 1}))
        stop = "tool_use"
    else:
        events += [bedrock_delta(0, {"text": part}) for part in BEDROCK_TEXT_PARTS]
        events.append(event_stream_message("contentBlockStop", {"contentBlockIndex": 0}))
        stop = "end_turn"
    events.append(event_stream_message("messageStop", {"stopReason": stop}))
    metadata = {"usage": BEDROCK_USAGE, "metrics": {"latencyMs": 5}}
    events.append(event_stream_message("metadata", metadata))
    return events


def sigv4_problem(method: str, raw_path: str, headers: dict, body: bytes) -> str | None:
    """Checks a SigV4 signature as Bedrock would (service bedrock, the mock's region and secret);
    returns what is wrong, or None."""
    auth = headers.get("authorization") or ""
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/bedrock/aws4_request, "
        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        auth,
    )
    if not match:
        return f"not a SigV4 authorization: {auth!r}"
    key_id, date, region, signed, signature = match.groups()
    if key_id != BEDROCK_ACCESS_KEY_ID or region != BEDROCK_REGION:
        return f"credential {key_id}/{region}"
    names = signed.split(";")
    if not {"host", "x-amz-date", "content-type"} <= set(names):
        return f"signed headers {signed}"
    canonical_headers = "".join(f"{n}:{' '.join((headers.get(n) or '').split())}\n" for n in names)
    # Every path segment encoded once more, as for every AWS service but S3.
    path = "/".join(quote(segment, safe="-_.~") for segment in raw_path.split("/"))
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join([method, path, "", canonical_headers, signed, payload_hash])
    amz_date = headers.get("x-amz-date") or ""
    scope = f"{date}/{region}/bedrock/aws4_request"
    canonical_hash = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, canonical_hash])
    key = f"AWS4{BEDROCK_SECRET}".encode()
    for part in (date, region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "signature does not match"
    return None


class BedrockMock(MockHandler):
    def do_POST(self) -> None:
        # The path as sent (percent-encoded), which the signature covers.
        raw_path = urlsplit(self.path).path
        raw = self.read_body()
        body = json.loads(raw) if raw else {}
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {"method": "POST", "path": raw_path, "query": {}, "headers": headers, "body": body}
        self.recorder.record(entry)
        problem = sigv4_problem("POST", raw_path, headers, raw)
        if problem:
            return self.error(403, "InvalidSignatureException", problem)
        match = BEDROCK_ACTION.match(raw_path)
        if not match or unquote(match.group(1)) != BEDROCK_MODEL:
            return self.error(404, "ResourceNotFoundException", f"no route {raw_path}")
        with_tool = bool(body.get("toolConfig"))
        if match.group(2) == "converse":
            content = [{"text": BEDROCK_TEXT}]
            if with_tool:
                call = {"toolUseId": BEDROCK_TOOL_ID, "name": TOOL_NAME, "input": TOOL_ARGS}
                content = [{"text": BEDROCK_TOOL_PREAMBLE}, {"toolUse": call}]
            answer = {"output": {"message": {"role": "assistant", "content": content}},
                      "stopReason": "tool_use" if with_tool else "end_turn", "usage": BEDROCK_USAGE}
            return self.send_json(200, answer)
        self.send_events(bedrock_stream_events(with_tool), "application/vnd.amazon.eventstream")

    def error(self, status: int, kind: str, message: str) -> None:
        data = json.dumps({"message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        kind += ":http://internal.amazon.com/coral/com.amazon.bedrock/"
        self.send_header("x-amzn-ErrorType", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ---- keyrelay process ------------------------------------------------------------------------


def write_env(data_dir: Path, ports: dict[str, int]) -> None:
    (data_dir / ".env").write_text(
        f"PROXY_API_KEY={PROXY_KEY}\n"
        f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}\n"
        f"ANTHROPIC_API_BASE=http://127.0.0.1:{ports['anthropic']}/v1\n"
        f"GEMINI_API_KEY={GEMINI_KEY}\n"
        f"GEMINI_API_BASE=http://127.0.0.1:{ports['gemini']}/v1beta\n"
        f"OPENAI_API_KEY={OPENAI_KEY}\n"
        f"OPENAI_API_BASE=http://127.0.0.1:{ports['openai']}/v1\n"
        f"VERTEX_API_BASE=http://127.0.0.1:{ports['vertex']}{VERTEX_BASE_PATH}\n"
        f"VERTEX_CREDENTIALS_1='{vertex_key_file(ports['vertex'])}'\n"
        f"AZURE_API_KEY={AZURE_KEY}\n"
        f"AZURE_API_BASE=http://127.0.0.1:{ports['azure']}\n"
        f"AZURE_API_VERSION={AZURE_API_VERSION}\n"
        f"BEDROCK_API_BASE=http://127.0.0.1:{ports['bedrock']}\n"
        f"BEDROCK_AWS_REGION={BEDROCK_REGION}\n"
        f"BEDROCK_AWS_ACCESS_KEY_ID={BEDROCK_ACCESS_KEY_ID}\n"
        f"BEDROCK_AWS_SECRET_ACCESS_KEY={BEDROCK_SECRET}\n"
        f"BEDROCK_MODELS=[\"{BEDROCK_MODEL}\"]\n"
    )


# ---- assertion helpers -----------------------------------------------------------------------


def chat_messages(user_text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_text}]


def text_of(content: object) -> str | None:
    """The text of a string or of a list of text blocks/parts (both APIs allow either)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and "text" in p for p in content):
        return "".join(p["text"] for p in content)
    return None


def expect_single_value(what: str, value: object) -> None:
    """G8: a field the SDK's stream helper concatenates must arrive once, not once per delta
    (`call_1call_1`)."""
    assert isinstance(value, str) and value, f"{what} {value!r} is empty"
    half, odd = divmod(len(value), 2)
    doubled = not odd and value[:half] == value[half:]
    assert not doubled, f"{what} {value!r} is doubled"


def expect_status_error(error_class: type, call: Callable[[], object]) -> Exception:
    try:
        call()
    except error_class as e:
        return e
    raise AssertionError(f"no {error_class.__name__}")


def expect_nothing_forwarded(recorder: Recorder, call: Callable[[], None]) -> None:
    before = len(recorder.seen())
    call()
    assert len(recorder.seen()) == before, "the request reached the upstream"


# ---- checks: the openai SDK against Anthropic and Gemini upstreams --------------------------


class TranslatedChatChecks:
    """The openai SDK's chat calls against a provider keyrelay translates to. Subclasses say
    what the upstream answers and check the request it got."""

    provider: str
    model: str
    text: str
    usage: tuple[int, int]  # prompt, completion tokens the upstream reported
    tool_text: str  # the assistant's text next to the tool call

    def __init__(self, client: openai.OpenAI, recorder: Recorder) -> None:
        self.client = client
        self.recorder = recorder

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        raise NotImplementedError

    def expect_usage(self, usage: object) -> None:
        assert usage is not None, "no usage"
        got = (usage.prompt_tokens, usage.completion_tokens)
        assert got == self.usage, f"usage (prompt, completion) {got}, want {self.usage}"
        total = usage.total_tokens
        assert total == sum(self.usage), f"total_tokens {total}, want {sum(self.usage)}"

    def chat_non_streaming(self) -> None:
        completion = self.client.chat.completions.create(
            model=self.model, messages=chat_messages("hi")
        )
        choice = completion.choices[0]
        assert choice.message.content == self.text, f"content {choice.message.content!r}"
        assert choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}"
        self.expect_usage(completion.usage)
        self.expect_chat_request(stream=False, tools=False)

    def streamed_chunks(self, **extra: object) -> list:
        stream = self.client.chat.completions.create(
            model=self.model, messages=chat_messages("hi"), stream=True, **extra
        )
        chunks = list(stream)
        assert chunks, "no chunks"
        return chunks

    def expect_streamed_text(self, chunks: list) -> None:
        with_choices = [c for c in chunks if c.choices]
        text = "".join(c.choices[0].delta.content or "" for c in with_choices)
        assert text == self.text, f"joined deltas {text!r}"
        finish = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
        assert finish == ["stop"], f"finish_reasons {finish}"

    def chat_streaming(self) -> None:
        chunks = self.streamed_chunks()
        empty = [i for i, c in enumerate(chunks) if not c.choices]
        assert not empty, f"chunks {empty} have no choices although include_usage was not asked"
        self.expect_streamed_text(chunks)
        self.expect_chat_request(stream=True, tools=False)

    def chat_streaming_usage(self) -> None:
        chunks = self.streamed_chunks(stream_options={"include_usage": True})
        last = chunks[-1]
        assert last.choices == [], f"last chunk has choices {last.choices}"
        self.expect_usage(last.usage)
        self.expect_streamed_text(chunks)
        self.expect_chat_request(stream=True, tools=False)

    def stream_helper(self) -> Callable:
        # `.stream()` moved from `client.beta.chat.completions` to `client.chat.completions`.
        helper = getattr(self.client.chat.completions, "stream", None)
        if helper is None:
            helper = self.client.beta.chat.completions.stream
        return helper

    def chat_stream_helper_tools(self) -> None:
        with self.stream_helper()(
            model=self.model,
            messages=chat_messages("weather in Paris?"),
            tools=[OPENAI_WEATHER_TOOL],
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}"
        message = choice.message
        assert message.role == "assistant", f"role {message.role!r}"
        assert (message.content or "") == self.tool_text, f"content {message.content!r}"
        calls = message.tool_calls or []
        assert len(calls) == 1, f"{len(calls)} tool calls: {calls}"
        call = calls[0]
        expect_single_value("tool call id", call.id)
        assert call.type == "function", f"tool call type {call.type!r}"
        assert call.function.name == TOOL_NAME, f"tool name {call.function.name!r}"
        got = json.loads(call.function.arguments)
        assert got == TOOL_ARGS, f"arguments {call.function.arguments!r}"
        self.expect_chat_request(stream=True, tools=True)

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        p = self.provider
        return [
            (f"openai sdk -> {p}: chat non-streaming", self.chat_non_streaming),
            (f"openai sdk -> {p}: chat streaming", self.chat_streaming),
            (f"openai sdk -> {p}: chat streaming with include_usage", self.chat_streaming_usage),
            (f"openai sdk -> {p}: chat stream helper with tools", self.chat_stream_helper_tools),
        ]


class AnthropicUpstreamChecks(TranslatedChatChecks):
    provider = "anthropic"
    model = f"anthropic/{CLAUDE_MODEL}"
    text = CLAUDE_TEXT
    usage = (CLAUDE_USAGE["input_tokens"], CLAUDE_USAGE["output_tokens"])
    tool_text = CLAUDE_TOOL_PREAMBLE

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        call = self.recorder.last("POST", "/v1/messages")
        headers, body = call["headers"], call["body"]
        key = headers.get("x-api-key")
        assert key == ANTHROPIC_KEY, f"upstream got x-api-key {key!r}"
        assert headers.get("anthropic-version"), "upstream got no anthropic-version header"
        assert body.get("model") == CLAUDE_MODEL, f"upstream got model {body.get('model')!r}"
        assert bool(body.get("stream")) == stream, f"upstream got stream {body.get('stream')!r}"
        system = text_of(body.get("system"))
        assert system == SYSTEM_PROMPT, f"upstream got top-level system {body.get('system')!r}"
        roles = [m.get("role") for m in body.get("messages") or []]
        assert roles == ["user"], f"upstream got message roles {roles} (system must be top-level)"
        max_tokens = body.get("max_tokens")
        valid = isinstance(max_tokens, int) and max_tokens > 0
        assert valid, f"upstream got max_tokens {max_tokens!r}"
        if tools:
            self.expect_tools(body.get("tools"))

    @staticmethod
    def expect_tools(tools: object) -> None:
        assert isinstance(tools, list) and len(tools) == 1, f"upstream got tools {tools!r}"
        tool = tools[0]
        assert tool.get("name") == TOOL_NAME, f"upstream got tool {tool!r}"
        schema = tool.get("input_schema")
        assert isinstance(schema, dict), f"upstream tool has no input_schema: {tool!r}"
        openai_shape = "parameters" in tool or "function" in tool
        assert not openai_shape, f"upstream tool in OpenAI shape: {tool!r}"
        properties = schema.get("properties")
        assert properties == WEATHER_SCHEMA["properties"], f"upstream input_schema {schema!r}"


class GeminiUpstreamChecks(TranslatedChatChecks):
    provider = "gemini"
    model = f"gemini/{GEMINI_MODEL}"
    text = GEMINI_TEXT
    usage = (GEMINI_USAGE["promptTokenCount"], GEMINI_USAGE["candidatesTokenCount"])
    tool_text = ""

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        action = "streamGenerateContent" if stream else "generateContent"
        call = self.recorder.last("POST", f"/v1beta/models/{GEMINI_MODEL}:{action}")
        headers, body = call["headers"], call["body"]
        key = headers.get("x-goog-api-key")
        assert key == GEMINI_KEY, f"upstream got x-goog-api-key {key!r}"
        query = call["query"]
        if stream:
            assert query.get("alt") == ["sse"], f"upstream query {query}, want alt=sse"
        instruction = body.get("systemInstruction") or {}
        system = text_of(instruction.get("parts"))
        assert system == SYSTEM_PROMPT, f"upstream got systemInstruction {instruction!r}"
        contents = body.get("contents") or []
        roles = [c.get("role") for c in contents]
        assert roles == ["user"], f"upstream got content roles {roles}"
        if tools:
            self.expect_tools(body.get("tools"))

    @staticmethod
    def expect_tools(tools: object) -> None:
        assert isinstance(tools, list) and tools, f"upstream got tools {tools!r}"
        declarations = [d for t in tools for d in (t.get("functionDeclarations") or [])]
        names = [d.get("name") for d in declarations]
        assert names == [TOOL_NAME], f"upstream got functionDeclarations {declarations!r}"
        # Either spelling: `parameters` (OpenAPI subset) or `parametersJsonSchema`.
        declaration = declarations[0]
        schema = declaration.get("parameters") or declaration.get("parametersJsonSchema") or {}
        properties = set(schema.get("properties") or {})
        assert properties == set(WEATHER_SCHEMA["properties"]), f"upstream got schema {schema!r}"

    def embeddings(self, encoding_format: str | None) -> None:
        inputs = ["first text", "second text"]
        extra = {} if encoding_format is None else {"encoding_format": encoding_format}
        model = f"gemini/{GEMINI_EMBED_MODEL}"
        response = self.client.embeddings.create(model=model, input=inputs, **extra)
        indices = [item.index for item in response.data]
        assert indices == list(range(len(inputs))), f"indices {indices}"
        for item in response.data:
            want = array("f", embedding_for(item.index)).tolist()
            got = array("f", item.embedding).tolist()
            assert got == want, f"vector {item.index}: {item.embedding} != {want}"
        self.expect_embed_request(inputs)

    def expect_embed_request(self, inputs: list[str]) -> None:
        call = self.recorder.last("POST", f"/v1beta/models/{GEMINI_EMBED_MODEL}:batchEmbedContents")
        key = call["headers"].get("x-goog-api-key")
        assert key == GEMINI_KEY, f"upstream got x-goog-api-key {key!r}"
        requests = call["body"].get("requests") or []
        texts = [text_of((r.get("content") or {}).get("parts")) for r in requests]
        assert texts == inputs, f"upstream got texts {texts}"
        models = {r.get("model") for r in requests}
        assert models == {f"models/{GEMINI_EMBED_MODEL}"}, f"upstream got request models {models}"

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        return super().all() + [
            ("openai sdk -> gemini: embeddings float", lambda: self.embeddings("float")),
            ("openai sdk -> gemini: embeddings default (base64)", lambda: self.embeddings(None)),
        ]


class VertexGeminiChecks(GeminiUpstreamChecks):
    """The openai SDK against `vertex/gemini-*`: Gemini's translation on Vertex's URLs, with a
    service account's token."""

    provider = "vertex (gemini)"
    model = f"vertex/{GEMINI_MODEL}"

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        action = "streamGenerateContent" if stream else "generateContent"
        path = f"{VERTEX_BASE_PATH}/publishers/google/models/{GEMINI_MODEL}:{action}"
        call = self.recorder.last("POST", path)
        bearer = call["headers"].get("authorization")
        assert bearer == f"Bearer {VERTEX_TOKEN}", f"upstream got authorization {bearer!r}"
        roles = [c.get("role") for c in call["body"].get("contents") or []]
        assert roles == ["user"], f"upstream got content roles {roles}"
        if tools:
            self.expect_tools(call["body"].get("tools"))

    def embeddings(self, encoding_format: str | None) -> None:
        extra = {} if encoding_format is None else {"encoding_format": encoding_format}
        inputs = ["first text", "second text"]
        response = self.client.embeddings.create(model=f"vertex/{GEMINI_EMBED_MODEL}", input=inputs, **extra)
        for item in response.data:
            want = array("f", embedding_for(item.index)).tolist()
            assert array("f", item.embedding).tolist() == want, f"vector {item.index}"
        assert response.usage.prompt_tokens == 4, f"usage {response.usage}"
        call = self.recorder.last("POST", f"{VERTEX_BASE_PATH}/publishers/google/models/{GEMINI_EMBED_MODEL}:predict")
        texts = [i.get("content") for i in call["body"].get("instances") or []]
        assert texts == inputs, f"upstream got instances {texts}"

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        return TranslatedChatChecks.all(self) + [
            ("openai sdk -> vertex: embeddings float", lambda: self.embeddings("float")),
            ("openai sdk -> vertex: embeddings default (base64)", lambda: self.embeddings(None)),
        ]


class VertexClaudeChecks(AnthropicUpstreamChecks):
    """The openai SDK against `vertex/claude-*`: Anthropic's translation on rawPredict, the
    model in the URL and `anthropic_version` in the body."""

    provider = "vertex (claude)"
    model = f"vertex/{CLAUDE_MODEL}"

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        action = "streamRawPredict" if stream else "rawPredict"
        call = self.recorder.last("POST", f"{VERTEX_BASE_PATH}/publishers/anthropic/models/{CLAUDE_MODEL}:{action}")
        headers, body = call["headers"], call["body"]
        assert headers.get("authorization") == f"Bearer {VERTEX_TOKEN}", "no service-account token"
        assert body.get("anthropic_version") == "vertex-2023-10-16", f"anthropic_version {body.get('anthropic_version')!r}"
        assert "model" not in body, f"upstream got model {body.get('model')!r} in the body"
        assert bool(body.get("stream")) == stream, f"upstream got stream {body.get('stream')!r}"
        if tools:
            self.expect_tools(body.get("tools"))


def anthropic_sdk_to_vertex_claude(clients: dict[str, anthropic.Anthropic], recorder: Recorder) -> None:
    """The anthropic SDK through /v1/messages to `vertex/claude-*`, whole and streamed."""
    client = clients["bearer"]
    model = f"vertex/{CLAUDE_MODEL}"
    message = client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert text_of([b.model_dump() for b in message.content]) == CLAUDE_TEXT, f"content {message.content}"
    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == CLAUDE_TEXT, f"streamed {text!r}"
    call = recorder.last("POST", f"{VERTEX_BASE_PATH}/publishers/anthropic/models/{CLAUDE_MODEL}:streamRawPredict")
    assert call["body"].get("anthropic_version") == "vertex-2023-10-16"


class BedrockUpstreamChecks(TranslatedChatChecks):
    provider = "bedrock"
    model = f"bedrock/{BEDROCK_MODEL}"
    text = BEDROCK_TEXT
    usage = (BEDROCK_USAGE["inputTokens"], BEDROCK_USAGE["outputTokens"])
    tool_text = BEDROCK_TOOL_PREAMBLE

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        # The mock refuses a call whose SigV4 signature it cannot verify, so a recorded call
        # that got an answer was signed right; the id's `:` must arrive as %3A.
        action = "converse-stream" if stream else "converse"
        call = self.recorder.last("POST", f"/model/anthropic.claude-mock-v1%3A0/{action}")
        headers, body = call["headers"], call["body"]
        assert "x-amz-date" in headers and headers.get("host"), f"upstream headers {headers}"
        assert BEDROCK_SECRET not in json.dumps(call), "the secret access key was sent"
        system = text_of(body.get("system"))
        assert system == SYSTEM_PROMPT, f"upstream got system {body.get('system')!r}"
        roles = [m.get("role") for m in body.get("messages") or []]
        assert roles == ["user"], f"upstream got message roles {roles}"
        if tools:
            specs = (body.get("toolConfig") or {}).get("tools") or []
            names = [(t.get("toolSpec") or {}).get("name") for t in specs]
            assert names == [TOOL_NAME], f"upstream got toolConfig {body.get('toolConfig')!r}"
            schema = specs[0]["toolSpec"].get("inputSchema", {}).get("json") or {}
            properties = schema.get("properties")
            assert properties == WEATHER_SCHEMA["properties"], f"upstream inputSchema {schema!r}"


class AzureChecks(TranslatedChatChecks):
    """The openai SDK against `azure/<deployment>`: OpenAI bodies on Azure's URLs and key header."""

    provider = "azure"
    model = f"azure/{AZURE_DEPLOYMENT}"
    text = OPENAI_TEXT
    usage = (OPENAI_USAGE["prompt_tokens"], OPENAI_USAGE["completion_tokens"])
    tool_text = ""

    def expect_chat_request(self, stream: bool, tools: bool) -> None:
        call = self.recorder.last("POST", f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions")
        headers, body = call["headers"], call["body"]
        assert "authorization" not in headers, "Azure got a bearer token"
        assert call["query"].get("api-version") == [AZURE_API_VERSION], f"query {call['query']}"
        assert bool(body.get("stream")) == stream, f"upstream got stream {body.get('stream')!r}"
        roles = [m.get("role") for m in body.get("messages") or []]
        assert roles in (["system", "user"], ["developer", "user"]), f"upstream got roles {roles}"
        if tools:
            AnthropicSdkChecks.expect_openai_tools(body.get("tools"))

    def embeddings(self, encoding_format: str | None) -> None:
        extra = {} if encoding_format is None else {"encoding_format": encoding_format}
        inputs = ["first text", "second text"]
        response = self.client.embeddings.create(model=f"azure/{AZURE_EMBED_DEPLOYMENT}", input=inputs, **extra)
        for item in response.data:
            want = array("f", embedding_for(item.index)).tolist()
            assert array("f", item.embedding).tolist() == want, f"vector {item.index}"
        assert response.usage.prompt_tokens == 4, f"usage {response.usage}"
        call = self.recorder.last("POST", f"/openai/deployments/{AZURE_EMBED_DEPLOYMENT}/embeddings")
        assert call["body"].get("input") == inputs, f"upstream got input {call['body'].get('input')!r}"

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        return TranslatedChatChecks.all(self) + [
            ("openai sdk -> azure: embeddings float", lambda: self.embeddings("float")),
            ("openai sdk -> azure: embeddings default (base64)", lambda: self.embeddings(None)),
        ]


def models_listed(client: openai.OpenAI, recorders: dict[str, Recorder]) -> None:
    ids = [m.id for m in client.models.list()]
    wanted = [
        f"anthropic/{CLAUDE_MODEL}",
        f"gemini/{GEMINI_MODEL}",
        f"openai/{OPENAI_MODEL}",
        f"bedrock/{BEDROCK_MODEL}",
    ]
    missing = [m for m in wanted if m not in ids]
    assert not missing, f"{missing} not in {ids}"
    # The mocks refuse a wrong key, so a listed model also proves the key was sent.
    for provider, path in (("anthropic", "/v1/models"), ("gemini", "/v1beta/models")):
        recorders[provider].last("GET", path)


# ---- checks: the anthropic SDK against an OpenAI-compatible upstream ------------------------


class AnthropicSdkChecks:
    """The anthropic SDK against keyrelay's `/v1/messages`, served by the OpenAI mock."""

    model = f"openai/{OPENAI_MODEL}"
    max_tokens = 64
    text = OPENAI_TEXT
    usage = (OPENAI_USAGE["prompt_tokens"], OPENAI_USAGE["completion_tokens"])

    def __init__(self, clients: dict[str, anthropic.Anthropic], recorder: Recorder) -> None:
        self.client = clients["bearer"]
        self.x_api_key_client = clients["x-api-key"]
        self.bad_client = clients["wrong key"]
        self.recorder = recorder

    def request(self, user_text: str = "hi", **extra: object) -> dict:
        return dict(
            model=self.model,
            max_tokens=self.max_tokens,
            system=SYSTEM_PROMPT,
            messages=[{"role": "user", "content": user_text}],
            **extra,
        )

    def expect_openai_request(self, stream: bool, tools: bool) -> None:
        call = self.recorder.last("POST", "/v1/chat/completions")
        auth, body = call["headers"].get("authorization"), call["body"]
        assert auth == f"Bearer {OPENAI_KEY}", f"upstream got Authorization {auth!r}"
        assert body.get("model") == OPENAI_MODEL, f"upstream got model {body.get('model')!r}"
        assert bool(body.get("stream")) == stream, f"upstream got stream {body.get('stream')!r}"
        messages = body.get("messages") or []
        roles = [m.get("role") for m in messages]
        assert roles in (["system", "user"], ["developer", "user"]), f"upstream got roles {roles}"
        system = text_of(messages[0].get("content"))
        assert system == SYSTEM_PROMPT, f"upstream got system message {messages[0]!r}"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        assert limit == self.max_tokens, f"upstream got token limit {limit!r}"
        if tools:
            self.expect_openai_tools(body.get("tools"))

    @staticmethod
    def expect_openai_tools(tools: object) -> None:
        assert isinstance(tools, list) and len(tools) == 1, f"upstream got tools {tools!r}"
        tool = tools[0]
        function = tool.get("function") or {}
        assert tool.get("type") == "function", f"upstream got tool {tool!r}"
        assert function.get("name") == TOOL_NAME, f"upstream got tool {tool!r}"
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties")
        assert properties == WEATHER_SCHEMA["properties"], f"upstream parameters {parameters!r}"

    @staticmethod
    def expect_message(message: object, text: str, stop_reason: str) -> None:
        assert message.type == "message", f"type {message.type!r}"
        assert message.role == "assistant", f"role {message.role!r}"
        texts = "".join(b.text for b in message.content if b.type == "text")
        assert texts == text, f"text {texts!r}, content {message.content}"
        assert message.stop_reason == stop_reason, f"stop_reason {message.stop_reason!r}"

    @staticmethod
    def expect_tool_use(message: object) -> None:
        blocks = [b for b in message.content if b.type == "tool_use"]
        assert len(blocks) == 1, f"{len(blocks)} tool_use blocks in {message.content}"
        block = blocks[0]
        expect_single_value("tool_use id", block.id)
        assert block.name == TOOL_NAME, f"tool name {block.name!r}"
        assert block.input == TOOL_ARGS, f"tool input {block.input!r}"
        assert message.stop_reason == "tool_use", f"stop_reason {message.stop_reason!r}"

    def create(self) -> None:
        message = self.client.messages.create(**self.request())
        self.expect_message(message, self.text, "end_turn")
        usage = (message.usage.input_tokens, message.usage.output_tokens)
        assert usage == self.usage, f"usage (input, output) {usage}, want {self.usage}"
        self.expect_openai_request(stream=False, tools=False)

    def stream(self) -> None:
        with self.client.messages.stream(**self.request()) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == self.text, f"text_stream joined {text!r}"
        self.expect_message(final, self.text, "end_turn")
        output = final.usage.output_tokens
        assert output == self.usage[1], f"output_tokens {output}"
        self.expect_openai_request(stream=True, tools=False)

    def tools_create(self) -> None:
        message = self.client.messages.create(
            **self.request("weather in Paris?", tools=[ANTHROPIC_WEATHER_TOOL])
        )
        self.expect_tool_use(message)
        self.expect_openai_request(stream=False, tools=True)

    def tools_stream(self) -> None:
        request = self.request("weather in Paris?", tools=[ANTHROPIC_WEATHER_TOOL])
        with self.client.messages.stream(**request) as stream:
            final = stream.get_final_message()
        self.expect_tool_use(final)
        self.expect_openai_request(stream=True, tools=True)

    def x_api_key(self) -> None:
        message = self.x_api_key_client.messages.create(**self.request())
        self.expect_message(message, self.text, "end_turn")

    def count_tokens(self) -> None:
        request = self.request()
        del request["max_tokens"]
        counted = self.client.messages.count_tokens(**request)
        tokens = counted.input_tokens
        assert isinstance(tokens, int) and tokens > 0, f"input_tokens {tokens!r}"

    @staticmethod
    def expect_anthropic_error(e: anthropic.APIStatusError, kind: str) -> None:
        body = e.body
        assert isinstance(body, dict) and body.get("type") == "error", f"body {body!r}"
        error = body.get("error")
        assert isinstance(error, dict), f"body {body!r} has no error object"
        assert error.get("type") == kind, f"body {body!r}, want error.type {kind}"
        message = error.get("message")
        assert isinstance(message, str) and message, f"body {body!r} has no message"

    def wrong_proxy_key(self) -> None:
        def call() -> None:
            e = expect_status_error(
                anthropic.AuthenticationError,
                lambda: self.bad_client.messages.create(**self.request()),
            )
            self.expect_anthropic_error(e, "authentication_error")

        expect_nothing_forwarded(self.recorder, call)

    def model_without_provider(self) -> None:
        def call() -> None:
            request = dict(self.request(), model=OPENAI_MODEL)
            e = expect_status_error(
                anthropic.BadRequestError, lambda: self.client.messages.create(**request)
            )
            self.expect_anthropic_error(e, "invalid_request_error")

        expect_nothing_forwarded(self.recorder, call)

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("anthropic sdk -> openai: messages.create", self.create),
            ("anthropic sdk -> openai: messages.stream", self.stream),
            ("anthropic sdk -> openai: tools (create)", self.tools_create),
            ("anthropic sdk -> openai: tools (stream)", self.tools_stream),
            ("anthropic sdk: proxy key as x-api-key", self.x_api_key),
            ("anthropic sdk: messages.count_tokens", self.count_tokens),
            ("anthropic sdk: wrong proxy key -> AuthenticationError", self.wrong_proxy_key),
            (
                "anthropic sdk: model without provider -> BadRequestError",
                self.model_without_provider,
            ),
        ]


class AnthropicSdkVia(AnthropicSdkChecks):
    """The anthropic SDK through `/v1/messages` to another provider of the hub (translated
    Anthropic -> OpenAI -> the provider's format and back): the same calls, the upstream
    request checked as that provider's openai-SDK checks check it."""

    def __init__(self, clients: dict[str, anthropic.Anthropic], upstream: TranslatedChatChecks) -> None:
        super().__init__(clients, upstream.recorder)
        self.upstream = upstream
        self.model = upstream.model
        self.text = upstream.text
        self.usage = upstream.usage

    def expect_openai_request(self, stream: bool, tools: bool) -> None:
        self.upstream.expect_chat_request(stream=stream, tools=tools)

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        p = self.upstream.provider
        return [
            (f"anthropic sdk -> {p}: messages.create", self.create),
            (f"anthropic sdk -> {p}: messages.stream", self.stream),
            (f"anthropic sdk -> {p}: tools (create)", self.tools_create),
            (f"anthropic sdk -> {p}: tools (stream)", self.tools_stream),
        ]


class AnthropicPassThroughChecks:
    """The anthropic SDK against `anthropic/*` on `/v1/messages`: passed through to the Anthropic
    mock with the client's body unchanged but for the model, betas forwarded, and the answer
    Anthropic's own (its model named `anthropic/...`)."""

    model = f"anthropic/{CLAUDE_MODEL}"

    def __init__(self, clients: dict[str, anthropic.Anthropic], recorder: Recorder) -> None:
        self.client = clients["bearer"]
        self.recorder = recorder

    def request(self) -> dict:
        system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]
        return dict(
            model=self.model,
            max_tokens=64,
            system=system,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": BETA},
        )

    def expect_passed_through(self, path: str, stream: bool) -> None:
        call = self.recorder.last("POST", path)
        body, headers = call["body"], call["headers"]
        assert body.get("model") == CLAUDE_MODEL, f"upstream got model {body.get('model')!r}"
        assert headers.get("x-api-key") == ANTHROPIC_KEY, "upstream did not get the pool key"
        assert BETA in (headers.get("anthropic-beta") or ""), f"beta header {headers.get('anthropic-beta')!r}"
        if path == "/v1/messages":
            assert bool(body.get("stream")) == stream, f"upstream got stream {body.get('stream')!r}"
            cached = body.get("system", [{}])[0].get("cache_control")
            assert cached == {"type": "ephemeral"}, f"cache_control arrived as {cached!r}"

    def create(self) -> None:
        message = self.client.messages.create(**self.request())
        text = "".join(block.text for block in message.content if block.type == "text")
        assert text == CLAUDE_TEXT, f"got {message.content!r}"
        assert message.model == self.model, f"model named {message.model!r}"
        assert message.usage.input_tokens == CLAUDE_USAGE["input_tokens"], f"usage {message.usage!r}"
        self.expect_passed_through("/v1/messages", stream=False)

    def stream(self) -> None:
        with self.client.messages.stream(**self.request()) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == CLAUDE_TEXT, f"streamed {text!r}"
        assert final.model == self.model, f"model named {final.model!r}"
        self.expect_passed_through("/v1/messages", stream=True)

    def count_tokens(self) -> None:
        request = self.request()
        request.pop("max_tokens")
        counted = self.client.messages.count_tokens(**request)
        assert counted.input_tokens == CLAUDE_COUNTED_TOKENS, f"counted {counted.input_tokens}"
        self.expect_passed_through("/v1/messages/count_tokens", stream=False)

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("anthropic sdk -> anthropic pass-through: messages.create (cache_control, beta)", self.create),
            ("anthropic sdk -> anthropic pass-through: messages.stream", self.stream),
            ("anthropic sdk -> anthropic pass-through: count_tokens is Anthropic's", self.count_tokens),
        ]


def anthropic_clients(port: int) -> dict[str, anthropic.Anthropic]:
    """anthropic 2.x sends its api_key as `Authorization: Bearer`; older versions, Claude Code and
    curl users send `x-api-key`, which the second client does (the SDK drops an omitted header)."""
    common = {"base_url": f"http://127.0.0.1:{port}", "max_retries": 0, "timeout": IO_TIMEOUT}
    omit = getattr(anthropic, "omit", None)
    if omit is None:  # an SDK that old sends x-api-key itself
        x_api_key = anthropic.Anthropic(api_key=PROXY_KEY, **common)
    else:
        headers = {"X-Api-Key": PROXY_KEY, "Authorization": omit}
        x_api_key = anthropic.Anthropic(api_key="unused", default_headers=headers, **common)
    return {
        "bearer": anthropic.Anthropic(api_key=PROXY_KEY, **common),
        "x-api-key": x_api_key,
        "wrong key": anthropic.Anthropic(api_key="wrong-key", **common),
    }


def upstreams_never_saw_proxy_key(recorders: dict[str, Recorder]) -> None:
    leaks = [
        f"{name} {c['method']} {c['path']} header {header}"
        for name, recorder in recorders.items()
        for c in recorder.seen()
        for header, value in c["headers"].items()
        if PROXY_KEY in value
    ]
    assert not leaks, f"the proxy key reached: {leaks}"


# ---- running ---------------------------------------------------------------------------------


def run_checks(port: int, recorders: dict[str, Recorder], tally: Tally) -> None:
    openai_common = {
        "base_url": f"http://127.0.0.1:{port}/v1",
        "max_retries": 0,
        "timeout": IO_TIMEOUT,
    }
    with contextlib.ExitStack() as stack:
        oa = stack.enter_context(openai.OpenAI(api_key=PROXY_KEY, **openai_common))
        an = {name: stack.enter_context(c) for name, c in anthropic_clients(port).items()}
        checks = (
            AnthropicUpstreamChecks(oa, recorders["anthropic"]).all()
            + GeminiUpstreamChecks(oa, recorders["gemini"]).all()
            + VertexGeminiChecks(oa, recorders["vertex"]).all()
            + VertexClaudeChecks(oa, recorders["vertex"]).all()
            + [("anthropic sdk -> vertex/claude", lambda: anthropic_sdk_to_vertex_claude(an, recorders["vertex"]))]
            + BedrockUpstreamChecks(oa, recorders["bedrock"]).all()
            + AzureChecks(oa, recorders["azure"]).all()
            + AnthropicSdkVia(an, BedrockUpstreamChecks(oa, recorders["bedrock"])).all()
            + AnthropicSdkVia(an, AzureChecks(oa, recorders["azure"])).all()
            + [("openai sdk: models list has every provider", lambda: models_listed(oa, recorders))]
            + AnthropicSdkChecks(an, recorders["openai"]).all()
            + AnthropicPassThroughChecks(an, recorders["anthropic"]).all()
            + [
                (
                    "upstreams never saw the proxy key",
                    lambda: upstreams_never_saw_proxy_key(recorders),
                )
            ]
        )
        for name, check in checks:
            tally.run(name, check)


MOCKS: dict[str, type[MockHandler]] = {
    "anthropic": AnthropicMock,
    "gemini": GeminiMock,
    "openai": OpenAiMock,
    "vertex": VertexMock,
    "bedrock": BedrockMock,
    "azure": AzureMock,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH/TO/keyrelay", file=sys.stderr)
        return 2
    drop_proxy_settings()
    tally = Tally()
    servers: list[ThreadingHTTPServer] = []
    try:
        recorders: dict[str, Recorder] = {}
        for name, handler in MOCKS.items():
            server, recorders[name] = start_mock(handler, f"mock-{name}")
            servers.append(server)
        ports = {name: server.server_address[1] for name, server in zip(MOCKS, servers)}
        with tempfile.TemporaryDirectory(prefix="keyrelay-sdk-native-") as tmp:
            write_env(Path(tmp), ports)
            run_against_keyrelay(argv[1], Path(tmp), tally, lambda port: run_checks(port, recorders, tally))
    except Exception as e:  # a broken harness must still end with the summary line
        tally.fail("harness", describe(e))
        traceback.print_exc()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    print(f"{tally.passed} passed, {tally.failed} failed", flush=True)
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
