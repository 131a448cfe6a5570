/**
 * DINO multi-crop augmentation: every kernel stage against its float64 reference (kernels/augment.ts),
 * the reference against PIL itself (golden bytes), the parameter sampling (torchvision's
 * RandomResizedCrop and DINO's probabilities), determinism, crop-major ordering, the eval transform,
 * and leaks.
 *
 * Tolerances: values are in [0, 1] (or normalised by std ≈ 0.225, ×4.4); each output is a short f32
 * sum (≤ ~20 resampling taps per pass, ≤ 13 blur taps) or a few pointwise ops, so f32 error is
 * ~1e-7 per op; atol 1e-5 (unnormalised) / 5e-5 (normalised) leaves margin while any wrong tap,
 * weight, edge clamp or op order is off by > 1e-3. Solarization is discontinuous at 0.5: where the
 * float64 value before it lies within 1e-5 of 0.5, either branch is accepted.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import {
  blurRef,
  colourRef,
  type ColourOp,
  cropBatchRaw,
  cropBeforeSolarizeRef,
  type CropParams,
  type ImageLike,
  IMAGENET_NORM,
  type Normalisation,
  normaliseRef,
  plainCrop,
  resampleRef,
  solarizeRef,
  uploadImages,
} from '../../kernels/augment.js';
import { DINO_MULTICROP, MultiCropAugmenter, sampleCropParams } from '../../train/augment.js';
import { evalCropParams, evalTransform, roundHalfEven, sampleResizedCropBox } from '../../train/data/transforms.js';
import { expectClose, getEngine } from '../helpers.js';

const IDENTITY: Normalisation = { mean: [0, 0, 0], std: [1, 1, 1] };

function randomImage(width: number, height: number, seed: number): ImageLike {
  const rng = new Rng(seed);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
  return { width, height, data };
}

/** Runs `crops` (size S) on the GPU and returns the [K, 3, S, S] values. */
async function runCrops(images: ImageLike[], crops: CropParams[], S: number, norm: Normalisation, maxChunkBytes?: number): Promise<Float32Array> {
  const wd = await getEngine();
  return wd.scope(async () => {
    const packed = uploadImages(wd, images);
    const out = cropBatchRaw(wd, packed, crops, S, { norm, maxChunkBytes });
    expect(out.shape).toEqual([crops.length, 3, S, S]);
    return out.toArray();
  });
}

/**
 * The float64 expectation of `crops` (concatenated CHW), accepting either solarize branch where the
 * value before solarization is within 1e-5 of the 0.5 threshold.
 */
function expectCrops(got: Float32Array, images: ImageLike[], crops: CropParams[], S: number, norm: Normalisation, atol: number, what: string): void {
  const plane = 3 * S * S;
  const want = new Float64Array(crops.length * plane);
  crops.forEach((c, k) => {
    const pre = cropBeforeSolarizeRef(images[c.image], c, S);
    const w = normaliseRef(c.solarize ? solarizeRef(pre) : pre, S, norm);
    if (c.solarize) {
      const alt = normaliseRef(pre, S, norm);
      for (let p = 0; p < S * S; p++) {
        for (let ch = 0; ch < 3; ch++) {
          const j = ch * S * S + p;
          const g = got[k * plane + j];
          if (Math.abs(pre[3 * p + ch] - 0.5) < 1e-5 && Math.abs(g - alt[j]) <= atol) w[j] = alt[j];
        }
      }
    }
    want.set(w, k * plane);
  });
  expectClose(got, want, 0, atol, what);
}

