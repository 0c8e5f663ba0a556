#!/usr/bin/env python3
"""Proves the official `openai` Python SDK works unchanged against keyrelay.

Usage: sdk_check.py PATH/TO/keyrelay

Starts a mock OpenAI-compatible upstream (standard library only), a keyrelay that points its
`openai` provider at it, and runs the SDK's chat (plain, streaming, stream helper with tools),
embeddings, models, Responses API (`responses.create`, `.stream` and `.parse`, translated through
a second provider `local` on the same mock, and passed through for `openai`) and error paths
through the proxy. Prints `ok  <name>` or
`FAIL <name>: reason` per check and `N passed, M failed` last; exits 0 only if all passed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import traceback
import urllib.request
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import openai
from prometheus_client.parser import text_string_to_metric_families
from sdk_harness import (
    IO_TIMEOUT,
    Tally,
    WEATHER_PARAMETERS,
    UpstreamReplies,
    describe,
    drop_proxy_settings,
    openai_chunk,
    openai_text_chunks,
    openai_tool_chunks,
    run_against_keyrelay,
)

PROVIDER_KEY = "sk-mock-key-1234"
PROXY_KEY = "proxy-secret"
UPSTREAM_MODEL = "gpt-mock"
MODEL = f"openai/{UPSTREAM_MODEL}"

# What the mock upstream answers. The streamed text arrives in several deltas; the tool call's
# arguments in several fragments that only make valid JSON once joined.
REPLY_TEXT = "Hello from the mock upstream."
STREAM_TEXT_PARTS = ["Hello", " from", " the", " mock", " upstream", "."]
TOOL_CALL_ID = "call_mock_0001"
TOOL_NAME = "get_weather"
TOOL_ARG_FRAGMENTS = ['{"ci', 'ty": "Par', 'is", "un', 'it": "celsius"}']
USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
# Mostly values float32 cannot hold exactly: vectors cross keyrelay as float32, and comparing
# after rounding both sides to float32 is what proves nothing else was lost.
EMBEDDING_BASE = [0.1, -0.25, 0.3333333333333333, 1e-7, -123.456, 0.0]

# /v1/responses: a custom OpenAI-compatible provider `local` on the same mock, so the Responses
# API is translated through the chat hub (the `openai` provider passes it through).
RESP_UPSTREAM_MODEL = "resp-mock"
RESP_MODEL = f"local/{RESP_UPSTREAM_MODEL}"
WEATHER_JSON = {"city": "Paris", "temp_c": 21}
WEATHER_FUNCTION = {
    "type": "function",
    "name": TOOL_NAME,
    "description": "The weather in a city.",
    "strict": True,
    "parameters": WEATHER_PARAMETERS,
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "The weather in a city.",
        # The SDK's stream helper only accepts strict function tools.
        "strict": True,
        "parameters": WEATHER_PARAMETERS,
    },
}


# ---- mock upstream ---------------------------------------------------------------------------


def embedding_for(index: int) -> list[float]:
    return [v + index for v in EMBEDDING_BASE]


class Upstream:
    """The mock's record of what reached it: one dict per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[dict] = []

    def record(self, entry: dict) -> None:
        with self._lock:
            self._seen.append(entry)

    def seen(self) -> list[dict]:
        with self._lock:
            return list(self._seen)


