#!/usr/bin/env bash
# Install the DFT engine used by mace_transfer.dft (CP2K from Debian/Ubuntu) and check it runs.
# Idempotent: does nothing but the check when cp2k.psmp and the basis/potential files are present.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v cp2k.psmp >/dev/null 2>&1 && [ -f /usr/share/cp2k/BASIS_MOLOPT ] && [ -f /usr/share/cp2k/GTH_POTENTIALS ]; then
    echo "dft-setup: cp2k already installed"
else
    echo "dft-setup: installing cp2k cp2k-data (apt)"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y cp2k cp2k-data
fi

command -v mpirun >/dev/null 2>&1 || { echo "dft-setup: mpirun missing (install openmpi-bin)" >&2; exit 1; }
cp2k.psmp --version | head -2
for f in BASIS_MOLOPT GTH_POTENTIALS; do
    test -f "/usr/share/cp2k/$f" || { echo "dft-setup: /usr/share/cp2k/$f missing (cp2k-data)" >&2; exit 1; }
done
echo "dft-setup: ok"
