//! Google Gemini (Developer API) upstream: OpenAI Chat Completions requests are translated to
//! `POST /v1beta/models/{model}:generateContent` (`:streamGenerateContent?alt=sse` when streamed), and
//! replies back to OpenAI's format; OpenAI embedding requests go to `:batchEmbedContents`.
//!
//! Translation parses the request's messages (it must restructure them); nothing here logs or keeps their
//! content. Usage comes from Gemini's `usageMetadata`: `promptTokenCount` already includes cached tokens,
//! and `candidatesTokenCount` excludes thinking tokens, which are billed as output and added back.
//!
//! Thought signatures: Gemini 3 returns an opaque `thoughtSignature` on function calls and refuses the
//! next request unless it comes back on the same part. OpenAI clients keep nothing but the tool call id,
//! so the signature travels inside it (`call_…__thought__<signature>`, the convention other gateways
//! use) and is put back on the `functionCall` part when the history returns.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
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

/// Separates a tool call id from the thought signature carried inside it.
const THOUGHT_SEPARATOR: &str = "__thought__";
/// The value Google documents for function calls Gemini did not produce (another model's history, or a
/// client that lost the id): it skips signature validation on models that require a signature.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";
/// `batchEmbedContents` accepts at most this many requests per call.
const EMBED_BATCH: usize = 100;

pub struct Gemini {
    upstream: Upstream,
    base_url: String,
    api_key: String,
}

/// The media type of a remote file, from its extension; `fallback` when there is none we know.
fn guess_mime_type<'a>(url: &str, fallback: &'a str) -> &'a str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => fallback,
    }
}

/// One OpenAI message content as Gemini parts (text, images, audio, files; empty text is dropped, since
/// Gemini refuses empty text parts).
fn content_parts(content: &Value, field: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(vec![]),
        Value::String(text) if text.is_empty() => Ok(vec![]),
        Value::String(text) => Ok(vec![json!({"text": text})]),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = item["text"].as_str().filter(|t| !t.is_empty()) {
                            parts.push(json!({"text": text}));
                        }
                    }
                    Some("image_url") => {
                        let url = item["image_url"]["url"]
                            .as_str()
                            .or_else(|| item["image_url"].as_str())
                            .ok_or_else(|| bad(field, "an image_url part needs image_url.url"))?;
                        parts.push(media_part(url, "image/jpeg", field)?);
                    }
                    Some("input_audio") => {
                        let audio = &item["input_audio"];
                        let (Some(data), Some(format)) =
                            (audio["data"].as_str(), audio["format"].as_str())
                        else {
                            return Err(bad(
                                field,
                                "an input_audio part needs input_audio.data and input_audio.format",
                            ));
                        };
                        parts.push(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}));
                    }
                    Some("file") => {
                        let data = item["file"]["file_data"].as_str().ok_or_else(|| {
                            bad(
                                field,
                                "file parts need file.file_data (uploaded file ids are not supported for Google models)",
                            )
                        })?;
                        parts.push(media_part(data, "application/pdf", field)?);
                    }
                    other => {
                        return Err(bad(
                            field,
                            format!(
                                "content parts of type {other:?} are not supported for Google models"
                            ),
                        ));
                    }
                }
            }
            Ok(parts)
        }
        _ => Err(bad(
            field,
            "message content must be a string or an array of parts",
        )),
    }
}

/// A data URL becomes inline data; a remote URL becomes `fileData` for Gemini to fetch (public and
/// pre-signed HTTPS URLs, Cloud Storage and Files API URIs), with its media type guessed from the
/// extension because Gemini requires one.
fn media_part(url: &str, fallback: &str, field: &str) -> Result<Value, GatewayError> {
    if let Some((mime_type, data)) = data_url(url) {
        return Ok(json!({"inlineData": {"mimeType": mime_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        return Ok(
            json!({"fileData": {"mimeType": guess_mime_type(url, fallback), "fileUri": url}}),
        );
    }
    Err(bad(
        field,
        "media URLs must be http(s), gs:// or base64 data URLs",
    ))
}

/// A tool message's content as the text Gemini gets back in `functionResponse.response.content`.
fn tool_text(content: &Value, field: &str) -> Result<String, GatewayError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(items) => Ok(items
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(bad(
            field,
            "tool message content must be a string or an array of text parts",
        )),
    }
}

/// A tool call id as minted by [`call_id`]: (the id, the thought signature inside it, if any).
fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(THOUGHT_SEPARATOR) {
        Some((base, signature)) if !signature.is_empty() => (base, Some(signature)),
        _ => (id, None),
    }
}

/// The OpenAI id for a function call: Gemini's own id when it sent one, else a minted one; with the
/// call's thought signature appended so it returns with the client's next request.
fn call_id(function_call: &Value, signature: Option<&str>, tag: &str, n: usize) -> String {
    let base = match function_call["id"].as_str().filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!("call_{tag}{n}"),
    };
    match signature.filter(|s| !s.is_empty()) {
        Some(signature) => format!("{base}{THOUGHT_SEPARATOR}{signature}"),
        None => base,
    }
}

/// A short random tag that keeps minted call ids unique across a conversation's turns.
fn call_tag() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}_", &id[..8])
}

