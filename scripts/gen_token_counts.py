#!/usr/bin/env python3
"""Writes the reference token counts that `src/tokens.rs` is tested against.

Run once by hand, never in CI (CI only reads the stored numbers):

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tiktoken litellm
    /tmp/tokvenv/bin/python scripts/gen_token_counts.py

It counts a fixed corpus with the real Python `tiktoken` under `o200k_base` and `cl100k_base` and writes
`tests/data/tokens/corpus.json` (the inputs) and `tests/data/tokens/expected.json` (the numbers).

tiktoken downloads its BPE files at first use, which fails offline. The `litellm` wheel ships the same
files (named by hash) in `litellm/litellm_core_utils/tokenizers/`; when `TIKTOKEN_CACHE_DIR` is not set
this script points it there.

Chat counts follow OpenAI's cookbook `num_tokens_from_messages` (3 tokens per message, every string
value of a message counted, +1 per `name`, +3 priming the reply), extended exactly as `src/tokens.rs`
documents for values the cookbook does not handle (content arrays, images, tool calls, tools). For
messages that hold only strings, the result is also checked against the cookbook function verbatim.
Text is encoded as ordinary text: special-token strings such as `<|endoftext|>` count as the plain text
they are (tiktoken's `encode_ordinary`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tokens"
ENCODINGS = ("o200k_base", "cl100k_base")

# Must match src/tokens.rs.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 85
IMAGE_PART_TYPES = ("image_url", "input_image", "image")


def _offline_cache() -> None:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("set TIKTOKEN_CACHE_DIR, or pip install litellm (it ships the BPE files tiktoken needs offline)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)


# ---------------------------------------------------------------------------------------------------
# Counting (the rules of src/tokens.rs)


def count(enc, text: str) -> int:
    return len(enc.encode_ordinary(text))


def canonical_json(value) -> str:
    """Compact JSON, keys sorted, non-ASCII kept: what src/tokens.rs serialises `tools` as."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def count_part(enc, part) -> int:
    if isinstance(part, str):
        return count(enc, part)
    if not isinstance(part, dict):
        return 0
    if part.get("type") in IMAGE_PART_TYPES:
        return IMAGE_TOKENS
    return sum(count(enc, part[field]) for field in ("text", "refusal") if isinstance(part.get(field), str))


def count_function_call(enc, call) -> int:
    if not isinstance(call, dict):
        return 0
    return sum(count(enc, call[field]) for field in ("name", "arguments") if isinstance(call.get(field), str))


def count_message(enc, message) -> int:
    n = TOKENS_PER_MESSAGE
    if isinstance(message, str):
        return n + count(enc, message)
    if not isinstance(message, dict):
        return n
    for key, value in message.items():
        if isinstance(value, str):
            n += count(enc, value)
            if key == "name":
                n += TOKENS_PER_NAME
        elif key == "content" and isinstance(value, list):
            n += sum(count_part(enc, part) for part in value)
        elif key == "tool_calls" and isinstance(value, list):
            n += sum(count_function_call(enc, call.get("function")) for call in value if isinstance(call, dict))
        elif key == "function_call" and isinstance(value, dict):
            n += count_function_call(enc, value)
    return n


def count_chat(enc, messages, tools) -> int:
    n = REPLY_PRIMING + sum(count_message(enc, m) for m in (messages if isinstance(messages, list) else []))
    if tools:
        n += count(enc, canonical_json(tools))
    return n


def cookbook_num_tokens_from_messages(enc, messages) -> int:
    """OpenAI cookbook "How to count tokens with tiktoken", verbatim but for `encode_ordinary`."""
    num_tokens = 0
    for message in messages:
        num_tokens += TOKENS_PER_MESSAGE
        for key, value in message.items():
            num_tokens += len(enc.encode_ordinary(value))
            if key == "name":
                num_tokens += TOKENS_PER_NAME
    num_tokens += 3
    return num_tokens


# ---------------------------------------------------------------------------------------------------
# The corpus

