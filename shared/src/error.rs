//! One error type for everything a client can be told, with an exhaustive mapping to an HTTP status and
//! the OpenAI error shape. Internal detail (upstream bodies, credentials, database errors) is logged where
//! the error is created and never reaches `message`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The body is not valid JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A field is missing or has the wrong type; names the field.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error("the request body is larger than the {limit_bytes}-byte limit")]
    BodyTooLarge { limit_bytes: usize },
    /// The client did not send the whole body in time (`qnp serve`'s body timeout).
    #[error("the request body did not arrive in time; send it without pausing")]
    RequestTimeout,
    #[error(
        "the model '{0}' does not exist in this gateway's catalog; GET /v1/models lists the models you can use (ids are provider/model, e.g. openai/gpt-4o-mini)"
    )]
    UnknownModel(String),
    #[error("{0}")]
    WrongModelKind(String),
    #[error("missing API key: send it as 'Authorization: Bearer <key>'")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key has been revoked")]
    RevokedKey,
    /// One of the key's own controls refused the call; `message` names it.
    #[error("{message}")]
    KeyControl {
        control: KeyControl,
        message: String,
    },
    #[error("sign in first: the session is missing, expired or ended")]
    NotSignedIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PaymentRequired(String),
    /// Too many of something heavy (exports) are running for this account or process right now.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    #[error(
        "rate limit reached: {limit} requests per minute for this key; retry after {retry_after_secs} s"
    )]
    RateLimited { limit: u64, retry_after_secs: u64 },
    /// A store the call depends on is down (or the usage outbox is full): refused rather than served
    /// unmetered or unbilled, with when to retry.
    #[error("{message}; retry after {retry_after_secs} s")]
    StoreUnavailable {
        message: &'static str,
        retry_after_secs: u64,
    },
    /// The key's tokens-per-minute limit has no room for this request's worst case right now.
    #[error(
        "rate limit reached: {limit} tokens per minute for this key, and this request may use up to \
         {requested}; retry after {retry_after_secs} s or lower max_tokens"
    )]
    TokenRateLimited {
        limit: u64,
        requested: u64,
        retry_after_secs: u64,
    },
    /// The provider is known but the operator has not configured its credential.
    #[error(
        "the {provider} provider is not configured on this gateway (the operator must set {variable})"
    )]
    ProviderNotConfigured {
        provider: &'static str,
        variable: &'static str,
    },
    /// A 4xx from the upstream that is the caller's to fix; `message` is the upstream's own safe message.
    #[error("{message}")]
    UpstreamRejected {
        status: StatusCode,
        message: String,
        kind: String,
        code: Option<String>,
    },
    #[error("{0}")]
    NotImplemented(String),
    #[error("the upstream provider failed to answer")]
    UpstreamFailed,
    /// The upstream refused the gateway's own credential (401/403): the operator's to fix, and not
    /// worth retrying. Reported to the client like any upstream failure.
    #[error("the upstream provider failed to answer")]
    UpstreamCredentialRefused,
    /// The upstream is rate limiting (or out of credit for) the gateway's own credential: retriable, and
    /// reported with when to retry, never with the provider's text (it names the operator's account).
    #[error("the upstream provider is rate limiting this gateway; retry shortly")]
    UpstreamRateLimited { retry_after_secs: Option<u64> },
    /// Anthropic's 529 and its `overloaded_error` event: retriable, and not the gateway's fault.
    #[error("the upstream provider is overloaded; retry shortly")]
    UpstreamOverloaded,
    #[error("the upstream provider did not answer in time")]
    UpstreamTimeout,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    NotFound(String),
    /// Anything else: logged in full where it happened, reported as a bare 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The per-key control that refused a call (see `key_controls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyControl {
    /// The key's expiry has passed: 401 `key_expired`.
    Expiry,
    /// The model is outside the key's allowlist: 403 `model_not_allowed`.
    Models,
    /// The key's own requests-per-minute limit: 429 `key_rate_limit_exceeded`, with Retry-After.
    RequestsPerMinute { retry_after_secs: u64 },
    /// The key's own monthly spend limit: 402 `key_spend_limit_reached`.
    MonthlySpend,
}

