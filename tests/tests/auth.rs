//! Accounts end to end: sign-in with a real OpenID provider (Google-like, and Apple-like with form_post
//! and an ES256 client secret), ID-token validation failures, the session cookie, CSRF, deny-by-default,
//! key management, restriction and deletion, all through the gateway over real HTTP.

use qnp_shared::config::{Config, Env};
use qnp_shared::sessions::{SESSION_COOKIE, Sessions};
use qnp_shared::store::Stores;
use qnp_tests::identity::{
    Browser, FakeIssuer, OidcProvider, TestKeys, form_fields, jwt_payload, mint_id_token,
    query_param, test_keys,
};
use qnp_tests::{MockOpenAi, TestGateway, test_env};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN};
use serde_json::{Value, json};

const SECRET: &str = "auth-test-session-secret-0123456789";
const STATE_COOKIE: &str = "__Host-qnp_oauth";

struct World {
    _dir: tempfile::TempDir,
    _upstream: MockOpenAi,
    gateway: TestGateway,
    _provider: Option<OidcProvider>,
    keys: TestKeys,
}

/// A gateway whose Google (and Apple) sign-in points at `issuer` (or, when None, at the real provider
/// started here with redirect URIs naming the gateway).
async fn world(fake_issuer: Option<&str>, extra: &[(&str, &str)]) -> World {
    world_with_users(fake_issuer, extra, "{}").await
}

