//! A loopback stand-in for the Stripe API endpoints QNP calls, answering in Stripe's current JSON shape
//! (what async-stripe's typed parser accepts) and recording every request with its form-encoded body
//! decoded, so tests can assert on exactly what async-stripe sent. Also builds current-shape webhook
//! events and signs them with Stripe's scheme.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

/// One request as the Stripe stand-in received it.
#[derive(Debug, Clone)]
pub struct StripeRequest {
    pub method: String,
    pub path: String,
    /// The form body, decoded: `line_items[0][price]` → `price_...`.
    pub form: HashMap<String, String>,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
}

#[derive(Default)]
struct Ledger {
    requests: Vec<StripeRequest>,
    /// Idempotency key → customer id, as Stripe replays a keyed request's first result.
    customers_by_key: HashMap<String, String>,
    customers: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    next: u64,
    /// Answer the next request with this status (and a Stripe error body).
    fail_next: Option<u16>,
}

#[derive(Clone, Default)]
struct MockState(Arc<Mutex<Ledger>>);

pub struct MockStripe {
    url: String,
    state: MockState,
}

impl MockStripe {
    pub async fn start() -> MockStripe {
        let state = MockState::default();
        let app = Router::new()
            .route("/v1/customers", post(create_customer))
            .route("/v1/customers/{id}", delete(delete_customer))
            .route("/v1/checkout/sessions", post(create_checkout_session))
            .route("/v1/billing_portal/sessions", post(create_portal_session))
            .route("/v1/subscriptions/{id}", get(retrieve_subscription))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockStripe { url, state }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn requests(&self) -> Vec<StripeRequest> {
        self.state.0.lock().unwrap().requests.clone()
    }

    /// Requests to one path (e.g. `/v1/checkout/sessions`).
    pub fn requests_to(&self, path: &str) -> Vec<StripeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// What `GET /v1/subscriptions/{id}` answers from now on.
    pub fn set_subscription(&self, subscription: Value) {
        let id = subscription["id"].as_str().unwrap().to_owned();
        self.state
            .0
            .lock()
            .unwrap()
            .subscriptions
            .insert(id, subscription);
    }

    pub fn customer_exists(&self, id: &str) -> bool {
        self.state.0.lock().unwrap().customers.contains_key(id)
    }

    pub fn fail_next(&self, status: u16) {
        self.state.0.lock().unwrap().fail_next = Some(status);
    }
}

fn record(state: &MockState, method: &str, path: &str, headers: &HeaderMap, body: &[u8]) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let form = url::form_urlencoded::parse(body).into_owned().collect();
    state.0.lock().unwrap().requests.push(StripeRequest {
        method: method.into(),
        path: path.into(),
        form,
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        stripe_version: header("stripe-version"),
    });
}

fn stripe_error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    let kind = if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        axum::Json(json!({"error": {"type": kind, "code": code, "message": message}})),
    )
        .into_response()
}

/// The injected failure, if one is armed.
fn injected_failure(state: &MockState) -> Option<Response> {
    let status = state.0.lock().unwrap().fail_next.take()?;
    Some(stripe_error(status, "injected", "injected failure"))
}

