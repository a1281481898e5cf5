//! The dashboard API's front door, shared by every function that serves cookie-authenticated routes:
//! deny by default (a route is public only if its function lists it), CSRF protection by origin for
//! every state change, and the signed-in account loaded from the session cookie.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::accounts::Account;
use crate::error::GatewayError;
use crate::sessions::{SESSION_COOKIE, Sessions, clear_session_cookie, cookie, session_cookie};
use crate::store::RecordStore;

/// What the cookie-authenticated routes of one process share.
pub struct WebAuth {
    pub sessions: Sessions,
    pub records: Arc<dyn RecordStore>,
    /// `scheme://host[:port]` of `QNP_PUBLIC_URL`: the only origin allowed to change state.
    pub public_origin: String,
}

impl WebAuth {
    /// The cookie-authenticated functions' shared state on Lambda, where the session secret and the
    /// public URL must be configured (locally `qnp serve` supplies defaults).
    pub fn for_lambda(
        config: &crate::config::Config,
        records: Arc<dyn RecordStore>,
    ) -> Result<(WebAuth, String), crate::config::ConfigError> {
        use crate::config::ConfigError;
        let secret = config.session_secret.clone().ok_or(ConfigError::Missing {
            variable: "QNP_SESSION_SECRET".into(),
            reason: "it signs and verifies session cookies".into(),
        })?;
        let public_url = config.public_url.clone().ok_or(ConfigError::Missing {
            variable: "QNP_PUBLIC_URL".into(),
            reason: "sign-in redirects and the CSRF origin check need it".into(),
        })?;
        let web = WebAuth {
            sessions: Sessions::new(secret.as_bytes()),
            records,
            public_origin: origin_of(&public_url),
        };
        Ok((web, public_url))
    }
}

/// The account a request is signed in as, for handlers (`Extension<SignedIn>`).
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub account: Account,
}

/// A route that needs no session: `(method, route template as registered)`.
pub type PublicRoute = (Method, &'static str);

#[derive(Clone)]
pub struct Guard {
    pub web: Arc<WebAuth>,
    pub public: Arc<[PublicRoute]>,
}

/// The origin part of a URL: `https://qnp.example.com/x` → `https://qnp.example.com`.
pub fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(url.len());
    url[..end].to_ascii_lowercase()
}

/// A state change must come from our own pages: the browser's `Origin` must be ours, or, where a
/// browser sends no `Origin`, `Sec-Fetch-Site` must say same-origin. Anything else is refused.
fn same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(public_origin));
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|site| site == "same-origin")
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The router of a function whose routes need a session unless they are `Access::Public`: deny by
/// default, every state change checked against the dashboard's origin.
pub fn guarded<S: Clone + Send + Sync + 'static>(
    endpoints: Vec<crate::routes::Endpoint<S>>,
    web: Arc<WebAuth>,
) -> axum::Router<S> {
    let guard = Guard {
        web,
        public: crate::routes::public(&endpoints).into(),
    };
    crate::routes::mount(endpoints)
        .route_layer(axum::middleware::from_fn_with_state(guard, self::guard))
}

/// Middleware: `axum::middleware::from_fn_with_state(guard, qnp_shared::web::guard)`.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let public = guard
        .public
        .iter()
        .any(|(method, path)| method == request.method() && *path == route);
    if public {
        return next.run(request).await;
    }
    if changes_state(request.method()) && !same_origin(request.headers(), &guard.web.public_origin)
    {
        return GatewayError::Forbidden(
            "cross-origin request refused: state changes must come from the QNP dashboard".into(),
        )
        .into_response();
    }
    let now = OffsetDateTime::now_utc();
    let signed_in = match signed_in(&guard.web, request.headers()).await {
        Ok(signed_in) => signed_in,
        Err(err) => {
            let mut response = err.into_response();
            if cookie(request.headers(), SESSION_COOKIE).is_some() {
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, clear_session_cookie());
            }
            return response;
        }
    };
    let refresh = signed_in.1;
    let account = signed_in.0;
    request.extensions_mut().insert(SignedIn {
        account: account.clone(),
    });
    let mut response = next.run(request).await;
    // A session close to expiry is re-issued while the user is active, unless the handler just
    // ended it (logout, deletion) and said so with its own Set-Cookie.
    if refresh && !response.headers().contains_key(header::SET_COOKIE) {
        let token = guard.web.sessions.issue(&account, now);
        response
            .headers_mut()
            .append(header::SET_COOKIE, session_cookie(&token));
    }
    response
}

