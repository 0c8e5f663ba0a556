//! The `application/vnd.amazon.eventstream` binary framing of Bedrock's ConverseStream, as
//! AWS documents it ("Event stream encoding" in the Transcribe/S3 Select guides, and the
//! `aws-c-event-stream` library): each message is
//!
//! ```text
//! total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (of the first 8 bytes)
//! headers               | payload                 | message CRC32 (of everything before it)
//! ```
//!
//! and each header is a name (u8 length + bytes), a type byte and a typed value (0/1 bool,
//! 2 byte, 3 short, 4 int, 5 long, 6 bytes, 7 string, 8 timestamp, 9 uuid). `Decoder` reads
//! messages incrementally across reads of any size, checks both CRCs and bounds every size,
//! and turns each message into an `sse::Event` so the stream relay and the translators work
//! the same for every family: `name` is `:event-type` (or `:exception-type` for an
//! exception, or `error` for an error message) and `data` is the payload (JSON).
//! A bad CRC or an oversized message is an error the stream relay turns into an in-band
//! error; nothing here panics on any input.
//!
//! `Framing` is the one choice the stream relay makes per family: SSE, or this.

use crate::providers::Family;
use crate::sse;

/// Bytes of the prelude (two lengths and its CRC) and of the trailing message CRC.
const PRELUDE: usize = 12;
const MIN_MESSAGE: usize = PRELUDE + 4;
/// AWS's own limits: a message is at most 16 MiB, its headers at most 128 KiB.
const MAX_MESSAGE: usize = 16 << 20;
const MAX_HEADERS: usize = 128 << 10;

/// Why a stream could not be read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

/// An incremental event-stream decoder (module comment).
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
    /// Set once a message was refused: the stream's framing is lost, nothing more is read.
    failed: Option<DecodeError>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feeds bytes; each complete message is appended to `out` as an event. What stays
    /// buffered is at most one message, itself at most `MAX_MESSAGE`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<sse::Event>) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buffer.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            match next_message(&self.buffer[at..]) {
                Ok(Some((event, used))) => {
                    out.extend(event);
                    at += used;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buffer.drain(..at);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buffer = Vec::new();
        }
        result
    }

    /// Whether bytes of an unfinished message are still buffered (the stream was cut).
    #[cfg(test)]
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty()
    }
}

/// The first message in `bytes`, if it is complete: its event (none for a message that is
/// neither an event, an exception nor an error) and the bytes it took.
fn next_message(bytes: &[u8]) -> Result<Option<(Option<sse::Event>, usize)>, DecodeError> {
    if bytes.len() < PRELUDE {
        return Ok(None);
    }
    let total = be32(&bytes[0..4]) as usize;
    let headers_len = be32(&bytes[4..8]) as usize;
    if crc32(&bytes[0..8]) != be32(&bytes[8..12]) {
        return Err(DecodeError("event-stream prelude CRC mismatch".into()));
    }
    if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&total) || headers_len > MAX_HEADERS || headers_len > total - MIN_MESSAGE {
        return Err(DecodeError(format!(
            "event-stream message of {total} bytes with {headers_len} bytes of headers is out of bounds"
        )));
    }
    if bytes.len() < total {
        return Ok(None);
    }
    let message = &bytes[..total];
    if crc32(&message[..total - 4]) != be32(&message[total - 4..]) {
        return Err(DecodeError("event-stream message CRC mismatch".into()));
    }
    let headers = parse_headers(&message[PRELUDE..PRELUDE + headers_len])?;
    let payload = &message[PRELUDE + headers_len..total - 4];
    Ok(Some((to_event(&headers, payload), total)))
}

/// The string headers of a message (other types are skipped by their size).
fn parse_headers(mut bytes: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let cut = || DecodeError("event-stream header cut short".into());
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name_len = bytes[0] as usize;
        let name = bytes.get(1..1 + name_len).ok_or_else(cut)?;
        let name = String::from_utf8_lossy(name).into_owned();
        bytes = &bytes[1 + name_len..];
        let kind = *bytes.first().ok_or_else(cut)?;
        bytes = &bytes[1..];
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            other => return Err(DecodeError(format!("event-stream header of unknown type {other}"))),
        };
        let size = match fixed {
            Some(size) => size,
            None => u16::from_be_bytes([*bytes.first().ok_or_else(cut)?, *bytes.get(1).ok_or_else(cut)?]) as usize,
        };
        let start = if fixed.is_some() { 0 } else { 2 };
        let value = bytes.get(start..start + size).ok_or_else(cut)?;
        if kind == 7 {
            headers.push((name, String::from_utf8_lossy(value).into_owned()));
        }
        bytes = &bytes[start + size..];
    }
    Ok(headers)
}

