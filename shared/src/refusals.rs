//! Refused calls cost bounded storage: of one key's refusals of one kind (same status, error type and
//! route) in one UTC minute, the first is stored as it happens and the rest as a single row whose `count`
//! says how many it stands for, once the minute is over. A key refused 70,000 times a minute stores two
//! rows a kind, not 70,000, while the dashboard and the exports still show every refusal's number.
//!
//! Only refusals decided before anything went upstream are summed up this way; a call that reached a
//! provider keeps its own row (those are bounded by the rate limit anyway).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

use crate::usage::UsageRecord;

/// One key's refusals of one kind in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    key_id: String,
    minute: i64,
    status: u16,
    error_type: Option<String>,
    endpoint: String,
}

struct Tally {
    /// The first refusal's row, already stored; the summary row is made from it.
    first: UsageRecord,
    /// Refusals after the first.
    more: u64,
    last_at: OffsetDateTime,
}

fn minute_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60)
}

#[derive(Default)]
pub struct Refusals {
    tallies: Mutex<HashMap<Kind, Tally>>,
    /// The earliest minute with a tally, so the common case (nothing to flush) costs one load.
    oldest: AtomicI64,
}

impl Refusals {
    /// Counts a refusal. Returns the row to store now (the first of its kind this minute), or `None` when
    /// it was added to the minute's tally.
    pub fn count(&self, row: UsageRecord) -> Option<UsageRecord> {
        let kind = Kind {
            key_id: row.api_key_id.clone(),
            minute: minute_of(row.timestamp),
            status: row.status,
            error_type: row.error_type.clone(),
            endpoint: row.endpoint.clone(),
        };
        let mut tallies = self.tallies.lock().expect("refusal tallies");
        if let Some(tally) = tallies.get_mut(&kind) {
            tally.more = tally.more.saturating_add(1);
            tally.last_at = tally.last_at.max(row.timestamp);
            return None;
        }
        if tallies.is_empty() || kind.minute < self.oldest.load(Ordering::Relaxed) {
            self.oldest.store(kind.minute, Ordering::Relaxed);
        }
        tallies.insert(
            kind,
            Tally {
                first: row.clone(),
                more: 0,
                last_at: row.timestamp,
            },
        );
        Some(row)
    }

    /// The summary rows of every minute before `now`'s (of every minute, with `all`), taken out of the
    /// tallies: one per kind that had more than one refusal.
    pub fn finished(&self, now: OffsetDateTime, all: bool) -> Vec<UsageRecord> {
        let current = minute_of(now);
        if !all && self.oldest.load(Ordering::Relaxed) >= current {
            return Vec::new();
        }
        let mut tallies = self.tallies.lock().expect("refusal tallies");
        if tallies.is_empty() {
            return Vec::new();
        }
        let done: Vec<Kind> = tallies
            .keys()
            .filter(|k| all || k.minute < current)
            .cloned()
            .collect();
        let mut rows = Vec::new();
        for kind in done {
            let Some(tally) = tallies.remove(&kind) else {
                continue;
            };
            if tally.more > 0 {
                rows.push(UsageRecord {
                    request_id: format!("req_{}", uuid::Uuid::new_v4().simple()),
                    timestamp: tally.last_at,
                    count: tally.more,
                    ..tally.first
                });
            }
        }
        let oldest = tallies.keys().map(|k| k.minute).min().unwrap_or(i64::MAX);
        self.oldest.store(oldest, Ordering::Relaxed);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::TokenUsage;

    fn refusal(key: &str, at: OffsetDateTime, status: u16) -> UsageRecord {
        UsageRecord {
            timestamp: at,
            request_id: format!("req_{}", uuid::Uuid::new_v4().simple()),
            account_id: "acct".into(),
            api_key_id: key.into(),
            endpoint: "/v1/chat/completions".into(),
            provider: String::new(),
            model: String::new(),
            streamed: false,
            status,
            usage: TokenUsage::default(),
            latency_ms: 0,
            ttft_ms: None,
            cost_usd: 0.0,
            price_version: "v".into(),
            error_type: Some("rate_limit_exceeded".into()),
            source_ip: None,
            count: 1,
            rates: None,
            output_cap_tokens: None,
        }
    }

    #[test]
    fn a_minute_of_refusals_becomes_two_rows_that_count_them_all() {
        let refusals = Refusals::default();
        let t = time::macros::datetime!(2026-12-01 10:00:05 UTC);
        let mut stored = Vec::new();
        for i in 0..1000 {
            stored.extend(refusals.count(refusal(
                "k1",
                t + time::Duration::milliseconds(i * 50),
                429,
            )));
        }
        // Another key and another kind are tallied on their own.
        stored.extend(refusals.count(refusal("k2", t, 429)));
        stored.extend(refusals.count(refusal("k1", t, 402)));
        assert_eq!(stored.len(), 3);
        assert!(
            refusals
                .finished(t + time::Duration::seconds(30), false)
                .is_empty()
        );
        let summary = refusals.finished(t + time::Duration::seconds(60), false);
        assert_eq!(summary.len(), 1, "only k1's 429s had more than one");
        assert_eq!(summary[0].count, 999);
        assert_eq!(summary[0].api_key_id, "k1");
        assert_ne!(summary[0].request_id, stored[0].request_id);
        let total: u64 = stored.iter().chain(&summary).map(|r| r.count).sum();
        assert_eq!(total, 1002);
        // The next minute starts afresh.
        let next = refusals.count(refusal("k1", t + time::Duration::seconds(61), 429));
        assert!(next.is_some());
        assert!(
            refusals.finished(t, true).is_empty(),
            "a single refusal needs no summary"
        );
    }
}
