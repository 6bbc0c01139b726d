"""The one door to MACE's training.

``mace_transfer_train`` = MACE's own argument parser (``mace.tools.build_default_arg_parser``,
configargparse, so ``--config file.yaml`` works) + the ``mace-transfer`` argument group below, then
MACE's ``mace.cli.run_train.run(args)``. With none of our flags the call is exactly
``mace_run_train``'s.

Our flags act in two places and nowhere else:

* before MACE: ``--source_model`` + ``--element_map`` remap the source model
  (:func:`mace_transfer.transfer.remap.remap_elements`) and hand the result to MACE as its
  ``--foundation_model`` file, so MACE's own fine-tuning path starts from the remapped weights;
* inside MACE: ``--freeze_blocks`` / ``--block_lr_factors`` / ``--unfreeze_after`` act through the
  single seam documented in :mod:`mace_transfer.transfer.freeze` (MACE's ``get_params_options``);
  ``--early_stop_patience`` through the seam documented at
  :func:`mace_transfer.transfer.early_stop.early_stop_seam` (the epoch limit MACE's ``tools.train`` loop
  compares against).
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mace_transfer import UserInputError
from mace_transfer.transfer.early_stop import check_early_stop, early_stop_seam
from mace_transfer.transfer.stage_two import (apply_validation_check, check_stage_two, describe, stage_two_args,
                                              stage_two_name)
# their home until 0.1.x: still importable from here (mace_transfer.transfer.early_stop is the new one)
from mace_transfer.transfer.early_stop import (EpochLimit, iter_mace_results, iter_mace_results_file,  # noqa: F401
                                               results_file, should_stop, validation_history)


def build_parser():
    """MACE's default parser plus the ``mace-transfer`` argument group."""
    from mace.tools import build_default_arg_parser

    parser = build_default_arg_parser()
    group = parser.add_argument_group(
        "mace-transfer", "transfer learning across chemical elements (mace-transfer)"
    )
    group.add_argument(
        "--source_model",
        type=str,
        default=None,
        help="trained MACE .model of the source element(s); remapped with --element_map and "
        "used as MACE's --foundation_model",
    )
    group.add_argument(
        "--element_map",
        type=str,
        default=None,
        help="source:target pairs, e.g. Si:Ge or Si:Ge,C:Sn (symbols or atomic numbers)",
    )
    group.add_argument(
        "--remap_mode",
        choices=["replace", "extend"],
        default="replace",
        help="replace: the target takes the source's place; extend: the model keeps the "
        "source and gains the target as a copy of it",
    )
    group.add_argument(
        "--length_scale",
        type=str,
        default=None,
        help="corresponding-states length scale s (target/source), a number or 'auto' "
        "(estimated from --train_file); default: auto with --source_model in replace mode "
        "(see --corresponding_states), else 1",
    )
    group.add_argument(
        "--energy_scale",
        type=str,
        default=None,
        help="corresponding-states energy scale k (target/source), a number or 'auto' "
        "(least-squares fit of forces on --train_file); default as --length_scale",
    )
    group.add_argument(
        "--corresponding_states",
        type=_str2bool,
        default=True,
        help="with --source_model (replace mode) and neither scale given: rescale the remapped model "
        "by the s, k estimated on --train_file (the default: it lowered the Ge test force error at "
        "every N measured, docs/RESULTS.md); False keeps s = k = 1",
    )
    group.add_argument(
        "--refit_shift",
        type=_str2bool,
        default=True,
        help="with --source_model: refit the per-atom energy shift of the remapped model to the "
        "training energies before training (removes the constant energy offset between elements)",
    )
    group.add_argument(
        "--estimate_file",
        type=str,
        default=None,
        help="with --source_model: the target structures the 'auto' scales and the shift refit are "
        "estimated from (default: --train_file). Give the near-equilibrium data alone when the training "
        "set also holds far-from-equilibrium cells (e.g. close-pair cells for the short-range wall): "
        "their large forces and energies would otherwise dominate the fit of k and the shift",
    )
    group.add_argument(
        "--freeze_blocks",
        type=str,
        default=None,
        help="comma-separated blocks to freeze: embedding, radial, interactions[.N], "
        "products[.N], readouts[.N], or re:<regex over parameter names>",
    )
    group.add_argument(
        "--block_lr_factors",
        type=str,
        default=None,
        help='JSON learning-rate multiplier per block, e.g. \'{"interactions.0": 0.1}\'; '
        "0 freezes",
    )
    group.add_argument(
        "--unfreeze_after",
        type=int,
        default=None,
        help="gradual unfreezing: frozen blocks become trainable after this epoch",
    )
    group.add_argument(
        "--early_stop_patience",
        type=int,
        default=None,
        help="stop when the validation loss (MACE's results log, last head) has not improved for this "
        "many epochs; MACE then saves its best-validation checkpoint as usual (MACE 0.3.16's "
        "--patience never stops a serial run)",
    )
    group.add_argument(
        "--early_stop_min_epochs",
        type=int,
        default=0,
        help="with --early_stop_patience: never stop before this epoch",
    )
    group.add_argument(
        "--early_stop_min_delta",
        type=float,
        default=0.0,
        help="with --early_stop_patience: an epoch counts as an improvement only when its validation loss "
        "is below (1 - this) x the last counted best (relative, e.g. 0.001; 0: any decrease). MACE still "
        "keeps the lowest-loss checkpoint",
    )
    group.add_argument(
        "--converged_stage_two",
        type=str,
        default="off",
        help="after this run, continue its model with an energy-heavy loss in a second MACE run "
        "(mace_transfer.transfer.stage_two): 'energy' = stress loss, energy:forces:stress 100:10:100, "
        "lr 0.001, early stop; written as <name>_stagetwo.model beside <name>.model, which is stage one's model "
        "again where stage two did not lower the validation energy MAE (then <name>_stagetwo_rejected.model). "
        "Without --stress_key labels in every training structure the stress term is dropped. Default: off",
    )
    group.add_argument(
        "--pipeline",
        type=str,
        default=None,
        help="YAML file of stages run in order (handled by mace_transfer_train itself)",
    )
    return parser


