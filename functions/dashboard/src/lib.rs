//! The `dashboard` function: the page where users sign in, manage keys, see usage and billing, and
//! exercise their data rights. Everything it shows comes from the cookie-authenticated API on the same
//! origin; the page itself is static files compiled into the binary, served with a strict
//! Content-Security-Policy (no inline script or style, no third-party origin of any kind).
//!
//! `QNP_DASHBOARD_DIR` serves the files from a directory instead, read on each request, so the page can
//! be edited without rebuilding (development only).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use qnp_shared::GatewayError;
use qnp_shared::routes::{self, Access, Endpoint};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}
pub mod privacy;

/// Only our own origin, for everything; no inline code; the page cannot be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub struct Dashboard {
    /// Development override: serve from this directory instead of the compiled-in files.
    pub dir: Option<PathBuf>,
    /// The privacy page and its facts, rendered at start.
    pub privacy: privacy::Privacy,
}

impl Dashboard {
    pub fn from_config(config: &qnp_shared::config::Config) -> anyhow::Result<Dashboard> {
        Ok(Dashboard {
            dir: config.dashboard_dir.clone(),
            privacy: privacy::Privacy::load(config)?,
        })
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn secure_headers(response: &mut Response, name: &str) {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        headers.insert(k, HeaderValue::from_static(v));
    };
    set(headers, header::CONTENT_TYPE, content_type(name));
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    // Small files, not versioned by name: revalidate rather than serve a stale page after a deploy.
    set(headers, header::CACHE_CONTROL, "no-cache");
}

impl Dashboard {
    async fn file(&self, name: &str) -> Option<Vec<u8>> {
        // Names come from the URL: only plain relative paths inside the asset tree.
        let safe = !name.is_empty()
            && !name.starts_with('/')
            && name
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe {
            return None;
        }
        match &self.dir {
            Some(dir) => tokio::fs::read(dir.join(name)).await.ok(),
            None => assets::ASSETS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, body)| body.to_vec()),
        }
    }

    async fn serve(&self, name: &str) -> Response {
        match self.file(name).await {
            Some(body) => {
                let mut response = body.into_response();
                secure_headers(&mut response, name);
                response
            }
            None => GatewayError::NotFound(format!("no such file: /{name}")).into_response(),
        }
    }
}

async fn index(State(dashboard): State<Arc<Dashboard>>) -> Response {
    dashboard.serve("index.html").await
}

async fn asset(State(dashboard): State<Arc<Dashboard>>, Path(name): Path<String>) -> Response {
    dashboard.serve(&format!("assets/{name}")).await
}

/// The privacy policy, public, with the page's own headers.
async fn privacy_page(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let mut response = dashboard.privacy.page.clone().into_response();
    secure_headers(&mut response, "privacy.html");
    response
}

/// The same facts as data, for audits.
async fn privacy_json(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let mut response = dashboard.privacy.json.clone().into_response();
    secure_headers(&mut response, "privacy.json");
    response
}

/// The page and its files. No session is needed to load them: the page asks the API who is signed in.
pub fn endpoints() -> Vec<Endpoint<Arc<Dashboard>>> {
    use Access::Public;
    vec![
        Endpoint::new(Method::GET, "/", Public, index),
        Endpoint::new(Method::GET, "/assets/{*name}", Public, asset),
        Endpoint::new(Method::GET, "/privacy", Public, privacy_page),
        Endpoint::new(Method::GET, "/privacy.json", Public, privacy_json),
    ]
}

pub fn router(dashboard: Arc<Dashboard>) -> Router {
    routes::mount(endpoints()).with_state(dashboard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_in_file_has_a_known_type() {
        assert!(assets::ASSETS.iter().any(|(n, _)| *n == "index.html"));
        for (name, _) in assets::ASSETS {
            assert_ne!(content_type(name), "application/octet-stream", "{name}");
        }
    }
}
