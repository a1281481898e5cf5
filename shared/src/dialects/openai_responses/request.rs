//! A Responses request as a Chat Completions request, for upstreams that only speak chat (Anthropic,
//! Gemini, OpenAI-compatible servers without `/v1/responses`): every provider takes chat, so the
//! Responses API reaches all of them through this one mapping.
//!
//! What has no chat equivalent is refused with the item or field named, never dropped silently, except
//! what carries no meaning outside the provider that made it: `reasoning` items (their encrypted
//! content is only readable by OpenAI) and the request's storage and caching hints.

use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::wire::RequestBody;

/// Fields of a Responses request that mean nothing to a chat upstream: storage (QNP forces none),
/// caching and tracing hints, and output extras the gateway does not produce. Dropped.
const IGNORED: [&str; 10] = [
    "store",
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "metadata",
    "safety_identifier",
    "truncation",
    "client_metadata",
    "max_tool_calls",
    "service_tier",
];

fn bad(field: impl Into<String>, message: impl Into<String>) -> GatewayError {
    GatewayError::field(field, message)
}

/// The chat body for `body` (a validated Responses request). `stream` is the Responses `stream` flag.
pub(crate) fn to_chat(body: &RequestBody, stream: bool) -> Result<RequestBody, GatewayError> {
    let mut chat = Map::new();
    let mut messages = Vec::new();
    if let Some(instructions) = body.get::<Value>("instructions", "a string")? {
        match instructions {
            Value::String(text) if !text.is_empty() => {
                messages.push(json!({"role": "system", "content": text}));
            }
            Value::String(_) | Value::Null => {}
            _ => return Err(bad("instructions", "'instructions' must be a string")),
        }
    }
    match body.get::<Value>("input", "a string or an array of input items")? {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), &mut messages)?;
            }
        }
        _ => {
            return Err(bad(
                "input",
                "'input' must be a string or an array of input items",
            ));
        }
    }
    if messages.is_empty() {
        return Err(bad("input", "'input' has nothing to answer"));
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = body.get::<Vec<Value>>("tools", "an array of tools")? {
        let mut out = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            function_tools(tool, &format!("tools[{i}]"), &mut out)?;
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    if let Some(choice) = body.get::<Value>("tool_choice", "a string or an object")? {
        chat.insert("tool_choice".into(), tool_choice(&choice)?);
    }
    if let Some(text) = body.get::<Value>("text", "an object")?
        && let Some(format) = response_format(&text["format"])?
    {
        chat.insert("response_format".into(), format);
    }
    if let Some(max) = body.get::<u64>("max_output_tokens", "a positive integer")? {
        chat.insert("max_completion_tokens".into(), json!(max));
    }
    for field in ["temperature", "top_p", "parallel_tool_calls", "user"] {
        if let Some(raw) = body.raw(field).filter(|r| *r != "null") {
            let value: Value = serde_json::from_str(raw).expect("a field of a parsed body is JSON");
            chat.insert(field.into(), value);
        }
    }
    if let Some(reasoning) = body.get::<Value>("reasoning", "an object")?
        && let Some(effort) = reasoning["effort"].as_str()
    {
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    if stream {
        chat.insert("stream".into(), json!(true));
    }
    for (field, _) in body.0.iter() {
        let known = matches!(
            field.as_str(),
            "model"
                | "input"
                | "instructions"
                | "tools"
                | "tool_choice"
                | "text"
                | "max_output_tokens"
                | "temperature"
                | "top_p"
                | "parallel_tool_calls"
                | "user"
                | "reasoning"
                | "stream"
                | "stream_options"
                | "top_logprobs"
        ) || IGNORED.contains(&field.as_str());
        if !known {
            let shown: String = field.chars().take(60).collect();
            return Err(bad(
                field.clone(),
                format!(
                    "'{shown}' is not supported for this model (the Responses API is translated to its \
                     provider's format); omit it or use an openai/ model"
                ),
            ));
        }
    }
    let value = Value::Object(chat);
    RequestBody::parse(&serde_json::to_vec(&value).expect("JSON serialises"))
}

/// One input item as chat messages. A message without `type` is a message (the SDKs' shorthand).
fn input_item(item: &Value, at: &str, messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let kind = item["type"].as_str().unwrap_or("message");
    match kind {
        "message" => message(item, at, messages),
        "function_call" => {
            let call_id = item["call_id"]
                .as_str()
                .ok_or_else(|| bad(format!("{at}.call_id"), "a function_call needs a 'call_id'"))?;
            let name = item["name"]
                .as_str()
                .ok_or_else(|| bad(format!("{at}.name"), "a function_call needs a 'name'"))?;
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": item["arguments"].as_str().unwrap_or("{}")}});
            // Consecutive calls (and the text before them) are one assistant turn in chat.
            if let Some(last) = messages.last_mut()
                && last["role"] == "assistant"
            {
                match last["tool_calls"].as_array_mut() {
                    Some(calls) => calls.push(call),
                    None => last["tool_calls"] = json!([call]),
                }
                return Ok(());
            }
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
            Ok(())
        }
        "function_call_output" => {
            let call_id = item["call_id"].as_str().ok_or_else(|| {
                bad(
                    format!("{at}.call_id"),
                    "a function_call_output needs a 'call_id'",
                )
            })?;
            let output = match &item["output"] {
                Value::String(text) => text.clone(),
                Value::Array(parts) => {
                    let mut texts = Vec::new();
                    for (j, part) in parts.iter().enumerate() {
                        match part["type"].as_str() {
                            Some("input_text") | Some("output_text") => {
                                texts.push(part["text"].as_str().unwrap_or(""));
                            }
                            other => {
                                return Err(bad(
                                    format!("{at}.output[{j}]"),
                                    format!(
                                        "a function_call_output part of type {} cannot be sent to this \
                                         model's provider; send the tool's output as text",
                                        shown_type(other)
                                    ),
                                ));
                            }
                        }
                    }
                    texts.concat()
                }
                _ => {
                    return Err(bad(
                        format!("{at}.output"),
                        "a function_call_output needs an 'output' string or array",
                    ));
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            Ok(())
        }
        // Reasoning is the producing model's own; another provider cannot read it.
        "reasoning" => Ok(()),
        "item_reference" => Err(bad(
            at,
            "QNP keeps no conversation state, so an item_reference cannot be resolved; send the item itself",
        )),
        other => Err(bad(
            format!("{at}.type"),
            format!(
                "input items of type '{}' are only supported for openai/ models",
                other.chars().take(60).collect::<String>()
            ),
        )),
    }
}

fn shown_type(kind: Option<&str>) -> String {
    kind.map_or("(none)".to_owned(), |t| {
        format!("'{}'", t.chars().take(60).collect::<String>())
    })
}

fn message(item: &Value, at: &str, messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let role = match item["role"].as_str() {
        Some(role @ ("user" | "assistant" | "system" | "developer")) => role,
        other => {
            return Err(bad(
                format!("{at}.role"),
                format!(
                    "a message's role must be user, assistant, system or developer, not {}",
                    shown_type(other)
                ),
            ));
        }
    };
    let content = match &item["content"] {
        Value::String(text) => Value::String(text.clone()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                out.push(content_part(part, &format!("{at}.content[{j}]"))?);
            }
            if role != "user" || out.iter().all(|p| p["type"] == "text") {
                // Only user turns carry non-text parts in chat; the others are their text.
                let mut text = String::new();
                for (j, part) in out.iter().enumerate() {
                    match part["text"].as_str() {
                        Some(t) => text.push_str(t),
                        None => {
                            return Err(bad(
                                format!("{at}.content[{j}]"),
                                format!("a {role} message can only carry text"),
                            ));
                        }
                    }
                }
                Value::String(text)
            } else {
                Value::Array(out)
            }
        }
        _ => {
            return Err(bad(
                format!("{at}.content"),
                "a message's content must be a string or an array of parts",
            ));
        }
    };
    messages.push(json!({"role": role, "content": content}));
    Ok(())
}

fn content_part(part: &Value, at: &str) -> Result<Value, GatewayError> {
    match part["type"].as_str() {
        Some("input_text") | Some("output_text") => {
            Ok(json!({"type": "text", "text": part["text"].as_str().unwrap_or("")}))
        }
        Some("refusal") => {
            Ok(json!({"type": "text", "text": part["refusal"].as_str().unwrap_or("")}))
        }
        Some("input_image") => match part["image_url"].as_str() {
            Some(url) => {
                let mut image = json!({"url": url});
                if let Some(detail) = part["detail"].as_str() {
                    image["detail"] = json!(detail);
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            None => Err(bad(
                at,
                "images stored at the provider ('file_id') cannot be used through this gateway; send \
                 'image_url' (an https or data URL)",
            )),
        },
        Some("input_file") => match part["file_data"].as_str() {
            Some(data) => {
                let mut file = json!({"file_data": data});
                if let Some(name) = part["filename"].as_str() {
                    file["filename"] = json!(name);
                }
                Ok(json!({"type": "file", "file": file}))
            }
            None => Err(bad(
                at,
                "files by 'file_id' or 'file_url' cannot be sent to this model's provider; send \
                 'file_data' inline",
            )),
        },
        other => Err(bad(
            at,
            format!(
                "content parts of type {} cannot be sent to this model's provider",
                shown_type(other)
            ),
        )),
    }
}

/// A Responses tool as chat tools: a function, or the functions a `namespace` groups (Codex). Hosted
/// tools never get here: the cost bound refuses them first.
fn function_tools(tool: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    match tool["type"].as_str() {
        Some("function") => {
            let mut function = Map::new();
            for field in ["name", "description", "parameters", "strict"] {
                if !tool[field].is_null() {
                    function.insert(field.into(), tool[field].clone());
                }
            }
            out.push(json!({"type": "function", "function": function}));
            Ok(())
        }
        Some("namespace") => {
            for (j, inner) in tool["tools"].as_array().into_iter().flatten().enumerate() {
                function_tools(inner, &format!("{at}.tools[{j}]"), out)?;
            }
            Ok(())
        }
        other => Err(bad(
            at,
            format!(
                "tools of type {} are only supported for openai/ models; use function tools",
                shown_type(other)
            ),
        )),
    }
}

fn tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(_) if choice["type"] == "function" && choice["name"].is_string() => {
            Ok(json!({"type": "function", "function": {"name": choice["name"]}}))
        }
        _ => Err(bad(
            "tool_choice",
            "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...} \
             for this model",
        )),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, GatewayError> {
    match format["type"].as_str() {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "description", "schema", "strict"] {
                if !format[field].is_null() {
                    schema.insert(field.into(), format[field].clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(bad(
            "text.format.type",
            format!(
                "'{}' is not an output format (text, json_object or json_schema)",
                other.chars().take(60).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(value: Value) -> Result<Value, GatewayError> {
        let body = RequestBody::parse(value.to_string().as_bytes()).unwrap();
        let out = to_chat(&body, false)?;
        Ok(serde_json::from_slice(&out.to_bytes()).unwrap())
    }

    #[test]
    fn codex_shaped_requests_become_chat_with_history_and_flattened_tools() {
        let out = chat(json!({
            "model": "anthropic/claude-haiku-4-5", "instructions": "Be brief.", "store": false,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "parallel_tool_calls": true,
            "reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 300, "tool_choice": "auto",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {"type": "message", "role": "user", "id": "m1", "content": [{"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running."}]},
                {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "/w"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "and?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "low"}]}],
            "tools": [
                {"type": "function", "name": "exec_command", "description": "run", "strict": false,
                    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
                {"type": "namespace", "name": "multi_agent_v1", "description": "agents",
                    "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]}],
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "developer", "content": "rules"},
                    {"role": "user", "content": "list files"},
                    {"role": "assistant", "content": "Running.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "/w"},
                    {"role": "user", "content": [{"type": "text", "text": "and?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}]}],
                "tools": [
                    {"type": "function", "function": {"name": "exec_command", "description": "run", "strict": false,
                        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}},
                    {"type": "function", "function": {"name": "spawn_agent", "parameters": {"type": "object"}}}],
                "tool_choice": "auto",
                "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
                "max_completion_tokens": 300,
                "parallel_tool_calls": true,
                "reasoning_effort": "low",
            })
        );
    }

    #[test]
    fn a_string_input_is_one_user_turn_and_streaming_is_kept() {
        let body = RequestBody::parse(br#"{"model":"m","input":"hi","stream":true}"#).unwrap();
        let out: Value = serde_json::from_slice(&to_chat(&body, true).unwrap().to_bytes()).unwrap();
        assert_eq!(
            out,
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true})
        );
    }

    #[test]
    fn what_chat_cannot_carry_is_refused_by_name() {
        let cases = [
            (
                json!({"input": [{"type": "item_reference", "id": "x"}]}),
                "input[0]",
                "no conversation state",
            ),
            (
                json!({"input": [{"type": "custom_tool_call", "call_id": "c"}]}),
                "input[0].type",
                "custom_tool_call",
            ),
            (
                json!({"input": [{"role": "tool", "content": "x"}]}),
                "input[0].role",
                "'tool'",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
                "input[0].content[0]",
                "file_id",
            ),
            (
                json!({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]}),
                "input[0].content[0]",
                "only carry text",
            ),
            (
                json!({"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}),
                "tools[0]",
                "'custom'",
            ),
            (
                json!({"input": "x", "tool_choice": {"type": "web_search"}}),
                "tool_choice",
                "tool_choice",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format.type",
                "'yaml'",
            ),
            (
                json!({"input": "x", "logit_bias": {}}),
                "logit_bias",
                "openai/",
            ),
            (json!({"input": 7}), "input", "string or an array"),
            (json!({"input": []}), "input", "nothing to answer"),
            (
                json!({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]}),
                "input[0].output[0]",
                "as text",
            ),
        ];
        for (body, field, needle) in cases {
            let err = chat(body.clone()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(needle), "{body}: {text}");
            match &err {
                GatewayError::InvalidField { field: named, .. } => {
                    assert_eq!(named, field, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
