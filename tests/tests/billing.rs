//! Billing end to end over real HTTP: signed Stripe deliveries (every refusal case, duplicates,
//! out-of-order pairs, unknown types, unusable payloads, retriable failures) change an account's plan and
//! with it what the proxy enforces; Checkout and the Billing Portal go through async-stripe to a loopback
//! Stripe-API server that records the form bodies; spend caps and token limits hold under bursts.

use qnp_shared::billing::Billing;
use qnp_shared::sessions::{SESSION_COOKIE, Sessions};
use qnp_tests::mock_stripe::{
    MockStripe, SubscriptionSpec, checkout_session_json, event_json, invoice_json, sign,
    subscription_json,
};
use qnp_tests::{MockOpenAi, TestGateway};
use serde_json::{Value, json};
use time::OffsetDateTime;

const WEBHOOK_SECRET: &str = "whsec_test_current";
/// The secret being rotated out: deliveries signed with either are accepted.
const OLD_WEBHOOK_SECRET: &str = "whsec_test_previous";
const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";
const PRO_PRICE: &str = "price_pro_monthly";

const PLANS: &str = r#"[
 {"name":"free","requests_per_minute":11},
 {"name":"pro","requests_per_minute":600,"stripe_price_id":"price_pro_monthly"},
 {"name":"team","requests_per_minute":3000,"stripe_price_id":"price_team_monthly"},
 {"name":"capped","requests_per_minute":100000,"monthly_spend_cap_usd":0.002},
 {"name":"metered","requests_per_minute":100000,"tokens_per_minute":1000},
 {"name":"unlimited","requests_per_minute":1000000000,"operator_only":true}
]"#;

struct World {
    gateway: TestGateway,
    stripe: MockStripe,
    _upstream: MockOpenAi,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn world_with(stripe_configured: bool) -> World {
    qnp_tests::init_tracing();
    let upstream = MockOpenAi::start().await;
    let stripe = MockStripe::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = qnp_tests::test_env(dir.path(), &upstream);
    env.set("QNP_PLANS", PLANS);
    // Plan changes reach the proxy when a key is next read from the store: every request here.
    env.set("QNP_KEY_CACHE_SECS", "0");
    if stripe_configured {
        env.set("STRIPE_SECRET_KEY", "sk_test_mock");
        env.set(
            "STRIPE_WEBHOOK_SECRET",
            format!("{OLD_WEBHOOK_SECRET}, {WEBHOOK_SECRET}"),
        );
        env.set("QNP_STRIPE_API_BASE", stripe.url());
    }
    let gateway = TestGateway::start(&env).await;
    World {
        gateway,
        stripe,
        _upstream: upstream,
        _dir: dir,
        http: qnp_tests::http_client(),
    }
}

async fn world() -> World {
    world_with(true).await
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A subscriber as Stripe would know them after a checkout: an account with a customer.
struct Subscriber {
    account_id: String,
    customer: String,
    key: String,
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url)
    }

