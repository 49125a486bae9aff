// Browser test of trading from the dashboard (issue 14) against the real
// engine in demo mode, where the built-in simulator is a paper-trading
// broker and trading is on.
//
// Starts target/release/dhan-relay (or $DHAN_RELAY_BIN) on a free loopback
// port, drives Debian's Chromium headless through playwright-core and
// checks: the header shows PAPER and the funds; an index row's BUY/SELL are
// disabled and say why; BUY from a row opens the order ticket, Enter goes to
// the review step with the order's value, Enter again places it; the order
// stream's toasts say placed/traded; the position shows in the orders and
// positions panel; the available balance in the header changes; a LIMIT
// order far from the last price (inside the relay's price band) is placed
// from the keyboard and cancelled from the panel; an F&O-style row (the
// demo watchlist's MCX future) takes its quantity in lots and shows lots ×
// lot size = units; refusals (DhanHQ's 502, a guard's 422: POST answers
// rewritten by page.route) show their message in a toast; at phone width
// the buttons and the ticket fit; with trading off (GET api/trading
// rewritten by page.route, since demo mode always trades) the buttons stay,
// disabled, and say why instead of failing.
//
// Every wait is bounded and a watchdog ends the run. Any console error or
// uncaught exception fails it. Screenshots go to target/browser/ (or
// $BROWSER_ARTIFACTS). Exit code 0 only if every step passed.
//
// Run: bash .ci/browser-test, or after `cargo build --release` and `npm ci`
// here: node tests/browser/trading.test.mjs

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { check, CHROMIUM, CHROMIUM_FLAGS, freePort, log, OUT, runSuite, sleep, spawnEngine, steps, stopEngine } from './relay.mjs';

fs.mkdirSync(OUT, { recursive: true });

let engine = null;

async function startEngine(port) {
  // Paper trading's audit log goes with the other artifacts, not into $HOME.
  const env = { XDG_STATE_HOME: OUT };
  engine = await spawnEngine({ name: 'trading', port, args: ['--demo-rate', '50'], env, cwd: OUT });
  return engine;
}

const { step, results, count } = steps();

// Network errors Chromium logs by itself for requests this test provokes on
// purpose; anything else logged as an error fails the run.
const EXPECTED = [
  {
    why: 'POST api/orders rewritten to 502 and 422 (the refusals step)',
    test: (m) => /\/api\/orders$/.test(m.url) && /status of (502|422)/.test(m.text),
  },
];
const consoleErrors = [];
const expectedErrors = new Map();
function watchConsole(page) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const m = { text: msg.text(), url: msg.location()?.url || '' };
    const known = EXPECTED.find((x) => x.test(m));
    if (known) {
      expectedErrors.set(known.why, (expectedErrors.get(known.why) || 0) + 1);
      return;
    }
    consoleErrors.push(m);
    log(`console error: ${m.text} ${m.url}`);
  });
  page.on('pageerror', (err) => {
    consoleErrors.push({ text: `uncaught: ${err.message}`, url: '' });
    log(`page error: ${err.stack || err.message}`);
  });
}

const screenshots = [];
async function shot(page, name, opts = {}) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file, ...opts });
  screenshots.push(file);
}

/** Every toast the page shows, kept in window.__toasts (they go away by themselves). */
async function recordToasts(page) {
  await page.evaluate(() => {
    window.__toasts = [];
    new MutationObserver((list) => {
      for (const m of list) for (const n of m.addedNodes) if (n.nodeType === 1) window.__toasts.push({ text: n.textContent, kind: n.dataset.kind });
    }).observe(document.getElementById('toast'), { childList: true });
  });
}

/** Waits for a toast matching `re` (source string); returns its text. */
async function waitToast(page, re, timeout = 10_000) {
  try {
    const h = await page.waitForFunction(
      (src) => (window.__toasts || []).find((t) => new RegExp(src).test(t.text)),
      re.source,
      { timeout },
    );
    return (await h.jsonValue()).text;
  } catch (e) {
    const seen = await page.evaluate(() => (window.__toasts || []).map((t) => t.text)).catch(() => []);
    throw new Error(`no toast matching ${re} within ${timeout / 1000} s; toasts so far: ${JSON.stringify(seen)} (${e.message.split('\n')[0]})`);
  }
}

