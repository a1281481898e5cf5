//! One proxied call from authentication to its usage row: the steps every route shares.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use qnp_shared::GatewayError;
use qnp_shared::budget::{Reservation, WorstCase};
use qnp_shared::catalog::Model;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::{Dialect, KeyControl};
use qnp_shared::keys::AuthorizedKey;
use qnp_shared::limits::RateLimitState;
use qnp_shared::pricing::{AppliedRates, ServiceTier};
use qnp_shared::usage::{TokenUsage, UsageRecord};
use time::OffsetDateTime;

use crate::Proxy;
use crate::annotate::{self, Annotation};

/// The key presented with a request: `Authorization: Bearer <key>` (and `x-api-key`, which Anthropic's
/// clients send).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, key) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// The caller's address: API Gateway's or the function URL's view of it on Lambda, the socket peer under
/// `qnp serve`. Client-supplied forwarding headers are not trusted.
fn source_ip(request: &Parts) -> Option<String> {
    use lambda_http::request::RequestContext;
    if let Some(context) = request.extensions.get::<RequestContext>() {
        return match context {
            RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
            RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
            _ => None,
        };
    }
    request
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// An authenticated, admitted call. Dropping it without `finish` records nothing; every path that
/// reached an upstream or refused after authentication ends in `finish` or `fail`.
pub struct Call {
    pub proxy: Arc<Proxy>,
    pub key: Arc<AuthorizedKey>,
    pub rate: Option<RateLimitState>,
    request_id: String,
    started: Instant,
    timestamp: OffsetDateTime,
    endpoint: &'static str,
    source_ip: Option<String>,
    model: Option<Arc<Model>>,
    /// The model name the client asked for, which every answer carries back (whatever the upstream
    /// calls its model, or whichever fallback served).
    requested_model: Option<String>,
    streamed: bool,
    /// The error shape this route answers in.
    pub dialect: Dialect,
    /// Size of the request body, for estimating usage a provider does not report.
    request_bytes: usize,
    /// What the call holds against its token limit and spend cap until `finish` settles it.
    reservation: Reservation,
    /// The output limit the gateway set because the client set none and the spend cap needed one.
    output_cap: Option<u64>,
    /// The processing tier the request selected: priced when the provider's answer reports none.
    requested_tier: ServiceTier,
    /// Images in the request, for models with a per-image fee.
    input_images: u64,
    /// The request asked for extended prompt-cache retention: its cache writes are long-lived ones.
    long_cache_writes: bool,
}

/// The least output a capped call may be given: below it the answer would be cut too short to use, and
/// the call is refused (402) instead.
pub const MIN_CAPPED_OUTPUT: u64 = 1024;

/// When to retry a call refused because usage cannot be recorded: the outbox is drained every 5 s.
const DRAIN_RETRY_SECS: u64 = 5;

/// Adds the headers every proxy response carries.
fn decorate(response: &mut Response, request_id: &str, rate: Option<&RateLimitState>) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    if let Some(rate) = rate {
        rate.apply(headers);
    }
}

impl Call {
    /// Authenticates the key and counts the request against its plan. Failures before authentication
    /// succeeded have no account to charge and are answered without a usage row.
    pub async fn begin(
        proxy: &Arc<Proxy>,
        request: &Parts,
        endpoint: &'static str,
        dialect: Dialect,
    ) -> Result<Call, Response> {
        let started = Instant::now();
        let request_id = new_request_id();
        let refuse = |err: GatewayError| {
            let mut response = err.into_response_as(dialect);
            decorate(&mut response, &request_id, None);
            response
        };
        let presented =
            presented_key(&request.headers).ok_or_else(|| refuse(GatewayError::MissingKey))?;
        if !proxy.usage.accepting() {
            // The outbox is full: a call now could not be billed.
            return Err(refuse(GatewayError::StoreUnavailable {
                message: "the gateway cannot record usage right now",
                retry_after_secs: DRAIN_RETRY_SECS,
            }));
        }
        let source = source_ip(request);
        let peer = source.as_deref().and_then(|ip| ip.parse().ok());
        let key = proxy.keys.verify(presented, peer).await.map_err(refuse)?;
        let mut call = Call {
            proxy: proxy.clone(),
            key,
            rate: None,
            request_id: request_id.clone(),
            started,
            timestamp: OffsetDateTime::now_utc(),
            endpoint,
            source_ip: source,
            model: None,
            requested_model: None,
            streamed: false,
            dialect,
            request_bytes: 0,
            reservation: Reservation::default(),
            output_cap: None,
            requested_tier: ServiceTier::Standard,
            input_images: 0,
            long_cache_writes: false,
        };
        if call.key.restricted {
            let err = GatewayError::Forbidden(
                "processing is restricted for this account at its owner's request; lift the \
                 restriction in the dashboard to use its keys again"
                    .into(),
            );
            return Err(call.fail(err).await);
        }
        if call.key.controls.expired(call.timestamp) {
            let err = call.key.controls.expired_error();
            return Err(call.fail(err).await);
        }
        let plan_limit = call.plan().requests_per_minute;
        // The key's own limit applies when it is below the plan's; a refusal then names it.
        let key_limit = call
            .key
            .controls
            .requests_per_minute
            .filter(|&own| own < plan_limit);
        let limit = key_limit.unwrap_or(plan_limit);
        match proxy
            .limiter
            .admit(&call.key.key_id, limit, call.timestamp)
            .await
        {
            Ok(state) => call.rate = Some(state),
            Err(err) => {
                let err = match err {
                    GatewayError::RateLimited {
                        limit,
                        retry_after_secs,
                    } => {
                        // A refusal reports the exhausted window too.
                        call.rate = Some(RateLimitState {
                            limit,
                            remaining: 0,
                            reset_after_secs: retry_after_secs,
                        });
                        match key_limit {
                            Some(own) => GatewayError::KeyControl {
                                control: KeyControl::RequestsPerMinute { retry_after_secs },
                                message: format!(
                                    "rate limit reached: {own} requests per minute, this key's own \
                                     limit (its plan allows {plan_limit}); retry after \
                                     {retry_after_secs} s, or raise the key's limit"
                                ),
                            },
                            None => err,
                        }
                    }
                    other => other,
                };
                return Err(call.fail(err).await);
            }
        }
        Ok(call)
    }

