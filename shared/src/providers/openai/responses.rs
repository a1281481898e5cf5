//! The Responses API at OpenAI itself: the client's bytes go to `/v1/responses` with only the model name
//! swapped and `store: false` forced (QNP keeps nothing, and promises the provider keeps nothing for it
//! either), and the reply comes back byte for byte. Usage is read from the whole response or from the
//! stream's terminal event (`response.completed`, `response.incomplete` or `response.failed`); no other
//! event is parsed.

use super::*;

/// Responses usage (`input_tokens` include cached ones, `output_tokens` include reasoning).
#[derive(Debug, Default, Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    output_tokens_details: Option<CompletionDetails>,
}

impl From<ResponsesUsage> for TokenUsage {
    fn from(u: ResponsesUsage) -> TokenUsage {
        TokenUsage::from(OpenAiUsage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            prompt_tokens_details: u.input_tokens_details,
            completion_tokens_details: u.output_tokens_details,
        })
    }
}

/// A `response` object: only its usage and its output items' types are read.
#[derive(Deserialize)]
struct ResponseProbe {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
    #[serde(default)]
    output: Vec<OutputItem>,
    /// The tier that served the call, priced instead of the requested one.
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl ResponseProbe {
    /// The usage to bill: the token counts, and the hosted web searches the output shows.
    fn usage(self) -> Option<TokenUsage> {
        let searches = self
            .output
            .iter()
            .filter(|i| i.kind.as_deref() == Some("web_search_call"))
            .count() as u64;
        let tier = self.service_tier.as_deref().and_then(ServiceTier::reported);
        self.usage.map(|u| TokenUsage {
            web_search_calls: searches,
            service_tier: tier,
            ..TokenUsage::from(u)
        })
    }
}

/// A terminal stream event: the response it carries.
#[derive(Deserialize)]
struct TerminalProbe {
    #[serde(default)]
    response: Option<ResponseProbe>,
}

/// Whether the request carries OpenAI's hosted web search tool.
fn has_web_search(body: &RequestBody) -> bool {
    #[derive(Deserialize)]
    struct Tool {
        #[serde(default, rename = "type")]
        kind: Option<String>,
    }
    body.get::<Vec<Tool>>("tools", "an array of tools")
        .ok()
        .flatten()
        .is_some_and(|tools| {
            tools.iter().any(|t| {
                t.kind
                    .as_deref()
                    .is_some_and(crate::cost_bound::is_web_search)
            })
        })
}

/// The events after which a Responses stream has nothing more to say.
const TERMINAL: [&str; 4] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// An event's type: its `event:` line, else the `type` its data starts with (servers that omit names).
fn event_type(event: &[u8]) -> Option<&str> {
    let first = event.split(|&b| b == b'\n').next()?;
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if let Some(name) = first.strip_prefix(b"event:") {
        return std::str::from_utf8(name).ok().map(str::trim);
    }
    let rest = first.strip_prefix(b"data:")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"{\"type\":\"")?;
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// One upstream event, forwarded as it is; the terminal one carries the usage and ends the stream.
fn classify(event: Bytes) -> StreamItem {
    let terminal = event_type(&event).is_some_and(|t| TERMINAL.contains(&t));
    let usage = if terminal {
        sse::data(&event)
            .and_then(|data| serde_json::from_slice::<TerminalProbe>(&data).ok())
            .and_then(|probe| probe.response?.usage())
    } else {
        None
    };
    StreamItem::Event {
        bytes: event,
        usage,
        usage_only: false,
        last: terminal,
    }
}

/// A Responses stream forwarded as it is; one that ends before its terminal event failed.
struct ResponsesPassthrough;

impl Translate for ResponsesPassthrough {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        vec![classify(event)]
    }
}

impl OpenAi {
    pub(super) async fn responses_native(
        &self,
        model: &Model,
        request: ChatRequest,
    ) -> Result<Reply, GatewayError> {
        let mut body = request.body;
        body.set("model", &model.upstream_model);
        body.set("store", &false);
        if body.raw("max_tool_calls").is_none() && has_web_search(&body) {
            // The reservation counted this many searches (`CostBound::responses`): no more may run.
            body.set("max_tool_calls", &crate::cost_bound::DEFAULT_WEB_SEARCHES);
        }
        let response = self
            .post(&self.responses_url, body.to_bytes(), request.stream)
            .await?;
        if request.stream {
            return Ok(Reply::Stream(sse::translate(
                self.upstream.events(response),
                ResponsesPassthrough,
            )));
        }
        self.whole_response(response).await
    }

    /// A whole `response` (or compaction) body, passed through; its usage read.
    async fn whole_response(&self, response: reqwest::Response) -> Result<Reply, GatewayError> {
        let body = self.upstream.body(response).await?;
        let usage = serde_json::from_slice::<ResponseProbe>(&body)
            .ok()
            .and_then(ResponseProbe::usage);
        Ok(Reply::Complete { body, usage })
    }

    /// `/v1/responses/compact`, passed through whole.
    pub(super) async fn compact_native(
        &self,
        model: &Model,
        mut body: RequestBody,
    ) -> Result<Reply, GatewayError> {
        body.set("model", &model.upstream_model);
        let response = self.post(&self.compact_url, body.to_bytes(), false).await?;
        self.whole_response(response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_terminal_event_is_read_and_it_ends_the_stream() {
        let delta = Bytes::from_static(
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"delta\":\"usage\"}\n\n",
        );
        match classify(delta) {
            StreamItem::Event { usage, last, .. } => assert!(usage.is_none() && !last),
            StreamItem::Failed(_) => unreachable!(),
        }
        let completed = Bytes::from_static(
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_1\",\"output\":[],\"service_tier\":\"flex\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":3,\"cache_write_tokens\":4},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":5},\"total_tokens\":19}}}\n\n",
        );
        match classify(completed) {
            StreamItem::Event { usage, last, .. } => {
                assert!(last);
                let usage = usage.unwrap();
                assert_eq!(
                    (
                        usage.prompt_tokens,
                        usage.cached_tokens,
                        usage.completion_tokens,
                        usage.reasoning_tokens
                    ),
                    (12, 3, 7, 5)
                );
                // Cache writes are billed above input, at the tier the answer reports.
                assert_eq!(usage.cache_write_tokens, 4);
                assert_eq!(usage.service_tier, Some(crate::pricing::ServiceTier::Flex));
            }
            StreamItem::Failed(_) => unreachable!(),
        }
        // Without an `event:` line the type is read from the data.
        let unnamed = Bytes::from_static(
            b"data: {\"type\":\"response.incomplete\",\"response\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n",
        );
        assert!(matches!(
            classify(unnamed),
            StreamItem::Event {
                last: true,
                usage: Some(_),
                ..
            }
        ));
        assert_eq!(event_type(b"event: error\ndata: {}\n\n"), Some("error"));
    }
}
