//! An Anthropic Messages body as a [`Conversation`]: the system prompt and each turn's blocks (text,
//! images, documents, tool uses and tool results in their places), tools, tool choice and limits.
//!
//! Its one consumer today is the OpenAI-format upstream (`providers::openai::messages`), which is why the
//! blocks it cannot carry are refused here, in its words; `anthropic/` models get the client's body as is.

use serde_json::{Value, json};

use crate::conversation::{
    Content, Conversation, Message, OutputFormat, Part, Role, Sampling, Tool, ToolCall, ToolChoice,
    ToolResultContent,
};
use crate::error::GatewayError;
use crate::wire::RequestBody;

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
            output: output_format(body)?,
            max_output_tokens,
            sampling,
        })
    }
}

/// Structured output: `output_config.format` (or the beta's earlier `output_format`), a JSON schema the
/// answer must follow.
fn output_format(body: &RequestBody) -> Result<Option<OutputFormat>, GatewayError> {
    let format = match body.get::<Value>("output_config", "an object")? {
        Some(config) if !config["format"].is_null() => config["format"].clone(),
        _ => match body.get::<Value>("output_format", "an object")? {
            Some(format) => format,
            None => return Ok(None),
        },
    };
    match format["type"].as_str() {
        Some("json_schema") => Ok(Some(OutputFormat::JsonSchema {
            schema: format["schema"]
                .is_object()
                .then(|| format["schema"].clone()),
        })),
        other => Err(bad(
            "output_config.format",
            format!("unknown output format type {other:?}"),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<Conversation, GatewayError> {
        Conversation::from_anthropic_messages(
            &RequestBody::parse(value.to_string().as_bytes()).unwrap(),
        )
    }

    #[test]
    fn turns_keep_their_blocks_in_place() {
        let c = parse(json!({"system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iV"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"},
                    {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "tu1", "name": "f", "input": {"x": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "is_error": true,
                    "content": [{"type": "text", "text": "no"}, {"type": "image", "source": {"type": "url", "url": "https://e/i.png"}}]},
                    {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JV"}}]}],
            "max_tokens": 0, "stop_sequences": ["x"],
            "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": true},
                {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}))
        .unwrap();
        assert_eq!(c.messages[0].content, Content::Text("a\nb".into()));
        assert_eq!(c.messages[0].role, Role::System);
        let Content::Parts(parts) = &c.messages[1].content else {
            panic!("parts")
        };
        assert_eq!(
            parts[1],
            Part::Image {
                url: Some("data:image/png;base64,iV".into())
            }
        );
        assert_eq!(c.messages[2].content, Content::Text("ok".into()));
        assert_eq!(c.messages[2].tool_calls[0].arguments, json!({"x": 1}));
        let Content::Parts(parts) = &c.messages[3].content else {
            panic!("parts")
        };
        let Part::ToolResult {
            call_id,
            content: ToolResultContent::Parts(result),
            is_error: true,
        } = &parts[0]
        else {
            panic!("{:?}", parts[0])
        };
        assert_eq!(call_id, "tu1");
        assert_eq!(result.len(), 2);
        assert_eq!(
            parts[1],
            Part::File {
                data: Some("data:application/pdf;base64,JV".into()),
                filename: Some("r.pdf".into())
            }
        );
        assert_eq!(c.max_output_tokens, Some(0));
        assert_eq!(c.tools[1].hosted.as_deref(), Some("web_search_20250305"));
        assert_eq!(c.tools[0].strict, Some(true));
        assert_eq!(c.tool_choice, Some(ToolChoice::Required));
        assert_eq!(c.parallel_tool_calls, Some(false));
    }

    #[test]
    fn blocks_the_format_lacks_are_refused_where_they_are() {
        let err = parse(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"}, {"type": "container_upload", "file_id": "f"}]}]}))
        .unwrap_err();
        assert!(
            matches!(&err, GatewayError::InvalidField { field, .. } if field == "messages[0].content[1]"),
            "{err}"
        );
        // Without tools a tool choice is not read at all.
        let c = parse(json!({"messages": [{"role": "user", "content": "hi"}],
            "tool_choice": {"type": "bogus"}}))
        .unwrap();
        assert_eq!(c.tool_choice, None);
    }
}
