//! What a request may cost at most, read from the request fields that decide it, so that a call's
//! reservation against a spend cap or a token limit is a true upper bound of what the provider can bill.
//!
//! Three rules make the bound hold:
//! * **Output**: the largest limit any accepted field allows (`max_tokens` and `max_completion_tokens`
//!   may both be sent and OpenAI-compatible servers differ in which one they read), never more than the
//!   model's own output limit, times every choice the request asks for (`n`), plus a predicted output's
//!   length (rejected prediction tokens are billed as output).
//! * **Prompt**: one token per byte of the body (every tokenizer the providers use makes at least one
//!   byte of text per token, and JSON only adds bytes), plus a fixed allowance for each part the body
//!   names but does not contain in full: an image, a document, an Anthropic-defined tool whose definition
//!   the provider expands.
//! * **Tier**: a `service_tier` the request selects (`flex`, `priority`) is reserved and priced at that
//!   tier's rates, and refused for a model the catalog lists no such rates for; long-context rates apply
//!   to the bound whenever the prompt may exceed the model's threshold.
//! * **Refusal**: fields whose price the catalog cannot express (hosted tools billed per use, audio,
//!   files stored at the provider) get a 400 naming the field; they are never forwarded unpriced.
//!
//! Every count saturates; numeric fields outside what any provider accepts are refused.
//!
//! Only the shape of the messages is read (content part types); their text is skipped unparsed.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

use crate::catalog::{Model, ModelKind};
use crate::error::GatewayError;
use crate::pricing::ServiceTier;
use crate::usage::TokenUsage;
use crate::wire::RequestBody;

/// The largest value a token-count field may carry (providers' own limits are far below it).
pub const MAX_TOKENS_FIELD: u64 = u32::MAX as u64;
/// OpenAI's own limit for `n`.
pub const MAX_CHOICES: u64 = 128;
/// Tokens allowed for one document or file part (a PDF): the providers cap a document at 100 pages (Gemini
/// at 1,000 pages of 258 tokens) and a page at a few thousand tokens.
pub const DOCUMENT_TOKENS: u64 = 300_000;
/// Tokens allowed for an Anthropic-defined tool (bash, text editor, computer use, memory): the provider
/// adds its own definition and system prompt, a few hundred tokens each.
pub const DEFINED_TOOL_TOKENS: u64 = 2_000;

/// The request facts that bound its cost, before a model is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CostBound {
    /// Size of the request body.
    pub body_bytes: u64,
    /// The client's output limit per choice (the largest accepted field), if it gave one.
    pub max_output: Option<u64>,
    /// Choices generated (`n`), at least 1.
    pub choices: u64,
    /// Output tokens that may be billed beyond the limit (a predicted output's length).
    pub extra_output: u64,
    pub images: u64,
    pub documents: u64,
    /// Extra prompt tokens the provider adds (tool definitions it expands).
    pub extra_prompt: u64,
    /// Hosted web searches the call may run (a Responses `web_search` tool: its `max_tool_calls`, else
    /// [`DEFAULT_WEB_SEARCHES`], which the provider is then sent), each at the model's per-call fee.
    pub web_searches: u64,
    /// The processing tier the request selects; standard when it names none (or `auto`/`default`).
    pub service_tier: ServiceTier,
    /// The request asks OpenAI for extended prompt-cache retention (`prompt_cache_retention` other
    /// than `in_memory`), whose writes are billed at the long-lived write rate.
    pub long_cache_writes: bool,
}

/// The web searches a call with the `web_search` tool and no `max_tool_calls` may run: QNP sends this
/// limit upstream so the reservation is a true bound (Codex sends the tool on every call).
pub const DEFAULT_WEB_SEARCHES: u64 = 10;
/// The most `max_tool_calls` a request may ask for.
pub const MAX_WEB_SEARCHES: u64 = 100;

/// Whether a Responses tool type is OpenAI's hosted web search (`web_search`, `web_search_preview` and
/// their dated versions).
pub fn is_web_search(kind: &str) -> bool {
    kind.starts_with("web_search")
}

