//! What Stripe has told us about an account's subscription, and the plan that puts in force: a domain
//! type of the account record, below the store (billing/ holds the logic that writes it).
//!
//! Only identifiers and states are kept (customer id, subscription id, price id, status, period end):
//! never card or payment-method data. The plan in force is computed from these at the moment of each
//! request, so a grace period or a period end takes effect on time without any job having to run.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::plans::{Plan, Plans};

/// An account's billing state. `version` increases with every write, so concurrent webhook deliveries
/// update it by compare-and-set instead of overwriting each other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Billing {
    pub stripe_customer_id: Option<String>,
    pub subscription: Option<Subscription>,
    /// When the latest invoice of the subscription failed to be paid; a paid invoice clears it. The grace
    /// period runs from here.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub payment_failed_at: Option<OffsetDateTime>,
    /// Stripe's time (the event's `created`, unix seconds) of the payment state above, so an older
    /// delivery arriving late cannot undo a newer one.
    #[serde(default)]
    pub payment_as_of: Option<i64>,
    #[serde(default)]
    pub version: i64,
}

/// The subscription as Stripe last described it to us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub price_id: String,
    /// Stripe's status: `incomplete`, `incomplete_expired`, `trialing`, `active`, `past_due`, `unpaid`,
    /// `canceled` or `paused`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub current_period_end: OffsetDateTime,
    pub cancel_at_period_end: bool,
    /// Stripe's time of this state (the event's `created`, unix seconds).
    pub as_of: i64,
}

/// Where a status sits in a subscription's life; used only to order two states Stripe stamped with the
/// same second, where the later stage is the truer one.
fn lifecycle_stage(status: &str) -> u8 {
    match status {
        "incomplete" => 0,
        "trialing" => 1,
        "active" => 2,
        "past_due" => 3,
        "unpaid" | "paused" => 4,
        _ => 5, // canceled, incomplete_expired, and anything newer: terminal until Stripe says otherwise
    }
}

impl Subscription {
    /// Whether this subscription entitles its plan at `now`.
    ///
    /// Active and trialing subscriptions do, until a failed payment's grace period runs out. Past due
    /// ones do during the grace period. A canceled subscription keeps its plan until the end of the
    /// period that was paid for (cancellation takes effect at the period end), unless it ended unpaid.
    pub fn entitles(
        &self,
        payment_failed_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
        grace: Duration,
    ) -> bool {
        let in_grace = |since: OffsetDateTime| now < since + grace;
        match self.status.as_str() {
            "active" | "trialing" => payment_failed_at.is_none_or(in_grace),
            "past_due" => {
                in_grace(payment_failed_at.unwrap_or_else(|| {
                    OffsetDateTime::from_unix_timestamp(self.as_of).unwrap_or(now)
                }))
            }
            "canceled" => payment_failed_at.is_none() && now < self.current_period_end,
            _ => false,
        }
    }

    /// Whether a newly delivered state should replace the stored one. Deliveries arrive in any order and
    /// more than once: an older state never replaces a newer one, and when Stripe stamped both with the
    /// same second the later lifecycle stage wins. A different subscription (a customer who subscribed
    /// again) replaces the stored one unless the stored one still entitles and the new one does not.
    pub fn supersedes(
        &self,
        stored: &Subscription,
        payment_failed_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
        grace: Duration,
    ) -> bool {
        if self.id != stored.id {
            let new_entitles = self.entitles(None, now, grace);
            let old_entitles = stored.entitles(payment_failed_at, now, grace);
            return match (new_entitles, old_entitles) {
                (true, false) => true,
                (false, true) => false,
                _ => self.as_of >= stored.as_of,
            };
        }
        match self.as_of.cmp(&stored.as_of) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                lifecycle_stage(&self.status) >= lifecycle_stage(&stored.status)
            }
        }
    }
}

