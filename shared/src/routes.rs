//! The routes a function serves, declared once: each function lists its [`Endpoint`]s (method, path,
//! who may call it, handler), and its router, its session guard's public list, template.yaml's API
//! routes and the HTTP table in docs/http.md are all checked against that list (tests/tests/routes.rs).

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Anyone: pages, sign-in, Stripe's signed deliveries. The handler authenticates what it must.
    Public,
    /// A signed-in dashboard user (the session cookie), checked by `web::guard`.
    Session,
    /// An API key (`Authorization: Bearer`, or `x-api-key` where Anthropic clients send it).
    ApiKey,
}

/// One route: method and path (axum's syntax, `{id}`, `{*rest}`), access and handler.
pub struct Endpoint<S> {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<S>,
}

impl<S: Clone + Send + Sync + 'static> Endpoint<S> {
    /// `method` is a constant of the code, never input: one that axum cannot route is a bug that shows
    /// at start-up in every test.
    pub fn new<H: Handler<T, S>, T: 'static>(
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Endpoint<S> {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a routable method"));
        Endpoint {
            method,
            path,
            access,
            handler: on(filter, handler),
        }
    }
}

/// What outside tools see of a route: no handler, no state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteSpec {
    pub method: String,
    pub path: &'static str,
    pub access: Access,
}

/// The router of `endpoints`: one path with several methods becomes one route.
pub fn mount<S: Clone + Send + Sync + 'static>(endpoints: Vec<Endpoint<S>>) -> Router<S> {
    let mut paths: Vec<(&'static str, MethodRouter<S>)> = Vec::new();
    for endpoint in endpoints {
        match paths.iter_mut().find(|(p, _)| *p == endpoint.path) {
            Some((_, existing)) => {
                *existing = std::mem::take(existing).merge(endpoint.handler);
            }
            None => paths.push((endpoint.path, endpoint.handler)),
        }
    }
    paths
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

/// The routes of `endpoints` as outside tools see them.
pub fn specs<S>(endpoints: &[Endpoint<S>]) -> Vec<RouteSpec> {
    endpoints
        .iter()
        .map(|e| RouteSpec {
            method: e.method.to_string(),
            path: e.path,
            access: e.access,
        })
        .collect()
}

/// The routes of `endpoints` that need no session, for `web::Guard`.
pub fn public<S>(endpoints: &[Endpoint<S>]) -> Vec<(Method, &'static str)> {
    endpoints
        .iter()
        .filter(|e| e.access != Access::Session)
        .map(|e| (e.method.clone(), e.path))
        .collect()
}

/// A path in API Gateway's syntax: axum's greedy `{*name}` is `{name+}` there.
pub fn api_gateway_path(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix("{*") {
            Some(name) => format!("{{{}+}}", name.trim_end_matches('}')),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_segments_use_api_gateways_syntax() {
        assert_eq!(api_gateway_path("/assets/{*name}"), "/assets/{name+}");
        assert_eq!(api_gateway_path("/keys/{id}"), "/keys/{id}");
        assert_eq!(api_gateway_path("/"), "/");
    }
}
