//! `POST /webhooks/stripe`: the raw body goes to verification untouched; the answer tells Stripe whether
//! to retry (5xx) or not (2xx, also for deliveries that can never be applied), and a forged or stale
//! delivery gets 400 with nothing written.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use qnp_shared::billing::events::Receipt;
use serde_json::json;
use time::OffsetDateTime;

use crate::Payments;

pub async fn receive(
    State(payments): State<Arc<Payments>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let receipt = payments
        .webhooks
        .receive(&body, signature, OffsetDateTime::now_utc())
        .await;
    match receipt {
        Receipt::Rejected(reason) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": reason, "type": "invalid_signature"}})),
        )
            .into_response(),
        Receipt::Acknowledged(note) => {
            Json(json!({"received": true, "note": note})).into_response()
        }
        Receipt::RetryLater => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"error": {"message": "try again later", "type": "temporarily_unavailable"}}),
            ),
        )
            .into_response(),
    }
}