RUST_CODE = """use std::collections::HashMap;

/// Counts words.
pub fn word_count(text: &str) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}
"""

PY_CODE = """def fib(n: int) -> int:
\tif n < 2:
\t\treturn n
\treturn fib(n - 1) + fib(n - 2)

print([fib(i) for i in range(20)])  # 0, 1, 1, 2, 3, 5, ...
"""

JSON_DOC = json.dumps(
    {
        "id": "chatcmpl-9xYz",
        "object": "chat.completion",
        "created": 1732406400,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    },
    indent=2,
)

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. "
)

TEXTS = [
    ("empty", ""),
    ("hello", "Hello, world!"),
    ("lower", "hello world"),
    ("single_char", "a"),
    ("single_space", " "),
    ("leading_space", " leading space"),
    ("trailing_space", "trailing space "),
    ("spaces_inside", "multiple   spaces    between     words"),
    ("newlines", "\n\n\n"),
    ("crlf", "line one\r\nline two\r\n\r\nline four"),
    ("tabs", "\t\tindented\twith\ttabs\t"),
    ("space_run_1000", " " * 1000 + "x"),
    ("mixed_ws_run", " \t\n" * 200 + "end"),
    ("a_run_5000", "a" * 5000),
    ("ab_repeat", "ab " * 500),
    ("long_number", "12345678901234567890"),
    ("pi", "3.14159265358979323846264338327950288419716939937510"),
    ("big_power", str(7**700)),
    ("money", "$1,234,567.89 and €9.999,00 and ¥100000"),
    ("phone_date", "Call +1 (555) 010-9999 on 2024-11-24T13:45:00Z."),
    ("contractions", "I'm sure you'll see they've said we'd won't can't SHOULDN'T"),
    ("case_mix", "HELLO World hElLo WORLD hello"),
    ("emoji", "😀🎉👍🏽 family: 👨‍👩‍👧‍👦 flags: 🇯🇵🇫🇷 ❤️‍🔥"),
    ("chinese", "你好，世界！今天天气很好，我们一起去公园散步吧。"),
    ("japanese", "日本語のテキストです。カタカナとひらがなと漢字が混ざっています。"),
    ("korean", "한국어 문장입니다. 토큰 수를 세어 봅시다."),
    ("arabic", "مرحبا بالعالم، كيف حالك اليوم؟ هذا نص تجريبي."),
    ("hebrew", "שלום עולם, זהו טקסט לבדיקה."),
    ("russian", "Привет, мир! Съешь же ещё этих мягких французских булок."),
    ("greek", "Γειά σου Κόσμε· ξεσκεπάζω την ψυχοφθόρα βδελυγμία."),
    ("hindi", "नमस्ते दुनिया, यह एक परीक्षण वाक्य है।"),
    ("thai", "สวัสดีชาวโลก นี่คือประโยคทดสอบ"),
    ("accents", "café naïve résumé Zürich São Paulo façade"),
    ("combining", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇"),
    ("math", "∑∫√∞≠≤≥ ∀x∈ℝ: x²≥0, e^{iπ}+1=0"),
    ("control_chars", "nul\u0000bell\u0007esc\u001b[0mdel\u007f"),
    ("special_tokens", "<|endoftext|> and <|im_start|>user<|im_end|> as plain text"),
    ("url", "https://example.com/path/to/page?query=a%20b&lang=en#section-2"),
    ("email", "Contact alice.smith+tag@example.co.uk or bob@test.org."),
    ("hex_hash", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    ("base64", "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="),
    ("rust_code", RUST_CODE),
    ("python_code", PY_CODE),
    ("json_doc", JSON_DOC),
    ("html", '<div class="card"><h1>Title</h1><p>Some <b>bold</b> text &amp; more.</p></div>'),
    ("markdown_table", "| name | qty |\n|------|----:|\n| apple | 3 |\n| 梨 | 12 |\n"),
    ("lorem_long", LOREM * 20),
    ("uuid", "550e8400-e29b-41d4-a716-446655440000"),
    ("punctuation", "!!!???...,,,;;;:::---___***///\\\\\\"),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.\nReturns °C.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich or 東京"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city"],
        },
    },
}

SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Full-text search over the \"docs\" index.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 5}},
            "required": ["query"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def user(content, **extra):
    return {"role": "user", "content": content, **extra}


def system(content):
    return {"role": "system", "content": content}


def assistant(content, **extra):
    return {"role": "assistant", "content": content, **extra}


def chats():
    c = []
    # The cookbook's own example conversation.
    c.append(
        (
            "cookbook_example",
            [
                system("You are a helpful, pattern-following assistant that translates corporate jargon into plain English."),
                {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
                {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
                {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
                {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
                user("This late pivot means we don't have time to boil the ocean for the client deliverable."),
            ],
            None,
        )
    )
    c.append(("empty_list", [], None))
    c.append(("empty_content", [user("")], None))
    c.append(("empty_content_and_system", [system(""), user("")], None))
    c.append(("single_user", [user("Hello!")], None))
    c.append(("system_user", [system("You are a helpful assistant."), user("What is 2+2?")], None))
    # One single-user conversation per interesting text from the text corpus.
    for tid in (
        "emoji", "chinese", "japanese", "korean", "arabic", "hebrew", "russian", "hindi", "thai", "combining",
        "math", "control_chars", "special_tokens", "rust_code", "python_code", "json_doc", "html",
        "markdown_table", "long_number", "big_power", "space_run_1000", "mixed_ws_run", "crlf", "tabs",
        "base64", "url", "lorem_long",
    ):
        c.append((f"user_{tid}", [user(dict(TEXTS)[tid])], None))
    c.append(("name_on_user", [user("Hi, I'm Ann.", name="ann")], None))
    c.append(("name_unicode", [user("Bonjour", name="zoë_le_bihan")], None))
    c.append(("name_empty", [user("x", name="")], None))
    c.append(
        (
            "multi_turn",
            [
                system("Answer briefly."),
                user("Capital of France?"),
                assistant("Paris."),
                user("And of Japan?"),
                assistant("Tokyo (東京)."),
                user("Population of both, roughly?"),
            ],
            None,
        )
    )
    c.append(
        (
            "long_conversation",
            [m for i in range(25) for m in (user(f"Question {i}: what is {i} squared?"), assistant(f"{i} squared is {i * i}."))],
            None,
        )
    )
    c.append(("developer_role", [{"role": "developer", "content": "Always answer in JSON."}, user("List 3 colors.")], None))
    c.append(("whitespace_only_messages", [system("   "), user("\n\n"), assistant("\t")], None))
    c.append(("extra_string_field", [user("hello", **{"x-trace": "abc-123"})], None))
    # Content arrays.
    c.append(("parts_text", [user([{"type": "text", "text": "Describe this."}, {"type": "text", "text": " Briefly."}])], None))
    c.append(
        (
            "parts_text_image",
            [user([{"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}}])],
            None,
        )
    )
    c.append(
        (
            "parts_two_images",
            [
                user(
                    [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "text", "text": "Compare these two."},
                        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg", "detail": "low"}},
                    ]
                )
            ],
            None,
        )
    )
    c.append(("parts_empty_list", [user([])], None))
    c.append(("parts_empty_text", [user([{"type": "text", "text": ""}])], None))
    c.append(("parts_cjk_emoji", [user([{"type": "text", "text": "翻訳して: 🐱 は猫です"}, {"type": "text", "text": "مرحبا"}])], None))
    c.append(
        (
            "parts_audio_skipped",
            [user([{"type": "text", "text": "Transcribe:"}, {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}}])],
            None,
        )
    )
    c.append(("assistant_refusal_part", [user("Do something bad."), assistant([{"type": "refusal", "refusal": "I can't help with that."}])], None))
    c.append(("system_parts", [{"role": "system", "content": [{"type": "text", "text": "You are terse."}]}, user("Hi")], None))
    # Tool calls and tool messages.
    tool_round_trip = [
        system("You can call tools."),
        user("What's the weather in Zürich?"),
        assistant(
            None,
            tool_calls=[
                {"id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Zürich","unit":"celsius"}'}}
            ],
        ),
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp_c": 3, "sky": "overcast"}'},
    ]
    c.append(("tool_round_trip", tool_round_trip, None))
    c.append(("tool_round_trip_with_tools", tool_round_trip, [WEATHER_TOOL]))
    c.append(
        (
            "parallel_tool_calls",
            [
                user("Weather in Paris and Tokyo?"),
                assistant(
                    "",
                    tool_calls=[
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "東京"}'}},
                    ],
                ),
                {"role": "tool", "tool_call_id": "call_1", "content": "12°C, rain"},
                {"role": "tool", "tool_call_id": "call_2", "content": "18°C, clear"},
                assistant("Paris: 12°C and rainy. Tokyo: 18°C and clear."),
            ],
            [WEATHER_TOOL],
        )
    )
    c.append(
        (
            "legacy_function_call",
            [
                user("Search the docs for 'rate limits'."),
                assistant(None, function_call={"name": "search_docs", "arguments": '{"query": "rate limits"}'}),
                {"role": "function", "name": "search_docs", "content": '[{"title": "Rate limits", "score": 0.93}]'},
            ],
            None,
        )
    )
    c.append(("tools_only_one", [user("Weather?")], [WEATHER_TOOL]))
    c.append(("tools_two", [system("Use tools when useful."), user("Find docs about streaming.")], [WEATHER_TOOL, SEARCH_TOOL]))
    c.append(("tools_empty_list", [user("No tools here.")], []))
    c.append(("json_in_content", [system("Reply with JSON only."), user(JSON_DOC), assistant('{"ok": true, "items": [1, 2, 3]}')], None))
    c.append(("code_review", [system("You review Rust code."), user("Review:\n```rust\n" + RUST_CODE + "```"), assistant("Looks fine; consider `entry().or_default()`.")], None))
    c.append(("mixed_scripts", [user("English, 中文, العربية, русский, हिन्दी, 日本語 and emoji 🎌 in one line.")], None))
    c.append(("numbers_table", [user("\n".join(f"{i}\t{i * 1234567}\t{i / 7:.6f}" for i in range(40)))], None))
    c.append(("repeated_words", [user("buffalo " * 300)], None))
    c.append(("null_name_ignored", [user("hi", name=None)], None))
    return c


def string_only(messages) -> bool:
    return all(isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in messages)


def main() -> None:
    _offline_cache()
    import tiktoken

    encodings = {name: tiktoken.get_encoding(name) for name in ENCODINGS}
    text_items = [{"id": tid, "text": text} for tid, text in TEXTS]
    chat_items = []
    for cid, messages, tools in chats():
        item = {"id": cid, "messages": messages}
        if tools is not None:
            item["tools"] = tools
        chat_items.append(item)
    ids = [t["id"] for t in text_items] + [c["id"] for c in chat_items]
    assert len(ids) == len(set(ids)), "ids must be unique"

    expected = {
        "generator": "scripts/gen_token_counts.py",
        "tiktoken_version": tiktoken.__version__,
        "image_tokens": IMAGE_TOKENS,
        "text": {},
        "chat": {},
    }
    for item in text_items:
        expected["text"][item["id"]] = {name: count(enc, item["text"]) for name, enc in encodings.items()}
    for item in chat_items:
        counts = {}
        for name, enc in encodings.items():
            n = count_chat(enc, item["messages"], item.get("tools"))
            if not item.get("tools") and string_only(item["messages"]):
                assert n == cookbook_num_tokens_from_messages(enc, item["messages"]), item["id"]
            counts[name] = n
        expected["chat"][item["id"]] = counts

    OUT.mkdir(parents=True, exist_ok=True)
    corpus = {"text": text_items, "chat": chat_items}
    (OUT / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(text_items)} texts, {len(chat_items)} chats -> {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
