/**
 * Child process of loaders.test.ts: builds one hostile file (hostile-files.ts), hands it to the
 * loader it targets, and prints one JSON line: whether the load was refused, the error's class and
 * message, and the peak RSS. The parent runs it under `ulimit -v` and kills it past a deadline, so
 * a loader that hangs or allocates gigabytes fails its test instead of taking the runner down.
 * Usage: node load-child.mjs <case>
 */
import { nodeInflateRaw } from '../../models/io/node-files.js';
import { parseSafetensors } from '../../models/io/safetensors.js';
import { loadStateDict } from '../../models/io/state-dict.js';
import { loadTorchCheckpoint, loadTorchCheckpointAsync } from '../../models/io/torch.js';
import {
  dagCheckpoint,
  dagKeyPickle,
  long4Checkpoint,
  overlapSafetensors,
  sharedCopyCheckpoint,
  stride0Checkpoint,
  torchZip,
  zipBombCheckpoint,
} from './hostile-files.js';

const CASES: Record<string, () => unknown> = {
  // F3: 256 KB integer.
  long4: () => loadTorchCheckpoint(long4Checkpoint(262144), { name: 'long4.pth' }),
  // F4: 2^60 paths, an empty list (no tensors) or a tensor at the bottom.
  dag: () => loadStateDict(dagCheckpoint(60), { name: 'dag.pth' }),
  'dag-tensor': () => loadStateDict(dagCheckpoint(60, 'tensor'), { name: 'dag.pth' }),
  'dag-key': () => loadTorchCheckpoint(torchZip(dagKeyPickle(60)), { name: 'dagkey.pth' }),
  // One 1 MiB string copied 2000 times by _codecs.encode: 2 GiB from a 1 MiB pickle.
  'shared-copy': () => loadTorchCheckpoint(sharedCopyCheckpoint(2 ** 20, 2000), { name: 'copy.pth' }),
  // F5a: 2^28 float32s (1 GiB) from one stored float.
  stride0: () => loadStateDict(stride0Checkpoint(2 ** 28), { name: 's0.pth' }),
  // F5b: 1 GiB of zeros in a 1 MB file, declared truthfully or as the storage's 16 bytes.
  'bomb-sync': () => loadTorchCheckpoint(zipBombCheckpoint(64, 'true-size'), { name: 'bomb.pth', inflateRaw: nodeInflateRaw }),
  'bomb-sync-lie': () => loadTorchCheckpoint(zipBombCheckpoint(64, 'storage-size'), { name: 'bomb.pth', inflateRaw: nodeInflateRaw }),
  'bomb-async': () => loadTorchCheckpointAsync(zipBombCheckpoint(64, 'true-size'), { name: 'bomb.pth' }),
  'bomb-async-lie': () => loadTorchCheckpointAsync(zipBombCheckpoint(64, 'storage-size'), { name: 'bomb.pth' }),
  // F5c: 50 U8 tensors aliasing one 8 MiB data section (1.6 GB of float32).
  overlap: () => parseSafetensors(overlapSafetensors(8 * 2 ** 20, 50)),
};

const name = process.argv[2] ?? '';
const run = CASES[name];
if (!run) {
  console.error(`unknown case '${name}' (cases: ${Object.keys(CASES).join(', ')})`);
  process.exit(2);
}
let result: { outcome: 'loaded' | 'refused'; error?: string; message?: string };
try {
  await run();
  result = { outcome: 'loaded' };
} catch (e) {
  const err = e as Error;
  result = { outcome: 'refused', error: err?.name, message: String(err?.message ?? e) };
}
console.log(JSON.stringify({ ...result, maxRssKiB: process.resourceUsage().maxRSS }));
