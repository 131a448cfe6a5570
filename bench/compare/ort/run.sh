#!/usr/bin/env bash
# webdino vs ONNX Runtime (onnxruntime-node: WebGPU EP and CPU EP) on DINOv2 ViT-S/14 and DINOv3
# ViT-S/16, forward_features at 224 px, batch 8, the same weights and input for all, on this
# machine's adapter; then the agreement of every engine's outputs with PyTorch's and one table.
#
#   bash bench/compare/ort/run.sh OUT_DIR [--reps N] [--ort-reps N] [--only dinov2_vits14|dinov3_vits16]
#
# Needs: /usr/bin/python3 with Debian's python3-torch 1.13 and numpy, the official dinov2/dinov3
# git mirrors (see export_onnx.py), node, and onnxruntime-node installed OUTSIDE this repository:
#   mkdir -p /work/scratch/ort && cd /work/scratch/ort && npm init -y && npm install --ignore-scripts onnxruntime-node
# ORT_NODE points at its folder (default /work/scratch/ort/node_modules/onnxruntime-node). It is
# deliberately not a dependency of the project.
#
# Steps (each engine in its own process, one after the other, so they share the machine equally):
#   1. export_onnx.py: model.onnx, weights.safetensors, x.npy, torch_*.npy per model (skipped when
#      OUT_DIR/<model>/model.onnx exists);
#   2. webdino.ts (bundled with esbuild): loads weights.safetensors, times forward_features;
#   3. ort.mjs webgpu, ort.mjs cpu: times session.run;
#   4. agree.py: images/s, relative errors against PyTorch, ratios.
# Run time on the 2-core lavapipe machine: tens of minutes (ORT's WebGPU EP takes minutes per batch
# there under load); --ort-reps (default 1) sets the WebGPU EP's timed runs after its warm-up.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [--reps N] [--ort-reps N] [--only MODEL]}
shift
reps=3
ort_reps=1
models="dinov2_vits14 dinov3_vits16"
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift ;;
    --ort-reps) ort_reps="$2"; shift ;;
    --only) models="$2"; shift ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
results="$out/results.jsonl"

for m in $models; do
  [ -f "$out/$m/model.onnx" ] || /usr/bin/python3 "$root/bench/compare/ort/export_onnx.py" "$out" --only "$m"
done

bundle="$root/dist/compare-ort-webdino.mjs"
mkdir -p "$root/dist"
(cd "$root" && npx --no-install esbuild bench/compare/ort/webdino.ts --bundle --platform=node --format=esm \
   --external:webgpu --outfile="$bundle" --log-level=warning)

echo "# $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"
for m in $models; do
  node "$bundle" "$out/$m" --reps "$reps" 2> "$out/$m/webdino.log" | grep '^{' >> "$results"
  node "$root/bench/compare/ort/ort.mjs" "$out/$m" webgpu --reps "$ort_reps" 2> "$out/$m/ort-webgpu.log" | grep '^{' >> "$results"
  node "$root/bench/compare/ort/ort.mjs" "$out/$m" cpu --reps "$reps" 2> "$out/$m/ort-cpu.log" | grep '^{' >> "$results"
  echo "# $(date -u +%FT%TZ) $m done, load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"
done
/usr/bin/python3 "$root/bench/compare/ort/agree.py" "$out" | tee "$out/table.txt"
