//! A catalog entry's prices applied: the rates for a tier and a prompt size, what a usage costs, the
//! worst case a reservation holds, and the checks an entry's prices must pass to be loaded.

use super::{Model, ProviderKind};
use crate::pricing::{AppliedRates, Rates, ServiceTier, per_mtok};
use crate::usage::TokenUsage;

/// Why a catalog entry's prices cannot be used.
pub(super) fn check_prices(model: &Model) -> Result<(), String> {
    let valid = |x: f64| x.is_finite() && x >= 0.0;
    let mut all = vec![
        ("input_per_mtok", Some(model.input_per_mtok)),
        ("output_per_mtok", Some(model.output_per_mtok)),
        ("cached_input_per_mtok", model.cached_input_per_mtok),
        ("cache_write_per_mtok", model.cache_write_per_mtok),
        ("cache_write_1h_per_mtok", model.cache_write_1h_per_mtok),
        ("web_search_per_call_usd", model.web_search_per_call_usd),
        ("input_per_image_usd", model.input_per_image_usd),
    ];
    for (tier, rates) in &model.service_tiers {
        if *tier == ServiceTier::Standard {
            return Err("service_tiers must not list 'standard': the model's own rates are".into());
        }
        // A tier that leaves out a rate the standard tier has would price those tokens wrongly.
        for (name, standard, own) in [
            (
                "cached_input_per_mtok",
                model.cached_input_per_mtok,
                rates.cached_input_per_mtok,
            ),
            (
                "cache_write_per_mtok",
                model.cache_write_per_mtok,
                rates.cache_write_per_mtok,
            ),
            (
                "cache_write_1h_per_mtok",
                model.cache_write_1h_per_mtok,
                rates.cache_write_1h_per_mtok,
            ),
        ] {
            if standard.is_some() && own.is_none() {
                return Err(format!(
                    "service tier '{}' must give {name}, as the standard rates do",
                    tier.as_str()
                ));
            }
        }
        all.push(("service_tiers.input_per_mtok", Some(rates.input_per_mtok)));
        all.push(("service_tiers.output_per_mtok", Some(rates.output_per_mtok)));
        all.push((
            "service_tiers.cached_input_per_mtok",
            rates.cached_input_per_mtok,
        ));
        all.push((
            "service_tiers.cache_write_per_mtok",
            rates.cache_write_per_mtok,
        ));
        all.push((
            "service_tiers.cache_write_1h_per_mtok",
            rates.cache_write_1h_per_mtok,
        ));
    }
    if let Some(long) = &model.long_context {
        all.push(("long_context.input_multiplier", Some(long.input_multiplier)));
        all.push((
            "long_context.output_multiplier",
            Some(long.output_multiplier),
        ));
        if long.input_multiplier < 1.0 || long.output_multiplier < 1.0 {
            return Err("long_context multipliers must be at least 1".into());
        }
    }
    match all.into_iter().find(|(_, v)| v.is_some_and(|v| !valid(v))) {
        Some((name, _)) => Err(format!(
            "{name} must be a finite number of US dollars, 0 or more"
        )),
        None => Ok(()),
    }
}

impl Model {
    /// The model's rates at `tier`: its own for standard, the tier's where the catalog lists it.
    /// `None` for a tier the model is not sold at.
    pub fn tier_rates(&self, tier: ServiceTier) -> Option<Rates> {
        if tier == ServiceTier::Standard {
            return Some(Rates {
                input_per_mtok: self.input_per_mtok,
                output_per_mtok: self.output_per_mtok,
                cached_input_per_mtok: self.cached_input_per_mtok,
                cache_write_per_mtok: self.cache_write_per_mtok,
                cache_write_1h_per_mtok: self.cache_write_1h_per_mtok,
            });
        }
        self.service_tiers.get(&tier).copied()
    }

    /// Whether a prompt of this many tokens is billed at the long-context rates.
    pub fn is_long_context(&self, prompt_tokens: u64) -> bool {
        self.long_context
            .is_some_and(|l| prompt_tokens > l.above_prompt_tokens)
    }

