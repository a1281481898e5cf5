//! What the gateway writes into the answers it forwards: the model name the client asked for (whatever
//! the upstream calls its model), and what the call cost. The cost goes into the answer's own usage object
//! as `cost` (USD) and `price_version` (the catalog's), in every dialect: a chat completion's `usage`, a
//! Messages `message.usage` / `message_delta.usage`, a Responses `response.usage`; in a stream, on the
//! events that report usage (the cost of what they report).
//!
//! The bytes are edited in place, not parsed and written again: a scan finds the object that carries
//! the usage (the top level, an Anthropic message_start's `message`, a Responses event's `response`) and,
//! in it, the `usage` and `model` keys at its own level (never a key inside a tool's arguments or a
//! client's metadata), and everything else passes as the upstream wrote it. An event whose model is
//! already the asked name and that reports no usage is not copied at all.

use std::ops::Range;

use bytes::Bytes;

/// What to write into an answer.
pub struct Annotation<'a> {
    /// The name the client asked for.
    pub model: Option<&'a str>,
    /// The cost (USD) of the usage the bytes report, and the catalog version that priced it.
    pub cost: Option<(f64, &'a str)>,
}

/// The end of the JSON string that starts at `at` (just past its closing quote).
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the JSON value that starts at `at`.
fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => string_end(json, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = json[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(json.len() - at);
            Some(at + len)
        }
    }
}

