// dhan-relay's dashboard: a live watchlist over the relay's own WebSocket.
//
// No build step and no dependencies: an ES module the engine serves from its
// binary. Everything is same-origin and relative to this page (`ws`,
// `stats`, `health`, `api/...`), so the page works on whatever host, port or
// path prefix it is served from; the WebSocket URL takes ws/wss from the
// page's own scheme.
//
// Data flow: each WebSocket message is parsed and merged into its row's
// state, and the row is marked dirty; nothing touches the DOM there. Once per
// animation frame the dirty rows write only the cells whose text changed, so
// 1,000 updates/s over 200 rows cost one batch of DOM writes per frame. Rows
// scrolled out of view are not written at all until they come back into
// view (an IntersectionObserver tells which are visible), and every value
// sits in a fixed-size box (style.css) so a new price never re-lays out the
// table. The flash is a class set for FLASH_MS, not a running animation.
// Batches are at least MIN_RENDER_MS apart (~30 Hz).
//
// Protocol (docs/dhanhq-protocol.md, the client protocol section): subscribe/unsubscribe with {exchangeSegment,
// securityId}; the watchlist is subscribed in the chosen mode (ticker or
// quote), the instrument open in the detail panel in full mode (depth) — in
// depth20 (20-level book, plus full) where DhanHQ has it (NSE_EQ, NSE_FNO).
// Client messages are rate-limited by the relay (50/s), so subscriptions go
// out in as few messages as possible.
//
// Trading (issue 14; the "trading" section below): BUY/SELL on each row, an
// order ticket, order toasts from `subscribe_orders`, and an orders and
// positions panel, over api/trading, api/funds, api/orders, api/positions.

import { PriceChart } from './chart.js';

const SEGMENTS = ['IDX_I', 'NSE_EQ', 'NSE_FNO', 'NSE_CURRENCY', 'BSE_EQ', 'MCX_COMM', 'BSE_CURRENCY', 'BSE_FNO'];
const STORE_WATCHLIST = 'dhan-relay.watchlist.v1';
const STORE_MODE = 'dhan-relay.mode';
const STORE_THEME = 'dhan-relay.theme';
/** Reconnect delays (ms) by attempt; the last repeats. ±20% jitter. */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
/** Instruments per subscribe message (the relay allows 1,000). */
const PER_MESSAGE = 500;
/** Points kept per instrument for the chart before thinning by half. */
const HISTORY_CAP = 2400;
/** Updates closer together than this replace the last chart point. */
const HISTORY_STEP_MS = 250;
/** Re-read a row's bars from /api/history when opened again after this long. */
const BARS_REFRESH_MS = 60_000;
/**
 * Least time between two batches of DOM writes: prices redraw at up to
 * ~30 Hz, which the eye cannot tell from 60 and which halves the browser's
 * style/paint passes under a heavy stream (measured: fewer dropped frames
 * at 1,000 updates/s on a busy two-core machine).
 */
const MIN_RENDER_MS = 30;
/** How long a cell stays flashed after an update. */
const FLASH_MS = 280;
/** From this many rows on, the flash does not fade (fades repaint every frame). */
const MANY_ROWS = 40;
const STATS_EVERY_MS = 1000;
const HEALTH_EVERY_MS = 5000;
const SEARCH_DEBOUNCE_MS = 120;
/** After a 404 from /api/instruments, ask again only after this long. */
const SEARCH_RECHECK_MS = 30000;

const $ = (id) => document.getElementById(id);
const el = {
  conn: $('conn'),
  connText: $('conn-text'),
  banner: $('banner'),
  tokenBanner: $('token-banner'),
  demo: $('demo'),
  tps: $('m-tps'),
  p99: $('m-p99'),
  rx: $('m-rx'),
  theme: $('theme'),
  search: $('search'),
  results: $('search-results'),
  searchMsg: $('search-msg'),
  reset: $('reset'),
  table: $('watchlist'),
  rows: $('rows'),
  empty: $('empty'),
  tpl: $('row-tpl'),
  detail: $('detail'),
  toast: $('toast'),
};

// ---------------------------------------------------------------- format

const nf = (d) => new Intl.NumberFormat('en-IN', { minimumFractionDigits: d, maximumFractionDigits: d });
const priceFormats = { 2: nf(2), 4: nf(4) };
const intFormat = new Intl.NumberFormat('en-IN', { maximumFractionDigits: 0 });
const decimalsFor = (segment) => (segment.endsWith('CURRENCY') ? 4 : 2);
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const fmtPrice = (v, d) => (isNum(v) ? priceFormats[d].format(v) : '–');
const fmtInt = (v) => (isNum(v) ? intFormat.format(v) : '–');
const fmtSigned = (v, d) => (isNum(v) ? (v > 0 ? '+' : v < 0 ? '−' : '') + priceFormats[d].format(Math.abs(v)) : '–');
const fmtPct = (v) => (isNum(v) ? (v > 0 ? '+' : v < 0 ? '−' : '') + Math.abs(v).toFixed(2) + '%' : '–');
const signClass = (v) => (!isNum(v) || v === 0 ? 'flat' : v > 0 ? 'up' : 'down');

let clockSec = -1;
let clockText = '';
/** Local wall-clock time of `ms`, HH:MM:SS; cached per second. */
function clockOf(ms) {
  const sec = Math.floor(ms / 1000);
  if (sec !== clockSec) {
    clockSec = sec;
    const d = new Date(ms);
    const two = (v) => String(v).padStart(2, '0');
    clockText = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }
  return clockText;
}

function fmtMicros(us) {
  if (!isNum(us)) return '–';
  if (us < 1000) return `${us < 10 ? us.toFixed(1) : Math.round(us)} µs`;
  return `${(us / 1000).toFixed(us < 10000 ? 2 : 1)} ms`;
}

const keyOf = (i) => `${i.exchangeSegment}:${i.securityId}`;
const refOf = (i) => ({ exchangeSegment: i.exchangeSegment, securityId: i.securityId });

// ---------------------------------------------------------------- state

const state = {
  /** 'ticker' | 'quote' for the watchlist. */
  mode: 'quote',
  /** @type {Map<string, Row>} in watchlist order */
  rows: new Map(),
  /** Key of the row open in the detail panel. */
  selected: null,
  ws: null,
  wsOpen: false,
  feedUp: false,
  attempt: 0,
  retryAt: 0,
  retryTimer: 0,
  countdownTimer: 0,
  statsTimer: 0,
  healthTimer: 0,
  /** False while the watchlist is the configured default (not stored). */
  custom: false,
  /** True once the watchlist is known (stored, or fetched). */
  loaded: false,
};

// Counters the browser test reads (window.dhanRelay) and the header shows.
const perf = {
  received: 0,
  frames: 0,
  renderMs: new Float64Array(1024),
  renderCount: 0,
  rxWindow: [],
};

// ---------------------------------------------------------------- rows

class Row {
  constructor(item) {
    this.seg = item.exchangeSegment;
    this.id = String(item.securityId);
    this.key = `${this.seg}:${this.id}`;
    this.symbol = item.symbol || '';
    this.name = item.name || '';
    this.decimals = decimalsFor(this.seg);
    /** Latest known fields, merged from every message. */
    this.s = {};
    this.at = 0;
    this.dirty = false;
    /** In view (or near it): only such rows are written to the DOM. */
    this.visible = true;
    /** Changed while out of view: render when it comes back. */
    this.stale = false;
    this.flashUntil = 0;
    this.hist = { t: [], p: [] };
    /** When today's bars were last read from /api/history (0: never). */
    this.barsAt = 0;
    this.shownLtp = NaN;
    this.shown = {};

    const tr = el.tpl.content.firstElementChild.cloneNode(true);
    tr.dataset.key = this.key;
    const q = (sel) => tr.querySelector(sel);
    this.tr = tr;
    this.c = {
      name: q('.sym-name'),
      sub: q('.sym-sub'),
      ltpCell: q('.ltp'),
      chgCell: q('.chg'),
      ltp: q('.ltp .v'),
      chg: q('.chg .v'),
      pct: q('.pct .pill'),
      vol: q('.vol .v'),
      open: q('.open .v'),
      high: q('.high .v'),
      low: q('.low .v'),
      rng: q('.rng'),
      mark: q('.rng i'),
      time: q('.time .v'),
    };
    q('.seg').textContent = this.seg;
    this.c.rm = q('.rm');
    this.c.buy = q('.tb.buy');
    this.c.sell = q('.tb.sell');
    /** Lot size from the instrument master (search), when known. */
    this.lotSize = isNum(item.lotSize) && item.lotSize > 0 ? item.lotSize : 0;
    this.setLabels();
  }

  get exchangeSegment() {
    return this.seg;
  }

  get securityId() {
    return this.id;
  }

  label() {
    return this.symbol || `${this.seg} ${this.id}`;
  }

  setLabels() {
    this.c.name.textContent = this.label();
    // Under the symbol where the segment column is hidden (narrow screens).
    this.c.sub.textContent = this.name ? `${this.name} · ${this.seg}` : this.symbol ? `${this.seg} · ${this.id}` : '';
    this.tr.title = `${this.seg}:${this.id}${this.name ? ' · ' + this.name : ''}`;
    this.c.rm.setAttribute('aria-label', `Remove ${this.label()}`);
    this.c.rm.title = `Remove ${this.label()}`;
    setTradeButtons(this);
  }

  item() {
    const i = { exchangeSegment: this.seg, securityId: this.id };
    if (this.symbol) i.symbol = this.symbol;
    if (this.name) i.name = this.name;
    if (this.lotSize) i.lotSize = this.lotSize;
    return i;
  }

  /** Merges an update; no DOM work. */
  apply(m, now) {
    const s = this.s;
    for (const k in m) s[k] = m[k];
    if (!this.symbol && m.symbol) {
      this.symbol = m.symbol;
      this.setLabels();
    }
    this.at = now;
    if (isNum(m.ltp)) {
      const h = this.hist;
      const n = h.t.length;
      if (n > 0 && now - h.t[n - 1] < HISTORY_STEP_MS) {
        h.p[n - 1] = m.ltp;
      } else {
        h.t.push(now);
        h.p.push(m.ltp);
        if (h.t.length > HISTORY_CAP) thin(h);
      }
    }
  }

  /** Reference for change figures: previous close, else the quote's close. */
  ref() {
    const s = this.s;
    if (isNum(s.prevClose) && s.prevClose !== 0) return s.prevClose;
    if (isNum(s.close) && s.close !== 0) return s.close;
    return NaN;
  }

  /** Writes what changed since the last frame. */
  render() {
    const s = this.s;
    const c = this.c;
    const sh = this.shown;
    const d = this.decimals;
    const ltp = s.ltp;
    if (isNum(ltp)) {
      const prev = this.shownLtp;
      const dir = Number.isNaN(prev) || ltp === prev ? 'n' : ltp > prev ? 'u' : 'd';
      this.shownLtp = ltp;
      set(c.ltp, sh, 'ltp', fmtPrice(ltp, d));
      // Alternating animation names restart the flash without a reflow.
      const flash = `num ltp f${dir}`;
      if (sh.flash !== flash) {
        sh.flash = flash;
        c.ltpCell.className = flash;
      }
      this.flashUntil = frameTime + FLASH_MS;
      flashing.add(this);
      const ref = this.ref();
      const chg = ltp - ref;
      const cls = signClass(chg);
      set(c.chg, sh, 'chg', fmtSigned(chg, d));
      set(c.pct, sh, 'pct', fmtPct((chg / ref) * 100));
      if (sh.cls !== cls) {
        sh.cls = cls;
        c.chgCell.className = `num chg ${cls}`;
        c.pct.className = `pill ${cls}`;
      }
    }
    set(c.vol, sh, 'vol', fmtInt(s.volume));
    set(c.open, sh, 'open', fmtPrice(s.open, d));
    set(c.high, sh, 'high', fmtPrice(s.high, d));
    set(c.low, sh, 'low', fmtPrice(s.low, d));
    if (isNum(s.high) && isNum(s.low) && s.high > s.low && isNum(ltp)) {
      const pos = Math.min(1, Math.max(0, (ltp - s.low) / (s.high - s.low)));
      // A transform moves the marker without a layout.
      const move = `translateX(${(pos * 100).toFixed(1)}%)`;
      if (sh.move !== move) {
        if (sh.move === undefined) c.rng.classList.add('on');
        sh.move = move;
        c.mark.style.transform = move;
      }
    }
    set(c.time, sh, 'time', clockOf(this.at));
  }
}

