"""The two sides of scripts/soak.sh: a failing mock upstream and the clients that load it.

    soak_load.py mock PORT_FILE FAILURE_RATE
        An OpenAI-compatible upstream on 127.0.0.1:0 (port written to PORT_FILE) for chat
        completions (plain and streamed) and embeddings, keep-alive. A FAILURE_RATE share of
        requests fails, in four equal parts: 429 with Retry-After: 1, 500, a connection reset
        (mid-stream for a stream), and a stall (silence until the caller gives up and closes).
        It counts requests per key id (what keyrelay writes in key_usage.json: the provider,
        a colon, the first 12 hex digits of the key's SHA-256) and the most requests it ever
        had at once per (key, model); GET /_stats answers both as JSON.
    soak_load.py clients URL SECONDS WORKERS DISCONNECT_RATE OUT_FILE
        WORKERS loops of mixed requests for SECONDS (half chat, three tenths streamed chat,
        a fifth embeddings, a short random pause between them); a DISCONNECT_RATE share are
        dropped by the client before the answer ends. Writes a JSON summary to OUT_FILE.

asyncio with uvloop when it is installed; plain sockets and HTTP/1.1.
"""

import asyncio
import hashlib
import json
import os
import random
import re
import socket
import struct
import sys
import time

try:
    import uvloop
except ImportError:
    uvloop = None

HEAD_END = b"\r\n\r\n"
# A request that ended because the caller closed its connection is counted as ended this much
# earlier than the mock saw it: keyrelay releases its key slot before it closes the socket,
# and may hand the slot to a new request that reaches the mock before the old socket's end does.
CLOSE_GRACE_S = 0.05


class Stats:
    def __init__(self):
        self.requests = {}  # key id -> requests
        self.intervals = []  # (key id, model, start, end, closed_by_caller, outcome)
        self.outcomes = {}

    def count(self, outcome):
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def max_concurrency(self):
        """The most requests at once per (key, model), from the intervals (a sweep)."""
        points = []
        for i, (key, model, start, end, closed, _) in enumerate(self.intervals):
            end = max(start, end - CLOSE_GRACE_S) if closed else end
            points.append((start, 1, (key, model), i))
            points.append((end, -1, (key, model), i))
        points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same instant
        now, most, open_now, at_most = {}, {}, {}, {}
        for _, step, km, i in points:
            now[km] = now.get(km, 0) + step
            (open_now.setdefault(km, set()).add if step > 0 else open_now.setdefault(km, set()).discard)(i)
            if now[km] > most.get(km, 0):
                most[km] = now[km]
                at_most[km] = sorted(open_now[km])
        # The requests open together at each pair's peak: start, end (relative), outcome.
        detail = {
            f"{k} {m}": [(round(self.intervals[i][2] - self.intervals[at_most[(k, m)][0]][2], 4),
                          round(self.intervals[i][3] - self.intervals[at_most[(k, m)][0]][2], 4),
                          self.intervals[i][5]) for i in at_most[(k, m)]]
            for (k, m) in most
        }
        return {f"{k} {m}": n for (k, m), n in most.items()}, detail


STATS = Stats()
# SOAK_FAILURE_KINDS narrows the failures to some of these (comma-separated), to study one.
FAILURE_KINDS = os.environ.get("SOAK_FAILURE_KINDS", "429,500,reset,stall").split(",")


def key_id(authorization: str) -> str:
    key = authorization.split(" ", 1)[-1].strip()
    return "openai:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def http_reply(status, reason, body, content_type="application/json", extra=b""):
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status, reason, content_type.encode(), len(body), extra, body)


def chat_json(model):
    return json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion", "created": 1741569952, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the soak mock."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14}}).encode()


def sse(delta, finish=None, usage=None):
    body = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1741569952,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["choices"], body["usage"] = [], usage
    data = b"data: " + json.dumps(body).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def embeddings_json(n):
    data = [{"object": "embedding", "index": i, "embedding": [0.01 * i, -0.02, 0.03, 0.04]} for i in range(n)]
    return json.dumps({"object": "list", "data": data, "model": "text-embedding-3-small",
                       "usage": {"prompt_tokens": n, "total_tokens": n}}).encode()


async def wait_closed_by_caller(reader, limit_s=120):
    """A stall: say nothing until the caller closes (or a long time passes)."""
    try:
        await asyncio.wait_for(reader.read(), limit_s)
    except asyncio.TimeoutError:
        pass