    async fn deliver(&self, payload: &str, signature: Option<String>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url("/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(payload.to_owned());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Delivers a payload signed with the current secret, now.
    async fn deliver_signed(&self, payload: &str) -> (u16, Value) {
        self.deliver(payload, Some(sign(payload, WEBHOOK_SECRET, now())))
            .await
    }

    async fn subscriber(&self, email: &str) -> Subscriber {
        let key = self.gateway.create_key(email, "free").await;
        let records = &self.gateway.stores.records;
        let account = records.account_by_email(email).await.unwrap().unwrap();
        let customer = qnp_tests::unique("cus");
        let billing = Billing {
            stripe_customer_id: Some(customer.clone()),
            version: 1,
            ..Billing::default()
        };
        assert!(
            records
                .update_billing(&account.id, 0, &billing)
                .await
                .unwrap()
        );
        Subscriber {
            account_id: account.id,
            customer,
            key,
        }
    }

    async fn billing_of(&self, account_id: &str) -> Billing {
        self.gateway
            .stores
            .records
            .account(account_id)
            .await
            .unwrap()
            .unwrap()
            .billing
    }

    async fn subscription_status(&self, account_id: &str) -> String {
        self.billing_of(account_id)
            .await
            .subscription
            .unwrap()
            .status
    }

    /// The request limit the proxy reports for this key right now.
    async fn request_limit(&self, key: &str) -> u64 {
        let response = self
            .http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.headers()["x-ratelimit-limit-requests"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn session(&self, email: &str) -> String {
        let account = self
            .gateway
            .stores
            .records
            .account_for_email(email, "free")
            .await
            .unwrap();
        let token =
            Sessions::new(SESSION_SECRET.as_bytes()).issue(&account, OffsetDateTime::now_utc());
        format!("{SESSION_COOKIE}={token}")
    }

    /// `POST /billing/checkout` for a plan, from the dashboard.
    async fn checkout(&self, cookie: &str, plan: &str) -> (u16, Value) {
        let body = json!({ "plan": plan }).to_string();
        self.dashboard(
            reqwest::Method::POST,
            "/billing/checkout",
            cookie,
            Some(&body),
        )
        .await
    }

    /// A dashboard call: the session cookie and our own Origin, as the dashboard's fetch sends them.
    async fn dashboard(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("cookie", cookie)
            .header("origin", &self.gateway.url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A delivery of a subscription event (a fresh event id each time) for the subscriber's subscription.
fn subscription_event(
    kind: &str,
    created: i64,
    sub: &Subscriber,
    status: &str,
    period_end: i64,
) -> String {
    let object = subscription_json(&SubscriptionSpec {
        id: &format!("sub_{}", sub.account_id),
        customer: &sub.customer,
        account_id: &sub.account_id,
        price: PRO_PRICE,
        status,
        current_period_end: period_end,
        cancel_at_period_end: false,
    });
    event_json(&qnp_tests::unique("evt"), kind, created, object)
}

#[tokio::test]
async fn a_subscription_delivery_changes_the_keys_rate_limit_and_cancellation_ends_it_at_period_end()
 {
    let w = world().await;
    let sub = w.subscriber("upgrade@example.com").await;
    assert_eq!(w.request_limit(&sub.key).await, 11, "free plan first");

    let period_end = now() + 30 * 86_400;
    let created = subscription_event(
        "customer.subscription.created",
        now() - 5,
        &sub,
        "active",
        period_end,
    );
    let (status, body) = w.deliver_signed(&created).await;
    assert_eq!(
        (status, body["note"].as_str()),
        (200, Some("processed")),
        "{body}"
    );
    assert_eq!(
        w.request_limit(&sub.key).await,
        600,
        "pro plan after the delivery"
    );
    let billing = w.billing_of(&sub.account_id).await;
    let stored = billing.subscription.unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.price_id.as_str()),
        ("active", PRO_PRICE)
    );
    assert_eq!(stored.current_period_end.unix_timestamp(), period_end);

    // Canceled in the portal: Stripe deletes the subscription at the end of the period paid for. A
    // deletion whose period has not ended yet keeps the plan until then.
    let deleted = subscription_event(
        "customer.subscription.deleted",
        now() - 1,
        &sub,
        "canceled",
        period_end,
    );
    assert_eq!(w.deliver_signed(&deleted).await.0, 200);
    assert_eq!(
        w.request_limit(&sub.key).await,
        600,
        "paid until the period end"
    );
    let ended = subscription_event(
        "customer.subscription.deleted",
        now(),
        &sub,
        "canceled",
        now() - 1,
    );
    assert_eq!(w.deliver_signed(&ended).await.0, 200);
    assert_eq!(
        w.request_limit(&sub.key).await,
        11,
        "back to free once the period is over"
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn forged_stale_or_unsigned_deliveries_get_400_and_change_nothing() {
    let w = world().await;
    let sub = w.subscriber("forged@example.com").await;
    let payload = subscription_event(
        "customer.subscription.created",
        now(),
        &sub,
        "active",
        now() + 86_400,
    );
    let tampered = payload.replace("\"active\"", "\"trialing\"");
    let cases = [
        ("no signature", payload.clone(), None),
        (
            "a wrong secret",
            payload.clone(),
            Some(sign(&payload, "whsec_attacker", now())),
        ),
        (
            "a tampered body",
            tampered.clone(),
            Some(sign(&payload, WEBHOOK_SECRET, now())),
        ),
        (
            "a stale timestamp",
            payload.clone(),
            Some(sign(&payload, WEBHOOK_SECRET, now() - 301)),
        ),
        (
            "a future timestamp",
            payload.clone(),
            Some(sign(&payload, WEBHOOK_SECRET, now() + 301)),
        ),
        (
            "a malformed header",
            payload.clone(),
            Some("v1=abc".to_owned()),
        ),
    ];
    for (case, body, signature) in cases {
        let (status, answer) = w.deliver(&body, signature).await;
        assert_eq!(status, 400, "{case}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_signature", "{case}");
    }
    let billing = w.billing_of(&sub.account_id).await;
    assert!(billing.subscription.is_none(), "nothing applied");
    assert_eq!(billing.version, 1, "nothing written");
    assert_eq!(w.request_limit(&sub.key).await, 11);

    // The refusals took no claim on the event: the genuine delivery of it is processed. It may be signed
    // with the secret being rotated out, and carry several signatures.
    let t = now();
    let header = format!(
        "{},v1={}",
        sign(&payload, "whsec_unrelated", t),
        sign(&payload, OLD_WEBHOOK_SECRET, t)
            .split("v1=")
            .nth(1)
            .unwrap()
    );
    let (status, answer) = w.deliver(&payload, Some(header)).await;
    assert_eq!(
        (status, answer["note"].as_str()),
        (200, Some("processed")),
        "{answer}"
    );
    assert_eq!(w.request_limit(&sub.key).await, 600);
    w.gateway.stop().await;
}

#[tokio::test]
async fn the_same_delivery_twice_concurrently_has_one_effect_and_both_get_2xx() {
    let w = world().await;
    let sub = w.subscriber("twice@example.com").await;
    let payload = subscription_event(
        "customer.subscription.created",
        now(),
        &sub,
        "active",
        now() + 86_400,
    );
    let signature = sign(&payload, WEBHOOK_SECRET, now());
    let deliveries = futures_util::future::join_all(
        (0..4).map(|_| w.deliver(&payload, Some(signature.clone()))),
    )
    .await;
    let notes: Vec<&str> = deliveries
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["note"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        notes.iter().filter(|n| **n == "processed").count(),
        1,
        "{notes:?}"
    );
    // One write on top of the customer link (version 1): the duplicates wrote nothing.
    assert_eq!(w.billing_of(&sub.account_id).await.version, 2);
    // A later redelivery (Stripe retries on timeouts) is recognised too.
    let (status, body) = w.deliver_signed(&payload).await;
    assert_eq!(
        (status, body["note"].as_str()),
        (200, Some("already processed"))
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn out_of_order_deliveries_end_in_stripes_true_state() {
    let w = world().await;
    let end = now() + 30 * 86_400;

    // `.updated` (active) arrives before its `.created` (incomplete): the account ends active.
    let a = w.subscriber("order-a@example.com").await;
    let t = now() - 100;
    let updated = subscription_event("customer.subscription.updated", t + 2, &a, "active", end);
    let created = subscription_event("customer.subscription.created", t, &a, "incomplete", end);
    assert_eq!(w.deliver_signed(&updated).await.0, 200);
    assert_eq!(w.deliver_signed(&created).await.0, 200);
    assert_eq!(w.subscription_status(&a.account_id).await, "active");
    assert_eq!(w.request_limit(&a.key).await, 600);

    // An older `.updated` (active) after the newer `.deleted`: the subscription stays ended.
    let b = w.subscriber("order-b@example.com").await;
    let deleted = subscription_event(
        "customer.subscription.deleted",
        t + 50,
        &b,
        "canceled",
        now() - 10,
    );
    let stale = subscription_event("customer.subscription.updated", t + 40, &b, "active", end);
    assert_eq!(w.deliver_signed(&deleted).await.0, 200);
    assert_eq!(w.deliver_signed(&stale).await.0, 200);
    assert_eq!(w.subscription_status(&b.account_id).await, "canceled");
    assert_eq!(w.request_limit(&b.key).await, 11);

    // Same second, reverse order: the later lifecycle stage wins.
    let c = w.subscriber("order-c@example.com").await;
    let active = subscription_event("customer.subscription.updated", t, &c, "active", end);
    let incomplete = subscription_event("customer.subscription.created", t, &c, "incomplete", end);
    assert_eq!(w.deliver_signed(&active).await.0, 200);
    assert_eq!(w.deliver_signed(&incomplete).await.0, 200);
    assert_eq!(w.subscription_status(&c.account_id).await, "active");

    // An invoice that failed earlier than the one that was paid does not start a grace period.
    let paid = event_json(
        &qnp_tests::unique("evt"),
        "invoice.paid",
        t + 20,
        invoice_json(
            &a.customer,
            &format!("sub_{}", a.account_id),
            &a.account_id,
            true,
        ),
    );
    let failed = event_json(
        &qnp_tests::unique("evt"),
        "invoice.payment_failed",
        t + 10,
        invoice_json(
            &a.customer,
            &format!("sub_{}", a.account_id),
            &a.account_id,
            false,
        ),
    );
    assert_eq!(w.deliver_signed(&paid).await.0, 200);
    assert_eq!(w.deliver_signed(&failed).await.0, 200);
    assert!(
        w.billing_of(&a.account_id)
            .await
            .payment_failed_at
            .is_none()
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_failed_payment_keeps_the_plan_through_the_grace_period_and_a_paid_invoice_clears_it() {
    let w = world().await;
    let sub = w.subscriber("dunning@example.com").await;
    let sub_id = format!("sub_{}", sub.account_id);
    let t = now() - 60;
    let created = subscription_event(
        "customer.subscription.created",
        t,
        &sub,
        "active",
        now() + 86_400,
    );
    assert_eq!(w.deliver_signed(&created).await.0, 200);
    let failed = event_json(
        &qnp_tests::unique("evt"),
        "invoice.payment_failed",
        t + 10,
        invoice_json(&sub.customer, &sub_id, &sub.account_id, false),
    );
    assert_eq!(w.deliver_signed(&failed).await.0, 200);
    let past_due = subscription_event(
        "customer.subscription.updated",
        t + 11,
        &sub,
        "past_due",
        now() + 86_400,
    );
    assert_eq!(w.deliver_signed(&past_due).await.0, 200);

    let billing = w.billing_of(&sub.account_id).await;
    assert_eq!(billing.payment_failed_at.unwrap().unix_timestamp(), t + 10);
    assert_eq!(
        w.request_limit(&sub.key).await,
        600,
        "within the 7-day grace period"
    );
    let cookie = w.session("dunning@example.com").await;
    let (status, status_body) = w
        .dashboard(reqwest::Method::GET, "/billing", &cookie, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_body["plan"]["name"], "pro");
    assert_eq!(status_body["subscription"]["status"], "past_due");
    assert!(
        status_body["grace_ends_at"].as_str().is_some(),
        "{status_body}"
    );

    let paid = event_json(
        &qnp_tests::unique("evt"),
        "invoice.paid",
        t + 20,
        invoice_json(&sub.customer, &sub_id, &sub.account_id, true),
    );
    assert_eq!(w.deliver_signed(&paid).await.0, 200);
    assert!(
        w.billing_of(&sub.account_id)
            .await
            .payment_failed_at
            .is_none()
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn unknown_types_and_unusable_payloads_are_acknowledged_without_effect() {
    let w = world().await;
    let sub = w.subscriber("odd@example.com").await;
    let unknown = event_json(
        &qnp_tests::unique("evt"),
        "customer.tax_id.created",
        now(),
        json!({"id": "txi_1", "object": "tax_id"}),
    );
    let (status, body) = w.deliver_signed(&unknown).await;
    assert_eq!(
        (status, body["note"].as_str()),
        (200, Some("customer.tax_id.created is not used"))
    );

    // Signed by Stripe but unusable: retrying for three days would not change that.
    let not_json = "this is not an event";
    let (status, _) = w.deliver_signed(not_json).await;
    assert_eq!(status, 200);
    let mut object = subscription_json(&SubscriptionSpec {
        id: "sub_broken",
        customer: &sub.customer,
        account_id: &sub.account_id,
        price: PRO_PRICE,
        status: "active",
        current_period_end: now() + 86_400,
        cancel_at_period_end: false,
    });
    object.as_object_mut().unwrap().remove("status");
    let missing_field = event_json(
        &qnp_tests::unique("evt"),
        "customer.subscription.updated",
        now(),
        object,
    );
    let (status, body) = w.deliver_signed(&missing_field).await;
    assert_eq!(status, 200);
    assert!(
        body["note"].as_str().unwrap().starts_with("not applied"),
        "{body}"
    );
    // A subscription of a customer this gateway does not know.
    let stranger = Subscriber {
        account_id: "acct_unknown".into(),
        customer: "cus_unknown".into(),
        key: String::new(),
    };
    let orphan = subscription_event(
        "customer.subscription.created",
        now(),
        &stranger,
        "active",
        now() + 86_400,
    );
    let (status, body) = w.deliver_signed(&orphan).await;
    assert_eq!(status, 200);
    assert!(
        body["note"].as_str().unwrap().contains("no account"),
        "{body}"
    );

    let billing = w.billing_of(&sub.account_id).await;
    assert!(billing.subscription.is_none());
    assert_eq!(billing.version, 1);
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_failure_that_a_retry_can_fix_gets_5xx_and_the_retry_is_applied() {
    let w = world().await;
    let sub = w.subscriber("retry@example.com").await;
    let sub_id = format!("sub_{}", sub.account_id);
    w.stripe
        .set_subscription(subscription_json(&SubscriptionSpec {
            id: &sub_id,
            customer: &sub.customer,
            account_id: &sub.account_id,
            price: PRO_PRICE,
            status: "active",
            current_period_end: now() + 30 * 86_400,
            cancel_at_period_end: false,
        }));
    // checkout.session.completed reads the new subscription from Stripe; Stripe fails the first time.
    let payload = event_json(
        &qnp_tests::unique("evt"),
        "checkout.session.completed",
        now(),
        checkout_session_json(&sub.customer, &sub_id, &sub.account_id),
    );
    w.stripe.fail_next(500);
    let (status, _) = w.deliver_signed(&payload).await;
    assert!(status >= 500, "{status}");
    assert!(w.billing_of(&sub.account_id).await.subscription.is_none());
    assert_eq!(w.request_limit(&sub.key).await, 11);

    let (status, body) = w.deliver_signed(&payload).await;
    assert_eq!(
        (status, body["note"].as_str()),
        (200, Some("processed")),
        "{body}"
    );
    assert_eq!(w.request_limit(&sub.key).await, 600);
    let reads = w.stripe.requests_to(&format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(reads.len(), 2);
    assert_eq!(
        reads[1].authorization.as_deref(),
        Some("Bearer sk_test_mock")
    );
    assert!(
        reads[1]
            .stripe_version
            .as_deref()
            .unwrap()
            .starts_with("2026-")
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn checkout_creates_the_customer_once_and_sends_a_subscription_session() {
    let w = world().await;
    let email = "buyer@example.com";
    let cookie = w.session(email).await;
    let account = w
        .gateway
        .stores
        .records
        .account_by_email(email)
        .await
        .unwrap()
        .unwrap();

    // Two first checkouts at once still make one customer.
    let (first, second) =
        futures_util::join!(w.checkout(&cookie, "pro"), w.checkout(&cookie, "pro"),);
    for (status, body) in [&first, &second] {
        assert_eq!(*status, 200, "{body}");
        assert!(
            body["url"]
                .as_str()
                .unwrap()
                .starts_with("https://checkout.stripe.com/")
        );
    }
    let customers = w.stripe.requests_to("/v1/customers");
    assert!(!customers.is_empty());
    for request in &customers {
        assert_eq!(request.form["email"], email);
        assert_eq!(request.form["metadata[account_id]"], account.id);
        assert_eq!(
            request.idempotency_key.as_deref(),
            Some(format!("qnp-customer-{}", account.id).as_str())
        );
    }
    let customer = w
        .billing_of(&account.id)
        .await
        .stripe_customer_id
        .expect("customer kept");
    assert!(w.stripe.customer_exists(&customer));

    let sessions = w.stripe.requests_to("/v1/checkout/sessions");
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        let form = &session.form;
        assert_eq!(form["mode"], "subscription");
        assert_eq!(form["customer"], customer);
        assert_eq!(form["line_items[0][price]"], PRO_PRICE);
        assert_eq!(form["line_items[0][quantity]"], "1");
        assert_eq!(form["client_reference_id"], account.id);
        assert_eq!(form["metadata[account_id]"], account.id);
        assert_eq!(form["subscription_data[metadata][account_id]"], account.id);
        assert_eq!(
            form["success_url"],
            format!("{}/?billing=success", w.gateway.url)
        );
        assert_eq!(
            form["cancel_url"],
            format!("{}/?billing=canceled", w.gateway.url)
        );
        assert!(
            !form
                .keys()
                .any(|k| k.contains("card") || k.contains("payment_method"))
        );
    }

    // A later checkout reuses the stored customer.
    let before = w.stripe.requests_to("/v1/customers").len();
    let (status, _) = w.checkout(&cookie, "team").await;
    assert_eq!(status, 200);
    assert_eq!(w.stripe.requests_to("/v1/customers").len(), before);
    assert_eq!(
        w.stripe.requests_to("/v1/checkout/sessions")[2].form["line_items[0][price]"],
        "price_team_monthly"
    );

    // The portal opens for that customer and returns to the dashboard.
    let (status, body) = w
        .dashboard(reqwest::Method::POST, "/billing/portal", &cookie, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.com/")
    );
    let portal = &w.stripe.requests_to("/v1/billing_portal/sessions")[0];
    assert_eq!(portal.form["customer"], customer);
    assert_eq!(portal.form["return_url"], format!("{}/", w.gateway.url));
    w.gateway.stop().await;
}

#[tokio::test]
async fn billing_routes_refuse_bad_requests_clearly() {
    let w = world().await;
    let cookie = w.session("careful@example.com").await;
    let post = |body: &'static str| {
        w.dashboard(
            reqwest::Method::POST,
            "/billing/checkout",
            &cookie,
            Some(body),
        )
    };

    let (status, body) = post(r#"{"plan":"platinum"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "plan");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("pro"),
        "{body}"
    );
    let (status, body) = post(r#"{"plan":"free"}"#).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("free"),
        "{body}"
    );
    let (status, _) = post(r#"{"plan":"unlimited"}"#).await;
    assert_eq!(status, 400, "operator-only plans are not for sale");
    let (status, body) = post(r#"{"plan":"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _) = post(r#"{"plan":"pro","card":"4242"}"#).await;
    assert_eq!(status, 400, "unknown fields are refused");

    // The portal needs a billing account first.
    let (status, body) = w
        .dashboard(reqwest::Method::POST, "/billing/portal", &cookie, None)
        .await;
    assert_eq!(status, 409, "{body}");

    // No session: 401. Another site's page: 403, and Stripe is never called.
    let response = w
        .http
        .post(w.url("/billing/checkout"))
        .header("origin", &w.gateway.url)
        .body(r#"{"plan":"pro"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = w
        .http
        .post(w.url("/billing/checkout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .body(r#"{"plan":"pro"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(w.stripe.requests().is_empty());

    // Stripe failing is a 502 that reveals nothing of Stripe's answer.
    w.stripe.fail_next(500);
    let (status, body) = post(r#"{"plan":"pro"}"#).await;
    assert_eq!(status, 502);
    assert!(!body.to_string().contains("injected"), "{body}");

    // An active subscriber is sent to the portal instead of buying twice.
    let sub = w.subscriber("subscribed@example.com").await;
    let created = subscription_event(
        "customer.subscription.created",
        now(),
        &sub,
        "active",
        now() + 86_400,
    );
    assert_eq!(w.deliver_signed(&created).await.0, 200);
    let cookie = w.session("subscribed@example.com").await;
    let (status, body) = w.checkout(&cookie, "team").await;
    assert_eq!(status, 409);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("portal")
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn without_stripe_configured_the_free_plan_works_and_billing_says_what_to_set() {
    let w = world_with(false).await;
    let key = w.gateway.create_key("nostripe@example.com", "free").await;
    assert_eq!(w.request_limit(&key).await, 11);
    let cookie = w.session("nostripe@example.com").await;
    let (status, body) = w.checkout(&cookie, "pro").await;
    assert_eq!(status, 503);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("STRIPE_SECRET_KEY")
    );
    let (status, body) = w
        .dashboard(reqwest::Method::GET, "/billing", &cookie, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["billing_enabled"], false);
    // With no signing secret nothing can be verified: Stripe is told to retry later.
    let (status, _) = w
        .deliver("{}", Some(sign("{}", WEBHOOK_SECRET, now())))
        .await;
    assert_eq!(status, 503);
    w.gateway.stop().await;
}

/// A streamed call that stays in flight for a while (the mock sends a word every 40 ms), so a burst's
/// reservations all overlap.
async fn slow_call(w: &World, key: &str, max_tokens: u64) -> (u16, Value, Option<String>) {
    let response = w
        .http
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({
            "model": "openai/mock-slowstream",
            "stream": true,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "one two three four five six"}]
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, retry_after)
}

#[tokio::test]
async fn a_concurrent_burst_never_spends_past_the_cap_and_the_refusal_is_a_402() {
    let w = world().await;
    qnp_tests::avoid_minute_boundary().await;
    let key = w.gateway.create_key("capped@example.com", "capped").await;
    let account = w
        .gateway
        .stores
        .records
        .account_by_email("capped@example.com")
        .await
        .unwrap()
        .unwrap();
    // The model costs $1/M in and $2/M out; max_tokens 200 reserves at least $0.0004 of the $0.002 cap.
    let results = futures_util::future::join_all((0..16).map(|_| slow_call(&w, &key, 200))).await;
    let admitted = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == 402)
        .map(|r| &r.1)
        .collect();
    assert_eq!(
        admitted + refused.len(),
        results.len(),
        "only 200s and 402s: {results:?}"
    );
    // Each reservation is ≥ $0.0004, so the cap holds at most five at once.
    assert!((1..=5).contains(&admitted), "{admitted} admitted");
    let error = &refused[0]["error"];
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(error["code"], "spend_cap_reached");
    assert!(
        error["message"].as_str().unwrap().contains("spend cap"),
        "{error}"
    );

    // Settled: the month's counter holds exactly what the admitted calls cost, which is under the cap.
    let rows = w
        .gateway
        .usage_calls("capped@example.com", results.len() as u64)
        .await;
    let billed: f64 = rows
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.cost_usd)
        .sum();
    let budget = qnp_shared::budget::Budget::new(w.gateway.stores.counters.clone());
    let mut spent = 0.0;
    for _ in 0..100 {
        spent = budget
            .spent(&account.id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        if (spent - billed).abs() < 1e-7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        (spent - billed).abs() < 1e-7,
        "counter {spent} vs rows {billed}"
    );
    assert!(spent <= 0.002);
    assert_eq!(
        rows.iter()
            .filter(|r| r.status == 402)
            .map(|r| r.count)
            .sum::<u64>(),
        refused.len() as u64
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn the_tokens_per_minute_limit_reserves_the_worst_case() {
    let w = world().await;
    qnp_tests::avoid_minute_boundary().await;
    let key = w.gateway.create_key("metered@example.com", "metered").await;
    // ~300 tokens each against 1,000 a minute: at most three in flight at once.
    let results = futures_util::future::join_all((0..8).map(|_| slow_call(&w, &key, 300))).await;
    let admitted = results.iter().filter(|r| r.0 == 200).count();
    let limited: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(admitted + limited.len(), results.len(), "{results:?}");
    assert!((1..=3).contains(&admitted), "{admitted} admitted");
    let (_, body, retry_after) = limited[0];
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
    assert!(retry_after.as_deref().unwrap().parse::<u64>().unwrap() <= 60);
    // A request whose max_tokens alone passes the limit can never run: 400 naming the field.
    let (status, body, _) = slow_call(&w, &key, 5_000).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "max_tokens");
    w.gateway.stop().await;
}

#[tokio::test]
async fn retention_deletes_the_stripe_customer_of_an_erased_account() {
    let w = world().await;
    let cookie = w.session("leaving@example.com").await;
    let (status, _) = w.checkout(&cookie, "pro").await;
    assert_eq!(status, 200);
    let account = w
        .gateway
        .stores
        .records
        .account_by_email("leaving@example.com")
        .await
        .unwrap()
        .unwrap();
    let customer = account.billing.stripe_customer_id.clone().unwrap();
    assert!(w.stripe.customer_exists(&customer));
    w.gateway
        .stores
        .records
        .request_deletion(&account.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let cleaner = qnp_shared::retention::Cleaner {
        records: w.gateway.stores.records.clone(),
        counters: w.gateway.stores.counters.clone(),
        stripe: qnp_shared::billing::stripe_api::StripeApi::from_config(&w.gateway.config.stripe)
            .unwrap(),
        budget: std::time::Duration::from_secs(60),
        usage_days: qnp_shared::retention::USAGE_RETENTION_DAYS,
    };
    // Stripe is down for the first run: the account stays pending rather than leaving a customer behind.
    w.stripe.fail_next(503);
    let report = cleaner
        .run(OffsetDateTime::now_utc(), false, &|_| {})
        .await
        .unwrap();
    assert_eq!((report.accounts_erased, report.complete), (0, false));
    assert!(
        w.gateway
            .stores
            .records
            .account(&account.id)
            .await
            .unwrap()
            .is_some()
    );
    let report = cleaner
        .run(OffsetDateTime::now_utc(), false, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.accounts_erased, report.stripe_customers_deleted),
        (1, 1)
    );
    assert!(!w.stripe.customer_exists(&customer));
    assert!(
        w.gateway
            .stores
            .records
            .account(&account.id)
            .await
            .unwrap()
            .is_none()
    );
    let deletions = w.stripe.requests_to(&format!("/v1/customers/{customer}"));
    assert_eq!(deletions.iter().filter(|r| r.method == "DELETE").count(), 2);
    w.gateway.stop().await;
}
