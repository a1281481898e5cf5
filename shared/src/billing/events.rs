//! Stripe webhook deliveries: verified on the raw body before anything is parsed, claimed once by event
//! id before any side effect, and applied to the account's billing state in whatever order they arrive.
//!
//! Deliveries are read leniently (only the handful of fields QNP uses), so an endpoint pinned to an
//! older Stripe API version, whose objects lack fields today's typed models require, still works; and
//! both places a subscription's period end has lived (on the subscription before API 2025-03-31, on its
//! items since) are read.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use stripe_webhook::{Webhook, WebhookError};
use time::{Duration, OffsetDateTime};

use super::stripe_api::{StripeApi, StripeApiError};
use super::{Billing, Subscription, update_billing};
use crate::accounts::Account;
use crate::store::{EventClaim, RecordStore};

/// How long a claimed delivery may take before another delivery of the same event may take it over.
const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(300);

/// A subscription as Stripe describes it (in a delivery or an API response): only what QNP keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeSubscription {
    pub id: String,
    pub customer: String,
    /// The account id QNP put in the subscription's metadata at checkout.
    pub account_id: Option<String>,
    pub price_id: Option<String>,
    pub status: String,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

/// What the endpoint answers Stripe.
#[derive(Debug, PartialEq)]
pub enum Receipt {
    /// 400: the delivery is not provably from Stripe (signature, secret, timestamp). Nothing was written.
    Rejected(&'static str),
    /// 2xx: processed now, processed before, being processed by another delivery, of a type QNP does not
    /// use, or permanently unusable (logged, so Stripe does not retry it for days).
    Acknowledged(String),
    /// 5xx: a failure a retry may fix (database or Stripe unavailable). The claim was released.
    RetryLater,
}

/// Checks `Stripe-Signature` against every configured secret (several during a rotation; a header may
/// also carry several `v1` signatures). The comparison is constant-time and the timestamp must be within
/// Stripe's 300 s tolerance of `now`.
pub fn verify_signature(
    body: &[u8],
    header: Option<&str>,
    secrets: &[String],
    now: i64,
) -> Result<(), &'static str> {
    let header = header.ok_or("missing Stripe-Signature header")?;
    let payload = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8")?;
    let mut stale = false;
    for secret in secrets {
        match Webhook::construct_event_with_timestamp(payload, header, secret, now) {
            // Parsing comes after the signature check: a payload that does not parse was still signed.
            Ok(_) | Err(WebhookError::BadParse(_)) => return Ok(()),
            Err(WebhookError::BadTimestamp(_)) => stale = true,
            Err(_) => {}
        }
    }
    Err(if stale {
        "the signature's timestamp is outside the 300 s tolerance"
    } else {
        "no valid signature for this endpoint's secret"
    })
}

#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EnvelopeData,
}

#[derive(Debug, Deserialize)]
struct EnvelopeData {
    object: serde_json::Value,
}

/// An id, whether Stripe sent it bare or as an expanded object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdOrObject {
    Id(String),
    Object { id: String },
}

impl IdOrObject {
    fn id(self) -> String {
        match self {
            IdOrObject::Id(id) | IdOrObject::Object { id } => id,
        }
    }
}

