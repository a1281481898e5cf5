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
