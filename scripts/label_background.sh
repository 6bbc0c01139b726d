#!/usr/bin/env bash
# Long-running, resumable PBE labelling of the 16-atom structures (CP2K, 2 MPI ranks, nice 10).
#   nohup scripts/label_background.sh > runs/label.log 2>&1 &
# Safe to kill and restart at any time: finished frames are in data/*_pbe16.xyz, SCF failures in
# data/*_pbe16.failed.jsonl; a rerun skips both. Order: first a usable ab initio transfer set
# (Si train up to SI_FIRST structures interleaved with Ge test up to TEST_FIRST, so a PBE Si source
# model and a PBE Ge test set exist early), then Ge train interleaved with Ge test (5:1, so both grow
# together), then the rest of Si. Isolated-atom E0 frames go into the train files (--e0).
# Density: phases 2 and 3 label the SW cells scaled isotropically to PBE's lattice constant
# (--length-scale a_PBE/a_SW; for SW an exact corresponding state) into data/*_pbe16_scaled.xyz,
# skipping every structure already labelled unscaled in data/*_pbe16.xyz (the frames labelled
# before 2026-11-25, at SW density, ~5 GPa for Ge under PBE): each sampled structure is labelled once.
# NPROCS=1 leaves one core to other work (training) on a 2-core machine.
# SI_SPLIT=K splits the rest of Si between two labellers so that both cores stay busy to the end:
# phase 3 labels Si inputs 0..K-1 into data/si_pbe16_scaled.xyz, phase 4 inputs K.. into
# data/si_pbe16_scaled_b.xyz (mace_transfer_label --indices; `make pbe-data` merges both), e.g.
# PHASES="1 2 4" (Ge, then the tail of Si) beside PHASES=3, both with the same SI_SPLIT.
# PHASES picks phases (default "1 2 3"); two instances with disjoint phases (e.g. PHASES="1 2" and
# PHASES=3, NPROCS=1 each) label Ge and Si side by side: one rank per CP2K is the most efficient
# use of the cores here (docs/DFT.md). Each output file also has its own writer lock.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
NPROCS=${NPROCS:-2}
CHUNK=${CHUNK:-5}
SI_FIRST=${SI_FIRST:-50}
TEST_FIRST=${TEST_FIRST:-20}
# a_PBE (CP2K E-V scans, docs/DFT.md) / a_SW (the sampled cells): Ge 5.783/5.654, Si 5.470/5.431
GE_SCALE=${GE_SCALE:-1.022816}
SI_SCALE=${SI_SCALE:-1.007181}
PHASES=${PHASES:-1 2 3}
SI_SPLIT=${SI_SPLIT:-}
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
if has_phase 4 && ! [[ $SI_SPLIT =~ ^[0-9]+$ ]]; then echo "label_background: phase 4 needs SI_SPLIT=<index>"; exit 1; fi
mkdir -p runs && exec 8>"runs/.label${PHASES// /}.lock"
flock -n 8 || { echo "label_background: another instance with PHASES=\"$PHASES\" is running"; exit 1; }

# Structures are sampled (resumably, one writer at a time) while labelling runs; a file still
# growing is only "done" once its sampler has finished.
scripts/make_dft_structures.sh 8>&- > runs/make_dft_structures.log 2>&1 &  # 8>&-: it must not hold our lock
MAKE_PID=$!
sampling() { kill -0 "$MAKE_PID" 2>/dev/null; }

