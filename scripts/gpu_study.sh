#!/usr/bin/env bash
# The medium converged study (configs/converged_medium.yaml, issue 21) on one GPU in about 10 minutes.
#
#   bash scripts/gpu_study.sh            # on the GPU machine, from the repository root
#
# Needs the cached medium Si source (docs/results/converged_medium/source/si_pbe_medium.model, trained
# on CPU by scripts/train_si_sources.sh). Runs several one-thread study processes side by side on the
# one GPU (MACE's small 16-atom batches leave it mostly idle): first the lr selection at N = 20 (one
# process per start), then every (start, N, seed) run spread over the processes. Every process is
# cut at its deadline; what finished is a record under docs/results/converged_medium/records/ and a
# later call resumes. Writes docs/results/converged_medium/gpu_machine.txt (the GPU named).
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/converged_medium.yaml}
OUT=${OUT:-docs/results/converged_medium}
BUDGET_S=${BUDGET_S:-540}          # whole script, seconds
SELECT_S=${SELECT_S:-240}          # lr selection phase, seconds
BIN=${BIN:-.venv/bin}
[ -x "$BIN/mace_transfer_learning_curve" ] || make venv >/dev/null
START=$(date +%s)
mkdir -p "$OUT" runs
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU seen";
  "$BIN/python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  date -u +%FT%TZ; } > "$OUT/gpu_machine.txt"
cat "$OUT/gpu_machine.txt"
lc() { OMP_NUM_THREADS=1 timeout "$1" "$BIN/mace_transfer_learning_curve" --config "$CONFIG" --no_zero_shot "${@:2}"; }

# phase 1: each start's learning rate on validation (N = 20, seed 0), one process per start
for s in scratch transfer transfer_rescale; do
  lc "$SELECT_S" --strategies "$s" --sizes 20 --seeds 0 > "runs/gpu_select_$s.log" 2>&1 &
done
wait
# phase 2: the sweep, one process per (start, seed) for N <= 50 and one per start at N = 292
LEFT=$(( BUDGET_S - ($(date +%s) - START) ))
for s in scratch transfer transfer_rescale; do
  for seed in 0 1 2; do
    lc "$LEFT" --strategies "$s" --sizes 2,5,10,20,50 --seeds "$seed" > "runs/gpu_${s}_s$seed.log" 2>&1 &
  done
  lc "$LEFT" --strategies "$s" --sizes 292 --seeds 0 > "runs/gpu_${s}_292.log" 2>&1 &
done
wait
"$BIN/mace_transfer_learning_curve" --config "$CONFIG" --report_only | tail -1
ls "$OUT/records" | wc -l
