/**
 * The curation report: one self-contained HTML page (no script, no external resource: charts are
 * inline SVG, thumbnails PNG data URIs) written next to summary.json. Browser-safe; run-node.ts
 * gathers the numbers and decodes the thumbnails.
 *
 * Contents: the counts of summary.json (pool, removed by each deduplication step, kept, chosen);
 * per level, the cluster-size statistics; a histogram of the level-1 cluster sizes before
 * balancing (points per cluster in the deduplicated pool) and after (points chosen per cluster),
 * on log₂ bins so sizes from 1 to millions share one axis; and, when the pool rows have image
 * paths, a grid of a few clusters' images (chosen images first).
 */

/** Summary statistics of a list of sizes. */
export interface SizeStats {
  clusters: number;
  empty: number;
  min: number;
  max: number;
  mean: number;
  median: number;
}

export function sizeStats(sizes: ArrayLike<number>): SizeStats {
  const s = Array.from(sizes).sort((a, b) => a - b);
  const n = s.length;
  const sum = s.reduce((a, b) => a + b, 0);
  return {
    clusters: n,
    empty: s.filter((v) => v === 0).length,
    min: n ? s[0] : 0,
    max: n ? s[n - 1] : 0,
    mean: n ? sum / n : 0,
    median: n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : 0,
  };
}

/** A cluster shown as thumbnails. */
export interface ReportCluster {
  level1: number;
  size: number;
  chosen: number;
  /** Thumbnail data URIs (null: unreadable) and their paths; chosen images flagged. */
  images: { uri: string | null; path: string; chosen: boolean }[];
}

