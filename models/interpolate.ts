/**
 * Bicubic resizing as a matrix, matching PyTorch's `F.interpolate(mode='bicubic',
 * align_corners=False, scale_factor=s)`: output size floor(in · s); source coordinate
 * (dst + 0.5)/s − 0.5 (the given scale factor, not in/out, sets the mapping); cubic convolution
 * with A = −0.75 on the 4 neighbours floor(src) − 1 … floor(src) + 2, indices clamped to the edge.
 *
 * Because the resize is linear and separable, out = (Wy ⊗ Wx) · in: one matrix that can be applied
 * on the GPU with a matmul, so gradients flow back through it (DINO interpolates pos_embed for
 * crops of other sizes during training).
 */

const A = -0.75;

function cubic1(x: number): number {
  return ((A + 2) * x - (A + 3)) * x * x + 1; // |x| ≤ 1
}
function cubic2(x: number): number {
  return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; // 1 < |x| < 2
}

/** Weights [out, in] of a 1-D bicubic resize by `scale` (output length floor(in · scale)). */
export function bicubicWeights1d(inSize: number, scale: number): { weights: Float64Array; outSize: number } {
  const outSize = Math.floor(inSize * scale);
  const w = new Float64Array(outSize * inSize);
  for (let o = 0; o < outSize; o++) {
    const src = (o + 0.5) / scale - 0.5;
    const i0 = Math.floor(src);
    const t = src - i0;
    const coeffs = [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)];
    for (let k = 0; k < 4; k++) {
      const idx = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      w[o * inSize + idx] += coeffs[k];
    }
  }
  return { weights: w, outSize };
}

/**
 * The [outRows·outCols, inRows·inCols] matrix of a 2-D bicubic resize of a row-major grid, rows
 * scaled by `scaleRows`, columns by `scaleCols`.
 */
export function bicubicResizeMatrix(
  inRows: number,
  inCols: number,
  scaleRows: number,
  scaleCols: number,
): { matrix: Float32Array; outRows: number; outCols: number } {
  const r = bicubicWeights1d(inRows, scaleRows);
  const c = bicubicWeights1d(inCols, scaleCols);
  const outRows = r.outSize;
  const outCols = c.outSize;
  const m = new Float32Array(outRows * outCols * inRows * inCols);
  const nIn = inRows * inCols;
  for (let orow = 0; orow < outRows; orow++) {
    for (let ocol = 0; ocol < outCols; ocol++) {
      const row = (orow * outCols + ocol) * nIn;
      for (let irow = 0; irow < inRows; irow++) {
        const wr = r.weights[orow * inRows + irow];
        if (wr === 0) continue;
        for (let icol = 0; icol < inCols; icol++) m[row + irow * inCols + icol] = wr * c.weights[ocol * inCols + icol];
      }
    }
  }
  return { matrix: m, outRows, outCols };
}
