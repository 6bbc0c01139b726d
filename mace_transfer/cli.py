"""Console scripts of mace-transfer. Thin: parse, then call one module below.

Every entry point turns a :class:`mace_transfer.UserInputError` into one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Optional, Sequence

from mace_transfer import UserInputError

#: third-party warnings that say nothing to a user (e3nn's TorchScript code generation, once per
#: compiled class, on every model built or loaded); ours and MACE's own stay visible
QUIET_WARNINGS = (
    (UserWarning, r"The TorchScript type system doesn't support instance-level annotations"),
)


class FlagParser(argparse.ArgumentParser):
    """One spelling of each flag across the console scripts: MACE's underscore (``--no_progress``)
    is the name shown, and the hyphenated form (``--no-progress``) is accepted as well."""

    def add_argument(self, *names, **kwargs):
        if names and all(n.startswith("--") for n in names):
            spellings = ["--" + n[2:].replace("-", "_") for n in names] + ["--" + n[2:].replace("_", "-") for n in names]
            names = tuple(dict.fromkeys(spellings))
        return super().add_argument(*names, **kwargs)


def _guarded(func: Callable[[Optional[Sequence[str]]], Optional[int]], argv) -> int:
    """Run ``func(argv)``; a UserInputError becomes ``error: <message>`` and exit code 2."""
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    from mace_transfer.execution import ExecutorLost

    try:
        code = func(argv)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExecutorLost as exc:  # the Dask scheduler went away: what finished is recorded, a rerun resumes
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return int(code or 0)


# --------------------------------------------------------------------------- train
def _pipeline_file(argv) -> Optional[str]:
    """The value of ``--pipeline`` in ``argv`` (``--pipeline F`` or ``--pipeline=F``), else None."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, item in enumerate(argv):
        if item == "--pipeline":
            if i + 1 >= len(argv):
                raise UserInputError("--pipeline needs a YAML file")
            return argv[i + 1]
        if item.startswith("--pipeline="):
            return item.split("=", 1)[1]
    return None


def _train(argv):
    pipeline_file = _pipeline_file(argv)
    if pipeline_file is not None:
        from mace_transfer.studies import pipeline

        return pipeline.run_pipeline_file(pipeline_file)
    from mace_transfer.transfer import train

    return train.main(argv)


def train_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_train``: every ``mace_run_train`` flag plus mace-transfer's group."""
    sys.exit(_guarded(_train, argv))


