#!/usr/bin/env bash
# PBE labels of the SiGe alloy study (issue 18), resumable: finished frames stay in data/*_pbe16.xyz,
# SCF failures in data/*.failed.jsonl, a rerun skips both (mace_transfer_label).
#   nohup scripts/label_alloys.sh > runs/label_alloys.log 2>&1 &
# Inputs: scripts/make_alloy_structures.py. Same settings as every label here (configs/dft_pbe.yaml,
# hash ff50ad3367). Order: what the first measurement needs first (the zero-alloy-data case needs only
# test labels): alloy test, Si test, the E-V scans, then the alloy training pool.
# NPROCS=1 (default) leaves a core to training; NICE=19 makes it take only the idle time.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
NPROCS=${NPROCS:-1}
NICE=${NICE:-10}
SI_SCALE=${SI_SCALE:-1.007181}   # a_PBE / a_SW for Si (5.470 / 5.431): the SW-sampled Si test cells at PBE density
mkdir -p runs && exec 8>runs/.label_alloys.lock
flock -n 8 || { echo "label_alloys: another instance is running"; exit 1; }
[ -s data/sige_test_structures16.xyz ] || "$BIN/python" scripts/make_alloy_structures.py
label() {
    nice -n "$NICE" "$BIN/mace_transfer_label" --engine cp2k --settings configs/dft_pbe.yaml --nprocs "$NPROCS" "$@"
}
label --in data/sige_test_structures16.xyz --out data/sige_test_pbe16.xyz
label --in data/si_test_structures16.xyz --out data/si_test_pbe16.xyz --length-scale "$SI_SCALE"
label --in data/sige_ev_structures16.xyz --out data/sige_ev_pbe16.xyz
label --in data/sige_structures16.xyz --out data/sige_pbe16.xyz
echo "label_alloys: done"
