//! The key report shared by `GET /v1/quota-stats` (one JSON object) and `keyrelay status`
//! (JSON Lines or a table): every key, then per provider, then a summary.

use crate::keys::pool::KeyStatus;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `{"keys": [...], "providers": [...], "summary": {...}}`; every entry already carries the
/// `type` tag of its `status --json` line. `oauth` holds, by key id, what is shown of an OAuth
/// credential (`oauth::refresh::describe`: account, expiry, state); one whose state is
/// `needs_login` takes that as its key state too, since it takes no request until a new login;
/// so does a Vertex service account whose token exchange was `refused`.
pub fn build(statuses: &[KeyStatus], oauth: &BTreeMap<String, Value>) -> Value {
    let keys: Vec<Value> = statuses
        .iter()
        .map(|k| {
            let mut v = serde_json::to_value(k).expect("a key status serialises");
            v["type"] = json!("key");
            if let Some(o) = oauth.get(&k.id) {
                if o["state"] == "needs_login" || o["state"] == "refused" {
                    v["state"] = o["state"].clone();
                }
                v["oauth"] = o.clone();
            }
            v
        })
        .collect();
    let mut providers: BTreeMap<&str, [u64; 8]> = BTreeMap::new();
    for k in &keys {
        let p = providers.entry(k["provider"].as_str().unwrap_or_default()).or_default();
        p[0] += 1;
        let slot = match k["state"].as_str().unwrap_or_default() {
            "ready" => 1,
            "busy" => 2,
            "cooldown" => 3,
            "needs_login" | "refused" => 6,
            _ => 4,
        };
        p[slot] += 1;
        p[5] += k["in_flight"].as_u64().unwrap_or(0);
        p[7] += u64::from(k.get("oauth").is_some());
    }
    let provider_lines: Vec<Value> = providers
        .iter()
        .map(|(name, [keys, ready, busy, cooldown, locked, in_flight, needs_login, oauth])| {
            let mut line = json!({"type": "provider", "provider": name, "keys": keys, "ready": ready, "busy": busy,
                   "cooldown": cooldown, "locked": locked, "in_flight": in_flight});
            // Only providers with OAuth accounts have accounts that can need a login.
            if *oauth > 0 {
                line["needs_login"] = json!(needs_login);
            }
            line
        })
        .collect();
    let total = |i: usize| providers.values().map(|p| p[i]).sum::<u64>();
    let summary = json!({"type": "summary", "providers": providers.len(), "keys": total(0), "ready": total(1), "in_flight": total(5)});
    json!({"keys": keys, "providers": provider_lines, "summary": summary})
}

/// The report as JSON Lines: keys, providers, summary last.
pub fn lines(report: &Value) -> Vec<Value> {
    let list = |name: &str| report.get(name).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = list("keys");
    out.extend(list("providers"));
    out.push(report.get("summary").cloned().unwrap_or_else(|| json!({"type": "summary"})));
    out
}

/// Providers none of whose keys could take a request now (all cooling down or locked).
pub fn unusable_providers(report: &Value) -> Vec<String> {
    report
        .get("providers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p["ready"].as_u64().unwrap_or(0) + p["busy"].as_u64().unwrap_or(0) == 0)
        .filter_map(|p| p["provider"].as_str().map(String::from))
        .collect()
}

/// When an OAuth credential's token expires, or that it needs a new login; `-` for API keys.
fn token_cell(key: &Value) -> String {
    let oauth = &key["oauth"];
    match (oauth["state"].as_str(), oauth["expires_in_seconds"].as_i64()) {
        (None, _) => "-".into(),
        (Some("needs_login"), _) => {
            let provider = key["provider"].as_str().unwrap_or_default().replace('_', "-");
            format!("needs login: keyrelay oauth {provider}")
        }
        (Some("refused"), _) => format!("refused: {}", oauth["why"].as_str().unwrap_or_default()),
        (_, Some(s)) if s > 0 => format!("expires in {s}s"),
        (_, Some(_)) => "expired (refreshed on next use)".into(),
        (_, None) => "unknown expiry (refreshed on next use)".into(),
    }
}

/// A table for people: one key per row.
pub fn table(report: &Value) -> String {
    let mut rows = vec![
        ["PROVIDER", "KEY", "STATE", "IN-FLIGHT", "REQUESTS", "FAILURES", "TOKEN", "COOLDOWNS"]
            .map(String::from)
            .to_vec(),
    ];
    for k in report.get("keys").and_then(Value::as_array).into_iter().flatten() {
        let text = |v: &Value| v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
        let mut cooling: Vec<String> = k["cooldowns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {}s ({})", text(&c["model"]), c["seconds_left"], text(&c["reason"])))
            .collect();
        if k["locked_seconds_left"].as_u64().unwrap_or(0) > 0 {
            cooling.insert(0, format!("whole key {}s", k["locked_seconds_left"]));
        }
        rows.push(vec![
            text(&k["provider"]),
            text(&k["masked"]),
            text(&k["state"]),
            k["in_flight"].to_string(),
            k["today"]["requests"].to_string(),
            k["today"]["failures"].to_string(),
            token_cell(k),
            if cooling.is_empty() { "-".into() } else { cooling.join("; ") },
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let s = &report["summary"];
    out.push_str(&format!(
        "{} providers, {} keys, {} ready, {} requests in flight\n",
        s["providers"], s["keys"], s["ready"], s["in_flight"]
    ));
    out
}
