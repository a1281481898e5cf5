//! Configuration from AWS Secrets Manager (on moto): `QNP_SECRETS_ID` names a JSON secret whose keys
//! supply the gateway's secret values at cold start; a missing secret is a clear start-up error.
//! One test in this binary: it sets process environment variables, which only a single-threaded start may.

use qnp_shared::config::Config;

#[tokio::test]
async fn config_loads_secret_values_from_secrets_manager() {
    let endpoint = qnp_tests::required_env("QNP_TEST_SECRETSMANAGER_ENDPOINT");
    // SAFETY: this binary runs this single test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::remove_var("OPENAI_API_KEY");
        std::env::remove_var("QNP_SESSION_SECRET");
    }
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&shared);
    let name = qnp_tests::unique("qnp/gateway");
    client
        .create_secret()
        .name(&name)
        .secret_string(r#"{"OPENAI_API_KEY":"sk-from-secret","QNP_SESSION_SECRET":"s3ssion","QNP_MONGODB_DB":"prod"}"#)
        .send()
        .await
        .expect("create the secret on moto");

    unsafe { std::env::set_var("QNP_SECRETS_ID", &name) };
    let config = Config::load().await.expect("configuration from the secret");
    assert_eq!(config.openai.api_key.as_deref(), Some("sk-from-secret"));
    assert_eq!(config.session_secret.as_deref(), Some("s3ssion"));
    assert_eq!(config.mongodb_db, "prod");

    unsafe { std::env::set_var("QNP_SECRETS_ID", "qnp/does-not-exist") };
    let err = Config::load().await.unwrap_err().to_string();
    assert!(
        err.contains("QNP_SECRETS_ID") && err.contains("qnp/does-not-exist"),
        "{err}"
    );
}
