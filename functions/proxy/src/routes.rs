//! Fallbacks shared by every function's router, so unknown routes answer in the API's error shape.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use qnp_shared::GatewayError;

pub async fn not_found(request: Request) -> Response {
    GatewayError::NotFound(format!("{} {}", request.method(), request.uri().path())).into_response()
}

pub async fn method_not_allowed() -> Response {
    GatewayError::MethodNotAllowed.into_response()
}

/// Applies the fallbacks to a router (one function's, or `qnp serve`'s merge of all of them).
pub fn with_fallbacks(router: axum::Router) -> axum::Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
