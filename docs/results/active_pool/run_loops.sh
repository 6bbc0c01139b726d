#!/bin/bash
# Pool-based active loops of issue 49 (2a), medium committee; one seed per call:
#   bash run_loops.sh SEED [SELECTION] [BUDGET] [MAX_PER_KIND]
# MAX_PER_KIND (e.g. 2): at most that many cells of one config_type in a batch; the loop's folder is then
# runs/active_pool/<SELECTION>_k<MAX_PER_KIND>_s<SEED> (else <SELECTION>_s<SEED>).
# START=scratch (environment): the scratch + active route (--scratch, mace_scratch_medium.yaml), folder
# runs/active_pool/scratch_<...>; else the transferred start (the converged study's PBE Si source, Si:Ge).
# Rerun to resume (the loop resumes from its markers; a larger budget continues it).
set -e
cd "$(dirname "$0")/../../.."
SEED=${1:?seed}; SEL=${2:-uncertainty}; BUDGET=${3:-30}; KIND=${4:-}
NAME=${SEL}_s${SEED}; SPREAD=()
if [ -n "$KIND" ]; then NAME=${SEL}_k${KIND}_s${SEED}; SPREAD=(--max_per_kind "$KIND"); fi
if [ "${START:-transfer}" = scratch ]; then
  NAME=scratch_${NAME}; FROM=(--scratch --element Ge); OPTIONS=docs/results/active_pool/mace_scratch_medium.yaml
else
  FROM=(--source_model docs/results/converged_medium/source/si_pbe_medium.model --element_map Si:Ge)
  OPTIONS=docs/results/active_pool/mace_medium.yaml
fi
[ -f runs/active_pool/pool.xyz ] || .venv/bin/python scripts/active_pool.py files --out runs/active_pool
OMP_NUM_THREADS=1 .venv/bin/mace_transfer_active "${FROM[@]}" \
  --pool runs/active_pool/pool.xyz --valid_file runs/active_pool/valid.xyz --test_file data/ge_test_pbe.xyz \
  --budget "$BUDGET" --initial 5 --batch_size 5 --committee 3 --seed "$SEED" --selection "$SEL" "${SPREAD[@]}" \
  --mace_options "$OPTIONS" --out runs/active_pool/${NAME}
