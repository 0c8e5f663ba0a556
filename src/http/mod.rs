//! The HTTP/1.1 server, on `std::net` and `httparse`: one accept thread, and one thread per
//! open connection (at most `MAX_CONNECTIONS`) that reads each request and handles it itself,
//! streams included, so an ordinary request is never handed from thread to thread.
//!
//! Safe by construction against hostile clients (ARCHITECTURE.md has the reasons and the
//! figures that chose this over tiny_http):
//! - every phase has a deadline: the request head, each interval of body progress, the idle
//!   wait between requests, every write;
//! - the head is bounded in size and field count, and framed by RFC 9112 with no leniency
//!   (`head`), so no body byte is ever read as a request;
//! - authentication and routing are decided from the head alone, and a body is read only for a
//!   known route and an authorised client, within `MAX_REQUEST_BODY_BYTES`;
//! - an answer sent before its body was read closes the connection;
//! - a connection over the limit gets a canned 503 from a non-blocking write, so the accept
//!   thread never waits on a client; accept errors (EMFILE included) are waited out, never fatal.

mod conn;
mod head;
mod response;

use crate::api::{self, Body, Incoming, Reply};
use crate::config::ClientLimits;
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;
use crate::sync::lock;
use conn::{Conn, ReadError};
use head::{Framing, Head, HeadError};
use response::{HeadBuilder, StreamWriter};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a request whose body is read waits for one of the `--workers` slots before it is
/// answered 503 `server_busy`.
const WORKER_WAIT: Duration = Duration::from_secs(5);
/// Request bodies this large or larger count against the body budget; smaller ones never wait.
const LARGE_BODY: u64 = 64 * 1024;
/// Accept errors (out of file descriptors, say) are retried after a pause that doubles from
/// the first to the last of these while they go on.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// A running server. `shutdown` stops it.
pub struct Running {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What the accept thread and every connection thread share.
struct Shared {
    state: Arc<AppState>,
    limits: ClientLimits,
    stopping: AtomicBool,
    /// One unit per request being handled (`--workers`).
    workers: Budget,
    /// Bytes of large request bodies being handled, at most `MAX_REQUEST_BODY_BYTES` together.
    bodies: Budget,
    connections: Mutex<Registry>,
    /// Signalled when a connection closes (shutdown waits for the last one).
    closed: Condvar,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Tracked>,
}

/// An open connection, so shutdown can close the idle ones at once.
struct Tracked {
    stream: Arc<TcpStream>,
    busy: Arc<AtomicBool>,
}

/// Binds `addr` and starts accepting. `workers` requests are handled at once.
pub fn start(state: Arc<AppState>, addr: &str, workers: usize) -> Result<Running, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let (limits, max_body) = {
        let settings = &state.config().settings;
        (settings.client, settings.max_request_body_bytes)
    };
    let shared = Arc::new(Shared {
        state,
        limits,
        stopping: AtomicBool::new(false),
        workers: Budget::new(workers as u64),
        bodies: Budget::new(max_body.max(LARGE_BODY)),
        connections: Mutex::new(Registry::default()),
        closed: Condvar::new(),
    });
    let accept = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&listener, &shared))
            .map_err(|e| format!("cannot start the accept thread: {e}"))?
    };
    Ok(Running { addr: local, shared, accept })
}

