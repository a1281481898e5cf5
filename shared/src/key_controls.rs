//! What one API key may do, below what its account's plan allows: an expiry, a monthly spend limit of
//! its own, a model allowlist and a requests-per-minute limit. Set when the key is made and changed
//! later (`POST`/`PATCH /keys`, `qnp keys create/update`, the dashboard); enforced by the proxy on every
//! call, and every refusal names the control that refused it (`GatewayError::KeyControl`).
//!
//! A change is parsed here, once, for every way of making it, so the API, the CLI and the dashboard
//! accept and refuse exactly the same values with the same messages.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{GatewayError, KeyControl};

/// Most patterns a key's allowlist may hold: enough for any real selection of providers and families.
pub const MAX_MODEL_PATTERNS: usize = 50;
const MAX_PATTERN_CHARS: usize = 200;
/// The highest spend limit a key may be given; a plan's cap is far below it.
pub const MAX_SPEND_LIMIT_USD: f64 = 1_000_000.0;
/// An expiry at most this far ahead (ten years): anything later is a typo, or no expiry at all.
const MAX_EXPIRY_AHEAD: time::Duration = time::Duration::days(3653);
pub const MAX_REQUESTS_PER_MINUTE: u64 = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyControls {
    /// From this instant on the key is refused (401 `key_expired`).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// What the key may spend in a UTC calendar month, reserved and settled like the account's cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_spend_limit_usd: Option<f64>,
    /// Model ids the key may call, `*` matching any run of characters (`anthropic/*`,
    /// `openai/gpt-4o*`); empty means every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Requests per minute for this key, when below the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none included).
/// Greedy with one backtrack point, so it is linear in practice and never exponential.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl KeyControls {
    pub fn is_empty(&self) -> bool {
        *self == KeyControls::default()
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the key may call the model with this catalog id (ids, not aliases: an alias names the
    /// same model, and is checked as it).
    pub fn allows_model(&self, model_id: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| glob_matches(p, model_id))
    }

    /// The refusal for a call after the expiry.
    pub fn expired_error(&self) -> GatewayError {
        let at = self
            .expires_at
            .map(crate::usage::format_timestamp)
            .unwrap_or_default();
        GatewayError::KeyControl {
            control: KeyControl::Expiry,
            message: format!(
                "this API key expired at {at} (the key's expiry, set by its owner); set a later expiry \
                 in the dashboard or use another key"
            ),
        }
    }

    /// The refusal for a model outside the allowlist.
    pub fn model_error(&self, model_id: &str) -> GatewayError {
        GatewayError::KeyControl {
            control: KeyControl::Models,
            message: format!(
                "this API key may call only models matching {} (the key's model allowlist); '{}' is \
                 not one of them",
                self.models
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                model_id.chars().take(200).collect::<String>()
            ),
        }
    }
}

/// A change to a key's name and controls as one request states it: each field absent (unchanged),
/// `null` (cleared) or a new value, already checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyChange {
    pub name: Option<Option<String>>,
    pub expires_at: Option<Option<OffsetDateTime>>,
    pub monthly_spend_limit_usd: Option<Option<f64>>,
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<Option<u64>>,
}

/// A key's name as given: trimmed, empty meaning none, at most 100 characters, and no control characters
/// (names are printed on operators' terminals). The error says what is wrong.
pub fn key_name(name: Option<String>) -> Result<Option<String>, String> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if let Some(n) = &name {
        if n.chars().count() > 100 {
            return Err("'name' must be at most 100 characters".into());
        }
        if n.chars().any(char::is_control) {
            return Err("'name' must not contain control characters".into());
        }
    }
    Ok(name)
}

fn field(name: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::field(name, message)
}

/// An expiry as given: RFC 3339, or a UTC date (`2027-01-31` means the start of that day), in the
/// future and at most ten years ahead.
pub fn parse_expiry(raw: &str, now: OffsetDateTime) -> Result<OffsetDateTime, GatewayError> {
    let raw = raw.trim();
    let at = OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| {
            time::Date::parse(
                raw,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()
            .map(|d| d.midnight().assume_utc())
        })
        .ok_or_else(|| {
            field(
                "expires_at",
                "'expires_at' must be an RFC 3339 time (2027-01-31T12:00:00Z) or a date (2027-01-31)",
            )
        })?;
    if at <= now {
        return Err(field("expires_at", "'expires_at' must be in the future"));
    }
    if at - now > MAX_EXPIRY_AHEAD {
        return Err(field(
            "expires_at",
            "'expires_at' must be at most ten years ahead; leave it out for a key that does not expire",
        ));
    }
    Ok(at)
}

/// A spend limit as given: a positive number of US dollars, at most [`MAX_SPEND_LIMIT_USD`].
pub fn check_spend_limit(usd: f64) -> Result<f64, GatewayError> {
    if !usd.is_finite() || usd <= 0.0 || usd > MAX_SPEND_LIMIT_USD {
        return Err(field(
            "monthly_spend_limit_usd",
            format!(
                "'monthly_spend_limit_usd' must be a number of US dollars above 0 and at most \
                 {MAX_SPEND_LIMIT_USD}"
            ),
        ));
    }
    Ok(usd)
}

