//! Upstream providers behind one trait: the proxy hands a provider an OpenAI-format request and gets an
//! OpenAI-format reply (whole or as a stream of SSE events), so routing never knows a wire format.
//! One module per upstream wire format.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::catalog::{Model, ProviderKind};
use crate::config::{Config, UpstreamConfig};
use crate::conversation::{Answer, Conversation};
use crate::error::GatewayError;
use sse::Translate;

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod sse;
pub mod upstream;

pub use crate::wire::{Reply, RequestBody, StreamItem};

pub use upstream::{Timeouts, Upstream, error_from, retriable, upstream_error};

/// A chat completion request as the proxy validated it: the client's body, passed through as is by
/// providers that speak its format, and parsed into the gateway's [`Conversation`] at most once per call
/// by those that translate it (the call's retries and fallbacks share the parse).
#[derive(Clone)]
pub struct ChatRequest {
    pub body: RequestBody,
    pub stream: bool,
    parsed: Arc<OnceLock<Conversation>>,
    /// A Responses request as a chat completion, for providers that translate it.
    as_chat: Arc<OnceLock<ChatRequest>>,
    /// Headers of the client's request the route forwards (Anthropic's version and betas), checked.
    pub client_headers: Arc<[(&'static str, String)]>,
}

impl ChatRequest {
    pub fn new(body: RequestBody, stream: bool) -> ChatRequest {
        ChatRequest {
            body,
            stream,
            parsed: Arc::default(),
            as_chat: Arc::default(),
            client_headers: Arc::new([]),
        }
    }

    pub fn with_client_headers(mut self, headers: Vec<(&'static str, String)>) -> ChatRequest {
        self.client_headers = headers.into();
        self
    }

    /// This Responses request as a chat completion request, translated on first use.
    pub fn responses_as_chat(&self) -> Result<&ChatRequest, GatewayError> {
        if let Some(chat) = self.as_chat.get() {
            return Ok(chat);
        }
        let chat = ChatRequest::new(
            crate::dialects::openai_responses::to_chat(&self.body, self.stream)?,
            self.stream,
        );
        Ok(self.as_chat.get_or_init(|| chat))
    }

    /// The body as a conversation, parsed on first use.
    pub fn conversation(&self) -> Result<&Conversation, GatewayError> {
        if let Some(parsed) = self.parsed.get() {
            return Ok(parsed);
        }
        let parsed = Conversation::from_openai_chat(&self.body)?;
        Ok(self.parsed.get_or_init(|| parsed))
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    async fn chat(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError>;
    async fn embeddings(&self, model: &Model, body: RequestBody) -> Result<Reply, GatewayError>;
    /// An Anthropic Messages request (`/v1/messages`), answered in Anthropic's format.
    async fn messages(&self, model: &Model, _request: ChatRequest) -> Result<Reply, GatewayError> {
        Err(GatewayError::WrongModelKind(format!(
            "'{}' cannot be used with /v1/messages; use /v1/chat/completions",
            model.id
        )))
    }

    /// An OpenAI Responses request (`/v1/responses`), answered in the Responses format. Providers that
    /// do not speak it natively serve it as a chat completion, re-encoded.
    async fn responses(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        responses_by_chat(self, model, request).await
    }

    /// Anthropic's token count for a Messages request (`/v1/messages/count_tokens`), `{"input_tokens"}`.
    /// Providers without a counting endpoint answer the gateway's estimate (about four bytes a token).
    async fn count_tokens(
        &self,
        _model: &Model,
        request: ChatRequest,
    ) -> Result<Reply, GatewayError> {
        let bytes = request.body.to_bytes().len();
        let estimate = crate::usage::TokenUsage::estimate(bytes, 0).prompt_tokens;
        Ok(Reply::Complete {
            body: Bytes::from(
                serde_json::to_vec(&serde_json::json!({"input_tokens": estimate}))
                    .expect("JSON serialises"),
            ),
            // Counting is not billed.
            usage: Some(crate::usage::TokenUsage::default()),
        })
    }

    /// Responses compaction (`/v1/responses/compact`, which Codex calls in long sessions): OpenAI's own
    /// summary of a conversation, which no translation can produce.
    async fn compact(&self, model: &Model, _body: RequestBody) -> Result<Reply, GatewayError> {
        Err(GatewayError::WrongModelKind(format!(
            "'{}' cannot compact a conversation: /v1/responses/compact is OpenAI's own endpoint and \
             works with openai/ models only",
            model.id
        )))
    }
}

/// A Responses call served as a chat completion by `provider`, its reply re-encoded as a response.
pub(crate) async fn responses_by_chat<P: Provider + ?Sized>(
    provider: &P,
    model: &Model,
    request: ChatRequest,
) -> Result<Reply, GatewayError> {
    let chat = request.responses_as_chat()?.clone();
    let reply = provider.chat(model, chat).await?;
    crate::dialects::openai_responses::from_chat_reply(reply, &model.id)
}

/// A provider's constructor: its upstream client, base URL and credential.
type Connect = fn(Upstream, &str, &str) -> Arc<dyn Provider>;

/// The configured providers. A provider without a credential answers 503 naming the variable to set,
/// while the rest of the gateway works.
pub struct Providers {
    slots: Vec<(ProviderKind, Slot)>,
}

/// A provider, or why it cannot serve (no credential).
type Slot = Result<Arc<dyn Provider>, GatewayError>;

fn not_configured(provider: &'static str, upstream: &UpstreamConfig) -> GatewayError {
    GatewayError::ProviderNotConfigured {
        provider,
        variable: upstream.key_variable,
    }
}

/// One HTTP client for all upstreams, built once per process so connections are pooled and reused.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client configuration is valid")
}

impl Providers {
    pub fn from_config(config: &Config, http: reqwest::Client) -> Providers {
        let timeouts = Timeouts {
            first_byte: config.upstream_first_byte_timeout,
            idle: config.upstream_idle_timeout,
            stream_total: config.upstream_stream_max,
        };
        // The registry: one line per provider, with its kind, its name in logs and errors, its
        // configuration and its constructor.
        let registry: [(ProviderKind, &'static str, &UpstreamConfig, Connect); 3] = [
            (
                ProviderKind::Openai,
                "openai",
                &config.openai,
                openai::OpenAi::connect,
            ),
            (
                ProviderKind::Anthropic,
                "anthropic",
                &config.anthropic,
                anthropic::Anthropic::connect,
            ),
            (
                ProviderKind::Google,
                "google",
                &config.gemini,
                gemini::Gemini::connect,
            ),
        ];
        let slots = registry
            .into_iter()
            .map(|(kind, name, upstream, connect)| {
                let provider = match &upstream.api_key {
                    Some(key) => Ok(connect(
                        Upstream::new(http.clone(), timeouts, name),
                        &upstream.base_url,
                        key,
                    )),
                    None => Err(not_configured(name, upstream)),
                };
                (kind, provider)
            })
            .collect();
        Providers { slots }
    }

    pub fn get(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>, GatewayError> {
        match self.slots.iter().find(|(k, _)| *k == kind) {
            Some((_, slot)) => slot.as_ref().map_err(clone_error),
            None => Err(GatewayError::NotImplemented(format!(
                "no provider is registered for {}",
                kind.as_str()
            ))),
        }
    }
}

fn clone_error(err: &GatewayError) -> GatewayError {
    match err {
        GatewayError::ProviderNotConfigured { provider, variable } => {
            GatewayError::ProviderNotConfigured { provider, variable }
        }
        other => GatewayError::NotImplemented(other.to_string()),
    }
}

/// A 400 naming the request field a translation could not carry to the upstream's format.
pub(crate) fn bad(field: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::field(field, message)
}

/// A translating provider's reply to a chat call, in OpenAI's format: a stream's events through
/// `translator`, or a whole JSON body decoded by `decode` (the `chat.completion` bytes and the usage to
/// bill).
pub(crate) async fn chat_reply<T: Translate>(
    upstream: &Upstream,
    response: reqwest::Response,
    stream: bool,
    model: &Model,
    translator: fn(&Model) -> T,
    decode: fn(&serde_json::Value) -> Answer,
) -> Result<Reply, GatewayError> {
    if stream {
        return Ok(Reply::Stream(sse::translate(
            upstream.events(response),
            translator(model),
        )));
    }
    let answer = decode(&upstream.json::<serde_json::Value>(response).await?);
    Ok(Reply::Complete {
        body: Bytes::from(
            serde_json::to_vec(&crate::dialects::openai_chat::completion(
                &answer, &model.id,
            ))
            .expect("JSON serialises"),
        ),
        usage: answer.usage,
    })
}

/// Appends a turn (`{"role": role, key: items}`) to `turns`, merging it into the previous one when the
/// role repeats: Anthropic and Gemini both want alternating turns, so tool results become user turns next
/// to the user's own text. In a merged user turn the tool results (`is_result`) lead, as both require
/// after a turn of tool calls. An empty turn is dropped.
pub(crate) fn push_turn(
    turns: &mut Vec<serde_json::Value>,
    role: &str,
    key: &str,
    mut items: Vec<serde_json::Value>,
    is_result: fn(&serde_json::Value) -> bool,
) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut()
        && last["role"] == role
    {
        let existing = last[key]
            .as_array_mut()
            .expect("a turn's items are an array");
        if role == "user" {
            let (results, rest): (Vec<_>, Vec<_>) = items.drain(..).partition(is_result);
            let insert_at = existing.iter().take_while(|i| is_result(i)).count();
            existing.splice(insert_at..insert_at, results);
            existing.extend(rest);
        } else {
            existing.extend(items);
        }
        return;
    }
    turns.push(serde_json::json!({"role": role, key: items}));
}

/// `data:<media type>;base64,<data>` → (media type, data), for images sent inline.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}
