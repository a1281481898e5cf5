//! An Anthropic Messages body as a [`Conversation`]: the system prompt and each turn's blocks (text,
//! images, documents, tool uses and tool results in their places), tools, tool choice and limits.
//!
//! Its one consumer today is the OpenAI-format upstream (`providers::openai::messages`), which is why the
//! blocks it cannot carry are refused here, in its words; `anthropic/` models get the client's body as is.

use serde_json::{Value, json};

use super::{
    Content, Conversation, Message, Part, Role, Sampling, Tool, ToolCall, ToolChoice,
    ToolResultContent,
};
use crate::error::GatewayError;
use crate::providers::RequestBody;

fn bad(field: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::field(field, message)
}

impl Conversation {
    pub fn from_anthropic_messages(body: &RequestBody) -> Result<Conversation, GatewayError> {
        let mut messages = Vec::new();
        if let Some(system) = body.get::<Value>("system", "a string or an array of text blocks")? {
            messages.push(text_message(Role::System, joined_text(&system, "system")?));
        }
        let input: Vec<Value> = body
            .get("messages", "an array of messages")?
            .ok_or_else(|| bad("messages", "'messages' is required"))?;
        for (i, message) in input.iter().enumerate() {
            let field = format!("messages[{i}]");
            let content = &message["content"];
            messages.push(match message["role"].as_str() {
                Some("user") => text_or_parts(Role::User, user_content(content, &field)?),
                Some("assistant") => assistant_turn(content, &field)?,
                // A mid-conversation system message (newer Anthropic API versions accept one).
                Some("system") => text_message(Role::System, joined_text(content, &field)?),
                other => return Err(bad(&field, format!("unknown role {other:?}"))),
            });
        }
        let max_output_tokens = body.get::<u64>("max_tokens", "an integer")?;
        let sampling = Sampling {
            temperature: body.get("temperature", "a number")?,
            top_p: body.get("top_p", "a number")?,
            stop: body
                .get::<Vec<String>>("stop_sequences", "an array of strings")?
                .unwrap_or_default(),
            ..Sampling::default()
        };
        let tools: Vec<Tool> = body
            .get::<Vec<Value>>("tools", "an array of tools")?
            .unwrap_or_default()
            .iter()
            .map(|t| Tool {
                name: t["name"].as_str().map(str::to_owned),
                description: t["description"].as_str().map(str::to_owned),
                parameters: t["input_schema"]
                    .is_object()
                    .then(|| t["input_schema"].clone()),
                strict: t["strict"].as_bool(),
                hosted: t["type"]
                    .as_str()
                    .filter(|k| *k != "custom")
                    .map(str::to_owned),
            })
            .collect();
        let choice = body.get::<Value>("tool_choice", "an object")?;
        // A tool choice means nothing without tools (and OpenAI refuses one): it is not even read then.
        let (tool_choice, parallel_tool_calls) = match choice {
            Some(choice) if !tools.is_empty() => {
                let mapped = match choice["type"].as_str() {
                    Some("auto") => ToolChoice::Auto,
                    Some("any") => ToolChoice::Required,
                    Some("none") => ToolChoice::None,
                    Some("tool") => ToolChoice::Function(
                        choice["name"]
                            .as_str()
                            .ok_or_else(|| {
                                bad("tool_choice", "tool_choice of type tool needs a name")
                            })?
                            .to_owned(),
                    ),
                    other => {
                        return Err(bad(
                            "tool_choice",
                            format!("unknown tool_choice type {other:?}"),
                        ));
                    }
                };
                let serial =
                    choice["disable_parallel_tool_use"] == true && mapped != ToolChoice::None;
                (Some(mapped), serial.then_some(false))
            }
            _ => (None, None),
        };
        Ok(Conversation {
            messages,
            tools,
            tool_choice,
            parallel_tool_calls,
            output: None,
            max_output_tokens,
            sampling,
        })
    }
}

fn text_message(role: Role, text: String) -> Message {
    text_or_parts(role, Content::Text(text))
}