    /// The plan whose limits this call runs under.
    fn plan(&self) -> &qnp_shared::plans::Plan {
        self.key
            .plan_in_force(&self.proxy.plans, self.timestamp, self.proxy.billing_grace)
    }

    /// Reserves the call's worst case against the plan's tokens-per-minute limit and monthly spend cap,
    /// before anything goes upstream: for the token limit, the prompt's estimate plus the output the
    /// client asked for; for the spend cap, the bound of `cost_bound` (the prompt at one token per byte,
    /// every choice at its output limit), priced at the dearest model that may serve it.
    ///
    /// A call that set no output limit, and whose worst case at the model's own limit is more than a
    /// quarter of what the month has left, gets a limit instead of a refusal: the most output that
    /// quarter buys (at least [`MIN_CAPPED_OUTPUT`]). That limit is returned, so the request carries it
    /// upstream (the reservation holds only if the provider cannot generate more), and the answer says
    /// so in `x-qnp-max-output-tokens`. A quarter, so that a few such calls in flight at once all fit.
    pub async fn reserve(
        &mut self,
        candidates: &[Arc<Model>],
        bound: &CostBound,
    ) -> Result<Option<u64>, GatewayError> {
        let plan = self.plan();
        let key_limit = self.key.controls.monthly_spend_limit_usd;
        if plan.tokens_per_minute.is_none()
            && plan.monthly_spend_cap_usd.is_none()
            && key_limit.is_none()
        {
            return Ok(None);
        }
        let mut worst = WorstCase {
            tokens: 0,
            cost_usd: 0.0,
            max_tokens_given: bound.max_output.is_some(),
        };
        for model in candidates {
            worst.tokens = worst.tokens.max(bound.admission_tokens(model));
            worst.cost_usd = worst.cost_usd.max(bound.for_model(model).cost_usd);
        }
        let mut output_cap = None;
        let left = match bound.max_output {
            None => self.spend_left(plan.monthly_spend_cap_usd, key_limit).await,
            Some(_) => None,
        };
        if let Some(left) = left {
            let share = left / 4.0;
            if worst.cost_usd > share {
                let tokens = candidates
                    .iter()
                    .map(|m| bound.affordable_output(m, share))
                    .min()
                    .unwrap_or(0);
                if tokens >= MIN_CAPPED_OUTPUT {
                    let capped = CostBound {
                        max_output: Some(tokens),
                        ..*bound
                    };
                    worst.cost_usd = candidates
                        .iter()
                        .map(|m| capped.for_model(m).cost_usd)
                        .fold(0.0, f64::max);
                    output_cap = Some(tokens);
                }
            }
        }
        self.reservation = self
            .proxy
            .budget
            .reserve(
                &self.key.key_id,
                &self.key.account_id,
                plan,
                key_limit,
                worst,
                self.timestamp,
            )
            .await?;
        self.output_cap = output_cap;
        Ok(output_cap)
    }

