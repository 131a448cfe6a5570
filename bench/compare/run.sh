#!/usr/bin/env bash
# One-command comparison of webdino with PyTorch on this machine: the same four workloads
# (bench/compare/webdino.ts has the list and shapes), each in its own process under a timeout,
# webdino first, then PyTorch eager fp32 (TF32 off) and AMP when `import torch` works, and one
# table with the ratios at the end.
#
#   bash bench/compare/run.sh [--quick] [--timeout SECONDS] [--only w1,w2] [--out DIR]
#
# Node: the `node` on PATH runs the TypeScript entry (bundled with esbuild from this checkout);
# without one (a GPU machine with no Node.js), the packed folder is used: build it on a machine
# with Node first, from the repository root,
#   /work/shared/gpu/pack.sh bench/compare/webdino.ts        # writes .gpu/
# and carry .gpu/ along; this script then sources .gpu/prelude.sh and runs `node .gpu/run.mjs`.
# WEBDINO_PACK=DIR points at a packed folder elsewhere. Python: $PYTHON, else the first of
# python3, /usr/bin/python3 that imports torch; none → the torch columns say "not run".
#
# Expected run time: --quick (tiny shapes) about 2 minutes on the 2-core lavapipe machine. The full
# shapes (matmul 4096³, attention B64 H6 N197 d64, the ViT-S/16 DINO step at batch 64 — 7.3 TFLOP
# per step — and ViT-S/14 inference at batch 64) are for a GPU: minutes in all on an H200; on
# lavapipe the step alone would take ~12 minutes per run (three runs), so leave --quick on there.
# --timeout (default 1800 s, 600 s with --quick) bounds each workload; a workload that times out
# or fails shows as such in the table and the others still run.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
quick=""
timeout_s=""
only=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --timeout) timeout_s="$2"; shift ;;
    --only) only="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
timeout_s=${timeout_s:-$([ -n "$quick" ] && echo 600 || echo 1800)}
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/webdino-compare.XXXXXX")}
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

# --- node: the checkout's (bundled now) or the packed one ----------------------------------------
if command -v node >/dev/null 2>&1 && [ -z "${WEBDINO_PACK:-}" ]; then
  entry="$out/webdino.mjs"
  # Bundled next to the checkout's node_modules so the `webgpu` package resolves.
  bundle="$root/dist/compare-webdino.mjs"
  mkdir -p "$root/dist"
  (cd "$root" && npx --no-install esbuild bench/compare/webdino.ts --bundle --platform=node --format=esm \
     --external:webgpu --outfile="$bundle" --log-level=warning) || { echo "run.sh: bundling failed" >&2; exit 1; }
  entry="$bundle"
  how="node $(node --version) on PATH"
else
  pack=${WEBDINO_PACK:-$root/.gpu}
  [ -f "$pack/prelude.sh" ] || { echo "run.sh: no node on PATH and no packed folder at $pack (see the header)" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$pack/prelude.sh"
  entry="$pack/run.mjs"
  how="packed node from $pack"
fi
echo "webdino: $how; results in $out"

workloads=$(node "$entry" list)
if [ -n "$only" ]; then workloads=$(echo "$only" | tr ',' '\n'); fi

# --- python with torch ---------------------------------------------------------------------------
py=""
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch' >/dev/null 2>&1; then py=$cand; break; fi
done
[ -n "$py" ] && echo "torch: $("$py" -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")') via $py" \
             || echo "torch: not importable by python3 or /usr/bin/python3; torch columns skipped"

# One workload under the timeout; its JSON line goes to the results, or an error line naming why.
run_one() {
  local impl=$1 w=$2; shift 2
  local log="$out/$impl-$w.log" t0 rc
  t0=$(date +%s)
  timeout "$timeout_s" "$@" > "$log.out" 2> "$log"
  rc=$?
  local line
  line=$(grep '^{' "$log.out" | tail -1)
  if [ $rc -eq 0 ] && [ -n "$line" ]; then
    echo "$line" >> "$results"
  else
    local why="failed (exit $rc, see $log)"
    [ $rc -eq 124 ] && why="timed out after ${timeout_s} s"
    printf '{"impl":"%s","workload":"%s","error":"%s"}\n' "$impl" "$w" "$why" >> "$results"
  fi
  echo "  $impl $w: $(( $(date +%s) - t0 )) s"
}

for w in $workloads; do
  run_one webdino "$w" node "$entry" run "$w" $quick
  if [ -n "$py" ]; then
    run_one torch-fp32 "$w" "$py" "$root/bench/compare/torch_bench.py" --workload "$w" --mode fp32 $quick
    run_one torch-amp "$w" "$py" "$root/bench/compare/torch_bench.py" --workload "$w" --mode amp $quick
  fi
done

echo
node "$entry" table "$results" | tee "$out/table.txt"
