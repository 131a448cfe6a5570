import { describe, expect, it } from 'vitest';

import { writeSafetensors } from '../../models/io/safetensors.js';
import {
  checkStrict,
  loadStateDict,
  selectCheckpointEntry,
  splitBackboneHead,
  StateDictMismatchError,
  stripPrefixes,
} from '../../models/io/state-dict.js';
import { flattenStateDict, loadTorchCheckpoint, TorchTensor } from '../../models/io/torch.js';
import { fixture } from './fixtures.js';

const t = (...shape: number[]) => ({ shape });

describe('DINO checkpoint layout helpers', () => {
  const ckpt = loadTorchCheckpoint(fixture('dino_checkpoint.pth'));

  it('selectCheckpointEntry picks teacher by default, student on request', () => {
    const teacher = selectCheckpointEntry(ckpt);
    expect(Object.keys(teacher)[0]).toBe('module.backbone.cls_token');
    expect((teacher['module.head.last_layer.weight_g'] as TorchTensor).data[0]).toBe(0.5);
    const student = selectCheckpointEntry(ckpt, 'student');
    expect((student['module.head.last_layer.weight_g'] as TorchTensor).data[0]).toBe(1);
  });

  it('selectCheckpointEntry falls back to state_dict / model, or a bare state dict', () => {
    const w = new TorchTensor('float32', [1], [1], 0, new Float32Array([1]));
    expect(selectCheckpointEntry({ state_dict: { a: w }, epoch: 1 })).toEqual({ a: w });
    expect(selectCheckpointEntry({ model: { a: w } })).toEqual({ a: w });
    const bare = { 'blocks.0.norm1.weight': w };
    expect(selectCheckpointEntry(bare)).toBe(bare);
    expect(() => selectCheckpointEntry({ student: {}, epoch: 3 })).toThrow(
      "checkpoint: no 'teacher', 'state_dict' or 'model' entry and no tensors at the top level (keys: student, epoch)",
    );
    expect(() => selectCheckpointEntry([1, 2])).toThrow('expected a dict at the top level, got a list');
  });

  it('stripPrefixes removes module./backbone. (repeatedly) and reports collisions', () => {
    const flat = flattenStateDict(selectCheckpointEntry(ckpt));
    const stripped = stripPrefixes(flat);
    expect([...stripped.keys()]).toEqual([
      'cls_token',
      'blocks.0.attn.qkv.weight',
      'blocks.0.attn.qkv.bias',
      'head.mlp.0.weight',
      'head.last_layer.weight_g',
    ]);
    expect(() => stripPrefixes(new Map([['module.a', 1], ['a', 2]]))).toThrow("stripPrefixes: 'module.a' and 'a' both become 'a'");
    expect([...stripPrefixes(new Map([['x.backbone.y', 1]])).keys()]).toEqual(['x.backbone.y']);
  });

  it('splitBackboneHead separates backbone.* and head.* (with or without module.)', () => {
    const flat = flattenStateDict(selectCheckpointEntry(ckpt));
    const { backbone, head, other } = splitBackboneHead(flat);
    expect([...backbone.keys()]).toEqual(['cls_token', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.bias']);
    expect([...head.keys()]).toEqual(['mlp.0.weight', 'last_layer.weight_g']);
    expect(other.size).toBe(0);
    const plain = splitBackboneHead(new Map([['backbone.a', 1], ['head.b', 2], ['c', 3]]));
    expect([...plain.other.keys()]).toEqual(['c']);
  });
});

describe('checkStrict', () => {
  const expected = new Map<string, number[]>([
    ['cls_token', [1, 1, 192]],
    ['blocks.0.attn.qkv.weight', [576, 192]],
    ['blocks.0.attn.qkv.bias', [576]],
    ['norm.weight', [192]],
  ]);

  it('passes on an exact match', () => {
    expect(() => checkStrict(expected, new Map([...expected].map(([k, s]) => [k, t(...s)])))).not.toThrow();
  });

  it('lists every missing key, unexpected key and shape mismatch in ONE error', () => {
    const got = new Map([
      ['cls_token', t(1, 1, 192)],
      ['blocks.0.attn.qkv.weight', t(192, 576)],
      ['blocks.0.attn.qkv.bias', t(575)],
      ['head.weight', t(10, 192)],
      ['pos_embed', t(1, 197, 192)],
    ]);
    let err: unknown;
    try {
      checkStrict(expected, got);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateDictMismatchError);
    const e = err as StateDictMismatchError;
    expect(e.message).toBe(
      [
        'state dict does not match the model: 1 missing, 2 unexpected, 2 shape mismatches',
        '  missing keys: norm.weight',
        '  unexpected keys: head.weight, pos_embed',
        '  shape mismatch: blocks.0.attn.qkv.weight: expected [576, 192], got [192, 576]',
        '  shape mismatch: blocks.0.attn.qkv.bias: expected [576], got [575]',
      ].join('\n'),
    );
    expect(e.missing).toEqual(['norm.weight']);
    expect(e.unexpected).toEqual(['head.weight', 'pos_embed']);
    expect(e.mismatched).toHaveLength(2);
  });
});

describe('loadStateDict', () => {
  it('sniffs torch checkpoints and safetensors', () => {
    const torch = loadStateDict(fixture('dino_checkpoint.pth'));
    expect(torch.format).toBe('torch');
    expect(torch.tensors.has('module.backbone.cls_token')).toBe(true);
    const st = loadStateDict(writeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } }));
    expect(st.format).toBe('safetensors');
    expect(Array.from(st.tensors.get('w')!.data)).toEqual([1, 2]);
    expect(loadStateDict(fixture('state_dict.pth')).tensors.size).toBe(25);
  });
});