class MockHandler(UpstreamReplies, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT  # socket timeout of each connection
    # Headers and body go out in separate writes; with Nagle on, each answer waits ~40 ms for
    # a delayed ACK.
    disable_nagle_algorithm = True
    upstream: Upstream  # set on the subclass made by start_mock

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the check's output to its own lines

    def read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def remember(self, body: dict) -> None:
        self.upstream.record(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
        )

    def send_sse(self, chunks: list[dict]) -> None:
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
        self.send_events(events + [b"data: [DONE]\n\n"])

    def do_GET(self) -> None:
        self.remember({})
        if self.path == "/v1/models":
            model = {"id": UPSTREAM_MODEL, "object": "model", "created": 0, "owned_by": "mock"}
            self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.not_found()

    def do_POST(self) -> None:
        body = self.read_json()
        self.remember(body)
        if self.path == "/v1/chat/completions" and body.get("model") == RESP_UPSTREAM_MODEL:
            self.responses_chat(body)
        elif self.path == "/v1/responses":
            self.responses_passthrough(body)
        elif self.path == "/v1/chat/completions":
            self.chat(body)
        elif self.path == "/v1/embeddings":
            self.embeddings(body)
        else:
            self.not_found()

    def chat(self, body: dict) -> None:
        if not body.get("stream"):
            message = {"role": "assistant", "content": REPLY_TEXT, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            completion = {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": 1700000000,
                "model": UPSTREAM_MODEL,
                "choices": [choice],
                "usage": USAGE,
            }
            return self.send_json(200, completion)
        chunks = (
            openai_tool_chunks(UPSTREAM_MODEL, TOOL_CALL_ID, TOOL_NAME, TOOL_ARG_FRAGMENTS)
            if body.get("tools")
            else openai_text_chunks(UPSTREAM_MODEL, STREAM_TEXT_PARTS)
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(openai_chunk(UPSTREAM_MODEL, [], USAGE))
        self.send_sse(chunks)

    def embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": embedding_for(i)}
            for i in range(count)
        ]
        usage = {"prompt_tokens": 3 * count, "total_tokens": 3 * count}
        answer = {"object": "list", "data": data, "model": UPSTREAM_MODEL, "usage": usage}
        self.send_json(200, answer)

    # -- /v1/responses: the chat answers behind the translated model, and the Responses API
    # itself for the openai provider's pass-through.

    def responses_chat(self, body: dict) -> None:
        messages = body.get("messages") or []
        answered = any(m.get("role") == "tool" for m in messages)
        if body.get("tools") and not answered:
            call = {"id": TOOL_CALL_ID, "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": "".join(TOOL_ARG_FRAGMENTS)}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
            chunks = openai_tool_chunks(RESP_UPSTREAM_MODEL, TOOL_CALL_ID, TOOL_NAME, TOOL_ARG_FRAGMENTS)
        else:
            text = json.dumps(WEATHER_JSON) if body.get("response_format") else REPLY_TEXT
            message, finish = {"role": "assistant", "content": text}, "stop"
            parts = [text[:10], text[10:]] if body.get("response_format") else STREAM_TEXT_PARTS
            chunks = openai_text_chunks(RESP_UPSTREAM_MODEL, parts)
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            completion = {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": 1700000000,
                "model": RESP_UPSTREAM_MODEL,
                "choices": [choice],
                "usage": USAGE,
            }
            return self.send_json(200, completion)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(openai_chunk(RESP_UPSTREAM_MODEL, [], USAGE))
        self.send_sse(chunks)

    def responses_passthrough(self, body: dict) -> None:
        text = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
        item = {"type": "message", "id": "msg_up", "status": "completed", "role": "assistant"}
        item["content"] = [text]
        usage = {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12}
        done = {"id": "resp_up", "object": "response", "created_at": 1700000000, "status": "completed",
                "model": body.get("model"), "output": [item], "usage": usage, "error": None,
                "incomplete_details": None, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
        if not body.get("stream"):
            return self.send_json(200, done)
        started = {**done, "status": "in_progress", "output": [], "usage": None}
        at = {"item_id": "msg_up", "output_index": 0, "content_index": 0}
        events = [
            {"type": "response.created", "response": started},
            {"type": "response.output_item.added", "output_index": 0,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **at, "part": {**text, "text": ""}},
            *(
                {"type": "response.output_text.delta", **at, "delta": part, "logprobs": []}
                for part in STREAM_TEXT_PARTS
            ),
            {"type": "response.output_text.done", **at, "text": REPLY_TEXT, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": text},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": done},
        ]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for seq, event in enumerate(events):
            payload = json.dumps({**event, "sequence_number": seq})
            data = f"event: {event['type']}\ndata: {payload}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def not_found(self) -> None:
        error = {"message": f"no route {self.path}", "type": "invalid_request_error", "code": None}
        self.send_json(404, {"error": error})


def start_mock() -> tuple[ThreadingHTTPServer, Upstream]:
    upstream = Upstream()
    handler = type("BoundMockHandler", (MockHandler,), {"upstream": upstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mock-upstream", daemon=True).start()
    return server, upstream


# ---- keyrelay process ------------------------------------------------------------------------


def write_env(data_dir: Path, mock_port: int) -> None:
    (data_dir / ".env").write_text(
        f"OPENAI_API_KEY={PROVIDER_KEY}\n"
        f"OPENAI_API_BASE=http://127.0.0.1:{mock_port}/v1\n"
        f"PROXY_API_KEY={PROXY_KEY}\n"
        f"LOCAL_API_KEY={PROVIDER_KEY}\n"
        f"LOCAL_API_BASE=http://127.0.0.1:{mock_port}/v1\n"
    )


# ---- checks ----------------------------------------------------------------------------------


class Checks:
    """Each check calls keyrelay through the SDK and asserts on the answer and on what the mock
    upstream received."""

    def __init__(self, client: openai.OpenAI, bad_client: openai.OpenAI, upstream: Upstream):
        self.client = client
        self.bad_client = bad_client
        self.upstream = upstream

    def last_upstream(self, path: str) -> dict:
        calls = [c for c in self.upstream.seen() if c["path"] == path]
        assert calls, f"the upstream never got {path}"
        return calls[-1]

    def expect_forwarded(self, path: str) -> dict:
        """The latest upstream request on `path` carried the provider key and the bare model."""
        call = self.last_upstream(path)
        auth = call["authorization"]
        assert auth == f"Bearer {PROVIDER_KEY}", f"upstream got Authorization {auth!r}"
        model = call["body"].get("model")
        assert model == UPSTREAM_MODEL, f"upstream got model {model!r}, want {UPSTREAM_MODEL!r}"
        return call

    def chat_non_streaming(self) -> None:
        completion = self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        content = completion.choices[0].message.content
        assert content == REPLY_TEXT, f"content {content!r}"
        usage = completion.usage
        assert usage is not None and usage.total_tokens == USAGE["total_tokens"], f"usage {usage}"
        self.expect_forwarded("/v1/chat/completions")

    def chat_streaming(self) -> None:
        stream = self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(stream)
        assert chunks, "no chunks"
        # keyrelay asks the upstream for usage on every stream, so the mock did send a
        # usage-only chunk here: the proxy must have dropped it.
        empty = [i for i, c in enumerate(chunks) if not c.choices]
        assert not empty, f"chunks {empty} have no choices although include_usage was not asked"
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == "".join(STREAM_TEXT_PARTS), f"joined deltas {text!r}"
        self.expect_forwarded("/v1/chat/completions")

    def chat_streaming_usage(self) -> None:
        stream = self.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert chunks, "no chunks"
        last = chunks[-1]
        assert last.choices == [], f"last chunk has choices {last.choices}"
        assert last.usage is not None, "last chunk has no usage"
        assert last.usage.total_tokens == USAGE["total_tokens"], f"usage {last.usage}"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "".join(STREAM_TEXT_PARTS), f"joined deltas {text!r}"
        self.expect_forwarded("/v1/chat/completions")

    def stream_helper(self) -> Callable:
        # `.stream()` moved from `client.beta.chat.completions` to `client.chat.completions`.
        helper = getattr(self.client.chat.completions, "stream", None)
        if helper is None:
            helper = self.client.beta.chat.completions.stream
        return helper

    def chat_stream_helper_tools(self) -> None:
        with self.stream_helper()(
            model=MODEL,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[WEATHER_TOOL],
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}"
        calls = choice.message.tool_calls or []
        assert len(calls) == 1, f"{len(calls)} tool calls"
        call = calls[0]
        assert call.id == TOOL_CALL_ID, f"tool call id {call.id!r}"
        assert call.function.name == TOOL_NAME, f"tool name {call.function.name!r}"
        want = json.loads("".join(TOOL_ARG_FRAGMENTS))
        got = json.loads(call.function.arguments)
        assert got == want, f"arguments {call.function.arguments!r}"
        self.expect_forwarded("/v1/chat/completions")

    def embeddings(self, encoding_format: str | None) -> None:
        inputs = ["first text", "second text"]
        extra = {} if encoding_format is None else {"encoding_format": encoding_format}
        response = self.client.embeddings.create(model=MODEL, input=inputs, **extra)
        indices = [item.index for item in response.data]
        assert indices == list(range(len(inputs))), f"indices {indices}"
        for item in response.data:
            want = array("f", embedding_for(item.index)).tolist()
            got = array("f", item.embedding).tolist()
            assert got == want, f"vector {item.index}: {item.embedding} != {want}"
        call = self.expect_forwarded("/v1/embeddings")
        sent_format = call["body"].get("encoding_format")
        assert sent_format in (None, "float"), f"upstream was asked for {sent_format!r}"

    def completions(self) -> None:
        """Legacy completions: a prompt becomes one chat request upstream, and the answer
        comes back as a text_completion, whole and streamed."""
        completion = self.client.completions.create(model=MODEL, prompt="Say hi", max_tokens=16)
        assert completion.object == "text_completion", f"object {completion.object!r}"
        assert completion.model == MODEL, f"model {completion.model!r}"
        choice = completion.choices[0]
        assert choice.text == REPLY_TEXT and choice.finish_reason == "stop", f"choice {choice}"
        assert completion.usage and completion.usage.total_tokens == USAGE["total_tokens"], f"usage {completion.usage}"
        call = self.expect_forwarded("/v1/chat/completions")
        sent = call["body"]
        assert sent.get("messages") == [{"role": "user", "content": "Say hi"}], f"upstream got {sent}"
        assert sent.get("max_tokens") == 16, f"upstream got max_tokens {sent.get('max_tokens')!r}"
        chunks = list(self.client.completions.create(model=MODEL, prompt="Say hi", stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == "".join(STREAM_TEXT_PARTS), f"joined chunks {text!r}"
        assert chunks[-1].choices[0].finish_reason == "stop", f"last chunk {chunks[-1]}"
        assert all(c.object == "text_completion" for c in chunks), "a chunk is not a text_completion"

    def models(self) -> None:
        ids = [m.id for m in self.client.models.list()]
        assert MODEL in ids, f"{MODEL} not in {ids}"
        card = self.client.models.retrieve(MODEL)
        assert card.id == MODEL, f"retrieved id {card.id!r}"
        call = self.last_upstream("/v1/models")
        assert call["authorization"] == f"Bearer {PROVIDER_KEY}", (
            f"upstream got Authorization {call['authorization']!r}"
        )

    def wrong_proxy_key(self) -> None:
        before = len(self.upstream.seen())
        try:
            self.bad_client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        except openai.AuthenticationError as e:
            assert e.status_code == 401, f"status {e.status_code}"
        else:
            raise AssertionError("no AuthenticationError")
        assert len(self.upstream.seen()) == before, "the request reached the upstream"

    def model_without_provider(self) -> None:
        before = len(self.upstream.seen())
        try:
            self.client.chat.completions.create(
                model=UPSTREAM_MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        except openai.BadRequestError as e:
            assert e.status_code == 400, f"status {e.status_code}"
        else:
            raise AssertionError("no BadRequestError")
        assert len(self.upstream.seen()) == before, "the request reached the upstream"

    def upstream_never_saw_proxy_key(self) -> None:
        seen = self.upstream.seen()
        assert seen, "the upstream got no requests"
        bad = [c for c in seen if c["authorization"] != f"Bearer {PROVIDER_KEY}"]
        assert not bad, f"requests with another Authorization: {bad}"

    # -- /v1/responses

    def last_chat_for_responses(self) -> dict:
        calls = [c for c in self.upstream.seen() if c["body"].get("model") == RESP_UPSTREAM_MODEL]
        assert calls, "the upstream never got the translated chat request"
        return calls[-1]["body"]

    def responses_create_text(self) -> None:
        response = self.client.responses.create(model=RESP_MODEL, instructions="Be brief.", input="hi")
        assert response.output_text == REPLY_TEXT, f"output_text {response.output_text!r}"
        assert response.status == "completed", f"status {response.status!r}"
        assert response.model == RESP_MODEL, f"model {response.model!r}"
        usage = response.usage
        assert usage is not None and usage.total_tokens == USAGE["total_tokens"], f"usage {usage}"
        messages = self.last_chat_for_responses()["messages"]
        assert messages[0] == {"role": "system", "content": "Be brief."}, f"messages {messages}"

    def responses_stream_text(self) -> None:
        deltas = []
        with self.client.responses.stream(model=RESP_MODEL, input="hi") as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            final = stream.get_final_response()
        assert "".join(deltas) == REPLY_TEXT, f"joined deltas {deltas!r}"
        assert final.output_text == REPLY_TEXT, f"final output_text {final.output_text!r}"
        assert final.usage is not None and final.usage.total_tokens == USAGE["total_tokens"], f"{final.usage}"

    def responses_tool_round_trip(self) -> None:
        question = [{"role": "user", "content": "weather in Paris?"}]
        first = self.client.responses.create(model=RESP_MODEL, input=question, tools=[WEATHER_FUNCTION])
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1, f"output {first.output}"
        call = calls[0]
        assert (call.call_id, call.name) == (TOOL_CALL_ID, TOOL_NAME), f"call {call}"
        want = json.loads("".join(TOOL_ARG_FRAGMENTS))
        assert json.loads(call.arguments) == want, f"arguments {call.arguments!r}"
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"}
        history = question + [item.model_dump(exclude_none=True) for item in first.output] + [output]
        second = self.client.responses.create(model=RESP_MODEL, input=history, tools=[WEATHER_FUNCTION])
        assert second.output_text == REPLY_TEXT, f"output_text {second.output_text!r}"
        messages = self.last_chat_for_responses()["messages"]
        assert messages[-2]["tool_calls"][0]["id"] == TOOL_CALL_ID, f"messages {messages}"
        want = {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "21 C"}
        assert messages[-1] == want, f"messages {messages}"

    def responses_stream_tool_call(self) -> None:
        with self.client.responses.stream(
            model=RESP_MODEL, input="weather in Paris?", tools=[WEATHER_FUNCTION]
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds, f"events {kinds}"
        call = final.output[0]
        assert call.type == "function_call" and call.call_id == TOOL_CALL_ID, f"output {final.output}"
        want = json.loads("".join(TOOL_ARG_FRAGMENTS))
        assert json.loads(call.arguments) == want, f"arguments {call.arguments!r}"

    def responses_json_schema(self) -> None:
        from pydantic import BaseModel

        class Weather(BaseModel):
            city: str
            temp_c: int

        parsed = self.client.responses.parse(model=RESP_MODEL, input="weather as JSON", text_format=Weather)
        assert parsed.output_parsed == Weather(**WEATHER_JSON), f"output_parsed {parsed.output_parsed!r}"
        sent = self.last_chat_for_responses()["response_format"]
        assert sent["type"] == "json_schema", f"response_format {sent}"
        assert sent["json_schema"]["name"] == "Weather", f"response_format {sent}"
        with self.client.responses.stream(
            model=RESP_MODEL, input="weather as JSON", text_format=Weather
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        streamed = final.output_parsed
        assert streamed == Weather(**WEATHER_JSON), f"streamed output_parsed {streamed!r}"

    def responses_passthrough(self) -> None:
        response = self.client.responses.create(model=MODEL, input="hi", store=False)
        assert response.output_text == REPLY_TEXT, f"output_text {response.output_text!r}"
        assert response.model == MODEL, f"model {response.model!r}"
        with self.client.responses.stream(model=MODEL, input="hi") as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert "".join(deltas) == REPLY_TEXT and final.output_text == REPLY_TEXT, f"deltas {deltas!r}"
        call = self.expect_forwarded("/v1/responses")
        assert call["body"].get("input") == "hi", f"body {call['body']}"

    def chat_requests_counted(self) -> float:
        """The chat completions answered 200 so far, as `/metrics` (parsed by the Prometheus
        client library's own text parser) counts them."""
        url = str(self.client.base_url).rstrip("/").removesuffix("/v1") + "/metrics"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {PROXY_KEY}"})
        with urllib.request.urlopen(request, timeout=IO_TIMEOUT) as page:
            assert page.status == 200, f"/metrics answered {page.status}"
            text = page.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "keyrelay_requests_total" and labels.get("route") == "/v1/chat/completions":
                    total += sample.value if labels.get("status") == "200" else 0
        return total

    def metrics_match_the_requests_sent(self) -> None:
        before = self.chat_requests_counted()
        for _ in range(3):
            self.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        after = self.chat_requests_counted()
        assert after - before == 3, f"/metrics counted {after - before} of 3 chat completions"

    def all(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("chat non-streaming", self.chat_non_streaming),
            ("chat streaming", self.chat_streaming),
            ("chat streaming with include_usage", self.chat_streaming_usage),
            ("chat stream helper with tools", self.chat_stream_helper_tools),
            ("embeddings float", lambda: self.embeddings("float")),
            ("embeddings default (base64)", lambda: self.embeddings(None)),
            ("completions.create, whole and streamed", self.completions),
            ("models list and retrieve", self.models),
            ("wrong proxy key -> AuthenticationError", self.wrong_proxy_key),
            ("model without provider -> BadRequestError", self.model_without_provider),
            ("responses.create text (translated)", self.responses_create_text),
            ("responses.stream text (translated)", self.responses_stream_text),
            ("responses.create tool call round trip", self.responses_tool_round_trip),
            ("responses.stream tool call", self.responses_stream_tool_call),
            ("responses json_schema (parse and stream)", self.responses_json_schema),
            ("responses pass-through for openai", self.responses_passthrough),
            ("/metrics parses as Prometheus text and counts the requests sent", self.metrics_match_the_requests_sent),
            ("upstream only saw the provider key", self.upstream_never_saw_proxy_key),
        ]


def run_checks(port: int, upstream: Upstream, tally: Tally) -> None:
    common = {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0, "timeout": IO_TIMEOUT}
    client = openai.OpenAI(api_key=PROXY_KEY, **common)
    bad_client = openai.OpenAI(api_key="wrong-key", **common)
    with client, bad_client:
        for name, check in Checks(client, bad_client, upstream).all():
            tally.run(name, check)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH/TO/keyrelay", file=sys.stderr)
        return 2
    drop_proxy_settings()
    tally = Tally()
    server, upstream = start_mock()
    try:
        with tempfile.TemporaryDirectory(prefix="keyrelay-sdk-") as tmp:
            write_env(Path(tmp), server.server_address[1])
            try:
                run_against_keyrelay(argv[1], Path(tmp), tally, lambda port: run_checks(port, upstream, tally))
            except Exception as e:  # a broken harness must still end with the summary line
                tally.fail("harness", describe(e))
                traceback.print_exc()
    finally:
        server.shutdown()
        server.server_close()
    print(f"{tally.passed} passed, {tally.failed} failed", flush=True)
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
