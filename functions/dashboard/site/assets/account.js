// The account: profile correction, sign-in methods, and the data rights (export, restriction of
// processing, deletion).

import { patch, post, del } from "./api.js";
import { $, h, notify, busy, ask, fmtDate } from "./ui.js";

const PROVIDERS = { google: "Google", apple: "Apple" };

let account = null;
let onChange = () => {};
let onDeleted = () => {};

function fieldError(name, message) {
  const input = $(`profile-${name}`);
  const error = $(`profile-${name}-error`);
  error.textContent = message || "";
  error.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** Shows an account everywhere it appears: the header, the profile form, the banners. */
export function render(next) {
  account = next;
  $("who-email").textContent = account.email;
  $("who-email").title = account.name ? `${account.name} <${account.email}>` : account.email;
  $("profile-name").value = account.name || "";
  // The email can only become an address a sign-in provider verified: the account's own, or one of its
  // identities' (the gateway refuses anything else, so nobody can claim an address that is not theirs).
  const choices = [...new Set([account.email, ...account.identities.map((i) => i.email).filter(Boolean)])];
  $("profile-email").replaceChildren(...choices.map((email) => h("option", { value: email }, email)));
  $("profile-email").value = account.email;
  fieldError("name", "");
  fieldError("email", "");
  $("identities").replaceChildren(
    ...account.identities.map((i) =>
      h("li", {}, h("strong", {}, PROVIDERS[i.provider] || i.provider), ` · ${i.email || "no email shared"} · linked ${fmtDate(i.created_at)}`),
    ),
  );
  // The plan in force (subscriptions included) is in Plan and billing; this is only when the account began.
  $("account-created").textContent = `Account created ${fmtDate(account.created_at)}`;
  $("restricted-banner").hidden = !account.restricted;
  $("restrict-toggle").textContent = account.restricted ? "Lift restriction" : "Restrict processing";
  $("restrict-toggle").classList.toggle("btn-primary", account.restricted);
  const deletion = $("deletion-banner");
  deletion.hidden = !account.deletion_requested_at;
  deletion.textContent = account.deletion_requested_at
    ? `You asked for this account to be deleted on ${fmtDate(account.deletion_requested_at)}; it is being erased.`
    : "";
}

async function saveProfile(event) {
  event.preventDefault();
  const name = $("profile-name").value.trim();
  const email = $("profile-email").value.trim();
  fieldError("name", "");
  fieldError("email", "");
  // Send only what changed: an unchanged email must not trip the "already taken" check or re-verify.
  const change = {};
  if (name !== (account.name || "")) change.name = name;
  if (email !== account.email) change.email = email;
  if (Object.keys(change).length === 0) {
    notify("Nothing to save: your name and email are unchanged.", "info");
    return;
  }
  await busy($("profile-save"), async () => {
    try {
      const updated = await patch("/account", change);
      render(updated);
      onChange(updated);
      notify("Your details are saved.", "ok");
    } catch (err) {
      if (err.param === "name" || err.param === "email") {
        fieldError(err.param, err.message);
        $(`profile-${err.param}`).focus();
      } else if (err.status === 409) {
        fieldError("email", err.message);
        $("profile-email").focus();
      } else {
        notify(`Could not save your details: ${err.message}`, "error");
      }
    }
  });
}

async function toggleRestriction(event) {
  const button = event.currentTarget;
  const lifting = account.restricted;
  await busy(button, async () => {
    try {
      const updated = lifting ? await del("/account/restrict") : await post("/account/restrict", {});
      render(updated);
      onChange(updated);
      notify(
        lifting
          ? "Restriction lifted: your API keys work again."
          : "Processing restricted: calls with your API keys are refused until you lift it.",
        "ok",
      );
    } catch (err) {
      notify(`Could not change the restriction: ${err.message}`, "error");
    }
  });
}

function matchesEmail() {
  return $("delete-confirm-email").value.trim().toLowerCase() === account.email.toLowerCase();
}

async function openDelete() {
  const dialog = $("delete-dialog");
  $("delete-email").textContent = account.email;
  $("delete-confirm-email").value = "";
  $("delete-confirm").disabled = true;
  $("delete-error").hidden = true;
  await ask(dialog);
}

async function confirmDelete(event) {
  if (!matchesEmail()) return;
  const dialog = $("delete-dialog");
  await busy(event.currentTarget, async () => {
    try {
      const result = await del("/account");
      dialog.close("deleted");
      onDeleted(result);
    } catch (err) {
      $("delete-error").textContent = `Could not delete the account: ${err.message}`;
      $("delete-error").hidden = false;
    }
  });
}

export function init(handlers) {
  onChange = handlers.onChange || onChange;
  onDeleted = handlers.onDeleted || onDeleted;
  $("profile-form").addEventListener("submit", saveProfile);
  $("restrict-toggle").addEventListener("click", toggleRestriction);
  $("delete-open").addEventListener("click", openDelete);
  $("delete-confirm-email").addEventListener("input", () => {
    $("delete-confirm").disabled = !matchesEmail();
  });
  // Enter in the email box must not submit the dialog's form (that would just close it as "cancel").
  $("delete-confirm-email").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (matchesEmail()) $("delete-confirm").click();
    }
  });
  $("delete-confirm").addEventListener("click", confirmDelete);
}

export function reset() {
  account = null;
  $("who-email").textContent = "";
  // Forget every trace of the previous user, attributes included.
  $("who-email").removeAttribute("title");
  $("profile-name").value = "";
  $("profile-email").replaceChildren();
  $("delete-email").textContent = "";
  $("delete-confirm-email").value = "";
  $("identities").replaceChildren();
  $("restricted-banner").hidden = true;
  $("deletion-banner").hidden = true;
}

export const current = () => account;