/// Whether the model requires a thought signature on every function call of the current turn (Gemini 3
/// and later; for 1.x and 2.x models a signature is optional, so none is invented for them).
fn requires_signatures(model: &Model) -> bool {
    let name = model
        .upstream_model
        .strip_prefix("models/")
        .unwrap_or(&model.upstream_model);
    !(name.starts_with("gemini-1") || name.starts_with("gemini-2"))
}

/// Appends a turn, merging it into the previous one when the role repeats (Gemini wants alternating
/// turns; tool results become user turns next to the user's own text, and lead them).
fn push(contents: &mut Vec<Value>, role: &str, mut parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last["role"] == role
    {
        let existing = last["parts"].as_array_mut().expect("parts is an array");
        if role == "user" {
            let (responses, rest): (Vec<Value>, Vec<Value>) = parts
                .drain(..)
                .partition(|p| p.get("functionResponse").is_some());
            let insert_at = existing
                .iter()
                .take_while(|p| p.get("functionResponse").is_some())
                .count();
            existing.splice(insert_at..insert_at, responses);
            existing.extend(rest);
        } else {
            existing.extend(parts);
        }
        return;
    }
    contents.push(json!({"role": role, "parts": parts}));
}

/// Translates an OpenAI chat request into a Gemini `GenerateContentRequest`.
pub fn to_gemini_request(body: &RequestBody, model: &Model) -> Result<Value, GatewayError> {
    let messages: Vec<Value> = body
        .get("messages", "an array of messages")?
        .ok_or_else(|| bad("messages", "'messages' is required"))?;
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id → function name: Gemini's functionResponse needs the name, OpenAI's tool message
    // carries only the id. Later calls with a reused id replace earlier ones.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        match message["role"].as_str() {
            Some("system") | Some("developer") => {
                system.extend(content_parts(&message["content"], &field)?)
            }
            Some("user") => push(
                &mut contents,
                "user",
                content_parts(&message["content"], &field)?,
            ),
            Some("assistant") => {
                let mut parts = content_parts(&message["content"], &field)?;
                let first_call = parts.len();
                let mut signed = false;
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let name = call["function"]["name"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| bad(&field, "a tool call needs function.name"))?;
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let args: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments)
                            .ok()
                            .filter(Value::is_object)
                            .ok_or_else(|| {
                                bad(&field, "tool call arguments must be a JSON object")
                            })?
                    };
                    let id = call["id"].as_str().unwrap_or("");
                    let signature = split_call_id(id)
                        .1
                        .or_else(|| call["extra_content"]["google"]["thought_signature"].as_str());
                    let mut part = json!({"functionCall": {"name": name, "args": args}});
                    if let Some(signature) = signature {
                        part["thoughtSignature"] = json!(signature);
                        signed = true;
                    }
                    if !id.is_empty() {
                        call_names.insert(id.to_owned(), name.to_owned());
                    }
                    parts.push(part);
                }
                if parts.len() > first_call && !signed && requires_signatures(model) {
                    parts[first_call]["thoughtSignature"] = json!(SKIP_SIGNATURE);
                }
                push(&mut contents, "model", parts);
            }
            Some("tool") => {
                let id = message["tool_call_id"]
                    .as_str()
                    .ok_or_else(|| bad(&field, "a tool message needs tool_call_id"))?;
                let name = call_names
                    .get(id)
                    .map(String::as_str)
                    .or_else(|| message["name"].as_str())
                    .ok_or_else(|| {
                        bad(
                            &field,
                            format!(
                                "tool_call_id '{}' matches no tool call of an earlier assistant message",
                                split_call_id(id).0
                            ),
                        )
                    })?;
                let content = tool_text(&message["content"], &field)?;
                push(
                    &mut contents,
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"content": content}}}),
                    ],
                );
            }
            other => return Err(bad(&field, format!("unknown role {other:?}"))),
        }
    }
    if contents.is_empty() {
        return Err(bad("messages", "there must be at least one user message"));
    }

    let mut request = json!({"contents": contents});
    let fields = request.as_object_mut().expect("object");
    if !system.is_empty() {
        fields.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut generation = Map::new();
    if let Some(max) = body
        .get::<u64>("max_completion_tokens", "a positive integer")?
        .or(body.get::<u64>("max_tokens", "a positive integer")?)
    {
        generation.insert("maxOutputTokens".into(), json!(max.max(1)));
    }
    for (openai, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = body.get::<f64>(openai, "a number")? {
            generation.insert(gemini.into(), json!(v));
        }
    }
    if let Some(seed) = body.get::<i64>("seed", "an integer")? {
        generation.insert("seed".into(), json!(seed));
    }
    match body.get::<Value>("stop", "a string or an array of strings")? {
        Some(Value::String(s)) if !s.is_empty() => {
            generation.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            let list: Vec<&str> = list
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            if !list.is_empty() {
                generation.insert("stopSequences".into(), json!(list));
            }
        }
        _ => {}
    }
    apply_response_format(body, &mut generation)?;
    if !generation.is_empty() {
        fields.insert("generationConfig".into(), Value::Object(generation));
    }
    insert_tools(body, fields)?;
    Ok(request)
}

