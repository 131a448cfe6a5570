/**
 * Checkpoint layouts of DINOv2 / DINOv3 backbones, mapped to one canonical naming: the official
 * state_dict of facebookresearch/dinov2 and facebookresearch/dinov3 (`blocks.N.attn.qkv.weight`,
 * `ls1.gamma`, `rope_embed.periods`, ...). The canonical dict of any layout is complete and
 * strictly checked against its architecture (models/io/dino-arch.ts), so a model loads it with one
 * strict `loadStateDict`.
 *
 * Layouts (key facts from transformers' convert_dinov2_to_hf.py,
 * convert_dinov2_with_registers_to_hf.py, convert_dinov3_vit_to_hf.py and modeling files):
 *   dinov2               official .pth / safetensors (dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth):
 *                        canonical already. DINO v1 backbones read as this layout too (no
 *                        LayerScale, no mask_token).
 *   dinov3               official DINOv3 .pth: canonical already (with the buffers
 *                        `rope_embed.periods` and `blocks.N.attn.qkv.bias_mask`).
 *   hf-dinov2            transformers Dinov2Model:
 *   hf-dinov2-registers  Dinov2WithRegistersModel (the same names + embeddings.register_tokens)
 *       embeddings.{cls_token, mask_token, position_embeddings, register_tokens}
 *       embeddings.patch_embeddings.projection.*        -> patch_embed.proj.*
 *       encoder.layer.N.norm{1,2}.*                     -> blocks.N.norm{1,2}.*
 *       encoder.layer.N.attention.attention.{query,key,value}.*  -> blocks.N.attn.qkv.* (merged)
 *       encoder.layer.N.attention.output.dense.*        -> blocks.N.attn.proj.*
 *       encoder.layer.N.layer_scale{1,2}.lambda1        -> blocks.N.ls{1,2}.gamma
 *       encoder.layer.N.mlp.fc{1,2}.*                   -> blocks.N.mlp.fc{1,2}.*
 *       encoder.layer.N.mlp.weights_in / weights_out.*  -> blocks.N.mlp.w12 / w3.* (ViT-g)
 *       layernorm.*                                     -> norm.*
 *   hf-dinov3            transformers DINOv3ViTModel:
 *       embeddings.{cls_token, register_tokens -> storage_tokens}
 *       embeddings.mask_token (1, 1, D)                 -> mask_token (1, D)
 *       embeddings.patch_embeddings.{weight,bias}       -> patch_embed.proj.*
 *       layer.N.norm{1,2}.*, layer.N.layer_scale{1,2}.lambda1
 *       layer.N.attention.{q,k,v}_proj.*                -> blocks.N.attn.qkv.* (merged)
 *       layer.N.attention.o_proj.*                      -> blocks.N.attn.proj.*
 *       layer.N.mlp.{up_proj, down_proj}                -> mlp.fc1, fc2 (MLP), or with gate_proj:
 *       layer.N.mlp.{gate_proj, up_proj, down_proj}     -> mlp.w1, w2, w3 (SwiGLU: w3(SiLU(w1 x)·w2 x))
 *       norm.*
 *     The conversion drops `bias_mask` and the masked key bias (k_proj has no bias), `periods`
 *     (HF recomputes inv_freq = 1/periods) and `local_cls_norm`; here the key third of the bias
 *     is zero-filled and `bias_mask` (1 on q and v, 0 on k) and `rope_embed.periods` are
 *     recreated (listed in `synthesized`), which gives the same forward.
 *   A leading base-model prefix of the HF head models (`dinov2.`, `dinov2_with_registers.`,
 *   `dinov3_vit.`) is removed; their heads (`classifier.*`) are then unknown keys.
 *
 * q/k/v merge: the official attention projects with one Linear(D, 3D) whose output rows are
 * [q; k; v] (then reshaped (B, N, 3, heads, d)), so qkv.weight = concat(q.weight, k.weight,
 * v.weight) along rows (dim 0) and qkv.bias = concat(q.bias, k.bias, v.bias): exactly the
 * inverse of the convert scripts' slices [0, D), [D, 2D), [2D, 3D).
 *
 * Pure TypeScript, no engine: host tensors in, host tensors out (renamed tensors are shared, not
 * copied).
 */

import { checkDinoStateDict, type DinoArch, type DinoArchOptions, type DinoFamily, type DinoPresetName, inferDinoArch, matchDinoPreset, ropePeriods } from './dino-arch.js';
import { formatShape } from './dtypes.js';
import { StateDictMismatchError } from './state-dict.js';

export type DinoLayout = 'dinov2' | 'dinov3' | 'hf-dinov2' | 'hf-dinov2-registers' | 'hf-dinov3';

