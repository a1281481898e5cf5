// Small DOM and formatting helpers shared by the sections. DOM is built with createElement and
// textContent only: API data never goes through innerHTML, and nothing sets a style attribute (the CSP
// forbids inline style; classes and the hidden attribute do the work).

export const $ = (id) => document.getElementById(id);

/** h("td", {class: "num", title: "..."}, "text", childNode, ...): an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A status line under a section heading: loading, an error (the API's message), or nothing. */
export function setStatus(el, text, kind = "") {
  el.textContent = text || "";
  el.classList.toggle("error", kind === "error");
}

export function emptyState(title, hint) {
  return h("div", { class: "empty" }, h("strong", {}, title), hint ? h("span", {}, hint) : null);
}

// ---- notices (the aria-live region at the top of the page) ----

/**
 * Shows a message in the live region. Errors stay until dismissed (the user must get to read them);
 * confirmations fade after a while. `action` adds one button, e.g. {label: "Manage billing", run}.
 */
export function notify(message, kind = "info", { action = null, sticky = kind === "error" } = {}) {
  const box = $("notices");
  const close = h("button", { type: "button", class: "btn btn-quiet", "aria-label": "Dismiss" }, "✕");
  const note = h(
    "div",
    { class: `notice notice-${kind}` },
    h("p", {}, message),
    action
      ? h("button", { type: "button", class: "btn", onclick: () => { note.remove(); action.run(); } }, action.label)
      : null,
    close,
  );
  close.addEventListener("click", () => note.remove());
  box.append(note);
  while (box.children.length > 3) box.firstElementChild.remove();
  if (!sticky) setTimeout(() => note.remove(), 8000);
  return note;
}

export function clearNotices() {
  $("notices").replaceChildren();
}

/** Runs an action with its button disabled and marked busy, so double clicks cannot double-submit. */
export async function busy(button, fn) {
  if (button.getAttribute("aria-busy") === "true") return undefined;
  const wasDisabled = button.disabled;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    button.removeAttribute("aria-busy");
    button.disabled = wasDisabled;
  }
}

/** Opens a <dialog> modally and resolves with the value of the button that closed it ("" for Escape). */
export function ask(dialog) {
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}

// ---- dates (the API speaks UTC; days are UTC days) ----

export function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

export function addDays(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return utcDay(d);
}

/** The last `n` UTC days ending today, oldest first. */
export function lastDays(n) {
  const today = utcDay(new Date());
  return Array.from({ length: n }, (_, i) => addDays(today, i - n + 1));
}

const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
const dateFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});

/** "Nov 3" for a UTC day string. */
export const fmtDay = (day) => dayFormat.format(new Date(`${day}T00:00:00Z`));
/** "Nov 3, 2026" in the user's time zone. */
export const fmtDate = (iso) => (iso ? dateFormat.format(new Date(iso)) : "—");
export const fmtDateTime = (iso) => (iso ? dateTimeFormat.format(new Date(iso)) : "—");

/** A <time> element showing local time, with the exact UTC instant on hover and for machines. */
export function timeEl(iso, format = fmtDateTime) {
  return h("time", { datetime: iso, title: iso }, format(iso));
}

// ---- numbers ----

const intFormat = new Intl.NumberFormat();
const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export const fmtInt = (n) => intFormat.format(n || 0);
export const fmtCompact = (n) => (Math.abs(n) < 10000 ? intFormat.format(n || 0) : compactFormat.format(n));

/**
 * Dollars. Calls cost fractions of a cent, and a paying user wants to see them rather than "$0.00":
 * amounts under a cent keep three significant digits.
 */
export function fmtUsd(n) {
  const v = Number(n) || 0;
  if (v === 0) return "$0.00";
  if (Math.abs(v) >= 0.01) {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: Math.abs(v) >= 100 ? 2 : 4 }).format(v);
  }
  return new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumSignificantDigits: 3 }).format(v);
}

export const plural = (n, one, many = `${one}s`) => `${fmtInt(n)} ${n === 1 ? one : many}`;
