/**
 * A ViT backbone from a weights file's contents, without touching the file system (browser-safe):
 * which entries are the backbone, which architecture they are, and the model built from them.
 * models/backbone-node.ts reads the file.
 *
 * Weights
 * - A PyTorch checkpoint (zip or legacy pickle; only the tensor-rebuild globals are allowed, so a
 *   pickle naming os.system is refused before anything runs): the entry `checkpointKey` (default
 *   'teacher', as DINO's eval code), else 'state_dict'/'model', else the top-level dict itself.
 * - safetensors: a bare state dict; our `teacher_backbone.safetensors` (metadata `webdino_arch`:
 *   JSON {arch, embed_dim, depth, num_heads, patch_size, img_size}; a DINOv2 recipe's export adds
 *   family 'dinov2' and its position-embedding interpolation, and takes the DINOv2 path with those
 *   heads); or our training checkpoint (metadata `webdino`: the entries under `<checkpointKey>.`,
 *   config in the metadata; a DINOv2 recipe's checkpoint also takes the DINOv2 path).
 * - Names: leading `module.` and `backbone.` are stripped (repeatedly), then `head.*` entries (the
 *   DINO projection head of a full checkpoint) are dropped. Loading is strict: any missing or
 *   unexpected name or shape mismatch is one error listing them all.
 *
 * Architecture, in order: the request (`--arch`, checked against what the file records, a
 * difference is an error); what the file records; otherwise inferred from the shapes (embed dim
 * from cls_token, depth from the block count, patch from patch_embed.proj.weight) when they match a
 * preset (vit_tiny/small/base have depth 12 and widths 192/384/768); otherwise DINO's default
 * vit_small/16. The model's imgSize follows pos_embed (grid² + 1 rows), so other input sizes use
 * DINO's position-embedding interpolation.
 *
 * DINOv2 / DINOv3 backbones take their own path (buildDinoBackbone) when the request names one of
 * their presets (`dinov2_vits14` … `dinov3_vit7b16`, models/io/dino-arch.ts) or the tensors are
 * theirs: any Hugging Face Dinov2 / DINOv3 layout, DINOv3's official keys (rope_embed.periods,
 * storage_tokens, bias_mask, w1/w2/w3), or official DINOv2 keys with something DINO v1 lacks
 * (mask_token, register_tokens, ls1.gamma, mlp.w12). A DINOv2 training checkpoint's block chunks
 * (`blocks.<chunk>.<i>.`) are flattened and its `dino_head.` / `ibot_head.` entries dropped. The
 * keys are renamed to the official names (models/io/dino-keys.ts `canonicalDinoBackbone`), the
 * architecture is inferred from them (heads = width/64 unless the request or a preset says
 * otherwise; DINOv3's periods buffer fixes the head dim) and checked strictly (one error, key
 * lists capped at 12), then the ViT is built (models/vit.ts `dinoViTConfig`) and loaded. Anything
 * else is DINO v1, exactly as before.
 */
import type { Engine } from '../engine/engine.js';
import { Rng } from '../engine/random.js';
import { DINO_PRESETS, type DinoArch, type DinoArchOptions, type DinoPresetName, describeDinoArch, dinoPreset } from './io/dino-arch.js';
import { canonicalDinoBackbone, type DinoBackboneWeights, detectDinoLayout } from './io/dino-keys.js';
import { parseSafetensorsWithMetadata } from './io/safetensors.js';
import { sniffFormat, wrongFormatMessage } from './io/sniff.js';
import { selectCheckpointEntry, stripPrefixes } from './io/state-dict.js';
import { flattenStateDict, loadTorchCheckpoint, loadTorchCheckpointAsync } from './io/torch.js';
import type { InflateRaw, InflateRawSync } from './io/zip.js';
import { dinoViTConfig, VIT_PRESETS, type ViTArch, vitConfig, type ViTConfig, VisionTransformer } from './vit.js';

/** A ViT architecture as `webdino` names it. */
export interface ArchSpec {
  /** DINO v1 preset, 'custom', or the DINOv2 / DINOv3 preset the tensors match. */
  arch: ViTArch | 'custom' | DinoPresetName;
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  /** Training image size recorded with the weights (informative; the model follows pos_embed). */
  imgSize?: number;
  /** DINOv2 / DINOv3: the whole architecture (absent for DINO v1). */
  dino?: DinoArch;
}