/// As `world`, with more test users at the real provider (`OIDC_EXTRA_USERS`, keyed by login hint).
async fn world_with_users(fake_issuer: Option<&str>, extra: &[(&str, &str)], users: &str) -> World {
    qnp_tests::init_tracing();
    let keys = test_keys();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let provider = match fake_issuer {
        Some(_) => None,
        None => Some(OidcProvider::start(&[
            (
                "GOOGLE_REDIRECT_URIS",
                format!("{url}/auth/google/callback"),
            ),
            ("APPLE_REDIRECT_URIS", format!("{url}/auth/apple/callback")),
            ("APPLE_PUBLIC_KEY_PEM", keys.p256_public_pem.clone()),
            ("APPLE_KEY_ID", "KEY123".into()),
            ("APPLE_TEAM_ID", "TEAM123".into()),
            ("OIDC_EXTRA_USERS", users.into()),
        ])),
    };
    let issuer = fake_issuer
        .map(str::to_owned)
        .unwrap_or_else(|| provider.as_ref().unwrap().issuer.clone());
    let mut env: Env = test_env(dir.path(), &upstream);
    for (k, v) in [
        ("QNP_PUBLIC_URL", url.clone()),
        ("QNP_SESSION_SECRET", SECRET.into()),
        ("GOOGLE_CLIENT_ID", "google-test-client".into()),
        ("GOOGLE_CLIENT_SECRET", "google-test-secret".into()),
        ("QNP_GOOGLE_ISSUER", issuer.clone()),
        ("APPLE_CLIENT_ID", "apple-test-client".into()),
        ("APPLE_TEAM_ID", "TEAM123".into()),
        ("APPLE_KEY_ID", "KEY123".into()),
        ("APPLE_PRIVATE_KEY", keys.p256_private_pem.clone()),
        ("QNP_APPLE_ISSUER", issuer),
        ("QNP_KEY_CACHE_SECS", "1".into()),
    ] {
        env.set(k, v);
    }
    for (k, v) in extra {
        env.set(*k, *v);
    }
    let config = Config::from_env(&env).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let gateway = TestGateway::start_on(listener, config, stores).await;
    World {
        _dir: dir,
        _upstream: upstream,
        gateway,
        _provider: provider,
        keys,
    }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url)
    }

    /// A browser signed in as a new account with this email (session minted with the gateway's secret).
    async fn signed_in(&self, email: &str) -> Browser {
        let account = self
            .gateway
            .stores
            .records
            .account_for_email(email, "free")
            .await
            .unwrap();
        let browser = Browser::new();
        let token =
            Sessions::new(SECRET.as_bytes()).issue(&account, time::OffsetDateTime::now_utc());
        browser.set_cookie(&self.gateway.url, SESSION_COOKIE, &token);
        browser
    }

    /// A same-origin state-changing request, as the dashboard makes it.
    async fn send(
        &self,
        browser: &Browser,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let url = self.url(path);
        let mut request = browser
            .http
            .request(method, &url)
            .header(COOKIE, browser.cookie_header(&url))
            .header(ORIGIN, &self.gateway.url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        browser.absorb(&url, &response);
        response
    }

    async fn create_key(&self, browser: &Browser, name: &str) -> Value {
        let response = self
            .send(
                browser,
                reqwest::Method::POST,
                "/keys",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    async fn chat(&self, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }
}

/// Starts a Google login at the gateway and returns the provider URL it redirects to.
async fn begin_login(w: &World, browser: &Browser, provider: &str) -> String {
    let response = browser
        .get(&w.url(&format!("/auth/{provider}/login")))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Signs in at the real provider as the test user named by `hint`; returns the callback's response.
async fn sign_in_as(w: &World, browser: &Browser, hint: &str) -> reqwest::Response {
    let authorize = begin_login(w, browser, "google").await;
    let authorize = format!("{authorize}&login_hint={hint}");
    let (callback, _) = browser
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    browser.get(&callback).await
}

#[tokio::test]
async fn nobody_can_claim_an_address_before_its_owner_signs_up() {
    let users = r#"{
        "mallory": {"sub": "google-sub-mallory", "email": "mallory@example.com", "email_verified": true},
        "pretender": {"sub": "google-sub-pretender", "email": "carol@example.com", "email_verified": false},
        "carol": {"sub": "google-sub-carol", "email": "carol@example.com", "email_verified": true}
    }"#;
    let w = world_with_users(None, &[], users).await;
    let records = &w.gateway.stores.records;

    // Mallory signs in and tries to take Carol's address before Carol ever signs up.
    let mallory = Browser::new();
    assert_eq!(
        sign_in_as(&w, &mallory, "mallory").await.status(),
        StatusCode::SEE_OTHER
    );
    let response = w
        .send(
            &mallory,
            reqwest::Method::PATCH,
            "/account",
            Some(json!({"email": "Carol@example.com"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "email");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("confirmed"),
        "{body}"
    );
    assert!(
        records
            .account_by_email("carol@example.com")
            .await
            .unwrap()
            .is_none()
    );

    // An identity whose provider does not vouch for the address cannot sign up with it either.
    let pretender = Browser::new();
    let response = sign_in_as(&w, &pretender, "pretender").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not verified"),
        "{body}"
    );
    assert!(pretender.cookie(&w.gateway.url, SESSION_COOKIE).is_none());
    assert!(
        records
            .account_by_email("carol@example.com")
            .await
            .unwrap()
            .is_none()
    );

    // The operator creates Carol's key (`qnp keys create --email carol@example.com`): a new account of
    // Carol's own, not Mallory's.
    let mallory_account: Value = mallory.get(&w.url("/account")).await.json().await.unwrap();
    let operator_key = w.gateway.create_key("carol@example.com", "free").await;
    let carol_account = records
        .account_by_email("carol@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(json!(carol_account.id), mallory_account["id"]);
    assert_eq!(
        w.chat(&operator_key).await.status(),
        StatusCode::OK,
        "the operator's key works"
    );

    // Carol signs in with her verified address and lands in that account, with that key.
    let carol = Browser::new();
    assert_eq!(
        sign_in_as(&w, &carol, "carol").await.status(),
        StatusCode::SEE_OTHER
    );
    let account: Value = carol.get(&w.url("/account")).await.json().await.unwrap();
    assert_eq!(account["id"], json!(carol_account.id));
    assert_eq!(account["email"], "carol@example.com");
    let keys: Value = carol.get(&w.url("/keys")).await.json().await.unwrap();
    assert_eq!(keys["data"].as_array().map(Vec::len), Some(1), "{keys}");
    let keys_of_mallory = records
        .keys_for_account(mallory_account["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(keys_of_mallory.is_empty(), "Mallory was handed no key");
}

#[tokio::test]
async fn the_privacy_page_lists_exactly_the_cookies_signing_in_sets() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    assert_eq!(
        sign_in_as(&w, &browser, "alice").await.status(),
        StatusCode::SEE_OTHER
    );
    browser.get(&w.url("/account")).await;
    browser.get(&w.url("/")).await;
    w.send(&browser, reqwest::Method::POST, "/auth/logout", None)
        .await;
    let host = reqwest::Url::parse(&w.gateway.url).unwrap();
    let host = format!("{}:{}", host.host_str().unwrap(), host.port().unwrap());
    let set: std::collections::BTreeSet<String> = browser
        .cookies_set
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _)| h.contains(&host))
        .map(|(_, name)| name.clone())
        .collect();
    let facts: Value = browser
        .get(&w.url("/privacy.json"))
        .await
        .json()
        .await
        .unwrap();
    let listed: std::collections::BTreeSet<String> = facts["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(set, listed, "cookies set by a real sign-in vs. the policy");
    let page = browser.get(&w.url("/privacy")).await.text().await.unwrap();
    for name in &set {
        assert!(page.contains(name.as_str()), "{name}");
    }
}

#[tokio::test]
async fn google_sign_in_runs_end_to_end_and_finds_the_account_again() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "google").await;
    for param in ["state", "nonce", "code_challenge"] {
        assert!(
            query_param(&authorize, param).is_some(),
            "{param} in {authorize}"
        );
    }
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let (callback, _) = browser
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    assert!(query_param(&callback, "code").is_some());
    let response = browser.get(&callback).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        response.text().await
    );
    assert_eq!(response.headers()["location"], w.url("/"));
    assert!(browser.cookie(&w.gateway.url, SESSION_COOKIE).is_some());
    assert!(
        browser.cookie(&w.gateway.url, STATE_COOKIE).is_none(),
        "the state cookie is cleared"
    );

    let account: Value = browser.get(&w.url("/account")).await.json().await.unwrap();
    assert_eq!(account["email"], "alice@example.com");
    assert_eq!(account["name"], "Alice Example");
    assert_eq!(account["plan"], "free");
    assert_eq!(account["identities"][0]["provider"], "google");

    // A second sign-in (new browser) finds the same account by provider + subject.
    let again = Browser::new();
    let authorize = begin_login(&w, &again, "google").await;
    let (callback, _) = again
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    assert_eq!(again.get(&callback).await.status(), StatusCode::SEE_OTHER);
    let second: Value = again.get(&w.url("/account")).await.json().await.unwrap();
    assert_eq!(second["id"], account["id"]);

    // Deleted, then back before the cleaner has run: signing in starts a new, empty account.
    let deleted = w
        .send(&again, reqwest::Method::DELETE, "/account", None)
        .await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let returning = Browser::new();
    let authorize = begin_login(&w, &returning, "google").await;
    let (callback, _) = returning
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    let response = returning.get(&callback).await;
    assert_eq!(
        response.headers()["location"],
        w.url("/"),
        "signed in again"
    );
    let fresh: Value = returning
        .get(&w.url("/account"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["email"], "alice@example.com");
    assert_ne!(fresh["id"], account["id"]);
}

#[tokio::test]
async fn session_cookie_has_the_required_attributes() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "google").await;
    let (callback, _) = browser
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    let response = browser
        .http
        .get(&callback)
        .header(COOKIE, browser.cookie_header(&callback))
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-qnp_session="))
        .expect("session cookie");
    for attribute in [
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=604800",
    ] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Domain="),
        "__Host- cookies carry no Domain"
    );
}

