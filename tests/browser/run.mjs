// Browser tests of the two pages, in Debian's headless chromium driven by
// playwright-core (no browser download). Starts `triage serve` on a free port
// with a temporary data directory and the demo pack, then checks:
//   1. a chat that gets an answer ("did this help?" → feedback),
//   2. a chat that is handed off (ticket draft → submitted, stored),
//   3. a correction in the agent panel that changes the next suggestion,
//   4. the learning loop: a customer says a clarified article helped, an agent
//      approves the learned phrasing in the panel, the next customer asking
//      that way is answered;
//   5. the embeddable widget on a shop's page of another origin (a second
//      server with a public key and --widget-origin): an answer, a handoff
//      whose ticket is stored, and a page of an unlisted origin refused (CORS).
// Screenshots go to docs/img/. Exit code 0 only when all pass.
//
// Env: TRIAGE_BIN (default target/debug/triage), CHROMIUM (default /usr/bin/chromium),
// TRIAGE_BASE_URL (use an already running server instead of starting one).

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const shots = join(root, "docs", "img");
mkdirSync(shots, { recursive: true });

function fail(msg) { throw new Error(msg); }

async function startServer(extra = []) {
  if (process.env.TRIAGE_BASE_URL && !extra.length) return { base: process.env.TRIAGE_BASE_URL, stop: () => {} };
  const bin = process.env.TRIAGE_BIN || join(root, "target", "debug", "triage");
  const data = mkdtempSync(join(tmpdir(), "triage-browser-"));
  const child = spawn(bin, ["serve", "--addr", "127.0.0.1:0", "--data-dir", data,
    "--pack", join(root, "fixtures", "demo-pack"), ...extra], { stdio: ["ignore", "pipe", "inherit"] });
  const base = await new Promise((resolve, reject) => {
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d.toString();
      const m = buf.match(/triage: listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error("server exited early: " + code)));
  });
  const deadline = Date.now() + 600_000;
  for (;;) {
    try { if ((await fetch(base + "/readyz")).status === 200) break; } catch (_) { /* not yet */ }
    if (Date.now() > deadline) fail("server not ready");
    await new Promise((r) => setTimeout(r, 300));
  }
  // Stop = SIGTERM, wait for the graceful shutdown (it commits the index), then remove the data dir.
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const stop = async () => {
    child.kill("SIGTERM");
    const timeout = new Promise((resolve) => setTimeout(resolve, 60_000));
    if ((await Promise.race([exited.then(() => "exited"), timeout])) !== "exited") child.kill("SIGKILL");
    await exited;
    rmSync(data, { recursive: true, force: true });
  };
  return { base, stop };
}

function firstArticle() {
  const line = readFileSync(join(root, "fixtures", "demo-pack", "articles.jsonl"), "utf8").split("\n").find((l) => l.trim());
  return JSON.parse(line);
}

async function chatAnswered(page, base) {
  const article = firstArticle();
  await page.goto(base + "/chat");
  await page.fill("[data-testid=chat-input]", article.question);
  await page.click("[data-testid=chat-send]");
  const answer = page.locator("[data-testid=answer]").last();
  await answer.waitFor({ timeout: 60_000 });
  const text = await answer.innerText();
  if (!text.includes(article.question)) fail("the answer does not show the matched article: " + text);
  await page.screenshot({ path: join(shots, "chat-answer.png"), fullPage: true });
  await answer.locator("[data-testid=helpful-yes]").click();
  await page.locator("[data-testid=feedback-thanks]").last().waitFor({ timeout: 30_000 });
  const thanks = await page.locator("[data-testid=feedback-thanks]").last().innerText();
  if (!thanks.includes("Thanks")) fail("feedback was not saved: " + thanks);
}

async function chatHandedOff(page, base) {
  await page.goto(base + "/chat");
  await page.fill("[data-testid=chat-input]", "明天北京会下雨吗？我想去爬长城");
  await page.click("[data-testid=chat-send]");
  const draft = page.locator("[data-testid=ticket-draft]").last();
  await draft.waitFor({ timeout: 60_000 });
  const body = await draft.locator("[data-testid=draft-body]").inputValue();
  if (!body.includes("长城")) fail("the draft does not carry the message: " + body);
  await draft.locator("[data-testid=draft-contact]").fill("13812345678");
  await page.screenshot({ path: join(shots, "chat-handoff.png"), fullPage: true });
  await draft.locator("[data-testid=draft-submit]").click();
  const created = page.locator("[data-testid=ticket-created]").last();
  await created.waitFor({ timeout: 30_000 });
  const id = (await created.innerText()).match(/(chat-[a-z0-9-]+)/)?.[1];
  if (!id) fail("no ticket id shown");
  const res = await fetch(base + "/v1/tickets/" + id);
  if (res.status !== 200) fail("the submitted ticket is not stored: " + res.status);
  const ticket = await res.json();
  if (ticket.fields.contact !== "13812345678") fail("contact not stored: " + JSON.stringify(ticket));
}

