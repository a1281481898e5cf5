//! Anthropic Messages upstream: OpenAI Chat Completions requests are translated to `POST /v1/messages`,
//! and replies (whole or streamed) back to OpenAI's format, so clients and the proxy see one wire format.
//!
//! Translation parses the request's messages (it must restructure them); nothing here logs or keeps
//! their content. Usage comes from Anthropic's own accounting: `input_tokens` excludes cache reads and
//! writes, so the prompt total is the sum of the three, with cache reads and writes priced separately.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::openai_format::{now_unix, sse_event, stream_end, usage_json};
use super::sse::{self, UpstreamEvents};
use super::{ChatRequest, Provider, Reply, RequestBody, StreamItem, Upstream, bad, data_url};
use crate::catalog::Model;
use crate::error::GatewayError;
use crate::usage::TokenUsage;

pub const API_VERSION: &str = "2023-06-01";
/// Used when the client sets no `max_tokens`: Anthropic requires one, and a moderate default keeps a
/// non-streamed call inside upstream timeouts. Capped by the model's own maximum.
const DEFAULT_MAX_TOKENS: u64 = 8192;

pub struct Anthropic {
    upstream: Upstream,
    messages_url: String,
    api_key: String,
}

/// One OpenAI content part as Anthropic blocks (text and images; empty text is dropped).
fn content_blocks(content: &Value, field: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(vec![]),
        Value::String(text) if text.is_empty() => Ok(vec![]),
        Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(parts) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = part["text"].as_str().filter(|t| !t.is_empty()) {
                            blocks.push(json!({"type": "text", "text": text}));
                        }
                    }
                    Some("image_url") => {
                        let url = part["image_url"]["url"]
                            .as_str()
                            .or_else(|| part["image_url"].as_str())
                            .ok_or_else(|| bad(field, "an image_url part needs image_url.url"))?;
                        let block = match data_url(url) {
                            Some(("application/pdf", data)) => json!({"type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": data}}),
                            Some((media_type, data)) => json!({"type": "image",
                                "source": {"type": "base64", "media_type": media_type, "data": data}}),
                            None if url.starts_with("https://") || url.starts_with("http://") => {
                                json!({"type": "image", "source": {"type": "url", "url": url}})
                            }
                            None => {
                                return Err(bad(
                                    field,
                                    "image URLs must be http(s) or base64 data URLs",
                                ));
                            }
                        };
                        blocks.push(block);
                    }
                    other => {
                        return Err(bad(
                            field,
                            format!(
                                "content parts of type {other:?} are not supported for Anthropic models"
                            ),
                        ));
                    }
                }
            }
            Ok(blocks)
        }
        _ => Err(bad(
            field,
            "message content must be a string or an array of parts",
        )),
    }
}

