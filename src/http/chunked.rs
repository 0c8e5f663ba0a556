//! Hand-written response framing for streams: `tiny_http::Response` buffers a streamed body
//! until it ends, so a stream is written straight to the connection, one chunk and one flush
//! per event.

use std::io::{self, Write};

pub struct ChunkedWriter<W: Write> {
    out: W,
    /// HTTP/1.0 clients get the raw body and a closed connection instead of chunks.
    chunked: bool,
}

impl<W: Write> ChunkedWriter<W> {
    pub fn start(mut out: W, status: u16, extra: &[(String, String)], http11: bool) -> io::Result<Self> {
        let version = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
        write!(out, "{version} {status} {}\r\n", reason(status))?;
        out.write_all(b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nServer: keyrelay\r\n")?;
        out.write_all(if http11 { b"Transfer-Encoding: chunked\r\n" } else { b"Connection: close\r\n" })?;
        for (name, value) in extra {
            if is_header_safe(name) && is_header_safe(value) {
                write!(out, "{name}: {value}\r\n")?;
            }
        }
        // Not flushed: the head goes out together with the first event.
        out.write_all(b"\r\n")?;
        Ok(ChunkedWriter { out, chunked: http11 })
    }

    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(()); // a zero-length chunk would end the body
        }
        if self.chunked {
            write!(self.out, "{:x}\r\n", data.len())?;
            self.out.write_all(data)?;
            self.out.write_all(b"\r\n")?;
        } else {
            self.out.write_all(data)?;
        }
        self.out.flush()
    }

    pub fn finish(mut self) -> io::Result<()> {
        if self.chunked {
            self.out.write_all(b"0\r\n\r\n")?;
        }
        self.out.flush()
    }
}

fn is_header_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
