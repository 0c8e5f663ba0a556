//! One client connection: a socket and the bytes read from it but not yet used. Every read
//! has a deadline (the socket's receive timeout is set to what is left of it), so no client
//! can hold a thread longer than the phase it is in allows: the head, each interval of body
//! progress, the idle wait between requests.

use super::head::{self, Framing, Head, HeadError};
use crate::config::ClientLimits;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A buffer this size is kept between requests; a larger one (a big head) is given back.
const KEPT_BUFFER: usize = 16 * 1024;
const READ_CHUNK: usize = 8 * 1024;
/// A chunk-size line (with extensions) or a trailer field longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// All trailer fields of a chunked body together.
const MAX_TRAILERS: usize = 16 * 1024;
/// After an answer sent without reading the whole body, what is still arriving is read and
/// thrown away for this long (or up to `LINGER_BYTES`) before the socket is closed, so the
/// client reads the answer instead of a connection reset. Nothing read here is ever parsed.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 << 20;

/// Why reading a request failed. Each ends the connection.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection (cleanly, between requests).
    Closed,
    /// A deadline passed: 408 if anything of a request had arrived.
    Timeout {
        started: bool,
    },
    Head(HeadError),
    /// The body broke its framing: 400.
    BadBody(&'static str),
    /// The body is over the limit: 413.
    BodyTooLarge,
    Io(io::Error),
}

pub struct Conn {
    /// Shared with the server's registry, which shuts idle connections down at exit.
    pub stream: Arc<TcpStream>,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet used.
    start: usize,
    end: usize,
    /// The receive timeout set on the socket now, to skip setting the same one again.
    read_timeout: Option<Duration>,
    pub limits: ClientLimits,
}