// PIL 12.3: Image.frombytes('RGB', (13, 17), goldenImage).crop(box).resize(size, BICUBIC)[.crop(window)].tobytes()
function goldenImage(): ImageLike {
  const W = 13;
  const H = 17;
  const data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let c = 0; c < 3; c++) data[(y * W + x) * 3 + c] = (x * 131 + y * 197 + c * 59 + x * y * 11 + ((x * x * y) % 13) * 17) % 256;
    }
  }
  return { width: W, height: H, data };
}
const GOLDEN: { box: [number, number, number, number]; outW: number; outH: number; ox: number; oy: number; S: number; b64: string }[] = [
  { box: [0, 0, 13, 17], outW: 7, outH: 7, ox: 0, oy: 0, S: 7, b64: 'am+POXurRYOZcLFiQW16n1xhbYeERm6Kd5WIaY6YWnmYO2GGkm9YgmVfq1xNlXpgaENwrotnaYmnfYe4k2d5gJh1Wn6KgpteepyBS4a2UXmRpXiRbZudnpJqpZhbrnJVhJKqlEB2XI5xSUCCb3VzT4OsZ6KhhriNon9ffVB9pnlTjpWtjJxhjSx4h5yRg6K3jmZt' },
  { box: [2, 3, 9, 11], outW: 23, outH: 23, ox: 0, oy: 0, S: 23, b64: 'YJjtXJjpTZTaQZLOTJvaaaz4dK//V5HbNG+tN3KrXZfRb6rlR4zHDl2YAEaEAECOFFCQTZFomOYwxeUYzm0qzABAzwBHbq28baW6ZouxYnGraX+yeqjDe7vJWZm3MW2iL2upTY7LYaDbVYG+PlGQLD1/G0CMGVOSPINyc75EmsAqsXQqvi0xxSQyjd1OksFQn3VVrCdaqz9WoKJLidtNW69nK2qJHFykJnu+P4zHcmiqqTR/pyZzZD+HJFqXFWKJIGRuOW1PcIIonpQMsKABqv8Nrt8Wu4IyxyFNxy1Cv4sbpsIPZJw8IF54EE2ZKV6pU2upnFyK5kVh40Jbh1N8LWGbClekBUagF1eKVJlWiNIrnOYcvv8YuP8up8psl4erqWag1lxe2lY3eE5OCkh1CT6HZzCLujKA1WBZ1Zsrt6oubYdkMGieKnLCQY7cV6XicbvJhcqwjdGp1estxOlHlNWPZLTbdoLTuj+O0RZdgR1hIzVzMjp0oS9s9Tpf7YFHvdYwj+Y8V6dvM2+kSXvHfqTjmLv3kL7/grz/f73/+mpA3W1QjXB/NG6xJVyxRj2MWyhvcyJsjSduqkdkzoBP4LFKzc5rqN2bgtGxUKO1OHevZV6htFSQ0F6aqorMgLH3c8D/7RVbzxxfgjFqJ0l3AlB+AEyBB0R/aCx22R1p/UtV47c1wP81q/+BlNXneLX/TproPX24blCKviJe2CJep2SgdKLdZLjzdy6Iczt6bWRTYY8tRpA7G3NyElOSaieE1gZl9C9E0qAWq/QPle9jgcTVbKf/UpTkRIG8VGSkdEeRfkWRammtVovHUJfQGFisKGiVV5VRicQNfb0fQpByL2SkcTeNxRde2TQ7uY4WltESgc9ab6+8YJvmVI/YSoXBQn+4PHyxOnqvO3iwPXiyPXezI222K3WpP4uBVqJbUp5sO4WnP3bBe3ySwIpSzJtFqLJfg76Ab7OiYJ3DVZDUT4nVT4nHWZmfaLBpZq9aTY9+NnKkLmexRoG8Q365OXSvMGumMm2vPHfFU47Ch8KEu/ZCvvlOlM+hbKfiV5LgS4bFRoG/SYTQU47Ob6qKkMsrj8oRX5pVM26aI16yTJXfU4fSZlyvejOGfEJ1cXtzc7FsluFKuf8vqfZIbLiUN4HNH2rEF2GkHmaiPX/DWZTSYpyhYJlSU486NHhnG2WXEl2nVqrqZ5TVllKdyBFZyisxqYoalNQPo/APtfMcmdU7VJJwG1uWAkOQADx8C0uGPHm1X5rWUIvEJ2KXEk6CE1GIGFeSGVmVfMeLgbOKjXuKm0SDo15jprYuqPQKqv8Aqe4GncYih35Xc0J9ZyV4YBlmXi92ZmytZ5/aUp/fNIXPMG66T1WZbUN/eDx1qOQVnNYteLBzVYu7Y5yvltZkuPworv0NnOYFp7kXy21H5zBr6xRl4g5WyChrmGmob6TfXbjyXLfzcp7aqGGd2C1o6RpVuP8IsfMfnLhjiHaplmykv4tl06g9uMRHldRgnq5mzU9e8g9W+yFJ81ZC2Hpfn5yqdK3ldKHjjIXCqWagzzx37h5Z+RFMvP8tw/w40qhU5URz7Rtw7xlT4y9Tu3WVj7vdjabVsDmFzQBB1EUqz8EtvO5TkuKueLfsi3vHtjFy0ApE2QlE2xNO3BRP1rFE2bRE4pQ/6Go91kJBsxlIlxRkhVm0far/hazroGd9tkEivYMKuuYPrv8/k+6tfr37gH7ZjTSAnwhMuQBEzgNI1wNG8iZZ5z9O1nsttroOg6cZPlpFGjJ1NFy3ZJzsgbjOlLphobsHqM0AqOAAo+Iul9inhsL/Ypv6OWm6Pj2HghVfwQBD2AA3tRJ0rCprm25Of7Y0VbNAH3ZqB1STJ2u/WZXedLHKgciCiddIkNhEk9JIlM5ik8yRi8a0bLSwRJyQRoFzgmBSuUg6zUQvRE2RRFSRRWiPRH+QQYSZO3ynO3q2R4XFWJPSZJ/TbKrIc7PBerjOgLzWhsG+i8Zzj8oxjcsniswrkcwvpMsutcotvMstEWWeFWaiHmasKme4OHHARoDDUYzGVZDIV5LMXJfWYp3naaT2cKv/eLP/f7rniMNlkcwAnNYAqOIAse4Ss/ses/8otP8s' },
  { box: [1, 0, 12, 5], outW: 7, outH: 7, ox: 0, oy: 0, S: 7, b64: 'TonETYjKTok7UYxHWJhMVp5UWZRdS4bBI16oV5J8brBtXWBpnllgTZWpR4K8KWR8XJeve796Sz2RzzJpcomsRoG4gbxqVpGlXplYH12pr2FjxmwzQHu9ZKrIVI7GNnmfPIByrlVNSmKQRX6KioWPSYuiWV2sQW5wlWY6WmpwToVNymobPoholEyRM0mMd4MxtnYT' },
  { box: [0, 0, 13, 17], outW: 11, outH: 6, ox: 2, oy: 0, S: 6, b64: 'PHmWQYKlVJKUebpZO32GRGF0kp53lYR/OWKUf4GRbWJ4MW+XaHZ5RWmAo05ep7ZcZ6jGXXagi4WAmoRaqt9AjFl2cm2KYZnHmIxcbHJ5W5DMi41xksqDg6CccZPAl7xlZWh8ljR6bW+emLqG' },
];