fn text_or_parts(role: Role, content: Content) -> Message {
    Message {
        role,
        content,
        tool_calls: vec![],
        tool_call_id: None,
        name: None,
    }
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

/// An Anthropic image source as a URL (base64 data becomes a data: URL).
fn image_url(source: &Value, field: &str) -> Result<String, GatewayError> {
    match source["type"].as_str() {
        Some("base64") => {
            let media_type = source["media_type"]
                .as_str()
                .ok_or_else(|| bad(field, "a base64 image source needs media_type"))?;
            let data = source["data"]
                .as_str()
                .ok_or_else(|| bad(field, "a base64 image source needs data"))?;
            Ok(format!("data:{media_type};base64,{data}"))
        }
        Some("url") => Ok(source["url"]
            .as_str()
            .ok_or_else(|| bad(field, "a url image source needs url"))?
            .to_owned()),
        other => Err(bad(
            field,
            format!("image sources of type {other:?} are not supported for OpenAI models"),
        )),
    }
}

fn image(source: &Value, field: &str) -> Result<Part, GatewayError> {
    Ok(Part::Image {
        url: Some(image_url(source, field)?),
    })
}

/// A document block: a base64 PDF is a file, a plain-text document its text.
fn document(block: &Value, field: &str) -> Result<Part, GatewayError> {
    let source = &block["source"];
    match (source["type"].as_str(), source["media_type"].as_str()) {
        (Some("base64"), Some("application/pdf")) => {
            let data = source["data"]
                .as_str()
                .ok_or_else(|| bad(field, "a base64 document source needs data"))?;
            Ok(Part::File {
                data: Some(format!("data:application/pdf;base64,{data}")),
                filename: block["title"].as_str().map(str::to_owned),
            })
        }
        (Some("text"), _) => Ok(Part::Text(Some(
            source["data"].as_str().unwrap_or("").to_owned(),
        ))),
        (kind, media_type) => Err(bad(
            field,
            format!(
                "document sources of type {kind:?} ({media_type:?}) are not supported for OpenAI models"
            ),
        )),
    }
}

fn tool_result(block: &Value, field: &str) -> Result<Part, GatewayError> {
    let call_id = block["tool_use_id"]
        .as_str()
        .ok_or_else(|| bad(field, "a tool_result block needs tool_use_id"))?
        .to_owned();
    let content = match &block["content"] {
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                let field = format!("{field}.content[{k}]");
                parts.push(match b["type"].as_str() {
                    Some("text") => Part::Text(Some(b["text"].as_str().unwrap_or("").to_owned())),
                    Some("image") => image(&b["source"], &field)?,
                    other => {
                        return Err(bad(
                            &field,
                            format!(
                                "tool_result content of type {other:?} is not supported for OpenAI models"
                            ),
                        ));
                    }
                });
            }
            ToolResultContent::Parts(parts)
        }
        other => ToolResultContent::Text(joined_text(other, field)?),
    };
    Ok(Part::ToolResult {
        call_id,
        content,
        is_error: block["is_error"] == true,
    })
}

/// A user turn's content: a string, or its blocks in order.
fn user_content(content: &Value, field: &str) -> Result<Content, GatewayError> {
    let blocks = match content {
        Value::String(text) => return Ok(Content::Text(text.clone())),
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
        parts.push(match block["type"].as_str() {
            Some("text") => Part::Text(Some(block["text"].as_str().unwrap_or("").to_owned())),
            Some("image") => image(&block["source"], &field)?,
            Some("document") => document(block, &field)?,
            Some("tool_result") => tool_result(block, &field)?,
            other => {
                return Err(bad(
                    &field,
                    format!("content blocks of type {other:?} are not supported for OpenAI models"),
                ));
            }
        });
    }
    Ok(Content::Parts(parts))
}

/// An assistant turn: its text blocks joined, its `tool_use` blocks as tool calls. Thinking blocks and
/// server-tool blocks mean something to Anthropic only and are left out.
fn assistant_turn(content: &Value, field: &str) -> Result<Message, GatewayError> {
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
                            block["input"].clone()
                        } else {
                            json!({})
                        };
                        calls.push(ToolCall {
                            id: Some(id.to_owned()),
                            name: Some(name.to_owned()),
                            arguments,
                            thought_signature: None,
                        });
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
    Ok(Message {
        tool_calls: calls,
        ..text_message(Role::Assistant, texts.join("\n"))
    })
}
