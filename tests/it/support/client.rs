//! A raw HTTP/1.1 client over `TcpStream`, so tests control exactly what is sent (bad
//! headers, lying Content-Length) and can read a stream one event at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

pub struct Client {
    pub port: u16,
    /// Sent as `Authorization: Bearer ...` unless a test passes its own headers.
    pub key: Option<String>,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `error.code` of an OpenAI-shaped error.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {}", self.text())).to_string()
    }
}

impl Client {
    pub fn new(port: u16, key: Option<&str>) -> Client {
        Client { port, key: key.map(String::from) }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to keyrelay");
        s.set_read_timeout(Some(super::WAIT)).unwrap();
        s.set_write_timeout(Some(super::WAIT)).unwrap();
        s
    }

    fn auth(&self) -> String {
        self.key.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Answer {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n", self.auth()).as_bytes())
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        self.post_with(path, body, &self.auth())
    }

    /// POST with the given header lines (each ending in `\r\n`) instead of the default auth.
    pub fn post_with(&self, path: &str, body: &str, headers: &str) -> Answer {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        self.raw(&bytes)
    }

    pub fn request(&self, method: &str, path: &str) -> Answer {
        self.raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\nConnection: close\r\n\r\n",
                self.auth()
            )
            .as_bytes(),
        )
    }

    /// Sends raw bytes and reads one whole answer.
    pub fn raw(&self, bytes: &[u8]) -> Answer {
        let mut s = self.connect();
        s.write_all(bytes).expect("send request");
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader);
        let body = read_body(&mut reader, &headers);
        Answer { status, headers, body }
    }

    /// POSTs and returns the answer's head with a reader for its events.
    pub fn stream(&self, path: &str, body: &str) -> Stream {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.auth(),
            body.len()
        );
        let mut s = self.connect();
        s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes())).expect("send request");
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader);
        Stream { status, headers, reader, pending: Vec::new(), ended: false }
    }
}

pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    pending: Vec<u8>,
    ended: bool,
}

impl Stream {
    /// The next SSE event (the text before its blank line), or None at the end of the body.
    pub fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.pending.drain(..i + 2).collect();
                return Some(String::from_utf8(event[..i].to_vec()).expect("events are UTF-8"));
            }
            if self.ended {
                return None;
            }
            match read_chunk(&mut self.reader) {
                Some(bytes) => self.pending.extend(bytes),
                None => self.ended = true,
            }
        }
    }

    /// Every remaining event.
    pub fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("read header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (status, headers)
}

fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Vec<u8> {
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        while let Some(chunk) = read_chunk(reader) {
            body.extend(chunk);
        }
        return body;
    }
    let mut body = Vec::new();
    match header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Some(n) => reader.take(n).read_to_end(&mut body).expect("read body"),
        None => reader.read_to_end(&mut body).expect("read body"),
    };
    body
}

/// One chunk of a chunked body; None after the last one.
fn read_chunk(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
    if size == 0 {
        let mut end = String::new();
        let _ = reader.read_line(&mut end);
        return None;
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).expect("read chunk");
    chunk.truncate(size);
    Some(chunk)
}
