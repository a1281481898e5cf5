//! The Responses API's answers as the gateway emits them for replies it translated: an [`Answer`] as a
//! `response` object, and [`AnswerEvent`]s as the named events clients rely on (`response.created`,
//! `response.in_progress`, one output item per run of text and per function call with their added,
//! delta, done events, and exactly one terminal `response.completed` or `response.incomplete` carrying
//! the whole output and the usage). Every event has its `sequence_number`.
//!
//! The terminal event repeats the output, as the protocol requires (Codex takes the answer from it and
//! from `response.output_item.done`), so the encoder keeps the text of the answer it is streaming
//! until the stream ends; every delta is still forwarded the moment it arrives.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::conversation::{Answer, AnswerEvent, FinishReason};
use crate::error::{Dialect, GatewayError};
use crate::usage::TokenUsage;
use crate::wire::StreamItem;

/// The gateway's usage as a Responses usage object (input tokens include cached ones, as OpenAI counts).
pub(crate) fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// A response's `status` and `incomplete_details` for how the answer finished.
fn status(finish: Option<FinishReason>) -> (&'static str, Value) {
    match finish {
        Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn now_unix() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// The `response` object around `output`.
fn envelope(
    id: &str,
    model: &str,
    created: u64,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
        "arguments": arguments})
}

/// A whole answer as a `response` for `model` (the gateway's id for it).
pub(crate) fn response(answer: &Answer, model: &str) -> Value {
    let mut output = Vec::new();
    let text = answer.content.as_deref().unwrap_or("");
    if !text.is_empty() || answer.tool_calls.is_empty() {
        output.push(message_item(
            &format!("msg_{}", answer.id),
            text,
            "completed",
        ));
    }
    for call in &answer.tool_calls {
        output.push(call_item(
            &format!("fc_{}", call.id),
            &call.id,
            &call.name,
            &call.arguments,
            "completed",
        ));
    }
    let (status, incomplete) = status(Some(answer.finish));
    envelope(
        &format!("resp_{}", answer.id),
        model,
        now_unix(),
        status,
        incomplete,
        output,
        usage_json(&answer.usage.unwrap_or_default()),
    )
}

/// The terminal event of a stream that failed after it started: `response.failed`, with the error in
/// OpenAI's shape. `sequence_number` continues the client's count (events it has been sent).
pub fn failed_event(err: &GatewayError, sequence_number: usize) -> Bytes {
    let error: Value = serde_json::from_slice(&err.body_for(Dialect::OpenAi))
        .map(|body: Value| body["error"].clone())
        .unwrap_or(Value::Null);
    let mut response = envelope(
        "resp_failed",
        "",
        now_unix(),
        "failed",
        Value::Null,
        vec![],
        Value::Null,
    );
    response["error"] = json!({
        "code": error["code"].as_str().or(error["type"].as_str()).unwrap_or("server_error"),
        "message": error["message"],
    });
    let data = json!({"type": "response.failed", "sequence_number": sequence_number, "response": response});
    Bytes::from(format!("event: response.failed\ndata: {data}\n\n"))
}

enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    fn json(&self, status: &str) -> Value {
        match self {
            Item::Message { id, text } => message_item(id, text, status),
            Item::Call {
                id,
                call_id,
                name,
                arguments,
            } => call_item(id, call_id, name, arguments, status),
        }
    }

    fn id(&self) -> &str {
        match self {
            Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }
}

/// A streamed answer as Responses events: one encoder per stream, fed the answer's events in order.
pub(crate) struct ResponseEncoder {
    id: String,
    model: String,
    created: u64,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    /// Items whose done events have been sent.
    closed: usize,
    /// Tool-call index → item index.
    calls: HashMap<usize, usize>,
    finish: Option<FinishReason>,
}

impl ResponseEncoder {
    /// `fallback_id` names the response until the upstream's own id arrives with `Started`.
    pub(crate) fn new(model: &str, fallback_id: &str) -> ResponseEncoder {
        ResponseEncoder {
            id: format!("resp_{fallback_id}"),
            model: model.to_owned(),
            created: now_unix(),
            sequence: 0,
            started: false,
            items: Vec::new(),
            closed: 0,
            calls: HashMap::new(),
            finish: None,
        }
    }