/** What the command line asks for (every field optional). */
export interface ArchRequest {
  /** A DINO v1 preset, 'custom', or a DINOv2 / DINOv3 preset name (`dinov2_vits14_reg`, `dinov3_vitl16`, ...). */
  arch?: ViTArch | 'custom' | DinoPresetName;
  patchSize?: number;
  embedDim?: number;
  depth?: number;
  numHeads?: number;
}

type Weights = Map<string, { shape: number[]; data: Float32Array }>;

/** A weights file reduced to backbone entries. */
export interface BackboneWeights {
  format: 'torch' | 'safetensors';
  /** Backbone tensors under the official names (cls_token, blocks.0.attn.qkv.weight, ...). */
  tensors: Weights;
  /** The architecture the file records (our exports and training checkpoints), if any. */
  recorded?: ArchSpec;
  /**
   * What our DINOv2-recipe exports and checkpoints record beyond the tensors (the head count, the
   * position-embedding resize): such weights take the DINOv2 path with these. Absent otherwise.
   */
  recordedDino?: Pick<DinoArchOptions, 'numHeads' | 'interpolation'> & { imgSize?: number };
  /** Number of `head.*` entries dropped. */
  droppedHead: number;
}

/** Options of {@link parseBackboneWeights}. */
export interface ParseWeightsOptions {
  /** The checkpoint entry holding the backbone ('teacher', as DINO's eval code). */
  checkpointKey?: string;
  /** The file's name, for messages. */
  name?: string;
  /** Raw-deflate decompression for zip entries a torch file compressed (Node: zlib). */
  inflateRaw?: InflateRawSync;
  /**
   * Bytes a PyTorch checkpoint may allocate while loading (default 8× the file, at least 64 MiB:
   * see models/io/budget.ts); raise it for a trusted file that expands more (shared storages).
   */
  maxBytes?: number;
}

/**
 * Reads a weights file's bytes down to the backbone entries (see the file header for the layouts).
 * Throws with the reason; callers prefix the file name.
 */
