#!/usr/bin/env bash
# The curation demonstration (bench/curate/README.md, "Curation end to end"): DINOv2's point, on a
# small scale — an imbalanced pool full of duplicates, curated (dedup + hierarchical k-means +
# balanced sampling) by `webdino curate` on the embeddings of a CPU teacher, trains a better model
# than a random sample of the same size with the same budget.
#
#   nice -n 5 bench/curate/demo.sh [EPOCHS]          (default 8 epochs of each 1000-image selection)
#
# Environment: WORK (default /tmp/webdino-curate-demo) for every file; TEACHER, the embedder's
# weights (default /work/runs/base-default/teacher_backbone.safetensors when it exists, else a
# `webdino train` CPU-default run made here first, ~15–50 min); TARGET (1000), the selection size.
# Steps:
#   1. the pool: demo-pool.ts make (6000 images: 4500 unique at 80 % one class, 750 exact and 750
#      pixel-noise copies), an image folder POOL/<class>/*.png;
#   2. webdino embed --recursive --normalize --shard-size 2000 (manifest + paths files);
#   3. how far copies and distinct images lie apart in that space (demo-pool.ts cosines);
#   4. webdino curate --dedup 0.99997 --levels 100,10 --resample 4,1 --target TARGET;
#   5. the baseline: TARGET random images of the raw pool (demo-pool.ts random);
#   6. class histograms of the pool and of both selections;
#   7. for each selection: webdino train (CPU default config, --epochs EPOCHS), then webdino eval knn
#      on the balanced embedded data (memory synthetic:train, evaluated synthetic:val, 32 px crops).
set -euo pipefail
EPOCHS=${1:-8}
TARGET=${TARGET:-1000}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${WORK:-/tmp/webdino-curate-demo}
mkdir -p "$WORK"
cd "$repo"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
wd() { node bin/webdino.js "$@"; }

stamp "build"
node scripts/build.mjs > /dev/null
npx esbuild bench/curate/demo-pool.ts --bundle --platform=node --format=esm --external:webgpu \
  --outfile="$WORK/demo-pool.mjs" --log-level=warning
pool() { node "$WORK/demo-pool.mjs" "$@"; }

TEACHER=${TEACHER:-/work/runs/base-default/teacher_backbone.safetensors}
if [ ! -f "$TEACHER" ]; then
  stamp "no embedder at $TEACHER: training the CPU default teacher"
  wd train --out "$WORK/embedder" --resume
  TEACHER=$WORK/embedder/teacher_backbone.safetensors
fi
stamp "embedder: $TEACHER"

stamp "1. pool"
rm -rf "$WORK/pool" "$WORK/emb" "$WORK/curated" "$WORK/runs"
pool make --out "$WORK/pool"

stamp "2. embed"
wd embed --weights "$TEACHER" --input "$WORK/pool" --recursive --normalize --image-size 32 --batch-size 64 \
  --shard-size 2000 --out "$WORK/emb/pool.npy" --paths-out "$WORK/pool-paths.txt"

stamp "3. copies vs distinct images in the embedding"
pool cosines --pool "$WORK/pool" --embeddings "$(ls "$WORK"/emb/pool-0*.npy | paste -sd,)" --paths "$WORK/pool-paths.txt"

stamp "4. curate"
wd curate --embeddings "$WORK/emb/pool-manifest.json" --out "$WORK/curated" --dedup 0.99997 \
  --levels 100,10 --resample 4,1 --iters 20 --target "$TARGET" | grep -v ': pass '
cp "$WORK/curated/selected.txt" "$WORK/curated.txt"

stamp "5. random baseline"
pool random --paths "$WORK/pool-paths.txt" --n "$TARGET" --seed 0 --out "$WORK/random.txt"

stamp "6. class histograms"
pool histogram --pool "$WORK/pool" "$WORK/pool-paths.txt" "$WORK/random.txt" "$WORK/curated.txt"

for arm in curated random; do
  stamp "7. train on $arm.txt ($EPOCHS epochs)"
  wd train --data "$WORK/$arm.txt" --out "$WORK/runs/$arm" --epochs "$EPOCHS" --checkpoint-every 0 --force
  stamp "7. k-NN of the $arm teacher"
  wd eval knn --weights "$WORK/runs/$arm/teacher_backbone.safetensors" --train synthetic:train --val synthetic:val --image-size 32
done
stamp "done"
