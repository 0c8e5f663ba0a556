//! Edits one string value of a JSON text in place, every other byte kept: the pass-through
//! routes change only the model id of what they relay, and renaming the model of a whole
//! answer this way costs a scan instead of a parse and a re-serialisation.

/// `json` (a valid JSON text) with the string at `path` (object keys from the top) replaced by
/// `value`, every other byte as it was: key order, spacing, number spellings and escapes stay
/// the client's (or the upstream's). `None` when `path` names no value. With a key given
/// twice, the last one is replaced, the one JSON parsers keep.
pub fn replace_string(json: &[u8], path: &[&str], value: &str) -> Option<Vec<u8>> {
    let span = value_span(json, path)?;
    let encoded = serde_json::to_string(value).expect("a string serialises");
    let mut out = Vec::with_capacity(json.len() + encoded.len());
    out.extend_from_slice(&json[..span.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&json[span.end..]);
    Some(out)
}

/// The byte range of the value at `path`.
fn value_span(json: &[u8], path: &[&str]) -> Option<std::ops::Range<usize>> {
    let start = skip_space(json, 0);
    let mut span = start..skip_value(json, start)?;
    for key in path {
        span = member(json, span.start, key)?;
    }
    Some(span)
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

/// The value of the last member `key` of the object that starts at `at`.
fn member(json: &[u8], at: usize, key: &str) -> Option<std::ops::Range<usize>> {
    if json.get(at) != Some(&b'{') {
        return None;
    }
    let (mut at, mut found) = (skip_space(json, at + 1), None);
    loop {
        match json.get(at)? {
            b'}' => return found,
            b',' => at = skip_space(json, at + 1),
            b'"' => {
                let key_end = skip_string(json, at)?;
                let name: String = serde_json::from_slice(&json[at..key_end]).ok()?;
                at = skip_space(json, key_end);
                if json.get(at) != Some(&b':') {
                    return None;
                }
                let start = skip_space(json, at + 1);
                let end = skip_value(json, start)?;
                if name == key {
                    found = Some(start..end);
                }
                at = skip_space(json, end);
            }
            _ => return None,
        }
    }
}

/// The end of the string that starts (with its quote) at `at`.
fn skip_string(json: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    while at < json.len() {
        match json[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// The end of the value that starts at `at`.
fn skip_value(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => skip_string(json, at),
        b'{' | b'[' => {
            let (mut depth, mut i) = (0usize, at);
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = skip_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let rest = &json[at..];
            Some(
                at + rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(rest.len()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_string_keeps_every_other_byte() {
        let body = br#" {"max_tokens" : 1.50e3, "meta": {"model": "inner"}, "model":"anthropic/claude-x",
            "text": "caf\u00e9 \"model\": [}", "list": [1, {"a": "]"}], "ok": true}"#;
        let got = replace_string(body, &["model"], "claude-x").unwrap();
        let want = String::from_utf8_lossy(body).replace(r#""model":"anthropic/claude-x""#, r#""model":"claude-x""#);
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let nested = br#"{"type":"message_start","message":{"id":"m","model":"claude-x","usage":{}}}"#;
        assert_eq!(
            replace_string(nested, &["message", "model"], "anthropic/claude-x").unwrap(),
            br#"{"type":"message_start","message":{"id":"m","model":"anthropic/claude-x","usage":{}}}"#.to_vec()
        );
        assert_eq!(replace_string(br#"{"a": 1}"#, &["model"], "x"), None);
        assert_eq!(replace_string(br#"[{"model": "a"}]"#, &["model"], "x"), None);
        // A key given twice: the last one counts, as for JSON parsers.
        assert_eq!(
            replace_string(br#"{"model":"a","model":"b"}"#, &["model"], "x").unwrap(),
            br#"{"model":"a","model":"x"}"#.to_vec()
        );
        // Escapes in the new value are encoded.
        assert_eq!(replace_string(br#"{"model":1}"#, &["model"], "a\"b").unwrap(), br#"{"model":"a\"b"}"#.to_vec());
    }
}
