#!/usr/bin/env python3
"""Writes the binary ConverseStream bodies of the Bedrock golden cases.

For each tests/data/providers/bedrock/<case>/upstream_events.json (a list of messages, each
{"event": "<:event-type>", "payload": {...}} or {"exception": "<:exception-type>", "payload": {...}},
optionally with "corrupt_crc": true) it writes <case>/upstream.eventstream in the
application/vnd.amazon.eventstream framing: total length, headers length, prelude CRC32,
string headers (type 7), the JSON payload, message CRC32 (zlib's CRC-32, binascii.crc32).
Run it after editing an events file; the Rust golden test reads only the binary file.
"""
import binascii
import json
import pathlib
import struct


def header(name, value):
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(headers, payload, corrupt=False):
    block = b"".join(header(n, v) for n, v in headers)
    total = 16 + len(block) + len(payload)
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + block + payload
    crc = binascii.crc32(body) ^ (1 if corrupt else 0)
    return body + struct.pack(">I", crc)


def message(m):
    payload = json.dumps(m.get("payload", {}), separators=(",", ":"), ensure_ascii=False).encode()
    if "exception" in m:
        headers = [(":message-type", "exception"), (":exception-type", m["exception"]),
                   (":content-type", "application/json")]
    else:
        headers = [(":message-type", "event"), (":event-type", m["event"]),
                   (":content-type", "application/json")]
    return frame(headers, payload, m.get("corrupt_crc", False))


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "tests/data/providers/bedrock"
    for events in sorted(root.glob("*/upstream_events.json")):
        messages = json.loads(events.read_text())
        out = events.with_name("upstream.eventstream")
        out.write_bytes(b"".join(message(m) for m in messages))
        print(out)


if __name__ == "__main__":
    main()
