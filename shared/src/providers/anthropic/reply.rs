//! Anthropic's usage accounting, and a whole Anthropic message as an OpenAI chat completion.

use super::*;

pub(super) fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Anthropic's usage object (message, message_start and the cumulative message_delta).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct AnthropicUsage {
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    pub(super) cache_creation_input_tokens: Option<u64>,
    pub(super) cache_read_input_tokens: Option<u64>,
    /// Cache writes by lifetime; the 1-hour ones are priced higher.
    pub(super) cache_creation: Option<CacheCreation>,
    /// Extended-thinking tokens, a part of `output_tokens`, when the API reports them.
    pub(super) output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct CacheCreation {
    pub(super) ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct OutputDetails {
    pub(super) thinking_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// message_delta's counts are cumulative: later non-null fields replace earlier ones.
    pub(super) fn overlay(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.output_tokens_details = later.output_tokens_details.or(self.output_tokens_details);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
    }

    pub(super) fn tokens(&self) -> TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        TokenUsage {
            prompt_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(written),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_tokens: written,
            cache_write_1h_tokens: self
                .cache_creation
                .and_then(|c| c.ephemeral_1h_input_tokens)
                .unwrap_or(0)
                .min(written),
            // Anthropic's server tools are refused before the call: none ran.
            web_search_calls: 0,
            reasoning_tokens: self
                .output_tokens_details
                .and_then(|d| d.thinking_tokens)
                .unwrap_or(0),
            ..TokenUsage::default()
        }
    }
}

/// A whole Anthropic message as an answer. The forced JSON tool's input is the answer's text.
pub(super) fn to_answer(message: &Value) -> Answer {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = None;
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") if block["name"] == JSON_TOOL => {
                json_answer = Some(block["input"].to_string())
            }
            Some("tool_use") => tool_calls.push(AnswerToolCall {
                id: block["id"].as_str().unwrap_or_default().to_owned(),
                name: block["name"].as_str().unwrap_or_default().to_owned(),
                arguments: block["input"].to_string(),
            }),
            _ => {}
        }
    }
    // No usage object means no count: the call is billed by an estimate, never as free.
    let usage = serde_json::from_value::<AnthropicUsage>(message["usage"].clone()).ok();
    let mut finish = finish_reason(message["stop_reason"].as_str());
    let content = if let Some(answer) = json_answer {
        finish = FinishReason::Stop;
        Some(answer)
    } else if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    Answer {
        id: message["id"].as_str().unwrap_or("anthropic").to_owned(),
        content,
        tool_calls,
        finish,
        usage: usage.map(|u| u.tokens()),
    }
}

/// A whole Anthropic message as an OpenAI `chat.completion`, and its usage (what the tests read).
#[cfg(test)]
pub(super) fn to_chat_completion(message: &Value, model: &Model) -> (Value, TokenUsage) {
    use crate::dialects::openai_chat::completion;
    let answer = to_answer(message);
    (
        completion(&answer, &model.id),
        answer.usage.unwrap_or_default(),
    )
}
