//! An OpenAI Chat Completions body as a [`Conversation`]. Type errors name the field; what only an
//! upstream can judge (a part it cannot carry, a missing tool name) is left to its mapping.

use serde_json::{Value, json};

use crate::conversation::{
    Content, Conversation, Message, OutputFormat, Part, Role, Sampling, Tool, ToolCall, ToolChoice,
};
use crate::error::GatewayError;
use crate::wire::RequestBody;

impl Conversation {
    pub fn from_openai_chat(body: &RequestBody) -> Result<Conversation, GatewayError> {
        let messages: Vec<Value> = body
            .get("messages", "an array of messages")?
            .ok_or_else(|| GatewayError::field("messages", "'messages' is required"))?;
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| message(m, &format!("messages[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let max_output_tokens = body
            .get::<u64>("max_completion_tokens", "a positive integer")?
            .or(body.get::<u64>("max_tokens", "a positive integer")?);
        let sampling = Sampling {
            temperature: body.get("temperature", "a number")?,
            top_p: body.get("top_p", "a number")?,
            presence_penalty: body.get("presence_penalty", "a number")?,
            frequency_penalty: body.get("frequency_penalty", "a number")?,
            seed: body.get("seed", "an integer")?,
            stop: match body.get::<Value>("stop", "a string or an array of strings")? {
                Some(Value::String(s)) => vec![s],
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => vec![],
            },
        };
        let tools = body
            .get::<Vec<Value>>("tools", "an array of tools")?
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let f = &t["function"];
                Tool {
                    name: f["name"].as_str().map(str::to_owned),
                    description: f["description"].as_str().map(str::to_owned),
                    parameters: f["parameters"].is_object().then(|| f["parameters"].clone()),
                    strict: f["strict"].as_bool(),
                    hosted: None,
                }
            })
            .collect();
        Ok(Conversation {
            messages,
            tools,
            tool_choice: tool_choice(body)?,
            parallel_tool_calls: body.get("parallel_tool_calls", "a boolean")?,
            output: output_format(body)?,
            max_output_tokens,
            sampling,
        })
    }
}

fn message(m: &Value, field: &str) -> Result<Message, GatewayError> {
    let role = match m["role"].as_str() {
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        other => Role::Unknown(other.map(str::to_owned)),
    };
    let content = match &m["content"] {
        Value::Null => Content::Empty,
        Value::String(text) => Content::Text(text.clone()),
        Value::Array(parts) => Content::Parts(parts.iter().map(part).collect()),
        _ => Content::Invalid,
    };
    let tool_calls = m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| tool_call(call, field))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id: m["tool_call_id"].as_str().map(str::to_owned),
        name: m["name"].as_str().map(str::to_owned),
    })
}

fn part(p: &Value) -> Part {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match p["type"].as_str() {
        Some("text") => Part::Text(text(&p["text"])),
        Some("image_url") => Part::Image {
            url: text(&p["image_url"]["url"]).or_else(|| text(&p["image_url"])),
        },
        Some("input_audio") => Part::Audio {
            data: text(&p["input_audio"]["data"]),
            format: text(&p["input_audio"]["format"]),
        },
        Some("file") => Part::File {
            data: text(&p["file"]["file_data"]),
            filename: text(&p["file"]["filename"]),
        },
        other => Part::Other(other.map(str::to_owned)),
    }
}

/// A tool call; its arguments (a JSON string in OpenAI's format) must be a JSON object, or nothing.
fn tool_call(call: &Value, field: &str) -> Result<ToolCall, GatewayError> {
    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
    let arguments = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                GatewayError::field(field, "tool call arguments must be a JSON object")
            })?
    };
    Ok(ToolCall {
        id: call["id"].as_str().map(str::to_owned),
        name: call["function"]["name"].as_str().map(str::to_owned),
        arguments,
        thought_signature: call["extra_content"]["google"]["thought_signature"]
            .as_str()
            .map(str::to_owned),
    })
}

