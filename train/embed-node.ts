/**
 * What `webdino embed` and `webdino attention` do, without the command line: load a ViT backbone
 * from a weights file (safetensors or a PyTorch checkpoint), find its architecture, read the input
 * images (a folder of JPEG/PNG, one image, or a normalised NCHW .npy), and run the backbone in
 * batches to get CLS features [N, D] and, optionally, the last layer's CLS attention
 * [N, heads, patches]. Node only (reads files).
 *
 * Weights
 * - A PyTorch checkpoint (zip or legacy pickle; only the tensor-rebuild globals are allowed, so a
 *   pickle naming os.system is refused before anything runs): the entry `checkpointKey` (default
 *   'teacher', as DINO's eval code), else 'state_dict'/'model', else the top-level dict itself.
 * - safetensors: a bare state dict; our `teacher_backbone.safetensors` (metadata `webdino_arch`:
 *   JSON {arch, embed_dim, depth, num_heads, patch_size, img_size}); or our training checkpoint
 *   (metadata `webdino`: the entries under `<checkpointKey>.`, config in the metadata).
 * - Names: leading `module.` and `backbone.` are stripped (repeatedly), then `head.*` entries (the
 *   DINO projection head of a full checkpoint) are dropped. Loading is strict: any missing or
 *   unexpected name or shape mismatch is one error listing them all.
 *
 * Architecture, in order: the command line (`--arch`, checked against what the file records, a
 * difference is an error); what the file records; otherwise inferred from the shapes (embed dim
 * from cls_token, depth from the block count, patch from patch_embed.proj.weight) when they match a
 * preset (vit_tiny/small/base have depth 12 and widths 192/384/768); otherwise DINO's default
 * vit_small/16. The model's imgSize follows pos_embed (grid² + 1 rows), so other input sizes use
 * DINO's position-embedding interpolation.
 *
 * Features: exactly `VisionTransformer.forward` (final norm, CLS row). The attention comes from the
 * same pass (the last block asked for its probabilities): row 0 (the CLS query) of
 * [B, heads, N, N], columns of the patch tokens (the CLS column is dropped).
 */
import { readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { cropBatchRaw, IMAGENET_NORM, uploadImages } from '../kernels/augment.js';
import { decodeImage, type RgbImage } from '../models/io/image.js';
import { readBytes, nodeInflateRaw } from '../models/io/node-files.js';
import { parseNpy } from '../models/io/npy.js';
import { looksLikeLegacyTorch, looksLikeSafetensors, parseSafetensorsWithMetadata } from '../models/io/safetensors.js';
import { selectCheckpointEntry, stripPrefixes } from '../models/io/state-dict.js';
import { flattenStateDict, loadTorchCheckpoint } from '../models/io/torch.js';
import { looksLikeZip } from '../models/io/zip.js';
import { Rng } from '../engine/random.js';
import { VIT_PRESETS, type ViTArch, vitConfig, type ViTConfig, VisionTransformer } from '../models/vit.js';
import { evalCropParams, evalTransform } from './augment.js';

/** A ViT architecture as `webdino` names it. */
export interface ArchSpec {
  arch: ViTArch | 'custom';
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  /** Training image size recorded with the weights (informative; the model follows pos_embed). */
  imgSize?: number;
}

/** What the command line asks for (every field optional). */
export interface ArchRequest {
  arch?: ViTArch | 'custom';
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
  /** Number of `head.*` entries dropped. */
  droppedHead: number;
}

/** Reads the weights file; every error names the file. */
export async function readBackboneWeights(path: string, opts: { checkpointKey?: string } = {}): Promise<BackboneWeights> {
  const key = opts.checkpointKey ?? 'teacher';
  try {
    const bytes = await readBytes(path);
    let raw: Weights;
    let recorded: ArchSpec | undefined;
    let format: BackboneWeights['format'];
    if (!looksLikeSafetensors(bytes) && (looksLikeZip(bytes) || looksLikeLegacyTorch(bytes))) {
      format = 'torch';
      const ckpt = loadTorchCheckpoint(bytes, { name: basename(path), inflateRaw: nodeInflateRaw });
      raw = flattenStateDict(selectCheckpointEntry(ckpt, key));
    } else {
      format = 'safetensors';
      const { tensors, metadata } = parseSafetensorsWithMetadata(bytes);
      raw = tensors;
      if (metadata.webdino !== undefined) {
        // A training checkpoint: student.* / teacher.* (+ optimizer state).
        const prefix = `${key}.`;
        raw = new Map([...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
        if (!raw.size) throw new Error(`training checkpoint has no '${key}' entries (use --checkpoint-key student or teacher)`);
        recorded = archFromTrainingMeta(metadata.webdino);
      } else if (metadata.webdino_arch !== undefined) {
        recorded = archFromExportMeta(metadata.webdino_arch);
      }
    }
    const stripped = stripPrefixes(raw);
    const tensors: Weights = new Map();
    let droppedHead = 0;
    for (const [k, v] of stripped) {
      if (k.startsWith('head.')) droppedHead++;
      else tensors.set(k, v);
    }
    return { format, tensors, recorded, droppedHead };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const message = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a directory' : (err.message ?? String(e));
    throw new Error(`weights ${path}: ${message}`, { cause: e });
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

/** `vit_small/16 (dim 384, depth 12, 6 heads)`. */
export function describeArch(a: ArchSpec): string {
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
  return spec;
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
}

/**
 * Reads the weights, resolves the architecture, builds the ViT and loads the weights strictly.
 * Errors name the file; a strict-loading error lists every missing, unexpected and mismatched key.
 */
export async function loadBackbone(engine: Engine, path: string, req: ArchRequest & { checkpointKey?: string } = {}): Promise<LoadedBackbone> {
  const weights = await readBackboneWeights(path, { checkpointKey: req.checkpointKey });
  let spec: ArchSpec;
  try {
    spec = resolveArch(req, weights);
  } catch (e) {
    throw new Error(`weights ${path}: ${(e as Error).message}`, { cause: e });
  }
  const model = new VisionTransformer({ engine, rng: new Rng(0) }, vitConfigFor(spec, weights.tensors));
  try {
    model.loadStateDict(weights.tensors);
  } catch (e) {
    model.dispose();
    throw new Error(`weights ${path} (as ${describeArch(spec)}): ${(e as Error).message}`, { cause: e });
  }
  model.eval();
  return { model, spec, weights };
}

// -------------------------------------------------------------------------------------------------
// Inputs

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png']);

/** JPEG/PNG files (by extension, case-insensitive) directly in `dir`, sorted by name. */
export function listImageFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => (d.isFile() || d.isSymbolicLink()) && IMAGE_EXTENSIONS.has(extname(d.name).toLowerCase()))
    .map((d) => d.name)
    .sort()
    .map((n) => join(dir, n));
}

/** The input of `embed`: image files, or an already normalised NCHW array. */
export type EmbedInput =
  | { kind: 'images'; files: string[] }
  | { kind: 'array'; data: Float32Array; shape: [number, number, number, number] };

/**
 * Opens `path`: a folder (its JPEG/PNG files, sorted), one JPEG/PNG file, or a float .npy of shape
 * [N, 3, H, W]. Throws with the reason otherwise.
 */
export async function openEmbedInput(path: string): Promise<EmbedInput> {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new Error(`input ${path}: no such file or folder`);
  }
  if (st.isDirectory()) {
    const files = listImageFiles(path);
    if (!files.length) throw new Error(`input ${path}: no .jpg, .jpeg or .png files in this folder`);
    return { kind: 'images', files };
  }
  const ext = extname(path).toLowerCase();
  if (IMAGE_EXTENSIONS.has(ext)) return { kind: 'images', files: [path] };
  if (ext !== '.npy') throw new Error(`input ${path}: expected a folder of images, a .jpg/.png file or an NCHW .npy array`);
  try {
    const a = parseNpy(await readBytes(path));
    if (!/^[<>|=]?f\d+$/.test(a.descr)) throw new Error(`dtype '${a.descr}' is not floating point (the array must hold normalised pixels)`);
    if (a.shape.length !== 4 || a.shape[1] !== 3) throw new Error(`shape [${a.shape.join(', ')}] is not [N, 3, H, W]`);
    if (a.shape[0] < 1) throw new Error('the array holds no images');
    return { kind: 'array', data: a.data, shape: a.shape as [number, number, number, number] };
  } catch (e) {
    throw new Error(`input ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Reads and decodes one image; the error names the file. */
export async function readImage(path: string): Promise<RgbImage> {
  try {
    return decodeImage(await readBytes(path));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}

// -------------------------------------------------------------------------------------------------
// Forward

/**
 * One pass of the backbone: CLS features [B, D] (= `model.forward(x)`) and, when asked, the last
 * layer's CLS attention over the patch tokens [B, heads, patches] (contiguous).
 */
export function embedForward(model: VisionTransformer, x: Tensor, withAttention: boolean): { features: Tensor; attention?: Tensor } {
  let t = model.prepareTokens(x);
  const L = model.blocks.length;
  for (let i = 0; i < L - 1; i++) t = model.blocks[i].forward(t).out;
  const last = model.blocks[L - 1].forward(t, withAttention);
  const [B, N, D] = last.out.shape;
  const features = model.norm.forward(last.out).slice(1, 0, 1).reshape(B, D);
  if (!withAttention) return { features };
  const first = 1 + model.cfg.numRegisterTokens; // first patch token
  const attention = last.probs!.slice(2, 0, 1).slice(3, first, N).contiguous().reshape(B, model.cfg.numHeads, N - first);
  return { features, attention };
}

/** Options of {@link embedAll}. */
export interface EmbedOptions {
  batchSize: number;
  /** Side of the eval transform's centre crop (image inputs). */
  crop: number;
  /** Also return the last layer's CLS attention. */
  attention: boolean;
  /** Skip images that fail to decode (reported through onWarning) instead of failing. */
  skipBad?: boolean;
  onWarning?: (message: string) => void;
  /** After each batch: images done (including skipped ones) and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link embedAll} returns: row-major CPU arrays and their shapes. */
export interface EmbedResult {
  features: Float32Array;
  featuresShape: [number, number];
  attention?: Float32Array;
  attentionShape?: [number, number, number];
  /** Files skipped with `skipBad`. */
  skipped: string[];
  /** Wall time of the batch loop (decode, transform, forward, read-back). */
  seconds: number;
}

/**
 * Runs the backbone over the whole input in batches. Image inputs go through DINO's eval
 * transform (resize to round(crop·256/224), centre crop, ImageNet normalisation); arrays are used
 * as they are. Nothing is written; the caller writes the results.
 */
export async function embedAll(engine: Engine, model: VisionTransformer, input: EmbedInput, opts: EmbedOptions): Promise<EmbedResult> {
  const total = input.kind === 'images' ? input.files.length : input.shape[0];
  const D = model.cfg.embedDim;
  const feats: Float32Array[] = [];
  const attns: Float32Array[] = [];
  const skipped: string[] = [];
  let rows = 0;
  let patches = 0;
  const started = performance.now();
  for (let start = 0; start < total; start += opts.batchSize) {
    const end = Math.min(total, start + opts.batchSize);
    let makeBatch: () => Tensor;
    if (input.kind === 'images') {
      const images: RgbImage[] = [];
      for (const f of input.files.slice(start, end)) {
        try {
          images.push(await readImage(f));
        } catch (e) {
          if (!opts.skipBad) throw e;
          skipped.push(f);
          opts.onWarning?.(`skipping ${(e as Error).message}`);
        }
      }
      if (!images.length) {
        opts.onProgress?.(end, total);
        continue;
      }
      makeBatch = () => evalTransform(engine, images, { crop: opts.crop });
    } else {
      const [, C, H, W] = input.shape;
      const per = C * H * W;
      makeBatch = () => engine.tensor(input.data.subarray(start * per, end * per), [end - start, C, H, W]);
    }
    const out = await engine.noGrad(() =>
      engine.scope(async () => {
        const r = embedForward(model, makeBatch(), opts.attention);
        return { f: await r.features.toArray(), a: r.attention ? await r.attention.toArray() : undefined, p: r.attention?.shape[2] ?? 0 };
      }),
    );
    feats.push(out.f);
    rows += out.f.length / D;
    if (out.a) {
      attns.push(out.a);
      patches = out.p;
    }
    opts.onProgress?.(end, total);
  }
  const seconds = (performance.now() - started) / 1000;
  if (!rows) throw new Error(`none of the ${total} images could be read`);
  const join = (parts: Float32Array[]): Float32Array => {
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return all;
  };
  const result: EmbedResult = { features: join(feats), featuresShape: [rows, D], skipped, seconds };
  if (opts.attention) {
    result.attention = join(attns);
    result.attentionShape = [rows, model.cfg.numHeads, patches];
  }
  return result;
}

// -------------------------------------------------------------------------------------------------
// visualize_attention

/** What {@link computeAttentionMaps} returns. */
export interface AttentionMaps {
  /** The CLS attention of the last layer over the patches, [heads, h, w] row-major. */
  attention: Float32Array;
  heads: number;
  /** Patch grid rows and columns. */
  h: number;
  w: number;
  /** The model input (side × side crop) as 8-bit RGB, un-normalised. */
  image: RgbImage;
}

/**
 * DINO's visualize_attention.py up to the maps: resize the image to size × size (bicubic,
 * antialiased; DINO's Resize((480, 480)) is bilinear), keep the top-left crop whose side is a
 * multiple of the patch size, normalise (ImageNet), and take the last layer's CLS attention over
 * the patches of the one image.
 */
export async function computeAttentionMaps(engine: Engine, model: VisionTransformer, img: RgbImage, size: number): Promise<AttentionMaps> {
  const p = model.cfg.patchSize;
  const side = size - (size % p);
  if (side < p) throw new Error(`--image-size ${size} is smaller than the patch size ${p}`);
  return engine.noGrad(() =>
    engine.scope(async () => {
      const packed = uploadImages(engine, [img]);
      const params = { ...evalCropParams(0, img.width, img.height, size, 1), outW: size, outH: size, ox: 0, oy: 0 };
      const x = cropBatchRaw(engine, packed, [params], side, { norm: IMAGENET_NORM });
      packed.pixels.dispose();
      const { attention } = embedForward(model, x, true);
      const heads = model.cfg.numHeads;
      const attn = await attention!.toArray();
      const px = await x.toArray();
      const rgb = new Uint8Array(side * side * 3);
      for (let c = 0; c < 3; c++) {
        const { mean, std } = IMAGENET_NORM;
        for (let i = 0; i < side * side; i++) {
          rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round((px[c * side * side + i] * std[c] + mean[c]) * 255)));
        }
      }
      return { attention: attn, heads, h: side / p, w: side / p, image: { width: side, height: side, data: rgb } };
    }),
  );
}
