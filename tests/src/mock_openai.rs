//! A mock OpenAI upstream speaking the real Chat Completions, Embeddings and Responses
//! (`mock_openai_responses`) wire formats, streaming
//! included (`chat.completion.chunk` events, the usage chunk with empty `choices` only when
//! `stream_options.include_usage` is set, `data: [DONE]`). The reply echoes the last user message so tests
//! can follow a canary string through the gateway.
//!
//! Upstream model names select failure modes: `mock-400` (an OpenAI-shaped 400), `mock-401` (the
//! credential is refused), `mock-429` (OpenAI's rate-limit answer naming the organisation, with
//! `Retry-After: 7`), `mock-500` (a 500 whose body holds a secret), `mock-slow` (headers after 5 s),
//! `mock-drop` (the connection drops mid-stream), `mock-endless` (a stream that never ends on its own),
//! `mock-flaky` (503 on every other request), `mock-longline` (after two words, one SSE line that never
//! ends), `mock-bigbody` (a whole answer whose body never ends), `mock-garbage` (events that are not
//! JSON, then a normal end), `mock-slowstream` (40 ms between words), `mock-nousage`
//! (never reports usage), `mock-chatty` (forty bytes of text every 10 ms, forever), `mock-greedy` (generates every token the request allows: the larger of
//! `max_tokens` and `max_completion_tokens`, at most 1,000, for each of the `n` choices).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::UPSTREAM_KEY;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    /// Every header of the request.
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone, Default)]
pub(crate) struct MockState {
    received: Arc<Mutex<Vec<Received>>>,
}

impl MockState {
    /// How many requests this upstream model has received so far (this one included).
    fn count(&self, model: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.body["model"] == model)
            .count()
    }
}

pub struct MockOpenAi {
    url: String,
    state: MockState,
}

impl MockOpenAi {
    pub async fn start() -> MockOpenAi {
        let state = MockState::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route(
                "/v1/responses",
                post(crate::mock_openai_responses::responses),
            )
            .route(
                "/v1/responses/compact",
                post(crate::mock_openai_responses::compact),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockOpenAi { url, state }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

/// Records the request; false when the upstream credential is refused.
pub(crate) fn record(state: &MockState, path: &str, headers: &HeaderMap, body: &Value) -> bool {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.received.lock().unwrap().push(Received {
        path: path.into(),
        authorization: authorization.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    authorization.as_deref() == Some(&format!("Bearer {UPSTREAM_KEY}"))
        && body["model"] != "mock-401"
}

/// OpenAI's answer to a wrong credential.
pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"message": "Incorrect API key provided: sk-upst***************", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
    )
        .into_response()
}

pub(crate) fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// The tier the answer reports, as OpenAI's GPT-6 models do: the one requested (`priority` is served as
/// `fast`), or `default`; `metadata.mock_served_tier` overrides it (a downgraded request).
fn served_tier(body: &Value) -> String {
    if let Some(tier) = body["metadata"]["mock_served_tier"].as_str() {
        return tier.to_owned();
    }
    match body["service_tier"].as_str() {
        Some("priority") | Some("fast") => "fast".into(),
        Some(tier @ ("flex" | "ultrafast")) => tier.into(),
        _ => "default".into(),
    }
}

/// Deterministic usage: prompt = words in all messages + 7, completion = words in the reply; cache
/// writes only when `metadata.mock_cache_write_tokens` asks for them.
fn usage(body: &Value, reply: &str) -> Value {
    let prompt_words: usize = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| words(m["content"].as_str().unwrap_or("")).len())
                .sum()
        })
        .unwrap_or(0);
    let prompt = prompt_words as u64 + 7;
    let completion = words(reply).len() as u64;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0,
            "cache_write_tokens": body["metadata"]["mock_cache_write_tokens"].as_str()
                .and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)},
        "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn chunk(
    id: &str,
    model: &str,
    tier: &str,
    delta: Value,
    finish: Value,
    with_usage_field: bool,
) -> Bytes {
    let mut chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_764_000_000, "model": model,
        "system_fingerprint": "fp_mock", "service_tier": tier,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if with_usage_field {
        chunk["usage"] = Value::Null;
    }
    Bytes::from(format!("data: {chunk}\n\n"))
}

