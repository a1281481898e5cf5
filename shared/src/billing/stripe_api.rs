//! The Stripe API calls QNP makes, through async-stripe: customers (created once per account, deleted
//! with it), Checkout Sessions in subscription mode, Billing Portal sessions, and reading a subscription.
//! The base URL is configurable (`QNP_STRIPE_API_BASE`) so tests can answer on loopback.

use std::collections::HashMap;

use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::{CreateCustomer, DeleteCustomer};

use super::events::StripeSubscription;
use crate::config::StripeConfig;

/// Why a Stripe call failed, as far as the caller must tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Stripe refused the request (4xx): retrying the same request will not help.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The object does not exist (404).
    #[error("Stripe has no such object")]
    NotFound,
    /// Network failure, timeout or a 5xx: a later retry may succeed.
    #[error("Stripe could not be reached: {0}")]
    Unavailable(String),
}

impl From<StripeError> for StripeApiError {
    fn from(err: StripeError) -> Self {
        match err {
            StripeError::Stripe(_, 404) => StripeApiError::NotFound,
            StripeError::Stripe(e, status) if status < 500 && status != 429 => {
                StripeApiError::Refused {
                    status,
                    message: e.message.clone().unwrap_or_default(),
                }
            }
            other => StripeApiError::Unavailable(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct StripeApi {
    client: stripe::Client,
}

impl StripeApi {
    /// A client when `STRIPE_SECRET_KEY` is configured; `None` means billing is off on this deployment.
    pub fn from_config(config: &StripeConfig) -> anyhow::Result<Option<StripeApi>> {
        let Some(key) = &config.secret_key else {
            return Ok(None);
        };
        // async-stripe's TLS stack needs a process-wide crypto provider when several are compiled in;
        // installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // async-stripe joins the base and `v1/...` without a separator.
        let base = format!("{}/", config.api_base.trim_end_matches('/'));
        let client = stripe::ClientBuilder::new(key.to_string())
            .url(base)
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| anyhow::anyhow!("configuring the Stripe client: {e}"))?;
        Ok(Some(StripeApi { client }))
    }

    /// Creates the account's Stripe customer. The idempotency key is the account id, so two concurrent
    /// first checkouts (or a retry after a timeout) still end with one customer.
    pub async fn create_customer(
        &self,
        account_id: &str,
        email: &str,
        name: Option<&str>,
    ) -> Result<String, StripeApiError> {
        let mut request = CreateCustomer::new().email(email).metadata(HashMap::from([(
            "account_id".to_owned(),
            account_id.to_owned(),
        )]));
        if let Some(name) = name {
            request = request.name(name);
        }
        let key = IdempotencyKey::new(format!("qnp-customer-{account_id}"))
            .map_err(|e| StripeApiError::Unavailable(e.to_string()))?;
        let customer = request
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await?;
        Ok(customer.id.as_str().to_owned())
    }

    /// A Checkout Session in subscription mode for one price; returns the URL to send the user to.
    pub async fn checkout_session(
        &self,
        customer_id: &str,
        price_id: &str,
        account_id: &str,
        success_url: &str,
        cancel_url: &str,
    ) -> Result<String, StripeApiError> {
        let metadata = HashMap::from([("account_id".to_owned(), account_id.to_owned())]);
        let line = CreateCheckoutSessionLineItems {
            price: Some(price_id.to_owned()),
            quantity: Some(1),
            ..Default::default()
        };
        let subscription_data = CreateCheckoutSessionSubscriptionData {
            metadata: Some(metadata.clone()),
            ..Default::default()
        };
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(customer_id)
            .line_items(vec![line])
            .success_url(success_url)
            .cancel_url(cancel_url)
            .client_reference_id(account_id)
            .metadata(metadata)
            .subscription_data(subscription_data)
            .send(&self.client)
            .await?;
        session.url.ok_or_else(|| {
            StripeApiError::Unavailable("Stripe returned a Checkout Session without a URL".into())
        })
    }

    /// A Billing Portal session for the customer; returns its URL.
    pub async fn portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
    ) -> Result<String, StripeApiError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url)
            .send(&self.client)
            .await?;
        Ok(session.url)
    }

    /// The subscription as Stripe has it now.
    pub async fn subscription(&self, id: &str) -> Result<StripeSubscription, StripeApiError> {
        let sub = RetrieveSubscription::new(id).send(&self.client).await?;
        let item = sub
            .items
            .data
            .iter()
            .max_by_key(|item| item.current_period_end);
        Ok(StripeSubscription {
            id: sub.id.as_str().to_owned(),
            customer: sub.customer.id().as_str().to_owned(),
            account_id: sub.metadata.get("account_id").cloned(),
            price_id: item.map(|i| i.price.id.as_str().to_owned()),
            status: sub.status.as_str().to_owned(),
            current_period_end: item.map(|i| i.current_period_end),
            cancel_at_period_end: sub.cancel_at_period_end,
        })
    }

    /// Deletes the customer, which also cancels its subscriptions at once. Already gone is success.
    pub async fn delete_customer(&self, customer_id: &str) -> Result<(), StripeApiError> {
        match DeleteCustomer::new(customer_id).send(&self.client).await {
            Ok(_) => Ok(()),
            Err(err) => match StripeApiError::from(err) {
                StripeApiError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}
