/**
 * F9 of the reliability sweep: full-resolution images went into one storage binding per batch, so
 * 4 phone photos failed `train --batch-size 4` and one 10000² PNG failed at any batch size.
 * Two fixes, tested here: images are reduced at decode (decodeImage's maxSide, default 2048), and a
 * batch whose images exceed the binding limit is uploaded in runs that fit (cropImages).
 */
import { describe, expect, it } from 'vitest';
import type { Engine } from '../../engine/engine.js';
import { decodeImage, DEFAULT_MAX_SIDE, encodePng, reduceToMaxSide } from '../../models/io/image.js';
import { Rng } from '../../engine/random.js';
import { IMAGENET_NORM, type ImageLike } from '../../kernels/augment.js';
import { cropImages, evalTransform } from '../../train/data/transforms.js';
import { MultiCropAugmenter } from '../../train/augment.js';
import { getEngine } from '../helpers.js';

function randomImage(width: number, height: number, seed: number): ImageLike {
  const r = new Rng(seed);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = r.int(256);
  return { width, height, data };
}

/** The same engine, seen through a device whose storage binding limit is `limit` bytes. */
function withBindingLimit(wd: Engine, limit: number): Engine {
  const limits = new Proxy(wd.device.limits, { get: (t, k) => (k === 'maxStorageBufferBindingSize' ? limit : Reflect.get(t, k)) });
  const device = Object.create(wd.device, { limits: { value: limits } });
  return Object.create(wd, { device: { value: device } }) as Engine;
}

describe('F9: images larger than the storage binding limit', () => {
  it('decodeImage reduces an image above maxSide by an integer box factor (the mean of each box)', () => {
    const img = randomImage(7, 5, 1);
    const r = reduceToMaxSide(img, 3); // f = ceil(7/3) = 3 → 3×2, edge boxes partial
    expect([r.width, r.height]).toEqual([3, 2]);
    for (const [ox, oy] of [[0, 0], [2, 0], [1, 1], [2, 1]]) {
      let n = 0;
      const s = [0, 0, 0];
      for (let y = oy * 3; y < Math.min(5, oy * 3 + 3); y++) {
        for (let x = ox * 3; x < Math.min(7, ox * 3 + 3); x++) {
          for (let c = 0; c < 3; c++) s[c] += img.data[(y * 7 + x) * 3 + c];
          n++;
        }
      }
      expect(Array.from(r.data.subarray((oy * 3 + ox) * 3, (oy * 3 + ox) * 3 + 3))).toEqual(s.map((v) => Math.round(v / n)));
    }
    expect(reduceToMaxSide(img, 7)).toBe(img);
    const big = { width: 4100, height: 30, data: new Uint8Array(4100 * 30 * 3).fill(200) };
    const png = encodePng(big.width, big.height, big.data, 3);
    const d = decodeImage(png);
    expect([d.width, d.height]).toEqual([Math.ceil(4100 / 3), 10]);
    expect(Math.max(d.width, d.height)).toBeLessThanOrEqual(DEFAULT_MAX_SIDE);
    expect(decodeImage(png, { maxSide: Infinity }).width).toBe(4100);
  });

  it('a batch over the limit is cropped in runs that fit, with the same pixels as one upload', async () => {
    const wd = await getEngine();
    const images = [randomImage(48, 48, 2), randomImage(60, 39, 3), randomImage(27, 51, 4), randomImage(48, 48, 5), randomImage(33, 33, 6)];
    const aug = new MultiCropAugmenter(wd, { globalSize: 6, localSize: 4, localCrops: 2 });
    const rng = new Rng(7);
    const params = aug.sample(images, rng);
    const small = withBindingLimit(wd, 16384); // the images hold 37.6 KB: two or three per upload
    for (const [crops, S] of [[params.globals, 6], [params.locals, 4]] as const) {
      const whole = await cropImages(wd, images, crops, S, IMAGENET_NORM).toArray();
      const runs = await cropImages(small, images, crops, S, IMAGENET_NORM).toArray();
      expect(runs).toEqual(whole);
    }
    const ev = await evalTransform(small, images, { crop: 6 }).toArray();
    expect(ev).toEqual(await evalTransform(wd, images, { crop: 6 }).toArray());
    expect(() => cropImages(withBindingLimit(wd, 8192), images, params.globals, 6, IMAGENET_NORM)).toThrow(
      /image 0 is 48x48 \(9216 bytes on the GPU\), over the device's 8192-byte storage binding limit/,
    );
  });
});
