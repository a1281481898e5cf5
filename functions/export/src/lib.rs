//! The `export` function: the dashboard's usage summary, the CSV usage export and the GDPR account
//! export. Exports stream from a database cursor to the response, so memory stays flat however many
//! rows there are.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use qnp_shared::routes::{Access, Endpoint};
use qnp_shared::web::WebAuth;

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

/// The export function's routes, all behind a session.
pub fn endpoints() -> Vec<Endpoint<Arc<Export>>> {
    use Access::Session;
    vec![
        Endpoint::new(Method::GET, "/usage", Session, usage::summary),
        Endpoint::new(Method::GET, "/usage/export.csv", Session, usage::csv),
        Endpoint::new(Method::GET, "/usage/calls", Session, usage::recent),
        Endpoint::new(
            Method::GET,
            "/account/export",
            Session,
            account_export::export,
        ),
    ]
}

pub fn router(export: Arc<Export>) -> Router {
    qnp_shared::web::guarded(endpoints(), export.web.clone()).with_state(export)
}
