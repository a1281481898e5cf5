// A loopback stand-in for the Stripe API endpoints QNP calls through async-stripe, plus the two pages
// Stripe hosts (Checkout and the Billing Portal), so the browser journey can upgrade and manage billing
// end to end. Node 20 standard library only.
//
// API (answers in Stripe's current JSON shape, which async-stripe's typed parser requires):
//   POST /v1/customers                 customer; the same Idempotency-Key replays the same customer
//   DELETE /v1/customers/<id>          deleted customer (the retention pass calls it)
//   POST /v1/checkout/sessions         open subscription-mode session, url = <this server>/pay/<id>
//   GET  /v1/subscriptions/<id>        the subscription a payment created
//   POST /v1/billing_portal/sessions   portal session, url = <this server>/portal/<id>
// Pages:
//   GET  /pay/<session id>             "Stripe Checkout (test stand-in)": a Pay button (plain form POST)
//   POST /pay/<session id>             the payment succeeds: a subscription is created, then signed
//                                      `checkout.session.completed` and `customer.subscription.created`
//                                      deliveries go to $QNP_URL/webhooks/stripe in that order, each must
//                                      get 200, and the browser is sent (303) to the session's success_url
//   GET  /portal/<session id>          "Billing portal (test stand-in)": a link back to its return_url
// Test hooks:
//   GET  /_requests                    {"requests": [every API request: method, path, form (decoded),
//                                      idempotency_key, authorization, stripe_version], "deliveries":
//                                      [every webhook delivery: event id, type, status, response body],
//                                      "customers": [the customers that exist]}
//
// Environment: QNP_URL (where deliveries go), STRIPE_WEBHOOK_SECRET (signs them), PORT (default 0).
// Prints exactly one line to stdout once ready: `mock_stripe listening on http://127.0.0.1:PORT`.

import * as http from "node:http";
import { createHmac } from "node:crypto";

const QNP_URL = (process.env.QNP_URL || "").replace(/\/$/, "");
const SECRET = process.env.STRIPE_WEBHOOK_SECRET || "";
if (!QNP_URL || !SECRET) {
  console.error("mock_stripe: set QNP_URL and STRIPE_WEBHOOK_SECRET");
  process.exit(2);
}
const API_VERSION = "2026-09-30.endive";
const DAY = 86_400;

const requests = [];
const deliveries = [];
const customers = new Map();
const customersByKey = new Map();
const checkoutSessions = new Map();
const portalSessions = new Map();
const subscriptions = new Map();
let counter = 0;
let baseUrl = "";

const now = () => Math.floor(Date.now() / 1000);
const nextId = (prefix) => `${prefix}_mock${String(++counter).padStart(8, "0")}`;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}
const json = (res, status, value) => send(res, status, "application/json", JSON.stringify(value));
const html = (res, status, body) => send(res, status, "text/html; charset=utf-8", body);

function stripeError(res, status, code, message) {
  const type = status >= 500 ? "api_error" : "invalid_request_error";
  json(res, status, { error: { type, code, message } });
}