/// The worst case for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelBound {
    /// Prompt tokens at most.
    pub prompt_tokens: u64,
    /// Output tokens at most, over every choice.
    pub output_tokens: u64,
    /// USD at most: prompt tokens at the dearest input-side rate (any of them may be a cache write),
    /// output at the output rate.
    pub cost_usd: f64,
}

impl CostBound {
    /// An embeddings request: the input is all there is.
    pub fn embeddings(body_bytes: usize) -> CostBound {
        CostBound {
            body_bytes: body_bytes as u64,
            choices: 1,
            ..CostBound::default()
        }
    }

    /// An OpenAI chat completion request.
    pub fn chat_completions(
        body: &RequestBody,
        body_bytes: usize,
    ) -> Result<CostBound, GatewayError> {
        let mut bound = CostBound {
            body_bytes: body_bytes as u64,
            choices: 1,
            ..CostBound::default()
        };
        for field in ["max_tokens", "max_completion_tokens"] {
            if let Some(value) = token_field(body, field)? {
                bound.max_output = Some(bound.max_output.map_or(value, |v| v.max(value)));
            }
        }
        if let Some(n) = body.get::<u64>("n", "an integer from 1 to 128")? {
            if !(1..=MAX_CHOICES).contains(&n) {
                return Err(GatewayError::field(
                    "n",
                    "'n' must be an integer from 1 to 128",
                ));
            }
            bound.choices = n;
        }
        if let Some(raw) = body.raw("prediction").filter(|r| *r != "null") {
            bound.extra_output = raw.len() as u64;
        }
        bound.service_tier = requested_tier(body, &["auto", "default"])?;
        bound.long_cache_writes = extended_retention(body)?;
        refuse_present(body, &["web_search_options", "audio"])?;
        if let Some(modalities) = body.get::<Vec<Cow<str>>>("modalities", "an array of strings")?
            && modalities.iter().any(|m| m != "text")
        {
            return Err(unpriced(
                "modalities",
                "only text output is priced by this gateway; omit 'modalities' or send [\"text\"]",
            ));
        }
        if let Some(tools) = body.get::<Vec<ToolShape>>("tools", "an array of tools")? {
            for (i, tool) in tools.iter().enumerate() {
                match tool.kind.as_deref() {
                    Some("function") | Some("custom") => {}
                    other => {
                        return Err(unpriced(
                            &format!("tools[{i}]"),
                            &format!(
                                "tools of type {} are not available through this gateway (hosted \
                                 tools are billed per use, which it does not price); use function tools",
                                other.map_or("(none)".to_owned(), |t| format!("'{t}'"))
                            ),
                        ));
                    }
                }
            }
        }
        count_messages(&mut bound, body, |i| format!("messages[{i}].content"))?;
        Ok(bound)
    }

    /// An Anthropic Messages request.
    pub fn messages(body: &RequestBody, body_bytes: usize) -> Result<CostBound, GatewayError> {
        let mut bound = CostBound {
            body_bytes: body_bytes as u64,
            choices: 1,
            ..CostBound::default()
        };
        bound.max_output = token_field(body, "max_tokens")?;
        bound.service_tier = requested_tier(body, &["auto", "standard_only"])?;
        match body.get::<Cow<str>>("speed", "a string")?.as_deref() {
            None | Some("standard") => {}
            Some("fast") => bound.service_tier = ServiceTier::Fast,
            Some(_) => {
                return Err(GatewayError::field(
                    "speed",
                    "'speed' must be \"standard\" or \"fast\"",
                ));
            }
        }
        // US-only inference is billed at 1.1 times every rate, which the catalog does not express.
        if let Some(geo) = body.get::<Cow<str>>("inference_geo", "a string")?
            && geo != "global"
        {
            return Err(unpriced(
                "inference_geo",
                "inference pinned to one region is billed at rates this gateway does not price; \
                 omit 'inference_geo' or send \"global\"",
            ));
        }
        refuse_present(body, &["mcp_servers", "container"])?;
        if let Some(tools) = body.get::<Vec<ToolShape>>("tools", "an array of tools")? {
            for (i, tool) in tools.iter().enumerate() {
                match tool.kind.as_deref() {
                    None | Some("custom") => {}
                    Some(t) if CLIENT_TOOL_PREFIXES.iter().any(|p| t.starts_with(p)) => {
                        bound.extra_prompt = bound.extra_prompt.saturating_add(DEFINED_TOOL_TOKENS);
                    }
                    Some(t) => {
                        return Err(unpriced(
                            &format!("tools[{i}]"),
                            &format!(
                                "the server tool '{t}' is billed per use, which this gateway does not \
                                 price; run the tool in your client instead"
                            ),
                        ));
                    }
                }
            }
        }
        count_messages(&mut bound, body, |i| format!("messages.{i}.content"))?;
        if let Some(raw) = body.raw("system")
            && let Ok(Content::Parts(parts)) = serde_json::from_str::<Content>(raw)
        {
            count_parts(&mut bound, &parts, "system")?;
        }
        Ok(bound)
    }