/// A message as an event (module comment).
fn to_event(headers: &[(String, String)], payload: &[u8]) -> Option<sse::Event> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let data = String::from_utf8_lossy(payload).into_owned();
    match header(":message-type").unwrap_or("event") {
        "event" => Some(sse::Event { name: header(":event-type").map(String::from), data }),
        "exception" => {
            Some(sse::Event { name: Some(header(":exception-type").unwrap_or("exception").to_string()), data })
        }
        "error" => {
            let code = header(":error-code").unwrap_or("InternalError");
            let message = header(":error-message").unwrap_or("error in the event stream");
            let data = serde_json::json!({"message": format!("{code}: {message}")}).to_string();
            Some(sse::Event { name: Some("error".into()), data })
        }
        _ => None,
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// One message with string headers, framed and checksummed: for tests and mocks.
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(7);
        block.extend_from_slice(&(value.len() as u16).to_be_bytes());
        block.extend_from_slice(value.as_bytes());
    }
    let total = (MIN_MESSAGE + block.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out[..8]).to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

/// How a family's stream is framed on the wire: SSE, or AWS's event stream (Bedrock).
#[derive(Debug)]
pub enum Framing {
    Sse(sse::Parser),
    EventStream(Decoder),
}

impl Framing {
    pub fn of(family: Family) -> Framing {
        match family {
            Family::Bedrock => Framing::EventStream(Decoder::new()),
            _ => Framing::Sse(sse::Parser::new()),
        }
    }

