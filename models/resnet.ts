/**
 * ResNet-18 and ResNet-50 with torchvision's layout and parameter names (conv1, bn1, layer1.0.conv1,
 * layer2.0.downsample.0, ...), as DINO uses them: the classifier `fc` is absent by default (DINO
 * replaces it with Identity; embed dim 512 for ResNet-18, 2048 for ResNet-50).
 *
 *   conv 7×7/2 → BN → ReLU → max-pool 3×3/2 → layer1..4 → global average pool → (B, C)
 * BasicBlock (18): 3×3 conv-BN-ReLU, 3×3 conv-BN, + shortcut, ReLU.
 * Bottleneck (50, torchvision v1.5: stride on the 3×3): 1×1, 3×3, 1×1 (×4 channels), + shortcut.
 *
 * Batch norm: training mode normalises with the batch statistics (biased variance) and updates
 * running_mean/var with momentum 0.1 (running_var from the unbiased variance), as PyTorch; eval
 * mode uses the running statistics. Composed from reductions and broadcasting ops, so autograd
 * derives its backward.
 */
import * as ops from '../engine/ops/index.js';
import type { Tensor } from '../engine/tensor.js';
import { stridedCopy } from '../kernels/elementwise.js';
import { Conv2d, init, Linear, Module, type ModuleContext } from './nn.js';

export class BatchNorm2d extends Module {
  weight: Tensor;
  bias: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
  numBatchesTracked: Tensor;
  constructor(ctx: ModuleContext, readonly channels: number, readonly eps = 1e-5, readonly momentum = 0.1) {
    super(ctx);
    this.weight = this.param('weight', [channels], init.ones());
    this.bias = this.param('bias', [channels], init.zeros());
    this.runningMean = this.buffer('running_mean', [channels], init.zeros());
    this.runningVar = this.buffer('running_var', [channels], init.ones());
    this.numBatchesTracked = this.buffer('num_batches_tracked', [], init.zeros());
  }
  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
    if (name === 'bias') this.bias = t;
    if (name === 'running_mean') this.runningMean = t;
    if (name === 'running_var') this.runningVar = t;
    if (name === 'num_batches_tracked') this.numBatchesTracked = t;
  }
  forward(x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const perChannel = (t: Tensor) => t.reshape(1, C, 1, 1);
    let mean: Tensor;
    let variance: Tensor;
    if (this.training) {
      const flat = x.permute(1, 0, 2, 3).reshape(C, B * H * W); // (C, BHW)
      mean = flat.mean(1); // (C)
      const centered = flat.sub(mean.reshape(C, 1));
      variance = centered.mul(centered).mean(1); // biased
      const n = B * H * W;
      this.engine.noGrad(() => {
        const m = this.momentum;
        const newMean = this.runningMean.mul(1 - m).add(mean.detach().mul(m));
        const newVar = this.runningVar.mul(1 - m).add(variance.detach().mul((m * n) / Math.max(n - 1, 1)));
        stridedCopy(this.runningMean, newMean);
        stridedCopy(this.runningVar, newVar);
        const nb = this.numBatchesTracked.add(1);
        stridedCopy(this.numBatchesTracked, nb);
        newMean.dispose();
        newVar.dispose();
        nb.dispose();
      });
    } else {
      mean = this.runningMean;
      variance = this.runningVar;
    }
    const rstd = variance.add(this.eps).pow(-0.5);
    const scale = perChannel(rstd.mul(this.weight));
    const shift = perChannel(this.bias.sub(mean.mul(rstd).mul(this.weight)));
    return x.mul(scale).add(shift);
  }
}

class BasicBlock extends Module {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly downsample: [Conv2d, BatchNorm2d] | null;
  constructor(ctx: ModuleContext, inC: number, planes: number, stride: number) {
    super(ctx);
    const k = (c: number, kk: number) => init.kaimingNormalFanOut(c * kk * kk);
    this.conv1 = this.child('conv1', new Conv2d(ctx, inC, planes, 3, { stride, padding: 1, bias: false, weightInit: k(planes, 3) }));
    this.bn1 = this.child('bn1', new BatchNorm2d(ctx, planes));
    this.conv2 = this.child('conv2', new Conv2d(ctx, planes, planes, 3, { padding: 1, bias: false, weightInit: k(planes, 3) }));
    this.bn2 = this.child('bn2', new BatchNorm2d(ctx, planes));
    this.downsample = makeDownsample(this, ctx, inC, planes, stride);
  }
  forward(x: Tensor): Tensor {
    let out = this.bn1.forward(this.conv1.forward(x)).relu();
    out = this.bn2.forward(this.conv2.forward(out));
    const identity = this.downsample ? this.downsample[1].forward(this.downsample[0].forward(x)) : x;
    return out.add(identity).relu();
  }
}

