/**
 * The training report: one self-contained HTML page (no script, no external resource; charts are
 * inline SVG, pictures are PNG data URIs) that opens from disk in any browser. Browser-safe: the
 * Node part that reads a run folder and renders the pictures is report-node.ts.
 *
 * Contents: the run's configuration; charts over iterations of the loss (raw and smoothed), the
 * learning rate, the weight decay, the teacher momentum and temperature, the teacher's output
 * entropy; the evaluations logged during training (k-NN top-1 / top-5 and any other figure), with
 * the last one set against the evaluation at iteration 0 (the model at its initialisation);
 * and a grid with, for a few fixed images, the model input, each head's last-layer CLS attention
 * over the image and the PCA of the patch features.
 *
 * Input: the records of metrics.jsonl ({type: 'step', iteration, loss, lr, ...} and {type: 'eval',
 * iteration, knn_top1, ...}), parsed by {@link parseMetrics}.
 */
import { encodePng, type RgbImage } from '../models/io/image.js';
import { ema } from './plot.js';

/** One training step of metrics.jsonl. */
export interface StepRecord {
  iteration: number;
  epoch?: number;
  loss: number;
  lr?: number;
  wd?: number;
  momentum?: number;
  teacher_temp?: number;
  teacher_entropy?: number;
  teacher_marginal_entropy?: number;
  images_per_s?: number;
}

/** One evaluation of metrics.jsonl: its iteration and named figures. */
export interface EvalRecord {
  iteration: number;
  [metric: string]: number;
}

/** The parsed metrics of a run; lines that are not JSON objects are counted, not fatal. */
export interface Metrics {
  steps: StepRecord[];
  evals: EvalRecord[];
  badLines: number;
}

/** Parses metrics.jsonl text (one JSON object per line). */
export function parseMetrics(text: string): Metrics {
  const steps: StepRecord[] = [];
  const evals: EvalRecord[] = [];
  let badLines = 0;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      badLines++;
      continue;
    }
    if (typeof o !== 'object' || o === null || typeof o.iteration !== 'number') {
      badLines++;
      continue;
    }
    if (o.type === 'step' && typeof o.loss === 'number') steps.push(o as unknown as StepRecord);
    else if (o.type === 'eval') {
      const rec: EvalRecord = { iteration: o.iteration };
      for (const [k, v] of Object.entries(o)) if (k !== 'type' && typeof v === 'number') rec[k] = v;
      evals.push(rec);
    } else badLines++;
  }
  return { steps, evals, badLines };
}

// -------------------------------------------------------------------------------------------------
// SVG charts

/** One line of a chart. */
export interface ChartSeries {
  name: string;
  x: readonly number[];
  y: readonly number[];
  color: string;
  /** Draw a dot at every point (sparse series such as evaluations). */
  markers?: boolean;
}

/** Options of {@link lineChartSvg}. */
export interface ChartOptions {
  title: string;
  xLabel?: string;
  width?: number;
  height?: number;
  /** A y range to show at least (widened to include every point; default: the data's range). */
  yRange?: [number, number];
}

const escapeHtml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Up to ~5 round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  // k·step rounded to 12 digits: no accumulated error (0.6, not 0.6000000000000001).
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(k === 0 ? 0 : Number((k * step).toPrecision(12)));
  return ticks;
}

/** A short label for a tick value. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e5) return String(Number(v.toPrecision(4)));
  return v.toExponential(1).replace('e+', 'e');
}

/**
 * A line chart as an inline SVG element: axes with round ticks, one polyline per series (non-finite
 * points break the line), a legend. Returns '' when no series has a finite point.
 */
