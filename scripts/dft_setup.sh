#!/usr/bin/env bash
# Install the DFT engine used by mace_transfer.dft (CP2K from Debian/Ubuntu) and check it runs.
# Idempotent: does nothing but the check when cp2k.psmp and the basis/potential files are present.
# Also installs OpenBLAS (serial) as the system BLAS/LAPACK: Debian's cp2k links libblas.so.3 /
# liblapack.so.3, which otherwise resolve to the netlib reference build; the k-point diagonalisations
# dominate our labels, and OpenBLAS made one 16-atom Ge label 1.6x faster with identical energy
# and forces (docs/DFT.md). Serial, so that it never adds threads to the MPI ranks.
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

if [ -e /usr/lib/x86_64-linux-gnu/openblas-serial/libblas.so.3 ] || [ -e /usr/lib/aarch64-linux-gnu/openblas-serial/libblas.so.3 ]; then
    echo "dft-setup: OpenBLAS (serial) present"
else
    echo "dft-setup: installing libopenblas0-serial (apt; becomes the libblas.so.3/liblapack.so.3 alternative)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y libopenblas0-serial \
        || { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y libopenblas0-serial; }
fi
ldd "$(command -v cp2k.psmp)" | grep -E "libblas|liblapack" | while read -r lib _ path _; do
    echo "dft-setup: $lib -> $(readlink -f "$path")"
done

command -v mpirun >/dev/null 2>&1 || { echo "dft-setup: mpirun missing (install openmpi-bin)" >&2; exit 1; }
cp2k.psmp --version | head -2
for f in BASIS_MOLOPT GTH_POTENTIALS; do
    test -f "/usr/share/cp2k/$f" || { echo "dft-setup: /usr/share/cp2k/$f missing (cp2k-data)" >&2; exit 1; }
done
echo "dft-setup: ok"