    /// What the month has left under the tighter of the account's cap and the key's own limit, in-flight
    /// reservations included; None when neither applies. A failed read counts as nothing spent (the
    /// reservation decides).
    async fn spend_left(&self, cap_usd: Option<f64>, key_limit_usd: Option<f64>) -> Option<f64> {
        let budget = &self.proxy.budget;
        let mut left: Option<f64> = None;
        if let Some(cap) = cap_usd {
            let spent = budget
                .spent(&self.key.account_id, self.timestamp)
                .await
                .unwrap_or(0.0);
            left = Some((cap - spent).max(0.0));
        }
        if let Some(limit) = key_limit_usd {
            let spent = budget
                .key_spent(&self.key.key_id, self.timestamp)
                .await
                .unwrap_or(0.0);
            let own = (limit - spent).max(0.0);
            left = Some(left.map_or(own, |l| l.min(own)));
        }
        left
    }

    pub fn set_requested_model(&mut self, name: String) {
        self.requested_model = Some(name);
    }

    /// The request's facts that change its price beyond its tokens, as the cost bound read them.
    pub fn set_priced_request(&mut self, bound: &CostBound) {
        self.requested_tier = bound.service_tier;
        self.input_images = bound.images;
        self.long_cache_writes = bound.long_cache_writes;
    }

    /// The usage as billed: bounded, with the request's images counted when the call was served, and
    /// every cache write a long-lived one when the request asked for extended retention (OpenAI reports
    /// writes without their lifetime).
    fn billed(&self, usage: TokenUsage, served: bool) -> TokenUsage {
        let mut usage = usage.bounded();
        if served {
            usage.input_images = self.input_images;
        }
        if self.long_cache_writes {
            usage.cache_write_1h_tokens = usage.cache_write_tokens;
        }
        usage
    }

    /// What `usage` costs on the model that served the call, at the tier the answer reports (else the
    /// one the request asked for), and the rates applied.
    fn priced(&self, model: &Model, usage: &TokenUsage) -> (f64, AppliedRates) {
        model.price(usage, usage.service_tier.unwrap_or(self.requested_tier))
    }

