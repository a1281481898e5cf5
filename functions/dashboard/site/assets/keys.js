// API keys: list, create (the plaintext is shown once), edit name and controls, rotate, revoke.

import { get, post, patch, del } from "./api.js";
import { $, h, setStatus, emptyState, notify, busy, ask, fmtDate, fmtDateTime, fmtUsd, timeEl } from "./ui.js";

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
      revoked
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "btn btn-small",
              "aria-label": `Edit key ${key.name || key.prefix}`,
              onclick: () => edit(key),
            },
            "Edit",
          ),
      revoked
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "btn btn-small",
              "aria-label": `Rotate key ${key.name || key.prefix}`,
              onclick: (event) => rotate(key, event.currentTarget),
            },
            "Rotate",
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
  const note = $("new-key-note");
  note.textContent = key.rotation
    ? `The old secret keeps working until ${fmtDateTime(key.rotation.previous_secret_valid_until)}; update your clients before then.`
    : "";
  note.hidden = !key.rotation;
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

// ---- edit: name and controls ----

/** The form's fields: the API's field, its input, how a key's value shows in it, how the input reads back. */
const EDIT_FIELDS = [
  { field: "name", input: "edit-name", show: (k) => k.name || "", read: (v) => v.trim() || null },
  {
    field: "expires_at",
    input: "edit-expires",
    show: (k) => (k.expires_at ? localInput(k.expires_at) : ""),
    // datetime-local has no zone: the browser reads it as local time, the API gets the UTC instant.
    read: (v) => (v ? new Date(v).toISOString() : null),
  },
  {
    field: "monthly_spend_limit_usd",
    input: "edit-spend",
    show: (k) => (k.monthly_spend_limit_usd == null ? "" : String(k.monthly_spend_limit_usd)),
    read: (v) => (v.trim() === "" ? null : Number(v)),
  },
  {
    field: "models",
    input: "edit-models",
    show: (k) => (k.models || []).join(", "),
    read: (v) => {
      const list = v.split(",").map((m) => m.trim()).filter(Boolean);
      return list.length ? list : null;
    },
  },
  {
    field: "requests_per_minute",
    input: "edit-rpm",
    show: (k) => (k.requests_per_minute == null ? "" : String(k.requests_per_minute)),
    read: (v) => (v.trim() === "" ? null : Number(v)),
  },
];

/** An instant as a datetime-local value in the user's time zone (minute precision). */
function localInput(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function fieldError(spec, message) {
  const input = $(spec.input);
  const error = $(`${spec.input}-error`);
  error.textContent = message || "";
  error.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** Only what the user changed is sent: an untouched field keeps its value (PATCH semantics). */
function changes(key) {
  const body = {};
  for (const spec of EDIT_FIELDS) {
    const input = $(spec.input);
    if (input.value === spec.show(key)) continue;
    body[spec.field] = spec.read(input.value);
  }
  return body;
}

let editing = null;

function edit(key) {
  editing = { key };
  for (const spec of EDIT_FIELDS) {
    $(spec.input).value = spec.show(key);
    fieldError(spec, "");
  }
  $("edit-dialog").showModal();
  $("edit-name").focus();
}

async function saveEdit(event) {
  event.preventDefault();
  if (!editing) return;
  const { key } = editing;
  const body = changes(key);
  const dialog = $("edit-dialog");
  for (const spec of EDIT_FIELDS) fieldError(spec, "");
  if (Object.keys(body).length === 0) {
    dialog.close();
    return;
  }
  await busy($("edit-save"), async () => {
    try {
      await patch(`/keys/${encodeURIComponent(key.id)}`, body);
      dialog.close();
      editing = null;
      notify(`Key ${label(key)} saved.`, "ok");
      await load();
      $("keys-title").focus();
    } catch (err) {
      // A refused value stays in the form beside its message, so the user can correct it.
      const spec = EDIT_FIELDS.find((s) => s.field === err.param);
      if (spec) {
        fieldError(spec, err.message);
        $(spec.input).focus();
      } else {
        notify(`Could not save the key: ${err.message}`, "error");
      }
    }
  });
}

function cancelEdit() {
  editing = null;
  $("edit-dialog").close();
}

// ---- rotate ----

async function rotate(key, button) {
  $("rotate-key-label").textContent = label(key);
  $("rotate-grace").value = "24";
  if ((await ask($("rotate-dialog"))) !== "rotate") return;
  const hours = Number($("rotate-grace").value);
  await busy(button, async () => {
    try {
      const rotated = await post(`/keys/${encodeURIComponent(key.id)}/rotate`, { grace_period_hours: hours });
      showSecret(rotated);
      await load();
    } catch (err) {
      notify(`Could not rotate the key: ${err.message}`, "error");
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
  $("edit-form").addEventListener("submit", saveEdit);
  $("edit-cancel").addEventListener("click", cancelEdit);
  // A refused value's message goes as soon as the user changes the value.
  for (const spec of EDIT_FIELDS) $(spec.input).addEventListener("input", () => fieldError(spec, ""));
  // Escape closes the dialog without saving.
  $("edit-dialog").addEventListener("close", () => {
    editing = null;
  });
}
