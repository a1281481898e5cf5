//! Upstream providers behind one trait: the proxy hands a provider an OpenAI-format request and gets an
//! OpenAI-format reply (whole or as a stream of SSE events), so routing never knows a wire format.
//! One module per upstream wire format.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalog::{Model, ProviderKind};
use crate::config::{Config, UpstreamConfig};
use crate::error::GatewayError;
use crate::usage::TokenUsage;

pub mod anthropic;
pub mod gemini;
pub mod messages_bridge;
pub mod openai;
mod openai_format;
pub mod sse;

/// A JSON request body as top-level fields whose values stay raw: the gateway reads and rewrites a few
/// fields (model, stream options) and forwards the rest byte for byte, never parsing prompt content.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct RequestBody(pub IndexMap<String, Box<RawValue>>);

impl RequestBody {
    pub fn parse(bytes: &[u8]) -> Result<RequestBody, GatewayError> {
        serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                GatewayError::MalformedJson("the body must be a JSON object".into())
            } else {
                GatewayError::MalformedJson(e.to_string())
            }
        })
    }

    pub fn raw(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(|v| v.get())
    }

    /// Parses one field into `T`, with a 400 naming the field when it has the wrong type.
    pub fn get<'a, T: Deserialize<'a>>(
        &'a self,
        field: &str,
        expected: &str,
    ) -> Result<Option<T>, GatewayError> {
        match self.raw(field) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw)
                .map(Some)
                .map_err(|_| GatewayError::field(field, format!("'{field}' must be {expected}"))),
        }
    }

    pub fn set(&mut self, field: &str, value: &impl serde::Serialize) {
        let raw = serde_json::value::to_raw_value(value).expect("serialisable value");
        self.0.insert(field.to_owned(), raw);
    }

    pub fn remove(&mut self, field: &str) {
        self.0.shift_remove(field);
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.0).expect("raw JSON values serialise"))
    }
}

/// A chat completion request as the proxy validated it.
pub struct ChatRequest {
    pub body: RequestBody,
    pub stream: bool,
}

/// One event of a reply stream, already framed as an OpenAI-format SSE event.
pub enum StreamItem {
    Event {
        bytes: Bytes,
        /// The provider's own usage accounting, when this event carries it.
        usage: Option<TokenUsage>,
        /// The event exists only to carry usage (OpenAI's final chunk with empty `choices`); it is
        /// forwarded only to clients that asked for usage.
        usage_only: bool,
        /// The protocol's end (OpenAI's `data: [DONE]`): the client has everything once it has this, so
        /// the call is complete even if the client hangs up right after, and the response ends here
        /// whether or not the upstream closes its side promptly.
        last: bool,
    },
    /// The upstream failed mid-stream; the proxy ends the client's stream with an error event.
    Failed(GatewayError),
}

pub enum Reply {
    /// A whole JSON body, forwarded unchanged.
    Complete {
        body: Bytes,
        usage: Option<TokenUsage>,
    },
    Stream(BoxStream<'static, StreamItem>),
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
}

/// Timeouts every provider applies to its upstream calls.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
}

