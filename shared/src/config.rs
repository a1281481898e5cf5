//! Typed configuration read once at cold start from the environment, optionally overlaid with the JSON
//! object in the Secrets Manager secret named by `QNP_SECRETS_ID`. A missing or malformed value is an
//! error naming the variable, so a bad deploy fails at start rather than on the first request.
//!
//! Configuration is read from an explicit map, not from `std::env` directly, so tests can build many
//! configurations side by side in one process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} is malformed: {reason}")]
    Malformed { variable: String, reason: String },
    #[error("{variable} must be set: {reason}")]
    Missing { variable: String, reason: String },
    #[error("could not read the secret {secret_id} named by QNP_SECRETS_ID: {reason}")]
    Secret { secret_id: String, reason: String },
}

/// The variables configuration is read from (the process environment plus the secret's keys).
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars().collect())
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// A set, non-empty value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Malformed {
                variable: key.into(),
                reason: format!("'{raw}': {e}"),
            }),
        }
    }

    /// A duration in (possibly fractional) seconds, at most `max`: negative, infinite or absurd values are
    /// configuration errors, never a panic in the conversion.
    fn secs(&self, key: &str, default: f64, max: f64) -> Result<Duration, ConfigError> {
        let value: f64 = self.parse(key, default)?;
        if !(0.0..=max).contains(&value) {
            return Err(ConfigError::Malformed {
                variable: key.into(),
                reason: format!("'{value}' must be a number of seconds from 0 to {max}"),
            });
        }
        Ok(Duration::from_secs_f64(value))
    }

    fn url(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        let value = self.get(key).unwrap_or(default);
        let ok = (value.starts_with("http://") || value.starts_with("https://"))
            && value.len() > "https://".len();
        if !ok {
            return Err(ConfigError::Malformed {
                variable: key.into(),
                reason: format!("'{value}' is not an http(s) URL"),
            });
        }
        Ok(value.trim_end_matches('/').to_string())
    }

    /// Overlays the keys of a Secrets Manager JSON object. Variables already set in the environment win,
    /// so an operator can override a single secret value without editing the secret.
    pub fn overlay_secret(&mut self, secret_id: &str, json: &str) -> Result<(), ConfigError> {
        let values: HashMap<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| ConfigError::Secret {
                secret_id: secret_id.into(),
                reason: format!("its value is not a JSON object: {e}"),
            })?;
        for (key, value) in values {
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            if self.get(&key).is_none() {
                self.0.insert(key, value);
            }
        }
        Ok(())
    }
}

/// A credential or signing key from the configuration. It reads as the `str` it holds, but never
/// prints: `Debug` (and so every `{:?}` of a config, in logs or panics) shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// One upstream provider's endpoint and credential.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// The variable an operator sets to supply `api_key`; named in the 503 a client sees when it is unset.
    pub key_variable: &'static str,
}

/// Sign in with Google (OpenID Connect, authorization code with PKCE).
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub issuer: String,
}

/// Sign in with Apple: its client secret is an ES256 JWT the gateway signs with the team's key.
#[derive(Debug, Clone)]
pub struct AppleConfig {
    pub client_id: String,
    pub team_id: String,
    pub key_id: String,
    /// PKCS#8 PEM of the Sign in with Apple key.
    pub private_key: Secret,
    pub issuer: String,
}

