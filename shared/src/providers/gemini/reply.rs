//! A whole Gemini response as an OpenAI chat completion: text, function calls (with their thought
//! signatures carried in the call id), finish reason and `usageMetadata`.

use super::*;

/// The OpenAI id for a function call: Gemini's own id when it sent one, else a minted one; with the
/// call's thought signature appended so it returns with the client's next request.
pub(super) fn call_id(
    function_call: &Value,
    signature: Option<&str>,
    tag: &str,
    n: usize,
) -> String {
    let base = match function_call["id"].as_str().filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!("call_{tag}{n}"),
    };
    match signature.filter(|s| !s.is_empty()) {
        Some(signature) => format!("{base}{THOUGHT_SEPARATOR}{signature}"),
        None => base,
    }
}

/// A short random tag that keeps minted call ids unique across a conversation's turns.
pub(super) fn call_tag() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}_", &id[..8])
}

/// Gemini's finish reason (any case) as OpenAI's. Function calls finish with STOP, so a reply with calls
/// is `tool_calls` unless it was cut short or filtered.
pub(super) fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    let reason = reason.map(str::to_ascii_uppercase);
    match reason.as_deref() {
        Some("MAX_TOKENS") => FinishReason::Length,
        Some(
            "SAFETY"
            | "RECITATION"
            | "LANGUAGE"
            | "OTHER"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
            | "IMAGE_OTHER"
            | "NO_IMAGE",
        ) => FinishReason::ContentFilter,
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Gemini's `usageMetadata` (a running total in streams: the last one seen is the call's).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    pub(super) prompt_token_count: Option<u64>,
    pub(super) candidates_token_count: Option<u64>,
    pub(super) thoughts_token_count: Option<u64>,
    pub(super) cached_content_token_count: Option<u64>,
    pub(super) tool_use_prompt_token_count: Option<u64>,
    pub(super) total_token_count: Option<u64>,
}

impl UsageMetadata {
    pub(super) fn tokens(&self) -> TokenUsage {
        let prompt = self.prompt_token_count.unwrap_or(0);
        let tool_prompt = self.tool_use_prompt_token_count.unwrap_or(0);
        let candidates = self.candidates_token_count.unwrap_or(0);
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        // Documented: candidates exclude thoughts and the total is the sum of all four. Some responses
        // have been seen to count thoughts inside candidates already; their total gives that away.
        let prompt_total = prompt.saturating_add(tool_prompt);
        let inclusive =
            thoughts > 0 && self.total_token_count == Some(prompt_total.saturating_add(candidates));
        TokenUsage {
            prompt_tokens: prompt_total,
            completion_tokens: if inclusive {
                candidates
            } else {
                candidates.saturating_add(thoughts)
            },
            cached_tokens: self.cached_content_token_count.unwrap_or(0),
            reasoning_tokens: thoughts,
            ..TokenUsage::default()
        }
    }
}

pub(super) fn usage_of(response: &Value) -> Option<UsageMetadata> {
    serde_json::from_value(response.get("usageMetadata")?.clone()).ok()
}

pub(super) fn completion_id(response: &Value) -> String {
    match response["responseId"].as_str() {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// The visible text of a part: thought summaries and empty carrier parts are not content.
pub(super) fn part_text(part: &Value) -> Option<&str> {
    if part["thought"] == true {
        return None;
    }
    part["text"].as_str().filter(|t| !t.is_empty())
}

pub(super) fn signature_of(part: &Value) -> Option<&str> {
    part["thoughtSignature"]
        .as_str()
        .or_else(|| part["thought_signature"].as_str())
}

pub(super) fn function_call_of(part: &Value) -> Option<&Value> {
    part.get("functionCall")
        .or_else(|| part.get("function_call"))
        .filter(|c| c.is_object())
}

/// A function call part as a tool call: Gemini's own id, or one minted with the thought signature in it.
pub(super) fn tool_call(call: &Value, part: &Value, tag: &str, n: usize) -> AnswerToolCall {
    let args = if call["args"].is_object() {
        call["args"].clone()
    } else {
        json!({})
    };
    AnswerToolCall {
        id: call_id(call, signature_of(part), tag, n),
        name: call["name"].as_str().unwrap_or_default().to_owned(),
        arguments: args.to_string(),
    }
}

/// A whole Gemini response as an answer.
pub(super) fn to_answer(response: &Value) -> Answer {
    let candidate = &response["candidates"][0];
    let tag = call_tag();
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(call) = function_call_of(part) {
            tool_calls.push(tool_call(call, part, &tag, tool_calls.len()));
        } else if let Some(t) = part_text(part) {
            text.push_str(t);
        }
    }
    let blocked = candidate.is_null() && !response["promptFeedback"]["blockReason"].is_null();
    let finish = if blocked {
        FinishReason::ContentFilter
    } else {
        finish_reason(candidate["finishReason"].as_str(), !tool_calls.is_empty())
    };
    let content = if text.is_empty() && (blocked || !tool_calls.is_empty()) {
        None
    } else {
        Some(text)
    };
    Answer {
        id: completion_id(response),
        content,
        tool_calls,
        finish,
        // No usageMetadata means no count: the call is billed by an estimate, never as free.
        usage: usage_of(response).map(|u| u.tokens()),
    }
}

/// A whole Gemini response as an OpenAI `chat.completion`, and its usage (what the tests read).
#[cfg(test)]
pub(super) fn to_chat_completion(response: &Value, model: &Model) -> (Value, TokenUsage) {
    use crate::dialects::openai_chat::completion;
    let answer = to_answer(response);
    (
        completion(&answer, &model.id),
        answer.usage.unwrap_or_default(),
    )
}
