// Entry point: asks the API whether this browser is signed in and which sign-in providers exist
// (GET /auth/session, which never answers 401, so a signed-out load stays quiet) and shows one of
// three views (signed out, error, dashboard). Each section lives in its own module with init / load /
// reset; this file wires them together and owns the session-level flows (sign out, session expiry,
// account deletion, what other pages send back in the query).

import { get, post, onUnauthorized } from "./api.js";
import { $, h, notify, clearNotices, busy, fmtDate } from "./ui.js";
import * as account from "./account.js";
import * as keys from "./keys.js";
import * as usage from "./usage.js";
import * as calls from "./calls.js";
import * as billing from "./billing.js";

const VIEWS = ["view-loading", "view-error", "view-signed-out", "view-dashboard"];
/** The sign-in providers the page has a button for (#signin-<name>), in the order it shows them. */
const PROVIDERS = ["google", "apple"];

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

/** Shows the buttons of the configured providers only, or says that the operator has set up none. */
function showProviders(providers) {
  const available = PROVIDERS.filter((name) => providers && providers[name] === true);
  for (const name of PROVIDERS) $(`signin-${name}`).hidden = !available.includes(name);
  $("signin-buttons").hidden = available.length === 0;
  $("signin-none").hidden = available.length > 0;
}

/** Where keyboard focus goes on the signed-out view: the first sign-in button, else its heading. */
function focusSignIn() {
  const button = PROVIDERS.map((name) => $(`signin-${name}`)).find((el) => !el.hidden);
  (button || $("signed-out-title")).focus();
}

async function boot() {
  show("view-loading");
  try {
    const session = await get("/auth/session");
    showProviders(session.providers);
    if (!session.signed_in) {
      showSignedOut();
      return;
    }
    const me = await get("/account");
    await showDashboard(me);
  } catch (err) {
    if (err.status === 401) {
      // The session ended between the two calls.
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
    focusSignIn();
  });
}

function accountDeleted(result) {
  clearNotices();
  showSignedOut();
  const by = result && result.erased_by ? ` Erasure completes by ${fmtDate(result.erased_by)}.` : "";
  notify(`${(result && result.message) || "Your account is being deleted."}${by}`, "ok", { sticky: true });
}

/**
 * The gateway sends a failed sign-in back here with a reason code in ?signin_error=. Only known codes
 * are worded; anything else (a crafted link) gets the generic sentence, so no outside text reaches
 * the page.
 */
const SIGN_IN_FAILURES = {
  cancelled: "the sign-in was cancelled at the provider. You can try again.",
  expired: "the sign-in took too long or was started in another browser. Please start again.",
  not_configured: "that sign-in provider is not configured on this gateway.",
  failed: "the provider's answer could not be verified. Please try again.",
};

function signInErrorText(code) {
  return SIGN_IN_FAILURES[code] ?? SIGN_IN_FAILURES.failed;
}

/**
 * Other pages send the browser back here with an outcome in the query: Stripe with
 * ?billing=success|canceled, a failed sign-in with ?signin_error=<code>. Say what happened, then
 * tidy the URL so a reload or a bookmark does not repeat it.
 */
function returnOutcomes() {
  const params = new URLSearchParams(location.search);
  const outcome = params.get("billing");
  const signInError = params.get("signin_error");
  if (outcome === null && signInError === null) return;
  params.delete("billing");
  params.delete("signin_error");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  if (signInError !== null) {
    notify([h("strong", {}, "Sign-in failed:"), " ", signInErrorText(signInError)], "error");
  }
  if (outcome) billing.afterCheckout(outcome);
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
  returnOutcomes();
  boot();
}

init();
