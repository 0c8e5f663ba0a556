//! The HTTP client side: the only module that imports `ureq`. It sends `UpstreamRequest`s with
//! the configured timeouts and hands back status, headers and a body reader. It never follows
//! redirects, never turns a status into an error (the caller classifies), and never logs wire
//! data (ureq's TRACE logging is filtered out in `logging`, it is not redacted).
//!
//! It is also the one choke point for what upstreams say: every response body is read through
//! `redact::RedactingReader`, and every header value and transport error message is redacted,
//! so everything downstream (answers, stream events, error messages, cooldown reasons, logs)
//! only ever sees upstream text with the configured secrets removed.

use crate::redact::{self, RedactingReader};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use ureq::unversioned::resolver::ResolvedSocketAddrs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Streaming calls get an idle timeout per read instead of a whole-response budget.
    pub stream: bool,
}

pub struct UpstreamResponse {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read + Send>,
}

/// Why an upstream call failed before a status line arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    Connect(String),
    Timeout(String),
    Other(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Connect(m) => write!(f, "connection failed: {m}"),
            TransportError::Timeout(m) => write!(f, "timed out: {m}"),
            TransportError::Other(m) => f.write_str(m),
        }
    }
}

/// A shared connection pool with keyrelay's defaults. Cloning is cheap.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    timeouts: Timeouts,
}

/// The client's deadlines (`TIMEOUT_CONNECT`, `TIMEOUT_READ_NON_STREAMING`,
/// `TIMEOUT_READ_STREAMING`: `config::Settings::timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// A whole answer's read deadline.
    pub non_streaming: Duration,
    /// How long a stream may stay silent.
    pub streaming_idle: Duration,
}

/// Bytes ureq reads from an upstream connection at a time; also the largest response head
/// (16 KiB, Node's default limit too; providers' heads are a few KiB).
const UPSTREAM_INPUT_BUFFER: usize = 16 * 1024;
/// Bytes ureq writes at a time: a request head (ours, a few KiB at most) and body pieces.
const UPSTREAM_OUTPUT_BUFFER: usize = 4 * 1024;

/// Upstream bodies read whole (non-streaming answers, model lists) stop here.
pub const MAX_RESPONSE_BYTES: u64 = 256 << 20;

impl Client {
    pub fn new(timeouts: Timeouts) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("keyrelay/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(256)
            .max_idle_connections_per_host(64)
            .timeout_connect(Some(timeouts.connect))
            // ureq allocates both buffers, 128 KiB each by default, for every connection it
            // opens or keeps idle: 256 KiB a stream, 256 MB for 1,000 streams. A response head
            // must fit in the input buffer (it does not grow), so the head limit matches it.
            .input_buffer_size(UPSTREAM_INPUT_BUFFER)
            .max_response_header_size(UPSTREAM_INPUT_BUFFER)
            .output_buffer_size(UPSTREAM_OUTPUT_BUFFER)
            .build();
        let connector = ureq::unversioned::transport::DefaultConnector::default();
        Client { agent: ureq::Agent::with_parts(config, connector, CachingResolver::default()), timeouts }
    }

    pub fn send(&self, req: &UpstreamRequest) -> Result<UpstreamResponse, TransportError> {
        self.send_with(req, redact::current())
    }

    /// Like `send`, but the answer is not redacted: for OAuth token endpoints only, whose
    /// answer is the credential's own new tokens (an unchanged refresh token sent back would
    /// otherwise come out as `[REDACTED]`). The caller keeps the body out of every message.
    pub fn send_unredacted(&self, req: &UpstreamRequest) -> Result<UpstreamResponse, TransportError> {
        self.send_with(req, Arc::new(redact::Redactor::new([])))
    }

