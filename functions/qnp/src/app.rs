//! Every function's router merged behind one listener, built from the same configuration the Lambda
//! functions read. Local defaults fill what a laptop lacks: the public URL is the listen address and the
//! session secret is generated once into the data directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use qnp_shared::catalog::Catalog;
use qnp_shared::config::Config;
use qnp_shared::plans::Plans;
use qnp_shared::sessions::Sessions;
use qnp_shared::store::Stores;
use qnp_shared::usage_log::UsageLog;
use qnp_shared::web::{WebAuth, origin_of};

/// The session secret for a local server: `QNP_SESSION_SECRET` if set, else a random one kept in
/// `<data dir>/session-secret` (mode 0600) so sessions survive restarts.
pub fn local_session_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(secret) = &config.session_secret {
        return Ok(secret.to_string());
    }
    let path = config.data_dir.join("session-secret");
    if let Ok(secret) = std::fs::read_to_string(&path)
        && secret.trim().len() >= 32
    {
        return Ok(secret.trim().to_owned());
    }
    let secret = qnp_shared::keys::random_token(64);
    write_private(&path, &secret)
        .with_context(|| format!("writing the session secret {}", path.display()))?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// Everything `qnp serve` mounts: the proxy, auth, export, stripe-webhook and dashboard functions, with
/// shared fallbacks.
pub fn build(
    config: &Config,
    stores: &Stores,
    usage: UsageLog,
    catalog: Arc<Catalog>,
    plans: Arc<Plans>,
    public_url: &str,
    session_secret: &str,
) -> anyhow::Result<Router> {
    let proxy = Arc::new(qnp_proxy::Proxy::new(
        config,
        stores,
        usage,
        catalog,
        plans.clone(),
    ));
    let web = Arc::new(WebAuth {
        sessions: Sessions::new(session_secret.as_bytes()),
        records: stores.records.clone(),
        public_origin: origin_of(public_url),
    });
    let http = qnp_shared::providers::http_client();
    // One process: revocations, restrictions and plan changes reach the proxy's key cache at once.
    let mut auth = qnp_auth::Auth::new(
        config,
        web.clone(),
        stores.counters.clone(),
        public_url,
        http,
    );
    auth.key_cache = Some(proxy.keys.clone());
    let auth = Arc::new(auth);
    let export = Arc::new(qnp_export::Export::new(web.clone(), config.export_stall));
    let mut payments = qnp_stripe_webhook::Payments::new(config, stores, web, plans, public_url)?;
    payments.webhooks.key_cache = Some(proxy.keys.clone());
    let payments = Arc::new(payments);
    let dashboard = Arc::new(qnp_dashboard::Dashboard::from_config(config)?);
    Ok(qnp_shared::web::with_fallbacks(
        qnp_proxy::router(proxy)
            .merge(qnp_dashboard::router(dashboard))
            .merge(qnp_auth::router(auth))
            .merge(qnp_export::router(export))
            .merge(qnp_stripe_webhook::router(payments)),
    ))
}
