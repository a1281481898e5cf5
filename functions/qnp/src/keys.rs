//! `qnp keys create | update | rotate | list | revoke`.

use clap::{Args, Subcommand};
use qnp_shared::accounts::{is_plausible_email, key_name, printable};
use qnp_shared::plans::DEFAULT_PLAN;
use time::OffsetDateTime;

use qnp_shared::key_controls::{KeyChange, KeyControls};
use qnp_shared::key_settings;
use serde_json::{Value, json};

use crate::context::Context;

/// A key's controls on one line (`-` for none), for operators' terminals.
fn describe(controls: &KeyControls) -> String {
    let mut parts = Vec::new();
    if let Some(at) = controls.expires_at {
        parts.push(format!(
            "expires={}",
            qnp_shared::usage::format_timestamp(at)
        ));
    }
    if let Some(usd) = controls.monthly_spend_limit_usd {
        parts.push(format!("spend_limit_usd={usd}"));
    }
    if !controls.models.is_empty() {
        parts.push(format!("models={}", controls.models.join(",")));
    }
    if let Some(rpm) = controls.requests_per_minute {
        parts.push(format!("rpm={rpm}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// A key's controls as flags; each takes `none` to clear it (on `update`).
#[derive(Args, Default)]
pub struct ControlFlags {
    /// The key stops working at this time (RFC 3339, or a UTC date YYYY-MM-DD).
    #[arg(long)]
    expires_at: Option<String>,
    /// What the key may spend in a calendar month (UTC), in US dollars.
    #[arg(long)]
    spend_limit_usd: Option<String>,
    /// Model ids or patterns the key may call, comma-separated (`anthropic/*,openai/gpt-4o-mini`).
    #[arg(long)]
    models: Option<String>,
    /// Requests per minute for this key, when below its plan's.
    #[arg(long)]
    rpm: Option<String>,
}

impl ControlFlags {
    /// The flags as the JSON change the API takes, so both are checked by the same code.
    fn change(&self, name: Option<&str>) -> anyhow::Result<KeyChange> {
        let mut object = serde_json::Map::new();
        let cleared = |v: &str| v.eq_ignore_ascii_case("none");
        if let Some(name) = name {
            object.insert("name".into(), json!(name));
        }
        if let Some(v) = &self.expires_at {
            object.insert(
                "expires_at".into(),
                if cleared(v) { Value::Null } else { json!(v) },
            );
        }
        if let Some(v) = &self.spend_limit_usd {
            let value = if cleared(v) {
                Value::Null
            } else {
                json!(
                    v.parse::<f64>()
                        .map_err(|_| anyhow::anyhow!("--spend-limit-usd: '{v}' is not a number"))?
                )
            };
            object.insert("monthly_spend_limit_usd".into(), value);
        }
        if let Some(v) = &self.models {
            let value = if cleared(v) {
                Value::Null
            } else {
                json!(v.split(',').map(str::trim).collect::<Vec<_>>())
            };
            object.insert("models".into(), value);
        }
        if let Some(v) = &self.rpm {
            let value = if cleared(v) {
                Value::Null
            } else {
                json!(
                    v.parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("--rpm: '{v}' is not a whole number"))?
                )
            };
            object.insert("requests_per_minute".into(), value);
        }
        KeyChange::from_json(&Value::Object(object), OffsetDateTime::now_utc())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key (and the account, if needed). The plaintext key is the last line of output.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Put the account on this plan (operator-only plans such as `unlimited` included).
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        controls: ControlFlags,
    },
    /// Change a key's name or controls (`none` clears a control). Warm processes apply it within a
    /// minute.
    Update {
        key_id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        controls: ControlFlags,
    },
    /// Give a key a new secret under the same id; the old one keeps working for the grace period.
    /// The new plaintext key is the last line of output.
    Rotate {
        key_id: String,
        /// Hours the old secret keeps working (default QNP_KEY_ROTATION_GRACE_HOURS, 24).
        #[arg(long)]
        grace_hours: Option<f64>,
    },
    /// List an account's keys (never their secrets).
    List {
        #[arg(long)]
        email: String,
    },
    /// Revoke a key by its id; warm processes stop accepting it within a minute.
    Revoke { key_id: String },
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    let ctx = Context::load().await?;
    let records = &ctx.stores.records;
    match command {
        KeysCommand::Create {
            email,
            name,
            plan,
            controls,
        } => {
            anyhow::ensure!(
                is_plausible_email(&email),
                "'{}' is not an email address",
                printable(&email)
            );
            let name = key_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let change = controls.change(None)?;
            if let Some(plan) = &plan {
                anyhow::ensure!(
                    ctx.plans.get(plan).is_some(),
                    "no plan '{plan}'; plans: {}",
                    ctx.plans.names().collect::<Vec<_>>().join(", ")
                );
            }
            let account = records
                .account_for_email(&email, plan.as_deref().unwrap_or(DEFAULT_PLAN))
                .await?;
            anyhow::ensure!(account.is_active(), "the account {email} is being deleted");
            if let Some(plan) = &plan
                && *plan != account.plan
            {
                records.set_plan(&account.id, plan).await?;
            }
            let cost = ctx.config.bcrypt_cost;
            let mut key = tokio::task::spawn_blocking(move || {
                qnp_shared::keys::generate(&account.id, name, cost, OffsetDateTime::now_utc())
            })
            .await??;
            change.apply(&mut key.record.name, &mut key.record.controls);
            records.insert_key(&key.record).await?;
            eprintln!(
                "created key {} for {email} (plan {}); it is shown once:",
                key.record.key_id,
                plan.as_deref().unwrap_or(&account.plan)
            );
            println!("{}", key.plaintext);
        }
        KeysCommand::Update {
            key_id,
            name,
            controls,
        } => {
            let change = controls.change(name.as_deref())?;
            let key = records
                .key(&key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no key {}", printable(&key_id)))?;
            let budget = qnp_shared::budget::Budget::new(ctx.stores.counters.clone());
            let now = OffsetDateTime::now_utc();
            let key = key_settings::update(records.as_ref(), &budget, key, &change, now)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("updated {}: {}", key.key_id, describe(&key.controls));
        }
        KeysCommand::Rotate {
            key_id,
            grace_hours,
        } => {
            let grace = key_settings::grace_period(grace_hours, ctx.config.key_rotation_grace)
                .map_err(|e| anyhow::anyhow!("--grace-hours: {e}"))?;
            let key = records
                .key(&key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no key {}", printable(&key_id)))?;
            let now = OffsetDateTime::now_utc();
            let cost = ctx.config.bcrypt_cost;
            let (plaintext, key) = key_settings::rotate(records.as_ref(), key, cost, grace, now)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let until = key
                .previous
                .as_ref()
                .map(|p| qnp_shared::usage::format_timestamp(p.valid_until))
                .unwrap_or_default();
            eprintln!(
                "rotated key {}; the old secret works until {until}; the new key is shown once:",
                key.key_id
            );
            println!("{plaintext}");
        }
        KeysCommand::List { email } => {
            let account = records
                .account_by_email(&email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account for {email}"))?;
            println!("key_id\tprefix\tname\tcreated\tlast_used\tstatus\tcontrols");
            let now = OffsetDateTime::now_utc();
            for key in records.keys_for_account(&account.id).await? {
                let fmt = |t: Option<OffsetDateTime>| {
                    t.map(qnp_shared::usage::format_timestamp)
                        .unwrap_or_else(|| "-".into())
                };
                let status = if key.revoked_at.is_some() {
                    "revoked"
                } else if key.controls.expired(now) {
                    "expired"
                } else if key.previous_in_grace(now).is_some() {
                    "rotating"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    key.key_id,
                    key.prefix(),
                    key.name
                        .as_deref()
                        .map(printable)
                        .unwrap_or_else(|| "-".into()),
                    fmt(Some(key.created_at)),
                    fmt(key.last_used_at),
                    status,
                    describe(&key.controls),
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            if records
                .revoke_key(&key_id, OffsetDateTime::now_utc())
                .await?
            {
                println!("revoked {key_id}");
            } else {
                anyhow::bail!("no active key {key_id}");
            }
        }
    }
    Ok(())
}