impl Running {
    /// Stops accepting, closes idle connections, lets requests under way finish for up to
    /// `grace`, and joins the accept thread. Returns how many connections were still busy at
    /// the end (their threads end with the process).
    pub fn shutdown(self, grace: Duration) -> usize {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if wake(self.addr) {
            let _ = self.accept.join();
        } else {
            log::warn!("could not wake the accept thread; it ends with the process");
        }
        let deadline = Instant::now() + grace;
        let mut registry = lock(&self.shared.connections);
        // An idle connection is closed now; a busy one closes itself after its request, since
        // `stopping` turns its keep-alive off. Each close signals `closed`.
        for tracked in registry.open.values().filter(|t| !t.busy.load(Ordering::SeqCst)) {
            let _ = tracked.stream.shutdown(Shutdown::Both);
        }
        while !registry.open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            registry = self.shared.closed.wait_timeout(registry, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        registry.open.len()
    }
}

/// Unblocks `accept()` by connecting to the listener (it checks `stopping` on every return).
fn wake(addr: SocketAddr) -> bool {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    (0..3).any(|_| TcpStream::connect_timeout(&SocketAddr::new(ip, addr.port()), Duration::from_secs(1)).is_ok())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut failures: u64 = 0;
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if failures > 0 {
                    log::warn!("accepting connections again after {failures} failed accept() calls");
                    (failures, backoff) = (0, ACCEPT_BACKOFF.0);
                }
                admit_connection(shared, stream);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            Err(e) => {
                // Out of file descriptors (EMFILE) or memory: the connection stays in the
                // backlog; wait for resources to come back, and say so once per episode.
                if failures == 0 {
                    log::error!("accept() failed ({e}); retrying with a back-off until it works again");
                }
                failures += 1;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
}

/// Starts a thread for a new connection, or refuses it at once when `MAX_CONNECTIONS` are open.
fn admit_connection(shared: &Arc<Shared>, stream: TcpStream) {
    let stream = Arc::new(stream);
    let busy = Arc::new(AtomicBool::new(false));
    let id = {
        let mut registry = lock(&shared.connections);
        if registry.open.len() >= shared.limits.max_connections {
            drop(registry);
            refuse(&stream);
            return;
        }
        registry.next_id += 1;
        let id = registry.next_id;
        registry.open.insert(id, Tracked { stream: stream.clone(), busy: busy.clone() });
        id
    };
    let thread_shared = shared.clone();
    let thread_stream = stream.clone();
    let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
        serve_connection(&thread_shared, thread_stream, &busy);
        forget(&thread_shared, id);
    });
    if let Err(e) = spawned {
        log::warn!("cannot start a connection thread ({e}); refusing the connection");
        forget(shared, id);
        refuse(&stream);
    }
}

fn forget(shared: &Shared, id: u64) {
    lock(&shared.connections).open.remove(&id);
    shared.closed.notify_all();
}

/// The answer to a connection over `MAX_CONNECTIONS`: one non-blocking write of a canned 503,
/// so a client that does not read cannot hold the accept thread.
fn refuse(stream: &TcpStream) {
    const BODY: &str = r#"{"error":{"message":"too many open connections (MAX_CONNECTIONS); retry shortly","type":"api_error","param":null,"code":"server_busy"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nserver: keyrelay\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&*stream).write(answer.as_bytes());
        // Read what already arrived, so closing is less likely to reset the connection before
        // the client has read the answer.
        let _ = (&*stream).read(&mut [0u8; 4096]);
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// What happens to a connection after an exchange.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// The request body was not read to its end: drain briefly, then close.
    Linger,
}

