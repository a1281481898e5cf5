//! OpenAI Responses (`/v1/responses`), as Codex, the Agents SDKs and the other agent frameworks call it.
//! `openai/` models pass it through to OpenAI's own endpoint; every other model gets the request as a
//! chat completion (`request`) and its chat-format reply re-encoded as a response (`reply`), by
//! [`from_chat_reply`].

use futures_util::StreamExt;
use serde_json::Value;

use crate::conversation::AnswerEvent;
use crate::dialects::openai_chat::{self, ChunkDecoder, same_name};
use crate::error::GatewayError;
use crate::usage::TokenUsage;
use crate::wire::{Reply, StreamItem};

mod reply;
mod request;

pub use reply::failed_event;
pub(crate) use reply::{ResponseEncoder, response};
pub(crate) use request::to_chat;

/// A provider's chat-format reply (whole or streamed) as a Responses reply for `model`. The usage billed
/// is the one the chat reply carried beside its bytes, so an upstream that reported none is still billed
/// by an estimate (the chat bytes of a translated reply show zeros then).
pub(crate) fn from_chat_reply(reply: Reply, model: &str) -> Result<Reply, GatewayError> {
    match reply {
        Reply::Complete { body, usage } => {
            let completion: Value = serde_json::from_slice(&body).map_err(|_| {
                tracing::warn!("unparsable chat reply");
                GatewayError::UpstreamFailed
            })?;
            let mut answer = openai_chat::answer(&completion, &same_name)?;
            answer.usage = usage;
            Ok(Reply::Complete {
                body: serde_json::to_vec(&response(&answer, model))
                    .expect("JSON serialises")
                    .into(),
                usage,
            })
        }
        Reply::Stream(events) => {
            let mut decoder = ChunkDecoder::default();
            let mut encoder = ResponseEncoder::new(model, "qnp");
            let mut usage: Option<TokenUsage> = None;
            Ok(Reply::Stream(
                events
                    .flat_map(move |item| {
                        let out = match item {
                            StreamItem::Event {
                                bytes,
                                usage: reported,
                                ..
                            } => {
                                if reported.is_some() {
                                    usage = reported;
                                }
                                match decoder.on_event(&bytes, &same_name) {
                                    Ok(answer_events) => answer_events
                                        .into_iter()
                                        .flat_map(|e| {
                                            encoder.encode(match e {
                                                AnswerEvent::Ended { .. } => {
                                                    AnswerEvent::Ended { usage }
                                                }
                                                other => other,
                                            })
                                        })
                                        .collect(),
                                    Err(err) => vec![StreamItem::Failed(err)],
                                }
                            }
                            failed @ StreamItem::Failed(_) => vec![failed],
                        };
                        futures_util::stream::iter(out)
                    })
                    .boxed(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(data: &str, usage: Option<TokenUsage>) -> StreamItem {
        StreamItem::Event {
            bytes: Bytes::from(format!("data: {data}\n\n")),
            usage,
            usage_only: usage.is_some(),
            last: data == "[DONE]",
        }
    }

    #[tokio::test]
    async fn a_chat_stream_becomes_responses_events_billed_by_the_reported_usage() {
        let usage = TokenUsage {
            prompt_tokens: 5,
            completion_tokens: 2,
            ..TokenUsage::default()
        };
        let chat = vec![
            event(
                r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
                None,
            ),
            event(
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
                None,
            ),
            event(
                r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                None,
            ),
            // A translated usage chunk shows zeros when the upstream reported nothing; the item's own
            // usage is what counts.
            event(
                r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0}}"#,
                Some(usage),
            ),
            event("[DONE]", None),
        ];
        let reply = from_chat_reply(
            Reply::Stream(futures_util::stream::iter(chat).boxed()),
            "anthropic/claude-haiku-4-5",
        )
        .unwrap();
        let Reply::Stream(events) = reply else {
            panic!("a stream stays a stream")
        };
        let items: Vec<StreamItem> = events.collect().await;
        let Some(StreamItem::Event {
            bytes,
            usage: billed,
            last: true,
            ..
        }) = items.last()
        else {
            panic!("ends with the terminal event")
        };
        assert!(bytes.starts_with(b"event: response.completed\n"));
        assert_eq!(*billed, Some(usage));
        let text = items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Event { bytes, .. } => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                StreamItem::Failed(_) => None,
            })
            .collect::<String>();
        assert!(text.contains(r#""delta":"Hi""#));
        assert!(text.contains(r#""input_tokens":5"#));
    }

    #[tokio::test]
    async fn a_whole_chat_reply_without_reported_usage_is_billed_by_estimate() {
        let body = br#"{"id":"c2","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":0}}"#;
        let reply = from_chat_reply(
            Reply::Complete {
                body: Bytes::from_static(body),
                usage: None,
            },
            "google/gemini-2.5-flash",
        )
        .unwrap();
        let Reply::Complete { body, usage } = reply else {
            panic!("whole stays whole")
        };
        assert_eq!(usage, None, "the proxy estimates it");
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(out["output"][0]["content"][0]["text"], "ok");
        assert_eq!(out["id"], "resp_c2");
    }
}
