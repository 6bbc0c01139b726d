#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with what a bare GPU image (torch with CUDA, Python 3.12, no network, no MACE)
# lacks to run this package: scripts/gpu_env.sh installs them there. Run here, where PyPI is reachable:
#   bash scripts/gpu_wheels.sh            # PYVER=3.12 by default (the GPU image's python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; }
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for package in mace-torch==0.3.16 e3nn==0.4.4 ase==3.29.0 torch-ema==0.3 prettytable wcwidth matscipy==1.3.1 \
               configargparse gitpython gitdb smmap lmdb orjson; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d .whl "$package"
done
# python-hostlist ships only as a source archive: its one module, from this machine's environment
cp "$(.venv/bin/python -c 'import hostlist; print(hostlist.__file__)')" .whl/
du -sh .whl
