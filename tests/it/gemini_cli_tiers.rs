//! `gemini_cli` with two accounts of different tiers against a mock Code Assist API: the
//! better tier takes the requests while it can, the other takes over while it is
//! rate-limited; and when every account is rate-limited on a model that has a preview variant,
//! the variant answers and the answer names it.

use crate::support::{Mock, MockReply, Proxy, Recorded, TempDir};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const PRO_TOKEN: &str = "ya29.pro-account-access-0001";
const FREE_TOKEN: &str = "ya29.free-account-access-0002";

fn chat(model: &str) -> String {
    json!({"model": format!("gemini_cli/{model}"), "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Code Assist's answer for `model`, saying which model answered.
fn answer(model: &str) -> MockReply {
    MockReply::json(
        200,
        json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": format!("from {model}")}]},
               "finishReason": "STOP", "index": 0}], "modelVersion": model,
               "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}}}),
    )
}

/// A per-minute rate limit whose hint outlasts any request.
fn rate_limited() -> MockReply {
    MockReply::json(
        429,
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource has been exhausted",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "900s"}]}}),
    )
}

/// A data directory with a Pro account and a free one, both with a project, their tiers kept
/// in the two spellings the files may hold.
fn two_accounts(api: &Mock) -> TempDir {
    let dir = TempDir::new();
    dir.write(".env", &format!("GEMINI_CLI_API_BASE=http://127.0.0.1:{}/v1internal\n", api.port));
    std::fs::create_dir_all(dir.path().join("oauth_creds")).unwrap();
    let cred = |token: &str, email: &str, metadata: Value| {
        json!({"access_token": token, "refresh_token": format!("1//refresh-of-{token}"), "token_type": "Bearer",
               "email": email, "expiry_date": now_ms() + 3_600_000, "project_id": "proj",
               "_proxy_metadata": metadata})
        .to_string()
    };
    // The free account is file 1, so configuration order alone would pick it first.
    dir.write("oauth_creds/gemini_cli_oauth_1.json", &cred(FREE_TOKEN, "free@example.com", json!({"tier": "FREE"})));
    dir.write(
        "oauth_creds/gemini_cli_oauth_2.json",
        &cred(PRO_TOKEN, "pro@example.com", json!({"tier": "PRO", "tier_full": "standard-tier"})),
    );
    dir
}

fn generate_calls(api: &Mock) -> Vec<Recorded> {
    api.requests().into_iter().filter(|r| r.url == "/v1internal:generateContent").collect()
}

fn tokens_used(api: &Mock) -> Vec<String> {
    generate_calls(api).iter().filter_map(Recorded::key).collect()
}

#[test]
fn the_better_tier_serves_while_it_is_free_and_the_other_while_it_is_rate_limited() {
    let pro_limited = Arc::new(AtomicBool::new(false));
    let limited = pro_limited.clone();
    let api = Mock::start(move |req: &Recorded| {
        if req.key().as_deref() == Some(PRO_TOKEN) && limited.load(Ordering::SeqCst) {
            return rate_limited();
        }
        answer(req.json()["model"].as_str().unwrap_or(""))
    });
    let proxy = Proxy::start_in(two_accounts(&api), &[]);
    for _ in 0..3 {
        let reply = proxy.client().post("/v1/chat/completions", &chat("gemini-2.5-flash"));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(tokens_used(&api), [PRO_TOKEN; 3], "the Pro account takes every request while it can");

    pro_limited.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let reply = proxy.client().post("/v1/chat/completions", &chat("gemini-2.5-flash"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["model"], "gemini_cli/gemini-2.5-flash");
    }
    // The Pro account's 429 rotates to the free one, which then serves while Pro cools down.
    assert_eq!(tokens_used(&api)[3..], [PRO_TOKEN, FREE_TOKEN, FREE_TOKEN]);

    let keys: Vec<Value> = proxy.status().into_iter().filter(|l| l["type"] == "key").collect();
    let ranks: Vec<(Value, Value, Value)> =
        keys.iter().map(|k| (k["oauth"]["account"].clone(), k["priority"].clone(), k["state"].clone())).collect();
    assert_eq!(
        ranks,
        [
            (json!("free@example.com"), json!(3), json!("ready")),
            (json!("pro@example.com"), json!(2), json!("cooldown"))
        ],
        "{keys:?}"
    );
}

#[test]
fn when_every_account_is_rate_limited_on_a_model_its_preview_variant_answers() {
    let api = Mock::start(|req: &Recorded| {
        let model = req.json()["model"].as_str().unwrap_or("").to_string();
        match model.as_str() {
            "gemini-2.5-pro" | "gemini-3-pro-preview" => rate_limited(),
            _ => answer(&model),
        }
    });
    let proxy = Proxy::start_in(two_accounts(&api), &[]);
    let reply = proxy.client().post("/v1/chat/completions", &chat("gemini-2.5-pro"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "gemini_cli/gemini-2.5-pro-preview-06-05", "the answer names the model used");
    assert_eq!(body["choices"][0]["message"]["content"], "from gemini-2.5-pro-preview-06-05");
    let models: Vec<Value> = generate_calls(&api).iter().map(|r| r.json()["model"].clone()).collect();
    assert_eq!(
        models,
        [json!("gemini-2.5-pro"), json!("gemini-2.5-pro"), json!("gemini-2.5-pro-preview-06-05")],
        "both accounts on the model, then the variant once"
    );
    assert_eq!(tokens_used(&api)[2], PRO_TOKEN, "the variant's cooldowns are its own: the best account again");

    // With both cooling on the model, the next request goes straight to the variant.
    let again = proxy.client().post("/v1/chat/completions", &chat("gemini-2.5-pro"));
    assert_eq!((again.status, again.json()["model"].clone()), (200, json!("gemini_cli/gemini-2.5-pro-preview-06-05")));
    assert_eq!(generate_calls(&api).len(), 4);

    // A model without a variant gets the usual answer.
    let none = proxy.client().post("/v1/chat/completions", &chat("gemini-3-pro-preview"));
    assert_eq!((none.status, none.error_code()), (429, "all_keys_cooling_down".to_string()), "{}", none.text());
}