export function lineChartSvg(series: readonly ChartSeries[], opts: ChartOptions): string {
  const W = opts.width ?? 460;
  const H = opts.height ?? 250;
  const L = 62;
  const R = 14;
  const T = 30;
  const B = 40;
  let xmin = Infinity;
  let xmax = -Infinity;
  let ymin = Infinity;
  let ymax = -Infinity;
  for (const s of series) {
    for (let i = 0; i < s.y.length; i++) {
      if (!Number.isFinite(s.y[i]) || !Number.isFinite(s.x[i])) continue;
      xmin = Math.min(xmin, s.x[i]);
      xmax = Math.max(xmax, s.x[i]);
      ymin = Math.min(ymin, s.y[i]);
      ymax = Math.max(ymax, s.y[i]);
    }
  }
  if (!Number.isFinite(ymin)) return '';
  if (opts.yRange) [ymin, ymax] = [Math.min(ymin, opts.yRange[0]), Math.max(ymax, opts.yRange[1])];
  if (ymax === ymin) {
    const pad = Math.abs(ymin) * 0.05 || 1;
    ymin -= pad;
    ymax += pad;
  }
  if (xmax === xmin) {
    xmin -= 1;
    xmax += 1;
  }
  const sx = (x: number) => L + ((x - xmin) / (xmax - xmin)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - ymin) / (ymax - ymin)) * (H - T - B);
  const f = (v: number) => v.toFixed(1);
  const parts: string[] = [];
  parts.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`);
  parts.push(`<text x="${L}" y="18" class="title">${escapeHtml(opts.title)}</text>`);
  for (const t of niceTicks(ymin, ymax)) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${f(sy(t))}" y2="${f(sy(t))}" class="grid"/>`);
    parts.push(`<text x="${L - 6}" y="${f(sy(t) + 4)}" text-anchor="end">${formatTick(t)}</text>`);
  }
  for (const t of niceTicks(xmin, xmax)) {
    parts.push(`<line x1="${f(sx(t))}" x2="${f(sx(t))}" y1="${T}" y2="${H - B}" class="grid"/>`);
    parts.push(`<text x="${f(sx(t))}" y="${H - B + 16}" text-anchor="middle">${formatTick(t)}</text>`);
  }
  parts.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" class="axis"/><line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" class="axis"/>`);
  if (opts.xLabel) parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${escapeHtml(opts.xLabel)}</text>`);
  series.forEach((s, k) => {
    let d = '';
    let pen = false;
    const dots: string[] = [];
    for (let i = 0; i < s.y.length; i++) {
      if (!Number.isFinite(s.y[i]) || !Number.isFinite(s.x[i])) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${f(sx(s.x[i]))} ${f(sy(s.y[i]))}`;
      pen = true;
      if (s.markers) dots.push(`<circle cx="${f(sx(s.x[i]))}" cy="${f(sy(s.y[i]))}" r="3" fill="${s.color}"/>`);
    }
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"/>`, ...dots);
    const lx = W - R - 150;
    const ly = T + 4 + 15 * k;
    parts.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="3"/><text x="${lx + 24}" y="${ly + 4}">${escapeHtml(s.name)}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeHtml(opts.title)}">${parts.join('')}</svg>`;
}


// -------------------------------------------------------------------------------------------------
// Pictures and the page

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 of bytes (no Node Buffer, no btoa: works everywhere). */
export function base64(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i < bytes.length) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=') + '=';
  }
  return out;
}

/** An RGB image as a PNG data URI. */
export function pngDataUri(img: RgbImage): string {
  return `data:image/png;base64,${base64(encodePng(img.width, img.height, img.data, 3))}`;
}

/** One row of the picture grid. */
export interface ReportPictureRow {
  /** A caption (file name, class). */
  label: string;
  input: RgbImage;
  /** Per head: attention over the image. */
  attention: RgbImage[];
  pca: RgbImage;
}

/** What {@link renderReport} draws. */
export interface ReportInput {
  title: string;
  /** Lines under the title (data, output folder, ...). */
  subtitle?: string[];
  /** Shown as a table. */
  config?: Record<string, unknown>;
  metrics: Metrics;
  /** Iterations per epoch, to mark epochs in the text (optional). */
  pictures?: ReportPictureRow[];
  /** How the pictures were made (a sentence). */
  picturesNote?: string;
  /** When the report was written (ISO string; omitted when absent). */
  generated?: string;
}

function column(steps: readonly StepRecord[], key: keyof StepRecord): number[] {
  return steps.map((s) => (typeof s[key] === 'number' ? (s[key] as number) : NaN));
}

