"""Console scripts of mace-transfer. Thin: parse, then call one module below.

Every entry point turns a :class:`mace_transfer.UserInputError` into one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from mace_transfer import UserInputError


def _guarded(func: Callable[[Optional[Sequence[str]]], Optional[int]], argv) -> int:
    """Run ``func(argv)``; a UserInputError becomes ``error: <message>`` and exit code 2."""
    try:
        code = func(argv)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


# --------------------------------------------------------------------------- train
def _train(argv):
    from mace_transfer import train

    return train.main(argv)


def train_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_train``: every ``mace_run_train`` flag plus mace-transfer's group."""
    sys.exit(_guarded(_train, argv))


# --------------------------------------------------------------------------- remap
def _remap(argv):
    raise UserInputError("mace_transfer_remap is not implemented yet (issue: species remap)")


def remap_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_remap IN.model OUT.model --element_map Si:Ge``."""
    sys.exit(_guarded(_remap, argv))


# --------------------------------------------------------------------------- sample
def _comma_numbers(text: str, kind, what: str):
    """``'2,2,2'`` -> ``(2, 2, 2)``; a UserInputError names ``what`` on bad input."""
    try:
        return tuple(kind(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise UserInputError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _sample(argv):
    from mace_transfer import sampling

    parser = argparse.ArgumentParser(
        prog="mace_transfer_sample",
        description="Sample MD / liquid / strained / vacancy configurations labelled by a classical "
        "potential (SW or Tersoff) into extxyz with MACE keys. Resumable: rerun to extend.",
    )
    parser.add_argument("--element", required=True, help="Si or Ge")
    parser.add_argument("--potential", required=True, help="sw or tersoff")
    parser.add_argument("--n", type=int, required=True, help="number of configurations")
    parser.add_argument("--out", required=True, help="output extxyz path")
    parser.add_argument("--supercell", default="2,2,2", help="repeats of the 8-atom cubic cell (default 2,2,2)")
    parser.add_argument("--temperatures", default=",".join(f"{t:g}" for t in sampling.DEFAULT_TEMPERATURES),
                        help="MD temperature ladder in K, comma-separated")
    parser.add_argument("--melting_point", type=float, default=None,
                        help="K; rungs at or above it are pre-melted and tagged liquid (default: per potential)")
    parser.add_argument("--max_strain", type=float, default=0.04, help="largest strain component (0 disables)")
    parser.add_argument("--vacancies", type=int, default=1, help="atoms removed in vacancy cells (0 disables)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timestep", type=float, default=1.5, help="MD timestep in fs")
    parser.add_argument("--equilibration_steps", type=int, default=150)
    parser.add_argument("--snapshot_interval", type=int, default=30, help="MD steps between snapshots")
    parser.add_argument("--isolated_atom", action="store_true",
                        help="prepend an IsolatedAtom frame (E0 for MACE; not counted in --n)")
    parser.add_argument("--overwrite", action="store_true", help="replace an output made with other settings")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    frames = sampling.sample_configurations(
        args.element, args.potential, args.n,
        supercell=_comma_numbers(args.supercell, int, "--supercell"),
        temperatures=_comma_numbers(args.temperatures, float, "--temperatures"),
        melting_point=args.melting_point, max_strain=args.max_strain, vacancies=args.vacancies,
        seed=args.seed, timestep_fs=args.timestep, equilibration_steps=args.equilibration_steps,
        snapshot_interval=args.snapshot_interval, isolated_atom=args.isolated_atom,
        out_path=args.out, overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(f"{len(frames)} frames in {args.out}")
    return 0


def sample_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_sample --element Ge --potential sw --n 500 --out ge_sw.xyz``."""
    sys.exit(_guarded(_sample, argv))


# --------------------------------------------------------------------------- label
def _label(argv):
    raise UserInputError("mace_transfer_label is not implemented yet (issue: ab initio data)")


def label_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_label --in structures.xyz --out labelled.xyz --engine cp2k``."""
    sys.exit(_guarded(_label, argv))


# --------------------------------------------------------------------------- eval
def _eval(argv):
    raise UserInputError("mace_transfer_eval is not implemented yet (issue: evaluation)")


def eval_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_eval MODEL.model --test TEST.xyz --reference sw-ge --out DIR``."""
    sys.exit(_guarded(_eval, argv))