function set(node, shown, field, text) {
  if (shown[field] !== text) {
    shown[field] = text;
    node.textContent = text;
  }
}

/** Halves a history, keeping its first and last points. */
function thin(h) {
  const t = [];
  const p = [];
  const n = h.t.length;
  for (let i = 0; i < n - 1; i += 2) {
    t.push(h.t[i]);
    p.push(h.p[i]);
  }
  t.push(h.t[n - 1]);
  p.push(h.p[n - 1]);
  h.t = t;
  h.p = p;
}

// ---------------------------------------------------------------- frames

let dirty = [];
let framePending = false;
let frameTime = 0;
/** Rows whose LTP cell is flashed, to be unflashed when due. */
const flashing = new Set();

function markDirty(row) {
  if (!row.dirty) {
    row.dirty = true;
    dirty.push(row);
  }
  requestFrame();
}

function requestFrame() {
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(frame);
  }
}

let lastRender = -1e9;

function frame(now) {
  framePending = false;
  if (now - lastRender < MIN_RENDER_MS) {
    requestFrame(); // the next frame, then
    return;
  }
  lastRender = now;
  frameTime = now;
  const t0 = performance.now();
  const batch = dirty;
  dirty = [];
  let selectedDirty = false;
  for (const row of batch) {
    row.dirty = false;
    if (row.key === state.selected) selectedDirty = true;
    if (!row.visible) {
      row.stale = true;
      continue;
    }
    row.stale = false;
    row.render();
  }
  for (const row of flashing) {
    if (now >= row.flashUntil) {
      flashing.delete(row);
      row.shown.flash = 'num ltp';
      row.c.ltpCell.className = 'num ltp';
    }
  }
  if (flashing.size) requestFrame();
  if (selectedDirty) renderDetail();
  perf.frames++;
  perf.renderMs[perf.renderCount++ % perf.renderMs.length] = performance.now() - t0;
}

// Which rows are in view (with a margin, so a scroll finds them drawn).
const rowOfTr = new WeakMap();
const visibility = new IntersectionObserver(
  (entries) => {
    for (const e of entries) {
      const row = rowOfTr.get(e.target);
      if (!row) continue;
      row.visible = e.isIntersecting;
      if (row.visible && row.stale) markDirty(row);
    }
  },
  { rootMargin: '300px 0px' },
);

function attach(row) {
  rowOfTr.set(row.tr, row);
  visibility.observe(row.tr);
}

function detach(row) {
  visibility.unobserve(row.tr);
  flashing.delete(row);
  row.tr.remove();
}

// ---------------------------------------------------------------- watchlist

function saveWatchlist() {
  state.custom = true;
  try {
    localStorage.setItem(STORE_WATCHLIST, JSON.stringify([...state.rows.values()].map((r) => r.item())));
  } catch {
    // Storage full or disabled: the watchlist still works for this visit.
  }
}

function storedWatchlist() {
  try {
    const raw = localStorage.getItem(STORE_WATCHLIST);
    if (raw === null) return null;
    const list = JSON.parse(raw);
    if (!Array.isArray(list)) return null;
    return list.filter((i) => i && SEGMENTS.includes(i.exchangeSegment) && /^\d+$/.test(String(i.securityId)));
  } catch {
    return null;
  }
}

async function configuredWatchlist() {
  const r = await fetch('api/watchlist', { cache: 'no-store' });
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  const body = await r.json();
  return Array.isArray(body.watchlist) ? body.watchlist : [];
}

/** Replaces the rows (no messages sent). */
function setRows(items) {
  for (const row of state.rows.values()) detach(row);
  state.rows.clear();
  const frag = document.createDocumentFragment();
  for (const item of items) {
    const row = new Row(item);
    if (state.rows.has(row.key)) continue;
    state.rows.set(row.key, row);
    frag.append(row.tr);
    attach(row);
  }
  el.rows.append(frag);
  updateEmpty();
}

function updateEmpty() {
  el.empty.hidden = state.rows.size > 0 || !state.loaded;
  document.body.classList.toggle('many', state.rows.size >= MANY_ROWS);
}

let loading = null;

/** Loads the watchlist once (stored, else the relay's configured one). */
function ensureLoaded() {
  if (state.loaded) return Promise.resolve();
  if (!loading) loading = loadWatchlist().finally(() => (loading = null));
  return loading;
}

async function loadWatchlist() {
  const stored = storedWatchlist();
  if (stored) {
    state.custom = true;
    state.loaded = true;
    setRows(stored);
    return;
  }
  try {
    setRows(await configuredWatchlist());
    state.loaded = true;
  } catch {
    // The relay is not reachable yet; `onOpen` tries again.
  }
  updateEmpty();
}

function addInstrument(item) {
  const key = keyOf(item);
  const existing = state.rows.get(key);
  if (existing) {
    highlight(existing);
    toast(`${existing.label()} is already in the watchlist`);
    return existing;
  }
  const row = new Row(item);
  state.rows.set(key, row);
  el.rows.append(row.tr);
  attach(row);
  state.loaded = true;
  updateEmpty();
  saveWatchlist();
  send({ type: 'subscribe', instruments: [refOf(item)], mode: state.mode });
  highlight(row);
  return row;
}

function removeRow(row) {
  const next = row.tr.nextElementSibling || row.tr.previousElementSibling;
  if (state.selected === row.key) closeDetail(false);
  state.rows.delete(row.key);
  detach(row);
  saveWatchlist();
  updateEmpty();
  send({ type: 'unsubscribe', instruments: [refOf(row)] });
  return next;
}

function highlight(row) {
  row.tr.scrollIntoView({ block: 'nearest' });
  row.tr.classList.remove('added');
  // Restart the highlight animation.
  void row.tr.offsetWidth;
  row.tr.classList.add('added');
}

async function resetWatchlist() {
  let items;
  try {
    items = await configuredWatchlist();
  } catch {
    toast('Cannot reach the relay to read its watchlist', 'error');
    return;
  }
  const old = [...state.rows.values()].map(refOf);
  closeDetail(false);
  try {
    localStorage.removeItem(STORE_WATCHLIST);
  } catch {
    // ignore
  }
  state.custom = false;
  if (old.length) sendChunked('unsubscribe', old);
  setRows(items);
  subscribeAll();
}

// ---------------------------------------------------------------- socket

