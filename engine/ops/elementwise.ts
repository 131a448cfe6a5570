/**
 * Elementwise ops with their gradients: one typed table per arity (kernels: kernels/elementwise.ts).
 *
 * `UNARY_GRADS` and `BINARY_GRADS` are keyed by kernel op and typed by the kernels' sets of
 * differentiable ops (those with a float64 derivative), so the compiler rejects a table with a rule
 * missing or one too many. Every public elementwise op is one line over them (`exp(x)` is
 * `unary('exp', x)`), and the tests iterate the tables: a new entry gets its check against the
 * float64 derivative and against finite differences without a test of its own.
 *
 * A rule maps the upstream gradient g to the input's gradient (the vector-Jacobian product). It
 * reads only the op's input x, its output y and the scalar p, so a unary op saves nothing extra.
 * Binary rules give the gradient at the broadcast output shape; `binary` sums it back to each
 * operand's shape.
 */
import { record } from '../autograd.js';
import { sameShape, type Shape } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import {
  binaryRaw,
  castRaw,
  type DifferentiableBinaryOp,
  type DifferentiableUnaryOp,
  fillInPlace,
  unaryRaw,
} from '../../kernels/elementwise.js';
import { sumTo } from '../../kernels/reduce.js';

/** What a unary gradient rule may read: input x, output y, upstream gradient g, the scalar p. */
export interface UnaryGradArgs {
  x: Tensor;
  y: Tensor;
  g: Tensor;
  p: number;
}

/** ∂L/∂x of one unary op, as a new tensor (or g itself when the op is the identity on gradients). */
export type UnaryGradRule = (args: UnaryGradArgs) => Tensor;

export const UNARY_GRADS: { [K in DifferentiableUnaryOp]: UnaryGradRule } = {
  copy: ({ g }) => g, //                                   g
  neg: ({ g }) => unaryRaw('neg', g), //                   −g
  exp: ({ y, g }) => binaryRaw('mul', g, y), //            g·y
  log: ({ x, g }) => binaryRaw('div', g, x), //            g / x
  sqrt: ({ y, g }) => binaryRaw('sqrtBackward', y, g), //  g / (2y)
  relu: ({ x, g }) => binaryRaw('reluBackward', x, g), //  g·[x > 0]
  gelu: ({ x, g }) => binaryRaw('geluBackward', x, g), //  g·(Φ(x) + x·φ(x))
  tanh: ({ y, g }) => binaryRaw('tanhBackward', y, g), //  g·(1 − y²)
  silu: ({ x, g }) => binaryRaw('siluBackward', x, g), //  g·σ(x)(1 + x·σ(−x))
  pow: ({ x, g, p }) => binaryRaw('powBackward', x, g, p), // g·p·x^(p−1)
  addScalar: ({ g }) => g, //                              g
  mulScalar: ({ g, p }) => unaryRaw('mulScalar', g, p), // g·p
  rsubScalar: ({ g }) => unaryRaw('neg', g), //            −g
};

/** What a binary gradient rule may read: the operands a and b, the upstream gradient g. */
export interface BinaryGradArgs {
  a: Tensor;
  b: Tensor;
  g: Tensor;
}

/** ∂L/∂a and ∂L/∂b of one binary op at the broadcast output shape (g itself where it passes through). */
export interface BinaryGradRule {
  a: (args: BinaryGradArgs) => Tensor;
  b: (args: BinaryGradArgs) => Tensor;
}

export const BINARY_GRADS: { [K in DifferentiableBinaryOp]: BinaryGradRule } = {
  add: { a: ({ g }) => g, b: ({ g }) => g },
  sub: { a: ({ g }) => g, b: ({ g }) => unaryRaw('neg', g) },
  mul: { a: ({ b, g }) => binaryRaw('mul', g, b), b: ({ a, g }) => binaryRaw('mul', g, a) },
  div: { a: ({ b, g }) => binaryRaw('div', g, b), b: divGradB },
  swiglu: { a: swigluGradA, b: swigluGradB },
};

/** ∂(silu(a)·b)/∂a · g = g·b·silu'(a), as silu'(a)·(g·b). */
function swigluGradA({ a, b, g }: BinaryGradArgs): Tensor {
  const gb = binaryRaw('mul', g, b);
  const ga = binaryRaw('siluBackward', a, gb);
  gb.dispose();
  return ga;
}

/** ∂(silu(a)·b)/∂b · g = g·silu(a) (silu(a) recomputed: the forward keeps nothing). */
function swigluGradB({ a, g }: BinaryGradArgs): Tensor {
  const s = unaryRaw('silu', a);
  const gb = binaryRaw('mul', g, s);
  s.dispose();
  return gb;
}

