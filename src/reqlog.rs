//! Detailed per-request logs (`serve --enable-request-logging`): one folder per request under
//! `logs/detailed_logs/<UTC yyyymmdd-hhmmss>_<request id>/` with `request.json`,
//! `streaming_chunks.jsonl` (streams), `final_response.json` and `metadata.json`. Only bodies
//! and outcomes are written, never headers, so neither the proxy key nor a provider key can
//! reach these files. Writing is best effort: a full disk costs the log, not the request.
//! Prompts and answers are private: every folder is created 0700 and every file 0600.

use crate::clock::{now_ms, rfc3339, utc_stamp};
use crate::logging::{create_private_dir, create_private_file};
use serde_json::{Value, json};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct RequestLog {
    dir: PathBuf,
    id: String,
    started: Instant,
    chunks: Option<File>,
}

impl RequestLog {
    /// Creates the request's folder and writes `request.json`.
    pub fn start(root: &Path, id: &str, body: &[u8]) -> Option<RequestLog> {
        let dir = root.join(format!("{}_{id}", utc_stamp(now_ms())));
        if let Err(e) = create_private_dir(&dir) {
            log::warn!("request log {} not written: {e}", dir.display());
            return None;
        }
        let request: Value =
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let log = RequestLog { dir, id: id.to_string(), started: Instant::now(), chunks: None };
        log.write("request.json", &json!({"request_id": id, "timestamp_utc": rfc3339(now_ms()), "body": request}));
        Some(log)
    }

    /// Appends one relayed stream event to `streaming_chunks.jsonl`.
    pub fn chunk(&mut self, data: &str) {
        if self.chunks.is_none() {
            self.chunks = create_private_file(&self.dir.join("streaming_chunks.jsonl")).ok();
        }
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()));
        let line = json!({"timestamp_utc": rfc3339(now_ms()), "chunk": chunk});
        if let Some(f) = self.chunks.as_mut() {
            let _ = writeln!(f, "{}", crate::redact::text(&line.to_string()));
        }
    }

    /// Writes `final_response.json` and `metadata.json`; `metadata` gets the request id and
    /// the duration added.
    pub fn finish(self, final_response: &Value, mut metadata: Value) {
        self.write("final_response.json", final_response);
        if let Some(m) = metadata.as_object_mut() {
            m.insert("request_id".into(), json!(self.id));
            m.insert("duration_ms".into(), json!(self.started.elapsed().as_millis() as u64));
        }
        self.write("metadata.json", &metadata);
    }

    fn write(&self, name: &str, value: &Value) {
        let bytes = serde_json::to_vec_pretty(value).expect("a JSON value serialises");
        if let Err(e) =
            create_private_file(&self.dir.join(name)).and_then(|mut f| f.write_all(&crate::redact::bytes(&bytes)))
        {
            log::warn!("request log {name} not written: {e}");
        }
    }
}
