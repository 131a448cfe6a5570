/**
 * Canvas drawing of the demo, dependency-free: the loss chart (raw loss per step, light, and its
 * exponential moving average, dark), the attention grid (per fixed image: the image, the mean
 * over heads, then each head; viridis heat maps of the last layer's CLS attention, min-max
 * normalised per map as DINO's visualize_attention.py saves them), and the backbone grid (per
 * image: the input, the PCA of its patch features as RGB, each head's attention over the input).
 */
import { heatmapRgb } from '../eval/attention-maps.js';
import { ema } from '../train/plot.js';
import type { AttentionMap, BackboneVisual, RgbImage } from './protocol.js';


/** Draws the loss history (`losses[i]` = loss of iteration i; holes allowed) on `canvas`. */
export function drawLossChart(canvas: HTMLCanvasElement, losses: readonly number[], total: number): void {
  const ctx = canvas.getContext('2d')!;
  const dpr = globalThis.devicePixelRatio || 1;
  const W = canvas.clientWidth || canvas.width;
  const H = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(W * dpr)) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, W, H);
  const pad = { l: 44, r: 12, t: 10, b: 24 };
  const pw = W - pad.l - pad.r;
  const ph = H - pad.t - pad.b;
  const finite = losses.filter((v) => Number.isFinite(v));
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#666';
  if (!finite.length) {
    ctx.fillText('the loss appears here once training runs', pad.l + 8, pad.t + ph / 2);
    return;
  }
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (hi - lo < 1e-6) {
    lo -= 0.5;
    hi += 0.5;
  }
  const span = hi - lo;
  lo -= 0.05 * span;
  hi += 0.05 * span;
  const n = Math.max(total, losses.length, 2);
  const x = (i: number) => pad.l + (i / (n - 1)) * pw;
  const y = (v: number) => pad.t + (1 - (v - lo) / (hi - lo)) * ph;
  // Axes and labels.
  ctx.strokeStyle = '#ccc';
  ctx.lineWidth = 1;
  ctx.strokeRect(pad.l, pad.t, pw, ph);
  ctx.textAlign = 'right';
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    ctx.fillText(v.toFixed(2), pad.l - 4, y(v) + 4);
  }
  ctx.textAlign = 'center';
  for (let k = 0; k <= 4; k++) {
    const i = Math.round(((n - 1) * k) / 4);
    ctx.fillText(String(i), x(i), H - 6);
  }
  // Raw losses.
  ctx.fillStyle = '#9cc0e8';
  losses.forEach((v, i) => {
    if (Number.isFinite(v)) ctx.fillRect(x(i) - 1, y(v) - 1, 2, 2);
  });
  // Moving average.
  const sm = ema(losses as number[], 0.1);
  ctx.strokeStyle = '#1e5ab4';
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  sm.forEach((v, i) => {
    if (!Number.isFinite(v) || !Number.isFinite(losses[i])) return;
    if (started) ctx.lineTo(x(i), y(v));
    else ctx.moveTo(x(i), y(v));
    started = true;
  });
  ctx.stroke();
}

/** RGB bytes → a canvas of the same size (for scaled drawing). */
function rgbCanvas(rgb: Uint8Array, w: number, h: number): HTMLCanvasElement {
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const img = new ImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    img.data[i * 4] = rgb[i * 3];
    img.data[i * 4 + 1] = rgb[i * 3 + 1];
    img.data[i * 4 + 2] = rgb[i * 3 + 2];
    img.data[i * 4 + 3] = 255;
  }
  c.getContext('2d')!.putImageData(img, 0, 0);
  return c;
}

/** Most heads drawn per image (the mean over all heads is always drawn). */
export const MAX_HEADS_DRAWN = 6;

