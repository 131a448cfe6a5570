/**
 * `webdino train`: DINO self-supervised training, headless. With no arguments it trains the CPU
 * default configuration on the embedded synthetic dataset and finishes in about 15 minutes on two
 * cores without a GPU (lavapipe).
 */
import { init } from '../../index.js';
import { runTraining } from '../../train/run-node.js';
import { heldOutSpec, openDataset } from '../../train/datasets-node.js';
import { CPU_DEFAULT_CONFIG, DINO_DEFAULTS, type DinoTrainer, NonFiniteLossError, type TrainConfig } from '../../train/trainer.js';
import { firstN, knnEvaluator } from '../../train/eval-node.js';
import { datasetSegmentationSource, segmentationEvaluator } from '../../train/segment.js';
import { type Command, intOption, numOption, strOption, UsageError, type Values } from '../command.js';
import { ProgressReporter } from '../progress.js';

const ARCHS = ['vit_tiny', 'vit_small', 'vit_base', 'custom'] as const;

/** The TrainConfig of the parsed `webdino train` options (exported for tests). */
export function trainConfig(v: Values): Partial<TrainConfig> {
  const arch = strOption(v.arch);
  if (arch !== undefined && !(ARCHS as readonly string[]).includes(arch)) throw new UsageError(`--arch must be one of ${ARCHS.join(', ')}, got '${arch}'`);
  // A named ViT trains with DINO's own recipe (K 65536, τt 0.04, full colour jitter, 224/96 px
  // crops, ...); without --arch (or with custom) the small CPU default applies, whose departures
  // from DINO are for a tiny model in a 15-minute run (see CPU_DEFAULT_CONFIG).
  const c: Partial<TrainConfig> = arch !== undefined && arch !== 'custom' ? { ...DINO_DEFAULTS } : { ...CPU_DEFAULT_CONFIG };
  if (arch !== undefined) c.arch = arch as TrainConfig['arch'];
  const set = <K extends keyof TrainConfig>(k: K, val: TrainConfig[K] | undefined) => {
    if (val !== undefined) c[k] = val;
  };
  set('embedDim', intOption('embed-dim', v['embed-dim'], 8, 4096));
  set('depth', intOption('depth', v.depth, 1, 64));
  set('numHeads', intOption('heads', v.heads, 1, 64));
  set('patchSize', intOption('patch-size', v['patch-size'], 1, 64));
  set('outDim', intOption('out-dim', v['out-dim'], 2, 262144));
  set('epochs', intOption('epochs', v.epochs, 1, 100000));
  set('epochLength', intOption('epoch-length', v['epoch-length'], 0, 1e9));
  set('batchSize', intOption('batch-size', v['batch-size'], 2, 4096));
  set('lr', numOption('lr', v.lr, 0, 10));
  set('warmupEpochs', numOption('warmup-epochs', v['warmup-epochs'], 0, 1000));
  set('momentumTeacher', numOption('momentum-teacher', v['momentum-teacher'], 0, 1));
  set('clipGrad', numOption('clip-grad', v['clip-grad'], 0, 1e6));
  set('globalSize', intOption('global-size', v['global-size'], 8, 1024));
  set('localSize', intOption('local-size', v['local-size'], 8, 1024));
  set('localCrops', intOption('local-crops', v['local-crops'], 0, 64));
  set('teacherTemp', numOption('teacher-temp', v['teacher-temp'], 1e-4, 10));
  set('warmupTeacherTemp', numOption('warmup-teacher-temp', v['warmup-teacher-temp'], 1e-4, 10));
  set('seed', intOption('seed', v.seed, 0, 2 ** 31));
  const centering = strOption(v.centering);
  if (centering !== undefined) {
    if (centering !== 'center' && centering !== 'sinkhorn_knopp') throw new UsageError(`--centering must be center or sinkhorn_knopp, got '${centering}'`);
    c.centering = centering;
  }
  if (c.arch !== 'custom' && (v['embed-dim'] !== undefined || v.depth !== undefined || v.heads !== undefined)) {
    throw new UsageError('--embed-dim, --depth and --heads need --arch custom');
  }
  if ((c.embedDim ?? 0) % (c.numHeads ?? 1) !== 0) throw new UsageError(`--embed-dim ${c.embedDim} must be divisible by --heads ${c.numHeads}`);
  return c;
}

