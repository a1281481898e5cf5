//! Monthly spend caps and tokens-per-minute limits: a call's worst case is reserved before it goes
//! upstream and settled to what it really used once the provider reports usage.
//!
//! The reservation is a bounded atomic increment (the same counter store as the request rate limit), so a
//! burst of concurrent calls cannot all pass on a stale reading: each one's worst case must fit beside
//! everything already reserved, and the cap can be passed by at most what one call uses beyond its
//! reservation. Settling gives back the unused part. The month is the UTC calendar month.
//!
//! Tokens per minute are admitted as OpenAI admits them: a call counts its prompt's estimate plus the
//! `max_tokens` it asked for (nothing more when it asked for none), and settles to the provider's count.
//! A call that used more than the minute had left carries the excess into the following minutes (a full
//! minute refuses every call), so over time a key never gets more than its limit, on every instance,
//! however long its answers run.

use std::sync::Arc;

use time::{Date, Month, OffsetDateTime, Time};

use crate::error::GatewayError;
use crate::plans::Plan;
use crate::store::{CounterOutcome, CounterStore, counter_op};

const WINDOW_SECS: i64 = 60;
/// Counters outlive their window by this much before TTL may remove them.
const EXPIRY_GRACE_SECS: i64 = 2 * 24 * 3600;
/// Spend is counted in nano-dollars: integers for the counter store, fine enough that rounding each
/// call up costs nobody anything they would notice.
const NANOS_PER_USD: f64 = 1e9;

/// What a call reserves: against the token limit, its prompt estimate plus the output it asked for (its
/// `max_tokens`, none when it gave none); against the spend cap, the most it can cost at its model's
/// price (every token it may generate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorstCase {
    pub tokens: u64,
    pub cost_usd: f64,
    /// Whether the client set max_tokens (which then counts against the token limit).
    pub max_tokens_given: bool,
}

/// One counter's share of a reservation.
#[derive(Debug, Clone)]
struct Held {
    counter: String,
    amount: u64,
    expires_at: i64,
}

/// A reservation against one minute of a key's token limit: what a settle needs to carry an excess on.
#[derive(Debug, Clone)]
struct TokensHeld {
    held: Held,
    key_id: String,
    window_start: i64,
    limit: u64,
}

/// What a call holds against its key's token limit and its account's spend cap until it settles.
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    tokens: Option<TokensHeld>,
    spend: Option<Held>,
    /// Against the key's own monthly spend limit, when it has one.
    key_spend: Option<Held>,
}

/// How many minutes ahead an excess may be carried (an hour): bounds a settle's work; a call that used
/// more than an hour of its key's limit leaves the rest uncounted against the limit (never unbilled).
const MAX_CARRY_WINDOWS: usize = 60;

impl Reservation {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.spend.is_none() && self.key_spend.is_none()
    }
}

#[derive(Clone)]
pub struct Budget {
    counters: Arc<dyn CounterStore>,
}

fn nanos(usd: f64) -> u64 {
    (usd.max(0.0) * NANOS_PER_USD).ceil() as u64
}

/// The first instant of the UTC month after the one containing `now`.
pub fn next_month_start(now: OffsetDateTime) -> OffsetDateTime {
    let (year, month) = match now.month() {
        Month::December => (now.year() + 1, Month::January),
        m => (now.year(), m.next()),
    };
    Date::from_calendar_date(year, month, 1)
        .expect("the first of a month exists")
        .with_time(Time::MIDNIGHT)
        .assume_utc()
}

/// The counter holding an account's spend in the month containing `now`.
pub fn spend_counter_key(account_id: &str, now: OffsetDateTime) -> String {
    format!(
        "spend#{account_id}#{:04}-{:02}",
        now.year(),
        u8::from(now.month())
    )
}

/// The counter holding one key's spend in the month containing `now` (kept for keys with a limit).
pub fn key_spend_counter_key(key_id: &str, now: OffsetDateTime) -> String {
    format!(
        "keyspend#{key_id}#{:04}-{:02}",
        now.year(),
        u8::from(now.month())
    )
}

fn token_counter_key(key_id: &str, now: OffsetDateTime) -> (String, i64) {
    let window_start = now.unix_timestamp().div_euclid(WINDOW_SECS) * WINDOW_SECS;
    (window_counter(key_id, window_start), window_start)
}