function goldenCrop(g: (typeof GOLDEN)[number]): CropParams {
  return { ...plainCrop(0, g.box, g.S), outW: g.outW, outH: g.outH, ox: g.ox, oy: g.oy };
}

function jitterCrop(image: number, box: [number, number, number, number], S: number, ops: ColourOp[], f: Partial<CropParams> = {}): CropParams {
  return { ...plainCrop(image, box, S), ops, brightness: 1.3, contrast: 0.7, saturation: 1.15, hue: 0.07, ...f };
}

describe('augment kernels vs float64 references', () => {
  const imgA = randomImage(13, 17, 1);
  const imgB = randomImage(31, 7, 2);
  const imgC = randomImage(67, 41, 3);
  const images = [imgA, imgB, imgC];

  it('bicubic resampling matches PIL within one 8-bit level (reference and kernel)', async () => {
    const img = goldenImage();
    for (const g of GOLDEN) {
      const pil = Uint8Array.from(atob(g.b64), (ch) => ch.charCodeAt(0));
      const c = goldenCrop(g);
      const ref = resampleRef(img, c, g.S);
      expect(pil.length).toBe(ref.length);
      let worst = 0;
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ref[i] * 255 - pil[i]));
      // PIL rounds to 8 bits after each pass (≤ 0.5 level each, amplified ≤ 1.2× by the weights).
      expect(worst, `box ${g.box} → ${g.outW}x${g.outH}`).toBeLessThan(1.25);
      const got = await runCrops([img], [c], g.S, IDENTITY);
      const hwc = new Float64Array(ref.length);
      for (let p = 0; p < g.S * g.S; p++) for (let ch = 0; ch < 3; ch++) hwc[3 * p + ch] = got[ch * g.S * g.S + p] * 255;
      for (let i = 0; i < ref.length; i++) expect(Math.abs(hwc[i] - pil[i])).toBeLessThan(1.25);
    }
  });

  it('resampling: downscale, upscale, non-square boxes, flips, windows, images of different sizes', async () => {
    const cases: [number, [number, number, number, number], number, Partial<CropParams>][] = [
      [0, [0, 0, 13, 17], 7, {}],
      [0, [0, 0, 13, 17], 23, {}],
      [0, [2, 3, 9, 11], 23, { flip: true }],
      [0, [1, 0, 12, 5], 7, {}],
      [1, [3, 1, 27, 6], 7, { flip: true }],
      [1, [0, 0, 31, 7], 23, {}],
      [2, [5, 2, 60, 37], 7, {}], // ×8.6 downscale: 35-tap filters
      [2, [0, 0, 67, 41], 13, { flip: true }],
      [2, [40, 30, 3, 2], 23, {}], // ×11 upscale of a 3×2 box
      [0, [0, 0, 13, 17], 7, { outW: 11, outH: 9, ox: 3, oy: 1 }], // window of a resized image
      [2, [0, 0, 67, 41], 13, { outW: 21, outH: 13, ox: 4, oy: 0 }],
    ];
    for (const S of [7, 13, 23]) {
      const crops = cases.filter((c) => c[2] === S).map(([i, box, s, f]) => ({ ...plainCrop(i, box, s), ...f }));
      const got = await runCrops(images, crops, S, IDENTITY);
      expectCrops(got, images, crops, S, IDENTITY, 1e-5, `resample S=${S}`);
    }
  });

  it('each colour op alone, grayscale, and all four in random orders (contrast sees the image as it is then)', async () => {
    const rng = new Rng(7);
    const box: [number, number, number, number] = [1, 2, 11, 13];
    const crops: CropParams[] = [
      jitterCrop(0, box, 7, [0], { brightness: 1.4 }), // clamps
      jitterCrop(0, box, 7, [0], { brightness: 0.6 }),
      jitterCrop(0, box, 7, [1], { contrast: 1.4 }),
      jitterCrop(0, box, 7, [1], { contrast: 0.6 }),
      jitterCrop(0, box, 7, [2], { saturation: 1.2 }),
      jitterCrop(0, box, 7, [2], { saturation: 0.8 }),
      jitterCrop(0, box, 7, [3], { hue: 0.1 }),
      jitterCrop(0, box, 7, [3], { hue: -0.1 }),
      { ...plainCrop(0, box, 7), grayscale: true },
      // contrast's mean depends on the clamped brightness before it: both orders must match.
      jitterCrop(0, box, 7, [0, 1], { brightness: 1.4, contrast: 0.6 }),
      jitterCrop(0, box, 7, [1, 0], { brightness: 1.4, contrast: 0.6 }),
    ];
    for (let k = 0; k < 12; k++) {
      const ops = [0, 1, 2, 3] as ColourOp[];
      for (let i = 3; i > 0; i--) {
        const j = rng.int(i + 1);
        [ops[i], ops[j]] = [ops[j], ops[i]];
      }
      crops.push(jitterCrop(k % 2, k % 2 ? [2, 0, 25, 7] : box, 7, ops, {
        brightness: rng.range(0.6, 1.4), contrast: rng.range(0.6, 1.4), saturation: rng.range(0.8, 1.2), hue: rng.range(-0.1, 0.1), grayscale: k % 3 === 0,
      }));
    }
    const got = await runCrops(images, crops, 7, IDENTITY);
    expectCrops(got, images, crops, 7, IDENTITY, 1e-5, 'colour ops');
    // The two orders of brightness/contrast really differ (so the test can tell them apart).
    const a = colourRef(resampleRef(imgA, crops[9], 7), crops[9]);
    const b = colourRef(resampleRef(imgA, crops[10], 7), crops[10]);
    expect(Math.max(...a.map((x, i) => Math.abs(x - b[i])))).toBeGreaterThan(1e-2);
    // Larger crops: the contrast mean is a two-level reduction over 23 rows of 23.
    const big = [jitterCrop(2, [3, 4, 50, 30], 23, [3, 0, 1, 2], { brightness: 1.35 }), jitterCrop(1, [0, 0, 31, 7], 23, [2, 1, 3, 0])];
    expectCrops(await runCrops(images, big, 23, IDENTITY), images, big, 23, IDENTITY, 1e-5, 'colour S=23');
  });

  it('Gaussian blur: σ from 0.1 to 2 at sizes 1, 7 and 23 (radius beyond the crop: edges replicated)', async () => {
    for (const S of [1, 7, 23]) {
      const crops = [0.1, 0.37, 0.8, 1.3, 2.0].map((sigma, k) => ({ ...plainCrop(k % 3, [0, 0, images[k % 3].width, images[k % 3].height], S), sigma }));
      const got = await runCrops(images, crops, S, IDENTITY);
      expectCrops(got, images, crops, S, IDENTITY, 1e-5, `blur S=${S}`);
    }
    // σ = 2 on a 7×7 crop really mixes pixels (the reference is not a no-op).
    const c = { ...plainCrop(0, [0, 0, 13, 17], 7), sigma: 2 };
    const pre = resampleRef(imgA, c, 7);
    const post = blurRef(pre, 7, 2);
    expect(Math.max(...pre.map((x, i) => Math.abs(x - post[i])))).toBeGreaterThan(0.05);
  });

  it('solarize and ImageNet normalisation', async () => {
    const crops = [
      { ...plainCrop(0, [0, 0, 13, 17], 23), solarize: true },
      { ...plainCrop(2, [10, 3, 40, 30], 23), solarize: true, sigma: 0.9 },
      plainCrop(1, [0, 0, 31, 7], 23),
    ];
    const got = await runCrops(images, crops, 23, IMAGENET_NORM);
    expectCrops(got, images, crops, 23, IMAGENET_NORM, 5e-5, 'solarize + normalise');
    // Solarization changed something: compare to the same crop without it.
    const off = await runCrops(images, [{ ...crops[0], solarize: false }], 23, IMAGENET_NORM);
    let changed = 0;
    for (let i = 0; i < off.length; i++) changed += Math.abs(off[i] - got[i]) > 1e-3 ? 1 : 0;
    expect(changed).toBeGreaterThan(off.length / 10);
  });

  it('flip is an exact mirror of the unflipped crop (pointwise colour ops included)', async () => {
    const S = 13;
    const base = jitterCrop(2, [4, 6, 51, 29], S, [2, 3, 0, 1], { grayscale: false });
    const [a, b] = [await runCrops(images, [base], S, IMAGENET_NORM), await runCrops(images, [{ ...base, flip: true }], S, IMAGENET_NORM)];
    for (let ch = 0; ch < 3; ch++) {
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) expect(b[(ch * S + y) * S + x]).toBe(a[(ch * S + y) * S + (S - 1 - x)]);
      }
    }
  });

  it('chunked runs (bounded intermediates) give the same crops bit for bit', async () => {
    const rng = new Rng(17);
    const cfg = { ...DINO_MULTICROP, jitterP: 1 };
    const crops = Array.from({ length: 9 }, (_, k) =>
      sampleCropParams(rng, k % 3, images[k % 3].width, images[k % 3].height, { size: 11, scale: [0.2, 1], blurP: 0.5, solarizeP: 0.5 }, cfg));
    const whole = await runCrops(images, crops, 11, IMAGENET_NORM);
    // Intermediates per crop: 11·11·16 = 1936 bytes per S×S image and box height·11·16 for the
    // horizontal pass (boxes here are ≤ 66 rows: ≤ 11 616 bytes): 12 000 → one or two crops per
    // chunk, 30 000 → a few.
    for (const maxChunkBytes of [12_000, 30_000]) expect(await runCrops(images, crops, 11, IMAGENET_NORM, maxChunkBytes)).toEqual(whole);
    expectCrops(whole, images, crops, 11, IMAGENET_NORM, 5e-5, 'chunked');
    const wd = await getEngine();
    await wd.scope(async () => {
      const packed = uploadImages(wd, images);
      expect(() => cropBatchRaw(wd, packed, crops, 11, { maxChunkBytes: 1000 })).toThrow(/needs more than 1000 bytes/);
    });
  });

  it('rejects boxes outside the image and windows outside the resized box', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const packed = uploadImages(wd, [imgA]);
      expect(() => cropBatchRaw(wd, packed, [plainCrop(0, [5, 0, 9, 17], 7)], 7)).toThrow(/not inside image 0/);
      expect(() => cropBatchRaw(wd, packed, [plainCrop(1, [0, 0, 3, 3], 7)], 7)).toThrow(/refers to image 1/);
      expect(() => cropBatchRaw(wd, packed, [{ ...plainCrop(0, [0, 0, 13, 17], 7), ox: 1 }], 7)).toThrow(/exceeds the resized size/);
      expect(() => uploadImages(wd, [{ width: 2, height: 2, data: new Uint8Array(11) }])).toThrow(/needs 12 RGB bytes/);
    });
  });
});

