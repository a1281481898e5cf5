//! An OpenAI reply decoded into the gateway's answer model (`dialects::openai_chat`), tool names restored;
//! `dialects::anthropic_messages` renders it as an Anthropic `message`.

use super::*;

/// A whole OpenAI `chat.completion` as an answer, tool names restored.
pub(super) fn to_answer(completion: &Value, names: &ToolNames) -> Result<Answer, GatewayError> {
    openai_chat::answer(completion, &|name| names.original(name).to_owned())
}

/// A whole OpenAI chat.completion as an Anthropic `message`, with the usage to bill (None when the
/// upstream reported none).
pub fn to_message(
    completion: &Value,
    model: &Model,
    names: &ToolNames,
) -> Result<(Value, Option<TokenUsage>), GatewayError> {
    let answer = to_answer(completion, names)?;
    Ok((
        anthropic_messages::message(&answer, &model.id),
        answer.usage,
    ))
}