export interface ReportInput {
  /** The summary.json object. */
  summary: Record<string, unknown>;
  /** Level-1 cluster sizes in the deduplicated pool (empty when there was no clustering). */
  leafSizes: ArrayLike<number>;
  /** Points chosen per level-1 cluster (null without balanced sampling). */
  leafChosen: ArrayLike<number> | null;
  clusters: ReportCluster[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Bin b holds sizes in [2^(b−1), 2^b) for b ≥ 1, bin 0 the empty clusters. */
function log2Bins(sizes: ArrayLike<number>, bins: number): number[] {
  const out = Array(bins).fill(0);
  for (let i = 0; i < sizes.length; i++) {
    const v = sizes[i];
    out[v <= 0 ? 0 : Math.min(bins - 1, Math.floor(Math.log2(v)) + 1)]++;
  }
  return out;
}

/** Grouped bar chart (SVG) of cluster counts per log₂ size bin for each series. */
export function sizeHistogramSvg(series: { name: string; color: string; sizes: ArrayLike<number> }[]): string {
  let max = 1;
  for (const s of series) for (let i = 0; i < s.sizes.length; i++) max = Math.max(max, s.sizes[i]);
  const bins = Math.floor(Math.log2(max)) + 2;
  const counts = series.map((s) => log2Bins(s.sizes, bins));
  const top = Math.max(1, ...counts.flat());
  const W = 720;
  const H = 260;
  const L = 50;
  const B = 40;
  const bw = (W - L - 10) / bins;
  const y = (c: number) => H - B - ((H - B - 20) * c) / top;
  const bars: string[] = [];
  counts.forEach((cs, si) => {
    cs.forEach((c, b) => {
      if (!c) return;
      const x = L + b * bw + (si * bw * 0.8) / series.length + bw * 0.1;
      bars.push(`<rect x="${x.toFixed(1)}" y="${y(c).toFixed(1)}" width="${((bw * 0.8) / series.length).toFixed(1)}" height="${(H - B - y(c)).toFixed(1)}" fill="${series[si].color}"><title>${esc(series[si].name)}: ${c}</title></rect>`);
    });
  });
  const labels = Array.from({ length: bins }, (_, b) => {
    const text = b === 0 ? '0' : b === 1 ? '1' : `${2 ** (b - 1)}–${2 ** b - 1}`;
    return `<text x="${(L + (b + 0.5) * bw).toFixed(1)}" y="${H - B + 14}" font-size="10" text-anchor="middle">${text}</text>`;
  });
  const legend = series.map((s, i) => `<rect x="${W - 270}" y="${4 + 15 * i}" width="10" height="10" fill="${s.color}"/><text x="${W - 256}" y="${13 + 15 * i}" font-size="11">${esc(s.name)}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">
<line x1="${L}" y1="${H - B}" x2="${W - 10}" y2="${H - B}" stroke="#444"/><line x1="${L}" y1="20" x2="${L}" y2="${H - B}" stroke="#444"/>
<text x="${L - 6}" y="${y(top) + 4}" font-size="10" text-anchor="end">${top}</text><text x="${L - 6}" y="${H - B}" font-size="10" text-anchor="end">0</text>
<text x="${(L + W) / 2}" y="${H - 6}" font-size="11" text-anchor="middle">points per level-1 cluster (log₂ bins)</text>
<text x="12" y="${(H - B) / 2}" font-size="11" transform="rotate(-90 12 ${(H - B) / 2})" text-anchor="middle">clusters</text>
${legend.join('')}${bars.join('')}${labels.join('')}
</svg>`;
}

/** The report page. */
export function renderCurateReport(r: ReportInput): string {
  const s = r.summary;
  const levels = (s.levels as { level: number; k: number; points: number; objective: number; sizes: SizeStats; flatSizes: SizeStats }[] | undefined) ?? [];
  const row = (cells: (string | number)[], th = false) => `<tr>${cells.map((c) => (th ? `<th>${esc(String(c))}</th>` : `<td>${esc(String(c))}</td>`)).join('')}</tr>`;
  const fmtNum = (v: number) => (Number.isInteger(v) ? String(v) : v.toPrecision(4));
  const levelTable = levels.length
    ? `<table>${row(['level', 'k', 'points', 'objective', 'empty', 'min', 'median', 'mean', 'max', 'max (pool points)'], true)}${levels
        .map((l) => row([l.level, l.k, l.points, l.objective.toPrecision(6), l.sizes.empty, l.sizes.min, fmtNum(l.sizes.median), fmtNum(l.sizes.mean), l.sizes.max, l.flatSizes.max]))
        .join('')}</table>`
    : '<p>No clustering in this run.</p>';
  const hist = r.leafSizes.length
    ? sizeHistogramSvg([
        { name: 'before balancing (deduplicated pool)', color: '#8aa9d6', sizes: r.leafSizes },
        ...(r.leafChosen ? [{ name: 'after balancing (chosen)', color: '#d67f4a', sizes: r.leafChosen }] : []),
      ])
    : '';
  const grids = r.clusters
    .map(
      (c) => `<h3>Level-1 cluster ${c.level1}: ${c.size} images, ${c.chosen} chosen</h3><div class="grid">${c.images
        .map((im) => `<figure class="${im.chosen ? 'chosen' : ''}">${im.uri ? `<img src="${im.uri}" alt="">` : '<div class="missing">unreadable</div>'}<figcaption>${esc(im.path.split('/').pop() ?? im.path)}</figcaption></figure>`)
        .join('')}</div>`,
    )
    .join('\n');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>webdino curate report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
pre { background: #f5f5f5; padding: 1em; overflow: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; } figure { margin: 0; width: 72px; font-size: 9px; text-align: center; }
figure img, .missing { width: 64px; height: 64px; object-fit: contain; border: 3px solid transparent; background: #eee; }
figure.chosen img { border-color: #d67f4a; } figcaption { overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
</style></head><body>
<h1>webdino curate</h1>
<h2>Counts</h2>
<pre>${esc(JSON.stringify({ pool: s.pool, dedup: s.dedup, balanced: s.balanced, retrieval: s.retrieval, selected: s.selected }, null, 2))}</pre>
<h2>Clusters per level</h2>
${levelTable}
${hist ? `<h2>Level-1 cluster sizes</h2>\n${hist}` : ''}
${grids ? `<h2>Some clusters</h2><p>Chosen images have an orange frame.</p>\n${grids}` : ''}
</body></html>
`;
}
