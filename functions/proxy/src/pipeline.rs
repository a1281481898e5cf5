//! One proxied call, for every route: authenticate and admit, read and validate the body, resolve the
//! model, reserve its worst case, ask the upstream, answer. A route only describes itself ([`Route`]);
//! every step that can fail returns its error with `?`, and one place ([`handle`]) turns an error into
//! the call's usage row and the route's error answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use qnp_shared::GatewayError;
use qnp_shared::catalog::{Model, ModelKind};
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::{ChatRequest, Reply, RequestBody};

use crate::call::{Call, begin_with_body};
use crate::routing::{self, Api};
use crate::{Proxy, streaming};

/// What a route is: its path (as usage rows name it), its error shape, how its body is checked, which
/// models it takes and which upstream call serves it.
pub struct Route {
    pub endpoint: &'static str,
    pub dialect: Dialect,
    /// Checks the fields the gateway itself relies on (the upstream validates the rest) and bounds what
    /// the call may cost; gets the body's size in bytes.
    pub validate: fn(&RequestBody, usize) -> Result<Checked, GatewayError>,
    /// The kind of model the route serves, and what to tell a caller who named another kind.
    pub model_kind: ModelKind,
    pub wrong_kind: &'static str,
    pub fallbacks: Fallbacks,
    pub api: Api,
    /// Request headers passed on to the upstream (Anthropic's version and beta flags).
    pub client_headers: &'static [ClientHeader],
}

/// A client request header a route forwards to the upstream.
pub struct ClientHeader {
    pub name: &'static str,
    /// Refuses values the gateway cannot serve (a beta billed at rates it does not price).
    pub check: fn(&str) -> Result<(), GatewayError>,
}

/// The longest header value forwarded (Claude Code's beta list is about 150 bytes).
const MAX_CLIENT_HEADER_BYTES: usize = 2048;

/// The route's client headers present on a request, checked.
fn client_headers(
    route: &Route,
    headers: &axum::http::HeaderMap,
) -> Result<Vec<(&'static str, String)>, GatewayError> {
    let mut out = Vec::new();
    for header in route.client_headers {
        // A header sent more than once is one comma-separated list (RFC 9110), checked and forwarded whole.
        let mut values = headers.get_all(header.name).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        let value = values
            .map(|v| v.to_str().ok())
            .collect::<Option<Vec<&str>>>()
            .map(|parts| parts.join(","))
            .filter(|v| v.len() <= MAX_CLIENT_HEADER_BYTES)
            .ok_or_else(|| {
                GatewayError::field(
                    header.name,
                    format!(
                        "the {} header must be printable ASCII of at most {MAX_CLIENT_HEADER_BYTES} bytes",
                        header.name
                    ),
                )
            })?;
        (header.check)(&value)?;
        out.push((header.name, value));
    }
    Ok(out)
}

/// Which models may answer if the requested one fails.
pub enum Fallbacks {
    /// The client's own list (`models`, a gateway field the upstream never sees), else the operator's.
    ClientOrConfigured,
    /// The operator's fallbacks for the model.
    Configured,
    /// The requested model only, without retries.
    None,
}

/// What validation found in a body.
pub struct Checked {
    pub model: String,
    pub stream: bool,
    /// A streamed answer also forwards the usage-only event (OpenAI's `stream_options.include_usage`).
    pub include_usage: bool,
    pub bound: CostBound,
}

/// The request's `model`, which every route needs; `missing` is the route's message when it is absent.
pub fn model_field(body: &RequestBody, missing: &str) -> Result<String, GatewayError> {
    body.get("model", "a string naming a model as provider/model")?
        .ok_or_else(|| GatewayError::field("model", missing))
}

/// Serves one request on `route`.
pub async fn handle(proxy: Arc<Proxy>, request: Request, route: &'static Route) -> Response {
    let headers = client_headers(route, request.headers());
    let (mut call, body) =
        match begin_with_body(&proxy, request, route.endpoint, route.dialect).await {
            Ok(started) => started,
            Err(response) => return response,
        };
    let outcome = match headers {
        Ok(headers) => run(&proxy, &mut call, route, &body, headers).await,
        Err(err) => Err(err),
    };
    match outcome {
        Ok((Reply::Complete { body: reply, usage }, _)) => {
            // A provider that reports no usage is billed by an estimate from the bytes exchanged
            // (embeddings generate no text: only their input counts).
            let output = if matches!(route.api, Api::Embeddings | Api::CountTokens) {
                0
            } else {
                reply.len()
            };
            let usage = usage.unwrap_or_else(|| call.estimate(output));
            call.respond(reply, usage).await
        }
        Ok((Reply::Stream(events), include_usage)) => {
            streaming::respond(call, events, include_usage, route.api)
        }
        Err(err) => call.fail(err).await,
    }
}

