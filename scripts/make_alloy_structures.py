"""Unlabelled structures of the SiGe alloy study (issue 18), written once, deterministic in their seeds.

    .venv/bin/python scripts/make_alloy_structures.py      # then scripts/label_alloys.sh (CP2K PBE)

- data/sige_structures16.xyz       train pool: x = 0.25, 0.5, 0.75, 56 each (the ordered cell first), seed 0
- data/sige_test_structures16.xyz  test: x = 0.25, 0.5, 0.75, 16 each (random occupations only), seed 1001,
                                   ladder shifted by +150 K (as the Ge test set)
- data/sige_ev_structures16.xyz    E-V scans: x = 0, 0.25, 0.5, 0.75, 1, one cell each (random occupation,
                                   seed 0), lattice constant Vegard's a x (1 + s), s = -3 % .. +3 %, ideal sites
- data/si_test_structures16.xyz    40 independent Si test cells (SW sampler, seed 1001, ladder +150 K),
                                   for forgetting; labelled at PBE density (--length-scale 5.470/5.431)
An existing file is left alone (the labels refer to its frames); --force rewrites them.
"""

import argparse
import sys
from pathlib import Path

from ase.io import write

from mace_transfer.datagen import alloy
from mace_transfer.datagen.sampling import sample_configurations

FRACTIONS = (0.25, 0.5, 0.75)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="folder of the structure files")
    parser.add_argument("--force", action="store_true", help="rewrite existing files")
    args = parser.parse_args(argv)
    data = Path(args.data)

    def make(name, frames_fn):
        path = data / name
        if path.exists() and not args.force:
            print(f"{path}: exists, left alone")
            return
        frames = frames_fn()
        write(path, frames, format="extxyz")
        print(f"{path}: {len(frames)} structures")

    make("sige_structures16.xyz", lambda: [f for x in FRACTIONS for f in alloy.alloy_structures(x, 56, seed=0)])
    make("sige_test_structures16.xyz", lambda: [
        f for x in FRACTIONS for f in alloy.alloy_structures(x, 16, seed=1001, ordered_first=False,
                                                             temperatures=(450, 750, 1050, 1350, 1650))])
    make("sige_ev_structures16.xyz", lambda: [f for x in (0.0, 0.25, 0.5, 0.75, 1.0) for f in alloy.ev_scan(x)])
    make("si_test_structures16.xyz", lambda: sample_configurations(
        "Si", "sw", 40, supercell=(2, 1, 1), seed=1001, temperatures=(450, 750, 1050, 1350, 1650, 2150, 2650),
        progress=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