function socketUrl() {
  const u = new URL('ws', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

function send(msg) {
  if (state.ws && state.wsOpen) state.ws.send(JSON.stringify(msg));
}

function sendChunked(type, refs, mode) {
  for (let i = 0; i < refs.length; i += PER_MESSAGE) {
    const msg = { type, instruments: refs.slice(i, i + PER_MESSAGE) };
    if (mode) msg.mode = mode;
    send(msg);
  }
}

function subscribeAll() {
  const refs = [];
  for (const row of state.rows.values()) if (row.key !== state.selected) refs.push(refOf(row));
  sendChunked('subscribe', refs, state.mode);
  const sel = state.rows.get(state.selected);
  if (sel) send({ type: 'subscribe', instruments: [refOf(sel)], mode: detailMode(sel) });
}

/** The detail panel's mode: 20-level depth where DhanHQ serves it. */
function detailMode(row) {
  return row.seg === 'NSE_EQ' || row.seg === 'NSE_FNO' ? 'depth20' : 'full';
}

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  if (state.attempt > 0) setConn('reconnecting', 'Reconnecting…');
  else setConn('connecting', 'Connecting…');
  let ws;
  try {
    ws = new WebSocket(socketUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  ws.onopen = () => onOpen(ws);
  ws.onmessage = onMessage;
  ws.onerror = () => {}; // a close event follows and handles it
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.wsOpen = false;
    state.feedUp = false;
    stopPolling();
    if (ev.code === 4403) {
      // The relay closed it because its key was revoked: ask for a key.
      signedOut();
      return;
    }
    scheduleReconnect();
    // A refused upgrade (the session ended while away) looks like any
    // failed connection: ask the relay whether this page is still signed in.
    checkSession();
  };
}

/** Stops reconnecting and shows the sign-in dialog (then reloads). */
function signedOut() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  stopPolling();
  setConn('down', 'Signed out');
  if (!signingIn) reauthenticate(); // once, however many requests were refused
}

async function checkSession() {
  try {
    const r = await fetch('api/session', { cache: 'no-store' });
    const info = await r.json();
    if (info.auth && !info.authenticated) signedOut();
  } catch {
    // the relay is down: the reconnect loop reports it
  }
}

async function onOpen(ws) {
  state.attempt = 0;
  state.wsOpen = true;
  await ensureLoaded();
  if (state.ws !== ws) return;
  subscribeAll();
  resubscribeChain();
  startPolling();
  loadTrading();
}

function scheduleReconnect() {
  const base = BACKOFF_MS[Math.min(state.attempt, BACKOFF_MS.length - 1)];
  const delay = Math.round(base * (0.8 + Math.random() * 0.4));
  state.attempt++;
  state.retryAt = Date.now() + delay;
  state.retryTimer = setTimeout(connect, delay);
  const tick = () => {
    const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    setConn('reconnecting', `Reconnecting in ${left} s`);
  };
  tick();
  clearInterval(state.countdownTimer);
  state.countdownTimer = setInterval(tick, 250);
}

function onMessage(ev) {
  let m;
  try {
    m = JSON.parse(ev.data);
  } catch {
    return;
  }
  switch (m.type) {
    case 'ticker':
    case 'quote':
    case 'full': {
      perf.received++;
      const row = state.rows.get(`${m.exchangeSegment}:${m.securityId}`);
      if (row) {
        row.apply(m, Date.now());
        markDirty(row);
      }
      break;
    }
    case 'depth20': {
      perf.received++;
      const row = state.rows.get(`${m.exchangeSegment}:${m.securityId}`);
      if (row && row.key === state.selected && Array.isArray(m.bids) && Array.isArray(m.asks)) {
        row.depth20 = { bids: m.bids, asks: m.asks };
        markDirty(row);
      }
      break;
    }
    case 'status':
      // Upstream state changes carry a machine-readable `state`; other
      // status notes (capacity freed) have none and change nothing here.
      if (m.state) onStatus(String(m.state), String(m.message || ''));
      else if (m.message) toast(String(m.message), 'info');
      break;
    case 'error':
      toast(String(m.message || 'error'), 'error');
      chainRefused(String(m.message || 'error'));
      break;
    case 'subscribed':
      if (m.orders) trading.subscribedWs = state.ws;
      if (typeof m.chain === 'string') onChainSubscribed(m.chain);
      break;
    case 'unsubscribed':
      break;
    case 'chain':
      onChain(m);
      break;
    case 'order':
      onOrderUpdate(m);
      break;
    default:
      break;
  }
}

function onStatus(upstream, message) {
  if (upstream === 'connected') {
    state.feedUp = true;
    setConn('live', 'Live');
    showBanner(null);
    clearInterval(state.healthTimer);
    state.healthTimer = 0;
    refreshHealth();
  } else {
    state.feedUp = false;
    // The sentence after the prefix says why ("reconnecting: …").
    const why = message.includes(': ') ? message.slice(message.indexOf(': ') + 2) : message;
    setConn('down', 'Upstream down');
    showBanner(`Upstream feed down: ${why}`);
    refreshHealth();
    if (!state.healthTimer) state.healthTimer = setInterval(refreshHealth, HEALTH_EVERY_MS);
  }
}

function setConn(kind, text) {
  if (el.conn.dataset.state !== kind) {
    el.conn.dataset.state = kind;
    document.body.dataset.conn = kind;
  }
  if (el.connText.textContent !== text) el.connText.textContent = text;
}

function showBanner(text) {
  el.banner.hidden = !text;
  if (text) el.banner.textContent = text;
}

// ---------------------------------------------------------------- REST polling

let lastTicks = null;

function startPolling() {
  stopPolling();
  pollStats();
  state.statsTimer = setInterval(pollStats, STATS_EVERY_MS);
}

function stopPolling() {
  clearInterval(state.statsTimer);
  clearInterval(state.healthTimer);
  state.statsTimer = 0;
  state.healthTimer = 0;
  lastTicks = null;
  el.tps.textContent = '–';
  el.p99.textContent = '–';
  el.rx.textContent = '–';
}

async function pollStats() {
  // Updates per second here, over the last few seconds.
  const now = performance.now();
  const w = perf.rxWindow;
  w.push([now, perf.received]);
  while (w.length > 4) w.shift();
  if (w.length > 1) {
    const [t0, n0] = w[0];
    el.rx.textContent = fmtInt(((perf.received - n0) * 1000) / (now - t0));
  }
  let body;
  try {
    const r = await fetch('stats', { cache: 'no-store' });
    if (r.status === 401) {
      signedOut();
      return;
    }
    if (!r.ok) return;
    body = await r.json();
  } catch {
    return;
  }
  const t = performance.now();
  const ticks = body.counters?.book_ticks_total;
  if (isNum(ticks)) {
    if (lastTicks && t > lastTicks.t) {
      el.tps.textContent = fmtInt(((ticks - lastTicks.ticks) * 1000) / (t - lastTicks.t));
    }
    lastTicks = { t, ticks };
  }
  const ttw = body.latency?.tickToWire;
  el.p99.textContent = ttw && ttw.count > 0 ? fmtMicros(ttw.p99_us) : '–';
  showToken(body.token);
}

// ---------------------------------------------------------------- access token

/** Time left as people say it: "in 42 min", "in 1 h 5 min". */
function fmtLeft(secs) {
  if (!isNum(secs)) return 'soon';
  if (secs < 60) return 'in under a minute';
  const min = Math.floor(secs / 60);
  return min < 60 ? `in ${min} min` : `in ${Math.floor(min / 60)} h ${min % 60} min`;
}

/**
 * What the token banner says for /stats' `token` object, or null to hide
 * it: shown while the token is about to expire (under an hour left), has
 * expired or was refused by DhanHQ; hidden when it is fine, unknown, or the
 * relay does not report a token at all.
 */
function tokenNotice(t) {
  if (!t || typeof t !== 'object') return null;
  let text;
  switch (t.state) {
    case 'expiring':
      text = `DhanHQ token expires ${fmtLeft(t.secondsLeft)} (renewal: ${t.renew || 'none'})`;
      break;
    case 'expired':
      text = 'The DhanHQ access token has expired: prices are stale until it is replaced';
      break;
    case 'refused':
      text = 'DhanHQ refused the access token: prices are stale until it is replaced';
      break;
    default:
      return null;
  }
  const bits = [];
  if (t.source) bits.push(`token from ${t.source}`);
  if (t.expiresAt) bits.push(`expires ${t.expiresAt}`);
  if (isNum(t.renewals)) bits.push(`${t.renewals} renewal${t.renewals === 1 ? '' : 's'} so far`);
  return { state: t.state, text, why: t.lastError ? String(t.lastError) : '', title: bits.join(' · ') };
}

let tokenShown = '';

/** Updates the banner only when what it says changes (no repeated announcements). */
function showToken(t) {
  const n = tokenNotice(t);
  const key = n ? JSON.stringify(n) : '';
  if (key === tokenShown) return;
  tokenShown = key;
  el.tokenBanner.hidden = !n;
  if (!n) {
    el.tokenBanner.replaceChildren();
    return;
  }
  el.tokenBanner.dataset.state = n.state;
  el.tokenBanner.title = n.title;
  const parts = [document.createTextNode(n.text)];
  if (n.why) {
    const why = document.createElement('span');
    why.className = 'why';
    why.textContent = ` — ${n.why}`;
    parts.push(why);
  }
  el.tokenBanner.replaceChildren(...parts);
}

async function refreshHealth() {
  let h;
  try {
    const r = await fetch('health', { cache: 'no-store' });
    h = await r.json(); // 503 carries the same body
  } catch {
    return;
  }
  el.demo.hidden = !h.demo;
  if (state.feedUp || h.status === 'ok') return;
  const reason = healthReason(h);
  el.conn.title = `Upstream down: ${reason}`;
  setConn('down', 'Upstream down');
  showBanner(`Upstream feed down: ${reason}`);
}

function healthReason(h) {
  const u = h.upstream || {};
  const d = u.lastDisconnect;
  if (d) return `${d.name} (${d.code})${d.hint ? ` — ${d.hint}` : ''}`;
  if (u.lastError) return String(u.lastError);
  return String(h.detail || 'no upstream connection');
}

// ---------------------------------------------------------------- search

const search = {
  results: [],
  active: -1,
  timer: 0,
  abort: null,
  unavailableAt: 0,
  seq: 0,
};

/** `NSE_EQ:2885`, `nse_eq 2885` or `NSE_EQ/2885` → an instrument. */
function parseDirect(q) {
  const m = q.trim().match(/^([A-Za-z_]+)\s*[:/\s]\s*(\d{1,10})$/);
  if (!m) return null;
  const seg = m[1].toUpperCase();
  return SEGMENTS.includes(seg) ? { exchangeSegment: seg, securityId: m[2] } : null;
}

function onSearchInput() {
  clearTimeout(search.timer);
  const q = el.search.value.trim();
  if (!q) {
    closeResults();
    return;
  }
  search.timer = setTimeout(() => runSearch(q), SEARCH_DEBOUNCE_MS);
}

async function runSearch(q) {
  const seq = ++search.seq;
  const direct = parseDirect(q);
  const options = direct ? [{ ...direct, direct: true }] : [];
  let message = '';
  if (search.abort) search.abort.abort();
  if (Date.now() - search.unavailableAt < SEARCH_RECHECK_MS) {
    message = unavailableText(direct);
  } else {
    const ctl = new AbortController();
    search.abort = ctl;
    try {
      const r = await fetch(`api/instruments?q=${encodeURIComponent(q)}&limit=20`, { signal: ctl.signal, cache: 'no-store' });
      if (r.status === 404) {
        search.unavailableAt = Date.now();
        message = unavailableText(direct);
      } else if (!r.ok) {
        message = `Search failed (HTTP ${r.status})`;
      } else {
        const body = await r.json();
        for (const it of body.results || []) {
          if (SEGMENTS.includes(it.exchangeSegment) && it.securityId !== undefined) {
            options.push({ ...it, securityId: String(it.securityId) });
          }
        }
        if (options.length === 0) message = `No instrument matches “${q}”`;
      }
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      message = 'Search failed: the relay is not reachable';
    }
  }
  if (seq !== search.seq) return; // a newer query is on its way
  showResults(options, message);
}

function unavailableText(direct) {
  return direct
    ? 'Search unavailable on this relay; add by SEGMENT:ID as above'
    : 'Search unavailable on this relay. Add by SEGMENT:ID, e.g. NSE_EQ:1333';
}

function showResults(options, message) {
  search.results = options;
  search.active = options.length ? 0 : -1;
  el.results.replaceChildren(
    ...options.map((o, i) => {
      const li = document.createElement('li');
      li.id = `opt-${i}`;
      li.setAttribute('role', 'option');
      li.dataset.index = String(i);
      // Symbol and segment·id on the first line; what it is on the second.
      const sym = document.createElement('b');
      sym.className = 'opt-sym';
      sym.textContent = o.direct ? `Add ${o.exchangeSegment} ${o.securityId}` : o.symbol || o.securityId;
      const seg = document.createElement('span');
      seg.className = 'opt-seg';
      seg.textContent = o.direct ? '' : `${o.exchangeSegment} · ${o.securityId}`;
      const info = document.createElement('span');
      info.className = 'opt-info';
      const bits = [];
      if (o.name && o.name !== o.symbol) bits.push(o.name);
      if (o.instrument) bits.push(o.instrument);
      if (o.expiry) bits.push(`expiry ${o.expiry}`);
      if (o.lotSize > 1) bits.push(`lot ${o.lotSize}`);
      info.textContent = o.direct ? 'by segment and security id' : bits.join(' · ');
      li.append(sym, seg, info);
      if (state.rows.has(keyOf(o))) li.classList.add('held');
      return li;
    }),
  );
  el.results.hidden = options.length === 0;
  el.search.setAttribute('aria-expanded', String(options.length > 0));
  el.searchMsg.hidden = !message;
  el.searchMsg.textContent = message;
  markActive();
}

function markActive() {
  const items = el.results.children;
  for (let i = 0; i < items.length; i++) {
    const on = i === search.active;
    items[i].classList.toggle('active', on);
    items[i].setAttribute('aria-selected', String(on));
    if (on) items[i].scrollIntoView({ block: 'nearest' });
  }
  if (search.active >= 0) el.search.setAttribute('aria-activedescendant', `opt-${search.active}`);
  else el.search.removeAttribute('aria-activedescendant');
}

function closeResults() {
  search.seq++;
  if (search.abort) search.abort.abort();
  search.results = [];
  search.active = -1;
  el.results.hidden = true;
  el.results.replaceChildren();
  el.search.setAttribute('aria-expanded', 'false');
  el.search.removeAttribute('aria-activedescendant');
  el.searchMsg.hidden = true;
}

function pick(i) {
  const o = search.results[i];
  if (!o) return;
  const item = { exchangeSegment: o.exchangeSegment, securityId: String(o.securityId) };
  if (o.symbol) item.symbol = o.symbol;
  if (o.name && o.name !== o.symbol) item.name = o.name;
  if (isNum(o.lotSize) && o.lotSize > 0) item.lotSize = o.lotSize;
  addInstrument(item);
  el.search.value = '';
  closeResults();
  el.search.focus();
}

function onSearchKey(e) {
  const n = search.results.length;
  switch (e.key) {
    case 'ArrowDown':
      e.preventDefault();
      if (n === 0) {
        if (el.search.value.trim()) runSearch(el.search.value.trim());
      } else {
        search.active = (search.active + 1) % n;
        markActive();
      }
      break;
    case 'ArrowUp':
      e.preventDefault();
      if (n) {
        search.active = (search.active - 1 + n) % n;
        markActive();
      }
      break;
    case 'Enter': {
      e.preventDefault();
      if (n) {
        pick(Math.max(0, search.active));
      } else {
        const direct = parseDirect(el.search.value);
        if (direct) {
          addInstrument(direct);
          el.search.value = '';
          closeResults();
        } else if (el.search.value.trim()) {
          clearTimeout(search.timer);
          runSearch(el.search.value.trim());
        }
      }
      break;
    }
    case 'Escape':
      if (!el.results.hidden || !el.searchMsg.hidden) {
        closeResults();
      } else if (el.search.value) {
        el.search.value = '';
      } else {
        el.search.blur();
      }
      e.preventDefault();
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- detail

const d = {
  symbol: $('d-symbol'),
  sub: $('d-sub'),
  ltp: $('d-ltp'),
  chg: $('d-chg'),
  open: $('d-open'),
  high: $('d-high'),
  low: $('d-low'),
  prev: $('d-prev'),
  vol: $('d-vol'),
  avg: $('d-avg'),
  ltq: $('d-ltq'),
  oi: $('d-oi'),
  time: $('d-time'),
  buy: $('d-buy'),
  sell: $('d-sell'),
  buybar: $('d-buybar'),
  depth: $('d-depth'),
  depthTable: $('d-depth').closest('table'),
  nodepth: $('d-nodepth'),
  depthTitle: $('d-depth-title'),
  close: $('d-close'),
};
const chart = new PriceChart($('d-chart'));
const depthCells = [];
const depthRows = [];
for (let i = 0; i < 20; i++) {
  const tr = document.createElement('tr');
  const cells = [];
  for (let j = 0; j < 6; j++) {
    const td = document.createElement('td');
    td.className = `num ${j < 3 ? 'bid' : 'ask'}`;
    td.textContent = '–';
    tr.append(td);
    cells.push(td);
  }
  tr.hidden = i >= 5;
  d.depth.append(tr);
  depthCells.push(cells);
  depthRows.push(tr);
}

function openDetail(row) {
  if (state.selected === row.key) return;
  const prev = state.rows.get(state.selected);
  if (prev) {
    prev.tr.classList.remove('selected');
    prev.depth20 = null;
    send({ type: 'subscribe', instruments: [refOf(prev)], mode: state.mode });
  }
  state.selected = row.key;
  row.tr.classList.add('selected');
  row.depth20 = null;
  send({ type: 'subscribe', instruments: [refOf(row)], mode: detailMode(row) });
  d.symbol.textContent = row.label();
  d.sub.textContent = `${row.name ? row.name + ' · ' : ''}${row.seg} · ${row.id}`;
  el.detail.hidden = false;
  document.body.classList.add('detail-open');
  chart.resize();
  renderDetail();
  loadBars(row);
}

/**
 * Starts the row's line from today's 1-minute bars (`GET api/history`): each
 * finished bar is its open at the minute's start and its close at its end,
 * the forming one its open; then the live points already received after
 * that, and every later tick as before. So a reload does not empty the chart.
 */
async function loadBars(row) {
  const now = Date.now();
  if (row.barsAt && now - row.barsAt < BARS_REFRESH_MS) return;
  row.barsAt = now;
  let body;
  try {
    const r = await fetch(`api/history?exchangeSegment=${encodeURIComponent(row.seg)}&securityId=${encodeURIComponent(row.id)}&interval=1m`, { cache: 'no-store' });
    if (!r.ok) return; // 404: not held yet; the live line still grows
    body = await r.json();
  } catch {
    row.barsAt = 0;
    return;
  }
  const bars = Array.isArray(body.bars) ? body.bars : [];
  if (!bars.length) return;
  const t = [];
  const p = [];
  for (const b of bars) {
    const start = b.t * 1000;
    t.push(start);
    p.push(b.o);
    if (!b.partial) {
      t.push(start + 59_999);
      p.push(b.c);
    }
  }
  const h = row.hist;
  const after = t[t.length - 1];
  for (let i = 0; i < h.t.length; i++) {
    if (h.t[i] > after) {
      t.push(h.t[i]);
      p.push(h.p[i]);
    }
  }
  row.hist = { t, p };
  while (row.hist.t.length > HISTORY_CAP) thin(row.hist);
  if (state.selected === row.key) renderDetail();
}

/** Closes the panel; `resubscribe` drops the instrument back to the list's mode. */
function closeDetail(resubscribe = true) {
  const row = state.rows.get(state.selected);
  state.selected = null;
  el.detail.hidden = true;
  document.body.classList.remove('detail-open');
  if (row) {
    row.tr.classList.remove('selected');
    row.depth20 = null;
    if (resubscribe) send({ type: 'subscribe', instruments: [refOf(row)], mode: state.mode });
  }
}

function renderDetail() {
  const row = state.rows.get(state.selected);
  if (!row) return;
  const s = row.s;
  const dec = row.decimals;
  const ref = row.ref();
  const chg = s.ltp - ref;
  d.ltp.textContent = fmtPrice(s.ltp, dec);
  d.chg.textContent = isNum(chg) ? `${fmtSigned(chg, dec)} (${fmtPct((chg / ref) * 100)})` : '–';
  d.chg.className = signClass(chg);
  d.open.textContent = fmtPrice(s.open, dec);
  d.high.textContent = fmtPrice(s.high, dec);
  d.low.textContent = fmtPrice(s.low, dec);
  d.prev.textContent = fmtPrice(ref, dec);
  d.vol.textContent = fmtInt(s.volume);
  d.avg.textContent = fmtPrice(s.avgPrice, dec);
  d.ltq.textContent = fmtInt(s.ltq);
  d.oi.textContent = s.oi ? fmtInt(s.oi) : '–';
  d.time.textContent = row.at ? clockOf(row.at) : '–';
  d.buy.textContent = fmtInt(s.totalBuyQuantity);
  d.sell.textContent = fmtInt(s.totalSellQuantity);
  const tb = s.totalBuyQuantity;
  const ts = s.totalSellQuantity;
  d.buybar.style.width = isNum(tb) && isNum(ts) && tb + ts > 0 ? `${((tb / (tb + ts)) * 100).toFixed(1)}%` : '50%';
  // 20 levels when the depth feed has sent them, else full mode's 5.
  const d20 = row.depth20;
  const depth = d20
    ? d20.bids.map((b, i) => {
        const a = d20.asks[i] || {};
        return {
          bidOrders: b.orders,
          bidQuantity: b.quantity,
          bidPrice: b.price,
          askPrice: a.price,
          askQuantity: a.quantity,
          askOrders: a.orders,
        };
      })
    : Array.isArray(s.depth)
      ? s.depth
      : null;
  d.nodepth.hidden = !!depth;
  d.depthTable.hidden = !depth;
  if (!depth) d.nodepth.textContent = row.seg === 'IDX_I' ? 'An index has no market depth.' : 'Waiting for full-mode data (depth)…';
  if (depth) {
    const levels = d20 ? 20 : 5;
    d.depthTitle.textContent = d20 ? 'Market depth · 20 levels' : 'Market depth';
    for (let i = 0; i < 20; i++) depthRows[i].hidden = i >= levels;
    let max = 1;
    for (const l of depth) max = Math.max(max, l.bidQuantity || 0, l.askQuantity || 0);
    for (let i = 0; i < levels; i++) {
      const l = depth[i] || {};
      const c = depthCells[i];
      c[0].textContent = fmtInt(l.bidOrders);
      c[1].textContent = fmtInt(l.bidQuantity);
      c[2].textContent = l.bidPrice ? fmtPrice(l.bidPrice, dec) : '–';
      c[3].textContent = l.askPrice ? fmtPrice(l.askPrice, dec) : '–';
      c[4].textContent = fmtInt(l.askQuantity);
      c[5].textContent = fmtInt(l.askOrders);
      c[1].style.setProperty('--w', `${(((l.bidQuantity || 0) / max) * 100).toFixed(1)}%`);
      c[4].style.setProperty('--w', `${(((l.askQuantity || 0) / max) * 100).toFixed(1)}%`);
    }
  }
  chart.set(row.hist, ref, (p) => fmtPrice(p, dec));
  chart.draw();
}

// ---------------------------------------------------------------- trading

// Trading through the relay (issue 14): BUY/SELL on each row open an order
// ticket (a dialog: edit, then a review step with the order's value; Enter
// goes on, Escape cancels); orders go to POST api/orders; the relay's order
// stream (`subscribe_orders` on the page's WebSocket) drives the toasts and
// refreshes the orders-and-positions panel and the funds in the header.
// When the relay has trading off (or this key may not trade) the buttons
// stay, marked disabled, and say why when hovered or pressed. None of this
// runs in the price path: it touches the DOM only on order events and polls.

/** Funds, orders and positions are re-read this often (and after each order event). */
const TRADING_EVERY_MS = 30000;
/** Order events within this long of each other cause one refresh. */
const TRADING_REFRESH_MS = 300;
/** Recent (finished) orders listed in the panel. */
const RECENT_ORDERS = 20;
const EQUITY_SEGMENTS = ['NSE_EQ', 'BSE_EQ'];
const OPEN_STATUSES = ['TRANSIT', 'PENDING', 'PART_TRADED'];
const ORDER_TYPE_LABEL = { MARKET: 'MARKET', LIMIT: 'LIMIT', STOP_LOSS: 'SL', STOP_LOSS_MARKET: 'SL-M' };
const inr = (v) => (isNum(v) ? `₹${priceFormats[2].format(v)}` : '–');
const fmtSignedInt = (v) => (isNum(v) ? (v > 0 ? '+' : v < 0 ? '−' : '') + intFormat.format(Math.abs(v)) : '–');

const trading = {
  /** GET api/trading's answer; null until known or when the relay has none. */
  info: null,
  /** Why the buttons are disabled ('' when trading is possible). */
  why: 'Checking whether this relay trades…',
  /** The socket `subscribe_orders` was sent on, and the one that acknowledged it. */
  sentWs: null,
  subscribedWs: null,
  /** Order ids placed from this page: their changes are told even without the stream. */
  mine: new Set(),
  orders: [],
  positions: [],
  pollTimer: 0,
  refreshTimer: 0,
  /** orderId → statuses already toasted (no repeats from the stream and the POST answer). */
  told: new Map(),
  /** What the rows' BUY/SELL buttons were last set for. */
  buttons: '',
  /** key → lot size learnt from api/instruments. */
  lots: new Map(),
};

const tp = {
  section: $('tp'),
  sum: $('tp-sum'),
  msg: $('tp-msg'),
  body: document.querySelector('#tp .tp-body'),
  positions: document.querySelector('#tp-positions tbody'),
  open: document.querySelector('#tp-open tbody'),
  recent: document.querySelector('#tp-recent tbody'),
  nopos: $('tp-nopos'),
  noopen: $('tp-noopen'),
  norecent: $('tp-norecent'),
  avail: $('m-avail'),
  used: $('m-used'),
  paper: $('paper'),
};

const canTrade = () => !!(trading.info && trading.info.enabled && trading.info.allowed);
/** Why a row cannot be traded whatever the relay says ('' when it can). */
function rowBlock(row) {
  if (row.seg === 'IDX_I') return 'An index cannot be traded';
  const segs = trading.info && trading.info.guards && trading.info.guards.segments;
  if (Array.isArray(segs) && segs.length && !segs.includes(row.seg)) return `This relay does not trade ${row.seg}`;
  return '';
}

/** A row's BUY/SELL buttons: enabled, or aria-disabled with the reason as title. */
function setTradeButtons(row) {
  for (const b of [row.c.buy, row.c.sell]) {
    const side = b.dataset.side === 'BUY' ? 'Buy' : 'Sell';
    const why = canTrade() ? rowBlock(row) : trading.why || rowBlock(row);
    b.setAttribute('aria-label', `${side} ${row.label()}`);
    b.title = why ? `${side}: ${why}` : `${side} ${row.label()}`;
    if (why) b.setAttribute('aria-disabled', 'true');
    else b.removeAttribute('aria-disabled');
  }
}

/** Relay API call: `{ ok, status, body }`; a network failure is status 0. */
async function api(method, path, body) {
  let r;
  try {
    r = await fetch(path, {
      method,
      headers: body ? { 'Content-Type': 'application/json' } : undefined,
      body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store',
    });
  } catch {
    return { ok: false, status: 0, body: { error: 'the relay did not answer' } };
  }
  let json = {};
  try {
    json = await r.json();
  } catch {
    // no JSON body
  }
  if (r.status === 401) signedOut();
  return { ok: r.ok, status: r.status, body: json && typeof json === 'object' ? json : {} };
}

const errorText = (res) => {
  const b = res.body || {};
  let text = b.error ? String(b.error) : res.status ? `HTTP ${res.status}` : 'the relay did not answer';
  if (b.errorCode) text += ` (${b.errorCode})`;
  return text;
};

/** Reads api/trading, then (when trading is on) funds, orders and positions. */
async function loadTrading() {
  clearTimeout(trading.pollTimer);
  trading.pollTimer = setTimeout(loadTrading, TRADING_EVERY_MS);
  const res = await api('GET', 'api/trading');
  if (res.status === 404) {
    trading.info = null;
    trading.why = 'This relay does not trade (no api/trading)';
  } else if (!res.ok) {
    trading.info = null;
    trading.why = `Trading status unknown: ${errorText(res)}`;
  } else {
    trading.info = res.body;
    trading.why = res.body.enabled && res.body.allowed ? '' : String(res.body.message || 'Trading is off on this relay');
  }
  const info = trading.info;
  tp.paper.hidden = !(info && info.paper);
  $('t-paper').hidden = tp.paper.hidden;
  // The buttons are rewritten only when what they say changes (every 30 s otherwise).
  const buttons = JSON.stringify([trading.why, info && info.guards && info.guards.segments]);
  if (buttons !== trading.buttons) {
    trading.buttons = buttons;
    for (const row of state.rows.values()) setTradeButtons(row);
  }
  // The panel shows once the relay trades; a relay without trading keeps the page as it was.
  // (also while a kill switch stops it: the panel then says so).
  tp.section.hidden = !(info && (info.enabled || info.configured || info.killSwitch));
  tp.msg.hidden = canTrade();
  tp.msg.textContent = trading.why;
  tp.body.hidden = !canTrade();
  if (!canTrade()) tp.sum.textContent = '';
  if (canTrade() && state.wsOpen && trading.sentWs !== state.ws) {
    trading.sentWs = state.ws;
    send({ type: 'subscribe_orders' });
  }
  // Funds, orders and positions need the trade scope: not asked for otherwise.
  if (canTrade()) await refreshAccount();
  else showFunds(null);
}

function scheduleRefresh() {
  clearTimeout(trading.refreshTimer);
  trading.refreshTimer = setTimeout(refreshAccount, TRADING_REFRESH_MS);
}

async function refreshAccount() {
  const [funds, orders, positions] = await Promise.all([api('GET', 'api/funds'), api('GET', 'api/orders'), api('GET', 'api/positions')]);
  showFunds(funds.ok ? funds.body : null, funds.ok ? '' : errorText(funds));
  if (orders.ok && Array.isArray(orders.body.orders)) {
    trading.orders = orders.body.orders;
    // Orders placed here: a status the stream has not told yet (it is
    // down, or this is a rejection whose reason only the order book has).
    for (const o of trading.orders) if (trading.mine.has(String(o.orderId))) tellOrder(orderEvent(o));
  }
  if (positions.ok && Array.isArray(positions.body.positions)) trading.positions = positions.body.positions;
  renderPanel();
}

function showFunds(f, why = '') {
  const on = !!f || !!why;
  for (const div of document.querySelectorAll('.m-fund')) div.hidden = !on;
  tp.avail.textContent = f ? fmtPrice(f.availableBalance, 2) : '–';
  tp.used.textContent = f ? fmtPrice(f.utilizedAmount, 2) : '–';
  tp.avail.parentElement.title = why ? `Funds unavailable: ${why}` : 'Available balance (from /api/funds, every 30 s and after each order update)';
}

/** A name for an order or position: the watchlist row's (as the rows say it), its symbol, or SEGMENT id. */
function instrumentLabel(o) {
  const row = state.rows.get(`${o.exchangeSegment}:${o.securityId}`);
  if (row) return row.label();
  if (o.symbol) return String(o.symbol);
  if (o.tradingSymbol) return String(o.tradingSymbol);
  return `${o.exchangeSegment} ${o.securityId}`;
}

function td(text, cls) {
  const c = document.createElement('td');
  if (cls) c.className = cls;
  c.textContent = text;
  return c;
}

const orderTime = (o) => String(o.updateTime || o.createTime || '');
const shortTime = (t) => {
  const m = String(t).match(/(\d{2}:\d{2}:\d{2})/);
  return m ? m[1] : t || '–';
};
const sideCell = (side) => td(side === 'SELL' ? 'Sell' : 'Buy', side === 'SELL' ? 'side sell' : 'side buy');
const statusWord = (s) => String(s || '').toLowerCase().replace('_', ' ');

function renderPanel() {
  const pos = trading.positions.filter((p) => p.positionType !== 'CLOSED' || p.realizedProfit);
  tp.positions.replaceChildren(
    ...pos.map((p) => {
      const tr = document.createElement('tr');
      tr.dataset.key = `${p.exchangeSegment}:${p.securityId}`;
      const d = decimalsFor(String(p.exchangeSegment || ''));
      const avg = p.netQty > 0 ? p.buyAvg : p.netQty < 0 ? p.sellAvg : NaN;
      const pnl = (isNum(p.realizedProfit) ? p.realizedProfit : 0) + (isNum(p.unrealizedProfit) ? p.unrealizedProfit : 0);
      tr.append(
        td(instrumentLabel(p), 'sym'),
        td(String(p.productType || '–'), 'tp-opt'),
        td(p.netQty ? fmtSignedInt(p.netQty) : '0', `num qty ${p.netQty > 0 ? 'long' : p.netQty < 0 ? 'short' : ''}`),
        td(fmtPrice(avg, d), 'num'),
        td(fmtSigned(pnl, 2), `num pnl ${signClass(pnl)}`),
      );
      tr.title = `${p.positionType || ''} · bought ${fmtInt(p.buyQty)} at ${fmtPrice(p.buyAvg, d)}, sold ${fmtInt(p.sellQty)} at ${fmtPrice(p.sellAvg, d)} · realised ${fmtSigned(p.realizedProfit, 2)}, unrealised ${fmtSigned(p.unrealizedProfit, 2)}`;
      return tr;
    }),
  );
  tp.nopos.hidden = pos.length > 0;

  const orders = [...trading.orders].sort((a, b) => orderTime(b).localeCompare(orderTime(a)));
  const open = orders.filter((o) => OPEN_STATUSES.includes(o.orderStatus));
  const done = orders.filter((o) => !OPEN_STATUSES.includes(o.orderStatus)).slice(0, RECENT_ORDERS);
  tp.open.replaceChildren(
    ...open.map((o) => {
      const tr = document.createElement('tr');
      tr.dataset.orderId = o.orderId;
      const d = decimalsFor(String(o.exchangeSegment || ''));
      const label = instrumentLabel(o);
      const price = o.orderType === 'MARKET' || o.orderType === 'STOP_LOSS_MARKET' ? 'market' : fmtPrice(o.price, d);
      const cancel = document.createElement('button');
      cancel.type = 'button';
      cancel.className = 'tp-cancel';
      cancel.textContent = 'Cancel';
      cancel.setAttribute('aria-label', `Cancel ${o.transactionType === 'SELL' ? 'sell' : 'buy'} ${o.quantity} ${label} (order ${o.orderId})`);
      cancel.addEventListener('click', () => cancelOrder(o, cancel));
      const act = td('', 'act');
      act.append(cancel);
      tr.append(
        td(label, 'sym'),
        sideCell(o.transactionType),
        td(o.filledQty ? `${fmtInt(o.filledQty)}/${fmtInt(o.quantity)}` : fmtInt(o.quantity), 'num'),
        td(ORDER_TYPE_LABEL[o.orderType] || String(o.orderType || ''), 'tp-opt'),
        td(price, 'num'),
        td(statusWord(o.orderStatus), 'tp-opt status'),
        act,
      );
      tr.title = `order ${o.orderId} · ${o.productType} · ${o.validity}${o.triggerPrice ? ` · trigger ${fmtPrice(o.triggerPrice, d)}` : ''}`;
      return tr;
    }),
  );
  tp.noopen.hidden = open.length > 0;
  tp.recent.replaceChildren(
    ...done.map((o) => {
      const tr = document.createElement('tr');
      tr.dataset.orderId = o.orderId;
      const d = decimalsFor(String(o.exchangeSegment || ''));
      const st = td(statusWord(o.orderStatus), `status st-${String(o.orderStatus).toLowerCase()}`);
      if (o.omsErrorDescription) st.title = String(o.omsErrorDescription);
      tr.append(
        td(shortTime(orderTime(o)), 'tp-opt time'),
        td(instrumentLabel(o), 'sym'),
        sideCell(o.transactionType),
        td(o.filledQty && o.filledQty !== o.quantity ? `${fmtInt(o.filledQty)}/${fmtInt(o.quantity)}` : fmtInt(o.quantity), 'num'),
        td(o.averageTradedPrice ? fmtPrice(o.averageTradedPrice, d) : '–', 'num'),
        st,
      );
      tr.title = `order ${o.orderId} · ${ORDER_TYPE_LABEL[o.orderType] || o.orderType} · ${o.productType}${o.omsErrorDescription ? ` · ${o.omsErrorDescription}` : ''}`;
      return tr;
    }),
  );
  tp.norecent.hidden = done.length > 0;
  const net = pos.filter((p) => p.netQty).length;
  tp.sum.textContent = `${open.length} open · ${net} position${net === 1 ? '' : 's'}`;
}

async function cancelOrder(o, button) {
  button.disabled = true;
  button.textContent = 'Cancelling…';
  const res = await api('DELETE', `api/orders/${encodeURIComponent(o.orderId)}`);
  if (!res.ok) {
    toast(`Cancel of order ${o.orderId} failed: ${errorText(res)}`, 'error');
    button.disabled = false;
    button.textContent = 'Cancel';
  } else {
    tellOrder({ ...orderEvent(o), status: res.body.orderStatus || 'CANCELLED' });
  }
  scheduleRefresh();
}

/** An api/orders entry in the stream's shape. */
const orderEvent = (o) => ({
  orderId: o.orderId,
  side: o.transactionType,
  exchangeSegment: o.exchangeSegment,
  securityId: o.securityId,
  symbol: o.symbol,
  quantity: o.quantity,
  filledQty: o.filledQty,
  price: o.price,
  averagePrice: o.averageTradedPrice,
  orderType: o.orderType,
  status: o.orderStatus,
  reason: o.omsErrorDescription,
});

function onOrderUpdate(m) {
  tellOrder(m);
  scheduleRefresh();
}

/** Order statuses in the order they happen: a later one is not followed by an earlier one. */
const STATUS_RANK = { TRANSIT: 1, PENDING: 1, PART_TRADED: 2, TRADED: 3, REJECTED: 3, CANCELLED: 3, EXPIRED: 3 };

/** The toast for an order's status, once per order and status, never going back. */
function tellOrder(m) {
  const id = String(m.orderId ?? '');
  const status = String(m.status || '');
  const told = trading.told.get(id) || { keys: new Set(), rank: 0 };
  const key = status === 'PART_TRADED' ? `${status}:${m.filledQty}` : status === 'TRANSIT' ? 'PENDING' : status;
  const rank = STATUS_RANK[status] || 1;
  if (told.keys.has(key) || rank < told.rank) return;
  told.keys.add(key);
  told.rank = rank;
  trading.told.set(id, told);
  const d = decimalsFor(String(m.exchangeSegment || ''));
  const what = `${m.side === 'SELL' ? 'Sell' : 'Buy'} ${fmtInt(m.quantity)} ${instrumentLabel(m)}`;
  const limit = m.orderType && m.orderType !== 'MARKET' && m.orderType !== 'STOP_LOSS_MARKET' && m.price ? ` at ${fmtPrice(m.price, d)}` : '';
  switch (status) {
    case 'TRANSIT':
    case 'PENDING':
      toast(`${what}: placed${limit}`, 'info');
      break;
    case 'TRADED':
      toast(`${what}: traded at ${fmtPrice(m.averagePrice, d)}`, 'ok');
      break;
    case 'PART_TRADED':
      toast(`${what}: ${fmtInt(m.filledQty)} traded at ${fmtPrice(m.averagePrice, d)}`, 'ok');
      break;
    case 'REJECTED':
      toast(`${what}: rejected — ${m.reason || 'no reason given'}`, 'error');
      break;
    case 'CANCELLED':
      toast(`${what}: cancelled`, 'info');
      break;
    case 'EXPIRED':
      toast(`${what}: expired`, 'info');
      break;
    default:
      toast(`${what}: ${statusWord(status) || 'sent'}`, 'info');
  }
}

// ---------------------------------------------------------------- order ticket

const ticketEl = $('ticket');
const t = {
  form: $('t-form'),
  title: $('t-title'),
  sub: $('t-sub'),
  edit: $('t-edit'),
  review: $('t-review'),
  qty: $('t-qty'),
  qtyLabel: $('t-qty-label'),
  units: $('t-units'),
  type: $('t-type'),
  price: $('t-price'),
  trigger: $('t-trigger'),
  product: $('t-product'),
  validity: $('t-validity'),
  value: $('t-value'),
  summary: $('t-summary'),
  reviewValue: $('t-review-value'),
  msg: $('t-msg'),
  cancel: $('t-cancel'),
  back: $('t-back'),
  go: $('t-go'),
};
/** The open ticket: row, side, lot size (0 while looking it up), step, opener. */
let ticket = null;

/** The price step: the master's (learnt with the lot size), else the segment's usual one. */
const tickOf = (seg, row) => (row && row.tickSize > 0 ? row.tickSize : seg.endsWith('CURRENCY') ? 0.0025 : 0.05);
const roundTick = (v, seg, row) => {
  const tick = tickOf(seg, row);
  return Number((Math.round(v / tick) * tick).toFixed(decimalsFor(seg)));
};

/** The row's lot size: known, or looked up by symbol in api/instruments (1 for equity cash). */
async function lotSizeOf(row) {
  if (EQUITY_SEGMENTS.includes(row.seg)) return 1;
  if (row.lotSize) return row.lotSize;
  if (trading.lots.has(row.key)) return trading.lots.get(row.key);
  for (const q of [row.symbol, row.name].filter(Boolean)) {
    const res = await api('GET', `api/instruments?q=${encodeURIComponent(q)}&limit=100`);
    const hit = res.ok && Array.isArray(res.body.results) ? res.body.results.find((i) => i.exchangeSegment === row.seg && String(i.securityId) === row.id) : null;
    if (hit && isNum(hit.lotSize) && hit.lotSize > 0) {
      trading.lots.set(row.key, hit.lotSize);
      row.lotSize = hit.lotSize;
      if (isNum(hit.tickSize) && hit.tickSize > 0) row.tickSize = hit.tickSize;
      return hit.lotSize;
    }
  }
  return null; // unknown: the quantity is taken in units
}

function openTicket(row, side, opener) {
  const why = canTrade() ? rowBlock(row) : trading.why || rowBlock(row);
  if (why) {
    toast(`${side === 'SELL' ? 'Sell' : 'Buy'} ${row.label()}: ${why}`, 'info');
    return;
  }
  if (ticketEl.open) return;
  ticket = { row, side, lot: 0, step: 'edit', opener: opener || row.tr, sending: false };
  const guards = (trading.info && trading.info.guards) || {};
  t.form.querySelector(`input[name="side"][value="${side}"]`).checked = true;
  t.sub.textContent = `${row.name ? row.name + ' · ' : ''}${row.seg} · ${row.id} · LTP ${fmtPrice(row.s.ltp, row.decimals)}`;
  t.qty.value = '1';
  t.type.value = 'MARKET';
  const ltp = isNum(row.s.ltp) ? roundTick(row.s.ltp, row.seg, row) : '';
  t.price.value = String(ltp);
  t.trigger.value = String(ltp);
  t.price.step = t.trigger.step = String(tickOf(row.seg, row));
  // Products: CNC is delivery of equity only; the relay's guard may narrow the list.
  const equity = EQUITY_SEGMENTS.includes(row.seg);
  const allowed = Array.isArray(guards.products) && guards.products.length ? guards.products : null;
  for (const o of t.product.options) o.disabled = (o.value === 'CNC' && !equity) || (allowed && !allowed.includes(o.value));
  const want = equity ? 'CNC' : 'INTRADAY';
  const first = [...t.product.options].find((o) => !o.disabled);
  t.product.value = !t.product.querySelector(`option[value="${want}"]`).disabled ? want : first ? first.value : want;
  t.validity.value = 'DAY';
  t.msg.hidden = true;
  setStep('edit');
  updateTicket();
  if (!ticketEl.open) ticketEl.showModal();
  t.qty.focus();
  t.qty.select();
  const pending = ticket;
  lotSizeOf(row).then((lot) => {
    if (ticket !== pending) return;
    ticket.lot = lot === null ? 1 : lot;
    ticket.lotUnknown = lot === null;
    // The master's tick size arrives with the lot size: prices on its grid.
    t.price.step = t.trigger.step = String(tickOf(row.seg, row));
    for (const input of [t.price, t.trigger]) {
      const v = Number(input.value);
      if (input.value !== '' && isNum(v)) input.value = String(roundTick(v, row.seg, row));
    }
    updateTicket();
  });
}

function ticketSide() {
  return t.form.querySelector('input[name="side"]:checked').value;
}

/** What the ticket would send, and its value; `error` names what is missing. */
function ticketOrder() {
  const row = ticket.row;
  const lot = ticket.lot || 1;
  const lots = ticket.lot > 1;
  const n = Number(t.qty.value);
  const type = t.type.value;
  const order = {
    exchangeSegment: row.seg,
    securityId: row.id,
    side: ticketSide(),
    quantity: Number.isInteger(n) ? n * lot : NaN,
    orderType: type,
    productType: t.product.value,
    validity: t.validity.value,
  };
  let error = '';
  if (!Number.isInteger(n) || n < 1) error = `${lots ? 'Lots' : 'Quantity'} must be a whole number, 1 or more`;
  const needsPrice = type === 'LIMIT' || type === 'STOP_LOSS';
  const needsTrigger = type === 'STOP_LOSS' || type === 'STOP_LOSS_MARKET';
  if (needsPrice) {
    order.price = Number(t.price.value);
    if (!error && !(order.price > 0)) error = 'Enter a price';
  }
  if (needsTrigger) {
    order.triggerPrice = Number(t.trigger.value);
    if (!error && !(order.triggerPrice > 0)) error = 'Enter a trigger price';
  }
  const at = needsPrice ? order.price : needsTrigger ? order.triggerPrice : row.s.ltp;
  const value = order.quantity * at;
  const g = (trading.info && trading.info.guards) || {};
  if (!error && isNum(g.maxQuantity) && order.quantity > g.maxQuantity) error = `This relay takes at most ${fmtInt(g.maxQuantity)} units an order`;
  if (!error && isNum(g.maxOrderValue) && isNum(value) && value > g.maxOrderValue) error = `This relay takes orders worth at most ${inr(g.maxOrderValue)}`;
  const ltp = row.s.ltp;
  if (!error && needsPrice && isNum(g.priceBandPct) && isNum(ltp) && ltp > 0 && Math.abs(order.price / ltp - 1) * 100 > g.priceBandPct) {
    error = `The price must be within ${g.priceBandPct}% of the last price (${fmtPrice(ltp, row.decimals)}) on this relay`;
  }
  return { order, value, at, lots, lot, n, error, market: !needsPrice };
}

function updateTicket() {
  if (!ticket) return;
  const row = ticket.row;
  const side = ticketSide();
  ticketEl.dataset.side = side;
  ticketEl.dataset.type = t.type.value;
  t.title.textContent = `${side === 'SELL' ? 'Sell' : 'Buy'} ${row.label()}`;
  const o = ticketOrder();
  t.qtyLabel.textContent = o.lots ? 'Lots' : 'Quantity';
  t.qty.setAttribute('aria-describedby', 't-units');
  if (!ticket.lot) t.units.textContent = 'looking up the lot size…';
  else if (o.lots) t.units.textContent = `× ${fmtInt(o.lot)} = ${fmtInt(o.order.quantity)} units`;
  else t.units.textContent = ticket.lotUnknown ? 'units (lot size unknown)' : 'units';
  const est = o.market ? `≈ ${inr(o.value)} at ${o.order.orderType === 'MARKET' ? 'the last price' : 'the trigger'}` : inr(o.value);
  t.value.textContent = isNum(o.value) ? `Order value ${est}` : 'Order value –';
  t.go.disabled = !ticket.lot || ticket.sending;
}

function setStep(step) {
  ticket.step = step;
  t.edit.hidden = step !== 'edit';
  t.review.hidden = step !== 'review';
  t.back.hidden = step !== 'review';
  t.go.textContent = step === 'review' ? `Place ${ticketSide()} order` : 'Review order';
  ticketEl.dataset.step = step;
}

function review() {
  const o = ticketOrder();
  if (o.error) {
    t.msg.textContent = o.error;
    t.msg.hidden = false;
    return;
  }
  t.msg.hidden = true;
  const row = ticket.row;
  const d = row.decimals;
  const type = ORDER_TYPE_LABEL[o.order.orderType];
  const qty = o.lots ? `${fmtInt(o.n)} lot${o.n === 1 ? '' : 's'} (${fmtInt(o.order.quantity)} units)` : `${fmtInt(o.order.quantity)}`;
  let how = type;
  if (o.order.price) how += ` at ${fmtPrice(o.order.price, d)}`;
  if (o.order.triggerPrice) how += `, trigger ${fmtPrice(o.order.triggerPrice, d)}`;
  t.summary.textContent = `${o.order.side} ${qty} ${row.label()} · ${how} · ${o.order.productType} · ${o.order.validity}`;
  t.reviewValue.textContent = `Order value ${o.market ? '≈ ' : ''}${inr(o.value)}`;
  setStep('review');
  t.go.focus();
}

async function placeOrder() {
  const o = ticketOrder();
  if (o.error || ticket.sending) return;
  const current = ticket;
  current.sending = true;
  t.go.textContent = 'Sending…';
  t.go.disabled = true;
  const body = { ...o.order, correlationId: `dash${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}` };
  const res = await api('POST', 'api/orders', body);
  current.sending = false;
  const ev = { ...body, orderId: res.body.orderId, status: res.body.orderStatus, reason: res.body.reason || null, symbol: current.row.label() };
  if (res.ok) {
    closeTicket();
    if (ev.orderId !== undefined) trading.mine.add(String(ev.orderId));
    // A fill's average price and a rejection's reason come with the
    // stream or the order book (the refresh below), not with this answer.
    const filled = ev.status === 'TRADED' || ev.status === 'PART_TRADED';
    if (!(ev.status === 'REJECTED' && !ev.reason) && !(filled && !isNum(ev.averagePrice))) tellOrder(ev);
    scheduleRefresh();
    return;
  }
  const why = errorText(res);
  toast(`${o.order.side === 'SELL' ? 'Sell' : 'Buy'} ${fmtInt(o.order.quantity)} ${current.row.label()} refused: ${why}`, 'error');
  if (ticket !== current) return;
  if (res.status === 400 || res.status === 422) {
    // A field or a guard: let them fix it.
    setStep('edit');
    updateTicket();
    t.msg.textContent = why;
    t.msg.hidden = false;
    t.qty.focus();
  } else {
    closeTicket();
  }
}

function closeTicket() {
  if (!ticket) return;
  const opener = ticket.opener;
  ticket = null;
  if (ticketEl.open) ticketEl.close();
  if (opener && opener.isConnected) opener.focus();
}

t.form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (!ticket) return;
  if (ticket.step === 'edit') review();
  else placeOrder();
});
t.form.addEventListener('input', () => {
  if (ticket && ticket.step === 'edit') {
    t.msg.hidden = true;
    updateTicket();
  }
});
t.form.addEventListener('change', () => ticket && updateTicket());
t.form.addEventListener('keydown', (e) => {
  // Enter goes on from any field (selects and radios do not submit by themselves).
  if (e.key === 'Enter' && !(e.target instanceof HTMLButtonElement) && !e.isComposing) {
    e.preventDefault();
    if (!t.go.disabled) t.form.requestSubmit();
  }
});
t.cancel.addEventListener('click', () => closeTicket());
t.back.addEventListener('click', () => {
  setStep('edit');
  updateTicket();
  t.qty.focus();
});
ticketEl.addEventListener('cancel', (e) => {
  e.preventDefault(); // Escape: close through closeTicket (focus goes back)
  if (ticket && !ticket.sending) closeTicket();
});
ticketEl.addEventListener('close', () => {
  if (ticket) closeTicket();
});

// ---------------------------------------------------------------- mode, theme, toast

function setMode(mode, announce = true) {
  if (mode !== 'ticker' && mode !== 'quote') return;
  const changed = state.mode !== mode;
  state.mode = mode;
  document.body.dataset.mode = mode;
  for (const b of document.querySelectorAll('.seg-toggle button')) {
    b.setAttribute('aria-pressed', String(b.dataset.mode === mode));
  }
  try {
    localStorage.setItem(STORE_MODE, mode);
  } catch {
    // ignore
  }
  if (changed && announce) subscribeAll();
}

const THEMES = ['auto', 'dark', 'light'];
function applyTheme(theme) {
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  const label = theme === 'auto' ? 'Theme: follows the system' : `Theme: ${theme}`;
  el.theme.title = label;
  el.theme.setAttribute('aria-label', label);
  chart.themeChanged();
}

/** Toasts shown at once; older ones give way. */
const TOASTS_MAX = 4;

/**
 * A toast in the stack at the bottom (an aria-live region; errors are
 * alerts). `kind`: info, ok (an order went through), error. Click to dismiss.
 */
function toast(text, kind = 'info') {
  const t = document.createElement('div');
  t.className = 'toast';
  t.dataset.kind = kind;
  if (kind === 'error') t.setAttribute('role', 'alert');
  t.textContent = text;
  t.title = 'Click to dismiss';
  t.addEventListener('click', () => t.remove());
  el.toast.append(t);
  while (el.toast.children.length > TOASTS_MAX) el.toast.firstElementChild.remove();
  setTimeout(() => t.remove(), kind === 'error' ? 9000 : 5000);
  return t;
}

// ---------------------------------------------------------------- events

el.search.addEventListener('input', onSearchInput);
el.search.addEventListener('keydown', onSearchKey);
el.search.addEventListener('blur', () => setTimeout(() => {
  if (document.activeElement !== el.search) closeResults();
}, 150));
el.results.addEventListener('mousedown', (e) => {
  const li = e.target.closest('li[data-index]');
  if (!li) return;
  e.preventDefault(); // keep focus in the box
  pick(Number(li.dataset.index));
});

el.rows.addEventListener('click', (e) => {
  const tr = e.target.closest('tr.row');
  if (!tr) return;
  const row = state.rows.get(tr.dataset.key);
  if (!row) return;
  if (e.target.closest('.rm')) {
    const next = removeRow(row);
    if (next) next.focus();
    return;
  }
  const tb = e.target.closest('.tb');
  if (tb) {
    openTicket(row, tb.dataset.side, tb);
    return;
  }
  openDetail(row);
});

el.rows.addEventListener('keydown', (e) => {
  const tr = e.target.closest('tr.row');
  if (!tr || e.target.closest('button')) return;
  const row = state.rows.get(tr.dataset.key);
  if (!row) return;
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    openDetail(row);
  } else if (e.key === 'Delete' || e.key === 'Backspace') {
    e.preventDefault();
    const next = removeRow(row);
    if (next) next.focus();
    else el.search.focus();
  } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    e.preventDefault();
    const to = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
    if (to) to.focus();
  } else if ((e.key === 'b' || e.key === 's') && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    openTicket(row, e.key === 'b' ? 'BUY' : 'SELL', tr);
  }
});