    /// The rates a call with this many prompt tokens is billed at, served at `tier` (standard when the
    /// model has no such tier: the reservation refused such calls, so this only meets a tier an answer
    /// reports that the catalog does not know).
    pub fn applied_rates(&self, tier: ServiceTier, prompt_tokens: u64) -> AppliedRates {
        let (tier, rates) = match self.tier_rates(tier) {
            Some(rates) => (tier, rates),
            None => (
                ServiceTier::Standard,
                self.tier_rates(ServiceTier::Standard)
                    .expect("standard rates always exist"),
            ),
        };
        let long_context = self.is_long_context(prompt_tokens);
        let (input_x, output_x) = match (long_context, self.long_context) {
            (true, Some(l)) => (l.input_multiplier, l.output_multiplier),
            _ => (1.0, 1.0),
        };
        // Missing rates as the providers bill them: a cache read or 5-minute write at the input rate,
        // a 1-hour write at twice the input rate (Anthropic's rule; no other provider reports them).
        let input = rates.input_per_mtok;
        AppliedRates {
            service_tier: tier,
            long_context,
            input_per_mtok: input * input_x,
            cached_input_per_mtok: rates.cached_input_per_mtok.unwrap_or(input) * input_x,
            cache_write_per_mtok: rates.cache_write_per_mtok.unwrap_or(input) * input_x,
            cache_write_1h_per_mtok: rates.cache_write_1h_per_mtok.unwrap_or(2.0 * input) * input_x,
            output_per_mtok: rates.output_per_mtok * output_x,
            web_search_per_call_usd: self.web_search_per_call_usd.unwrap_or(0.0),
            input_per_image_usd: self.input_per_image_usd.unwrap_or(0.0),
        }
    }

    /// What one call's usage costs, served at `tier`, and the rates applied.
    pub fn price(&self, usage: &TokenUsage, tier: ServiceTier) -> (f64, AppliedRates) {
        let rates = self.applied_rates(tier, usage.prompt_tokens);
        (usage.cost_at(&rates), rates)
    }

    /// The cost in USD of one call's usage at standard rates (the tier the usage reports, if any).
    pub fn cost_usd(&self, usage: &TokenUsage) -> f64 {
        self.price(usage, usage.service_tier.unwrap_or(ServiceTier::Standard))
            .0
    }

    /// The rates a call's worst case is reserved at: `tier`'s, with the long-context rule applied when
    /// the prompt may exceed its threshold, and the dearest input-side rate for every prompt token (any
    /// of them may be a cache write; a long-lived one on Anthropic, which the request body alone does
    /// not rule out, or where the request asks for extended retention).
    pub fn worst_rates(
        &self,
        tier: ServiceTier,
        prompt_tokens: u64,
        long_writes: bool,
    ) -> (f64, f64) {
        let rates = self.applied_rates(tier, prompt_tokens);
        let input = if self.provider == ProviderKind::Anthropic || long_writes {
            rates.dearest_input_per_mtok()
        } else {
            AppliedRates {
                cache_write_1h_per_mtok: 0.0,
                ..rates
            }
            .dearest_input_per_mtok()
        };
        (input, rates.output_per_mtok)
    }