/** A tensor on the host: shape and contiguous row-major float32 values. */
export interface HostTensor {
  shape: readonly number[];
  data: Float32Array;
}

const HF_PREFIXES = ['dinov2.', 'dinov2_with_registers.', 'dinov3_vit.'] as const;

/** Most names listed per category in an error message. */
const LIST_CAP = 12;

function capped(names: readonly string[]): string {
  const shown = names.slice(0, LIST_CAP).join(', ');
  return names.length > LIST_CAP ? `${shown}, … and ${names.length - LIST_CAP} more` : shown;
}

/** Removes a leading HF base-model prefix from the keys that have one. */
function stripHfPrefix<T>(tensors: ReadonlyMap<string, T>): Map<string, T> {
  const out = new Map<string, T>();
  for (const [k, v] of tensors) {
    const p = HF_PREFIXES.find((x) => k.startsWith(x));
    const name = p ? k.slice(p.length) : k;
    if (out.has(name)) throw new Error(`'${k}' and another key both name '${name}'`);
    out.set(name, v);
  }
  return out;
}

/**
 * The layout of a DINOv2 / DINOv3 backbone state dict from its key names (HF base-model prefixes
 * allowed). Throws, showing some keys, when none fits.
 */
export function detectDinoLayout(keys: Iterable<string>): DinoLayout {
  const all = Array.from(keys, (k) => HF_PREFIXES.reduce((n, p) => (n.startsWith(p) ? n.slice(p.length) : n), k));
  const has = (k: string): boolean => all.includes(k);
  const any = (re: RegExp): boolean => all.some((k) => re.test(k));
  if (has('embeddings.position_embeddings') || any(/^encoder\.layer\.\d+\./)) {
    return has('embeddings.register_tokens') ? 'hf-dinov2-registers' : 'hf-dinov2';
  }
  if (has('embeddings.patch_embeddings.weight') || any(/^layer\.\d+\.(attention|mlp|norm1|norm2|layer_scale)/)) return 'hf-dinov3';
  if (has('pos_embed')) return 'dinov2';
  if (has('rope_embed.periods') || has('storage_tokens') || any(/^blocks\.\d+\.(attn\.qkv\.bias_mask|mlp\.w1\.)/)) return 'dinov3';
  throw new Error(`not a DINOv2 / DINOv3 backbone state dict (keys: ${capped(all)})`);
}

/** The model family a layout holds. */
export function layoutFamily(layout: DinoLayout): DinoFamily {
  return layout === 'dinov3' || layout === 'hf-dinov3' ? 'dinov3' : 'dinov2';
}

// -------------------------------------------------------------------------------------------------
// renaming

interface Rule {
  from: RegExp;
  to: string;
}

const HF_DINOV2_RULES: Rule[] = [
  { from: /^embeddings\.cls_token$/, to: 'cls_token' },
  { from: /^embeddings\.mask_token$/, to: 'mask_token' },
  { from: /^embeddings\.position_embeddings$/, to: 'pos_embed' },
  { from: /^embeddings\.register_tokens$/, to: 'register_tokens' },
  { from: /^embeddings\.patch_embeddings\.projection\.(weight|bias)$/, to: 'patch_embed.proj.$1' },
  { from: /^encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)$/, to: 'blocks.$1.norm$2.$3' },
  { from: /^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$/, to: 'blocks.$1.attn.proj.$2' },
  { from: /^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$/, to: 'blocks.$1.ls$2.gamma' },
  { from: /^encoder\.layer\.(\d+)\.mlp\.fc([12])\.(weight|bias)$/, to: 'blocks.$1.mlp.fc$2.$3' },
  { from: /^encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)$/, to: 'blocks.$1.mlp.w12.$2' },
  { from: /^encoder\.layer\.(\d+)\.mlp\.weights_out\.(weight|bias)$/, to: 'blocks.$1.mlp.w3.$2' },
  { from: /^layernorm\.(weight|bias)$/, to: 'norm.$1' },
];
const HF_DINOV2_QKV = /^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$/;

