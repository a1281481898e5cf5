//! What clients speak. Each inbound dialect is one folder: `request.rs` parses its request body into the
//! gateway's [`Conversation`](crate::conversation::Conversation) (once per call), and `reply.rs` encodes
//! an [`Answer`](crate::conversation::Answer) or its [`AnswerEvent`](crate::conversation::AnswerEvent)s
//! in its format. A proxy route (`functions/proxy`) names the dialect it speaks.

pub mod anthropic_messages;
pub mod openai_chat;
pub mod openai_responses;
