//! Reads the gateway's secret values from AWS Secrets Manager at cold start.

/// The endpoint override docs/contracts.md documents. The SDK itself derives its per-service variable from the
/// service id ("Secrets Manager"), i.e. `AWS_ENDPOINT_URL_SECRETS_MANAGER`; both are honoured.
const ENDPOINT_OVERRIDE: &str = "AWS_ENDPOINT_URL_SECRETSMANAGER";

/// Fetches the secret's string value, from the endpoint override when one is set (how tests reach a
/// local Secrets Manager). The error is why it could not be read (configuration names the variable).
pub async fn fetch_secret_string(secret_id: &str) -> Result<String, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = std::env::var(ENDPOINT_OVERRIDE)
        .ok()
        .filter(|v| !v.is_empty())
    {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let client = aws_sdk_secretsmanager::Client::new(&shared);
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
    output
        .secret_string()
        .map(str::to_owned)
        .ok_or_else(|| "it has no string value".to_owned())
}