    /// An OpenAI Responses request. Tools the client runs (functions, Codex's namespaces of functions,
    /// freeform and shell tools) cost tokens only; tools OpenAI runs are billed per call and refused.
    pub fn responses(body: &RequestBody, body_bytes: usize) -> Result<CostBound, GatewayError> {
        let mut bound = CostBound {
            body_bytes: body_bytes as u64,
            choices: 1,
            ..CostBound::default()
        };
        bound.max_output = token_field(body, "max_output_tokens")?;
        bound.service_tier = requested_tier(body, &["auto", "default"])?;
        bound.long_cache_writes = extended_retention(body)?;
        if let Some(tools) = body.get::<Vec<ResponsesTool>>("tools", "an array of tools")? {
            for (i, tool) in tools.iter().enumerate() {
                if tool.kind.as_deref().is_some_and(is_web_search) {
                    bound.web_searches = match token_field(body, "max_tool_calls")? {
                        Some(n) if n > MAX_WEB_SEARCHES => {
                            return Err(GatewayError::field(
                                "max_tool_calls",
                                format!("'max_tool_calls' must be at most {MAX_WEB_SEARCHES}"),
                            ));
                        }
                        Some(n) => n,
                        None => DEFAULT_WEB_SEARCHES,
                    };
                    continue;
                }
                client_tool(tool, &format!("tools[{i}]"))?;
            }
        }
        if let Some(raw) = body.raw("input").filter(|r| r.starts_with('[')) {
            let items: Vec<InputItemShape> = serde_json::from_str(raw).map_err(|_| {
                GatewayError::field(
                    "input",
                    "'input' must be a string or an array of input items",
                )
            })?;
            for (i, item) in items.iter().enumerate() {
                for (key, parts) in [("content", &item.content), ("output", &item.output)] {
                    if let Some(Content::Parts(parts)) = parts {
                        count_parts(&mut bound, parts, &format!("input[{i}].{key}"))?;
                    }
                }
            }
        }
        Ok(bound)
    }

    /// The worst case if `model` serves the call.
    pub fn for_model(&self, model: &Model) -> ModelBound {
        let (prompt_tokens, output_tokens) = match model.kind {
            ModelKind::Embedding => (self.body_bytes, 0),
            ModelKind::Chat => {
                let limit = model.output_limit();
                let per_choice = self.max_output.map_or(limit, |m| m.min(limit));
                let prompt = self
                    .body_bytes
                    .saturating_add(self.images.saturating_mul(model.image_tokens_max()))
                    .saturating_add(self.documents.saturating_mul(DOCUMENT_TOKENS))
                    .saturating_add(self.extra_prompt);
                let output = per_choice
                    .saturating_add(self.extra_output)
                    .saturating_mul(self.choices.max(1));
                (prompt, output)
            }
        };
        let fees = self.web_searches as f64 * model.web_search_per_call_usd.unwrap_or(0.0)
            + self.images as f64 * model.input_per_image_usd.unwrap_or(0.0);
        ModelBound {
            prompt_tokens,
            output_tokens,
            cost_usd: model.worst_cost_usd(
                self.service_tier,
                prompt_tokens,
                output_tokens,
                self.long_cache_writes,
            ) + fees,
        }
    }

