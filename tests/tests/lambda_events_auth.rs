//! The auth function as Lambda runs it: every route's API Gateway v2 fixture from events/auth, parsed by
//! `lambda_http` and driven through its adapter against the same router `main.rs` serves.

use std::sync::Arc;

use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service, ServiceExt};
use lambda_http::{Context, LambdaEvent};
use qnp_shared::config::{Config, Env};
use qnp_shared::sessions::Sessions;
use qnp_shared::store::Stores;
use qnp_shared::web::{WebAuth, origin_of};
use qnp_tests::event_fixture;
use qnp_tests::identity::{FakeIssuer, mint_id_token, test_keys};
use serde_json::{Value, json};

const SECRET: &str = "lambda-auth-session-secret-0123456789";
const PUBLIC_URL: &str = "https://qnp.example.com";

async fn invoke(router: &axum::Router, name: &str, replace: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let substitute = |mut text: String| {
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        text
    };
    let mut event: Value =
        serde_json::from_str(&substitute(event_fixture(&format!("auth/{name}.json"), ""))).unwrap();
    // API Gateway base64-encodes form bodies; placeholders inside them are replaced in the decoded form.
    if event["isBase64Encoded"] == true {
        let decoded =
            String::from_utf8(b64.decode(event["body"].as_str().unwrap()).unwrap()).unwrap();
        event["body"] = json!(b64.encode(substitute(decoded)));
    }
    let payload: LambdaRequest = serde_json::from_value(event).expect("a valid Lambda HTTP event");
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

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_auth_route_answers_its_api_gateway_event() {
    qnp_tests::init_tracing();
    let keys = test_keys();
    let issuer = FakeIssuer::start(&keys).await;
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("QNP_DATA_DIR", dir.path().display().to_string()),
        ("QNP_PUBLIC_URL", PUBLIC_URL.to_string()),
        ("QNP_SESSION_SECRET", SECRET.to_string()),
        ("QNP_BCRYPT_COST", "4".to_string()),
        ("GOOGLE_CLIENT_ID", "google-test-client".to_string()),
        ("GOOGLE_CLIENT_SECRET", "s".to_string()),
        ("QNP_GOOGLE_ISSUER", issuer.issuer.clone()),
        ("APPLE_CLIENT_ID", "apple-test-client".to_string()),
        ("APPLE_TEAM_ID", "TEAM".to_string()),
        ("APPLE_KEY_ID", "KEY".to_string()),
        ("APPLE_PRIVATE_KEY", keys.p256_private_pem.clone()),
        ("QNP_APPLE_ISSUER", issuer.issuer.clone()),
    ]);
    let config = Config::from_env(&env).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let sessions = Sessions::new(SECRET.as_bytes());
    let web = Arc::new(WebAuth {
        sessions: Sessions::new(SECRET.as_bytes()),
        records: stores.records.clone(),
        public_origin: origin_of(PUBLIC_URL),
    });
    let auth = Arc::new(qnp_auth::Auth::new(
        &config,
        web,
        stores.counters.clone(),
        PUBLIC_URL,
        reqwest::Client::new(),
    ));
    let router = qnp_shared::web::with_fallbacks(qnp_auth::router(auth));

    // Sign-in: login redirects to the provider; the callback (with a state cookie) signs in.
    for provider in ["google", "apple"] {
        let login = invoke(&router, &format!("{provider}-login"), &[]).await;
        assert_eq!(login["statusCode"], 303, "{login}");
        assert!(
            login["headers"]["location"]
                .as_str()
                .unwrap()
                .starts_with(&issuer.issuer)
        );
        assert!(
            login["cookies"][0]
                .as_str()
                .unwrap()
                .starts_with("__Host-qnp_oauth=")
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let state_cookie = sessions.sign(
            &json!({"aud": "qnp-oauth", "exp": now + 60, "provider": provider,
            "state": "STATE1", "nonce": "NONCE1", "verifier": "v".repeat(64)}),
        );
        let client = if provider == "google" {
            "google-test-client"
        } else {
            "apple-test-client"
        };
        issuer.answer_with(mint_id_token(&keys, "test-key", &json!({"iss": issuer.issuer, "aud": client,
            "sub": format!("{provider}-sub-1"), "email": "lambda@example.com", "email_verified": true,
            "iat": now, "exp": now + 60, "nonce": "NONCE1"})));
        let callback = invoke(
            &router,
            &format!("{provider}-callback"),
            &[
                ("REPLACE_WITH_STATE_COOKIE", &state_cookie),
                ("REPLACE_WITH_STATE", "STATE1"),
                ("REPLACE_WITH_CODE", "code1"),
            ],
        )
        .await;
        assert_eq!(callback["statusCode"], 303, "{provider}: {callback}");
        assert_eq!(callback["headers"]["location"], format!("{PUBLIC_URL}/"));
        assert!(
            callback["cookies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str().unwrap().starts_with("__Host-qnp_session="))
        );
    }

    let account = stores
        .records
        .account_by_email("lambda@example.com")
        .await
        .unwrap()
        .unwrap();
    let session = sessions.issue(&account, time::OffsetDateTime::now_utc());
    let with_session = [("REPLACE_WITH_SESSION", session.as_str())];

    let me = invoke(&router, "account-get", &with_session).await;
    assert_eq!(me["statusCode"], 200);
    assert_eq!(
        body(&me)["identities"].as_array().unwrap().len(),
        2,
        "google and apple linked"
    );
    let patched = invoke(&router, "account-patch", &with_session).await;
    assert_eq!(body(&patched)["name"], "Ada Lovelace");
    let created = invoke(&router, "keys-create", &with_session).await;
    assert_eq!(created["statusCode"], 201);
    let key_id = body(&created)["id"].as_str().unwrap().to_owned();
    let listed = invoke(&router, "keys-list", &with_session).await;
    assert_eq!(body(&listed)["data"][0]["name"], "laptop");
    let revoked = invoke(
        &router,
        "keys-revoke",
        &[with_session[0], ("REPLACE_WITH_ID", &key_id)],
    )
    .await;
    assert_eq!(revoked["statusCode"], 204, "{revoked}");
    assert_eq!(
        body(&invoke(&router, "account-restrict", &with_session).await)["restricted"],
        true
    );
    assert_eq!(
        body(&invoke(&router, "account-lift-restriction", &with_session).await)["restricted"],
        false
    );
    assert_eq!(
        invoke(&router, "logout", &with_session).await["statusCode"],
        204
    );
    assert_eq!(
        invoke(&router, "account-get", &with_session).await["statusCode"],
        401,
        "logged out"
    );

    let account = stores.records.account(&account.id).await.unwrap().unwrap();
    let session = sessions.issue(&account, time::OffsetDateTime::now_utc());
    let deleted = invoke(
        &router,
        "account-delete",
        &[("REPLACE_WITH_SESSION", session.as_str())],
    )
    .await;
    assert_eq!(deleted["statusCode"], 202);
    assert!(
        stores
            .records
            .account(&account.id)
            .await
            .unwrap()
            .unwrap()
            .deletion_requested_at
            .is_some()
    );
}
