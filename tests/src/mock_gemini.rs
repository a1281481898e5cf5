//! A mock Gemini (Developer API) upstream speaking the real wire format: `x-goog-api-key` checked,
//! `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` (one whole
//! `GenerateContentResponse` per `data:` event, running `usageMetadata`, no `[DONE]`) and
//! `:batchEmbedContents`; errors in Google's `{"error":{"code","message","status"}}` shape. The reply
//! echoes the last user text; usage reports cached and thinking tokens. With `tools` in the request it
//! answers with a `functionCall` part carrying a thought signature.
//!
//! Upstream model names select failures: `gemini-mock-400` (400 INVALID_ARGUMENT), `gemini-mock-503`
//! (503 UNAVAILABLE), `gemini-mock-midstream` (an INTERNAL error event after the first chunk).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::UPSTREAM_KEY;
use crate::mock_openai::Received;

/// The signature the mock puts on its function calls; Gemini 3 wants it back on the same part.
pub const THOUGHT_SIGNATURE: &str = "bW9jay1zaWduYXR1cmU=";
/// Cached and thinking tokens the mock reports on every reply.
pub const CACHED_TOKENS: u64 = 2;
pub const THOUGHTS_TOKENS: u64 = 2;

#[derive(Clone, Default)]
struct MockState {
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct MockGemini {
    url: String,
    state: MockState,
}

impl MockGemini {
    pub async fn start() -> MockGemini {
        let state = MockState::default();
        // Gemini puts the method after a ':' inside the last path segment, which axum cannot split on:
        // the handler takes the whole segment and splits it itself.
        let app = Router::new()
            .route("/v1beta/models/{model_action}", post(models))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockGemini { url, state }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests as received; `path` includes the query string, `authorization` is `x-goog-api-key`.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

fn error(status: u16, google_status: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"error": {"code": status, "message": message, "status": google_status}})),
    )
        .into_response()
}

/// The text of the last user turn that has any (function responses are user turns too).
fn last_user_text(body: &Value) -> String {
    body["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .filter(|c| c["role"] == "user")
        .map(|c| {
            c["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

/// Gemini refuses empty text parts and contents without parts.
fn invalid_contents(body: &Value) -> Option<&'static str> {
    let contents = body["contents"].as_array()?;
    if contents.is_empty() {
        return Some("* GenerateContentRequest.contents: contents is not specified");
    }
    for content in contents {
        let parts = content["parts"].as_array();
        if parts.is_none_or(|p| p.is_empty()) {
            return Some(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.",
            );
        }
        if parts
            .into_iter()
            .flatten()
            .any(|p| p.get("text").is_some_and(|t| t == ""))
        {
            return Some("Unable to submit request because it has an empty text parameter.");
        }
    }
    None
}

fn usage(prompt: u64, candidates: u64, thoughts: u64) -> Value {
    json!({
        "promptTokenCount": prompt, "candidatesTokenCount": candidates, "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": CACHED_TOKENS, "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    })
}

fn event(data: Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

async fn models(
    State(state): State<MockState>,
    Path(model_action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = match &query {
        Some(q) => format!("/v1beta/models/{model_action}?{q}"),
        None => format!("/v1beta/models/{model_action}"),
    };
    state.received.lock().unwrap().push(Received {
        path,
        authorization: key.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if key.as_deref() != Some(UPSTREAM_KEY) {
        return error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        );
    }
    let Some((model, action)) = model_action.split_once(':') else {
        return error(
            404,
            "NOT_FOUND",
            "The requested URL was not found on this server.",
        );
    };
    let model = model.to_owned();
    match model.as_str() {
        "gemini-mock-400" => {
            return error(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received. Unknown name \"bogus\": Cannot find field.",
            );
        }
        "gemini-mock-503" => {
            return error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            );
        }
        _ => {}
    }
    match action {
        "generateContent" => generate(&model, &body, false),
        "streamGenerateContent" if query.as_deref() == Some("alt=sse") => {
            generate(&model, &body, true)
        }
        "streamGenerateContent" => error(
            400,
            "INVALID_ARGUMENT",
            "this mock streams only with alt=sse",
        ),
        "batchEmbedContents" => embed(&model, &body),
        _ => error(
            404,
            "NOT_FOUND",
            "The requested URL was not found on this server.",
        ),
    }
}

fn generate(model: &str, body: &Value, stream: bool) -> Response {
    if let Some(message) = invalid_contents(body) {
        return error(400, "INVALID_ARGUMENT", message);
    }
    let text = format!("echo: {}", last_user_text(body));
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let prompt = words.len() as u64 + 3;
    let candidates = words.len() as u64;
    let tool = body["tools"][0]["functionDeclarations"][0]["name"]
        .as_str()
        .map(str::to_owned);
    let call = tool.as_ref().map(|name| {
        json!({"functionCall": {"name": name, "args": {"city": "Paris"}}, "thoughtSignature": THOUGHT_SIGNATURE})
    });
    if !stream {
        let mut parts = vec![json!({"text": text})];
        parts.extend(call);
        return Json(json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage(prompt, candidates, THOUGHTS_TOKENS),
            "modelVersion": model, "responseId": "mock-response-1",
        }))
        .into_response();
    }
    let model = model.to_owned();
    let stream = async_stream::stream! {
        let last = words.len() - 1;
        for (i, word) in words.iter().enumerate() {
            let piece = if i == 0 { word.clone() } else { format!(" {word}") };
            let mut parts = vec![json!({"text": piece})];
            let mut candidate = json!({"content": {"role": "model", "parts": []}, "index": 0});
            // Running usage: thinking is reported once the model has thought, output grows word by word.
            let thoughts = if i == last { THOUGHTS_TOKENS } else { 0 };
            if i == last {
                parts.extend(call.clone());
                candidate["finishReason"] = json!("STOP");
            }
            candidate["content"]["parts"] = json!(parts);
            yield Ok::<Bytes, std::io::Error>(event(json!({
                "candidates": [candidate],
                "usageMetadata": usage(prompt, i as u64 + 1, thoughts),
                "modelVersion": model, "responseId": "mock-response-1",
            })));
            if model == "gemini-mock-midstream" {
                yield Ok(event(json!({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}})));
                return;
            }
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// One deterministic vector per text: its length, then two constants (or `outputDimensionality` values).
fn embed(model: &str, body: &Value) -> Response {
    let Some(requests) = body["requests"].as_array() else {
        return error(400, "INVALID_ARGUMENT", "requests is required");
    };
    let mut embeddings = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if request["model"] != format!("models/{model}") {
            return error(
                400,
                "INVALID_ARGUMENT",
                &format!(
                    "Model name in request {i} must match the model in the URL (models/{model})"
                ),
            );
        }
        let Some(text) = request["content"]["parts"][0]["text"].as_str() else {
            return error(400, "INVALID_ARGUMENT", "content is required");
        };
        let dimensions = request["outputDimensionality"].as_u64().unwrap_or(3) as usize;
        let mut values = vec![text.chars().count() as f64, 0.5, -0.25];
        values.resize(dimensions, 0.0);
        embeddings.push(json!({"values": values}));
    }
    Json(json!({"embeddings": embeddings})).into_response()
}