    /// Refuses a call `model` cannot be priced for: a service tier it is not sold at, hosted web
    /// searches on a model without a fee.
    pub fn priced_for(&self, model: &Model) -> Result<(), GatewayError> {
        if model.tier_rates(self.service_tier).is_none() {
            return Err(GatewayError::field(
                "service_tier",
                format!(
                    "'{}' has no {} service tier in this gateway's catalog; omit 'service_tier' or use \
                     a model sold at that tier",
                    model.id,
                    self.service_tier.as_str()
                ),
            ));
        }
        if self.web_searches > 0 && model.web_search_per_call_usd.is_none() {
            return Err(GatewayError::field(
                "tools",
                format!(
                    "the hosted web_search tool runs at the provider and is billed per call, and '{}' has \
                     no web search price in this gateway's catalog; remove the tool (Codex: set \
                     web_search = \"disabled\" in config.toml) or use a model that has one",
                    model.id
                ),
            ));
        }
        Ok(())
    }

    /// The most output tokens per choice that keep this call's worst case on `model` within `usd`
    /// (prompt at its dearest rate first, then every choice's output), at most the model's limit; 0 when
    /// even the prompt does not fit.
    pub fn affordable_output(&self, model: &Model, usd: f64) -> u64 {
        let limit = model.output_limit();
        // Everything but the output: the prompt at its dearest rate, and any hosted searches.
        let prompt_usd = CostBound {
            max_output: Some(0),
            extra_output: 0,
            ..*self
        }
        .for_model(model)
        .cost_usd;
        let prompt_tokens = self.for_model(model).prompt_tokens;
        let (_, output_rate) =
            model.worst_rates(self.service_tier, prompt_tokens, self.long_cache_writes);
        let per_token = output_rate / 1_000_000.0 * self.choices.max(1) as f64;
        if per_token <= 0.0 {
            return if prompt_usd <= usd { limit } else { 0 };
        }
        let tokens = ((usd - prompt_usd) / per_token).floor();
        if !tokens.is_finite() || tokens <= 0.0 {
            return 0;
        }
        // Predicted output is billed on top of the limit.
        (tokens.min(u64::MAX as f64) as u64)
            .saturating_sub(self.extra_output)
            .min(limit)
    }

    /// The tokens a tokens-per-minute limit counts for this call before it runs, as OpenAI counts them:
    /// the prompt's estimate (about four bytes a token) plus the output the client asked for (its
    /// `max_tokens`, at most the model's limit, for every choice); nothing for output when it asked for
    /// none. The call settles to the provider's count afterwards, and an excess carries into the next
    /// minutes (`budget`).
    pub fn admission_tokens(&self, model: &Model) -> u64 {
        let prompt = TokenUsage::estimate(self.body_bytes as usize, 0).prompt_tokens;
        let asked = match (model.kind, self.max_output) {
            (ModelKind::Chat, Some(max)) => max.min(model.output_limit()),
            _ => 0,
        };
        let output = asked
            .saturating_add(self.extra_output)
            .saturating_mul(self.choices.max(1));
        prompt.saturating_add(output)
    }
}

/// Responses tool types the client executes: they cost the tokens of their calls and results only.
const RESPONSES_CLIENT_TOOLS: [&str; 5] =
    ["function", "custom", "local_shell", "shell", "apply_patch"];

fn client_tool(tool: &ResponsesTool, at: &str) -> Result<(), GatewayError> {
    match tool.kind.as_deref() {
        Some(kind) if RESPONSES_CLIENT_TOOLS.contains(&kind) => Ok(()),
        Some("namespace") => {
            for (j, inner) in tool.tools.iter().flatten().enumerate() {
                client_tool(inner, &format!("{at}.tools[{j}]"))?;
            }
            Ok(())
        }
        other => {
            let shown = other.map_or("(none)".to_owned(), |t| {
                format!("'{}'", t.chars().take(60).collect::<String>())
            });
            Err(unpriced(
                at,
                &format!(
                    "the hosted tool {shown} runs at the provider and is billed per call, which this \
                     gateway does not price; remove it (Codex: set web_search = \"disabled\" in \
                     config.toml) or use function tools"
                ),
            ))
        }
    }
}