/// Appends a message, merging it into the previous one when the role repeats (Anthropic requires
/// alternating turns; tool results become user turns next to the user's own text).
fn push(messages: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
    {
        let content = last["content"].as_array_mut().expect("content is an array");
        if role == "user" {
            // Tool results must lead the user turn that follows a tool_use turn.
            let (results, rest): (Vec<Value>, Vec<Value>) =
                blocks.drain(..).partition(|b| b["type"] == "tool_result");
            let insert_at = content
                .iter()
                .take_while(|b| b["type"] == "tool_result")
                .count();
            content.splice(insert_at..insert_at, results);
            content.extend(rest);
        } else {
            content.extend(blocks);
        }
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// Translates an OpenAI chat request into an Anthropic Messages request.
pub fn to_messages_request(
    body: &RequestBody,
    model: &Model,
    stream: bool,
) -> Result<Value, GatewayError> {
    let messages: Vec<Value> = body
        .get("messages", "an array of messages")?
        .ok_or_else(|| bad("messages", "'messages' is required"))?;
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        match message["role"].as_str() {
            Some("system") | Some("developer") => {
                system.extend(content_blocks(&message["content"], &field)?)
            }
            Some("user") => push(
                &mut out,
                "user",
                content_blocks(&message["content"], &field)?,
            ),
            Some("assistant") => {
                let mut blocks = content_blocks(&message["content"], &field)?;
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments)
                            .ok()
                            .filter(Value::is_object)
                            .ok_or_else(|| {
                                bad(&field, "tool call arguments must be a JSON object")
                            })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
                }
                push(&mut out, "assistant", blocks);
            }
            Some("tool") => {
                let content = match &message["content"] {
                    Value::String(text) => Value::String(text.clone()),
                    other => Value::Array(content_blocks(other, &field)?),
                };
                let id = message["tool_call_id"]
                    .as_str()
                    .ok_or_else(|| bad(&field, "a tool message needs tool_call_id"))?;
                push(
                    &mut out,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            other => return Err(bad(&field, format!("unknown role {other:?}"))),
        }
    }
    if out.first().is_some_and(|m| m["role"] == "assistant") {
        out.insert(
            0,
            json!({"role": "user", "content": [{"type": "text", "text": "."}]}),
        );
    }
    if out.is_empty() {
        return Err(bad("messages", "there must be at least one user message"));
    }

    let limit = model.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let max_tokens = body
        .get::<u64>("max_completion_tokens", "a positive integer")?
        .or(body.get::<u64>("max_tokens", "a positive integer")?)
        .unwrap_or(DEFAULT_MAX_TOKENS.min(limit))
        .max(1);
    let mut request = json!({
        "model": model.upstream_model,
        "max_tokens": max_tokens,
        "messages": out,
    });
    let fields = request.as_object_mut().expect("object");
    if !system.is_empty() {
        fields.insert("system".into(), Value::Array(system));
    }
    if stream {
        fields.insert("stream".into(), json!(true));
    }
    if let Some(t) = body.get::<f64>("temperature", "a number")? {
        fields.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    } else if let Some(p) = body.get::<f64>("top_p", "a number")? {
        // Recent Claude models refuse temperature and top_p together; temperature wins when both are set.
        fields.insert("top_p".into(), json!(p));
    }
    match body.get::<Value>("stop", "a string or an array of strings")? {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            fields.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            let list: Vec<&str> = list
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .collect();
            if !list.is_empty() {
                fields.insert("stop_sequences".into(), json!(list));
            }
        }
        _ => {}
    }
    insert_tools(body, fields)?;
    apply_response_format(body, fields)?;
    Ok(request)
}

fn insert_tools(body: &RequestBody, fields: &mut Map<String, Value>) -> Result<(), GatewayError> {
    if let Some(tools) = body.get::<Vec<Value>>("tools", "an array of tools")? {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut tool = json!({
                    "name": f["name"],
                    "input_schema": if f["parameters"].is_object() { f["parameters"].clone() } else { json!({"type": "object", "properties": {}}) },
                });
                if let Some(d) = f["description"].as_str() {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        if !tools.is_empty() {
            fields.insert("tools".into(), Value::Array(tools));
        }
    }
    let mut choice = match body.get::<Value>("tool_choice", "a string or an object")? {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            other => return Err(bad("tool_choice", format!("unknown tool_choice '{other}'"))),
        },
        Some(obj) => match obj["function"]["name"].as_str() {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => return Err(bad("tool_choice", "tool_choice objects need function.name")),
        },
    };
    if body.get::<bool>("parallel_tool_calls", "a boolean")? == Some(false)
        && fields.contains_key("tools")
    {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        fields.insert("tool_choice".into(), choice);
    }
    Ok(())
}