/// Stripe: the API key for Checkout, the Billing Portal and customer deletion, and the signing secrets of
/// the webhook endpoint. Each is optional: without them the free plan works and billing answers 503.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Option<Secret>,
    /// Every secret a delivery may be signed with: during a rotation Stripe signs with both the old and the
    /// new one, so `STRIPE_WEBHOOK_SECRET` takes a comma-separated list.
    pub webhook_secrets: Vec<Secret>,
    pub api_base: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// A secret: its user info holds the database password.
    pub mongodb_uri: Option<Secret>,
    pub mongodb_db: String,
    pub dynamodb_table: Option<String>,
    pub data_dir: PathBuf,
    pub session_secret: Option<Secret>,
    pub openai: UpstreamConfig,
    pub anthropic: UpstreamConfig,
    pub gemini: UpstreamConfig,
    pub public_url: Option<String>,
    pub models_file: Option<PathBuf>,
    pub plans_file: Option<PathBuf>,
    /// The plan table inline (`QNP_PLANS`, JSON), for deployments where a file is awkward.
    pub plans_json: Option<String>,
    /// Development only: serve the dashboard's files from this directory instead of the binary.
    pub dashboard_dir: Option<PathBuf>,
    pub stripe: StripeConfig,
    /// How long a subscription whose payment failed keeps its plan before the account falls back to its
    /// own plan.
    pub billing_grace: time::Duration,
    /// Largest request body the proxy accepts, checked before any upstream call.
    pub max_body_bytes: usize,
    /// How long the upstream may take to send response headers.
    pub upstream_first_byte_timeout: Duration,
    /// Longest silence between two chunks of an upstream stream before it is treated as dropped.
    pub upstream_idle_timeout: Duration,
    /// The longest one upstream stream may run, however steadily it drips.
    pub upstream_stream_max: Duration,
    /// How long a verified key is trusted before its record is read again (revocation delay).
    pub key_cache_ttl: Duration,
    /// bcrypt work factor for new API keys.
    pub bcrypt_cost: u32,
    /// How long a rotated key's old secret keeps working unless the rotation asks otherwise.
    pub key_rotation_grace: time::Duration,
    /// Total time retries and fallbacks may add before the first byte reaches the client.
    pub retry_budget: Duration,
    /// How long a stream whose client went away is still read, to record the provider's usage.
    pub disconnect_drain: Duration,
    /// `None` when its variables are unset: that provider's login answers 503.
    pub google: Option<GoogleConfig>,
    pub apple: Option<AppleConfig>,
    /// How `qnp serve` holds its connections.
    pub server: ServerLimits,
    /// How long an export's client may take no bytes before the export is abandoned.
    pub export_stall: Duration,
    /// Days usage rows are kept, 1 to 30 (the privacy policy promises at most 30).
    pub usage_retention_days: i64,
    /// The privacy page: who to write to, when the policy last changed (otherwise tracked from the
    /// rendered text), and an operator's own policy file (Markdown or HTML) instead of the generated one.
    pub privacy_contact: Option<String>,
    pub privacy_updated: Option<time::Date>,
    pub privacy_file: Option<PathBuf>,
    /// Whether the edge Worker signs client addresses (`QNP_EDGE_SECRET` is set).
    pub edge_configured: bool,
    /// Lambda only: the function streams its responses (a function URL with InvokeMode RESPONSE_STREAM,
    /// `QNP_RESPONSE_STREAMING=true`); behind the HTTP API the runtime buffers them.
    pub response_streaming: bool,
}