pub fn check_requests_per_minute(rpm: u64) -> Result<u64, GatewayError> {
    if !(1..=MAX_REQUESTS_PER_MINUTE).contains(&rpm) {
        return Err(field(
            "requests_per_minute",
            format!(
                "'requests_per_minute' must be a whole number from 1 to {MAX_REQUESTS_PER_MINUTE}"
            ),
        ));
    }
    Ok(rpm)
}

/// An allowlist as given: model id patterns (letters, digits, `. _ - : / @` and `*`), lowercased,
/// duplicates dropped, at most [`MAX_MODEL_PATTERNS`].
pub fn check_models<S: AsRef<str>>(patterns: &[S]) -> Result<Vec<String>, GatewayError> {
    if patterns.len() > MAX_MODEL_PATTERNS {
        return Err(field(
            "models",
            format!("'models' may hold at most {MAX_MODEL_PATTERNS} patterns"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for pattern in patterns {
        let pattern = pattern.as_ref().trim().to_lowercase();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:/@*".contains(c);
        if pattern.is_empty()
            || pattern.chars().count() > MAX_PATTERN_CHARS
            || !pattern.chars().all(allowed)
        {
            return Err(field(
                "models",
                format!(
                    "'models' entries are model ids or patterns such as 'anthropic/*' (letters, digits, \
                     . _ - : / @ and *, at most {MAX_PATTERN_CHARS} characters each)"
                ),
            ));
        }
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    Ok(out)
}

impl KeyChange {
    /// Reads a change from a JSON object (`POST`/`PATCH /keys`; on creation `null` is the same as
    /// absent). Unknown fields are refused by name.
    pub fn from_json(value: &Value, now: OffsetDateTime) -> Result<KeyChange, GatewayError> {
        let Some(object) = value.as_object() else {
            return Err(GatewayError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        };
        let mut change = KeyChange::default();
        for (name, value) in object {
            change.set(name, value, now)?;
        }
        Ok(change)
    }

    fn set(&mut self, name: &str, value: &Value, now: OffsetDateTime) -> Result<(), GatewayError> {
        let null = value.is_null();
        match name {
            "name" => {
                let text = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(field("name", "'name' must be a string or null")),
                };
                self.name = Some(key_name(text).map_err(|m| field("name", m))?);
            }
            "expires_at" => {
                self.expires_at = Some(if null {
                    None
                } else {
                    let raw = value.as_str().ok_or_else(|| {
                        field("expires_at", "'expires_at' must be a string or null")
                    })?;
                    Some(parse_expiry(raw, now)?)
                });
            }
            "monthly_spend_limit_usd" => {
                self.monthly_spend_limit_usd = Some(if null {
                    None
                } else {
                    let usd = value.as_f64().ok_or_else(|| {
                        field(
                            "monthly_spend_limit_usd",
                            "'monthly_spend_limit_usd' must be a number or null",
                        )
                    })?;
                    Some(check_spend_limit(usd)?)
                });
            }
            "models" => {
                self.models = Some(match value {
                    Value::Null => Vec::new(),
                    Value::Array(items) => {
                        let texts = items
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Option<Vec<&str>>>()
                            .ok_or_else(|| {
                                field("models", "'models' must be an array of strings")
                            })?;
                        check_models(&texts)?
                    }
                    _ => {
                        return Err(field(
                            "models",
                            "'models' must be an array of strings or null",
                        ));
                    }
                });
            }
            "requests_per_minute" => {
                self.requests_per_minute = Some(if null {
                    None
                } else {
                    let rpm = value.as_u64().ok_or_else(|| {
                        field(
                            "requests_per_minute",
                            "'requests_per_minute' must be a whole number or null",
                        )
                    })?;
                    Some(check_requests_per_minute(rpm)?)
                });
            }
            other => {
                return Err(GatewayError::BadRequest(format!(
                    "unknown field '{}'; a key has name, expires_at, monthly_spend_limit_usd, models and \
                     requests_per_minute",
                    other.chars().take(100).collect::<String>()
                )));
            }
        }
        Ok(())
    }

    /// Whether the change touches any control (not only the name).
    pub fn changes_controls(&self) -> bool {
        self.expires_at.is_some()
            || self.monthly_spend_limit_usd.is_some()
            || self.models.is_some()
            || self.requests_per_minute.is_some()
    }

    /// The key's name and controls after the change.
    pub fn apply(&self, name: &mut Option<String>, controls: &mut KeyControls) {
        if let Some(n) = &self.name {
            name.clone_from(n);
        }
        if let Some(v) = self.expires_at {
            controls.expires_at = v;
        }
        if let Some(v) = self.monthly_spend_limit_usd {
            controls.monthly_spend_limit_usd = v;
        }
        if let Some(v) = &self.models {
            controls.models.clone_from(v);
        }
        if let Some(v) = self.requests_per_minute {
            controls.requests_per_minute = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-03 10:00 UTC);

    #[test]
    fn patterns_match_ids_with_stars_anywhere() {
        assert!(glob_matches("anthropic/*", "anthropic/claude-sonnet-4.5"));
        assert!(!glob_matches("anthropic/*", "openai/gpt-4o"));
        assert!(glob_matches("openai/gpt-4o*", "openai/gpt-4o-mini"));
        assert!(glob_matches("openai/gpt-4o*", "openai/gpt-4o"));
        assert!(!glob_matches("openai/gpt-4o", "openai/gpt-4o-mini"));
        assert!(glob_matches("*/*-mini", "openai/gpt-4o-mini"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        // A pathological pattern stays fast (no exponential backtracking).
        let text = "a".repeat(200);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn an_empty_allowlist_allows_everything() {
        let open = KeyControls::default();
        assert!(open.allows_model("openai/gpt-4o"));
        let only = KeyControls {
            models: vec!["anthropic/*".into(), "google/gemini-2.5-flash".into()],
            ..Default::default()
        };
        assert!(only.allows_model("google/gemini-2.5-flash"));
        assert!(!only.allows_model("google/gemini-2.5-pro"));
        let err = only.model_error("openai/gpt-4o");
        assert_eq!(err.code(), Some("model_not_allowed"));
        assert!(err.to_string().contains("'anthropic/*'"), "{err}");
    }

    #[test]
    fn a_change_reads_absent_null_and_values_apart() {
        let change = KeyChange::from_json(
            &json!({"expires_at": "2027-01-31", "models": ["Anthropic/*", "anthropic/*"],
                    "monthly_spend_limit_usd": 5, "requests_per_minute": null}),
            NOW,
        )
        .unwrap();
        assert_eq!(change.name, None);
        assert_eq!(
            change.expires_at,
            Some(Some(datetime!(2027-01-31 0:00 UTC)))
        );
        assert_eq!(change.models, Some(vec!["anthropic/*".to_owned()]));
        assert_eq!(change.monthly_spend_limit_usd, Some(Some(5.0)));
        assert_eq!(change.requests_per_minute, Some(None));
        let mut name = Some("ci".to_owned());
        let mut controls = KeyControls {
            requests_per_minute: Some(3),
            ..Default::default()
        };
        change.apply(&mut name, &mut controls);
        assert_eq!(name.as_deref(), Some("ci"), "an absent name is unchanged");
        assert_eq!(controls.requests_per_minute, None, "null clears");
        assert_eq!(controls.monthly_spend_limit_usd, Some(5.0));
    }

    #[test]
    fn bad_values_are_refused_with_their_field_named() {
        for (body, param) in [
            (json!({"expires_at": "2020-01-01"}), "expires_at"),
            (json!({"expires_at": "soon"}), "expires_at"),
            (json!({"expires_at": "2099-01-01"}), "expires_at"),
            (
                json!({"monthly_spend_limit_usd": 0}),
                "monthly_spend_limit_usd",
            ),
            (
                json!({"monthly_spend_limit_usd": -3}),
                "monthly_spend_limit_usd",
            ),
            (
                json!({"monthly_spend_limit_usd": "5"}),
                "monthly_spend_limit_usd",
            ),
            (
                json!({"monthly_spend_limit_usd": 1e300}),
                "monthly_spend_limit_usd",
            ),
            (json!({"models": "anthropic/*"}), "models"),
            (json!({"models": [""]}), "models"),
            (json!({"models": ["a b"]}), "models"),
            (json!({"models": [1]}), "models"),
            (json!({"models": vec!["x"; 51]}), "models"),
            (json!({"requests_per_minute": 0}), "requests_per_minute"),
            (json!({"requests_per_minute": 1.5}), "requests_per_minute"),
            (json!({"requests_per_minute": -1}), "requests_per_minute"),
            (json!({"name": 7}), "name"),
        ] {
            let err = KeyChange::from_json(&body, NOW).unwrap_err();
            let shown: Value = serde_json::from_slice(&err.openai_body()).unwrap();
            assert_eq!(shown["error"]["param"], param, "{body}: {err}");
        }
        let err = KeyChange::from_json(&json!({"rpm": 5}), NOW).unwrap_err();
        assert!(err.to_string().contains("unknown field 'rpm'"), "{err}");
        assert!(KeyChange::from_json(&json!([1]), NOW).is_err());
    }

    #[test]
    fn expiry_is_checked_against_now() {
        let controls = KeyControls {
            expires_at: Some(NOW),
            ..Default::default()
        };
        assert!(controls.expired(NOW));
        assert!(!controls.expired(NOW - time::Duration::seconds(1)));
        assert_eq!(controls.expired_error().code(), Some("key_expired"));
        assert_eq!(controls.expired_error().status().as_u16(), 401);
    }
}
