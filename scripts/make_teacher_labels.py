"""Teacher labels for the fast-student study (issue 23): M sampled Ge structures labelled by an
accurate teacher: a MACE model (default: the medium Si->Ge transfer_rescale model trained on N = 20
PBE structures) or a peer run in its own environment (``--peer sevenn``: a fine-tuned SevenNet-0).

    .venv/bin/python scripts/make_teacher_labels.py --teacher docs/results/teacher_tiny/teacher/medium_transfer_rescale_N0020_s0.model \
        --n 2000 --out data/ge_teacher_medium_N20s0.xyz
    .venv/bin/python scripts/make_teacher_labels.py --peer sevenn \
        --teacher runs/peers_long/lr-sevenn-0.0005_N0020_s0/model/checkpoint_best.pth \
        --structures data/ge_teacher_medium_N20s0.xyz --n 500 --out data/ge_teacher_sevenn_N20s0.xyz

Structures: the SW-Ge sampler of the DFT sets (16-atom cells: MD ladder 300-2500 K, liquid, strain,
vacancy; its own seed 7, so none of them is a DFT structure), every second one scaled to PBE density
(5.783/5.654, as half of data/ge_pbe.xyz is); or, with ``--structures``, the first M frames of an
existing file (e.g. another teacher's labels: both teachers then label the same geometries). Both
steps resume: the sampler appends to ``<out>.structures.xyz``, the teacher to ``<out>``
(datagen.teacher: its identity in every frame).
"""

import argparse
import sys
from pathlib import Path

from mace_transfer.datagen import sampling, teacher

PBE_OVER_SW = 5.783 / 5.654  # Ge lattice constants (Å): PBE (docs/DFT.md) / SW (Ding-Andersen)


def sampled_structures(n: int, seed: int, out: Path) -> list:
    """``n`` SW-Ge sampler frames, every second one scaled to PBE density."""
    structures = sampling.sample_configurations(
        "Ge", "sw", n, supercell=(2, 1, 1), seed=seed, progress=False,
        out_path=str(out.with_suffix(".structures.xyz")))
    for index, atoms in enumerate(structures):
        scale = PBE_OVER_SW if index % 2 else 1.0
        atoms.set_cell(atoms.cell * scale, scale_atoms=True)
        atoms.info["length_scale"] = scale
    return structures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the teacher's .model file (a peer's checkpoint with --peer)")
    parser.add_argument("--peer", choices=("sevenn", "chgnet"), help="the teacher is this peer (.venv-peers)")
    parser.add_argument("--structures", help="label the first M frames of this extxyz instead of sampling")
    parser.add_argument("--n", type=int, default=2000, help="structures M")
    parser.add_argument("--out", required=True, help="labelled extxyz")
    parser.add_argument("--seed", type=int, default=7, help="sampler seed")
    args = parser.parse_args(argv)

    from ase.io import read

    out = Path(args.out)
    if args.structures:
        structures = read(args.structures, f":{args.n}")
        if len(structures) < args.n:
            parser.error(f"--structures {args.structures} holds {len(structures)} frames, fewer than --n {args.n}")
    else:
        structures = sampled_structures(args.n, args.seed, out)
    if args.peer:
        from mace_transfer.studies.peers import peer_teacher

        # a fine-tuned peer checkpoint predicts on the labels' energy zero already: no shift
        calc, name, settings = peer_teacher({"peer": args.peer, "model": args.teacher}, structures,
                                            Path("runs") / "teacher_labels" / out.stem)
    else:
        from mace_transfer.studies.pipeline import model_teacher

        calc, name, settings = model_teacher(args.teacher)
    teacher.label_with_teacher(structures, calc, out, name=name, settings=settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
