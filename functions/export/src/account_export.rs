//! `GET /account/export`: everything QNP holds on the signed-in account, as one JSON document (GDPR
//! access and portability). The shape is versioned by `format` and documented in the README:
//!
//! ```text
//! { "format": "qnp-account-export/1", "exported_at": RFC3339,
//!   "account": {id, email, name, plan, created_at, restricted, deletion_requested_at},
//!   "identities": [{provider, subject, email, created_at}],
//!   "api_keys": [{id, name, prefix, created_at, last_used_at, revoked_at, controls, rotated_at,
//!                 previous_secret_valid_until}],                              // never hashes
//!   "billing": {stripe_customer_id, subscription: {id, price_id, status, current_period_end,
//!               cancel_at_period_end} | null, payment_failed_at},         // never card data
//!   "usage": [UsageRecord, ...] }                                            // streamed, oldest first
//! ```

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use qnp_shared::GatewayError;
use qnp_shared::usage::format_timestamp;
use qnp_shared::web::SignedIn;
use serde_json::json;
use time::OffsetDateTime;

use crate::Export;

pub const FORMAT: &str = "qnp-account-export/1";

async fn head(
    export: &Export,
    me: &SignedIn,
    now: OffsetDateTime,
) -> Result<Vec<u8>, GatewayError> {
    let records = &export.web.records;
    let account = &me.account;
    let identities = records
        .identities_for_account(&account.id)
        .await
        .map_err(GatewayError::internal)?;
    let keys = records
        .keys_for_account(&account.id)
        .await
        .map_err(GatewayError::internal)?;
    let ts = |t: OffsetDateTime| format_timestamp(t);
    let document = json!({
        "format": FORMAT,
        "exported_at": ts(now),
        "account": {
            "id": account.id, "email": account.email, "name": account.name, "plan": account.plan,
            "created_at": ts(account.created_at), "restricted": account.restricted,
            "deletion_requested_at": account.deletion_requested_at.map(ts),
        },
        "identities": identities.iter().map(|i| json!({
            "provider": i.provider, "subject": i.subject, "email": i.email, "created_at": ts(i.created_at),
        })).collect::<Vec<_>>(),
        "api_keys": keys.iter().map(|k| json!({
            "id": k.key_id, "name": k.name, "prefix": k.prefix(), "created_at": ts(k.created_at),
            "last_used_at": k.last_used_at.map(ts), "revoked_at": k.revoked_at.map(ts),
            "controls": &k.controls,
            "rotated_at": k.previous.as_ref().map(|p| ts(p.rotated_at)),
            "previous_secret_valid_until": k.previous.as_ref().map(|p| ts(p.valid_until)),
        })).collect::<Vec<_>>(),
        "billing": {
            "stripe_customer_id": account.billing.stripe_customer_id,
            "subscription": account.billing.subscription.as_ref().map(|s| json!({
                "id": s.id, "price_id": s.price_id, "status": s.status,
                "current_period_end": ts(s.current_period_end),
                "cancel_at_period_end": s.cancel_at_period_end,
            })),
            "payment_failed_at": account.billing.payment_failed_at.map(ts),
        },
    });
    // Everything but the usage array, which is streamed after it: `{...,"usage":[`.
    let mut head = serde_json::to_vec(&document).map_err(GatewayError::internal)?;
    head.pop(); // the closing brace
    head.extend_from_slice(b",\"usage\":[");
    Ok(head)
}

pub async fn export(
    State(export): State<Arc<Export>>,
    Extension(me): Extension<SignedIn>,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let slot = match export.transfers.slot(&me.account.id) {
        Ok(slot) => slot,
        Err(err) => return err.into_response(),
    };
    let head = match head(&export, &me, now).await {
        Ok(head) => head,
        Err(err) => return err.into_response(),
    };
    // Usage is kept 30 days; take everything the store has for the account.
    let mut rows = export.web.records.usage_for_account(
        &me.account.id,
        OffsetDateTime::UNIX_EPOCH,
        now + time::Duration::days(1),
    );
    let body = async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(Bytes::from(head));
        let mut first = true;
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    tracing::error!(error = %e, "account export failed mid-stream");
                    yield Err(std::io::Error::other("account export failed"));
                    return;
                }
            };
            let mut bytes = if first { Vec::new() } else { b",".to_vec() };
            first = false;
            serde_json::to_writer(&mut bytes, &row).expect("usage rows serialise");
            yield Ok(Bytes::from(bytes));
        }
        yield Ok(Bytes::from_static(b"]}"));
    };
    let mut response = export.transfers.body(slot, body.boxed()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"qnp-account-export.json\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
