//! A stream committed to its key: reads the upstream body, parses its SSE events, has the
//! provider's translator turn them into OpenAI chat chunks, and reports the outcome to the
//! key's lease when the stream ends (success with its usage, or a transient failure when it
//! broke or stalled). Dropping it (a client that left) frees the key at once. A pass-through
//! stream runs the same way with its own step type (`StreamItem`), so these rules hold for
//! every stream in one place.

use super::{Lease, usage_outcome};
use crate::keys::pool::Outcome;
use crate::providers::{self, StreamTranslator, Translated, eventstream::Framing};
use crate::sse;
use crate::upstream;
use serde_json::Value;
use std::collections::VecDeque;
use std::io::Read;
use std::time::Duration;

/// What the stream relay must know of a translated step to report the key's outcome.
pub trait StreamItem: Sized + Send {
    /// The usage this step reports (the stream's total so far), if any.
    fn usage(&self) -> Option<&Value>;
    /// Why the stream failed, when this step is an error (nothing follows it).
    fn failure(&self) -> Option<String>;
    /// The error step that ends a stream which broke or stalled after it was committed.
    fn broken(code: &str, message: &str) -> Self;
}

impl StreamItem for Translated {
    fn usage(&self) -> Option<&Value> {
        match self {
            Translated::Chunk(chunk) => chunk.get("usage").filter(|u| !u.is_null()),
            Translated::Error(_) => None,
        }
    }

    fn failure(&self) -> Option<String> {
        match self {
            Translated::Chunk(_) => None,
            Translated::Error(error) => {
                Some(error["error"]["message"].as_str().unwrap_or("error in the stream").to_string())
            }
        }
    }

    fn broken(code: &str, message: &str) -> Translated {
        Translated::Error(providers::stream_error(code, message))
    }
}

/// Bytes read from the upstream at a time.
const READ_CHUNK: usize = 4 * 1024;

pub struct UpstreamStream<T: StreamItem = Translated> {
    /// First field, so it is dropped first: the upstream connection is closed before the key's
    /// slot is given back, so the upstream never sees the key's next request while it still
    /// holds this one (the limit holds from its side too).
    upstream: Box<dyn Read + Send>,
    lease: Lease,
    first: Option<Vec<u8>>,
    /// SSE, or Bedrock's event stream (`framed`).
    parser: Framing,
    translator: Box<dyn StreamTranslator<T>>,
    ready: VecDeque<T>,
    /// The last usage seen, for the key's counters.
    usage: Value,
    ended: bool,
    idle_limit: Duration,
}

impl<T: StreamItem> UpstreamStream<T> {
    pub fn new(
        lease: Lease,
        first: Vec<u8>,
        upstream: Box<dyn Read + Send>,
        translator: Box<dyn StreamTranslator<T>>,
        idle_limit: Duration,
    ) -> UpstreamStream<T> {
        UpstreamStream {
            upstream,
            lease,
            first: Some(first),
            parser: Framing::Sse(sse::Parser::new()),
            translator,
            ready: VecDeque::new(),
            usage: Value::Null,
            ended: false,
            idle_limit,
        }
    }

    /// The stream with the wire framing of its family (SSE unless told otherwise).
    pub fn framed(mut self, framing: Framing) -> UpstreamStream<T> {
        self.parser = framing;
        self
    }

    fn read_more(&mut self) {
        let bytes = match self.first.take() {
            Some(first) => first,
            None => {
                // Small: ureq buffers the connection already, and a thousand open streams each
                // hold one of these while they wait for the next event.
                let mut buf = vec![0u8; READ_CHUNK];
                match self.upstream.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        buf
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                    Err(e) if upstream::is_timeout(&e) => {
                        let secs = self.idle_limit.as_secs_f64();
                        return self.broken(
                            "stream_stalled",
                            &format!("upstream sent nothing for {secs} s (TIMEOUT_READ_STREAMING)"),
                        );
                    }
                    Err(e) => {
                        let why = format!("upstream stream broke: {e}");
                        return self.broken("stream_interrupted", &crate::redact::text(&why));
                    }
                }
            }
        };
        let mut out = Vec::new();
        let mut events = Vec::new();
        if bytes.is_empty() {
            self.parser.finish(&mut events);
            events.iter().for_each(|e| self.translator.event(e, &mut out));
            self.translator.finish(&mut out);
            self.ended = true;
        } else if let Err(why) = self.parser.feed(&bytes, &mut events) {
            // The events before the bad bytes still go out, then the in-band error.
            events.iter().for_each(|e| self.translator.event(e, &mut out));
            self.accept(out);
            if !self.ended {
                self.broken("stream_interrupted", &why);
            }
            return;
        } else {
            events.iter().for_each(|e| self.translator.event(e, &mut out));
        }
        self.accept(out);
    }

    /// Queues translated steps for the client and settles the key's outcome: an error ends
    /// the stream as a transient failure; a clean end is a success with the usage seen.
    fn accept(&mut self, out: Vec<T>) {
        for item in out {
            if let Some(reason) = item.failure() {
                // Redacted upstream text already; again, since `key_usage.json` keeps it.
                let reason = crate::redact::text(&reason).into_owned();
                self.lease.report(Outcome::Transient { reason });
                self.ready.push_back(item);
                self.ended = true;
                return;
            }
            if let Some(usage) = item.usage() {
                self.usage = usage.clone();
            }
            self.ready.push_back(item);
        }
        if self.ended {
            self.lease.report(usage_outcome(&self.usage));
        }
    }

    /// The upstream broke or stalled after the stream was committed: an in-band error.
    fn broken(&mut self, code: &str, message: &str) {
        log::warn!("stream on key {} ended early: {message}", self.lease.masked);
        self.accept(vec![T::broken(code, message)]);
    }
}

impl<T: StreamItem> Iterator for UpstreamStream<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            self.read_more();
        }
    }
}
