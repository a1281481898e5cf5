//! `qnp retention run [--now T] [--dry-run]`: one cleaner pass, with a progress bar on a terminal and a
//! summary of what was (or would be) removed.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use qnp_shared::retention::{Cleaner, Progress};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::context::Context;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Delete usage older than 30 days and erase accounts whose deletion was requested.
    Run {
        /// Pretend it is this time (RFC 3339), e.g. to preview what a later run removes.
        #[arg(long)]
        now: Option<String>,
        /// Count what would be removed without removing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(command: RetentionCommand) -> anyhow::Result<()> {
    let RetentionCommand::Run { now, dry_run } = command;
    let now = match now {
        Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|e| anyhow::anyhow!("--now '{text}' is not an RFC 3339 time: {e}"))?,
        None => OffsetDateTime::now_utc(),
    };
    let ctx = Context::load().await?;
    let cleaner = Cleaner {
        records: ctx.stores.records.clone(),
        counters: ctx.stores.counters.clone(),
        stripe: qnp_shared::billing::stripe_api::StripeApi::from_config(&ctx.config.stripe)?,
        budget: Duration::from_secs(24 * 3600),
        usage_days: ctx.config.usage_retention_days,
    };
    let bar = Arc::new(if std::io::stderr().is_terminal() && !dry_run {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    });
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("expired usage");
    let progress = {
        let bar = bar.clone();
        move |p: Progress| match p {
            Progress::ExpiredTotal(total) => bar.set_length(total),
            Progress::ExpiredDeleted(n) => bar.inc(n),
            Progress::AccountErased => bar.set_message("erasing deleted accounts"),
        }
    };
    let report = cleaner.run(now, dry_run, &progress).await?;
    bar.finish_and_clear();
    let verb = if dry_run { "would delete" } else { "deleted" };
    if report.held_usage_rows_delivered > 0 {
        println!(
            "delivered {} usage rows held while the record store was unavailable",
            report.held_usage_rows_delivered
        );
    }
    println!(
        "{verb} {} usage rows older than {}",
        report.expired_usage_rows,
        qnp_shared::usage::format_timestamp(report.cutoff)
    );
    println!(
        "{verb} {} accounts pending erasure ({} usage rows, {} keys, {} identities, {} counters)",
        report.accounts_erased,
        report.erased.usage_rows,
        report.erased.keys,
        report.erased.identities,
        report.counters_erased
    );
    if !report.complete {
        println!("stopped at its time budget; run again to finish");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
