//! An OpenAI reply decoded into the gateway's answer model, tool names restored;
//! `dialects::anthropic_messages` renders it as an Anthropic `message`.

use super::*;

/// OpenAI's `finish_reason` in the answer model.
pub(super) fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub(super) fn parse_usage(value: &Value) -> Option<TokenUsage> {
    if !value.is_object() {
        return None;
    }
    serde_json::from_value::<OpenAiUsage>(value.clone())
        .ok()
        .map(TokenUsage::from)
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

/// A whole OpenAI `chat.completion` as an answer (a refusal is its text).
pub(super) fn to_answer(completion: &Value, names: &ToolNames) -> Result<Answer, GatewayError> {
    let Some(choice) = completion["choices"].get(0) else {
        tracing::warn!("openai reply without choices");
        return Err(GatewayError::UpstreamFailed);
    };
    let message = &choice["message"];
    let mut text = content_text(&message["content"]);
    if text.is_empty() {
        text = content_text(&message["refusal"]);
    }
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, call)| AnswerToolCall {
            id: call["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("call_{i}")),
            name: names
                .original(call["function"]["name"].as_str().unwrap_or(""))
                .to_owned(),
            arguments: call["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        })
        .collect();
    Ok(Answer {
        id: completion["id"].as_str().unwrap_or("openai").to_owned(),
        content: Some(text),
        tool_calls,
        finish: finish(choice["finish_reason"].as_str()),
        usage: parse_usage(&completion["usage"]),
    })
}

/// A whole OpenAI chat.completion as an Anthropic `message`, with the usage to bill (None when the
/// upstream reported none).
pub fn to_message(
    completion: &Value,
    model: &Model,
    names: &ToolNames,
) -> Result<(Value, Option<TokenUsage>), GatewayError> {
    let answer = to_answer(completion, names)?;
    Ok((
        anthropic_messages::message(&answer, &model.id),
        answer.usage,
    ))
}
