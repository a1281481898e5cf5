//! An OpenAI chat request as an Anthropic Messages request: system prompts hoisted, turns merged so
//! roles alternate (tool results leading), tools, tool choice, JSON output and limits mapped.

use super::*;

/// Used when the client sets no `max_tokens`: Anthropic requires one, and a moderate default keeps a
/// non-streamed call inside upstream timeouts. Capped by the model's own maximum.
pub(super) const DEFAULT_MAX_TOKENS: u64 = 8192;

/// One OpenAI content part as Anthropic blocks (text and images; empty text is dropped).
pub(super) fn content_blocks(content: &Value, field: &str) -> Result<Vec<Value>, GatewayError> {
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
pub(super) fn push(messages: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
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

pub(super) fn insert_tools(
    body: &RequestBody,
    fields: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
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
pub(super) fn apply_response_format(
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