#[tokio::test]
async fn apple_sign_in_uses_form_post_and_an_es256_client_secret() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "apple").await;
    assert_eq!(
        query_param(&authorize, "response_mode").as_deref(),
        Some("form_post")
    );
    let raw_state_cookie = browser.cookie(&w.gateway.url, STATE_COOKIE).unwrap();
    assert!(!raw_state_cookie.is_empty());
    let authorize = format!("{authorize}&login_hint=relay");
    let (_, form_page) = browser
        .follow(authorize, &w.url("/auth/apple/callback"))
        .await;
    let html = form_page.text().await.unwrap();
    let fields = form_fields(&html);
    assert!(
        fields.contains_key("code") && fields.contains_key("state"),
        "{html}"
    );

    // The browser posts the form cross-site from the provider's origin, carrying the SameSite=None
    // state cookie; the gateway's client secret must pass the provider's ES256 check for this to work.
    let url = w.url("/auth/apple/callback");
    let mut form = fields.clone();
    form.insert(
        "user".into(),
        r#"{"name":{"firstName":"Ada","lastName":"Lovelace"}}"#.into(),
    );
    let response = browser
        .http
        .post(&url)
        .header(COOKIE, browser.cookie_header(&url))
        .header(ORIGIN, w._provider.as_ref().unwrap().issuer.clone())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        response.text().await
    );
    browser.absorb(&url, &response);
    let account: Value = browser.get(&w.url("/account")).await.json().await.unwrap();
    assert_eq!(
        account["email"], "x7y8z9@privaterelay.appleid.com",
        "private-relay emails are accepted"
    );
    assert_eq!(
        account["name"], "Ada Lovelace",
        "the name Apple sends once is kept"
    );
    assert_eq!(account["identities"][0]["provider"], "apple");
}