/** Draws the attention grid (one row per image) on `canvas`, resizing it to fit; `cell` px per map. */
export function drawAttention(canvas: HTMLCanvasElement, maps: readonly AttentionMap[], cell = 96): void {
  const heads = Math.min(maps[0]?.heads ?? 0, MAX_HEADS_DRAWN);
  const cols = 2 + heads;
  const gap = 4;
  const top = 16;
  canvas.width = cols * (cell + gap);
  canvas.height = top + maps.length * (cell + gap);
  const ctx = canvas.getContext('2d')!;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#444';
  ctx.font = '11px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText('image', cell / 2, 12);
  ctx.fillText('mean of heads', cell + gap + cell / 2, 12);
  for (let h = 0; h < heads; h++) ctx.fillText(`head ${h}`, (2 + h) * (cell + gap) + cell / 2, 12);
  ctx.imageSmoothingEnabled = false;
  maps.forEach((m, r) => {
    const y0 = top + r * (cell + gap);
    const n = m.h * m.w;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(rgbCanvas(m.image.data, m.image.width, m.image.height), 0, y0, cell, cell);
    ctx.imageSmoothingEnabled = false;
    const mean = new Float32Array(n);
    for (let h = 0; h < m.heads; h++) for (let i = 0; i < n; i++) mean[i] += m.attention[h * n + i] / m.heads;
    ctx.drawImage(rgbCanvas(heatmapRgb(mean, m.h, m.w), m.w, m.h), cell + gap, y0, cell, cell);
    for (let h = 0; h < heads; h++) {
      const a = m.attention.subarray(h * n, (h + 1) * n);
      ctx.drawImage(rgbCanvas(heatmapRgb(a, m.h, m.w), m.w, m.h), (2 + h) * (cell + gap), y0, cell, cell);
    }
  });
}

/** Most heads drawn per image in the backbone grid (ViT-g has 24). */
export const MAX_BACKBONE_HEADS = 16;

/**
 * Draws the backbone grid (one row per image: input, PCA, head 0, head 1, ...) on `canvas`,
 * resizing it to fit; `cell` px per picture. The pictures are drawn without smoothing, so the
 * patch grid of the PCA and the attention stays visible.
 */
export function drawBackboneVisuals(canvas: HTMLCanvasElement, items: readonly BackboneVisual[], cell = 112): void {
  const heads = Math.min(items[0]?.attention.length ?? 0, MAX_BACKBONE_HEADS);
  const cols = 2 + heads;
  const gap = 4;
  const top = 16;
  canvas.width = cols * (cell + gap);
  canvas.height = top + items.length * (cell + gap);
  const ctx = canvas.getContext('2d')!;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#444';
  ctx.font = '11px system-ui, sans-serif';
  ctx.textAlign = 'center';
  const labels = ['image', 'PCA (RGB)', ...Array.from({ length: heads }, (_, h) => `head ${h}`)];
  labels.forEach((l, c) => ctx.fillText(l, c * (cell + gap) + cell / 2, 12));
  items.forEach((it, r) => {
    const y0 = top + r * (cell + gap);
    const pictures = [it.input, it.pca, ...it.attention.slice(0, heads)];
    pictures.forEach((im, c) => {
      ctx.imageSmoothingEnabled = c === 0;
      ctx.drawImage(rgbCanvas(im.data, im.width, im.height), c * (cell + gap), y0, cell, cell);
    });
  });
}

/**
 * Decodes an image file with createImageBitmap and returns its RGB bytes, scaled down (never up)
 * so that its longer side is at most `maxSide`.
 */
export async function decodeImageFile(file: Blob, maxSide = 256): Promise<RgbImage> {
  const bmp = await createImageBitmap(file);
  try {
    const s = Math.min(1, maxSide / Math.max(bmp.width, bmp.height));
    const w = Math.max(1, Math.round(bmp.width * s));
    const h = Math.max(1, Math.round(bmp.height * s));
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const ctx = c.getContext('2d', { willReadFrequently: true })!;
    ctx.drawImage(bmp, 0, 0, w, h);
    const rgba = ctx.getImageData(0, 0, w, h).data;
    const rgb = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) {
      rgb[i * 3] = rgba[i * 4];
      rgb[i * 3 + 1] = rgba[i * 4 + 1];
      rgb[i * 3 + 2] = rgba[i * 4 + 2];
    }
    return { width: w, height: h, data: rgb };
  } finally {
    bmp.close();
  }
}