def _str2bool(text) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise UserInputError(f"expected true/false, got {text!r}")


#: the learning rate of a run with --source_model when --lr is not given: every transfer study in
#: docs/RESULTS.md used it; MACE's own default 0.01 wrecks the transferred weights in epoch 0
TRANSFER_DEFAULT_LR = 0.002
#: MACE's own --lr default, kept for every run without --source_model
MACE_DEFAULT_LR = 0.01


def parse_args(argv: Optional[Sequence[str]] = None):
    """Parse ``argv`` with :func:`build_parser`; MACE's own validation errors exit as usual.

    ``--lr`` is parsed with no default so that :func:`choose_defaults` can tell a run that named its
    learning rate (on the command line or in ``--config``) from one that did not."""
    parser = build_parser()
    parser.set_defaults(lr=None, multiheads_finetuning=None)
    return parser.parse_args(None if argv is None else list(argv))


def choose_defaults(args) -> List[str]:
    """Fill the defaults that protect a transferred start; returns what was chosen and why (logged).

    * ``--lr`` not given: :data:`TRANSFER_DEFAULT_LR` with ``--source_model``, MACE's 0.01 otherwise;
    * ``--length_scale``/``--energy_scale`` not given: ``auto`` with ``--source_model`` in replace
      mode while ``--corresponding_states`` is on (the default), else 1;
    * ``--remap_mode extend``: MACE's ``--foundation_model_elements True`` (seam: MACE builds its
      element table from the training data, so Ge-only data would drop Si from the extended model,
      or, with a replayed head, fail on a one-hot of the wrong width).
    """
    said = []
    if getattr(args, "multiheads_finetuning", True) is None:
        # MACE's default is True, and with a foundation model that is no Materials Project model and no
        # --pt_train_file MACE warns and turns it off: a transferred start decides it here, once
        args.multiheads_finetuning = not args.source_model or args.pt_train_file is not None
        if args.source_model:
            said.append("multihead fine-tuning " + ("on (--pt_train_file given: its structures are "
                        "replayed on the source's head)" if args.multiheads_finetuning else
                        "off (no --pt_train_file to replay; --multiheads_finetuning True with "
                        "--pt_train_file turns it on)"))
    if args.source_model and args.remap_mode == "extend" and not args.foundation_model_elements:
        args.foundation_model_elements = True
        said.append("--remap_mode extend keeps every element of the extended model "
                    "(--foundation_model_elements True), whatever elements the training data hold")
    if args.lr is None:
        args.lr = TRANSFER_DEFAULT_LR if args.source_model else MACE_DEFAULT_LR
        if args.source_model:
            said.append(f"--lr not given: {args.lr:g} for a transferred start (MACE's default "
                        f"{MACE_DEFAULT_LR:g} wrecks the transferred weights in epoch 0)")
    if args.length_scale is None and args.energy_scale is None:
        rescale = bool(args.source_model) and args.remap_mode == "replace" and args.corresponding_states
        args.length_scale = args.energy_scale = "auto" if rescale else "1.0"
        args.rescale_by_default = rescale
        if rescale:
            said.append("corresponding-states rescale on (the default with --source_model; "
                        "--corresponding_states False turns it off)")
        elif args.source_model and args.remap_mode == "replace":
            said.append("corresponding-states rescale off (--corresponding_states False)")
    else:
        args.length_scale = "1.0" if args.length_scale is None else args.length_scale
        args.energy_scale = "1.0" if args.energy_scale is None else args.energy_scale
    return said