/// The steps between a read body and the upstream's reply.
async fn run(
    proxy: &Arc<Proxy>,
    call: &mut Call,
    route: &Route,
    bytes: &Bytes,
    headers: Vec<(&'static str, String)>,
) -> Result<(Reply, bool), GatewayError> {
    let mut body = RequestBody::parse(bytes)?;
    let checked = (route.validate)(&body, bytes.len())?;
    let model = proxy
        .catalog
        .get(&checked.model)
        .cloned()
        .ok_or_else(|| GatewayError::unknown_model(&checked.model))?;
    call.set_model(model.clone(), checked.stream);
    call.set_requested_model(checked.model.clone());
    if model.kind != route.model_kind {
        return Err(GatewayError::WrongModelKind(format!(
            "'{}' {}",
            model.id, route.wrong_kind
        )));
    }
    let controls = &call.key.controls;
    if !controls.allows_model(&model.id) {
        return Err(controls.model_error(&model.id));
    }
    let (mut candidates, client_listed): (Vec<Arc<Model>>, bool) = match route.fallbacks {
        Fallbacks::None => {
            // The provider must be there before anything is reserved for it.
            proxy.providers.get(model.provider)?;
            (vec![model], false)
        }
        Fallbacks::Configured => (routing::candidates(proxy, &model, None)?, false),
        Fallbacks::ClientOrConfigured => {
            let requested = body.get::<Vec<String>>("models", "an array of model names")?;
            body.remove("models");
            let listed = requested.is_some();
            (routing::candidates(proxy, &model, requested)?, listed)
        }
    };
    // Fallbacks obey the key's allowlist too: one the client named is refused like the model it asked
    // for; one the operator configured is skipped (the key's owner never chose it).
    if let Some(outside) = candidates.iter().find(|m| !controls.allows_model(&m.id)) {
        if client_listed {
            return Err(controls.model_error(&outside.id));
        }
        candidates.retain(|m| controls.allows_model(&m.id));
    }
    for candidate in &candidates {
        checked.bound.priced_for(candidate)?;
    }
    call.set_priced_request(&checked.bound);
    if route.api != Api::CountTokens {
        // Counting tokens generates nothing and is not billed: there is nothing to reserve.
        if let Some(cap) = call.reserve(&candidates, &checked.bound).await? {
            // The spend cap left room for this much output: the upstream must not generate more.
            body.set(output_limit_field(route.api, &candidates[0]), &cap);
        }
    }
    if matches!(route.api, Api::Embeddings | Api::Compact | Api::CountTokens) {
        let model = &candidates[0];
        let provider = proxy.providers.get(model.provider)?;
        let reply = match route.api {
            Api::Embeddings => provider.embeddings(model, body).await?,
            Api::Compact => provider.compact(model, body).await?,
            _ => {
                let request = ChatRequest::new(body, false).with_client_headers(headers);
                provider.count_tokens(model, request).await?
            }
        };
        return match reply {
            Reply::Complete { .. } => Ok((reply, false)),
            Reply::Stream(_) => Err(GatewayError::internal(anyhow::anyhow!(
                "{} replied with a stream",
                route.endpoint
            ))),
        };
    }
    let (served_by, reply) =
        routing::first_answer(proxy, &candidates, body, checked.stream, route.api, headers).await?;
    call.set_model(served_by, checked.stream);
    Ok((reply, checked.include_usage))
}

/// The request field that limits a route's output: Responses' own; on chat, the current field, which
/// OpenAI's reasoning models require and every translation reads, except for OpenAI-compatible servers
/// that only speak chat (older servers know only `max_tokens`). Messages always carry `max_tokens`.
fn output_limit_field(api: Api, model: &Model) -> &'static str {
    match api {
        Api::Responses | Api::Compact => "max_output_tokens",
        Api::Messages => "max_tokens",
        _ if model.responses_api == Some(false) => "max_tokens",
        _ => "max_completion_tokens",
    }
}

/// The handler that serves `route`.
pub fn serve(
    route: &'static Route,
) -> impl Fn(State<Arc<Proxy>>, Request) -> BoxFuture<'static, Response> + Clone + Send + Sync + 'static
{
    move |State(proxy), request| Box::pin(handle(proxy, request, route))
}
