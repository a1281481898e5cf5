// The recent-calls table: the latest 50 metered calls, newest first.

import { get } from "./api.js";
import { $, h, setStatus, emptyState, timeEl, fmtInt, fmtUsd } from "./ui.js";
import { keysById } from "./keys.js";

const LIMIT = 50;
let lastCalls = null;

function keyCell(id) {
  // Show the key's name when we know it: "production" means more to a user than an id.
  const key = keysById.get(id);
  const prefix = `qnp_${id}_`;
  if (key && key.name) return h("td", { title: `${prefix}…` }, key.name);
  return h("td", { class: "mono", title: key ? "" : "a key no longer listed" }, `${prefix}…`);
}

function tokensCell(usage) {
  const text = `${fmtInt(usage.prompt_tokens)} / ${fmtInt(usage.completion_tokens)}`;
  const details = [];
  if (usage.cached_tokens) details.push(`${fmtInt(usage.cached_tokens)} cached`);
  if (usage.cache_write_tokens) details.push(`${fmtInt(usage.cache_write_tokens)} cache writes`);
  if (usage.reasoning_tokens) details.push(`${fmtInt(usage.reasoning_tokens)} reasoning`);
  if (usage.estimated) details.push("estimated: the provider reported no counts");
  return h("td", { class: "num", title: details.join(", ") || null }, usage.estimated ? `≈ ${text}` : text);
}

function latencyCell(call) {
  const text = `${fmtInt(call.latency_ms)} ms`;
  return h(
    "td",
    { class: "num", title: call.ttft_ms != null ? `first byte after ${fmtInt(call.ttft_ms)} ms` : null },
    text,
  );
}

function row(call) {
  const ok = call.status >= 200 && call.status < 300;
  return h(
    "tr",
    { dataset: { requestId: call.request_id, model: call.model, status: String(call.status) } },
    h("td", {}, timeEl(call.timestamp)),
    h(
      "td",
      { class: "mono" },
      call.model,
      call.streamed ? h("span", { class: "badge badge-off" }, "stream") : null,
      h("span", { class: "sub" }, call.endpoint),
    ),
    h("td", { class: `num ${ok ? "status-ok" : "status-err"}` }, String(call.status)),
    tokensCell(call.usage || {}),
    latencyCell(call),
    h("td", { class: "num" }, fmtUsd(call.cost_usd)),
    keyCell(call.api_key_id),
    h("td", { class: call.error_type ? "status-err" : "muted" },
      call.error_type ? (call.count > 1 ? `${call.error_type} ×${call.count}` : call.error_type) : "—"),
  );
}

function render(calls) {
  lastCalls = calls;
  const wrap = $("calls-wrap");
  const status = $("calls-status");
  if (calls.length === 0) {
    wrap.hidden = true;
    status.replaceChildren(emptyState("No calls yet", "Each call made with one of your keys is listed here."));
    return;
  }
  setStatus(status, "");
  $("calls-table").tBodies[0].replaceChildren(...calls.map(row));
  wrap.hidden = false;
}

export async function load() {
  const status = $("calls-status");
  if (!lastCalls) setStatus(status, "Loading recent calls…");
  try {
    const { data } = await get(`/usage/calls?limit=${LIMIT}`);
    render(data);
  } catch (err) {
    setStatus(status, `Could not load recent calls: ${err.message}`, "error");
  }
}

export function reset() {
  lastCalls = null;
  $("calls-table").tBodies[0].replaceChildren();
  $("calls-wrap").hidden = true;
  setStatus($("calls-status"), "");
}

export function init() {
  // Key names arrive separately; relabel the table when they do.
  document.addEventListener("qnp:keys", () => lastCalls && lastCalls.length && render(lastCalls));
}
