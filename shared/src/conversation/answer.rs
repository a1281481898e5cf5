//! An upstream's answer in the gateway's model: what a translating provider decodes its upstream's reply
//! (whole, or event by event when streamed) into, and what the client's dialect is encoded from
//! (`crate::dialects`). Passthrough replies never take this detour.

use crate::usage::TokenUsage;

/// Why the model stopped, in the terms every dialect can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    /// The output limit (or the context window) was reached.
    Length,
    ToolCalls,
    /// A safety system withheld or cut the answer, or the model refused.
    ContentFilter,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// A reason compares equal to its OpenAI name (`"stop"`, `"length"`, ...).
impl PartialEq<&str> for FinishReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_openai() == *other
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text.
    pub arguments: String,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The upstream's id for it (or the provider's stand-in when it gave none).
    pub id: String,
    /// The text; `None` when there is none to show (only tool calls, or a blocked answer).
    pub content: Option<String>,
    pub tool_calls: Vec<AnswerToolCall>,
    pub finish: FinishReason,
    /// The upstream's count; `None` when it reported none (the call is then billed by an estimate).
    pub usage: Option<TokenUsage>,
}

/// One step of a streamed answer, in order: `Started`, then text and tool calls, `Finished`, `Ended`.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    Started {
        id: String,
    },
    Text(String),
    /// A tool call begins; `arguments` is whatever of them came with it (all of them for Gemini).
    ToolCall {
        index: usize,
        id: String,
        name: String,
        arguments: String,
    },
    /// More of a tool call's arguments.
    ToolArguments {
        index: usize,
        fragment: String,
    },
    Finished(FinishReason),
    /// The answer is complete; `usage` is the upstream's count for the whole call, if it gave one.
    Ended {
        usage: Option<TokenUsage>,
    },
}
