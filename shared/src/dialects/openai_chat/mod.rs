//! OpenAI Chat Completions (`/v1/chat/completions`): the request as a conversation, and answers as a
//! `chat.completion` or as `chat.completion.chunk` events.

mod reply;
mod request;

pub(crate) use reply::{ChunkEncoder, completion};