/// JSON mode: a schema becomes a forced tool whose input is the answer (turned back into content in the
/// reply); plain `json_object` becomes a system instruction, since Anthropic has no schema-less mode.
fn apply_response_format(
    body: &RequestBody,
    fields: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let Some(format) = body.get::<Value>("response_format", "an object")? else {
        return Ok(());
    };
    match format["type"].as_str() {
        Some("text") | None => {}
        Some("json_object") => {
            let instruction = json!({"type": "text", "text": "Respond with a single valid JSON object and nothing else."});
            match fields.get_mut("system") {
                Some(Value::Array(system)) => system.push(instruction),
                _ => {
                    fields.insert("system".into(), json!([instruction]));
                }
            }
        }
        Some("json_schema") => {
            let schema = format["json_schema"]["schema"].clone();
            let schema = if schema.is_object() {
                schema
            } else {
                json!({"type": "object"})
            };
            let tool = json!({"name": JSON_TOOL, "description": "Respond with the requested JSON.", "input_schema": schema});
            match fields.get_mut("tools") {
                Some(Value::Array(tools)) => tools.push(tool),
                _ => {
                    fields.insert("tools".into(), json!([tool]));
                }
            }
            fields.insert(
                "tool_choice".into(),
                json!({"type": "tool", "name": JSON_TOOL}),
            );
        }
        Some(other) => {
            return Err(bad(
                "response_format",
                format!("unknown response_format type '{other}'"),
            ));
        }
    }
    Ok(())
}

/// The forced tool that carries a JSON-schema answer.
const JSON_TOOL: &str = "json_response";

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic's usage object (message, message_start and the cumulative message_delta).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    /// Cache writes by lifetime; the 1-hour ones are priced higher.
    cache_creation: Option<CacheCreation>,
    /// Extended-thinking tokens, a part of `output_tokens`, when the API reports them.
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct CacheCreation {
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct OutputDetails {
    thinking_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// message_delta's counts are cumulative: later non-null fields replace earlier ones.
    fn overlay(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.output_tokens_details = later.output_tokens_details.or(self.output_tokens_details);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
    }

    fn tokens(&self) -> TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        TokenUsage {
            prompt_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(written),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_tokens: written,
            cache_write_1h_tokens: self
                .cache_creation
                .and_then(|c| c.ephemeral_1h_input_tokens)
                .unwrap_or(0)
                .min(written),
            reasoning_tokens: self
                .output_tokens_details
                .and_then(|d| d.thinking_tokens)
                .unwrap_or(0),
            estimated: false,
        }
    }
}

/// A whole Anthropic message as an OpenAI chat.completion.
fn to_chat_completion(message: &Value, model: &Model) -> (Value, TokenUsage) {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = None;
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") if block["name"] == JSON_TOOL => {
                json_answer = Some(block["input"].to_string())
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            _ => {}
        }
    }
    let usage: AnthropicUsage =
        serde_json::from_value(message["usage"].clone()).unwrap_or_default();
    let usage = usage.tokens();
    let mut finish = finish_reason(message["stop_reason"].as_str());
    let content = if let Some(answer) = json_answer {
        finish = "stop";
        Value::String(answer)
    } else if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    let mut assistant = json!({"role": "assistant", "content": content, "refusal": null});
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(tool_calls);
    }
    let completion = json!({
        "id": format!("chatcmpl-{}", message["id"].as_str().unwrap_or("anthropic")),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model.id,
        "choices": [{"index": 0, "message": assistant, "logprobs": null, "finish_reason": finish}],
        "usage": usage_json(&usage),
    });
    (completion, usage)
}

/// Translates one Anthropic stream into OpenAI chunks, event by event.
struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    usage: AnthropicUsage,
    /// Anthropic content-block index → OpenAI tool-call index (tool calls only).
    tool_index: HashMap<u64, usize>,
    tools_seen: usize,
    /// Tool blocks that have not received any argument text yet (closed with "{}").
    empty_arguments: HashMap<u64, bool>,
    json_tool_block: Option<u64>,
    stop_reason: Option<String>,
}

impl StreamTranslator {
    fn new(model: &Model) -> StreamTranslator {
        StreamTranslator {
            id: "chatcmpl-anthropic".into(),
            model: model.id.clone(),
            created: now_unix(),
            usage: AnthropicUsage::default(),
            tool_index: HashMap::new(),
            tools_seen: 0,
            empty_arguments: HashMap::new(),
            json_tool_block: None,
            stop_reason: None,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamItem {
        StreamItem::Event {
            bytes: sse_event(&json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })),
            usage: None,
            usage_only: false,
            last: false,
        }
    }