export function parseBackboneWeights(bytes: Uint8Array, opts: ParseWeightsOptions = {}): BackboneWeights {
  const key = opts.checkpointKey ?? 'teacher';
  let raw: Weights;
  let recorded: ArchSpec | undefined;
  let recordedDino: BackboneWeights['recordedDino'];
  let format: BackboneWeights['format'];
  const found = sniffFormat(bytes);
  if (found === 'zip' || found === 'torch-legacy') {
    format = 'torch';
    const ckpt = loadTorchCheckpoint(bytes, { name: opts.name ?? 'weights', inflateRaw: opts.inflateRaw, maxBytes: opts.maxBytes });
    raw = flattenStateDict(selectCheckpointEntry(ckpt, key));
  } else if (found !== 'safetensors' && found !== 'unknown' && found !== 'empty') {
    // A known other format: say what it is. An unknown one goes to the safetensors parser, whose
    // message says exactly what is wrong with the header (length past the end, bad JSON, ...).
    throw new Error(wrongFormatMessage(bytes, found, 'a weights file (safetensors or a PyTorch checkpoint)'));
  } else {
    format = 'safetensors';
    const { tensors, metadata } = parseSafetensorsWithMetadata(bytes);
    raw = tensors;
    if (metadata.webdino !== undefined) {
      // A training checkpoint: student.* / teacher.* (+ optimizer state).
      const prefix = `${key}.`;
      raw = new Map([...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
      if (!raw.size) throw new Error(`training checkpoint has no '${key}' entries (use --checkpoint-key student or teacher)`);
      recordedDino = dinoFromTrainingMeta(metadata.webdino);
      if (!recordedDino) recorded = archFromTrainingMeta(metadata.webdino);
    } else if (metadata.webdino_arch !== undefined) {
      recordedDino = dinoFromExportMeta(metadata.webdino_arch);
      if (!recordedDino) recorded = archFromExportMeta(metadata.webdino_arch);
    }
  }
  return backboneEntries(raw, format, recorded, recordedDino);
}

/**
 * {@link parseBackboneWeights} for browsers: the deflate-compressed entries of a zip (rare: torch
 * never compresses, but a re-zipped file may be) are inflated asynchronously, with `inflateRaw`
 * if given, else the platform's `DecompressionStream('deflate-raw')`; everything else is the
 * synchronous path.
 */
export async function parseBackboneWeightsAsync(
  bytes: Uint8Array,
  opts: Omit<ParseWeightsOptions, 'inflateRaw'> & { inflateRaw?: InflateRaw } = {},
): Promise<BackboneWeights> {
  const { inflateRaw, ...rest } = opts;
  if (sniffFormat(bytes) !== 'zip') return parseBackboneWeights(bytes, rest);
  const ckpt = await loadTorchCheckpointAsync(bytes, { name: opts.name ?? 'weights', inflateRaw, maxBytes: opts.maxBytes });
  return backboneEntries(flattenStateDict(selectCheckpointEntry(ckpt, opts.checkpointKey ?? 'teacher')), 'torch', undefined);
}

/** Official names with prefixes stripped and head entries dropped (see the file header). */
function backboneEntries(raw: Weights, format: BackboneWeights['format'], recorded: ArchSpec | undefined, recordedDino?: BackboneWeights['recordedDino']): BackboneWeights {
  const stripped = stripPrefixes(raw);
  const tensors: Weights = new Map();
  let droppedHead = 0;
  for (const [k, v] of stripped) {
    // DINO's projection head; DINOv2 training checkpoints' dino_head / ibot_head.
    if (k.startsWith('head.') || k.startsWith('dino_head.') || k.startsWith('ibot_head.')) droppedHead++;
    else tensors.set(k, v);
  }
  return { format, tensors, recorded, ...(recordedDino ? { recordedDino } : {}), droppedHead };
}

/** The DINOv2 part of a `webdino_arch` export metadata (family 'dinov2'), else undefined. */
function dinoFromExportMeta(json: string): BackboneWeights['recordedDino'] {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(json) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`bad webdino_arch metadata: ${(e as Error).message}`);
  }
  if (m?.family !== 'dinov2') return undefined;
  try {
    const i = m.interpolation as Record<string, unknown> | undefined;
    if (!i || typeof i.antialias !== 'boolean' || typeof i.offset !== 'number' || !(i.offset >= 0 && i.offset < 1)) {
      throw new Error(`interpolation ${JSON.stringify(i)} is not {antialias: boolean, offset in [0, 1)}`);
    }
    return {
      numHeads: positiveInt(m.num_heads, 'num_heads'),
      interpolation: { antialias: i.antialias, offset: i.offset },
      ...(m.img_size === undefined ? {} : { imgSize: positiveInt(m.img_size, 'img_size') }),
    };
  } catch (e) {
    throw new Error(`bad webdino_arch metadata: ${(e as Error).message}`);
  }
}

/** The DINOv2 part of a DINOv2-recipe training checkpoint's metadata, else undefined. */
function dinoFromTrainingMeta(json: string): BackboneWeights['recordedDino'] {
  let m: { format?: unknown; config?: Record<string, unknown> };
  try {
    m = JSON.parse(json) as typeof m;
  } catch (e) {
    throw new Error(`bad webdino training-checkpoint metadata: ${(e as Error).message}`);
  }
  if (m?.format !== 'webdino-dinov2-checkpoint-v1') return undefined;
  try {
    // The recipe's backbone resizes pos_embed as DINO does (vitConfig's default).
    const c = m.config;
    return {
      numHeads: positiveInt(c?.numHeads, 'numHeads'),
      interpolation: { ...vitConfig({}).posEmbedInterpolation },
      ...(c?.globalSize === undefined ? {} : { imgSize: positiveInt(c.globalSize, 'globalSize') }),
    };
  } catch (e) {
    throw new Error(`bad webdino training-checkpoint metadata: ${(e as Error).message}`);
  }
}

function positiveInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new Error(`${what} is not a positive integer (${JSON.stringify(v)})`);
  return v;
}

function archName(v: unknown): ViTArch | 'custom' {
  if (v === 'custom' || (typeof v === 'string' && Object.hasOwn(VIT_PRESETS, v))) return v as ViTArch | 'custom';
  throw new Error(`unknown arch ${JSON.stringify(v)}`);
}