#[tokio::test]
async fn apple_state_cookie_allows_the_cross_site_post() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let response = browser
        .http
        .get(w.url("/auth/apple/login"))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("__Host-qnp_oauth=")
            && cookie.contains("SameSite=None")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    let response = browser
        .http
        .get(w.url("/auth/google/login"))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
}

#[tokio::test]
async fn a_callback_without_or_with_a_different_state_is_refused() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "google").await;
    let (callback, _) = browser
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    let code = query_param(&callback, "code").unwrap();

    let missing = browser
        .get(&w.url(&format!("/auth/google/callback?code={code}")))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let wrong = browser
        .get(&w.url(&format!("/auth/google/callback?code={code}&state=forged")))
        .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let stranger = Browser::new(); // right state, but no state cookie: a login started elsewhere
    assert_eq!(
        stranger.get(&callback).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert!(browser.cookie(&w.gateway.url, SESSION_COOKIE).is_none());
    // The code was never spent: the real browser can still finish.
    assert_eq!(browser.get(&callback).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_pkce_verifier_mismatch_is_refused_by_the_provider() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "google").await;
    let (callback, _) = browser
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    // Re-sign the state cookie with the same state and nonce but another verifier (the test knows the
    // session secret), so the gateway sends the provider a verifier that does not match the challenge.
    let mut claims = jwt_payload(&browser.cookie(&w.gateway.url, STATE_COOKIE).unwrap());
    claims["verifier"] = json!("x".repeat(64));
    browser.set_cookie(
        &w.gateway.url,
        STATE_COOKIE,
        &Sessions::new(SECRET.as_bytes()).sign(&claims),
    );
    let response = browser.get(&callback).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("code was refused")
    );
    assert!(browser.cookie(&w.gateway.url, SESSION_COOKIE).is_none());
}

#[tokio::test]
async fn a_replayed_authorization_code_is_refused() {
    let w = world(None, &[]).await;
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "google").await;
    let (callback, _) = browser
        .follow(authorize, &w.url("/auth/google/callback"))
        .await;
    let state_cookie = browser.cookie(&w.gateway.url, STATE_COOKIE).unwrap();
    assert_eq!(browser.get(&callback).await.status(), StatusCode::SEE_OTHER);
    // An attacker who captured the callback URL and the state cookie replays both.
    let attacker = Browser::new();
    attacker.set_cookie(&w.gateway.url, STATE_COOKIE, &state_cookie);
    let response = attacker.get(&callback).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(attacker.cookie(&w.gateway.url, SESSION_COOKIE).is_none());
}

