//! Per-key request rate limits over a counter store.
//!
//! A fixed one-minute window per key: the counter for the current window is incremented atomically only
//! while it stays within the plan's limit, so N+k concurrent requests with N left admit exactly N. The
//! window start is part of the counter's key, so a stale counter from an earlier window can never refuse a
//! request: expiry (TTL) only reclaims space.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;

use crate::error::GatewayError;
use crate::plans::Plan;
use crate::store::{CounterOutcome, CounterStore};

const WINDOW_SECS: i64 = 60;
/// Counters outlive their window by this much before TTL may remove them.
const EXPIRY_GRACE_SECS: i64 = 120;

/// The rate-limit state after a request was admitted, reported in `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_secs: u64,
}

impl RateLimitState {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from(self.limit));
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(self.remaining),
        );
        // OpenAI writes durations like "6s"; its SDKs parse that form.
        let reset = HeaderValue::from_str(&format!("{}s", self.reset_after_secs))
            .expect("digits and 's' are a valid header value");
        headers.insert("x-ratelimit-reset-requests", reset);
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    counters: Arc<dyn CounterStore>,
}

/// The counter key for a key's request count in the window that contains `now`.
pub fn request_counter_key(key_id: &str, now: OffsetDateTime) -> (String, i64) {
    let window_start = now.unix_timestamp().div_euclid(WINDOW_SECS) * WINDOW_SECS;
    (format!("rpm#{key_id}#{window_start}"), window_start)
}

/// Prefixes of every counter kept for a key, for erasing them with its account.
pub fn counter_prefixes_for_key(key_id: &str) -> Vec<String> {
    vec![format!("rpm#{key_id}#")]
}

impl RateLimiter {
    pub fn new(counters: Arc<dyn CounterStore>) -> RateLimiter {
        RateLimiter { counters }
    }

    /// Counts one request against the key's plan, or refuses it with a 429 that says when to retry.
    pub async fn admit(
        &self,
        key_id: &str,
        plan: &Plan,
        now: OffsetDateTime,
    ) -> Result<RateLimitState, GatewayError> {
        let limit = plan.requests_per_minute;
        let (counter, window_start) = request_counter_key(key_id, now);
        let window_end = window_start + WINDOW_SECS;
        let reset_after_secs = (window_end - now.unix_timestamp()).max(1) as u64;
        let outcome = self
            .counters
            .add_within(&counter, 1, limit, window_end + EXPIRY_GRACE_SECS)
            .await
            .map_err(GatewayError::internal)?;
        match outcome {
            CounterOutcome::Admitted { value } => Ok(RateLimitState {
                limit,
                remaining: limit.saturating_sub(value),
                reset_after_secs,
            }),
            CounterOutcome::Refused => Err(GatewayError::RateLimited {
                limit,
                retry_after_secs: reset_after_secs,
            }),
        }
    }

    /// The state without counting a request, for responses refused before the limiter ran.
    pub async fn peek(
        &self,
        key_id: &str,
        plan: &Plan,
        now: OffsetDateTime,
    ) -> Result<RateLimitState, GatewayError> {
        let (counter, window_start) = request_counter_key(key_id, now);
        let used = self
            .counters
            .get(&counter)
            .await
            .map_err(GatewayError::internal)?;
        Ok(RateLimitState {
            limit: plan.requests_per_minute,
            remaining: plan.requests_per_minute.saturating_sub(used),
            reset_after_secs: (window_start + WINDOW_SECS - now.unix_timestamp()).max(1) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_key_is_stable_within_a_minute() {
        let t = time::macros::datetime!(2026-11-27 10:00:05 UTC);
        let (a, start) = request_counter_key("k", t);
        let (b, _) = request_counter_key("k", t + time::Duration::seconds(54));
        let (c, _) = request_counter_key("k", t + time::Duration::seconds(55));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(start % 60, 0);
    }

    #[test]
    fn headers_use_openai_names() {
        let mut headers = HeaderMap::new();
        RateLimitState {
            limit: 20,
            remaining: 19,
            reset_after_secs: 42,
        }
        .apply(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "20");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "19");
        assert_eq!(headers["x-ratelimit-reset-requests"], "42s");
    }
}