impl Conn {
    pub fn new(stream: Arc<TcpStream>, limits: ClientLimits) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(limits.write_timeout))?;
        Ok(Conn { stream, buf: vec![0; READ_CHUNK], start: 0, end: 0, read_timeout: None, limits })
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes, waiting no later than `deadline`. `Ok(0)` is end of stream.
    fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout { started: true });
        }
        // Timeouts are rounded up to whole milliseconds so repeated reads can reuse one setting.
        let timeout = Duration::from_millis(left.as_millis() as u64 + 1);
        if self.read_timeout.is_none_or(|t| t.abs_diff(timeout) > Duration::from_millis(50)) {
            self.stream.set_read_timeout(Some(timeout)).map_err(ReadError::Io)?;
            self.read_timeout = Some(timeout);
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end + READ_CHUNK > self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end + READ_CHUNK > self.buf.len() {
                self.buf.resize(self.end + READ_CHUNK, 0);
            }
        }
        loop {
            match (&*self.stream).read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(ReadError::Timeout { started: true });
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Reads the next request head. The first byte must come within `first_byte` (the idle
    /// timeout between requests, the head timeout on a new connection); the rest of the head
    /// within the head timeout after it.
    pub fn read_head(&mut self, first_byte: Duration) -> Result<Head, ReadError> {
        self.shrink();
        let mut head_deadline = None;
        let mut scanned = 0;
        loop {
            let available = self.end - self.start;
            if available > 0 {
                if let Some(end) = head::find_end(self.buffered(), scanned) {
                    if end > head::MAX_HEAD_BYTES {
                        return Err(ReadError::Head(HeadError::TooLarge));
                    }
                    let parsed = head::parse(&self.buf[self.start..self.start + end]);
                    self.start += end;
                    return parsed.map_err(ReadError::Head);
                }
                if available > head::MAX_HEAD_BYTES {
                    return Err(ReadError::Head(HeadError::TooLarge));
                }
                scanned = available;
            }
            let deadline = match head_deadline {
                Some(d) => d,
                None if available > 0 => *head_deadline.insert(Instant::now() + self.limits.head_timeout),
                None => Instant::now() + first_byte,
            };
            match self.fill(deadline) {
                Ok(0) if available == 0 => return Err(ReadError::Closed),
                Ok(0) => return Err(ReadError::Head(HeadError::Bad("the connection closed inside the request head"))),
                Ok(_) => {}
                Err(ReadError::Timeout { .. }) => return Err(ReadError::Timeout { started: available > 0 }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the whole body as framed, refusing more than `limit` bytes. Every
    /// `CLIENT_BODY_TIMEOUT` interval must bring `CLIENT_BODY_MIN_BYTES` more, or the body
    /// must end: a slow upload still works, a trickle does not hold the connection.
    pub fn read_body(&mut self, framing: Framing, limit: u64) -> Result<Vec<u8>, ReadError> {
        let mut progress = Progress::new(&self.limits);
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) if n > limit => Err(ReadError::BodyTooLarge),
            Framing::Length(n) => {
                let mut body = Vec::with_capacity(n as usize);
                self.take_exact(n as usize, &mut body, &mut progress)?;
                Ok(body)
            }
            Framing::Chunked => self.read_chunked(limit, &mut progress),
        }
    }

    /// Appends `n` bytes to `out`, from the buffer first, then from the socket.
    fn take_exact(&mut self, mut n: usize, out: &mut Vec<u8>, progress: &mut Progress) -> Result<(), ReadError> {
        loop {
            let take = n.min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill_body(progress)?;
        }
    }

    fn fill_body(&mut self, progress: &mut Progress) -> Result<(), ReadError> {
        loop {
            match self.fill(progress.deadline) {
                Ok(0) => return Err(ReadError::BadBody("the connection closed inside the request body")),
                Ok(n) => {
                    progress.bytes += n as u64;
                    return Ok(());
                }
                Err(ReadError::Timeout { .. }) if progress.next_interval() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A chunked body (RFC 9112 section 7.1): hex sizes without signs or prefixes, each chunk
    /// followed by CRLF, trailer fields read and dropped, every line bounded.
    fn read_chunked(&mut self, limit: u64, progress: &mut Progress) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line(MAX_CHUNK_LINE, progress)?;
            let size = chunk_size(&line)?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > limit {
                return Err(ReadError::BodyTooLarge);
            }
            self.take_exact(size as usize, &mut body, progress)?;
            if !self.take_line(2, progress)?.is_empty() {
                return Err(ReadError::BadBody("a chunk is longer than its size"));
            }
        }
        let mut trailers = 0;
        loop {
            let line = self.take_line(MAX_CHUNK_LINE, progress)?;
            if line.is_empty() {
                return Ok(body);
            }
            trailers += line.len();
            if trailers > MAX_TRAILERS {
                return Err(ReadError::BadBody("the trailer fields are too large"));
            }
        }
    }

    /// One CRLF-terminated line of at most `max` bytes, without its CRLF.
    fn take_line(&mut self, max: usize, progress: &mut Progress) -> Result<Vec<u8>, ReadError> {
        let mut scanned = 0;
        loop {
            let available = self.buffered();
            if let Some(i) = available[scanned..].iter().position(|&b| b == b'\n').map(|i| i + scanned) {
                if i == 0 || available[i - 1] != b'\r' || i - 1 > max {
                    return Err(ReadError::BadBody("a chunk line is malformed or too long"));
                }
                let line = available[..i - 1].to_vec();
                self.start += i + 1;
                return Ok(line);
            }
            if available.len() > max + 1 {
                return Err(ReadError::BadBody("a chunk line is too long"));
            }
            scanned = available.len();
            self.fill_body(progress)?;
        }
    }

    /// Gives back a buffer a large head made grow, so an idle connection stays small.
    fn shrink(&mut self) {
        if self.buf.len() > KEPT_BUFFER && self.end - self.start <= READ_CHUNK {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            self.buf.truncate(KEPT_BUFFER.max(self.end));
            self.buf.shrink_to_fit();
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&*self.stream).write_all(bytes)
    }

    /// Closes a connection whose request body was not read to its end: the answer is already
    /// written; what the client still sends is drained and dropped, never parsed.
    pub fn linger_close(self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0u64;
        let mut sink = [0u8; READ_CHUNK];
        while drained < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match (&*self.stream).read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n as u64,
            }
        }
    }
}

/// The body-progress rule: the body must bring `min_bytes` per interval.
struct Progress {
    deadline: Instant,
    interval: Duration,
    min_bytes: u64,
    /// Bytes read in the current interval.
    bytes: u64,
}

impl Progress {
    fn new(limits: &ClientLimits) -> Progress {
        Progress {
            deadline: Instant::now() + limits.body_timeout,
            interval: limits.body_timeout,
            min_bytes: limits.body_min_bytes,
            bytes: 0,
        }
    }

    /// Called when the interval is over: starts the next one if this one brought enough.
    fn next_interval(&mut self) -> bool {
        if self.bytes < self.min_bytes.max(1) {
            return false;
        }
        self.bytes = 0;
        self.deadline = Instant::now() + self.interval;
        true
    }
}

/// The size on a chunk-size line: hex digits, then optional `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let bad = || ReadError::BadBody("a chunk size is not a hexadecimal number");
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    u64::from_str_radix(std::str::from_utf8(digits).map_err(|_| bad())?, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_strict_hex() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"A;name=value").unwrap(), 10);
        for bad in [&b""[..], b" 1", b"1 ", b"+1", b"-1", b"0x1", b"g", b"1234567890abcdef0"] {
            assert!(chunk_size(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
