// The detail panel's intraday price line, drawn on a canvas.
//
// Draws a time series (seconds, price) with the previous close as a dashed
// reference line, a fill under the line, the last price as a dot, and the
// range and time span as labels. Colours come from CSS custom properties so
// light and dark themes need no code here; call `themeChanged()` when the
// theme switches. Drawing is cheap (one path of at most a few thousand
// points) and only happens when the caller asks, once per animation frame.

/** The time axis spans at least this much, so a few first points are not a smear. */
const MIN_SPAN_S = 10;

export class PriceChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.width = 0;
    this.height = 0;
    this.series = null;
    this.ref = NaN;
    this.format = (p) => p.toFixed(2);
    this.colors = null;
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(canvas);
  }

  themeChanged() {
    this.colors = null;
    this.draw();
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr));
    const h = Math.max(1, Math.round(r.height * dpr));
    if (w !== this.canvas.width || h !== this.canvas.height) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.width = r.width;
    this.height = r.height;
    this.draw();
  }

  /**
   * @param {{t: number[], p: number[]}} series times (ms) and prices
   * @param {number} ref previous close, or NaN
   * @param {(p: number) => string} format price labels
   */
  set(series, ref, format) {
    this.series = series;
    this.ref = ref;
    this.format = format;
  }

  readColors() {
    const cs = getComputedStyle(this.canvas);
    const v = (name) => cs.getPropertyValue(name).trim();
    this.colors = {
      up: v('--up'),
      down: v('--down'),
      grid: v('--border'),
      text: v('--muted'),
      ref: v('--muted'),
      font: `11px ${cs.fontFamily}`,
    };
  }

  draw() {
    const { ctx, width: w, height: h } = this;
    if (!w || !h) return;
    if (!this.colors) this.readColors();
    const c = this.colors;
    const dpr = this.canvas.width / w;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = c.font;
    const s = this.series;
    const n = s ? s.p.length : 0;
    if (n === 0) {
      ctx.fillStyle = c.text;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText('waiting for ticks…', w / 2, h / 2);
      return;
    }
    const pad = { l: 6, r: 78, t: 10, b: 20 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const p = s.p[i];
      if (p < lo) lo = p;
      if (p > hi) hi = p;
    }
    const ref = this.ref;
    // Show the previous close only when it is near the day's prices: a
    // far-away reference would flatten the line into nothing.
    const span0 = Math.max(hi - lo, Math.abs(hi) * 0.0005, 0.01);
    const refShown = Number.isFinite(ref) && ref > lo - span0 && ref < hi + span0;
    if (refShown) {
      lo = Math.min(lo, ref);
      hi = Math.max(hi, ref);
    }
    const span = Math.max(hi - lo, Math.abs(hi) * 0.0005, 0.01);
    lo -= span * 0.08;
    hi += span * 0.08;
    const t1 = s.t[n - 1];
    const t0 = Math.min(s.t[0], t1 - MIN_SPAN_S * 1000);
    const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * pw;
    const y = (p) => pad.t + (1 - (p - lo) / (hi - lo)) * ph;

    const last = s.p[n - 1];
    const ly = y(last);

    // Grid: three horizontal lines with prices (a label the last price's
    // box would cover is left out).
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = c.text;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    for (let i = 0; i < 3; i++) {
      const p = lo + ((hi - lo) * (i + 0.5)) / 3;
      const yy = Math.round(y(p)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(pad.l + pw, yy);
      ctx.stroke();
      if (Math.abs(yy - ly) > 14) ctx.fillText(this.format(p), pad.l + pw + 6, yy);
    }

    const up = Number.isFinite(ref) ? last >= ref : last >= s.p[0];
    const color = up ? c.up : c.down;

    // Fill under the line, then the line.
    ctx.beginPath();
    ctx.moveTo(x(s.t[0]), y(s.p[0]));
    for (let i = 1; i < n; i++) ctx.lineTo(x(s.t[i]), y(s.p[i]));
    const lineEnd = x(t1);
    ctx.lineTo(lineEnd, pad.t + ph);
    ctx.lineTo(x(s.t[0]), pad.t + ph);
    ctx.closePath();
    const g = ctx.createLinearGradient(0, pad.t, 0, pad.t + ph);
    g.addColorStop(0, withAlpha(color, 0.28));
    g.addColorStop(1, withAlpha(color, 0.02));
    ctx.fillStyle = g;
    ctx.fill();

    ctx.beginPath();
    ctx.moveTo(x(s.t[0]), y(s.p[0]));
    for (let i = 1; i < n; i++) ctx.lineTo(x(s.t[i]), y(s.p[i]));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = 'round';
    ctx.stroke();

    if (refShown) {
      const yy = Math.round(y(ref)) + 0.5;
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = c.ref;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(pad.l + pw, yy);
      ctx.stroke();
      ctx.setLineDash([]);
    } else if (Number.isFinite(ref)) {
      // Off the chart: say where it is.
      ctx.fillStyle = c.text;
      ctx.textAlign = 'left';
      ctx.textBaseline = ref > hi ? 'top' : 'bottom';
      const arrow = ref > hi ? '↑' : '↓';
      ctx.fillText(`${arrow} prev close ${this.format(ref)}`, pad.l + 2, ref > hi ? pad.t : pad.t + ph);
    }

    // Last price: dot and a label box on the axis.
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(lineEnd, ly, 3, 0, Math.PI * 2);
    ctx.fill();
    const label = this.format(last);
    const lw = ctx.measureText(label).width + 8;
    ctx.fillRect(pad.l + pw + 2, ly - 8, lw, 16);
    ctx.fillStyle = '#fff';
    ctx.fillText(label, pad.l + pw + 6, ly);

    // Time span.
    ctx.fillStyle = c.text;
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(clock(t0), pad.l, h - 5);
    ctx.textAlign = 'right';
    ctx.fillText(clock(t1), pad.l + pw, h - 5);
  }
}

function clock(ms) {
  const d = new Date(ms);
  const two = (v) => String(v).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** `#rrggbb` or `rgb(…)` with an alpha. */
function withAlpha(color, a) {
  if (color.startsWith('#') && color.length === 7) {
    const n = parseInt(color.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }
  const m = color.match(/rgba?\(([^)]+)\)/);
  if (m) {
    const [r, g, b] = m[1].split(',').map((v) => v.trim());
    return `rgba(${r}, ${g}, ${b}, ${a})`;
  }
  return color;
}
