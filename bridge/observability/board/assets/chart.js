/**
 * The traffic chart, drawn by hand on a canvas: a few lines on one y axis over a
 * fixed 10-minute window, no zoom, no tooltips. That is about a hundred lines; a
 * charting library (uPlot is the smallest good one, ~50 KB) would be a dependency to
 * ship and serve for no feature the board uses.
 */

/** Series shown, in drawing order, with their legend text and colour (distinct in light and dark). */
export const SERIES = [
  { key: 'in_esl', label: 'in ESL (local)', color: '#7b61ff' },
  { key: 'in_multicast', label: 'in multicast', color: '#0b8bd6' },
  { key: 'in_nats', label: 'in NATS', color: '#16a085' },
  { key: 'out_multicast', label: 'out multicast', color: '#e67e22', dash: [6, 3] },
  { key: 'out_nats', label: 'out NATS', color: '#c0392b', dash: [6, 3] },
  { key: 'injected', label: 'injected', color: '#8e8e8e', dash: [2, 3] },
];

/** A round axis maximum at or above `value`: 1, 2, 5, 10, 20, 50... */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

export class TrafficChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas, windowMs) {
    this.canvas = canvas;
    this.windowMs = windowMs;
    this.t = [];
    this.values = Object.fromEntries(SERIES.map((s) => [s.key, []]));
    this.maxSamples = 600;
  }

  /** Replace everything (a fresh snapshot). */
  load(t, values) {
    this.t = [...t];
    for (const s of SERIES) this.values[s.key] = [...(values[s.key] ?? [])];
    this.draw();
  }

  push(t, values) {
    this.t.push(t);
    for (const s of SERIES) this.values[s.key].push(values[s.key] ?? 0);
    if (this.t.length > this.maxSamples) {
      this.t.shift();
      for (const s of SERIES) this.values[s.key].shift();
    }
    this.draw();
  }

  latest(key) {
    const series = this.values[key];
    return series.length ? series[series.length - 1] : 0;
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const g = canvas.getContext('2d');
    const style = getComputedStyle(canvas);
    const fg = style.color;
    g.clearRect(0, 0, width, height);
    g.font = `${11 * ratio}px system-ui, sans-serif`;
    const left = 44 * ratio;
    const bottom = height - 18 * ratio;
    const top = 6 * ratio;
    const right = width - 6 * ratio;

    let peak = 0;
    for (const s of SERIES) for (const v of this.values[s.key]) if (v > peak) peak = v;
    const max = niceMax(peak);
    const now = this.t.length ? this.t[this.t.length - 1] : Date.now();
    const x = (t) => right - ((now - t) / this.windowMs) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);

    g.globalAlpha = 0.35;
    g.strokeStyle = fg;
    g.lineWidth = ratio;
    g.fillStyle = fg;
    for (const fraction of [0, 0.5, 1]) {
      const yy = Math.round(y(max * fraction)) + 0.5;
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(right, yy);
      g.stroke();
    }
    g.globalAlpha = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (const fraction of [0, 0.5, 1]) g.fillText(String(max * fraction), left - 4 * ratio, y(max * fraction));
    g.textBaseline = 'alphabetic';
    g.textAlign = 'center';
    for (const minutes of [10, 5, 0]) {
      const label = minutes === 0 ? 'now' : `-${minutes} min`;
      g.textAlign = minutes === 10 ? 'left' : minutes === 0 ? 'right' : 'center';
      g.fillText(label, x(now - minutes * 60_000), height - 4 * ratio);
    }

    g.lineWidth = 2 * ratio;
    g.lineJoin = 'round';
    for (const s of SERIES) {
      const series = this.values[s.key];
      if (series.length === 0) continue;
      g.strokeStyle = s.color;
      g.setLineDash((s.dash ?? []).map((d) => d * ratio));
      g.beginPath();
      series.forEach((v, i) => (i === 0 ? g.moveTo(x(this.t[i]), y(v)) : g.lineTo(x(this.t[i]), y(v))));
      g.stroke();
    }
    g.setLineDash([]);
    canvas.dataset.samples = String(this.t.length);
    canvas.dataset.peak = String(peak);
  }
}
