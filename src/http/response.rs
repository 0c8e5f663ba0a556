//! Writing answers: a whole answer as one write (head and body together), a stream as its head
//! followed by one chunk per event, each written and sent at once (the socket has `TCP_NODELAY`).
//! Header values that did not come from us are checked for characters that could split a
//! header (CR, LF, controls) and dropped if they have any.

use std::io::{self, Write};

/// Headers every answer carries (a preflight's answer adds the headers it allows).
const CORS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST, OPTIONS"),
    ("access-control-expose-headers", "x-request-id, retry-after"),
];

/// The head of an answer, built once in one buffer.
pub struct HeadBuilder {
    bytes: Vec<u8>,
}

impl HeadBuilder {
    /// Status line, the fixed headers, `x-request-id`, and `Connection: close` when the
    /// connection ends after this answer.
    pub fn new(minor_version: u8, status: u16, id: &str, close: bool) -> HeadBuilder {
        let mut bytes = Vec::with_capacity(512);
        let _ = write!(bytes, "HTTP/1.{minor_version} {status} {}\r\nserver: keyrelay\r\n", reason(status));
        let mut head = HeadBuilder { bytes };
        for (name, value) in CORS {
            head.header(name, value);
        }
        head.header("x-request-id", id);
        if close {
            head.header("connection", "close");
        }
        head
    }

    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        if is_token(name) && is_field_value(value) {
            let _ = write!(self.bytes, "{name}: {value}\r\n");
        }
        self
    }

    /// The head followed by a whole body; `head_only` (a HEAD request) leaves the body out
    /// but keeps its length.
    pub fn with_body(mut self, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
        self.header("content-type", content_type);
        let _ = write!(self.bytes, "content-length: {}\r\n\r\n", body.len());
        if !head_only {
            self.bytes.extend_from_slice(body);
        }
        self.bytes
    }

    /// The head of a stream: chunked on HTTP/1.1, a body that ends when the connection closes
    /// on HTTP/1.0.
    pub fn for_stream(mut self, chunked: bool) -> Vec<u8> {
        self.header("content-type", "text/event-stream");
        self.header("cache-control", "no-cache");
        self.header("x-accel-buffering", "no");
        if chunked {
            self.header("transfer-encoding", "chunked");
        }
        self.bytes.extend_from_slice(b"\r\n");
        self.bytes
    }
}

/// Writes a stream event by event: the head goes out together with the first event (so a
/// failure before it can still become a proper status), then one write per event.
pub struct StreamWriter<W: Write> {
    out: W,
    head: Option<Vec<u8>>,
    chunked: bool,
    frame: Vec<u8>,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(out: W, head: Vec<u8>, chunked: bool) -> StreamWriter<W> {
        StreamWriter { out, head: Some(head), chunked, frame: Vec::with_capacity(4096) }
    }

    pub fn event(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(()); // a zero-length chunk would end the body
        }
        self.frame.clear();
        if let Some(head) = self.head.take() {
            self.frame.extend_from_slice(&head);
        }
        if self.chunked {
            let _ = write!(self.frame, "{:x}\r\n", data.len());
            self.frame.extend_from_slice(data);
            self.frame.extend_from_slice(b"\r\n");
        } else {
            self.frame.extend_from_slice(data);
        }
        self.out.write_all(&self.frame)
    }

    pub fn finish(mut self) -> io::Result<()> {
        let mut last = self.head.take().unwrap_or_default();
        if self.chunked {
            last.extend_from_slice(b"0\r\n\r\n");
        }
        self.out.write_all(&last)
    }
}

/// A header name: an RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value with no CR, LF or other control character.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_answer_is_one_buffer_and_unsafe_headers_are_dropped() {
        let mut head = HeadBuilder::new(1, 200, "id-1", true);
        head.header("x-ok", "fine").header("x-bad", "a\r\nset-cookie: x").header("bad name", "v");
        let bytes = head.with_body("application/json", b"{}", false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nx-ok: fine\r\n") && text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(!text.contains("set-cookie") && !text.contains("bad name"), "{text}");
        assert!(text.ends_with("content-length: 2\r\n\r\n{}"), "{text}");
        let head_only = HeadBuilder::new(1, 200, "id", false).with_body("application/json", b"{}", true);
        assert!(String::from_utf8(head_only).unwrap().ends_with("content-length: 2\r\n\r\n"));
    }

    #[test]
    fn a_stream_sends_its_head_with_the_first_event() {
        let mut out = Vec::new();
        let head = HeadBuilder::new(1, 200, "id", false).for_stream(true);
        let mut writer = StreamWriter::new(&mut out, head, true);
        writer.event(b"data: 1\n\n").unwrap();
        writer.event(b"").unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"), "{text}");
    }
}