    fn event(&mut self, name: &str, mut data: Value, out: &mut Vec<StreamItem>) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.push(StreamItem::Event {
            bytes: Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
            usage: None,
            usage_only: false,
            last: false,
        });
    }

    fn envelope(&self, status: &str, incomplete: Value, output: Vec<Value>, usage: Value) -> Value {
        envelope(
            &self.id,
            &self.model,
            self.created,
            status,
            incomplete,
            output,
            usage,
        )
    }

    fn start(&mut self, id: Option<&str>, out: &mut Vec<StreamItem>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(id) = id {
            self.id = format!("resp_{id}");
        }
        let response = self.envelope("in_progress", Value::Null, vec![], Value::Null);
        self.event("response.created", json!({"response": response}), out);
        let response = self.envelope("in_progress", Value::Null, vec![], Value::Null);
        self.event("response.in_progress", json!({"response": response}), out);
    }

    /// Sends the done events of every item not yet closed, in order.
    fn close_all(&mut self, out: &mut Vec<StreamItem>) {
        while self.closed < self.items.len() {
            let index = self.closed;
            self.closed += 1;
            let item_id = self.items[index].id().to_owned();
            let done = self.items[index].json("completed");
            match &self.items[index] {
                Item::Message { text, .. } => {
                    let text = text.clone();
                    self.event(
                        "response.output_text.done",
                        json!({"item_id": item_id, "output_index": index, "content_index": 0,
                            "text": text, "logprobs": []}),
                        out,
                    );
                    self.event(
                        "response.content_part.done",
                        json!({"item_id": item_id, "output_index": index, "content_index": 0,
                            "part": {"type": "output_text", "text": text, "annotations": []}}),
                        out,
                    );
                }
                Item::Call {
                    name, arguments, ..
                } => {
                    let data = json!({"item_id": item_id, "output_index": index, "name": name,
                        "arguments": arguments});
                    self.event("response.function_call_arguments.done", data, out);
                }
            }
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
                out,
            );
        }
    }

    fn add(&mut self, item: Item, out: &mut Vec<StreamItem>) -> usize {
        // Text after a call, or a call after text, is a new item; the earlier ones are complete.
        self.close_all(out);
        let index = self.items.len();
        let added = item.json("in_progress");
        let item_id = item.id().to_owned();
        let is_message = matches!(item, Item::Message { .. });
        self.items.push(item);
        self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
            out,
        );
        if is_message {
            self.event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                out,
            );
        }
        index
    }

    fn arguments(&mut self, index: usize, fragment: &str, out: &mut Vec<StreamItem>) {
        if fragment.is_empty() {
            return;
        }
        let Some(Item::Call { id, arguments, .. }) = self.items.get_mut(index) else {
            return;
        };
        arguments.push_str(fragment);
        let item_id = id.clone();
        if index < self.closed {
            // Done was already sent (the upstream interleaved calls); the terminal event has it all.
            return;
        }
        self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": index, "delta": fragment}),
            out,
        );
    }

    /// The items for one event; `Ended` is the terminal event and the protocol's end.
    pub(crate) fn encode(&mut self, answer_event: AnswerEvent) -> Vec<StreamItem> {
        let mut out = Vec::new();
        match answer_event {
            AnswerEvent::Started { id } => self.start(Some(&id), &mut out),
            AnswerEvent::Text(text) => {
                self.start(None, &mut out);
                let open_message = self.closed < self.items.len()
                    && matches!(self.items.last(), Some(Item::Message { .. }));
                let index = if open_message {
                    self.items.len() - 1
                } else {
                    let id = format!(
                        "msg_{}_{}",
                        self.id.trim_start_matches("resp_"),
                        self.items.len()
                    );
                    self.add(
                        Item::Message {
                            id,
                            text: String::new(),
                        },
                        &mut out,
                    )
                };
                if let Some(Item::Message { id, text: all }) = self.items.get_mut(index) {
                    all.push_str(&text);
                    let item_id = id.clone();
                    self.event(
                        "response.output_text.delta",
                        json!({"item_id": item_id, "output_index": index, "content_index": 0,
                            "delta": text, "logprobs": []}),
                        &mut out,
                    );
                }
            }
            AnswerEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                self.start(None, &mut out);
                let item = Item::Call {
                    id: format!("fc_{id}"),
                    call_id: id,
                    name,
                    arguments: String::new(),
                };
                let at = self.add(item, &mut out);
                self.calls.insert(index, at);
                self.arguments(at, &arguments, &mut out);
            }
            AnswerEvent::ToolArguments { index, fragment } => {
                if let Some(&at) = self.calls.get(&index) {
                    self.arguments(at, &fragment, &mut out);
                }
            }
            AnswerEvent::Finished(reason) => {
                self.close_all(&mut out);
                self.finish = Some(reason);
            }
            AnswerEvent::Ended { usage } => {
                self.start(None, &mut out);
                self.close_all(&mut out);
                let (status, incomplete) = status(self.finish);
                let output = self.items.iter().map(|i| i.json("completed")).collect();
                let response = self.envelope(
                    status,
                    incomplete,
                    output,
                    usage_json(&usage.unwrap_or_default()),
                );
                let name = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.event(name, json!({"response": response}), &mut out);
                if let Some(StreamItem::Event {
                    usage: slot, last, ..
                }) = out.last_mut()
                {
                    *slot = usage;
                    *last = true;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::AnswerToolCall;

    fn events(items: &[StreamItem]) -> Vec<(String, Value)> {
        items
            .iter()
            .map(|item| match item {
                StreamItem::Event { bytes, .. } => {
                    let text = std::str::from_utf8(bytes).unwrap();
                    let (name, data) = text
                        .strip_prefix("event: ")
                        .unwrap()
                        .split_once("\ndata: ")
                        .unwrap();
                    let data: Value = serde_json::from_str(data.trim_end()).unwrap();
                    assert_eq!(data["type"], name);
                    (name.to_owned(), data)
                }
                StreamItem::Failed(_) => panic!("failed"),
            })
            .collect()
    }

    #[test]
    fn a_streamed_answer_with_text_and_a_call_is_the_full_event_sequence() {
        let mut encoder = ResponseEncoder::new("anthropic/claude-haiku-4-5", "fallback");
        let usage = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 4,
            cached_tokens: 2,
            ..TokenUsage::default()
        };
        let items: Vec<StreamItem> = [
            AnswerEvent::Started { id: "abc".into() },
            AnswerEvent::Text("Hel".into()),
            AnswerEvent::Text("lo".into()),
            AnswerEvent::ToolCall {
                index: 0,
                id: "call_1".into(),
                name: "exec_command".into(),
                arguments: "{\"cmd\":".into(),
            },
            AnswerEvent::ToolArguments {
                index: 0,
                fragment: "\"ls\"}".into(),
            },
            AnswerEvent::Finished(FinishReason::ToolCalls),
            AnswerEvent::Ended { usage: Some(usage) },
        ]
        .into_iter()
        .flat_map(|e| encoder.encode(e))
        .collect();
        let names: Vec<String> = events(&items).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let decoded = events(&items);
        for (i, (_, data)) in decoded.iter().enumerate() {
            assert_eq!(data["sequence_number"], i, "sequence numbers count from 0");
        }
        let (_, done) = &decoded[13];
        assert_eq!(
            done["item"],
            json!({"id": "fc_call_1", "type": "function_call", "status": "completed", "call_id": "call_1",
                "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"})
        );
        let (_, completed) = decoded.last().unwrap();
        let response = &completed["response"];
        assert_eq!(response["id"], "resp_abc");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["model"], "anthropic/claude-haiku-4-5");
        assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(response["output"][1]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(
            response["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 4,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14})
        );
        match items.last().unwrap() {
            StreamItem::Event {
                usage: billed,
                last,
                ..
            } => {
                assert!(*last, "the terminal event ends the protocol");
                assert_eq!(*billed, Some(usage));
            }
            StreamItem::Failed(_) => unreachable!(),
        }
        assert!(items[..items.len() - 1].iter().all(|i| !i.ends_stream()));
    }

    #[test]
    fn a_cut_answer_is_incomplete_and_an_empty_one_still_terminates() {
        let mut encoder = ResponseEncoder::new("google/gemini-2.5-flash", "x");
        let items: Vec<StreamItem> = [
            AnswerEvent::Text("par".into()),
            AnswerEvent::Finished(FinishReason::Length),
            AnswerEvent::Ended { usage: None },
        ]
        .into_iter()
        .flat_map(|e| encoder.encode(e))
        .collect();
        let (name, data) = events(&items).pop().unwrap();
        assert_eq!(name, "response.incomplete");
        assert_eq!(
            data["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        let mut empty = ResponseEncoder::new("m", "x");
        let items = empty.encode(AnswerEvent::Ended { usage: None });
        let names: Vec<String> = events(&items).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
    }

    #[test]
    fn a_whole_answer_is_a_response_object() {
        let answer = Answer {
            id: "r1".into(),
            content: Some(String::new()),
            tool_calls: vec![AnswerToolCall {
                id: "call_9".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish: FinishReason::ToolCalls,
            usage: None,
        };
        let out = response(&answer, "google/gemini-2.5-flash");
        assert_eq!(out["object"], "response");
        assert_eq!(out["status"], "completed");
        assert_eq!(
            out["output"].as_array().unwrap().len(),
            1,
            "no empty message"
        );
        assert_eq!(out["output"][0]["type"], "function_call");
        assert_eq!(out["output"][0]["call_id"], "call_9");
        assert_eq!(out["model"], "google/gemini-2.5-flash");
    }

    #[test]
    fn a_failure_is_a_response_failed_event_with_the_error() {
        let bytes = failed_event(&GatewayError::UpstreamTimeout, 7);
        let text = std::str::from_utf8(&bytes).unwrap();
        let data: Value =
            serde_json::from_str(text.split_once("data: ").unwrap().1.trim_end()).unwrap();
        assert!(text.starts_with("event: response.failed\n"));
        assert_eq!(data["sequence_number"], 7);
        assert_eq!(data["response"]["status"], "failed");
        assert!(data["response"]["error"]["message"].is_string());
    }
}
