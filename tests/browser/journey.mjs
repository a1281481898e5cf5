// The dashboard user journey in headless Chromium, against a running `qnp serve` (QNP_URL) whose
// Google sign-in points at tests/oidc (which approves alice@example.com without a login page).
//
// signed out (only the configured provider's button; a failed sign-in's reason shown, then the URL
// tidied) → Sign in with Google → signed in → create a key with the keyboard, copy it → call the
// API with it from Node → the call shows in the recent-calls table and the chart → CSV export →
// chart metrics, JSON export, profile correction, restriction → the free plan's spend against its cap
// → upgrade to pro through (stand-in) Stripe Checkout, whose signed webhooks reach QNP before the
// browser is back → the pro plan on the page and at the proxy at once → what async-stripe sent →
// Manage billing in the (stand-in) portal and back → edit the key's controls (a refused value shown
// beside its field; the proxy applies the rest) → rotate it (both secrets work) → usage filtered by key
// → revoke the key (it is refused at once) → sign
// out → the Stripe return notice → a sign-out right after Checkout leaves no delayed billing reload
// behind (a second context, fake clock) → sign in again and delete the account.
//
// Stripe is tests/browser/mock_stripe.mjs on 127.0.0.1 (STRIPE_MOCK_URL): its API answers
// async-stripe, its /pay and /portal pages stand in for Stripe's hosted pages, and /_requests
// tells what it was asked and what QNP answered its webhook deliveries.
//
// Any console error (Chromium logs every 4xx/5xx fetch as one, so this includes any HTTP error the page
// provokes), uncaught exception, CSP violation, 5xx from QNP or the Stripe stand-in, or request to an
// origin other than 127.0.0.1 fails the run, as does horizontal page scrolling at phone width.
// Screenshots go to tests/browser/screenshots/. Usually started by run.sh.

import { chromium } from "playwright-core";
import { mkdir, readFile, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const BASE = (process.env.QNP_URL || "").replace(/\/$/, "");
const STRIPE = (process.env.STRIPE_MOCK_URL || "").replace(/\/$/, "");
if (!BASE || !STRIPE) {
  console.error("journey: set QNP_URL and STRIPE_MOCK_URL (tests/browser/run.sh does)");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));
const EMAIL = "alice@example.com";
const MODEL = "openai/gpt-4o-mini";
// run.sh's QNP_PLANS and the stand-in's credentials.
const PRO_PRICE = "price_browser_pro";
const STRIPE_KEY = "sk_test_browser";
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
// Error responses a step provokes on purpose (one each): Chromium logs them as console errors.
const expectedErrors = [];
function expectError(status, path) {
  expectedErrors.push({ status, path });
}
const timings = [];
// The screenshots written so far (printed at the end, pass or fail).
const shots = [];
function shot(name) {
  const path = `${SHOTS}${name}`;
  if (!shots.includes(path)) shots.push(path);
  return path;
}
// Every request the page makes to QNP, as "METHOD /path?query", for checks on what it did (not) ask.
const requests = [];

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
    const allowed = expectedErrors.findIndex((e) => text.includes(`status of ${e.status}`) && url.includes(e.path));
    if (allowed >= 0) {
      expectedErrors.splice(allowed, 1);
      return;
    }
    problems.push(`console error: ${text}${url ? ` (${url})` : ""}`);
  });
  page.on("pageerror", (err) => problems.push(`uncaught exception: ${err.message}`));
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (url.protocol === "data:" || url.protocol === "blob:") return;
    if (url.hostname !== "127.0.0.1") problems.push(`request to another origin: ${req.method()} ${req.url()}`);
    if (req.url().startsWith(BASE)) requests.push(`${req.method()} ${url.pathname}${url.search}`);
  });
  page.on("response", (res) => {
    const ours = res.url().startsWith(BASE) || res.url().startsWith(STRIPE);
    if (ours && res.status() >= 500) problems.push(`${res.status()} from ${res.url()}`);
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
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** What the Stripe stand-in was asked (API requests) and what QNP answered its webhook deliveries. */
async function stripeLedger() {
  const res = await fetch(`${STRIPE}/_requests`);
  check(res.ok, `GET ${STRIPE}/_requests answered ${res.status}`);
  return res.json();
}

/** Fails on rendering slips (an object or a missing field printed as text) anywhere on the page. */
async function checkNoSlips(page) {
  const slip = (await page.locator("body").innerText()).match(/\[object \w+\]|\bundefined\b|\bNaN\b|\bnull\b/);
  check(!slip, `the page shows ${JSON.stringify(slip && slip[0])}`);
}

/** A browser context that reports CSP violations and waits TIMEOUT at most. */
async function openContext(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  // CSP violations are reported by the page itself, before any of its scripts run.
  await context.exposeFunction("__qnpCspViolation", (v) => problems.push(`CSP violation: ${v}`));
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__qnpCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"} at ${e.sourceFile || e.documentURI}:${e.lineNumber}`);
    });
  });
  context.setDefaultTimeout(TIMEOUT);
  return context;
}