/**
 * Training images in the k-NN memory of the evaluations (evenly spaced over the training set): the
 * whole of a large set (Fashion-MNIST's 60 000) would take minutes per evaluation on two cores.
 */
const KNN_MEMORY = 10000;

/** "k-NN top-1 …: trained … vs … at initialisation", or null without both evaluations. */
export function learnedLine(init: Record<string, number> | null, last: Record<string, number> | undefined): string | null {
  if (!init || !last || !last.iteration || init.knn_top1 === undefined || last.knn_top1 === undefined) return null;
  const d = last.knn_top1 - init.knn_top1;
  return (
    `k-NN top-1 (k = 20) on the held-out split: ${last.knn_top1.toFixed(1)} % trained teacher vs ${init.knn_top1.toFixed(1)} % at initialisation ` +
    `(${d >= 0 ? '+' : ''}${d.toFixed(1)} points)`
  );
}

export const train: Command = {
  name: 'train',
  summary: 'Train a DINO model (default: a small ViT on the embedded dataset, ~15 min on 2 CPU cores)',
  description:
    'Self-supervised DINO training: multi-crop augmentation on the GPU, student/teacher with an EMA\n' +
    'teacher, centering and sharpening, AdamW with DINO\'s schedules. Writes OUT/checkpoint.safetensors\n' +
    '(every --checkpoint-every iterations and at the end), OUT/teacher_backbone.safetensors (official\n' +
    'key names; for `webdino embed`), OUT/metrics.jsonl and OUT/loss.png. Ctrl-C stops after the\n' +
    'current step and saves a checkpoint; --resume continues exactly where a run stopped.\n' +
    'With no options: the CPU default config (ViT custom dim 64, depth 4, 2 heads, patch 8, 32 px global\n' +
    'crops, 6 local crops of 16 px, a head with BatchNorm, K = 64 Sinkhorn-Knopp targets, teacher temperature\n' +
    '0.02, no brightness/contrast jitter,\n' +
    '5 epochs of 156 steps of 32 whatever the data size: about 10 minutes on two CPU cores) on the embedded\n' +
    'dataset. With a held-out split (embedded data, IDX t10k files, --val) the run ends with k-NN next to\n' +
    'the same model at its initialisation.',
  options: {
    data: { type: 'string', value: '<data>', description: "Training images: 'synthetic' (default, embedded), 'synthetic-scene' (the harder style), an ImageFolder directory, a CIFAR folder, or a folder of MNIST-style IDX files" },
    out: { type: 'string', value: '<dir>', description: 'Output folder (default: runs/dino)' },
    resume: { type: 'boolean', description: 'Continue from OUT/checkpoint.safetensors if it exists' },
    arch: { type: 'string', value: '<arch>', description: `Backbone: ${ARCHS.join(', ')} (default: the small CPU ViT; a named ViT brings DINO's whole recipe)` },
    'embed-dim': { type: 'string', value: '<n>', description: 'Width of a custom ViT' },
    depth: { type: 'string', value: '<n>', description: 'Blocks of a custom ViT' },
    heads: { type: 'string', value: '<n>', description: 'Attention heads of a custom ViT' },
    'patch-size': { type: 'string', value: '<n>', description: 'Patch size' },
    'out-dim': { type: 'string', value: '<K>', description: 'Prototypes of the DINO head' },
    epochs: { type: 'string', value: '<n>', description: 'Epochs' },
    'epoch-length': { type: 'string', value: '<n>', description: 'Iterations per epoch (0: one pass over the data; the CPU default fixes it, so the run length does not grow with the data)' },
    'batch-size': { type: 'string', value: '<n>', description: 'Images per step' },
    lr: { type: 'string', value: '<x>', description: 'Base learning rate (scaled by batch/256)' },
    'warmup-epochs': { type: 'string', value: '<n>', description: 'Linear lr warm-up epochs' },
    'momentum-teacher': { type: 'string', value: '<m>', description: 'Base EMA momentum of the teacher' },
    'clip-grad': { type: 'string', value: '<x>', description: 'Per-tensor gradient clipping (0: off)' },
    'global-size': { type: 'string', value: '<px>', description: 'Side of the 2 global crops' },
    'local-size': { type: 'string', value: '<px>', description: 'Side of the local crops' },
    'local-crops': { type: 'string', value: '<n>', description: 'Number of local crops (0 disables multi-crop)' },
    'teacher-temp': { type: 'string', value: '<t>', description: 'Final teacher temperature (default here 0.02; DINO 0.04)' },
    'warmup-teacher-temp': { type: 'string', value: '<t>', description: 'Teacher temperature at the start of its warm-up epoch (default here 0.02; DINO 0.04)' },
    centering: { type: 'string', value: '<kind>', description: "Teacher targets: 'center' (DINO; the default with a named --arch) or 'sinkhorn_knopp' (DINOv2; the CPU default)" },
    seed: { type: 'string', value: '<n>', description: 'Seed of initialisation, shuffling and augmentation' },
    'checkpoint-every': { type: 'string', value: '<n>', description: 'Iterations between checkpoints (default: 100)' },
    'eval-every': { type: 'string', value: '<n>', description: 'Also run k-NN (and, on the embedded data, attention-map segmentation) on the held-out split every n iterations' },
    val: { type: 'string', value: '<data>', description: "Held-out data (default: synthetic's ':val' split, an IDX folder's t10k files); with it the run ends with a k-NN evaluation next to the model at its initialisation" },
    'max-iterations': { type: 'string', value: '<n>', description: 'Stop after n iterations of this process (the schedule is unchanged)' },
  },
  async run(v, io) {
    const config = trainConfig(v);
    const dataSpec = strOption(v.data) ?? 'synthetic';
    const out = strOption(v.out) ?? 'runs/dino';
    const checkpointEvery = intOption('checkpoint-every', v['checkpoint-every'], 0, 1e9) ?? 100;
    const evalEvery = intOption('eval-every', v['eval-every'], 1, 1e9);
    const maxIterations = intOption('max-iterations', v['max-iterations'], 1, 1e9);
    const dataset = openDataset(dataSpec, { defaultSplit: 'train', onWarning: (m) => io.err(`warning: ${m}`) });
    const valSpec = strOption(v.val) ?? heldOutSpec(dataSpec) ?? undefined;
    const wd = await init();
    const abort = new AbortController();
    const onSigint = () => {
      if (abort.signal.aborted) process.exit(130);
      io.err('\nwebdino train: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)');
      abort.abort();
    };
    process.on('SIGINT', onSigint);
    const progress = new ProgressReporter(io);
    try {
      io.out(`adapter: ${wd.device.adapterName()} (${wd.device.variants} kernels)`);
      io.out(`data: ${dataSpec} (${dataset.length} images, ${dataset.numClasses} classes); output: ${out}`);
      let evaluate: ((t: DinoTrainer) => Promise<Record<string, number>>) | undefined;
      if (valSpec) {
        const val = openDataset(valSpec, { defaultSplit: 'val' });
        const knn = knnEvaluator(wd, { train: dataset, val, trainLimit: KNN_MEMORY });
        // The embedded dataset has object masks: also score the attention maps (first 200 images).
        const seg = valSpec.startsWith('synthetic') ? segmentationEvaluator(wd, datasetSegmentationSource(firstN(val, 200), 'val')) : null;
        evaluate = async (t) => ({ ...(await knn(t)), ...(seg ? await seg(t) : {}) });
      }
      const result = await runTraining(wd, {
        config,
        dataset,
        outDir: out,
        resume: v.resume === true,
        checkpointEvery,
        evalEvery,
        evaluate,
        maxIterations,
        signal: abort.signal,
        onLog: (l) => progress.log(l),
        onStep: (r) => progress.step(r),
      });
      progress.done();
      const c = result.trainer.config;
      io.out(
        `done: ${result.iterations} iterations (${c.arch === 'custom' ? `ViT dim ${c.embedDim} depth ${c.depth}` : c.arch}/${c.patchSize}), last loss ${result.lastLoss.toFixed(4)}`,
      );
      for (const e of result.evals.slice(-1)) io.out(`evaluation: ${JSON.stringify(e)}`);
      const line = learnedLine(result.initEval, result.evals.at(-1));
      if (line) io.out(line);
      io.out(`checkpoint: ${result.checkpoint}\nteacher backbone: ${result.teacherBackbone}\nmetrics: ${out}/metrics.jsonl, loss curve: ${out}/loss.png`);
      if (result.report) io.out(`report: ${result.report}`);
      result.trainer.dispose();
      return 0;
    } catch (e) {
      progress.done();
      if (e instanceof NonFiniteLossError) {
        io.err(e.message);
        return 1;
      }
      throw e;
    } finally {
      process.off('SIGINT', onSigint);
      wd.destroy();
    }
  },
};