/// The configured providers. A provider without a credential answers 503 naming the variable to set,
/// while the rest of the gateway works.
pub struct Providers {
    openai: Result<Arc<dyn Provider>, GatewayError>,
    anthropic: Result<Arc<dyn Provider>, GatewayError>,
    google: Result<Arc<dyn Provider>, GatewayError>,
}

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
        };
        let openai = match &config.openai.api_key {
            Some(key) => Ok(Arc::new(openai::OpenAi::new(
                http.clone(),
                &config.openai.base_url,
                key,
                timeouts,
            )) as Arc<dyn Provider>),
            None => Err(not_configured("openai", &config.openai)),
        };
        let anthropic = match &config.anthropic.api_key {
            Some(key) => Ok(Arc::new(anthropic::Anthropic::new(
                http.clone(),
                &config.anthropic.base_url,
                key,
                timeouts,
            )) as Arc<dyn Provider>),
            None => Err(not_configured("anthropic", &config.anthropic)),
        };
        let google = match &config.gemini.api_key {
            Some(key) => Ok(Arc::new(gemini::Gemini::new(
                http.clone(),
                &config.gemini.base_url,
                key,
                timeouts,
            )) as Arc<dyn Provider>),
            None => Err(not_configured("google", &config.gemini)),
        };
        Providers {
            openai,
            anthropic,
            google,
        }
    }

    pub fn get(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>, GatewayError> {
        let slot = match kind {
            ProviderKind::Openai => &self.openai,
            ProviderKind::Anthropic => &self.anthropic,
            ProviderKind::Google => &self.google,
        };
        slot.as_ref().map_err(clone_error)
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

/// The OpenAI error envelope most upstreams use for 4xx bodies.
#[derive(Deserialize)]
struct UpstreamErrorBody {
    error: UpstreamErrorDetail,
}

#[derive(Deserialize)]
struct UpstreamErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// Maps an upstream error response to what the client may see. A 4xx about the request is the caller's
/// to fix and passes through in the OpenAI shape; an upstream 401/403 is the operator's credential and a
/// 5xx is the upstream's fault: both become a bare 502 with the detail only in our logs.
/// A 400 naming the request field a translation could not carry to the upstream's format.
pub(crate) fn bad(field: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::field(field, message)
}

/// `data:<media type>;base64,<data>` → (media type, data), for images sent inline.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// The `type` values an upstream's 4xx may carry to the client and into usage rows: the providers'
/// documented vocabulary. Anything else is reported as `invalid_request_error`, so an upstream (or
/// whoever runs an OpenAI-compatible server) cannot put its own words into a CSV cell or a client's
/// error handling.
const UPSTREAM_ERROR_TYPES: [&str; 9] = [
    "invalid_request_error",
    "not_found_error",
    "request_too_large",
    "conflict",
    "unprocessable_entity",
    "authentication_error",
    "permission_error",
    "model_not_found",
    "context_length_exceeded",
];

/// An upstream's error answer as the client may see it, read with the first-byte time limit; a slow or
/// endless error body is not waited for.
pub async fn error_from(
    provider: &str,
    response: reqwest::Response,
    limit: Duration,
) -> GatewayError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = tokio::time::timeout(limit, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let err = upstream_error(provider, status, &body);
    match err {
        GatewayError::UpstreamRateLimited { .. } => GatewayError::UpstreamRateLimited {
            retry_after_secs: retry_after.map(|s| s.clamp(1, 3600)),
        },
        other => other,
    }
}

pub fn upstream_error(provider: &str, status: u16, body: &[u8]) -> GatewayError {
    let detail = serde_json::from_slice::<UpstreamErrorBody>(body).ok();
    match status {
        // A 429 is about the operator's account at the provider (its rate limits, its credit), and its
        // message names the organisation and its limits: the client gets the status and when to retry.
        429 => {
            tracing::warn!(
                provider,
                "the upstream is rate limiting the gateway's credential"
            );
            GatewayError::UpstreamRateLimited {
                retry_after_secs: None,
            }
        }
        400 | 404 | 409 | 413 | 422 => {
            let message = detail
                .as_ref()
                .and_then(|d| d.error.message.clone())
                .unwrap_or_else(|| {
                    format!("the upstream provider rejected the request ({status})")
                });
            let message: String = message.chars().take(1000).collect();
            let kind = detail
                .as_ref()
                .and_then(|d| d.error.kind.as_deref())
                .and_then(|k| UPSTREAM_ERROR_TYPES.iter().find(|t| **t == k))
                .unwrap_or(&"invalid_request_error");
            GatewayError::UpstreamRejected {
                status: axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                message,
                kind: (*kind).to_owned(),
                code: detail.and_then(|d| match d.error.code {
                    // Codes are identifiers (`invalid_value`, `context_length_exceeded`): anything
                    // else is dropped.
                    Some(serde_json::Value::String(s))
                        if s.len() <= 64
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
                    {
                        Some(s)
                    }
                    _ => None,
                }),
            }
        }
        529 => GatewayError::UpstreamOverloaded,
        401 | 403 => {
            tracing::error!(
                provider,
                status,
                "the upstream refused the gateway's credential"
            );
            GatewayError::UpstreamCredentialRefused
        }
        // Gemini's 503 UNAVAILABLE is "the model is overloaded": retriable, like Anthropic's 529.
        503 if provider == "google" => GatewayError::UpstreamOverloaded,
        _ => {
            tracing::warn!(
                provider,
                status,
                "upstream error response (body withheld from the client)"
            );
            GatewayError::UpstreamFailed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_round_trips_untouched_fields_verbatim() {
        let text = br#"{"model":"openai/x","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.70}"#;
        let mut body = RequestBody::parse(text).unwrap();
        body.set("model", &"x");
        let out = String::from_utf8(body.to_bytes().to_vec()).unwrap();
        assert_eq!(
            out,
            r#"{"model":"x","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.70}"#
        );
    }

    #[test]
    fn body_errors_are_precise() {
        assert!(matches!(
            RequestBody::parse(b"{\"model\": "),
            Err(GatewayError::MalformedJson(_))
        ));
        assert!(matches!(
            RequestBody::parse(b"[1]"),
            Err(GatewayError::MalformedJson(_))
        ));
        let body = RequestBody::parse(br#"{"stream":"yes"}"#).unwrap();
        let err = body.get::<bool>("stream", "a boolean").unwrap_err();
        assert!(err.to_string().contains("'stream'"));
    }

    #[test]
    fn upstream_errors_hide_credentials_and_server_faults() {
        let e = upstream_error(
            "openai",
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-live-123"}}"#,
        );
        assert_eq!(e.status(), 502);
        assert!(!e.to_string().contains("sk-live"));
        let e = upstream_error(
            "openai",
            400,
            br#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error","code":"bad"}}"#,
        );
        assert_eq!(e.status(), 400);
        assert_eq!(e.to_string(), "max_tokens is too large");
        assert_eq!(e.code(), Some("bad"));
        assert_eq!(upstream_error("openai", 503, b"oops").status(), 502);
        let e = upstream_error(
            "google",
            404,
            br#"{"error":{"code":404,"message":"models/x is not found for API version v1beta","status":"NOT_FOUND"}}"#,
        );
        assert_eq!(e.status(), 404);
        assert_eq!(e.kind(), "invalid_request_error");
        assert!(e.to_string().contains("models/x is not found"));
        assert!(matches!(
            upstream_error("google", 503, b"{}"),
            GatewayError::UpstreamOverloaded
        ));
    }

    #[test]
    fn an_upstream_429_reaches_the_client_without_the_providers_words() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-SECRET on tokens per min (TPM): Limit 200000","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let err = upstream_error("openai", 429, body);
        assert_eq!(err.status(), 429);
        let text = String::from_utf8(err.openai_body()).unwrap();
        assert!(
            !text.contains("org-SECRET") && !text.contains("200000"),
            "{text}"
        );
        assert_eq!(err.kind(), "upstream_rate_limited");
    }

    #[test]
    fn upstream_error_types_stay_in_the_gateways_vocabulary() {
        let body =
            br#"{"error":{"message":"bad","type":"=HYPERLINK(\"http://evil\")","code":"=1+1"}}"#;
        let err = upstream_error("openai", 400, body);
        assert_eq!(err.kind(), "invalid_request_error");
        assert_eq!(err.code(), None);
        let err = upstream_error(
            "openai",
            400,
            br#"{"error":{"message":"m","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(err.code(), Some("context_length_exceeded"));
    }
}
