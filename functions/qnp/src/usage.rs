//! `qnp usage export`: the same CSV the HTTP export serves, streamed to stdout.

use std::io::Write;

use clap::Subcommand;
use futures_util::StreamExt;
use qnp_shared::usage::{CsvWriter, parse_range};
use time::OffsetDateTime;

use crate::context::Context;

#[derive(Subcommand)]
pub enum UsageCommand {
    /// Write an account's usage rows as CSV (default: the last 30 days).
    Export {
        #[arg(long)]
        email: String,
        /// Start date (YYYY-MM-DD) or RFC 3339 timestamp, inclusive.
        #[arg(long)]
        from: Option<String>,
        /// End date (whole day included) or RFC 3339 timestamp, exclusive.
        #[arg(long)]
        to: Option<String>,
    },
}

pub async fn run(command: UsageCommand) -> anyhow::Result<()> {
    let UsageCommand::Export { email, from, to } = command;
    let (from, to) = parse_range(from.as_deref(), to.as_deref(), OffsetDateTime::now_utc())?;
    let ctx = Context::load().await?;
    let account = ctx
        .stores
        .records
        .account_by_email(&email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no account for {email}"))?;
    let stdout = std::io::stdout().lock();
    let mut writer = CsvWriter::new(std::io::BufWriter::new(stdout))?;
    let mut rows = ctx.stores.records.usage_for_account(&account.id, from, to);
    while let Some(row) = rows.next().await {
        writer.write(&row?)?;
    }
    writer.into_inner()?.flush()?;
    Ok(())
}
