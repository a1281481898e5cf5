//! OpenAI's chunk stream, forwarded byte for byte: only events that mention usage are parsed, and the
//! usage-only chunk is flagged so the proxy can hold it back from clients that did not ask for it.

use super::*;

pub(super) const DONE: &[u8] = b"[DONE]";

/// Classifies one upstream SSE event. Only events that mention usage are parsed at all.
pub(super) fn classify(event: Bytes) -> StreamItem {
    let last = is_done(&event);
    let mut usage = None;
    let mut usage_only = false;
    if memchr::memmem::find(&event, b"\"usage\"").is_some()
        && let Some(data) = sse::data(&event)
        && let Ok(probe) = serde_json::from_slice::<UsageProbe>(&data)
    {
        usage_only = probe.choices.as_ref().is_none_or(|c| c.is_empty());
        usage = probe.usage();
        usage_only &= usage.is_some();
    }
    StreamItem::Event {
        bytes: event,
        usage,
        usage_only,
        last,
    }
}

pub(super) fn is_done(event: &[u8]) -> bool {
    sse::data(event).is_some_and(|d| d == DONE)
}

/// OpenAI's stream forwarded as it is, each event classified; one that ends without `[DONE]` failed.
pub(super) struct Passthrough;

impl Translate for Passthrough {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        vec![classify(event)]
    }
}
