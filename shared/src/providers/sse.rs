//! Server-sent-event framing that keeps each event's original bytes.
//!
//! The proxy forwards upstream events unchanged (never re-serialised), and only needs to look inside the
//! few that carry usage. So this splits the byte stream at event boundaries into zero-copy `Bytes` slices
//! and offers the `data:` payload for inspection, instead of decoding every event into owned strings.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use super::StreamItem;
use crate::error::GatewayError;

/// JSON keys whose string values are generated output in the event formats QNP streams: OpenAI chunks
/// (`content`, `refusal`, `reasoning_content`, tool-call `arguments`) and Anthropic deltas (`text`,
/// `partial_json`, `thinking`).
const OUTPUT_KEYS: [&[u8]; 7] = [
    b"\"content\":\"",
    b"\"arguments\":\"",
    b"\"text\":\"",
    b"\"partial_json\":\"",
    b"\"thinking\":\"",
    b"\"reasoning_content\":\"",
    b"\"refusal\":\"",
];

/// About how many bytes of generated output an event carries: the lengths of its output strings, as
/// written (escapes count as written, so this leans high). What a usage estimate is made from when a
/// provider reports no usage, instead of the event's size, whose JSON framing would bill a one-token
/// chunk as fifty. A scan for a few keys, not a parse: it runs on events as they pass.
pub fn output_bytes(event: &[u8]) -> usize {
    // Responses events repeat their output: each delta once, then the whole text again in the item's
    // done events and the terminal event. Only the deltas count.
    if let Some(rest) = event.strip_prefix(b"event: response.") {
        let name = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        if !name.trim_ascii_end().ends_with(b".delta") {
            return 0;
        }
        return strings_after(event, &[b"\"delta\":\""]);
    }
    strings_after(event, &OUTPUT_KEYS)
}

/// The total length of the JSON string values that follow any of `keys` in `event`.
fn strings_after(event: &[u8], keys: &[&[u8]]) -> usize {
    let mut total = 0;
    for &key in keys {
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&event[from..], key) {
            let start = from + at + key.len();
            let mut end = start;
            // The string ends at the first quote not escaped by a backslash.
            while let Some(q) = memchr::memchr(b'"', &event[end..]) {
                let quote = end + q;
                let backslashes = event[start..quote]
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\\')
                    .count();
                end = quote + 1;
                if backslashes % 2 == 0 {
                    total += quote - start;
                    break;
                }
            }
            from = end.max(start);
        }
    }
    total
}

/// The largest event an upstream may send (OpenAI's terminal Responses event repeats the whole answer,
/// a few MiB at most): past it the stream is the upstream's failure, so one endless line cannot grow the
/// process without bound. Per stream, memory is at most this and one chunk.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub struct SseFramer {
    buffer: BytesMut,
}

