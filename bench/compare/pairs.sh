#!/usr/bin/env bash
# The DINO step at the CPU default config, webdino against PyTorch in alternating pairs, for one or
# more built webdino checkouts (e.g. a before and an after commit) in the same run:
#
#   bash bench/compare/pairs.sh [--pairs N] [--reps N] [--torch-threads N] [--out DIR] [ROOT...]
#
# ROOT: a checkout built with `npm run build` (its dist/index.js is timed); default: this one.
# Each pair is one webdino process (bench/compare/dino-step-cpu.mjs) and one PyTorch process
# (bench/compare/torch_bench.py --workload dino-step-cpu, the same model, loss and optimizer),
# each the median of --reps steps (default 5) after 2 warm-up steps. Pairs cycle over the roots
# (pair i of every root before pair i + 1 of any), and the order inside a pair flips every other
# round, so slow drifts of a shared machine's load hit both sides alike.
#
# The pair ratio is torch ms / webdino ms (= webdino images/s ÷ torch images/s: 0.5 means webdino
# takes twice as long). The summary prints, per root, every ratio, their median, the median
# images/s of both sides and the dispatches per step; with two roots, also the second's median
# ratio over the first's (the speed-up, torch's speed cancelling out).
#
# PyTorch threads: --torch-threads (default 1). On the 2-core machine shared with other jobs, 2
# OpenMP threads that spin at barriers were 3–40× slower than 1 thread (load average 14–16); with
# OMP_WAIT_POLICY=PASSIVE, which this script sets, 2 threads were still 2.6× slower. On an idle
# machine pass --torch-threads 2. Python: $PYTHON, else /usr/bin/python3.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pairs=5
reps=5
threads=1
out=""
roots=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) pairs="$2"; shift ;;
    --reps) reps="$2"; shift ;;
    --torch-threads) threads="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "pairs.sh: unknown option $1" >&2; exit 2 ;;
    *) roots+=("$(cd "$1" && pwd)") ;;
  esac
  shift
done
[ ${#roots[@]} -eq 0 ] && roots=("$(cd "$here/../.." && pwd)")
py=${PYTHON:-/usr/bin/python3}
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/webdino-pairs.XXXXXX")}
mkdir -p "$out"
results="$out/pairs.jsonl"
: > "$results"
export OMP_WAIT_POLICY=PASSIVE
echo "pairs: $pairs per root, $reps steps each, torch threads $threads; results in $results"

webdino() {
  node "$here/dino-step-cpu.mjs" --root "$1" --reps "$reps" 2> "$out/webdino.err" | grep '^{'
}
torch() {
  "$py" "$here/torch_bench.py" --workload dino-step-cpu --mode fp32 --reps "$reps" --threads "$threads" 2> "$out/torch.err" | grep '^{'
}

for ((i = 1; i <= pairs; i++)); do
  for root in "${roots[@]}"; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if ((i % 2)); then w=$(webdino "$root"); t=$(torch); else t=$(torch); w=$(webdino "$root"); fi
    if [ -z "$w" ] || [ -z "$t" ]; then
      echo "  pair $i $root: failed (see $out/*.err)" >&2
      continue
    fi
    echo "{\"pair\":$i,\"root\":\"$root\",\"load\":$load,\"webdino\":$w,\"torch\":$t}" >> "$results"
    node -e '
      const r = JSON.parse(process.argv[1]);
      console.log(`  pair ${r.pair} ${r.webdino.commit}: webdino ${r.webdino.ms.toFixed(0)} ms, torch ${r.torch.ms.toFixed(0)} ms, ratio ${(r.torch.ms / r.webdino.ms).toFixed(3)} (load ${r.load})`);
    ' "$(tail -1 "$results")"
  done
done

node "$here/dino-step-cpu.mjs" --summarize "$results" | tee "$out/summary.txt"