async fn chat(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !record(&state, "/v1/chat/completions", &headers, &body) {
        return unauthorized();
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    match model.as_str() {
        "mock-400" => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "max_tokens is too large: 999999. This model supports at most 16384 completion tokens.", "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_value"}})),
            )
                .into_response();
        }
        "mock-500" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "upstream stack trace: db password hunter2 at sk-internal",
            )
                .into_response();
        }
        "mock-slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "mock-429" => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7")],
                Json(json!({"error": {"message": "Rate limit reached for gpt-4o-mini in organization org-OPERATOR123 on tokens per min (TPM): Limit 200000, Used 199000", "type": "tokens", "param": null, "code": "rate_limit_exceeded"}})),
            )
                .into_response();
        }
        // Fails every other request: a retry succeeds.
        "mock-flaky" if state.count("mock-flaky") % 2 == 1 => {
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
        _ => {}
    }
    if model == "mock-greedy" {
        return greedy(&body);
    }
    if model == "mock-bigbody" && body["stream"] != true {
        // `{"id":"x","pad":"aaaa...` and never a closing quote, as fast as the socket takes it.
        let stream = async_stream::stream! {
            yield Ok::<Bytes, std::io::Error>(Bytes::from_static(b"{\"id\":\"chatcmpl-big\",\"pad\":\""));
            let block = Bytes::from(vec![b'a'; 64 * 1024]);
            loop {
                yield Ok(block.clone());
            }
        };
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let reply = format!("echo: {}", last_user_text(&body));
    let id = "chatcmpl-mock123";
    if body["stream"] != true {
        let mut completion = json!({
            "id": id, "object": "chat.completion", "created": 1_764_000_000, "model": model,
            "system_fingerprint": "fp_mock", "service_tier": served_tier(&body),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage(&body, &reply),
        });
        if model == "mock-nousage" {
            completion.as_object_mut().unwrap().remove("usage");
        }
        return Json(completion).into_response();
    }
    // Like some OpenAI-compatible servers, `mock-nousage` ignores stream_options and reports nothing.
    let include_usage = body["stream_options"]["include_usage"] == true && model != "mock-nousage";
    let usage = usage(&body, &reply);
    let tier = served_tier(&body);
    let stream = async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(chunk(id, &model, &tier, json!({"role": "assistant", "content": "", "refusal": null}), Value::Null, include_usage));
        let parts = words(&reply);
        for (i, word) in parts.iter().enumerate() {
            let text = if i == 0 { word.clone() } else { format!(" {word}") };
            yield Ok(chunk(id, &model, &tier, json!({"content": text}), Value::Null, include_usage));
            if model == "mock-slowstream" {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            if model == "mock-longline" && i == 1 {
                // An event that never ends: `data: {"x":"aaaa...` with no newline, forever.
                yield Ok(Bytes::from_static(b"data: {\"x\":\""));
                let block = Bytes::from(vec![b'a'; 64 * 1024]);
                loop {
                    yield Ok(block.clone());
                }
            }
            if model == "mock-garbage" && i == 0 {
                yield Ok(Bytes::from_static(b"data: {not json at all\n\n"));
                yield Ok(Bytes::from_static(b": a comment line\n\ndata: \x00\x01\x02\n\n"));
                yield Ok(Bytes::from_static(b"event: odd\ndata: [1,2\n\n"));
            }
            if model == "mock-drop" && i == 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(std::io::Error::other("connection reset by mock"));
                return;
            }
        }
        if model == "mock-chatty" {
            // A long generation: forty bytes of text every 10 ms, never ending on its own.
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                yield Ok(chunk(id, &model, &tier, json!({"content": "alpha beta gamma delta epsilon zeta eta "}), Value::Null, include_usage));
            }
        }
        if model == "mock-endless" {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                yield Ok(chunk(id, &model, &tier, json!({"content": " more"}), Value::Null, include_usage));
            }
        }
        yield Ok(chunk(id, &model, &tier, json!({}), json!("stop"), include_usage));
        if include_usage {
            let last = json!({"id": id, "object": "chat.completion.chunk", "created": 1_764_000_000, "model": model, "system_fingerprint": "fp_mock", "service_tier": tier, "choices": [], "usage": usage});
            yield Ok(Bytes::from(format!("data: {last}\n\n")));
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
    };
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// An upstream that bills the most a request lets it: like OpenAI-compatible servers that read whichever
/// output limit is larger, and like OpenAI itself for `n`.
fn greedy(body: &Value) -> Response {
    let per_choice = ["max_tokens", "max_completion_tokens"]
        .iter()
        .filter_map(|f| body[*f].as_u64())
        .max()
        .unwrap_or(1_000)
        .min(1_000);
    let n = body["n"].as_u64().unwrap_or(1).max(1);
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "message": {"role": "assistant", "content": "word ".repeat(per_choice as usize)}, "finish_reason": "length"}))
        .collect();
    let prompt = usage(body, "")["prompt_tokens"].as_u64().unwrap_or(0);
    let completion = per_choice * n;
    Json(json!({
        "id": "chatcmpl-greedy", "object": "chat.completion", "created": 1_764_000_000, "model": "mock-greedy",
        "choices": choices,
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }))
    .into_response()
}

async fn embeddings(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !record(&state, "/v1/embeddings", &headers, &body) {
        return unauthorized();
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("").to_owned())
            .collect(),
        _ => vec![],
    };
    let tokens: u64 = inputs.iter().map(|i| words(i).len() as u64).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 0.7, 0.8]}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response()
}