/// Position just past the first blank line (event boundary) in `buf`, if any.
fn boundary(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = memchr::memchr(b'\n', &buf[i..]) {
        let at = i + pos;
        let rest = &buf[at + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

impl SseFramer {
    /// Adds a chunk and returns the complete events it finished, each with its trailing blank line.
    pub fn push(&mut self, chunk: Bytes) -> Vec<Bytes> {
        let mut events = Vec::new();
        // Fast path: the common case is a chunk that is exactly one or more whole events.
        if self.buffer.is_empty() {
            let mut chunk = chunk;
            while let Some(end) = boundary(&chunk) {
                events.push(chunk.split_to(end));
            }
            if !chunk.is_empty() {
                self.buffer.extend_from_slice(&chunk);
            }
            return events;
        }
        self.buffer.extend_from_slice(&chunk);
        while let Some(end) = boundary(&self.buffer) {
            events.push(self.buffer.split_to(end).freeze());
        }
        events
    }

    /// Bytes of an event not finished yet.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Whatever is left when the stream ends (an unterminated final event).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.buffer.is_empty()).then(|| self.buffer.split().freeze())
    }
}

/// An upstream's SSE body as complete events, each provider's reading loop in one place: the idle
/// timeout applies between chunks, a broken body or a stall is a `GatewayError`, and an unterminated
/// final event is still delivered at the end of the body.
pub struct UpstreamEvents {
    body: BoxStream<'static, Result<Bytes, String>>,
    framer: SseFramer,
    ready: VecDeque<Bytes>,
    idle: Duration,
    /// When the stream is cut whatever it sends; none until `within` sets one.
    deadline: Option<tokio::time::Instant>,
    provider: &'static str,
    ended: bool,
}

impl UpstreamEvents {
    pub fn new(
        response: reqwest::Response,
        idle: Duration,
        provider: &'static str,
    ) -> UpstreamEvents {
        UpstreamEvents::from_stream(response.bytes_stream(), idle, provider)
    }

    /// Over any byte stream (tests feed synthetic chunkings and failures).
    pub fn from_stream<S, E>(body: S, idle: Duration, provider: &'static str) -> UpstreamEvents
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        UpstreamEvents {
            body: body.map(|chunk| chunk.map_err(|e| e.to_string())).boxed(),
            framer: SseFramer::default(),
            ready: VecDeque::new(),
            idle,
            deadline: None,
            provider,
            ended: false,
        }
    }

    /// Cuts the stream `total` from now, however steadily it drips: a clean timeout, not a stream that
    /// runs forever.
    pub fn within(mut self, total: Duration) -> UpstreamEvents {
        self.deadline = Some(tokio::time::Instant::now() + total);
        self
    }

    /// The next complete event; `None` once the body has ended cleanly.
    pub async fn next(&mut self) -> Option<Result<Bytes, GatewayError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let wait = match self.deadline {
                Some(deadline) => self
                    .idle
                    .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                None => self.idle,
            };
            match tokio::time::timeout(wait, self.body.next()).await {
                Err(_) => {
                    if self
                        .deadline
                        .is_some_and(|d| tokio::time::Instant::now() >= d)
                    {
                        tracing::warn!(
                            provider = self.provider,
                            "an upstream stream ran past its time limit; it was cut"
                        );
                    }
                    self.ended = true;
                    return Some(Err(GatewayError::UpstreamTimeout));
                }
                Ok(Some(Ok(chunk))) => {
                    self.ready.extend(self.framer.push(chunk));
                    if self.framer.pending() > MAX_EVENT_BYTES {
                        tracing::warn!(
                            provider = self.provider,
                            bytes = self.framer.pending(),
                            "an upstream event passed the size bound; the stream is cut"
                        );
                        self.ended = true;
                        self.framer = SseFramer::default();
                        return Some(Err(GatewayError::UpstreamFailed));
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(provider = self.provider, error = %e, "upstream stream broke");
                    return Some(Err(GatewayError::UpstreamFailed));
                }
                Ok(None) => {
                    self.ended = true;
                    self.ready.extend(self.framer.finish());
                }
            }
        }
    }
}

/// Turns an upstream's events into the items its client gets, one event at a time: every provider's
/// stream is one of these, run by [`translate`].
pub trait Translate: Send + 'static {
    /// The items for one upstream event (framed, with its trailing blank line).
    fn event(&mut self, event: Bytes) -> Vec<StreamItem>;

    /// The items once the upstream's body has ended. By default the answer is incomplete: the body ended
    /// before the protocol's end (`[DONE]`, `message_stop`), so the connection dropped.
    fn end(&mut self) -> Vec<StreamItem> {
        tracing::warn!("upstream stream ended before its protocol's end");
        vec![StreamItem::Failed(GatewayError::UpstreamFailed)]
    }

    /// Whether failing to read more after what came so far still ends the answer cleanly with [`end`]
    /// (an answer that is finished but for its usage, say).
    ///
    /// [`end`]: Translate::end
    fn ends_cleanly_on(&self, _err: &GatewayError) -> bool {
        false
    }
}

/// The items of `events` through `translator`, until one ends the stream.
pub fn translate(
    mut events: UpstreamEvents,
    mut translator: impl Translate,
) -> BoxStream<'static, StreamItem> {
    async_stream::stream! {
        loop {
            let (items, last_read) = match events.next().await {
                Some(Ok(event)) => (translator.event(event), false),
                Some(Err(err)) if translator.ends_cleanly_on(&err) => (translator.end(), true),
                Some(Err(err)) => (vec![StreamItem::Failed(err)], true),
                None => (translator.end(), true),
            };
            for item in items {
                let end = item.ends_stream();
                yield item;
                if end {
                    return;
                }
            }
            if last_read {
                return;
            }
        }
    }
    .boxed()
}

