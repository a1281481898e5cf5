//! `qnp serve`: every function's router merged behind one listener, usage written in the background.

use std::net::SocketAddr;

use qnp_shared::usage_log::UsageLog;

use crate::context::Context;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let ctx = Context::load().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr()?;
    let public_url = ctx
        .config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let session_secret = qnp::app::local_session_secret(&ctx.config)?;
    let (usage, writer) =
        UsageLog::background(ctx.stores.records.clone(), ctx.stores.counters.clone());
    let app = qnp::app::build(
        &ctx.config,
        &ctx.stores,
        usage.clone(),
        ctx.catalog.clone(),
        ctx.plans.clone(),
        &public_url,
        &session_secret,
    )?;
    for (provider, upstream) in [
        ("openai", &ctx.config.openai),
        ("anthropic", &ctx.config.anthropic),
        ("google", &ctx.config.gemini),
    ] {
        if upstream.api_key.is_none() {
            tracing::warn!(
                "{provider} models answer 503 until {} is set",
                upstream.key_variable
            );
        }
    }
    for (name, configured) in [
        ("Google", ctx.config.google.is_some()),
        ("Apple", ctx.config.apple.is_some()),
    ] {
        if !configured {
            tracing::warn!("sign in with {name} answers 503 until its variables are set");
        }
    }
    if ctx.config.stripe.secret_key.is_none() {
        tracing::warn!("paid plans answer 503 until STRIPE_SECRET_KEY is set; the free plan works");
    }
    tracing::info!(
        records = if ctx.config.mongodb_uri.is_some() { "mongodb" } else { "embedded" },
        counters = if ctx.config.dynamodb_table.is_some() { "dynamodb" } else { "embedded" },
        data_dir = %ctx.config.data_dir.display(),
        public_url,
        "stores ready"
    );
    // Scripts and tests wait for this exact line; it carries no fields so the address ends it.
    tracing::info!("qnp listening on http://{local}");
    qnp::listener::serve(listener, app, ctx.config.server, shutdown_signal()).await;
    writer.shutdown(usage).await;
    tracing::info!("usage log flushed; bye");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