    /// The OpenAI items for one Anthropic event.
    fn on_event(&mut self, name: &str, data: &Value) -> Vec<StreamItem> {
        match name {
            "message_start" => {
                let message = &data["message"];
                if let Some(id) = message["id"].as_str() {
                    self.id = format!("chatcmpl-{id}");
                }
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(message["usage"].clone()) {
                    self.usage.overlay(u);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") if block["name"] == JSON_TOOL => {
                        self.json_tool_block = Some(index);
                        vec![]
                    }
                    Some("tool_use") => {
                        let tool = self.tools_seen;
                        self.tools_seen += 1;
                        self.tool_index.insert(index, tool);
                        self.empty_arguments.insert(index, true);
                        vec![self.chunk(json!({"tool_calls": [{"index": tool, "id": block["id"], "type": "function",
                            "function": {"name": block["name"], "arguments": ""}}]}), None)]
                    }
                    Some("text") if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                        vec![self.chunk(json!({"content": block["text"]}), None)]
                    }
                    _ => vec![],
                }
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => vec![self.chunk(json!({"content": delta["text"]}), None)],
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or("");
                        if part.is_empty() {
                            return vec![];
                        }
                        if self.json_tool_block == Some(index) {
                            return vec![self.chunk(json!({"content": part}), None)];
                        }
                        match self.tool_index.get(&index) {
                            Some(&tool) => {
                                self.empty_arguments.insert(index, false);
                                vec![self.chunk(json!({"tool_calls": [{"index": tool, "function": {"arguments": part}}]}), None)]
                            }
                            None => vec![],
                        }
                    }
                    _ => vec![],
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().unwrap_or(0);
                match (
                    self.tool_index.get(&index),
                    self.empty_arguments.remove(&index),
                ) {
                    (Some(&tool), Some(true)) => {
                        vec![self.chunk(json!({"tool_calls": [{"index": tool, "function": {"arguments": "{}"}}]}), None)]
                    }
                    _ => vec![],
                }
            }
            "message_delta" => {
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(data["usage"].clone()) {
                    self.usage.overlay(u);
                }
                self.stop_reason = data["delta"]["stop_reason"].as_str().map(str::to_owned);
                let finish = if self.json_tool_block.is_some() {
                    "stop"
                } else {
                    finish_reason(self.stop_reason.as_deref())
                };
                vec![self.chunk(json!({}), Some(finish))]
            }
            "message_stop" => stream_end(&self.id, self.created, &self.model, self.usage.tokens()),
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("api_error");
                tracing::warn!(
                    provider = "anthropic",
                    kind,
                    "upstream error event mid-stream"
                );
                vec![StreamItem::Failed(if kind == "overloaded_error" {
                    GatewayError::UpstreamOverloaded
                } else {
                    GatewayError::UpstreamFailed
                })]
            }
            _ => vec![],
        }
    }
}

fn event_stream(
    mut events: UpstreamEvents,
    model: &Model,
) -> futures_util::stream::BoxStream<'static, StreamItem> {
    let mut translator = StreamTranslator::new(model);
    async_stream::stream! {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            let Some(data) = sse::data(&event) else { continue };
            let Ok(data) = serde_json::from_slice::<Value>(&data) else { continue };
            let name = sse::event_name(&event)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .or_else(|| data["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            for item in translator.on_event(&name, &data) {
                let done = matches!(item, StreamItem::Event { last: true, .. } | StreamItem::Failed(_));
                yield item;
                if done {
                    return;
                }
            }
        }
        tracing::warn!("anthropic stream ended without message_stop");
        yield StreamItem::Failed(GatewayError::UpstreamFailed);
    }
    .boxed()
}

