//! The one place that talks HTTP to upstreams: sending with the first-byte timeout, reading a whole body
//! within it, the event stream with the idle timeout, and the policy for upstream errors (what a client
//! may see of them, and which a retry may fix). Providers only build their request and read the answer.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::sse::UpstreamEvents;
use crate::error::GatewayError;

/// Timeouts every upstream call runs under.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until the response headers arrive, and again for reading a whole (or error) body.
    pub first_byte: Duration,
    /// The longest silence between two chunks of a stream.
    pub idle: Duration,
    /// The longest a whole stream may run (a stream that drips forever is cut here).
    pub stream_total: Duration,
}

/// One upstream's client: the process's shared connection pool, the timeouts, and the provider's name
/// for logs and error policy.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    timeouts: Timeouts,
    provider: &'static str,
}

impl Upstream {
    pub fn new(http: reqwest::Client, timeouts: Timeouts, provider: &'static str) -> Upstream {
        Upstream {
            http,
            timeouts,
            provider,
        }
    }

    /// A JSON `POST` to `url`; the provider adds its credential headers.
    pub fn post(&self, url: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
    }

    /// Sends `request`. Headers must arrive within the first-byte time; an error status becomes the
    /// error the client may see (see [`error_from`]).
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GatewayError> {
        let response = match tokio::time::timeout(self.timeouts.first_byte, request.send()).await {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) if e.is_timeout() => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(provider = self.provider, error = %e, "upstream request failed");
                return Err(GatewayError::UpstreamFailed);
            }
            Ok(Ok(response)) => response,
        };
        if response.status().as_u16() >= 400 {
            return Err(error_from(self.provider, response, self.timeouts.first_byte).await);
        }
        Ok(response)
    }

    /// A whole response body, read within the first-byte time.
    pub async fn body(&self, response: reqwest::Response) -> Result<Bytes, GatewayError> {
        match tokio::time::timeout(self.timeouts.first_byte, bounded_body(response)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout),
            Ok(Err(BodyError::Read(e))) => {
                tracing::warn!(provider = self.provider, error = %e, "reading the upstream body failed");
                Err(GatewayError::UpstreamFailed)
            }
            Ok(Err(BodyError::TooLarge)) => {
                tracing::warn!(
                    provider = self.provider,
                    limit = MAX_REPLY_BYTES,
                    "an upstream reply passed the size bound; it was cut"
                );
                Err(GatewayError::UpstreamFailed)
            }
            Ok(Ok(body)) => Ok(body),
        }
    }

    /// A whole JSON body; one that does not parse is the upstream's failure.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, GatewayError> {
        let body = self.body(response).await?;
        serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!(provider = self.provider, "unparsable upstream reply");
            GatewayError::UpstreamFailed
        })
    }

    /// The response's event stream, each silence bounded by the idle time.
    pub fn events(&self, response: reqwest::Response) -> UpstreamEvents {
        UpstreamEvents::new(response, self.timeouts.idle, self.provider)
            .within(self.timeouts.stream_total)
    }

    /// The idle time, for translators that frame a body stream themselves.
    pub fn idle_timeout(&self) -> Duration {
        self.timeouts.idle
    }

    /// The longest a whole stream may run, for translators that frame a body stream themselves.
    pub fn stream_total(&self) -> Duration {
        self.timeouts.stream_total
    }
}

/// Failures a retry or another provider may fix. Client errors (4xx other than 429) and timeouts (which
/// already spent their time) are returned as they are.
pub fn retriable(err: &GatewayError) -> bool {
    matches!(
        err,
        GatewayError::UpstreamFailed
            | GatewayError::UpstreamOverloaded
            | GatewayError::UpstreamRateLimited { .. }
    )
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

/// Maps an upstream error response to what the client may see. A 4xx about the request is the caller's
/// to fix and passes through in the OpenAI shape; an upstream 401/403 is the operator's credential and a
/// 5xx is the upstream's fault: both become a bare 502 with the detail only in our logs.
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

/// The largest whole (non-streamed) reply read from an upstream: an answer of the largest output any
/// model has, with its JSON, is a few MiB; a body that never ends is cut here instead of filling memory.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

enum BodyError {
    Read(reqwest::Error),
    TooLarge,
}

async fn bounded_body(mut response: reqwest::Response) -> Result<Bytes, BodyError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

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