const HF_DINOV3_RULES: Rule[] = [
  { from: /^embeddings\.cls_token$/, to: 'cls_token' },
  { from: /^embeddings\.mask_token$/, to: 'mask_token' },
  { from: /^embeddings\.register_tokens$/, to: 'storage_tokens' },
  { from: /^embeddings\.patch_embeddings\.(weight|bias)$/, to: 'patch_embed.proj.$1' },
  { from: /^layer\.(\d+)\.norm([12])\.(weight|bias)$/, to: 'blocks.$1.norm$2.$3' },
  { from: /^layer\.(\d+)\.attention\.o_proj\.(weight|bias)$/, to: 'blocks.$1.attn.proj.$2' },
  { from: /^layer\.(\d+)\.layer_scale([12])\.lambda1$/, to: 'blocks.$1.ls$2.gamma' },
  { from: /^norm\.(weight|bias)$/, to: 'norm.$1' },
];
const HF_DINOV3_MLP: Rule[] = [
  { from: /^layer\.(\d+)\.mlp\.up_proj\.(weight|bias)$/, to: 'blocks.$1.mlp.fc1.$2' },
  { from: /^layer\.(\d+)\.mlp\.down_proj\.(weight|bias)$/, to: 'blocks.$1.mlp.fc2.$2' },
];
const HF_DINOV3_SWIGLU: Rule[] = [
  { from: /^layer\.(\d+)\.mlp\.gate_proj\.(weight|bias)$/, to: 'blocks.$1.mlp.w1.$2' },
  { from: /^layer\.(\d+)\.mlp\.up_proj\.(weight|bias)$/, to: 'blocks.$1.mlp.w2.$2' },
  { from: /^layer\.(\d+)\.mlp\.down_proj\.(weight|bias)$/, to: 'blocks.$1.mlp.w3.$2' },
];
const HF_DINOV3_QKV = /^layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$/;

type Part = 'q' | 'k' | 'v';
const PART: Readonly<Record<string, Part>> = { query: 'q', key: 'k', value: 'v', q: 'q', k: 'k', v: 'v' };

/** Stacks equal-shaped tensors along dim 0. */
function concatRows(parts: HostTensor[]): HostTensor {
  const [first] = parts;
  const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
  let o = 0;
  for (const p of parts) {
    data.set(p.data, o);
    o += p.data.length;
  }
  return { shape: [first.shape[0] * parts.length, ...first.shape.slice(1)], data };
}

/**
 * Renames a state dict of `layout` to the canonical names, merging split q/k/v projections.
 * Throws one {@link StateDictMismatchError} listing keys the layout does not have, q/k/v parts
 * that are absent, and q/k/v parts whose shapes differ. `synthesized` collects the canonical keys
 * made here rather than renamed (DINOv3 HF: `bias_mask`, the zero key bias is inside qkv.bias).
 */
