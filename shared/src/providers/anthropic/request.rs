//! A [`Conversation`] as an Anthropic Messages request: system prompts hoisted, turns merged so roles
//! alternate (tool results leading), tools, tool choice, JSON output and limits mapped.

use super::*;
use crate::conversation::{Content, Conversation, OutputFormat, Part, Role, ToolChoice};

/// Used when the client sets no `max_tokens`: Anthropic requires one, and a moderate default keeps a
/// non-streamed call inside upstream timeouts. Capped by the model's own maximum.
pub(super) const DEFAULT_MAX_TOKENS: u64 = 8192;

/// A message's content as Anthropic blocks (text and images; empty text is dropped).
pub(super) fn content_blocks(content: &Content, field: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Empty => Ok(vec![]),
        Content::Text(text) if text.is_empty() => Ok(vec![]),
        Content::Text(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Content::Parts(parts) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part {
                    Part::Text(text) => {
                        if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
                            blocks.push(json!({"type": "text", "text": text}));
                        }
                    }
                    Part::Image { url } => {
                        let url = url
                            .as_deref()
                            .ok_or_else(|| bad(field, "an image_url part needs image_url.url"))?;
                        blocks.push(image_block(url, field)?);
                    }
                    other => {
                        return Err(bad(
                            field,
                            format!(
                                "content parts of type {:?} are not supported for Anthropic models",
                                part_type(other)
                            ),
                        ));
                    }
                }
            }
            Ok(blocks)
        }
        Content::Invalid => Err(bad(
            field,
            "message content must be a string or an array of parts",
        )),
    }
}

/// An image URL as a block: a base64 PDF is a document, other data URLs are images, and http(s) URLs
/// are fetched by Anthropic.
fn image_block(url: &str, field: &str) -> Result<Value, GatewayError> {
    Ok(match data_url(url) {
        Some(("application/pdf", data)) => json!({"type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data}}),
        Some((media_type, data)) => json!({"type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}}),
        None if url.starts_with("https://") || url.starts_with("http://") => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        None => {
            return Err(bad(field, "image URLs must be http(s) or base64 data URLs"));
        }
    })
}

/// The OpenAI `type` a part was sent with, for errors naming it.
fn part_type(part: &Part) -> Option<&str> {
    match part {
        Part::Text(_) => Some("text"),
        Part::Image { .. } => Some("image_url"),
        Part::Audio { .. } => Some("input_audio"),
        Part::File { .. } => Some("file"),
        Part::ToolResult { .. } => Some("tool_result"),
        Part::Other(kind) => kind.as_deref(),
    }
}

/// Appends a turn, merged into the previous one when the role repeats (see `push_turn`).
pub(super) fn push(messages: &mut Vec<Value>, role: &str, items: Vec<Value>) {
    push_turn(messages, role, "content", items, |b| {
        b["type"] == "tool_result"
    });
}

/// Translates an OpenAI chat request into an Anthropic Messages request.
pub fn to_messages_request(
    body: &RequestBody,
    model: &Model,
    stream: bool,
) -> Result<Value, GatewayError> {
    from_conversation(&Conversation::from_openai_chat(body)?, model, stream)
}

/// The Anthropic Messages request for `conversation`.
pub(super) fn from_conversation(
    conversation: &Conversation,
    model: &Model,
    stream: bool,
) -> Result<Value, GatewayError> {
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, message) in conversation.messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        match &message.role {
            Role::System | Role::Developer => {
                system.extend(content_blocks(&message.content, &field)?)
            }
            Role::User => push(&mut out, "user", content_blocks(&message.content, &field)?),
            Role::Assistant => {
                let mut blocks = content_blocks(&message.content, &field)?;
                for call in &message.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}));
                }
                push(&mut out, "assistant", blocks);
            }
            Role::Tool => {
                let content = match &message.content {
                    Content::Text(text) => Value::String(text.clone()),
                    other => Value::Array(content_blocks(other, &field)?),
                };
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| bad(&field, "a tool message needs tool_call_id"))?;
                push(
                    &mut out,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            Role::Unknown(other) => return Err(bad(&field, format!("unknown role {other:?}"))),
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
    // A client's limit above the model's (written for another model) is clamped to the model's.
    let max_tokens = conversation
        .max_output_tokens
        .map(|max| max.min(limit))
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
    let sampling = &conversation.sampling;
    if let Some(t) = sampling.temperature {
        fields.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    } else if let Some(p) = sampling.top_p {
        // Recent Claude models refuse temperature and top_p together; temperature wins when both are set.
        fields.insert("top_p".into(), json!(p));
    }
    let stop: Vec<&str> = sampling
        .stop
        .iter()
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .collect();
    if !stop.is_empty() {
        fields.insert("stop_sequences".into(), json!(stop));
    }
    insert_tools(conversation, fields);
    apply_output_format(conversation, fields);
    Ok(request)
}

pub(super) fn insert_tools(conversation: &Conversation, fields: &mut Map<String, Value>) {
    let tools: Vec<Value> = conversation
        .tools
        .iter()
        .map(|t| {
            let mut tool = json!({
                "name": t.name,
                "input_schema": t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = &t.description {
                tool["description"] = json!(d);
            }
            tool
        })
        .collect();
    if !tools.is_empty() {
        fields.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = conversation.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
    });
    if conversation.parallel_tool_calls == Some(false) && fields.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        fields.insert("tool_choice".into(), choice);
    }
}

/// JSON mode: a schema becomes a forced tool whose input is the answer (turned back into content in the
/// reply); plain `json_object` becomes a system instruction, since Anthropic has no schema-less mode.
pub(super) fn apply_output_format(conversation: &Conversation, fields: &mut Map<String, Value>) {
    match &conversation.output {
        None | Some(OutputFormat::Text) => {}
        Some(OutputFormat::JsonObject) => {
            let instruction = json!({"type": "text", "text": "Respond with a single valid JSON object and nothing else."});
            match fields.get_mut("system") {
                Some(Value::Array(system)) => system.push(instruction),
                _ => {
                    fields.insert("system".into(), json!([instruction]));
                }
            }
        }
        Some(OutputFormat::JsonSchema { schema }) => {
            let schema = schema.clone().unwrap_or_else(|| json!({"type": "object"}));
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
    }
}
