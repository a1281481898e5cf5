//! OpenAI and every server that speaks its API (vLLM, Ollama, LM Studio, ...): chat requests and replies
//! are already in the gateway's format, so this only swaps the model name, asks for stream usage, and
//! reads usage out of the reply without altering it. Anthropic Messages requests (`/v1/messages`) are
//! translated by `messages`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::sse::{self, Translate};
use super::{ChatRequest, Provider, Reply, RequestBody, StreamItem, Upstream};
use crate::catalog::Model;
use crate::error::GatewayError;
use crate::pricing::ServiceTier;
use crate::usage::TokenUsage;

pub mod messages;
mod responses;
mod stream;
use stream::*;

pub struct OpenAi {
    upstream: Upstream,
    chat_url: String,
    embeddings_url: String,
    responses_url: String,
    compact_url: String,
    authorization: String,
}

pub use crate::dialects::openai_chat::{CompletionDetails, OpenAiUsage, PromptDetails};

/// Only the fields the gateway reads from a reply; everything else is skipped without allocation.
#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    /// The tier that served the call (`default`, `flex`, `fast`, ...), priced instead of the requested.
    #[serde(default)]
    service_tier: Option<String>,
}

impl UsageProbe {
    fn usage(self) -> Option<TokenUsage> {
        let tier = self.service_tier.as_deref().and_then(ServiceTier::reported);
        self.usage.map(|u| TokenUsage {
            service_tier: tier,
            ..TokenUsage::from(u)
        })
    }
}

impl OpenAi {
    pub fn connect(upstream: Upstream, base_url: &str, api_key: &str) -> Arc<dyn Provider> {
        Arc::new(OpenAi {
            upstream,
            chat_url: format!("{base_url}/chat/completions"),
            embeddings_url: format!("{base_url}/embeddings"),
            responses_url: format!("{base_url}/responses"),
            compact_url: format!("{base_url}/responses/compact"),
            authorization: format!("Bearer {api_key}"),
        })
    }

    async fn post(
        &self,
        url: &str,
        body: Bytes,
        stream: bool,
    ) -> Result<reqwest::Response, GatewayError> {
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let request = self
            .upstream
            .post(url, body)
            .header("authorization", &self.authorization)
            .header("accept", accept);
        self.upstream.send(request).await
    }

    async fn complete(&self, response: reqwest::Response) -> Result<Reply, GatewayError> {
        let body = self.upstream.body(response).await?;
        let usage = serde_json::from_slice::<UsageProbe>(&body)
            .ok()
            .and_then(UsageProbe::usage);
        Ok(Reply::Complete { body, usage })
    }
}

#[async_trait]
impl Provider for OpenAi {
    async fn chat(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let mut body = request.body;
        body.set("model", &model.upstream_model);
        if request.stream {
            // Always ask for the final usage chunk so every stream is metered from the provider's own
            // count; the proxy strips it for clients that did not ask for it. The client's other
            // stream options (`include_obfuscation`, ...) are kept.
            let mut options = body
                .get::<serde_json::Map<String, serde_json::Value>>("stream_options", "an object")?
                .unwrap_or_default();
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
            body.set("stream_options", &options);
        }
        let response = self
            .post(&self.chat_url, body.to_bytes(), request.stream)
            .await?;
        if request.stream {
            Ok(Reply::Stream(sse::translate(
                self.upstream.events(response),
                Passthrough,
            )))
        } else {
            self.complete(response).await
        }
    }

    async fn embeddings(
        &self,
        model: &Model,
        mut body: RequestBody,
    ) -> Result<Reply, GatewayError> {
        body.set("model", &model.upstream_model);
        let response = self
            .post(&self.embeddings_url, body.to_bytes(), false)
            .await?;
        self.complete(response).await
    }

    /// Anthropic Messages by translation (see the `messages` module): the request becomes a chat completion,
    /// and the reply comes back as an Anthropic message or Anthropic's named stream events.
    async fn messages(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let translated = messages::to_chat_request(&request.body, model, request.stream)?;
        let body = Bytes::from(serde_json::to_vec(&translated.body).expect("JSON serialises"));
        let response = self.post(&self.chat_url, body, request.stream).await?;
        if request.stream {
            // The prompt's estimate (about four bytes a token) until OpenAI's count arrives at the end.
            let prompt = crate::usage::TokenUsage::estimate(request.body.approximate_len(), 0);
            let translator =
                messages::StreamTranslator::new(model, translated.tool_names, prompt.prompt_tokens);
            return Ok(Reply::Stream(messages::message_stream(
                response.bytes_stream(),
                translator,
                self.upstream.idle_timeout(),
                self.upstream.stream_total(),
            )));
        }
        let completion: serde_json::Value = self.upstream.json(response).await?;
        let (message, usage) = messages::to_message(&completion, model, &translated.tool_names)?;
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&message).expect("JSON serialises")),
            usage,
        })
    }

    /// OpenAI's own Responses endpoint, or, for a server that only speaks chat, the call as a chat
    /// completion re-encoded (the trait's default).
    async fn responses(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        if model.serves_responses() {
            return self.responses_native(model, request).await;
        }
        super::responses_by_chat(self, model, request).await
    }

    async fn compact(&self, model: &Model, body: RequestBody) -> Result<Reply, GatewayError> {
        if !model.serves_responses() {
            return Err(GatewayError::WrongModelKind(format!(
                "'{}' is served by translation to chat completions, which cannot compact a \
                 conversation; /v1/responses/compact works with models whose upstream serves the \
                 Responses API",
                model.id
            )));
        }
        self.compact_native(model, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(item: &StreamItem) -> (Option<TokenUsage>, bool) {
        match item {
            StreamItem::Event {
                usage, usage_only, ..
            } => (*usage, *usage_only),
            StreamItem::Failed(_) => panic!("failed"),
        }
    }

    #[test]
    fn classifies_usage_chunks() {
        let content = Bytes::from_static(
            b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        );
        assert_eq!(usage_of(&classify(content)), (None, false));
        let final_usage = Bytes::from_static(
            b"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n",
        );
        let (usage, only) = usage_of(&classify(final_usage));
        assert!(only);
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 9,
                completion_tokens: 3,
                cached_tokens: 4,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                reasoning_tokens: 2,
                estimated: false,
                input_images: 0,
                service_tier: None,
            }
        );
        assert!(is_done(b"data: [DONE]\n\n"));
    }
}