/** ∂(a/b)/∂b · g = −a/b² · g, formed as −((g·a)/b)/b. */
function divGradB({ a, b, g }: BinaryGradArgs): Tensor {
  const t1 = binaryRaw('mul', g, a);
  const t2 = binaryRaw('div', t1, b);
  t1.dispose();
  const t3 = binaryRaw('div', t2, b);
  t2.dispose();
  const gb = unaryRaw('neg', t3);
  t3.dispose();
  return gb;
}

/** The differentiable unary op `op` of x with scalar p: the kernel, and its rule recorded. */
export function unary(op: DifferentiableUnaryOp, x: Tensor, p = 0): Tensor {
  checkTensor(x, op);
  const y = unaryRaw(op, x, p);
  const rule = UNARY_GRADS[op];
  return record(y, { name: op, inputs: [x], backward: (g) => [rule({ x, y, g, p })] });
}

/** The differentiable binary op `op` of a and b (NumPy broadcasting): the kernel, and its rule recorded. */
export function binary(op: DifferentiableBinaryOp, a: Tensor, b: Tensor): Tensor {
  checkTensor(a, op);
  checkTensor(b, op);
  const y = binaryRaw(op, a, b);
  const rule = BINARY_GRADS[op];
  return record(y, {
    name: op,
    inputs: [a, b],
    backward: (g) => {
      const ga = a.requiresGrad ? reduceTo(rule.a({ a, b, g }), a.shape, g) : null;
      const gb = b.requiresGrad ? reduceTo(rule.b({ a, b, g }), b.shape, g) : null;
      return [ga, gb];
    },
  });
}

/** Sums a gradient at the broadcast shape back to an operand's `shape`, disposing the intermediate (never `g`). */
function reduceTo(t: Tensor, shape: Shape, g: Tensor): Tensor {
  if (sameShape(t.shape, shape)) return t;
  const r = sumTo(t, shape);
  if (t !== g) t.dispose();
  return r;
}

// -------------------------------------------------------------------------------------------------
// The public ops. A number as the second operand selects the scalar kernel.

export function add(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? unary('addScalar', a, b) : binary('add', a, b);
}
export function sub(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? unary('addScalar', a, -b) : binary('sub', a, b);
}
export function mul(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? unary('mulScalar', a, b) : binary('mul', a, b);
}
export function div(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? unary('mulScalar', a, 1 / b) : binary('div', a, b);
}
/** p − x */
export function rsub(x: Tensor, p: number): Tensor {
  return unary('rsubScalar', x, p);
}
export function pow(x: Tensor, exponent: number): Tensor {
  return unary('pow', x, exponent);
}
export const neg = (x: Tensor): Tensor => unary('neg', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
/** Exact GELU: x·Φ(x) with the error function (as PyTorch's default nn.GELU). */
export const gelu = (x: Tensor): Tensor => unary('gelu', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
/** SiLU (swish): x·σ(x), accurate and finite in both tails (kernels/elementwise.ts). */
export const silu = (x: Tensor): Tensor => unary('silu', x);
/** The SwiGLU gate silu(a)·b in one kernel (NumPy broadcasting; a and b may be views, e.g. halves of one projection). */
export const swiglu = (a: Tensor, b: Tensor): Tensor => binary('swiglu', a, b);

/** A contiguous copy (new storage) that gradients flow through. */
export const copy = (x: Tensor): Tensor => unary('copy', x);

/**
 * `x` converted to `dtype` ('f32' or 'f16'; f16 rounds to nearest even, overflowing to ±∞ past
 * 65504). The tensor itself (a new handle) when it already has the dtype. The gradient is cast
 * back to x's dtype.
 */
export function cast(x: Tensor, dtype: Tensor['dtype']): Tensor {
  checkTensor(x, 'cast');
  if (x.dtype === dtype) return copyOrView(x);
  const y = castRaw(x, dtype);
  return record(y, { name: `cast_${dtype}`, inputs: [x], backward: (g) => [castRaw(g, x.dtype)] });
}

/** A new handle on x that gradients flow through (no kernel). */
function copyOrView(x: Tensor): Tensor {
  const v = x.view(x.shape, x.strides, x.offset);
  return record(v, { name: 'cast', inputs: [x], backward: (g) => [g] });
}

/** Writes `value` into every element of `t` in place (not differentiable). */
export function fill(t: Tensor, value: number): Tensor {
  checkTensor(t, 'fill');
  return fillInPlace(t, value);
}
