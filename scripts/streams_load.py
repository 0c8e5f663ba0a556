"""The two sides of scripts/streams.sh: a streaming upstream and the clients that measure it.

    streams_load.py upstream PORT_FILE EVENTS INTERVAL_S
        An OpenAI-compatible upstream on 127.0.0.1:0 (its port written to PORT_FILE): every
        POST /v1/chat/completions gets a chat.completion.chunk stream of EVENTS events, one
        every INTERVAL_S from the moment the request arrived, then [DONE]. Each event's content
        is "seq:scheduled:sent" (time.monotonic(), the same clock in every process on Linux),
        so a client can tell how late it arrived against its schedule and against its send.
    streams_load.py client URL STREAMS EVENTS RAMP_S OUT_FILE
        STREAMS concurrent streaming requests to URL (connections opened over RAMP_S), each
        read to its end; writes to OUT_FILE one JSON object: per stream the events received and
        whether [DONE] came, and every event's delay against its schedule and its send, in ms.

asyncio with uvloop when it is installed; plain sockets and HTTP/1.1, no client library, so
that what is measured is the proxy, not a client's parser.
"""

import asyncio
import json
import os
import re
import sys
import time

try:
    import uvloop
except ImportError:  # plain asyncio: slower, still correct
    uvloop = None

HEAD_END = b"\r\n\r\n"


async def read_request(reader):
    """Reads one request head and its Content-Length body; returns False at end of input."""
    head = await reader.readuntil(HEAD_END)
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if length:
        await reader.readexactly(int(length.group(1)))
    return True


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def event(content: str, finish=None) -> bytes:
    delta = {"content": content} if content else {}
    body = {
        "id": "chatcmpl-streams",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def serve_stream(reader, writer, events, interval):
    try:
        while await read_request(reader):
            started = time.monotonic()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for seq in range(events):
                scheduled = started + (seq + 1) * interval
                pause = scheduled - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                sent = time.monotonic()
                writer.write(chunk(event(f"{seq}:{scheduled:.6f}:{sent:.6f}")))
            writer.write(chunk(event("", "stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def upstream(port_file, events, interval):
    server = await asyncio.start_server(
        lambda r, w: serve_stream(r, w, events, interval), "127.0.0.1", 0, backlog=4096
    )
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


CONTENT = re.compile(rb'"content":"(\d+):([0-9.]+):([0-9.]+)"')


class Dechunker:
    """Incremental chunked transfer decoding: feed bytes, get payload bytes."""

    def __init__(self):
        self.buf = b""
        self.left = 0  # payload bytes left in the current chunk
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while not self.done:
            if self.left:
                take = self.buf[: self.left]
                out.append(take)
                self.buf = self.buf[len(take) :]
                self.left -= len(take)
                if self.left:
                    break
                self.left = -2  # the CRLF after the payload
            if self.left < 0:
                if len(self.buf) < 2:
                    break
                self.buf, self.left = self.buf[2:], 0
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self.buf[:line_end].split(b";")[0], 16)
            self.buf = self.buf[line_end + 2 :]
            if size == 0:
                self.done = True
            self.left = size
        return b"".join(out)


async def one_stream(url_host, url_port, path, delays, sent_delays, results):
    try:
        reader, writer = await asyncio.open_connection(url_host, url_port)
    except OSError as e:
        results.append({"status": f"connect: {e}", "events": 0, "done": False})
        return
    body = json.dumps(
        {"model": "openai/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (path.encode(), url_host.encode(), len(body), body)
    )
    got, done, status = 0, False, b"?"
    head = b""
    try:
        while HEAD_END not in head:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed before the head")
            head += data
        head, rest = head.split(HEAD_END, 1)
        status = head.split(b" ", 2)[1]
        chunked = b"chunked" in head.lower()
        dechunk = Dechunker()
        pending = b""
        data = rest
        while True:
            now = time.monotonic()
            pending += dechunk.feed(data) if chunked else data
            # Whole SSE events only: an event cut across reads waits for its end.
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                complete, pending = pending[: cut + 2], pending[cut + 2 :]
                for m in CONTENT.finditer(complete):
                    got += 1
                    delays.append((now - float(m.group(2))) * 1000)
                    sent_delays.append((now - float(m.group(3))) * 1000)
                if b"data: [DONE]" in complete:
                    done = True
            if (chunked and dechunk.done) or done:
                break
            data = await reader.read(65536)
            if not data:
                break
    except (ConnectionError, ValueError) as e:
        status = status + b" " + str(e).encode()
    finally:
        writer.close()
    results.append({"status": status.decode(errors="replace"), "events": got, "done": done})


async def clients(url, streams, events, ramp, out_file):
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    delays, sent_delays, results = [], [], []
    tasks = []
    for i in range(streams):
        tasks.append(asyncio.create_task(one_stream(host, port, path, delays, sent_delays, results)))
        await asyncio.sleep(ramp / streams)
    await asyncio.gather(*tasks, return_exceptions=True)
    with open(out_file, "w") as f:
        json.dump({"results": results, "delays": delays, "sent_delays": sent_delays}, f)


def main():
    mode = sys.argv[1]
    if uvloop:
        uvloop.install()
    if mode == "upstream":
        asyncio.run(upstream(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif mode == "client":
        url, streams, events, ramp, out = sys.argv[2:7]
        asyncio.run(clients(url, int(streams), int(events), float(ramp), out))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