def uses_transfer(args) -> bool:
    """True when any mace-transfer flag changes what MACE would do."""
    return bool(
        args.source_model
        or args.element_map
        or args.freeze_blocks
        or args.block_lr_factors
        or args.unfreeze_after is not None
        or args.early_stop_patience is not None
    )


def _parse_scale(text: str, flag: str):
    if isinstance(text, (int, float)):
        return float(text)
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise UserInputError(f"{flag} must be a positive number or 'auto', got {text!r}") from None
    if not value > 0:
        raise UserInputError(f"{flag} must be positive, got {value}")
    return value


def parse_e0s(text: Optional[str]) -> Optional[Dict[int, float]]:
    """MACE's ``--E0s`` as a {Z: eV} dict when it is one (a dict literal or JSON), else None."""
    if text is None:
        return None
    stripped = str(text).strip()
    if not stripped.startswith("{"):
        return None
    try:
        raw = ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
        try:
            raw = json.loads(stripped)
        except json.JSONDecodeError:
            raise UserInputError(f"--E0s is not a dictionary: {text!r}") from None
    from mace_transfer.transfer.remap import to_atomic_number

    return {to_atomic_number(k): float(v) for k, v in raw.items()}


def _remapped_model_path(args) -> Path:
    """Where the remapped source model is written (one file per rank under torchrun)."""
    folder = Path(args.model_dir or ".")
    folder.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    suffix = f".rank{os.environ.get('RANK', '0')}" if world > 1 else ""
    return folder / f"{args.name}_remapped_source{suffix}.model"


#: at most this many training structures are read for 'auto' scales and the shift refit
MAX_FRAMES_FOR_ESTIMATES = 200


#: (path, size, mtime) -> the structures read: the key check, the scale estimate, the E0 average
#: and the shift refit of one run share a single read of each file (--train_file, --estimate_file)
_ATOMS_READ: Dict[tuple, list] = {}
#: files kept in :data:`_ATOMS_READ` at once: one run's training and estimate files (a study trains
#: many runs in one process)
_FILES_KEPT = 2


def _read_frames(path_text: str, flag: str) -> list:
    """The first :data:`MAX_FRAMES_FOR_ESTIMATES` structures of the file ``flag`` names (read once a run);
    a file ASE cannot read is one line naming ``flag``."""
    from ase.io import read

    path = Path(path_text)
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns) if stat else None
    if key in _ATOMS_READ:
        return _ATOMS_READ[key]
    try:
        frames = read(path_text, index=f":{MAX_FRAMES_FOR_ESTIMATES}")
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
        raise UserInputError(f"cannot read {flag} {path_text}: {exc}") from None
    if key is not None:
        while len(_ATOMS_READ) >= _FILES_KEPT:
            del _ATOMS_READ[next(iter(_ATOMS_READ))]  # the oldest read goes first
        _ATOMS_READ[key] = frames
    return frames


