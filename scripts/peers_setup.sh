#!/usr/bin/env bash
# The peers' own environment (issue 22): SevenNet-0 (sevenn, needs e3nn >= 0.5, which MACE 0.3.16's
# e3nn 0.4.4 pin forbids) and CHGNet 0.3.0 (chgnet), both with their weights inside their PyPI
# wheels. Kept apart from the product's .venv: the product never imports a peer; the driver
# (mace_transfer.studies.peers) runs scripts/peer_worker.py in this environment through files.
# Idempotent: does nothing but the import check when the environment is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${PEERS_VENV:-.venv-peers}
STAMP="$VENV/.installed"
if [ ! -f "$STAMP" ]; then
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.13.0          # the CPU build on disk, first: an open range pulls CUDA
    "$VENV/bin/pip" install -q "sevenn==0.13.0" "chgnet==0.4.2"
    touch "$STAMP"
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "e3nn", "sevenn", "chgnet", "ase"):
    print(f"peers-setup: {name} {md.version(name)}")
PY
