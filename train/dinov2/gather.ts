/**
 * Row selection by host-known indices, differentiable: out[j] = x[idx[j]] for x (R, D).
 *
 * The engine has no gather op yet, so this is a product with a one-hot selection matrix S (M, R),
 * S[j, idx[j]] = 1, built on the CPU: out = S·x, and the matmul's backward gives ∂x = Sᵀ·∂out, the
 * scatter-add of the gradient rows (a row selected twice receives both). Exact in float32: each
 * output element is one product by 1 plus zeros.
 *
 * Cost: S has M·R elements and the product 2·M·R·D flops. For iBOT on the CPU default config
 * (2B = 64 crops of 4×4 patches: R = 1024, M ≈ 300) that is 1.2 MB; for ViT-S/16 at 224 with
 * B = 64 per device (R = 25 088, M ≈ 3 800) it would be 380 MB and 73 GFLOP per selection, so the
 * selection is split into slabs of at most {@link SLAB_BYTES} of S. A real gather kernel (an
 * engine op `indexSelect(x, 0, idx)` with a scatter-add backward) replaces this at scale: it is
 * the one engine addition the DINOv2 recipe needs beyond AdamW parameter groups.
 */
import type { Engine } from '../../engine/engine.js';
import * as ops from '../../engine/ops/index.js';
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';

/** Largest one-hot slab (bytes) built at once. */
export const SLAB_BYTES = 32 << 20;

/** The one-hot selection matrix (rows, R) for idx[from … from + rows). */
function selection(engine: Engine, idx: ArrayLike<number>, from: number, rows: number, R: number): Tensor {
  const s = new Float32Array(rows * R);
  for (let j = 0; j < rows; j++) s[j * R + idx[from + j]] = 1;
  return engine.tensor(s, [rows, R], { label: 'gather-one-hot' });
}

/** x[idx] along dim 0 for x (R, D): (M, D), M = idx.length ≥ 1; gradients flow back to x. `slabBytes`: see SLAB_BYTES. */
export function gatherRows(x: Tensor, idx: ArrayLike<number>, slabBytes = SLAB_BYTES): Tensor {
  if (x.rank !== 2) throw new ShapeError(`gatherRows: x must be (R, D), got ${fmt(x.shape)}`);
  const [R] = x.shape;
  const M = idx.length;
  if (M === 0) throw new ShapeError('gatherRows: no indices (callers handle the empty selection)');
  for (let j = 0; j < M; j++) {
    if (!(Number.isInteger(idx[j]) && idx[j] >= 0 && idx[j] < R)) throw new RangeError(`gatherRows: index ${idx[j]} at ${j} is outside [0, ${R})`);
  }
  const slabRows = Math.max(1, Math.floor(slabBytes / (4 * R)));
  const parts: Tensor[] = [];
  for (let from = 0; from < M; from += slabRows) {
    const rows = Math.min(slabRows, M - from);
    parts.push(ops.matmul(selection(x.engine, idx, from, rows, R), x));
  }
  return parts.length === 1 ? parts[0] : ops.concat(parts, 0);
}