    fn send_with(
        &self,
        req: &UpstreamRequest,
        redactor: Arc<redact::Redactor>,
    ) -> Result<UpstreamResponse, TransportError> {
        let result = match req.method {
            Method::Get => {
                let mut b = self.agent.get(&req.url);
                for (name, value) in &req.headers {
                    b = b.header(name, value);
                }
                self.configure(b, req.stream).call()
            }
            Method::Post => {
                let mut b = self.agent.post(&req.url);
                for (name, value) in &req.headers {
                    b = b.header(name, value);
                }
                let body: &[u8] = req.body.as_deref().unwrap_or_default();
                self.configure(b, req.stream).send(body)
            }
        };
        let response = result.map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_ascii_lowercase(), redactor.text(v.to_str().ok()?).into_owned())))
            .collect();
        let body = Box::new(RedactingReader::new(response.into_body().into_reader(), redactor));
        Ok(UpstreamResponse { status, headers, body })
    }

    /// Streams get an idle timeout per read and no total budget (a long answer is fine as
    /// long as it keeps coming); other calls get one budget for the whole exchange.
    fn configure<B>(&self, b: ureq::RequestBuilder<B>, stream: bool) -> ureq::RequestBuilder<B> {
        let c = b.config().timeout_connect(Some(self.timeouts.connect));
        if stream {
            let idle = Some(self.timeouts.streaming_idle);
            c.timeout_recv_response(idle).timeout_per_read(idle).build()
        } else {
            c.timeout_per_call(Some(self.timeouts.non_streaming)).build()
        }
    }
}

/// How long a host's addresses are reused before they are looked up again.
const DNS_CACHE: Duration = Duration::from_secs(60);

/// ureq's resolver looks a host up on every request, before it even checks its connection
/// pool, and with a timeout configured it does so on a new thread each time (ureq 3.5). This
/// one remembers each host's addresses for `DNS_CACHE`, so a busy proxy resolves an upstream
/// once a minute instead of once per request.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = format!("{}://{}", uri.scheme_str().unwrap_or(""), uri.authority().map_or("", |a| a.as_str()));
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&host)
            .filter(|(at, _)| at.elapsed() < DNS_CACHE)
            .map(|(_, a)| a.clone());
        if let Some(addrs) = cached {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(host, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// The failure, its text redacted: ureq's messages can quote what the upstream sent.
fn transport_error(e: ureq::Error) -> TransportError {
    let clean = |m: String| redact::text(&m).into_owned();
    match e {
        ureq::Error::Timeout(t) => TransportError::Timeout(format!("{t:?}")),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TransportError::Connect(clean(e.to_string())),
        ureq::Error::Io(io) if is_connect_refusal(&io) => TransportError::Connect(clean(io.to_string())),
        other => TransportError::Other(clean(other.to_string())),
    }
}

fn is_connect_refusal(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable)
}

/// Whether a body read failed because an upstream timeout fired (idle stream, slow body).
pub fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// Reads a whole body, at most `MAX_RESPONSE_BYTES`.
pub fn read_all(body: &mut (dyn Read + Send)) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    body.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(io::Error::other("upstream response is larger than 256 MiB"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LauncherConfig};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::path::Path;

    fn client() -> Client {
        let config = Config::from_env(Path::new("."), &Default::default(), LauncherConfig::default()).unwrap();
        Client::new(config.settings.timeouts())
    }

    /// Serves one request: reads its head and `Content-Length` body, answers with a header of
    /// `header_bytes` and a small body, and hands back the request body it received.
    fn one_answer(header_bytes: usize) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/x", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                "a".repeat(header_bytes)
            );
            let _ = (&stream).write_all(head.as_bytes());
            body
        });
        (url, server)
    }

    fn post(url: &str, body: Vec<u8>) -> UpstreamRequest {
        UpstreamRequest { method: Method::Post, url: url.into(), headers: vec![], body: Some(body), stream: false }
    }

    #[test]
    fn small_buffers_still_carry_large_bodies_and_heads_within_the_limit() {
        // A body many times the output buffer, and a response head near the input buffer's size.
        let (url, server) = one_answer(UPSTREAM_INPUT_BUFFER - 1024);
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut response = client().send(&post(&url, sent.clone())).unwrap();
        let mut body = String::new();
        response.body.read_to_string(&mut body).unwrap();
        assert_eq!((response.status, body.as_str()), (200, "ok"));
        assert_eq!(
            response.headers.iter().find(|(n, _)| n == "x-big").map(|(_, v)| v.len()),
            Some(UPSTREAM_INPUT_BUFFER - 1024)
        );
        assert!(server.join().unwrap() == sent, "the request body arrived whole");
    }

    #[test]
    fn a_response_head_over_the_input_buffer_is_an_error_not_a_hang() {
        let (url, server) = one_answer(UPSTREAM_INPUT_BUFFER + 1024);
        let err = client().send(&post(&url, b"{}".to_vec())).err().expect("a head over the limit fails");
        assert!(matches!(err, TransportError::Other(_)), "{err:?}");
        let _ = server.join();
    }
}