/// Tools as function declarations. Parameters go in `parametersJsonSchema`, which takes OpenAI's JSON
/// Schema as is (`parameters` accepts only an OpenAPI subset and refuses e.g. `additionalProperties`).
fn insert_tools(body: &RequestBody, fields: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let mut declarations = Vec::new();
    for (i, tool) in body
        .get::<Vec<Value>>("tools", "an array of tools")?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let f = &tool["function"];
        let name = f["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(&format!("tools[{i}]"), "a tool needs function.name"))?;
        let mut declaration = json!({"name": name});
        if let Some(d) = f["description"].as_str() {
            declaration["description"] = json!(d);
        }
        if f["parameters"].is_object() {
            declaration["parametersJsonSchema"] = f["parameters"].clone();
        }
        declarations.push(declaration);
    }
    if declarations.is_empty() {
        return Ok(());
    }
    fields.insert(
        "tools".into(),
        json!([{"functionDeclarations": declarations}]),
    );
    let config = match body.get::<Value>("tool_choice", "a string or an object")? {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"mode": "AUTO"})),
            "required" => Some(json!({"mode": "ANY"})),
            "none" => Some(json!({"mode": "NONE"})),
            other => return Err(bad("tool_choice", format!("unknown tool_choice '{other}'"))),
        },
        Some(obj) => match obj["function"]["name"].as_str() {
            Some(name) => Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
            None => return Err(bad("tool_choice", "tool_choice objects need function.name")),
        },
    };
    if let Some(config) = config {
        fields.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(())
}