/** Parses the `webdino_arch` metadata of `exportTeacherBackbone`. */
export function archFromExportMeta(json: string): ArchSpec {
  try {
    const m = JSON.parse(json) as Record<string, unknown>;
    return {
      arch: archName(m.arch),
      embedDim: positiveInt(m.embed_dim, 'embed_dim'),
      depth: positiveInt(m.depth, 'depth'),
      numHeads: positiveInt(m.num_heads, 'num_heads'),
      patchSize: positiveInt(m.patch_size, 'patch_size'),
      imgSize: m.img_size === undefined ? undefined : positiveInt(m.img_size, 'img_size'),
    };
  } catch (e) {
    throw new Error(`bad webdino_arch metadata: ${(e as Error).message}`);
  }
}

function archFromTrainingMeta(json: string): ArchSpec {
  try {
    const c = (JSON.parse(json) as { config?: Record<string, unknown> }).config ?? {};
    return {
      arch: archName(c.arch),
      embedDim: positiveInt(c.embedDim, 'embedDim'),
      depth: positiveInt(c.depth, 'depth'),
      numHeads: positiveInt(c.numHeads, 'numHeads'),
      patchSize: positiveInt(c.patchSize, 'patchSize'),
      imgSize: c.globalSize === undefined ? undefined : positiveInt(c.globalSize, 'globalSize'),
    };
  } catch (e) {
    throw new Error(`bad webdino training-checkpoint metadata: ${(e as Error).message}`);
  }
}

/** `vit_small/16 (dim 384, depth 12, 6 heads)`; DINOv2 / DINOv3: models/io/dino-arch.ts `describeDinoArch`. */
export function describeArch(a: ArchSpec): string {
  if (a.dino) return describeDinoArch(a.dino);
  return `${a.arch}/${a.patchSize} (dim ${a.embedDim}, depth ${a.depth}, ${a.numHeads} heads)`;
}

/** What the shapes of a ViT state dict tell: embed dim, depth, patch size (each when present). */
export function inferArchFromShapes(tensors: ReadonlyMap<string, { shape: readonly number[] }>): Partial<ArchSpec> {
  const out: Partial<ArchSpec> = {};
  const cls = tensors.get('cls_token')?.shape;
  if (cls?.length === 3) out.embedDim = cls[2];
  const blocks = new Set<number>();
  for (const k of tensors.keys()) {
    const m = /^blocks\.(\d+)\./.exec(k);
    if (m) blocks.add(Number(m[1]));
  }
  if (blocks.size) out.depth = blocks.size;
  const w = tensors.get('patch_embed.proj.weight')?.shape;
  if (w?.length === 4 && w[2] === w[3]) out.patchSize = w[2];
  return out;
}

/**
 * The architecture to build (see the file header for the order of sources). Throws when the
 * command line contradicts what the file records, or a custom ViT lacks a dimension.
 */
