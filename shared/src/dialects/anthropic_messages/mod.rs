//! Anthropic Messages (`/v1/messages`): the request as a conversation, and answers as a `message` or as
//! Anthropic's named stream events.

mod reply;
mod request;

pub(crate) use reply::{EventEncoder, message};
