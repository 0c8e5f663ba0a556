//! The HTTP server: the only module that imports `tiny_http`. One accept thread hands requests
//! to a bounded queue served by a fixed set of workers; a full queue is answered 503 at once.
//! Streams bypass `tiny_http::Response` (which buffers) and are written with chunked framing
//! by `ChunkedWriter`, one flush per event.

mod chunked;

use crate::api::{self, Body, Incoming, Reply};
use crate::error::ApiError;
use crate::state::AppState;
use chunked::ChunkedWriter;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::io::Read;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running server. `shutdown` stops it; dropping it without that leaves threads running.
pub struct Running {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    workers_done: Receiver<()>,
}

/// Sent when the accept loop ends on its own, which only a broken listener causes.
pub struct AcceptFailed(pub String);

/// Binds `addr` and starts the accept thread and `workers` workers.
pub fn start(
    state: Arc<AppState>,
    addr: &str,
    workers: usize,
    on_failure: Sender<AcceptFailed>,
) -> Result<Running, String> {
    let server = Arc::new(tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    let local = server.server_addr().to_ip().ok_or_else(|| format!("{addr} is not an IP address"))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (queue_tx, queue_rx) = crossbeam_channel::bounded::<tiny_http::Request>(workers * 4);
    let (done_tx, workers_done) = crossbeam_channel::unbounded();

    let workers = (0..workers)
        .map(|i| {
            let (state, queue_rx, done_tx) = (state.clone(), queue_rx.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    for request in queue_rx {
                        serve_one(&state, request);
                    }
                    let _ = done_tx.send(());
                })
                .map_err(|e| format!("cannot start worker threads: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;

    let accept = {
        let (server, stopping) = (server.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&server, &stopping, queue_tx, &on_failure))
            .map_err(|e| format!("cannot start the accept thread: {e}"))?
    };
    Ok(Running { addr: local, server, stopping, accept, workers, workers_done })
}

impl Running {
    /// Stops accepting, lets queued and in-flight requests finish for up to `grace`, and joins
    /// every thread that finished. Returns how many workers were still busy at the end.
    pub fn shutdown(self, grace: Duration) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        let _ = self.accept.join();
        let deadline = Instant::now() + grace;
        let mut finished = 0;
        while finished < self.workers.len() {
            match self.workers_done.recv_deadline(deadline) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        let busy = self.workers.len() - finished;
        if busy == 0 {
            for worker in self.workers {
                let _ = worker.join();
            }
        }
        busy
    }
}

/// tiny_http's accept thread stops for good on its first `accept()` error (EMFILE, say), after
/// which every connection is refused: so any error here that is not our own stop is reported
/// as fatal, and the process exits for its supervisor to restart it.
fn accept_loop(
    server: &tiny_http::Server,
    stopping: &AtomicBool,
    queue: Sender<tiny_http::Request>,
    on_failure: &Sender<AcceptFailed>,
) {
    loop {
        match server.recv() {
            Ok(request) => match queue.try_send(request) {
                Ok(()) => {}
                Err(TrySendError::Full(request)) => {
                    let busy = ApiError::new(503, "api_error", "server_busy", "every worker is busy; retry shortly");
                    let mut reply = Reply::openai_error(&busy);
                    reply.headers.push(("retry-after".into(), "1".into()));
                    write_reply(request, reply, "-");
                }
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                let _ = on_failure.send(AcceptFailed(e.to_string()));
                return;
            }
        }
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_request_id() -> String {
    format!("{:x}-{}", std::process::id(), REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn serve_one(state: &Arc<AppState>, request: tiny_http::Request) {
    let started = Instant::now();
    let id = next_request_id();
    let (method, url) = (request.method().as_str().to_string(), request.url().to_string());
    let mut slot = Some(request);
    let outcome = catch_unwind(AssertUnwindSafe(|| handle(state, &mut slot, &id)));
    let status = match outcome {
        Ok(status) => status,
        Err(_) => {
            log::error!("request {id} {method} {url} panicked");
            match slot.take() {
                Some(request) => write_reply(
                    request,
                    Reply::openai_error(&ApiError::internal("internal error; see the server log")),
                    &id,
                ),
                None => 500,
            }
        }
    };
    let path = url.split('?').next().unwrap_or("");
    log::info!("{method} {path} {status} {:.1}ms id={id}", started.elapsed().as_secs_f64() * 1000.0);
}

/// Reads the body within the limit, dispatches, writes the answer. Returns the status sent.
fn handle(state: &Arc<AppState>, slot: &mut Option<tiny_http::Request>, id: &str) -> u16 {
    let request = slot.as_mut().expect("the request is answered once");
    let limit = state.config().settings.max_request_body_bytes;
    let incoming = match read_incoming(request, limit, id) {
        Ok(incoming) => incoming,
        Err(error) => {
            return write_reply(slot.take().expect("unanswered"), Reply::openai_error(&error), id);
        }
    };
    let http11 = request.http_version() == &tiny_http::HTTPVersion(1, 1);
    let reply = api::dispatch(state, &incoming);
    let request = slot.take().expect("unanswered");
    match reply.body {
        Body::Sse(events) => write_stream(request, reply.status, reply.headers, events, http11, id),
        _ => write_reply(request, reply, id),
    }
}

/// The request with its body, or 413 when the body is over the limit (by its declared length,
/// without reading it, or while reading).
fn read_incoming(request: &mut tiny_http::Request, limit: u64, id: &str) -> Result<Incoming, ApiError> {
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = Vec::new();
    if let Err(e) = request.as_reader().take(limit + 1).read_to_end(&mut body) {
        return Err(ApiError::invalid_request(format!("could not read the request body: {e}")));
    }
    if body.len() as u64 > limit {
        return Err(ApiError::too_large(limit));
    }
    let url = request.url();
    Ok(Incoming {
        id: id.to_string(),
        method: request.method().as_str().to_ascii_uppercase(),
        path: url.split('?').next().unwrap_or("").to_string(),
        headers: request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
            .collect(),
        body,
    })
}

const CORS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-headers", "authorization, content-type, x-api-key, anthropic-version"),
    ("access-control-allow-methods", "GET, POST, OPTIONS"),
];

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn write_reply(request: tiny_http::Request, reply: Reply, id: &str) -> u16 {
    let (content_type, data) = match reply.body {
        Body::Json(bytes) => ("application/json", bytes),
        Body::Empty | Body::Sse(_) => ("text/plain", Vec::new()),
    };
    let mut response = tiny_http::Response::from_data(data).with_status_code(reply.status);
    let fixed = [("content-type", content_type), ("server", "keyrelay"), ("x-request-id", id)];
    for (name, value) in
        fixed.iter().chain(CORS.iter()).copied().chain(reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        if let Some(h) = header(name, value) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("could not write the response: {e}");
    }
    reply.status
}

/// Writes a stream event by event. A write error means the client left: the event source is
/// dropped at once, which closes the upstream call and frees its key.
fn write_stream(
    request: tiny_http::Request,
    status: u16,
    headers: Vec<(String, String)>,
    events: api::EventStream,
    http11: bool,
    id: &str,
) -> u16 {
    let mut extra: Vec<(String, String)> = CORS.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    extra.push(("x-request-id".into(), id.to_string()));
    extra.extend(headers);
    let mut out = match ChunkedWriter::start(request.into_writer(), status, &extra, http11) {
        Ok(out) => out,
        Err(e) => {
            log::debug!("client left before the stream started: {e}");
            return status;
        }
    };
    for event in events {
        if let Err(e) = out.chunk(&event) {
            log::info!("client disconnected mid-stream ({e}); upstream call closed");
            return status;
        }
    }
    if let Err(e) = out.finish() {
        log::debug!("client left at the end of the stream: {e}");
    }
    status
}