const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function page(title, body) {
  // No script at all; an empty data: icon so the browser asks for no /favicon.ico (a 404 would log an error).
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>${escape(title)}</title>
<style>body{font:16px system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}button{font:inherit;padding:.5rem 1.5rem}</style>
</head><body><h1>${escape(title)}</h1>
${body}
</body></html>`;
}

/** A subscription in the current API shape (period end on its item, as since 2025-03-31); the same
 * fields as tests/src/mock_stripe.rs `subscription_json`, all of which the typed parser requires. */
function subscriptionJson({ id, customer, accountId, price, status, currentPeriodEnd, cancelAtPeriodEnd }) {
  const start = currentPeriodEnd - 30 * DAY;
  return {
    id, object: "subscription", application: null, application_fee_percent: null,
    automatic_tax: { disabled_reason: null, enabled: false, liability: null },
    billing_cycle_anchor: start, billing_cycle_anchor_config: null,
    billing_mode: { flexible: null, type: "classic" }, billing_schedules: [],
    billing_thresholds: null, cancel_at: null, cancel_at_period_end: cancelAtPeriodEnd,
    canceled_at: null, cancellation_details: { comment: null, feedback: null, reason: null },
    collection_method: "charge_automatically", created: start, currency: "usd",
    customer, customer_account: null, days_until_due: null,
    default_payment_method: "pm_mock", default_source: null, default_tax_rates: [],
    description: null, discounts: [], ended_at: null,
    invoice_settings: { account_tax_ids: null, issuer: { type: "self" } },
    items: {
      object: "list",
      data: [{
        id: `si_${id}`, object: "subscription_item", billing_thresholds: null,
        created: start, current_period_end: currentPeriodEnd, current_period_start: start,
        discounts: [], metadata: {},
        plan: {
          id: price, object: "plan", active: true, amount: 2000,
          amount_decimal: "2000", billing_scheme: "per_unit", created: start - DAY,
          currency: "usd", interval: "month", interval_count: 1, livemode: false,
          metadata: {}, meter: null, nickname: null, product: "prod_mock",
          tiers_mode: null, transform_usage: null, trial_period_days: null,
          usage_type: "licensed",
        },
        price: {
          id: price, object: "price", active: true, billing_scheme: "per_unit",
          created: start - DAY, currency: "usd", custom_unit_amount: null,
          livemode: false, lookup_key: null, metadata: {}, nickname: null,
          product: "prod_mock",
          recurring: { interval: "month", interval_count: 1, meter: null, trial_period_days: null, usage_type: "licensed" },
          tax_behavior: "unspecified", tiers_mode: null, transform_quantity: null,
          type: "recurring", unit_amount: 2000, unit_amount_decimal: "2000",
        },
        quantity: 1, subscription: id, tax_rates: [],
      }],
      has_more: false, total_count: 1,
      url: `/v1/subscription_items?subscription=${id}`,
    },
    latest_invoice: null, livemode: false, metadata: { account_id: accountId },
    next_pending_invoice_item_invoice: null, on_behalf_of: null, pause_collection: null,
    payment_settings: { payment_method_options: null, payment_method_types: null, save_default_payment_method: "off" },
    pending_invoice_item_interval: null, pending_setup_intent: null, pending_update: null,
    schedule: null, start_date: start, status, test_clock: null,
    transfer_data: null, trial_end: null,
    trial_settings: { end_behavior: { missing_payment_method: "create_invoice" } },
    trial_start: null,
  };
}

function eventJson(type, object) {
  return JSON.stringify({
    id: nextId("evt"), object: "event", api_version: API_VERSION, created: now(),
    data: { object }, livemode: false, pending_webhooks: 1,
    request: { id: null, idempotency_key: null }, type,
  });
}

/** Delivers one event as Stripe does: raw JSON body, `Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")`. */
async function deliver(payload) {
  const t = now();
  const v1 = createHmac("sha256", SECRET).update(`${t}.${payload}`).digest("hex");
  const { id, type } = JSON.parse(payload);
  let status = 0;
  let body = "";
  try {
    const res = await fetch(`${QNP_URL}/webhooks/stripe`, {
      method: "POST",
      headers: {
        "content-type": "application/json; charset=utf-8",
        "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "stripe-signature": `t=${t},v1=${v1}`,
      },
      body: payload,
      signal: AbortSignal.timeout(30_000),
    });
    status = res.status;
    body = await res.text();
  } catch (err) {
    body = String(err);
  }
  const delivery = { event_id: id, type, status, body };
  deliveries.push(delivery);
  console.error(`mock_stripe: delivered ${type} ${id}: ${status} ${body}`);
  return delivery;
}

function record(req, path, form) {
  requests.push({
    method: req.method,
    path,
    form,
    idempotency_key: req.headers["idempotency-key"] ?? null,
    authorization: req.headers.authorization ?? null,
    stripe_version: req.headers["stripe-version"] ?? null,
  });
}

async function api(req, res, path, raw) {
  const form = Object.fromEntries(new URLSearchParams(raw));
  record(req, path, form);
  let m;
  if (req.method === "POST" && path === "/v1/customers") {
    const key = req.headers["idempotency-key"];
    if (key && customersByKey.has(key)) return json(res, 200, customers.get(customersByKey.get(key)));
    const id = nextId("cus");
    const customer = {
      id, object: "customer", created: now(), livemode: false,
      email: form.email ?? null, name: form.name ?? null,
      metadata: { account_id: form["metadata[account_id]"] ?? null },
    };
    customers.set(id, customer);
    if (key) customersByKey.set(key, id);
    return json(res, 200, customer);
  }
  if (req.method === "DELETE" && (m = path.match(/^\/v1\/customers\/([^/]+)$/))) {
    if (!customers.delete(m[1])) return stripeError(res, 404, "resource_missing", `No such customer: '${m[1]}'`);
    return json(res, 200, { id: m[1], object: "customer", deleted: true });
  }
  if (req.method === "POST" && path === "/v1/checkout/sessions") {
    const id = nextId("cs_test");
    const created = now();
    const session = {
      id, object: "checkout.session", automatic_tax: { enabled: false },
      created, custom_fields: [], custom_text: {}, expires_at: created + DAY,
      livemode: false, mode: "subscription", payment_method_types: ["card"],
      payment_status: "unpaid", shipping_options: [], status: "open",
      customer: form.customer ?? null, client_reference_id: form.client_reference_id ?? null,
      metadata: { account_id: form["metadata[account_id]"] ?? null },
      url: `${baseUrl}/pay/${id}`,
    };
    checkoutSessions.set(id, {
      session,
      price: form["line_items[0][price]"],
      subscriptionAccountId: form["subscription_data[metadata][account_id]"] ?? null,
      successUrl: form.success_url,
      cancelUrl: form.cancel_url,
    });
    return json(res, 200, session);
  }
  if (req.method === "GET" && (m = path.match(/^\/v1\/subscriptions\/([^/]+)$/))) {
    const sub = subscriptions.get(m[1]);
    if (!sub) return stripeError(res, 404, "resource_missing", `No such subscription: '${m[1]}'`);
    return json(res, 200, sub);
  }
  if (req.method === "POST" && path === "/v1/billing_portal/sessions") {
    const id = nextId("bps");
    const session = {
      id, object: "billing_portal.session", configuration: "bpc_mock",
      created: now(), customer: form.customer ?? null, livemode: false,
      return_url: form.return_url ?? null,
      url: `${baseUrl}/portal/${id}`,
    };
    portalSessions.set(id, session);
    return json(res, 200, session);
  }
  return stripeError(res, 404, "resource_missing", `Unrecognized request URL (${req.method}: ${path})`);
}

async function pay(req, res, id) {
  const entry = checkoutSessions.get(id);
  if (!entry) return html(res, 404, page("No such Checkout Session", `<p>${escape(id)}</p>`));
  if (req.method === "GET") {
    const { session, price } = entry;
    const done = session.status === "complete";
    return html(res, 200, page("Stripe Checkout (test stand-in)", `
<p>Subscribe to <strong>${escape(price)}</strong> for customer <code>${escape(session.customer)}</code>.</p>
${done ? "<p>This session is already paid.</p>" : ""}
<form method="post" action="/pay/${escape(id)}"><button type="submit">Pay</button></form>
<p><a href="${escape(entry.cancelUrl)}">Cancel and go back</a></p>`));
  }
  if (entry.session.status !== "complete") {
    // The payment goes through: Stripe creates the subscription, completes the session, then notifies.
    const subId = nextId("sub");
    const sub = subscriptionJson({
      id: subId,
      customer: entry.session.customer,
      accountId: entry.subscriptionAccountId,
      price: entry.price,
      status: "active",
      currentPeriodEnd: now() + 30 * DAY,
      cancelAtPeriodEnd: false,
    });
    subscriptions.set(subId, sub);
    Object.assign(entry.session, { status: "complete", payment_status: "paid", subscription: subId, url: null });
    for (const [type, object] of [
      ["checkout.session.completed", entry.session],
      ["customer.subscription.created", sub],
    ]) {
      const delivery = await deliver(eventJson(type, object));
      if (delivery.status !== 200) {
        entry.session.status = "open"; // so the failure is visible, not hidden behind "already paid"
        return html(res, 502, page("Webhook delivery failed", `
<p id="delivery-failed">${escape(type)} answered ${escape(delivery.status)}: <code>${escape(delivery.body)}</code></p>`));
      }
    }
  }
  send(res, 303, "text/plain", "", { location: entry.successUrl });
}

function portal(res, id) {
  const session = portalSessions.get(id);
  if (!session) return html(res, 404, page("No such portal session", `<p>${escape(id)}</p>`));
  html(res, 200, page("Billing portal (test stand-in)", `
<p>Invoices, payment method and cancellation for customer <code>${escape(session.customer)}</code>.</p>
<p><a href="${escape(session.return_url)}">Return to QNP</a></p>`));
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, baseUrl);
    const path = url.pathname;
    const raw = await readBody(req);
    let m;
    if (path.startsWith("/v1/")) return await api(req, res, path, raw);
    if ((m = path.match(/^\/pay\/([^/]+)$/)) && (req.method === "GET" || req.method === "POST")) return await pay(req, res, m[1]);
    if ((m = path.match(/^\/portal\/([^/]+)$/)) && req.method === "GET") return portal(res, m[1]);
    if (path === "/_requests" && req.method === "GET") {
      return json(res, 200, { requests, deliveries, customers: [...customers.values()] });
    }
    html(res, 404, page("Not found", `<p>${escape(req.method)} ${escape(path)}</p>`));
  } catch (err) {
    console.error(`mock_stripe: ${req.method} ${req.url}: ${err.stack || err}`);
    if (!res.headersSent) stripeError(res, 500, "mock_failure", String(err));
    else res.destroy();
  }
});

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  baseUrl = `http://127.0.0.1:${server.address().port}`;
  console.log(`mock_stripe listening on ${baseUrl}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