    /// The most a call with these token counts can cost at `tier`: every prompt token at the dearest
    /// input-side rate, every output token at the output rate, long-context rates where they may apply.
    pub fn worst_cost_usd(
        &self,
        tier: ServiceTier,
        prompt_tokens: u64,
        output_tokens: u64,
        long_writes: bool,
    ) -> f64 {
        let (input, output) = self.worst_rates(tier, prompt_tokens, long_writes);
        per_mtok(prompt_tokens, input) + per_mtok(output_tokens, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn usage(prompt: u64, cached: u64, written: u64, output: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            cache_write_tokens: written,
            completion_tokens: output,
            ..TokenUsage::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn long_context_bills_the_whole_request_above_the_threshold() {
        let catalog = Catalog::bundled();
        let terra = catalog.get("openai/gpt-6.1-terra").unwrap();
        // At exactly 272,000 prompt tokens: standard ($1 in, $0.05 cached, $5 out per million).
        let (cost, rates) = terra.price(&usage(272_000, 72_000, 0, 10_000), ServiceTier::Standard);
        assert!(!rates.long_context);
        assert!(close(cost, 0.2 + 0.0036 + 0.05), "{cost}");
        // One token more: all of it at 2× input and cache, 1.5× output.
        let (cost, rates) = terra.price(&usage(272_001, 72_000, 0, 10_000), ServiceTier::Standard);
        assert!(rates.long_context);
        assert!(
            close(cost, 200_001.0 * 2.0 / 1e6 + 0.0072 + 0.075),
            "{cost}"
        );
        // With Fast mode on gpt-6.2-sol the multipliers apply to the tier's rates ($4 / $20 → $8 / $30).
        let sol = catalog.get("openai/gpt-6.2-sol").unwrap();
        let (cost, rates) = sol.price(&usage(300_000, 0, 0, 1_000), ServiceTier::Fast);
        assert_eq!(rates.service_tier, ServiceTier::Fast);
        assert!(close(cost, 2.4 + 0.03), "{cost}");
        // Claude Haiku 5.5 above 100k: every token at five times ($0.50 in, $0.05 read, $0.625 write,
        // $2.50 out).
        let haiku = catalog.get("anthropic/claude-haiku-5-5").unwrap();
        let (cost, _) = haiku.price(
            &usage(100_001, 20_000, 10_000, 2_000),
            ServiceTier::Standard,
        );
        let by_hand = (70_001.0 * 0.5 + 20_000.0 * 0.05 + 10_000.0 * 0.625 + 2_000.0 * 2.5) / 1e6;
        assert!(close(cost, by_hand), "{cost} vs {by_hand}");
    }

    #[test]
    fn the_worst_case_uses_the_tier_and_long_context_rates_when_the_prompt_may_exceed() {
        let catalog = Catalog::bundled();
        let luna = catalog.get("openai/gpt-6-luna").unwrap();
        // Short prompt, standard: the dearest input-side rate is the 30-minute cache write ($0.125).
        let short = luna.worst_cost_usd(ServiceTier::Standard, 1_000, 1_000, false);
        assert!(
            close(short, (1_000.0 * 0.125 + 1_000.0 * 0.5) / 1e6),
            "{short}"
        );
        // Extended retention makes the long-lived write ($0.25) the dearest.
        let long_writes = luna.worst_cost_usd(ServiceTier::Standard, 1_000, 1_000, true);
        assert!(close(long_writes, (1_000.0 * 0.25 + 1_000.0 * 0.5) / 1e6));
        // Flex halves it; a prompt that may pass 272k doubles input and adds half to output.
        let flex = luna.worst_cost_usd(ServiceTier::Flex, 300_000, 1_000, false);
        assert!(
            close(flex, (300_000.0 * 0.125 + 1_000.0 * 0.375) / 1e6),
            "{flex}"
        );
    }

    #[test]
    fn prices_that_cannot_be_used_are_refused_by_name() {
        let mut model = (**Catalog::bundled().get("openai/gpt-6-luna").unwrap()).clone();
        assert!(check_prices(&model).is_ok());
        let flex = model.service_tiers.get_mut(&ServiceTier::Flex).unwrap();
        flex.cached_input_per_mtok = None;
        let err = check_prices(&model).unwrap_err();
        assert!(
            err.contains("flex") && err.contains("cached_input_per_mtok"),
            "{err}"
        );
        let mut model = (**Catalog::bundled().get("openai/gpt-6-luna").unwrap()).clone();
        model.input_per_image_usd = Some(-1.0);
        assert!(
            check_prices(&model)
                .unwrap_err()
                .contains("input_per_image_usd")
        );
        model.input_per_image_usd = Some(f64::NAN);
        assert!(check_prices(&model).is_err());
        let mut model = (**Catalog::bundled().get("openai/gpt-6-luna").unwrap()).clone();
        model.long_context.as_mut().unwrap().output_multiplier = 0.5;
        assert!(check_prices(&model).unwrap_err().contains("long_context"));
        let mut model = (**Catalog::bundled().get("openai/gpt-6-luna").unwrap()).clone();
        let standard = model.tier_rates(ServiceTier::Standard).unwrap();
        model.service_tiers.insert(ServiceTier::Standard, standard);
        assert!(check_prices(&model).unwrap_err().contains("standard"));
    }

    #[test]
    fn a_row_can_be_repriced_from_its_recorded_rates() {
        let catalog = Catalog::bundled();
        for model in catalog.models() {
            for tier in [
                ServiceTier::Standard,
                ServiceTier::Flex,
                ServiceTier::Fast,
                ServiceTier::Ultrafast,
            ] {
                if model.tier_rates(tier).is_none() {
                    continue;
                }
                let mut used = usage(400_000, 100_000, 50_000, 9_000);
                used.cache_write_1h_tokens = 20_000;
                used.web_search_calls = 2;
                let (cost, rates) = model.price(&used, tier);
                // Σ tokens × rate + fees, from the recorded rates alone.
                let by_hand = (250_000.0 * rates.input_per_mtok
                    + 100_000.0 * rates.cached_input_per_mtok
                    + 30_000.0 * rates.cache_write_per_mtok
                    + 20_000.0 * rates.cache_write_1h_per_mtok
                    + 9_000.0 * rates.output_per_mtok)
                    / 1e6
                    + 2.0 * rates.web_search_per_call_usd;
                assert!(close(cost, by_hand), "{} {tier:?}", model.id);
                assert_eq!(rates.long_context, model.long_context.is_some());
            }
        }
    }
}
