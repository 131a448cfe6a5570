#!/usr/bin/env bash
# bench/curate: webdino k-means vs faiss on the same synthetic embeddings (see README.md).
#
#   bench/curate/run.sh ROWS DIM K ITERS [webdino inits: random kmeans++]
#   e.g. nice -n 5 bench/curate/run.sh 200000 384 1000 10 random kmeans++
#
# Work files go to $WORK (default /tmp/webdino-bench-curate). Runs, in order: data generation
# (once per shape), webdino with each init, faiss with its own random init and from webdino's
# random init (when some python3 imports faiss), then evaluate.py on every result.
set -euo pipefail
ROWS=$1 DIM=$2 K=$3 ITERS=$4
shift 4
INITS=("${@:-random}")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${WORK:-/tmp/webdino-bench-curate}
mkdir -p "$WORK"
PY=python3
FAISS=""
for p in python3 /usr/bin/python3; do
  if $p -c 'import faiss' 2>/dev/null; then PY=$p; FAISS=1; break; fi
done
data=$WORK/data-$ROWS-$DIM.npy
[ -f "$data" ] || $PY "$here/make_data.py" --rows "$ROWS" --dim "$DIM" --out "$data"
tag=$ROWS-$DIM-k$K-i$ITERS
cd "$repo"
npx esbuild bench/curate/kmeans.ts --bundle --platform=node --format=esm --external:webgpu \
  --outfile=./.bench-curate.mjs --log-level=warning
runs=()
for init in "${INITS[@]}"; do
  node ./.bench-curate.mjs --data "$data" --k "$K" --iters "$ITERS" --init "$init" --out "$WORK/wd-$init-$tag"
  runs+=("$WORK/wd-$init-$tag")
done
rm -f ./.bench-curate.mjs
if [ -n "$FAISS" ]; then
  $PY "$here/faiss_kmeans.py" --data "$data" --k "$K" --iters "$ITERS" --out "$WORK/faiss-random-$tag"
  runs=("$WORK/faiss-random-$tag" "${runs[@]}")
  if [ -f "$WORK/wd-random-$tag-init.npy" ]; then
    $PY "$here/faiss_kmeans.py" --data "$data" --k "$K" --iters "$ITERS" --init-from "$WORK/wd-random-$tag-init.npy" --out "$WORK/faiss-wdinit-$tag"
    runs+=("$WORK/faiss-wdinit-$tag")
  fi
else
  echo "no python3 with faiss: webdino figures only (apt-get install python3-faiss)"
fi
echo "== $ROWS x $DIM, k = $K, $ITERS iterations; load: $(cut -d' ' -f1-3 /proc/loadavg)"
$PY "$here/evaluate.py" --data "$data" "${runs[@]}"