def _read_train_atoms(args):
    """The first :data:`MAX_FRAMES_FOR_ESTIMATES` structures of ``--train_file`` (read once a run)."""
    if not args.train_file:
        raise UserInputError("'auto' length/energy scale needs --train_file with target data")
    return _read_frames(args.train_file, "--train_file")


def _read_estimate_atoms(args):
    """The structures the corresponding-states scales and the shift refit are fitted to: the first
    :data:`MAX_FRAMES_FOR_ESTIMATES` of ``--estimate_file`` when given, else of ``--train_file``."""
    if not getattr(args, "estimate_file", None):
        return _read_train_atoms(args)
    return _read_frames(args.estimate_file, "--estimate_file")


def prepare_source_model(args, spec=None):
    """Remap ``--source_model`` and point MACE's ``--foundation_model`` at the result.

    Returns the remapped model (also written next to MACE's output), or None without a source.
    """
    if not args.source_model:
        if args.element_map:
            raise UserInputError("--element_map needs --source_model")
        if getattr(args, "estimate_file", None):
            raise UserInputError("--estimate_file needs --source_model (it feeds the remap's estimates)")
        return None
    import torch

    from mace_transfer.transfer import estimate, remap

    if args.foundation_model:
        raise UserInputError("give either --source_model or --foundation_model, not both")
    model = remap.load_model(args.source_model)
    if not args.element_map:
        raise UserInputError("--source_model needs --element_map (e.g. Si:Ge)")
    if spec is not None and spec.active:
        spec.check_model(model)  # the remap keeps every block: unknown names fail before any estimate
    element_map = remap.parse_element_map(args.element_map)
    length_scale = _parse_scale(args.length_scale, "--length_scale")
    energy_scale = _parse_scale(args.energy_scale, "--energy_scale")
    e0s = parse_e0s(args.E0s)
    average = str(args.E0s).strip().lower() == "average"
    if average:  # MACE would average after our shift refit: average first, so both use the same E0s
        e0s = estimate.average_e0s(_read_train_atoms(args), energy_key=args.energy_key)
    estimate_atoms = None
    if "auto" in (length_scale, energy_scale):
        estimate_atoms = _read_estimate_atoms(args)
        try:
            est = estimate.estimate_corresponding_states(
                model,
                element_map,
                estimate_atoms,
                forces_key=args.forces_key,
                length_scale=None if length_scale == "auto" else length_scale,
            )
        except UserInputError as exc:
            if not getattr(args, "rescale_by_default", False):
                raise
            # the user did not ask for it: say why it is off and go on with the plain remap
            print(f"mace-transfer: corresponding-states rescale off: {exc}", flush=True)
            est = {"length_scale": 1.0, "energy_scale": 1.0}
        else:
            print(f"mace-transfer: corresponding states estimated: {est}", flush=True)
        length_scale = est["length_scale"] if length_scale == "auto" else length_scale
        energy_scale = est["energy_scale"] if energy_scale == "auto" else energy_scale
    remapped = remap.remap_elements(
        model,
        element_map,
        mode=args.remap_mode,
        atomic_energies=e0s,
        length_scale=length_scale,
        energy_scale=energy_scale,
    )
    if args.refit_shift and (args.train_file or getattr(args, "estimate_file", None)):
        estimate_atoms = estimate_atoms or _read_estimate_atoms(args)
        remapped, delta = estimate.refit_energy_shift(remapped, estimate_atoms, energy_key=args.energy_key)
        print(f"mace-transfer: remapped model's energy shift refitted by {delta:+.4f} eV/atom", flush=True)
    if average:
        energies = remapped.atomic_energies_fn.atomic_energies.detach().reshape(-1, len(remapped.atomic_numbers))[-1]
        args.E0s = repr({int(z): float(e) for z, e in zip(remapped.atomic_numbers, energies)})
        print(f"mace-transfer: --E0s average computed on --train_file before the shift refit and given to "
              f"MACE as {args.E0s}", flush=True)
    path = _remapped_model_path(args)
    tmp = path.with_suffix(".tmp")
    torch.save(remapped, tmp)
    os.replace(tmp, path)
    args.foundation_model = str(path)
    if args.E0s is None:
        # the remapped model carries the E0s (given or kept): MACE reads them back from it
        args.E0s = "foundation"
    return remapped