fn serve_connection(shared: &Shared, stream: Arc<TcpStream>, busy: &AtomicBool) {
    let Ok(mut conn) = Conn::new(stream, shared.limits) else { return };
    let mut wait = shared.limits.head_timeout;
    loop {
        let head = match conn.read_head(wait) {
            Ok(head) => head,
            Err(e) => {
                if answer_read_error(&mut conn, 1, e) == Next::Linger {
                    conn.linger_close();
                }
                return;
            }
        };
        busy.store(true, Ordering::SeqCst);
        let next = exchange(shared, &mut conn, head);
        busy.store(false, Ordering::SeqCst);
        match next {
            Next::KeepAlive if !shared.stopping.load(Ordering::SeqCst) => wait = shared.limits.idle_timeout,
            Next::Linger => return conn.linger_close(),
            _ => return,
        }
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_request_id() -> String {
    format!("{:x}-{}", std::process::id(), REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// One request and its answer. Authentication and routing come first, from the head; the body
/// is read only when both pass.
fn exchange(shared: &Shared, conn: &mut Conn, mut head: Head) -> Next {
    let started = Instant::now();
    let state = &shared.state;
    let keep_alive = head.keep_alive && !shared.stopping.load(Ordering::SeqCst);
    let mut req = Incoming {
        id: next_request_id(),
        method: head.method.clone(),
        path: api::canonical_path(head.path()),
        // The answer needs the head's framing and version, not its fields.
        headers: std::mem::take(&mut head.headers),
        body: Vec::new(),
    };
    let after = if keep_alive { Next::KeepAlive } else { Next::Close };
    if let Some(reply) = api::admit(state, &req) {
        return answer(conn, &head, &req, started, reply, if head.has_body() { Next::Linger } else { after });
    }
    let large_body = match receive_body(shared, conn, &head, &req, after) {
        Ok((body, permit)) => {
            req.body = body;
            permit
        }
        Err(Refusal::Answer(reply, next)) => return answer(conn, &head, &req, started, reply, next),
        Err(Refusal::Unreadable(e)) => {
            log_exchange(&req, 400, started);
            return answer_read_error(conn, head.minor_version, e);
        }
        Err(Refusal::Gone) => return Next::Close,
    };
    let Some(slot) = shared.workers.acquire(1, WORKER_WAIT) else {
        return answer(conn, &head, &req, started, busy(&req), after);
    };
    let reply = match catch_unwind(AssertUnwindSafe(|| api::dispatch(state, &req))) {
        Ok(reply) => reply,
        Err(_) => {
            log::error!("request {} {} {} panicked", req.id, req.method, req.path);
            api::error_reply(&req, &ApiError::internal("internal error; see the server log"))
        }
    };
    drop(slot);
    req.body = Vec::new();
    if large_body.is_some() {
        drop(large_body);
        release_freed_memory();
    }
    answer(conn, &head, &req, started, reply, after)
}

/// Why a request's body was not taken.
enum Refusal {
    /// Answer this, then do that with the connection.
    Answer(Reply, Next),
    /// The body broke its framing or its deadline.
    Unreadable(ReadError),
    /// The client left.
    Gone,
}

/// Reads an admitted request's body within `MAX_REQUEST_BODY_BYTES`. A large body also takes
/// its size from the body budget, before it is read when its length is declared, and keeps it
/// (the returned permit) while the request is handled: its parsed JSON tree can cost many
/// times its size, and the budget bounds what all large bodies together can cost.
fn receive_body<'a>(
    shared: &'a Shared,
    conn: &mut Conn,
    head: &Head,
    req: &Incoming,
    after: Next,
) -> Result<(Vec<u8>, Option<Permit<'a>>), Refusal> {
    let limit = shared.state.config().settings.max_request_body_bytes;
    let too_large = || Refusal::Answer(api::error_reply(req, &ApiError::too_large(limit)), Next::Linger);
    let mut permit = match head.framing {
        Framing::Length(n) if n > limit => return Err(too_large()),
        Framing::Length(n) if n >= LARGE_BODY => {
            Some(shared.bodies.acquire(n, WORKER_WAIT).ok_or_else(|| Refusal::Answer(busy(req), Next::Linger))?)
        }
        _ => None,
    };
    if head.expect_continue && head.has_body() && conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
        return Err(Refusal::Gone);
    }
    let body = conn.read_body(head.framing, limit).map_err(|e| match e {
        ReadError::BodyTooLarge => too_large(),
        e => Refusal::Unreadable(e),
    })?;
    let size = body.len() as u64;
    if permit.is_none() && size >= LARGE_BODY {
        permit = Some(shared.bodies.acquire(size, WORKER_WAIT).ok_or_else(|| Refusal::Answer(busy(req), after))?);
    }
    Ok((body, permit))
}

fn busy(req: &Incoming) -> Reply {
    let busy = ApiError::of(ErrorKind::ServerBusy, "the server is busy; retry shortly").with_retry_after(1);
    api::error_reply(req, &busy)
}

/// Gives freed heap memory back to the system after a large request. glibc keeps what a thread
/// freed in that thread's arena, so without this a few large JSON bodies (whose parsed trees
/// cost many times their size) would leave hundreds of MB resident for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and works on glibc's heap under its own locks.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Writes `reply`, logs the exchange, and says what the connection does next.
fn answer(conn: &mut Conn, head: &Head, req: &Incoming, started: Instant, reply: Reply, next: Next) -> Next {
    let status = reply.status;
    let next = send(conn, head, &req.id, reply, next);
    log_exchange(req, status, started);
    next
}

/// Writes `reply`; returns what the connection does next (`Close` if writing failed).
fn send(conn: &mut Conn, head: &Head, id: &str, reply: Reply, next: Next) -> Next {
    let close = next != Next::KeepAlive;
    let mut out = HeadBuilder::new(head.minor_version, reply.status, id, close);
    for (name, value) in &reply.headers {
        out.header(name, value);
    }
    let written = match reply.body {
        Body::Json(bytes) => conn.write_all(&out.with_body("application/json", &bytes, head.method == "HEAD")),
        Body::Text { content_type, bytes } => {
            conn.write_all(&out.with_body(content_type, &bytes, head.method == "HEAD"))
        }
        Body::Empty => conn.write_all(&out.with_body("text/plain", b"", false)),
        Body::Sse(events) => {
            let chunked = head.minor_version == 1;
            return match write_stream(conn, out.for_stream(chunked), chunked, events) {
                Ok(()) if chunked => next,
                _ => Next::Close,
            };
        }
    };
    match written {
        Ok(()) => next,
        Err(e) => {
            log::debug!("could not write the answer: {e}");
            Next::Close
        }
    }
}

/// Writes a stream event by event. A write error means the client left: the event source is
/// dropped at once, which closes the upstream call and frees its key.
fn write_stream(conn: &mut Conn, head: Vec<u8>, chunked: bool, events: api::EventStream) -> io::Result<()> {
    let mut out = StreamWriter::new(&*conn.stream, head, chunked);
    for event in events {
        if let Err(e) = out.event(&event) {
            log::info!("client disconnected mid-stream ({e}); upstream call closed");
            return Err(e);
        }
    }
    out.finish()
}

/// The answer to a request that could not be read. The connection then closes, after a
/// linger when the client may still be sending (so it reads the answer, not a reset).
fn answer_read_error(conn: &mut Conn, minor_version: u8, error: ReadError) -> Next {
    let (kind, message) = match error {
        ReadError::Closed | ReadError::Timeout { started: false } => return Next::Close,
        ReadError::Io(e) => {
            log::debug!("client connection failed: {e}");
            return Next::Close;
        }
        ReadError::Timeout { started: true } => (ErrorKind::RequestTimeout, "the request did not arrive in time"),
        ReadError::Head(HeadError::TooLarge) => {
            (ErrorKind::HeadTooLarge, "the request head is too large or has too many fields")
        }
        ReadError::Head(HeadError::Expectation) => {
            (ErrorKind::ExpectationFailed, "only Expect: 100-continue is supported")
        }
        ReadError::Head(HeadError::BodyTooLarge) | ReadError::BodyTooLarge => {
            (ErrorKind::RequestTooLarge, "the request body is too large")
        }
        ReadError::Head(HeadError::Bad(why)) | ReadError::BadBody(why) => (ErrorKind::InvalidRequest, why),
    };
    let status = kind.status();
    let error = ApiError::of(kind, message);
    let reply = Reply::openai_error(&error);
    let Body::Json(body) = reply.body else { return Next::Close };
    let bytes = HeadBuilder::new(minor_version, status, "-", true).with_body("application/json", &body, false);
    match conn.write_all(&bytes) {
        Ok(()) => Next::Linger,
        Err(_) => Next::Close,
    }
}

fn log_exchange(req: &Incoming, status: u16, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info!("{} {} {status} {ms:.1}ms id={}", req.method, req.path, req.id);
}

/// A counting semaphore of units: worker slots (one per request), or bytes of large bodies.
struct Budget {
    free: Mutex<u64>,
    released: Condvar,
}

/// Units taken from a `Budget`, given back on drop.
struct Permit<'a> {
    budget: &'a Budget,
    units: u64,
}

impl Budget {
    fn new(units: u64) -> Budget {
        Budget { free: Mutex::new(units), released: Condvar::new() }
    }

    /// Takes `units`, waiting up to `wait` for them to be free.
    fn acquire(&self, units: u64, wait: Duration) -> Option<Permit<'_>> {
        let deadline = Instant::now() + wait;
        let mut free = lock(&self.free);
        while *free < units {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            free = self.released.wait_timeout(free, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *free -= units;
        Some(Permit { budget: self, units })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.budget.free) += self.units;
        self.budget.released.notify_all();
    }
}