#[derive(Deserialize)]
struct ResponsesTool<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    /// A namespace's functions.
    #[serde(default, borrow)]
    tools: Option<Vec<ResponsesTool<'a>>>,
}

/// A Responses input item: a message's content, or a function call's output (either may hold parts).
#[derive(Deserialize)]
struct InputItemShape<'a> {
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
    #[serde(default, borrow)]
    output: Option<Content<'a>>,
}

/// Anthropic-defined tools the client executes (priced as tokens only).
const CLIENT_TOOL_PREFIXES: [&str; 4] = ["bash_", "text_editor_", "computer_", "memory_"];

fn hosted_reason(field: &str) -> &'static str {
    match field {
        "web_search_options" => {
            "web search is billed per call, which this gateway does not price; omit 'web_search_options'"
        }
        "audio" => "audio output is not priced by this gateway; omit 'audio'",
        "mcp_servers" => {
            "the MCP connector runs tools at the provider, billed as it goes, which this gateway does \
             not price; run MCP servers in your client"
        }
        _ => "code execution containers are billed by the hour, which this gateway does not price",
    }
}

fn unpriced(field: &str, message: &str) -> GatewayError {
    GatewayError::field(field, message)
}

/// The tier a request's `service_tier` selects: standard for the values in `standard` (and none),
/// `flex`, `fast` (or its old name `priority`) or `ultrafast` on the OpenAI routes (whether the model is sold at it is checked per model in
/// [`CostBound::priced_for`]), and a 400 for anything else.
fn requested_tier(body: &RequestBody, standard: &[&str]) -> Result<ServiceTier, GatewayError> {
    let Some(tier) = body.get::<Cow<str>>("service_tier", "a string")? else {
        return Ok(ServiceTier::Standard);
    };
    if standard.contains(&tier.as_ref()) {
        return Ok(ServiceTier::Standard);
    }
    // Anthropic's requests select no tier beyond these (its fast mode is `speed`, read by the caller).
    let openai = standard.contains(&"default");
    match tier.as_ref() {
        "flex" if openai => Ok(ServiceTier::Flex),
        "priority" | "fast" if openai => Ok(ServiceTier::Fast),
        "ultrafast" if openai => Ok(ServiceTier::Ultrafast),
        _ => {
            let shown: String = tier.chars().take(40).collect();
            let mut allowed: Vec<String> = standard.iter().map(|t| format!("'{t}'")).collect();
            if openai {
                allowed.extend(["'flex'", "'fast'", "'priority'", "'ultrafast'"].map(String::from));
            }
            Err(GatewayError::field(
                "service_tier",
                format!(
                    "the service tier '{shown}' is not one this gateway prices; send {} or omit \
                     'service_tier'",
                    allowed.join(", ")
                ),
            ))
        }
    }
}

/// Whether an OpenAI request asks for extended prompt-cache retention (`24h`, or any value but the
/// default `in_memory`): its cache writes are billed at the model's long-lived write rate.
fn extended_retention(body: &RequestBody) -> Result<bool, GatewayError> {
    Ok(body
        .get::<Cow<str>>("prompt_cache_retention", "a string")?
        .is_some_and(|r| r != "in_memory"))
}

/// Refuses the first of `fields` the body sets: each runs something the gateway cannot price.
fn refuse_present(body: &RequestBody, fields: &[&str]) -> Result<(), GatewayError> {
    match fields
        .iter()
        .find(|f| body.raw(f).is_some_and(|r| r != "null"))
    {
        Some(field) => Err(unpriced(field, hosted_reason(field))),
        None => Ok(()),
    }
}