const rowSel = (key) => `#rows tr.row[data-key="${key}"]`;
const num = (text) => Number(String(text).replace(/[^\d.−-]/g, '').replace('−', '-'));

async function main() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dhan-relay-chromium-'));
  let context;
  let info = null;
  let page = null;
  let equity = null;
  let fno = null;
  let balanceBefore = '';

  try {
    await step('engine starts in demo mode; api/trading says paper trading is on', async () => {
      await startEngine(port);
      const h = await (await fetch(`${base}/health`)).json();
      check(h.demo === true, `expected demo mode, /health says ${JSON.stringify(h)}`);
      const r = await fetch(`${base}/api/trading`);
      check(r.status === 200, `GET /api/trading answered ${r.status} (the trading backend is not in this binary?)`);
      info = await r.json();
      check(info.enabled === true && info.paper === true && info.allowed === true, `api/trading: ${JSON.stringify(info)}`);
      return `guards ${JSON.stringify(info.guards)}`;
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

    await step('page loads: PAPER badge, funds in the header, BUY/SELL on the rows (an index\'s disabled)', async () => {
      const res = await page.goto(`${base}/`, { waitUntil: 'load' });
      check(res.ok(), `GET / answered ${res.status()}`);
      await recordToasts(page);
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
      await page.waitForSelector('#paper:not([hidden])', { timeout: 5000 });
      const list = (await (await fetch(`${base}/api/watchlist`)).json()).watchlist;
      equity = list.find((w) => w.exchangeSegment === 'NSE_EQ');
      fno = list.find((w) => /FNO|MCX|CURRENCY/.test(w.exchangeSegment));
      check(equity, `no NSE_EQ row in the demo watchlist ${JSON.stringify(list)}`);
      await page.waitForFunction(() => /\d/.test(document.getElementById('m-avail').textContent), null, { timeout: 8000 });
      balanceBefore = (await page.textContent('#m-avail')).trim();
      const used = (await page.textContent('#m-used')).trim();
      const key = `${equity.exchangeSegment}:${equity.securityId}`;
      await page.waitForFunction((sel) => /\d/.test(document.querySelector(`${sel} .ltp`).textContent), rowSel(key), { timeout: 8000 });
      const buy = await page.$eval(`${rowSel(key)} .tb.buy`, (b) => ({ label: b.getAttribute('aria-label'), disabled: b.getAttribute('aria-disabled') }));
      check(buy.label === `Buy ${equity.symbol}` && buy.disabled === null, `${key}'s BUY: ${JSON.stringify(buy)}`);
      const index = list.find((w) => w.exchangeSegment === 'IDX_I');
      let note = '';
      if (index) {
        const b = await page.$eval(`${rowSel(`IDX_I:${index.securityId}`)} .tb.sell`, (b) => ({ title: b.title, disabled: b.getAttribute('aria-disabled') }));
        check(b.disabled === 'true' && /index/i.test(b.title), `${index.symbol}'s SELL: ${JSON.stringify(b)}`);
        note = `; ${index.symbol}'s SELL disabled: "${b.title}"`;
      }
      return `available ${balanceBefore}, used margin ${used}${note}`;
    });

    let placed = null;
    await step('BUY from a row: ticket, review with the order value, Enter places it; toasts say placed and traded', async () => {
      const key = `${equity.exchangeSegment}:${equity.securityId}`;
      const opener = `${rowSel(key)} .tb.buy`;
      await page.click(opener);
      await page.waitForSelector('#ticket[open]', { timeout: 3000 });
      const title = (await page.textContent('#t-title')).trim();
      check(title === `Buy ${equity.symbol}`, `ticket title "${title}"`);
      check(await page.evaluate(() => document.activeElement?.id === 't-qty'), 'the quantity field is not focused');
      const form = await page.evaluate(() => ({
        product: document.getElementById('t-product').value,
        type: document.getElementById('t-type').value,
        validity: document.getElementById('t-validity').value,
        label: document.getElementById('t-qty-label').textContent,
      }));
      check(form.product === 'CNC' && form.type === 'MARKET' && form.validity === 'DAY' && form.label === 'Quantity', `ticket defaults ${JSON.stringify(form)}`);
      await page.keyboard.press('Control+A');
      await page.keyboard.type('2');
      await page.waitForFunction(() => /₹[\d,]+\.\d\d/.test(document.getElementById('t-value').textContent), null, { timeout: 3000 });
      await shot(page, 'trading-ticket.png');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#t-review:not([hidden])', { timeout: 3000 });
      const summary = (await page.textContent('#t-summary')).trim();
      const value = (await page.textContent('#t-review-value')).trim();
      check(summary.startsWith(`BUY 2 ${equity.symbol}`) && /MARKET/.test(summary) && /CNC/.test(summary), `review says "${summary}"`);
      check(/Order value ≈ ₹[\d,]+\.\d\d/.test(value), `review value "${value}"`);
      check(await page.evaluate(() => document.activeElement?.id === 't-go'), 'the confirm button is not focused in the review step');
      await shot(page, 'trading-review.png');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#ticket', { state: 'hidden', timeout: 10_000 });
      const first = await waitToast(page, new RegExp(`^Buy 2 ${equity.symbol}: (placed|traded)`), 10_000);
      const traded = await waitToast(page, new RegExp(`^Buy 2 ${equity.symbol}: traded at [\\d,]+\\.\\d\\d`), 15_000);
      check(await page.evaluate((sel) => document.activeElement === document.querySelector(sel), opener), 'focus did not go back to the BUY button');
      placed = { summary, value };
      return `"${summary}", "${value}"; toasts "${first}"${first === traded ? '' : `, "${traded}"`}`;
    });

    await step('the position shows in the orders and positions panel', async () => {
      const key = `${equity.exchangeSegment}:${equity.securityId}`;
      await page.waitForSelector('#tp:not([hidden])', { timeout: 5000 });
      const sel = `#tp-positions tr[data-key="${key}"]`;
      await page.waitForSelector(sel, { timeout: 10_000 });
      const row = await page.$eval(sel, (tr) => [...tr.cells].map((td) => ({ text: td.textContent.trim(), cls: td.className })));
      const qty = row.find((c) => /qty/.test(c.cls));
      const pnl = row.find((c) => /pnl/.test(c.cls));
      check(qty && qty.text === '+2', `net qty "${qty && qty.text}" (cells ${JSON.stringify(row)})`);
      check(pnl && (/^[+−]\d/.test(pnl.text) ? /\b(up|down)\b/.test(pnl.cls) : /^0\.00$/.test(pnl.text)), `P&L "${pnl && pnl.text}" (${pnl && pnl.cls}): a sign and a colour`);
      const recent = await page.$$eval('#tp-recent tbody tr', (trs) => trs.map((tr) => tr.textContent));
      check(recent.some((t) => t.includes(equity.symbol) && /traded/.test(t)), `recent orders: ${recent.join(' | ')}`);
      await page.$eval('#tp', (s) => s.scrollIntoView());
      await shot(page, 'trading-panel.png');
      return `position ${row.map((c) => c.text).join(' · ')}`;
    });

    await step('the available balance in the header changes', async () => {
      await page.waitForFunction((b) => {
        const t = document.getElementById('m-avail').textContent.trim();
        return /\d/.test(t) && t !== b;
      }, balanceBefore, { timeout: 10_000 });
      const after = (await page.textContent('#m-avail')).trim();
      return `${balanceBefore} → ${after}; used margin ${(await page.textContent('#m-used')).trim()}`;
    });

    await step('a LIMIT order far from the last price (keyboard: b on the row), cancelled from the panel', async () => {
      const key = `${equity.exchangeSegment}:${equity.securityId}`;
      await page.focus(rowSel(key));
      await page.keyboard.press('b');
      await page.waitForSelector('#ticket[open]', { timeout: 3000 });
      const ltp = num(await page.textContent(`${rowSel(key)} .ltp`));
      // Below the last price by 60% of the relay's price band: far enough not
      // to fill, near enough for the guard.
      const band = Math.min(info.guards?.priceBandPct ?? 5, 10);
      const price = (Math.round((ltp * (1 - (band * 0.6) / 100)) / 0.05) * 0.05).toFixed(2);
      await page.selectOption('#t-type', 'LIMIT');
      await page.fill('#t-price', price);
      await page.focus('#t-price');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#t-review:not([hidden])', { timeout: 3000 });
      const summary = (await page.textContent('#t-summary')).trim();
      check(/LIMIT at/.test(summary), `review says "${summary}"`);
      await page.keyboard.press('Enter');
      await page.waitForSelector('#ticket', { state: 'hidden', timeout: 10_000 });
      const placedToast = await waitToast(page, new RegExp(`^Buy 1 ${equity.symbol}: placed at`), 10_000);
      const cancel = '#tp-open tbody tr .tp-cancel';
      await page.waitForSelector(cancel, { timeout: 10_000 });
      const orderId = await page.$eval('#tp-open tbody tr', (tr) => tr.dataset.orderId);
      await shot(page, 'trading-open-order.png');
      await page.click(`#tp-open tbody tr[data-order-id="${orderId}"] .tp-cancel`);
      const cancelled = await waitToast(page, new RegExp(`^Buy 1 ${equity.symbol}: cancelled`), 10_000);
      await page.waitForSelector(`#tp-open tbody tr[data-order-id="${orderId}"]`, { state: 'detached', timeout: 10_000 });
      await page.waitForFunction((id) => {
        const tr = document.querySelector(`#tp-recent tbody tr[data-order-id="${id}"]`);
        return tr && /cancelled/.test(tr.textContent);
      }, orderId, { timeout: 10_000 });
      // Neither the orders nor the order stream (subscribe_orders) said anything was wrong.
      const errors = await page.evaluate(() => window.__toasts.filter((t) => t.kind === 'error').map((t) => t.text));
      check(errors.length === 0, `error toasts: ${JSON.stringify(errors)}`);
      return `LTP ${ltp}, limit ${price}: "${placedToast}"; order ${orderId}: "${cancelled}", listed as cancelled`;
    });

    await step('an F&O row: quantity in lots, lots × lot size = units', async () => {
      if (!fno) return 'the demo watchlist has no F&O or commodity row: not checked';
      const key = `${fno.exchangeSegment}:${fno.securityId}`;
      const r = await (await fetch(`${base}/api/instruments?q=${encodeURIComponent(fno.symbol)}&limit=100`)).json();
      const inst = (r.results || []).find((i) => `${i.exchangeSegment}:${i.securityId}` === key);
      check(inst && inst.lotSize > 1, `api/instruments has no lot size for ${key}: ${JSON.stringify(inst)}`);
      const lot = inst.lotSize;
      await page.click(`${rowSel(key)} .tb.buy`);
      await page.waitForSelector('#ticket[open]', { timeout: 3000 });
      await page.waitForFunction(() => document.getElementById('t-qty-label').textContent === 'Lots', null, { timeout: 5000 });
      const units = (n) => `× ${lot.toLocaleString('en-IN')} = ${(n * lot).toLocaleString('en-IN')} units`;
      check((await page.textContent('#t-units')).trim() === units(1), `1 lot: "${await page.textContent('#t-units')}"`);
      const product = await page.$eval('#t-product', (s) => ({ value: s.value, cnc: s.querySelector('option[value="CNC"]').disabled }));
      check(product.value !== 'CNC' && product.cnc, `product for ${key}: ${JSON.stringify(product)}`);
      await page.keyboard.press('Control+A');
      await page.keyboard.type('2');
      await page.waitForFunction((want) => document.getElementById('t-units').textContent.trim() === want, units(2), { timeout: 3000 });
      await shot(page, 'trading-ticket-lots.png');
      await page.emulateMedia({ colorScheme: 'dark' });
      await shot(page, 'trading-ticket-lots-dark.png');
      await page.emulateMedia({ colorScheme: 'light' });
      await page.keyboard.press('Enter');
      // Either the review (2 lots (N units)) or the relay's order-value guard, stated before sending.
      await page.waitForFunction(() => !document.getElementById('t-review').hidden || !document.getElementById('t-msg').hidden, null, { timeout: 3000 });
      let said;
      if (await page.$eval('#t-review', (e) => !e.hidden)) {
        said = (await page.textContent('#t-summary')).trim();
        check(said.includes(`2 lots (${(2 * lot).toLocaleString('en-IN')} units)`), `review says "${said}"`);
      } else {
        said = (await page.textContent('#t-msg')).trim();
        check(/at most/.test(said), `ticket says "${said}"`);
      }
      await page.keyboard.press('Escape');
      await page.waitForSelector('#ticket', { state: 'hidden', timeout: 3000 });
      check(await page.evaluate((sel) => document.activeElement === document.querySelector(sel), `${rowSel(key)} .tb.buy`), 'Escape did not give focus back to the BUY button');
      return `${fno.symbol} lot ${lot}: "${units(2)}"; then "${said}"; Escape closed it`;
    });

    await step('phone width (390×844): BUY/SELL fit, no sideways scroll, the ticket fits', async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await page.evaluate(() => window.scrollTo(0, 0));
      await sleep(300);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(overflow <= 0, `page scrolls sideways by ${overflow}px`);
      const key = `${equity.exchangeSegment}:${equity.securityId}`;
      const boxes = await page.$$eval('#rows .tb', (bs) => bs.map((b) => {
        const r = b.getBoundingClientRect();
        return { left: r.left, right: r.right, w: r.width, h: r.height };
      }));
      check(boxes.every((b) => b.w >= 24 && b.h >= 32 && b.right <= 390 && b.left >= 0), `buttons ${JSON.stringify(boxes.slice(0, 2))}`);
      await shot(page, 'trading-phone.png');
      await page.click(`${rowSel(key)} .tb.sell`);
      await page.waitForSelector('#ticket[open]', { timeout: 3000 });
      const box = await page.$eval('#ticket', (d) => {
        const r = d.getBoundingClientRect();
        return { left: r.left, right: r.right, top: r.top, bottom: r.bottom };
      });
      check(box.left >= 0 && box.right <= 390 && box.top >= 0 && box.bottom <= 844, `ticket ${JSON.stringify(box)}`);
      check((await page.textContent('#t-title')).trim() === `Sell ${equity.symbol}`, 'the SELL ticket is not titled Sell');
      await shot(page, 'trading-phone-ticket.png');
      await page.keyboard.press('Escape');
      await page.waitForSelector('#ticket', { state: 'hidden', timeout: 3000 });
      await page.$eval('#tp', (s) => s.scrollIntoView());
      await shot(page, 'trading-phone-panel.png');
      await page.setViewportSize({ width: 1280, height: 800 });
      return `overflow ${overflow}px; ${boxes.length} buttons, ${Math.round(boxes[0].w)}×${Math.round(boxes[0].h)}px; ticket ${Math.round(box.left)}–${Math.round(box.right)}px`;
    });

    await step('refusals show their message in a toast: DhanHQ\'s (502, ticket closes), a guard\'s (422, ticket stays to fix)', async () => {
      // The paper broker only refuses for lack of funds, which the relay's
      // order-value guard keeps out of reach: POST api/orders answers are
      // rewritten here to the contract's error bodies.
      let answer;
      await page.route('**/api/orders', (route) =>
        route.request().method() === 'POST' ? route.fulfill({ status: answer.status, json: answer.body }) : route.fallback());
      const key = `${equity.exchangeSegment}:${equity.securityId}`;
      const place = async () => {
        await page.click(`${rowSel(key)} .tb.sell`);
        await page.waitForSelector('#ticket[open]', { timeout: 3000 });
        await page.keyboard.press('Enter');
        await page.waitForSelector('#t-review:not([hidden])', { timeout: 3000 });
        await page.keyboard.press('Enter');
      };
      try {
        answer = { status: 502, body: { error: 'Market is Closed! Want to place an offline order?', errorCode: 'DH-905', errorType: 'Input_Exception' } };
        await place();
        const dhan = await waitToast(page, /Market is Closed! Want to place an offline order\? \(DH-905\)/, 5000);
        await page.waitForSelector('#ticket', { state: 'hidden', timeout: 3000 });
        answer = { status: 422, body: { error: 'order value ₹2,40,000 is above the relay\'s max_order_value ₹2,00,000', guard: 'maxOrderValue' } };
        await place();
        const guard = await waitToast(page, /above the relay's max_order_value/, 5000);
        await page.waitForSelector('#t-edit:not([hidden])', { timeout: 3000 });
        const msg = (await page.textContent('#t-msg')).trim();
        check(/max_order_value/.test(msg), `the ticket says "${msg}"`);
        check(await page.evaluate(() => document.activeElement?.id === 't-qty'), 'the quantity field is not focused after a guard refused');
        await shot(page, 'trading-refused.png');
        await page.keyboard.press('Escape');
        await page.waitForSelector('#ticket', { state: 'hidden', timeout: 3000 });
        return `"${dhan}"; "${guard}"`;
      } finally {
        await page.unroute('**/api/orders');
      }
    });

    await step('trading off: the buttons stay, disabled, and say why (api/trading rewritten)', async () => {
      const message = 'trading is off: set [trading] enabled = true';
      await page.route('**/api/trading', (route) =>
        route.fulfill({ json: { enabled: false, paper: false, allowed: false, message, guards: info.guards } }));
      try {
        await page.reload({ waitUntil: 'load' });
        await recordToasts(page);
        await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
        const key = `${equity.exchangeSegment}:${equity.securityId}`;
        const buy = `${rowSel(key)} .tb.buy`;
        await page.waitForFunction((sel) => document.querySelector(sel)?.getAttribute('aria-disabled') === 'true', buy, { timeout: 5000 });
        const title = await page.getAttribute(buy, 'title');
        check(title.includes(message), `title "${title}"`);
        check(await page.$eval('#paper', (b) => b.hidden), 'PAPER shows with trading off');
        await page.click(buy, { force: true }); // aria-disabled: Playwright would wait for it to be enabled
        const said = await waitToast(page, /trading is off/, 3000);
        check(!(await page.$eval('#ticket', (d) => d.open)), 'a ticket opened with trading off');
        await shot(page, 'trading-off.png');
        return `title "${title}"; a click says "${said}"`;
      } finally {
        await page.unroute('**/api/trading');
      }
    });

    await step('no console errors', async () => {
      check(consoleErrors.length === 0, `${consoleErrors.length} console error(s):\n${consoleErrors.map((e) => `  ${e.text} ${e.url}`).join('\n')}`);
      const exp = [...expectedErrors].map(([why, n]) => `${n}× ${why}`);
      return `${exp.length ? `expected ones only: ${exp.join('; ')}` : 'none'}${placed ? '' : ' (but no order was placed)'}`;
    }, { always: true });
  } finally {
    if (context) await context.close().catch(() => {});
    await stopEngine(engine);
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

await runSuite({
  label: 'browser (trading)',
  timeoutMs: 180_000,
  results,
  count,
  engines: () => [engine],
  main,
  summary: () => ['', `screenshots (${OUT}):`, ...screenshots.map((f) => `  ${f}`)],
});