fn next_id(state: &MockState, prefix: &str) -> String {
    let mut ledger = state.0.lock().unwrap();
    ledger.next += 1;
    format!("{prefix}_mock{:08}", ledger.next)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn create_customer(
    State(state): State<MockState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "POST", "/v1/customers", &headers, &body);
    if let Some(failure) = injected_failure(&state) {
        return failure;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let existing = key.as_ref().and_then(|k| {
        let ledger = state.0.lock().unwrap();
        let id = ledger.customers_by_key.get(k)?;
        ledger.customers.get(id).cloned()
    });
    if let Some(customer) = existing {
        return axum::Json(customer).into_response();
    }
    let id = next_id(&state, "cus");
    let customer = json!({
        "id": id, "object": "customer", "created": now(), "livemode": false,
        "email": form.get("email"), "name": form.get("name"),
        "metadata": {"account_id": form.get("metadata[account_id]")},
    });
    let mut ledger = state.0.lock().unwrap();
    if let Some(key) = key {
        ledger.customers_by_key.insert(key, id.clone());
    }
    ledger.customers.insert(id, customer.clone());
    axum::Json(customer).into_response()
}

async fn delete_customer(
    State(state): State<MockState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(
        &state,
        "DELETE",
        &format!("/v1/customers/{id}"),
        &headers,
        b"",
    );
    if let Some(failure) = injected_failure(&state) {
        return failure;
    }
    if state.0.lock().unwrap().customers.remove(&id).is_none() {
        return stripe_error(
            404,
            "resource_missing",
            &format!("No such customer: '{id}'"),
        );
    }
    axum::Json(json!({"id": id, "object": "customer", "deleted": true})).into_response()
}

async fn create_checkout_session(
    State(state): State<MockState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "POST", "/v1/checkout/sessions", &headers, &body);
    if let Some(failure) = injected_failure(&state) {
        return failure;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let id = next_id(&state, "cs_test");
    axum::Json(json!({
        "id": id, "object": "checkout.session", "automatic_tax": {"enabled": false},
        "created": now(), "custom_fields": [], "custom_text": {}, "expires_at": now() + 86_400,
        "livemode": false, "mode": "subscription", "payment_method_types": ["card"],
        "payment_status": "unpaid", "shipping_options": [], "status": "open",
        "customer": form.get("customer"), "client_reference_id": form.get("client_reference_id"),
        "metadata": {"account_id": form.get("metadata[account_id]")},
        "url": format!("https://checkout.stripe.com/c/pay/{id}"),
    }))
    .into_response()
}

async fn create_portal_session(
    State(state): State<MockState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &state,
        "POST",
        "/v1/billing_portal/sessions",
        &headers,
        &body,
    );
    if let Some(failure) = injected_failure(&state) {
        return failure;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let id = next_id(&state, "bps");
    axum::Json(json!({
        "id": id, "object": "billing_portal.session", "configuration": "bpc_mock",
        "created": now(), "customer": form.get("customer"), "livemode": false,
        "return_url": form.get("return_url"),
        "url": format!("https://billing.stripe.com/p/session/{id}"),
    }))
    .into_response()
}

async fn retrieve_subscription(
    State(state): State<MockState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(
        &state,
        "GET",
        &format!("/v1/subscriptions/{id}"),
        &headers,
        b"",
    );
    if let Some(failure) = injected_failure(&state) {
        return failure;
    }
    match state.0.lock().unwrap().subscriptions.get(&id) {
        Some(sub) => axum::Json(sub.clone()).into_response(),
        None => stripe_error(
            404,
            "resource_missing",
            &format!("No such subscription: '{id}'"),
        ),
    }
}

/// A subscription in the current API shape (period end on its item, as since 2025-03-31).
pub struct SubscriptionSpec<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub account_id: &'a str,
    pub price: &'a str,
    pub status: &'a str,
    pub current_period_end: i64,
    pub cancel_at_period_end: bool,
}

