//! OpenAI's usage object as chat completions and embeddings report it, read into the gateway's counts.
//! The Responses API names the same counts differently (`providers::openai::responses`).

use serde::Deserialize;

use crate::usage::TokenUsage;

/// OpenAI's usage object (chat and embeddings).
#[derive(Debug, Default, Deserialize)]
pub struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Tokens written to the prompt cache, which OpenAI bills above the input rate from GPT-5.6 on.
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<OpenAiUsage> for TokenUsage {
    fn from(u: OpenAiUsage) -> TokenUsage {
        let prompt = u.prompt_tokens_details.unwrap_or_default();
        TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: prompt.cached_tokens.unwrap_or(0),
            cache_write_tokens: prompt.cache_write_tokens.unwrap_or(0),
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            ..TokenUsage::default()
        }
    }
}