/// Mints the ID token for a login attempt, given its nonce.
type TokenFor<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[tokio::test]
async fn id_tokens_failing_any_check_are_refused() {
    let keys = test_keys();
    let issuer = FakeIssuer::start(&keys).await;
    let mut w = world(Some(&issuer.issuer), &[]).await;
    w.keys = keys;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = |nonce: &str| {
        json!({"iss": issuer.issuer, "aud": "google-test-client", "sub": "google-sub-zed", "email": "zed@example.com",
               "email_verified": true, "iat": now, "exp": now + 600, "nonce": nonce})
    };
    let cases: Vec<(&str, TokenFor)> = vec![
        (
            "wrong issuer",
            Box::new(|n| {
                let mut c = good(n);
                c["iss"] = json!("https://evil.example");
                mint_id_token(&w.keys, "test-key", &c)
            }),
        ),
        (
            "wrong audience",
            Box::new(|n| {
                let mut c = good(n);
                c["aud"] = json!("someone-else");
                mint_id_token(&w.keys, "test-key", &c)
            }),
        ),
        (
            "several audiences without azp",
            Box::new(|n| {
                let mut c = good(n);
                c["aud"] = json!(["google-test-client", "other"]);
                mint_id_token(&w.keys, "test-key", &c)
            }),
        ),
        (
            "expired",
            Box::new(|n| {
                let mut c = good(n);
                c["exp"] = json!(now - 3600);
                c["iat"] = json!(now - 7200);
                mint_id_token(&w.keys, "test-key", &c)
            }),
        ),
        (
            "issued in the future",
            Box::new(|n| {
                let mut c = good(n);
                c["iat"] = json!(now + 3600);
                mint_id_token(&w.keys, "test-key", &c)
            }),
        ),
        (
            "bad signature",
            Box::new(|n| {
                let token = mint_id_token(&w.keys, "test-key", &good(n));
                let (rest, sig) = token.rsplit_once('.').unwrap();
                format!("{rest}.{}", sig.chars().rev().collect::<String>())
            }),
        ),
        (
            "unknown kid",
            Box::new(|n| mint_id_token(&w.keys, "rotated-away", &good(n))),
        ),
        (
            "wrong nonce",
            Box::new(|_| mint_id_token(&w.keys, "test-key", &good("not-this-attempt"))),
        ),
        (
            "alg none",
            Box::new(|n| {
                use base64::Engine;
                let b64 = |v: &Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
                };
                format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "kid": "test-key"})),
                    b64(&good(n))
                )
            }),
        ),
    ];
    for (case, token) in &cases {
        let browser = Browser::new();
        let authorize = begin_login(&w, &browser, "google").await;
        let state = query_param(&authorize, "state").unwrap();
        let nonce = query_param(&authorize, "nonce").unwrap();
        issuer.answer_with(token(&nonce));
        let response = browser
            .get(&w.url(&format!("/auth/google/callback?code=c&state={state}")))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        assert!(
            browser.cookie(&w.gateway.url, SESSION_COOKIE).is_none(),
            "{case}"
        );
    }
    // The same setup with a valid token signs in, so the refusals above were for the stated reasons.
    let browser = Browser::new();
    let authorize = begin_login(&w, &browser, "google").await;
    let state = query_param(&authorize, "state").unwrap();
    issuer.answer_with(mint_id_token(
        &w.keys,
        "test-key",
        &good(&query_param(&authorize, "nonce").unwrap()),
    ));
    let response = browser
        .get(&w.url(&format!("/auth/google/callback?code=c&state={state}")))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(browser.cookie(&w.gateway.url, SESSION_COOKIE).is_some());
}

