#!/bin/bash
# preliminary pool trial (issue 49, 2a at the tiny size): transfer + active vs transfer + random, seed 0
cd /work/main
for sel in uncertainty random; do
  OMP_NUM_THREADS=1 nice -n 5 .venv/bin/mace_transfer_active \
    --source_model docs/results/converged_tiny/source/si_pbe_tiny.model --element_map Si:Ge \
    --pool runs/active_trial/pool.xyz --valid_file runs/active_trial/valid.xyz --test_file data/ge_test_pbe.xyz \
    --budget 20 --initial 5 --batch_size 5 --committee 3 --seed 0 --selection $sel \
    --mace_options runs/active_trial/mace.yaml --out runs/active_trial/$sel > runs/active_trial/$sel.log 2>&1
done
