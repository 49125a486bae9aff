// Browser test of the dashboard against the real engine in demo mode.
//
// Starts target/release/dhan-relay (or $DHAN_RELAY_BIN) on a free loopback
// port, drives Debian's Chromium headless through playwright-core, and
// checks what issue 6 lists: the page loads, the status shows live, prices
// change, an instrument added through the search box makes a row that
// updates, a removal and a reload keep the watchlist, the detail panel shows
// depth and a chart, phone width and dark mode lay out, stopping the engine
// shows "reconnecting" and a restarted engine is picked up again; then it
// measures 200 instruments at ~1,000 updates/s in the page (frame times,
// long tasks, the page's own render time) and prints the numbers. The
// access-token banner is driven by /stats' `token` object; demo mode's token
// never expires, so that step rewrites the page's /stats answers
// (page.route) to the states the banner must show and hide for.
//
// Every wait is bounded, and a watchdog ends the run. Any console error or
// uncaught exception fails it, except the network errors a browser logs by
// itself for what the test provokes on purpose (listed in EXPECTED below and
// counted in the output). Screenshots go to target/browser/ (or
// $BROWSER_ARTIFACTS), printed at the end. Exit code 0 only if every step
// passed (a skipped step says why).
//
// Run: bash .ci/browser-test, or after `cargo build --release` and `npm ci`
// here: node tests/browser/dashboard.test.mjs

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { BIN, check, CHROMIUM, CHROMIUM_FLAGS, freePort, log, OUT, runSuite, Skip, sleep, spawnEngine, steps, stopEngine, tail } from './relay.mjs';

const PERF_INSTRUMENTS = 200;
const PERF_RATE = 1000;
const PERF_SECONDS = 10;

fs.mkdirSync(OUT, { recursive: true });

// ------------------------------------------------------------------ engine

let engine = null;
const engines = [];

/**
 * Starts the engine: in demo mode at `rate` ticks/s, or, with `live`, against
 * a feed URL with credentials. Resolves once /health answers (200, or any
 * answer with `anyHealth`).
 */
async function startEngine(port, rate, name, live = null) {
  const args = live ? ['--feed-url', live.url] : ['--demo-rate', String(rate)];
  const e = await spawnEngine({ name, port, args, env: live ? live.env : {}, anyStatus: !!live });
  engines.push(e);
  if (!live) engine = e; // the one the page under test talks to
  return e;
}

/** `dhan-relay sim` on a free port; resolves with its feed URL. */
async function startSimulator(extraArgs) {
  const logPath = path.join(OUT, 'sim.log');
  const child = spawn(BIN, ['sim', '--listen', '127.0.0.1:0', ...extraArgs], { stdio: ['ignore', 'pipe', fs.openSync(logPath, 'w')] });
  const e = { child, logPath, exited: null, name: 'sim' };
  child.on('exit', (code, signal) => {
    e.exited = { code, signal };
  });
  engines.push(e);
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the simulator printed no URL within 10 s')), 10_000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const line = out.split('\n')[0];
      if (out.includes('\n')) {
        clearTimeout(timer);
        resolve(line.trim());
      }
    });
    child.on('exit', () => reject(new Error(`the simulator exited: ${tail(logPath)}`)));
  });
  log(`simulator up at ${url} (pid ${child.pid})`);
  return { e, url };
}

// ------------------------------------------------------------------ steps

const { step, results, count } = steps();

// ------------------------------------------------------------------ console

// Network errors Chromium logs on its own for requests this test provokes:
// each is listed with why it is expected. Anything else logged as an error
// fails the run.
let phase = 'normal';
let searchMissing = false;
const EXPECTED = [
  {
    why: '/api/instruments answers 404 until instrument search lands (the page says "search unavailable")',
    test: (m) => searchMissing && /\/api\/instruments\b/.test(m.url) && /status of 404/.test(m.text),
  },
  {
    why: '/health answers 503 by design while the upstream is down; the page reads its body for the reason',
    test: (m) => /\/health$/.test(m.url) && /status of 503/.test(m.text),
  },
  {
    why: 'the engine was stopped on purpose: reconnect attempts are refused',
    test: (m) => phase === 'engine-stopped' && (/net::ERR_/.test(m.text) || /WebSocket connection to .* failed/.test(m.text)),
  },
];
const consoleErrors = [];
const expectedErrors = new Map();