async function agentCorrection(page, base) {
  await page.goto(base + "/agent");
  await page.fill("[data-testid=title]", "qx9 设备异常");
  await page.fill("[data-testid=body]", "qx9 设备的指示灯一直闪烁橙色，说明书里没有写这个情况");
  await page.click("[data-testid=analyze]");
  const value = page.locator("[data-testid=category-value]");
  await value.waitFor({ timeout: 60_000 });
  await page.locator("[data-testid=correct-card]").waitFor({ state: "visible" });
  const before = await value.getAttribute("data-label");
  const options = await page.locator("[data-testid=fix-category] option").evaluateAll((os) => os.map((o) => o.value));
  const target = options.find((o) => o && o !== before);
  if (!target) fail("no other category to choose");
  await page.selectOption("[data-testid=fix-category]", target);
  await page.click("[data-testid=save-correction]");
  await page.locator("[data-testid=learned]").waitFor({ timeout: 60_000 });
  const after = await page.locator("[data-testid=category-value]").getAttribute("data-label");
  if (after !== target) fail(`the next suggestion did not change: before ${before}, chose ${target}, now ${after}`);
  await page.screenshot({ path: join(shots, "agent.png"), fullPage: true });
}

async function learningLoop(page, base, context) {
  const question = "冬天开空调制热，出来的是凉风";
  await page.goto(base + "/chat");
  await page.fill("[data-testid=chat-input]", question);
  await page.click("[data-testid=chat-send]");
  const clarify = page.locator("[data-testid=clarify]").last();
  await clarify.waitFor({ timeout: 60_000 });
  await clarify.locator("[data-testid=clarify-option]").first().click();
  const answer = page.locator("[data-testid=answer]").last();
  await answer.waitFor({ timeout: 30_000 });
  await answer.locator("[data-testid=helpful-yes]").click();
  await page.locator("[data-testid=feedback-thanks]").last().waitFor({ timeout: 30_000 });

  // One customer's click is a candidate: the agent sees it and approves it.
  const agent = await context.newPage();
  await agent.goto(base + "/agent");
  await agent.click("[data-testid=learned-refresh]");
  const item = agent.locator("[data-testid=learned-item][data-status=candidate]").filter({ hasText: question }).first();
  await item.waitFor({ timeout: 30_000 });
  await item.locator("[data-testid=learned-approve]").click();
  await agent.locator("[data-testid=learned-item][data-status=active]").filter({ hasText: question }).first().waitFor({ timeout: 30_000 });
  await agent.screenshot({ path: join(shots, "agent-learned.png"), fullPage: true });
  await agent.close();

  // The next customer (a new conversation) asking that way gets the answer.
  const next = await context.newPage();
  await next.goto(base + "/chat");
  await next.evaluate(() => sessionStorage.clear());
  await next.reload();
  await next.fill("[data-testid=chat-input]", question);
  await next.click("[data-testid=chat-send]");
  await next.locator("[data-testid=answer]").last().waitFor({ timeout: 60_000 });
  await next.close();
}