async function main() {
  // Start from an empty folder, so no picture from an earlier run passes for this one's.
  await rm(SHOTS, { recursive: true, force: true });
  await mkdir(SHOTS, { recursive: true });
  const browser = await step("launch Chromium", () =>
    chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], timeout: 60_000 }),
  );
  try {
    const context = await openContext(browser);
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    const page = await context.newPage();
    watch(page);

    await step("signed-out view: only the configured provider", async () => {
      requests.length = 0;
      await page.goto(`${BASE}/`);
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.getByRole("heading", { name: "Sign in to QNP" }).waitFor();
      check(await page.locator("#view-dashboard").isHidden(), "the dashboard is visible while signed out");
      // The page asks GET /auth/session (never a 401) and nothing that needs a session.
      const api = requests.filter((r) => !/^GET \/(assets\/.*)?$/.test(r));
      check(api.length === 1 && api[0] === "GET /auth/session", `a signed-out load asked ${JSON.stringify(api)}`);
      // run.sh configures Google only: its button, and no Apple button or "not configured" message.
      await page.getByRole("link", { name: "Sign in with Google" }).waitFor();
      check((await page.getByRole("link", { name: "Sign in with Apple" }).count()) === 0, "an Apple button is offered without Apple credentials");
      check(await page.locator("#signin-none").isHidden(), "the page says sign-in is not configured although Google is");
      await page.screenshot({ path: shot("signed-out-desktop.png"), fullPage: true });
    });

    await step("a failed sign-in comes back with its reason, then a tidy URL", async () => {
      await page.goto(`${BASE}/?signin_error=cancelled`);
      const notice = page.locator("#notices .notice-error", { hasText: "cancelled at the provider" });
      await notice.waitFor();
      check((await page.locator("#notices").getAttribute("aria-live")) === "polite", "the notices are not a live region");
      check(page.url() === `${BASE}/`, `the URL still carries the sign-in error: ${page.url()}`);
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.setViewportSize({ width: 375, height: 812 });
      await page.screenshot({ path: shot("signin-error-phone.png") });
      await page.setViewportSize({ width: 1280, height: 900 });
      await notice.getByRole("button", { name: "Dismiss" }).click();
      await notice.waitFor({ state: "detached" });
      // The real thing: the unconfigured provider's login link sends the browser back with the reason.
      await page.goto(`${BASE}/auth/apple/login`);
      const unconfigured = page.locator("#notices .notice-error", { hasText: "Sign-in failed" });
      await unconfigured.waitFor();
      check(page.url() === `${BASE}/`, `the URL after the Apple login link is ${page.url()}`);
      check(/not configured/i.test(await unconfigured.textContent()), `the Apple failure reads ${JSON.stringify(await unconfigured.textContent())}`);
      await unconfigured.getByRole("button", { name: "Dismiss" }).click();
      await unconfigured.waitFor({ state: "detached" });
      // A crafted link cannot put its own words on the page: unknown codes read as the generic failure.
      await page.goto(`${BASE}/?signin_error=${encodeURIComponent("Call +1 555 0100 to verify your account")}`);
      const crafted = page.locator("#notices .notice-error", { hasText: "Sign-in failed" });
      await crafted.waitFor();
      check(!(await page.content()).includes("555 0100"), "text from the URL reached the page");
      await crafted.getByRole("button", { name: "Dismiss" }).click();
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
      await box.screenshot({ path: shot("new-key.png") });
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
      await checkNoSlips(page);
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
      await page.screenshot({ path: shot("dashboard-desktop.png"), fullPage: true });
      await page.setViewportSize({ width: 375, height: 812 });
      // Chart.js resizes on a ResizeObserver callback: wait for the canvas to fit the new width.
      await page.waitForFunction(() => document.getElementById("usage-chart").getBoundingClientRect().width <= 375);
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      check(width <= 375, `the page scrolls horizontally at 375 px: scrollWidth ${width}`);
      await page.screenshot({ path: shot("dashboard-phone.png"), fullPage: true });
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.emulateMedia({ colorScheme: "dark" });
      await page.waitForFunction(() => getComputedStyle(document.body).backgroundColor !== "rgb(246, 247, 249)");
      await page.screenshot({ path: shot("dashboard-dark.png"), fullPage: true });
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

    await step("chart metrics, JSON export", async () => {
      const metrics = page.getByRole("group", { name: "Show" });
      await metrics.getByText("Tokens").click();
      await page.waitForFunction(() => document.getElementById("usage-chart").dataset.metric === "Tokens");
      const tokens = JSON.parse(await page.locator("#usage-chart").getAttribute("data-days"));
      check(tokens[today] === 18, `tokens today ${JSON.stringify(tokens)}, expected 12 prompt + 6 completion`);
      await metrics.getByText("Cost").click();
      await page.waitForFunction(() => document.getElementById("usage-chart").dataset.metric === "Cost (USD)");
      await metrics.getByText("Requests").click();
      const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#export-account").click()]);
      const exported = JSON.parse(await readFile(await download.path(), "utf8"));
      check(exported.format === "qnp-account-export/1" && exported.account.email === EMAIL, "the account export is wrong");
      check(exported.api_keys.length === 1 && exported.usage.length === 1, "the account export lacks the key or the call");
    });

    await step("profile correction and restriction of processing", async () => {
      // The email is a choice among the addresses a provider verified, never free text: nobody can claim
      // an address that is not theirs.
      const choices = await page.locator("#profile-email option").allTextContents();
      check(JSON.stringify(choices) === JSON.stringify([EMAIL]), `the email choices are ${JSON.stringify(choices)}`);
      check(await page.locator("#profile-email").evaluate((e) => e.tagName) === "SELECT", "the email is free text");
      const error = page.locator("#profile-email-error");
      await page.locator("#profile-name").fill("Alice Journey");
      await page.getByRole("button", { name: "Save changes" }).click();
      await page.locator("#notices", { hasText: "Your details are saved." }).waitFor();
      check(await error.isHidden(), "an email error shows after a good save");
      await page.getByRole("button", { name: "Restrict processing" }).click();
      await page.locator("#restricted-banner").waitFor({ state: "visible" });
      await page.getByRole("button", { name: "Lift restriction" }).click();
      await page.locator("#restricted-banner").waitFor({ state: "hidden" });
    });

    // The account id, as QNP gives it to the page (the session cookie is the browser context's).
    const accountId = await step("read the account id", async () => {
      const res = await page.request.get(`${BASE}/account`);
      check(res.ok(), `GET /account answered ${res.status()}`);
      const { id } = await res.json();
      check(typeof id === "string" && id.length > 0, `GET /account has no id`);
      return id;
    });

    await step("billing: the free plan, this month's spend against its $1.00 cap", async () => {
      // A call now puts the key, with the free plan's limits, in the proxy's key cache.
      const { status, headers, body } = await proxiedCall(key.plaintext);
      check(status === 200, `a call on the free plan answered ${status}: ${body}`);
      const rpm = headers.get("x-ratelimit-limit-requests");
      check(rpm === "20", `on the free plan x-ratelimit-limit-requests is ${JSON.stringify(rpm)}, expected "20"`);
      // Refresh reloads billing too; the button is busy (aria-busy) until every section has loaded.
      await page.getByRole("button", { name: "Refresh" }).click();
      await page.waitForFunction(() => document.getElementById("usage-refresh").getAttribute("aria-busy") !== "true");
      // The calls so far cost a few millionths of a dollar, which the page must not round to nothing.
      const spend = await page.locator("#bill-spend").textContent();
      check(/^\$0\.0*[1-9]\d* of \$1\.00$/.test(spend), `the spend reads ${JSON.stringify(spend)}`);
      check((await page.locator("#bill-plan").textContent()) === "Free", `the plan reads ${JSON.stringify(await page.locator("#bill-plan").textContent())}`);
      const limits = await page.locator("#bill-limits").textContent();
      check(limits === "20 requests/min · 40K tokens/min; spend capped at $1.00/month", `the limits read ${JSON.stringify(limits)}`);
      check(/^\d+% of \$1\.00 · resets \S/.test(await page.locator("#bill-meter-label").textContent()),
        `the meter reads ${JSON.stringify(await page.locator("#bill-meter-label").textContent())}`);
      check((await page.locator("#bill-sub").textContent()) === "None (no subscription needed)", `the subscription reads ${JSON.stringify(await page.locator("#bill-sub").textContent())}`);
      check((await page.locator("#ov-plan").textContent()) === "Free", "the overview does not show the Free plan");
      // Stripe is configured: the page offers the paid plan and (not yet usable) Manage billing.
      check(await page.locator("#billing-disabled").isHidden(), "the page says payments are not configured");
      const free = page.locator('#plans .plan[data-plan="free"]');
      check((await free.getByText("Current plan").count()) === 1, "the free plan is not marked as the current one");
      const upgrade = page.locator('#plans .plan[data-plan="pro"]').getByRole("button", { name: "Upgrade to Pro" });
      await upgrade.waitFor();
      check((await page.locator("#plans button").count()) === 1, "more than the one upgrade button is offered");
      const portal = page.locator("#billing-portal");
      check((await portal.isVisible()) && (await portal.isDisabled()), "Manage billing should be shown but disabled before a purchase");
      const note = await page.locator("#billing-portal-note").textContent();
      check(note === "Available after your first purchase.", `the portal note reads ${JSON.stringify(note)}`);
    });

    await step("upgrade to pro through Stripe Checkout (signed webhooks)", async () => {
      await page.locator('#plans .plan[data-plan="pro"]').getByRole("button", { name: "Upgrade to Pro" }).click();
      await page.waitForURL((url) => url.href.startsWith(`${STRIPE}/pay/`));
      await page.getByRole("heading", { name: "Stripe Checkout (test stand-in)" }).waitFor();
      check((await page.locator("body").innerText()).includes(PRO_PRICE), "the Checkout page is not for the pro price");
      // Pay: the stand-in delivers checkout.session.completed and customer.subscription.created to QNP,
      // each signed, each answered 200, and only then sends the browser back to the success_url.
      await page.getByRole("button", { name: "Pay" }).click();
      try {
        await page.waitForURL((url) => url.href.startsWith(`${BASE}/`));
      } catch (err) {
        throw new JourneyError(`after Pay the browser stayed at ${page.url()}: ${await page.locator("body").innerText()}`);
      }
      await page.locator("#notices .notice-ok", { hasText: "Your payment went through" }).waitFor();
      check(page.url() === `${BASE}/`, `the URL still carries the billing outcome: ${page.url()}`);
      // The webhooks were applied before the redirect: the page's first load already shows pro, no polling.
      await page.locator("#billing-body").waitFor({ state: "visible" });
      const plan = await page.locator("#bill-plan").textContent();
      check(plan === "Pro", `back from Checkout the first load shows plan ${JSON.stringify(plan)}, expected Pro`);
      const { deliveries } = await stripeLedger();
      check(deliveries.length === 2 && deliveries.every((d) => d.status === 200),
        `webhook deliveries: ${JSON.stringify(deliveries)}`);
      check(deliveries[0].type === "checkout.session.completed" && deliveries[1].type === "customer.subscription.created",
        `deliveries in the wrong order: ${JSON.stringify(deliveries.map((d) => d.type))}`);
      // 200 also acknowledges deliveries that can never apply ("not applied: …"), or that QNP ignores:
      // both must read "processed".
      const notes = deliveries.map((d) => JSON.parse(d.body).note);
      check(notes.every((n) => n === "processed"), `QNP's notes on the deliveries: ${JSON.stringify(notes)}`);
    });

    await step("the pro plan: page, limits, subscription; screenshot", async () => {
      const text = async (id) => page.locator(`#${id}`).textContent();
      check(/^\$0\.0*[1-9]\d* of \$200\.00$/.test(await text("bill-spend")), `the spend reads ${JSON.stringify(await text("bill-spend"))}`);
      check((await text("bill-limits")) === "600 requests/min · 2M tokens/min; spend capped at $200.00/month",
        `the limits read ${JSON.stringify(await text("bill-limits"))}`);
      check(/^Pro · Active · renews \S/.test(await text("bill-sub")), `the subscription reads ${JSON.stringify(await text("bill-sub"))}`);
      check((await text("ov-plan")) === "Pro", `the overview shows plan ${JSON.stringify(await text("ov-plan"))}`);
      check(/^\$0\.0*[1-9]\d* \/ \$200\.00$/.test(await text("ov-spend")), `the overview spend reads ${JSON.stringify(await text("ov-spend"))}`);
      const pro = page.locator('#plans .plan[data-plan="pro"]');
      check((await pro.getByText("Current plan").count()) === 1, "the pro plan is not marked as the current one");
      check((await page.locator("#plans button").count()) === 0, "an upgrade is still offered on the pro plan");
      const portal = page.locator("#billing-portal");
      check((await portal.isVisible()) && (await portal.isEnabled()), "Manage billing is not usable after the purchase");
      const note = await text("billing-portal-note");
      check(note === "Invoices, payment method and cancellation, on Stripe.", `the portal note reads ${JSON.stringify(note)}`);
      await checkNoSlips(page);
      for (const close of await page.locator("#notices .notice").getByRole("button", { name: "Dismiss" }).all()) {
        await close.click();
      }
      await page.locator("#billing").screenshot({ path: shot("billing-pro-desktop.png") });
    });

    const customerId = await step("what async-stripe sent the Stripe API", async () => {
      const { requests: sent, customers } = await stripeLedger();
      const summary = sent.map((r) => `${r.method} ${r.path}`);
      check(sent.length === 3 && summary[0] === "POST /v1/customers" && summary[1] === "POST /v1/checkout/sessions" &&
        /^GET \/v1\/subscriptions\/sub_\S+$/.test(summary[2]),
        `expected one customer, one Checkout Session and the subscription read, got ${JSON.stringify(summary)}`);
      for (const r of sent) {
        check(r.authorization === `Bearer ${STRIPE_KEY}`, `${r.method} ${r.path} was sent with authorization ${JSON.stringify(r.authorization)}`);
      }
      const [customer, session] = sent;
      const customerId = customers.find((c) => c.metadata.account_id === accountId)?.id;
      check(customers.length === 1 && customerId, `the stand-in holds customers ${JSON.stringify(customers)}`);
      check(customer.form.email === EMAIL && customer.form["metadata[account_id]"] === accountId,
        `the customer was created with ${JSON.stringify(customer.form)}`);
      check(customer.form.name === "Alice Journey", `the customer's name is ${JSON.stringify(customer.form.name)}`);
      check(typeof customer.idempotency_key === "string" && customer.idempotency_key.includes(accountId),
        `the customer was created with Idempotency-Key ${JSON.stringify(customer.idempotency_key)}`);
      const expected = {
        mode: "subscription",
        customer: customerId,
        "line_items[0][price]": PRO_PRICE,
        "line_items[0][quantity]": "1",
        client_reference_id: accountId,
        "metadata[account_id]": accountId,
        "subscription_data[metadata][account_id]": accountId,
        success_url: `${BASE}/?billing=success`,
        cancel_url: `${BASE}/?billing=canceled`,
      };
      for (const [field, value] of Object.entries(expected)) {
        check(session.form[field] === value, `the Checkout Session's ${field} is ${JSON.stringify(session.form[field])}, expected ${JSON.stringify(value)}`);
      }
      return customerId;
    });

    await step("the proxy applies pro at once (x-ratelimit-limit-requests: 600)", async () => {
      // The same key, cached with the free plan a moment ago: the webhook reached the proxy's key cache.
      const { status, headers, body } = await proxiedCall(key.plaintext);
      check(status === 200, `a call on the pro plan answered ${status}: ${body}`);
      const rpm = headers.get("x-ratelimit-limit-requests");
      check(rpm === "600", `after the upgrade x-ratelimit-limit-requests is ${JSON.stringify(rpm)}, expected "600"`);
    });

    await step("Manage billing: the Billing Portal and back", async () => {
      await page.getByRole("button", { name: "Manage billing" }).click();
      await page.waitForURL((url) => url.href.startsWith(`${STRIPE}/portal/`));
      await page.getByRole("heading", { name: "Billing portal (test stand-in)" }).waitFor();
      const { requests: sent } = await stripeLedger();
      const portal = sent.filter((r) => r.path === "/v1/billing_portal/sessions");
      check(portal.length === 1 && portal[0].method === "POST", `portal sessions requested: ${JSON.stringify(portal)}`);
      check(portal[0].form.customer === customerId && portal[0].form.return_url === `${BASE}/`,
        `the portal session was requested with ${JSON.stringify(portal[0].form)}`);
      check(portal[0].authorization === `Bearer ${STRIPE_KEY}`, "the portal session was requested without the secret key");
      await page.getByRole("link", { name: "Return to QNP" }).click();
      await page.waitForURL(`${BASE}/`);
      await page.locator("#view-dashboard").waitFor({ state: "visible" });
      await page.locator("#billing-body").waitFor({ state: "visible" });
      check((await page.locator("#bill-plan").textContent()) === "Pro", "back from the portal the plan is not Pro");
    });

    await step("edit the key: name and controls; a refused value stays beside its field", async () => {
      const row = page.locator(`#keys-active li[data-key-id="${key.id}"]`);
      await row.getByRole("button", { name: /Edit/ }).click();
      const dialog = page.locator("#edit-dialog");
      await dialog.waitFor({ state: "visible" });
      const name = dialog.getByLabel("Name");
      check((await name.inputValue()) === "journey", `the name field starts as ${JSON.stringify(await name.inputValue())}`);
      await name.fill("journey (renamed)");
      const spend = dialog.getByLabel(/Monthly spend limit/);
      await spend.fill("0");
      expectError(400, `/keys/${key.id}`);
      await dialog.getByRole("button", { name: "Save" }).click();
      const spendError = page.locator("#edit-spend-error");
      await spendError.waitFor({ state: "visible" });
      check(/monthly_spend_limit_usd/.test(await spendError.textContent()), `the spend error reads ${JSON.stringify(await spendError.textContent())}`);
      check(await dialog.isVisible(), "the dialog closed on a refused value");
      check((await name.inputValue()) === "journey (renamed)", "the refused save lost the other fields");
      await spend.fill("5");
      await dialog.getByLabel(/Models it may call/).fill("openai/*");
      await dialog.getByLabel(/Requests per minute/).fill("30");
      const tomorrow = new Date(Date.now() + 86_400_000);
      const pad = (n) => String(n).padStart(2, "0");
      await dialog.getByLabel(/Expires/).fill(
        `${tomorrow.getFullYear()}-${pad(tomorrow.getMonth() + 1)}-${pad(tomorrow.getDate())}T12:00`,
      );
      await dialog.screenshot({ path: shot("edit-key.png") });
      await dialog.getByRole("button", { name: "Save" }).click();
      await dialog.waitFor({ state: "hidden" });
      await page.locator(`#keys-active li[data-key-id="${key.id}"] .key-name`, { hasText: "journey (renamed)" }).waitFor();
      const controls = await row.locator(".key-controls").textContent();
      for (const part of [/Expires /, /Spent \$[\d.]+ of \$5\.00 this month/, /Models: openai\/\*/, /30 requests\/min/]) {
        check(part.test(controls), `the key's controls read ${JSON.stringify(controls)}, missing ${part}`);
      }
      // What the API now says of the key, and what the proxy does with it.
      const listed = await page.evaluate(async (id) => {
        const res = await fetch("/keys", { credentials: "same-origin" });
        return (await res.json()).data.find((k) => k.id === id);
      }, key.id);
      // The limit counts what the key already spent this month, before it was set.
      check(listed.spend_this_month_usd > 0, `the key's spend this month reads ${listed.spend_this_month_usd}`);
      check(listed.monthly_spend_limit_usd === 5 && listed.requests_per_minute === 30 && listed.models.join() === "openai/*",
        `GET /keys shows ${JSON.stringify(listed)}`);
      check(Math.abs(new Date(listed.expires_at) - new Date(tomorrow.setHours(12, 0, 0, 0))) < 1000,
        `the expiry was stored as ${listed.expires_at}, not tomorrow 12:00 local time`);
      const res = await fetch(`${BASE}/v1/models`, { headers: { authorization: `Bearer ${key.plaintext}` } });
      const models = (await res.json()).data.map((m) => m.id);
      check(res.status === 200 && models.length > 0 && models.every((m) => m.startsWith("openai/")),
        `GET /v1/models with the key lists ${JSON.stringify(models)}`);
      const call = await proxiedCall(key.plaintext);
      check(call.status === 200 && call.headers.get("x-ratelimit-limit-requests") === "30",
        `a call with the key answered ${call.status}, limit ${call.headers.get("x-ratelimit-limit-requests")}`);
    });

    await step("rotate the key: the new secret shown once, the old one works for the chosen grace", async () => {
      const row = page.locator(`#keys-active li[data-key-id="${key.id}"]`);
      await row.getByRole("button", { name: /Rotate/ }).click();
      const dialog = page.locator("#rotate-dialog");
      await dialog.waitFor({ state: "visible" });
      await dialog.getByLabel(/keeps working for/).selectOption("1");
      const started = Date.now();
      await dialog.getByRole("button", { name: "Rotate key" }).click();
      const box = page.locator("#new-key");
      await box.waitFor({ state: "visible" });
      const fresh = await page.locator("#new-key-value").inputValue();
      check(fresh.startsWith(`qnp_${key.id}_`) && fresh !== key.plaintext, `the rotated key reads ${JSON.stringify(fresh)}`);
      const note = await page.locator("#new-key-note").textContent();
      check(/old secret keeps working until/.test(note), `the rotation note reads ${JSON.stringify(note)}`);
      await page.getByRole("button", { name: "Done" }).click();
      await box.waitFor({ state: "hidden" });
      const controls = await row.locator(".key-controls").textContent();
      check(/Rotated; the old secret works until/.test(controls), `after rotating the key reads ${JSON.stringify(controls)}`);
      const until = await row.locator(".key-controls time").last().getAttribute("datetime");
      const grace = new Date(until) - started;
      check(grace > 3_500_000 && grace < 3_700_000, `the old secret is valid for ${grace} ms, not one hour`);
      for (const [which, secret] of [["new", fresh], ["old", key.plaintext]]) {
        const { status, body } = await proxiedCall(secret);
        check(status === 200, `a call with the ${which} secret answered ${status}: ${body}`);
      }
      key.previous = key.plaintext;
      key.plaintext = fresh;
    });

    await step("usage filtered by key", async () => {
      // A second key with no calls, so the filter has something to tell apart.
      await page.locator("#key-name").fill("idle");
      await page.locator("#create-key").click();
      await page.locator("#new-key").waitFor({ state: "visible" });
      await page.getByRole("button", { name: "Done" }).click();
      const idle = await page.locator("#keys-active li[data-state=active]", { hasText: "idle" }).getAttribute("data-key-id");
      const filter = page.getByLabel("Key", { exact: true });
      await filter.selectOption(idle);
      await page.getByText("No usage with this key").waitFor();
      check(requests.some((r) => r.startsWith("GET /usage?") && r.includes(`key=${idle}`)), "the filtered view did not ask for the key's usage");
      await filter.selectOption(key.id);
      await page.locator("#usage-summary", { hasText: "with the key journey (renamed)" }).waitFor();
      const mine = JSON.parse(await page.locator("#usage-chart").getAttribute("data-days"));
      const { by_day: byDay } = await page.evaluate(
        async ([id, day]) => (await fetch(`/usage?from=${day}&to=${day}&key=${id}`)).json(),
        [key.id, today],
      );
      const served = byDay.find((d) => d.day === today);
      check(served && mine[today] === served.requests && served.requests >= 4,
        `the chart for the key shows ${JSON.stringify(mine)}, the API ${JSON.stringify(served)}`);
      await filter.selectOption("");
      await page.locator("#usage-summary", { hasNotText: "with the key" }).waitFor();
      const idleRow = page.locator(`#keys-active li[data-key-id="${idle}"]`);
      await idleRow.getByRole("button", { name: /Revoke/ }).click();
      await page.locator("#revoke-dialog").getByRole("button", { name: "Revoke key" }).click();
      await page.locator(`#keys-revoked li[data-key-id="${idle}"]`).waitFor({ state: "attached" });
    });

    await step("revoke the key; it is refused at once", async () => {
      await page.locator(`#keys-active li[data-key-id="${key.id}"]`).getByRole("button", { name: /Revoke/ }).click();
      const dialog = page.locator("#revoke-dialog");
      await dialog.waitFor({ state: "visible" });
      await dialog.getByRole("button", { name: "Revoke key" }).click();
      await dialog.waitFor({ state: "hidden" });
      await page.locator(`#keys-revoked li[data-key-id="${key.id}"][data-state=revoked]`).waitFor({ state: "attached" });
      check((await page.locator(`#keys-active li[data-key-id="${key.id}"]`).count()) === 0, "the revoked key is still listed as active");
      await page.getByText("No active keys").waitFor();
      // No waiting: under `qnp serve` revocation reaches the proxy's key cache in the same process.
      for (const secret of [key.plaintext, key.previous]) {
        const { status, body } = await proxiedCall(secret);
        check(status === 401, `a call with the revoked key answered ${status}: ${body}`);
      }
    });

    await step("sign out", async () => {
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      check(!(await page.locator("#keys-active").textContent()).includes("journey"), "the previous user's keys are still in the page");
      // No trace of the previous user anywhere in the document, attributes included (a title, a value).
      const traces = await page.evaluate((email) => {
        const found = [];
        for (const el of document.querySelectorAll("*")) {
          for (const attr of el.attributes) if (attr.value.includes(email)) found.push(`${el.id || el.tagName}[${attr.name}]`);
          if (el.value && String(el.value).includes(email)) found.push(`${el.id || el.tagName}.value`);
        }
        if (document.body.innerText.includes(email)) found.push("text");
        return found;
      }, EMAIL);
      check(traces.length === 0, `the previous user's email is still in the page: ${traces.join(", ")}`);
      const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
      check(focused === "signin-google", `after sign-out the focus is on #${focused}, not the sign-in button`);
      // The session ended on the server too: a fresh load is signed out.
      await page.reload();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.setViewportSize({ width: 375, height: 812 });
      await page.screenshot({ path: shot("signed-out-phone.png"), fullPage: true });
      await page.setViewportSize({ width: 1280, height: 900 });
    });

    await step("the privacy page, from the sign-in card and from the footer", async () => {
      for (const link of ["#signin-privacy", "#footer-privacy"]) {
        await page.goto(`${BASE}/`);
        await page.locator("#view-signed-out").waitFor({ state: "visible" });
        await page.locator(link).click();
        await page.waitForURL(`${BASE}/privacy`);
        await page.getByRole("heading", { name: "Privacy", level: 1 }).waitFor();
        const text = await page.locator("main").innerText();
        check(text.includes("__Host-qnp_session") && text.includes("30 days"), `the policy lacks its facts: ${text.slice(0, 200)}`);
      }
      await page.setViewportSize({ width: 375, height: 812 });
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      check(width <= 375, `the privacy page scrolls horizontally at 375 px: scrollWidth ${width}`);
      await page.screenshot({ path: shot("privacy-phone.png"), fullPage: true });
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(`${BASE}/`);
    });

    await step("back from Stripe: the notice, then a tidy URL", async () => {
      await page.goto(`${BASE}/?billing=canceled`);
      await page.locator("#notices", { hasText: "Checkout canceled" }).waitFor();
      check(page.url() === `${BASE}/`, `the URL still carries the billing outcome: ${page.url()}`);
    });

    await step("a sign-out soon after Checkout cancels the page's pending billing reloads", async () => {
      // Back from Checkout the page reloads billing 3, 10 and 30 s later; signed out by then, those
      // would be 401s. A fake clock (in a context of its own) jumps past all three.
      const other = await openContext(browser);
      try {
        await other.clock.install();
        const tab = await other.newPage();
        watch(tab);
        await tab.goto(`${BASE}/`);
        await tab.getByRole("link", { name: "Sign in with Google" }).click();
        await tab.locator("#view-dashboard").waitFor({ state: "visible" });
        await tab.goto(`${BASE}/?billing=success`);
        await tab.locator("#notices .notice-ok", { hasText: "Your payment went through" }).waitFor();
        await tab.locator("#billing-body").waitFor({ state: "visible" });
        await tab.getByRole("button", { name: "Sign out" }).click();
        await tab.locator("#view-signed-out").waitFor({ state: "visible" });
        requests.length = 0;
        await other.clock.runFor(31_000);
        // A request of the page's own after the timers: any reload they started was sent before it.
        await tab.evaluate(() => fetch("/auth/session").then((r) => r.status));
        const late = requests.filter((r) => r !== "GET /auth/session");
        check(late.length === 0, `after sign-out the page still asked ${JSON.stringify(late)}`);
      } finally {
        await other.close();
      }
    });

    await step("sign in again and delete the account", async () => {
      await page.getByRole("link", { name: "Sign in with Google" }).click();
      await page.locator("#view-dashboard").waitFor({ state: "visible" });
      check((await page.locator("#profile-name").inputValue()) === "Alice Journey", "the corrected name did not stick");
      await page.getByRole("button", { name: "Delete account…" }).click();
      const dialog = page.locator("#delete-dialog");
      await dialog.waitFor({ state: "visible" });
      const confirm = dialog.getByRole("button", { name: "Delete my account" });
      await page.screenshot({ path: shot("delete-dialog.png") });
      check(await confirm.isDisabled(), "deletion is possible before typing the email");
      await dialog.getByLabel(/Type your email/).fill(EMAIL);
      await confirm.click();
      await page.locator("#view-signed-out").waitFor({ state: "visible" });
      await page.locator("#notices", { hasText: "erased" }).waitFor();
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
    console.log(`journey: PASS in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    console.log(`journey: screenshots:\n  ${shots.join("\n  ")}`);
  },
  (err) => {
    console.error(`journey: FAIL: ${err instanceof JourneyError ? err.message : err.stack || err}`);
    if (problems.length) console.error(`also seen:\n  ${problems.join("\n  ")}`);
    if (shots.length) console.error(`journey: screenshots taken before the failure:\n  ${shots.join("\n  ")}`);
    process.exit(1);
  },
);
