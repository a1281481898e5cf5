//! `/v1/messages` served by an OpenAI-format upstream: an Anthropic Messages request is translated into a
//! Chat Completions request, and the reply (whole or streamed) back into an Anthropic `message` or
//! Anthropic's named SSE events, so Anthropic-speaking clients (the `anthropic` SDKs, Claude Code) can
//! use `openai/` models.
//!
//! Translation parses the request's messages (it must restructure them); nothing here logs or keeps their
//! content. Usage comes from OpenAI's own accounting: its `prompt_tokens` include cached tokens while
//! Anthropic's `input_tokens` exclude them, so `input_tokens = prompt_tokens - cached_tokens` and the
//! cached share is reported as `cache_read_input_tokens`.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::openai::OpenAiUsage;
use super::sse::{self, UpstreamEvents};
use super::{RequestBody, StreamItem, bad};
use crate::catalog::Model;
use crate::error::GatewayError;
use crate::usage::TokenUsage;

/// OpenAI limits function names to 64 characters, Anthropic to 128 (MCP tool names often exceed 64).
const MAX_TOOL_NAME: usize = 64;

/// Tool names shortened for the upstream, mapped back to the client's names in the reply.
#[derive(Debug, Default, Clone)]
pub struct ToolNames(HashMap<String, String>);

