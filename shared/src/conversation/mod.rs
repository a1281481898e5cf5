//! The gateway's own model of a chat request, and of its answer (`answer`). The request is what every
//! translating provider reads, parsed once from the inbound dialect (`crate::dialects`) and mapped
//! from here to each upstream's format; the answer is what they decode
//! their upstream's reply into, and what the client's dialect is encoded from. Passthrough providers
//! never build either: a request whose inbound and upstream formats are the same goes upstream as the
//! client's own bytes (`providers::RequestBody`).
//!
//! The model keeps what the client said, not what an upstream accepts: a part type or a missing field
//! one upstream can carry and another cannot is refused by that upstream's mapping, in its own words.

use serde_json::Value;

mod answer;

pub use answer::{Answer, AnswerEvent, AnswerToolCall, FinishReason};

/// One chat request: the conversation, the tools it may call, and how the answer is shaped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    /// In the client's order; the index of each is its place in the request (for error messages).
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)`: at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    pub output: Option<OutputFormat>,
    /// The most output the client allows (`max_completion_tokens`, else `max_tokens`).
    pub max_output_tokens: Option<u64>,
    pub sampling: Sampling,
}

/// Who speaks a message. An unknown role is kept so the mapping can name it.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Unknown(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Content,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers, and the tool's name when the client gave it.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// A message's content as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// `null` or absent.
    Empty,
    Text(String),
    Parts(Vec<Part>),
    /// Neither a string nor an array: every mapping refuses it.
    Invalid,
}

/// One content part. Fields a part needs but lacks are `None`; the mapping says what is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(Option<String>),
    /// `image_url`: an http(s) or data URL.
    Image {
        url: Option<String>,
    },
    /// `input_audio`: base64 data and its format (`wav`, `mp3`).
    Audio {
        data: Option<String>,
        format: Option<String>,
    },
    /// `file`: inline file data (a data URL); uploaded file ids are not carried.
    File {
        data: Option<String>,
        filename: Option<String>,
    },
    /// A tool's result inside a user turn (Anthropic's `tool_result` block): its text and images.
    ToolResult {
        call_id: String,
        content: ToolResultContent,
        is_error: bool,
    },
    /// Any other `type`, kept so the mapping can name it.
    Other(Option<String>),
}

/// What a tool returned: text, or text and images in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolResultContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: Option<String>,
    /// The call's arguments, always a JSON object (empty when the client sent none).
    pub arguments: Value,
    /// Gemini's thought signature, when the client kept it beside the call (`extra_content.google`).
    pub thought_signature: Option<String>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: Option<String>,
    pub description: Option<String>,
    /// The parameters' JSON Schema, when it is an object.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
    /// A tool the provider runs itself (Anthropic's `web_search_20250305`, ...), by its type; `None`
    /// for the client's own functions.
    pub hosted: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    Required,
    None,
    Function(String),
}

/// The answer's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    Text,
    JsonObject,
    /// `schema` when the client gave one as an object.
    JsonSchema {
        schema: Option<Value>,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    /// Stop sequences as sent; each mapping drops the ones its upstream refuses (empty ones).
    pub stop: Vec<String>,
}
