/**
 * The ONNX Runtime side of bench/compare/ort/run.sh: times one exported model (export_onnx.py)
 * under one execution provider and writes its outputs next to the model, for the agreement check.
 *
 *   ORT_NODE=/path/to/node_modules/onnxruntime-node node ort.mjs MODEL_DIR webgpu|cpu [--reps N]
 *   → {"impl":"ort-webgpu",...} on stdout; MODEL_DIR/ort-<ep>_cls.npy, _patch.npy
 *
 * onnxruntime-node is NOT a dependency of this project: install it into a scratch folder outside
 * the repository (`npm install --ignore-scripts onnxruntime-node`) and point ORT_NODE at it.
 * Timing: wall clock of session.run (inputs uploaded and outputs read back, as a user waits for
 * them), median of `reps` runs after one warm-up run; the session is created (and for WebGPU the
 * shaders compiled) before. CPU EP: intra-op threads = the machine's cores.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, ep, ...rest] = process.argv.slice(2);
if (!dir || !['webgpu', 'cpu'].includes(ep)) {
  console.error('usage: node ort.mjs MODEL_DIR webgpu|cpu [--reps N]');
  process.exit(2);
}
const repsAt = rest.indexOf('--reps');
const reps = repsAt >= 0 ? Number(rest[repsAt + 1]) : 3;
const ortPath = process.env.ORT_NODE ?? '/work/scratch/ort/node_modules/onnxruntime-node';
const ort = createRequire(import.meta.url)(ortPath);

/** A float32 little-endian .npy (version 1.0), C order. */
function readNpy(path) {
  const b = readFileSync(path);
  const headerLen = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + headerLen).toString('latin1');
  if (!header.includes("'descr': '<f4'") || header.includes("'fortran_order': True")) throw new Error(`${path}: not a C-order <f4 array`);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + 10 + headerLen, b.byteOffset + b.length));
  return { shape, data };
}

function writeNpy(path, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  Buffer.from([0x93, ...Buffer.from('NUMPY'), 1, 0]).copy(head);
  head.writeUInt16LE(header.length, 8);
  writeFileSync(path, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const x = readNpy(join(dir, 'x.npy'));
const opts = ep === 'cpu' ? { executionProviders: ['cpu'], intraOpNumThreads: availableParallelism() } : { executionProviders: ['webgpu'] };
const t0 = performance.now();
const session = await ort.InferenceSession.create(join(dir, 'model.onnx'), opts);
const createMs = performance.now() - t0;
const feeds = { x: new ort.Tensor('float32', x.data, x.shape) };
let out = await session.run(feeds); // warm-up (WebGPU: pipelines, buffers)
const times = [];
for (let i = 0; i < reps; i++) {
  const t = performance.now();
  out = await session.run(feeds);
  times.push(performance.now() - t);
}
writeNpy(join(dir, `ort-${ep}_cls.npy`), out.cls.dims, out.cls.data);
writeNpy(join(dir, `ort-${ep}_patch.npy`), out.patch.dims, out.patch.data);
const ms = median(times);
const batch = x.shape[0];
console.log(
  JSON.stringify({
    impl: `ort-${ep}`,
    model: dir.split('/').filter(Boolean).pop(),
    ort: ort.env?.versions?.common ?? 'unknown',
    ms,
    reps,
    times,
    createMs,
    imagesPerSec: batch / (ms / 1000),
  }),
);
await session.release();
