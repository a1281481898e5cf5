//! OpenAI chat answers read back into the answer model: a `chat.completion` as an [`Answer`], and its
//! chunks as [`AnswerEvent`]s. What re-encodes a chat-format reply in another dialect reads it with
//! this: Anthropic Messages over an OpenAI upstream, and the Responses API over any chat upstream.
//!
//! `rename` maps a tool name the upstream used back to the client's (Anthropic names longer than
//! OpenAI allows are shortened on the way up); the identity where nothing was renamed.

use std::collections::HashMap;

use serde_json::Value;

use super::OpenAiUsage;
use crate::conversation::{Answer, AnswerEvent, AnswerToolCall, FinishReason};
use crate::error::GatewayError;
use crate::usage::TokenUsage;
use crate::wire::event_data;

/// OpenAI's `finish_reason` in the answer model.
pub(crate) fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub(crate) fn parse_usage(value: &Value) -> Option<TokenUsage> {
    if !value.is_object() {
        return None;
    }
    serde_json::from_value::<OpenAiUsage>(value.clone())
        .ok()
        .map(TokenUsage::from)
}

/// Message content that may be a string or an array of text parts.
pub(crate) fn content_text(content: &Value) -> String {
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

/// A whole `chat.completion` as an answer (a refusal is its text).
pub(crate) fn answer(
    completion: &Value,
    rename: &dyn Fn(&str) -> String,
) -> Result<Answer, GatewayError> {
    let Some(choice) = completion["choices"].get(0) else {
        tracing::warn!("chat reply without choices");
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
            name: rename(call["function"]["name"].as_str().unwrap_or("")),
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

/// Reads one chunk stream: the first chunk starts the answer, each tool call (by OpenAI's tool-call
/// index) is numbered in order of appearance, and `[DONE]` ends it with the final usage chunk's counts.
#[derive(Default)]
pub(crate) struct ChunkDecoder {
    started: bool,
    /// OpenAI tool-call index (or position) → the answer's tool-call index.
    tool_calls: HashMap<u64, usize>,
    usage: Option<TokenUsage>,
}

impl ChunkDecoder {
    /// The answer events of one parsed chunk.
    pub(crate) fn decode(
        &mut self,
        chunk: &Value,
        rename: &dyn Fn(&str) -> String,
    ) -> Vec<AnswerEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(AnswerEvent::Started {
                id: chunk["id"].as_str().unwrap_or("openai").to_owned(),
            });
        }
        if let Some(usage) = parse_usage(&chunk["usage"]) {
            self.usage = Some(usage);
        }
        // The final usage chunk has no choices.
        let Some(choice) = chunk["choices"].get(0) else {
            return out;
        };
        let delta = &choice["delta"];
        for text in [&delta["content"], &delta["refusal"]] {
            if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
                out.push(AnswerEvent::Text(text.to_owned()));
            }
        }
        for (position, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = call["index"].as_u64().unwrap_or(position as u64);
            let arguments = call["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            match self.tool_calls.get(&key) {
                Some(&index) => out.push(AnswerEvent::ToolArguments {
                    index,
                    fragment: arguments,
                }),
                None => {
                    let index = self.tool_calls.len();
                    self.tool_calls.insert(key, index);
                    out.push(AnswerEvent::ToolCall {
                        index,
                        id: call["id"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("call_{key}")),
                        name: rename(call["function"]["name"].as_str().unwrap_or("")),
                        arguments,
                    });
                }
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.push(AnswerEvent::Finished(finish(Some(reason))));
        }
        out
    }

    /// The answer events of one SSE event (framed, with its trailing blank line). An unparsable chunk or
    /// an error chunk is the upstream failing mid-stream.
    pub(crate) fn on_event(
        &mut self,
        event: &[u8],
        rename: &dyn Fn(&str) -> String,
    ) -> Result<Vec<AnswerEvent>, GatewayError> {
        let Some(data) = event_data(event) else {
            return Ok(vec![]);
        };
        if data == b"[DONE]" {
            return Ok(vec![AnswerEvent::Ended { usage: self.usage }]);
        }
        let chunk = serde_json::from_slice::<Value>(&data).map_err(|_| {
            tracing::warn!("unparsable chat stream chunk");
            GatewayError::UpstreamFailed
        })?;
        if !chunk["error"].is_null() {
            tracing::warn!(
                kind = chunk["error"]["type"].as_str().unwrap_or("unknown"),
                "upstream error event mid-stream"
            );
            return Err(GatewayError::UpstreamFailed);
        }
        Ok(self.decode(&chunk, rename))
    }
}

/// The identity `rename`, for replies whose tool names were not changed.
pub(crate) fn same_name(name: &str) -> String {
    name.to_owned()
}