describe('DINO multi-crop sampling (CPU)', () => {
  it('RandomResizedCrop boxes stay inside the image with area and ratio in range', () => {
    const rng = new Rng(11);
    const [W, H] = [1000, 1000];
    const areas: number[] = [];
    const logRatios: number[] = [];
    for (let i = 0; i < 4000; i++) {
      const [x0, y0, w, h] = sampleResizedCropBox(rng, W, H, [0.05, 0.4], [3 / 4, 4 / 3]);
      expect(x0 >= 0 && y0 >= 0 && x0 + w <= W && y0 + h <= H && w > 0 && h > 0).toBe(true);
      const a = (w * h) / (W * H);
      // Rounding w and h to integers moves area and ratio by < 1 pixel per side.
      expect(a).toBeGreaterThan(0.05 * 0.99);
      expect(a).toBeLessThan(0.4 * 1.01);
      expect(w / h).toBeGreaterThan((3 / 4) * 0.99);
      expect(w / h).toBeLessThan((4 / 3) * 1.01);
      areas.push(a);
      logRatios.push(Math.log(w / h));
    }
    // Every attempt fits here, so area ~ U(0.05, 0.4) and log-ratio ~ U(log 3/4, log 4/3).
    const mean = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length;
    const quantile = (v: number[], q: number) => [...v].sort((p, r) => p - r)[Math.floor(q * v.length)];
    // std of the mean of U(0.05, 0.4) over 4000 draws ≈ 0.0016.
    expect(Math.abs(mean(areas) - 0.225)).toBeLessThan(0.006);
    expect(Math.abs(quantile(areas, 0.25) - 0.1375)).toBeLessThan(0.012);
    expect(Math.abs(quantile(areas, 0.75) - 0.3125)).toBeLessThan(0.012);
    expect(Math.abs(mean(logRatios))).toBeLessThan(0.01);
    // Positions cover the image: left edges from near 0 to near W − w.
    const lefts = Array.from({ length: 500 }, () => sampleResizedCropBox(rng, W, H, [0.4, 1], [3 / 4, 4 / 3])[0]);
    expect(Math.min(...lefts)).toBeLessThan(20);
    expect(Math.max(...lefts)).toBeGreaterThan(200);
  });

  it('small and elongated images: rejections, then the centre-crop fallback clamped to the ratio range', () => {
    const rng = new Rng(12);
    // 400×20: no box with ratio ≤ 4/3 and area ≥ 0.4 fits → fallback h = 20, w = round(20·4/3) = 27, centred.
    for (let i = 0; i < 20; i++) expect(sampleResizedCropBox(rng, 400, 20, [0.4, 1], [3 / 4, 4 / 3])).toEqual([186, 0, 27, 20]);
    expect(sampleResizedCropBox(rng, 20, 400, [0.4, 1], [3 / 4, 4 / 3])).toEqual([0, 186, 20, 27]);
    // A square image with scale (1, 1) and ratio range that excludes 1: whole image via fallback clamp.
    expect(sampleResizedCropBox(rng, 10, 10, [1, 1], [1.2, 1.5])).toEqual([0, 1, 10, 8]);
    // Tiny images always give boxes inside.
    for (let i = 0; i < 500; i++) {
      const [x0, y0, w, h] = sampleResizedCropBox(rng, 3, 2, [0.05, 0.4], [3 / 4, 4 / 3]);
      expect(x0 >= 0 && y0 >= 0 && w >= 1 && h >= 1 && x0 + w <= 3 && y0 + h <= 2).toBe(true);
    }
    expect([roundHalfEven(0.5), roundHalfEven(1.5), roundHalfEven(2.5), roundHalfEven(2.6)]).toEqual([0, 2, 2, 3]);
  });

  it('flip, jitter, grayscale, blur and solarize happen at DINO’s rates; factors and orders in range', () => {
    const rng = new Rng(13);
    const cfg = DINO_MULTICROP;
    const n = 6000;
    const specs = [
      { size: 224, scale: cfg.globalScale, blurP: 1.0, solarizeP: 0 },
      { size: 224, scale: cfg.globalScale, blurP: 0.1, solarizeP: 0.2 },
      { size: 96, scale: cfg.localScale, blurP: 0.5, solarizeP: 0 },
    ];
    const wantBlur = [1.0, 0.1, 0.5];
    const wantSolar = [0, 0.2, 0];
    const orders = new Set<string>();
    specs.forEach((spec, s) => {
      const count = { flip: 0, jitter: 0, gray: 0, blur: 0, solar: 0 };
      for (let i = 0; i < n; i++) {
        const p = sampleCropParams(rng, 0, 500, 375, spec, cfg);
        count.flip += +p.flip;
        count.gray += +p.grayscale;
        count.solar += +p.solarize;
        if (p.sigma > 0) {
          count.blur++;
          expect(p.sigma >= 0.1 && p.sigma < 2.0).toBe(true);
        }
        if (p.ops.length) {
          count.jitter++;
          expect([...p.ops].sort()).toEqual([0, 1, 2, 3]);
          orders.add(p.ops.join(''));
          expect(p.brightness >= 0.6 && p.brightness < 1.4 && p.contrast >= 0.6 && p.contrast < 1.4).toBe(true);
          expect(p.saturation >= 0.8 && p.saturation < 1.2 && p.hue >= -0.1 && p.hue < 0.1).toBe(true);
        } else {
          expect([p.brightness, p.contrast, p.saturation, p.hue]).toEqual([1, 1, 1, 0]);
        }
        expect([p.outW, p.outH, p.ox, p.oy]).toEqual([spec.size, spec.size, 0, 0]);
      }
      // 4.5 binomial standard deviations (≤ 0.0065 at n = 6000, p = 0.5).
      const near = (k: number, p: number) => expect(Math.abs(k / n - p)).toBeLessThanOrEqual(4.5 * Math.sqrt((p * (1 - p)) / n) + 1e-12);
      near(count.flip, 0.5);
      near(count.jitter, 0.8);
      near(count.gray, 0.2);
      near(count.blur, wantBlur[s]);
      near(count.solar, wantSolar[s]);
    });
    expect(orders.size).toBe(24);
  });
});

