//! `GET /usage` (JSON totals for the dashboard) and `GET /usage/export.csv` (every row, streamed).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use qnp_shared::GatewayError;
use qnp_shared::usage::{csv_header, csv_rows, format_timestamp, last_day_before, parse_range};
use qnp_shared::web::{QueryParams, SignedIn};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::Export;

/// Rows per chunk written to the response: large enough to amortise the write, small enough that
/// memory stays flat.
const ROWS_PER_CHUNK: usize = 500;

#[derive(Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /usage`'s query: the range, and optionally one of the account's keys to total alone.
#[derive(Deserialize)]
pub struct SummaryQuery {
    from: Option<String>,
    to: Option<String>,
    key: Option<String>,
}

fn range(query: &Range) -> Result<(OffsetDateTime, OffsetDateTime), GatewayError> {
    parse_range(
        query.from.as_deref(),
        query.to.as_deref(),
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| GatewayError::field(e.field(), e.to_string()))
}

async fn totals(
    export: &Export,
    me: &SignedIn,
    query: SummaryQuery,
) -> Result<Response, GatewayError> {
    let (from, to) = range(&Range {
        from: query.from,
        to: query.to,
    })?;
    // Another account's key id finds no rows: the filter is within the signed-in account.
    let key = query.key.as_deref().filter(|k| !k.is_empty());
    if key.is_some_and(|k| k.len() > 64 || !k.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(GatewayError::field("key", "'key' must be a key id"));
    }
    let rows = export
        .web
        .records
        .usage_totals(&me.account.id, key, from, to)
        .await
        .map_err(GatewayError::internal)?;
    // Per-day and per-model views are sums over the (day, model) groups the database returned.
    let mut by_day: BTreeMap<&str, (u64, u64, f64)> = BTreeMap::new();
    let mut by_model: BTreeMap<&str, (u64, u64, f64)> = BTreeMap::new();
    for row in &rows {
        for (map, key) in [
            (&mut by_day, row.day.as_str()),
            (&mut by_model, row.model.as_str()),
        ] {
            let entry = map.entry(key).or_default();
            entry.0 += row.requests;
            entry.1 += row.prompt_tokens + row.completion_tokens;
            entry.2 += row.cost_usd;
        }
    }
    let view = |map: &BTreeMap<&str, (u64, u64, f64)>, name: &str| {
        map.iter()
            .map(|(key, (requests, tokens, cost))| json!({name: key, "requests": requests, "tokens": tokens, "cost_usd": cost}))
            .collect::<Vec<_>>()
    };
    Ok(Json(json!({
        "from": format_timestamp(from),
        "to": format_timestamp(to),
        "key": key,
        "totals": rows,
        "by_day": view(&by_day, "day"),
        "by_model": view(&by_model, "model"),
        "requests": rows.iter().map(|r| r.requests).sum::<u64>(),
        "cost_usd": rows.iter().map(|r| r.cost_usd).sum::<f64>(),
    }))
    .into_response())
}

pub async fn summary(
    State(export): State<Arc<Export>>,
    Extension(me): Extension<SignedIn>,
    QueryParams(query): QueryParams<SummaryQuery>,
) -> Response {
    totals(&export, &me, query)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Most calls the recent-calls table asks for at once.
const MAX_RECENT: u64 = 200;

#[derive(Deserialize)]
pub struct Recent {
    limit: Option<u64>,
}

/// `GET /usage/calls?limit=N`: the latest calls, newest first, for the dashboard's table.
pub async fn recent(
    State(export): State<Arc<Export>>,
    Extension(me): Extension<SignedIn>,
    QueryParams(query): QueryParams<Recent>,
) -> Response {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_RECENT).contains(&limit) {
        return GatewayError::field("limit", format!("'limit' must be 1 to {MAX_RECENT}"))
            .into_response();
    }
    match export.web.records.recent_usage(&me.account.id, limit).await {
        Ok(rows) => Json(json!({"data": rows})).into_response(),
        Err(e) => GatewayError::internal(e).into_response(),
    }
}

fn day(ts: OffsetDateTime) -> String {
    format_timestamp(ts)[..10].to_owned()
}

pub async fn csv(
    State(export): State<Arc<Export>>,
    Extension(me): Extension<SignedIn>,
    QueryParams(query): QueryParams<Range>,
) -> Response {
    let (from, to) = match range(&query) {
        Ok(range) => range,
        Err(err) => return err.into_response(),
    };
    let slot = match export.transfers.slot(&me.account.id) {
        Ok(slot) => slot,
        Err(err) => return err.into_response(),
    };
    let mut rows = export
        .web
        .records
        .usage_for_account(&me.account.id, from, to)
        .chunks(ROWS_PER_CHUNK);
    let body = async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(Bytes::from(csv_header()));
        while let Some(chunk) = rows.next().await {
            let mut batch = Vec::with_capacity(chunk.len());
            for row in chunk {
                match row {
                    Ok(row) => batch.push(row),
                    Err(e) => {
                        // Headers are gone already: abort the body so the download is visibly broken
                        // rather than silently short.
                        tracing::error!(error = %e, "usage export failed mid-stream");
                        yield Err(std::io::Error::other("usage export failed"));
                        return;
                    }
                }
            }
            yield Ok(Bytes::from(csv_rows(&batch)));
        }
    };
    let mut response = export.transfers.body(slot, body.boxed()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let filename = format!(
        "attachment; filename=\"qnp-usage-{}-{}.csv\"",
        day(from),
        // `to` is exclusive: name the last day the file holds.
        last_day_before(to)
    );
    if let Ok(value) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
