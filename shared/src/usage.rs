//! Usage records: one per proxied request, successes and failures alike, metadata only. No field here can
//! hold prompt or completion text, by construction: the record has no free-text field but the error type,
//! which is one of the gateway's own fixed strings.

use std::io::Write;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Token counts as the upstream reported them. `prompt_tokens` includes cached and cache-write tokens;
/// `completion_tokens` includes reasoning tokens (OpenAI's convention, which other providers map onto).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// The provider did not report these counts; the gateway estimated them (about four bytes of
    /// request or response per token) so the call is still metered. Never set when the provider counts.
    #[serde(default)]
    pub estimated: bool,
}

impl TokenUsage {
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
}

/// The CSV export's columns, in the order DESIGN.md fixes.
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

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("'{field}' must be a date (YYYY-MM-DD) or an RFC 3339 timestamp, got '{value}'")]
pub struct RangeError {
    pub field: &'static str,
    pub value: String,
}

/// Parses an export range. A bare date for `to` includes that whole day. Defaults: the last 30 days.
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
        let err = || RangeError {
            field,
            value: value.into(),
        };
        if let Ok(ts) = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        {
            return Ok(ts);
        }
        let date = time::Date::parse(
            value,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| err())?;
        let date = if end_of_day {
            date.next_day().ok_or_else(err)?
        } else {
            date
        };
        Ok(date.midnight().assume_utc())
    }
    let to = match to.map(str::trim).filter(|s| !s.is_empty()) {
        Some(value) => parse("to", value, true)?,
        None => now,
    };
    let from = match from.map(str::trim).filter(|s| !s.is_empty()) {
        Some(value) => parse("from", value, false)?,
        None => to - time::Duration::days(DEFAULT_RANGE_DAYS),
    };
    Ok((from, to))
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
            &row.request_id,
            &row.api_key_id,
            &row.endpoint,
            &row.provider,
            &row.model,
            if row.streamed { "true" } else { "false" },
            &row.status.to_string(),
            &u.prompt_tokens.to_string(),
            &u.completion_tokens.to_string(),
            &u.cached_tokens.to_string(),
            &u.reasoning_tokens.to_string(),
            &row.latency_ms.to_string(),
            &row.ttft_ms.map(|t| t.to_string()).unwrap_or_default(),
            &format_cost(row.cost_usd),
            row.error_type.as_deref().unwrap_or(""),
        ])
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    pub fn into_inner(self) -> Result<W, std::io::Error> {
        self.inner.into_inner().map_err(|e| e.into_error())
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
                estimated: false,
            },
            latency_ms: 120,
            ttft_ms: Some(30),
            cost_usd: 0.0000045,
            price_version: "v".into(),
            error_type: None,
            source_ip: Some("127.0.0.1".into()),
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
            parse_range(Some("yesterday"), None, now).unwrap_err().field,
            "from"
        );
        assert_eq!(
            parse_range(None, Some("2026-13-01"), now)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(format_cost(1.5), "1.5");
    }
}
