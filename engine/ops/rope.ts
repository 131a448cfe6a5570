/**
 * Rotary position embedding with its gradient (kernels and math: kernels/rope.ts): on any x
 * (..., N, d), or on ViT's packed qkv (3, ..., N, d) where q and k turn and v passes through.
 *
 * The backward of a rotation is its transpose (the rotation by −θ for DINOv3's tiled tables): one
 * kernel on the upstream gradient, reading nothing saved but the tables. The tables are constants
 * (computed on the host, models/rope.ts): no gradient flows into them, and a table that asks for
 * one is refused.
 */
import { record } from '../autograd.js';
import { fmt, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { checkRope, ropeBackwardRaw, ropeForwardRaw, type RopeTables } from '../../kernels/rope.js';

export type { RopeTables };

function checkTables(t: RopeTables, op: string): void {
  checkTensor(t.sin, `${op} sin`);
  checkTensor(t.cos, `${op} cos`);
  if (t.sin.requiresGrad || t.cos.requiresGrad) throw new Error(`${op}: the sin/cos tables are constants; no gradient flows into them`);
}

/** x⊙cos θ + rotate_half(x)⊙sin θ over the last dimension, x (..., N, d) any view, tables (N, d). */
export function rope(x: Tensor, tables: RopeTables): Tensor {
  checkTensor(x, 'rope');
  checkTables(tables, 'rope');
  const y = ropeForwardRaw(x, tables);
  return record(y, { name: 'rope', inputs: [x], backward: (g) => [ropeBackwardRaw(g, tables)] });
}

/**
 * RoPE on a packed qkv (3, ..., N, d) (any strides: ViT's permuted projection, read in place):
 * a new contiguous tensor with qkv[0] and qkv[1] rotated and qkv[2] copied, in one dispatch, the
 * same as concat([rope(qkv[0:2]), qkv[2:3]]) and what `attentionPacked` reads.
 */
export function ropePacked(qkv: Tensor, tables: RopeTables): Tensor {
  const op = 'ropePacked';
  checkTensor(qkv, op);
  checkTables(tables, op);
  if (qkv.rank < 3 || qkv.shape[0] !== 3) throw new ShapeError(`${op}: qkv must be [3, ..., N, d], got ${fmt(qkv.shape)}`);
  checkRope(qkv, tables, op);
  const rotated = (2 * qkv.size) / 3; // q and k: the first two thirds in row-major order
  const y = ropeForwardRaw(qkv, tables, rotated);
  return record(y, { name: op, inputs: [qkv], backward: (g) => [ropeBackwardRaw(g, tables, rotated)] });
}