#[derive(Debug, Deserialize)]
struct SubscriptionJson {
    id: String,
    customer: IdOrObject,
    status: String,
    #[serde(default)]
    cancel_at_period_end: bool,
    #[serde(default)]
    metadata: HashMap<String, serde_json::Value>,
    #[serde(default)]
    items: Option<ItemsJson>,
    /// Where API versions before 2025-03-31 put it.
    #[serde(default)]
    current_period_end: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ItemsJson {
    data: Vec<ItemJson>,
}

#[derive(Debug, Deserialize)]
struct ItemJson {
    price: IdOrObject,
    #[serde(default)]
    current_period_end: Option<i64>,
}

fn metadata_account(metadata: &HashMap<String, serde_json::Value>) -> Option<String> {
    metadata
        .get("account_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

impl TryFrom<serde_json::Value> for StripeSubscription {
    type Error = serde_json::Error;
    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        let sub: SubscriptionJson = serde_json::from_value(value)?;
        let items = sub.items.map(|i| i.data).unwrap_or_default();
        let item_end = items.iter().filter_map(|i| i.current_period_end).max();
        Ok(StripeSubscription {
            account_id: metadata_account(&sub.metadata),
            price_id: items.into_iter().next().map(|i| i.price.id()),
            id: sub.id,
            customer: sub.customer.id(),
            status: sub.status,
            current_period_end: item_end.or(sub.current_period_end),
            cancel_at_period_end: sub.cancel_at_period_end,
        })
    }
}

#[derive(Debug, Deserialize)]
struct InvoiceJson {
    #[serde(default)]
    customer: Option<IdOrObject>,
    #[serde(default)]
    parent: Option<InvoiceParentJson>,
    /// Where API versions before 2025-03-31 put it.
    #[serde(default)]
    subscription: Option<IdOrObject>,
}

#[derive(Debug, Deserialize)]
struct InvoiceParentJson {
    #[serde(default)]
    subscription_details: Option<InvoiceSubscriptionJson>,
}

#[derive(Debug, Deserialize)]
struct InvoiceSubscriptionJson {
    subscription: IdOrObject,
    #[serde(default)]
    metadata: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct CheckoutSessionJson {
    #[serde(default)]
    client_reference_id: Option<String>,
    #[serde(default)]
    customer: Option<IdOrObject>,
    #[serde(default)]
    subscription: Option<IdOrObject>,
}

/// Why processing a verified delivery did not apply it.
enum Failure {
    /// Retrying may help: answer 5xx.
    Transient(anyhow::Error),
    /// It never will: answer 2xx and log.
    Permanent(String),
}

impl From<StripeApiError> for Failure {
    fn from(err: StripeApiError) -> Self {
        match err {
            StripeApiError::Unavailable(_) => Failure::Transient(err.into()),
            other => Failure::Permanent(other.to_string()),
        }
    }
}

fn transient(err: anyhow::Error) -> Failure {
    Failure::Transient(err)
}

fn unix_time(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Applies verified deliveries to accounts.
pub struct Webhooks {
    pub records: Arc<dyn RecordStore>,
    pub stripe: Option<StripeApi>,
    pub secrets: Vec<String>,
    pub grace: Duration,
    /// The proxy's key cache when it runs in this process (`qnp serve`): a plan change applies at once.
    pub key_cache: Option<Arc<crate::keys::KeyVerifier>>,
}

impl Webhooks {
    /// Handles one delivery end to end: verify, parse, claim, apply, record.
    pub async fn receive(
        &self,
        body: &[u8],
        signature: Option<&str>,
        now: OffsetDateTime,
    ) -> Receipt {
        if self.secrets.is_empty() {
            tracing::error!(
                "a Stripe delivery arrived but STRIPE_WEBHOOK_SECRET is not configured"
            );
            return Receipt::RetryLater;
        }
        if let Err(reason) = verify_signature(body, signature, &self.secrets, now.unix_timestamp())
        {
            tracing::warn!(reason, "refused a Stripe delivery");
            return Receipt::Rejected(reason);
        }
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::error!(error = %e, "a signed Stripe delivery does not parse; acknowledged");
                return Receipt::Acknowledged("unparseable delivery ignored".into());
            }
        };
        if !handled(&envelope.kind) {
            tracing::info!(event_id = %envelope.id, event_type = %envelope.kind, "Stripe event ignored");
            return Receipt::Acknowledged(format!("{} is not used", envelope.kind));
        }
        let claim = match self
            .records
            .claim_stripe_event(&envelope.id, now, CLAIM_LEASE)
            .await
        {
            Ok(claim) => claim,
            Err(e) => {
                tracing::error!(error = %e, event_id = %envelope.id, "could not claim a Stripe event");
                return Receipt::RetryLater;
            }
        };
        match claim {
            EventClaim::Claimed => {}
            EventClaim::AlreadyProcessed => {
                return Receipt::Acknowledged("already processed".into());
            }
            EventClaim::InProgress => {
                return Receipt::Acknowledged("being processed by another delivery".into());
            }
        }
        let (event_id, event_type) = (envelope.id.clone(), envelope.kind.clone());
        let result = self.apply(envelope, now).await;
        match result {
            Ok(note) => {
                tracing::info!(event_id, event_type, note, "Stripe event applied");
                self.complete(&event_id, now, "processed".into()).await
            }
            Err(Failure::Permanent(reason)) => {
                tracing::error!(
                    event_id,
                    event_type,
                    reason,
                    "Stripe event cannot be applied; acknowledged"
                );
                self.complete(&event_id, now, format!("not applied: {reason}"))
                    .await
            }
            Err(Failure::Transient(e)) => {
                tracing::error!(event_id, event_type, error = %e, "Stripe event failed; Stripe will retry");
                if let Err(e) = self.records.release_stripe_event(&event_id).await {
                    // The claim's lease runs out and a retry after it is processed.
                    tracing::error!(event_id, error = %e, "could not release a Stripe event claim");
                }
                Receipt::RetryLater
            }
        }
    }

    async fn complete(&self, event_id: &str, now: OffsetDateTime, note: String) -> Receipt {
        match self.records.complete_stripe_event(event_id, now).await {
            Ok(()) => Receipt::Acknowledged(note),
            Err(e) => {
                // Applying again is harmless (states are ordered), so let Stripe retry.
                tracing::error!(event_id, error = %e, "could not record a processed Stripe event");
                let _ = self.records.release_stripe_event(event_id).await;
                Receipt::RetryLater
            }
        }
    }

    async fn apply(&self, envelope: Envelope, now: OffsetDateTime) -> Result<String, Failure> {
        let object = envelope.data.object;
        let unusable = |e: serde_json::Error| {
            Failure::Permanent(format!("its {} object does not parse: {e}", envelope.kind))
        };
        match envelope.kind.as_str() {
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => {
                let sub = StripeSubscription::try_from(object).map_err(unusable)?;
                self.apply_subscription(sub, envelope.created, now).await
            }
            "invoice.paid" | "invoice.payment_failed" => {
                let invoice: InvoiceJson = serde_json::from_value(object).map_err(unusable)?;
                let paid = envelope.kind == "invoice.paid";
                self.apply_invoice(invoice, paid, envelope.created).await
            }
            "checkout.session.completed" => {
                let session: CheckoutSessionJson =
                    serde_json::from_value(object).map_err(unusable)?;
                self.apply_checkout(session, envelope.created, now).await
            }
            other => Ok(format!("{other} is not used")),
        }
    }

    fn plan_may_have_changed(&self, account_id: &str) {
        if let Some(cache) = &self.key_cache {
            cache.forget_account(account_id);
        }
    }

    /// The account a Stripe object belongs to: by its customer (set when QNP created the customer),
    /// else by the account id QNP wrote into its metadata.
    async fn account_for(
        &self,
        customer: Option<&str>,
        account_id: Option<&str>,
    ) -> Result<Account, Failure> {
        if let Some(customer) = customer
            && let Some(account) = self
                .records
                .account_by_stripe_customer(customer)
                .await
                .map_err(transient)?
        {
            return Ok(account);
        }
        if let Some(id) = account_id
            && let Some(account) = self.records.account(id).await.map_err(transient)?
        {
            let ours = account.billing.stripe_customer_id.as_deref();
            if ours.is_none() || ours == customer {
                return Ok(account);
            }
        }
        Err(Failure::Permanent(format!(
            "no account for Stripe customer {}",
            customer.unwrap_or("(none)")
        )))
    }

    async fn apply_subscription(
        &self,
        sub: StripeSubscription,
        created: i64,
        now: OffsetDateTime,
    ) -> Result<String, Failure> {
        let account = self
            .account_for(Some(&sub.customer), sub.account_id.as_deref())
            .await?;
        let price_id = sub
            .price_id
            .clone()
            .ok_or_else(|| Failure::Permanent(format!("subscription {} has no price", sub.id)))?;
        let state = Subscription {
            id: sub.id.clone(),
            price_id,
            status: sub.status.clone(),
            current_period_end: unix_time(sub.current_period_end.unwrap_or(created)),
            cancel_at_period_end: sub.cancel_at_period_end,
            as_of: created,
        };
        let grace = self.grace;
        let customer = sub.customer.clone();
        let applied = update_billing(self.records.as_ref(), &account.id, |billing| {
            let mut next = billing.clone();
            if let Some(stored) = &billing.subscription {
                if !state.supersedes(stored, billing.payment_failed_at, now, grace) {
                    return None;
                }
                if stored.id != state.id {
                    // A new subscription starts with a clean payment record.
                    next.payment_failed_at = None;
                    next.payment_as_of = None;
                }
            }
            next.stripe_customer_id
                .get_or_insert_with(|| customer.clone());
            next.subscription = Some(state.clone());
            Some(next)
        })
        .await
        .map_err(transient)?;
        self.plan_may_have_changed(&account.id);
        Ok(if applied.subscription.as_ref() == Some(&state) {
            format!("subscription {} is {}", state.id, state.status)
        } else {
            format!(
                "subscription {} state is older than the stored one",
                state.id
            )
        })
    }

    async fn apply_invoice(
        &self,
        invoice: InvoiceJson,
        paid: bool,
        created: i64,
    ) -> Result<String, Failure> {
        let details = invoice.parent.and_then(|p| p.subscription_details);
        let account_id = details
            .as_ref()
            .and_then(|d| d.metadata.as_ref())
            .and_then(metadata_account);
        let subscription = details
            .map(|d| d.subscription.id())
            .or(invoice.subscription.map(IdOrObject::id));
        let Some(subscription) = subscription else {
            return Ok("not a subscription invoice".into());
        };
        let customer = invoice.customer.map(IdOrObject::id);
        let account = self
            .account_for(customer.as_deref(), account_id.as_deref())
            .await?;
        let applied = update_billing(self.records.as_ref(), &account.id, |billing| {
            let current = billing.subscription.as_ref().map(|s| s.id.as_str());
            if current.is_some_and(|id| id != subscription) {
                return None; // an invoice of a subscription that was since replaced
            }
            if billing.payment_as_of.is_some_and(|at| at > created) {
                return None;
            }
            let mut next = billing.clone();
            next.payment_as_of = Some(created);
            next.payment_failed_at = if paid {
                None
            } else {
                // The grace period runs from the first failure of a streak.
                billing.payment_failed_at.or(Some(unix_time(created)))
            };
            (next != *billing).then_some(next)
        })
        .await
        .map_err(transient)?;
        self.plan_may_have_changed(&account.id);
        Ok(match applied.payment_failed_at {
            Some(at) => format!("payment failing since {at}"),
            None => "payments in good standing".into(),
        })
    }

    async fn apply_checkout(
        &self,
        session: CheckoutSessionJson,
        created: i64,
        now: OffsetDateTime,
    ) -> Result<String, Failure> {
        let customer = session.customer.map(IdOrObject::id);
        let account = self
            .account_for(customer.as_deref(), session.client_reference_id.as_deref())
            .await?;
        if let Some(customer) = customer {
            update_billing(self.records.as_ref(), &account.id, |billing| {
                billing.stripe_customer_id.is_none().then(|| Billing {
                    stripe_customer_id: Some(customer.clone()),
                    ..billing.clone()
                })
            })
            .await
            .map_err(transient)?;
        }
        // The subscription's own events follow, but the user just paid: read its state now so the plan
        // is in force by the time they are back on the dashboard.
        match (session.subscription, &self.stripe) {
            (Some(sub), Some(stripe)) => {
                let sub = stripe.subscription(&sub.id()).await?;
                self.apply_subscription(sub, created, now).await
            }
            _ => Ok("checkout completed".into()),
        }
    }
}

/// The event types that change an account's billing state.
fn handled(kind: &str) -> bool {
    matches!(
        kind,
        "checkout.session.completed"
            | "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "invoice.paid"
            | "invoice.payment_failed"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn signatures_are_checked_on_the_raw_body() {
        let body = br#"{"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":{}}}"#;
        let now = 1_800_000_000;
        let payload = std::str::from_utf8(body).unwrap();
        let header = Webhook::generate_test_header(payload, SECRET, Some(now));
        let secrets = vec![SECRET.to_owned()];
        assert_eq!(verify_signature(body, Some(&header), &secrets, now), Ok(()));
        assert!(verify_signature(body, None, &secrets, now).is_err());
        let wrong = vec!["whsec_other".to_owned()];
        assert!(verify_signature(body, Some(&header), &wrong, now).is_err());
        let tampered = br#"{"id":"evt_1","type":"invoice.paid","created":2,"data":{"object":{}}}"#;
        assert!(verify_signature(tampered, Some(&header), &secrets, now).is_err());
        let stale = verify_signature(body, Some(&header), &secrets, now + 301).unwrap_err();
        assert!(stale.contains("tolerance"), "{stale}");
        // Rotation: the endpoint knows the old and new secret; the header may carry both signatures.
        let rotated = vec!["whsec_old".to_owned(), SECRET.to_owned()];
        assert_eq!(verify_signature(body, Some(&header), &rotated, now), Ok(()));
        let old = Webhook::generate_test_header(payload, "whsec_old", Some(now));
        let both = format!("{header},v1={}", old.split("v1=").nth(1).unwrap());
        assert_eq!(verify_signature(body, Some(&both), &secrets, now), Ok(()));
    }

    #[test]
    fn subscriptions_read_both_period_end_locations() {
        let current = serde_json::json!({
            "id": "sub_1", "customer": "cus_1", "status": "active", "cancel_at_period_end": true,
            "metadata": {"account_id": "acct_1"},
            "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": 1_800_000_000}]}
        });
        let sub = StripeSubscription::try_from(current).unwrap();
        assert_eq!(sub.price_id.as_deref(), Some("price_pro"));
        assert_eq!(sub.current_period_end, Some(1_800_000_000));
        assert_eq!(sub.account_id.as_deref(), Some("acct_1"));
        assert!(sub.cancel_at_period_end);
        let older = serde_json::json!({
            "id": "sub_1", "customer": {"id": "cus_1"}, "status": "past_due",
            "current_period_end": 1_700_000_000,
            "items": {"data": [{"price": "price_pro"}]}
        });
        let sub = StripeSubscription::try_from(older).unwrap();
        assert_eq!(sub.customer, "cus_1");
        assert_eq!(sub.current_period_end, Some(1_700_000_000));
    }
}