impl ToolNames {
    /// The name as the upstream sees it: unchanged when short enough, otherwise the first 55 characters,
    /// `_`, and 8 hex digits of the name's SHA-256. Deterministic, so a tool's name in `tools` and in
    /// the history's `tool_use` blocks shortens alike.
    fn shorten(&mut self, name: &str) -> String {
        if name.chars().count() <= MAX_TOOL_NAME {
            return name.to_owned();
        }
        let digest = Sha256::digest(name.as_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let short = format!("{}_{hex}", name.chars().take(55).collect::<String>());
        self.0.insert(short.clone(), name.to_owned());
        short
    }

    /// The client's name for a name the upstream used.
    pub fn original<'a>(&'a self, name: &'a str) -> &'a str {
        self.0.get(name).map(String::as_str).unwrap_or(name)
    }
}

/// A translated request: the OpenAI body, and what the reply's translation needs to undo.
#[derive(Debug)]
pub struct ChatTranslation {
    pub body: Value,
    pub tool_names: ToolNames,
}

/// Text blocks (`system`, `tool_result` content) joined into one string.
fn joined_text(value: &Value, field: &str) -> Result<String, GatewayError> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for block in blocks {
                match block["type"].as_str() {
                    Some("text") => texts.push(block["text"].as_str().unwrap_or("")),
                    other => {
                        return Err(bad(
                            field,
                            format!(
                                "{field} blocks of type {other:?} are not supported here; use text"
                            ),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(bad(
            field,
            format!("'{field}' must be a string or an array of text blocks"),
        )),
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// An Anthropic image source as an OpenAI `image_url` part (base64 data becomes a data: URL).
fn image_part(source: &Value, field: &str) -> Result<Value, GatewayError> {
    let url = match source["type"].as_str() {
        Some("base64") => {
            let media_type = source["media_type"]
                .as_str()
                .ok_or_else(|| bad(field, "a base64 image source needs media_type"))?;
            let data = source["data"]
                .as_str()
                .ok_or_else(|| bad(field, "a base64 image source needs data"))?;
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => source["url"]
            .as_str()
            .ok_or_else(|| bad(field, "a url image source needs url"))?
            .to_owned(),
        other => {
            return Err(bad(
                field,
                format!("image sources of type {other:?} are not supported for OpenAI models"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A document block: a base64 PDF becomes an OpenAI `file` part, a plain-text document a text part.
fn document_part(block: &Value, field: &str) -> Result<Value, GatewayError> {
    let source = &block["source"];
    match (source["type"].as_str(), source["media_type"].as_str()) {
        (Some("base64"), Some("application/pdf")) => {
            let data = source["data"]
                .as_str()
                .ok_or_else(|| bad(field, "a base64 document source needs data"))?;
            let filename = block["title"].as_str().unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {"filename": filename,
                "file_data": format!("data:application/pdf;base64,{data}")}}))
        }
        (Some("text"), _) => Ok(text_part(source["data"].as_str().unwrap_or(""))),
        (kind, media_type) => Err(bad(
            field,
            format!(
                "document sources of type {kind:?} ({media_type:?}) are not supported for OpenAI models"
            ),
        )),
    }
}

/// A user message's parts as OpenAI content: text only becomes one string (every OpenAI-compatible
/// server accepts that), anything else an array of parts. None when there is nothing left.
fn user_content(parts: Vec<Value>) -> Option<Value> {
    if parts.is_empty() {
        return None;
    }
    if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return Some(Value::String(texts.join("\n")));
    }
    Some(Value::Array(parts))
}

/// One `tool_result` block as a `role: tool` message. OpenAI tool messages carry text only, so images in
/// the result are returned to be sent in the user message that follows the tool messages.
fn tool_result(block: &Value, field: &str) -> Result<(Value, Vec<Value>), GatewayError> {
    let id = block["tool_use_id"]
        .as_str()
        .ok_or_else(|| bad(field, "a tool_result block needs tool_use_id"))?;
    let mut images = Vec::new();
    let mut text = match &block["content"] {
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                let field = format!("{field}.content[{k}]");
                match b["type"].as_str() {
                    Some("text") => texts.push(b["text"].as_str().unwrap_or("").to_owned()),
                    Some("image") => images.push(image_part(&b["source"], &field)?),
                    other => {
                        return Err(bad(
                            &field,
                            format!(
                                "tool_result content of type {other:?} is not supported for OpenAI models"
                            ),
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        other => joined_text(other, field)?,
    };
    if text.is_empty() && !images.is_empty() {
        text = "(the result is the image that follows)".into();
    }
    if block["is_error"] == true {
        // OpenAI has no error flag on tool messages; say it in the content.
        text = format!("Error: {text}");
    }
    Ok((
        json!({"role": "tool", "tool_call_id": id, "content": text}),
        images,
    ))
}

/// A user turn: its tool results become `role: tool` messages first (they answer the previous
/// assistant turn's tool calls, which OpenAI requires to be followed directly by them), then the user's
/// remaining content as one user message.
fn user_turn(content: &Value, field: &str, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let blocks = match content {
        Value::String(text) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(bad(
                field,
                "message content must be a string or an array of content blocks",
            ));
        }
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let field = format!("{field}.content[{j}]");
        match block["type"].as_str() {
            Some("text") => parts.push(text_part(block["text"].as_str().unwrap_or(""))),
            Some("image") => parts.push(image_part(&block["source"], &field)?),
            Some("document") => parts.push(document_part(block, &field)?),
            Some("tool_result") => {
                let (message, images) = tool_result(block, &field)?;
                out.push(message);
                parts.extend(images);
            }
            other => {
                return Err(bad(
                    &field,
                    format!("content blocks of type {other:?} are not supported for OpenAI models"),
                ));
            }
        }
    }
    if let Some(content) = user_content(parts) {
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// An assistant turn: text blocks joined into `content`, `tool_use` blocks as `tool_calls`. Thinking
/// blocks (OpenAI has no way to send them back) and Anthropic server-tool blocks (they only mean
/// something to Anthropic) are dropped.
fn assistant_turn(
    content: &Value,
    field: &str,
    names: &mut ToolNames,
    out: &mut Vec<Value>,
) -> Result<(), GatewayError> {
    let mut texts: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    match content {
        Value::String(text) => texts.push(text),
        Value::Array(blocks) => {
            for (j, block) in blocks.iter().enumerate() {
                match block["type"].as_str() {
                    Some("text") => texts.push(block["text"].as_str().unwrap_or("")),
                    Some("tool_use") => {
                        let field = format!("{field}.content[{j}]");
                        let id = block["id"]
                            .as_str()
                            .ok_or_else(|| bad(&field, "a tool_use block needs an id"))?;
                        let name = block["name"]
                            .as_str()
                            .ok_or_else(|| bad(&field, "a tool_use block needs a name"))?;
                        let arguments = if block["input"].is_object() {
                            block["input"].to_string()
                        } else {
                            "{}".to_owned()
                        };
                        calls.push(json!({"id": id, "type": "function",
                            "function": {"name": names.shorten(name), "arguments": arguments}}));
                    }
                    _ => {}
                }
            }
        }
        _ => {
            return Err(bad(
                field,
                "message content must be a string or an array of content blocks",
            ));
        }
    }
    let text = texts.join("\n");
    if text.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    out.push(message);
    Ok(())
}

fn insert_tools(
    body: &RequestBody,
    names: &mut ToolNames,
    fields: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let mut tools = Vec::new();
    for (i, tool) in body
        .get::<Vec<Value>>("tools", "an array of tools")?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = format!("tools[{i}]");
        if let Some(kind) = tool["type"].as_str().filter(|k| *k != "custom") {
            // Anthropic-hosted tools (web search, code execution, ...) run at Anthropic only.
            return Err(bad(
                &field,
                format!("the Anthropic server tool '{kind}' is not available for OpenAI models"),
            ));
        }
        let name = tool["name"]
            .as_str()
            .ok_or_else(|| bad(&field, "a tool needs a name"))?;
        let parameters = if tool["input_schema"].is_object() {
            tool["input_schema"].clone()
        } else {
            json!({"type": "object", "properties": {}})
        };
        let mut function = json!({"name": names.shorten(name), "parameters": parameters});
        if let Some(description) = tool["description"].as_str() {
            function["description"] = json!(description);
        }
        if let Some(strict) = tool["strict"].as_bool() {
            function["strict"] = json!(strict);
        }
        tools.push(json!({"type": "function", "function": function}));
    }
    let choice = body.get::<Value>("tool_choice", "an object")?;
    // OpenAI refuses tool_choice and parallel_tool_calls without tools.
    if tools.is_empty() {
        return Ok(());
    }
    fields.insert("tools".into(), Value::Array(tools));
    let Some(choice) = choice else {
        return Ok(());
    };
    let mapped = match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice["name"]
                .as_str()
                .ok_or_else(|| bad("tool_choice", "tool_choice of type tool needs a name"))?;
            json!({"type": "function", "function": {"name": names.shorten(name)}})
        }
        other => {
            return Err(bad(
                "tool_choice",
                format!("unknown tool_choice type {other:?}"),
            ));
        }
    };
    if choice["disable_parallel_tool_use"] == true && mapped != "none" {
        fields.insert("parallel_tool_calls".into(), json!(false));
    }
    fields.insert("tool_choice".into(), mapped);
    Ok(())
}

/// Translates an Anthropic Messages request into an OpenAI Chat Completions request for `model`.
///
/// Not translated, on purpose: `metadata` (an opaque end-user id for Anthropic's abuse tracking; the
/// gateway does not pass client identifiers to other providers), `thinking` (OpenAI-compatible servers
/// disagree on reasoning controls and non-reasoning models refuse `reasoning_effort`, so sending one
/// would break plain models) and `top_k` (Chat Completions has no such parameter).
pub fn to_chat_request(
    body: &RequestBody,
    model: &Model,
    stream: bool,
) -> Result<ChatTranslation, GatewayError> {
    let mut names = ToolNames::default();
    let mut messages = Vec::new();
    if let Some(system) = body.get::<Value>("system", "a string or an array of text blocks")? {
        let text = joined_text(&system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let input: Vec<Value> = body
        .get("messages", "an array of messages")?
        .ok_or_else(|| bad("messages", "'messages' is required"))?;
    for (i, message) in input.iter().enumerate() {
        let field = format!("messages[{i}]");
        match message["role"].as_str() {
            Some("user") => user_turn(&message["content"], &field, &mut messages)?,
            Some("assistant") => {
                assistant_turn(&message["content"], &field, &mut names, &mut messages)?
            }
            // A mid-conversation system message (newer Anthropic API versions accept one).
            Some("system") => {
                let text = joined_text(&message["content"], &field)?;
                if !text.is_empty() {
                    messages.push(json!({"role": "system", "content": text}));
                }
            }
            other => return Err(bad(&field, format!("unknown role {other:?}"))),
        }
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(bad("messages", "there must be at least one message"));
    }

    let mut request = json!({"model": model.upstream_model, "messages": messages});
    let fields = request.as_object_mut().expect("object");
    // `max_tokens` rather than the newer `max_completion_tokens`: every OpenAI-compatible server knows it.
    if let Some(max_tokens) = body.get::<u64>("max_tokens", "an integer")? {
        // Anthropic accepts 0 (cache pre-warming); OpenAI requires at least 1.
        fields.insert("max_tokens".into(), json!(max_tokens.max(1)));
    }
    if let Some(t) = body.get::<f64>("temperature", "a number")? {
        fields.insert("temperature".into(), json!(t));
    }
    if let Some(p) = body.get::<f64>("top_p", "a number")? {
        fields.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = body.get::<Vec<String>>("stop_sequences", "an array of strings")? {
        let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
        if !stop.is_empty() {
            fields.insert("stop".into(), json!(stop));
        }
    }
    insert_tools(body, &mut names, fields)?;
    if stream {
        fields.insert("stream".into(), json!(true));
        // Required: the usage in the closing message_delta comes from the final usage chunk.
        fields.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(ChatTranslation {
        body: request,
        tool_names: names,
    })
}

/// OpenAI's finish_reason as Anthropic's stop_reason. OpenAI does not say which stop sequence matched,
/// so a stop sequence reads as `end_turn` (and `stop_sequence` stays null).
fn stop_reason(finish_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        // Some OpenAI-compatible servers report `stop` for a turn that ends in tool calls; Anthropic
        // clients run tools on `tool_use`.
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// The gateway's usage as Anthropic's usage object (input tokens exclude cache reads and writes).
fn anthropic_usage(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u
            .prompt_tokens
            .saturating_sub(u.cached_tokens.saturating_add(u.cache_write_tokens)),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    })
}

fn parse_usage(value: &Value) -> Option<TokenUsage> {
    if !value.is_object() {
        return None;
    }
    serde_json::from_value::<OpenAiUsage>(value.clone())
        .ok()
        .map(TokenUsage::from)
}

/// Tool-call arguments as a `tool_use` input: a JSON object, `{}` when absent or unparsable.
fn tool_input(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// Message content that may be a string or an array of text parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .concat(),
        _ => String::new(),
    }
}

/// A whole OpenAI chat.completion as an Anthropic `message`, with the usage to bill (None when the
/// upstream reported none).
pub fn to_message(
    completion: &Value,
    model: &Model,
    names: &ToolNames,
) -> Result<(Value, Option<TokenUsage>), GatewayError> {
    let Some(choice) = completion["choices"].get(0) else {
        tracing::warn!("openai reply without choices");
        return Err(GatewayError::UpstreamFailed);
    };
    let message = &choice["message"];
    let mut content = Vec::new();
    let mut text = content_text(&message["content"]);
    if text.is_empty() {
        text = content_text(&message["refusal"]);
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = message["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, call) in calls.iter().enumerate() {
        let name = call["function"]["name"].as_str().unwrap_or("");
        let id = call["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("call_{i}"));
        content.push(
            json!({"type": "tool_use", "id": id, "name": names.original(name),
            "input": tool_input(call["function"]["arguments"].as_str().unwrap_or(""))}),
        );
    }
    let usage = parse_usage(&completion["usage"]);
    let id = completion["id"].as_str().unwrap_or("openai");
    let message = json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model.id,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str(), !calls.is_empty()),
        "stop_sequence": null,
        "usage": anthropic_usage(&usage.unwrap_or_default()),
    });
    Ok((message, usage))
}

fn event(name: &str, mut data: Value) -> Bytes {
    data["type"] = json!(name);
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn item(bytes: Bytes) -> StreamItem {
    StreamItem::Event {
        bytes,
        usage: None,
        usage_only: false,
        last: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text(usize),
    Tool(usize),
}

/// Translates one OpenAI chunk stream into Anthropic events, chunk by chunk: `message_start` with the
/// first upstream event, one content block per run of text and per tool call (Anthropic block indices
/// from 0, OpenAI tool-call index → block index), and at `[DONE]` the closing `message_delta` (stop
/// reason and the final usage chunk's counts) and `message_stop`.
pub struct StreamTranslator {
    model: String,
    names: ToolNames,
    started: bool,
    next_block: usize,
    open: Option<Block>,
    tool_blocks: HashMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
}

impl StreamTranslator {
    pub fn new(model: &Model, names: ToolNames) -> StreamTranslator {
        StreamTranslator {
            model: model.id.clone(),
            names,
            started: false,
            next_block: 0,
            open: None,
            tool_blocks: HashMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn start(&mut self, id: Option<&str>, out: &mut Vec<StreamItem>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(item(event(
            "message_start",
            json!({"message": {
                "id": format!("msg_{}", id.unwrap_or("openai")), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                // The counts arrive with the last chunk; message_delta carries them.
                "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        )));
    }

    fn close(&mut self, out: &mut Vec<StreamItem>) {
        if let Some(Block::Text(index) | Block::Tool(index)) = self.open.take() {
            out.push(item(event("content_block_stop", json!({"index": index}))));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<StreamItem>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(item(event(
            "content_block_start",
            json!({"index": index, "content_block": block}),
        )));
        index
    }

    fn on_text(&mut self, text: &str, out: &mut Vec<StreamItem>) {
        let index = match self.open {
            Some(Block::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(Block::Text(index));
                index
            }
        };
        out.push(item(event(
            "content_block_delta",
            json!({"index": index, "delta": {"type": "text_delta", "text": text}}),
        )));
    }

    fn on_tool_call(&mut self, position: usize, call: &Value, out: &mut Vec<StreamItem>) {
        let key = call["index"].as_u64().unwrap_or(position as u64);
        let index = match self.tool_blocks.get(&key) {
            Some(&index) => index,
            None => {
                let id = call["id"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("call_{key}"));
                let name = self
                    .names
                    .original(call["function"]["name"].as_str().unwrap_or(""))
                    .to_owned();
                let index = self.open_block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.open = Some(Block::Tool(index));
                self.tool_blocks.insert(key, index);
                index
            }
        };
        if let Some(arguments) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            out.push(item(event(
                "content_block_delta",
                json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            )));
        }
    }

    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<StreamItem>) {
        self.start(chunk["id"].as_str(), out);
        if let Some(usage) = parse_usage(&chunk["usage"]) {
            self.usage = Some(usage);
        }
        // The final usage chunk has no choices.
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        for text in [&delta["content"], &delta["refusal"]] {
            if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
                self.on_text(text, out);
            }
        }
        for (position, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.on_tool_call(position, call, out);
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.close(out);
            self.finish_reason = Some(finish.to_owned());
        }
    }

    fn on_done(&mut self, out: &mut Vec<StreamItem>) {
        self.start(None, out);
        self.close(out);
        if self.next_block == 0 {
            // Clients expect at least one block.
            self.open_block(json!({"type": "text", "text": ""}), out);
            out.push(item(event("content_block_stop", json!({"index": 0}))));
        }
        let reason = stop_reason(self.finish_reason.as_deref(), !self.tool_blocks.is_empty());
        let usage = match &self.usage {
            Some(u) => anthropic_usage(u),
            None => json!({"output_tokens": 0}),
        };
        out.push(StreamItem::Event {
            bytes: event(
                "message_delta",
                json!({"delta": {"stop_reason": reason, "stop_sequence": null}, "usage": usage}),
            ),
            usage: self.usage,
            usage_only: false,
            last: false,
        });
        out.push(StreamItem::Event {
            bytes: event("message_stop", json!({})),
            usage: None,
            usage_only: false,
            last: true,
        });
    }

    /// The Anthropic items for one upstream SSE event (framed, with its trailing blank line).
    pub fn on_event(&mut self, event: &[u8]) -> Vec<StreamItem> {
        let mut out = Vec::new();
        let Some(data) = sse::data(event) else {
            return out;
        };
        if data == b"[DONE]" {
            self.on_done(&mut out);
            return out;
        }
        let chunk = match serde_json::from_slice::<Value>(&data) {
            Ok(chunk) => chunk,
            Err(_) => {
                tracing::warn!(provider = "openai", "unparsable stream chunk");
                out.push(StreamItem::Failed(GatewayError::UpstreamFailed));
                return out;
            }
        };
        if !chunk["error"].is_null() {
            tracing::warn!(
                provider = "openai",
                kind = chunk["error"]["type"].as_str().unwrap_or("unknown"),
                "upstream error event mid-stream"
            );
            out.push(StreamItem::Failed(GatewayError::UpstreamFailed));
            return out;
        }
        self.on_chunk(&chunk, &mut out);
        out
    }
}

/// An OpenAI stream body as Anthropic events, applying the idle timeout. A broken body, an error
/// event, or an end without `[DONE]` (the connection dropped) ends it with `StreamItem::Failed`.
pub fn message_stream<S, E>(
    body: S,
    mut translator: StreamTranslator,
    idle: Duration,
) -> BoxStream<'static, StreamItem>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let mut events = UpstreamEvents::from_stream(body, idle, "openai");
    async_stream::stream! {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            for item in translator.on_event(&event) {
                let end = matches!(item, StreamItem::Event { last: true, .. } | StreamItem::Failed(_));
                yield item;
                if end {
                    return;
                }
            }
        }
        tracing::warn!("upstream stream ended without [DONE]");
        yield StreamItem::Failed(GatewayError::UpstreamFailed);
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn model() -> Model {
        (**Catalog::bundled().get("openai/gpt-4o-mini").unwrap()).clone()
    }

    fn body(value: Value) -> RequestBody {
        RequestBody::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn requests_translate_system_history_tools_and_parameters() {
        let request = body(json!({"model": "openai/gpt-4o-mini", "max_tokens": 256,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Use tools."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "And tomorrow?"}]}],
            "tools": [{"name": "get_weather", "description": "Get weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "temperature": 0.3, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END", ""],
            "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 2048}}));
        let out = to_chat_request(&request, &model(), false).unwrap().body;
        assert_eq!(
            out,
            json!({
                "model": "gpt-4o-mini", "max_tokens": 256, "temperature": 0.3, "top_p": 0.9, "stop": ["END"],
                "messages": [
                    {"role": "system", "content": "You are terse.\nUse tools."},
                    {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C\nsunny"},
                    {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
                    {"role": "user", "content": "And tomorrow?"}],
                "tools": [
                    {"type": "function", "function": {"name": "get_weather", "description": "Get weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                    {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": false,
            })
        );
    }

    #[test]
    fn streams_ask_for_usage_and_tool_choices_map() {
        let ask = |choice: Value| {
            body(
                json!({"max_tokens": 10, "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": choice}),
            )
        };
        let out = to_chat_request(&ask(json!({"type": "auto"})), &model(), true)
            .unwrap()
            .body;
        assert_eq!(out["stream"], true);
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
        assert_eq!(out["tool_choice"], "auto");
        assert_eq!(
            out["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        );
        for (choice, expected) in [
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
        ] {
            let out = to_chat_request(&ask(choice), &model(), false).unwrap().body;
            assert_eq!(out["tool_choice"], expected);
            assert!(out.get("stream").is_none() && out.get("stream_options").is_none());
        }
        // Without tools OpenAI refuses tool_choice: it is left out.
        let out = to_chat_request(
            &body(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "any"}})),
            &model(),
            false,
        )
        .unwrap()
        .body;
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
    }

    #[test]
    fn long_tool_names_are_shortened_and_restored() {
        let long = format!("mcp__server__{}", "x".repeat(70));
        let request = body(json!({"max_tokens": 5,
            "messages": [{"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": long, "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}],
            "tools": [{"name": long, "input_schema": {"type": "object"}}]}));
        let translated = to_chat_request(&request, &model(), false).unwrap();
        let short = translated.body["tools"][0]["function"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(short.len(), 64);
        assert_eq!(
            translated.body["messages"][1]["tool_calls"][0]["function"]["name"],
            short
        );
        let completion = json!({"id": "c", "choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": short, "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]});
        let (message, _) = to_message(&completion, &model(), &translated.tool_names).unwrap();
        assert_eq!(message["content"][0]["name"], long);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (request, needle) in [
            (
                json!({"max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}),
                "wizard",
            ),
            (json!({"max_tokens": 5, "messages": []}), "at least one"),
            (
                json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "image sources",
            ),
            (
                json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "web_search_20250305",
            ),
        ] {
            let err = to_chat_request(&body(request), &model(), false).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn replies_translate_with_tool_use_and_usage() {
        let completion = json!({"id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me check.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "not json"}}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165,
                "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 5}}});
        let (message, usage) = to_message(&completion, &model(), &ToolNames::default()).unwrap();
        assert_eq!(
            message,
            json!({"id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "openai/gpt-4o-mini",
                "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0, "output_tokens": 45}})
        );
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 120,
                completion_tokens: 45,
                cached_tokens: 100,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 5,
                estimated: false
            }
        );
        for (finish, reason) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("content_filter", "refusal"),
        ] {
            let completion = json!({"id": "x", "choices": [{"message": {"content": ""}, "finish_reason": finish}]});
            let (message, usage) =
                to_message(&completion, &model(), &ToolNames::default()).unwrap();
            assert_eq!(message["stop_reason"], reason);
            assert_eq!(message["content"], json!([]));
            assert!(usage.is_none());
        }
        assert!(to_message(&json!({"choices": []}), &model(), &ToolNames::default()).is_err());
    }

    fn openai_events() -> Vec<Value> {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
        };
        vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Checking"}), Value::Null),
            chunk(json!({"content": " now."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Par"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62, "prompt_tokens_details": {"cached_tokens": 8}}}),
        ]
    }

    fn sse_bytes(events: &[Value], done: bool) -> Vec<u8> {
        let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        if done {
            text.push_str("data: [DONE]\n\n");
        }
        text.into_bytes()
    }

    /// (event name, data) per item; panics on a failure.
    fn decode(items: &[StreamItem]) -> Vec<(String, Value)> {
        items
            .iter()
            .map(|item| match item {
                StreamItem::Event { bytes, .. } => {
                    let text = std::str::from_utf8(bytes).unwrap();
                    let (head, data) = text.split_once('\n').unwrap();
                    assert!(text.ends_with("\n\n"), "{text:?}");
                    let name = head.strip_prefix("event: ").unwrap().to_owned();
                    let data: Value =
                        serde_json::from_str(data.strip_prefix("data: ").unwrap().trim()).unwrap();
                    assert_eq!(data["type"], name.as_str());
                    (name, data)
                }
                StreamItem::Failed(e) => panic!("failed: {e}"),
            })
            .collect()
    }

    #[test]
    fn streams_translate_text_then_a_tool_call_with_final_usage() {
        let mut t = StreamTranslator::new(&model(), ToolNames::default());
        let mut framer = sse::SseFramer::default();
        let mut items = Vec::new();
        for event in framer.push(Bytes::from(sse_bytes(&openai_events(), true))) {
            items.extend(t.on_event(&event));
        }
        let events = decode(&items);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_chatcmpl-9");
        assert_eq!(events[0].1["message"]["model"], "openai/gpt-4o-mini");
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 0);
        assert_eq!(
            events[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            events[3].1["delta"],
            json!({"type": "text_delta", "text": " now."})
        );
        assert_eq!(events[4].1["index"], 0);
        assert_eq!(
            events[5].1,
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}})
        );
        let arguments: String = events[6..8]
            .iter()
            .map(|(_, d)| {
                assert_eq!(d["index"], 1);
                assert_eq!(d["delta"]["type"], "input_json_delta");
                d["delta"]["partial_json"].as_str().unwrap()
            })
            .collect();
        assert_eq!(arguments, "{\"city\": \"Paris\"}");
        assert_eq!(events[8].1["index"], 1);
        assert_eq!(
            events[9].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 42, "output_tokens": 12, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0}})
        );
        let metered: Vec<(usize, TokenUsage)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                StreamItem::Event { usage: Some(u), .. } => Some((i, *u)),
                _ => None,
            })
            .collect();
        assert_eq!(
            metered,
            [(
                9,
                TokenUsage {
                    prompt_tokens: 50,
                    completion_tokens: 12,
                    cached_tokens: 8,
                    cache_write_tokens: 0,
                    cache_write_1h_tokens: 0,
                    reasoning_tokens: 0,
                    estimated: false
                }
            )]
        );
        let lasts: Vec<bool> = items
            .iter()
            .map(|i| matches!(i, StreamItem::Event { last: true, .. }))
            .collect();
        assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
        assert!(lasts[10]);
    }

    #[test]
    fn an_empty_stream_still_has_a_block() {
        let mut t = StreamTranslator::new(&model(), ToolNames::default());
        let mut items = t.on_event(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        items.extend(t.on_event(b"data: [DONE]\n\n"));
        let events = decode(&items);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[3].1["delta"]["stop_reason"], "end_turn");
    }

    async fn run(parts: Vec<Result<Bytes, String>>) -> Vec<StreamItem> {
        let body = futures_util::stream::iter(parts);
        let translator = StreamTranslator::new(&model(), ToolNames::default());
        message_stream(body, translator, Duration::from_secs(5))
            .collect()
            .await
    }

    #[tokio::test]
    async fn the_stream_survives_any_chunking_and_fails_on_errors_or_a_missing_done() {
        let whole = sse_bytes(&openai_events(), true);
        let expected = decode(&run(vec![Ok(Bytes::from(whole.clone()))]).await);
        for size in [1, 7, 64] {
            let parts = whole
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            assert_eq!(decode(&run(parts).await), expected, "chunk size {size}");
        }

        let cut = sse_bytes(&openai_events(), false);
        let items = run(vec![Ok(Bytes::from(cut.clone()))]).await;
        assert!(matches!(
            items.last(),
            Some(StreamItem::Failed(GatewayError::UpstreamFailed))
        ));
        assert!(
            !items
                .iter()
                .any(|i| matches!(i, StreamItem::Event { last: true, .. }))
        );

        let items = run(vec![
            Ok(Bytes::from(cut)),
            Err("connection reset".to_owned()),
        ])
        .await;
        assert!(matches!(
            items.last(),
            Some(StreamItem::Failed(GatewayError::UpstreamFailed))
        ));

        let items = run(vec![Ok(Bytes::from_static(
            b"data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
        ))])
        .await;
        assert_eq!(items.len(), 1);
        assert!(matches!(
            items[0],
            StreamItem::Failed(GatewayError::UpstreamFailed)
        ));
    }

    #[tokio::test]
    async fn an_idle_upstream_times_out() {
        let body = futures_util::stream::pending::<Result<Bytes, String>>();
        let translator = StreamTranslator::new(&model(), ToolNames::default());
        let items: Vec<StreamItem> = message_stream(body, translator, Duration::from_millis(20))
            .collect()
            .await;
        assert!(matches!(
            items.as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamTimeout)]
        ));
    }
}
