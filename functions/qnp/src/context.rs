//! What every command needs: configuration and stores, built the same way the functions build them.

use std::sync::Arc;

use qnp_shared::catalog::Catalog;
use qnp_shared::config::Config;
use qnp_shared::plans::Plans;
use qnp_shared::store::Stores;

pub struct Context {
    pub config: Config,
    pub stores: Stores,
    pub catalog: Arc<Catalog>,
    pub plans: Arc<Plans>,
}

impl Context {
    pub async fn load() -> anyhow::Result<Context> {
        let config = Config::load().await?;
        let stores = Stores::from_config(&config).await?;
        let catalog = Arc::new(Catalog::load(config.models_file.as_deref())?);
        let plans = Arc::new(Plans::from_config(&config)?);
        Ok(Context {
            config,
            stores,
            catalog,
            plans,
        })
    }
}
