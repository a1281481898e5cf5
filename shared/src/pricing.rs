//! What a call costs at the catalog's prices, and the rates that produced it.
//!
//! Providers price a call by more than input and output per token, and each rule here is one the
//! catalog can express per model:
//! * **service tiers**: a request may ask for `flex`, `fast` (OpenAI's renamed `priority`) or
//!   `ultrafast` processing (OpenAI's `service_tier`; Anthropic's `speed: "fast"`), billed at that
//!   tier's own rates; when the provider's answer says which tier served it, that is the tier priced.
//!   A tier the model's catalog entry does not list is refused before the call is sent.
//! * **long context**: above a prompt size (OpenAI's 6.x models at 272k tokens, Claude Haiku 5.5 at
//!   100k), the whole request is billed at higher rates: every input-side rate times the input
//!   multiplier, output times the output multiplier.
//! * **cache**: reads and writes at their own rates; long-lived writes (Anthropic's 1-hour lifetime,
//!   OpenAI's extended retention) at their own, higher rate.
//! * **per-call fees**: hosted web searches, and a fee per input image for models priced that way.
//!
//! Every row records the rates it was priced at ([`AppliedRates`]), so a cost can be recomputed from
//! the row alone: tokens of each kind times its rate, plus the fees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A processing tier a provider bills at its own rates. `Standard` is every call that names none
/// (`auto`, `default` and Anthropic's `standard_only` are standard too unless the answer says otherwise).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTier {
    #[default]
    Standard,
    Flex,
    /// OpenAI's Fast mode (the `priority` tier until July 2026; both names select it) and Anthropic's
    /// `speed: "fast"`.
    #[serde(alias = "priority")]
    Fast,
    /// OpenAI's `ultrafast` tier.
    Ultrafast,
    /// The providers' batch APIs (half price); not selectable on the routes QNP serves, but an answer
    /// may report it and a catalog may list it.
    Batch,
}

impl ServiceTier {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Flex => "flex",
            ServiceTier::Fast => "fast",
            ServiceTier::Ultrafast => "ultrafast",
            ServiceTier::Batch => "batch",
        }
    }

    /// The tier a provider's answer reports (`service_tier` in OpenAI's answers, in Anthropic's usage);
    /// `None` for a value that names no tier QNP prices (it then prices the tier the request asked for).
    pub fn reported(value: &str) -> Option<ServiceTier> {
        match value {
            "default" | "standard" | "standard_only" => Some(ServiceTier::Standard),
            "flex" => Some(ServiceTier::Flex),
            "priority" | "fast" => Some(ServiceTier::Fast),
            "ultrafast" => Some(ServiceTier::Ultrafast),
            "batch" => Some(ServiceTier::Batch),
            _ => None,
        }
    }
}

/// Prices in USD per million tokens for one way of serving a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_mtok: Option<f64>,
}

/// The long-context rule: a request whose prompt has more than `above_prompt_tokens` tokens is billed,
/// all of it, at the multiplied rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    pub above_prompt_tokens: u64,
    /// Applies to every input-side rate: fresh input, cache reads and cache writes.
    pub input_multiplier: f64,
    pub output_multiplier: f64,
}

/// The rates one call was priced at, after the tier and the long-context rule: what its usage row
/// records beside the cost. Every rate is the one applied (fallbacks resolved), so
/// `cost = Σ tokens × rate / 1e6 + searches × fee + images × fee` holds on the row alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AppliedRates {
    pub service_tier: ServiceTier,
    /// Whether the prompt was above the model's long-context threshold.
    pub long_context: bool,
    pub input_per_mtok: f64,
    pub cached_input_per_mtok: f64,
    pub cache_write_per_mtok: f64,
    pub cache_write_1h_per_mtok: f64,
    pub output_per_mtok: f64,
    pub web_search_per_call_usd: f64,
    pub input_per_image_usd: f64,
}

impl AppliedRates {
    /// The dearest input-side rate: what a prompt token costs at most, whichever kind it turns out to be.
    pub fn dearest_input_per_mtok(&self) -> f64 {
        [
            self.input_per_mtok,
            self.cached_input_per_mtok,
            self.cache_write_per_mtok,
            self.cache_write_1h_per_mtok,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
}

pub fn per_mtok(tokens: u64, price: f64) -> f64 {
    tokens as f64 * price / 1_000_000.0
}

/// The tiers a model is sold at, as a catalog entry lists them.
pub type ServiceTiers = BTreeMap<ServiceTier, Rates>;
