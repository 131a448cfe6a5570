/**
 * The messages between the demo page (web/main.ts) and its worker (web/worker.ts). All payloads
 * are structured-clone friendly; large arrays are transferred, not copied.
 *
 * The worker owns the engine, the trainer, the data and an in-memory snapshot of the training
 * state (a checkpoint taken every `snapshotEvery` steps), and the backbone the user loaded
 * (a DINOv2 / DINOv3 / DINO checkpoint, shown as PCA maps and attention heads of the user's
 * images). The page only draws and forwards the user's actions; every command is executed by the
 * worker in arrival order, between steps.
 */
import type { TrainConfig } from '../train/trainer.js';

/** An 8-bit RGB image (3 bytes per pixel, row-major). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** How the page sets the worker up. */
export interface DemoSettings {
  /** Overrides of the training config (see web/main.ts for the URL parameters). */
  config: Partial<TrainConfig>;
  /** Images of the embedded synthetic dataset (its train split). */
  datasetLength: number;
  /** Side of the synthetic images. */
  imageSize: number;
  /** Redraw the attention maps every this many steps. */
  attentionEvery: number;
  /** Keep an in-memory snapshot of the whole state every this many steps (device-loss recovery). */
  snapshotEvery: number;
  /** Pause by itself when the iteration reaches this (0: never). */
  pauseAt: number;
}

/** Page → worker. */
export type ToWorker =
  | { type: 'init'; settings: DemoSettings }
  | { type: 'start' }
  | { type: 'pause' }
  /** Train (and draw attention) on the user's images instead of the synthetic dataset. */
  | { type: 'images'; images: RgbImage[]; names: string[] }
  | { type: 'synthetic' }
  | { type: 'save' }
  | { type: 'load'; bytes: Uint8Array; name: string }
  /** CLS features of the fixed attention images through the teacher backbone (eval transform). */
  | { type: 'features' }
  /** After a device loss: a new device, the state of the last snapshot. */
  | { type: 'recover' }
  /** Test hook: destroys the GPU device, as a driver reset would. */
  | { type: 'lose-device' }
  /**
   * A backbone weights file (.pth or .safetensors, official or Hugging Face layout): parsed and
   * built in the worker (architecture inferred; `numHeads` where the file cannot tell), then
   * shown on the current backbone images at `size` px.
   */
  | { type: 'backbone'; bytes: Uint8Array; name: string; numHeads: number | null; size: number }
  /** The images the backbone is shown on (null: keep them, redraw at `size`). */
  | { type: 'backbone-images'; images: RgbImage[] | null; names: string[]; size: number }
  /** CLS features, patch tokens and CLS attention of the backbone images, as `webdino embed` computes them. */
  | { type: 'backbone-features'; crop: number };

/** One step's figures. */
export interface StepInfo {
  iteration: number;
  epoch: number;
  loss: number;
  lr: number;
  teacherEntropy: number;
  imagesPerSecond: number;
  total: number;
}

/** The last layer's CLS attention of one image. */
export interface AttentionMap {
  /** The image the model saw (after the eval resize), RGB. */
  image: RgbImage;
  /** [heads, h, w] row-major. */
  attention: Float32Array;
  heads: number;
  h: number;
  w: number;
}

/** What the worker reports about the run it holds. */
export interface RunInfo {
  adapter: string;
  variants: 'cpu' | 'gpu';
  config: TrainConfig;
  parameters: number;
  iteration: number;
  total: number;
  itersPerEpoch: number;
  dataset: string;
}

/** The backbone the worker holds. */
export interface BackboneInfo {
  name: string;
  /** models/backbone.ts `describeArch`: family, preset, widths, tokens. */
  description: string;
  format: 'torch' | 'safetensors';
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  /** Register / storage tokens between CLS and the patches. */
  prefixTokens: number;
  parameters: number;
}

/** The pictures of one image through the backbone (eval/visualize.ts), each side×side RGB. */
export interface BackboneVisual {
  name: string;
  /** What the model saw (the whole image resized). */
  input: RgbImage;
  /** The first three principal components of the patch features (fitted on all images) as RGB. */
  pca: RgbImage;
  /** Per head: the last layer's CLS attention (viridis) over the input. */
  attention: RgbImage[];
}

/** Worker → page. */
export type FromWorker =
  | { type: 'ready'; run: RunInfo }
  | { type: 'step'; step: StepInfo }
  | { type: 'attention'; iteration: number; maps: AttentionMap[] }
  | { type: 'running'; running: boolean }
  | { type: 'checkpoint'; bytes: Uint8Array; iteration: number }
  | { type: 'loaded'; name: string; run: RunInfo }
  | { type: 'features'; iteration: number; features: Float32Array; shape: [number, number]; images: RgbImage[]; crop: number }
  | { type: 'log'; message: string }
  | { type: 'backbone-ready'; info: BackboneInfo }
  | { type: 'backbone-visuals'; side: number; grid: [number, number]; heads: number; items: BackboneVisual[]; seconds: number }
  | {
      type: 'backbone-features';
      crop: number;
      /** x_norm_clstoken [N, D]. */
      features: Float32Array;
      featuresShape: [number, number];
      /** x_norm_patchtokens [N, h·w, D]. */
      patchTokens: Float32Array;
      patchTokensShape: [number, number, number];
      /** The last layer's CLS attention over the patches [N, heads, h·w]. */
      attention: Float32Array;
      attentionShape: [number, number, number];
      /** The images as the worker holds them (decoded RGB). */
      images: RgbImage[];
    }
  /** A backbone command failed; training (if any) is not affected. */
  | { type: 'backbone-error'; message: string }
  /**
   * kind 'no-webgpu': no WebGPU or no adapter (nothing can run); 'device-lost': the device is gone,
   * `recover` continues from the snapshot at `snapshotIteration` (null: none yet, start over);
   * 'error': the command failed (training paused).
   */
  | { type: 'error'; kind: 'no-webgpu' | 'device-lost' | 'error'; message: string; snapshotIteration?: number | null };