export function renameDinoKeys(
  layout: DinoLayout,
  tensors: ReadonlyMap<string, HostTensor>,
  synthesized: string[] = [],
): Map<string, HostTensor> {
  if (layout === 'dinov2' || layout === 'dinov3') return new Map(tensors);
  const v3 = layout === 'hf-dinov3';
  const input = stripHfPrefix(tensors);
  const gated = v3 && [...input.keys()].some((k) => /^layer\.\d+\.mlp\.gate_proj\./.test(k));
  const rules = v3 ? [...HF_DINOV3_RULES, ...(gated ? HF_DINOV3_SWIGLU : HF_DINOV3_MLP)] : HF_DINOV2_RULES;
  const qkvRe = v3 ? HF_DINOV3_QKV : HF_DINOV2_QKV;
  const partName = (layer: string, p: Part, kind: string): string =>
    v3 ? `layer.${layer}.attention.${p}_proj.${kind}` : `encoder.layer.${layer}.attention.attention.${{ q: 'query', k: 'key', v: 'value' }[p]}.${kind}`;

  const out = new Map<string, HostTensor>();
  const unknown: string[] = [];
  const missing: string[] = [];
  const mismatched: string[] = [];
  // layer -> kind (weight | bias) -> part -> tensor, in first-seen order
  const qkv = new Map<string, Map<string, Partial<Record<Part, HostTensor>>>>();
  for (const [key, t] of input) {
    const m = qkvRe.exec(key);
    if (m) {
      const kinds = qkv.get(m[1]) ?? new Map<string, Partial<Record<Part, HostTensor>>>();
      qkv.set(m[1], kinds);
      const parts = kinds.get(m[3]) ?? {};
      kinds.set(m[3], parts);
      parts[PART[m[2]]] = t;
      continue;
    }
    const rule = rules.find((r) => r.from.test(key));
    if (!rule) {
      unknown.push(key);
      continue;
    }
    const name = key.replace(rule.from, rule.to);
    if (v3 && name === 'mask_token') {
      // (1, 1, D) in DINOv3ViTModel, (1, D) in the official model: same values.
      if (t.shape.length !== 3 || t.shape[0] !== 1 || t.shape[1] !== 1) mismatched.push(`${key}: expected [1, 1, D], got ${formatShape(t.shape)}`);
      else out.set(name, { shape: [1, t.shape[2]], data: t.data });
      continue;
    }
    if (v3 && name === 'storage_tokens' && t.shape[1] === 0) continue; // num_register_tokens = 0: no official key
    out.set(name, t);
  }

  for (const [layer, kinds] of qkv) {
    for (const [kind, parts] of kinds) {
      const base = `blocks.${layer}.attn.qkv.${kind}`;
      const present = (['q', 'k', 'v'] as const).filter((p) => parts[p]);
      const shapes = present.map((p) => formatShape(parts[p]!.shape));
      if (new Set(shapes).size > 1) {
        mismatched.push(`${present.map((p) => partName(layer, p, kind)).join(' / ')}: shapes ${shapes.join(' / ')} differ`);
        continue;
      }
      if (present.length === 3) {
        out.set(base, concatRows([parts.q!, parts.k!, parts.v!]));
      } else if (v3 && kind === 'bias' && parts.q && parts.v && !parts.k) {
        // DINOv3's masked key bias: zeros in the key third and the official mask buffer.
        const D = parts.q.shape[0];
        out.set(base, concatRows([parts.q, { shape: [D], data: new Float32Array(D) }, parts.v]));
        const mask = new Float32Array(3 * D).fill(1);
        mask.fill(0, D, 2 * D);
        out.set(`blocks.${layer}.attn.qkv.bias_mask`, { shape: [3 * D], data: mask });
        synthesized.push(`blocks.${layer}.attn.qkv.bias_mask`);
      } else {
        for (const p of ['q', 'k', 'v'] as const) if (!parts[p]) missing.push(partName(layer, p, kind));
      }
    }
  }
  if (unknown.length || missing.length || mismatched.length) {
    const lines = [`${layout} state dict: ${unknown.length} unknown key${unknown.length === 1 ? '' : 's'}, ${missing.length} missing, ${mismatched.length} mismatched`];
    if (unknown.length) lines.push(`  unknown keys: ${capped(unknown)}`);
    if (missing.length) lines.push(`  missing keys: ${capped(missing)}`);
    if (mismatched.length) lines.push(`  mismatched: ${capped(mismatched)}`);
    throw new StateDictMismatchError(lines.join('\n'), missing, unknown, mismatched);
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// the whole path: layout -> canonical -> architecture -> strict check

export interface DinoBackboneWeights {
  layout: DinoLayout;
  arch: DinoArch;
  /** The released model with these dimensions, if any. */
  preset?: DinoPresetName;
  /** Canonical names, complete for `arch` and strictly checked. */
  tensors: Map<string, HostTensor>;
  /** Canonical keys recreated rather than read (HF DINOv3: bias_mask, rope_embed.periods). */
  synthesized: string[];
}

export interface CanonicalDinoOptions extends DinoArchOptions {
  /** Default: {@link detectDinoLayout}. */
  layout?: DinoLayout;
  /** Prefixes error messages (e.g. the file name). */
  source?: string;
}

/**
 * A DINOv2 / DINOv3 backbone state dict of any supported layout, renamed to the canonical names,
 * its architecture inferred (see {@link inferDinoArch} for what options override), derived
 * buffers recreated where the layout drops them, and checked strictly: any unknown, missing or
 * mis-shaped key is one error listing them (capped).
 */
export function canonicalDinoBackbone(tensors: ReadonlyMap<string, HostTensor>, opts: CanonicalDinoOptions = {}): DinoBackboneWeights {
  const source = opts.source ?? 'state dict';
  try {
    const layout = opts.layout ?? detectDinoLayout(tensors.keys());
    const synthesized: string[] = [];
    const canonical = renameDinoKeys(layout, tensors, synthesized);
    const arch = inferDinoArch(canonical, { ...opts, family: layoutFamily(layout) });
    if (arch.posEmbed.kind === 'rope' && !canonical.has('rope_embed.periods')) {
      const periods = ropePeriods(arch.embedDim / arch.numHeads, arch.posEmbed.base);
      canonical.set('rope_embed.periods', { shape: [periods.length], data: periods });
      synthesized.push('rope_embed.periods');
    }
    checkDinoStateDict(arch, canonical, `${source} (${layout} layout)`);
    return { layout, arch, preset: matchDinoPreset(arch), tensors: canonical, synthesized };
  } catch (e) {
    const message = (e as Error).message;
    if (opts.source === undefined || message.startsWith(source)) throw e;
    if (e instanceof StateDictMismatchError) throw new StateDictMismatchError(`${source}: ${message}`, e.missing, e.unexpected, e.mismatched);
    throw new Error(`${source}: ${message}`, { cause: e });
  }
}
