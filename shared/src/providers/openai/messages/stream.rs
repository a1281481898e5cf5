//! OpenAI chunks decoded into answer events (tool names restored), which `dialects::anthropic_messages`
//! renders as Anthropic's named stream events.

use super::*;

/// Translates one OpenAI chunk stream into Anthropic events, chunk by chunk: the first upstream event
/// starts the message, each run of text and each tool call (by OpenAI's tool-call index) is a content
/// block, and `[DONE]` ends it with the stop reason and the final usage chunk's counts.
pub struct StreamTranslator {
    pub(super) names: ToolNames,
    pub(super) decoder: ChunkDecoder,
    pub(super) events: EventEncoder,
}

impl StreamTranslator {
    /// `prompt_tokens` is message_start's figure for the prompt, before the upstream's count arrives.
    pub fn new(model: &Model, names: ToolNames, prompt_tokens: u64) -> StreamTranslator {
        StreamTranslator {
            names,
            decoder: ChunkDecoder::default(),
            events: EventEncoder::new(&model.id, "openai", prompt_tokens),
        }
    }

    /// The Anthropic items for one upstream SSE event (framed, with its trailing blank line).
    pub fn on_event(&mut self, event: &[u8]) -> Vec<StreamItem> {
        let names = &self.names;
        match self
            .decoder
            .on_event(event, &|name| names.original(name).to_owned())
        {
            Ok(answer_events) => answer_events
                .into_iter()
                .flat_map(|e| self.events.encode(e))
                .collect(),
            Err(err) => vec![StreamItem::Failed(err)],
        }
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        self.on_event(&event)
    }
}

/// An OpenAI stream body as Anthropic events, applying the idle timeout. A broken body, an error
/// event, or an end without `[DONE]` (the connection dropped) ends it with `StreamItem::Failed`.
pub fn message_stream<S, E>(
    body: S,
    translator: StreamTranslator,
    idle: Duration,
    total: Duration,
) -> BoxStream<'static, StreamItem>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    sse::translate(
        UpstreamEvents::from_stream(body, idle, "openai").within(total),
        translator,
    )
}
