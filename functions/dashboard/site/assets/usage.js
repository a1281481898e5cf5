// Usage over the last 30 UTC days: a stacked bar chart per day and model (requests, tokens or cost),
// a plain-language summary and a data table for screen readers (a canvas says nothing to them), and
// the CSV export form.

import { get } from "./api.js";
import { keysById } from "./keys.js";
import { $, h, setStatus, emptyState, lastDays, addDays, utcDay, fmtDay, fmtInt, fmtCompact, fmtUsd, plural } from "./ui.js";

const DAYS = 30;

// Distinct hues that read on both the light and dark theme; models beyond these share "Other".
const PALETTE = ["#3451b2", "#2f9e8f", "#e8833a", "#a259c4", "#d6456a", "#6f9a2d", "#3fa0d8", "#b08d57"];

const METRICS = {
  requests: { label: "Requests", value: (row) => row.requests, format: fmtInt, axis: fmtCompact },
  tokens: { label: "Tokens", value: (row) => row.prompt_tokens + row.completion_tokens, format: fmtInt, axis: fmtCompact },
  cost: { label: "Cost (USD)", value: (row) => row.cost_usd, format: fmtUsd, axis: fmtUsd },
};

let chart = null;
let lastData = null;

function metric() {
  const checked = document.querySelector('input[name="metric"]:checked');
  return METRICS[checked ? checked.value : "requests"];
}

/** Models ordered by request count, so the biggest series sits at the bottom of each stack. */
function modelsOf(data) {
  return [...data.by_model].sort((a, b) => b.requests - a.requests || a.model.localeCompare(b.model)).map((m) => m.model);
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawChart(data) {
  const box = $("chart-box");
  const canvas = $("usage-chart");
  const days = lastDays(DAYS);
  const m = metric();
  const models = modelsOf(data);
  const index = new Map(days.map((d, i) => [d, i]));
  const datasets = models.map((model, i) => {
    const values = new Array(days.length).fill(0);
    for (const row of data.totals) {
      if (row.model === model && index.has(row.day)) values[index.get(row.day)] += m.value(row);
    }
    const color = PALETTE[i % PALETTE.length];
    return { label: model, data: values, backgroundColor: color, borderRadius: 2, maxBarThickness: 28 };
  });
  // Exposed for tests and tooling: which metric is drawn and its total per day.
  canvas.dataset.metric = m.label;
  canvas.dataset.days = JSON.stringify(
    Object.fromEntries(days.map((d, i) => [d, datasets.reduce((sum, ds) => sum + ds.data[i], 0)]).filter(([, v]) => v > 0)),
  );

  if (typeof window.Chart !== "function") {
    // The vendored script failed to load: the summary and table still carry everything.
    box.hidden = true;
    $("usage-table-wrap").open = true;
    return;
  }
  box.hidden = false;
  const text = cssVar("--muted") || "#5d6673";
  const grid = cssVar("--border") || "#dfe3e8";
  const config = {
    type: "bar",
    data: { labels: days.map(fmtDay), datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: true, grid: { display: false }, ticks: { color: text, maxRotation: 0, autoSkipPadding: 12 } },
        y: {
          stacked: true,
          beginAtZero: true,
          grid: { color: grid },
          border: { display: false },
          ticks: { color: text, precision: m === METRICS.cost ? undefined : 0, callback: (v) => m.axis(v) },
        },
      },
      plugins: {
        legend: { position: "bottom", labels: { color: text, boxWidth: 12, boxHeight: 12, usePointStyle: false } },
        tooltip: {
          // Only the models used that day: thirty zero lines would bury the one that matters.
          filter: (item) => item.parsed.y !== 0,
          callbacks: { label: (ctx) => `${ctx.dataset.label}: ${m.format(ctx.parsed.y)}` },
        },
      },
    },
  };
  const Chart = window.Chart;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  if (chart) chart.destroy();
  chart = new Chart(canvas, config);
}

function renderTable(data) {
  const rows = [...data.totals].sort((a, b) => b.day.localeCompare(a.day) || a.model.localeCompare(b.model));
  $("usage-table").tBodies[0].replaceChildren(
    ...rows.map((row) =>
      h(
        "tr",
        { dataset: { day: row.day, model: row.model } },
        h("td", {}, row.day),
        h("td", { class: "mono" }, row.model),
        h("td", { class: "num" }, fmtInt(row.requests)),
        h("td", { class: "num" }, fmtInt(row.prompt_tokens + row.completion_tokens)),
        h("td", { class: "num" }, fmtUsd(row.cost_usd)),
      ),
    ),
  );
}

/** The key the view is filtered to ("" for all), and its label. */
function selectedKey() {
  const id = $("usage-key").value;
  const key = id ? keysById.get(id) : null;
  return { id, label: key ? key.name || `${key.prefix}…` : null };
}