/// Counts the attachments of every message; `at` names a message's content for errors, in the route's
/// own notation.
fn count_messages(
    bound: &mut CostBound,
    body: &RequestBody,
    at: impl Fn(usize) -> String,
) -> Result<(), GatewayError> {
    let Some(raw) = body.raw("messages") else {
        return Ok(());
    };
    let messages: Vec<MessageShape> = serde_json::from_str(raw).map_err(|_| {
        GatewayError::field("messages", "'messages' must be an array of message objects")
    })?;
    for (i, message) in messages.iter().enumerate() {
        if let Some(Content::Parts(parts)) = &message.content {
            count_parts(bound, parts, &at(i))?;
        }
    }
    Ok(())
}

/// A token-count field: a non-negative integer no larger than [`MAX_TOKENS_FIELD`].
fn token_field(body: &RequestBody, field: &str) -> Result<Option<u64>, GatewayError> {
    let expected = format!("an integer from 0 to {MAX_TOKENS_FIELD}");
    let value = body.get::<u64>(field, &expected)?;
    if value.is_some_and(|v| v > MAX_TOKENS_FIELD) {
        return Err(GatewayError::field(
            field,
            format!("'{field}' must be {expected}"),
        ));
    }
    Ok(value)
}

fn count_parts(bound: &mut CostBound, parts: &[Part], at: &str) -> Result<(), GatewayError> {
    for (j, part) in parts.iter().enumerate() {
        match part.kind.as_deref() {
            Some("image_url") | Some("image") | Some("input_image") => {
                bound.images = bound.images.saturating_add(1);
            }
            Some("file") | Some("input_file") | Some("document") => {
                if part.file.as_ref().is_some_and(|f| f.file_id.is_some()) || part.file_id.is_some()
                {
                    return Err(GatewayError::field(
                        format!("{at}[{j}]"),
                        "files stored at the provider ('file_id') cannot be used through this gateway; \
                         send the file's data inline",
                    ));
                }
                bound.documents = bound.documents.saturating_add(1);
            }
            Some("input_audio") | Some("audio") => {
                return Err(GatewayError::field(
                    format!("{at}[{j}]"),
                    "audio input is not priced by this gateway",
                ));
            }
            _ => {}
        }
        // Tool results carry content of their own (Anthropic), which may hold images.
        if let Some(Content::Parts(inner)) = &part.content {
            count_parts(bound, inner, &format!("{at}[{j}].content"))?;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct ToolShape<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MessageShape<'a> {
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
    #[serde(default)]
    file: Option<FileShape>,
    /// Responses-style `input_file` parts carry the id at the top level.
    #[serde(default)]
    file_id: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct FileShape {
    #[serde(default)]
    file_id: Option<IgnoredAny>,
}

/// Message content: a string (skipped without copying) or an array of parts.
enum Content<'a> {
    Text,
    Parts(Vec<Part<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Content<'a>, E> {
                Ok(Content::Text)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<PartOrOther<'a>>()? {
                    if let PartOrOther::Part(part) = part {
                        parts.push(part);
                    }
                }
                Ok(Content::Parts(parts))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Content<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Content::Text)
            }
        }
        deserializer.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