impl Drop for UpstreamEvents {
    fn drop(&mut self) {
        // Done with the protocol before the body ended (OpenAI's [DONE], Anthropic's message_stop):
        // consume the end of the body if it already arrived, so the pooled connection can be reused.
        // Never waits.
        if !self.ended {
            let _ = self.body.next().now_or_never();
        }
    }
}

pub use crate::wire::event_data as data;

/// The event's `event:` name, if it has one (Anthropic names every event; OpenAI names none).
pub fn event_name(event: &[u8]) -> Option<&[u8]> {
    event.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.strip_prefix(b"event:")
            .map(|rest| rest.strip_prefix(b" ").unwrap_or(rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_that_never_ends_is_cut_at_the_bound() {
        // A first whole event, then one line of 64 KiB chunks without end.
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"x\":\""))
        });
        let endless = futures_util::stream::repeat_with(|| Ok(Bytes::from(vec![b'a'; 64 * 1024])));
        let mut events =
            UpstreamEvents::from_stream(first.chain(endless), Duration::from_secs(5), "test");
        assert_eq!(
            &events.next().await.unwrap().unwrap()[..],
            b"data: {\"a\":1}\n\n"
        );
        assert!(matches!(
            events.next().await,
            Some(Err(GatewayError::UpstreamFailed))
        ));
        assert!(
            events.next().await.is_none(),
            "nothing more is read after the cut"
        );
    }

    #[test]
    fn output_bytes_count_generated_strings_not_framing() {
        let chunk = br#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" more"},"finish_reason":null}]}

"#;
        assert_eq!(output_bytes(chunk), 5);
        let escaped = br#"data: {"choices":[{"delta":{"content":"a\"b\\"}}]}"#;
        assert_eq!(output_bytes(escaped), 6, "as written: a \" b \\");
        let tool = br#"data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"q\":1}"}}]}}]}"#;
        assert_eq!(output_bytes(tool), 9);
        let anthropic = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
        assert_eq!(output_bytes(anthropic), 5);
        assert_eq!(output_bytes(b"data: [DONE]\n\n"), 0);
        assert_eq!(output_bytes(br#"data: {"content":"never closed"#), 0);
        // Responses events: the delta counts, the repetitions of the text in done events do not.
        let delta = b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n";
        assert_eq!(output_bytes(delta), 5);
        let done = b"event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"Hello\"}\n\n";
        assert_eq!(output_bytes(done), 0);
        let args = b"event: response.function_call_arguments.delta\ndata: {\"delta\":\"{}\"}\n\n";
        assert_eq!(output_bytes(args), 2);
    }

    #[test]
    fn splits_events_across_arbitrary_chunking() {
        let text = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: keepalive\n\nevent: ping\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for size in 1..text.len() {
            let mut framer = SseFramer::default();
            let mut events = Vec::new();
            for chunk in text.chunks(size) {
                events.extend(framer.push(Bytes::copy_from_slice(chunk)));
            }
            assert!(framer.finish().is_none());
            let joined: Vec<u8> = events.iter().flat_map(|e| e.to_vec()).collect();
            assert_eq!(joined, text.to_vec(), "chunk size {size}");
            assert_eq!(events.len(), 5);
            assert_eq!(data(&events[0]).unwrap(), b"{\"a\":1}");
            assert_eq!(data(&events[1]).unwrap(), b"{\"b\":2}");
            assert_eq!(data(&events[2]), None);
            assert_eq!(data(&events[3]).unwrap(), b"x\ny");
            assert_eq!(event_name(&events[3]).unwrap(), b"ping");
        }
    }

    #[test]
    fn keeps_an_unterminated_tail() {
        let mut framer = SseFramer::default();
        assert!(framer.push(Bytes::from_static(b"data: partial")).is_empty());
        assert_eq!(
            framer.finish().unwrap(),
            Bytes::from_static(b"data: partial")
        );
    }
}
