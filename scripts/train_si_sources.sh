#!/usr/bin/env bash
# Si source models for the converged study (issue 21): one per model size, trained on all 300 PBE Si
# structures of data/si_pbe.xyz (15 held out for validation, seed 1) under the study's recipe
# (EMA 0.99, amsgrad, plateau schedule, forces:energy 100:1), a generous fixed epoch budget; the
# best-validation (EMA) model is MACE's saved .model, runs/sources/<size>/si_pbe_<size>.model; install it
# as a study's cached source with scripts/source_record.py. Resumable: MACE's --restart_latest picks up
# the last (best) checkpoint; EPOCHS=<that checkpoint's epoch> ends a run there (what was done here:
# tiny stopped at epoch 122 -> best 67, medium at epoch 36 -> best 32; see the JSON records). tiny_l1 is
# the fast student size of issue 23 (16 channels, L = 1): its own Si source, for the student's Si->Ge start.
#
#   SIZE=medium OMP_NUM_THREADS=1 nohup scripts/train_si_sources.sh >> runs/source_medium.log 2>&1 &
#   SIZE=tiny   OMP_NUM_THREADS=1 nohup scripts/train_si_sources.sh >> runs/source_tiny.log 2>&1 &
#
# FROM=<a .model of the same size> trains that model further (MACE's --foundation_model, one head, no
# replay) into runs/sources/<size>_cont/si_pbe_<size>_cont.model: the lost checkpoint's replacement for
# a source stopped before its plateau (the medium one, section 11). DEVICE=cuda trains on a GPU, LR sets
# the starting learning rate (default 0.01; 0.005 for a continuation).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-medium}
case "$SIZE" in
  medium) ARCH="--num_channels 64 --max_L 1 --correlation 3 --r_max 5.0"; EPOCHS=${EPOCHS:-100} ;;
  tiny)   ARCH="--num_channels 16 --max_L 0 --correlation 2 --r_max 4.5"; EPOCHS=${EPOCHS:-300} ;;
  tiny_l1) ARCH="--num_channels 16 --max_L 1 --correlation 2 --r_max 4.5 --early_stop_patience 30"; EPOCHS=${EPOCHS:-300} ;;
  *) echo "SIZE must be medium, tiny or tiny_l1" >&2; exit 2 ;;
esac
NAME=si_pbe_$SIZE
START_FROM=()
if [ -n "${FROM:-}" ]; then
  [ -f "$FROM" ] || { echo "FROM=$FROM: no such model file" >&2; exit 2; }
  NAME=${NAME}_cont
  START_FROM=(--foundation_model "$FROM" --multiheads_finetuning False)
fi
WORK=runs/sources/${NAME#si_pbe_}
BIN=${BIN:-.venv/bin}
mkdir -p "$WORK"
"$BIN/mace_transfer_train" --name "$NAME" --work_dir "$WORK" "${START_FROM[@]}" \
  --train_file data/si_pbe.xyz --valid_fraction 0.05 --seed 1 \
  --model ScaleShiftMACE $ARCH --num_interactions 2 --num_radial_basis 8 \
  --energy_key REF_energy --forces_key REF_forces --stress_key REF_stress \
  --energy_weight 1.0 --forces_weight 100.0 --E0s "{14: -102.35946547750666}" \
  --batch_size 5 --valid_batch_size 20 --lr "${LR:-0.01}" --ema --ema_decay 0.99 --amsgrad \
  --scheduler_patience 10 --max_num_epochs "$EPOCHS" --eval_interval 1 \
  --device "${DEVICE:-cpu}" --default_dtype float32 --error_table PerAtomMAE --restart_latest
echo "source $SIZE done: $WORK/$NAME.model (install: scripts/source_record.py $SIZE <study out>)"