d.close.addEventListener('click', () => closeDetail());
$('scrim').addEventListener('click', () => closeDetail());
el.reset.addEventListener('click', () => resetWatchlist());
el.conn.addEventListener('click', () => {
  if (!state.ws) connect(); // retry now instead of waiting out the countdown
});
for (const b of document.querySelectorAll('.seg-toggle button')) {
  b.addEventListener('click', () => setMode(b.dataset.mode));
}
el.theme.addEventListener('click', () => {
  let theme = 'auto';
  try {
    theme = localStorage.getItem(STORE_THEME) || 'auto';
  } catch {
    // ignore
  }
  theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
  try {
    localStorage.setItem(STORE_THEME, theme);
  } catch {
    // ignore
  }
  applyTheme(theme);
});
window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => chart.themeChanged());

document.addEventListener('keydown', (e) => {
  if (ticketEl.open || $('login').open) return; // the dialog has the keys
  const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
  if (e.key === '/' && !typing && !e.ctrlKey && !e.metaKey && !e.altKey && ch.view === 'watch') {
    e.preventDefault();
    el.search.focus();
    el.search.select();
  } else if (e.key === 'Escape' && !typing && state.selected) {
    const row = state.rows.get(state.selected);
    closeDetail();
    if (row) row.tr.focus();
  }
});