#: MACE's data-file flags (each a path, when given)
DATA_FILE_FLAGS = ("train_file", "valid_file", "test_file", "pt_train_file", "pt_valid_file")


def _reads_extxyz(path: str) -> bool:
    return Path(path).suffix.lower() in (".xyz", ".extxyz")


def is_plain_xyz_path(value) -> bool:
    """True when ``value`` is one extxyz file path (``.xyz``/``.extxyz``): the only data-file value we check
    before MACE. Everything else MACE reads its own way and gets it untouched: its replay keywords
    (``--pt_train_file mp``, ``omat``, ``matpes_pbe``, ``matpes_r2scan``), folders, ``.h5``/LMDB sources,
    lists, ``@file`` arguments."""
    text = str(value or "").strip()
    return bool(text) and not text.startswith(("@", "[")) and "," not in text and _reads_extxyz(text)


def _has_key(atoms, key: str, per_atom: bool) -> bool:
    """``key`` in the frame as MACE reads it (``energy``/``forces`` also from an ASE calculator)."""
    if key in (atoms.arrays if per_atom else atoms.info):
        return True
    results = getattr(atoms.calc, "results", None) or {}
    return key in ("energy", "forces") and key in results


def check_data_files(args) -> None:
    """One-line refusals before MACE starts: a data file that does not exist, or an
    ``--energy_key``/``--forces_key`` that names nothing in the training file (MACE 0.3.16 warns and
    trains on zero energies or forces, then exits 0). Only extxyz files are read (the first
    :data:`MAX_FRAMES_FOR_ESTIMATES` structures, isolated atoms not counted)."""
    for flag in DATA_FILE_FLAGS:
        path = getattr(args, flag, None)
        if is_plain_xyz_path(path) and not Path(path).exists():
            raise UserInputError(f"--{flag} {path} does not exist")
    if getattr(args, "estimate_file", None) and not Path(args.estimate_file).is_file():
        raise UserInputError(f"--estimate_file {args.estimate_file} does not exist")
    if not args.train_file or not _reads_extxyz(args.train_file) or not Path(args.train_file).is_file():
        return
    frames = [a for a in _read_train_atoms(args) if a.info.get("config_type") != "IsolatedAtom"]
    if not frames:
        return
    for flag, key, per_atom, weight in (("--forces_key", args.forces_key, True, args.forces_weight),
                                        ("--energy_key", args.energy_key, False, args.energy_weight)):
        if weight and not any(_has_key(a, key, per_atom) for a in frames):
            where = sorted(set(frames[0].arrays) - {"numbers", "positions"}) if per_atom else sorted(frames[0].info)
            raise UserInputError(f"{flag} {key} names nothing in {args.train_file} (its first structure has "
                                 f"{', '.join(where) or 'no such keys'}); MACE would train on zeros")


def check_combinations(args) -> None:
    """One-line refusals of MACE flags that cannot combine with a transferred start or our seams."""
    if (args.source_model and args.remap_mode == "replace" and args.pt_train_file
            and args.multiheads_finetuning):
        raise UserInputError("--multiheads_finetuning replays --pt_train_file on the source element, which "
                             "--remap_mode replace removed from the model: use --remap_mode extend (keeps "
                             "the source element beside the target)")
    mace_freeze = getattr(args, "freeze", None)
    if mace_freeze and mace_freeze > 0 and (args.unfreeze_after is not None or args.block_lr_factors):
        raise UserInputError("MACE's --freeze sets its frozen groups' learning rate to 0, which "
                             "--unfreeze_after/--block_lr_factors cannot thaw or scale: use --freeze_blocks")


