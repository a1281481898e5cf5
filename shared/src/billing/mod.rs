//! Billing: Stripe's deliveries (events), its API (stripe_api), and writing an account's billing state
//! (the state itself, and the plan it puts in force, is `crate::subscription`).

use crate::store::RecordStore;
pub use crate::subscription::{Billing, Subscription};

pub mod events;
pub mod stripe_api;

/// Compare-and-set attempts before a busy account's update gives up (a webhook then lets Stripe retry).
const MAX_BILLING_WRITES: usize = 8;

/// Applies `change` to the account's billing state by compare-and-set, re-reading on a lost race.
/// `change` returns `None` when the stored state already says as much or more (nothing to write).
/// Returns the state in force afterwards.
pub async fn update_billing(
    records: &dyn RecordStore,
    account_id: &str,
    change: impl Fn(&Billing) -> Option<Billing>,
) -> anyhow::Result<Billing> {
    for _ in 0..MAX_BILLING_WRITES {
        let account = records
            .account(account_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no account {account_id}"))?;
        let Some(mut next) = change(&account.billing) else {
            return Ok(account.billing);
        };
        next.version = account.billing.version + 1;
        if records
            .update_billing(account_id, account.billing.version, &next)
            .await?
        {
            return Ok(next);
        }
    }
    anyhow::bail!("the billing state of {account_id} kept changing under concurrent updates")
}