def reset(writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def stream_events(reader, writer, failure):
    """A stream of 10 events, 50 ms apart; a reset or a stall midway if so chosen."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    cut = random.randint(1, 9) if failure in ("reset", "stall") else None
    for i in range(10):
        if i == cut:
            if failure == "reset":
                reset(writer)
                return "reset", False
            await wait_closed_by_caller(reader)
            return "stall", True
        writer.write(sse({"content": f"word{i} "}))
        await writer.drain()
        # The caller sends nothing during a stream, so the reader at its end means the caller
        # dropped the stream (looked at every 10 ms, without reading: a read would race the
        # caller's next request on this keep-alive connection).
        for _ in range(5):
            await asyncio.sleep(0.01)
            if reader.at_eof():
                return "dropped by caller", True
    writer.write(sse({}, "stop") + sse({}, usage={"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18}))
    data = b"data: [DONE]\n\n"
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
    await writer.drain()
    return "ok", False


async def handle(reader, writer, failure_rate):
    try:
        while True:
            head = await reader.readuntil(HEAD_END)
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            first = head.split(b"\r\n", 1)[0].decode()
            if first.startswith("GET /_stats"):
                most, detail = STATS.max_concurrency()
                out = json.dumps({"requests": STATS.requests, "max_concurrency": most, "peaks": detail,
                                  "outcomes": STATS.outcomes}).encode()
                writer.write(http_reply(200, b"OK", out))
                await writer.drain()
                continue
            auth = re.search(rb"(?i)\r\nauthorization:\s*([^\r]*)", head)
            key = key_id(auth.group(1).decode()) if auth else "none"
            req = json.loads(body or b"{}")
            model = req.get("model", "?")
            STATS.requests[key] = STATS.requests.get(key, 0) + 1
            started = time.monotonic()
            failure = None
            if random.random() < failure_rate:
                failure = random.choice(FAILURE_KINDS)
            outcome, closed = await answer(reader, writer, first, req, failure)
            STATS.count(outcome)
            STATS.intervals.append((key, model, started, time.monotonic(), closed, outcome))
            if outcome in ("reset", "stall", "dropped by caller"):
                writer.close()
                return
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def answer(reader, writer, first, req, failure):
    if failure == "429":
        writer.write(http_reply(429, b"Too Many Requests",
                                b'{"error":{"message":"rate limited","type":"requests","code":"rate_limit_exceeded"}}',
                                extra=b"retry-after: 1\r\n"))
        await writer.drain()
        return "429", False
    if failure == "500":
        writer.write(http_reply(500, b"Internal Server Error", b'{"error":{"message":"boom","type":"server_error"}}'))
        await writer.drain()
        return "500", False
    if "/embeddings" in first:
        if failure == "reset":
            reset(writer)
            return "reset", False
        if failure == "stall":
            await wait_closed_by_caller(reader)
            return "stall", True
        inputs = req.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        writer.write(http_reply(200, b"OK", embeddings_json(n)))
        await writer.drain()
        return "ok", False
    if req.get("stream"):
        return await stream_events(reader, writer, failure)
    if failure == "reset":
        reset(writer)
        return "reset", False
    if failure == "stall":
        await wait_closed_by_caller(reader)
        return "stall", True
    writer.write(http_reply(200, b"OK", chat_json(req.get("model", "gpt-4o-mini"))))
    await writer.drain()
    return "ok", False


async def mock(port_file, failure_rate):
    server = await asyncio.start_server(lambda r, w: handle(r, w, failure_rate), "127.0.0.1", 0, backlog=1024)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


# --- clients -------------------------------------------------------------------------------

BODIES = {
    "chat": {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    "stream": {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    "embed": {"model": "openai/text-embedding-3-small", "input": "hi"},
}


async def one_request(host, port, kind, drop, tally):
    path = "/v1/embeddings" if kind == "embed" else "/v1/chat/completions"
    body = json.dumps(BODIES[kind]).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (path.encode(), len(body), body))
        if drop:
            # Gone before the answer, or partway through a stream.
            await asyncio.sleep(random.uniform(0, 0.3))
            tally["dropped"] = tally.get("dropped", 0) + 1
            reset(writer)
            return
        data = await asyncio.wait_for(reader.read(), 60)
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "no answer"
        key = f"{kind} {status}"
        tally[key] = tally.get(key, 0) + 1
    finally:
        writer.close()


async def client_loop(host, port, deadline, disconnect_rate, tally):
    while time.monotonic() < deadline:
        kind = random.choices(["chat", "stream", "embed"], [5, 3, 2])[0]
        drop = random.random() < disconnect_rate
        try:
            await one_request(host, port, kind, drop, tally)
        except (OSError, asyncio.TimeoutError) as e:
            tally[f"{kind} error {type(e).__name__}"] = tally.get(f"{kind} error {type(e).__name__}", 0) + 1
        tally["sent"] = tally.get("sent", 0) + 1
        await asyncio.sleep(random.uniform(0, 0.05))


async def clients(url, seconds, workers, disconnect_rate, out_file):
    m = re.match(r"http://([^:/]+):(\d+)", url)
    host, port = m.group(1), int(m.group(2))
    tally = {}
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(host, port, deadline, disconnect_rate, tally) for _ in range(workers)))
    with open(out_file, "w") as f:
        json.dump(tally, f, sort_keys=True)


def main():
    if uvloop:
        uvloop.install()
    mode = sys.argv[1]
    if mode == "mock":
        asyncio.run(mock(sys.argv[2], float(sys.argv[3])))
    elif mode == "clients":
        url, seconds, workers, rate, out = sys.argv[2:7]
        asyncio.run(clients(url, float(seconds), int(workers), float(rate), out))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