export function resolveArch(req: ArchRequest, weights: Pick<BackboneWeights, 'tensors' | 'recorded'>): ArchSpec {
  if (isDinoPresetName(req.arch)) throw new Error(`--arch ${req.arch} is a DINOv2 / DINOv3 preset (buildBackbone loads those)`);
  const rec = weights.recorded;
  const shapes = inferArchFromShapes(weights.tensors);
  let spec: ArchSpec;
  if (req.arch !== undefined) {
    const preset = req.arch === 'custom' ? undefined : VIT_PRESETS[req.arch];
    const pick = (field: 'embedDim' | 'depth' | 'numHeads', flag: string): number => {
      const v = preset?.[field] ?? req[field] ?? rec?.[field] ?? (field === 'numHeads' ? undefined : shapes[field]);
      if (v === undefined) throw new Error(`--arch custom needs ${flag}`);
      return v;
    };
    spec = {
      arch: req.arch,
      embedDim: pick('embedDim', '--embed-dim'),
      depth: pick('depth', '--depth'),
      numHeads: pick('numHeads', '--heads'),
      patchSize: req.patchSize ?? rec?.patchSize ?? shapes.patchSize ?? 16,
      imgSize: rec?.imgSize,
    };
    if (rec) {
      const namesDiffer = spec.arch !== 'custom' && rec.arch !== 'custom' && spec.arch !== rec.arch;
      const dimsDiffer = (['embedDim', 'depth', 'numHeads', 'patchSize'] as const).some((k) => spec[k] !== rec[k]);
      if (namesDiffer || dimsDiffer) {
        throw new Error(`the weights record the architecture ${describeArch(rec)}, but the command line asks for ${describeArch(spec)}`);
      }
    }
  } else if (rec) {
    if (req.patchSize !== undefined && req.patchSize !== rec.patchSize) {
      throw new Error(`the weights record the architecture ${describeArch(rec)}, but --patch-size is ${req.patchSize}`);
    }
    spec = { ...rec };
  } else {
    const match = (Object.keys(VIT_PRESETS) as ViTArch[]).find(
      (a) => VIT_PRESETS[a].embedDim === shapes.embedDim && VIT_PRESETS[a].depth === shapes.depth,
    );
    if (!match && shapes.embedDim !== undefined && shapes.depth !== undefined) {
      throw new Error(
        `cannot tell the architecture of weights with dim ${shapes.embedDim} and depth ${shapes.depth} (no preset matches): pass --arch custom --embed-dim --depth --heads`,
      );
    }
    const arch = match ?? 'vit_small';
    spec = { arch, ...VIT_PRESETS[arch], patchSize: req.patchSize ?? shapes.patchSize ?? 16 };
  }
  if (spec.embedDim % spec.numHeads !== 0) throw new Error(`embed dim ${spec.embedDim} is not divisible by ${spec.numHeads} heads`);
  if (req.numHeads !== undefined && req.numHeads !== spec.numHeads) throw new Error(`--heads ${req.numHeads} contradicts the architecture ${describeArch(spec)}`);
  checkSpecAgainstShapes(spec, weights.tensors);
  return spec;
}

/**
 * Refuses, before anything is allocated, an architecture whose parameters would far outgrow the
 * file: a file whose metadata (or command line) claims dim 4096 × depth 48 while holding a tiny
 * model would otherwise allocate gigabytes only to fail strict loading, or crash allocating them.
 * "Far" is more than 4× the file's elements plus 10⁸ (400 MB): every honest mismatch (a block more or
 * less, another preset of a small model) is smaller and goes on to strict loading, whose error lists
 * each key.
 */
export function checkSpecAgainstShapes(spec: ArchSpec, tensors: ReadonlyMap<string, { shape: readonly number[] }>): void {
  let held = 0;
  for (const t of tensors.values()) held += t.shape.reduce((a, b) => a * b, 1);
  const D = spec.embedDim;
  const pos = tensors.get('pos_embed')?.shape;
  const posRows = pos?.length === 3 ? pos[1] : Math.floor((spec.imgSize ?? 224) / spec.patchSize) ** 2 + 1;
  // patch embed, cls token, position embedding, final norm; per block: norms, qkv, proj, MLP (4D)
  const wanted = D * 3 * spec.patchSize ** 2 + D + D + posRows * D + 2 * D + spec.depth * (12 * D * D + 13 * D);
  if (wanted > 4 * held + 1e8) {
    const shapes = inferArchFromShapes(tensors);
    const seen = [shapes.embedDim && `dim ${shapes.embedDim}`, shapes.depth && `depth ${shapes.depth}`, shapes.patchSize && `patch ${shapes.patchSize}`].filter(Boolean).join(', ');
    throw new Error(
      `the architecture ${describeArch(spec)} has ${wanted.toLocaleString('en')} parameters, but the file holds ${held.toLocaleString('en')} values` +
        (seen ? ` (its tensors say ${seen})` : '') + ': refusing to build it',
    );
  }
}

/**
 * Refuses weights holding NaN or ±Inf: every feature computed from them would be NaN, and a file
 * like that is damaged (or a diverged run's), not something to embed with.
 */
export function checkFinite(tensors: ReadonlyMap<string, { data: Float32Array }>): void {
  const bad: string[] = [];
  for (const [name, t] of tensors) {
    let n = 0;
    for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) n++;
    if (n) bad.push(`${name} (${n} of ${t.data.length})`);
  }
  if (bad.length) {
    throw new Error(`the weights hold NaN or infinite values in ${bad.length} tensor${bad.length === 1 ? '' : 's'}: ${bad.slice(0, 5).join(', ')}${bad.length > 5 ? `, and ${bad.length - 5} more` : ''}`);
  }
}