describe('MultiCropAugmenter and evalTransform (GPU)', () => {
  const images = [randomImage(64, 48, 21), randomImage(40, 70, 22), randomImage(33, 33, 23)];

  it('shapes, crop-major order, and every row equal to its float64 reference', async () => {
    const wd = await getEngine();
    const aug = new MultiCropAugmenter(wd, { globalSize: 20, localSize: 9, localCrops: 3 });
    await wd.scope(async () => {
      const { globals, locals, params } = aug.augment(images, new Rng(5));
      const B = images.length;
      expect(globals.shape).toEqual([2 * B, 3, 20, 20]);
      expect(locals!.shape).toEqual([3 * B, 3, 9, 9]);
      // Row c·B + b is crop c of image b.
      params.globals.forEach((p, k) => expect(p.image).toBe(k % B));
      params.locals.forEach((p, k) => expect(p.image).toBe(k % B));
      expect(params.globals.slice(0, B).every((p) => !p.solarize)).toBe(true); // global 1 never solarizes
      expect(params.globals.slice(0, B).every((p) => p.sigma > 0)).toBe(true); // global 1 always blurs
      expectCrops(await globals.toArray(), images, params.globals, 20, IMAGENET_NORM, 5e-5, 'globals');
      expectCrops(await locals!.toArray(), images, params.locals, 9, IMAGENET_NORM, 5e-5, 'locals');
    });
  });

  it('deterministic for a seed and a restored Rng state; different seeds differ; no leaks', async () => {
    const wd = await getEngine();
    const aug = new MultiCropAugmenter(wd, { globalSize: 16, localSize: 8, localCrops: 2 });
    const run = (rng: Rng) =>
      wd.scope(async () => {
        const { globals, locals } = aug.augment(images, rng);
        return [await globals.toArray(), await locals!.toArray()];
      });
    await run(new Rng(0)); // warm the pool so the leak check below sees steady state
    const before = wd.memory().liveBytes;
    const a = await run(new Rng(42));
    const b = await run(new Rng(42));
    expect(a[0]).toEqual(b[0]);
    expect(a[1]).toEqual(b[1]);
    const rng = new Rng(9);
    await run(rng); // advance
    const saved = rng.state();
    const c = await run(rng);
    const d = await run(Rng.fromState(saved));
    expect(c[0]).toEqual(d[0]);
    expect(c[1]).toEqual(d[1]);
    const e = await run(new Rng(43));
    expect(e[0]).not.toEqual(a[0]);
    expect(e[1]).not.toEqual(a[1]);
    expect(wd.memory().liveBytes).toBe(before);
  });

  it('no local crops: locals is null; options validated', async () => {
    const wd = await getEngine();
    const aug = new MultiCropAugmenter(wd, { globalSize: 8, localCrops: 0, globalScale: [0.14, 1] });
    await wd.scope(async () => {
      const { globals, locals } = aug.augment(images, new Rng(1));
      expect(globals.shape).toEqual([6, 3, 8, 8]);
      expect(locals).toBeNull();
    });
    expect(() => new MultiCropAugmenter(wd, { localCrops: -1 })).toThrow(/localCrops/);
    expect(() => new MultiCropAugmenter(wd, { globalScale: [0.5, 0.4] })).toThrow(/globalScale/);
    expect(() => aug.augment([], new Rng(1))).toThrow(/empty batch/);
  });

  it('eval transform: torchvision Resize(round(crop·256/224)) + CenterCrop(crop) sizes, and values vs float64', async () => {
    // ImageNet-like 500×375 at crop 224: resize to 341×256, centre window at round(58.5) = 58 (half to even), 16.
    expect(evalCropParams(0, 500, 375, 224, 256 / 224)).toMatchObject({ box: [0, 0, 500, 375], outW: 341, outH: 256, ox: 58, oy: 16 });
    expect(evalCropParams(0, 375, 500, 224, 256 / 224)).toMatchObject({ outW: 256, outH: 341, ox: 16, oy: 58 });
    // crop 32: resize to round(36.57) = 37.
    expect(evalCropParams(0, 64, 48, 32, 256 / 224)).toMatchObject({ outW: 49, outH: 37, ox: 8, oy: 2 });
    const wd = await getEngine();
    const before = wd.memory().liveBytes;
    await wd.scope(async () => {
      const out = evalTransform(wd, images, { crop: 13 });
      expect(out.shape).toEqual([3, 3, 13, 13]);
      const params = images.map((img, b) => evalCropParams(b, img.width, img.height, 13, 256 / 224));
      expectCrops(await out.toArray(), images, params, 13, IMAGENET_NORM, 5e-5, 'eval');
      const aug = new MultiCropAugmenter(wd, { globalSize: 13 });
      expect(await aug.evalTransform(images).toArray()).toEqual(await out.toArray());
    });
    expect(wd.memory().liveBytes).toBe(before);
  });
});
