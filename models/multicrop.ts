/**
 * DINO's MultiCropWrapper: crops are grouped by resolution so each resolution costs one backbone
 * forward; the features of all groups are concatenated in crop order and go through ONE head
 * forward. Rows are crop-major: [crop0 × B; crop1 × B; ...], so the output splits by crop.
 */
import type { Tensor } from '../engine/tensor.js';
import * as ops from '../engine/ops/index.js';
import { Module, type ModuleContext } from './nn.js';

/** A backbone: images (B, 3, H, W) → features (B, D). */
export interface Backbone extends Module {
  forward(x: Tensor): Tensor;
  readonly embedDim: number;
}

/** A head: features (R, D) → outputs (R, K). */
export interface Head extends Module {
  forward(x: Tensor): Tensor;
}

export class MultiCropWrapper<B extends Backbone = Backbone, H extends Head = Head> extends Module {
  constructor(
    ctx: ModuleContext,
    readonly backbone: B,
    readonly head: H,
  ) {
    super(ctx);
    this.addModule('backbone', backbone);
    this.addModule('head', head);
  }

  /**
   * `groups`: tensors of crops that share a resolution, each (n_i·B, 3, S_i, S_i) in crop-major
   * order (e.g. the 2 global crops, then the local crops). Returns (Σ n_i·B, K).
   */
  forward(groups: readonly Tensor[]): Tensor {
    const feats = groups.map((g) => this.backbone.forward(g)); // one backbone pass per resolution
    const all = feats.length === 1 ? feats[0] : ops.concat(feats, 0);
    return this.head.forward(all);
  }
}
