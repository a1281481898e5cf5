//! The signed-in user's billing: what plan is in force and what this month has cost (`GET /billing`),
//! upgrading through Stripe Checkout (`POST /billing/checkout`) and managing the subscription in the
//! Stripe Billing Portal (`POST /billing/portal`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use qnp_shared::GatewayError;
use qnp_shared::billing::stripe_api::{StripeApi, StripeApiError};
use qnp_shared::billing::{Billing, update_billing};
use qnp_shared::budget::next_month_start;
use qnp_shared::plans::Plan;
use qnp_shared::usage::format_timestamp;
use qnp_shared::web::{SignedIn, json_body};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::Payments;

fn plan_json(plan: &Plan) -> Value {
    json!({
        "name": plan.name,
        "requests_per_minute": plan.requests_per_minute,
        "tokens_per_minute": plan.tokens_per_minute,
        "monthly_spend_cap_usd": plan.monthly_spend_cap_usd,
        "purchasable": plan.stripe_price_id.is_some() && !plan.operator_only,
    })
}

fn stripe_configured(payments: &Payments) -> Result<&StripeApi, GatewayError> {
    payments
        .stripe
        .as_ref()
        .ok_or(GatewayError::ProviderNotConfigured {
            provider: "Stripe billing",
            variable: "STRIPE_SECRET_KEY",
        })
}

/// Stripe's refusal or absence, logged in full and reported without its detail.
fn stripe_failed(err: StripeApiError) -> GatewayError {
    tracing::error!(error = %err, "a Stripe API call failed");
    GatewayError::UpstreamFailed
}

pub async fn status(
    State(payments): State<Arc<Payments>>,
    Extension(me): Extension<SignedIn>,
) -> Response {
    match status_json(&payments, &me, OffsetDateTime::now_utc()).await {
        Ok(body) => Json(body).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn status_json(
    payments: &Payments,
    me: &SignedIn,
    now: OffsetDateTime,
) -> Result<Value, GatewayError> {
    let account = &me.account;
    let billing = &account.billing;
    let plan = billing.plan_in_force(&payments.plans, &account.plan, now, payments.grace);
    let spent = payments
        .budget
        .spent(&account.id, now)
        .await
        .map_err(GatewayError::internal)?;
    let subscription = billing.subscription.as_ref().map(|s| {
        json!({
            "status": s.status,
            "plan": payments.plans.by_stripe_price(&s.price_id).map(|p| p.name.clone()),
            "current_period_end": format_timestamp(s.current_period_end),
            "cancel_at_period_end": s.cancel_at_period_end,
        })
    });
    let mut offered: Vec<&Plan> = payments.plans.purchasable();
    if !offered.iter().any(|p| p.name == plan.name) {
        offered.insert(0, plan);
    }
    Ok(json!({
        "plan": plan_json(plan),
        "spend": {
            "month": format!("{:04}-{:02}", now.year(), u8::from(now.month())),
            "spent_usd": spent,
            "cap_usd": plan.monthly_spend_cap_usd,
            "resets_at": format_timestamp(next_month_start(now)),
        },
        "subscription": subscription,
        "payment_failed_at": billing.payment_failed_at.map(format_timestamp),
        "grace_ends_at": billing.grace_ends_at(payments.grace).map(format_timestamp),
        "plans": offered.into_iter().map(plan_json).collect::<Vec<_>>(),
        "billing_enabled": payments.stripe.is_some(),
        "has_billing_account": billing.stripe_customer_id.is_some(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    plan: String,
}

pub async fn checkout(
    State(payments): State<Arc<Payments>>,
    Extension(me): Extension<SignedIn>,
    body: Bytes,
) -> Response {
    match start_checkout(&payments, &me, &body).await {
        Ok(url) => Json(json!({"url": url})).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn start_checkout(
    payments: &Payments,
    me: &SignedIn,
    body: &[u8],
) -> Result<String, GatewayError> {
    let request: CheckoutRequest = json_body(body)?;
    let offered = || {
        payments
            .plans
            .purchasable()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let plan = payments
        .plans
        .get(&request.plan)
        .filter(|p| !p.operator_only)
        .ok_or_else(|| {
            GatewayError::field(
                "plan",
                format!("no plan '{}'; plans on offer: {}", request.plan, offered()),
            )
        })?;
    let Some(price_id) = &plan.stripe_price_id else {
        return Err(GatewayError::field(
            "plan",
            format!(
                "the '{}' plan is free and needs no checkout; plans on offer: {}",
                plan.name,
                offered()
            ),
        ));
    };
    let stripe = stripe_configured(payments)?;
    let account = &me.account;
    let now = OffsetDateTime::now_utc();
    if let Some(current) = account
        .billing
        .subscribed_plan(&payments.plans, now, payments.grace)
    {
        return Err(GatewayError::Conflict(format!(
            "this account already subscribes to the '{}' plan; change or cancel it in the billing portal",
            current.name
        )));
    }
    let customer = customer_for(payments, stripe, me).await?;
    stripe
        .checkout_session(
            &customer,
            price_id,
            &account.id,
            &format!("{}/?billing=success", payments.public_url),
            &format!("{}/?billing=canceled", payments.public_url),
        )
        .await
        .map_err(stripe_failed)
}

/// The account's Stripe customer, created on first use and kept: every checkout of the account reuses it.
async fn customer_for(
    payments: &Payments,
    stripe: &StripeApi,
    me: &SignedIn,
) -> Result<String, GatewayError> {
    let account = &me.account;
    if let Some(customer) = &account.billing.stripe_customer_id {
        return Ok(customer.clone());
    }
    let created = stripe
        .create_customer(&account.id, &account.email, account.name.as_deref())
        .await
        .map_err(stripe_failed)?;
    // If another request stored one first, theirs stays (and, by the idempotency key, is the same).
    let billing = update_billing(payments.web.records.as_ref(), &account.id, |b| {
        b.stripe_customer_id.is_none().then(|| Billing {
            stripe_customer_id: Some(created.clone()),
            ..b.clone()
        })
    })
    .await
    .map_err(GatewayError::internal)?;
    Ok(billing.stripe_customer_id.unwrap_or(created))
}

pub async fn portal(
    State(payments): State<Arc<Payments>>,
    Extension(me): Extension<SignedIn>,
) -> Response {
    let result = async {
        let stripe = stripe_configured(&payments)?;
        let customer = me
            .account
            .billing
            .stripe_customer_id
            .as_deref()
            .ok_or_else(|| {
                GatewayError::Conflict(
                    "there is no billing account yet: subscribe to a plan first".into(),
                )
            })?;
        stripe
            .portal_session(customer, &format!("{}/", payments.public_url))
            .await
            .map_err(stripe_failed)
    }
    .await;
    match result {
        Ok(url) => Json(json!({"url": url})).into_response(),
        Err(err) => err.into_response(),
    }
}