fn window_counter(key_id: &str, window_start: i64) -> String {
    format!("tpm#{key_id}#{window_start}")
}

/// Prefixes of the budget counters kept for an account and its keys, for erasing them with it.
pub fn counter_prefixes(account_id: &str, key_ids: &[String]) -> Vec<String> {
    std::iter::once(format!("spend#{account_id}#"))
        .chain(key_ids.iter().map(|k| format!("tpm#{k}#")))
        .chain(key_ids.iter().map(|k| format!("keyspend#{k}#")))
        .collect()
}

impl Budget {
    pub fn new(counters: Arc<dyn CounterStore>) -> Budget {
        Budget { counters }
    }

    /// Reserves the call's worst case against the plan's token limit and spend cap (whichever the plan
    /// has) and the key's own monthly spend limit (if it has one), or refuses it: 429 when the minute's
    /// tokens are used up, 402 when the month's spend is (naming whose limit).
    pub async fn reserve(
        &self,
        key_id: &str,
        account_id: &str,
        plan: &Plan,
        key_limit_usd: Option<f64>,
        worst: WorstCase,
        now: OffsetDateTime,
    ) -> Result<Reservation, GatewayError> {
        let mut reservation = Reservation::default();
        if let Some(limit) = plan.tokens_per_minute {
            let (counter, window_start) = token_counter_key(key_id, now);
            let window_end = window_start + WINDOW_SECS;
            let expires_at = window_end + EXPIRY_GRACE_SECS;
            let tokens = worst.tokens;
            if tokens > limit {
                let message = if worst.max_tokens_given {
                    format!(
                        "this request may use up to {tokens} tokens (its prompt plus max_tokens), more \
                         than this key's limit of {limit} tokens per minute; lower max_tokens"
                    )
                } else {
                    format!(
                        "this request's prompt is about {tokens} tokens, more than this key's limit of \
                         {limit} tokens per minute; send a shorter prompt or upgrade your plan"
                    )
                };
                let field = if worst.max_tokens_given {
                    "max_tokens"
                } else {
                    "messages"
                };
                return Err(GatewayError::field(field, message));
            }
            match self.add(&counter, tokens, limit, expires_at).await? {
                CounterOutcome::Admitted { .. } => {
                    reservation.tokens = Some(TokensHeld {
                        held: Held {
                            counter,
                            amount: tokens,
                            expires_at,
                        },
                        key_id: key_id.to_owned(),
                        window_start,
                        limit,
                    });
                }
                CounterOutcome::Refused => {
                    return Err(GatewayError::TokenRateLimited {
                        limit,
                        requested: tokens,
                        retry_after_secs: window_end
                            .saturating_sub(now.unix_timestamp())
                            .clamp(1, WINDOW_SECS) as u64,
                    });
                }
            }
        }
        let resets = next_month_start(now);
        if let Some(cap_usd) = plan.monthly_spend_cap_usd {
            let counter = spend_counter_key(account_id, now);
            match self
                .hold_month(counter, worst.cost_usd, cap_usd, resets)
                .await
            {
                Ok(held) => reservation.spend = Some(held),
                Err(refused) => {
                    // Give the token reservation back: this call will not run.
                    self.settle(&reservation, 0, 0.0).await;
                    refused?;
                    let spent = self.spent(account_id, now).await.unwrap_or(cap_usd);
                    return Err(spend_cap_error(
                        plan,
                        cap_usd,
                        spent,
                        worst.cost_usd,
                        resets,
                    ));
                }
            }
        }
        if let Some(limit_usd) = key_limit_usd {
            let counter = key_spend_counter_key(key_id, now);
            match self
                .hold_month(counter, worst.cost_usd, limit_usd, resets)
                .await
            {
                Ok(held) => reservation.key_spend = Some(held),
                Err(refused) => {
                    self.settle(&reservation, 0, 0.0).await;
                    refused?;
                    let spent = self.key_spent(key_id, now).await.unwrap_or(limit_usd);
                    return Err(key_limit_error(limit_usd, spent, worst.cost_usd, resets));
                }
            }
        }
        Ok(reservation)
    }