CHUNK_LOG=runs/label_chunk${PHASES// /}.log
label() {  # label IN OUT MAX [extra...]: progress to our stderr (the log), remaining count on stdout
    local in=$1 out=$2 max=$3; shift 3
    local tries=0 line
    while :; do
        # tee writes to a chunk log and to its stdout, sent to our stderr (never reopen /dev/stderr:
        # that truncates a log file)
        nice -n 10 "$BIN/mace_transfer_label" --in "$in" --out "$out" --engine cp2k \
            --settings configs/dft_pbe.yaml --nprocs "$NPROCS" --max "$max" "$@" 2>&1 | tee "$CHUNK_LOG" >&2
        line=$(tail -1 "$CHUNK_LOG")
        if [[ $line =~ remaining=([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; return 0; fi
        tries=$((tries + 1))
        echo "label_background: $in failed ($line), retry $tries/3 in 60 s" >&2
        [ $tries -ge 3 ] && { echo "-1"; return 1; }
        sleep 60
    done
}

n_labelled() {  # structures in a labelled file, isolated-atom frames excluded
    [ -s "$1" ] || { echo 0; return; }
    local all iso
    all=$(grep -c 'Lattice=' "$1"); iso=$(grep -c 'config_type=IsolatedAtom' "$1")
    echo $((all - iso))
}

date -u +"label_background: start %FT%TZ"
until [ -s data/si_structures16.xyz ] && [ -s data/ge_test_structures16.xyz ]; do sleep 30; done
while has_phase 1 && { [ "$(n_labelled data/si_pbe16.xyz)" -lt "$SI_FIRST" ] || [ "$(n_labelled data/ge_test_pbe16.xyz)" -lt "$TEST_FIRST" ]; }; do
    si_now=$(n_labelled data/si_pbe16.xyz); test_now=$(n_labelled data/ge_test_pbe16.xyz)
    if [ "$si_now" -lt "$SI_FIRST" ]; then
        n=$((SI_FIRST - si_now)); [ $n -gt 3 ] && n=3
        left=$(label data/si_structures16.xyz data/si_pbe16.xyz "$n" --e0) || exit 1
        [ "$left" = 0 ] && SI_FIRST=0
    fi
    if [ "$test_now" -lt "$TEST_FIRST" ]; then
        left=$(label data/ge_test_structures16.xyz data/ge_test_pbe16.xyz 1) || exit 1
        [ "$left" = 0 ] && TEST_FIRST=0
    fi
    date -u +"label_background: %FT%TZ first phase: Si $(n_labelled data/si_pbe16.xyz)/$SI_FIRST, Ge test $(n_labelled data/ge_test_pbe16.xyz)/$TEST_FIRST"
done
ge_left=1; test_left=1
while has_phase 2 && { [ "$ge_left" != 0 ] || [ "$test_left" != 0 ] || sampling; }; do
    until [ -s data/ge_structures16.xyz ] && [ -s data/ge_test_structures16.xyz ]; do sleep 30; done
    if [ "$ge_left" != 0 ]; then ge_left=$(label data/ge_structures16.xyz data/ge_pbe16_scaled.xyz "$CHUNK" --e0 \
        --length-scale "$GE_SCALE" --skip-labelled-in data/ge_pbe16.xyz) || exit 1; fi
    if [ "$test_left" != 0 ]; then test_left=$(label data/ge_test_structures16.xyz data/ge_test_pbe16_scaled.xyz 1 \
        --length-scale "$GE_SCALE" --skip-labelled-in data/ge_test_pbe16.xyz) || exit 1; fi
    date -u +"label_background: %FT%TZ Ge train left $ge_left, Ge test left $test_left"
    if [ "$ge_left" = 0 ] && [ "$test_left" = 0 ] && sampling; then sleep 60; ge_left=1; test_left=1; fi
done
si_left=1
while has_phase 3 && { [ "$si_left" != 0 ] || sampling; }; do
    until [ -s data/si_structures16.xyz ]; do sleep 30; done
    si_left=$(label data/si_structures16.xyz data/si_pbe16_scaled.xyz "$CHUNK" --e0 \
        --length-scale "$SI_SCALE" --skip-labelled-in data/si_pbe16.xyz \
        ${SI_SPLIT:+--indices ":$SI_SPLIT"}) || exit 1
    date -u +"label_background: %FT%TZ Si left $si_left"
    if [ "$si_left" = 0 ] && sampling; then sleep 60; si_left=1; fi
done
si_left=1
while has_phase 4 && [ "$si_left" != 0 ]; do
    si_left=$(label data/si_structures16.xyz data/si_pbe16_scaled_b.xyz "$CHUNK" \
        --length-scale "$SI_SCALE" --skip-labelled-in data/si_pbe16.xyz --indices "$SI_SPLIT:") || exit 1
    date -u +"label_background: %FT%TZ Si (from $SI_SPLIT) left $si_left"
done
date -u +"label_background: phases $PHASES done %FT%TZ"
# refresh the shipped files (data/si_pbe.xyz, ge_pbe.xyz, ge_test_pbe.xyz) from all labels so far;
# frames another labeller is still writing are left out, so this is safe beside it
make --no-print-directory pbe-data >&2 || echo "label_background: make pbe-data failed" >&2
