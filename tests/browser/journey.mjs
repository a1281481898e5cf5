// The dashboard user journey in headless Chromium, against a running `qnp serve` (QNP_URL) whose
// Google sign-in points at tests/oidc (which approves alice@example.com without a login page).
//
// signed out → Sign in with Google → signed in → create a key with the keyboard, copy it → call the
// API with it from Node → the call shows in the recent-calls table and the chart → CSV export →
// chart metrics, billing without Stripe, JSON export, profile correction, restriction → revoke the
// key (it is refused afterwards) → sign out → the Stripe return notice → sign in again and delete
// the account.
//
// Any console error, uncaught exception, CSP violation, or request to an origin other than
// 127.0.0.1 fails the run, as does horizontal page scrolling at phone width. Screenshots go to
// tests/browser/screenshots/. Usually started by run.sh.

import { chromium } from "playwright-core";
import { mkdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const BASE = (process.env.QNP_URL || "").replace(/\/$/, "");
if (!BASE) {
  console.error("journey: set QNP_URL (tests/browser/run.sh does)");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));
const EMAIL = "alice@example.com";
const MODEL = "openai/gpt-4o-mini";
const CSV_HEADER =
  "timestamp,request_id,api_key_id,endpoint,provider,model,streamed,status,prompt_tokens,completion_tokens," +
  "cached_tokens,reasoning_tokens,latency_ms,ttft_ms,cost_usd,error_type";
// Two shared cores, also busy with builds: generous, but every wait is for a condition, never a sleep.
const TIMEOUT = 20_000;

class JourneyError extends Error {}
function check(condition, message) {
  if (!condition) throw new JourneyError(message);
}

const problems = [];
const timings = [];
// Chromium logs every 4xx/5xx fetch as a console error. The journey provokes a few on purpose (the
// signed-out probe GET /account → 401, a bad email → 400); each is announced beforehand and excused once.
const expectedHttpErrors = [];
function expectHttpError(status, path) {
  expectedHttpErrors.push(`${status} ${BASE}${path}`);
}

async function step(name, fn) {
  const t0 = performance.now();
  process.stdout.write(`journey: ${name} … `);
  try {
    const result = await fn();
    const ms = Math.round(performance.now() - t0);
    timings.push([name, ms]);
    process.stdout.write(`ok (${ms} ms)\n`);
    return result;
  } catch (err) {
    process.stdout.write("FAILED\n");
    err.message = `step "${name}": ${err.message}`;
    throw err;
  }
}

function watch(page) {
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    const url = msg.location().url || "";
    const http = text.match(/^Failed to load resource: the server responded with a status of (\d+)/);
    const expected = http ? expectedHttpErrors.indexOf(`${http[1]} ${url}`) : -1;
    if (expected >= 0) {
      expectedHttpErrors.splice(expected, 1);
      return;
    }
    problems.push(`console error: ${text}${url ? ` (${url})` : ""}`);
  });
  page.on("pageerror", (err) => problems.push(`uncaught exception: ${err.message}`));
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (url.protocol === "data:" || url.protocol === "blob:") return;
    if (url.hostname !== "127.0.0.1") problems.push(`request to another origin: ${req.method()} ${req.url()}`);
  });
  page.on("response", (res) => {
    if (res.url().startsWith(BASE) && res.status() >= 500) problems.push(`${res.status()} from ${res.url()}`);
  });
}

