#!/usr/bin/env bash
# The converged studies' missing medium runs (issue 21, and the medium alloy routes of issue 18) on one
# GPU, within a deadline, whatever is left of them.
#
#   bash scripts/gpu_study.sh                      # from the repository root, on the GPU machine
#   BUDGET_S=420 PARALLEL=16 BACK=$OUT bash scripts/gpu_study.sh
#
# Every run left to train becomes one job; PARALLEL one-thread jobs share the GPU (MACE's 16-atom batches
# leave each step bound by Python and kernel launches: on one H200 each of 14 jobs ran at about one CPU
# thread's pace, docs/gpu/study_20261204.md, so the jobs scale with the CPU cores), in the order of
# JOBS below: the runs that finish soonest and fill the seeds first, the long N = 50 / 292 runs last.
# Each job is cut at the deadline (BUDGET_S from the start); then every study parks its cut runs
# (--park: the newest checkpoint under <out>/partial/, resumed by any later call, CPU or GPU) and
# rewrites its report. Records carry the GPU's name (machine.gpu); gpu_machine.txt names it once more.
#
# Environment: scripts/gpu_env.sh (the .venv, or the wheels carried in .whl/ on a GPU machine's image).
# Beside the jobs: scripts/gpu_checks.sh (the CUDA tests of issue 19) and, with SOURCE_FROM set, the
# medium Si source trained further on the GPU (scripts/train_si_sources.sh, cut at the deadline).
# With BACK set, every file this call wrote that a study keeps (records, models, parked runs, reports,
# logs) is packed into at most PACK_PARTS (4) tar files of <= 15 MiB each under $BACK (untar them at the
# repository root); models and parked checkpoints that do not fit are listed in $BACK/left_out.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET_S=${BUDGET_S:-420}
PARALLEL=${PARALLEL:-14}
BACK=${BACK:-}
START=$(date +%s)
DEADLINE=$(( START + BUDGET_S ))
STAMP=$(mktemp); touch -d "@$START" "$STAMP"
mkdir -p runs/gpu_logs

source scripts/gpu_env.sh
export BIN
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU seen"
  "$BIN/python" -c "import torch, mace, e3nn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', 'mace', mace.__version__, 'e3nn', e3nn.__version__)"
  date -u +%FT%TZ; echo "BUDGET_S=$BUDGET_S PARALLEL=$PARALLEL nproc=$(nproc)"; } > runs/gpu_logs/gpu_machine.txt 2>&1
cat runs/gpu_logs/gpu_machine.txt

# beside the jobs: the CUDA tests, and the Si source trained further (cut at the deadline; resumable)
timeout "$BUDGET_S" bash scripts/gpu_checks.sh > runs/gpu_logs/gpu_checks.log 2>&1 &
if [ -n "${SOURCE_FROM:-}" ]; then
  SIZE=${SOURCE_SIZE:-medium} FROM=$SOURCE_FROM EPOCHS=${SOURCE_EPOCHS:-300} LR=${SOURCE_LR:-0.005} \
    DEVICE=${SOURCE_DEVICE:-cuda} OMP_NUM_THREADS=1 timeout "$BUDGET_S" bash scripts/train_si_sources.sh \
    > runs/gpu_logs/source_cont.log 2>&1 &
fi

