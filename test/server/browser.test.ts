/**
 * kiln serve's chat page (GET /) end to end, in headless Chromium (Debian's `chromium`, driven by
 * playwright-core) against a live server with the SmolLM2 instruct model: the page shows the
 * model's name, a typed question streams an answer with the expected word and tokens/s, and the
 * stop button ends a long reply mid-stream (the server's slot is free again right after).
 * scripts/setup.sh installs chromium where apt-get can; without it this test fails, it does not skip.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { startServer, type RunningServer } from "../../src/server/http";

const SMOL = join(import.meta.dir, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
const ID = "SmolLM2-135M-Instruct.Q4_1.gguf";
const CHROMIUM = process.env.KILN_CHROMIUM ?? "/usr/bin/chromium";
const T = 90_000;

/** The page has asked /v1/models and shows the model's name. */
const modelShown = (page: Page) => page.waitForFunction((id) => document.getElementById("model")?.textContent === id, ID, { timeout: 10_000 });

describe("chat page in headless Chromium", () => {
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  beforeAll(async () => {
    if (!existsSync(SMOL)) throw new Error(`${SMOL} is missing: run scripts/setup.sh`);
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium) or set KILN_CHROMIUM`);
    server = await startServer({ model: SMOL, port: 0, parallel: 1, queue: 2, contextLength: 1024 });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
    page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    // Greedy, so the answer is the model's own top choice on every run.
    await page.goto(`${server.url}/?temperature=0&max_tokens=40`);
    expect(errors).toEqual([]);
  }, T);
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  }, T);

  test("the page is plain HTML from the server, with no external assets", async () => {
    const r = await fetch(`${server.url}/`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toContain("text/html");
    const html = await r.text();
    expect(html).not.toMatch(/(src|href)=["']https?:/);
    await modelShown(page);
  }, T);

  test("a typed question streams an answer with the expected word, and tokens/s", async () => {
    // Record the reply's text length at each update: a streamed reply shows at least two distinct
    // non-empty lengths (it grew after its first text), a reply set whole shows one. (Counting
    // observer callbacks instead was flaky: a fast stream on a loaded machine coalesces chunks.)
    // A question whose greedy answer runs long, with a 200-token cap: a one-line answer ("The
    // capital of France is Paris.") could arrive in one network read on a fast machine and render
    // once, and so did a 40-token one once SmolLM2 decoded at ~300 tokens/s (2026-12-06, Xeon).
    await page.goto(`${server.url}/?temperature=0&max_tokens=200`);
    await modelShown(page);
    await page.evaluate(() => {
      const w = window as unknown as { lengths: Set<number> };
      w.lengths = new Set();
      new MutationObserver(() => {
        const n = document.querySelector("#log .msg.assistant:last-child")?.textContent?.length ?? 0;
        if (n > 0) w.lengths.add(n);
      }).observe(document.getElementById("log")!, { subtree: true, childList: true, characterData: true });
    });
    await page.fill("#input", "Name the capital of France, then describe the city in detail: its history, its landmarks and its food.");
    await page.click("#send");
    const reply = page.locator(".msg.assistant").last();
    await page.waitForSelector('.msg.assistant[data-done="true"]', { timeout: 60_000 });
    expect(await reply.textContent()).toContain("Paris");
    expect(await page.evaluate(() => (window as unknown as { lengths: Set<number> }).lengths.size)).toBeGreaterThanOrEqual(2);
    expect(await page.locator("#stats").textContent()).toMatch(/\d+ tokens, [\d.]+ tokens\/s/);
    expect(server.engine.stats().requests).toBeGreaterThanOrEqual(1);
  }, T);

  test("stop ends a long reply mid-stream and frees the server's slot", async () => {
    await page.goto(`${server.url}/?temperature=0&max_tokens=600`);
    await modelShown(page);
    await page.fill("#input", "Write a very long story about a dragon who learns to bake bread.");
    await page.click("#send");
    // Wait until some text has streamed, then press stop.
    await page.waitForFunction(() => (document.querySelector(".msg.assistant")?.textContent ?? "").length > 20, null, { timeout: 60_000 });
    await page.click("#stop");
    await page.waitForSelector('.msg.assistant[data-done="stopped"]', { timeout: 10_000 });
    const text = (await page.locator(".msg.assistant").last().textContent())!;
    expect(text.length).toBeGreaterThan(20);
    expect(await page.locator("#stats").textContent()).toContain("(stopped)");
    expect(await page.locator("#send").isDisabled()).toBe(false);
    // The slot frees within a second (600 tokens would take far longer), and nothing near 600 was made.
    const t0 = performance.now();
    while (server.engine.stats().slotsBusy > 0) {
      if (performance.now() - t0 > 1000) throw new Error("the slot is still busy a second after stop");
      await Bun.sleep(10);
    }
    // The text stays where it stopped.
    await Bun.sleep(300);
    expect((await page.locator(".msg.assistant").last().textContent())!).toBe(text);
  }, T);
});
