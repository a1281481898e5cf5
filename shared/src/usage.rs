//! Usage records: one per proxied request, successes and failures alike, metadata only. No field here can
//! hold prompt or completion text, by construction: the record has no free-text field but the error type,
//! which is one of the gateway's own fixed strings.

use std::io::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pricing::{AppliedRates, ServiceTier, per_mtok};

/// Token counts as the upstream reported them. `prompt_tokens` includes cached and cache-write tokens;
/// `completion_tokens` includes reasoning tokens (OpenAI's convention, which other providers map onto).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written to live long (Anthropic's 1-hour lifetime, OpenAI's
    /// extended retention), priced above the default lifetime.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
    /// Hosted web searches the provider ran for the call (OpenAI's `web_search_call` items), billed per
    /// call at the model's `web_search_per_call_usd`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_search_calls: u64,
    /// Images in the request, for models that charge a fee per input image (counted by the gateway:
    /// providers do not report them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_images: u64,
    /// The processing tier the provider reports serving the call at, when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
    /// The provider did not report these counts; the gateway estimated them (about four bytes of
    /// request or response per token) so the call is still metered. Never set when the provider counts.
    #[serde(default)]
    pub estimated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenUsage {
    /// The most any count may be, so that a count an upstream made up can still be stored (stores hold
    /// i64, costs are f64: 2^53 is exact in both) and priced without overflow.
    pub const MAX_COUNT: u64 = 1 << 53;

    /// The counts capped at [`TokenUsage::MAX_COUNT`], and the parts no larger than their wholes.
    pub fn bounded(self) -> TokenUsage {
        let cap = |n: u64| n.min(TokenUsage::MAX_COUNT);
        let prompt_tokens = cap(self.prompt_tokens);
        let cache_write_tokens = cap(self.cache_write_tokens);
        TokenUsage {
            prompt_tokens,
            completion_tokens: cap(self.completion_tokens),
            cached_tokens: cap(self.cached_tokens),
            cache_write_tokens,
            cache_write_1h_tokens: cap(self.cache_write_1h_tokens).min(cache_write_tokens),
            reasoning_tokens: cap(self.reasoning_tokens),
            web_search_calls: cap(self.web_search_calls),
            input_images: cap(self.input_images),
            service_tier: self.service_tier,
            estimated: self.estimated,
        }
    }

    /// The cost of this usage at `rates`. Cached prompt tokens and cache writes are part of
    /// `prompt_tokens`; long-lived cache writes are part of the cache writes.
    pub fn cost_at(&self, rates: &AppliedRates) -> f64 {
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let written = self
            .cache_write_tokens
            .min(self.prompt_tokens.saturating_sub(cached));
        let written_1h = self.cache_write_1h_tokens.min(written);
        let fresh = self
            .prompt_tokens
            .saturating_sub(cached)
            .saturating_sub(written);
        per_mtok(fresh, rates.input_per_mtok)
            + per_mtok(cached, rates.cached_input_per_mtok)
            + per_mtok(written - written_1h, rates.cache_write_per_mtok)
            + per_mtok(written_1h, rates.cache_write_1h_per_mtok)
            + per_mtok(self.completion_tokens, rates.output_per_mtok)
            + self.web_search_calls as f64 * rates.web_search_per_call_usd
            + self.input_images as f64 * rates.input_per_image_usd
    }

    /// Prompt and completion tokens together, saturating (counts come from upstreams).
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// An estimate for a call whose provider reported no usage.
    pub fn estimate(request_bytes: usize, response_bytes: usize) -> TokenUsage {
        TokenUsage {
            prompt_tokens: request_bytes.div_ceil(4) as u64,
            completion_tokens: response_bytes.div_ceil(4) as u64,
            estimated: true,
            ..TokenUsage::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub request_id: String,
    pub account_id: String,
    pub api_key_id: String,
    /// The route called, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    pub provider: String,
    pub model: String,
    pub streamed: bool,
    pub status: u16,
    pub usage: TokenUsage,
    pub latency_ms: u64,
    /// Time to the first byte of the upstream's stream; streams only.
    pub ttft_ms: Option<u64>,
    pub cost_usd: f64,
    pub price_version: String,
    /// The gateway's error type when the call failed (or a stream ended abnormally).
    pub error_type: Option<String>,
    pub source_ip: Option<String>,
    /// The rates the cost was computed at (tier, long-context, each token kind's rate and the fees);
    /// none on rows with no model (refused before one was chosen) and on rows older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<AppliedRates>,
    /// The output limit the gateway set because the client set none and the spend cap left money for
    /// fewer tokens than the model's own limit (also sent as `x-qnp-max-output-tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cap_tokens: Option<u64>,
    /// How many calls the row stands for: 1, except for a row that sums up one key's refusals of one
    /// kind in one minute (see `refusals`), so refusals cost bounded storage.
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// The CSV export's columns, in the order docs/contracts.md fixes.
pub const CSV_HEADER: [&str; 16] = [
    "timestamp",
    "request_id",
    "api_key_id",
    "endpoint",
    "provider",
    "model",
    "streamed",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "latency_ms",
    "ttft_ms",
    "cost_usd",
    "error_type",
];

/// RFC 3339 in UTC with millisecond precision, the format of every exported timestamp.
pub fn format_timestamp(ts: OffsetDateTime) -> String {
    let ts = ts.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        ts.year(),
        u8::from(ts.month()),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second(),
        ts.millisecond()
    )
}

/// Default export window when no `from` is given.
pub const DEFAULT_RANGE_DAYS: i64 = 30;

/// The earliest and latest instants a range may name. Nothing QNP stores is older than the first, and
/// bounding both ends keeps every date computation on user input (a day added, 30 days subtracted, the
/// conversions to the stores' millisecond timestamps) inside what the date types can represent.
pub const EARLIEST: OffsetDateTime = time::macros::datetime!(1970-01-01 0:00 UTC);
pub const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 0:00 UTC);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RangeError {
    #[error("'{field}' must be a date (YYYY-MM-DD) or an RFC 3339 timestamp, got '{value}'")]
    Malformed { field: &'static str, value: String },
    #[error("'{field}' must be between 1970-01-01 and 9999-12-30, got '{value}'")]
    OutOfRange { field: &'static str, value: String },
    #[error("'from' must not be after 'to'")]
    Reversed,
}

impl RangeError {
    /// The query parameter at fault.
    pub fn field(&self) -> &'static str {
        match self {
            RangeError::Malformed { field, .. } | RangeError::OutOfRange { field, .. } => field,
            RangeError::Reversed => "from",
        }
    }
}

/// Parses an export range. A bare date for `to` includes that whole day. Defaults: the last 30 days.
/// Every instant is checked against [`EARLIEST`]..=[`LATEST`] before any arithmetic, so no input can
/// overflow a date computation.
pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), RangeError> {
    fn parse(
        field: &'static str,
        value: &str,
        end_of_day: bool,
    ) -> Result<OffsetDateTime, RangeError> {
        let shown: String = value.chars().take(40).collect();
        let malformed = || RangeError::Malformed {
            field,
            value: shown.clone(),
        };
        let out_of_range = || RangeError::OutOfRange {
            field,
            value: shown.clone(),
        };
        let instant = if let Ok(ts) =
            OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        {
            ts
        } else {
            let date = time::Date::parse(
                value,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| malformed())?;
            let date = if end_of_day {
                date.next_day().ok_or_else(out_of_range)?
            } else {
                date
            };
            date.midnight().assume_utc()
        };
        if !(EARLIEST..=LATEST).contains(&instant) {
            return Err(out_of_range());
        }
        Ok(instant)
    }
    let to = match to.map(str::trim).filter(|s| !s.is_empty()) {
        Some(value) => parse("to", value, true)?,
        None => now.clamp(EARLIEST, LATEST),
    };
    let from = match from.map(str::trim).filter(|s| !s.is_empty()) {
        Some(value) => parse("from", value, false)?,
        None => to
            .checked_sub(time::Duration::days(DEFAULT_RANGE_DAYS))
            .unwrap_or(EARLIEST)
            .max(EARLIEST),
    };
    if from > to {
        return Err(RangeError::Reversed);
    }
    Ok((from, to))
}

/// The UTC day (`YYYY-MM-DD`) of the last instant before `to`, for naming a file that ends at `to`
/// (exclusive). Saturates at the earliest representable day instead of overflowing.
pub fn last_day_before(to: OffsetDateTime) -> String {
    let last = to.checked_sub(time::Duration::nanoseconds(1)).unwrap_or(to);
    format_timestamp(last)[..10].to_owned()
}

/// Writes usage rows as CSV, one row at a time, so an export never holds more than a row in memory.
pub struct CsvWriter<W: Write> {
    inner: csv::Writer<W>,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> csv::Result<Self> {
        let mut writer = CsvWriter::rows_only(out);
        writer.inner.write_record(CSV_HEADER)?;
        Ok(writer)
    }

    /// A writer for rows that continue an export whose header was already written.
    pub fn rows_only(out: W) -> Self {
        CsvWriter {
            inner: csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out),
        }
    }

    pub fn write(&mut self, row: &UsageRecord) -> csv::Result<()> {
        let u = &row.usage;
        self.inner.write_record([
            format_timestamp(row.timestamp).as_str(),
            &cell(&row.request_id),
            &cell(&row.api_key_id),
            &cell(&row.endpoint),
            &cell(&row.provider),
            &cell(&row.model),
            if row.streamed { "true" } else { "false" },
            &row.status.to_string(),
            &u.prompt_tokens.to_string(),
            &u.completion_tokens.to_string(),
            &u.cached_tokens.to_string(),
            &u.reasoning_tokens.to_string(),
            &row.latency_ms.to_string(),
            &row.ttft_ms.map(|t| t.to_string()).unwrap_or_default(),
            &format_cost(row.cost_usd),
            &cell(row.error_type.as_deref().unwrap_or("")),
        ])
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    pub fn into_inner(self) -> Result<W, std::io::Error> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

/// A text cell made safe for spreadsheets (OWASP's CSV-injection rule): a cell that starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return would be read as a formula, so it is prefixed with `'`.
/// Numbers and timestamps are written by the gateway itself and never pass through here.
pub fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The CSV header line, as the first chunk of a streamed export.
pub fn csv_header() -> Vec<u8> {
    CsvWriter::new(Vec::new())
        .and_then(|w| w.into_inner().map_err(Into::into))
        .expect("writing to memory cannot fail")
}

/// A batch of rows as CSV bytes, for a streamed export.
pub fn csv_rows(rows: &[UsageRecord]) -> Vec<u8> {
    let mut writer = CsvWriter::rows_only(Vec::with_capacity(rows.len() * 160));
    for row in rows {
        writer.write(row).expect("writing to memory cannot fail");
    }
    writer.into_inner().expect("writing to memory cannot fail")
}

/// Costs are exported with enough precision for a single cheap call (fractions of a micro-dollar).
fn format_cost(cost: f64) -> String {
    let s = format!("{cost:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_contract_columns_and_formats() {
        let row = UsageRecord {
            timestamp: time::macros::datetime!(2026-11-27 01:02:03.456 UTC),
            request_id: "req_1".into(),
            account_id: "acct_1".into(),
            api_key_id: "kid".into(),
            endpoint: "/v1/chat/completions".into(),
            provider: "openai".into(),
            model: "openai/gpt-4o-mini".into(),
            streamed: true,
            status: 200,
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 2,
                cache_write_tokens: 0,
                reasoning_tokens: 1,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                estimated: false,
                input_images: 0,
                service_tier: None,
            },
            latency_ms: 120,
            ttft_ms: Some(30),
            cost_usd: 0.0000045,
            price_version: "v".into(),
            error_type: None,
            source_ip: Some("127.0.0.1".into()),
            count: 1,
            rates: None,
            output_cap_tokens: None,
        };
        let mut writer = CsvWriter::new(Vec::new()).unwrap();
        writer.write(&row).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "timestamp,request_id,api_key_id,endpoint,provider,model,streamed,status,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,latency_ms,ttft_ms,cost_usd,error_type"
        );
        assert_eq!(
            lines.next().unwrap(),
            "2026-11-27T01:02:03.456Z,req_1,kid,/v1/chat/completions,openai,openai/gpt-4o-mini,true,200,10,5,2,1,120,30,0.0000045,"
        );
        assert_eq!(format_cost(0.0), "0");
    }

    #[test]
    fn ranges_default_to_thirty_days_and_name_the_bad_field() {
        let now = time::macros::datetime!(2026-11-27 12:00 UTC);
        let (from, to) = parse_range(None, None, now).unwrap();
        assert_eq!(to, now);
        assert_eq!(from, time::macros::datetime!(2026-10-28 12:00 UTC));
        let (from, to) = parse_range(Some("2026-11-01"), Some("2026-11-02"), now).unwrap();
        assert_eq!(from, time::macros::datetime!(2026-11-01 0:00 UTC));
        assert_eq!(to, time::macros::datetime!(2026-11-03 0:00 UTC));
        let (_, to) = parse_range(None, Some("2026-11-02T10:00:00Z"), now).unwrap();
        assert_eq!(to, time::macros::datetime!(2026-11-02 10:00 UTC));
        assert_eq!(
            parse_range(Some("yesterday"), None, now)
                .unwrap_err()
                .field(),
            "from"
        );
        assert_eq!(
            parse_range(None, Some("2026-13-01"), now)
                .unwrap_err()
                .field(),
            "to"
        );
        assert_eq!(format_cost(1.5), "1.5");
    }

    #[test]
    fn cells_that_a_spreadsheet_would_run_are_escaped() {
        let mut row = UsageRecord {
            timestamp: time::macros::datetime!(2026-11-27 01:02:03.456 UTC),
            request_id: "req_1".into(),
            account_id: "a".into(),
            api_key_id: "k".into(),
            endpoint: "/v1/chat/completions".into(),
            provider: "openai".into(),
            model: "=cmd|' /C calc'!A0".into(),
            streamed: false,
            status: 400,
            usage: TokenUsage::default(),
            latency_ms: 1,
            ttft_ms: None,
            cost_usd: 0.0,
            price_version: "v".into(),
            error_type: Some("@SUM(1+1)".into()),
            source_ip: None,
            count: 1,
            rates: None,
            output_cap_tokens: None,
        };
        let text = String::from_utf8(csv_rows(std::slice::from_ref(&row))).unwrap();
        assert!(text.contains(",'=cmd|' /C calc'!A0,"), "{text}");
        assert!(text.contains(",'@SUM(1+1)"), "{text}");
        for bad in ["+1", "-1", "\tx", "\rx"] {
            row.error_type = Some(bad.into());
            let text = String::from_utf8(csv_rows(std::slice::from_ref(&row))).unwrap();
            let last = text.trim_end_matches('\n').rsplit(',').next().unwrap();
            assert!(
                last.trim_matches('"').starts_with('\''),
                "{bad:?} gave {last:?}"
            );
        }
        assert_eq!(cell("openai/gpt-4o-mini"), "openai/gpt-4o-mini");
    }

    #[test]
    fn extreme_dates_are_refused_not_computed() {
        let now = time::macros::datetime!(2026-11-27 12:00 UTC);
        for (from, to, field) in [
            (None, Some("-999999-01-01"), "to"),
            (None, Some("-9999-01-01"), "to"),
            (None, Some("0000-01-01"), "to"),
            (Some("-9999-01-01"), None, "from"),
            (None, Some("9999-12-31"), "to"),
            (Some("9999-12-31T23:59:59Z"), None, "from"),
            (None, Some("1969-12-31T23:59:59Z"), "to"),
            (Some("2026-11-03"), Some("2026-11-01"), "from"),
        ] {
            let err = parse_range(from, to, now).unwrap_err();
            assert_eq!(err.field(), field, "{from:?} {to:?}: {err}");
        }
        // The very ends still work, and the default window never reaches before 1970.
        let (from, to) = parse_range(None, Some("1970-01-01"), now).unwrap();
        assert_eq!(
            (from, to),
            (EARLIEST, time::macros::datetime!(1970-01-02 0:00 UTC))
        );
        let (_, to) = parse_range(None, Some("9999-12-30"), now).unwrap();
        assert_eq!(to, LATEST);
        assert_eq!(last_day_before(EARLIEST), "1969-12-31");
        assert_eq!(last_day_before(LATEST), "9999-12-30");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn check(from: Option<&str>, to: Option<&str>, now: OffsetDateTime) {
            match parse_range(from, to, now) {
                Ok((from, to)) => {
                    assert!(EARLIEST <= from && from <= to && to <= LATEST);
                    // What the export does with a range must not fail either.
                    let _ = last_day_before(to);
                    let _ = format_timestamp(from);
                }
                Err(err) => assert!(["from", "to"].contains(&err.field())),
            }
        }

        fn any_instant() -> impl Strategy<Value = OffsetDateTime> {
            (-377_705_116_800i64..=253_402_300_799i64)
                .prop_map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(from in proptest::option::of(".{0,40}"),
                                           to in proptest::option::of(".{0,40}"),
                                           now in any_instant()) {
                check(from.as_deref(), to.as_deref(), now);
            }

            #[test]
            fn date_shaped_text_never_panics(year in -999_999i64..=999_999, month in 0u8..=13,
                                             day in 0u8..=32, hour in 0u8..=25, time in any::<bool>(),
                                             which in 0u8..3, now in any_instant()) {
                let date = if time {
                    format!("{year:04}-{month:02}-{day:02}T{hour:02}:00:00Z")
                } else {
                    format!("{year:04}-{month:02}-{day:02}")
                };
                match which {
                    0 => check(Some(&date), None, now),
                    1 => check(None, Some(&date), now),
                    _ => check(Some(&date), Some(&date), now),
                }
            }
        }
    }
}
