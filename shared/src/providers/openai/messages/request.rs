//! An Anthropic Messages request as an OpenAI chat request: system text, turns (tool results as tool
//! messages, images and documents as parts), tools with names shortened to OpenAI's limit, tool choice.

use super::*;

/// OpenAI limits function names to 64 characters, Anthropic to 128 (MCP tool names often exceed 64).
pub(super) const MAX_TOOL_NAME: usize = 64;

/// Tool names shortened for the upstream, mapped back to the client's names in the reply.
#[derive(Debug, Default, Clone)]
pub struct ToolNames(HashMap<String, String>);

impl ToolNames {
    /// The name as the upstream sees it: unchanged when short enough, otherwise the first 55 characters,
    /// `_`, and 8 hex digits of the name's SHA-256. Deterministic, so a tool's name in `tools` and in
    /// the history's `tool_use` blocks shortens alike.
    pub(super) fn shorten(&mut self, name: &str) -> String {
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
pub(super) fn joined_text(value: &Value, field: &str) -> Result<String, GatewayError> {
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

pub(super) fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// An Anthropic image source as an OpenAI `image_url` part (base64 data becomes a data: URL).
pub(super) fn image_part(source: &Value, field: &str) -> Result<Value, GatewayError> {
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
pub(super) fn document_part(block: &Value, field: &str) -> Result<Value, GatewayError> {
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
pub(super) fn user_content(parts: Vec<Value>) -> Option<Value> {
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
pub(super) fn tool_result(block: &Value, field: &str) -> Result<(Value, Vec<Value>), GatewayError> {
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
pub(super) fn user_turn(
    content: &Value,
    field: &str,
    out: &mut Vec<Value>,
) -> Result<(), GatewayError> {
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
pub(super) fn assistant_turn(
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

pub(super) fn insert_tools(
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
