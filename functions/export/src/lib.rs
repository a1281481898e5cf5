//! The `export` function: the dashboard's usage summary, the CSV usage export and the GDPR account
//! export. Exports stream from a database cursor to the response, so memory stays flat however many
//! rows there are.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use qnp_shared::web::{Guard, WebAuth};

mod account_export;
pub mod transfer;
mod usage;

pub struct Export {
    pub web: Arc<WebAuth>,
    /// The exports running in this process, bounded per account and overall.
    pub transfers: transfer::Transfers,
}

impl Export {
    /// `stall`: how long an export's client may take no bytes before the export is abandoned.
    pub fn new(web: Arc<WebAuth>, stall: std::time::Duration) -> Export {
        Export {
            web,
            transfers: transfer::Transfers::new(stall),
        }
    }
}

/// The export function's routes, all behind a session (no public routes).
pub fn router(export: Arc<Export>) -> Router {
    let guard = Guard {
        web: export.web.clone(),
        public: &[],
    };
    Router::new()
        .route("/usage", get(usage::summary))
        .route("/usage/export.csv", get(usage::csv))
        .route("/usage/calls", get(usage::recent))
        .route("/account/export", get(account_export::export))
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            qnp_shared::web::guard,
        ))
        .with_state(export)
}