def run(args) -> None:
    """Run MACE's training on parsed ``args`` with mace-transfer's flags applied."""
    from mace.cli import run_train

    from mace_transfer.transfer import freeze

    check_data_files(args)
    check_early_stop(args)
    chosen = choose_defaults(args)
    check_combinations(args)
    check_stage_two(args)
    before = copy.deepcopy(args) if args.converged_stage_two != "off" else None  # stage two starts from these
    for line in chosen:
        print(f"mace-transfer: {line}", flush=True)  # before MACE sets up its logger: no root handler
    spec = freeze.FreezeSpec.from_strings(
        args.freeze_blocks, args.block_lr_factors, args.unfreeze_after
    )
    prepare_source_model(args, spec)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # a console handler already on the root logger (e.g. the basicConfig one a third-party module-level
    # logging.warning installs: MACECalculator's dtype notice in an earlier pipeline stage) would print
    # every MACE line a second time beside MACE's own console handler: set aside during the run
    consoles = [h for h in handlers if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)]
    for handler in consoles:
        root.removeHandler(handler)
    try:
        with freeze.optimizer_seam(spec), early_stop_seam(args):
            run_train.run(args)
    finally:
        # MACE's run() adds console and file handlers to the root logger on every call: drop them,
        # so a later run (or our own log lines) in this process never writes into a closed file
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in consoles:
            root.addHandler(handler)
        root.setLevel(level)
    if before is not None:
        two, changed = stage_two_args(before, Path(args.model_dir) / f"{args.name}.model")
        print(f"mace-transfer: stage two (--converged_stage_two {args.converged_stage_two}) from {args.name}.model: "
              + " ".join(describe(changed)), flush=True)
        run(two)
        check = apply_validation_check(two.model_dir, args.name, results_file(two))
        one_e, two_e = (check["stage_one_valid_energy_mae_meV_per_atom"], check["stage_two_valid_energy_mae_meV_per_atom"])
        print(f"mace-transfer: stage two {'kept' if check['keep_stage_two'] else 'not kept'}: validation energy MAE "
              f"{one_e:.2f} -> {two_e:.2f} meV/atom (epoch {check['kept_epoch']}); "
              + (f"{stage_two_name(args.name)}.model is stage two's model" if check["keep_stage_two"] else
                 f"{stage_two_name(args.name)}.model is stage one's, stage two's is {stage_two_name(args.name)}_rejected.model"),
              flush=True)


def run_mace_only(argv: Sequence[str]) -> None:
    """Plain ``mace_run_train`` on ``argv`` (MACE's parser and ``run``, none of our code in the path).

    For overhead comparisons only (the learning-curve timing): same process, same MACE version.
    """
    from mace.cli import run_train
    from mace.tools import build_default_arg_parser

    run_train.run(build_default_arg_parser().parse_args(list(argv)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (MACE's flags + ours) and train. Returns the exit code."""
    args = parse_args(argv)
    if args.pipeline:
        raise UserInputError("--pipeline is run by mace_transfer_train itself, not train.main")
    run(args)
    return 0


def mace_argv(options: Dict[str, Any], parser: Optional[argparse.ArgumentParser] = None,
              kind: str = "training", command: str = "mace_transfer_train") -> List[str]:
    """``{"max_L": 0, "amsgrad": True}`` -> ``["--max_L", "0", "--amsgrad"]`` for MACE's parser (or ``parser``,
    e.g. ``mace_transfer_active``'s; ``kind`` and ``command`` name it in the refusal of an unknown option).

    Booleans of ``store_true`` flags become the bare flag (or nothing); dicts become JSON.
    """
    parser = parser or build_parser()
    actions = parser._option_string_actions  # noqa: SLF001 - argparse keeps no public map
    argv: List[str] = []
    for key, value in options.items():
        flag = f"--{key}"
        if flag not in actions:
            raise UserInputError(f"unknown {kind} option {key!r} (not a {command} flag)")
        if value is None:
            continue
        if isinstance(actions[flag], argparse._StoreTrueAction):  # noqa: SLF001
            if value:
                argv.append(flag)
            continue
        if isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = str(value)
        argv += [flag, str(value)]
    return argv
