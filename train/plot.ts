/**
 * A small line-chart rasteriser for training curves (loss, lr...), written straight into an RGB
 * buffer and encoded as PNG: no canvas, so it runs headless in Node and in workers. Labels use a
 * 3×5 pixel font for digits and a few symbols, scaled up.
 */
import { encodePng } from '../models/io/image.js';

const FONT: Record<string, string[]> = {
  '0': ['111', '101', '101', '101', '111'],
  '1': ['010', '110', '010', '010', '111'],
  '2': ['111', '001', '111', '100', '111'],
  '3': ['111', '001', '111', '001', '111'],
  '4': ['101', '101', '111', '001', '001'],
  '5': ['111', '100', '111', '001', '111'],
  '6': ['111', '100', '111', '101', '111'],
  '7': ['111', '001', '010', '010', '010'],
  '8': ['111', '101', '111', '101', '111'],
  '9': ['111', '101', '111', '001', '111'],
  '.': ['000', '000', '000', '000', '010'],
  '-': ['000', '000', '111', '000', '000'],
  e: ['000', '111', '111', '100', '111'],
  ' ': ['000', '000', '000', '000', '000'],
};

export interface Series {
  /** y values; x is the index (or `x` when given). */
  y: ArrayLike<number>;
  x?: ArrayLike<number>;
  color: [number, number, number];
}

class Canvas {
  readonly data: Uint8Array;
  constructor(
    readonly w: number,
    readonly h: number,
  ) {
    this.data = new Uint8Array(w * h * 3).fill(255);
  }
  px(x: number, y: number, c: readonly number[]): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.w || y >= this.h) return;
    const i = (y * this.w + x) * 3;
    this.data[i] = c[0];
    this.data[i + 1] = c[1];
    this.data[i + 2] = c[2];
  }
  line(x0: number, y0: number, x1: number, y1: number, c: readonly number[], thick = 1): void {
    const n = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let i = 0; i <= n; i++) {
      const x = x0 + ((x1 - x0) * i) / n;
      const y = y0 + ((y1 - y0) * i) / n;
      for (let dx = 0; dx < thick; dx++) for (let dy = 0; dy < thick; dy++) this.px(x + dx, y + dy, c);
    }
  }
  text(s: string, x: number, y: number, scale = 2, c: readonly number[] = [60, 60, 60]): void {
    for (const ch of s) {
      const g = FONT[ch] ?? FONT[' '];
      g.forEach((row, r) => [...row].forEach((bit, k) => {
        if (bit === '1') for (let a = 0; a < scale; a++) for (let b = 0; b < scale; b++) this.px(x + k * scale + a, y + r * scale + b, c);
      }));
      x += 4 * scale;
    }
  }
}

function fmtNum(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 0.01 && a < 10000) return Number(v.toPrecision(3)).toString();
  return v.toExponential(1).replace('+', '');
}

/** Renders series on shared axes; returns PNG bytes. Non-finite values are skipped. */
export function lineChartPng(series: readonly Series[], opts: { width?: number; height?: number } = {}): Uint8Array {
  const W = opts.width ?? 640;
  const H = opts.height ?? 360;
  const c = new Canvas(W, H);
  const left = 70;
  const right = W - 15;
  const top = 15;
  const bottom = H - 35;
  let xmin = Infinity;
  let xmax = -Infinity;
  let ymin = Infinity;
  let ymax = -Infinity;
  for (const s of series) {
    for (let i = 0; i < s.y.length; i++) {
      const x = s.x ? s.x[i] : i;
      const y = s.y[i];
      if (!Number.isFinite(y)) continue;
      xmin = Math.min(xmin, x);
      xmax = Math.max(xmax, x);
      ymin = Math.min(ymin, y);
      ymax = Math.max(ymax, y);
    }
  }
  if (!Number.isFinite(ymin)) {
    ymin = 0;
    ymax = 1;
    xmin = 0;
    xmax = 1;
  }
  if (ymax === ymin) ymax = ymin + 1;
  if (xmax === xmin) xmax = xmin + 1;
  const sx = (x: number) => left + ((x - xmin) / (xmax - xmin)) * (right - left);
  const sy = (y: number) => bottom - ((y - ymin) / (ymax - ymin)) * (bottom - top);
  // grid and axes
  for (let k = 0; k <= 4; k++) {
    const y = top + ((bottom - top) * k) / 4;
    c.line(left, y, right, y, [225, 225, 225]);
    c.text(fmtNum(ymax - ((ymax - ymin) * k) / 4), 4, y - 5);
    const x = left + ((right - left) * k) / 4;
    c.line(x, top, x, bottom, [235, 235, 235]);
    c.text(fmtNum(xmin + ((xmax - xmin) * k) / 4), x - 10, bottom + 10);
  }
  c.line(left, bottom, right, bottom, [80, 80, 80]);
  c.line(left, top, left, bottom, [80, 80, 80]);
  for (const s of series) {
    let prev: [number, number] | null = null;
    for (let i = 0; i < s.y.length; i++) {
      const y = s.y[i];
      if (!Number.isFinite(y)) {
        prev = null;
        continue;
      }
      const p: [number, number] = [sx(s.x ? s.x[i] : i), sy(y)];
      if (prev) c.line(prev[0], prev[1], p[0], p[1], s.color, 2);
      else c.px(p[0], p[1], s.color);
      prev = p;
    }
  }
  return encodePng(W, H, c.data, 3);
}

/**
 * Exponential moving average of a series (weight `alpha` on the newest value), for smoothed loss
 * curves: loss.png, report.html and the demo's chart. Non-finite values are skipped (the average
 * carries over them; NaN until the first finite value).
 */
export function ema(y: readonly number[], alpha = 0.1): number[] {
  const out: number[] = [];
  let m = NaN;
  for (const v of y) {
    if (Number.isFinite(v)) m = Number.isNaN(m) ? v : (1 - alpha) * m + alpha * v;
    out.push(m);
  }
  return out;
}