    /// The key's spend this month in USD as its limit counts it (reservations in flight included).
    pub async fn key_spent(&self, key_id: &str, now: OffsetDateTime) -> anyhow::Result<f64> {
        let nanos = self
            .counters
            .get(&key_spend_counter_key(key_id, now))
            .await?;
        Ok(nanos as f64 / NANOS_PER_USD)
    }

    /// Makes the key's spend counter for this month hold at least `spent_usd` (what its usage rows
    /// sum to): a limit set in the middle of a month counts what the key spent before it was set.
    pub async fn count_key_spend_from(
        &self,
        key_id: &str,
        spent_usd: f64,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let counter = key_spend_counter_key(key_id, now);
        let current = self.counters.get(&counter).await?;
        let missing = nanos(spent_usd).saturating_sub(current);
        if missing > 0 {
            let expires_at = next_month_start(now).unix_timestamp() + EXPIRY_GRACE_SECS;
            self.counters
                .adjust(
                    &counter,
                    i64::try_from(missing).unwrap_or(i64::MAX),
                    expires_at,
                )
                .await?;
        }
        Ok(())
    }

    /// Holds `usd` on a monthly spend counter if it stays within `limit_usd`. `Err(Ok(()))` when the
    /// limit refuses it, `Err(Err(e))` when the store failed: either way nothing is held.
    async fn hold_month(
        &self,
        counter: String,
        usd: f64,
        limit_usd: f64,
        resets: OffsetDateTime,
    ) -> Result<Held, Result<(), GatewayError>> {
        let expires_at = resets.unix_timestamp() + EXPIRY_GRACE_SECS;
        let amount = nanos(usd);
        match self
            .add(&counter, amount, nanos(limit_usd), expires_at)
            .await
        {
            Ok(CounterOutcome::Admitted { .. }) => Ok(Held {
                counter,
                amount,
                expires_at,
            }),
            Ok(CounterOutcome::Refused) => Err(Ok(())),
            Err(e) => Err(Err(e)),
        }
    }

    async fn add(
        &self,
        counter: &str,
        amount: u64,
        limit: u64,
        expires_at: i64,
    ) -> Result<CounterOutcome, GatewayError> {
        counter_op(self.counters.add_within(counter, amount, limit, expires_at)).await
    }

    /// Replaces the reservation with what the call really used. A failure is logged, not returned: the
    /// call has been answered, and the error only ever overstates what was spent.
    pub async fn settle(&self, reservation: &Reservation, tokens: u64, cost_usd: f64) {
        for spend in [&reservation.spend, &reservation.key_spend]
            .into_iter()
            .flatten()
        {
            self.adjust_to(spend, nanos(cost_usd)).await;
        }
        let Some(window) = &reservation.tokens else {
            return;
        };
        let Some(value) = self.adjust_to(&window.held, tokens).await else {
            return;
        };
        // What this call's own usage put past the minute's limit (concurrent settles each see their own
        // result, so their shares add up to the minute's whole excess).
        let grown = tokens.saturating_sub(window.held.amount);
        let excess = u64::try_from(value)
            .unwrap_or(0)
            .saturating_sub(window.limit)
            .min(grown);
        if excess > 0 {
            self.carry(window, excess, OffsetDateTime::now_utc()).await;
        }
    }

    /// Moves `excess` tokens out of a full minute into the following ones, starting with the later of the
    /// next minute and the current one (an excess put on a minute that is over would limit nothing).
    async fn carry(&self, window: &TokensHeld, mut excess: u64, now: OffsetDateTime) {
        let step = |counter: &str, delta: i64, expires_at: i64| {
            let counters = self.counters.clone();
            let counter = counter.to_owned();
            async move {
                counters
                    .adjust(&counter, delta, expires_at)
                    .await
                    .inspect_err(|e| tracing::warn!(error = %e, %counter, "could not carry tokens"))
                    .ok()
            }
        };
        let delta = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut from = window.held.counter.clone();
        let mut expires_at = window.held.expires_at;
        let current = now.unix_timestamp().div_euclid(WINDOW_SECS) * WINDOW_SECS;
        let mut start = (window.window_start + WINDOW_SECS).max(current);
        for _ in 0..MAX_CARRY_WINDOWS {
            if step(&from, -delta(excess), expires_at).await.is_none() {
                return;
            }
            let to = window_counter(&window.key_id, start);
            expires_at = start + WINDOW_SECS + EXPIRY_GRACE_SECS;
            let Some(value) = step(&to, delta(excess), expires_at).await else {
                return;
            };
            // The minute keeps what fits; the rest moves on.
            excess = u64::try_from(value)
                .unwrap_or(0)
                .saturating_sub(window.limit)
                .min(excess);
            if excess == 0 {
                return;
            }
            from = to;
            start += WINDOW_SECS;
        }
    }

