#!/bin/bash
# The real loop of issue 49 (2b): zero-shot start (the converged medium PBE Si model remapped Si -> Ge at the
# corresponding-states scales of section 11's zero-shot test, s = 1.0506, k = 0.8793, estimated on the 8
# validation cells), MD exploration by the model in 16-atom cells (2x1x1 cubic: the labeller's size), CP2K PBE
# labels (configs/dft_pbe.yaml) of structures nobody labelled before, 4 a round, to a budget of 40.
# Rerun to resume (kill -9 safe). Needs `make dft-setup` (CP2K).
set -e
cd "$(dirname "$0")/../../.."
[ -f runs/active_pool/valid.xyz ] || .venv/bin/python scripts/active_pool.py files --out runs/active_pool
OMP_NUM_THREADS=1 .venv/bin/mace_transfer_active \
  --source_model docs/results/converged_medium/source/si_pbe_medium.model --element_map Si:Ge \
  --length_scale 1.0506 --energy_scale 0.8793 \
  --labeller cp2k --dft_settings configs/dft_pbe.yaml --nprocs 1 \
  --supercell 2,1,1 --temperatures 300,900,1500 --liquid_temperature 2500 \
  --valid_file runs/active_pool/valid.xyz --test_file data/ge_test_pbe.xyz \
  --budget "${BUDGET:-40}" --initial 4 --batch_size 4 --committee 3 --seed "${SEED:-0}" \
  --mace_options docs/results/active_pool/mace_medium.yaml --out runs/active_dft/loop_s${SEED:-0}
