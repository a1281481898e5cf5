// API keys: list, create (the plaintext is shown once), rename, revoke.

import { get, post, patch, del } from "./api.js";
import { $, h, setStatus, emptyState, notify, busy, ask, fmtDate, fmtUsd, timeEl } from "./ui.js";

/** Key id → key, for labelling the recent-calls table. */
export const keysById = new Map();

function label(key) {
  return key.name ? `“${key.name}”` : `${key.prefix}…`;
}

/** The key's own controls and rotation state, as one line (nothing when it has none). */
function controlsLine(key) {
  const parts = [];
  if (key.expires_at) parts.push([key.expired ? "Expired " : "Expires ", timeEl(key.expires_at)]);
  if (key.monthly_spend_limit_usd != null) {
    parts.push(`Spent ${fmtUsd(key.spend_this_month_usd || 0)} of ${fmtUsd(key.monthly_spend_limit_usd)} this month`);
  }
  if (key.models && key.models.length) parts.push(`Models: ${key.models.join(", ")}`);
  if (key.requests_per_minute != null) parts.push(`${key.requests_per_minute} requests/min`);
  if (key.rotation) parts.push(["Rotated; the old secret works until ", timeEl(key.rotation.previous_secret_valid_until)]);
  if (!parts.length) return null;
  const joined = [];
  parts.forEach((part, i) => {
    if (i) joined.push(" · ");
    joined.push(part);
  });
  return h("p", { class: "key-meta key-controls" }, joined);
}

function keyItem(key) {
  const revoked = Boolean(key.revoked_at);
  const meta = [
    "Created ", timeEl(key.created_at, fmtDate),
    " · ",
    key.last_used_at ? ["Last used ", timeEl(key.last_used_at)] : "Never used",
  ];
  if (revoked) meta.push(" · Revoked ", timeEl(key.revoked_at));
  return h(
    "li",
    { class: `key${revoked ? " is-revoked" : ""}`, dataset: { keyId: key.id, state: revoked ? "revoked" : "active" } },
    h(
      "div",
      { class: "key-main" },
      h(
        "p",
        { class: "key-name" },
        key.name || "Unnamed key",
        revoked ? h("span", { class: "badge badge-off" }, "Revoked") : h("span", { class: "badge badge-ok" }, "Active"),
      ),
      h("p", { class: "key-meta" }, h("span", { class: "key-prefix" }, `${key.prefix}…`), " · ", meta),
      revoked ? null : controlsLine(key),
    ),
    h(
      "div",
      { class: "key-actions" },
      h(
        "button",
        {
          type: "button",
          class: "btn btn-small",
          "aria-label": `Rename key ${key.name || key.prefix}`,
          onclick: (event) => rename(key, event.currentTarget),
        },
        "Rename",
      ),
      revoked
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "btn btn-small btn-danger-outline",
              "aria-label": `Revoke key ${key.name || key.prefix}`,
              onclick: (event) => revoke(key, event.currentTarget),
            },
            "Revoke",
          ),
    ),
  );
}

function render(keys) {
  keysById.clear();
  for (const key of keys) keysById.set(key.id, key);
  document.dispatchEvent(new CustomEvent("qnp:keys"));

  const active = keys.filter((k) => !k.revoked_at);
  const revoked = keys.filter((k) => k.revoked_at);
  // Newest first within each group: the key you just made is at the top.
  const newest = (a, b) => (b.created_at || "").localeCompare(a.created_at || "");
  active.sort(newest);
  revoked.sort((a, b) => (b.revoked_at || "").localeCompare(a.revoked_at || ""));

  const list = $("keys-active");
  list.replaceChildren(...active.map(keyItem));
  if (active.length === 0) {
    list.replaceChildren(
      h("li", { class: "key-empty" },
        emptyState(keys.length ? "No active keys" : "No keys yet", "Create a key above to start calling the API.")),
    );
  }
  $("keys-revoked").replaceChildren(...revoked.map(keyItem));
  $("keys-revoked-count").textContent = String(revoked.length);
  $("keys-revoked-wrap").hidden = revoked.length === 0;
}

export async function load() {
  const status = $("keys-status");
  if (!keysById.size) setStatus(status, "Loading keys…");
  try {
    const { data } = await get("/keys");
    setStatus(status, "");
    render(data);
  } catch (err) {
    setStatus(status, `Could not load your keys: ${err.message}`, "error");
  }
}

async function create(event) {
  event.preventDefault();
  const input = $("key-name");
  const error = $("key-name-error");
  const name = input.value.trim();
  error.hidden = true;
  input.removeAttribute("aria-invalid");
  await busy($("create-key"), async () => {
    try {
      const key = await post("/keys", name ? { name } : {});
      showSecret(key);
      input.value = "";
      await load();
    } catch (err) {
      if (err.param === "name") {
        error.textContent = err.message;
        error.hidden = false;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      } else {
        notify(`Could not create the key: ${err.message}`, "error");
      }
    }
  });
}

function showSecret(key) {
  const box = $("new-key");
  $("new-key-name").textContent = key.name ? `: ${key.name}` : "";
  $("new-key-value").value = key.key;
  $("new-key-copied").textContent = "";
  box.hidden = false;
  // Straight to the Copy button: copying is the one thing the user must do now.
  $("new-key-copy").focus();
}

function hideSecret() {
  // Drop the plaintext from the DOM as soon as the user is done with it.
  $("new-key-value").value = "";
  $("new-key").hidden = true;
  $("key-name").focus();
}

async function copySecret() {
  const input = $("new-key-value");
  const status = $("new-key-copied");
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = "Copied";
  } catch {
    // No clipboard access (permissions, insecure context): select the text so Ctrl+C / ⌘C works.
    input.focus();
    input.select();
    status.textContent = "Select and copy the key manually (it is selected for you).";
  }
}

async function rename(key, button) {
  const input = $("rename-input");
  input.value = key.name || "";
  const dialog = $("rename-dialog");
  const answer = ask(dialog);
  input.focus();
  input.select();
  if ((await answer) !== "save") return;
  await busy(button, async () => {
    try {
      const renamed = await patch(`/keys/${encodeURIComponent(key.id)}`, { name: input.value.trim() || null });
      notify(renamed.name ? `Key renamed to “${renamed.name}”.` : "Key name cleared.", "ok");
      await load();
      $("keys-title").focus();
    } catch (err) {
      notify(`Could not rename the key: ${err.message}`, "error");
    }
  });
}

async function revoke(key, button) {
  $("revoke-key-label").textContent = label(key);
  if ((await ask($("revoke-dialog"))) !== "revoke") return;
  await busy(button, async () => {
    try {
      await del(`/keys/${encodeURIComponent(key.id)}`);
      notify(`Key ${label(key)} revoked: calls with it are refused.`, "ok");
      await load();
      // The Revoke button is gone with its row; keep keyboard focus in the section, not lost on <body>.
      $("keys-title").focus();
    } catch (err) {
      notify(`Could not revoke the key: ${err.message}`, "error");
    }
  });
}

export function reset() {
  keysById.clear();
  $("keys-active").replaceChildren();
  $("keys-revoked").replaceChildren();
  $("keys-revoked-wrap").hidden = true;
  $("new-key-value").value = "";
  $("new-key").hidden = true;
  setStatus($("keys-status"), "");
}

export function init() {
  $("base-url").textContent = `${location.origin}/v1`;
  $("key-form").addEventListener("submit", create);
  $("new-key-copy").addEventListener("click", copySecret);
  $("new-key-done").addEventListener("click", hideSecret);
}