// Other tabs of this dashboard changed the watchlist: follow them.
window.addEventListener('storage', (e) => {
  if (e.key !== STORE_WATCHLIST || e.newValue === null) return;
  const list = storedWatchlist();
  if (!list) return;
  const old = [...state.rows.values()].map(refOf);
  closeDetail(false);
  if (old.length) sendChunked('unsubscribe', old);
  setRows(list);
  subscribeAll();
});

// ---------------------------------------------------------------- option chains

// Issue 15: a "Chains" view beside the watchlist. The chains the relay has
// come from api/chains; the chosen one (underlying + expiry) is subscribed
// over this page's socket with subscribe_chain and its {"type":"chain"}
// messages (at most every 250 ms) are drawn into a ladder of 2N+1 rows that
// is built once per row count: a re-centre relabels the same rows, values
// are written only where their text changed, every value sits in a box of
// fixed size and the spot line, the bars and the shading move by transform
// or class, so an update never re-lays out the table.

const CHAIN_SIDES = ['ce', 'pe'];
// Cells per side, from the strike outwards (PE order; CE is mirrored).
const CHAIN_FIELDS = ['chg', 'ltp', 'delta', 'iv', 'volume', 'oiChange', 'oi'];
const CHAIN_OPTIONAL = new Set(['chg', 'delta', 'iv', 'volume', 'oiChange']);
const compactFormat = new Intl.NumberFormat('en-IN', { notation: 'compact', maximumFractionDigits: 1 });
const fmtCompact = (v) => (isNum(v) ? compactFormat.format(v) : '–');
const fmtCompactSigned = (v) => (isNum(v) ? (v > 0 ? '+' : v < 0 ? '−' : '') + compactFormat.format(Math.abs(v)) : '–');
const fmtFixed = (v, d) => (isNum(v) ? v.toFixed(d).replace('-', '−') : '–');