fn skip_space(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The range of the value of `key` among the members of the object in `object` (its own level only).
fn member(json: &[u8], object: Range<usize>, key: &str) -> Option<Range<usize>> {
    let mut i = skip_space(json, object.start);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_space(json, i);
        if i >= object.end || json.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, i)?;
        let name = &json[i + 1..key_end - 1];
        i = skip_space(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_space(json, i + 1);
        let end = value_end(json, start)?;
        if name == key.as_bytes() {
            return Some(start..end);
        }
        i = skip_space(json, end);
        if json.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// The object that carries the reply's model and usage: the top level (chat completions and chunks,
/// embeddings, Anthropic messages and message_delta), an Anthropic message_start's `message`, a Responses
/// event's `response`; the first of them that has either key.
fn carrier(json: &[u8]) -> Option<Range<usize>> {
    let whole = 0..json.len();
    let carries = |object: &Range<usize>| {
        member(json, object.clone(), "model").is_some()
            || member(json, object.clone(), "usage").is_some()
    };
    if carries(&whole) {
        return Some(whole);
    }
    ["message", "response"].iter().find_map(|key| {
        let inner = member(json, whole.clone(), key)?;
        (json[inner.start] == b'{' && carries(&inner)).then_some(inner)
    })
}

/// `json` (one JSON object) with the asked model and the cost written in, or None when nothing changes:
/// the model is already the asked name (or absent), and there is no cost or no usage object for it.
fn annotated(json: &[u8], annotation: &Annotation) -> Option<Vec<u8>> {
    let carrier = carrier(json)?;
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    if let Some(name) = annotation.model
        && let Some(range) = member(json, carrier.clone(), "model")
        && json[range.start] == b'"'
    {
        let name = serde_json::to_string(name).ok()?;
        if json[range.clone()] != *name.as_bytes() {
            edits.push((range, name.into_bytes()));
        }
    }
    if let Some((usd, version)) = annotation.cost
        && let Some(usage) = member(json, carrier, "usage")
        && json[usage.start] == b'{'
    {
        let mut insert = format!(
            "\"cost\":{},\"price_version\":{}",
            serde_json::to_string(&usd).ok()?,
            serde_json::to_string(version).ok()?
        );
        let after_brace = usage.start + 1;
        if json[skip_space(json, after_brace)] != b'}' {
            insert.push(',');
        }
        edits.push((after_brace..after_brace, insert.into_bytes()));
    }
    if edits.is_empty() {
        return None;
    }
    // Edits from the end backwards, so earlier offsets stay valid.
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    let mut out = json.to_vec();
    for (range, text) in edits {
        out.splice(range, text);
    }
    Some(out)
}

/// A whole JSON answer, annotated.
pub fn body(bytes: Bytes, annotation: &Annotation) -> Bytes {
    match annotated(&bytes, annotation) {
        Some(out) => Bytes::from(out),
        None => bytes,
    }
}

/// One SSE event (with its trailing blank line), annotated. The JSON is on the event's `data:` line
/// (one line, as every provider writes it; an event split over several data lines passes unchanged).
pub fn event(bytes: Bytes, annotation: &Annotation) -> Bytes {
    let Some(at) =
        memchr::memmem::find(&bytes, b"data:").filter(|&at| at == 0 || bytes[at - 1] == b'\n')
    else {
        return bytes;
    };
    let start = skip_space(&bytes, at + 5);
    let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |n| start + n);
    let end = if end > start && bytes[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    match annotated(&bytes[start..end], annotation) {
        Some(json) => {
            let mut out = Vec::with_capacity(bytes.len() + json.len() - (end - start));
            out.extend_from_slice(&bytes[..start]);
            out.extend_from_slice(&json);
            out.extend_from_slice(&bytes[end..]);
            Bytes::from(out)
        }
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const PRICED: Annotation = Annotation {
        model: Some("openai/gpt-4o-mini"),
        cost: Some((0.000125, "2026-12-03")),
    };

    #[test]
    fn only_the_model_and_the_cost_change_byte_for_byte() {
        let out = body(
            Bytes::from_static(
                b"{\n  \"id\": \"c\",\n  \"model\": \"gpt-4o-mini-2024-07-18\",\n  \"usage\": {\n    \"prompt_tokens\": 3\n  },\n  \"metadata\": {\"usage\": {}}\n}",
            ),
            &PRICED,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\n  \"id\": \"c\",\n  \"model\": \"openai/gpt-4o-mini\",\n  \"usage\": {\"cost\":0.000125,\"price_version\":\"2026-12-03\",\n    \"prompt_tokens\": 3\n  },\n  \"metadata\": {\"usage\": {}}\n}"
        );
        let empty = body(Bytes::from_static(br#"{"usage":{}}"#), &PRICED);
        assert_eq!(
            &empty[..],
            br#"{"usage":{"cost":0.000125,"price_version":"2026-12-03"}}"#
        );
    }

    #[test]
    fn only_the_replys_own_model_is_renamed() {
        let renamed = Annotation {
            model: Some("openai/gpt-4o-mini"),
            cost: None,
        };
        let chunk = Bytes::from_static(
            br#"data: {"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[{"delta":{"content":"\"model\": x"}}]}"#,
        );
        assert_eq!(
            &event(chunk, &renamed)[..],
            br#"data: {"id":"c","model":"openai/gpt-4o-mini","choices":[{"delta":{"content":"\"model\": x"}}]}"#
        );
        let spaced = Bytes::from_static(b"{\n  \"model\" : \"a\\\"b\",\n  \"n\": 1}");
        assert_eq!(
            &body(spaced, &renamed)[..],
            b"{\n  \"model\" : \"openai/gpt-4o-mini\",\n  \"n\": 1}"
        );
        // A Responses event names its model inside `response`.
        let created = Bytes::from_static(
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4o-mini\",\"usage\":null}}\n\n",
        );
        assert!(
            std::str::from_utf8(&event(created, &renamed))
                .unwrap()
                .contains(r#""response":{"model":"openai/gpt-4o-mini","usage":null}"#)
        );
        for unchanged in [
            &br#"{"object":"list"}"#[..],
            br#"{"model":null}"#,
            br#"{"model":"openai/gpt-4o-mini"}"#,
            br#"{"model":"unterminated"#,
        ] {
            let bytes = Bytes::copy_from_slice(unchanged);
            assert_eq!(body(bytes.clone(), &renamed), bytes);
        }
    }

    #[test]
    fn no_input_makes_it_panic() {
        use rand::Rng;
        let sample = br#"{"id":"c","model":"m","choices":[{"message":{"content":"a\"b{"}}],"usage":{"prompt_tokens":3,"x":[1,{"y":"}"}]}}"#;
        for cut in 0..=sample.len() {
            let prefix = Bytes::copy_from_slice(&sample[..cut]);
            let _ = body(prefix.clone(), &PRICED);
            let mut framed = b"event: x\ndata: ".to_vec();
            framed.extend_from_slice(&prefix);
            let _ = event(Bytes::from(framed), &PRICED);
        }
        let mut rng = rand::rng();
        for _ in 0..2_000 {
            let len = rng.random_range(0..64);
            let alphabet = b"{}[]\":,\\ usage model data:\n0";
            let noise: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let _ = body(Bytes::from(noise.clone()), &PRICED);
            let _ = event(Bytes::from(noise), &PRICED);
        }
    }

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