/// Which API's error shape a route speaks: OpenAI's everywhere but `/v1/messages`, which answers like
/// Anthropic so its SDKs raise their own error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The error shape of a path, for answers no route gave (unknown paths, wrong methods): Anthropic's
    /// under `/v1/messages`, so its clients read even a 404 there.
    pub fn of_path(path: &str) -> Dialect {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

/// The wire shape `{"error":{"message","type","code"}}` that OpenAI SDKs parse.
#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        GatewayError::Internal(err.into())
    }

    /// A model the catalog does not have, named as the client sent it but at most 200 characters long
    /// (the name is input: an error must not echo a megabyte of it).
    pub fn unknown_model(name: &str) -> Self {
        GatewayError::UnknownModel(name.chars().take(200).collect())
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        GatewayError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            MalformedJson(_) | InvalidField { .. } | WrongModelKind(_) => StatusCode::BAD_REQUEST,
            // As OpenAI and Anthropic answer a model that does not exist.
            UnknownModel(_) => StatusCode::NOT_FOUND,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            MissingKey | InvalidKey | RevokedKey | NotSignedIn => StatusCode::UNAUTHORIZED,
            KeyControl { control, .. } => match control {
                self::KeyControl::Expiry => StatusCode::UNAUTHORIZED,
                self::KeyControl::Models => StatusCode::FORBIDDEN,
                self::KeyControl::RequestsPerMinute { .. } => StatusCode::TOO_MANY_REQUESTS,
                self::KeyControl::MonthlySpend => StatusCode::PAYMENT_REQUIRED,
            },
            Forbidden(_) => StatusCode::FORBIDDEN,
            Conflict(_) => StatusCode::CONFLICT,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            RateLimited { .. } | TokenRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProviderNotConfigured { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamRejected { status, .. } => *status,
            NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            UpstreamFailed | UpstreamCredentialRefused => StatusCode::BAD_GATEWAY,
            UpstreamOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotFound(_) => StatusCode::NOT_FOUND,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI `type` string; also what the usage log records as `error_type`.
    pub fn kind(&self) -> &str {
        use GatewayError::*;
        match self {
            MalformedJson(_) | InvalidField { .. } | WrongModelKind(_) => "invalid_request_error",
            UnknownModel(_) => "model_not_found",
            BodyTooLarge { .. } => "request_too_large",
            RequestTimeout => "request_timeout",
            MissingKey | InvalidKey | RevokedKey | NotSignedIn => "authentication_error",
            KeyControl { control, .. } => match control {
                self::KeyControl::Expiry => "authentication_error",
                self::KeyControl::Models => "permission_error",
                self::KeyControl::RequestsPerMinute { .. } => "rate_limit_exceeded",
                self::KeyControl::MonthlySpend => "insufficient_quota",
            },
            Forbidden(_) => "permission_error",
            Conflict(_) => "conflict",
            BadRequest(_) => "invalid_request_error",
            PaymentRequired(_) => "insufficient_quota",
            Busy { .. } => "busy",
            RateLimited { .. } | TokenRateLimited { .. } => "rate_limit_exceeded",
            StoreUnavailable { .. } => "service_unavailable",
            ProviderNotConfigured { .. } => "provider_not_configured",
            UpstreamRejected { kind, .. } => kind,
            NotImplemented(_) => "not_implemented",
            UpstreamFailed | UpstreamCredentialRefused => "upstream_error",
            UpstreamOverloaded => "upstream_overloaded",
            UpstreamRateLimited { .. } => "upstream_rate_limited",
            UpstreamTimeout => "upstream_timeout",
            MethodNotAllowed => "method_not_allowed",
            NotFound(_) => "not_found",
            Internal(_) => "internal_error",
        }
    }

    /// Whether this error refuses a call before anything went upstream (bad input, a limit, a missing
    /// credential): such refusals are summed up per key and minute instead of stored one by one.
    pub fn is_refusal(&self) -> bool {
        use GatewayError::*;
        match self {
            MalformedJson(_)
            | InvalidField { .. }
            | BodyTooLarge { .. }
            | RequestTimeout
            | UnknownModel(_)
            | WrongModelKind(_)
            | MissingKey
            | InvalidKey
            | RevokedKey
            | KeyControl { .. }
            | NotSignedIn
            | Forbidden(_)
            | Conflict(_)
            | BadRequest(_)
            | PaymentRequired(_)
            | Busy { .. }
            | RateLimited { .. }
            | TokenRateLimited { .. }
            | StoreUnavailable { .. }
            | ProviderNotConfigured { .. }
            | MethodNotAllowed
            | NotFound(_) => true,
            UpstreamRejected { .. }
            | NotImplemented(_)
            | UpstreamFailed
            | UpstreamCredentialRefused
            | UpstreamRateLimited { .. }
            | UpstreamOverloaded
            | UpstreamTimeout
            | Internal(_) => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        use GatewayError::*;
        match self {
            InvalidKey | MissingKey => Some("invalid_api_key"),
            RevokedKey => Some("revoked_api_key"),
            KeyControl { control, .. } => Some(match control {
                self::KeyControl::Expiry => "key_expired",
                self::KeyControl::Models => "model_not_allowed",
                self::KeyControl::RequestsPerMinute { .. } => "key_rate_limit_exceeded",
                self::KeyControl::MonthlySpend => "key_spend_limit_reached",
            }),
            UnknownModel(_) => Some("model_not_found"),
            RateLimited { .. } | TokenRateLimited { .. } => Some("rate_limit_exceeded"),
            PaymentRequired(_) => Some("spend_cap_reached"),
            UpstreamRejected { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidField { field, .. } => Some(field),
            GatewayError::UnknownModel(_) => Some("model"),
            GatewayError::KeyControl {
                control: KeyControl::Models,
                ..
            } => Some("model"),
            _ => None,
        }
    }

    /// The message a client may see. `Internal` hides its cause.
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    /// The OpenAI-shaped JSON body for this error.
    pub fn openai_body(&self) -> Vec<u8> {
        let body = OpenAiErrorBody {
            error: OpenAiError {
                message: self.public_message(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl GatewayError {
    /// Anthropic's `error.type` for this error.
    fn anthropic_kind(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 if matches!(self, GatewayError::UpstreamOverloaded) => "overloaded_error",
            504 => "timeout_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The Anthropic-shaped body `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": "error",
            "error": {"type": self.anthropic_kind(), "message": self.public_message()},
        }))
        .unwrap_or_default()
    }

    pub fn body_for(&self, dialect: Dialect) -> Vec<u8> {
        match dialect {
            Dialect::OpenAi => self.openai_body(),
            Dialect::Anthropic => self.anthropic_body(),
        }
    }

    /// The error as a response in the route's dialect (same status and headers, e.g. Retry-After).
    pub fn into_response_as(self, dialect: Dialect) -> Response {
        if dialect == Dialect::OpenAi {
            return self.into_response();
        }
        let body = self.anthropic_body();
        let overloaded = matches!(self, GatewayError::UpstreamOverloaded);
        let mut response = self.into_response();
        response.headers_mut().remove(header::CONTENT_LENGTH);
        *response.body_mut() = axum::body::Body::from(body);
        if overloaded {
            // Anthropic's own status for an overloaded API, which its clients back off on.
            *response.status_mut() = StatusCode::from_u16(529).expect("529 is a valid status code");
        }
        response
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        if let GatewayError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut response = (self.status(), self.openai_body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let GatewayError::RateLimited {
            retry_after_secs, ..
        }
        | GatewayError::TokenRateLimited {
            retry_after_secs, ..
        }
        | GatewayError::UpstreamRateLimited {
            retry_after_secs: Some(retry_after_secs),
        }
        | GatewayError::Busy {
            retry_after_secs, ..
        }
        | GatewayError::StoreUnavailable {
            retry_after_secs, ..
        }
        | GatewayError::KeyControl {
            control: KeyControl::RequestsPerMinute { retry_after_secs },
            ..
        } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// The error a request body gives when its client took longer than the server's body timeout to send
/// it; handlers that read bodies answer it with a 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub std::time::Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_openai_shape_and_hides_internal_detail() {
        let err = GatewayError::internal(anyhow::anyhow!("mongodb://user:pw@host failed"));
        let body: serde_json::Value = serde_json::from_slice(&err.openai_body()).unwrap();
        assert_eq!(body["error"]["message"], "internal error");
        assert_eq!(body["error"]["type"], "internal_error");
        assert!(!body.to_string().contains("pw@host"));
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let response = GatewayError::RateLimited {
            limit: 10,
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn invalid_field_names_the_field() {
        let err = GatewayError::field("messages", "'messages' must be an array");
        let body: serde_json::Value = serde_json::from_slice(&err.openai_body()).unwrap();
        assert_eq!(body["error"]["param"], "messages");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