    /// Feeds bytes; complete events go to `out`. An error means the stream cannot be read
    /// further (an SSE line too long, a bad event-stream CRC or size).
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<sse::Event>) -> Result<(), String> {
        match self {
            Framing::Sse(parser) => {
                parser.feed(bytes, out).map_err(|_| "upstream sent an SSE line or event longer than 64 MiB".into())
            }
            Framing::EventStream(decoder) => decoder.feed(bytes, out).map_err(|e| e.0),
        }
    }

    /// End of input: SSE delivers a last event without its blank line; an unfinished
    /// event-stream message is dropped (the translator then sees the stream end early).
    pub fn finish(&mut self, out: &mut Vec<sse::Event>) {
        if let Framing::Sse(parser) = self {
            parser.finish(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_frame(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[(":message-type", "event"), (":event-type", kind), (":content-type", "application/json")],
            payload.as_bytes(),
        )
    }

    fn decode_in(bytes: &[u8], piece: usize) -> (Vec<sse::Event>, Result<(), DecodeError>) {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            if let Err(e) = decoder.feed(chunk, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn a_known_frame_from_the_documentation_shape() {
        // A message with no headers and no payload is 16 bytes: the prelude's CRC of
        // 00000010 00000000 is 05c248eb (CRC-32/ISO-HDLC, as zlib computes it).
        let frame = encode(&[], b"");
        assert_eq!(&frame[..12], &[0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb]);
        assert_eq!(frame.len(), 16);
    }

    #[test]
    fn events_across_any_split() {
        let mut bytes = event_frame("messageStart", r#"{"role":"assistant"}"#);
        bytes.extend(event_frame("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"héllo"}}"#));
        bytes.extend(event_frame("messageStop", r#"{"stopReason":"end_turn"}"#));
        for piece in [1, 2, 7, 13, bytes.len()] {
            let (events, result) = decode_in(&bytes, piece);
            assert_eq!(result, Ok(()));
            let names: Vec<_> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
            assert_eq!(names, ["messageStart", "contentBlockDelta", "messageStop"], "piece {piece}");
            assert!(events[1].data.contains("héllo"));
        }
    }

    #[test]
    fn exceptions_and_errors_are_named() {
        let mut bytes = encode(
            &[(":message-type", "exception"), (":exception-type", "throttlingException")],
            br#"{"message":"slow down"}"#,
        );
        bytes.extend(encode(
            &[(":message-type", "error"), (":error-code", "Boom"), (":error-message", "it broke")],
            b"",
        ));
        let (events, _) = decode_in(&bytes, 7);
        assert_eq!(events[0].name.as_deref(), Some("throttlingException"));
        assert_eq!(events[0].data, r#"{"message":"slow down"}"#);
        assert_eq!(events[1].name.as_deref(), Some("error"));
        assert!(events[1].data.contains("Boom: it broke"));
    }

    #[test]
    fn other_header_types_are_skipped() {
        // A bool, a byte, an int, a long, a bytes header and a uuid before the string ones.
        let mut block = Vec::new();
        let mut header = |name: &str, kind: u8, value: &[u8]| {
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(kind);
            block.extend_from_slice(value);
        };
        header("t", 0, &[]);
        header("b", 2, &[9]);
        header("i", 4, &[0, 0, 0, 1]);
        header("l", 5, &[0; 8]);
        header("x", 6, &[0, 3, 1, 2, 3]);
        header("u", 9, &[7; 16]);
        header(":event-type", 7, b"\x00\x0bmessageStop");
        let payload = b"{}";
        let total = (16 + block.len() + payload.len()) as u32;
        let mut frame = total.to_be_bytes().to_vec();
        frame.extend_from_slice(&(block.len() as u32).to_be_bytes());
        let prelude_crc = crc32(&frame);
        frame.extend_from_slice(&prelude_crc.to_be_bytes());
        frame.extend_from_slice(&block);
        frame.extend_from_slice(payload);
        let crc = crc32(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        let (events, result) = decode_in(&frame, 3);
        assert_eq!(result, Ok(()));
        assert_eq!(events, [sse::Event { name: Some("messageStop".into()), data: "{}".into() }]);
    }

    #[test]
    fn a_bad_message_crc_is_an_error_after_the_good_messages() {
        let good = event_frame("messageStart", "{}");
        let mut bad = event_frame("contentBlockDelta", r#"{"delta":{"text":"x"}}"#);
        let last = bad.len() - 6;
        bad[last] ^= 0x20;
        let bytes = [good, bad, event_frame("messageStop", "{}")].concat();
        for piece in [1, 7, bytes.len()] {
            let (events, result) = decode_in(&bytes, piece);
            assert_eq!(events.len(), 1, "the message before the bad one still arrives");
            assert_eq!(result, Err(DecodeError("event-stream message CRC mismatch".into())));
        }
        // Once refused, the decoder stays refused.
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        let mut broken = event_frame("x", "{}");
        broken[9] ^= 1;
        assert!(decoder.feed(&broken, &mut out).is_err());
        assert!(decoder.feed(&event_frame("y", "{}"), &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_and_impossible_lengths_are_errors_before_buffering() {
        let prelude = |total: u32, headers: u32| {
            let mut p = total.to_be_bytes().to_vec();
            p.extend_from_slice(&headers.to_be_bytes());
            let crc = crc32(&p);
            p.extend_from_slice(&crc.to_be_bytes());
            p
        };
        for (total, headers) in [(u32::MAX, 0), (17 << 20, 0), (15, 0), (100, 90), (1 << 20, 200 << 10)] {
            let mut decoder = Decoder::new();
            let result = decoder.feed(&prelude(total, headers), &mut Vec::new());
            assert!(result.is_err(), "{total}/{headers}");
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn a_cut_header_is_an_error_not_a_panic() {
        // Headers length says 3, but the header inside claims a 10-byte name.
        let block = [10u8, b'a', b'b'];
        let total = (16 + block.len()) as u32;
        let mut frame = total.to_be_bytes().to_vec();
        frame.extend_from_slice(&(block.len() as u32).to_be_bytes());
        let crc = crc32(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        frame.extend_from_slice(&block);
        let crc = crc32(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        let (_, result) = decode_in(&frame, 1);
        assert!(result.is_err());
    }

    #[test]
    fn framing_by_family() {
        let mut events = Vec::new();
        let mut framing = Framing::of(Family::Bedrock);
        framing.feed(&event_frame("messageStop", "{}"), &mut events).unwrap();
        let mut sse = Framing::of(Family::Gemini);
        sse.feed(b"data: {}", &mut events).unwrap();
        sse.finish(&mut events);
        assert_eq!(events.len(), 2);
    }
}

/// Property tests: any bytes, cut anywhere, never panic, and valid frames cut anywhere give
/// the events of one whole read.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::fuzz_config::config())]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), piece in 1usize..40) {
            let mut decoder = Decoder::new();
            let mut out = Vec::new();
            for chunk in bytes.chunks(piece) {
                if decoder.feed(chunk, &mut out).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn splits_do_not_matter(payloads in proptest::collection::vec("\\PC{0,20}", 0..6), cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let bytes: Vec<u8> = payloads.iter().flat_map(|p| encode(&[(":event-type", "e")], p.as_bytes())).collect();
            let mut whole = Vec::new();
            Decoder::new().feed(&bytes, &mut whole).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort();
            let mut decoder = Decoder::new();
            let mut pieces = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                decoder.feed(&bytes[at..cut], &mut pieces).unwrap();
                at = cut;
            }
            prop_assert_eq!(&pieces, &whole);
            prop_assert_eq!(whole.len(), payloads.len());
        }
    }
}
