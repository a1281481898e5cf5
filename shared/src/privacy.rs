//! The privacy policy's facts, taken from the code and configuration the gateway runs with, so the page
//! at `/privacy` (and `/privacy.json`, for audits) cannot drift from what QNP really does: the fields it
//! stores come from the same definitions the stores and exports use, the retention from where the
//! cleaner reads it, the cookies from the constants that set them, the processors from which stores,
//! providers and services are configured.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::retention_periods::{ERASURE_DAYS, STRIPE_EVENT_DAYS};
use crate::sessions::{OAUTH_STATE_COOKIE, OAUTH_STATE_TTL_SECS, SESSION_COOKIE, SESSION_TTL_SECS};
use crate::usage::CSV_HEADER;

/// A stored field and why it is kept.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Field {
    pub name: &'static str,
    pub purpose: &'static str,
}

const fn field(name: &'static str, purpose: &'static str) -> Field {
    Field { name, purpose }
}

/// Every field of a usage record, as the JSON export writes it (a test holds this list to the record's
/// serialised keys, so a new field cannot be stored without appearing here).
pub const USAGE_FIELDS: [Field; 19] = [
    field("timestamp", "when the call was made"),
    field("request_id", "the call's identifier, to find it again"),
    field("account_id", "the account billed"),
    field("api_key_id", "which of your keys made the call"),
    field("endpoint", "the API route called"),
    field("provider", "the upstream provider that served it"),
    field("model", "the model that served it"),
    field("streamed", "whether the answer was streamed"),
    field("status", "the HTTP status of the answer"),
    field(
        "usage",
        "token counts (prompt, completion, cached, cache-write, reasoning), hosted searches and images \
         billed per call, and whether the counts are estimates",
    ),
    field("latency_ms", "how long the call took"),
    field("ttft_ms", "time to the first byte of a streamed answer"),
    field("cost_usd", "what the call cost"),
    field(
        "rates",
        "the prices the cost was computed at (service tier, long-context, each rate and fee)",
    ),
    field(
        "output_cap_tokens",
        "the output limit the gateway set when your spend cap left room for less than the model's own",
    ),
    field(
        "price_version",
        "the price table the cost was computed with",
    ),
    field(
        "error_type",
        "the gateway's error type, when the call failed",
    ),
    field(
        "source_ip",
        "the address the call came from, for security and rate limiting",
    ),
    field(
        "count",
        "how many calls the row stands for (refusals of one minute are summed up)",
    ),
];

/// What the account record holds.
pub const ACCOUNT_FIELDS: [Field; 7] = [
    field(
        "email",
        "the address your sign-in provider verified, to recognise you and to send Stripe receipts",
    ),
    field(
        "name",
        "your name, as your sign-in provider gave it or you corrected it",
    ),
    field("plan", "your plan and its limits"),
    field("created_at", "when the account was created"),
    field(
        "sign-in identities",
        "the provider (Google or Apple), its identifier for you and the verified email it gave",
    ),
    field(
        "API keys",
        "each key's name, id, creation and last-use time; the secret only as a bcrypt hash",
    ),
    field(
        "billing",
        "Stripe customer and subscription ids, price, status and period end; never card details",
    ),
];

/// A cookie the gateway sets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cookie {
    pub name: &'static str,
    pub purpose: &'static str,
    pub lifetime_secs: i64,
}

/// Every cookie the code sets, from the constants that set them.
pub const COOKIES: [Cookie; 2] = [
    Cookie {
        name: SESSION_COOKIE,
        purpose: "keeps you signed in to the dashboard (HttpOnly, Secure, SameSite=Lax)",
        lifetime_secs: SESSION_TTL_SECS,
    },
    Cookie {
        name: OAUTH_STATE_COOKIE,
        purpose: "carries one sign-in attempt's state and proof key from the login to the provider's \
                  answer; cleared when signing in ends",
        lifetime_secs: OAUTH_STATE_TTL_SECS,
    },
];

/// Someone who processes data for QNP.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Processor {
    pub name: String,
    pub role: &'static str,
    pub receives: &'static str,
}

