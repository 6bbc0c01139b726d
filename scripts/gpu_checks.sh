#!/usr/bin/env bash
# GPU rows of the training matrix (issue 19), run whenever a GPU is at hand, from the repository root:
#   bash scripts/gpu_checks.sh
# Runs tests/test_gpu.py (CUDA training from a remapped source, --enable_cueq, --distributed under
# torchrun, MACECalculator on CUDA) and writes docs/gpu/checks_<date>.json: the GPU, the versions and
# each test's outcome. Commit that file.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
mkdir -p docs/gpu runs
stamp=$(date -u +%Y%m%dT%H%MZ)
"$BIN/python" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py --junitxml "runs/gpu_checks_$stamp.xml" | tail -5
"$BIN/python" - "$stamp" <<'PY'
import json, subprocess, sys, xml.etree.ElementTree as ET
import torch
stamp = sys.argv[1]
cases = ET.parse(f"runs/gpu_checks_{stamp}.xml").getroot().iter("testcase")
outcome = {c.get("name"): ("failed" if c.find("failure") is not None or c.find("error") is not None
                           else "skipped" if c.find("skipped") is not None else "passed") for c in cases}
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
record = {"when_utc": stamp, "gpu": gpu or None, "torch": torch.__version__,
          "cuda": torch.version.cuda, "tests": outcome}
path = f"docs/gpu/checks_{stamp}.json"
open(path, "w").write(json.dumps(record, indent=1) + "\n")
print(path, json.dumps(outcome))
PY