/** The ViT config of a spec; imgSize from pos_embed's grid (grid² + 1 rows) when it has one. */
export function vitConfigFor(spec: ArchSpec, tensors: ReadonlyMap<string, { shape: readonly number[] }>): ViTConfig {
  let imgSize = spec.imgSize ?? 224;
  const pos = tensors.get('pos_embed')?.shape;
  if (pos?.length === 3) {
    const grid = Math.round(Math.sqrt(pos[1] - 1));
    if (grid >= 1 && grid * grid === pos[1] - 1) imgSize = grid * spec.patchSize;
  }
  return vitConfig({ embedDim: spec.embedDim, depth: spec.depth, numHeads: spec.numHeads }, { patchSize: spec.patchSize, imgSize });
}

/** A loaded backbone (in eval mode; the caller disposes it). */
export interface LoadedBackbone {
  model: VisionTransformer;
  spec: ArchSpec;
  weights: BackboneWeights;
  /** DINOv2 / DINOv3: the layout read, and the canonical keys recreated rather than read. */
  dino?: Pick<DinoBackboneWeights, 'layout' | 'synthesized'>;
}

// -------------------------------------------------------------------------------------------------
// DINOv2 / DINOv3

/** Whether `name` is a DINOv2 / DINOv3 preset (`dinov2_vits14`, `dinov3_vits16plus`, ...). */
export function isDinoPresetName(name: unknown): name is DinoPresetName {
  return typeof name === 'string' && Object.hasOwn(DINO_PRESETS, name);
}

/** Keys that DINOv2 checkpoints have and DINO v1 checkpoints lack (both share the official layout). */
const DINOV2_ONLY = /^(mask_token|register_tokens|blocks\.\d+\.(ls[12]\.gamma|mlp\.w12\.\w+|mlp\.w3\.\w+))$/;

/**
 * Whether a backbone state dict is DINOv2 / DINOv3 rather than DINO v1 (see the file header); our
 * own exports, which record a v1 architecture, never are.
 */
export function isDinoV2V3Weights(weights: Pick<BackboneWeights, 'tensors' | 'recorded' | 'recordedDino'>): boolean {
  if (weights.recordedDino) return true;
  if (weights.recorded) return false;
  const keys = [...weights.tensors.keys()].map((k) => k.replace(/^blocks\.\d+\.(\d+)\./, 'blocks.$1.'));
  let layout;
  try {
    layout = detectDinoLayout(keys);
  } catch {
    return false;
  }
  return layout !== 'dinov2' || keys.some((k) => DINOV2_ONLY.test(k));
}

/**
 * DINOv2's `block_chunks` layout (training checkpoints): `blocks.<chunk>.<i>.…` → `blocks.<i>.…`
 * (the chunks pad with Identity modules, so the inner index is already global).
 */
function unchunkBlocks<T>(tensors: ReadonlyMap<string, T>): Map<string, T> {
  const out = new Map<string, T>();
  for (const [k, v] of tensors) {
    const name = k.replace(/^blocks\.\d+\.(\d+)\./, 'blocks.$1.');
    if (out.has(name)) throw new Error(`'${k}' and another key both name '${name}'`);
    out.set(name, v);
  }
  return out;
}

/** The fields in which an architecture differs from a preset (its pos_embed grid aside: fine-tuned files may have another). */
function presetDifferences(preset: DinoArch, got: DinoArch): string[] {
  const fields = ['family', 'embedDim', 'depth', 'numHeads', 'patchSize', 'numRegisterTokens', 'ffn', 'ffnHidden', 'layerScale', 'qkvBias', 'maskKeyBias', 'hasMaskToken'] as const;
  const out: string[] = fields.filter((f) => preset[f] !== got[f]).map((f) => `${f} ${got[f]} (preset ${preset[f]})`);
  if (preset.posEmbed.kind !== got.posEmbed.kind) out.push(`position embedding ${got.posEmbed.kind} (preset ${preset.posEmbed.kind})`);
  return out;
}

