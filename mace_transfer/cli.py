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
    """Parse ``mace_transfer_label`` flags, then label with :mod:`mace_transfer.dft` (resumable)."""
    parser = argparse.ArgumentParser(
        prog="mace_transfer_label",
        description="Label structures with PBE (CP2K): REF_energy (eV), REF_forces (eV/Å), "
        "REF_stress (eV/Å^3). Resumable: structures already in --out are skipped; unconverged "
        "SCF goes to <out>.failed.jsonl, never into --out.",
    )
    parser.add_argument("--in", dest="inp", required=True, help="input extxyz of structures")
    parser.add_argument("--out", required=True, help="output extxyz (appended to, one frame at a time)")
    parser.add_argument("--engine", default="cp2k", help="DFT engine (only 'cp2k')")
    parser.add_argument("--settings", default=None, help="YAML of PBE settings (configs/dft_pbe.yaml)")
    parser.add_argument("--nprocs", type=int, default=None, help="MPI ranks for CP2K (overrides settings)")
    parser.add_argument("--max", type=int, default=None, help="label at most N new structures this run")
    parser.add_argument("--e0", action="store_true",
                        help="also append an IsolatedAtom frame per element (E0s; spin-polarised atom)")
    parser.add_argument("--retry-failed", action="store_true", help="retry structures recorded as failed")
    parser.add_argument("--scratch", default=None, help="folder for CP2K work dirs (default: system temp)")
    args = parser.parse_args(argv)

    import os

    if args.engine.lower() != "cp2k":
        raise UserInputError(f"unknown --engine {args.engine!r}; supported: cp2k")
    if not os.path.isfile(args.inp):
        raise UserInputError(f"input file not found: {args.inp}")
    if args.settings is not None and not os.path.isfile(args.settings):
        raise UserInputError(f"settings file not found: {args.settings}")
    if args.nprocs is not None and args.nprocs < 1:
        raise UserInputError(f"--nprocs must be >= 1, got {args.nprocs}")
    if args.max is not None and args.max < 0:
        raise UserInputError(f"--max must be >= 0, got {args.max}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UserInputError(f"output folder {out_dir} does not exist")

    from ase.io import read

    from mace_transfer import dft

    try:
        settings = dft.load_settings(args.settings, nprocs=args.nprocs, scratch_dir=args.scratch)
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"{args.settings}: {exc}") from None
    try:
        structures = read(args.inp, index=":")
    except Exception as exc:  # ASE raises many kinds for a malformed file
        raise UserInputError(f"cannot read {args.inp} as structures: {exc}") from None
    structures = [a for a in structures if a.info.get("config_type") != "IsolatedAtom"]
    if not structures:
        raise UserInputError(f"{args.inp} holds no structures to label")
    calculator = dft.CP2KCalculator(settings)
    try:
        if args.e0:
            symbols = {s for a in structures for s in a.get_chemical_symbols()}
            dft.add_isolated_atoms(symbols, args.out, settings)
        counts = dft.label_structures(
            structures, calculator, args.out, settings_tag=settings.physics_hash(),
            max_new=args.max, retry_failed=args.retry_failed,
        )
    except dft.SettingsMismatch as exc:
        raise UserInputError(str(exc)) from None
    print(f"label: remaining={counts['remaining']} labelled={counts['labelled']} failed={counts['failed']}")
    return 0


def label_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_label --in structures.xyz --out labelled.xyz --engine cp2k``."""
    sys.exit(_guarded(_label, argv))


# --------------------------------------------------------------------------- eval
def _eval(argv):
    raise UserInputError("mace_transfer_eval is not implemented yet (issue: evaluation)")


def eval_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_eval MODEL.model --test TEST.xyz --reference sw-ge --out DIR``."""
    sys.exit(_guarded(_eval, argv))