# --------------------------------------------------------------------------- remap
def _remap(argv):
    parser = FlagParser(
        prog="mace_transfer_remap",
        description="Remap the elements of a trained MACE model (e.g. Si -> Ge), exactly.",
    )
    parser.add_argument("input", help="source MACE .model file")
    parser.add_argument("output", help="remapped MACE .model file to write")
    parser.add_argument("--element_map", required=True, help="source:target pairs, e.g. Si:Ge")
    parser.add_argument("--mode", choices=["replace", "extend"], default="replace")
    parser.add_argument("--length_scale", type=float, default=1.0, help="corresponding-states s")
    parser.add_argument("--energy_scale", type=float, default=1.0, help="corresponding-states k")
    parser.add_argument("--E0s", default=None, help='E0 per element in eV, JSON: \'{"Ge": -4.5}\'')
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)

    import json
    from pathlib import Path

    import torch

    from mace_transfer.transfer import remap

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise UserInputError(f"{out} exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise UserInputError(f"output folder {out.parent} does not exist")
    if not Path(args.input).is_file():
        raise UserInputError(f"source model {args.input} does not exist")
    e0s = None
    if args.E0s:
        try:
            e0s = json.loads(args.E0s)
        except json.JSONDecodeError:
            raise UserInputError(f"--E0s is not JSON: {args.E0s!r}") from None
    model = remap.load_model(args.input)
    new = remap.remap_elements(
        model,
        args.element_map,
        mode=args.mode,
        atomic_energies=e0s,
        length_scale=args.length_scale,
        energy_scale=args.energy_scale,
    )
    torch.save(new, out)
    zs = remap.model_elements(new)
    print(f"wrote {out}: elements {remap.symbols(zs)}")
    return 0


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
    from mace_transfer.datagen import sampling

    parser = FlagParser(
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


# --------------------------------------------------------------------------- executor (issue 47)
def _add_executor_flags(parser) -> None:
    parser.add_argument("--executor", default=None, metavar="KIND|FILE.yaml",
                        help="where tasks run: serial (default), local (a Dask cluster on this machine, "
                        "one worker per task's threads), or a YAML file with an executor: block "
                        "(kind local/scheduler/slurm/pbs; docs/EXECUTION.md)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="a running Dask scheduler (tcp://host:8786) to run the tasks on")


def _executor_block(args, block=None):
    """A config's ``executor:`` block with ``--executor KIND`` (its kind) or ``--executor FILE.yaml`` (its
    ``executor:`` block instead) applied."""
    from mace_transfer import execution

    block = dict(block or {})
    if args.executor in execution.KINDS:
        block["kind"] = args.executor
    elif args.executor is not None:
        if not os.path.isfile(args.executor):
            raise UserInputError(f"--executor {args.executor!r} is neither one of {', '.join(execution.KINDS)} "
                                 "nor a YAML file")
        import yaml

        try:
            loaded = yaml.safe_load(open(args.executor)) or {}
        except yaml.YAMLError as exc:
            raise UserInputError(f"--executor {args.executor}: not YAML ({str(exc).splitlines()[0]})") from None
        block = loaded.get("executor", loaded) if isinstance(loaded, dict) else loaded
    return block


def _executor_spec(args, block=None, threads_per_task=None):
    """``--executor`` / ``--scheduler`` (and a config's ``executor:`` block, which they override)
    -> :class:`mace_transfer.execution.ExecutorSpec`; bad input is one UserInputError line."""
    from mace_transfer import execution

    block = _executor_block(args, block)
    if threads_per_task is not None and isinstance(block, dict):
        block.setdefault("threads_per_task", threads_per_task)
    try:
        return execution.spec_from_config(block, scheduler=args.scheduler)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


# --------------------------------------------------------------------------- label
def _index_range(text: str):
    """``"START:STOP"`` (either may be empty) -> ``(start, stop)`` of non-negative ints or None."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise UserInputError(f"--indices must be START:STOP (e.g. 0:150 or 150:), got {text!r}") from None
    if (start is not None and start < 0) or (stop is not None and stop < 0) or (
            start is not None and stop is not None and stop <= start):
        raise UserInputError(f"--indices {text}: need 0 <= START < STOP")
    return start, stop


def _label(argv):
    """Parse ``mace_transfer_label`` flags, then label with :mod:`mace_transfer.datagen.dft` (resumable)."""
    parser = FlagParser(
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
    parser.add_argument("--length-scale", type=float, default=None, metavar="F",
                        help="scale every input cell and its positions by F before labelling "
                        "(a_target / a_sampled, e.g. 5.783/5.654 brings SW-Ge cells to PBE density); "
                        "recorded as length_scale in each frame")
    parser.add_argument("--skip-labelled-in", action="append", default=[], metavar="FILE",
                        help="skip input indices already labelled in FILE (source_index), e.g. the "
                        "same structures labelled unscaled; repeatable")
    parser.add_argument("--indices", default=None, metavar="START:STOP",
                        help="label only input indices START <= i < STOP (either may be empty), so "
                        "that several labellers share one input, each writing its own --out; "
                        "mace_transfer_assemble merges them")
    _add_executor_flags(parser)
    args = parser.parse_args(argv)

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
    index_range = _index_range(args.indices) if args.indices is not None else None
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UserInputError(f"output folder {out_dir} does not exist")
    if args.length_scale is not None and not (0.5 <= args.length_scale <= 2.0):
        raise UserInputError(f"--length-scale must be between 0.5 and 2 (a ratio of lattice constants), "
                             f"got {args.length_scale}")
    for other in args.skip_labelled_in:
        if not os.path.isfile(other):
            raise UserInputError(f"--skip-labelled-in file not found: {other}")
        if os.path.abspath(other) == os.path.abspath(args.out):
            raise UserInputError(f"--skip-labelled-in {other} is the output file itself")

    from ase.io import read

    from mace_transfer.datagen import dft

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
    if args.length_scale is not None:
        structures = [dft.scale_lengths(a, args.length_scale) for a in structures]
    skip = set()
    for other in args.skip_labelled_in:
        try:
            skip |= dft.labelled_source_indices(other)
        except Exception as exc:
            raise UserInputError(f"cannot read {other} as labelled structures: {exc}") from None
    executor = _executor_spec(args, threads_per_task=settings.nprocs)  # a worker per CP2K's MPI ranks
    import functools
    import signal

    # on Dask each worker builds its own CP2K calculator from the settings (picklable)
    calculator = dft.CP2KCalculator(settings) if executor.kind == "serial" else functools.partial(
        dft.CP2KCalculator, settings)

    def _terminate(signum, frame):  # SIGTERM -> SystemExit, so the running CP2K is stopped too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.e0:
            symbols = {s for a in structures for s in a.get_chemical_symbols()}
            dft.add_isolated_atoms(symbols, args.out, settings)
        counts = dft.label_structures(
            structures, calculator, args.out, settings_tag=settings.physics_hash(),
            max_new=args.max, retry_failed=args.retry_failed, skip_indices=skip,
            index_range=index_range, executor=executor,
        )
    except (dft.SettingsMismatch, dft.OutputBusy, dft.CP2KNotRunnable) as exc:
        raise UserInputError(str(exc)) from None
    print(f"label: remaining={counts['remaining']} labelled={counts['labelled']} failed={counts['failed']}")
    return 0


def label_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_label --in structures.xyz --out labelled.xyz --engine cp2k``."""
    sys.exit(_guarded(_label, argv))


# --------------------------------------------------------------------------- assemble
def _assemble(argv):
    """Parse ``mace_transfer_assemble`` flags, then merge with :func:`mace_transfer.datagen.dft.assemble_labelled`."""
    parser = FlagParser(
        prog="mace_transfer_assemble",
        description="Merge mace_transfer_label outputs of one element into one MACE training file: "
        "one IsolatedAtom (E0) frame per element, each sampled structure once (by source_index), "
        "one DFT setting. Frames a running labeller is still writing are left out.")
    parser.add_argument("inputs", nargs="+", metavar="LABELLED.xyz", help="labelled extxyz files")
    parser.add_argument("--out", required=True, help="output extxyz")
    parser.add_argument("--overwrite", "--force", dest="force", action="store_true",
                        help="replace --out if it exists (as --overwrite of mace_transfer_remap/sample)")
    args = parser.parse_args(argv)

    from mace_transfer.datagen import dft

    try:
        summary = dft.assemble_labelled(args.inputs, args.out, overwrite=args.force)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise UserInputError(str(exc)) from None
    parts = ", ".join(f"{os.path.basename(k)} {v}" for k, v in summary["per_input"].items())
    types = ", ".join(f"{k} {v}" for k, v in summary["config_types"].items())
    print(f"assemble: {summary['out']}: E0 {'+'.join(summary['isolated']) or 'none'} + "
          f"{summary['n_structures']} structures ({parts}); {types}")
    return 0


def assemble_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_assemble --out data/ge_pbe.xyz data/ge_pbe16.xyz data/ge_pbe16_scaled.xyz``."""
    sys.exit(_guarded(_assemble, argv))


# --------------------------------------------------------------------------- eval
def _eval(argv):
    from mace_transfer import evaluate
    from mace_transfer.evaluate.md import MDSettings

    def floats(text):
        try:
            return [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")

    def ints(text):
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")

    def names(text):
        return [x.strip() for x in text.split(",") if x.strip()]

    defaults = MDSettings()
    parser = FlagParser(
        prog="mace_transfer_eval",
        description="Errors vs a test set, MD stability and crystal properties vs a reference, "
        "for one or several MACE models; writes metrics.json, summary.md and PNGs to --out.")
    parser.add_argument("models", nargs="+", metavar="MODEL.model", help="MACE model file(s)")
    parser.add_argument("--test", default=None, metavar="TEST.xyz",
                        help="extxyz with REF_energy, REF_forces (eV, eV/Å) and config_type "
                        "(required unless --skip errors)")
    parser.add_argument("--reference", default=None,
                        help=f"{'|'.join(evaluate.REFERENCE_NAMES)} or a JSON file of values "
                        "(keys: lattice_constant_A, bulk_modulus_GPa, C11_GPa, ...)")
    parser.add_argument("--out", default="eval", metavar="DIR", help="output directory")
    parser.add_argument("--labels", type=names, default=None, help="comma-separated model names")
    parser.add_argument("--element", default=None,
                        help="element of the diamond crystal (default: from reference/test file)")
    parser.add_argument("--temperatures", type=floats, default=list(defaults.temperatures_K),
                        help="MD temperature ladder, K (default %(default)s)")
    parser.add_argument("--md-steps", type=int, default=defaults.steps,
                        help="steps per MD run (default %(default)s)")
    parser.add_argument("--timestep", type=float, default=defaults.timestep_fs,
                        help="MD timestep, fs (default %(default)s)")
    parser.add_argument("--seeds", type=ints, default=list(defaults.seeds),
                        help="MD seeds (default %(default)s)")
    parser.add_argument("--supercell", type=int, default=defaults.repeat,
                        help="MD cell: N x N x N cubic 8-atom cells (default %(default)s = 64 atoms)")
    parser.add_argument("--min-distance", type=float, default=defaults.min_distance_A,
                        help="MD fails below this interatomic distance, Å (default %(default)s)")
    parser.add_argument("--min-distance-fraction", type=float, default=None,
                        help="instead of --min-distance: this fraction of the crystal's bond "
                        "length (e.g. 0.5)")
    parser.add_argument("--max-energy-jump", type=float,
                        default=defaults.max_energy_jump_eV_per_atom,
                        help="MD fails on a larger one-step energy change, eV/atom "
                        "(default %(default)s)")
    parser.add_argument("--structure-temperatures", type=floats, default=None,
                        help="temperatures (K) for RDF/ADF (default: lowest and highest of ladder)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice). Use 1 beside other busy "
                        "processes (e.g. DFT labelling): oversubscribed cores ran MD 4x slower here")
    parser.add_argument("--close-contact", default=None, metavar="SCAN.xyz",
                        help="close-contact scan (scripts/make_close_contact.py; labelled: with the "
                        "DFT curve): energy as one bond is compressed, the short-range wall")
    parser.add_argument("--skip", type=names, default=[],
                        help=f"comma-separated parts to skip: {','.join(evaluate.SKIPPABLE)}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.test is None and "errors" not in args.skip:
        raise UserInputError("--test TEST.xyz is required unless --skip errors")
    for value, flag in ((args.md_steps, "--md-steps"), (args.timestep, "--timestep"),
                        (args.supercell, "--supercell"), (args.min_distance, "--min-distance"),
                        (args.max_energy_jump, "--max-energy-jump")):
        if value <= 0:
            raise UserInputError(f"{flag} must be positive, got {value}")
    if args.threads is not None:
        if args.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    settings = MDSettings(temperatures_K=tuple(args.temperatures), seeds=tuple(args.seeds),
                          steps=args.md_steps, timestep_fs=args.timestep, repeat=args.supercell,
                          min_distance_A=args.min_distance,
                          min_distance_fraction=args.min_distance_fraction,
                          max_energy_jump_eV_per_atom=args.max_energy_jump,
                          structure_temperatures_K=tuple(args.structure_temperatures or ()))
    evaluate.evaluate(args.models, args.test, args.reference, labels=args.labels,
                      element=args.element, out=args.out, md_settings=settings,
                      device=args.device, skip=args.skip, progress=not args.no_progress,
                      log=lambda message: print(message, file=sys.stderr, flush=True),  # stages even without bars
                      close_contact=args.close_contact)
    print(f"report: {args.out}/summary.md, {args.out}/metrics.json")
    return 0


def eval_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_eval MODEL.model --test TEST.xyz --reference sw-ge --out DIR``."""
    sys.exit(_guarded(_eval, argv))


# --------------------------------------------------------------------------- learning curve
def _learning_curve(argv):
    """Parse ``mace_transfer_learning_curve`` flags, then run :func:`learning_curve.run_study`."""
    from mace_transfer.studies import learning_curve
    from mace_transfer.studies.config import STRATEGIES

    parser = FlagParser(
        prog="mace_transfer_learning_curve",
        description="Learning curves: target models from a remapped source vs from scratch over the "
        "training-set size N (resumable: finished runs are skipped).",
    )
    parser.add_argument("--config", required=True, help="YAML (configs/learning_curve_sw.yaml)")
    parser.add_argument("--out", default=None, help="results folder (default: the config's out)")
    parser.add_argument("--work", default=None, help="MACE run folders (default: the config's work)")
    parser.add_argument("--sizes", default=None, help="comma-separated N (default: the config's)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    parser.add_argument("--strategies", default=None,
                        help=f"comma-separated, from {','.join(STRATEGIES)}")
    parser.add_argument("--max-runs", type=int, default=None, help="train at most this many runs now")
    parser.add_argument("--md", action="store_true", help="MD stability + a0, B for the md.seeds runs")
    parser.add_argument("--timing", action="store_true", help="mace_transfer_train vs mace_run_train")
    parser.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot errors")
    parser.add_argument("--report-only", action="store_true", help="only aggregate, plot and summarise")
    parser.add_argument("--park", action="store_true",
                        help="copy runs cut mid-training (their newest checkpoint) to <out>/partial/ to commit: "
                        "a later session resumes them (converged studies)")
    parser.add_argument("--plan", action="store_true",
                        help="print each run's state (done, parked, started, to train) and a wall-time guess "
                        "from the finished runs; trains nothing")
    _add_executor_flags(parser)
    args = parser.parse_args(argv)
    executor = None  # the config's executor: block (learning_curve.study_executor)
    if args.executor is not None or args.scheduler is not None:
        from mace_transfer.studies.config import load_config

        config = load_config(args.config)
        executor = learning_curve.study_executor(config, _executor_block(args, config.get("executor")),
                                                 args.scheduler)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None
    learning_curve.run_study(
        args.config, out=args.out, work=args.work,
        sizes=_comma_numbers(args.sizes, int, "--sizes") if args.sizes else None,
        seeds=_comma_numbers(args.seeds, int, "--seeds") if args.seeds else None,
        strategies=names, max_runs=args.max_runs, md=args.md, timing=args.timing,
        zero_shot=not args.no_zero_shot, report_only=args.report_only, park=args.park, plan=args.plan,
        progress=lambda message: print(message, flush=True), executor=executor,
    )
    return 0


def learning_curve_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_learning_curve --config configs/learning_curve_sw.yaml``."""
    sys.exit(_guarded(_learning_curve, argv))


# --------------------------------------------------------------------------- active learning (issue 49)
def _active(argv):
    """Parse ``mace_transfer_active`` flags, then run the loop (:mod:`mace_transfer.active`); rerun to resume."""
    from mace_transfer.active import loop, options

    parser = FlagParser(
        prog="mace_transfer_active",
        description="Active learning from a transferred (or any) MACE model: explore by MD -> select by "
        "committee uncertainty -> label (CP2K, any ASE calculator, or a labelled pool) -> fine-tune the "
        "committee -> check, until the stop rule or the DFT budget. Resumable: rerun with the same --out.",
    )
    options.add_arguments(parser)
    _add_executor_flags(parser)
    args = parser.parse_args(argv)
    settings = options.settings_from_args(args, _executor_spec(args))
    loop.ActiveLoop(settings, say=lambda message: print(message, flush=True)).run()
    return 0


def active_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_active --source_model si.model --element_map Si:Ge --budget 40 --out runs/active``."""
    sys.exit(_guarded(_active, argv))
