/**
 * DINO's projection head (vision_transformer.DINOHead), with its parameter names:
 *
 *   mlp: Linear(in → 2048) · GELU · Linear(2048 → 2048) · GELU · Linear(2048 → 256)   (mlp.0/2/4)
 *   → l2-normalise → last_layer: weight-normalised Linear(256 → K, no bias)
 *
 * With useBn (DINO's --use_bn_in_head) a BatchNorm1d follows each hidden Linear, before its GELU,
 * and the indices shift as in the official nn.Sequential: Linear mlp.0, BN mlp.1, Linear mlp.3,
 * BN mlp.4, Linear mlp.6. The BN normalises with the batch statistics in training mode (the only
 * mode the head runs in: evaluation uses the backbone), so each hidden unit has zero mean and unit
 * variance over the rows of the batch whatever the scale of the differences between the images.
 *     W = g · v / ‖v‖ row-wise (weight_norm, dim 0): last_layer.weight_g [K, 1], weight_v [K, 256].
 *
 * With normLastLayer (the default) weight_g is fixed to 1 and receives no gradient, so every
 * prototype is a unit vector and the logits are cosine similarities. `nlayers = 1` is a single
 * Linear(in → bottleneck). Init: trunc_normal(0.02) for the MLP weights, zero biases; weight_v
 * keeps PyTorch's default Linear init, as in the official code (created after _init_weights).
 *
 * Size: K = 65536 with bottleneck 256 is a 64 MiB weight, inside every adapter's binding limit
 * (the spec's minimum maxStorageBufferBindingSize is 128 MiB); the logits of R rows are R·K·4
 * bytes, checked against the limit with a clear error.
 */
import type { Tensor } from '../engine/tensor.js';
import * as ops from '../engine/ops/index.js';
import { init, Linear, linearF16, Module, type ModuleContext } from './nn.js';
import { BatchNorm2d } from './resnet.js';

export interface DINOHeadConfig {
  inDim: number;
  outDim: number;
  hiddenDim: number;
  bottleneckDim: number;
  nlayers: number;
  normLastLayer: boolean;
  /** BatchNorm1d after each hidden Linear (DINO's use_bn_in_head; default false). */
  useBn: boolean;
}

export function dinoHeadConfig(c: Partial<DINOHeadConfig> & { inDim: number }): DINOHeadConfig {
  return { outDim: 65536, hiddenDim: 2048, bottleneckDim: 256, nlayers: 3, normLastLayer: true, useBn: false, ...c };
}

class WeightNormLinear extends Module {
  weightG: Tensor;
  weightV: Tensor;
  /**
   * @param fixG DINO's norm_last_layer: g stays 1 and is not a trained parameter, so the weight is
   * v/‖v‖. Otherwise g scales each row, also where g is not being trained: a teacher's g is the EMA
   * of its student's and must act on the teacher's logits (a frozen parameter is still a parameter).
   */
  constructor(
    ctx: ModuleContext,
    inDim: number,
    outDim: number,
    readonly fixG: boolean,
  ) {
    super(ctx);
    this.weightG = this.param('weight_g', [outDim, 1], init.ones(), !fixG);
    this.weightV = this.param('weight_v', [outDim, inDim], init.torchDefault(inDim));
  }
  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'weight_g') this.weightG = t;
    if (name === 'weight_v') this.weightV = t;
  }
  /** The effective weight g · v/‖v‖ (rows). */
  weight(): Tensor {
    const unit = this.weightV.l2Normalize(0); // torch's weight_norm divides by the plain norm
    return this.fixG ? unit : unit.mul(this.weightG);
  }
  forward(x: Tensor): Tensor {
    const K = this.weightV.shape[0];
    const rows = x.size / x.shape[x.rank - 1];
    const limit = this.engine.device.limits.maxStorageBufferBindingSize;
    if (rows * K * 4 > limit) {
      throw new Error(`DINO head: ${rows} rows × ${K} prototypes of logits exceed the adapter's storage binding limit (${limit} bytes); use a smaller batch or out_dim`);
    }
    // Mixed precision: the effective weight is computed in f32 from the master v, then rounded.
    return this.precision === 'f16' ? linearF16(x, this.weight(), null) : ops.linear(x, this.weight());
  }
}

/** BatchNorm1d over rows (R, C): BatchNorm2d on (R, C, 1, 1), the same statistics and parameter names. */
class BatchNorm1d extends BatchNorm2d {
  override forward(x: Tensor): Tensor {
    const [R, C] = x.shape;
    return super.forward(x.reshape(R, C, 1, 1)).reshape(R, C);
  }
}

export class DINOHead extends Module {
  readonly cfg: DINOHeadConfig;
  readonly layers: Linear[] = [];
  /** With useBn: the BatchNorm after each hidden Linear (one fewer than layers). */
  readonly norms: BatchNorm1d[] = [];
  readonly lastLayer: WeightNormLinear;

  constructor(ctx: ModuleContext, cfg: DINOHeadConfig) {
    super(ctx);
    this.cfg = cfg;
    const tn = init.truncNormal(0.02);
    const z = init.zeros();
    const mlp = this.child('mlp', new Module(ctx));
    // Official nn.Sequential indices: Linear, [BN], GELU per hidden layer, then the last Linear.
    const stride = cfg.useBn ? 3 : 2;
    const add = (i: number, a: number, b: number) => {
      const l = new Linear(ctx, a, b, { weightInit: tn, biasInit: z });
      mlp.addModule(String(i * stride), l);
      this.layers.push(l);
      if (cfg.useBn && i < cfg.nlayers - 1) {
        const bn = new BatchNorm1d(ctx, b);
        mlp.addModule(String(i * stride + 1), bn);
        this.norms.push(bn);
      }
    };
    if (cfg.nlayers === 1) {
      // A single Linear is registered as `mlp` itself in the official code.
      this.children.delete('mlp');
      this.layers.push(this.child('mlp', new Linear(ctx, cfg.inDim, cfg.bottleneckDim, { weightInit: tn, biasInit: z })));
    } else {
      add(0, cfg.inDim, cfg.hiddenDim);
      for (let i = 1; i < cfg.nlayers - 1; i++) add(i, cfg.hiddenDim, cfg.hiddenDim);
      add(cfg.nlayers - 1, cfg.hiddenDim, cfg.bottleneckDim);
    }
    this.lastLayer = this.child('last_layer', new WeightNormLinear(ctx, cfg.bottleneckDim, cfg.outDim, cfg.normLastLayer));
  }

  /**
   * (R, inDim) → (R, K), always f32: under mixed precision the f16 logits (cosine similarities,
   * |·| ≤ 1 with normLastLayer) are converted before the loss divides them by a temperature, so
   * logit/τ, the softmax over K = 65536 prototypes, the centering and the cross-entropy are f32.
   */
  forward(x: Tensor): Tensor {
    return this.f32(this.lastLayer.forward(this.bottleneck(x)));
  }

  /** The bottleneck features before the last layer (l2-normalised). */
  bottleneck(x: Tensor): Tensor {
    let h = x;
    this.layers.forEach((l, i) => {
      const hidden = i < this.layers.length - 1;
      // Mixed precision: BatchNorm's batch statistics and the l2-normalisation compute in f32.
      if (hidden && this.cfg.useBn) h = this.norms[i]!.forward(this.f32(l.forward(h, 'none'))).gelu();
      else h = l.forward(h, hidden ? 'gelu' : 'none');
    });
    return this.f32(h).l2Normalize();
  }
}