/// The account behind the session cookie, and whether the cookie should be refreshed.
async fn signed_in(web: &WebAuth, headers: &HeaderMap) -> Result<(Account, bool), GatewayError> {
    let token = cookie(headers, SESSION_COOKIE).ok_or(GatewayError::NotSignedIn)?;
    let claims = web
        .sessions
        .verify_session(token)
        .ok_or(GatewayError::NotSignedIn)?;
    let account = web
        .records
        .account(&claims.sub)
        .await
        .map_err(GatewayError::internal)?
        .filter(|a| a.is_active() && a.session_version == claims.sv)
        .ok_or(GatewayError::NotSignedIn)?;
    let refresh = claims.needs_refresh(OffsetDateTime::now_utc());
    Ok((account, refresh))
}

/// The account signed in on this request, if any, for public routes that only want to know.
pub async fn current_account(
    web: &WebAuth,
    headers: &HeaderMap,
) -> Result<Option<Account>, GatewayError> {
    match signed_in(web, headers).await {
        Ok((account, _)) => Ok(Some(account)),
        Err(GatewayError::NotSignedIn) => Ok(None),
        Err(err) => Err(err),
    }
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    GatewayError::NotFound(format!("no such route: {} {path}", request.method()))
        .into_response_as(crate::error::Dialect::of_path(path))
}

async fn method_not_allowed(request: Request) -> Response {
    GatewayError::MethodNotAllowed
        .into_response_as(crate::error::Dialect::of_path(request.uri().path()))
}

/// A panic while handling one request: logged, and answered as a bare 500 for that request only.
fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = cause
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    GatewayError::internal(anyhow::anyhow!("a request handler panicked: {detail}")).into_response()
}

/// Applies the error-shaped fallbacks to a router (one function's, or `qnp serve`'s merge of all of
/// them), so unknown routes and wrong methods answer like every other error, and catches a panic in any
/// handler so it costs that request a 500 instead of the process (release builds unwind).
pub fn with_fallbacks(router: axum::Router) -> axum::Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}

/// Query parameters, parsed like `axum::extract::Query` but refused with the API's JSON error shape (a 400
/// that names the parameter) instead of axum's plain-text rejection.
pub struct QueryParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        query_of(&parts.uri).map(QueryParams)
    }
}

/// Parses a raw query string into `T`; any failure is a 400 saying which parameter is wrong.
pub fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, GatewayError> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| GatewayError::BadRequest("the query string is not valid".into()))?;
    query_of(&uri)
}

fn query_of<T: serde::de::DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, GatewayError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| GatewayError::BadRequest(e.body_text()))
}

/// Parses a JSON request body, with the same precise 400s the API gives everywhere.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            GatewayError::BadRequest(format!("invalid request body: {e}"))
        } else {
            GatewayError::MalformedJson(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn a_panicking_handler_costs_its_request_a_500_and_nothing_else() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            let empty: Vec<&'static str> = Vec::new();
            // A bug that indexes past the end.
            empty[std::hint::black_box(3)]
        }
        let app = with_fallbacks(
            axum::Router::new()
                .route("/boom", axum::routing::get(boom))
                .route("/fine", axum::routing::get(|| async { "ok" })),
        );
        for _ in 0..2 {
            let response = app
                .clone()
                .oneshot(
                    Request::get("/boom")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 500);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["type"], "internal_error");
            assert!(
                !body.to_string().contains("a bug that panics"),
                "no detail leaks"
            );
        }
        let response = app
            .oneshot(
                Request::get("/fine")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://QNP.example.com/app?x"),
            "https://qnp.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8787"), "http://127.0.0.1:8787");
    }

    #[test]
    fn same_origin_needs_our_origin_or_same_origin_fetch_metadata() {
        let ours = "https://qnp.example.com";
        let mut headers = HeaderMap::new();
        assert!(!same_origin(&headers, ours), "no evidence is refused");
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&headers, ours));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(
            !same_origin(&headers, ours),
            "a foreign Origin wins over fetch metadata"
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://qnp.example.com"),
        );
        assert!(same_origin(&headers, ours));
    }
}
