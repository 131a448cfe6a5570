/**
 * The options that pick a backbone's weights and architecture, shared by every command that loads
 * one (embed, attention, visualize, eval *), and their translation into a `BackboneRequest` for
 * bin/resources.ts `withBackbone`.
 */
import { choice, int, path, str, UsageError, type Values } from '../options.js';
import type { BackboneRequest } from '../resources.js';

export const ARCHS = ['vit_tiny', 'vit_small', 'vit_base', 'custom'] as const;

export const BACKBONE_OPTIONS = {
  weights: path({ role: 'input', required: true, value: '<file>', help: 'Backbone weights: .safetensors, or a PyTorch .pth/.pt checkpoint' }),
  'checkpoint-key': str({ value: '<key>', derived: 'teacher', help: 'Entry of a full training checkpoint to use' }),
  arch: choice({ choices: ARCHS, value: '<arch>', derived: 'what the weights record, else inferred from their shapes', help: ARCHS.join(', ') }),
  'patch-size': int({ min: 1, max: 1024, value: '<n>', derived: 'recorded or inferred, else 16', help: 'Patch size' }),
  'embed-dim': int({ min: 1, max: 65536, value: '<n>', help: 'Width of a custom ViT' }),
  depth: int({ min: 1, max: 1024, value: '<n>', help: 'Blocks of a custom ViT' }),
  heads: int({ min: 1, max: 1024, value: '<n>', help: 'Attention heads of a custom ViT' }),
};

/** The weights and architecture the command line asks for; usage errors for inconsistent options. */
export function backboneRequest(v: Values<typeof BACKBONE_OPTIONS>): BackboneRequest {
  if (v.arch !== 'custom' && (v['embed-dim'] !== undefined || v.depth !== undefined || v.heads !== undefined)) {
    throw new UsageError('--embed-dim, --depth and --heads need --arch custom');
  }
  return {
    weights: v.weights,
    checkpointKey: v['checkpoint-key'],
    arch: v.arch,
    patchSize: v['patch-size'],
    embedDim: v['embed-dim'],
    depth: v.depth,
    numHeads: v.heads,
  };
}
