"""Teacher labels for the fast-student study (issue 23): M sampled Ge structures labelled by an
accurate MACE teacher (the medium Si->Ge transfer_rescale model trained on N = 20 PBE structures).

    .venv/bin/python scripts/make_teacher_labels.py --teacher docs/results/teacher_tiny/teacher/medium_transfer_rescale_N0020_s0.model \
        --n 2000 --out data/ge_teacher_medium_N20s0.xyz

Structures: the SW-Ge sampler of the DFT sets (16-atom cells: MD ladder 300-2500 K, liquid, strain,
vacancy; its own seed 7, so none of them is a DFT structure), every second one scaled to PBE density
(5.783/5.654, as half of data/ge_pbe.xyz is). Both steps resume: the sampler appends to
``<out>.structures.xyz``, the teacher to ``<out>`` (datagen.teacher: its identity in every frame).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from mace_transfer.datagen import sampling, teacher

PBE_OVER_SW = 5.783 / 5.654  # Ge lattice constants (Å): PBE (docs/DFT.md) / SW (Ding-Andersen)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the teacher's .model file")
    parser.add_argument("--n", type=int, default=2000, help="structures M")
    parser.add_argument("--out", required=True, help="labelled extxyz")
    parser.add_argument("--seed", type=int, default=7, help="sampler seed")
    args = parser.parse_args(argv)

    from mace_transfer import evaluate

    out = Path(args.out)
    structures = sampling.sample_configurations(
        "Ge", "sw", args.n, supercell=(2, 1, 1), seed=args.seed, progress=False,
        out_path=str(out.with_suffix(".structures.xyz")))
    for index, atoms in enumerate(structures):
        scale = PBE_OVER_SW if index % 2 else 1.0
        atoms.set_cell(atoms.cell * scale, scale_atoms=True)
        atoms.info["length_scale"] = scale
    model = evaluate.load_model(args.teacher)
    teacher.label_with_teacher(structures, model.calc, out, name=Path(args.teacher).name,
                               settings=teacher.file_identity(args.teacher)[:10])
    return 0


if __name__ == "__main__":
    sys.exit(main())