/// A data right and where it is exercised.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Right {
    pub right: &'static str,
    pub how: &'static str,
}

pub const RIGHTS: [Right; 5] = [
    Right {
        right: "access and portability",
        how: "Dashboard › Account › Your data › Download JSON: everything QNP holds on you, as one \
              document; Usage › Download CSV for your calls",
    },
    Right {
        right: "correction",
        how: "Dashboard › Account: your name, and your email among the addresses your sign-in providers \
              verified",
    },
    Right {
        right: "restriction of processing",
        how: "Dashboard › Account › Restrict processing: your keys are refused and nothing new is \
              recorded until you lift it",
    },
    Right {
        right: "erasure",
        how: "Dashboard › Account › Delete account: sessions end and keys are revoked at once, the \
              rest is erased within the retention period below",
    },
    Right {
        right: "objection and questions",
        how: "write to the contact address below",
    },
];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Retention {
    pub usage_days: i64,
    pub deleted_account_days: i64,
    pub stripe_event_days: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Collected {
    pub account: Vec<Field>,
    pub usage_record: Vec<Field>,
    /// The usage CSV's columns, in order.
    pub csv_columns: Vec<&'static str>,
    pub not_stored: &'static str,
}

/// Everything the policy states, as data.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PrivacyFacts {
    /// A digest of everything below: it changes exactly when the policy's content does.
    pub version: String,
    /// `YYYY-MM-DD`: when the content last changed.
    pub updated: String,
    pub contact: Option<String>,
    pub collected: Collected,
    pub retention: Retention,
    pub cookies: Vec<Cookie>,
    pub processors: Vec<Processor>,
    pub rights: Vec<Right>,
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

const PROMPTS: &str = "the content of your requests (messages, files, tool calls) to answer them, \
     and nothing about your account; QNP passes it through and stores none of it";

fn processors(config: &Config) -> Vec<Processor> {
    let mut list = Vec::new();
    let processor = |name: String, role: &'static str, receives: &'static str| Processor {
        name,
        role,
        receives,
    };
    list.push(match config.mongodb_uri {
        Some(_) => processor(
            "MongoDB Atlas (MongoDB, Inc.)".into(),
            "database for accounts, keys and usage records",
            "everything listed above as stored",
        ),
        None => processor(
            "none: an embedded database on this gateway's own host".into(),
            "database for accounts, keys and usage records",
            "everything listed above as stored",
        ),
    });
    if config.dynamodb_table.is_some() {
        list.push(processor(
            "Amazon Web Services (DynamoDB)".into(),
            "rate-limit and spend counters",
            "key and account ids with per-minute and per-month counts",
        ));
    }
    if config.edge_configured {
        list.push(processor(
            "Cloudflare".into(),
            "CDN, DDoS protection and the edge worker in front of the gateway",
            "every request in transit, and your IP address",
        ));
    }
    for (upstream, name) in [
        (&config.openai, "OpenAI-compatible provider"),
        (&config.anthropic, "Anthropic"),
        (&config.gemini, "Google (Gemini API)"),
    ] {
        if upstream.api_key.is_some() {
            list.push(processor(
                format!("{name} at {}", host_of(&upstream.base_url)),
                "generates the answers to the calls you send to its models",
                PROMPTS,
            ));
        }
    }
    if config.google.is_some() {
        list.push(processor(
            "Google (Sign in with Google)".into(),
            "sign-in",
            "that you are signing in; it tells QNP its identifier for you, your email, whether it \
             is verified, and your name",
        ));
    }
    if config.apple.is_some() {
        list.push(processor(
            "Apple (Sign in with Apple)".into(),
            "sign-in",
            "that you are signing in; it tells QNP its identifier for you and your (possibly \
             relayed) email",
        ));
    }
    if config.stripe.secret_key.is_some() {
        list.push(processor(
            "Stripe".into(),
            "subscriptions and payments",
            "your email and account id; you give your card details to Stripe directly, never to QNP",
        ));
    }
    list
}

impl PrivacyFacts {
    /// The facts of this configuration. `updated` is the configured date, or what the caller tracked
    /// for this content (see [`PrivacyFacts::content_version`]).
    pub fn from_config(config: &Config, updated: impl FnOnce(&str) -> String) -> PrivacyFacts {
        let mut facts = PrivacyFacts {
            version: String::new(),
            updated: String::new(),
            contact: config.privacy_contact.clone(),
            collected: Collected {
                account: ACCOUNT_FIELDS.to_vec(),
                usage_record: USAGE_FIELDS.to_vec(),
                csv_columns: CSV_HEADER.to_vec(),
                not_stored: "the content of requests and answers (prompts, completions, files, tool calls \
                     and their results) is never stored or logged anywhere",
            },
            retention: Retention {
                usage_days: config.usage_retention_days,
                deleted_account_days: ERASURE_DAYS,
                stripe_event_days: STRIPE_EVENT_DAYS,
            },
            cookies: COOKIES.to_vec(),
            processors: processors(config),
            rights: RIGHTS.to_vec(),
        };
        facts.version = facts.content_version();
        facts.updated = match config.privacy_updated {
            Some(date) => format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            None => updated(&facts.version),
        };
        facts
    }

    /// A digest of the content (everything but the version and date).
    pub fn content_version(&self) -> String {
        let mut content = self.clone();
        content.version.clear();
        content.updated.clear();
        let digest = Sha256::digest(serde_json::to_vec(&content).unwrap_or_default());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn the_usage_fields_listed_are_exactly_the_records_fields() {
        let record = crate::usage::UsageRecord {
            timestamp: time::OffsetDateTime::UNIX_EPOCH,
            request_id: String::new(),
            account_id: String::new(),
            api_key_id: String::new(),
            endpoint: String::new(),
            provider: String::new(),
            model: String::new(),
            streamed: false,
            status: 200,
            usage: Default::default(),
            latency_ms: 0,
            ttft_ms: None,
            cost_usd: 0.0,
            price_version: String::new(),
            error_type: None,
            source_ip: None,
            count: 1,
            // Set, so the optional fields serialise and must be listed too.
            rates: Some(
                crate::catalog::Catalog::bundled().models()[0]
                    .applied_rates(crate::pricing::ServiceTier::Standard, 0),
            ),
            output_cap_tokens: Some(1024),
        };
        let value = serde_json::to_value(&record).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        let mut listed: Vec<&str> = USAGE_FIELDS.iter().map(|f| f.name).collect();
        listed.sort();
        assert_eq!(keys, listed);
        for column in CSV_HEADER {
            assert!(
                listed.contains(&column)
                    || [
                        "prompt_tokens",
                        "completion_tokens",
                        "cached_tokens",
                        "reasoning_tokens"
                    ]
                    .contains(&column),
                "{column}"
            );
        }
    }

    #[test]
    fn the_content_follows_the_configuration() {
        let base = Config::from_env(&Env::from_pairs([("QNP_DATA_DIR", "/tmp/x")])).unwrap();
        let facts = PrivacyFacts::from_config(&base, |_| "2026-12-01".into());
        assert_eq!(facts.retention.usage_days, 30);
        assert_eq!(facts.updated, "2026-12-01");
        assert!(facts.processors.iter().all(|p| !p.name.contains("Stripe")));
        let shorter = Config::from_env(&Env::from_pairs([
            ("QNP_DATA_DIR", "/tmp/x"),
            ("QNP_USAGE_RETENTION_DAYS", "14"),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("OPENAI_API_KEY", "sk-x"),
            ("QNP_PRIVACY_UPDATED", "2026-11-30"),
        ]))
        .unwrap();
        let other = PrivacyFacts::from_config(&shorter, |_| unreachable!("the date is configured"));
        assert_eq!(other.retention.usage_days, 14);
        assert_ne!(other.version, facts.version);
        assert_eq!(other.updated, "2026-11-30");
        assert!(other.processors.iter().any(|p| p.name == "Stripe"));
        assert!(
            other
                .processors
                .iter()
                .any(|p| p.name.contains("api.openai.com"))
        );
    }
}
