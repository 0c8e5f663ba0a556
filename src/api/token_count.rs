//! `POST /v1/token-count`: `{"model", "messages", "tools"?}` -> `{"token_count", "method"}`,
//! exact (tiktoken's encodings) for OpenAI models, a stated approximation for others.

use super::{Incoming, Reply, parse_object};
use crate::error::ApiError;
use crate::tokens;
use serde_json::{Value, json};

pub fn handle(req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim(),
        _ => return Err(ApiError::invalid_request("missing required field 'model' (a string)").with_param("model")),
    };
    let Some(messages) = body.get("messages").filter(|m| m.is_array()) else {
        return Err(ApiError::invalid_request("missing required field 'messages' (an array)").with_param("messages"));
    };
    let tools = body.get("tools").filter(|t| t.is_array());
    let (count, method) = tokens::count_chat(model, messages, tools);
    Ok(Reply::json(200, &json!({"token_count": count, "method": method.name()})))
}