/// Reads usage out of a native Anthropic stream without changing a byte of it: `message_start` and the
/// cumulative `message_delta` carry the counts, `message_stop` ends the protocol.
fn passthrough_stream(
    mut events: UpstreamEvents,
) -> futures_util::stream::BoxStream<'static, StreamItem> {
    async_stream::stream! {
        let mut usage = AnthropicUsage::default();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            let name = sse::event_name(&event).map(<[u8]>::to_vec).unwrap_or_default();
                let mut reported = None;
                if (name == b"message_start" || name == b"message_delta")
                    && let Some(data) = sse::data(&event)
                    && let Ok(data) = serde_json::from_slice::<Value>(&data)
                {
                    let counts = if name == b"message_start" { &data["message"]["usage"] } else { &data["usage"] };
                    if let Ok(u) = serde_json::from_value::<AnthropicUsage>(counts.clone()) {
                        usage.overlay(u);
                        reported = Some(usage.tokens());
                    }
                }
                if name == b"error" {
                    // Rendered by the proxy in the route's shape, and recorded as the call's error.
                    let kind = sse::data(&event)
                        .and_then(|d| serde_json::from_slice::<Value>(&d).ok())
                        .and_then(|d| d["error"]["type"].as_str().map(str::to_owned));
                    yield StreamItem::Failed(if kind.as_deref() == Some("overloaded_error") {
                        GatewayError::UpstreamOverloaded
                    } else {
                        GatewayError::UpstreamFailed
                    });
                    return;
                }
                let last = name == b"message_stop";
                yield StreamItem::Event { bytes: event, usage: reported, usage_only: false, last };
                if last {
                    return;
                }
        }
        yield StreamItem::Failed(GatewayError::UpstreamFailed);
    }
    .boxed()
}

impl Anthropic {
    pub fn connect(upstream: Upstream, base_url: &str, api_key: &str) -> Arc<dyn Provider> {
        Arc::new(Anthropic {
            upstream,
            messages_url: format!("{base_url}/v1/messages"),
            api_key: api_key.to_owned(),
        })
    }

    async fn post(&self, body: Vec<u8>) -> Result<reqwest::Response, GatewayError> {
        let request = self
            .upstream
            .post(&self.messages_url, body)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", API_VERSION);
        self.upstream.send(request).await
    }
}

