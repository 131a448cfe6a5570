/**
 * Opens a dataset from a command-line spec (Node):
 *   synthetic[:train|val]      the embedded procedural dataset (no download), 'confetti' style
 *   synthetic-scene[:train|val]  the same shapes in the harder 'scene' style (see data/synthetic.ts)
 *   <dir>                      an ImageFolder (class sub-folders of JPEG/PNG), a folder that holds
 *                              the CIFAR-10/100 binary files, or one that holds MNIST-style IDX files
 *                              (train-… for training, t10k-… held out; data/idx-node.ts)
 *   <file>                     a list of image files, one per line (file-list-node.ts: PATH,
 *                              PATH<TAB>LABEL, or `webdino curate`'s selected.txt ROW<TAB>PATH)
 *   cifar10:<dir>, cifar100:<dir>[:train|test]
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { cifarFileNames, type CifarVariant, type Dataset } from './dataset.js';
import { SyntheticShapes } from './synthetic.js';
import { openImageFolder } from './image-folder-node.js';
import { openCifar } from './cifar-node.js';
import { hasIdxTestSplit, looksLikeIdx, openIdx } from './idx-node.js';
import { openFileList } from './file-list-node.js';

export interface OpenDatasetOptions {
  /** Split used when the spec names none ('train' for training, 'val' for evaluation). */
  defaultSplit: 'train' | 'val';
  /** Side of the synthetic images. */
  syntheticSize?: number;
  /** Number of synthetic images (default: 5000 train / 1000 val). */
  syntheticLength?: number;
  onWarning?: (message: string) => void;
  /** ImageFolder: keep class folders that hold no image (default: refuse them). */
  allowEmptyClasses?: boolean;
}

const SYNTHETIC_SPEC = /^synthetic(-scene)?(?::(train|val))?$/;
const CIFAR_SPEC = /^(cifar10|cifar100):(.+?)(?::(train|test))?$/;

/** The spec with its folder made absolute against `cwd` (synthetic specs are returned as they are). */
export function resolveDataSpec(spec: string, cwd: string): string {
  if (SYNTHETIC_SPEC.test(spec)) return spec;
  const cm = CIFAR_SPEC.exec(spec);
  if (cm) return `${cm[1]}:${isAbsolute(cm[2]) ? cm[2] : resolve(cwd, cm[2])}${cm[3] ? `:${cm[3]}` : ''}`;
  return isAbsolute(spec) ? spec : resolve(cwd, spec);
}

function looksLikeCifar(dir: string): 'cifar10' | 'cifar100' | null {
  const names = new Set<string>();
  const walk = (d: string, depth: number) => {
    for (const n of readdirSync(d)) {
      names.add(n);
      if (depth < 1 && statSync(join(d, n)).isDirectory()) walk(join(d, n), depth + 1);
    }
  };
  walk(dir, 0);
  if (names.has('data_batch_1.bin') || names.has('cifar-10-batches-bin')) return 'cifar10';
  if (names.has('train.bin') || names.has('cifar-100-binary')) return 'cifar100';
  return null;
}

/** A dataset from a spec; throws a clear error for a path that does not exist. */
export function openDataset(spec: string, opts: OpenDatasetOptions): Dataset {
  const m = SYNTHETIC_SPEC.exec(spec);
  if (m) {
    const split = (m[2] as 'train' | 'val' | undefined) ?? opts.defaultSplit;
    const style = m[1] ? 'scene' : 'confetti';
    return new SyntheticShapes({ style, split, size: opts.syntheticSize ?? 64, length: opts.syntheticLength ?? (split === 'train' ? 5000 : 1000) });
  }
  const cm = CIFAR_SPEC.exec(spec);
  const split = opts.defaultSplit === 'train' ? 'train' : 'test';
  if (cm) return openCifar(cm[2], { variant: cm[1] as 'cifar10' | 'cifar100', split: (cm[3] as 'train' | 'test') ?? split });
  if (!existsSync(spec)) throw new Error(`dataset '${spec}' not found: give 'synthetic', 'synthetic:val', 'synthetic-scene:val', an image folder, a CIFAR folder, or a file listing images`);
  if (!statSync(spec).isDirectory()) return openFileList(spec);
  const cifar = looksLikeCifar(spec);
  if (cifar) return openCifar(spec, { variant: cifar, split });
  if (looksLikeIdx(spec)) return openIdx(spec, split);
  return openImageFolder(spec, { onWarning: opts.onWarning, allowEmptyClasses: opts.allowEmptyClasses });
}

/**
 * The held-out split that belongs to a training spec, or null when it has none: 'synthetic[-scene]'
 * → its ':val' split, an IDX folder → its t10k files, a CIFAR folder → its test batch (when
 * present). Image folders carry no split.
 */
export function heldOutSpec(spec: string): string | null {
  const m = /^(synthetic(?:-scene)?)(?::(?:train|val))?$/.exec(spec);
  if (m) return `${m[1]}:val`;
  const cm = CIFAR_SPEC.exec(spec);
  if (cm) return cm[3] !== 'test' && hasCifarTestSplit(cm[2], cm[1] as CifarVariant) ? `${cm[1]}:${cm[2]}:test` : null;
  if (!existsSync(spec) || !statSync(spec).isDirectory()) return null;
  const cifar = looksLikeCifar(spec);
  if (cifar) return hasCifarTestSplit(spec, cifar) ? `${cifar}:${spec}:test` : null;
  if (looksLikeIdx(spec) && hasIdxTestSplit(spec)) return spec;
  return null;
}

/** Whether a CIFAR folder (or its unpacked archive sub-folder) holds the test split's file. */
function hasCifarTestSplit(dir: string, variant: CifarVariant): boolean {
  const sub = variant === 'cifar10' ? 'cifar-10-batches-bin' : 'cifar-100-binary';
  return cifarFileNames(variant, 'test').every((n) => existsSync(join(dir, n)) || existsSync(join(dir, sub, n)));
}
