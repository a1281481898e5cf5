//! The dashboard's files as the gateway serves them: compiled in, each with the strict CSP and the
//! security headers, nothing outside the asset tree reachable. The page itself is exercised in a real
//! browser by tests/browser/.

use qnp_tests::{MockOpenAi, TestGateway, test_env};

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let gateway = TestGateway::start(&test_env(dir.path(), &upstream)).await;
    let http = reqwest::Client::new();

    let page = http.get(format!("{}/", gateway.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, qnp_dashboard::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("http"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        headers.get("set-cookie").is_none(),
        "the page sets no cookie"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline code"
    );

    // Every script and stylesheet the page names is served from our origin with its type.
    let mut referenced = 0;
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let path = part.split('"').next().unwrap();
            if !path.starts_with("/assets/") {
                assert!(!path.contains("://"), "no third-party reference: {path}");
                continue;
            }
            let asset = http
                .get(format!("{}{path}", gateway.url))
                .send()
                .await
                .unwrap();
            assert_eq!(asset.status(), 200, "{path}");
            let kind = asset.headers()["content-type"].to_str().unwrap().to_owned();
            let expected = match path.rsplit('.').next().unwrap() {
                "js" => "text/javascript",
                "css" => "text/css",
                "svg" => "image/svg+xml",
                other => panic!("{path}: unexpected asset type {other}"),
            };
            assert!(kind.starts_with(expected), "{path}: {kind}");
            referenced += 1;
        }
    }
    assert!(referenced >= 2, "the page loads its script and stylesheet");

    for bad in [
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/nope.js",
        "/assets/",
    ] {
        let response = http
            .get(format!("{}{bad}", gateway.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{bad}");
    }
    gateway.stop().await;
}

async fn privacy_of(
    env: qnp_shared::config::Env,
) -> (String, serde_json::Value, reqwest::header::HeaderMap) {
    let gateway = TestGateway::start(&env).await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/privacy", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    let facts: serde_json::Value = http
        .get(format!("{}/privacy.json", gateway.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    gateway.stop().await;
    (html, facts, headers)
}

#[tokio::test]
async fn the_privacy_page_states_what_the_running_gateway_does() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mut env = test_env(dir.path(), &upstream);
    env.set("QNP_PRIVACY_CONTACT", "privacy@example.com");
    let (html, facts, headers) = privacy_of(env.clone()).await;
    assert_eq!(
        headers["content-security-policy"],
        qnp_dashboard::CONTENT_SECURITY_POLICY
    );
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers.get("set-cookie").is_none());
    assert!(!html.contains("<script"), "the page runs no code");
    for column in qnp_shared::usage::CSV_HEADER {
        assert!(
            html.contains(column),
            "the page names the CSV column {column}"
        );
    }
    for cookie in qnp_shared::privacy::COOKIES {
        assert!(html.contains(cookie.name), "{}", cookie.name);
    }
    assert!(html.contains("deleted once older than 30 days"));
    assert!(html.contains("privacy@example.com"));
    assert!(html.contains("never stored or logged"));
    assert!(html.contains(&format!("Version {}", facts["version"].as_str().unwrap())));
    // Only the provider with a credential is named, with the host it is reached at.
    assert!(
        html.contains("OpenAI-compatible provider at 127.0.0.1"),
        "{html}"
    );
    let processors = |facts: &serde_json::Value| -> Vec<String> {
        facts["processors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!html.contains("Anthropic at"));
    assert!(
        !processors(&facts).contains(&"Stripe".to_owned()),
        "Stripe is not configured"
    );
    assert_eq!(facts["retention"]["usage_days"], 30);
    let first_version = facts["version"].as_str().unwrap().to_owned();
    let first_date = facts["updated"].as_str().unwrap().to_owned();

    // Restarted unchanged: the same version and date. Configured otherwise: the page follows.
    let (_, again, _) = privacy_of(env.clone()).await;
    assert_eq!(
        (
            again["version"].as_str().unwrap(),
            again["updated"].as_str().unwrap()
        ),
        (first_version.as_str(), first_date.as_str())
    );
    env.set("QNP_USAGE_RETENTION_DAYS", "14");
    env.set("STRIPE_SECRET_KEY", "sk_test_x");
    env.set("QNP_PRIVACY_UPDATED", "2026-11-30");
    let (html, facts, _) = privacy_of(env.clone()).await;
    assert!(html.contains("deleted once older than 14 days"), "{html}");
    assert!(processors(&facts).contains(&"Stripe".to_owned()));
    assert!(html.contains("<strong>Stripe</strong>"));
    assert_ne!(facts["version"].as_str().unwrap(), first_version);
    assert_eq!(facts["updated"], "2026-11-30");
    assert!(html.contains("last updated 2026-11-30"));
}

#[tokio::test]
async fn an_operator_can_serve_their_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mut env = test_env(dir.path(), &upstream);
    let markdown = dir.path().join("policy.md");
    std::fs::write(
        &markdown,
        "# Our policy\n\nWe keep *nothing* we do not need.\n",
    )
    .unwrap();
    env.set("QNP_PRIVACY_FILE", markdown.display().to_string());
    let (html, facts, headers) = privacy_of(env.clone()).await;
    assert!(
        html.contains("<h1>Our policy</h1>") && html.contains("<em>nothing</em>"),
        "{html}"
    );
    assert!(
        html.contains("/assets/style.css"),
        "in the page's own style"
    );
    assert_eq!(
        headers["content-security-policy"],
        qnp_dashboard::CONTENT_SECURITY_POLICY
    );
    assert!(
        facts["cookies"].is_array(),
        "the facts stay available as data"
    );
    let page = dir.path().join("policy.html");
    std::fs::write(&page, "<!doctype html><title>P</title><p>Ours</p>").unwrap();
    env.set("QNP_PRIVACY_FILE", page.display().to_string());
    let (html, _, _) = privacy_of(env).await;
    assert_eq!(html, "<!doctype html><title>P</title><p>Ours</p>");
}
