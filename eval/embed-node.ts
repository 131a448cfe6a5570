/**
 * What `webdino embed` does without the command line: read the input images (a folder of
 * JPEG/PNG, one image, or a normalised NCHW .npy) and run a backbone over them in batches, giving
 * CLS features [N, D] and, optionally, the normed patch tokens [N, h·w, D] (registers / storage
 * tokens excluded) and the last layer's CLS attention [N, heads, h·w]. Node only (reads files);
 * nothing is written, the caller writes the results.
 *
 * Image inputs go through the family's evaluation transform. The three coincide at crop 224:
 *   DINO       Resize(256, bicubic) + CenterCrop(224) + ImageNet normalisation (eval_linear.py)
 *   DINOv2     make_classification_eval_transform: Resize(256, bicubic) + CenterCrop(224) + ImageNet
 *   DINOv3     make_classification_eval_transform: Resize(RESIZE_DEFAULT_SIZE = 256, bicubic,
 *              shorter side, antialiased) + CenterCrop(224) + ImageNet
 * so one transform serves all: the shorter side to round(crop·256/224), centre crop `crop`,
 * normalisation `norm` (ImageNet; DINOv3's SAT-493M satellite weights expect their own, see
 * SAT493M_NORM). Arrays are used as given (NCHW, sides multiples of the patch).
 */
import { readdirSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import type { Normalisation } from '../kernels/augment.js';
import type { RgbImage } from '../models/io/image.js';
import { readBytes } from '../models/io/node-files.js';
import { parseNpy } from '../models/io/npy.js';
import type { VisionTransformer } from '../models/vit.js';
import { isImageName, listImageFiles, listImageFilesRecursive, readImage } from '../train/data/image-files-node.js';
import { evalTransform } from '../train/data/transforms.js';
import { embedForward } from './embed.js';

/** The input of `embed`: image files, or an already normalised NCHW array. */
export type EmbedInput =
  | { kind: 'images'; files: string[] }
  | { kind: 'array'; data: Float32Array; shape: [number, number, number, number] };

/**
 * Opens `path`: a folder (its JPEG/PNG files, sorted; with `recursive`, those of its whole tree:
 * listImageFilesRecursive), one JPEG/PNG file, or a float .npy of shape [N, 3, H, W]. Throws with
 * the reason otherwise.
 */
export async function openEmbedInput(path: string, opts: { recursive?: boolean } = {}): Promise<EmbedInput> {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new Error(`input ${path}: no such file or folder`);
  }
  if (st.isDirectory()) {
    const files = opts.recursive ? listImageFilesRecursive(path) : listImageFiles(path);
    if (!files.length) {
      const hint = opts.recursive || !readdirSync(path, { withFileTypes: true }).some((d) => d.isDirectory()) ? '' : ' (it has sub-folders: --recursive embeds the images in them)';
      throw new Error(`input ${path}: no .jpg, .jpeg or .png files in this ${opts.recursive ? 'folder tree' : 'folder'}${hint}`);
    }
    return { kind: 'images', files };
  }
  const ext = extname(path).toLowerCase();
  if (isImageName(path)) return { kind: 'images', files: [path] };
  if (ext !== '.npy') throw new Error(`input ${path}: expected a folder of images, a .jpg/.png file or an NCHW .npy array`);
  try {
    const a = parseNpy(await readBytes(path));
    if (!/^[<>|=]?f\d+$/.test(a.descr)) throw new Error(`dtype '${a.descr}' is not floating point (the array must hold normalised pixels)`);
    if (a.shape.length !== 4 || a.shape[1] !== 3) throw new Error(`shape [${a.shape.join(', ')}] is not [N, 3, H, W]`);
    if (a.shape[0] < 1) throw new Error('the array holds no images');
    const bad = a.data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new Error(`element ${bad} is ${a.data[bad]} (image ${Math.floor(bad / (a.shape[1] * a.shape[2] * a.shape[3]))}): the array must hold finite pixels`);
    return { kind: 'array', data: a.data, shape: a.shape as [number, number, number, number] };
  } catch (e) {
    throw new Error(`input ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** DINOv3's normalisation for its SAT-493M (satellite) weights (README: mean, std per channel). */
export const SAT493M_NORM: Normalisation = { mean: [0.43, 0.411, 0.296], std: [0.213, 0.156, 0.143] };

/** Options of {@link embedAll}. */
export interface EmbedOptions {
  batchSize: number;
  /** Side of the eval transform's centre crop (image inputs). */
  crop: number;
  /** Also return the last layer's CLS attention. */
  attention: boolean;
  /** Also return the normed patch tokens. */
  patchTokens?: boolean;
  /** Normalisation of image inputs (default ImageNet). */
  norm?: Normalisation;
  /** Divide each CLS feature by its L2 norm (cosine-ready rows, as curation compares them). */
  normalize?: boolean;
  /** Skip images that fail to decode (reported through onWarning) instead of failing. */
  skipBad?: boolean;
  /** With skipBad: return zero rows, rather than fail, when no image could be read (one shard of a pool). */
  allowNone?: boolean;
  /** Checked before each batch: once aborted, embedAll throws EmbedStoppedError. */
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  /** After each batch: images done (including skipped ones) and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** embedAll was stopped through its `signal` (Ctrl-C): nothing it computed is returned. */
export class EmbedStoppedError extends Error {
  override name = 'EmbedStoppedError';
  constructor(readonly reason: unknown) {
    super(`stopped (${String(reason)})`);
  }
}

/** Divides each row of `x` [rows, dim] by its L2 norm, in place (an all-zero row stays zero). */
export function normalizeRows(x: Float32Array, dim: number): Float32Array {
  for (let r = 0; r < x.length / dim; r++) {
    let s = 0;
    for (let q = 0; q < dim; q++) s += x[r * dim + q] * x[r * dim + q];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let q = 0; q < dim; q++) x[r * dim + q] *= inv;
  }
  return x;
}

/** What {@link embedAll} returns: row-major CPU arrays and their shapes. */
export interface EmbedResult {
  features: Float32Array;
  featuresShape: [number, number];
  attention?: Float32Array;
  attentionShape?: [number, number, number];
  /** x_norm_patchtokens [N, h·w, D], row-major over the patch grid. */
  patchTokens?: Float32Array;
  patchTokensShape?: [number, number, number];
  /** Files skipped with `skipBad`. */
  skipped: string[];
  /** Wall time of the batch loop (decode, transform, forward, read-back). */
  seconds: number;
}

/**
 * Runs the backbone over the whole input in batches. Image inputs go through the eval transform
 * (see the file header); arrays are used as they are. Nothing is written; the caller writes the
 * results.
 */
export async function embedAll(engine: Engine, model: VisionTransformer, input: EmbedInput, opts: EmbedOptions): Promise<EmbedResult> {
  const total = input.kind === 'images' ? input.files.length : input.shape[0];
  const D = model.cfg.embedDim;
  const p = model.cfg.patchSize;
  if (input.kind === 'array' && (input.shape[2] % p !== 0 || input.shape[3] % p !== 0)) {
    throw new Error(`the array's images are ${input.shape[3]}x${input.shape[2]}: not multiples of the patch size ${p}`);
  }
  const feats: Float32Array[] = [];
  const attns: Float32Array[] = [];
  const patchParts: Float32Array[] = [];
  const skipped: string[] = [];
  let rows = 0;
  let patches = 0;
  const started = performance.now();
  for (let start = 0; start < total; start += opts.batchSize) {
    if (opts.signal?.aborted) throw new EmbedStoppedError(opts.signal.reason);
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
      makeBatch = () => evalTransform(engine, images, { crop: opts.crop, norm: opts.norm });
    } else {
      const [, C, H, W] = input.shape;
      const per = C * H * W;
      makeBatch = () => engine.tensor(input.data.subarray(start * per, end * per), [end - start, C, H, W]);
    }
    const out = await engine.noGrad(() =>
      engine.scope(async () => {
        const r = embedForward(model, makeBatch(), { attention: opts.attention, patchTokens: opts.patchTokens });
        return {
          f: await r.features.toArray(),
          a: r.attention ? await r.attention.toArray() : undefined,
          t: r.patchTokens ? await r.patchTokens.toArray() : undefined,
          p: r.h * r.w,
        };
      }),
    );
    // Finite weights and pixels give finite features; a NaN here would otherwise be written to the
    // output with exit status 0.
    const nonFinite = out.f.findIndex((x) => !Number.isFinite(x));
    if (nonFinite >= 0) {
      const what = input.kind === 'images' ? `the batch of ${input.files[start]} … ${input.files[end - 1]}` : `image ${start + Math.floor(nonFinite / D)}`;
      throw new Error(`the backbone gave non-finite features (${out.f[nonFinite]}) for ${what}; nothing was written`);
    }
    feats.push(opts.normalize ? normalizeRows(out.f, D) : out.f);
    rows += out.f.length / D;
    patches = out.p;
    if (out.a) attns.push(out.a);
    if (out.t) patchParts.push(out.t);
    opts.onProgress?.(end, total);
  }
  const seconds = (performance.now() - started) / 1000;
  if (!rows && !opts.allowNone) throw new Error(`none of the ${total} images could be read`);
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
  if (opts.patchTokens) {
    result.patchTokens = join(patchParts);
    result.patchTokensShape = [rows, patches, D];
  }
  return result;
}