/// Limits of `qnp serve`'s listener, so that clients that send slowly or never finish cannot hold every
/// connection (on Lambda, API Gateway and the function URL enforce their own).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time for a client to send a request's headers, also the longest a kept-alive connection may sit
    /// idle between requests.
    pub header_timeout: Duration,
    /// Time for a client to send a whole request body.
    pub body_timeout: Duration,
    /// Connections served at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once; past it, new ones are closed at once.
    pub max_connections_per_ip: usize,
    /// On SIGTERM/SIGINT, how long requests and streams in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Reads the configuration from the process environment and, when `QNP_SECRETS_ID` is set, from that
    /// Secrets Manager secret.
    pub async fn load() -> Result<Config, ConfigError> {
        let mut env = Env::from_process();
        if let Some(secret_id) = env.get("QNP_SECRETS_ID").map(str::to_owned) {
            let json = crate::secrets::fetch_secret_string(&secret_id)
                .await
                .map_err(|reason| ConfigError::Secret {
                    secret_id: secret_id.clone(),
                    reason,
                })?;
            env.overlay_secret(&secret_id, &json)?;
        }
        Config::from_env(&env)
    }

    /// Lambda has no durable local disk, so a function must run on MongoDB and DynamoDB, never the
    /// embedded store; this makes a forgotten variable a cold-start error rather than lost data.
    pub fn require_cloud_stores(&self) -> Result<(), ConfigError> {
        let reason =
            "a Lambda function keeps nothing on local disk; set it (QNP_MONGODB_URI in the secret)";
        if self.mongodb_uri.is_none() {
            return Err(ConfigError::Missing {
                variable: "QNP_MONGODB_URI".into(),
                reason: reason.into(),
            });
        }
        if self.dynamodb_table.is_none() {
            return Err(ConfigError::Missing {
                variable: "QNP_DYNAMODB_TABLE".into(),
                reason: reason.into(),
            });
        }
        Ok(())
    }

    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let upstream = |base_var: &str, default: &str, key_var: &'static str| {
            Ok::<_, ConfigError>(UpstreamConfig {
                base_url: env.url(base_var, default)?,
                api_key: env.get(key_var).map(Secret::new),
                key_variable: key_var,
            })
        };
        let key_cache_secs: u64 = env.parse("QNP_KEY_CACHE_SECS", 60)?;
        if key_cache_secs > 60 {
            return Err(ConfigError::Malformed {
                variable: "QNP_KEY_CACHE_SECS".into(),
                reason: "must be at most 60 so revocation takes effect within a minute".into(),
            });
        }
        if let Some(uri) = env.get("QNP_MONGODB_URI")
            && !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"))
        {
            return Err(ConfigError::Malformed {
                variable: "QNP_MONGODB_URI".into(),
                reason: "must start with mongodb:// or mongodb+srv://".into(),
            });
        }
        let public_url = match env.get("QNP_PUBLIC_URL") {
            Some(_) => Some(env.url("QNP_PUBLIC_URL", "")?),
            None => None,
        };
        Ok(Config {
            mongodb_uri: env.get("QNP_MONGODB_URI").map(Secret::new),
            mongodb_db: env.get("QNP_MONGODB_DB").unwrap_or("qnp").to_owned(),
            dynamodb_table: env.get("QNP_DYNAMODB_TABLE").map(str::to_owned),
            data_dir: PathBuf::from(env.get("QNP_DATA_DIR").unwrap_or("./.qnp")),
            session_secret: env.get("QNP_SESSION_SECRET").map(Secret::new),
            openai: upstream(
                "QNP_OPENAI_BASE_URL",
                "https://api.openai.com/v1",
                "OPENAI_API_KEY",
            )?,
            anthropic: upstream(
                "QNP_ANTHROPIC_BASE_URL",
                "https://api.anthropic.com",
                "ANTHROPIC_API_KEY",
            )?,
            gemini: upstream(
                "QNP_GEMINI_BASE_URL",
                "https://generativelanguage.googleapis.com",
                "GEMINI_API_KEY",
            )?,
            public_url,
            models_file: env.get("QNP_MODELS_FILE").map(PathBuf::from),
            plans_file: env.get("QNP_PLANS_FILE").map(PathBuf::from),
            plans_json: env.get("QNP_PLANS").map(str::to_owned),
            dashboard_dir: env.get("QNP_DASHBOARD_DIR").map(PathBuf::from),
            stripe: StripeConfig {
                secret_key: env.get("STRIPE_SECRET_KEY").map(Secret::new),
                webhook_secrets: env
                    .get("STRIPE_WEBHOOK_SECRET")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(Secret::new)
                            .collect()
                    })
                    .unwrap_or_default(),
                api_base: env.url("QNP_STRIPE_API_BASE", "https://api.stripe.com")?,
            },
            billing_grace: billing_grace(env)?,
            max_body_bytes: env.parse("QNP_MAX_BODY_BYTES", 8 * 1024 * 1024)?,
            upstream_first_byte_timeout: env.secs("QNP_UPSTREAM_TIMEOUT_SECS", 120.0, DAY)?,
            upstream_idle_timeout: env.secs("QNP_UPSTREAM_IDLE_TIMEOUT_SECS", 120.0, DAY)?,
            upstream_stream_max: env.secs("QNP_UPSTREAM_STREAM_MAX_SECS", 3600.0, DAY)?,
            key_cache_ttl: Duration::from_secs(key_cache_secs),
            bcrypt_cost: bcrypt_cost(env)?,
            key_rotation_grace: key_rotation_grace(env)?,
            retry_budget: env.secs("QNP_RETRY_BUDGET_SECS", 15.0, DAY)?,
            disconnect_drain: env.secs("QNP_DISCONNECT_DRAIN_SECS", 60.0, DAY)?,
            google: google(env)?,
            apple: apple(env)?,
            server: ServerLimits {
                header_timeout: env.secs("QNP_HEADER_TIMEOUT_SECS", 10.0, DAY)?,
                body_timeout: env.secs("QNP_REQUEST_BODY_TIMEOUT_SECS", 60.0, DAY)?,
                max_connections: positive(env, "QNP_MAX_CONNECTIONS", 4096)?,
                max_connections_per_ip: positive(env, "QNP_MAX_CONNECTIONS_PER_IP", 256)?,
                shutdown_grace: env.secs("QNP_SHUTDOWN_GRACE_SECS", 30.0, DAY)?,
            },
            export_stall: env.secs("QNP_EXPORT_STALL_SECS", 30.0, DAY)?,
            usage_retention_days: usage_retention_days(env)?,
            privacy_contact: env.get("QNP_PRIVACY_CONTACT").map(str::to_owned),
            privacy_updated: privacy_updated(env)?,
            privacy_file: env.get("QNP_PRIVACY_FILE").map(PathBuf::from),
            edge_configured: env.get("QNP_EDGE_SECRET").is_some(),
            response_streaming: env.parse("QNP_RESPONSE_STREAMING", false)?,
        })
    }
}

