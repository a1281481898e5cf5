//! The stripe-webhook function as Lambda runs it: the signed, current-shape deliveries in
//! events/stripe-webhook/ parsed by `lambda_http` and driven through its adapter and the function's own
//! router, built exactly as its `main` builds it.

use std::sync::Arc;

use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service, ServiceExt};
use lambda_http::{Context, LambdaEvent};
use qnp_shared::billing::Billing;
use qnp_shared::billing::events::{Receipt, verify_signature};
use qnp_shared::config::{Config, Env};
use qnp_shared::plans::Plans;
use qnp_shared::store::Stores;
use qnp_shared::web::WebAuth;
use qnp_stripe_webhook::{Payments, router};
use qnp_tests::event_fixture;
use serde_json::Value;
use time::OffsetDateTime;

/// The secret and time the fixtures were signed with (see events/stripe-webhook/README.md).
const FIXTURE_SECRET: &str = "whsec_qnp_fixture_secret";
const SIGNED_AT: i64 = 1_795_000_000;
const FIXTURE_CUSTOMER: &str = "cus_fixture00000000";

/// In the order Stripe sent them.
const DELIVERIES: [&str; 6] = [
    "checkout-session-completed.json",
    "customer-subscription-created.json",
    "customer-subscription-updated.json",
    "invoice-paid.json",
    "invoice-payment-failed.json",
    "customer-subscription-deleted.json",
];

struct Function {
    router: axum::Router,
    payments: Arc<Payments>,
    stores: Stores,
    account_id: String,
    _dir: tempfile::TempDir,
}

async fn function() -> Function {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("QNP_DATA_DIR", dir.path().display().to_string()),
        (
            "QNP_SESSION_SECRET",
            "lambda-billing-session-secret-0123456789".into(),
        ),
        ("QNP_PUBLIC_URL", "https://qnp.example.com".into()),
        ("STRIPE_WEBHOOK_SECRET", FIXTURE_SECRET.into()),
        (
            "QNP_PLANS",
            r#"[{"name":"free","requests_per_minute":20},
                {"name":"pro","requests_per_minute":600,"stripe_price_id":"price_fixture_pro"}]"#
                .into(),
        ),
    ]);
    let config = Config::from_env(&env).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let plans = Arc::new(Plans::from_config(&config).unwrap());
    let (web, public_url) = WebAuth::for_lambda(&config, stores.records.clone()).unwrap();
    let payments =
        Arc::new(Payments::new(&config, &stores, Arc::new(web), plans, &public_url).unwrap());
    let router = qnp_shared::web::with_fallbacks(router(payments.clone()));
    // The account whose checkout created the fixtures' customer.
    let account = stores
        .records
        .account_for_email("fixture@example.com", "free")
        .await
        .unwrap();
    let billing = Billing {
        stripe_customer_id: Some(FIXTURE_CUSTOMER.into()),
        version: 1,
        ..Billing::default()
    };
    assert!(
        stores
            .records
            .update_billing(&account.id, 0, &billing)
            .await
            .unwrap()
    );
    Function {
        router,
        payments,
        stores,
        account_id: account.id,
        _dir: dir,
    }
}

/// The delivery's body and signature, as the function sees them after API Gateway.
fn delivery(name: &str) -> (String, String) {
    let request =
        lambda_http::request::from_str(&event_fixture(&format!("stripe-webhook/{name}"), ""))
            .expect("a valid API Gateway event");
    assert_eq!(request.uri().path(), "/webhooks/stripe");
    let signature = request.headers()["stripe-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = String::from_utf8(request.body().to_vec()).unwrap();
    (body, signature)
}

async fn invoke(router: &axum::Router, event_json: &str) -> Value {
    let payload: LambdaRequest = serde_json::from_str(event_json).unwrap();
    let mut adapter = lambda_http::Adapter::from(router.clone());
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap();
    serde_json::to_value(&response).unwrap()
}

#[tokio::test]
async fn the_fixtures_are_signed_current_shape_deliveries_that_apply_in_order() {
    let f = function().await;
    let secrets = vec![FIXTURE_SECRET.to_owned()];
    for name in DELIVERIES {
        let (body, signature) = delivery(name);
        assert_eq!(
            verify_signature(body.as_bytes(), Some(&signature), &secrets, SIGNED_AT),
            Ok(()),
            "{name}"
        );
        // async-stripe's typed models (API 2026-09-30) accept every fixture as it is.
        stripe_webhook::Webhook::construct_event_with_timestamp(
            &body,
            &signature,
            FIXTURE_SECRET,
            SIGNED_AT,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let receipt = f
            .payments
            .webhooks
            .receive(
                body.as_bytes(),
                Some(&signature),
                OffsetDateTime::from_unix_timestamp(SIGNED_AT).unwrap(),
            )
            .await;
        assert_eq!(receipt, Receipt::Acknowledged("processed".into()), "{name}");
    }
    let billing = f
        .stores
        .records
        .account(&f.account_id)
        .await
        .unwrap()
        .unwrap()
        .billing;
    let subscription = billing.subscription.unwrap();
    assert_eq!(subscription.status, "canceled");
    assert_eq!(subscription.price_id, "price_fixture_pro");
    assert_eq!(subscription.as_of, 1_794_999_995);
    assert_eq!(
        billing.payment_failed_at.unwrap().unix_timestamp(),
        1_794_999_990
    );
}

#[tokio::test]
async fn through_the_lambda_adapter_a_days_old_signature_is_refused_and_a_fresh_one_applied() {
    let f = function().await;
    let name = "customer-subscription-created.json";
    let fixture = event_fixture(&format!("stripe-webhook/{name}"), "");
    // Signed on 2026-11-18: outside the 300 s tolerance of any run after that.
    let stale = invoke(&f.router, &fixture).await;
    assert_eq!(stale["statusCode"], 400, "{stale}");
    assert!(
        f.stores
            .records
            .account(&f.account_id)
            .await
            .unwrap()
            .unwrap()
            .billing
            .subscription
            .is_none()
    );

    let (body, _) = delivery(name);
    let fresh = qnp_tests::mock_stripe::sign(
        &body,
        FIXTURE_SECRET,
        OffsetDateTime::now_utc().unix_timestamp(),
    );
    let mut event: Value = serde_json::from_str(&fixture).unwrap();
    event["headers"]["stripe-signature"] = Value::String(fresh);
    let applied = invoke(&f.router, &event.to_string()).await;
    assert_eq!(applied["statusCode"], 200, "{applied}");
    let answer: Value = serde_json::from_str(applied["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["note"], "processed");
    let billing = f
        .stores
        .records
        .account(&f.account_id)
        .await
        .unwrap()
        .unwrap()
        .billing;
    assert_eq!(billing.subscription.unwrap().status, "active");
}