    /// What to write into bytes of the answer that report `usage` (none: they report none).
    fn annotation(&self, usage: Option<&TokenUsage>) -> Annotation<'_> {
        Annotation {
            model: self.requested_model.as_deref(),
            cost: usage.zip(self.model.as_ref()).map(|(usage, model)| {
                (
                    self.priced(model, &self.billed(*usage, true)).0,
                    self.proxy.catalog.version(),
                )
            }),
        }
    }

    /// One streamed event as the client gets it: naming the model it asked for, and the cost of the
    /// usage the event reports, if it reports any.
    pub fn present_event(&self, bytes: Bytes, usage: Option<&TokenUsage>) -> Bytes {
        annotate::event(bytes, &self.annotation(usage))
    }

    pub fn set_model(&mut self, model: Arc<Model>, streamed: bool) {
        self.model = Some(model);
        self.streamed = streamed;
    }

    fn set_request_bytes(&mut self, bytes: usize) {
        self.request_bytes = bytes;
    }

    /// Usage for a reply whose provider reported none: an estimate, flagged as such on the row.
    pub fn estimate(&self, response_bytes: usize) -> TokenUsage {
        TokenUsage::estimate(self.request_bytes, response_bytes)
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn row(
        &self,
        status: u16,
        usage: TokenUsage,
        ttft_ms: Option<u64>,
        error: Option<&str>,
    ) -> UsageRecord {
        let usage = self.billed(usage, status == 200);
        let (provider, model, cost, rates) = match &self.model {
            Some(m) => {
                let (cost, rates) = self.priced(m, &usage);
                (
                    m.provider.as_str().to_owned(),
                    m.id.clone(),
                    cost,
                    Some(rates),
                )
            }
            None => (String::new(), String::new(), 0.0, None),
        };
        UsageRecord {
            timestamp: self.timestamp,
            request_id: self.request_id.clone(),
            account_id: self.key.account_id.clone(),
            api_key_id: self.key.key_id.clone(),
            endpoint: self.endpoint.to_owned(),
            provider,
            model,
            streamed: self.streamed,
            status,
            usage,
            latency_ms: self.elapsed_ms(),
            ttft_ms,
            cost_usd: cost,
            price_version: self.proxy.catalog.version().to_owned(),
            error_type: error.map(str::to_owned),
            source_ip: self.source_ip.clone(),
            rates,
            output_cap_tokens: self.output_cap,
            count: 1,
        }
    }

    /// Records the call's usage row and settles its reservation to what it really used.
    pub async fn finish(
        &self,
        status: u16,
        usage: TokenUsage,
        ttft_ms: Option<u64>,
        error: Option<&str>,
    ) {
        let row = self.row(status, usage, ttft_ms, error);
        log_call(&row);
        if !self.reservation.is_empty() {
            let tokens = row.usage.total();
            let (budget, reservation, cost) = (
                self.proxy.budget.clone(),
                self.reservation.clone(),
                row.cost_usd,
            );
            if self.proxy.usage.is_inline() {
                // On Lambda nothing may outlive the invocation.
                budget.settle(&reservation, tokens, cost).await;
            } else {
                tokio::spawn(async move { budget.settle(&reservation, tokens, cost).await });
            }
        }
        self.proxy.usage.record(row).await;
    }

    /// Records a refused or failed call and renders its error response. A refusal decided before
    /// anything went upstream is summed up with its key's others of the minute (bounded storage, and a
    /// log line for the first only); a failure at the upstream gets a row of its own.
    pub async fn fail(self, err: GatewayError) -> Response {
        let (status, kind) = (err.status().as_u16(), err.kind());
        if err.is_refusal() && self.reservation.is_empty() {
            let row = self.row(status, TokenUsage::default(), None, Some(kind));
            let shown = row.clone();
            if self.proxy.usage.record_refusal(row).await {
                log_call(&shown);
            }
        } else {
            self.finish(status, TokenUsage::default(), None, Some(kind))
                .await;
        }
        let mut response = err.into_response_as(self.dialect);
        decorate(&mut response, &self.request_id, self.rate.as_ref());
        response
    }

    /// A whole JSON body to the client, with the usage row written without delaying it where possible.
    pub async fn respond(self, body: Bytes, usage: TokenUsage) -> Response {
        let annotation = self.annotation(Some(&usage));
        let cost = annotation.cost;
        let body = annotate::body(body, &annotation);
        let mut response = self.ok_response(Body::empty(), "application/json");
        if let Some((usd, version)) = cost {
            // The same figures as the body's usage.cost, for clients that read headers only.
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&usd.to_string()) {
                headers.insert("x-qnp-cost-usd", value);
            }
            if let Ok(value) = HeaderValue::from_str(version) {
                headers.insert("x-qnp-price-version", value);
            }
        }
        *response.body_mut() = if self.proxy.usage.is_inline() {
            // On Lambda the row must be written before the invocation ends: hand the client every byte
            // first, then write, then end the response stream.
            Body::from_stream(async_stream::stream! {
                yield Ok::<Bytes, std::convert::Infallible>(body);
                self.finish(200, usage, None, None).await;
            })
        } else {
            self.finish(200, usage, None, None).await;
            Body::from(body)
        };
        response
    }

    /// An error answer for a request that is not a metered call (a catalog lookup): the route's error
    /// shape and the call's headers, and no usage row.
    pub fn error_response(&self, err: GatewayError) -> Response {
        let mut response = err.into_response_as(self.dialect);
        decorate(&mut response, &self.request_id, self.rate.as_ref());
        response
    }

    pub fn ok_response(&self, body: Body, content_type: &'static str) -> Response {
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        decorate(&mut response, &self.request_id, self.rate.as_ref());
        if let Some(cap) = self.output_cap {
            response
                .headers_mut()
                .insert("x-qnp-max-output-tokens", HeaderValue::from(cap));
        }
        response
    }
}

/// The call's one log line: metadata only, the same fields as its usage row.
fn log_call(row: &UsageRecord) {
    tracing::info!(
        request_id = %row.request_id,
        account_id = %row.account_id,
        api_key_id = %row.api_key_id,
        endpoint = row.endpoint,
        model = %row.model,
        streamed = row.streamed,
        status = row.status,
        prompt_tokens = row.usage.prompt_tokens,
        completion_tokens = row.usage.completion_tokens,
        latency_ms = row.latency_ms,
        ttft_ms = row.ttft_ms,
        cost_usd = row.cost_usd,
        error_type = row.error_type.as_deref(),
        "call"
    );
}

/// The shared start of every route that takes a body: authenticate and admit, then read the body
/// (within the size limit). Refusals are already rendered (and metered, once a key was verified).
pub async fn begin_with_body(
    proxy: &Arc<Proxy>,
    request: axum::extract::Request,
    endpoint: &'static str,
    dialect: Dialect,
) -> Result<(Call, Bytes), Response> {
    let (parts, body) = request.into_parts();
    let mut call = Call::begin(proxy, &parts, endpoint, dialect).await?;
    match read_body(&parts, body, proxy.max_body_bytes).await {
        Ok(body) => {
            call.set_request_bytes(body.len());
            Ok((call, body))
        }
        Err(err) => Err(call.fail(err).await),
    }
}

/// Reads the request body up to the configured limit; larger bodies are refused before any upstream call.
async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge { limit_bytes: limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return GatewayError::BodyTooLarge { limit_bytes: limit };
            }
            if err.is::<qnp_shared::error::BodyTimedOut>() {
                return GatewayError::RequestTimeout;
            }
            source = err.source();
        }
        GatewayError::MalformedJson(format!("the request body could not be read: {e}"))
    })
}