/** The key filter lists every key the account has (revoked ones too: their usage stays for 30 days). */
function fillKeyFilter() {
  const select = $("usage-key");
  const current = select.value;
  const keys = [...keysById.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  select.replaceChildren(
    h("option", { value: "" }, "All keys"),
    ...keys.map((k) =>
      h("option", { value: k.id }, `${k.name || "Unnamed key"} (${k.prefix}…)${k.revoked_at ? ", revoked" : ""}`),
    ),
  );
  select.value = keysById.has(current) ? current : "";
}

function summarize(data) {
  const tokens = data.by_day.reduce((sum, d) => sum + d.tokens, 0);
  const busiest = [...data.by_day].sort((a, b) => b.requests - a.requests)[0];
  const top = modelsOf(data)[0];
  return (
    `${plural(data.requests, "request")}, ${plural(tokens, "token")} and ${fmtUsd(data.cost_usd)} ` +
    `over the last ${DAYS} days` +
    (selectedKey().label ? ` with the key ${selectedKey().label}` : "") +
    `, across ${plural(data.by_model.length, "model")}` +
    (top ? ` (most used: ${top})` : "") +
    (busiest ? `. Busiest day: ${fmtDay(busiest.day)}, ${plural(busiest.requests, "request")}.` : ".")
  );
}

function render(data) {
  lastData = data;
  // The overview's totals are the account's; a filtered view leaves them as they were.
  if (!data.key) {
    $("ov-requests").textContent = plural(data.requests, "request");
    $("ov-cost").textContent = `${fmtUsd(data.cost_usd)} spent`;
  }
  const empty = data.totals.length === 0;
  $("chart-box").hidden = empty;
  $("usage-table-wrap").hidden = empty;
  const summary = $("usage-summary");
  if (empty) {
    summary.replaceChildren(
      data.key
        ? emptyState("No usage with this key", "Nothing in the last 30 days; choose All keys to see the rest.")
        : emptyState("No usage yet", "Calls made with your keys show up here within seconds. Usage is kept for 30 days."),
    );
    if (chart) {
      chart.destroy();
      chart = null;
    }
    return;
  }
  summary.textContent = summarize(data);
  renderTable(data);
  drawChart(data);
}

export async function load() {
  const status = $("usage-status");
  if (!lastData) setStatus(status, "Loading usage…");
  const days = lastDays(DAYS);
  try {
    const query = new URLSearchParams({ from: days[0], to: days[days.length - 1] });
    const key = selectedKey().id;
    if (key) query.set("key", key);
    const data = await get(`/usage?${query}`);
    setStatus(status, "");
    render(data);
  } catch (err) {
    setStatus(status, `Could not load usage: ${err.message}`, "error");
  }
}

// ---- CSV export ----

function updateExportLink() {
  const from = $("export-from").value;
  const to = $("export-to").value;
  const link = $("export-link");
  const error = $("export-error");
  let problem = "";
  if (!from || !to) problem = "Choose both dates.";
  else if (from > to) problem = "The start date must not be after the end date.";
  error.textContent = problem;
  error.hidden = !problem;
  link.setAttribute("aria-disabled", problem ? "true" : "false");
  const query = new URLSearchParams({ from, to });
  // The server names the file (Content-Disposition); `download` just keeps the page in place.
  link.href = `/usage/export.csv?${query}`;
}

export function reset() {
  lastData = null;
  if (chart) {
    chart.destroy();
    chart = null;
  }
  $("usage-summary").replaceChildren();
  $("usage-table").tBodies[0].replaceChildren();
  $("chart-box").hidden = true;
  $("usage-table-wrap").hidden = true;
  setStatus($("usage-status"), "");
  $("usage-key").replaceChildren(h("option", { value: "" }, "All keys"));
}

export function init() {
  document.addEventListener("qnp:keys", fillKeyFilter);
  $("usage-key").addEventListener("change", load);
  for (const input of document.querySelectorAll('input[name="metric"]')) {
    input.addEventListener("change", () => lastData && lastData.totals.length && drawChart(lastData));
  }
  // The canvas takes its axis and grid colours from the theme when drawn: redraw when the theme flips.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (lastData && lastData.totals.length) drawChart(lastData);
  });
  const today = utcDay(new Date());
  $("export-from").value = addDays(today, -(DAYS - 1));
  $("export-to").value = today;
  $("export-to").max = today;
  for (const id of ["export-from", "export-to"]) $(id).addEventListener("input", updateExportLink);
  $("export-link").addEventListener("click", (event) => {
    if ($("export-link").getAttribute("aria-disabled") === "true") {
      event.preventDefault();
      $("export-from").focus();
    }
  });
  $("export-form").addEventListener("submit", (event) => event.preventDefault());
  updateExportLink();
}