const ch = {
  view: 'watch',
  list: null, // api/chains' chains, once loaded
  missing: false, // api/chains answered 404: this relay has no chains
  underlying: '',
  expiry: '',
  strikes: 10,
  /** The chain id asked for (underlying:expiry), and the one the relay confirmed. */
  want: '',
  id: '',
  data: null, // the last chain message or snapshot
  renderedId: '', // the chain the ladder shows
  rows: [], // { tr, cells: { ce: {field: {td, v, bar}}, pe: … }, k, shown, flashUntil }
  dirty: false,
  flashing: new Set(),
};
const chEl = {
  tabs: [$('tab-watch'), $('tab-chain')],
  watch: $('view-watch'),
  view: $('view-chain'),
  underlying: $('ch-underlying'),
  expiry: $('ch-expiry'),
  msg: $('ch-msg'),
  wrap: $('ch-wrap'),
  body: $('ladder-rows'),
  caption: $('ch-caption'),
  spot: $('ch-spot'),
  spotLabel: $('ch-spot-label'),
  stats: { spot: $('ch-spot-v'), atm: $('ch-atm'), pcr: $('ch-pcr'), maxPain: $('ch-maxpain'), expiry: $('ch-exp'), time: $('ch-time') },
  shownStats: {},
};

function showView(view, focusTab = false) {
  if (view !== 'chain') view = 'watch';
  const changed = ch.view !== view;
  ch.view = view;
  for (const b of chEl.tabs) {
    const on = b.dataset.view === view;
    b.setAttribute('aria-selected', String(on));
    b.tabIndex = on ? 0 : -1;
    if (on && focusTab) b.focus();
  }
  chEl.watch.hidden = view !== 'watch';
  chEl.view.hidden = view !== 'chain';
  document.body.dataset.view = view;
  const hash = view === 'chain' ? '#chains' : '';
  if (location.hash !== hash) history.replaceState(null, '', hash || location.pathname + location.search);
  if (!changed) return;
  if (view === 'chain') {
    if (state.selected) closeDetail();
    openChains();
  } else {
    unsubscribeChain();
  }
}

