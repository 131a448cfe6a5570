/**
 * The messages between the demo page (web/main.ts) and its training worker (web/worker.ts). All
 * payloads are structured-clone friendly; large arrays are transferred, not copied.
 *
 * The worker owns the engine, the trainer, the data and an in-memory snapshot of the training
 * state (a checkpoint taken every `snapshotEvery` steps). The page only draws and forwards the
 * user's actions; every command is executed by the worker in arrival order, between steps.
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
  | { type: 'lose-device' };

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
  /**
   * kind 'no-webgpu': no WebGPU or no adapter (nothing can run); 'device-lost': the device is gone,
   * `recover` continues from the snapshot at `snapshotIteration` (null: none yet, start over);
   * 'error': the command failed (training paused).
   */
  | { type: 'error'; kind: 'no-webgpu' | 'device-lost' | 'error'; message: string; snapshotIteration?: number | null };
