//! A [`Conversation`] parsed from an Anthropic Messages request, as an OpenAI chat request: system text, turns (tool results as tool
//! messages, images and documents as parts), tools with names shortened to OpenAI's limit, tool choice.

use super::*;
use crate::conversation::{
    Content, Conversation, Message, OutputFormat, Part, Role, ToolChoice, ToolResultContent,
};

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

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
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

/// A part as an OpenAI content part; tool results are not parts in OpenAI's format (see [`user_turn`]).
fn part(part: &Part) -> Option<Value> {
    match part {
        Part::Text(text) => Some(text_part(text.as_deref().unwrap_or(""))),
        Part::Image { url } => Some(json!({"type": "image_url", "image_url": {"url": url}})),
        Part::File { data, filename } => Some(json!({"type": "file", "file": {
            "filename": filename.as_deref().unwrap_or("document.pdf"), "file_data": data}})),
        Part::Audio { .. } | Part::ToolResult { .. } | Part::Other(_) => None,
    }
}

/// One tool result as a `role: tool` message. OpenAI tool messages carry text only, so its images are
/// returned to be sent in the user message that follows the tool messages.
fn tool_message(call_id: &str, content: &ToolResultContent, is_error: bool) -> (Value, Vec<Value>) {
    let mut images = Vec::new();
    let mut text = match content {
        ToolResultContent::Text(text) => text.clone(),
        ToolResultContent::Parts(parts) => {
            let mut texts = Vec::new();
            for p in parts {
                match p {
                    Part::Text(t) => texts.push(t.clone().unwrap_or_default()),
                    other => images.extend(part(other)),
                }
            }
            texts.join("\n")
        }
    };
    if text.is_empty() && !images.is_empty() {
        text = "(the result is the image that follows)".into();
    }
    if is_error {
        // OpenAI has no error flag on tool messages; say it in the content.
        text = format!("Error: {text}");
    }
    (
        json!({"role": "tool", "tool_call_id": call_id, "content": text}),
        images,
    )
}

/// A user turn: its tool results become `role: tool` messages first (they answer the previous
/// assistant turn's tool calls, which OpenAI requires to be followed directly by them), then the user's
/// remaining content as one user message.
fn user_turn(content: &Content, out: &mut Vec<Value>) {
    let parts = match content {
        Content::Text(text) => {
            out.push(json!({"role": "user", "content": text}));
            return;
        }
        Content::Parts(parts) => parts,
        Content::Empty | Content::Invalid => return,
    };
    let mut user = Vec::new();
    for p in parts {
        match p {
            Part::ToolResult {
                call_id,
                content,
                is_error,
            } => {
                let (message, images) = tool_message(call_id, content, *is_error);
                out.push(message);
                user.extend(images);
            }
            other => user.extend(part(other)),
        }
    }
    if let Some(content) = user_content(user) {
        out.push(json!({"role": "user", "content": content}));
    }
}

/// An assistant turn: its text as `content` (null when empty), its tool calls with shortened names.
fn assistant_turn(message: &Message, names: &mut ToolNames, out: &mut Vec<Value>) {
    let text = match &message.content {
        Content::Text(text) => text.clone(),
        _ => String::new(),
    };
    if text.is_empty() && message.tool_calls.is_empty() {
        return;
    }
    let calls: Vec<Value> = message
        .tool_calls
        .iter()
        .map(|call| {
            json!({"id": call.id, "type": "function", "function": {
                "name": names.shorten(call.name.as_deref().unwrap_or("")),
                "arguments": call.arguments.to_string()}})
        })
        .collect();
    let mut out_message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        out_message["tool_calls"] = Value::Array(calls);
    }
    out.push(out_message);
}

fn insert_tools(
    conversation: &Conversation,
    names: &mut ToolNames,
    fields: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let mut tools = Vec::new();
    for (i, tool) in conversation.tools.iter().enumerate() {
        let field = format!("tools[{i}]");
        if let Some(kind) = &tool.hosted {
            // Anthropic-hosted tools (web search, code execution, ...) run at Anthropic only.
            return Err(bad(
                &field,
                format!("the Anthropic server tool '{kind}' is not available for OpenAI models"),
            ));
        }
        let name = tool
            .name
            .as_deref()
            .ok_or_else(|| bad(&field, "a tool needs a name"))?;
        let parameters = tool
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut function = json!({"name": names.shorten(name), "parameters": parameters});
        if let Some(description) = &tool.description {
            function["description"] = json!(description);
        }
        if let Some(strict) = tool.strict {
            function["strict"] = json!(strict);
        }
        tools.push(json!({"type": "function", "function": function}));
    }
    // OpenAI refuses tool_choice and parallel_tool_calls without tools.
    if tools.is_empty() {
        return Ok(());
    }
    fields.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = &conversation.tool_choice {
        let mapped = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Required => json!("required"),
            ToolChoice::None => json!("none"),
            ToolChoice::Function(name) => {
                json!({"type": "function", "function": {"name": names.shorten(name)}})
            }
        };
        fields.insert("tool_choice".into(), mapped);
    }
    if conversation.parallel_tool_calls == Some(false) {
        fields.insert("parallel_tool_calls".into(), json!(false));
    }
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
    from_conversation(&Conversation::from_anthropic_messages(body)?, model, stream)
}

/// The OpenAI Chat Completions request for `conversation`.
pub(super) fn from_conversation(
    conversation: &Conversation,
    model: &Model,
    stream: bool,
) -> Result<ChatTranslation, GatewayError> {
    let mut names = ToolNames::default();
    let mut messages = Vec::new();
    for (i, message) in conversation.messages.iter().enumerate() {
        match &message.role {
            Role::System | Role::Developer => {
                if let Content::Text(text) = &message.content
                    && !text.is_empty()
                {
                    messages.push(json!({"role": "system", "content": text}));
                }
            }
            Role::User => user_turn(&message.content, &mut messages),
            Role::Assistant => assistant_turn(message, &mut names, &mut messages),
            Role::Tool | Role::Unknown(_) => {
                return Err(bad(
                    &format!("messages[{i}]"),
                    "tool results belong in a user turn's tool_result blocks",
                ));
            }
        }
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(bad("messages", "there must be at least one message"));
    }

    let mut request = json!({"model": model.upstream_model, "messages": messages});
    let fields = request.as_object_mut().expect("object");
    // `max_tokens` rather than the newer `max_completion_tokens`: every OpenAI-compatible server knows it.
    if let Some(max_tokens) = conversation.max_output_tokens {
        // Anthropic accepts 0 (cache pre-warming); OpenAI requires at least 1. Claude Code asks for
        // 32,000 whatever the model: no more than the model can produce goes upstream (and no more
        // was reserved).
        let max_tokens = max_tokens.min(model.output_limit()).max(1);
        fields.insert("max_tokens".into(), json!(max_tokens));
    }
    let sampling = &conversation.sampling;
    if let Some(t) = sampling.temperature {
        fields.insert("temperature".into(), json!(t));
    }
    if let Some(p) = sampling.top_p {
        fields.insert("top_p".into(), json!(p));
    }
    let stop: Vec<&String> = sampling.stop.iter().filter(|s| !s.is_empty()).collect();
    if !stop.is_empty() {
        fields.insert("stop".into(), json!(stop));
    }
    insert_tools(conversation, &mut names, fields)?;
    // Anthropic's structured output (`output_config.format`) is OpenAI's `response_format`.
    if let Some(OutputFormat::JsonSchema {
        schema: Some(schema),
    }) = &conversation.output
    {
        fields.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
        );
    }
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