#[tokio::test]
async fn missing_sign_in_configuration_answers_503_and_the_rest_works() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let gateway = TestGateway::start(&test_env(dir.path(), &upstream)).await;
    for provider in ["google", "apple"] {
        let response = reqwest::get(format!("{}/auth/{provider}/login", gateway.url))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = response.json().await.unwrap();
        let variable = if provider == "google" {
            "GOOGLE_CLIENT_ID"
        } else {
            "APPLE_PRIVATE_KEY"
        };
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(variable),
            "{body}"
        );
    }
    let key = gateway.create_key("solo@example.com", "free").await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(key)
        .json(
            &json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn everything_but_sign_in_needs_a_session() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let anonymous = Browser::new();
    for (method, path) in [
        ("GET", "/account"),
        ("GET", "/keys"),
        ("PATCH", "/account"),
        ("DELETE", "/account"),
        ("POST", "/keys"),
        ("DELETE", "/keys/abc"),
        ("POST", "/auth/logout"),
        ("POST", "/account/restrict"),
    ] {
        let response = w
            .send(&anonymous, method.parse().unwrap(), path, None)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_cross_origin_state_change_with_a_valid_cookie_is_refused() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let browser = w.signed_in("csrf@example.com").await;
    let url = w.url("/keys");
    let attempts = [
        Some(("origin", "https://evil.example")),
        Some(("sec-fetch-site", "cross-site")),
        None,
    ];
    for header in attempts {
        let mut request = browser
            .http
            .post(&url)
            .header(COOKIE, browser.cookie_header(&url))
            .json(&json!({"name": "x"}));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{header:?}");
    }
    let keys: Value = browser.get(&url).await.json().await.unwrap();
    assert_eq!(
        keys["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    // The same request from the dashboard's own origin works.
    w.create_key(&browser, "ok").await;
}

#[tokio::test]
async fn tampered_expired_and_logged_out_sessions_are_refused() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let browser = w.signed_in("sess@example.com").await;
    let token = browser.cookie(&w.gateway.url, SESSION_COOKIE).unwrap();
    assert_eq!(
        browser.get(&w.url("/account")).await.status(),
        StatusCode::OK
    );

    let tampered = Browser::new();
    let mut claims = jwt_payload(&token);
    claims["sub"] = json!("acct_someone_else");
    let forged = {
        use base64::Engine;
        let parts: Vec<&str> = token.split('.').collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    tampered.set_cookie(&w.gateway.url, SESSION_COOKIE, &forged);
    assert_eq!(
        tampered.get(&w.url("/account")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let expired = Browser::new();
    let account = w
        .gateway
        .stores
        .records
        .account_by_email("sess@example.com")
        .await
        .unwrap()
        .unwrap();
    let old = Sessions::new(SECRET.as_bytes()).issue(
        &account,
        time::OffsetDateTime::now_utc() - time::Duration::days(8),
    );
    expired.set_cookie(&w.gateway.url, SESSION_COOKIE, &old);
    let response = expired.get(&w.url("/account")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        expired.cookie(&w.gateway.url, SESSION_COOKIE).is_none(),
        "a dead cookie is cleared"
    );

    // Logout ends the session server-side: a copy of the cookie kept elsewhere stops working too.
    let copy = Browser::new();
    copy.set_cookie(&w.gateway.url, SESSION_COOKIE, &token);
    let response = w
        .send(&browser, reqwest::Method::POST, "/auth/logout", None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(browser.cookie(&w.gateway.url, SESSION_COOKIE).is_none());
    assert_eq!(
        copy.get(&w.url("/account")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_session_near_expiry_is_refreshed() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let account = w
        .gateway
        .stores
        .records
        .account_for_email("old@example.com", "free")
        .await
        .unwrap();
    let browser = Browser::new();
    let aging = Sessions::new(SECRET.as_bytes()).issue(
        &account,
        time::OffsetDateTime::now_utc() - time::Duration::days(6) - time::Duration::hours(12),
    );
    browser.set_cookie(&w.gateway.url, SESSION_COOKIE, &aging);
    assert_eq!(
        browser.get(&w.url("/account")).await.status(),
        StatusCode::OK
    );
    let renewed = browser.cookie(&w.gateway.url, SESSION_COOKIE).unwrap();
    assert_ne!(renewed, aging);
    let exp = jwt_payload(&renewed)["exp"].as_i64().unwrap();
    assert!(exp > time::OffsetDateTime::now_utc().unix_timestamp() + 6 * 24 * 3600);
}

#[tokio::test]
async fn seventy_concurrent_key_creations_make_fifty_keys() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let browser = w.signed_in("many@example.com").await;
    let responses = futures_util::future::join_all((0..70).map(|i| {
        w.send(
            &browser,
            reqwest::Method::POST,
            "/keys",
            Some(json!({"name": format!("k{i}")})),
        )
    }))
    .await;
    let created = responses
        .iter()
        .filter(|r| r.status() == StatusCode::CREATED)
        .count();
    let refused = responses
        .iter()
        .filter(|r| r.status() == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (50, 20));
    let keys: Value = browser.get(&w.url("/keys")).await.json().await.unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn key_names_cannot_carry_control_characters() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let browser = w.signed_in("ctl@example.com").await;
    for name in ["\u{1b}[31mred", "line\rover", "tab\there", "bell\u{7}"] {
        let response = w
            .send(
                &browser,
                reqwest::Method::POST,
                "/keys",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], "name");
    }
    let key = w.create_key(&browser, "fine name ✓").await;
    let response = w
        .send(
            &browser,
            reqwest::Method::PATCH,
            &format!("/keys/{}", key["id"].as_str().unwrap()),
            Some(json!({"name": "\u{1b}]0;pwned\u{7}"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn nobody_can_touch_another_users_keys() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let alice = w.signed_in("a@example.com").await;
    let bob = w.signed_in("b@example.com").await;
    let bobs = w.create_key(&bob, "bob's").await;
    let id = bobs["id"].as_str().unwrap();
    let response = w
        .send(
            &alice,
            reqwest::Method::DELETE,
            &format!("/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = w
        .send(
            &alice,
            reqwest::Method::PATCH,
            &format!("/keys/{id}"),
            Some(json!({"name": "mine now"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let alices: Value = alice.get(&w.url("/keys")).await.json().await.unwrap();
    assert!(alices["data"].as_array().unwrap().is_empty());
    let bobs_list: Value = bob.get(&w.url("/keys")).await.json().await.unwrap();
    assert_eq!(bobs_list["data"][0]["name"], "bob's");
    assert_eq!(
        w.chat(bobs["key"].as_str().unwrap()).await.status(),
        StatusCode::OK,
        "bob's key still works"
    );
    let response = w
        .send(&bob, reqwest::Method::DELETE, &format!("/keys/{id}"), None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_new_keys_plaintext_is_shown_once_and_never_stored() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let browser = w.signed_in("keys@example.com").await;
    let created = w.create_key(&browser, "laptop").await;
    let plaintext = created["key"].as_str().unwrap().to_owned();
    let secret = plaintext.rsplit('_').next().unwrap().to_owned();
    assert!(
        created["prefix"]
            .as_str()
            .is_some_and(|p| plaintext.starts_with(p))
    );
    let listed = browser.get(&w.url("/keys")).await.text().await.unwrap();
    assert!(listed.contains("laptop") && !listed.contains(&secret));
    // Scan every file of the embedded store for the secret (WAL included).
    w.gateway
        .stores
        .records
        .account_by_email("keys@example.com")
        .await
        .unwrap();
    for entry in std::fs::read_dir(&w.gateway.config.data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes())
        );
    }
    assert_eq!(w.chat(&plaintext).await.status(), StatusCode::OK);
    let bad = w
        .send(
            &browser,
            reqwest::Method::POST,
            "/keys",
            Some(json!({"name": 42})),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn revoking_a_key_in_the_dashboard_reaches_the_proxy_of_the_same_process_at_once() {
    // A minute-long key cache: only the in-process invalidation can make the revocation immediate.
    let w = world(Some("http://127.0.0.1:9"), &[("QNP_KEY_CACHE_SECS", "60")]).await;
    let browser = w.signed_in("revoke@example.com").await;
    let created = w.create_key(&browser, "ci").await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(w.chat(key).await.status(), StatusCode::OK);
    let response = w
        .send(
            &browser,
            reqwest::Method::DELETE,
            &format!("/keys/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(w.chat(key).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_restricted_account_is_refused_by_the_proxy_until_lifted() {
    let w = world(Some("http://127.0.0.1:9"), &[("QNP_KEY_CACHE_SECS", "60")]).await;
    let browser = w.signed_in("restrict@example.com").await;
    let key = w.create_key(&browser, "k").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(w.chat(&key).await.status(), StatusCode::OK);
    let response = w
        .send(&browser, reqwest::Method::POST, "/account/restrict", None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let refused = w.chat(&key).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restricted")
    );
    let response = w
        .send(&browser, reqwest::Method::DELETE, "/account/restrict", None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(w.chat(&key).await.status(), StatusCode::OK);
    // While restricted, only the refusal's metadata was logged.
    let rows = w.gateway.usage_rows("restrict@example.com", 3).await;
    let refusal = rows.iter().find(|r| r.status == 403).unwrap();
    assert_eq!(refusal.error_type.as_deref(), Some("permission_error"));
    assert_eq!(refusal.usage, qnp_shared::usage::TokenUsage::default());
}

#[tokio::test]
async fn profile_corrections_and_account_deletion() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let browser = w.signed_in("me@example.com").await;
    w.signed_in("taken@example.com").await;
    // The user's provider now vouches for a new address (it changed at Google and was refreshed at the
    // last sign-in): only such an address can become the account's email.
    let me = w
        .gateway
        .stores
        .records
        .account_by_email("me@example.com")
        .await
        .unwrap()
        .unwrap();
    for (subject, email) in [
        ("sub-me", "me2@example.com"),
        ("sub-taken", "taken@example.com"),
    ] {
        w.gateway
            .stores
            .records
            .link_identity(&qnp_shared::accounts::Identity {
                provider: "google".into(),
                subject: subject.into(),
                account_id: me.id.clone(),
                email: Some(email.into()),
                created_at: time::OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
    }
    let response = w
        .send(
            &browser,
            reqwest::Method::PATCH,
            "/account",
            Some(json!({"name": "Me Myself", "email": "ME2@example.com"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let account: Value = response.json().await.unwrap();
    assert_eq!(
        (account["name"].as_str(), account["email"].as_str()),
        (Some("Me Myself"), Some("me2@example.com"))
    );
    for (body, status) in [
        (json!({"email": "taken@example.com"}), StatusCode::CONFLICT),
        (
            json!({"email": "unvouched@example.com"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"email": "nope"}), StatusCode::BAD_REQUEST),
        (json!({"plan": "unlimited"}), StatusCode::BAD_REQUEST),
        (json!({"name": ""}), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            w.send(
                &browser,
                reqwest::Method::PATCH,
                "/account",
                Some(body.clone())
            )
            .await
            .status(),
            status,
            "{body}"
        );
    }

    let key = w.create_key(&browser, "k").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let account_id = w
        .gateway
        .stores
        .records
        .account_by_email("me2@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let copy = Browser::new();
    copy.set_cookie(
        &w.gateway.url,
        SESSION_COOKIE,
        &browser.cookie(&w.gateway.url, SESSION_COOKIE).unwrap(),
    );
    let response = w
        .send(&browser, reqwest::Method::DELETE, "/account", None)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert!(body["erased_by"].is_string());
    assert_eq!(
        copy.get(&w.url("/account")).await.status(),
        StatusCode::UNAUTHORIZED,
        "sessions end at once"
    );
    let records = &w.gateway.stores.records;
    let stored = records.account(&account_id).await.unwrap().unwrap();
    assert!(stored.deletion_requested_at.is_some());
    // The address is dropped at once, so it is free for a new account.
    assert_eq!(
        stored.email,
        qnp_shared::accounts::deleted_email(&account_id)
    );
    assert!(
        records
            .account_by_email("me2@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let keys = w
        .gateway
        .stores
        .records
        .keys_for_account(&stored.id)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k.revoked_at.is_some()),
        "keys are revoked at once"
    );
    assert_eq!(w.chat(&key).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_session_probe_says_who_is_signed_in_and_which_providers_exist() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let anonymous = reqwest::get(w.url("/auth/session")).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::OK);
    assert_eq!(anonymous.headers()["cache-control"], "no-store");
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["signed_in"], false);
    assert_eq!(body["providers"]["google"], true);
    assert_eq!(body["providers"]["apple"], true);
    let browser = w.signed_in("probe@example.com").await;
    let url = w.url("/auth/session");
    let body: Value = browser
        .http
        .get(&url)
        .header(COOKIE, browser.cookie_header(&url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["signed_in"], true);
    // A forged cookie is simply not signed in.
    let body: Value = reqwest::Client::new()
        .get(&url)
        .header(COOKIE, format!("{SESSION_COOKIE}=not.a.jwt"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["signed_in"], false);
}

#[tokio::test]
async fn a_browser_whose_sign_in_fails_lands_on_the_dashboard_with_the_reason() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The user declined at the provider: a browser is sent back to the page, an API client gets JSON.
    let callback = w.url("/auth/google/callback?error=access_denied&state=x");
    let page = no_redirects
        .get(&callback)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    let location = page.headers()["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("{}/?signin_error=cancelled", w.gateway.url)
    );
    let api = no_redirects.get(&callback).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::BAD_REQUEST);
    // A callback without the sign-in's state cookie (expired, or another browser).
    let stale = no_redirects
        .get(w.url("/auth/google/callback?code=c&state=s"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.headers()["location"].to_str().unwrap(),
        format!("{}/?signin_error=expired", w.gateway.url)
    );
}

#[tokio::test]
async fn a_key_can_be_renamed_by_its_owner() {
    let w = world(Some("http://127.0.0.1:9"), &[]).await;
    let me = w.signed_in("renamer@example.com").await;
    let key = w.create_key(&me, "laptop").await;
    let path = format!("/keys/{}", key["id"].as_str().unwrap());
    let renamed = w
        .send(
            &me,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"name": "  ci runner "})),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let body: Value = renamed.json().await.unwrap();
    assert_eq!(body["name"], "ci runner");
    assert!(
        body.get("key").is_none(),
        "the plaintext is never shown again"
    );
    let listed: Value = me.get(&w.url("/keys")).await.json().await.unwrap();
    assert_eq!(listed["data"][0]["name"], "ci runner");
    for (request, status) in [
        (json!({"name": "x".repeat(101)}), StatusCode::BAD_REQUEST),
        (json!({"name": 7}), StatusCode::BAD_REQUEST),
        (json!({"label": "x"}), StatusCode::BAD_REQUEST),
        (json!({"name": null}), StatusCode::OK),
    ] {
        let response = w
            .send(&me, reqwest::Method::PATCH, &path, Some(request.clone()))
            .await;
        assert_eq!(response.status(), status, "{request}");
    }
    let listed: Value = me.get(&w.url("/keys")).await.json().await.unwrap();
    assert!(listed["data"][0]["name"].is_null(), "null clears the name");
    // The key keeps working throughout.
    assert_eq!(
        w.chat(key["key"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}