function chainMessage(text) {
  chEl.msg.hidden = !text;
  if (text) chEl.msg.textContent = text;
}

async function openChains() {
  if (!ch.list && !ch.missing) {
    let r;
    try {
      r = await fetch('api/chains', { cache: 'no-store' });
    } catch {
      chainMessage('The relay did not answer; the chains load when it is back.');
      return;
    }
    if (r.status === 401) return reauthenticate();
    if (r.status === 404) {
      ch.missing = true;
    } else if (!r.ok) {
      chainMessage(`Could not load the chains: ${await chainError(r)}`);
      return;
    } else {
      try {
        ch.list = (await r.json()).chains || [];
      } catch {
        ch.list = [];
      }
    }
    fillPickers();
  }
  if (ch.view !== 'chain') return;
  if (ch.missing) {
    chainMessage('This relay serves no option chains (api/chains is not there): it predates them.');
    return;
  }
  if (!ch.list.length) {
    chainMessage('The relay has no chains. Add one to its configuration ([[chains]] underlying = "NIFTY").');
    return;
  }
  subscribeChain();
}

/** A refusal's `error` text (the contract's 404 lists what exists). */
async function chainError(r) {
  try {
    const b = await r.json();
    if (b && b.error) return String(b.error);
  } catch {
    // no JSON body
  }
  return `HTTP ${r.status}`;
}

function option(value, text) {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = text;
  return o;
}

function fmtExpiry(e) {
  const m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(e);
  if (!m) return e;
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return `${Number(m[3])} ${months[Number(m[2]) - 1] || m[2]} ${m[1]}`;
}

function fillPickers() {
  const list = ch.list || [];
  const names = [...new Set(list.map((c) => c.underlying))];
  chEl.underlying.replaceChildren(...names.map((n) => option(n, n)));
  chEl.underlying.disabled = names.length === 0;
  if (!names.includes(ch.underlying)) ch.underlying = names[0] || '';
  chEl.underlying.value = ch.underlying;
  fillExpiries();
}

function fillExpiries() {
  const mine = (ch.list || []).filter((c) => c.underlying === ch.underlying);
  const dates = [...new Set(mine.flatMap((c) => (Array.isArray(c.expiries) && c.expiries.length ? c.expiries : [c.expiry])))].sort();
  chEl.expiry.replaceChildren(...dates.map((e) => option(e, fmtExpiry(e))));
  chEl.expiry.disabled = dates.length === 0;
  if (!dates.includes(ch.expiry)) ch.expiry = (mine[0] && mine[0].expiry) || dates[0] || '';
  chEl.expiry.value = ch.expiry;
  const own = mine.find((c) => c.expiry === ch.expiry) || mine[0];
  ch.strikes = own && own.strikes > 0 ? own.strikes : 10;
}

function subscribeChain() {
  if (!ch.underlying || !ch.expiry) return;
  const want = `${ch.underlying}:${ch.expiry}`;
  if (ch.want === want && ch.data) return;
  if (ch.want !== want) unsubscribeChain();
  ch.want = want;
  if (!ch.data || ch.data.id !== want) {
    // Another chain's numbers under this one's name would mislead: none until it comes.
    chainMessage(`Loading ${ch.underlying} ${fmtExpiry(ch.expiry)}…`);
    chEl.wrap.hidden = true;
    for (const k of Object.keys(chEl.stats)) setStat(k, '–');
  }
  send({ type: 'subscribe_chain', underlying: ch.underlying, expiry: ch.expiry, strikes: ch.strikes });
  loadChainSnapshot(want);
}

/** The ladder at once from REST, until the socket's first chain message. */
async function loadChainSnapshot(want) {
  const [u, e] = [ch.underlying, ch.expiry];
  try {
    const r = await fetch(`api/chains/${encodeURIComponent(u)}?expiry=${encodeURIComponent(e)}`, { cache: 'no-store' });
    if (ch.want !== want) return;
    if (!r.ok) {
      const why = await chainError(r);
      if (ch.want === want && (!ch.data || ch.data.id !== want)) chainMessage(`${u} ${fmtExpiry(e)}: ${why}`);
      return;
    }
    const c = await r.json();
    if (ch.want === want && (!ch.data || ch.data.id !== want)) applyChain(c);
  } catch {
    // the socket's messages fill it in
  }
}

function unsubscribeChain() {
  const id = ch.id || ch.want;
  if (id) send({ type: 'unsubscribe_chain', chain: id });
  ch.id = '';
  ch.want = '';
}

/** After a reconnect: the relay forgot this page's chain. */
function resubscribeChain() {
  if (ch.view !== 'chain' || !ch.want) return;
  ch.id = '';
  send({ type: 'subscribe_chain', underlying: ch.underlying, expiry: ch.expiry, strikes: ch.strikes });
}

/**
 * An error while a chain subscription is unanswered is taken as its refusal
 * (errors carry no request id): the view says it instead of "Loading…".
 */
function chainRefused(message) {
  if (ch.view !== 'chain' || !ch.want || ch.id === ch.want) return;
  if (ch.data && ch.data.id === ch.want) return;
  chainMessage(`${ch.underlying} ${fmtExpiry(ch.expiry)}: ${message}`);
  chEl.wrap.hidden = true;
  ch.want = ''; // nothing to unsubscribe; picking it again asks again
}

function onChainSubscribed(id) {
  // The relay's id is underlying:date, which is what the pickers ask for;
  // a late answer for an earlier pick is not this one.
  if (ch.want && id === ch.want) ch.id = id;
}

function onChain(m) {
  if (!m || typeof m.id !== 'string' || !Array.isArray(m.rows)) return;
  if (m.id !== ch.want && m.id !== ch.id) return; // an old subscription's last message
  perf.received++;
  applyChain(m);
}

function applyChain(c) {
  if (!Array.isArray(c.rows)) return;
  ch.data = c;
  if (ch.rows.length !== c.rows.length) buildLadder(c.rows.length);
  chainMessage('');
  chEl.wrap.hidden = false;
  ch.dirty = true;
  requestChainFrame();
}