    /// Sets a held amount to what was used; the counter's new value, or None when it could not be written.
    async fn adjust_to(&self, held: &Held, used: u64) -> Option<i64> {
        // Both sides are at most u64::MAX: the difference fits in i128, and a counter never moves by more
        // than i64 allows in one step.
        let delta = (i128::from(used) - i128::from(held.amount))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        if delta == 0 {
            return None;
        }
        match self
            .counters
            .adjust(&held.counter, delta, held.expires_at)
            .await
        {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(error = %e, counter = %held.counter, "could not settle a reservation");
                None
            }
        }
    }

    /// The account's spend this month in USD, reservations of calls in flight included.
    pub async fn spent(&self, account_id: &str, now: OffsetDateTime) -> anyhow::Result<f64> {
        let nanos = self
            .counters
            .get(&spend_counter_key(account_id, now))
            .await?;
        Ok(nanos as f64 / NANOS_PER_USD)
    }
}

fn spend_cap_error(
    plan: &Plan,
    cap_usd: f64,
    spent_usd: f64,
    request_usd: f64,
    resets: OffsetDateTime,
) -> GatewayError {
    let resets = format!(
        "{:04}-{:02}-{:02}",
        resets.year(),
        u8::from(resets.month()),
        resets.day()
    );
    let message = if request_usd > cap_usd - spent_usd && spent_usd + 1e-9 < cap_usd {
        format!(
            "this request could cost up to ${request_usd:.4} (its prompt plus max_tokens at the model's \
             price), more than the ${:.4} left of the {} plan's ${cap_usd:.2} monthly spend cap; lower \
             max_tokens, or upgrade your plan",
            (cap_usd - spent_usd).max(0.0),
            plan.name
        )
    } else {
        format!(
            "monthly spend cap reached: ${spent_usd:.2} of the {} plan's ${cap_usd:.2} used this month; \
             it resets on {resets} (UTC), or upgrade your plan",
            plan.name
        )
    };
    GatewayError::PaymentRequired(message)
}

fn key_limit_error(
    limit_usd: f64,
    spent_usd: f64,
    request_usd: f64,
    resets: OffsetDateTime,
) -> GatewayError {
    let message = if request_usd > limit_usd - spent_usd && spent_usd + 1e-9 < limit_usd {
        format!(
            "this request could cost up to ${request_usd:.4} (its prompt plus max_tokens at the model's \
             price), more than the ${:.4} left of this key's own ${limit_usd:.2} monthly spend limit; \
             lower max_tokens, or raise the key's limit",
            (limit_usd - spent_usd).max(0.0)
        )
    } else {
        format!(
            "this key's own monthly spend limit is reached: ${spent_usd:.2} of ${limit_usd:.2} used this \
             month; it resets on {:04}-{:02}-{:02} (UTC), or raise the key's limit",
            resets.year(),
            u8::from(resets.month()),
            resets.day()
        )
    };
    GatewayError::KeyControl {
        control: crate::error::KeyControl::MonthlySpend,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn months_roll_over_at_utc_midnight() {
        assert_eq!(
            next_month_start(datetime!(2026-12-31 23:59 UTC)),
            datetime!(2027-01-01 00:00 UTC)
        );
        assert_eq!(
            spend_counter_key("acct_1", datetime!(2026-11-27 10:00 UTC)),
            "spend#acct_1#2026-11"
        );
    }

    #[test]
    fn costs_round_up_to_the_nanodollar() {
        assert_eq!(nanos(0.0000045), 4500);
        assert_eq!(nanos(1.0), 1_000_000_000);
        assert_eq!(nanos(-1.0), 0);
    }
}
