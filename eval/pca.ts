/**
 * PCA of patch features mapped to RGB, the dense-feature picture of DINO papers and notebooks
 * (dino.md §5 item 11: fit the PCA jointly across images). Pure TypeScript, browser-safe.
 *
 *   tokens X [n, D] (every patch token of every image, rows)
 *   μ = mean of the rows;  Σ = (X − μ)ᵀ(X − μ) / (n − 1)              float64
 *   Σ = V Λ Vᵀ by cyclic Jacobi rotations (symmetric; exact to rounding, robust for any D the
 *   ViTs here have: D³/2 work per sweep, converged in < 15 sweeps)
 *   components: the k eigenvectors of the largest eigenvalues, each signed so that its entry of
 *   largest magnitude is positive (eigenvectors are defined up to sign; this makes the colours
 *   deterministic)
 *   projection P = (X − μ) V_k [n, k]; RGB: each component min-max normalised to [0, 255] over ALL
 *   rows (one scale for every image, so colours compare across images).
 */

/** Eigen-decomposition of a symmetric matrix: eigenvalues descending, eigenvectors as columns. */
export interface SymmetricEigen {
  values: Float64Array;
  /** [D, D] row-major; column j is the eigenvector of values[j]. */
  vectors: Float64Array;
}

/**
 * Cyclic Jacobi eigenvalue algorithm for a symmetric [D, D] row-major matrix (not modified).
 * Stops when the off-diagonal mass is below 1e-22 of the total (or after 100 sweeps).
 */
export function symmetricEigen(matrix: ArrayLike<number>, D: number): SymmetricEigen {
  if (matrix.length !== D * D) throw new RangeError(`symmetricEigen: ${matrix.length} values for a ${D}x${D} matrix`);
  const a = Float64Array.from(matrix);
  const v = new Float64Array(D * D);
  for (let i = 0; i < D; i++) v[i * D + i] = 1;
  let total = 0;
  for (let i = 0; i < D * D; i++) total += a[i] * a[i];
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < D; p++) for (let q = p + 1; q < D; q++) off += a[p * D + q] * a[p * D + q];
    if (off <= 1e-22 * total || off === 0) break;
    for (let p = 0; p < D - 1; p++) {
      for (let q = p + 1; q < D; q++) {
        const apq = a[p * D + q];
        if (apq === 0) continue;
        // Rotation angle zeroing a[p][q]: θ = (a_qq − a_pp) / (2 a_pq), t = sgn(θ) / (|θ| + √(θ² + 1)).
        const theta = (a[q * D + q] - a[p * D + p]) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < D; k++) {
          // Columns p, q of A·J.
          const akp = a[k * D + p];
          const akq = a[k * D + q];
          a[k * D + p] = c * akp - s * akq;
          a[k * D + q] = s * akp + c * akq;
        }
        for (let k = 0; k < D; k++) {
          // Rows p, q of Jᵀ·(A·J).
          const apk = a[p * D + k];
          const aqk = a[q * D + k];
          a[p * D + k] = c * apk - s * aqk;
          a[q * D + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < D; k++) {
          const vkp = v[k * D + p];
          const vkq = v[k * D + q];
          v[k * D + p] = c * vkp - s * vkq;
          v[k * D + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = [...Array(D).keys()].sort((i, j) => a[j * D + j] - a[i * D + i]);
  const values = Float64Array.from(order, (i) => a[i * D + i]);
  const vectors = new Float64Array(D * D);
  order.forEach((src, dst) => {
    for (let k = 0; k < D; k++) vectors[k * D + dst] = v[k * D + src];
  });
  return { values, vectors };
}

/** A fitted PCA: mean [D], components [k, D] (rows, unit length), their variances [k]. */
export interface Pca {
  D: number;
  mean: Float64Array;
  components: Float64Array;
  variances: Float64Array;
}

/** Fits a k-component PCA to the rows of x [n, D] (see the file header). Needs n >= 2 rows, all finite. */
export function fitPca(x: ArrayLike<number>, D: number, k = 3): Pca {
  const n = x.length / D;
  if (!Number.isInteger(n) || n < 2) throw new RangeError(`fitPca: need at least 2 rows of ${D} values, got ${x.length} values`);
  if (k < 1 || k > D) throw new RangeError(`fitPca: k = ${k} components of ${D} dimensions`);
  const mean = new Float64Array(D);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) mean[d] += x[i * D + d] / n;
  if (!mean.every(Number.isFinite)) throw new RangeError('fitPca: the features hold non-finite values');
  const cov = new Float64Array(D * D);
  const row = new Float64Array(D);
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < D; d++) row[d] = x[i * D + d] - mean[d];
    for (let p = 0; p < D; p++) {
      const rp = row[p];
      if (rp === 0) continue;
      for (let q = p; q < D; q++) cov[p * D + q] += rp * row[q];
    }
  }
  for (let p = 0; p < D; p++) {
    for (let q = p; q < D; q++) {
      cov[p * D + q] /= n - 1;
      cov[q * D + p] = cov[p * D + q];
    }
  }
  const { values, vectors } = symmetricEigen(cov, D);
  const components = new Float64Array(k * D);
  for (let j = 0; j < k; j++) {
    let big = 0;
    for (let d = 0; d < D; d++) if (Math.abs(vectors[d * D + j]) > Math.abs(big)) big = vectors[d * D + j];
    const sign = big < 0 ? -1 : 1;
    for (let d = 0; d < D; d++) components[j * D + d] = sign * vectors[d * D + j];
  }
  return { D, mean, components, variances: values.slice(0, k) };
}

/** Projects the rows of x [n, D] on the components: [n, k]. */
export function pcaProject(pca: Pca, x: ArrayLike<number>): Float64Array {
  const { D, mean, components } = pca;
  const k = components.length / D;
  const n = x.length / D;
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += (x[i * D + d] - mean[d]) * components[j * D + d];
      out[i * k + j] = s;
    }
  }
  return out;
}

/**
 * The first three principal components of x [n, D] as RGB bytes [n·3]: each component min-max
 * normalised over all rows (a constant component maps to 0). Needs D >= 3.
 */
export function pcaRgb(x: ArrayLike<number>, D: number): Uint8Array {
  const proj = pcaProject(fitPca(x, D, 3), x);
  const n = proj.length / 3;
  const out = new Uint8Array(n * 3);
  for (let c = 0; c < 3; c++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i++) {
      lo = Math.min(lo, proj[i * 3 + c]);
      hi = Math.max(hi, proj[i * 3 + c]);
    }
    const range = hi - lo;
    for (let i = 0; i < n; i++) out[i * 3 + c] = range > 0 ? Math.round((255 * (proj[i * 3 + c] - lo)) / range) : 0;
  }
  return out;
}