/// JSON mode: `application/json` output, constrained by the schema when one is given
/// (`responseJsonSchema` takes JSON Schema as is).
fn apply_response_format(
    body: &RequestBody,
    generation: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let Some(format) = body.get::<Value>("response_format", "an object")? else {
        return Ok(());
    };
    match format["type"].as_str() {
        Some("text") | None => {}
        Some("json_object") => {
            generation.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            generation.insert("responseMimeType".into(), json!("application/json"));
            let schema = &format["json_schema"]["schema"];
            if schema.is_object() {
                generation.insert("responseJsonSchema".into(), schema.clone());
            }
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

/// Gemini's finish reason (any case) as OpenAI's. Function calls finish with STOP, so a reply with calls
/// is `tool_calls` unless it was cut short or filtered.
fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    let reason = reason.map(str::to_ascii_uppercase);
    match reason.as_deref() {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "LANGUAGE"
            | "OTHER"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
            | "IMAGE_OTHER"
            | "NO_IMAGE",
        ) => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` (a running total in streams: the last one seen is the call's).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
    total_token_count: Option<u64>,
}

impl UsageMetadata {
    fn tokens(&self) -> TokenUsage {
        let prompt = self.prompt_token_count.unwrap_or(0);
        let tool_prompt = self.tool_use_prompt_token_count.unwrap_or(0);
        let candidates = self.candidates_token_count.unwrap_or(0);
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        // Documented: candidates exclude thoughts and the total is the sum of all four. Some responses
        // have been seen to count thoughts inside candidates already; their total gives that away.
        let prompt_total = prompt.saturating_add(tool_prompt);
        let inclusive =
            thoughts > 0 && self.total_token_count == Some(prompt_total.saturating_add(candidates));
        TokenUsage {
            prompt_tokens: prompt_total,
            completion_tokens: if inclusive {
                candidates
            } else {
                candidates.saturating_add(thoughts)
            },
            cached_tokens: self.cached_content_token_count.unwrap_or(0),
            reasoning_tokens: thoughts,
            ..TokenUsage::default()
        }
    }
}

fn usage_of(response: &Value) -> Option<UsageMetadata> {
    serde_json::from_value(response.get("usageMetadata")?.clone()).ok()
}

fn completion_id(response: &Value) -> String {
    match response["responseId"].as_str() {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// The visible text of a part: thought summaries and empty carrier parts are not content.
fn part_text(part: &Value) -> Option<&str> {
    if part["thought"] == true {
        return None;
    }
    part["text"].as_str().filter(|t| !t.is_empty())
}

fn signature_of(part: &Value) -> Option<&str> {
    part["thoughtSignature"]
        .as_str()
        .or_else(|| part["thought_signature"].as_str())
}

fn function_call_of(part: &Value) -> Option<&Value> {
    part.get("functionCall")
        .or_else(|| part.get("function_call"))
        .filter(|c| c.is_object())
}

/// A whole Gemini response as an OpenAI chat.completion.
fn to_chat_completion(response: &Value, model: &Model) -> (Value, TokenUsage) {
    let candidate = &response["candidates"][0];
    let tag = call_tag();
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(call) = function_call_of(part) {
            let args = if call["args"].is_object() {
                call["args"].clone()
            } else {
                json!({})
            };
            tool_calls.push(json!({
                "id": call_id(call, signature_of(part), &tag, tool_calls.len()),
                "type": "function",
                "function": {"name": call["name"], "arguments": args.to_string()},
            }));
        } else if let Some(t) = part_text(part) {
            text.push_str(t);
        }
    }
    let usage = usage_of(response).unwrap_or_default().tokens();
    let blocked = candidate.is_null() && !response["promptFeedback"]["blockReason"].is_null();
    let finish = if blocked {
        "content_filter"
    } else {
        finish_reason(candidate["finishReason"].as_str(), !tool_calls.is_empty())
    };
    let content = if text.is_empty() && (blocked || !tool_calls.is_empty()) {
        Value::Null
    } else {
        Value::String(text)
    };
    let mut assistant = json!({"role": "assistant", "content": content, "refusal": null});
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(tool_calls);
    }
    let completion = json!({
        "id": completion_id(response),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model.id,
        "choices": [{"index": 0, "message": assistant, "logprobs": null, "finish_reason": finish}],
        "usage": usage_json(&usage),
    });
    (completion, usage)
}

/// A Gemini error object (HTTP body or mid-stream event): quota and capacity errors are retriable.
fn stream_error(error: &Value) -> GatewayError {
    let code = error["code"].as_u64();
    let status = error["status"].as_str().unwrap_or("");
    tracing::warn!(
        provider = "google",
        code,
        status,
        "upstream error event mid-stream"
    );
    if matches!(code, Some(429 | 503)) || matches!(status, "RESOURCE_EXHAUSTED" | "UNAVAILABLE") {
        GatewayError::UpstreamOverloaded
    } else {
        GatewayError::UpstreamFailed
    }
}

/// Translates one Gemini stream into OpenAI chunks. Every Gemini event is a whole response object whose
/// parts are new (text deltas, whole function calls) and whose usage is the running total.
struct StreamTranslator {
    id: Option<String>,
    model: String,
    created: u64,
    tag: String,
    tool_calls: usize,
    usage: UsageMetadata,
    finished: bool,
}

impl StreamTranslator {
    fn new(model: &Model) -> StreamTranslator {
        StreamTranslator {
            id: None,
            model: model.id.clone(),
            created: now_unix(),
            tag: call_tag(),
            tool_calls: 0,
            usage: UsageMetadata::default(),
            finished: false,
        }
    }

    fn event(&self, body: Value) -> StreamItem {
        StreamItem::Event {
            bytes: sse_event(&body),
            usage: None,
            usage_only: false,
            last: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamItem {
        self.event(json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    }

    /// The OpenAI items for one Gemini event.
    fn on_chunk(&mut self, data: &Value) -> Vec<StreamItem> {
        if let Some(error) = data.get("error") {
            return vec![StreamItem::Failed(stream_error(error))];
        }
        let mut items = Vec::new();
        if self.id.is_none() {
            self.id = Some(completion_id(data));
            items.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(usage) = usage_of(data) {
            self.usage = usage;
        }
        if self.finished {
            return items;
        }
        let candidate = &data["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(call) = function_call_of(part) {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let args = if call["args"].is_object() {
                    call["args"].clone()
                } else {
                    json!({})
                };
                let id = call_id(call, signature_of(part), &self.tag, index);
                items.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                        "function": {"name": call["name"], "arguments": args.to_string()}}]}),
                    None,
                ));
            } else if let Some(text) = part_text(part) {
                items.push(self.chunk(json!({"content": text}), None));
            }
        }
        let finish = if candidate.is_null() && !data["promptFeedback"]["blockReason"].is_null() {
            Some("content_filter")
        } else {
            candidate["finishReason"]
                .as_str()
                .map(|r| finish_reason(Some(r), self.tool_calls > 0))
        };
        if let Some(finish) = finish {
            self.finished = true;
            items.push(self.chunk(json!({}), Some(finish)));
        }
        items
    }

    /// The upstream's stream ended: the usage chunk and `[DONE]` if the reply was finished, else a failure.
    fn on_end(&mut self) -> Vec<StreamItem> {
        if !self.finished {
            tracing::warn!("gemini stream ended without a finishReason");
            return vec![StreamItem::Failed(GatewayError::UpstreamFailed)];
        }
        stream_end(
            self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            self.created,
            &self.model,
            self.usage.tokens(),
        )
    }
}

/// The items for one SSE event (its `data:` parsed as JSON; anything else is skipped).
fn translate_event(translator: &mut StreamTranslator, event: &[u8]) -> Vec<StreamItem> {
    let Some(data) = sse::data(event) else {
        return vec![];
    };
    match serde_json::from_slice::<Value>(&data) {
        Ok(data) => translator.on_chunk(&data),
        Err(_) => vec![],
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
                // A reply that already finished lacks nothing but its usage: end it rather than fail.
                Err(GatewayError::UpstreamTimeout) if translator.finished => break,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            for item in translate_event(&mut translator, &event) {
                let failed = matches!(item, StreamItem::Failed(_));
                yield item;
                if failed {
                    return;
                }
            }
        }
        for item in translator.on_end() {
            let done = matches!(item, StreamItem::Failed(_));
            yield item;
            if done {
                return;
            }
        }
    }
    .boxed()
}

/// OpenAI's embedding `input` as texts: a string or an array of strings (token arrays have no Gemini
/// equivalent).
fn embedding_inputs(body: &RequestBody) -> Result<Vec<String>, GatewayError> {
    let invalid = || {
        bad(
            "input",
            "'input' must be a string or an array of strings for Google models",
        )
    };
    let inputs = match body.get::<Value>("input", "a string or an array of strings")? {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(invalid()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => return Err(bad("input", "'input' is required")),
        Some(_) => return Err(invalid()),
    };
    if inputs.is_empty() {
        return Err(bad("input", "'input' must not be empty"));
    }
    Ok(inputs)
}

/// Little-endian f32 bytes, base64-encoded: OpenAI's `encoding_format: "base64"`.
fn base64_floats(values: &[Value]) -> String {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| (v.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Gemini {
    pub fn connect(upstream: Upstream, base_url: &str, api_key: &str) -> Arc<dyn Provider> {
        Arc::new(Gemini {
            upstream,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    /// `{base}/v1beta/models/{model}:{action}`, with the upstream name's own `models/` prefix tolerated.
    fn url(&self, model: &Model, action: &str) -> String {
        let name = model
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(&model.upstream_model);
        format!("{}/v1beta/models/{name}:{action}", self.base_url)
    }

    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, GatewayError> {
        let body = serde_json::to_vec(body).expect("JSON serialises");
        let request = self
            .upstream
            .post(url, body)
            .header("x-goog-api-key", &self.api_key);
        self.upstream.send(request).await
    }
}

#[async_trait]
impl Provider for Gemini {
    async fn chat(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let body = to_gemini_request(&request.body, model)?;
        let url = if request.stream {
            self.url(model, "streamGenerateContent?alt=sse")
        } else {
            self.url(model, "generateContent")
        };
        let response = self.post(&url, &body).await?;
        if request.stream {
            return Ok(Reply::Stream(event_stream(
                self.upstream.events(response),
                model,
            )));
        }
        let reply: Value = self.upstream.json(response).await?;
        let (completion, usage) = to_chat_completion(&reply, model);
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&completion).expect("JSON serialises")),
            usage: Some(usage),
        })
    }

    async fn embeddings(&self, model: &Model, body: RequestBody) -> Result<Reply, GatewayError> {
        let inputs = embedding_inputs(&body)?;
        let dimensions = body.get::<u64>("dimensions", "a positive integer")?;
        let base64 = match body
            .get::<String>("encoding_format", "\"float\" or \"base64\"")?
            .as_deref()
        {
            None | Some("float") => false,
            Some("base64") => true,
            Some(_) => {
                return Err(bad(
                    "encoding_format",
                    "'encoding_format' must be \"float\" or \"base64\"",
                ));
            }
        };
        let name = model
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(&model.upstream_model);
        let url = self.url(model, "batchEmbedContents");
        let mut data = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(EMBED_BATCH) {
            let requests: Vec<Value> = batch
                .iter()
                .map(|text| {
                    let mut request = json!({"model": format!("models/{name}"), "content": {"parts": [{"text": text}]}});
                    if let Some(d) = dimensions {
                        request["outputDimensionality"] = json!(d);
                    }
                    request
                })
                .collect();
            let response = self.post(&url, &json!({"requests": requests})).await?;
            let reply: Value = self.upstream.json(response).await?;
            let embeddings = reply["embeddings"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if embeddings.len() != batch.len() {
                tracing::warn!(
                    expected = batch.len(),
                    got = embeddings.len(),
                    "gemini answered a different number of embeddings"
                );
                return Err(GatewayError::UpstreamFailed);
            }
            for embedding in embeddings {
                let values = embedding["values"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let vector = if base64 {
                    json!(base64_floats(values))
                } else {
                    Value::Array(values.to_vec())
                };
                data.push(json!({"object": "embedding", "index": data.len(), "embedding": vector}));
            }
        }
        // Gemini reports no token usage for embeddings. This is an ESTIMATE (about four characters per
        // token), so that every call is metered and priced; it is not the provider's own count.
        let chars: usize = inputs.iter().map(|t| t.chars().count()).sum();
        let estimated = chars.div_ceil(4) as u64;
        let usage = TokenUsage {
            prompt_tokens: estimated,
            estimated: true,
            ..TokenUsage::default()
        };
        let reply = json!({
            "object": "list",
            "data": data,
            "model": model.id,
            "usage": {"prompt_tokens": estimated, "total_tokens": estimated},
        });
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&reply).expect("JSON serialises")),
            usage: Some(usage),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn model(id: &str) -> Model {
        (**Catalog::bundled().get(id).unwrap()).clone()
    }

    fn flash() -> Model {
        model("google/gemini-2.5-flash")
    }

    fn body(value: Value) -> RequestBody {
        RequestBody::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn requests_translate_system_history_tools_images_and_config() {
        let request = body(json!({"model": "google/gemini-2.5-flash", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/photo"}}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "A"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Summarize."}],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}}},
                {"type": "function", "function": {"name": "now"}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "stop": "END", "max_tokens": 100, "max_completion_tokens": 512, "temperature": 1.5, "top_p": 0.9, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}));
        let out = to_gemini_request(&request, &flash()).unwrap();
        assert_eq!(
            out,
            json!({
                "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "Use metric."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "What's in this?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}},
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}]},
                    {"role": "model", "parts": [{"text": "Let me look."},
                        {"functionCall": {"name": "lookup", "args": {"q": "x"}}},
                        {"functionCall": {"name": "now", "args": {}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "lookup", "response": {"content": "A"}}},
                        {"functionResponse": {"name": "now", "response": {"content": "noon"}}},
                        {"text": "Summarize."}]}],
                "generationConfig": {"maxOutputTokens": 512, "temperature": 1.5, "topP": 0.9, "seed": 7,
                    "stopSequences": ["END"], "responseMimeType": "application/json",
                    "responseJsonSchema": {"type": "object"}},
                "tools": [{"functionDeclarations": [
                    {"name": "lookup", "description": "Look up", "parametersJsonSchema":
                        {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}},
                    {"name": "now"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}
            })
        );
    }

    #[test]
    fn tool_choices_json_mode_and_errors() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let out = to_gemini_request(
                &body(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice})),
                &flash(),
            )
            .unwrap();
            assert_eq!(out["toolConfig"]["functionCallingConfig"]["mode"], mode);
        }
        let plain = to_gemini_request(
            &body(
                json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto",
                "response_format": {"type": "json_object"}}),
            ),
            &flash(),
        )
        .unwrap();
        assert_eq!(
            plain,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"responseMimeType": "application/json"}}),
            "no tools, no toolConfig"
        );
        let err = to_gemini_request(
            &body(
                json!({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "A"}]}),
            ),
            &flash(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("call_x"), "{err}");
        let err = to_gemini_request(
            &body(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]})),
            &flash(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("data URLs"));
        let err = to_gemini_request(
            &body(json!({"messages": [{"role": "system", "content": "only"}]})),
            &flash(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least one"));
    }

    #[test]
    fn thought_signatures_ride_in_tool_call_ids() {
        let history = |id: &str| {
            body(json!({"messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": id, "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "rain"}]}))
        };
        let out = to_gemini_request(&history("call_1__thought__CqMBsig=="), &flash()).unwrap();
        let calls = &out["contents"][1]["parts"];
        assert_eq!(calls[0]["thoughtSignature"], "CqMBsig==");
        assert!(calls[1].get("thoughtSignature").is_none());
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );

        // History Gemini did not produce: Gemini 3+ gets the documented skip value, 2.x nothing.
        let gemini3 = model("google/gemini-3.5-flash-lite");
        let out = to_gemini_request(&history("call_1"), &gemini3).unwrap();
        assert_eq!(
            out["contents"][1]["parts"][0]["thoughtSignature"],
            SKIP_SIGNATURE
        );
        assert!(
            out["contents"][1]["parts"][1]
                .get("thoughtSignature")
                .is_none()
        );
        let out = to_gemini_request(&history("call_1"), &flash()).unwrap();
        assert!(
            out["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );

        assert_eq!(
            split_call_id("call_1__thought__abc"),
            ("call_1", Some("abc"))
        );
        assert_eq!(split_call_id("call_1"), ("call_1", None));
    }

    #[test]
    fn replies_translate_with_calls_signatures_and_usage() {
        let reply = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking about it", "thought": true},
            {"text": "Tomorrow: "}, {"text": "rain."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "SIG"},
            {"functionCall": {"name": "now"}}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 80, "thoughtsTokenCount": 300,
                "cachedContentTokenCount": 1024, "toolUsePromptTokenCount": 5, "totalTokenCount": 1585},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp1"});
        let (completion, usage) = to_chat_completion(&reply, &flash());
        assert_eq!(completion["id"], "chatcmpl-resp1");
        assert_eq!(completion["model"], "google/gemini-2.5-flash");
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Tomorrow: rain.");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            calls[1]["function"],
            json!({"name": "now", "arguments": "{}"})
        );
        let first = calls[0]["id"].as_str().unwrap();
        assert!(
            first.starts_with("call_") && first.ends_with("__thought__SIG"),
            "{first}"
        );
        assert_ne!(split_call_id(first).0, calls[1]["id"].as_str().unwrap());
        assert_eq!(
            usage,
            TokenUsage {
                prompt_tokens: 1205,
                completion_tokens: 380,
                cached_tokens: 1024,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 300,
                estimated: false
            }
        );
        assert_eq!(completion["usage"]["total_tokens"], 1585);
        assert_eq!(
            completion["usage"]["completion_tokens_details"]["reasoning_tokens"],
            300
        );

        // Thoughts already inside candidates (the total gives it away) are not counted twice.
        let inclusive = UsageMetadata {
            prompt_token_count: Some(10),
            candidates_token_count: Some(50),
            thoughts_token_count: Some(20),
            total_token_count: Some(60),
            ..UsageMetadata::default()
        };
        assert_eq!(inclusive.tokens().completion_tokens, 50);

        let (cut, _) = to_chat_completion(
            &json!({"candidates": [{"content": {"parts": [{"text": "abc"}]}, "finishReason": "MAX_TOKENS"}]}),
            &flash(),
        );
        assert_eq!(cut["choices"][0]["finish_reason"], "length");
        let (blocked, usage) = to_chat_completion(
            &json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}),
            &flash(),
        );
        assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
        assert!(blocked["choices"][0]["message"]["content"].is_null());
        assert_eq!(usage.prompt_tokens, 7);
        assert_eq!(finish_reason(Some("recitation"), false), "content_filter");
        assert_eq!(
            finish_reason(Some("MALFORMED_FUNCTION_CALL"), false),
            "stop"
        );
    }

    fn run(t: &mut StreamTranslator, chunks: &[Value]) -> (Vec<Value>, Option<TokenUsage>, bool) {
        let mut out = Vec::new();
        let mut usage = None;
        let mut done = false;
        let mut items: Vec<StreamItem> = chunks.iter().flat_map(|c| t.on_chunk(c)).collect();
        items.extend(t.on_end());
        for item in items {
            match item {
                StreamItem::Event {
                    bytes,
                    usage: u,
                    usage_only,
                    last,
                } => {
                    assert_eq!(usage_only, u.is_some());
                    if u.is_some() {
                        usage = u;
                    }
                    let text = String::from_utf8(bytes.to_vec()).unwrap();
                    let data = text.trim_start_matches("data: ").trim();
                    if last {
                        assert_eq!(data, "[DONE]");
                        done = true;
                    } else {
                        out.push(serde_json::from_str(data).unwrap());
                    }
                }
                StreamItem::Failed(_) => panic!("failed"),
            }
        }
        (out, usage, done)
    }

    #[test]
    fn streams_translate_text_function_calls_and_running_usage() {
        let mut t = StreamTranslator::new(&flash());
        let chunks = [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking"}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10}, "responseId": "r9"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}, {"text": " now."}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "S1"},
                {"functionCall": {"name": "now", "args": {}}}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 20, "thoughtsTokenCount": 15,
                    "cachedContentTokenCount": 4, "totalTokenCount": 44}}),
        ];
        let (chunks, usage, done) = run(&mut t, &chunks);
        assert!(done);
        assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-r9"));
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .map(|c| &c["delta"])
            .collect();
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[1]["content"], "Checking");
        assert_eq!(deltas[2]["content"], " now.");
        let call = &deltas[3]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["type"], "function");
        assert_eq!(
            call["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert!(call["id"].as_str().unwrap().ends_with("__thought__S1"));
        assert_eq!(deltas[4]["tool_calls"][0]["index"], 1);
        assert_eq!(
            chunks[5]["choices"][0]["finish_reason"], "tool_calls",
            "function calls finish with STOP upstream"
        );
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(
            chunks[6]["usage"]["prompt_tokens_details"]["cached_tokens"],
            4
        );
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 9,
                completion_tokens: 35,
                cached_tokens: 4,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 15,
                estimated: false
            }
        );
    }

    #[test]
    fn stream_errors_and_truncation_fail() {
        let mut t = StreamTranslator::new(&flash());
        let first = t.on_chunk(&json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}));
        assert_eq!(first.len(), 2);
        let items = t.on_chunk(
            &json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        );
        assert!(matches!(
            items.as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamOverloaded)]
        ));
        let items =
            t.on_chunk(&json!({"error": {"code": 500, "message": "x", "status": "INTERNAL"}}));
        assert!(matches!(
            items.as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamFailed)]
        ));
        assert!(matches!(
            t.on_end().as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamFailed)]
        ));
    }

    #[test]
    fn embedding_inputs_and_encoding() {
        assert_eq!(
            embedding_inputs(&body(json!({"input": "a"}))).unwrap(),
            vec!["a"]
        );
        assert_eq!(
            embedding_inputs(&body(json!({"input": ["a", "b"]}))).unwrap(),
            vec!["a", "b"]
        );
        assert!(embedding_inputs(&body(json!({"input": [1, 2]}))).is_err());
        assert!(embedding_inputs(&body(json!({"input": []}))).is_err());
        let encoded = base64_floats(&[json!(1.0), json!(-2.0)]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
    }
}
