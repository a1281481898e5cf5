//! OpenAI Chat Completions (`/v1/chat/completions`): the request as a conversation, answers as a
//! `chat.completion` or as `chat.completion.chunk` events, and chat answers read back (`decode`) where
//! another dialect is encoded from them.

mod decode;
mod reply;
mod request;
mod usage;

pub(crate) use decode::{ChunkDecoder, answer, same_name};
pub(crate) use reply::{ChunkEncoder, completion};
pub use usage::{CompletionDetails, OpenAiUsage, PromptDetails};