/// The longest any configured duration may be.
const DAY: f64 = 86_400.0;

fn positive(env: &Env, key: &str, default: usize) -> Result<usize, ConfigError> {
    let value: usize = env.parse(key, default)?;
    if value == 0 {
        return Err(ConfigError::Malformed {
            variable: key.into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// All of a group's variables, or none of them (`Ok(None)`); a partial group names what is missing.
fn group<'a>(env: &'a Env, names: &[&str]) -> Result<Option<Vec<&'a str>>, ConfigError> {
    let values: Vec<Option<&str>> = names.iter().map(|n| env.get(n)).collect();
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(missing) = names.iter().zip(&values).find(|(_, v)| v.is_none()) {
        return Err(ConfigError::Missing {
            variable: (*missing.0).into(),
            reason: format!("{} are set, so it is needed too", names.join(", ")),
        });
    }
    Ok(Some(values.into_iter().flatten().collect()))
}

fn google(env: &Env) -> Result<Option<GoogleConfig>, ConfigError> {
    let Some(v) = group(env, &["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"])? else {
        return Ok(None);
    };
    Ok(Some(GoogleConfig {
        client_id: v[0].into(),
        client_secret: Secret::new(v[1]),
        issuer: env.url("QNP_GOOGLE_ISSUER", "https://accounts.google.com")?,
    }))
}

fn apple(env: &Env) -> Result<Option<AppleConfig>, ConfigError> {
    let names = [
        "APPLE_CLIENT_ID",
        "APPLE_TEAM_ID",
        "APPLE_KEY_ID",
        "APPLE_PRIVATE_KEY",
    ];
    let Some(v) = group(env, &names)? else {
        return Ok(None);
    };
    // Secrets often carry a PEM on one line with literal "\n"s.
    let private_key = v[3].replace("\\n", "\n");
    if jsonwebtoken::EncodingKey::from_ec_pem(private_key.as_bytes()).is_err() {
        return Err(ConfigError::Malformed {
            variable: "APPLE_PRIVATE_KEY".into(),
            reason: "not a PEM-encoded P-256 (ES256) private key".into(),
        });
    }
    Ok(Some(AppleConfig {
        client_id: v[0].into(),
        team_id: v[1].into(),
        key_id: v[2].into(),
        private_key: Secret::new(private_key),
        issuer: env.url("QNP_APPLE_ISSUER", "https://appleid.apple.com")?,
    }))
}

fn billing_grace(env: &Env) -> Result<time::Duration, ConfigError> {
    let days: f64 = env.parse("QNP_BILLING_GRACE_DAYS", 7.0)?;
    if !(0.0..=365.0).contains(&days) {
        return Err(ConfigError::Malformed {
            variable: "QNP_BILLING_GRACE_DAYS".into(),
            reason: format!("{days} is outside 0..=365 days"),
        });
    }
    Ok(time::Duration::seconds_f64(days * 86_400.0))
}

/// The longest grace period a key rotation may give the old secret.
pub const MAX_ROTATION_GRACE: time::Duration = time::Duration::days(30);

fn key_rotation_grace(env: &Env) -> Result<time::Duration, ConfigError> {
    let hours: f64 = env.parse("QNP_KEY_ROTATION_GRACE_HOURS", 24.0)?;
    let max = MAX_ROTATION_GRACE.whole_hours() as f64;
    if !(0.0..=max).contains(&hours) {
        return Err(ConfigError::Malformed {
            variable: "QNP_KEY_ROTATION_GRACE_HOURS".into(),
            reason: format!("{hours} is outside 0..={max} hours"),
        });
    }
    Ok(time::Duration::seconds_f64(hours * 3600.0))
}

fn usage_retention_days(env: &Env) -> Result<i64, ConfigError> {
    let max = crate::retention_periods::USAGE_RETENTION_DAYS;
    let days: i64 = env.parse("QNP_USAGE_RETENTION_DAYS", max)?;
    if !(1..=max).contains(&days) {
        return Err(ConfigError::Malformed {
            variable: "QNP_USAGE_RETENTION_DAYS".into(),
            reason: format!("{days} is outside 1..={max} days (the privacy policy promises {max})"),
        });
    }
    Ok(days)
}

fn privacy_updated(env: &Env) -> Result<Option<time::Date>, ConfigError> {
    let Some(raw) = env.get("QNP_PRIVACY_UPDATED") else {
        return Ok(None);
    };
    time::Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map(Some)
    .map_err(|_| ConfigError::Malformed {
        variable: "QNP_PRIVACY_UPDATED".into(),
        reason: format!("'{raw}' is not a date (YYYY-MM-DD)"),
    })
}

fn bcrypt_cost(env: &Env) -> Result<u32, ConfigError> {
    let cost: u32 = env.parse("QNP_BCRYPT_COST", 12)?;
    if !(4..=31).contains(&cost) {
        return Err(ConfigError::Malformed {
            variable: "QNP_BCRYPT_COST".into(),
            reason: format!("{cost} is outside bcrypt's range 4..=31"),
        });
    }
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_embedded_store_and_public_upstreams() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert!(config.mongodb_uri.is_none());
        assert!(config.dynamodb_table.is_none());
        assert_eq!(config.data_dir, PathBuf::from("./.qnp"));
        assert_eq!(config.openai.base_url, "https://api.openai.com/v1");
        assert_eq!(config.mongodb_db, "qnp");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let config = Config::from_env(&Env::from_pairs([
            ("QNP_MONGODB_URI", "mongodb://user:hunter2-db@db.example/"),
            ("QNP_SESSION_SECRET", "hunter2-session"),
            ("OPENAI_API_KEY", "sk-hunter2-openai"),
            ("ANTHROPIC_API_KEY", "sk-ant-hunter2"),
            ("GEMINI_API_KEY", "hunter2-gemini"),
            ("STRIPE_SECRET_KEY", "sk_live_hunter2"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_hunter2a,whsec_hunter2b"),
            ("GOOGLE_CLIENT_ID", "client.apps"),
            ("GOOGLE_CLIENT_SECRET", "GOCSPX-hunter2"),
        ]))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("client.apps") && shown.contains("<secret>"));
        assert_eq!(config.openai.api_key.as_deref(), Some("sk-hunter2-openai"));
    }

    #[test]
    fn response_streaming_is_read_with_the_rest() {
        let on = Env::from_pairs([("QNP_RESPONSE_STREAMING", "true")]);
        assert!(Config::from_env(&on).unwrap().response_streaming);
        assert!(
            !Config::from_env(&Env::default())
                .unwrap()
                .response_streaming
        );
        let bad = Env::from_pairs([("QNP_RESPONSE_STREAMING", "yes")]);
        let err = Config::from_env(&bad).unwrap_err();
        assert!(err.to_string().contains("QNP_RESPONSE_STREAMING"), "{err}");
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (key, value) in [
            ("QNP_MAX_BODY_BYTES", "lots"),
            ("QNP_OPENAI_BASE_URL", "api.openai.com"),
            ("QNP_MONGODB_URI", "postgres://x"),
            ("QNP_KEY_CACHE_SECS", "600"),
            ("QNP_UPSTREAM_TIMEOUT_SECS", "soon"),
            ("QNP_BILLING_GRACE_DAYS", "-1"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn sign_in_groups_are_all_or_nothing() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert!(config.google.is_none() && config.apple.is_none());
        let err = Config::from_env(&Env::from_pairs([("GOOGLE_CLIENT_ID", "x")])).unwrap_err();
        assert!(err.to_string().contains("GOOGLE_CLIENT_SECRET"), "{err}");
        let err = Config::from_env(&Env::from_pairs([
            ("APPLE_CLIENT_ID", "a"),
            ("APPLE_TEAM_ID", "t"),
            ("APPLE_KEY_ID", "k"),
            ("APPLE_PRIVATE_KEY", "not a key"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("APPLE_PRIVATE_KEY"), "{err}");
    }

    #[test]
    fn secret_fills_unset_variables_but_environment_wins() {
        let mut env = Env::from_pairs([("OPENAI_API_KEY", "from-env")]);
        env.overlay_secret(
            "s",
            r#"{"OPENAI_API_KEY":"from-secret","ANTHROPIC_API_KEY":"a","QNP_MAX_BODY_BYTES":1024}"#,
        )
        .unwrap();
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.openai.api_key.as_deref(), Some("from-env"));
        assert_eq!(config.anthropic.api_key.as_deref(), Some("a"));
        assert_eq!(config.max_body_bytes, 1024);
        let err = env.overlay_secret("s", "[1,2]").unwrap_err();
        assert!(err.to_string().contains("QNP_SECRETS_ID"));
    }
}