impl Billing {
    /// The plan in force at `now`: the subscribed plan while the subscription entitles it, otherwise the
    /// account's own plan (the free plan, unless an operator set another).
    pub fn plan_in_force<'a>(
        &self,
        plans: &'a Plans,
        account_plan: &str,
        now: OffsetDateTime,
        grace: Duration,
    ) -> &'a Plan {
        self.subscribed_plan(plans, now, grace)
            .unwrap_or_else(|| plans.for_account(account_plan))
    }

    /// The plan a live subscription entitles, if any.
    pub fn subscribed_plan<'a>(
        &self,
        plans: &'a Plans,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Option<&'a Plan> {
        let subscription = self.subscription.as_ref()?;
        if !subscription.entitles(self.payment_failed_at, now, grace) {
            return None;
        }
        let plan = plans.by_stripe_price(&subscription.price_id);
        if plan.is_none() {
            tracing::warn!(
                price_id = %subscription.price_id,
                subscription_id = %subscription.id,
                "a subscription's price matches no configured plan; the account's own plan applies"
            );
        }
        plan
    }

    /// When a failed payment's grace period ends, if one is running.
    pub fn grace_ends_at(&self, grace: Duration) -> Option<OffsetDateTime> {
        self.payment_failed_at.map(|at| at + grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const GRACE: Duration = Duration::days(7);

    fn sub(id: &str, status: &str, as_of: i64) -> Subscription {
        Subscription {
            id: id.into(),
            price_id: "price_pro".into(),
            status: status.into(),
            current_period_end: datetime!(2026-12-27 00:00 UTC),
            cancel_at_period_end: false,
            as_of,
        }
    }

    fn plans() -> Plans {
        Plans::from_json(
            r#"[{"name":"free","requests_per_minute":20},
                {"name":"pro","requests_per_minute":600,"stripe_price_id":"price_pro"}]"#,
        )
        .unwrap()
    }

    #[test]
    fn active_subscription_puts_its_plan_in_force() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let billing = Billing {
            subscription: Some(sub("sub_1", "active", 100)),
            ..Billing::default()
        };
        assert_eq!(
            billing.plan_in_force(&plans(), "free", now, GRACE).name,
            "pro"
        );
        assert_eq!(
            Billing::default()
                .plan_in_force(&plans(), "free", now, GRACE)
                .name,
            "free"
        );
    }

    #[test]
    fn failed_payment_keeps_the_plan_for_the_grace_period_then_falls_back() {
        let failed = datetime!(2026-11-20 12:00 UTC);
        let billing = Billing {
            subscription: Some(sub("sub_1", "past_due", 100)),
            payment_failed_at: Some(failed),
            ..Billing::default()
        };
        let p = plans();
        assert_eq!(
            billing
                .plan_in_force(&p, "free", failed + Duration::days(6), GRACE)
                .name,
            "pro"
        );
        assert_eq!(
            billing
                .plan_in_force(&p, "free", failed + Duration::days(8), GRACE)
                .name,
            "free"
        );
    }

    #[test]
    fn cancellation_takes_effect_at_the_period_end() {
        let billing = Billing {
            subscription: Some(sub("sub_1", "canceled", 100)),
            ..Billing::default()
        };
        let p = plans();
        let end = datetime!(2026-12-27 00:00 UTC);
        assert_eq!(
            billing
                .plan_in_force(&p, "free", end - Duration::hours(1), GRACE)
                .name,
            "pro"
        );
        assert_eq!(billing.plan_in_force(&p, "free", end, GRACE).name, "free");
    }

    #[test]
    fn older_states_never_replace_newer_ones() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let created = sub("sub_1", "incomplete", 100);
        let updated = sub("sub_1", "active", 101);
        assert!(updated.supersedes(&created, None, now, GRACE));
        assert!(!created.supersedes(&updated, None, now, GRACE));
        // Same second: the later stage of the lifecycle wins whichever arrives first.
        let same_second = sub("sub_1", "incomplete", 101);
        assert!(!same_second.supersedes(&updated, None, now, GRACE));
        assert!(updated.supersedes(&same_second, None, now, GRACE));
        let deleted = sub("sub_1", "canceled", 200);
        assert!(!updated.supersedes(&deleted, None, now, GRACE));
    }

    #[test]
    fn a_dead_subscription_does_not_replace_a_live_one() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let live = sub("sub_new", "active", 100);
        let mut old = sub("sub_old", "canceled", 150);
        old.current_period_end = now - Duration::days(1);
        assert!(!old.supersedes(&live, None, now, GRACE));
        assert!(live.supersedes(&old, None, now, GRACE));
    }
}
