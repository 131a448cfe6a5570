/**
 * Image/mask pairs from a folder, for `webdino eval segment` (Node: reads files).
 *
 * Layouts (checked in this order):
 *   DIR/images/NAME.{jpg,jpeg,png} + DIR/masks/NAME.png      (also JPEGImages/ + SegmentationObject/
 *                                                              or SegmentationClass/, PASCAL VOC's names)
 *   DIR/NAME.{jpg,jpeg,png} + DIR/NAME_mask.png | NAME.mask.png | NAME-mask.png   (flat)
 * Pairs are matched by NAME (the file name without its extension) and sorted by NAME. Images
 * without a mask (VOC has many) and masks without an image are left out and counted.
 *
 * Masks: any PNG/JPEG (gray, RGB, palette). A pixel is object when its brightest channel is at
 * least half of the brightest pixel of the mask, so 0/1, 0/255 and coloured class masks (VOC) all
 * work, and JPEG noise around 0 does not; an all-black mask is empty. VOC's void boundary colour
 * (224, 224, 192) therefore counts as object. A mask whose size differs from its image is an error
 * naming both files.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { RgbImage } from '../models/io/image.js';
import { listImageFiles, readImage } from '../train/data/image-files-node.js';
import type { SegmentationSample, SegmentationSource } from './segment.js';

/** A segmentation source over files, with what was left out. */
export interface MaskFolder extends SegmentationSource {
  /** The pairs, sorted by name. */
  pairs: { image: string; mask: string }[];
  /** Images without a mask and masks without an image (file paths). */
  unmatchedImages: string[];
  unmatchedMasks: string[];
}

/** The 0/1 object mask of a decoded mask image (see the file header for the rule). */
export function binaryMask(img: RgbImage): Uint8Array {
  const n = img.width * img.height;
  const v = new Uint8Array(n);
  let top = 0;
  for (let i = 0; i < n; i++) {
    v[i] = Math.max(img.data[3 * i], img.data[3 * i + 1], img.data[3 * i + 2]);
    top = Math.max(top, v[i]);
  }
  const out = new Uint8Array(n);
  if (top === 0) return out;
  for (let i = 0; i < n; i++) out[i] = 2 * v[i] >= top ? 1 : 0;
  return out;
}

const stem = (p: string) => basename(p, extname(p));
const isDir = (p: string) => existsSync(p) && statSync(p).isDirectory();
const MASK_SUFFIXES = ['_mask', '.mask', '-mask'];

/** Opens a folder of image/mask pairs (see the file header); throws when it holds none. */
export function openMaskFolder(dir: string): MaskFolder {
  if (!isDir(dir)) throw new Error(`${dir}: not a folder (give a folder of image/mask pairs, or synthetic:val)`);
  const imageDir = ['images', 'JPEGImages'].map((d) => join(dir, d)).find(isDir);
  const maskDir = ['masks', 'SegmentationObject', 'SegmentationClass'].map((d) => join(dir, d)).find(isDir);
  let images: Map<string, string>;
  let masks: Map<string, string>;
  if (imageDir && maskDir) {
    images = new Map(listImageFiles(imageDir).map((f) => [stem(f), f]));
    masks = new Map(listImageFiles(maskDir).map((f) => [stem(f), f]));
  } else {
    images = new Map();
    masks = new Map();
    for (const f of listImageFiles(dir)) {
      const s = stem(f);
      const suffix = MASK_SUFFIXES.find((x) => s.endsWith(x));
      if (suffix) masks.set(s.slice(0, -suffix.length), f);
      else images.set(s, f);
    }
  }
  const names = [...images.keys()].filter((n) => masks.has(n)).sort();
  const pairs = names.map((n) => ({ image: images.get(n)!, mask: masks.get(n)! }));
  if (!pairs.length) {
    throw new Error(
      `${dir}: no image/mask pairs (expected images/NAME.jpg + masks/NAME.png, or NAME.jpg + NAME_mask.png; found ${images.size} images, ${masks.size} masks)`,
    );
  }
  return {
    pairs,
    unmatchedImages: [...images].filter(([n]) => !masks.has(n)).map(([, f]) => f),
    unmatchedMasks: [...masks].filter(([n]) => !images.has(n)).map(([, f]) => f),
    length: pairs.length,
    async get(i: number): Promise<SegmentationSample> {
      const { image: ip, mask: mp } = pairs[i];
      const image = await readImage(ip);
      const m = await readImage(mp);
      if (m.width !== image.width || m.height !== image.height) {
        throw new Error(`${mp}: the mask is ${m.width}x${m.height}, its image ${ip} is ${image.width}x${image.height}`);
      }
      return { image, mask: binaryMask(m), name: ip };
    },
  };
}
