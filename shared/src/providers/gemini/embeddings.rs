//! OpenAI embedding requests as `batchEmbedContents` calls, and their vectors back in OpenAI's shape.

use super::*;

/// `batchEmbedContents` accepts at most this many requests per call.
pub(super) const EMBED_BATCH: usize = 100;

/// OpenAI's embedding `input` as texts: a string or an array of strings (token arrays have no Gemini
/// equivalent).
pub(super) fn embedding_inputs(body: &RequestBody) -> Result<Vec<String>, GatewayError> {
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
pub(super) fn base64_floats(values: &[Value]) -> String {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| (v.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
