/**
 * webdino: a WebGPU compute engine with hand-written WGSL kernels and a small autograd.
 *
 * ```ts
 * import { init } from 'webdino';
 * const wd = await init();
 * const x = wd.randn([4, 8], { seed: 1, requiresGrad: true });
 * const loss = await wd.scope(async () => {
 *   const y = x.matmul(x.transpose()).softmax(-1, { temperature: 0.1 }).sum();
 *   y.backward();
 *   return y.item();
 * });
 * console.log(loss, await x.grad!.toArray());
 * ```
 */
import { Engine } from './engine/engine.js';
import type { DeviceOptions } from './engine/device.js';

export { Engine } from './engine/engine.js';
export type { TensorOptions, RandomOptions } from './engine/engine.js';
export { Tensor, Storage, UseAfterDisposeError } from './engine/tensor.js';
export type { DType } from './engine/tensor.js';
export { Device, DeviceError, NoAdapterError, Uniforms } from './engine/device.js';
export type { DeviceOptions, DeviceFeatures, AdapterDescription, VariantPreference, Kernel } from './engine/device.js';
export { ShapeError } from './engine/shape.js';
export type { Shape } from './engine/shape.js';
export { Rng } from './engine/random.js';
export type { PoolStats } from './engine/pool.js';
export * as ops from './engine/ops/index.js';
export type { MatmulOptions, AttentionOptions, CrossEntropyOptions, Conv2dOptions, SoftmaxOptions, RopeTables } from './engine/ops/index.js';
export { ParamArena, AdamW, emaUpdate, gradNorms, clipGradients, tensorNorms, totalNorm, lerpInPlace, dinoDecayMask } from './engine/optim.js';
export type { ParamArenaOptions, AddParamOptions, ParamInit, AdamWOptions, AdamWState } from './engine/optim.js';


// Models (official PyTorch parameter names) and weight formats.
export { Module, Linear, LayerNorm, Conv2d } from './models/nn.js';
export type { ModuleContext, InitFn } from './models/nn.js';
export { VisionTransformer, createViT, vitConfig, VIT_PRESETS, createDinoViT, dinoViTConfig } from './models/vit.js';
export type { ViTConfig, ViTArch, ViTFeatures, PatchMasks } from './models/vit.js';
export { DINO_PRESETS, dinoPreset } from './models/io/dino-arch.js';
export type { DinoArch, DinoPresetName } from './models/io/dino-arch.js';
// A backbone from a weights file's bytes (browser-safe; Node's file reading: models/backbone-node.ts).
export { buildBackbone, parseBackboneWeights, parseBackboneWeightsAsync, describeArch } from './models/backbone.js';
export type { ArchRequest, ArchSpec, BackboneWeights, LoadedBackbone } from './models/backbone.js';
export { DINOHead, dinoHeadConfig } from './models/dino-head.js';
export type { DINOHeadConfig } from './models/dino-head.js';
export { ResNet, BatchNorm2d, RESNET_PRESETS } from './models/resnet.js';
export type { ResNetArch } from './models/resnet.js';
export { MultiCropWrapper } from './models/multicrop.js';
export { parseSafetensors, parseSafetensorsWithMetadata, writeSafetensors, SafetensorsError } from './models/io/safetensors.js';
export { parseNpy, writeNpy, NpyError } from './models/io/npy.js';
export { loadTorchCheckpoint, loadTorchCheckpointAsync } from './models/io/torch.js';
export { loadStateDict, StateDictMismatchError } from './models/io/state-dict.js';
export { decodeImage, encodePng, ImageDecodeError } from './models/io/image.js';
export type { RgbImage } from './models/io/image.js';

// DINO training and evaluation (browser-safe; the Node-only run loop is `webdino train`).
export { DinoTrainer, DINO_DEFAULTS, CPU_DEFAULT_CONFIG, CPU_GREY_IMAGE_CONFIG, cpuDefaultConfig, NonFiniteLossError, resolveConfig } from './train/trainer.js';
export type { TrainConfig, StepResult } from './train/trainer.js';
export { DinoLoss, sinkhornKnopp } from './train/loss.js';
export { cosineScheduler, teacherTempSchedule, dinoSchedules } from './train/schedules.js';
export { MultiCropAugmenter, DINO_MULTICROP } from './train/augment.js';
export { evalTransform } from './train/data/transforms.js';
export type { MultiCropOptions, MultiCropBatch } from './train/augment.js';
export { checkpointBytes, restoreCheckpoint, readCheckpointMeta, exportTeacherBackbone } from './train/checkpoint.js';
// DINOv2's recipe (iBOT, KoLeo, LayerScale, registers, layer-wise lr decay, ...): trainer and checkpoints.
export { DinoV2Trainer, DINOV2_DEFAULTS, DINOV2_CPU_DEFAULT_CONFIG, resolveDinoV2Config } from './train/dinov2-trainer.js';
export type { DinoV2Config, DinoV2StepResult } from './train/dinov2-trainer.js';
export {
  dinov2CheckpointBytes,
  restoreDinoV2Checkpoint,
  readDinoV2CheckpointMeta,
  exportTeacherBackbone as exportDinoV2TeacherBackbone,
} from './train/dinov2/checkpoint.js';
export { SyntheticShapes, SHAPE_CLASSES } from './train/data/synthetic.js';
export { DataLoader } from './train/data/loader.js';
export type { Dataset, Sample } from './train/data/dataset.js';
export { isGreyscale } from './train/data/dataset.js';
export { knnClassify, extractFeatures } from './eval/knn.js';
export { datasetFeatures } from './eval/features.js';
export { evaluateSegmentation, datasetSegmentationSource, clsAttention } from './eval/segment.js';
export { attentionMasks, jaccard } from './eval/attention-maps.js';
export { linearProbe } from './eval/linear-probe.js';
export { fitPca, pcaRgb } from './eval/pca.js';
export { computeVisuals } from './eval/visualize.js';
export type { ImageVisuals, VisualsOptions } from './eval/visualize.js';
export { embedForward } from './eval/embed.js';

/**
 * Creates an engine on the best available WebGPU adapter (Dawn in Node, navigator.gpu in
 * browsers). Throws `NoAdapterError` (which says what to install) when there is none.
 */
export async function init(opts: DeviceOptions = {}): Promise<Engine> {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (proc?.versions?.node) await import('./engine/node.js');
  return Engine.create(opts);
}
