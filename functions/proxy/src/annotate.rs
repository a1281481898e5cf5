//! What the gateway writes into the answers it forwards: the model name the client asked for (whatever
//! the upstream calls its model), and what the call cost. The cost goes into the answer's own usage object
//! as `cost` (USD) and `price_version` (the catalog's), in every dialect: a chat completion's `usage`, a
//! Messages `message.usage` / `message_delta.usage`, a Responses `response.usage`; in a stream, on the
//! events that report usage (the cost of what they report).
//!
//! An event without usage only has its model renamed, by a byte scan (`wire::rename_model`): that is
//! nearly every streamed event, and it is never parsed. A body or an event that reports usage is parsed,
//! annotated and written again (its keys in another order, its meaning unchanged): once per answer.

use bytes::Bytes;
use serde_json::{Value, json};

/// What to write into an answer.
pub struct Annotation<'a> {
    /// The name the client asked for.
    pub model: Option<&'a str>,
    /// The cost (USD) of the usage the bytes report, and the catalog version that priced it.
    pub cost: Option<(f64, &'a str)>,
}

/// The object that carries usage (and the model) in each dialect's JSON: the top level (chat
/// completions and chunks, embeddings, Anthropic messages and message_delta), an Anthropic
/// message_start's `message`, a Responses event's `response`.
fn carrier(value: &mut Value) -> Option<&mut Value> {
    if value.get("usage").is_some_and(Value::is_object) {
        return Some(value);
    }
    for key in ["message", "response"] {
        if value
            .get(key)
            .and_then(|v| v.get("usage"))
            .is_some_and(Value::is_object)
        {
            return value.get_mut(key);
        }
    }
    None
}

/// `value` annotated; false when it has no usage object to carry the cost.
fn annotate_value(value: &mut Value, annotation: &Annotation) -> bool {
    let Some(carrier) = carrier(value) else {
        return false;
    };
    if let Some(name) = annotation.model
        && carrier.get("model").is_some_and(Value::is_string)
    {
        carrier["model"] = json!(name);
    }
    if let Some((cost, version)) = annotation.cost {
        carrier["usage"]["cost"] = json!(cost);
        carrier["usage"]["price_version"] = json!(version);
    }
    true
}

/// A whole JSON answer, annotated.
pub fn body(bytes: Bytes, annotation: &Annotation) -> Bytes {
    if annotation.cost.is_some()
        && let Ok(mut value) = serde_json::from_slice::<Value>(&bytes)
        && annotate_value(&mut value, annotation)
    {
        return Bytes::from(serde_json::to_vec(&value).expect("JSON serialises"));
    }
    rename(bytes, annotation)
}

/// One SSE event (with its trailing blank line), annotated.
pub fn event(bytes: Bytes, annotation: &Annotation) -> Bytes {
    if annotation.cost.is_some()
        && let Some(data) = qnp_shared::wire::event_data(&bytes)
        && let Ok(mut value) = serde_json::from_slice::<Value>(&data)
        && annotate_value(&mut value, annotation)
    {
        // The event's other lines (its `event:` name) stay as they were.
        let mut out = Vec::with_capacity(bytes.len() + 64);
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() && !line.starts_with(b"data:") {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&value).expect("JSON serialises"));
        out.extend_from_slice(b"\n\n");
        return Bytes::from(out);
    }
    rename(bytes, annotation)
}

fn rename(bytes: Bytes, annotation: &Annotation) -> Bytes {
    match annotation.model {
        Some(name) => qnp_shared::wire::rename_model(&bytes, name),
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICED: Annotation = Annotation {
        model: Some("openai/gpt-4o-mini"),
        cost: Some((0.000125, "2026-12-03")),
    };

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn whole_answers_of_every_dialect_carry_their_cost_and_the_asked_model() {
        let chat = body(
            Bytes::from_static(
                br#"{"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":3}}"#,
            ),
            &PRICED,
        );
        let chat = json_of(&chat);
        assert_eq!(chat["model"], "openai/gpt-4o-mini");
        assert_eq!(chat["usage"]["cost"], 0.000125);
        assert_eq!(chat["usage"]["price_version"], "2026-12-03");
        assert_eq!(chat["usage"]["prompt_tokens"], 3);
        // A tool's input holding a "model" key is the tool's, and stays.
        let message = body(
            Bytes::from_static(
                br#"{"content":[{"type":"tool_use","input":{"model":"mine"}}],"model":"claude-x","usage":{"input_tokens":1}}"#,
            ),
            &PRICED,
        );
        let message = json_of(&message);
        assert_eq!(message["content"][0]["input"]["model"], "mine");
        assert_eq!(message["model"], "openai/gpt-4o-mini");
        assert_eq!(message["usage"]["cost"], 0.000125);
    }

    #[test]
    fn events_that_report_usage_carry_the_cost_and_keep_their_names() {
        let terminal = event(
            Bytes::from_static(
                b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4o-mini\",\"usage\":{\"input_tokens\":1}}}\n\n",
            ),
            &PRICED,
        );
        let text = std::str::from_utf8(&terminal).unwrap();
        assert!(text.starts_with("event: response.completed\ndata: "));
        assert!(text.ends_with("\n\n"));
        let data = json_of(text.split_once("data: ").unwrap().1.trim_end().as_bytes());
        assert_eq!(data["response"]["usage"]["cost"], 0.000125);
        assert_eq!(data["response"]["model"], "openai/gpt-4o-mini");
        // Without usage the event is only renamed, byte for byte otherwise.
        let delta = event(
            Bytes::from_static(b"data: {\"model\":\"gpt-4o-mini\",\"choices\":[]}\n\n"),
            &PRICED,
        );
        assert_eq!(
            &delta[..],
            b"data: {\"model\":\"openai/gpt-4o-mini\",\"choices\":[]}\n\n"
        );
        // A usage of null or a body that is not JSON is left alone.
        let odd = Bytes::from_static(b"data: {\"usage\":null}\n\n");
        assert_eq!(event(odd.clone(), &PRICED), odd);
        let text = Bytes::from_static(b"not json");
        assert_eq!(body(text.clone(), &PRICED), text);
    }
}
