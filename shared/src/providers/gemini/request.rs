//! A [`Conversation`] as a Gemini `generateContent` request: system instruction, turns as `user` and
//! `model` contents (function responses leading), media parts, tools, tool choice, JSON output and
//! generation settings; thought signatures put back on the function calls they came with.

use super::*;
use crate::conversation::{Content, Conversation, OutputFormat, Part, Role, ToolChoice};

/// The media type of a remote file, from its extension; `fallback` when there is none we know.
pub(super) fn guess_mime_type<'a>(url: &str, fallback: &'a str) -> &'a str {
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

/// One message's content as Gemini parts (text, images, audio, files; empty text is dropped, since
/// Gemini refuses empty text parts).
pub(super) fn content_parts(content: &Content, field: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Empty => Ok(vec![]),
        Content::Text(text) if text.is_empty() => Ok(vec![]),
        Content::Text(text) => Ok(vec![json!({"text": text})]),
        Content::Parts(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Part::Text(text) => {
                        if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
                            parts.push(json!({"text": text}));
                        }
                    }
                    Part::Image { url } => {
                        let url = url
                            .as_deref()
                            .ok_or_else(|| bad(field, "an image_url part needs image_url.url"))?;
                        parts.push(media_part(url, "image/jpeg", field)?);
                    }
                    Part::Audio { data, format } => {
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(bad(
                                field,
                                "an input_audio part needs input_audio.data and input_audio.format",
                            ));
                        };
                        parts.push(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}));
                    }
                    Part::File { data, .. } => {
                        let data = data.as_deref().ok_or_else(|| {
                            bad(
                                field,
                                "file parts need file.file_data (uploaded file ids are not supported for Google models)",
                            )
                        })?;
                        parts.push(media_part(data, "application/pdf", field)?);
                    }
                    Part::ToolResult { .. } | Part::Other(_) => {
                        let other = match item {
                            Part::Other(kind) => kind.as_deref(),
                            _ => Some("tool_result"),
                        };
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
        Content::Invalid => Err(bad(
            field,
            "message content must be a string or an array of parts",
        )),
    }
}

