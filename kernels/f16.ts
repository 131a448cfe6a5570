/**
 * f16 storage for the kernel families: the source transform that turns a family's f32 kernel into the same kernel with some of its storage
 * bindings in f16.
 *
 * Design: one source of truth per kernel. The f32 builders stay as they are; `halfStorage` takes
 * their WGSL and the names of the bindings whose tensors are f16, and
 * - declares those bindings as array<f16> / array<vec4<f16>> (an alias element type `T` gets a
 *   twin alias `T_h` with f32 → f16),
 * - wraps every read `NAME[i]` as `T(NAME[i])`: the value is converted to f32 at the load,
 * - wraps every write `NAME[i] = e;` as `NAME[i] = T_h(e);` (and `NAME[i] op= e;` as a
 *   read-convert-modify-write), so the result is rounded to f16 only at the store.
 * Everything between a load and a store (products, sums, the running max and sum of a softmax, the
 * statistics of a layer norm, the accumulators of a matmul or attention) is the f32 arithmetic of
 * the original kernel: f16 is a storage format here, never an arithmetic one. The transform is a
 * pure function of the source and the names, so pipelines stay one per (kernel constants, f16 set).
 *
 * Invariants the transform relies on (true of every kernel it is applied to, and checked by the
 * tests that force each f16 kernel against float64): a binding is named at module scope once, as
 * `var<storage, ...> NAME: array<TYPE>;`; it is only used as `NAME[index]` (never passed whole to
 * a function or taken `arrayLength` of); stores are whole statements `NAME[i] = expr;`.
 *
 * The host conversions (upload, readback, the tests' rounding) are engine/half.ts.
 */

import type { Tensor } from '../engine/tensor.js';

/** Bytes per element of a tensor's storage (2 for f16, 4 for f32). */
export function elementBytes(t: Tensor): number {
  return t.dtype === 'f16' ? 2 : 4;
}

/** The names among `named` whose tensor is f16: what `halfStorage` is given. */
export function halfNames(named: Record<string, Tensor | null | undefined>): string[] {
  return Object.entries(named)
    .filter(([, t]) => t?.dtype === 'f16')
    .map(([n]) => n);
}

/**
 * Throws when any of `ts` is f16: for the kernels that have no f16 form yet (reductions, the
 * backward kernels, cross-entropy, gathers), which would otherwise read f16 bits as f32.
 */
export function requireF32(op: string, ...ts: (Tensor | null | undefined)[]): void {
  if (ts.some((t) => t?.dtype === 'f16')) {
    throw new TypeError(`${op}: no f16 kernel yet (f16 covers inference: the forward ops of the ViT); cast to f32 first`);
  }
}

/** Kernel-name suffix for a set of f16 bindings ('' when none). */
export function halfSuffix(halves: readonly string[]): string {
  return halves.length ? `_h${halves.join('')}` : '';
}

// -------------------------------------------------------------------------------------------------
// The source transform

/** The f16 twin of an f32 element type: f32 → f16, vecN<f32> → vecN<f16>. */
function halfType(ty: string): string {
  return ty.replace(/\bf32\b/g, 'f16');
}

/** Index of the `]` closing the `[` at `open` (brackets and parentheses nested). */
function closing(src: string, open: number): number {
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    const ch = src[i];
    if (ch === '[' || ch === '(') depth++;
    else if (ch === ']' || ch === ')') {
      depth--;
      if (depth === 0) return i;
    }
  }
  throw new Error(`halfStorage: unbalanced brackets after offset ${open}`);
}

/**
 * `src` with the storage bindings named in `halves` in f16 (see the file header). Names not
 * declared in the source are an error (a typo would otherwise silently leave a binding in f32).
 */
export function halfStorage(src: string, halves: readonly string[]): string {
  if (halves.length === 0) return src;
  let out = src;
  const extraAliases: string[] = [];
  for (const name of halves) {
    const decl = new RegExp(`(var<storage,[^>]*>\\s*${name}\\s*:\\s*array<)([^;]+)>;`);
    const m = decl.exec(out);
    if (!m) throw new Error(`halfStorage: no storage binding named '${name}'`);
    const ty = m[2].trim();
    let hty: string;
    if (/\bf32\b/.test(ty)) {
      hty = halfType(ty);
    } else {
      // An alias (T, Chunk): declare its f16 twin once.
      const alias = new RegExp(`alias\\s+${ty}\\s*=\\s*([^;]+);`).exec(out);
      if (!alias) throw new Error(`halfStorage: element type '${ty}' of '${name}' is neither f32-based nor an alias`);
      hty = `${ty}_h`;
      if (!extraAliases.some((a) => a.startsWith(`alias ${hty} `))) extraAliases.push(`alias ${hty} = ${halfType(alias[1].trim())};`);
    }
    const declStart = m.index;
    const declEnd = declStart + m[0].length;
    const before = out.slice(0, declStart) + `${m[1]}${hty}>;`;
    out = before + rewriteUses(out.slice(declEnd), name, ty, hty);
    // Uses before the declaration (none in these kernels, but WGSL allows them) are rewritten too.
    out = rewriteUses(out.slice(0, declStart), name, ty, hty) + out.slice(declStart);
  }
  return `enable f16;\n${out}\n${extraAliases.join('\n')}\n`;
}

/** Rewrites the loads and stores of `name` in `code` (see the file header). */
function rewriteUses(code: string, name: string, ty: string, hty: string): string {
  const use = new RegExp(`(?<![\\w.])${name}\\s*\\[`, 'g');
  let res = '';
  let pos = 0;
  for (;;) {
    use.lastIndex = pos;
    const m = use.exec(code);
    if (!m) break;
    const open = m.index + m[0].length - 1;
    const close = closing(code, open);
    const access = `${name}[${rewriteUses(code.slice(open + 1, close), name, ty, hty)}]`;
    res += code.slice(pos, m.index);
    // A store: `NAME[i] = e;` or `NAME[i] op= e;` (not `==`).
    const after = /^\s*([-+*/]?)=(?!=)/.exec(code.slice(close + 1));
    if (after) {
      const rhsStart = close + 1 + after[0].length;
      const semi = code.indexOf(';', rhsStart);
      const rhs = rewriteUses(code.slice(rhsStart, semi).trim(), name, ty, hty);
      const value = after[1] ? `${ty}(${access}) ${after[1]} (${rhs})` : rhs;
      res += `${access} = ${hty}(${value});`;
      pos = semi + 1;
    } else {
      res += `${ty}(${access})`;
      pos = close + 1;
    }
  }
  return res + code.slice(pos);
}
