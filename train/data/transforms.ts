/**
 * The image transforms that training and evaluation share, on the GPU pixel kernels of
 * kernels/augment.ts: torchvision's RandomResizedCrop box sampling (the crop every DINO augmentation
 * and the linear probe's training transform start from) and DINO's eval transform
 * (Resize(256) + CenterCrop(224) + normalise, scaled to any crop size).
 *
 * Invariant: the random draws come only from the `Rng` passed in, in torchvision's order, so the
 * same Rng state gives the same boxes.
 */
import type { Engine } from '../../engine/engine.js';
import type { Rng } from '../../engine/random.js';
import * as ops from '../../engine/ops/index.js';
import type { Tensor } from '../../engine/tensor.js';
import { cropBatchRaw, type CropParams, IMAGENET_NORM, type ImageLike, type Normalisation, uploadImages } from '../../kernels/augment.js';

/** Python's round(): halves go to the even neighbour (torchvision's box arithmetic uses it). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision's RandomResizedCrop.get_params: up to 10 attempts of area fraction ~U(scale) and
 * aspect ratio log-uniform in `ratio`, w = round(√(A·r)), h = round(√(A/r)), accepted when it fits,
 * at a uniform position; otherwise the centre crop of the whole image clamped to the ratio range.
 * Returns [left, top, width, height].
 */
export function sampleResizedCropBox(
  rng: Rng,
  width: number,
  height: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): [number, number, number, number] {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.range(scale[0], scale[1]);
    const aspect = Math.exp(rng.range(logLo, logHi));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return [left, top, w, h];
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < Math.min(ratio[0], ratio[1])) {
    w = width;
    h = roundHalfEven(w / Math.min(ratio[0], ratio[1]));
  } else if (inRatio > Math.max(ratio[0], ratio[1])) {
    h = height;
    w = roundHalfEven(h * Math.max(ratio[0], ratio[1]));
  } else {
    w = width;
    h = height;
  }
  return [Math.floor((width - w) / 2), Math.floor((height - h) / 2), w, h];
}

/** Options of the eval transform. */
export interface EvalTransformOptions {
  /** Output side (224). */
  crop?: number;
  /** Resize ratio: the shorter side is resized to round(crop · resize) first (256/224, DINO's Resize(256) for CenterCrop(224)). */
  resize?: number;
  /** Normalisation (ImageNet). */
  norm?: Normalisation;
}

/**
 * The eval transform's crop of one image: torchvision Resize(R) with R = round(crop·ratio) (shorter
 * side → R, longer side → int(R·long/short)), then CenterCrop(crop) at round((size − crop)/2).
 */
export function evalCropParams(image: number, width: number, height: number, crop: number, resize: number): CropParams {
  const R = Math.round(crop * resize);
  if (R < crop) throw new RangeError(`evalTransform: resize ${R} is smaller than the crop ${crop} (the resize ratio must be >= 1)`);
  const [outW, outH] = width <= height ? [R, Math.floor((R * height) / width)] : [Math.floor((R * width) / height), R];
  return {
    image, box: [0, 0, width, height], outW, outH,
    ox: roundHalfEven((outW - crop) / 2), oy: roundHalfEven((outH - crop) / 2),
    flip: false, ops: [], brightness: 1, contrast: 1, saturation: 1, hue: 0, grayscale: false, sigma: 0, solarize: false,
  };
}

/**
 * DINO's eval transform on the GPU: [B, 3, crop, crop] (f32, normalised): bicubic resize of the
 * shorter side to round(crop·256/224) (antialiased, PIL semantics), centre crop, normalise.
 */
export function evalTransform(engine: Engine, images: readonly ImageLike[], opts: EvalTransformOptions = {}): Tensor {
  const crop = opts.crop ?? 224;
  const ratio = opts.resize ?? 256 / 224;
  const params = images.map((img, b) => evalCropParams(b, img.width, img.height, crop, ratio));
  return cropImages(engine, images, params, crop, opts.norm ?? IMAGENET_NORM);
}

/**
 * `crops` of `images` at size S, [K, 3, S, S] in the order of `crops`, with the images uploaded in
 * as few groups as the device's storage binding limit allows: one upload when the batch fits (the
 * usual case, and then exactly cropBatchRaw), otherwise consecutive runs of crops whose images fit
 * together, each run uploading its images, the outputs concatenated. An image that alone exceeds
 * the limit is an error naming it (decodeImage's maxSide keeps decoded images far below it).
 */
export function cropImages(engine: Engine, images: readonly ImageLike[], crops: readonly CropParams[], S: number, norm: Normalisation): Tensor {
  const limit = engine.device.limits.maxStorageBufferBindingSize;
  const bytes = (i: number) => images[i].width * images[i].height * 4; // one RGBX word per pixel
  images.forEach((img, i) => {
    if (bytes(i) > limit) {
      throw new RangeError(
        `augment: image ${i} is ${img.width}x${img.height} (${bytes(i)} bytes on the GPU), over the device's ${limit}-byte storage binding limit; decode it smaller (decodeImage's maxSide)`,
      );
    }
  });
  const total = images.reduce((n, _img, i) => n + bytes(i), 0);
  if (total <= limit) return cropUploaded(engine, images, crops, S, norm);
  const parts: Tensor[] = [];
  try {
    let start = 0;
    while (start < crops.length) {
      const used = new Map<number, number>(); // image index -> index in this run's upload
      let size = 0;
      let end = start;
      for (; end < crops.length; end++) {
        const i = crops[end].image;
        if (used.has(i)) continue;
        if (size + bytes(i) > limit) break;
        used.set(i, used.size);
        size += bytes(i);
      }
      const runImages = [...used.keys()].map((i) => images[i]);
      const runCrops = crops.slice(start, end).map((c) => ({ ...c, image: used.get(c.image)! }));
      parts.push(cropUploaded(engine, runImages, runCrops, S, norm));
      start = end;
    }
    return parts.length === 1 ? parts[0] : ops.concat(parts, 0);
  } finally {
    if (parts.length > 1) for (const p of parts) p.dispose();
  }
}

function cropUploaded(engine: Engine, images: readonly ImageLike[], crops: readonly CropParams[], S: number, norm: Normalisation): Tensor {
  const packed = uploadImages(engine, images);
  try {
    return cropBatchRaw(engine, packed, crops, S, { norm });
  } finally {
    packed.pixels.dispose();
  }
}

