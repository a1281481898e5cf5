// Entry point: asks the API who is signed in and shows one of three views (signed out, error,
// dashboard). Each section lives in its own module with init / load / reset; this file wires them
// together and owns the session-level flows (sign out, session expiry, account deletion).

import { get, post, onUnauthorized } from "./api.js";
import { $, notify, clearNotices, busy, fmtDate } from "./ui.js";
import * as account from "./account.js";
import * as keys from "./keys.js";
import * as usage from "./usage.js";
import * as calls from "./calls.js";
import * as billing from "./billing.js";

const VIEWS = ["view-loading", "view-error", "view-signed-out", "view-dashboard"];

function show(view) {
  for (const id of VIEWS) $(id).hidden = id !== view;
  const signedIn = view === "view-dashboard";
  $("site-nav").hidden = !signedIn;
  $("who").hidden = !signedIn;
  document.title = signedIn ? "QNP dashboard" : view === "view-signed-out" ? "Sign in · QNP" : "QNP";
}

/** Forgets everything the previous user saw, so nothing of theirs stays in the DOM after sign-out. */
function resetAll() {
  onUnauthorized(null);
  for (const section of [account, keys, usage, calls, billing]) section.reset();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
}

function showSignedOut() {
  resetAll();
  show("view-signed-out");
}

/** Everything a new call changes: the chart, the calls table, this month's spend, keys' "last used". */
function refreshUsage() {
  return Promise.all([usage.load(), calls.load(), billing.load(), keys.load()]);
}

function showDashboard(me) {
  show("view-dashboard");
  account.render(me);
  onUnauthorized(() => {
    showSignedOut();
    notify("Your session has ended. Sign in again to continue.", "info", { sticky: true });
  });
  // Sections load independently: one failing shows its own error and leaves the others working.
  return refreshUsage();
}

async function boot() {
  show("view-loading");
  try {
    const me = await get("/account");
    await showDashboard(me);
  } catch (err) {
    if (err.status === 401) {
      showSignedOut();
    } else {
      $("error-message").textContent = err.message;
      show("view-error");
    }
  }
}

async function signOut(event) {
  await busy(event.currentTarget, async () => {
    try {
      await post("/auth/logout", {});
    } catch (err) {
      // A 401 means the session was already gone: the user is signed out either way.
      if (err.status !== 401) {
        notify(`Could not sign out: ${err.message}`, "error");
        return;
      }
    }
    clearNotices();
    showSignedOut();
    notify("You are signed out.", "ok");
    $("signin-google").focus();
  });
}

function accountDeleted(result) {
  clearNotices();
  showSignedOut();
  const by = result && result.erased_by ? ` Erasure completes by ${fmtDate(result.erased_by)}.` : "";
  notify(`${(result && result.message) || "Your account is being deleted."}${by}`, "ok", { sticky: true });
}

/** Stripe sends the user back to /?billing=success|canceled: say what happened, then tidy the URL. */
function billingReturn() {
  const params = new URLSearchParams(location.search);
  const outcome = params.get("billing");
  if (!outcome) return;
  params.delete("billing");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  billing.afterCheckout(outcome);
}

function init() {
  account.init({ onDeleted: accountDeleted, onChange: () => {} });
  keys.init();
  usage.init();
  calls.init();
  billing.init();
  $("sign-out").addEventListener("click", signOut);
  $("usage-refresh").addEventListener("click", (e) =>
    busy(e.currentTarget, async () => {
      await refreshUsage();
      notify("Usage refreshed.", "ok");
    }),
  );
  $("error-retry").addEventListener("click", boot);
  billingReturn();
  boot();
}

init();