fn tool_choice(body: &RequestBody) -> Result<Option<ToolChoice>, GatewayError> {
    Ok(
        match body.get::<Value>("tool_choice", "a string or an object")? {
            None => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                "none" => ToolChoice::None,
                other => {
                    return Err(GatewayError::field(
                        "tool_choice",
                        format!("unknown tool_choice '{other}'"),
                    ));
                }
            }),
            Some(obj) => match obj["function"]["name"].as_str() {
                Some(name) => Some(ToolChoice::Function(name.to_owned())),
                None => {
                    return Err(GatewayError::field(
                        "tool_choice",
                        "tool_choice objects need function.name",
                    ));
                }
            },
        },
    )
}

fn output_format(body: &RequestBody) -> Result<Option<OutputFormat>, GatewayError> {
    let Some(format) = body.get::<Value>("response_format", "an object")? else {
        return Ok(None);
    };
    Ok(Some(match format["type"].as_str() {
        Some("text") | None => OutputFormat::Text,
        Some("json_object") => OutputFormat::JsonObject,
        Some("json_schema") => {
            let schema = &format["json_schema"]["schema"];
            OutputFormat::JsonSchema {
                schema: schema.is_object().then(|| schema.clone()),
            }
        }
        Some(other) => {
            return Err(GatewayError::field(
                "response_format",
                format!("unknown response_format type '{other}'"),
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<Conversation, GatewayError> {
        Conversation::from_openai_chat(&RequestBody::parse(value.to_string().as_bytes()).unwrap())
    }

    #[test]
    fn every_field_a_translation_reads_is_parsed_once() {
        let c = parse(json!({"model": "x", "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                {"type": "video"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"},
                "extra_content": {"google": {"thought_signature": "sig"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "critic", "content": 7}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": false, "response_format": {"type": "json_object"},
            "max_tokens": 50, "max_completion_tokens": 60, "temperature": 0.5, "seed": 7,
            "stop": ["", "END"]}))
        .unwrap();
        assert_eq!(c.messages.len(), 5);
        assert_eq!(c.messages[0].role, Role::Developer);
        let Content::Parts(parts) = &c.messages[1].content else {
            panic!("parts")
        };
        assert_eq!(parts[0], Part::Text(Some("hi".into())));
        assert_eq!(
            parts[2],
            Part::Audio {
                data: Some("UklG".into()),
                format: Some("wav".into())
            }
        );
        assert_eq!(parts[4], Part::Other(Some("video".into())));
        let call = &c.messages[2].tool_calls[0];
        assert_eq!(call.arguments, json!({"a": 1}));
        assert_eq!(call.thought_signature.as_deref(), Some("sig"));
        assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(c.messages[4].role, Role::Unknown(Some("critic".into())));
        assert_eq!(c.messages[4].content, Content::Invalid);
        assert_eq!(c.tool_choice, Some(ToolChoice::Function("f".into())));
        assert_eq!(c.parallel_tool_calls, Some(false));
        assert_eq!(c.output, Some(OutputFormat::JsonObject));
        assert_eq!(c.max_output_tokens, Some(60));
        assert_eq!(c.sampling.stop, vec!["".to_owned(), "END".to_owned()]);
        assert_eq!(c.sampling.seed, Some(7));
    }

    #[test]
    fn malformed_fields_are_named() {
        for (body, field) in [
            (json!({"messages": "hi"}), "messages"),
            (json!({}), "messages"),
            (json!({"messages": [], "max_tokens": -1}), "max_tokens"),
            (
                json!({"messages": [], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"messages": [], "tool_choice": {"type": "function"}}),
                "tool_choice",
            ),
            (
                json!({"messages": [], "response_format": {"type": "yaml"}}),
                "response_format",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "[1]"}}]}]}),
                "messages[0]",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
            assert!(
                matches!(&err, GatewayError::InvalidField { field: f, .. } if f == field),
                "{body}: {err}"
            );
        }
    }
}
