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
    /// Sessions carry the version they were issued under; bumping it (logout, deletion) invalidates
    /// every outstanding session cookie server-side.
    pub session_version: i64,
    /// What Stripe has told us about the account's subscription.
    #[serde(default)]
    pub billing: crate::subscription::Billing,
}

impl Account {
    pub fn new(email: &str, plan: &str, now: OffsetDateTime) -> Account {
        Account {
            id: format!("acct_{}", crate::ids::random_token(20)),
            email: normalize_email(email),
            name: None,
            plan: plan.into(),
            created_at: now,
            restricted: false,
            deletion_requested_at: None,
            session_version: 0,
            billing: crate::subscription::Billing::default(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.deletion_requested_at.is_none()
    }
}

/// What a deleted account's email becomes at once: the address is personal data, and it must be free
/// for a new account if its owner signs up again before the cleaner has erased the old one.
pub fn deleted_email(account_id: &str) -> String {
    format!("deleted-{}@deleted.invalid", account_id.to_lowercase())
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
    /// What the key may do below its plan.
    #[serde(default)]
    pub controls: crate::key_controls::KeyControls,
    /// The secret this key had before its last rotation, still accepted until its grace period ends.
    #[serde(default)]
    pub previous: Option<PreviousSecret>,
}

/// A rotated-out secret: its bcrypt hash, accepted until `valid_until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub hash: String,
    /// When the rotation happened.
    #[serde(with = "time::serde::rfc3339")]
    pub rotated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
}

impl ApiKeyRecord {
    /// The previous secret while its grace period lasts.
    pub fn previous_in_grace(&self, now: OffsetDateTime) -> Option<&PreviousSecret> {
        self.previous.as_ref().filter(|p| p.valid_until > now)
    }

    /// What a user sees to recognise a key: its non-secret beginning.
    pub fn prefix(&self) -> String {
        format!("{}{}_", crate::ids::KEY_PREFIX, self.key_id)
    }
}

pub use crate::key_controls::key_name;

/// Text from the store made safe to print on a terminal: control characters (escape sequences, a
/// carriage return that rewrites the line) are shown escaped instead of interpreted.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
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

/// A sign-in identity: the identity provider's stable subject, linked to one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `google` or `apple`.
    pub provider: String,
    pub subject: String,
    pub account_id: String,
    /// The email the provider reported at the last sign-in (may be an Apple private-relay address).
    pub email: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A correction to an account's profile (GDPR rectification); `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProfileUpdate {
    Updated(Box<Account>),
    /// Another account already uses that email.
    EmailTaken,
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_control_characters_and_printing_escapes_old_ones() {
        assert_eq!(key_name(Some("  ci  ".into())), Ok(Some("ci".into())));
        assert_eq!(key_name(Some("   ".into())), Ok(None));
        assert!(key_name(Some("a\u{1b}[2J".into())).is_err());
        assert!(key_name(Some("x".repeat(101))).is_err());
        let shown = printable("evil\u{1b}]0;title\u{7}\rover");
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(printable("laptop ✓"), "laptop ✓");
    }
}
