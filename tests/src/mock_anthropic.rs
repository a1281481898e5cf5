//! A mock Anthropic upstream speaking the real Messages wire format: `x-api-key` and
//! `anthropic-version` checked, `message` objects with Anthropic's usage (input tokens excluding cache
//! reads and writes), `/v1/messages/count_tokens`, and named SSE events (message_start, content_block_*, ping, message_delta,
//! message_stop). With `tools` in the request it answers with a `tool_use` block.
//!
//! Upstream model names select failures: `claude-mock-400` (invalid_request_error), `claude-mock-529`
//! (overloaded), `claude-mock-midstream` (an `overloaded_error` event after the first text delta).

use std::sync::{Arc, Mutex};

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
use crate::mock_openai::Received;

#[derive(Clone, Default)]
struct MockState {
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct MockAnthropic {
    url: String,
    state: MockState,
}

impl MockAnthropic {
    pub async fn start() -> MockAnthropic {
        let state = MockState::default();
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockAnthropic { url, state }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})),
    )
        .into_response()
}

fn last_user_text(body: &Value) -> String {
    let message = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"));
    let content = message.map(|m| &m["content"]);
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// `/v1/messages/count_tokens`: the words of the last user turn + 3, as `{"input_tokens"}`.
async fn count_tokens(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = record(&state, "/v1/messages/count_tokens", &headers, &body) {
        return refused;
    }
    let words = last_user_text(&body).split_whitespace().count();
    Json(json!({"input_tokens": words + 3})).into_response()
}

/// Records the request; Anthropic's 401 when the credential is not the operator's.
fn record(state: &MockState, path: &str, headers: &HeaderMap, body: &Value) -> Option<Response> {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    state.received.lock().unwrap().push(Received {
        path: path.into(),
        authorization: key.map(str::to_owned),
        headers: headers.clone(),
        body: body.clone(),
    });
    (key != Some(UPSTREAM_KEY)).then(|| error(401, "authentication_error", "invalid x-api-key"))
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

async fn messages(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = record(&state, "/v1/messages", &headers, &body) {
        return refused;
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    if body["max_tokens"].as_u64().is_none() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    match model.as_str() {
        "claude-mock-400" => {
            return error(
                400,
                "invalid_request_error",
                "messages.0.content: text content blocks must be non-empty",
            );
        }
        "claude-mock-529" => return error(529, "overloaded_error", "Overloaded"),
        _ => {}
    }
    let text = format!("echo: {}", last_user_text(&body));
    let input_tokens = text.split_whitespace().count() as u64 + 3;
    let output_tokens = text.split_whitespace().count() as u64;
    let tool = body["tools"]
        .as_array()
        .and_then(|t| t.first())
        .map(|t| t["name"].clone());
    let usage = json!({"input_tokens": input_tokens, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 4, "output_tokens": output_tokens});
    if body["stream"] != true {
        let mut content = vec![json!({"type": "text", "text": text})];
        if let Some(name) = &tool {
            content.push(json!({"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {"city": "Paris"}}));
        }
        return Json(json!({
            "id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let stream = async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(event("message_start", json!({"type": "message_start", "message": {
            "id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 4, "output_tokens": 1}}})));
        yield Ok(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        yield Ok(event("ping", json!({"type": "ping"})));
        for (i, word) in text.split_whitespace().enumerate() {
            let piece = if i == 0 { word.to_owned() } else { format!(" {word}") };
            yield Ok(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
            if model == "claude-mock-midstream" {
                yield Ok(event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
                return;
            }
        }
        yield Ok(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        if let Some(name) = &tool {
            yield Ok(event("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}})));
            for part in ["", "{\"city\": ", "\"Paris\"}"] {
                yield Ok(event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}})));
            }
            yield Ok(event("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
        }
        yield Ok(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
        yield Ok(event("message_stop", json!({"type": "message_stop"})));
    };
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap()
}
