//! A mock upstream: every request is recorded, then answered by the test's handler, on its own
//! thread (so concurrent requests and held streams work).

use crossbeam_channel::{Receiver, Sender};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub url: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream request body is JSON")
    }

    /// The key the proxy sent, from whichever header the family uses.
    pub fn key(&self) -> Option<String> {
        self.header("authorization").map(|v| v.trim_start_matches("Bearer ").to_string())
    }
}

/// One piece of a streamed answer.
pub enum Piece {
    Bytes(Vec<u8>),
    /// Wait until the test sends on the paired channel (or drops it) before going on.
    Hold(Receiver<()>),
    /// Write these bytes again and again until a write fails (the proxy closed the
    /// connection), at most `UNTIL_CLOSED_LIMIT` bytes in all: socket buffers can hold
    /// megabytes, so a fixed number of events may all fit before a close is noticed.
    UntilClosed(Vec<u8>),
}

pub enum MockReply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked body written piece by piece with a flush after each.
    Stream {
        status: u16,
        pieces: Vec<Piece>,
        on_write_error: Option<Sender<()>>,
    },
}

impl MockReply {
    pub fn json(status: u16, body: serde_json::Value) -> MockReply {
        MockReply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn raw(status: u16, body: &str) -> MockReply {
        MockReply::Full { status, headers: Vec::new(), body: body.as_bytes().to_vec() }
    }

    pub fn sse(pieces: Vec<Piece>) -> MockReply {
        MockReply::Stream { status: 200, pieces, on_write_error: None }
    }
}

type Handler = dyn Fn(&Recorded) -> MockReply + Send + Sync;

pub struct Mock {
    pub port: u16,
    server: Arc<tiny_http::Server>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    accept: Option<JoinHandle<()>>,
}

impl Mock {
    pub fn start(handler: impl Fn(&Recorded) -> MockReply + Send + Sync + 'static) -> Mock {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind mock upstream"));
        let port = server.server_addr().to_ip().expect("ip address").port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (server, recorded) = (server.clone(), recorded.clone());
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                while let Ok(request) = server.recv() {
                    let (handler, recorded) = (handler.clone(), recorded.clone());
                    workers.push(std::thread::spawn(move || answer(request, &*handler, &recorded)));
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        Mock { port, server, recorded, accept: Some(accept) }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// The keys the upstream saw, in order.
    pub fn keys_seen(&self) -> Vec<String> {
        self.requests().iter().filter_map(Recorded::key).collect()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn answer(mut request: tiny_http::Request, handler: &Handler, recorded: &Mutex<Vec<Recorded>>) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let rec = Recorded {
        method: request.method().as_str().to_string(),
        url: request.url().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
            .collect(),
        body,
    };
    recorded.lock().unwrap().push(rec.clone());
    match handler(&rec) {
        MockReply::Full { status, headers, body } => {
            let mut response = tiny_http::Response::from_data(body).with_status_code(status);
            for (n, v) in headers {
                response.add_header(tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()).unwrap());
            }
            let _ = request.respond(response);
        }
        MockReply::Stream { status, pieces, on_write_error } => {
            let mut out = request.into_writer();
            let head = format!(
                "HTTP/1.1 {status} OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let mut ok = out.write_all(head.as_bytes()).and_then(|_| out.flush()).is_ok();
            for piece in pieces {
                if !ok {
                    break;
                }
                match piece {
                    Piece::Bytes(bytes) => ok = write_chunk(&mut out, &bytes),
                    Piece::Hold(gate) => {
                        let _ = gate.recv_timeout(super::WAIT);
                    }
                    Piece::UntilClosed(bytes) => {
                        let mut sent = 0;
                        while ok && sent < UNTIL_CLOSED_LIMIT {
                            ok = write_chunk(&mut out, &bytes);
                            sent += bytes.len();
                        }
                    }
                }
            }
            if ok {
                ok = out.write_all(b"0\r\n\r\n").and_then(|_| out.flush()).is_ok();
            }
            if !ok {
                if let Some(tx) = on_write_error {
                    let _ = tx.send(());
                }
            }
        }
    }
}

const UNTIL_CLOSED_LIMIT: usize = 512 << 20;

fn write_chunk(out: &mut dyn Write, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
    framed.extend_from_slice(bytes);
    framed.extend_from_slice(b"\r\n");
    out.write_all(&framed).and_then(|_| out.flush()).is_ok()
}

/// `data: <json>\n\n` as bytes.
pub fn event(json: &serde_json::Value) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

/// A chat.completion.chunk with one content delta.
pub fn content_chunk(text: &str) -> serde_json::Value {
    serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

pub fn finish_chunk() -> serde_json::Value {
    serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
}

pub fn completion(text: &str) -> serde_json::Value {
    serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
}

/// An upstream at the socket level, for what tiny_http cannot do: each connection's request is
/// read (head and Content-Length body), recorded, answered with `reply` verbatim, and the
/// connection closed, so a short `reply` is a connection dropped mid-answer.
pub struct RawMock {
    pub port: u16,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl RawMock {
    pub fn start(reply: &'static [u8]) -> RawMock {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind raw mock");
        let port = listener.local_addr().unwrap().port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accept = {
            let (recorded, stop) = (recorded.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    conn.set_read_timeout(Some(super::WAIT)).unwrap();
                    if let Some(rec) = read_raw_request(&mut conn) {
                        recorded.lock().unwrap().push(rec);
                    }
                    let _ = conn.write_all(reply);
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                }
            })
        };
        RawMock { port, recorded, stop, accept: Some(accept) }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn keys_seen(&self) -> Vec<String> {
        self.recorded.lock().unwrap().iter().filter_map(Recorded::key).collect()
    }
}

impl Drop for RawMock {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn read_raw_request(conn: &mut std::net::TcpStream) -> Option<Recorded> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, url) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded { method, url, headers, body })
}

/// Per (key, model): requests the upstream holds now, and the most it ever held at once.
#[derive(Default)]
pub struct Concurrency {
    pub now: std::collections::HashMap<(String, String), u32>,
    pub max: std::collections::HashMap<(String, String), u32>,
}

/// An upstream that answers every chat request after a short latency (so that requests
/// overlap) and counts how many it holds at once per (key, model); `arrived`, when given,
/// hears of each request as it arrives.
pub fn counting_upstream(arrived: Option<Sender<()>>) -> (Mock, Arc<Mutex<Concurrency>>) {
    let seen = Arc::new(Mutex::new(Concurrency::default()));
    let shared = seen.clone();
    let mock = Mock::start(move |req: &Recorded| {
        let slot = (req.key().unwrap_or_default(), req.json()["model"].as_str().unwrap_or("").to_string());
        {
            let mut c = shared.lock().unwrap();
            let n = c.now.entry(slot.clone()).or_default();
            *n += 1;
            let n = *n;
            let max = c.max.entry(slot.clone()).or_default();
            *max = (*max).max(n);
        }
        if let Some(arrived) = &arrived {
            let _ = arrived.send(());
        }
        // Upstream latency, so that requests overlap; the assertions do not depend on it.
        std::thread::sleep(std::time::Duration::from_millis(3));
        *shared.lock().unwrap().now.get_mut(&slot).unwrap() -= 1;
        MockReply::json(200, completion("ok"))
    });
    (mock, seen)
}
