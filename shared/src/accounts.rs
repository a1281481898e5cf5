//! Accounts and the API keys that belong to them, as stored.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// The name of the plan in force; its limits come from the plan table.
    pub plan: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// GDPR restriction of processing: the proxy refuses the account's keys while it is set.
    pub restricted: bool,
    /// Set when the user asked for deletion; keys stop working at once and the cleaner erases the rest.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deletion_requested_at: Option<OffsetDateTime>,
}

impl Account {
    pub fn new(email: &str, plan: &str, now: OffsetDateTime) -> Account {
        Account {
            id: format!("acct_{}", crate::keys::random_token(20)),
            email: normalize_email(email),
            name: None,
            plan: plan.into(),
            created_at: now,
            restricted: false,
            deletion_requested_at: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.deletion_requested_at.is_none()
    }
}

/// Emails are compared case-insensitively; we store the lowercase form.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// An API key as stored: public metadata plus the bcrypt hash of its secret. The plaintext is never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The public identifier, also embedded in the plaintext key; lookups are by this id.
    pub key_id: String,
    pub account_id: String,
    pub name: Option<String>,
    /// bcrypt hash of the key's secret part.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl ApiKeyRecord {
    /// What a user sees to recognise a key: its non-secret beginning.
    pub fn prefix(&self) -> String {
        format!("{}{}_", crate::keys::KEY_PREFIX, self.key_id)
    }
}

/// Email validation sufficient to reject typos at the CLI; the identity providers verify real addresses.
pub fn is_plausible_email(email: &str) -> bool {
    let email = email.trim();
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}
