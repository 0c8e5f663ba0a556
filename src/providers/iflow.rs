//! iFlow (`iflow`): an OpenAI-compatible API whose calls carry the account's API key as the
//! bearer and a signature the iFlow CLI sends: `session-id`, `x-iflow-timestamp` and
//! `x-iflow-signature`, the hex HMAC-SHA256, keyed with the API key, of
//! `iFlow-Cli:<session-id>:<timestamp in ms>`, with `User-Agent: iFlow-Cli`. Pure: the session
//! id and the time are passed in, so the headers are tested against fixed values.

use crate::secret::Secret;
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The client name the signature starts with and the `User-Agent` carries.
const CLIENT: &str = "iFlow-Cli";

/// The request body's iFlow quirks, on top of the OpenAI family's: schemas cleaned of what
/// the API rejects, no `stream_options` (the API refuses streams that carry it), and a
/// placeholder tool when the request defines none (its streams are unstable without tools).
pub fn adapt_body(body: &mut Map<String, Value>) {
    super::openai::clean_tool_schemas(body);
    body.remove("stream_options");
    super::openai::placeholder_tool(body, "noop", "Placeholder tool; never call it.");
}

/// `request` with its iFlow headers: the API key as the bearer, the signature made with it for
/// `session_id` (`session-<uuid>`) at `timestamp_ms`, and the CLI's `User-Agent` and `Accept`.
pub fn sign(mut request: UpstreamRequest, api_key: &Secret, session_id: &str, timestamp_ms: u64) -> UpstreamRequest {
    let timestamp = timestamp_ms.to_string();
    let signature = signature(api_key.expose(), session_id, &timestamp);
    let accept = if request.stream { "text/event-stream" } else { "application/json" };
    request.headers.retain(|(name, _)| !matches!(name.as_str(), "authorization" | "accept" | "user-agent"));
    request.headers.extend([
        ("authorization".to_string(), format!("Bearer {}", api_key.expose())),
        ("user-agent".to_string(), CLIENT.to_string()),
        ("accept".to_string(), accept.to_string()),
        ("session-id".to_string(), session_id.to_string()),
        ("x-iflow-timestamp".to_string(), timestamp),
        ("x-iflow-signature".to_string(), signature),
    ]);
    request
}

/// A session id, `session-` and a version 4 UUID made of 16 random bytes.
pub fn session_id(mut random: [u8; 16]) -> String {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("session-{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The `x-iflow-signature` value.
fn signature(api_key: &str, session_id: &str, timestamp: &str) -> String {
    let mac = hmac_sha256(api_key.as_bytes(), format!("{CLIENT}:{session_id}:{timestamp}").as_bytes());
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104) over the `sha2` crate: a key longer than the 64-byte block is hashed
/// first, then `H((K ^ opad) || H((K ^ ipad) || message))`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Method;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test cases 2 (a short key) and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_signature_is_the_hmac_of_client_session_and_timestamp() {
        // Expected value computed independently with Python's standard library:
        // hmac.new(b"sk-test-key", b"iFlow-Cli:session-1234:1700000000000", hashlib.sha256).hexdigest()
        assert_eq!(
            signature("sk-test-key", "session-1234", "1700000000000"),
            "6fc2f1bf69b6911d4342dcf8b53a1cb78fcd1e2c038010b437f9b5c0ceffce16"
        );
    }

    #[test]
    fn signing_sets_every_header_once() {
        let request = UpstreamRequest {
            method: Method::Post,
            url: "https://apis.iflow.cn/v1/chat/completions".into(),
            headers: vec![("authorization".into(), "Bearer old".into()), ("content-type".into(), "x".into())],
            body: None,
            stream: true,
        };
        let signed = sign(request, &Secret::new("sk-test-key"), "session-1234", 1_700_000_000_000);
        let get = |n: &str| signed.headers.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("authorization"), ["Bearer sk-test-key"]);
        assert_eq!(get("user-agent"), ["iFlow-Cli"]);
        assert_eq!(get("accept"), ["text/event-stream"]);
        assert_eq!(get("session-id"), ["session-1234"]);
        assert_eq!(get("x-iflow-timestamp"), ["1700000000000"]);
        assert_eq!(get("x-iflow-signature"), [signature("sk-test-key", "session-1234", "1700000000000").as_str()]);
        assert_eq!(get("content-type"), ["x"]);
    }

    #[test]
    fn session_ids_are_version_4_uuids() {
        assert_eq!(session_id([0xff; 16]), "session-ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[test]
    fn bodies_lose_stream_options_and_get_a_placeholder_tool_only_without_tools() {
        let mut body = json!({"stream_options": {"include_usage": true}, "messages": []}).as_object().unwrap().clone();
        adapt_body(&mut body);
        assert_eq!(body.get("stream_options"), None);
        assert_eq!(body["tools"][0]["function"]["name"], "noop");
        let tool = json!({"type": "function", "function": {"name": "f", "strict": true,
            "parameters": {"type": "object", "additionalProperties": false}}});
        let mut body = json!({"tools": [tool]}).as_object().unwrap().clone();
        adapt_body(&mut body);
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        );
    }
}
