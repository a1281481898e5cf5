//! Per-key request rate limits over a counter store.
//!
//! A sliding one-minute window, approximated from two fixed ones: the requests of the previous minute
//! still count in proportion to how much of it lies within the last 60 s, so a burst at the end of one
//! minute cannot be repeated at the start of the next (a plain fixed window would let 2N through in a
//! few seconds). The current minute's counter is incremented atomically only while it stays within what
//! the previous minute leaves, so N+k concurrent requests with N left admit exactly N. A finished
//! minute's count never changes, so each process reads it once and keeps it. Window starts are part of
//! the counters' keys, so a stale counter can never refuse a request: expiry (TTL) only reclaims space.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;

use crate::error::GatewayError;
use crate::plans::Plan;
use crate::store::{CounterOutcome, CounterStore, counter_op};

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

/// Finished minutes' counts kept per process (entries beyond this are pruned).
const MAX_REMEMBERED_WINDOWS: usize = 100_000;

#[derive(Clone)]
pub struct RateLimiter {
    counters: Arc<dyn CounterStore>,
    /// Key id → (start of its previous window, that window's final count).
    finished: Arc<std::sync::Mutex<std::collections::HashMap<String, (i64, u64)>>>,
}

/// How many of the previous window's requests still fall within the last 60 s at `fraction` (0..1) of
/// the current window. Rounded down, in the client's favour.
fn carried_over(previous: u64, fraction: f64) -> u64 {
    (previous as f64 * (1.0 - fraction)).floor() as u64
}

/// Seconds until a refused key may make one more request: when the previous window's share has shrunk
/// by one, or, if nothing of it is left, once the current window has become the previous one and its
/// share started to shrink.
fn retry_after(previous: u64, limit: u64, fraction: f64, until_window_end: i64) -> u64 {
    let carried = carried_over(previous, fraction);
    let secs = if carried >= 1 {
        (1.0 - carried as f64 / previous as f64 - fraction) * WINDOW_SECS as f64
    } else {
        until_window_end as f64 + WINDOW_SECS as f64 / limit.max(1) as f64
    };
    (secs.ceil() as u64).max(1)
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
        RateLimiter {
            counters,
            finished: Default::default(),
        }
    }

    /// The final count of the key's window that started at `start` (the one before the current one).
    async fn previous_count(&self, key_id: &str, start: i64) -> Result<u64, GatewayError> {
        if let Some((cached_start, count)) = self
            .finished
            .lock()
            .expect("rate-limit window cache")
            .get(key_id)
            .copied()
            && cached_start == start
        {
            return Ok(count);
        }
        let count = counter_op(self.counters.get(&format!("rpm#{key_id}#{start}"))).await?;
        let mut finished = self.finished.lock().expect("rate-limit window cache");
        if finished.len() >= MAX_REMEMBERED_WINDOWS {
            finished.retain(|_, (cached_start, _)| *cached_start >= start);
        }
        finished.insert(key_id.to_owned(), (start, count));
        Ok(count)
    }

    /// Counts one request against the key's limit (its plan's, or its own when lower), or refuses it
    /// with a 429 that says when to retry.
    pub async fn admit(
        &self,
        key_id: &str,
        limit: u64,
        now: OffsetDateTime,
    ) -> Result<RateLimitState, GatewayError> {
        let (counter, window_start) = request_counter_key(key_id, now);
        let window_end = window_start + WINDOW_SECS;
        let until_window_end = window_end - now.unix_timestamp();
        let reset_after_secs = until_window_end.max(1) as u64;
        let fraction = ((now.unix_timestamp() - window_start) as f64
            + f64::from(now.nanosecond()) / 1e9)
            / WINDOW_SECS as f64;
        let previous = self
            .previous_count(key_id, window_start - WINDOW_SECS)
            .await?;
        let ceiling = limit.saturating_sub(carried_over(previous, fraction));
        let outcome = counter_op(self.counters.add_within(
            &counter,
            1,
            ceiling,
            window_end + EXPIRY_GRACE_SECS,
        ))
        .await?;
        match outcome {
            CounterOutcome::Admitted { value } => Ok(RateLimitState {
                limit,
                remaining: ceiling.saturating_sub(value),
                reset_after_secs,
            }),
            CounterOutcome::Refused => Err(GatewayError::RateLimited {
                limit,
                retry_after_secs: retry_after(previous, limit, fraction, until_window_end),
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
        let used = counter_op(self.counters.get(&counter)).await?;
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
    fn the_previous_minute_counts_in_proportion_to_its_overlap() {
        assert_eq!(carried_over(100, 0.0), 100);
        assert_eq!(carried_over(100, 0.25), 75);
        assert_eq!(carried_over(100, 0.999), 0);
        assert_eq!(carried_over(0, 0.5), 0);
        // 20/min, 20 used last minute, 41% into this one: 11 carried (11.8 rounded down); the next slot
        // opens when the share drops below 11, at 45%, 2.4 s later.
        assert_eq!(retry_after(20, 20, 0.41, 35), 3);
        // Nothing carried (this minute alone is full): after it ends, plus one slot's worth of decay.
        assert_eq!(retry_after(0, 20, 0.5, 30), 33);
    }

    #[tokio::test]
    async fn a_burst_at_a_minute_boundary_cannot_pass_twice_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let limiter = RateLimiter::new(store);
        let plan: Plan = serde_json::from_str(r#"{"name":"t","requests_per_minute":10}"#).unwrap();
        let end_of_minute = time::macros::datetime!(2026-11-27 10:00:59.5 UTC);
        for _ in 0..10 {
            limiter
                .admit("k", plan.requests_per_minute, end_of_minute)
                .await
                .unwrap();
        }
        assert!(
            limiter
                .admit("k", plan.requests_per_minute, end_of_minute)
                .await
                .is_err()
        );
        // One second later, in the next minute: 10 * (1 - 1/120) carried, floor 9, so one slot.
        let next_minute = time::macros::datetime!(2026-11-27 10:01:00.5 UTC);
        let state = limiter
            .admit("k", plan.requests_per_minute, next_minute)
            .await
            .unwrap();
        assert_eq!(state.remaining, 0);
        let Err(GatewayError::RateLimited {
            retry_after_secs, ..
        }) = limiter
            .admit("k", plan.requests_per_minute, next_minute)
            .await
        else {
            panic!("a second request right after the boundary must be refused");
        };
        assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}");
        // Half-way through the minute, half of the previous minute has slid out of the window.
        let half = time::macros::datetime!(2026-11-27 10:01:30 UTC);
        let mut admitted = 0;
        while limiter
            .admit("k", plan.requests_per_minute, half)
            .await
            .is_ok()
        {
            admitted += 1;
        }
        assert_eq!(admitted, 4, "10 - 5 carried - 1 already used");
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
