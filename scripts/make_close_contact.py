"""Write the close-contact scan (one compressed bond in the 16-atom diamond cell) for PBE labelling.

    .venv/bin/python scripts/make_close_contact.py --element Ge --a 5.783 --out data/ge_close_contact16.xyz
    .venv/bin/mace_transfer_label --in data/ge_close_contact16.xyz --out data/ge_close_contact_pbe16.xyz \
        --engine cp2k --settings configs/dft_pbe.yaml --nprocs 1

The perfect crystal comes first (the zero of the scan). The labelled file is a reference for the short-range wall (docs/RESULTS.md), not training data.
"""

import argparse

from ase.io import write

from mace_transfer.datagen.sampling import close_contact_scan

DEFAULT_DISTANCES = "2.30,2.10,1.90,1.70,1.50,1.30"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--element", required=True)
parser.add_argument("--a", type=float, required=True, help="lattice constant, Å (PBE: Ge 5.783, Si 5.470)")
parser.add_argument("--distances", default=DEFAULT_DISTANCES, help="pair distances, Å, comma-separated")
parser.add_argument("--out", required=True)
args = parser.parse_args()
frames = close_contact_scan(args.element, args.a, [float(x) for x in args.distances.split(",")])
write(args.out, frames, format="extxyz")
print(f"{args.out}: {len(frames)} frames (crystal + pair distances {args.distances} Å)")