const has = (ys: readonly number[]) => ys.some(Number.isFinite);

/** The charts of the run (SVG strings; empty charts left out). */
export function reportCharts(m: Metrics): string[] {
  const it = column(m.steps, 'iteration');
  const loss = column(m.steps, 'loss');
  const charts: string[] = [];
  const add = (svg: string) => svg && charts.push(svg);
  const x = 'iteration';
  add(lineChartSvg([{ name: 'loss', x: it, y: loss, color: '#a9c6ea' }, { name: 'smoothed', x: it, y: ema(loss, 0.05), color: '#1f5fb4' }], { title: 'DINO loss', xLabel: x }));
  const evalKeys = [...new Set(m.evals.flatMap((e) => Object.keys(e).filter((k) => k !== 'iteration')))].sort();
  if (evalKeys.length) {
    const colors = ['#d62728', '#ff9f1c', '#2ca02c', '#9467bd', '#8c564b', '#17becf'];
    add(
      lineChartSvg(
        evalKeys.map((k, i) => ({ name: k, x: m.evals.map((e) => e.iteration), y: m.evals.map((e) => e[k] ?? NaN), color: colors[i % colors.length], markers: true })),
        // Accuracies in % are drawn on 0..100 so progress reads at its true scale.
        { title: 'Evaluation during training (%)', xLabel: x, yRange: m.evals.every((e) => evalKeys.every((k) => e[k] === undefined || (e[k] >= 0 && e[k] <= 100))) ? [0, 100] : undefined },
      ),
    );
  }
  const simple: [keyof StepRecord, string, string][] = [
    ['lr', 'Learning rate', '#2ca02c'],
    ['momentum', 'Teacher momentum', '#9467bd'],
    ['teacher_temp', 'Teacher temperature', '#d62728'],
    ['wd', 'Weight decay', '#8c564b'],
  ];
  for (const [key, title, color] of simple) {
    const y = column(m.steps, key);
    if (has(y)) add(lineChartSvg([{ name: String(key), x: it, y, color }], { title, xLabel: x }));
  }
  // Per-image and batch-marginal teacher entropy on one chart: together they tell uniform collapse
  // (both near ln K) from one-prototype collapse (both near 0).
  const entropies = (
    [
      ['teacher_entropy', 'per image', '#ff7f0e'],
      ['teacher_marginal_entropy', 'batch marginal', '#1f77b4'],
    ] as const
  )
    .map(([key, name, color]) => ({ name, x: it, y: column(m.steps, key), color }))
    .filter((s) => has(s.y));
  if (entropies.length) add(lineChartSvg(entropies, { title: 'Teacher output entropy (nats)', xLabel: x }));
  return charts;
}

/** One figure of the last evaluation against the same figure at initialisation. */
export interface InitComparison {
  metric: string;
  init: number;
  trained: number;
  /** Iteration of the trained figure. */
  iteration: number;
}

/**
 * The figures of the last evaluation after training set against the evaluation at iteration 0 (the
 * model as initialised, before any step), for every metric both have; empty when either is missing.
 */
export function compareToInit(evals: readonly EvalRecord[]): InitComparison[] {
  const init = evals.find((e) => e.iteration === 0);
  const last = evals.filter((e) => e.iteration > 0).at(-1);
  if (!init || !last) return [];
  return Object.keys(last)
    .filter((k) => k !== 'iteration' && init[k] !== undefined)
    .sort()
    .map((metric) => ({ metric, init: init[metric]!, trained: last[metric]!, iteration: last.iteration }));
}

function comparisonTable(rows: readonly InitComparison[]): string {
  if (!rows.length) return '';
  const head = `<tr><th>metric</th><th>at initialisation</th><th>trained (iteration ${rows[0]!.iteration})</th><th>difference</th></tr>`;
  const body = rows.map((r) => {
    const d = r.trained - r.init;
    return `<tr><th>${escapeHtml(r.metric)}</th><td>${formatTick(r.init)}</td><td>${formatTick(r.trained)}</td><td>${d >= 0 ? '+' : ''}${formatTick(d)}</td></tr>`;
  });
  return `<p>Did it learn? The teacher after training against the same architecture at its initialisation (same seed):</p><table class="compare">${head}${body.join('')}</table>`;
}

