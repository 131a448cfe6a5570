/**
 * Bicubic resizing as a matrix, matching PyTorch's `F.interpolate(mode='bicubic',
 * align_corners=False)` in its two kernels, so that a position-embedding grid can be resized on
 * the GPU with one matmul and gradients flow back through it (DINO interpolates pos_embed for
 * crops of other sizes during training).
 *
 * The mapping. torch derives a source scale s from either the given scale factor f (s = 1/f, even
 * when in·f is not an integer: DINO's "+0.1" offset relies on that) or, with an explicit output
 * size, s = in/out. The output length is floor(in·f) or the size.
 *
 * Plain bicubic (antialias=False): source coordinate x = s·(o + 0.5) − 0.5; cubic convolution with
 * A = −0.75 on the 4 neighbours floor(x) − 1 … floor(x) + 2, indices clamped to the edge.
 *
 * Antialiased bicubic (antialias=True, ATen's `_upsample_bicubic2d_aa`, PIL's filter): a
 * different kernel, also when up-sampling. A = −0.5; support r = 2·max(s, 1); centre c = s·(o + 0.5);
 * taps j ∈ [⌊c − r + 0.5⌋, ⌊c + r + 0.5⌋) clipped to the grid (not clamped: taps outside are
 * dropped); weight of tap j = cubic((j − c + 0.5)/max(s, 1)), then the taps of each output are
 * divided by their sum.
 *
 * Because the resize is linear and separable, out = (W_rows ⊗ W_cols) · in: one matrix.
 */

/** torch's cubic convolution kernel with parameter A, at distance x. */
function cubic(x: number, A: number): number {
  const t = Math.abs(x);
  if (t < 1) return ((A + 2) * t - (A + 3)) * t * t + 1;
  if (t < 2) return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
  return 0;
}

/** How the output of a 1-D resize is defined: by a scale factor (torch's mapping 1/f) or a size. */
export type ResizeTo = { scaleFactor: number } | { size: number };

/** Weights [out, in] of a 1-D plain bicubic resize with source scale `s` (A = −0.75, edge-clamped). */
function plainBicubic(inSize: number, outSize: number, s: number): Float64Array {
  const w = new Float64Array(outSize * inSize);
  for (let o = 0; o < outSize; o++) {
    const src = s * (o + 0.5) - 0.5;
    const i0 = Math.floor(src);
    const t = src - i0;
    for (let k = 0; k < 4; k++) {
      const idx = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      w[o * inSize + idx] += cubic(t + 1 - k, -0.75);
    }
  }
  return w;
}

/** Weights [out, in] of a 1-D antialiased bicubic resize with source scale `s` (see the header). */
function antialiasedBicubic(inSize: number, outSize: number, s: number): Float64Array {
  const support = 2 * Math.max(s, 1);
  const inv = s >= 1 ? 1 / s : 1;
  const w = new Float64Array(outSize * inSize);
  for (let o = 0; o < outSize; o++) {
    const center = s * (o + 0.5);
    // Math.trunc as C's int64 cast (the lower bound may be negative before the max).
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    let total = 0;
    for (let j = lo; j < hi; j++) total += cubic((j - center + 0.5) * inv, -0.5);
    for (let j = lo; j < hi; j++) w[o * inSize + j] = total !== 0 ? cubic((j - center + 0.5) * inv, -0.5) / total : 0;
  }
  return w;
}

/** Weights [out, in] of a 1-D bicubic resize of `inSize` samples, torch's `interpolate` semantics. */
export function bicubicWeights1dTo(inSize: number, to: ResizeTo, antialias = false): { weights: Float64Array; outSize: number } {
  const outSize = 'size' in to ? to.size : Math.floor(inSize * to.scaleFactor);
  if (!(outSize >= 1)) throw new RangeError(`bicubic resize of ${inSize} samples gives ${outSize}`);
  const s = 'size' in to ? inSize / to.size : 1 / to.scaleFactor;
  return { weights: antialias ? antialiasedBicubic(inSize, outSize, s) : plainBicubic(inSize, outSize, s), outSize };
}

/** Weights [out, in] of a 1-D plain bicubic resize by `scale` (output length floor(in · scale)). */
export function bicubicWeights1d(inSize: number, scale: number): { weights: Float64Array; outSize: number } {
  return bicubicWeights1dTo(inSize, { scaleFactor: scale });
}

/** The Kronecker product of row weights [R, r] and column weights [C, c]: [R·C, r·c], row-major grids. */
function kron(rows: Float64Array, outRows: number, inRows: number, cols: Float64Array, outCols: number, inCols: number): Float32Array {
  const nIn = inRows * inCols;
  const m = new Float32Array(outRows * outCols * nIn);
  for (let orow = 0; orow < outRows; orow++) {
    for (let ocol = 0; ocol < outCols; ocol++) {
      const row = (orow * outCols + ocol) * nIn;
      for (let irow = 0; irow < inRows; irow++) {
        const wr = rows[orow * inRows + irow];
        if (wr === 0) continue;
        for (let icol = 0; icol < inCols; icol++) m[row + irow * inCols + icol] = wr * cols[ocol * inCols + icol];
      }
    }
  }
  return m;
}

/**
 * The [outRows·outCols, inRows·inCols] matrix of a 2-D resize of a row-major grid: rows resized
 * `rowsTo`, columns `colsTo`, plain or antialiased bicubic.
 */
export function bicubicResizeMatrixTo(
  inRows: number,
  inCols: number,
  rowsTo: ResizeTo,
  colsTo: ResizeTo,
  antialias = false,
): { matrix: Float32Array; outRows: number; outCols: number } {
  const r = bicubicWeights1dTo(inRows, rowsTo, antialias);
  const c = bicubicWeights1dTo(inCols, colsTo, antialias);
  return { matrix: kron(r.weights, r.outSize, inRows, c.weights, c.outSize, inCols), outRows: r.outSize, outCols: c.outSize };
}

/**
 * The [outRows·outCols, inRows·inCols] matrix of a 2-D plain bicubic resize of a row-major grid,
 * rows scaled by `scaleRows`, columns by `scaleCols`.
 */
export function bicubicResizeMatrix(
  inRows: number,
  inCols: number,
  scaleRows: number,
  scaleCols: number,
): { matrix: Float32Array; outRows: number; outCols: number } {
  return bicubicResizeMatrixTo(inRows, inCols, { scaleFactor: scaleRows }, { scaleFactor: scaleCols });
}