/**
 * A DINOv2 / DINOv3 backbone from parsed weights (see the file header): canonical names, the
 * architecture inferred (the request's preset or --heads fix the heads and are checked), strict
 * loading, eval mode. Every error starts with `name`.
 */
export function buildDinoBackbone(engine: Engine, weights: BackboneWeights, req: ArchRequest = {}, name = 'weights'): LoadedBackbone {
  let dino: DinoBackboneWeights;
  try {
    if (req.arch !== undefined && req.arch !== 'custom' && !isDinoPresetName(req.arch)) {
      throw new Error(`these are DINOv2 / DINOv3 weights, but --arch ${req.arch} is a DINO v1 ViT (use a DINOv2 / DINOv3 preset, e.g. dinov2_vits14, or leave --arch out)`);
    }
    const preset = isDinoPresetName(req.arch) ? dinoPreset(req.arch) : undefined;
    const numHeads = req.numHeads ?? preset?.numHeads ?? weights.recordedDino?.numHeads;
    const interpolation = weights.recordedDino?.interpolation;
    try {
      dino = canonicalDinoBackbone(unchunkBlocks(weights.tensors), { numHeads, source: name, ...(interpolation ? { interpolation } : {}) });
    } catch (e) {
      if (!preset) throw e;
      throw new Error(`${(e as Error).message} (--arch ${req.arch} is ${describeDinoArch(preset)})`, { cause: e });
    }
    const a = dino.arch;
    const problems = preset ? presetDifferences(preset, a) : [];
    if (req.embedDim !== undefined && req.embedDim !== a.embedDim) problems.push(`embed dim ${a.embedDim} (--embed-dim ${req.embedDim})`);
    if (req.depth !== undefined && req.depth !== a.depth) problems.push(`depth ${a.depth} (--depth ${req.depth})`);
    if (req.patchSize !== undefined && req.patchSize !== a.patchSize) problems.push(`patch ${a.patchSize} (--patch-size ${req.patchSize})`);
    if (problems.length) throw new Error(`${name}: the weights hold ${describeDinoArch(a)}, not what the command line asks for: ${problems.join('; ')}`);
    checkFinite(weights.tensors);
  } catch (e) {
    const message = (e as Error).message;
    if (message.startsWith(name)) throw e;
    throw new Error(`${name}: ${message}`, { cause: e });
  }
  const a = dino.arch;
  const imgSize = weights.recordedDino?.imgSize;
  const spec: ArchSpec = { arch: dino.preset ?? 'custom', embedDim: a.embedDim, depth: a.depth, numHeads: a.numHeads, patchSize: a.patchSize, ...(imgSize ? { imgSize } : {}), dino: a };
  const model = new VisionTransformer({ engine, rng: new Rng(0) }, dinoViTConfig(a));
  try {
    model.loadStateDict(dino.tensors);
  } catch (e) {
    model.dispose();
    throw new Error(`${name} (as ${describeArch(spec)}): ${(e as Error).message}`, { cause: e });
  }
  model.eval();
  return { model, spec, weights, dino: { layout: dino.layout, synthesized: dino.synthesized } };
}

/**
 * Resolves the architecture, builds the ViT and loads the weights strictly (eval mode; the caller
 * disposes the model); DINOv2 / DINOv3 weights or requests go to {@link buildDinoBackbone}. `name`
 * prefixes every error; a strict-loading error lists every missing,
 * unexpected and mismatched key.
 */
export function buildBackbone(engine: Engine, weights: BackboneWeights, req: ArchRequest = {}, name = 'weights'): LoadedBackbone {
  if (isDinoPresetName(req.arch) || isDinoV2V3Weights(weights)) return buildDinoBackbone(engine, weights, req, name);
  let spec: ArchSpec;
  try {
    spec = resolveArch(req, weights);
    checkFinite(weights.tensors);
  } catch (e) {
    throw new Error(`${name}: ${(e as Error).message}`, { cause: e });
  }
  const model = new VisionTransformer({ engine, rng: new Rng(0) }, vitConfigFor(spec, weights.tensors));
  try {
    model.loadStateDict(weights.tensors);
  } catch (e) {
    model.dispose();
    throw new Error(`${name} (as ${describeArch(spec)}): ${(e as Error).message}`, { cause: e });
  }
  model.eval();
  return { model, spec, weights };
}