function evalTable(evals: readonly EvalRecord[]): string {
  if (!evals.length) return '<p class="note">No evaluation was run during training (use <code>--eval-every N</code>).</p>';
  const keys = [...new Set(evals.flatMap((e) => Object.keys(e).filter((k) => k !== 'iteration')))].sort();
  const head = `<tr><th>iteration</th>${keys.map((k) => `<th>${escapeHtml(k)}</th>`).join('')}</tr>`;
  const rows = evals.map((e) => `<tr><td>${e.iteration}</td>${keys.map((k) => `<td>${e[k] === undefined ? '' : formatTick(e[k])}</td>`).join('')}</tr>`);
  return `<table>${head}${rows.join('')}</table>`;
}

function configTable(config: Record<string, unknown>): string {
  const rows = Object.entries(config).map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof v === 'string' ? v : JSON.stringify(v))}</td></tr>`);
  return `<table class="config">${rows.join('')}</table>`;
}

function pictureGrid(rows: readonly ReportPictureRow[]): string {
  const heads = Math.max(...rows.map((r) => r.attention.length));
  const head = `<tr><th></th><th>input</th>${Array.from({ length: heads }, (_, k) => `<th>head ${k}</th>`).join('')}<th>PCA</th></tr>`;
  const img = (im: RgbImage, alt: string) => `<td><img src="${pngDataUri(im)}" width="${Math.max(96, im.width)}" height="${Math.max(96, im.height)}" alt="${escapeHtml(alt)}"></td>`;
  const body = rows.map(
    (r) => `<tr><th>${escapeHtml(r.label)}</th>${img(r.input, `${r.label} input`)}${r.attention.map((a, k) => img(a, `${r.label} head ${k}`)).join('')}${img(r.pca, `${r.label} PCA`)}</tr>`,
  );
  return `<table class="pictures">${head}${body.join('')}</table>`;
}

const STYLE = `body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0}.charts{display:flex;flex-wrap:wrap;gap:12px}
svg{border:1px solid #e3e3e3;font:11px system-ui,sans-serif;fill:#444}svg .title{font-size:13px;font-weight:600;fill:#222}
svg .grid{stroke:#eee}svg .axis{stroke:#777}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle}.config th{font-weight:500;color:#555}
.pictures td{padding:2px}.pictures img{image-rendering:pixelated;display:block}.note{color:#666}`;

/** The report page (see the file header). */
export function renderReport(r: ReportInput): string {
  const m = r.metrics;
  const last = m.steps[m.steps.length - 1];
  const summary = last
    ? `${m.steps.length} logged steps, last iteration ${last.iteration}, last loss ${formatTick(last.loss)}${m.evals.length ? `; ${m.evals.length} evaluations` : ''}`
    : 'no training steps logged';
  const sections = [
    `<h1>${escapeHtml(r.title)}</h1>`,
    ...(r.subtitle ?? []).map((s) => `<p class="sub">${escapeHtml(s)}</p>`),
    `<p class="sub">${escapeHtml(summary)}${r.generated ? ` · written ${escapeHtml(r.generated)}` : ''}</p>`,
    '<h2>Training curves</h2>',
    `<div class="charts">${reportCharts(m).join('')}</div>`,
    '<h2>Evaluation during training</h2>',
    comparisonTable(compareToInit(m.evals)),
    evalTable(m.evals),
  ];
  if (r.pictures?.length) {
    sections.push('<h2>Attention and patch features</h2>');
    if (r.picturesNote) sections.push(`<p class="note">${escapeHtml(r.picturesNote)}</p>`);
    sections.push(pictureGrid(r.pictures));
  }
  if (r.config) sections.push('<h2>Configuration</h2>', configTable(r.config));
  if (m.badLines) sections.push(`<p class="note">${m.badLines} lines of metrics.jsonl could not be read.</p>`);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(r.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${STYLE}</style></head>
<body>
${sections.join('\n')}
</body></html>
`;
}
