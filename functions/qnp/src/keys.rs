//! `qnp keys create | list | revoke`.

use clap::Subcommand;
use qnp_shared::accounts::{is_plausible_email, key_name, printable};
use qnp_shared::plans::DEFAULT_PLAN;
use time::OffsetDateTime;

use crate::context::Context;

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
        KeysCommand::Create { email, name, plan } => {
            anyhow::ensure!(
                is_plausible_email(&email),
                "'{}' is not an email address",
                printable(&email)
            );
            let name = key_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
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
            let key = tokio::task::spawn_blocking(move || {
                qnp_shared::keys::generate(&account.id, name, cost, OffsetDateTime::now_utc())
            })
            .await??;
            records.insert_key(&key.record).await?;
            eprintln!(
                "created key {} for {email} (plan {}); it is shown once:",
                key.record.key_id,
                plan.as_deref().unwrap_or(&account.plan)
            );
            println!("{}", key.plaintext);
        }
        KeysCommand::List { email } => {
            let account = records
                .account_by_email(&email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account for {email}"))?;
            println!("key_id\tprefix\tname\tcreated\tlast_used\tstatus");
            for key in records.keys_for_account(&account.id).await? {
                let fmt = |t: Option<OffsetDateTime>| {
                    t.map(qnp_shared::usage::format_timestamp)
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.key_id,
                    key.prefix(),
                    key.name
                        .as_deref()
                        .map(printable)
                        .unwrap_or_else(|| "-".into()),
                    fmt(Some(key.created_at)),
                    fmt(key.last_used_at),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
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
