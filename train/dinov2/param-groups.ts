/**
 * DINOv2's parameter groups (dinov2/utils/param_groups.py): per parameter an lr multiplier
 * (layer-wise decay, patch-embedding factor), a weight-decay multiplier and a last-layer flag, for
 * each student sub-model (backbone, dino_head, ibot_head) on its own, then fused by equal keys.
 *
 * Names are relative to the sub-model, as the official sees them (`blocks.3.attn.qkv.weight`,
 * `mlp.0.weight`, `last_layer.weight_g`).
 *
 * lr multiplier = decay^(L + 1 − layer_id), L = the backbone's block count:          (get_vit_lr_decay_rate)
 *   layer_id 0      pos_embed, patch_embed, mask_token, cls_token, register_tokens
 *   layer_id i + 1  blocks.i (with chunked blocks `blocks.<chunk>.<i>`, the global index i)
 *   layer_id L + 1  everything else: the final norm (multiplier 1)
 *   heads           the official passes L = 0 for a sub-model without blocks: decay⁰ = 1
 *   × patchEmbedLrMult (0.2) when the name contains "patch_embed"
 * ViT-S (L = 12), decay 0.9: block 11 → 0.9, block 0 → 0.9¹² = 0.2824, embeddings → 0.9¹³ =
 * 0.2542, patch_embed → 0.2·0.9¹³ = 0.0508, norm and heads → 1.
 *
 * wd multiplier = 0 when the name ends in ".bias" or contains "norm" or "gamma" (LayerScale),
 * else 1. So cls/pos/mask/register tokens, every weight matrix and `last_layer.weight_g` are decayed
 * (unlike DINO v1's "no decay for 1-D tensors").
 *
 * is_last_layer: the name contains "last_layer" (its lr follows the last-layer schedule, 0 during
 * the first freeze_last_layer_epochs).
 *
 * Fusion (fuse_params_groups): parameters with equal (lr_multiplier, wd_multiplier, is_last_layer)
 * share one optimizer group, in order of first appearance.
 */

/** The student's sub-models, as the official ModuleDict names them. */
export type SubModel = 'backbone' | 'dino_head' | 'ibot_head';

export interface ParamGroupOptions {
  /** Backbone blocks L (12 for ViT-S). */
  numLayers: number;
  /** optim.layerwise_decay (0.9; 1.0 in vitl14/vitg14). */
  layerwiseDecay?: number;
  /** optim.patch_embed_lr_mult (0.2). */
  patchEmbedLrMult?: number;
  /** The backbone stores blocks as `blocks.<chunk>.<i>` (FSDP block chunks). */
  chunkedBlocks?: boolean;
}

/** What an optimizer group is keyed by. */
export interface ParamGroupKey {
  lrMultiplier: number;
  wdMultiplier: number;
  isLastLayer: boolean;
}

const LAYER0 = ['pos_embed', 'patch_embed', 'mask_token', 'cls_token', 'register_tokens'];

/** layer_id of a backbone parameter (0 … L + 1). */
export function backboneLayerId(name: string, numLayers: number, chunkedBlocks = false): number {
  if (LAYER0.some((k) => name.includes(k))) return 0;
  const parts = name.split('.');
  const at = parts.indexOf('blocks');
  if (at >= 0 && !parts.includes('residual')) {
    const idx = Number(parts[at + (chunkedBlocks ? 2 : 1)]);
    if (Number.isInteger(idx)) return idx + 1;
  }
  return numLayers + 1;
}

/** The lr multiplier of a parameter of `sub` (see the header). */
export function lrMultiplier(sub: SubModel, name: string, opts: ParamGroupOptions): number {
  const decay = opts.layerwiseDecay ?? 0.9;
  let mult = 1;
  if (sub === 'backbone') mult = decay ** (opts.numLayers + 1 - backboneLayerId(name, opts.numLayers, opts.chunkedBlocks));
  if (name.includes('patch_embed')) mult *= opts.patchEmbedLrMult ?? 0.2;
  return mult;
}

/** 0 for biases, norms and LayerScale gammas; 1 otherwise. */
export function wdMultiplier(name: string): number {
  return name.endsWith('.bias') || name.includes('norm') || name.includes('gamma') ? 0 : 1;
}

export function paramGroupKey(sub: SubModel, name: string, opts: ParamGroupOptions): ParamGroupKey {
  return { lrMultiplier: lrMultiplier(sub, name, opts), wdMultiplier: wdMultiplier(name), isLastLayer: name.includes('last_layer') };
}

/** A fused group: its key and its parameters' names, in order. */
export interface FusedGroup {
  key: ParamGroupKey;
  names: string[];
}

/** Groups of equal keys, in order of first appearance (fuse_params_groups). */
export function fuseParamGroups(params: readonly { name: string; key: ParamGroupKey }[]): FusedGroup[] {
  const byId = new Map<string, FusedGroup>();
  for (const { name, key } of params) {
    const id = `${key.lrMultiplier}_${key.wdMultiplier}_${key.isLastLayer}`;
    let g = byId.get(id);
    if (!g) byId.set(id, (g = { key, names: [] }));
    g.names.push(name);
  }
  return [...byId.values()];
}

/**
 * The fused groups of a student whose parameter names carry the sub-model prefix
 * (`backbone.…`, `dino_head.…`, `ibot_head.…`, the training-checkpoint names). Each sub-model is
 * grouped on its own, as the official get_params_groups does; the returned names keep the prefix.
 */
export function dinov2ParamGroups(names: readonly string[], opts: ParamGroupOptions): FusedGroup[] {
  const subs: SubModel[] = ['backbone', 'dino_head', 'ibot_head'];
  const out: FusedGroup[] = [];
  for (const sub of subs) {
    const mine = names.filter((n) => n.startsWith(sub + '.'));
    out.push(...fuseParamGroups(mine.map((n) => ({ name: n, key: paramGroupKey(sub, n.slice(sub.length + 1), opts) }))));
  }
  const unknown = names.filter((n) => !subs.some((s) => n.startsWith(s + '.')));
  if (unknown.length) throw new Error(`DINOv2 parameter groups: names outside backbone/dino_head/ibot_head: ${unknown.slice(0, 5).join(', ')}`);
  return out;
}
