// Browser test of the dashboard's intraday chart with history (issue 16)
// against the real engine in demo mode: the chart starts from today's
// 1-minute bars (GET api/history) when an instrument is opened, so a reload
// does not leave it empty, and live ticks keep extending it.
//
// The demo's simulated ticks carry LTT = now, so bars form in real time; the
// test cannot wait for many minutes, so it lets the engine run a few
// seconds (the forming bar exists from the first tick), reloads the page,
// opens a row and checks at once that the chart has points and that its
// first point is the first REST bar's open (a chart built from live ticks
// alone would start at a live price, received after the reload). Then it
// checks the line keeps growing with live ticks, and the endpoint's errors.
//
// Every wait is bounded and a watchdog ends the run. Any console error or
// uncaught exception fails it. Exit code 0 only if every step passed.
//
// Run: bash .ci/browser-test, or after `cargo build --release` and `npm ci`
// here: node tests/browser/history.test.mjs

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { check, CHROMIUM, CHROMIUM_FLAGS, freePort, log, OUT, runSuite, sleep, spawnEngine, steps, stopEngine } from './relay.mjs';

fs.mkdirSync(OUT, { recursive: true });

let engine = null;
const { step, results, count } = steps();

const consoleErrors = [];
function watchConsole(page) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    consoleErrors.push({ text: msg.text(), url: msg.location()?.url || '' });
    log(`console error: ${msg.text()} ${msg.location()?.url || ''}`);
  });
  page.on('pageerror', (err) => {
    consoleErrors.push({ text: `uncaught: ${err.message}`, url: '' });
    log(`page error: ${err.stack || err.message}`);
  });
}

const chartInfo = (page) => page.evaluate(() => window.dhanRelay.stats().chart);

async function main() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dhan-relay-chromium-'));
  let context;
  let page = null;
  let key = null;
  let query = null;

  try {
    await step('engine starts in demo mode and /api/history has bars', async () => {
      engine = await spawnEngine({ name: 'history', port, args: ['--demo-rate', '50'] });
      const list = (await (await fetch(`${base}/api/watchlist`)).json()).watchlist;
      const item = list.find((w) => w.exchangeSegment === 'NSE_EQ') || list[0];
      key = `${item.exchangeSegment}:${item.securityId}`;
      query = `exchangeSegment=${item.exchangeSegment}&securityId=${item.securityId}&interval=1m`;
      const end = Date.now() + 10_000;
      let body = null;
      while (Date.now() < end) {
        const r = await fetch(`${base}/api/history?${query}`);
        if (r.status === 200) {
          body = await r.json();
          if (body.bars.length) break;
        }
        await sleep(200);
      }
      check(body && body.bars.length > 0, `no bars for ${key}: ${JSON.stringify(body)}`);
      const last = body.bars[body.bars.length - 1];
      check(last.partial === true, `the last bar is not the forming one: ${JSON.stringify(last)}`);
      check(['t', 'o', 'h', 'l', 'c', 'v', 'oi'].every((f) => typeof last[f] === 'number'), `bar fields: ${JSON.stringify(last)}`);
      return `${key} (${item.symbol}): ${body.bars.length} bar(s), last ${JSON.stringify(last)}`;
    });

    await step('the endpoint says what is wrong', async () => {
      const bad = await fetch(`${base}/api/history?symbol=NIFTY&interval=1h`);
      check(bad.status === 400 && /1m, 5m, 15m/.test((await bad.json()).error), `interval=1h answered ${bad.status}`);
      const missing = await fetch(`${base}/api/history?interval=1m`);
      check(missing.status === 400, `no instrument answered ${missing.status}`);
      const held = await fetch(`${base}/api/history?exchangeSegment=NSE_EQ&securityId=999999`);
      check(held.status === 404 && /not subscribed/.test((await held.json()).error), `an instrument not held answered ${held.status}`);
      const five = await fetch(`${base}/api/history?${query.replace('1m', '5m')}`);
      check(five.status === 200 && (await five.json()).interval === '5m', `interval=5m answered ${five.status}`);
      return '400 for a bad interval or no instrument, 404 "not subscribed", 5m served';
    });

    await step('chromium starts', async () => {
      check(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium)`);
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_FLAGS,
        viewport: { width: 1280, height: 800 },
        colorScheme: 'light',
        timeout: 30_000,
      });
      context.setDefaultTimeout(15_000);
      page = context.pages()[0] || (await context.newPage());
      watchConsole(page);
      return `${CHROMIUM} ${context.browser()?.version() ?? ''}`.trim();
    });

    await step('page loads live; opening a row draws its chart', async () => {
      const res = await page.goto(`${base}/`, { waitUntil: 'load' });
      check(res.ok(), `GET / answered ${res.status()}`);
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
      await page.click(`#rows tr.row[data-key="${key}"] .sym`);
      await page.waitForSelector('#detail:not([hidden])', { timeout: 3000 });
      await page.waitForFunction(() => window.dhanRelay.stats().chart.points > 0, null, { timeout: 5000 });
      return JSON.stringify(await chartInfo(page));
    });

    await step('after a reload the chart starts from the REST bars at once', async () => {
      await page.reload({ waitUntil: 'load' });
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
      const rest = (await (await fetch(`${base}/api/history?${query}`)).json()).bars;
      const opened = Date.now();
      await page.click(`#rows tr.row[data-key="${key}"] .sym`);
      await page.waitForSelector('#detail:not([hidden])', { timeout: 3000 });
      // "At once": the bars' answer, not a minute of ticks.
      await page.waitForFunction((t) => window.dhanRelay.stats().chart.firstT === t, rest[0].t * 1000, { timeout: 2000 });
      const c = await chartInfo(page);
      const took = Date.now() - opened;
      check(c.points > 0, 'the chart is empty after a reload');
      check(c.first === rest[0].o, `first point ${c.first}, REST's first bar opened at ${rest[0].o}`);
      check(c.firstT === rest[0].t * 1000, `first point at ${c.firstT}, REST's first bar at ${rest[0].t * 1000}`);
      const inked = await page.$eval('#d-chart', (cv) => {
        const { data } = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height);
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n;
      });
      check(inked > 300, `the chart canvas is (nearly) blank: ${inked} inked pixels`);
      return `${c.points} point(s) ${took} ms after opening; first ${c.first} = bar ${rest[0].t} open; ${inked} inked pixels`;
    });

    await step('live ticks keep extending the line', async () => {
      const before = await chartInfo(page);
      await page.waitForFunction((n) => window.dhanRelay.stats().chart.points > n, before.points, { timeout: 8000 });
      const after = await chartInfo(page);
      check(after.first === before.first, `the first point changed: ${before.first} → ${after.first}`);
      fs.mkdirSync(OUT, { recursive: true });
      await page.screenshot({ path: path.join(OUT, 'history.png') });
      return `${before.points} → ${after.points} points`;
    });

    await step('no console errors', async () => {
      check(consoleErrors.length === 0, `${consoleErrors.length} console error(s):\n${consoleErrors.map((e) => `  ${e.text} ${e.url}`).join('\n')}`);
      return 'none';
    }, { always: true });
  } finally {
    if (context) await context.close().catch(() => {});
    await stopEngine(engine);
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

await runSuite({
  label: 'browser (history)',
  timeoutMs: 120_000,
  results,
  count,
  engines: () => [engine],
  main,
});