#[async_trait]
impl Provider for Anthropic {
    async fn chat(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let body = to_messages_request(&request.body, model, request.stream)?;
        let response = self
            .post(serde_json::to_vec(&body).expect("JSON serialises"))
            .await?;
        if request.stream {
            return Ok(Reply::Stream(event_stream(
                self.upstream.events(response),
                model,
            )));
        }
        let message: Value = self.upstream.json(response).await?;
        let (completion, usage) = to_chat_completion(&message, model);
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&completion).expect("JSON serialises")),
            usage: Some(usage),
        })
    }

    async fn embeddings(&self, model: &Model, _body: RequestBody) -> Result<Reply, GatewayError> {
        Err(GatewayError::WrongModelKind(format!(
            "{} has no embeddings API",
            model.id
        )))
    }

    /// Native Messages: the request goes upstream unchanged but for the model name, and the reply comes
    /// back byte for byte; only the usage is read out of it.
    async fn messages(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let mut body = request.body;
        body.set("model", &model.upstream_model);
        let response = self.post(body.to_bytes().to_vec()).await?;
        if request.stream {
            return Ok(Reply::Stream(passthrough_stream(
                self.upstream.events(response),
            )));
        }
        let bytes = self.upstream.body(response).await?;
        let usage = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|m| serde_json::from_value::<AnthropicUsage>(m["usage"].clone()).ok())
            .map(|u| u.tokens());
        Ok(Reply::Complete { body: bytes, usage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn model() -> Model {
        (**Catalog::bundled()
            .get("anthropic/claude-sonnet-4-5")
            .unwrap())
        .clone()
    }

    fn body(value: Value) -> RequestBody {
        RequestBody::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn requests_translate_system_history_tools_images_and_limits() {
        let request = body(json!({"model": "anthropic/claude-sonnet-4-5", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"y\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "A"},
            {"role": "tool", "tool_call_id": "call_2", "content": "B"},
            {"role": "user", "content": "Summarize."}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false, "stop": "END", "max_completion_tokens": 512,
            "temperature": 1.7}));
        let out = to_messages_request(&request, &model(), false).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5", "max_tokens": 512, "stop_sequences": ["END"], "temperature": 1.0,
                "system": [{"type": "text", "text": "Be terse."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
                        {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {"q": "y"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "A"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "B"},
                        {"type": "text", "text": "Summarize."}]}],
                "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
            })
        );
    }

    #[test]
    fn defaults_and_json_modes() {
        let plain = to_messages_request(
            &body(json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 0.5})),
            &model(),
            true,
        )
        .unwrap();
        assert_eq!(plain["max_tokens"], 8192);
        assert_eq!(plain["stream"], true);
        assert_eq!(plain["top_p"], 0.5);
        let schema = to_messages_request(&body(json!({"messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "number"}}}}}})), &model(), false).unwrap();
        assert_eq!(
            schema["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL})
        );
        let object = to_messages_request(&body(json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})), &model(), false).unwrap();
        assert!(
            object["system"][0]["text"]
                .as_str()
                .unwrap()
                .contains("JSON")
        );
        let err = to_messages_request(
            &body(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            &model(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("wizard"));
        let err = to_messages_request(&body(json!({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]})), &model(), false).unwrap_err();
        assert!(err.to_string().contains("JSON object"));
    }

    #[test]
    fn replies_and_usage_translate_with_cache_tokens_counted_once() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [
            {"type": "text", "text": "Tomorrow: rain."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 35, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 2048, "output_tokens": 120, "output_tokens_details": {"thinking_tokens": 60}}});
        let (completion, usage) = to_chat_completion(&message, &model());
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            "Tomorrow: rain."
        );
        assert_eq!(
            completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            usage,
            TokenUsage {
                prompt_tokens: 2093,
                completion_tokens: 120,
                cached_tokens: 2048,
                cache_write_tokens: 10,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 60,
                estimated: false
            }
        );
        assert_eq!(
            completion["usage"]["prompt_tokens_details"]["cached_tokens"],
            2048
        );
    }

    #[test]
    fn streams_translate_tool_calls_with_openai_indices() {
        let mut t = StreamTranslator::new(&model());
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_9", "usage": {"input_tokens": 677, "output_tokens": 1, "cache_read_input_tokens": 100}}}),
            ),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            ),
            ("content_block_stop", json!({"index": 0})),
            (
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Par"}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "is\"}"}}),
            ),
            ("content_block_stop", json!({"index": 1})),
            (
                "content_block_start",
                json!({"index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            ),
            ("content_block_stop", json!({"index": 2})),
            (
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 89}}),
            ),
            ("message_stop", json!({})),
        ];
        let mut chunks = Vec::new();
        let mut usage = None;
        for (name, data) in events {
            for item in t.on_event(name, &data) {
                match item {
                    StreamItem::Event {
                        bytes, usage: u, ..
                    } => {
                        if u.is_some() {
                            usage = u;
                        }
                        let text = String::from_utf8(bytes.to_vec()).unwrap();
                        chunks.push(text.trim_start_matches("data: ").trim().to_owned());
                    }
                    StreamItem::Failed(_) => panic!("failed"),
                }
            }
        }
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        let parsed: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| serde_json::from_str(c).unwrap())
            .collect();
        let deltas: Vec<&Value> = parsed
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .map(|c| &c["delta"])
            .collect();
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[1]["content"], "Checking");
        assert_eq!(
            deltas[2]["tool_calls"][0],
            json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        let args: String = deltas
            .iter()
            .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
            .take(3)
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        assert_eq!(
            deltas[5]["tool_calls"][0]["index"], 1,
            "the second tool call is OpenAI index 1"
        );
        assert_eq!(
            deltas[6]["tool_calls"][0]["function"]["arguments"], "{}",
            "a call without arguments is closed with {{}}"
        );
        assert_eq!(
            parsed
                .iter()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str()),
            Some("tool_calls")
        );
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 777,
                completion_tokens: 89,
                cached_tokens: 100,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 0,
                estimated: false
            }
        );
    }
}