function watchConsole(page) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const m = { text: msg.text(), url: msg.location()?.url || '', phase };
    const known = EXPECTED.find((x) => x.test(m));
    if (known) {
      expectedErrors.set(known.why, (expectedErrors.get(known.why) || 0) + 1);
    } else {
      consoleErrors.push(m);
      log(`console error (${phase}): ${m.text} ${m.url}`);
    }
  });
  page.on('pageerror', (err) => {
    consoleErrors.push({ text: `uncaught: ${err.message}`, url: '', phase });
    log(`page error: ${err.stack || err.message}`);
  });
}

// ------------------------------------------------------------------ page helpers

const rowKeys = (page) => page.$$eval('#rows tr.row', (trs) => trs.map((tr) => tr.dataset.key));
const cellTexts = (page, sel) => page.$$eval(`#rows tr.row ${sel}`, (tds) => tds.map((td) => td.textContent.trim()));

/** Waits until the row's LTP shows a price, then until its LTP or volume changes. */
async function waitRowUpdates(page, key, timeout) {
  const row = `#rows tr.row[data-key="${key}"]`;
  await page.waitForFunction(
    (sel) => {
      const tr = document.querySelector(sel);
      return tr && /\d/.test(tr.querySelector('.ltp').textContent);
    },
    row,
    { timeout },
  );
  const first = await page.$eval(row, (tr) => tr.querySelector('.ltp').textContent + '|' + tr.querySelector('.vol').textContent);
  await page.waitForFunction(
    ([sel, before]) => {
      const tr = document.querySelector(sel);
      return tr && tr.querySelector('.ltp').textContent + '|' + tr.querySelector('.vol').textContent !== before;
    },
    [row, first],
    { timeout },
  );
  return page.$eval(row, (tr) => tr.querySelector('.ltp').textContent);
}

async function shot(page, name, opts = {}) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file, ...opts });
  screenshots.push(file);
  return file;
}
const screenshots = [];

function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const ms = (v) => `${v.toFixed(1)} ms`;

// ------------------------------------------------------------------ main

