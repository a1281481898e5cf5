//! What passes between the proxy, the client dialects and the upstream providers: a request body as raw
//! top-level fields, a reply whole or as a stream of items. At the bottom of the request path, so the
//! dialects and the providers can both speak of them.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::GatewayError;
use crate::usage::TokenUsage;

/// A JSON request body as top-level fields whose values stay raw: the gateway reads and rewrites a few
/// fields (model, stream options) and forwards the rest byte for byte, never parsing prompt content.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct RequestBody(pub IndexMap<String, Box<RawValue>>);

impl RequestBody {
    pub fn parse(bytes: &[u8]) -> Result<RequestBody, GatewayError> {
        serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                GatewayError::MalformedJson("the body must be a JSON object".into())
            } else {
                GatewayError::MalformedJson(e.to_string())
            }
        })
    }

    pub fn raw(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(|v| v.get())
    }

    /// Parses one field into `T`, with a 400 naming the field when it has the wrong type.
    pub fn get<'a, T: Deserialize<'a>>(
        &'a self,
        field: &str,
        expected: &str,
    ) -> Result<Option<T>, GatewayError> {
        match self.raw(field) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw)
                .map(Some)
                .map_err(|_| GatewayError::field(field, format!("'{field}' must be {expected}"))),
        }
    }

    pub fn set(&mut self, field: &str, value: &impl serde::Serialize) {
        let raw = serde_json::value::to_raw_value(value).expect("serialisable value");
        self.0.insert(field.to_owned(), raw);
    }

    pub fn remove(&mut self, field: &str) {
        self.0.shift_remove(field);
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.0).expect("raw JSON values serialise"))
    }

    /// About the size of the body as JSON (its fields' names and raw values), without writing it.
    pub fn approximate_len(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| k.len().saturating_add(v.get().len()).saturating_add(4))
            .fold(2, usize::saturating_add)
    }
}

/// One event of a reply stream, already framed as an OpenAI-format SSE event.
pub enum StreamItem {
    Event {
        bytes: Bytes,
        /// The provider's own usage accounting, when this event carries it.
        usage: Option<TokenUsage>,
        /// The event exists only to carry usage (OpenAI's final chunk with empty `choices`); it is
        /// forwarded only to clients that asked for usage.
        usage_only: bool,
        /// The protocol's end (OpenAI's `data: [DONE]`): the client has everything once it has this, so
        /// the call is complete even if the client hangs up right after, and the response ends here
        /// whether or not the upstream closes its side promptly.
        last: bool,
    },
    /// The upstream failed mid-stream; the proxy ends the client's stream with an error event.
    Failed(GatewayError),
}

impl StreamItem {
    /// Whether nothing may follow this item: the protocol's end, or a failure.
    pub fn ends_stream(&self) -> bool {
        matches!(
            self,
            StreamItem::Event { last: true, .. } | StreamItem::Failed(_)
        )
    }
}

pub enum Reply {
    /// A whole JSON body, forwarded unchanged.
    Complete {
        body: Bytes,
        usage: Option<TokenUsage>,
    },
    Stream(BoxStream<'static, StreamItem>),
}

/// The event's `data` payload (lines joined with '\n'), or None for comment-only events.
pub fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut out {
                Some(buf) => {
                    buf.push(b'\n');
                    buf.extend_from_slice(rest);
                }
                None => out = Some(rest.to_vec()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_round_trips_untouched_fields_verbatim() {
        let text = br#"{"model":"openai/x","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.70}"#;
        let mut body = RequestBody::parse(text).unwrap();
        body.set("model", &"x");
        let out = String::from_utf8(body.to_bytes().to_vec()).unwrap();
        assert_eq!(
            out,
            r#"{"model":"x","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.70}"#
        );
    }

    #[test]
    fn body_errors_are_precise() {
        assert!(matches!(
            RequestBody::parse(b"{\"model\": "),
            Err(GatewayError::MalformedJson(_))
        ));
        assert!(matches!(
            RequestBody::parse(b"[1]"),
            Err(GatewayError::MalformedJson(_))
        ));
        let body = RequestBody::parse(br#"{"stream":"yes"}"#).unwrap();
        let err = body.get::<bool>("stream", "a boolean").unwrap_err();
        assert!(err.to_string().contains("'stream'"));
    }
}