// A shop's site on its own origin (another port), with the widget's one tag.
function startShop() {
  let widgetBase = "";
  const srv = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>Example shop</title></head>
<body style="font-family: sans-serif; margin: 40px"><h1>示例商城 · Example shop</h1>
<p>空调、冰箱、洗衣机……售后问题请点右下角的按钮。<br>After-sales questions: the button at the bottom right.</p>
<script src="${widgetBase}/widget.js" data-tenant="" data-key="${WIDGET_KEY}" async></script></body></html>`);
  });
  return new Promise((resolve) => srv.listen(0, "127.0.0.1", () => resolve({
    origin: "http://127.0.0.1:" + srv.address().port,
    setWidget: (b) => { widgetBase = b; },
    close: () => srv.close(),
  })));
}

const WIDGET_KEY = "pk-widget-test";
const ADMIN_KEY = "admin-widget-test";

async function openWidget(page, url) {
  await page.goto(url);
  await page.locator("[data-testid=triage-open]").click();
  await page.locator("[data-testid=triage-input]").waitFor({ timeout: 30_000 });
}

async function widgetAnswered(page, ctx) {
  const article = firstArticle();
  await openWidget(page, ctx.shop.origin);
  await page.fill("[data-testid=triage-input]", article.question);
  await page.click("[data-testid=triage-send]");
  const answer = page.locator("[data-testid=triage-answer]").last();
  await answer.waitFor({ timeout: 60_000 });
  if (!(await answer.innerText()).includes(article.question)) fail("the widget's answer does not show the article");
  await page.screenshot({ path: join(shots, "widget.png") });
}

async function widgetHandedOff(page, ctx) {
  await openWidget(page, ctx.shop.origin);
  await page.fill("[data-testid=triage-input]", "明天北京会下雨吗？我想去爬长城");
  await page.click("[data-testid=triage-send]");
  await page.locator("[data-testid=triage-handoff]").last().waitFor({ timeout: 60_000 });
  await page.fill("[data-testid=triage-contact]", "13912345678");
  await page.click("[data-testid=triage-submit]");
  const created = page.locator("[data-testid=triage-created]").last();
  await created.waitFor({ timeout: 30_000 });
  const id = (await created.innerText()).match(/(chat-[a-z0-9-]+)/)?.[1];
  if (!id) fail("no ticket id shown by the widget");
  const res = await fetch(ctx.widget.base + "/v1/tickets/" + id, { headers: { Authorization: "Bearer " + ADMIN_KEY } });
  if (res.status !== 200) fail("the widget's ticket is not stored: " + res.status);
  const ticket = await res.json();
  if (ticket.fields.contact !== "13912345678") fail("contact not stored: " + JSON.stringify(ticket));
  // The public key cannot read it back.
  const own = await fetch(ctx.widget.base + "/v1/tickets/" + id, { headers: { Authorization: "Bearer " + WIDGET_KEY } });
  if (own.status !== 403) fail("the public key read a ticket: " + own.status);
}

async function widgetRefusedElsewhere(page, ctx) {
  await openWidget(page, ctx.evil.origin);
  await page.fill("[data-testid=triage-input]", "怎么申请退款");
  await page.click("[data-testid=triage-send]");
  const err = page.locator("[data-testid=triage-error]").last();
  await err.waitFor({ timeout: 30_000 });
  if ((await page.locator("[data-testid=triage-answer], [data-testid=triage-clarify], [data-testid=triage-handoff]").count()) !== 0) {
    fail("an unlisted origin got an answer");
  }
}

const server = await startServer();
const shop = await startShop();
const evil = await startShop();
const widget = await startServer(["--api-key", WIDGET_KEY + "=:public", "--api-key", ADMIN_KEY + "=:admin",
  "--widget-origin", shop.origin]);
shop.setWidget(widget.base);
evil.setWidget(widget.base);
const ctx = { shop, evil, widget };
const profile = mkdtempSync(join(tmpdir(), "triage-chromium-"));
let context;
let failed = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  for (const [name, test] of [["chat answered", chatAnswered], ["chat handed off", chatHandedOff], ["agent correction", agentCorrection], ["learning loop", learningLoop],
    ["widget answered", (p) => widgetAnswered(p, ctx)], ["widget handed off", (p) => widgetHandedOff(p, ctx)], ["widget refused on an unlisted origin", (p) => widgetRefusedElsewhere(p, ctx)]]) {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    try {
      await test(page, server.base, context);
      if (errors.length) fail("page errors: " + errors.join("; "));
      console.log("ok   " + name);
    } catch (e) {
      failed++;
      console.log("FAIL " + name + ": " + e.message);
      await page.screenshot({ path: join(shots, "failed-" + name.replace(/\s+/g, "-") + ".png"), fullPage: true }).catch(() => {});
    } finally {
      await page.close();
    }
  }
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
  await server.stop();
  await widget.stop();
  shop.close();
  evil.close();
}
if (failed) { console.log(failed + " browser test(s) failed"); process.exit(1); }
console.log("all browser tests passed; screenshots in docs/img/");