/** A small RFC 4180 reader: quoted fields, doubled quotes, CRLF or LF. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

async function proxiedCall(key) {
  const res = await fetch(`${BASE}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hello from the browser journey" }] }),
  });
  return { status: res.status, body: await res.text() };
}

async function main() {
  await mkdir(SHOTS, { recursive: true });
  const browser = await step("launch Chromium", () =>
    chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], timeout: 60_000 }),
  );
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    // CSP violations are reported by the page itself, before any of its scripts run.
    await context.exposeFunction("__qnpCspViolation", (v) => problems.push(`CSP violation: ${v}`));
    await context.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (e) => {
        window.__qnpCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"} at ${e.sourceFile || e.documentURI}:${e.lineNumber}`);
      });
    });
    context.setDefaultTimeout(TIMEOUT);
    const page = await context.newPage();
    watch(page);

    await step("signed-out view", async () => {
      expectHttpError(401, "/account");
      await page.goto(`${BASE}/`);
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.getByRole("heading", { name: "Sign in to QNP" }).waitFor();
      check(await page.locator("#view-dashboard").isHidden(), "the dashboard is visible while signed out");
      await page.screenshot({ path: `${SHOTS}signed-out-desktop.png`, fullPage: true });
    });

    await step("sign in with Google", async () => {
      await page.getByRole("link", { name: "Sign in with Google" }).click();
      await page.waitForURL(`${BASE}/`);
      await page.locator("#view-dashboard").waitFor({ state: "visible" });
      const email = await page.locator("#who-email").textContent();
      check(email === EMAIL, `signed in as ${JSON.stringify(email)}, expected ${EMAIL}`);
      check(await page.locator("#profile-email").inputValue() === EMAIL, "the profile form does not show the email");
      await page.getByText("No keys yet").waitFor();
      await page.getByText("No usage yet").waitFor();
    });

    const key = await step("create a key with the keyboard, copy it", async () => {
      await page.locator("#key-name").fill("journey");
      await page.locator("#key-name").focus();
      await page.keyboard.press("Tab");
      const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
      check(focused === "create-key", `Tab from the key name went to #${focused}, not the Create key button`);
      await page.keyboard.press("Enter");
      const box = page.locator("#new-key");
      await box.waitFor({ state: "visible" });
      check(/you won't see this again/i.test(await box.textContent()), "the new-key box does not warn it is shown once");
      const shown = await page.locator("#new-key-value").inputValue();
      await box.screenshot({ path: `${SHOTS}new-key.png` });
      check(/^qnp_[a-z0-9]{16}_[A-Za-z0-9]{40}$/.test(shown), `the displayed key looks wrong: ${JSON.stringify(shown)}`);
      await page.getByRole("button", { name: "Copy", exact: true }).click();
      await page.locator("#new-key-copied", { hasText: "Copied" }).waitFor();
      const copied = await page.evaluate(() => navigator.clipboard.readText());
      check(copied === shown, "the clipboard does not hold the displayed key");
      await page.getByRole("button", { name: "Done" }).click();
      await box.waitFor({ state: "hidden" });
      const lingering = await page.evaluate(
        (secret) => document.documentElement.outerHTML.includes(secret) || [...document.querySelectorAll("input")].some((i) => i.value.includes(secret)),
        shown,
      );
      check(!lingering, "the plaintext key is still in the page after Done");
      const item = page.locator("#keys-active li[data-state=active]", { hasText: "journey" });
      await item.waitFor();
      const id = await item.getAttribute("data-key-id");
      check(shown.startsWith(`qnp_${id}_`), `the listed key id ${id} is not the created key's`);
      return { plaintext: shown, id };
    });

    await step("proxied call with the new key", async () => {
      const { status, body } = await proxiedCall(key.plaintext);
      check(status === 200, `POST /v1/chat/completions answered ${status}: ${body}`);
      const content = JSON.parse(body).choices[0].message.content;
      check(content === "echo: hello from the browser journey", `unexpected completion ${JSON.stringify(content)}`);
    });

    const today = new Date().toISOString().slice(0, 10);
    await step("refresh usage: recent calls table and chart", async () => {
      await page.getByRole("button", { name: "Refresh" }).click();
      const row = page.locator(`#calls-table tbody tr[data-model="${MODEL}"][data-status="200"]`);
      await row.first().waitFor();
      check((await row.count()) === 1, `expected 1 recent call, found ${await row.count()}`);
      const cells = await row.locator("td").allTextContents();
      check(cells[1] === `${MODEL}/v1/chat/completions` && cells[2] === "200",
        `recent-call row reads ${JSON.stringify(cells)}`);
      check(cells[6] === "journey", `the call's key column reads ${JSON.stringify(cells[6])}, expected the key's name`);
      const keyMeta = await page.locator(`#keys-active li[data-key-id="${key.id}"] .key-meta`).textContent();
      check(/Last used \S/.test(keyMeta), `after the call the key reads ${JSON.stringify(keyMeta)}`);
      // Rendering slips (an object or a missing field printed as text) anywhere on the page.
      const slip = (await page.locator("body").innerText()).match(/\[object \w+\]|\bundefined\b|\bNaN\b|\bnull\b/);
      check(!slip, `the page shows ${JSON.stringify(slip && slip[0])}`);
      // The chart: through Chart.js's own data, the exposed per-day totals, and the accessible table.
      const chart = await page.evaluate(() => {
        const c = window.Chart && window.Chart.getChart("usage-chart");
        return c && { labels: c.data.labels, datasets: c.data.datasets.map((d) => ({ label: d.label, data: d.data })) };
      });
      check(chart, "no Chart.js chart on #usage-chart");
      const series = chart.datasets.find((d) => d.label === MODEL);
      check(series && series.data[series.data.length - 1] === 1,
        `the chart's last day (today) has no request for ${MODEL}: ${JSON.stringify(chart.datasets)}`);
      const days = JSON.parse(await page.locator("#usage-chart").getAttribute("data-days"));
      check(days[today] === 1, `chart data-days has ${JSON.stringify(days)}, expected 1 request on ${today}`);
      const tableRow = page.locator(`#usage-table tbody tr[data-day="${today}"][data-model="${MODEL}"]`);
      check((await tableRow.count()) === 1, "the accessible usage table has no row for today's call");
      const summary = await page.locator("#usage-summary").textContent();
      check(/^1 request,/.test(summary), `usage summary reads ${JSON.stringify(summary)}`);
    });

    await step("screenshots: desktop and phone, no horizontal scroll", async () => {
      // Dismiss the transient notices (and prove their close buttons work) so they don't cover the page.
      for (const close of await page.locator("#notices .notice").getByRole("button", { name: "Dismiss" }).all()) {
        await close.click();
      }
      check((await page.locator("#notices .notice").count()) === 0, "notices remain after dismissing them");
      await page.screenshot({ path: `${SHOTS}dashboard-desktop.png`, fullPage: true });
      await page.setViewportSize({ width: 375, height: 812 });
      // Chart.js resizes on a ResizeObserver callback: wait for the canvas to fit the new width.
      await page.waitForFunction(() => document.getElementById("usage-chart").getBoundingClientRect().width <= 375);
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      check(width <= 375, `the page scrolls horizontally at 375 px: scrollWidth ${width}`);
      await page.screenshot({ path: `${SHOTS}dashboard-phone.png`, fullPage: true });
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.emulateMedia({ colorScheme: "dark" });
      await page.waitForFunction(() => getComputedStyle(document.body).backgroundColor !== "rgb(246, 247, 249)");
      await page.screenshot({ path: `${SHOTS}dashboard-dark.png`, fullPage: true });
      await page.emulateMedia({ colorScheme: "light" });
    });

    await step("CSV export for the range", async () => {
      const from = await page.locator("#export-from").inputValue();
      const to = await page.locator("#export-to").inputValue();
      check(to === today, `the export range ends ${to}, expected today (${today})`);
      const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#export-link").click()]);
      check(download.url() === `${BASE}/usage/export.csv?from=${from}&to=${to}`, `downloaded ${download.url()}`);
      check(download.suggestedFilename() === `qnp-usage-${from}-${to}.csv`, `the CSV is named ${download.suggestedFilename()}`);
      const text = await readFile(await download.path(), "utf8");
      const rows = parseCsv(text).filter((r) => r.length > 1 || r[0] !== "");
      check(rows.length > 0 && rows[0].join(",") === CSV_HEADER, `CSV header is ${JSON.stringify(rows[0] && rows[0].join(","))}`);
      const header = rows[0];
      const records = rows.slice(1).map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
      check(records.length === 1, `expected 1 CSV row, got ${records.length}`);
      const [call] = records;
      check(call.model === MODEL && call.status === "200" && call.api_key_id === key.id,
        `CSV row is ${JSON.stringify(call)}`);
    });

    await step("chart metrics, billing state, JSON export", async () => {
      const metrics = page.getByRole("group", { name: "Show" });
      await metrics.getByText("Tokens").click();
      await page.waitForFunction(() => document.getElementById("usage-chart").dataset.metric === "Tokens");
      const tokens = JSON.parse(await page.locator("#usage-chart").getAttribute("data-days"));
      check(tokens[today] === 18, `tokens today ${JSON.stringify(tokens)}, expected 12 prompt + 6 completion`);
      await metrics.getByText("Cost").click();
      await page.waitForFunction(() => document.getElementById("usage-chart").dataset.metric === "Cost (USD)");
      await metrics.getByText("Requests").click();
      // No STRIPE_SECRET_KEY here: nothing to buy, and the page says why instead of offering dead buttons.
      check(await page.locator("#billing-disabled").isVisible(), "billing is disabled but the page does not say so");
      check(await page.locator("#billing-portal").isHidden(), "Manage billing is offered without billing");
      check((await page.locator("#plans button").count()) === 0, "upgrade buttons are offered without billing");
      check((await page.locator("#bill-plan").textContent()) === "Free", "the plan is not shown as Free");
      const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#export-account").click()]);
      const exported = JSON.parse(await readFile(await download.path(), "utf8"));
      check(exported.format === "qnp-account-export/1" && exported.account.email === EMAIL, "the account export is wrong");
      check(exported.api_keys.length === 1 && exported.usage.length === 1, "the account export lacks the key or the call");
    });

    await step("profile correction and restriction of processing", async () => {
      await page.locator("#profile-email").fill("not-an-email");
      expectHttpError(400, "/account");
      await page.getByRole("button", { name: "Save changes" }).click();
      const error = page.locator("#profile-email-error");
      await error.waitFor({ state: "visible" });
      check(/email/i.test(await error.textContent()), "a bad email shows no message from the API");
      await page.locator("#profile-email").fill(EMAIL);
      await page.locator("#profile-name").fill("Alice Journey");
      await page.getByRole("button", { name: "Save changes" }).click();
      await page.locator("#notices", { hasText: "Your details are saved." }).waitFor();
      check(await error.isHidden(), "the email error stays after a good save");
      await page.getByRole("button", { name: "Restrict processing" }).click();
      await page.locator("#restricted-banner").waitFor({ state: "visible" });
      await page.getByRole("button", { name: "Lift restriction" }).click();
      await page.locator("#restricted-banner").waitFor({ state: "hidden" });
    });

    await step("revoke the key; it is refused afterwards", async () => {
      await page.locator(`#keys-active li[data-key-id="${key.id}"]`).getByRole("button", { name: /Revoke/ }).click();
      const dialog = page.locator("#revoke-dialog");
      await dialog.waitFor({ state: "visible" });
      await dialog.getByRole("button", { name: "Revoke key" }).click();
      await dialog.waitFor({ state: "hidden" });
      await page.locator(`#keys-revoked li[data-key-id="${key.id}"][data-state=revoked]`).waitFor({ state: "attached" });
      check((await page.locator(`#keys-active li[data-key-id="${key.id}"]`).count()) === 0, "the revoked key is still listed as active");
      await page.getByText("No active keys").waitFor();
      const { status, body } = await proxiedCall(key.plaintext);
      check(status === 401, `a call with the revoked key answered ${status}: ${body}`);
    });

    await step("sign out", async () => {
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      check(!(await page.locator("#keys-active").textContent()).includes("journey"), "the previous user's keys are still in the page");
      // The session ended on the server too: a fresh load is signed out.
      expectHttpError(401, "/account");
      await page.reload();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.setViewportSize({ width: 375, height: 812 });
      await page.screenshot({ path: `${SHOTS}signed-out-phone.png`, fullPage: true });
      await page.setViewportSize({ width: 1280, height: 900 });
    });

    await step("back from Stripe: the notice, then a tidy URL", async () => {
      expectHttpError(401, "/account");
      await page.goto(`${BASE}/?billing=canceled`);
      await page.locator("#notices", { hasText: "Checkout canceled" }).waitFor();
      check(page.url() === `${BASE}/`, `the URL still carries the billing outcome: ${page.url()}`);
    });

    await step("sign in again and delete the account", async () => {
      await page.getByRole("link", { name: "Sign in with Google" }).click();
      await page.locator("#view-dashboard").waitFor({ state: "visible" });
      check((await page.locator("#profile-name").inputValue()) === "Alice Journey", "the corrected name did not stick");
      await page.getByRole("button", { name: "Delete account…" }).click();
      const dialog = page.locator("#delete-dialog");
      await dialog.waitFor({ state: "visible" });
      const confirm = dialog.getByRole("button", { name: "Delete my account" });
      await page.screenshot({ path: `${SHOTS}delete-dialog.png` });
      check(await confirm.isDisabled(), "deletion is possible before typing the email");
      await dialog.getByLabel(/Type your email/).fill(EMAIL);
      await confirm.click();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.locator("#notices", { hasText: "erased" }).waitFor();
      expectHttpError(401, "/account");
      await page.reload();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
    });

    check(problems.length === 0, `problems during the journey:\n  ${problems.join("\n  ")}`);
  } finally {
    await browser.close();
  }
}

const t0 = performance.now();
main().then(
  () => {
    console.log(`journey: PASS in ${((performance.now() - t0) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
  },
  (err) => {
    console.error(`journey: FAIL: ${err instanceof JourneyError ? err.message : err.stack || err}`);
    if (problems.length) console.error(`also seen:\n  ${problems.join("\n  ")}`);
    process.exit(1);
  },
);