class Bottleneck extends Module {
  static readonly expansion = 4;
  readonly convs: Conv2d[];
  readonly bns: BatchNorm2d[];
  readonly downsample: [Conv2d, BatchNorm2d] | null;
  constructor(ctx: ModuleContext, inC: number, planes: number, stride: number) {
    super(ctx);
    const k = (c: number, kk: number) => init.kaimingNormalFanOut(c * kk * kk);
    const out = planes * 4;
    this.convs = [
      this.child('conv1', new Conv2d(ctx, inC, planes, 1, { bias: false, weightInit: k(planes, 1) })),
      this.child('conv2', new Conv2d(ctx, planes, planes, 3, { stride, padding: 1, bias: false, weightInit: k(planes, 3) })),
      this.child('conv3', new Conv2d(ctx, planes, out, 1, { bias: false, weightInit: k(out, 1) })),
    ];
    this.bns = [this.child('bn1', new BatchNorm2d(ctx, planes)), this.child('bn2', new BatchNorm2d(ctx, planes)), this.child('bn3', new BatchNorm2d(ctx, out))];
    this.downsample = makeDownsample(this, ctx, inC, out, stride);
  }
  forward(x: Tensor): Tensor {
    let h = this.bns[0].forward(this.convs[0].forward(x)).relu();
    h = this.bns[1].forward(this.convs[1].forward(h)).relu();
    h = this.bns[2].forward(this.convs[2].forward(h));
    const identity = this.downsample ? this.downsample[1].forward(this.downsample[0].forward(x)) : x;
    return h.add(identity).relu();
  }
}

function makeDownsample(parent: Module, ctx: ModuleContext, inC: number, outC: number, stride: number): [Conv2d, BatchNorm2d] | null {
  if (stride === 1 && inC === outC) return null;
  const ds = parent.addModule('downsample', new Module(ctx));
  const conv = ds.addModule('0', new Conv2d(ctx, inC, outC, 1, { stride, bias: false, weightInit: init.kaimingNormalFanOut(outC) }));
  const bn = ds.addModule('1', new BatchNorm2d(ctx, outC));
  return [conv, bn];
}

export const RESNET_PRESETS = {
  resnet18: { block: 'basic', layers: [2, 2, 2, 2] },
  resnet50: { block: 'bottleneck', layers: [3, 4, 6, 3] },
} as const;

export type ResNetArch = keyof typeof RESNET_PRESETS;

export class ResNet extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly stages: (BasicBlock | Bottleneck)[][] = [];
  readonly fc: Linear | null;
  readonly embedDim: number;

  constructor(ctx: ModuleContext, arch: ResNetArch, opts: { numClasses?: number; width?: number } = {}) {
    super(ctx);
    const preset = RESNET_PRESETS[arch];
    if (!preset) throw new Error(`unknown ResNet arch '${arch}' (${Object.keys(RESNET_PRESETS).join(', ')})`);
    const width = opts.width ?? 64;
    this.conv1 = this.child('conv1', new Conv2d(ctx, 3, width, 7, { stride: 2, padding: 3, bias: false, weightInit: init.kaimingNormalFanOut(width * 49) }));
    this.bn1 = this.child('bn1', new BatchNorm2d(ctx, width));
    const Block = preset.block === 'basic' ? BasicBlock : Bottleneck;
    let inC = width;
    preset.layers.forEach((n, i) => {
      const planes = width * 2 ** i;
      const stage = this.child(`layer${i + 1}`, new Module(ctx));
      const blocks: (BasicBlock | Bottleneck)[] = [];
      for (let j = 0; j < n; j++) {
        const b = stage.addModule(String(j), new Block(ctx, inC, planes, j === 0 && i > 0 ? 2 : 1));
        blocks.push(b);
        inC = planes * Block.expansion;
      }
      this.stages.push(blocks);
    });
    this.embedDim = inC;
    this.fc = opts.numClasses ? this.child('fc', new Linear(ctx, inC, opts.numClasses)) : null;
  }

  /** (B, 3, H, W) → (B, embedDim) (or class logits when built with numClasses). */
  forward(x: Tensor): Tensor {
    let h = this.bn1.forward(this.conv1.forward(x)).relu();
    h = ops.maxPool2d(h, { kernel: 3, stride: 2, padding: 1 });
    for (const stage of this.stages) for (const b of stage) h = b.forward(h);
    const [B, C, H, W] = h.shape;
    const pooled = h.reshape(B, C, H * W).mean(2); // global average pool
    return this.fc ? this.fc.forward(pooled) : pooled;
  }
}