# One job per line: config | strategies | sizes | seeds. By default every run the medium study's --plan
# shows unfinished: parked runs first (they resume nearest their end), then the rest by N, smallest first.
# JOBS (lines of that form) overrides it, e.g. for the medium alloy routes of configs/alloy_sige_medium.yaml.
# A run a CPU chain is training must not be in the list (two processes would train one run folder).
MEDIUM=configs/converged_medium.yaml
if [ -z "${JOBS:-}" ]; then
  JOBS=$("$BIN/mace_transfer_learning_curve" --config "$MEDIUM" --plan | "$BIN/python" -c '
import re, sys
rows = [m.groups() for m in (re.match(r"^(\w+?)_N(\d+)_s(\d+)\s+(parked|started|to train)", l) for l in sys.stdin) if m]
rows.sort(key=lambda r: (r[3] != "parked", int(r[1]), r[0], int(r[2])))
print("\n".join(f"'"$MEDIUM"'|{s}|{int(n)}|{seed}" for s, n, seed, _ in rows))')
fi

run_job() {  # config|strategies|sizes|seeds: train it until the deadline
  IFS='|' read -r config strategies sizes seeds <<< "$1"
  left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -gt 60 ] || { echo "skip (deadline): $1"; return 0; }
  name="$(basename "$config" .yaml)_${strategies}_N${sizes}_s${seeds}"
  echo "$(date -u +%T) start $name (${left}s left)"
  OMP_NUM_THREADS=1 timeout "$left" "$BIN/mace_transfer_learning_curve" --config "$config" --no-zero-shot \
    --strategies "$strategies" --sizes "$sizes" --seeds "$seeds" > "runs/gpu_logs/$name.log" 2>&1
  echo "$(date -u +%T) end $name: exit $?"
}
export -f run_job; export DEADLINE
printf '%s\n' "$JOBS" | grep -v '^[[:space:]]*$' | xargs -d '\n' -P "$PARALLEL" -I{} bash -c 'run_job "$@"' _ {}

wait
# park what the deadline cut, rewrite each study's report
for config in $(printf '%s\n' "$JOBS" | grep -v '^[[:space:]]*$' | cut -d'|' -f1 | sort -u); do
  "$BIN/mace_transfer_learning_curve" --config "$config" --park > "runs/gpu_logs/park_$(basename "$config" .yaml).log" 2>&1
  "$BIN/mace_transfer_learning_curve" --config "$config" --report-only --no-zero-shot > "runs/gpu_logs/report_$(basename "$config" .yaml).log" 2>&1
  tail -n 3 "runs/gpu_logs/report_$(basename "$config" .yaml).log"
done
echo "trained for $(( $(date +%s) - START )) s"

[ -n "$BACK" ] || exit 0
# copy each finished run's model beside its record (what the CPU sessions do by hand), then pack
"$BIN/python" - "$STAMP" "$BACK" $(printf '%s\n' "$JOBS" | grep -v '^[[:space:]]*$' | cut -d'|' -f1 | sort -u) <<'PY'
import os, shutil, sys, tarfile
from pathlib import Path
from mace_transfer.studies.config import load_config
stamp, back, configs = os.path.getmtime(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
small, large = [], []
for config in map(load_config, configs):
    out, work = Path(config["out"]), Path(config["work"])
    for record in (out / "records").glob("*.json"):
        model = work / record.stem / f"{record.stem}.model"
        if record.stat().st_mtime >= stamp and model.exists():
            (out / "models").mkdir(exist_ok=True)
            shutil.copy2(model, out / "models" / model.name)
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.stat().st_mtime >= stamp:
            (large if path.suffix in (".model", ".pt") or path.stat().st_size > 2**20 else small).append(path)
small += sorted(p for p in Path("runs/gpu_logs").iterdir() if p.is_file())
small += [p for p in Path("docs/gpu").glob("*.json") if p.stat().st_mtime >= stamp]
for folder in Path("runs/sources").glob("*_cont"):   # the source trained further: model, curve, checkpoint
    for path in folder.rglob("*"):
        if path.is_file() and "compiled" not in path.name and path.stat().st_mtime >= stamp:
            (large if path.suffix in (".model", ".pt") else small).append(path)
limit, max_parts, parts = 15 * 2**20, int(os.environ.get("PACK_PARTS", "4")), []
def order(path):  # the source trained further first, then finished runs' models, then parked checkpoints
    return ("runs" not in path.parts, "partial" in path.parts, path.stat().st_size)
for path in small + sorted(large, key=order):
    size = path.stat().st_size
    for part in parts:
        if part[0] + size <= limit:
            part[0] += size; part[1].append(path); break
    else:
        if len(parts) < max_parts and size <= limit:
            parts.append([size, [path]])
        else:
            with open(back / "left_out.txt", "a") as handle:
                handle.write(f"{path} {size}\n")
for index, (size, paths) in enumerate(parts):
    with tarfile.open(back / f"part{index}.tar", "w") as tar:
        for path in paths:
            tar.add(path)
    print(f"part{index}.tar: {len(paths)} files, {size / 2**20:.1f} MiB")
PY