/// An array element that is a part object, or anything else (a bare string some servers accept).
enum PartOrOther<'a> {
    Part(Part<'a>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for PartOrOther<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PartVisitor<'a> {
            type Value = PartOrOther<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PartOrOther<'a>, A::Error> {
                Part::deserialize(de::value::MapAccessDeserializer::new(map)).map(PartOrOther::Part)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<PartOrOther<'a>, E> {
                Ok(PartOrOther::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PartOrOther<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PartOrOther::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PartOrOther<'a>, E> {
                Ok(PartOrOther::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<PartOrOther<'a>, E> {
                Ok(PartOrOther::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<PartOrOther<'a>, E> {
                Ok(PartOrOther::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<PartOrOther<'a>, E> {
                Ok(PartOrOther::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<PartOrOther<'a>, E> {
                Ok(PartOrOther::Other)
            }
        }
        deserializer.deserialize_any(PartVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> RequestBody {
        RequestBody::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn output_is_the_largest_field_times_every_choice() {
        let catalog = Catalog::bundled();
        let model = catalog.get("openai/gpt-4o-mini").unwrap();
        let b =
            body(json!({"max_completion_tokens": 0, "max_tokens": 900, "n": 3, "messages": []}));
        let bound = CostBound::chat_completions(&b, 100).unwrap();
        assert_eq!(bound.for_model(model).output_tokens, 2_700);
        assert_eq!(bound.for_model(model).prompt_tokens, 100);
        // Never more than the model can produce per choice.
        let b = body(json!({"max_tokens": 4_000_000, "messages": []}));
        let bound = CostBound::chat_completions(&b, 10).unwrap();
        assert_eq!(bound.for_model(model).output_tokens, model.output_limit());
        let worst = bound.for_model(model);
        let expected = 10.0 * model.input_per_mtok / 1e6
            + model.output_limit() as f64 * model.output_per_mtok / 1e6;
        assert!((worst.cost_usd - expected).abs() < 1e-12);
    }

    #[test]
    fn prompts_are_priced_at_the_dearest_input_rate() {
        let catalog = Catalog::bundled();
        let claude = catalog
            .models()
            .iter()
            .find(|m| {
                m.provider == crate::catalog::ProviderKind::Anthropic && m.kind == ModelKind::Chat
            })
            .unwrap();
        let b = body(json!({"max_tokens": 1, "messages": []}));
        let bound = CostBound::messages(&b, 1_000_000).unwrap();
        // Any prompt token may be a 1-hour cache write: twice the input rate when not listed.
        let rate = claude
            .cache_write_1h_per_mtok
            .unwrap_or(2.0 * claude.input_per_mtok);
        let worst = bound.for_model(claude);
        assert!(worst.cost_usd >= rate - 1e-9, "{} < {rate}", worst.cost_usd);
    }

    #[test]
    fn anthropic_server_tools_are_refused_and_client_tools_allowed_for() {
        let b = body(
            json!({"max_tokens": 10, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        );
        let err = CostBound::messages(&b, 10).unwrap_err();
        assert!(err.to_string().contains("web_search_20250305"));
        let b = body(
            json!({"max_tokens": 10, "messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}, {"name": "mine", "input_schema": {}}]}),
        );
        assert_eq!(
            CostBound::messages(&b, 10).unwrap().extra_prompt,
            DEFINED_TOOL_TOKENS
        );
        for field in ["mcp_servers", "container"] {
            let b = body(json!({"max_tokens": 10, "messages": [], field: [{"x": 1}]}));
            assert!(CostBound::messages(&b, 10).is_err(), "{field}");
        }
        let b = body(
            json!({"max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]},
            {"type": "document", "source": {}}]}]}),
        );
        let bound = CostBound::messages(&b, 10).unwrap();
        assert_eq!((bound.images, bound.documents), (1, 1));
    }

    #[test]
    fn affordable_output_is_what_a_budget_buys_after_the_prompt() {
        let catalog = Catalog::bundled();
        let model = catalog.get("openai/gpt-4o-mini").unwrap();
        let bound =
            CostBound::chat_completions(&body(json!({"n": 2, "messages": []})), 1_000).unwrap();
        let prompt_usd = model.worst_cost_usd(ServiceTier::Standard, 1_000, 0, false);
        let per_token = model.output_per_mtok / 1e6 * 2.0;
        let usd = prompt_usd + 500.5 * per_token;
        assert_eq!(bound.affordable_output(model, usd), 500);
        // Never more than the model's limit, nothing when the prompt alone does not fit.
        assert_eq!(bound.affordable_output(model, 1e9), model.output_limit());
        assert_eq!(bound.affordable_output(model, prompt_usd / 2.0), 0);
        assert_eq!(bound.affordable_output(model, f64::NAN), 0);
        // The capped worst case fits the budget.
        let capped = CostBound {
            max_output: Some(500),
            ..bound
        };
        assert!(capped.for_model(model).cost_usd <= usd + 1e-12);
    }

    #[test]
    fn responses_bound_output_attachments_and_refuse_hosted_tools() {
        let catalog = Catalog::bundled();
        let model = catalog.get("openai/gpt-4o-mini").unwrap();
        let b = body(json!({"max_output_tokens": 700, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "x"},
                {"type": "input_image", "image_url": "https://x/y.png"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,AA"}]},
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "https://x/z.png"}]}],
            "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "apply_patch"},
                {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g"}]}]}));
        let bound = CostBound::responses(&b, 500).unwrap();
        assert_eq!((bound.images, bound.documents), (2, 1));
        assert_eq!(bound.for_model(model).output_tokens, 700);
        // Without max_output_tokens the model's own limit bounds it.
        let bound = CostBound::responses(&body(json!({"input": "hi"})), 10).unwrap();
        assert_eq!(bound.for_model(model).output_tokens, model.output_limit());
        // Web search is priced per call: bounded by max_tool_calls, else by the limit QNP sends.
        let searching = |extra: serde_json::Value| {
            let mut b = json!({"input": "x", "tools": [{"type": "web_search", "external_web_access": false}]});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            CostBound::responses(&body(b), 10)
        };
        assert_eq!(
            searching(json!({})).unwrap().web_searches,
            DEFAULT_WEB_SEARCHES
        );
        assert_eq!(
            searching(json!({"max_tool_calls": 3}))
                .unwrap()
                .web_searches,
            3
        );
        assert!(searching(json!({"max_tool_calls": 1000})).is_err());
        let with_searches = searching(json!({"max_tool_calls": 3})).unwrap();
        let fee = model.web_search_per_call_usd.unwrap();
        let without = CostBound {
            web_searches: 0,
            ..with_searches
        };
        let added = with_searches.for_model(model).cost_usd - without.for_model(model).cost_usd;
        assert!((added - 3.0 * fee).abs() < 1e-12);
        let claude = catalog.get("anthropic/claude-sonnet-5-5").unwrap();
        assert!(
            with_searches.priced_for(claude).is_err(),
            "no web search price"
        );
        assert!(with_searches.priced_for(model).is_ok());
        for (tools, at) in [
            (
                json!([{"type": "function", "name": "f"}, {"type": "file_search"}]),
                "tools[1]",
            ),
            (
                json!([{"type": "namespace", "tools": [{"type": "code_interpreter"}]}]),
                "tools[0].tools[0]",
            ),
        ] {
            let err =
                CostBound::responses(&body(json!({"input": "x", "tools": tools})), 10).unwrap_err();
            match &err {
                GatewayError::InvalidField { field, message } => {
                    assert_eq!(field, at);
                    assert!(message.contains("billed per call"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let err = CostBound::responses(&body(json!({"input": "x", "service_tier": "scale"})), 10)
            .unwrap_err();
        assert!(err.to_string().contains("service tier"));
        let flex =
            CostBound::responses(&body(json!({"input": "x", "service_tier": "flex"})), 10).unwrap();
        assert_eq!(flex.service_tier, ServiceTier::Flex);
        let err = CostBound::responses(
            &body(json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]})),
            10,
        )
        .unwrap_err();
        assert!(err.to_string().contains("file_id"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        /// No request body, however odd, makes the bound panic or produce a negative, infinite or
        /// overflowed figure.
        #[test]
        fn any_body_gets_a_bound_or_a_clear_400(value in crate::test_support::arb_body(), bytes in 0usize..20_000_000) {
            let parsed = RequestBody::parse(value.to_string().as_bytes()).unwrap();
            let catalog = Catalog::bundled();
            for bound in [CostBound::chat_completions(&parsed, bytes), CostBound::messages(&parsed, bytes), CostBound::responses(&parsed, bytes)] {
                match bound {
                    Ok(bound) => {
                        for model in catalog.models() {
                            let worst = bound.for_model(model);
                            prop_assert!(worst.cost_usd.is_finite() && worst.cost_usd >= 0.0);
                            prop_assert!(worst.output_tokens <= model.output_limit().saturating_mul(MAX_CHOICES).saturating_add(bound.extra_output.saturating_mul(MAX_CHOICES)));
                            let _ = bound.admission_tokens(model);
                        }
                    }
                    Err(err) => prop_assert_eq!(err.status().as_u16(), 400),
                }
            }
        }
    }
}