pub fn subscription_json(s: &SubscriptionSpec) -> Value {
    let start = s.current_period_end - 30 * 86_400;
    json!({
        "id": s.id, "object": "subscription", "application": null, "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": start, "billing_cycle_anchor_config": null,
        "billing_mode": {"flexible": null, "type": "classic"}, "billing_schedules": [],
        "billing_thresholds": null, "cancel_at": null, "cancel_at_period_end": s.cancel_at_period_end,
        "canceled_at": null, "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": "charge_automatically", "created": start, "currency": "usd",
        "customer": s.customer, "customer_account": null, "days_until_due": null,
        "default_payment_method": "pm_mock", "default_source": null, "default_tax_rates": [],
        "description": null, "discounts": [], "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": {"object": "list", "data": [{
            "id": format!("si_{}", s.id), "object": "subscription_item", "billing_thresholds": null,
            "created": start, "current_period_end": s.current_period_end, "current_period_start": start,
            "discounts": [], "metadata": {},
            "plan": {"id": s.price, "object": "plan", "active": true, "amount": 2000,
                "amount_decimal": "2000", "billing_scheme": "per_unit", "created": start - 86_400,
                "currency": "usd", "interval": "month", "interval_count": 1, "livemode": false,
                "metadata": {}, "meter": null, "nickname": null, "product": "prod_mock",
                "tiers_mode": null, "transform_usage": null, "trial_period_days": null,
                "usage_type": "licensed"},
            "price": {"id": s.price, "object": "price", "active": true, "billing_scheme": "per_unit",
                "created": start - 86_400, "currency": "usd", "custom_unit_amount": null,
                "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null,
                "product": "prod_mock", "recurring": {"interval": "month", "interval_count": 1,
                "meter": null, "trial_period_days": null, "usage_type": "licensed"},
                "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
                "type": "recurring", "unit_amount": 2000, "unit_amount_decimal": "2000"},
            "quantity": 1, "subscription": s.id, "tax_rates": []
        }], "has_more": false, "total_count": 1,
            "url": format!("/v1/subscription_items?subscription={}", s.id)},
        "latest_invoice": null, "livemode": false, "metadata": {"account_id": s.account_id},
        "next_pending_invoice_item_invoice": null, "on_behalf_of": null, "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null,
            "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null, "pending_setup_intent": null, "pending_update": null,
        "schedule": null, "start_date": start, "status": s.status, "test_clock": null,
        "transfer_data": null, "trial_end": null,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": null
    })
}

/// An invoice of a subscription, in the current API shape (subscription under `parent`).
pub fn invoice_json(customer: &str, subscription: &str, account_id: &str, paid: bool) -> Value {
    json!({
        "id": format!("in_{subscription}"), "object": "invoice", "amount_due": 2000,
        "amount_overpaid": 0, "amount_paid": if paid { 2000 } else { 0 },
        "amount_remaining": if paid { 0 } else { 2000 }, "amount_shipping": 0, "attempt_count": 1,
        "attempted": true, "automatic_tax": {"enabled": false}, "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically", "created": now(), "currency": "usd",
        "customer": customer, "default_tax_rates": [], "discounts": [], "issuer": {"type": "self"},
        "lines": {"object": "list", "data": [], "has_more": false, "url": "/v1/invoices/in_x/lines"},
        "livemode": false, "metadata": {},
        "parent": {"quote_details": null, "type": "subscription_details",
            "subscription_details": {"metadata": {"account_id": account_id}, "subscription": subscription}},
        "payment_settings": {}, "period_end": now(), "period_start": now() - 30 * 86_400,
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
        "starting_balance": 0, "status": if paid { "paid" } else { "open" },
        "status_transitions": {}, "subtotal": 2000, "total": 2000
    })
}

/// A Checkout Session as `checkout.session.completed` carries it.
pub fn checkout_session_json(customer: &str, subscription: &str, account_id: &str) -> Value {
    json!({
        "id": "cs_test_completed", "object": "checkout.session", "automatic_tax": {"enabled": false},
        "client_reference_id": account_id, "created": now(), "custom_fields": [], "custom_text": {},
        "customer": customer, "expires_at": now() + 86_400, "livemode": false,
        "metadata": {"account_id": account_id}, "mode": "subscription",
        "payment_method_types": ["card"], "payment_status": "paid", "shipping_options": [],
        "status": "complete", "subscription": subscription, "url": null
    })
}

/// A webhook event envelope, as Stripe delivers it.
pub fn event_json(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({
        "id": id, "object": "event", "api_version": "2026-09-30.endive", "created": created,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": kind
    })
    .to_string()
}

/// The `Stripe-Signature` header Stripe would send for `payload` at `timestamp`.
pub fn sign(payload: &str, secret: &str, timestamp: i64) -> String {
    stripe_webhook::Webhook::generate_test_header(payload, secret, Some(timestamp))
}
