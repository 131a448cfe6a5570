/**
 * ResNet-18 (torchvision layout, width 4) against PyTorch: eval-mode forward with running
 * statistics, train-mode forward with batch statistics, gradients w.r.t. the input and every
 * weight, and the running statistics after the training step.
 */
import { readFileSync } from 'node:fs';
import { describe, it } from 'vitest';
import { parseSafetensors } from '../../models/io/safetensors.js';
import { ResNet } from '../../models/resnet.js';
import { Rng } from '../../index.js';
import { expectClose, expectCloseScaled, getEngine } from '../helpers.js';

const dir = new URL('../fixtures/models/', import.meta.url);
const load = (f: string) => parseSafetensors(new Uint8Array(readFileSync(new URL(f, dir))));

describe('ResNet-18 vs PyTorch', () => {
  it('eval and train forward, backward, running statistics', async () => {
    const wd = await getEngine();
    const net = new ResNet({ engine: wd, rng: new Rng(0) }, 'resnet18', { width: 4 });
    net.loadStateDict(load('resnet_weights.safetensors'));
    const io = load('resnet_io.safetensors');
    await wd.scope(async () => {
      const t = (k: string, grad = false) => wd.tensor(io.get(k)!.data, io.get(k)!.shape, { requiresGrad: grad });
      net.eval();
      expectClose(await net.forward(t('x')).toArray(), io.get('y_eval')!.data, 1e-4, 1e-5, 'eval forward');
      net.train();
      const x = t('x', true);
      const y = net.forward(x);
      expectClose(await y.toArray(), io.get('y_train')!.data, 1e-4, 1e-5, 'train forward');
      y.mul(t('r')).sum().backward();
      expectCloseScaled(await x.grad!.toArray(), io.get('grad.x')!.data, 1e-3, 'grad x');
      for (const [name, p] of net.namedParameters()) {
        expectCloseScaled(await p.grad!.toArray(), io.get(`grad.${name}`)!.data, 1e-3, `grad ${name}`);
      }
      for (const [name, b] of net.namedBuffers()) {
        if (!name.includes('running')) continue;
        expectClose(await b.toArray(), io.get(`after.${name}`)!.data, 1e-4, 1e-6, `${name} after a training step`);
      }
    });
    net.dispose();
  });
});