async function main() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let context;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dhan-relay-chromium-'));
  const perf = {};

  try {
    await step('engine starts in demo mode', async () => {
      await startEngine(port, 200, 'a');
      const h = await (await fetch(`${base}/health`)).json();
      check(h.demo === true, `expected demo mode, /health says ${JSON.stringify(h)}`);
      return `listening on ${base}`;
    });

    await step('chromium starts', async () => {
      check(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium)`);
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_FLAGS,
        viewport: { width: 1280, height: 800 },
        colorScheme: 'light',
        reducedMotion: 'no-preference',
        timeout: 30_000,
      });
      context.setDefaultTimeout(15_000);
      return `${CHROMIUM} ${context.browser()?.version() ?? ''}`.trim();
    });

    const page = context ? context.pages()[0] || (await context.newPage()) : null;
    if (page) watchConsole(page);

    let configured = [];
    await step('page loads with the configured watchlist', async () => {
      const res = await page.goto(`${base}/`, { waitUntil: 'load' });
      check(res.ok(), `GET / answered ${res.status()}`);
      configured = (await (await fetch(`${base}/api/watchlist`)).json()).watchlist.map((w) => `${w.exchangeSegment}:${w.securityId}`);
      check(configured.length > 0, 'the configured watchlist is empty');
      await page.waitForFunction((n) => document.querySelectorAll('#rows tr.row').length >= n, configured.length, { timeout: 10_000 });
      const keys = await rowKeys(page);
      check(JSON.stringify(keys) === JSON.stringify(configured), `rows ${keys} differ from /api/watchlist ${configured}`);
      const symbols = await cellTexts(page, '.sym-name');
      return `rows: ${symbols.join(', ')}`;
    });

    await step('status shows live', async () => {
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
      const text = (await page.textContent('#conn-text')).trim();
      check(/live/i.test(text), `status text is "${text}"`);
      await page.waitForSelector('#demo:not([hidden])', { timeout: 5000 });
      return `"${text}", DEMO badge shown`;
    });

    await step('a price cell changes within a few seconds', async () => {
      await page.waitForFunction(() => [...document.querySelectorAll('#rows .ltp')].every((td) => /\d/.test(td.textContent)), null, { timeout: 5000 });
      const before = await cellTexts(page, '.ltp');
      await page.waitForFunction(
        (b) => [...document.querySelectorAll('#rows .ltp')].some((td, i) => td.textContent.trim() !== b[i]),
        before,
        { timeout: 5000 },
      );
      const after = await cellTexts(page, '.ltp');
      const i = after.findIndex((v, j) => v !== before[j]);
      const pct = await cellTexts(page, '.pct');
      check(pct.every((p) => /%$/.test(p)), `change % not shown: ${pct}`);
      return `${configured[i]} ${before[i]} → ${after[i]}; change % ${pct.join(', ')}`;
    });

    await step('header shows ticks/s and p99 tick-to-wire from /stats', async () => {
      await page.waitForFunction(
        () => /\d/.test(document.getElementById('m-tps').textContent) && /\d/.test(document.getElementById('m-p99').textContent),
        null,
        { timeout: 8000 },
      );
      return `ticks/s ${await page.textContent('#m-tps')}, p99 ${await page.textContent('#m-p99')}`;
    });

    await step('token banner: hidden while the token is fine, shown when it expires soon, expired or refused', async () => {
      const real = await (await fetch(`${base}/stats`)).json();
      const bad = ['expiring', 'expired', 'refused'];
      check(!real.token || !bad.includes(real.token.state), `demo mode reports token ${JSON.stringify(real.token)}`);
      await sleep(1500); // at least one /stats poll
      check(await page.$eval('#token-banner', (b) => b.hidden), 'the token banner shows in demo mode');
      // The page's /stats answers, with `token` replaced (null: removed;
      // undefined: the engine's own).
      let token;
      await page.route('**/stats', async (route) => {
        const res = await route.fetch();
        const body = await res.json();
        if (token === null) delete body.token;
        else if (token) body.token = token;
        await route.fulfill({ response: res, json: body });
      });
      const fields = {
        source: 'file /var/lib/dhan-relay/credentials.env',
        expiresAt: '2026-12-03T09:00:00+05:30',
        renew: 'none',
        renewals: 0,
        lastError: null,
      };
      const shows = async (re) => {
        await page.waitForFunction(
          (src) => {
            const b = document.getElementById('token-banner');
            return !b.hidden && new RegExp(src).test(b.textContent);
          },
          re.source,
          { timeout: 5000 },
        );
        return (await page.textContent('#token-banner')).trim();
      };
      const hides = () => page.waitForSelector('#token-banner', { state: 'hidden', timeout: 5000 });
      const seen = [];
      try {
        token = { ...fields, state: 'expiring', secondsLeft: 42 * 60 + 30 };
        seen.push(await shows(/^DhanHQ token expires in 42 min \(renewal: none\)$/));
        const a11y = await page.$eval('#token-banner', (b) => [b.getAttribute('role'), b.getAttribute('aria-live')].join(' '));
        check(a11y === 'status polite', `the banner is not a polite status region: ${a11y}`);
        check(/credentials\.env/.test(await page.getAttribute('#token-banner', 'title')), 'the banner\'s title does not name the token\'s source');
        await shot(page, 'dashboard-token-expiring.png');

        token = { ...fields, state: 'refused', secondsLeft: null, lastError: 'DhanHQ disconnect 807: access token expired' };
        seen.push(await shows(/^DhanHQ refused the access token: prices are stale until it is replaced — DhanHQ disconnect 807: access token expired$/));
        await page.emulateMedia({ colorScheme: 'dark' });
        await sleep(200);
        const colours = await page.$eval('#token-banner', (b) => {
          const lum = (c) => {
            const [r, g, bl] = c.match(/[\d.]+/g).map(Number);
            return (0.2126 * r + 0.7152 * g + 0.0722 * bl) / 255;
          };
          const cs = getComputedStyle(b);
          const page = getComputedStyle(document.body).backgroundColor;
          return { text: lum(cs.color), page: lum(page) };
        });
        check(colours.page < 0.2 && colours.text > 0.35, `dark mode: banner text luminance ${colours.text.toFixed(2)} on page ${colours.page.toFixed(2)}`);
        await shot(page, 'dashboard-token-refused-dark.png');
        await page.emulateMedia({ colorScheme: 'light' });

        token = { ...fields, state: 'expired', secondsLeft: 0 };
        seen.push(await shows(/^The DhanHQ access token has expired: prices are stale until it is replaced$/));

        token = { ...fields, state: 'ok', secondsLeft: 20 * 3600 };
        await hides();
        token = { ...fields, state: 'expiring', secondsLeft: 30, renew: 'dhan', lastError: 'RenewToken: HTTP 401' };
        seen.push(await shows(/^DhanHQ token expires in under a minute \(renewal: dhan\) — RenewToken: HTTP 401$/));
        token = null;
        await hides();
        token = { ...fields, state: 'unknown', expiresAt: null, secondsLeft: null };
        await sleep(1500);
        check(await page.$eval('#token-banner', (b) => b.hidden), 'the banner shows for state "unknown"');
      } finally {
        await page.unroute('**/stats');
      }
      return `shown: ${seen.map((t) => `"${t}"`).join('; ')}; hidden for ok, unknown and no token`;
    });

    await step('add an instrument through the search box (search results)', async () => {
      const probe = await fetch(`${base}/api/instruments?q=INFY&limit=20`);
      if (probe.status === 404) {
        searchMissing = true;
        // The page must say so rather than fail silently.
        await page.keyboard.press('/');
        await page.keyboard.type('RELIANCE');
        await page.waitForSelector('#search-msg:not([hidden])', { timeout: 5000 });
        const msg = (await page.textContent('#search-msg')).trim();
        check(/search unavailable/i.test(msg), `no "search unavailable" message, got "${msg}"`);
        await page.keyboard.press('Escape');
        await page.keyboard.press('Escape');
        throw new Skip(`/api/instruments answers 404 (instrument search not built yet); the page shows "${msg}". This step runs as soon as search lands.`);
      }
      check(probe.ok, `/api/instruments answered ${probe.status}`);
      // Find a query whose results hold an instrument not in the watchlist.
      const held = new Set(await rowKeys(page));
      let query = null;
      let target = null;
      for (const q of ['INFY', 'TCS', 'SBIN', 'HDFCBANK', 'TATA', 'NIFTY', 'BANK', 'A']) {
        const r = await fetch(`${base}/api/instruments?q=${encodeURIComponent(q)}&limit=20`);
        const body = await r.json();
        const hit = (body.results || []).find((x) => !held.has(`${x.exchangeSegment}:${x.securityId}`));
        if (hit) {
          query = q;
          target = hit;
          break;
        }
      }
      check(target, '/api/instruments found nothing outside the watchlist for any test query');
      const key = `${target.exchangeSegment}:${target.securityId}`;
      await page.keyboard.press('/');
      await page.keyboard.type(query, { delay: 30 });
      await page.waitForSelector('#search-results li', { timeout: 5000 });
      // Keyboard only: arrow down to the target option, then Enter.
      const options = await page.$$eval('#search-results li', (lis) => lis.map((li) => li.textContent));
      const index = options.findIndex((t) => t.includes(String(target.securityId)) && t.includes(target.exchangeSegment));
      check(index >= 0, `option for ${key} not listed: ${options.join(' | ')}`);
      for (let i = 0; i < index; i++) await page.keyboard.press('ArrowDown');
      await page.keyboard.press('Enter');
      await page.waitForSelector(`#rows tr.row[data-key="${key}"]`, { timeout: 5000 });
      const ltp = await waitRowUpdates(page, key, 10_000);
      return `searched "${query}", picked ${target.symbol} (${key}) with the keyboard; its row updates (LTP ${ltp})`;
    });

    await step('add an instrument by SEGMENT:ID in the search box; the row updates', async () => {
      const key = 'NSE_EQ:1333';
      await page.focus('#search');
      await page.keyboard.type('NSE_EQ:1333', { delay: 20 });
      await page.waitForSelector('#search-results li', { timeout: 5000 });
      await page.keyboard.press('Enter');
      await page.waitForSelector(`#rows tr.row[data-key="${key}"]`, { timeout: 5000 });
      const ltp = await waitRowUpdates(page, key, 10_000);
      return `row ${key} added, updating (LTP ${ltp})`;
    });

    let kept = [];
    await step('remove a row with one click', async () => {
      const victim = configured[1];
      await page.click(`#rows tr.row[data-key="${victim}"] .rm`);
      await page.waitForSelector(`#rows tr.row[data-key="${victim}"]`, { state: 'detached', timeout: 3000 });
      kept = await rowKeys(page);
      check(!kept.includes(victim), `${victim} still listed`);
      return `removed ${victim}; rows now ${kept.join(', ')}`;
    });

    await step('a reload keeps the watchlist (localStorage)', async () => {
      await page.reload({ waitUntil: 'load' });
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
      const keys = await rowKeys(page);
      check(JSON.stringify(keys) === JSON.stringify(kept), `after reload ${keys}, before ${kept}`);
      const last = kept[kept.length - 1];
      await waitRowUpdates(page, last, 10_000);
      return `${keys.length} rows in the same order; ${last} updates after the reload`;
    });

    await step('the detail panel shows 20-level depth (NSE) and a live price line', async () => {
      const key = configured.find((k) => k.startsWith('NSE_EQ')) || kept[0];
      const levels = /^NSE_(EQ|FNO):/.test(key) ? 20 : 5;
      await page.click(`#rows tr.row[data-key="${key}"] .sym`);
      await page.waitForSelector('#detail:not([hidden])', { timeout: 3000 });
      await page.waitForFunction((levels) => {
        const tds = [...document.querySelectorAll('#d-depth tr:not([hidden]) td')];
        return tds.length === levels * 6 && tds.every((td) => /\d/.test(td.textContent));
      }, levels, { timeout: 8000 });
      await sleep(1500); // let the line grow
      const inked = await page.$eval('#d-chart', (c) => {
        const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n;
      });
      check(inked > 500, `the chart canvas is (nearly) blank: ${inked} inked pixels`);
      const bid = await page.$eval('#d-depth tr td:nth-child(3)', (td) => td.textContent);
      const ask = await page.$eval('#d-depth tr td:nth-child(4)', (td) => td.textContent);
      await shot(page, 'dashboard.png');
      return `${key}: best bid ${bid} / ask ${ask}; chart ${inked} inked pixels`;
    });

    await step('phone width (390×844): no sideways scroll, detail as a sheet', async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await page.keyboard.press('Escape');
      await page.waitForSelector('#detail', { state: 'hidden', timeout: 3000 });
      await sleep(300);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(overflow <= 0, `page scrolls sideways by ${overflow}px at phone width`);
      const hidden = await page.$eval('#rows tr.row .vol', (td) => getComputedStyle(td).display === 'none');
      check(hidden, 'volume column still shown at phone width');
      await shot(page, 'dashboard-phone.png');
      await page.click('#rows tr.row .sym');
      await page.waitForSelector('#detail:not([hidden])', { timeout: 3000 });
      await sleep(1000);
      const box = await page.$eval('#detail', (d) => {
        const r = d.getBoundingClientRect();
        return { left: r.left, right: r.right, width: window.innerWidth };
      });
      check(box.left >= -1 && box.right <= box.width + 1, `detail sheet overflows: ${JSON.stringify(box)}`);
      await shot(page, 'dashboard-phone-detail.png');
      await page.keyboard.press('Escape');
      return `overflow ${overflow}px; sheet ${Math.round(box.left)}–${Math.round(box.right)}px`;
    });

    await step('dark mode', async () => {
      await page.setViewportSize({ width: 1280, height: 800 });
      await page.emulateMedia({ colorScheme: 'dark' });
      const key = configured.find((k) => k.startsWith('NSE_EQ')) || kept[0];
      await page.click(`#rows tr.row[data-key="${key}"] .sym`);
      await page.waitForSelector('#detail:not([hidden])', { timeout: 3000 });
      await sleep(1200);
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      const [r, g, b] = bg.match(/\d+/g).map(Number);
      const lum = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
      check(lum < 0.2, `background ${bg} is not dark`);
      await shot(page, 'dashboard-dark.png');
      await page.keyboard.press('Escape');
      await page.emulateMedia({ colorScheme: 'light' });
      return `body background ${bg}`;
    });

    await step('an upstream failure shows "upstream down" with the reason from /health', async () => {
      // A real failure, not a mock: the simulator refuses this token with
      // DhanHQ's 807 (access token expired), and an engine with that token
      // reports it on /health.
      const token = 'expired-demo-token';
      const sim = await startSimulator(['--expired-token', token]);
      const downPort = await freePort();
      const down = await startEngine(downPort, 0, 'c', { url: sim.url, env: { DHAN_CLIENT_ID: '1000000001', DHAN_ACCESS_TOKEN: token } });
      const other = await context.newPage();
      watchConsole(other);
      try {
        await other.goto(`http://127.0.0.1:${downPort}/`, { waitUntil: 'load' });
        await other.waitForSelector('#conn[data-state="down"]', { timeout: 10_000 });
        await other.waitForFunction(() => /807/.test(document.getElementById('banner').textContent), null, { timeout: 10_000 });
        const pill = (await other.textContent('#conn-text')).trim();
        const banner = (await other.textContent('#banner')).trim();
        check(/upstream down/i.test(pill), `status text is "${pill}"`);
        check(/access_token_expired/.test(banner) && /DHAN_ACCESS_TOKEN/.test(banner), `banner lacks the reason: "${banner}"`);
        await shot(other, 'dashboard-upstream-down.png');
        return `"${pill}"; banner "${banner}"`;
      } finally {
        await other.close();
        await stopEngine(down);
        await stopEngine(sim.e);
      }
    });

    await step('stopping the engine shows "reconnecting" with a countdown', async () => {
      phase = 'engine-stopped';
      await stopEngine(engine);
      await page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 5000 });
      const text = (await page.textContent('#conn-text')).trim();
      check(/reconnecting in \d+ s/i.test(text), `status text is "${text}"`);
      await shot(page, 'dashboard-reconnecting.png');
      return `"${text}"`;
    });

    await step('a restarted engine is picked up: live again, watchlist resubscribed', async () => {
      await startEngine(port, PERF_RATE, 'b');
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 20_000 });
      phase = 'normal';
      const keys = await rowKeys(page);
      for (const key of keys) await waitRowUpdates(page, key, 10_000);
      return `all ${keys.length} rows update again`;
    });

    await step(`performance: ${PERF_INSTRUMENTS} instruments at ~${PERF_RATE} updates/s`, async () => {
      // The configured instruments plus NSE_EQ ids up to 200: every simulated
      // tick lands on the page.
      const list = configured.map((k) => {
        const [exchangeSegment, securityId] = k.split(':');
        return { exchangeSegment, securityId };
      });
      for (let id = 10_001; list.length < PERF_INSTRUMENTS; id++) list.push({ exchangeSegment: 'NSE_EQ', securityId: String(id) });
      await page.evaluate((l) => localStorage.setItem('dhan-relay.watchlist.v1', JSON.stringify(l)), list);
      await page.reload({ waitUntil: 'load' });
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
      // Every instrument has a price (rows out of view are drawn when they
      // scroll into view, so ask the page, not the DOM).
      await page.waitForFunction(
        (n) => document.querySelectorAll('#rows tr.row').length === n && window.dhanRelay.stats().priced === n,
        PERF_INSTRUMENTS,
        { timeout: 15_000 },
      );
      // Chromium's own counters: main-thread CPU time (ThreadTime) and time
      // in tasks, script, style and layout; CPU time does not depend on how
      // busy the rest of the machine is, frame times do.
      const cdp = await context.newCDPSession(page);
      await cdp.send('Performance.enable');
      const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
      const m0 = await metrics();
      const stats0 = await (await fetch(`${base}/stats`)).json();
      await page.evaluate(() => {
        const p = { frames: [], longTasks: [], stop: false };
        window.__perf = p;
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) p.longTasks.push(e.duration);
        }).observe({ type: 'longtask' });
        let last = performance.now();
        const loop = (t) => {
          p.frames.push(t - last);
          last = t;
          if (!p.stop) requestAnimationFrame(loop);
        };
        requestAnimationFrame(loop);
        p.t0 = performance.now();
        p.rx0 = window.dhanRelay.stats().received;
        p.f0 = window.dhanRelay.stats().frames;
      });
      await sleep(PERF_SECONDS * 1000);
      const r = await page.evaluate(() => {
        const p = window.__perf;
        p.stop = true;
        const s = window.dhanRelay.stats();
        return {
          secs: (performance.now() - p.t0) / 1000,
          received: s.received - p.rx0,
          appFrames: s.frames - p.f0,
          frames: p.frames.slice(1),
          longTasks: p.longTasks,
          render: s.renderMs,
          rows: s.rows,
          heapMB: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : NaN,
        };
      });
      const m1 = await metrics();
      const stats1 = await (await fetch(`${base}/stats`)).json();
      await cdp.detach().catch(() => {});
      const share = (name) => ((m1[name] - m0[name]) / (m1.Timestamp - m0.Timestamp)) * 100;
      await shot(page, 'dashboard-200.png');
      const f = [...r.frames].sort((a, b) => a - b);
      Object.assign(perf, {
        window_s: r.secs,
        rows: r.rows,
        updates_per_s: r.received / r.secs,
        engine_ticks_per_s: (stats1.counters.book_ticks_total - stats0.counters.book_ticks_total) / r.secs,
        fps: f.length / r.secs,
        frame_p50: quantile(f, 0.5),
        frame_p95: quantile(f, 0.95),
        frame_p99: quantile(f, 0.99),
        frame_max: f[f.length - 1],
        frames_over_50ms: f.filter((x) => x > 50).length,
        long_tasks: r.longTasks.length,
        long_task_ms: r.longTasks.reduce((a, b) => a + b, 0),
        long_task_max: r.longTasks.length ? Math.max(...r.longTasks) : 0,
        app_frames: r.appFrames,
        render_p50: r.render.p50,
        render_p95: r.render.p95,
        render_p99: r.render.p99,
        render_max: r.render.max,
        heap_mb: r.heapMB,
        main_thread_cpu_pct: share('ThreadTime'),
        renderer_cpu_pct: share('ProcessTime'),
        task_pct: share('TaskDuration'),
        script_pct: share('ScriptDuration'),
        style_pct: share('RecalcStyleDuration'),
        layout_pct: share('LayoutDuration'),
        engine_p99_tick_to_wire_us: stats1.latency.tickToWire.p99_us,
      });
      log('performance, in the page, over', `${r.secs.toFixed(1)} s with ${r.rows} rows:`);
      log(`  updates received   ${perf.updates_per_s.toFixed(0)}/s (engine applied ${perf.engine_ticks_per_s.toFixed(0)} ticks/s)`);
      log(`  frames             ${perf.fps.toFixed(1)} fps; interval p50 ${ms(perf.frame_p50)}, p95 ${ms(perf.frame_p95)}, p99 ${ms(perf.frame_p99)}, max ${ms(perf.frame_max)}; ${perf.frames_over_50ms} over 50 ms`);
      log(`  long tasks (>50ms) ${perf.long_tasks}, ${ms(perf.long_task_ms)} in all (${((perf.long_task_ms / (r.secs * 1000)) * 100).toFixed(1)}% of the time), longest ${ms(perf.long_task_max)}`);
      log(`  main thread        ${perf.main_thread_cpu_pct.toFixed(1)}% of a core CPU (renderer process ${perf.renderer_cpu_pct.toFixed(1)}%); busy in tasks ${perf.task_pct.toFixed(1)}% of the time: script ${perf.script_pct.toFixed(1)}%, style ${perf.style_pct.toFixed(1)}%, layout ${perf.layout_pct.toFixed(1)}%`);
      log(`  dashboard render   ${perf.app_frames} batched frames; DOM writes per frame p50 ${ms(perf.render_p50)}, p95 ${ms(perf.render_p95)}, p99 ${ms(perf.render_p99)}, max ${ms(perf.render_max)}`);
      log(`  JS heap            ${perf.heap_mb.toFixed(1)} MB; engine p99 tick-to-wire ${perf.engine_p99_tick_to_wire_us.toFixed(0)} µs`);
      // Frame times depend on what else the machine runs (CI shares it), so
      // the hard limits are ones a busy machine still meets and a real
      // regression does not: the load arrived, the page's own per-frame DOM
      // work stays within a frame, the main thread keeps CPU headroom, and
      // frames keep coming. The smoothness verdict is printed with the
      // machine's load average beside it.
      const load = os.loadavg()[0];
      const smooth = perf.fps >= 50 && perf.frame_p95 <= 20;
      perf.load_average = load;
      perf.smooth = smooth;
      fs.writeFileSync(path.join(OUT, 'perf.json'), JSON.stringify(perf, null, 2));
      log(
        smooth
          ? `  verdict            smooth: 60 Hz held (machine load average ${load.toFixed(1)} on ${os.cpus().length} cores)`
          : `  verdict            frames dropped while the machine's load average was ${load.toFixed(1)} on ${os.cpus().length} cores; the page's own work per frame is above`,
      );
      check(r.rows === PERF_INSTRUMENTS, `${r.rows} rows, expected ${PERF_INSTRUMENTS}`);
      check(perf.updates_per_s >= PERF_RATE * 0.7, `only ${perf.updates_per_s.toFixed(0)} updates/s reached the page`);
      check(perf.render_p95 <= 8, `the dashboard's DOM writes took ${ms(perf.render_p95)} per frame at p95`);
      check(perf.main_thread_cpu_pct <= 75, `the main thread used ${perf.main_thread_cpu_pct.toFixed(0)}% of a core`);
      check(perf.fps >= 10, `${perf.fps.toFixed(1)} fps`);
      return `${perf.updates_per_s.toFixed(0)} updates/s, ${perf.fps.toFixed(1)} fps, frame p95 ${ms(perf.frame_p95)}, ${perf.long_tasks} long tasks`;
    });

    await step('no console errors', async () => {
      check(consoleErrors.length === 0, `${consoleErrors.length} console error(s):\n${consoleErrors.map((e) => `  [${e.phase}] ${e.text} ${e.url}`).join('\n')}`);
      const exp = [...expectedErrors].map(([why, n]) => `${n}× ${why}`);
      return exp.length ? `expected network errors only: ${exp.join('; ')}` : 'none at all';
    }, { always: true });
  } finally {
    if (context) await context.close().catch(() => {});
    for (const e of engines) await stopEngine(e);
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

await runSuite({
  label: 'browser',
  timeoutMs: 240_000,
  results,
  count,
  engines: () => engines,
  main,
  summary: () => [
    '',
    ...results.filter((r) => r.status === 'skip').map((r) => `skipped: ${r.name}: ${r.why}`),
    `screenshots (${OUT}):`,
    ...screenshots.map((f) => `  ${f}`),
  ],
});
