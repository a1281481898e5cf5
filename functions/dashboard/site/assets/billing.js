// Plan, this month's spend against the cap, the Stripe subscription, upgrades (Stripe Checkout) and
// the Stripe Billing Portal. QNP never handles card data: both buttons just navigate to Stripe.

import { get, post } from "./api.js";
import { $, h, setStatus, notify, busy, fmtDate, fmtCompact, fmtUsd } from "./ui.js";

let current = null;
/** The reloads scheduled after a return from Checkout, cancelled on sign-out (they would get 401s). */
let pendingReloads = [];

const SUBSCRIPTION_STATUS = {
  active: "Active",
  trialing: "Trial",
  past_due: "Payment overdue",
  unpaid: "Unpaid",
  canceled: "Canceled",
  incomplete: "Incomplete",
  incomplete_expired: "Expired",
  paused: "Paused",
};


/** "2026-11" → "November 2026": the spend month is a UTC calendar month. */
function monthName(month) {
  const [year, number] = month.split("-").map(Number);
  if (!year || !number) return month;
  return new Date(Date.UTC(year, number - 1, 1)).toLocaleDateString(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
}

function title(name) {
  return name ? name.charAt(0).toUpperCase() + name.slice(1) : "—";
}

/** "20 requests/min · 40K tokens/min": what a plan allows, nulls meaning no limit. */
function limits(plan) {
  const rpm = plan.requests_per_minute == null ? "unlimited requests" : `${fmtCompact(plan.requests_per_minute)} requests/min`;
  const tpm = plan.tokens_per_minute == null ? "unlimited tokens" : `${fmtCompact(plan.tokens_per_minute)} tokens/min`;
  return `${rpm} · ${tpm}`;
}

function capText(plan) {
  return plan.monthly_spend_cap_usd == null ? "no monthly spend cap" : `spend capped at ${fmtUsd(plan.monthly_spend_cap_usd)}/month`;
}

function fillMeter(meter, label, spend) {
  if (spend.cap_usd == null) {
    meter.hidden = true;
    label.textContent = `No cap · resets ${fmtDate(spend.resets_at)}`;
    return;
  }
  const cap = spend.cap_usd;
  meter.hidden = false;
  meter.max = cap;
  meter.value = Math.min(spend.spent_usd, cap);
  // The meter turns amber at 75 % and red at 90 % of the cap.
  meter.low = cap * 0.75;
  meter.high = cap * 0.9;
  meter.optimum = 0;
  const pct = cap > 0 ? Math.round((spend.spent_usd / cap) * 100) : 100;
  label.textContent = `${pct}% of ${fmtUsd(cap)} · resets ${fmtDate(spend.resets_at)}`;
}

function subscriptionText(b) {
  const s = b.subscription;
  if (!s) return b.plan.purchasable ? "None" : "None (no subscription needed)";
  const status = SUBSCRIPTION_STATUS[s.status] || s.status;
  const plan = s.plan ? `${title(s.plan)} · ` : "";
  const end = s.current_period_end
    ? s.cancel_at_period_end || s.status === "canceled"
      ? ` · ends ${fmtDate(s.current_period_end)}`
      : ` · renews ${fmtDate(s.current_period_end)}`
    : "";
  return `${plan}${status}${end}`;
}

function planCard(plan, b) {
  const isCurrent = plan.name === b.plan.name;
  let action = null;
  if (isCurrent) {
    action = h("span", { class: "badge badge-ok" }, "Current plan");
  } else if (plan.purchasable && b.billing_enabled) {
    action = h(
      "button",
      { type: "button", class: "btn btn-primary", onclick: (e) => checkout(plan.name, e.currentTarget) },
      b.subscription ? `Switch to ${title(plan.name)}` : `Upgrade to ${title(plan.name)}`,
    );
  }
  return h(
    "div",
    { class: `plan${isCurrent ? " current" : ""}`, dataset: { plan: plan.name } },
    h("h3", {}, title(plan.name)),
    h("ul", {}, h("li", {}, limits(plan)), h("li", {}, capText(plan))),
    action,
  );
}

function render(b) {
  current = b;
  const plan = b.plan;
  // Overview cards
  $("ov-plan").textContent = title(plan.name);
  $("ov-plan-limits").textContent = limits(plan);
  $("ov-spend").textContent = b.spend.cap_usd == null ? fmtUsd(b.spend.spent_usd) : `${fmtUsd(b.spend.spent_usd)} / ${fmtUsd(b.spend.cap_usd)}`;
  fillMeter($("ov-spend-meter"), $("ov-spend-meter-label"), b.spend);

  // Billing panel
  $("bill-plan").textContent = title(plan.name);
  $("bill-limits").textContent = `${limits(plan)}; ${capText(plan)}`;
  $("bill-month").textContent = monthName(b.spend.month);
  $("bill-spend").textContent =
    b.spend.cap_usd == null ? `${fmtUsd(b.spend.spent_usd)} (no cap)` : `${fmtUsd(b.spend.spent_usd)} of ${fmtUsd(b.spend.cap_usd)}`;
  $("bill-sub").textContent = subscriptionText(b);
  fillMeter($("bill-meter"), $("bill-meter-label"), b.spend);

  const grace = $("grace-banner");
  if (b.grace_ends_at) {
    grace.textContent =
      `Your last payment failed. You keep the ${title(plan.name)} plan until ${fmtDate(b.grace_ends_at)}; ` +
      "update your payment method under Manage billing to keep it after that.";
    grace.hidden = false;
  } else if (b.payment_failed_at) {
    grace.textContent = `A payment failed on ${fmtDate(b.payment_failed_at)}. Check your payment method under Manage billing.`;
    grace.hidden = false;
  } else {
    grace.hidden = true;
  }

  $("billing-disabled").hidden = b.billing_enabled;
  $("plans").replaceChildren(...b.plans.map((p) => planCard(p, b)));
  const portal = $("billing-portal");
  const note = $("billing-portal-note");
  portal.hidden = !b.billing_enabled;
  portal.disabled = !b.has_billing_account;
  note.textContent = !b.billing_enabled
    ? ""
    : b.has_billing_account
      ? "Invoices, payment method and cancellation, on Stripe."
      : "Available after your first purchase.";
  $("billing-body").hidden = false;
}

export async function load() {
  const status = $("billing-status");
  if (!current) setStatus(status, "Loading plan and billing…");
  try {
    const data = await get("/billing");
    setStatus(status, "");
    render(data);
  } catch (err) {
    setStatus(status, `Could not load billing: ${err.message}`, "error");
    if (!current) $("ov-plan").textContent = "—";
  }
}

async function checkout(plan, button) {
  await busy(button, async () => {
    try {
      const { url } = await post("/billing/checkout", { plan });
      location.assign(url);
    } catch (err) {
      if (err.status === 409) {
        // Already subscribed: plan changes happen in the portal, where Stripe prorates them.
        notify(err.message, "info", { sticky: true, action: { label: "Manage billing", run: () => portal($("billing-portal")) } });
      } else {
        notify(`Could not start checkout: ${err.message}`, "error");
      }
    }
  });
}

async function portal(button) {
  await busy(button, async () => {
    try {
      const { url } = await post("/billing/portal", {});
      location.assign(url);
    } catch (err) {
      notify(`Could not open billing: ${err.message}`, "error");
    }
  });
}

/** Coming back from Stripe Checkout: the plan changes when Stripe's webhook lands, usually seconds later. */
export function afterCheckout(outcome) {
  if (outcome === "success") {
    notify("Thank you! Your payment went through. Your new plan applies as soon as Stripe confirms it, usually within seconds.", "ok", { sticky: true });
    // Pick up the webhook's effect without making the user reload.
    pendingReloads = [3000, 10000, 30000].map((delay) => setTimeout(load, delay));
  } else if (outcome === "canceled") {
    notify("Checkout canceled. Nothing was charged and your plan is unchanged.", "info");
  }
}

export function reset() {
  for (const timer of pendingReloads) clearTimeout(timer);
  pendingReloads = [];
  current = null;
  $("billing-body").hidden = true;
  $("plans").replaceChildren();
  $("grace-banner").hidden = true;
  setStatus($("billing-status"), "");
  for (const id of ["ov-plan", "ov-spend", "ov-requests"]) $(id).textContent = "—";
  for (const id of ["ov-plan-limits", "ov-spend-meter-label", "ov-cost"]) $(id).textContent = "";
  $("ov-spend-meter").hidden = true;
}

export function init() {
  $("billing-portal").addEventListener("click", (e) => portal(e.currentTarget));
}
