//! The mock OpenAI upstream's Responses API (`/v1/responses`, `/v1/responses/compact`), in the real wire
//! format: a `response` object, or named events with `sequence_number` (`response.created`,
//! `response.in_progress`, output item added / delta / done events, and one terminal
//! `response.completed`). The reply echoes the last user text; with tools, a user text containing
//! "run tool" gets a function call to the first tool (`{"cmd":"echo hi"}`), and a function call's output
//! gets "tool said: <output>". With a `web_search` tool and "search" in the user text, one
//! `web_search_call` item comes first. Upstream model names pick failure modes as on chat: `mock-drop` (the
//! connection drops mid-stream), `mock-nousage` (no usage), `mock-400`, `mock-500`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::mock_openai::{MockState, record, unauthorized, words};

fn item_text(item: &Value) -> String {
    match &item["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// What the mock answers: a text, or a function call (name, arguments).
enum Output {
    Text(String),
    Call(String, String),
}

fn last_user(body: &Value) -> String {
    match &body["input"] {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|i| i["role"] == "user")
            .map(item_text)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn answer(body: &Value) -> Output {
    let items = match &body["input"] {
        Value::String(text) => return Output::Text(format!("echo: {text}")),
        Value::Array(items) => items,
        _ => return Output::Text("echo: ".into()),
    };
    if let Some(last) = items.last()
        && last["type"] == "function_call_output"
    {
        return Output::Text(format!(
            "tool said: {}",
            last["output"].as_str().unwrap_or("")
        ));
    }
    let user = items
        .iter()
        .rev()
        .find(|i| i["role"] == "user")
        .map(item_text)
        .unwrap_or_default();
    let tool = body["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "function"))
        .and_then(|t| t["name"].as_str());
    match tool {
        Some(name) if user.contains("run tool") => {
            Output::Call(name.to_owned(), r#"{"cmd":"echo hi"}"#.to_owned())
        }
        _ => Output::Text(format!("echo: {user}")),
    }
}

fn usage(body: &Value, output: &Output) -> Value {
    let input_words: usize = match &body["input"] {
        Value::String(text) => words(text).len(),
        Value::Array(items) => items
            .iter()
            .map(|i| words(&item_text(i)).len() + words(i["output"].as_str().unwrap_or("")).len())
            .sum(),
        _ => 0,
    };
    let input = input_words as u64 + 7;
    let output = match output {
        Output::Text(text) => words(text).len() as u64,
        Output::Call(_, arguments) => arguments.len() as u64 / 4 + 1,
    };
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": input + output})
}

fn response(model: &str, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({"id": "resp_mock123", "object": "response", "created_at": 1_764_000_000, "status": status,
        "error": null, "incomplete_details": null, "model": model, "output": output,
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "store": false,
        "usage": usage})
}

fn output_item(output: &Output) -> Value {
    match output {
        Output::Text(text) => json!({"id": "msg_mock1", "type": "message", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}),
        Output::Call(name, arguments) => json!({"id": "fc_mock1", "type": "function_call",
            "status": "completed", "call_id": "call_mock1", "name": name, "arguments": arguments}),
    }
}

pub(crate) async fn responses(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !record(&state, "/v1/responses", &headers, &body) {
        return unauthorized();
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    match model.as_str() {
        "mock-400" => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "Invalid value for 'max_output_tokens'.", "type": "invalid_request_error", "param": "max_output_tokens", "code": "invalid_value"}})),
            )
                .into_response();
        }
        "mock-500" => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "secret stack trace").into_response();
        }
        _ => {}
    }
    let output = answer(&body);
    let mut usage = usage(&body, &output);
    if model == "mock-nousage" {
        usage = Value::Null;
    }
    let searched = body["tools"].as_array().is_some_and(|tools| {
        tools.iter().any(|t| {
            t["type"]
                .as_str()
                .is_some_and(|k| k.starts_with("web_search"))
        })
    }) && last_user(&body).contains("search");
    let search = json!({"id": "ws_mock1", "type": "web_search_call", "status": "completed",
        "action": {"type": "search", "query": "mock query"}});
    let mut items = vec![output_item(&output)];
    if searched {
        items.insert(0, search.clone());
    }
    if body["stream"] != true {
        return Json(response(&model, "completed", items, usage)).into_response();
    }
    let mut events: Vec<(String, Value)> = Vec::new();
    let in_progress = response(&model, "in_progress", vec![], Value::Null);
    events.push(("response.created".into(), json!({"response": in_progress})));
    events.push((
        "response.in_progress".into(),
        json!({"response": in_progress}),
    ));
    // The answer's item follows the search, if there was one.
    let at = usize::from(searched);
    if searched {
        let mut started = search.clone();
        started["status"] = json!("in_progress");
        events.push((
            "response.output_item.added".into(),
            json!({"output_index": 0, "item": started}),
        ));
        events.push((
            "response.web_search_call.completed".into(),
            json!({"output_index": 0, "item_id": "ws_mock1"}),
        ));
        events.push((
            "response.output_item.done".into(),
            json!({"output_index": 0, "item": search}),
        ));
    }
    let done = output_item(&output);
    let mut added = done.clone();
    added["status"] = json!("in_progress");
    match &output {
        Output::Text(text) => {
            added["content"] = json!([]);
            events.push((
                "response.output_item.added".into(),
                json!({"output_index": at, "item": added}),
            ));
            events.push(("response.content_part.added".into(), json!({"item_id": "msg_mock1", "output_index": at, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})));
            for (i, word) in words(text).iter().enumerate() {
                let delta = if i == 0 {
                    word.clone()
                } else {
                    format!(" {word}")
                };
                events.push(("response.output_text.delta".into(), json!({"item_id": "msg_mock1", "output_index": at, "content_index": 0, "delta": delta, "logprobs": []})));
            }
            events.push(("response.output_text.done".into(), json!({"item_id": "msg_mock1", "output_index": at, "content_index": 0, "text": text, "logprobs": []})));
            events.push(("response.content_part.done".into(), json!({"item_id": "msg_mock1", "output_index": at, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})));
        }
        Output::Call(_, arguments) => {
            added["arguments"] = json!("");
            events.push((
                "response.output_item.added".into(),
                json!({"output_index": at, "item": added}),
            ));
            events.push((
                "response.function_call_arguments.delta".into(),
                json!({"item_id": "fc_mock1", "output_index": at, "delta": arguments}),
            ));
            events.push((
                "response.function_call_arguments.done".into(),
                json!({"item_id": "fc_mock1", "output_index": at, "arguments": arguments}),
            ));
        }
    }
    events.push((
        "response.output_item.done".into(),
        json!({"output_index": at, "item": done}),
    ));
    let completed = response(&model, "completed", items, usage);
    events.push(("response.completed".into(), json!({"response": completed})));
    let drop_after = (model == "mock-drop").then_some(4);
    let stream = async_stream::stream! {
        for (sequence, (name, mut data)) in events.into_iter().enumerate() {
            if drop_after == Some(sequence) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                yield Err(std::io::Error::other("connection reset by mock"));
                return;
            }
            data["type"] = json!(name);
            data["sequence_number"] = json!(sequence);
            yield Ok::<Bytes, std::io::Error>(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// `/v1/responses/compact`: the conversation as one opaque compaction item.
pub(crate) async fn compact(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !record(&state, "/v1/responses/compact", &headers, &body) {
        return unauthorized();
    }
    Json(
        json!({"id": "resp_compact1", "object": "response.compaction", "created_at": 1_764_000_000,
        "output": [{"id": "cmp_1", "type": "compaction", "encrypted_content": "opaque-summary"}],
        "usage": {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48}}),
    )
    .into_response()
}