/// A data URL becomes inline data; a remote URL becomes `fileData` for Gemini to fetch (public and
/// pre-signed HTTPS URLs, Cloud Storage and Files API URIs), with its media type guessed from the
/// extension because Gemini requires one.
pub(super) fn media_part(url: &str, fallback: &str, field: &str) -> Result<Value, GatewayError> {
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
pub(super) fn tool_text(content: &Content, field: &str) -> Result<String, GatewayError> {
    match content {
        Content::Empty => Ok(String::new()),
        Content::Text(text) => Ok(text.clone()),
        Content::Parts(items) => Ok(items
            .iter()
            .filter_map(|p| match p {
                Part::Text(text) => text.as_deref(),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("")),
        Content::Invalid => Err(bad(
            field,
            "tool message content must be a string or an array of text parts",
        )),
    }
}

/// A tool call id as minted by [`call_id`]: (the id, the thought signature inside it, if any).
pub(super) fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(THOUGHT_SEPARATOR) {
        Some((base, signature)) if !signature.is_empty() => (base, Some(signature)),
        _ => (id, None),
    }
}

/// Whether the model requires a thought signature on every function call of the current turn (Gemini 3
/// and later; for 1.x and 2.x models a signature is optional, so none is invented for them).
pub(super) fn requires_signatures(model: &Model) -> bool {
    let name = model
        .upstream_model
        .strip_prefix("models/")
        .unwrap_or(&model.upstream_model);
    !(name.starts_with("gemini-1") || name.starts_with("gemini-2"))
}

/// Appends a turn, merged into the previous one when the role repeats (see `push_turn`).
pub(super) fn push(contents: &mut Vec<Value>, role: &str, items: Vec<Value>) {
    push_turn(contents, role, "parts", items, |p| {
        p.get("functionResponse").is_some()
    });
}

/// Translates an OpenAI chat request into a Gemini `GenerateContentRequest`.
pub fn to_gemini_request(body: &RequestBody, model: &Model) -> Result<Value, GatewayError> {
    from_conversation(&Conversation::from_openai_chat(body)?, model)
}

/// The Gemini `GenerateContentRequest` for `conversation`.
pub(super) fn from_conversation(
    conversation: &Conversation,
    model: &Model,
) -> Result<Value, GatewayError> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id → function name: Gemini's functionResponse needs the name, OpenAI's tool message
    // carries only the id. Later calls with a reused id replace earlier ones.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, message) in conversation.messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        match &message.role {
            Role::System | Role::Developer => {
                system.extend(content_parts(&message.content, &field)?)
            }
            Role::User => push(
                &mut contents,
                "user",
                content_parts(&message.content, &field)?,
            ),
            Role::Assistant => {
                let mut parts = content_parts(&message.content, &field)?;
                let first_call = parts.len();
                let mut signed = false;
                for call in &message.tool_calls {
                    let name = call
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| bad(&field, "a tool call needs function.name"))?;
                    let id = call.id.as_deref().unwrap_or("");
                    let signature = split_call_id(id).1.or(call.thought_signature.as_deref());
                    let mut part = json!({"functionCall": {"name": name, "args": call.arguments}});
                    if let Some(signature) = signature {
                        part["thoughtSignature"] = json!(signature);
                        signed = true;
                    }
                    if !id.is_empty() {
                        call_names.insert(id, name);
                    }
                    parts.push(part);
                }
                if parts.len() > first_call && !signed && requires_signatures(model) {
                    parts[first_call]["thoughtSignature"] = json!(SKIP_SIGNATURE);
                }
                push(&mut contents, "model", parts);
            }
            Role::Tool => {
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| bad(&field, "a tool message needs tool_call_id"))?;
                let name = call_names
                    .get(id)
                    .copied()
                    .or(message.name.as_deref())
                    .ok_or_else(|| {
                        bad(
                            &field,
                            format!(
                                "tool_call_id '{}' matches no tool call of an earlier assistant message",
                                split_call_id(id).0
                            ),
                        )
                    })?;
                let content = tool_text(&message.content, &field)?;
                push(
                    &mut contents,
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"content": content}}}),
                    ],
                );
            }
            Role::Unknown(other) => return Err(bad(&field, format!("unknown role {other:?}"))),
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
    if let Some(max) = conversation.max_output_tokens {
        // Clients written for another model send its limit (Claude Code asks for 32,000): ask for no
        // more than this model can produce, which is also what the call's reservation counted.
        let max = max.min(model.output_limit()).max(1);
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    let sampling = &conversation.sampling;
    for (value, gemini) in [
        (sampling.temperature, "temperature"),
        (sampling.top_p, "topP"),
        (sampling.presence_penalty, "presencePenalty"),
        (sampling.frequency_penalty, "frequencyPenalty"),
    ] {
        if let Some(v) = value {
            generation.insert(gemini.into(), json!(v));
        }
    }
    if let Some(seed) = sampling.seed {
        generation.insert("seed".into(), json!(seed));
    }
    let stop: Vec<&str> = sampling
        .stop
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !stop.is_empty() {
        generation.insert("stopSequences".into(), json!(stop));
    }
    apply_output_format(conversation, &mut generation);
    if !generation.is_empty() {
        fields.insert("generationConfig".into(), Value::Object(generation));
    }
    insert_tools(conversation, fields)?;
    Ok(request)
}

/// Tools as function declarations. Parameters go in `parametersJsonSchema`, which takes OpenAI's JSON
/// Schema as is (`parameters` accepts only an OpenAPI subset and refuses e.g. `additionalProperties`).
pub(super) fn insert_tools(
    conversation: &Conversation,
    fields: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let mut declarations = Vec::new();
    for (i, tool) in conversation.tools.iter().enumerate() {
        let name = tool
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(&format!("tools[{i}]"), "a tool needs function.name"))?;
        let mut declaration = json!({"name": name});
        if let Some(d) = &tool.description {
            declaration["description"] = json!(d);
        }
        if let Some(parameters) = &tool.parameters {
            declaration["parametersJsonSchema"] = parameters.clone();
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
    let config = conversation
        .tool_choice
        .as_ref()
        .map(|choice| match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        });
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
pub(super) fn apply_output_format(
    conversation: &Conversation,
    generation: &mut Map<String, Value>,
) {
    match &conversation.output {
        None | Some(OutputFormat::Text) => {}
        Some(OutputFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(OutputFormat::JsonSchema { schema }) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = schema {
                generation.insert("responseJsonSchema".into(), schema.clone());
            }
        }
    }
}
