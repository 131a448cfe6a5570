/**
 * `webdino embed --patch-out` on DINOv2 / DINOv3 weights, as a user runs it: the official .pth
 * and safetensors layouts of the golden fixtures (made by the official code,
 * test/fixtures/models/dinov2_dinov3/), the architecture inferred from the file, an NCHW .npy input
 * at the native grid and at a non-square one; CLS and patch tokens equal the official outputs.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseNpy, writeNpy } from '../../models/io/npy.js';
import { loadStateDict } from '../../models/io/state-dict.js';
import { webdino } from './harness.js';

const dir = new URL('../fixtures/models/dinov2_dinov3/', import.meta.url);
type Host = { shape: number[]; data: Float32Array };

/** max |got − want| / max |want|. */
function relErr(got: Float32Array, want: Float32Array): number {
  let e = 0;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    e = Math.max(e, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  return e / m;
}

describe.each([
  ['v2_reg', 'official.safetensors', ['--heads', '2']],
  ['v2_swiglu', 'official.pth', ['--heads', '2']],
  ['v3_mlp', 'official.pth', []],
  ['v3_swiglu', 'official.safetensors', []],
] as const)('webdino embed on %s/%s', (name, file, extra) => {
  it('CLS and patch tokens at the native and a non-square grid equal the official outputs', async () => {
    const io = loadStateDict(new Uint8Array(readFileSync(new URL(`${name}/io.safetensors`, dir)))).tensors as Map<string, Host>;
    const weights = new URL(`${name}/${file}`, dir).pathname;
    const tmp = mkdtempSync(join(tmpdir(), 'webdino-embed-v2-'));
    for (const i of [0, 1]) {
      const x = io.get(`in${i}.x`)!;
      const input = join(tmp, `x${i}.npy`);
      writeFileSync(input, writeNpy({ shape: x.shape, data: x.data }));
      const cls = join(tmp, `cls${i}.npy`);
      const patch = join(tmp, `patch${i}.npy`);
      const r = await webdino('embed', '--weights', weights, '--input', input, '--out', cls, '--patch-out', patch, ...extra);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(name.startsWith('v2') ? /dinov2/i : /dinov3/i);
      const c = parseNpy(new Uint8Array(readFileSync(cls)));
      const p = parseNpy(new Uint8Array(readFileSync(patch)));
      expect(c.shape).toEqual(io.get(`in${i}.x_norm_clstoken`)!.shape);
      expect(p.shape).toEqual(io.get(`in${i}.x_norm_patchtokens`)!.shape);
      expect(relErr(c.data as Float32Array, io.get(`in${i}.x_norm_clstoken`)!.data)).toBeLessThan(1e-4);
      expect(relErr(p.data as Float32Array, io.get(`in${i}.x_norm_patchtokens`)!.data)).toBeLessThan(1e-4);
    }
  }, 120_000);
});

describe('webdino embed: DINOv2 / DINOv3 architecture requests', () => {
  it('a preset the file contradicts is refused with the differences; --heads conflicts with a v1 preset', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'webdino-embed-v2-'));
    const io = loadStateDict(new Uint8Array(readFileSync(new URL('v2_reg/io.safetensors', dir)))).tensors as Map<string, Host>;
    const x = io.get('in0.x')!;
    const input = join(tmp, 'x.npy');
    writeFileSync(input, writeNpy({ shape: x.shape, data: x.data }));
    const weights = new URL('v2_reg/official.safetensors', dir).pathname;
    const r = await webdino('embed', '--weights', weights, '--input', input, '--out', join(tmp, 'a.npy'), '--arch', 'dinov2_vits14_reg');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/width 32 is not divisible by 6 heads \(--arch dinov2_vits14_reg is dinov2_vits14_reg: dinov2 384\/12/);
    const noHeads = await webdino('embed', '--weights', weights, '--input', input, '--out', join(tmp, 'b.npy'));
    expect(noHeads.code).toBe(1);
    expect(noHeads.err).toMatch(/--heads on the command line/);
    expect((await webdino('embed', '--weights', weights, '--input', input, '--out', join(tmp, 'c.npy'), '--arch', 'vit_small', '--heads', '2')).code).toBe(2);
  }, 60_000);
});
