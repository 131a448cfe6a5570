/**
 * The options that pick a backbone's weights and architecture, shared by every command that loads
 * one (embed, attention, visualize, eval *), and their translation into a `BackboneRequest` for
 * bin/resources.ts `withBackbone`.
 */
import { DINO_PRESETS, type DinoPresetName } from '../../models/io/dino-arch.js';
import { choice, int, path, str, UsageError, type Values } from '../options.js';
import type { BackboneRequest } from '../resources.js';

/** The DINO v1 ViTs webdino trains, and 'custom'. */
export const ARCHS = ['vit_tiny', 'vit_small', 'vit_base', 'custom'] as const;
/** Every backbone a weights file may be read as: the v1 ViTs, 'custom' and the DINOv2 / DINOv3 presets. */
export const LOAD_ARCHS = [...ARCHS, ...(Object.keys(DINO_PRESETS) as DinoPresetName[])] as const;

export const BACKBONE_OPTIONS = {
  weights: path({ role: 'input', required: true, value: '<file>', help: 'Backbone weights: .safetensors, or a PyTorch .pth/.pt checkpoint' }),
  'checkpoint-key': str({ value: '<key>', derived: 'teacher', help: 'Entry of a full training checkpoint to use' }),
  arch: choice({
    choices: LOAD_ARCHS,
    value: '<arch>',
    derived: 'what the weights record, else inferred from their shapes',
    help: `${ARCHS.join(', ')}, or a DINOv2 / DINOv3 preset (${Object.keys(DINO_PRESETS).join(', ')})`,
  }),
  'patch-size': int({ min: 1, max: 1024, value: '<n>', derived: 'recorded or inferred, else 16', help: 'Patch size' }),
  'embed-dim': int({ min: 1, max: 65536, value: '<n>', help: 'Width of a custom ViT' }),
  depth: int({ min: 1, max: 1024, value: '<n>', help: 'Blocks of a custom ViT' }),
  heads: int({ min: 1, max: 1024, value: '<n>', help: 'Attention heads (a custom ViT; DINOv2 / DINOv3 weights whose width is not 64 per head)' }),
};

/** The weights and architecture the command line asks for; usage errors for inconsistent options. */
export function backboneRequest(v: Values<typeof BACKBONE_OPTIONS>): BackboneRequest {
  // --heads also serves DINOv2 / DINOv3 files (heads = width/64 unless given), so it is allowed
  // without --arch; a v1 preset fixes its own heads.
  const v1Preset = v.arch === 'vit_tiny' || v.arch === 'vit_small' || v.arch === 'vit_base';
  if (v.arch !== 'custom' && (v['embed-dim'] !== undefined || v.depth !== undefined)) throw new UsageError('--embed-dim and --depth need --arch custom');
  if (v1Preset && v.heads !== undefined) throw new UsageError(`--heads conflicts with --arch ${v.arch}, which fixes its heads`);
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
