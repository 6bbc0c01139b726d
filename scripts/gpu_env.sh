# Sourced by scripts/gpu_study.sh and scripts/gpu_checks.sh: sets BIN, the folder of a python that holds
# MACE and this package (absolute path), and PY=$BIN/python.
# The repository's .venv when there is one (`make venv`). Otherwise, on a GPU machine whose own image
# has torch (CUDA) but no MACE and no network: the wheels carried in $WHEELS (default .whl/, filled by
# scripts/gpu_wheels.sh: mace-torch
# 0.3.16, e3nn 0.4.4, ase, matscipy, torch-ema, prettytable, configargparse, GitPython, lmdb, orjson, and
# python-hostlist's one module hostlist.py, which PyPI ships only as a source archive) go to /tmp/site,
# and this package's command-line entry points are written beside the image's python3 (the GPU machine
# is bare and given back after the call; do not take this path on a machine you keep).
if [ -x .venv/bin/python ]; then
  BIN=$PWD/.venv/bin
else
  WHEELS=${WHEELS:-.whl}
  [ -d "$WHEELS" ] || { echo "no .venv and no $WHEELS/ of wheels: run make venv" >&2; exit 3; }
  [ -d /tmp/site/mace ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || exit 3
  cp "$WHEELS"/*.py /tmp/site/ 2>/dev/null
  export PYTHONPATH=/tmp/site:$PWD
  # the entry points go beside the image's own python (sys.executable's folder, where tests look for them)
  BIN=$(python3 -c 'import os, sys; print(os.path.dirname(sys.executable))')
  for entry in train remap sample label assemble eval learning_curve; do
    printf '#!%s\nimport sys\nfrom mace_transfer.cli import %s_main\nsys.exit(%s_main())\n' \
      "$BIN/python3" "$entry" "$entry" > "$BIN/mace_transfer_$entry" || exit 3
    chmod +x "$BIN/mace_transfer_$entry"
  done
  [ -x "$BIN/python" ] || ln -s python3 "$BIN/python"
fi
PY=$BIN/python
export PATH="$BIN:$PATH"
