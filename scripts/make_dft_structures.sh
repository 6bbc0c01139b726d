#!/usr/bin/env bash
# Unlabelled-for-DFT 16-atom structures (8-atom cubic diamond cell x (2,1,1); vacancy cells 15 atoms)
# from Stillinger-Weber MD / strain / vacancy sampling (mace_transfer.sampling). Their SW REF_* keys
# are dropped by mace_transfer_label, which replaces them with PBE labels. Resumable (sampler appends).
# The committed data/*_structures16.xyz were made by sampler v1 (commit a09cd89; Ge SW melting point
# then 1800 K, so Ge 2000/2500 K frames are SW liquid pre-melted at 3600 K, supercooled w.r.t. the later
# 3300 K estimate). A later sampler version refuses to extend them (settings hash), never silently alters.
set -euo pipefail
cd "$(dirname "$0")/.."
# one writer at a time: the sampler appends to these files
mkdir -p runs && exec 9>runs/.structures.lock
flock 9
BIN=${BIN:-.venv/bin}
sample() {  # sample N OUT [flags...]: a file that already holds N structures is complete, not resampled
    local n=$1 out=$2; shift 2
    if [ -s "$out" ] && [ "$(grep -c 'Lattice=' "$out")" -ge "$n" ]; then
        echo "make_dft_structures: $out complete ($n structures)"; return 0
    fi
    nice -n 5 "$BIN/mace_transfer_sample" --potential sw --supercell 2,1,1 --no_progress --n "$n" --out "$out" "$@"
}
# Ge test: independent seed, ladder shifted by +150 K
sample 60 data/ge_test_structures16.xyz --element Ge --seed 1001 --temperatures 450,750,1050,1350,1650,2150,2650
# Ge train: default ladder 300..2500 K, seed 0
sample 300 data/ge_structures16.xyz --element Ge --seed 0
# Si train: default ladder 300..2500 K, seed 0
sample 300 data/si_structures16.xyz --element Si --seed 0
