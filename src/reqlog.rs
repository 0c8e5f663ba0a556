//! Detailed per-request logs (`serve --enable-request-logging`): one folder per request under
//! `logs/detailed_logs/<UTC yyyymmdd-hhmmss>_<request id>/` with `request.json`,
//! `streaming_chunks.jsonl` (streams), `final_response.json` and `metadata.json`. Only bodies
//! and outcomes are written, never headers, so neither the proxy key nor a provider key can
//! reach these files. Writing is best effort: a full disk costs the log, not the request.

use serde_json::{Value, json};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct RequestLog {
    dir: PathBuf,
    id: String,
    started: Instant,
    chunks: Option<File>,
}

impl RequestLog {
    /// Creates the request's folder and writes `request.json`.
    pub fn start(root: &Path, id: &str, body: &[u8]) -> Option<RequestLog> {
        let dir = root.join(format!("{}_{id}", utc_stamp(SystemTime::now())));
        if let Err(e) = fs::create_dir_all(&dir) {
            log::warn!("request log {} not written: {e}", dir.display());
            return None;
        }
        let request: Value =
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let log = RequestLog { dir, id: id.to_string(), started: Instant::now(), chunks: None };
        log.write(
            "request.json",
            &json!({"request_id": id, "timestamp_utc": rfc3339(SystemTime::now()), "body": request}),
        );
        Some(log)
    }

    /// Appends one relayed stream event to `streaming_chunks.jsonl`.
    pub fn chunk(&mut self, data: &str) {
        if self.chunks.is_none() {
            self.chunks = File::create(self.dir.join("streaming_chunks.jsonl")).ok();
        }
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()));
        let line = json!({"timestamp_utc": rfc3339(SystemTime::now()), "chunk": chunk});
        if let Some(f) = self.chunks.as_mut() {
            let _ = writeln!(f, "{line}");
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
        if let Err(e) = fs::write(self.dir.join(name), bytes) {
            log::warn!("request log {name} not written: {e}");
        }
    }
}

/// `yyyymmdd-hhmmss` in UTC.
fn utc_stamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    let millis = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_millis());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

/// Calendar date and time of day in UTC (Howard Hinnant's days-from-civil inverse).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_formats() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_570_196_042);
        assert_eq!(utc_stamp(t), "20261125-012956");
        assert_eq!(rfc3339(t), "2026-11-25T01:29:56.042Z");
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229-000000");
    }
}
