#!/bin/bash
# preliminary: transfer + active with at most 2 cells of one config_type per batch, seed 0
cd /work/main
OMP_NUM_THREADS=1 nice -n 5 .venv/bin/mace_transfer_active \
  --source_model docs/results/converged_tiny/source/si_pbe_tiny.model --element_map Si:Ge \
  --pool runs/active_trial/pool.xyz --valid_file runs/active_trial/valid.xyz --test_file data/ge_test_pbe.xyz \
  --budget 20 --initial 5 --batch_size 5 --committee 3 --seed 0 --max_per_kind 2 \
  --mace_options runs/active_trial/mace.yaml --out runs/active_trial/uncertainty_cap2 > runs/active_trial/uncertainty_cap2.log 2>&1
