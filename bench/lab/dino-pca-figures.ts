/**
 * The README's DINOv2 / DINOv3 pictures: the pipeline of `webdino visualize` (models/backbone-node.ts
 * `loadBackbone`, eval/visualize.ts `computeVisuals`: PCA of the patch features as RGB, fitted
 * jointly on all images, and each head's last-layer CLS attention) run on the golden fixtures of
 * test/fixtures/models/dinov2_dinov3. Those are TINY RANDOM weights (width 32, depth 2, 2 heads,
 * written by the official code from a seed): the pictures show that the pipeline runs end to end
 * on both families' files, not what a trained DINOv2 / DINOv3 sees (a trained backbone separates
 * the object from the background and its parts; random weights mostly echo the pixel colours).
 *
 * One PNG per fixture in bench/lab/figures/: one row per image (4 images of the embedded
 * synthetic-scene style at 224 px): input, PCA, head 0, head 1; cells shrunk to 112 px.
 *
 *   npx esbuild bench/lab/dino-pca-figures.ts --bundle --platform=node --format=esm --external:webgpu \
 *     --outfile=./.figures.mjs && node ./.figures.mjs ; rm ./.figures.mjs
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { init } from '../../index.js';
import { loadBackbone } from '../../models/backbone-node.js';
import { encodePng, type RgbImage } from '../../models/io/image.js';
import { describeArch } from '../../models/backbone.js';
import { computeVisuals } from '../../eval/visualize.js';
import { SyntheticShapes } from '../../train/data/synthetic.js';

const FIXTURES = 'test/fixtures/models/dinov2_dinov3';
const OUT = 'bench/lab/figures';
const SIDE = 224;
const CELL = 112;
const GAP = 4;

/** [output name, weights file, heads (null: the file says)]. Width 32 matches no preset, so DINOv2 needs its heads. */
const MODELS: [string, string, number | null][] = [
  ['pca-dinov2-reg-fixture.png', `${FIXTURES}/v2_reg/official.pth`, 2],
  ['pca-dinov3-fixture.png', `${FIXTURES}/v3_mlp/official.pth`, null],
];

/** 2× box-filter shrink of a side×side RGB image. */
function half(im: RgbImage): RgbImage {
  const w = im.width / 2;
  const h = im.height / 2;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (const [dy, dx] of [[0, 0], [0, 1], [1, 0], [1, 1]]) s += im.data[((2 * y + dy) * im.width + 2 * x + dx) * 3 + c];
        out[(y * w + x) * 3 + c] = Math.round(s / 4);
      }
    }
  }
  return { width: w, height: h, data: out };
}

const data = new SyntheticShapes({ split: 'val', size: SIDE, style: 'scene' });
const images = data.examplesByClass(1).slice(0, 4).map((s) => s.image);
const wd = await init();
mkdirSync(OUT, { recursive: true });
for (const [name, path, heads] of MODELS) {
  const { model, spec } = await loadBackbone(wd, path, heads ? { numHeads: heads } : {});
  try {
    const r = await computeVisuals(wd, model, images, { size: SIDE });
    const cols = 2 + r.heads;
    const W = cols * CELL + (cols - 1) * GAP;
    const H = images.length * CELL + (images.length - 1) * GAP;
    const canvas = new Uint8Array(W * H * 3).fill(255);
    r.images.forEach((v, row) => {
      [v.input, v.pca, ...v.attention].map(half).forEach((cell, col) => {
        for (let y = 0; y < CELL; y++) {
          const dst = ((row * (CELL + GAP) + y) * W + col * (CELL + GAP)) * 3;
          canvas.set(cell.data.subarray(y * CELL * 3, (y + 1) * CELL * 3), dst);
        }
      });
    });
    writeFileSync(`${OUT}/${name}`, encodePng(W, H, canvas, 3));
    console.log(`${OUT}/${name}: ${describeArch(spec)}; ${images.length} images at ${r.side} px, ${r.grid.join('×')} patches; columns: input, PCA, ${r.heads} heads`);
  } finally {
    model.dispose();
  }
}
wd.destroy();