function chainCell(tr, side, field) {
  const td = document.createElement('td');
  td.className = `${side} num f-${field}${CHAIN_OPTIONAL.has(field) ? ' o' : ''}`;
  let bar = null;
  if (field === 'oi' || field === 'oiChange') {
    bar = document.createElement('i');
    bar.className = 'bar';
    td.append(bar);
  }
  const v = document.createElement('span');
  v.className = 'v';
  v.textContent = '–';
  td.append(v);
  tr.append(td);
  return { td, v, bar, shown: {} };
}

function buildLadder(n) {
  const rows = [];
  const frag = document.createDocumentFragment();
  for (let i = 0; i < n; i++) {
    const tr = document.createElement('tr');
    const cells = { ce: {}, pe: {} };
    for (const f of [...CHAIN_FIELDS].reverse()) cells.ce[f] = chainCell(tr, 'ce', f);
    const th = document.createElement('th');
    th.scope = 'row';
    th.className = 'k';
    const kv = document.createElement('span');
    kv.className = 'v';
    kv.textContent = '–';
    th.append(kv);
    tr.append(th);
    for (const f of CHAIN_FIELDS) cells.pe[f] = chainCell(tr, 'pe', f);
    frag.append(tr);
    rows.push({ tr, kv, cells, shown: {} });
  }
  for (const r of ch.flashing) ch.flashing.delete(r);
  ch.rows = rows;
  chEl.body.replaceChildren(frag);
}

let chainFramePending = false;
function requestChainFrame() {
  if (!chainFramePending) {
    chainFramePending = true;
    requestAnimationFrame(chainFrame);
  }
}

function chainFrame(now) {
  chainFramePending = false;
  if (ch.dirty && !chEl.view.hidden) {
    ch.dirty = false;
    renderChain(now);
  }
  for (const cell of ch.flashing) {
    if (now >= cell.flashUntil) {
      ch.flashing.delete(cell);
      cell.td.classList.remove('fu', 'fd', 'fn');
    }
  }
  if (ch.flashing.size) requestChainFrame();
}

const fieldText = {
  ltp: (v) => fmtPrice(v, 2),
  chg: (v) => fmtSigned(v, 2),
  oi: fmtCompact,
  oiChange: fmtCompactSigned,
  volume: fmtCompact,
  iv: (v) => (isNum(v) ? (v * 100).toFixed(1) : '–'),
  delta: (v) => fmtFixed(v, 2),
};

function setStat(key, text) {
  if (chEl.shownStats[key] !== text) {
    chEl.shownStats[key] = text;
    chEl.stats[key].textContent = text;
  }
}

function renderChain(now) {
  const c = ch.data;
  const spot = isNum(c.underlyingPrice) ? c.underlyingPrice : null;
  setStat('spot', fmtPrice(spot, 2));
  setStat('atm', isNum(c.atm) ? intFormat.format(c.atm) : '–');
  setStat('pcr', fmtFixed(c.pcr, 2));
  setStat('maxPain', isNum(c.maxPain) ? intFormat.format(c.maxPain) : '–');
  setStat('expiry', c.expiry ? fmtExpiry(String(c.expiry)) : '–');
  const at = /T(\d\d:\d\d:\d\d)/.exec(String(c.updatedAt || ''));
  setStat('time', at ? at[1] : '–');
  const caption = `${c.underlying || ''} option chain, expiry ${c.expiry || ''}`;
  if (chEl.caption.textContent !== caption) chEl.caption.textContent = caption;

  // Bars: against the largest OI and OI change on the ladder.
  let maxOi = 0;
  let maxChg = 0;
  for (const r of c.rows) {
    for (const s of CHAIN_SIDES) {
      const o = r[s];
      if (!o) continue;
      if (isNum(o.oi)) maxOi = Math.max(maxOi, o.oi);
      if (isNum(o.oiChange)) maxChg = Math.max(maxChg, Math.abs(o.oiChange));
    }
  }
  let spotAfter = -1; // the spot lies between row spotAfter and the next
  // Another chain in the same rows, or a row given another strike: new
  // numbers, not price changes, so no flash.
  const switched = ch.renderedId !== c.id;
  ch.renderedId = c.id;
  c.rows.forEach((r, i) => {
    const row = ch.rows[i];
    if (!row) return;
    const sh = row.shown;
    const relabel = switched || sh.k !== r.strike;
    if (sh.k !== r.strike) {
      sh.k = r.strike;
      row.kv.textContent = isNum(r.strike) ? intFormat.format(r.strike) : '–';
      row.tr.dataset.strike = String(r.strike);
    }
    const atm = r.strike === c.atm;
    const ceItm = spot !== null && r.strike < spot;
    const peItm = spot !== null && r.strike > spot;
    const cls = `${atm ? 'atm ' : ''}${ceItm ? 'ce-itm ' : ''}${peItm ? 'pe-itm' : ''}`.trim();
    if (sh.cls !== cls) {
      sh.cls = cls;
      row.tr.className = cls;
      if (atm) row.tr.setAttribute('aria-current', 'true');
      else row.tr.removeAttribute('aria-current');
    }
    if (spot !== null && r.strike <= spot) spotAfter = i;
    for (const s of CHAIN_SIDES) {
      const o = r[s] || {};
      const cells = row.cells[s];
      for (const f of CHAIN_FIELDS) {
        const cell = cells[f];
        const v = f === 'chg' ? o.change : o[f];
        const text = fieldText[f](v);
        if (cell.shown.text !== text) {
          const prev = cell.shown.value;
          cell.shown.text = text;
          cell.shown.value = v;
          cell.v.textContent = text;
          if (f === 'ltp' && !relabel && isNum(prev) && isNum(v)) {
            cell.td.classList.remove('fu', 'fd', 'fn');
            cell.td.classList.add(v > prev ? 'fu' : v < prev ? 'fd' : 'fn');
            cell.flashUntil = now + FLASH_MS;
            ch.flashing.add(cell);
          }
          if (f === 'chg' || f === 'oiChange') {
            const sign = signClass(v);
            if (cell.shown.sign !== sign) {
              cell.shown.sign = sign;
              cell.td.classList.remove('up', 'down', 'flat');
              cell.td.classList.add(sign);
            }
          }
        }
        if (cell.bar) {
          const frac = f === 'oi' ? (isNum(v) && maxOi > 0 ? v / maxOi : 0) : isNum(v) && maxChg > 0 ? Math.abs(v) / maxChg : 0;
          const t = `scaleX(${frac.toFixed(3)})`;
          if (cell.shown.bar !== t) {
            cell.shown.bar = t;
            cell.bar.style.transform = t;
          }
        }
      }
    }
  });
  placeSpot(spot, spotAfter);
  if (ch.flashing.size) requestChainFrame();
}

/** The spot line on the boundary between the two strikes it lies between. */
function placeSpot(spot, after) {
  const shownKey = `${spot}:${after}:${ch.rows.length}`;
  if (spot === null || !ch.rows.length) {
    chEl.spot.hidden = true;
    return;
  }
  chEl.spot.hidden = false;
  const label = fmtPrice(spot, 2);
  if (chEl.spotLabel.textContent !== label) chEl.spotLabel.textContent = label;
  // Read the layout (no write in between): the rows are of fixed height.
  const wrapTop = chEl.wrap.getBoundingClientRect().top;
  const first = ch.rows[0].tr.getBoundingClientRect();
  const y = after < 0 ? first.top - wrapTop : ch.rows[after].tr.getBoundingClientRect().bottom - wrapTop;
  const t = `translateY(${Math.round(y)}px)`;
  if (chEl.spot.dataset.pos !== shownKey || chEl.spot.style.transform !== t) {
    chEl.spot.dataset.pos = shownKey;
    chEl.spot.dataset.after = String(after);
    chEl.spot.style.transform = t;
  }
}

for (const b of chEl.tabs) {
  b.addEventListener('click', () => showView(b.dataset.view));
  b.addEventListener('keydown', (e) => {
    // A tablist's arrows, Home and End (the selected tab is the one in the tab order).
    const i = chEl.tabs.indexOf(b);
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % chEl.tabs.length;
    else if (e.key === 'ArrowLeft') j = (i + chEl.tabs.length - 1) % chEl.tabs.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = chEl.tabs.length - 1;
    if (j < 0) return;
    e.preventDefault();
    showView(chEl.tabs[j].dataset.view, true);
  });
}
chEl.underlying.addEventListener('change', () => {
  ch.underlying = chEl.underlying.value;
  fillExpiries();
  subscribeChain();
});
chEl.expiry.addEventListener('change', () => {
  ch.expiry = chEl.expiry.value;
  const own = (ch.list || []).find((c) => c.underlying === ch.underlying && c.expiry === ch.expiry);
  if (own && own.strikes > 0) ch.strikes = own.strikes;
  subscribeChain();
});
window.addEventListener('hashchange', () => showView(location.hash === '#chains' ? 'chain' : 'watch'));
window.addEventListener('resize', () => {
  if (ch.data && ch.view === 'chain') {
    ch.dirty = true;
    requestChainFrame();
  }
});

// ---------------------------------------------------------------- start

// Read by the browser test (and handy from the console).
window.dhanRelay = {
  stats() {
    const n = Math.min(perf.renderCount, perf.renderMs.length);
    const times = Array.from(perf.renderMs.subarray(0, n)).sort((a, b) => a - b);
    const q = (p) => (n ? times[Math.min(n - 1, Math.floor(p * n))] : 0);
    let priced = 0;
    let drawn = 0;
    for (const row of state.rows.values()) {
      if (isNum(row.s.ltp)) priced++;
      if (row.shown.ltp !== undefined) drawn++;
    }
    const series = chart.series;
    return {
      /** The detail chart's points: how many, the first price and time (ms). */
      chart: series && series.p.length ? { points: series.p.length, first: series.p[0], firstT: series.t[0] } : { points: 0 },
      received: perf.received,
      frames: perf.frames,
      rows: state.rows.size,
      /** Rows with a price received. */
      priced,
      /** Rows whose price was written to the page at least once. */
      drawn,
      renderMs: { p50: q(0.5), p95: q(0.95), p99: q(0.99), max: n ? times[n - 1] : 0 },
    };
  },
};

/**
 * Access control: when the relay asks for a key (HTTP 401), a dialog takes
 * one, `POST api/session` exchanges it for an HttpOnly session cookie (sent
 * with every later request and the WebSocket upgrade), and the key itself is
 * forgotten. Resolves once the relay lets this page in.
 */
async function ensureAccess() {
  let info;
  try {
    const r = await fetch('api/session', { cache: 'no-store' });
    info = await r.json();
  } catch {
    return; // the relay is down: the connection loop reports it
  }
  if (!info.auth || info.authenticated) return;
  await signIn();
}

let signingIn = null;

function signIn() {
  if (signingIn) return signingIn;
  const dlg = $('login');
  const form = $('login-form');
  const input = $('login-key');
  const msg = $('login-msg');
  signingIn = new Promise((resolve) => {
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      msg.hidden = true;
      let r;
      try {
        r = await fetch('api/session', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ key: input.value.trim() }),
          cache: 'no-store',
        });
      } catch {
        msg.textContent = 'The relay did not answer; try again.';
        msg.hidden = false;
        return;
      }
      if (r.ok) {
        input.value = '';
        dlg.close();
        signingIn = null;
        resolve();
        return;
      }
      let why = `HTTP ${r.status}`;
      try {
        why = (await r.json()).error || why;
      } catch {
        // keep the status
      }
      if (r.status === 429) why += ` (retry in ${r.headers.get('Retry-After') || 'a minute'} s)`;
      msg.textContent = why;
      msg.hidden = false;
      input.select();
    };
    dlg.addEventListener('cancel', (ev) => ev.preventDefault());
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
  return signingIn;
}

/** A 401 from a later request (the session expired or its key was revoked). */
async function reauthenticate() {
  await signIn();
  location.reload();
}

(async function start() {
  await ensureAccess();
  let mode = 'quote';
  let theme = 'auto';
  try {
    mode = localStorage.getItem(STORE_MODE) || 'quote';
    theme = localStorage.getItem(STORE_THEME) || 'auto';
  } catch {
    // ignore
  }
  setMode(mode, false);
  applyTheme(THEMES.includes(theme) ? theme : 'auto');
  ensureLoaded();
  if (location.hash === '#chains') showView('chain');
  connect();
})();
