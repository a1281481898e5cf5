//! A whole OpenAI chat completion as an Anthropic message, tool names restored.

use super::*;

/// OpenAI's finish_reason as Anthropic's stop_reason. OpenAI does not say which stop sequence matched,
/// so a stop sequence reads as `end_turn` (and `stop_sequence` stays null).
pub(super) fn stop_reason(finish_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        // Some OpenAI-compatible servers report `stop` for a turn that ends in tool calls; Anthropic
        // clients run tools on `tool_use`.
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// The gateway's usage as Anthropic's usage object (input tokens exclude cache reads and writes).
pub(super) fn anthropic_usage(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u
            .prompt_tokens
            .saturating_sub(u.cached_tokens.saturating_add(u.cache_write_tokens)),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    })
}

pub(super) fn parse_usage(value: &Value) -> Option<TokenUsage> {
    if !value.is_object() {
        return None;
    }
    serde_json::from_value::<OpenAiUsage>(value.clone())
        .ok()
        .map(TokenUsage::from)
}

/// Tool-call arguments as a `tool_use` input: a JSON object, `{}` when absent or unparsable.
pub(super) fn tool_input(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// Message content that may be a string or an array of text parts.
pub(super) fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .concat(),
        _ => String::new(),
    }
}

/// A whole OpenAI chat.completion as an Anthropic `message`, with the usage to bill (None when the
/// upstream reported none).
pub fn to_message(
    completion: &Value,
    model: &Model,
    names: &ToolNames,
) -> Result<(Value, Option<TokenUsage>), GatewayError> {
    let Some(choice) = completion["choices"].get(0) else {
        tracing::warn!("openai reply without choices");
        return Err(GatewayError::UpstreamFailed);
    };
    let message = &choice["message"];
    let mut content = Vec::new();
    let mut text = content_text(&message["content"]);
    if text.is_empty() {
        text = content_text(&message["refusal"]);
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = message["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, call) in calls.iter().enumerate() {
        let name = call["function"]["name"].as_str().unwrap_or("");
        let id = call["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("call_{i}"));
        content.push(
            json!({"type": "tool_use", "id": id, "name": names.original(name),
            "input": tool_input(call["function"]["arguments"].as_str().unwrap_or(""))}),
        );
    }
    let usage = parse_usage(&completion["usage"]);
    let id = completion["id"].as_str().unwrap_or("openai");
    let message = json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model.id,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str(), !calls.is_empty()),
        "stop_sequence": null,
        "usage": anthropic_usage(&usage.unwrap_or_default()),
    });
    Ok((message, usage))
}
