"""Stage two: a second MACE run that continues a converged model with an energy-heavy loss.

The energy error of a transferred model trained on a few structures is not a constant offset (an E0 or
shift refit does not lower it, docs/RESULTS.md section 15): it is in the relative energies of the cells,
which a forces-first loss (forces:energy 10:1 or 100:1, per-atom energies) barely weighs. Stage two
continues the stage-one model with the energy and the stress (the energy's derivative with the cell)
weighted up, as MACE's own stage two (``--swa``: energy 1000 : forces 100) does, but started *after*
stage one has converged under ``--early_stop_patience`` rather than at a fixed ``--start_swa`` epoch
(which an early-stopped run may never reach).

Without stresses in every training structure, the stress term is dropped (MACE's weighted loss at the
same energy:forces weights) and the printed flags say so.

The seam: stage two is an ordinary MACE fine-tuning run, ``--foundation_model <stage one>.model`` (MACE's
``load_foundations_elements`` copies every weight and the scale/shift), same element table and E0s, run
through :func:`mace_transfer.transfer.train.run` like any other. Its model is written as MACE names its
own stage-two model, ``<model_dir>/<name>_stagetwo.model``; stage one's ``<name>.model`` stays.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List

from mace_transfer import UserInputError
from mace_transfer.transfer.early_stop import iter_mace_results_file, steps_to_epochs, validated_rows_in_order

#: the presets of ``--converged_stage_two`` (MACE flags of the second run; patience and schedule in optimizer steps,
#: as the converged studies count them). ``energy``: docs/RESULTS.md section 15 (issue 48)
PRESETS: Dict[str, Dict[str, Any]] = {
    "energy": {"loss": "stress", "energy_weight": 100.0, "forces_weight": 10.0, "stress_weight": 100.0,
               "lr": 0.001, "patience_steps": 200, "min_patience_epochs": 20, "scheduler_patience_steps": 100},
}
STAGE_TWO_CHOICES = ("off",) + tuple(PRESETS)


def stage_two_name(name: str) -> str:
    """The run name (and model file stem) of stage two: MACE's own ``<name>_stagetwo``."""
    return f"{name}_stagetwo"


def _train_frames(args) -> list:
    from ase.io import read

    path = args.train_file
    if not path or "," in str(path) or not Path(path).is_file() or Path(path).suffix not in (".xyz", ".extxyz"):
        raise UserInputError(f"--converged_stage_two needs --train_file as one extxyz file (got {path!r})")
    return [a for a in read(path, ":") if a.info.get("config_type") != "IsolatedAtom"]


def check_stage_two(args) -> None:
    """One-line refusals before stage one starts (not after an hour of training)."""
    preset = getattr(args, "converged_stage_two", "off") or "off"
    if preset == "off":
        return
    if preset not in PRESETS:
        raise UserInputError(f"--converged_stage_two {preset!r}: choose from {', '.join(STAGE_TWO_CHOICES)}")
    if args.pt_train_file or getattr(args, "multiheads_finetuning", False) and args.foundation_model:
        raise UserInputError("--converged_stage_two continues a one-head model: not with multihead fine-tuning "
                             "(--pt_train_file / --multiheads_finetuning True)")
    if args.swa:
        raise UserInputError("--converged_stage_two is a stage two already: not with MACE's --swa")
    _train_frames(args)  # one extxyz file, read before stage one rather than after it


def stage_two_flags(preset: str, n_train: int, batch_size: int, stresses: bool = True) -> Dict[str, Any]:
    """MACE flags of the second run for ``n_train`` structures at ``batch_size`` (patience in epochs); without
    ``stresses`` in the data, MACE's weighted energy + forces loss at the same energy:forces weights (at N = 20 it
    took the medium Ge test energy MAE from 3.56 to 1.04 meV/atom, against 0.89 with the stress term: docs/RESULTS.md
    section 15)."""
    recipe = PRESETS[preset]
    loss = {"loss": recipe["loss"], "energy_weight": recipe["energy_weight"],
            "forces_weight": recipe["forces_weight"], "stress_weight": recipe["stress_weight"]}
    if recipe["loss"] == "stress" and not stresses:
        loss.update(loss="weighted", stress_weight=None)
    return {**{k: v for k, v in loss.items() if v is not None},
            "lr": recipe["lr"],
            "early_stop_patience": max(recipe["min_patience_epochs"],
                                       steps_to_epochs(recipe["patience_steps"], n_train, batch_size)),
            "scheduler_patience": max(3, steps_to_epochs(recipe["scheduler_patience_steps"], n_train, batch_size))}


def model_e0s(model_path) -> Dict[int, float]:
    """{Z: E0 in eV} of a one-head MACE model file."""
    import torch

    model = torch.load(model_path, map_location="cpu", weights_only=False)
    energies = model.atomic_energies_fn.atomic_energies.detach().reshape(-1, len(model.atomic_numbers))[0]
    return {int(z): float(e) for z, e in zip(model.atomic_numbers.tolist(), energies.tolist())}


def stage_two_args(args_before, stage_one_model: Path):
    """The second run's arguments: ``args_before`` (stage one's, as parsed) with the stage-two flags, the
    stage-one model as MACE's ``--foundation_model`` and everything of the transfer (remap, rescale,
    freezing, multihead replay) switched off; returns (args, the flags it changed). ``--restart_latest`` is kept:
    a cut stage two resumes from its own checkpoints (``<name>_stagetwo_run-<seed>_epoch-*.pt``)."""
    two = copy.deepcopy(args_before)
    frames = _train_frames(two)  # read once: the count sets the patience, the labels whether stresses are trained
    flags = stage_two_flags(two.converged_stage_two, len(frames), int(two.batch_size),
                            stresses=all(two.stress_key in atoms.info for atoms in frames))
    changed: Dict[str, Any] = dict(flags, foundation_model=str(stage_one_model), name=stage_two_name(two.name),
                                   E0s=str(model_e0s(stage_one_model)))
    for key, value in changed.items():
        setattr(two, key, value)
    for key, value in (("source_model", None), ("element_map", None), ("multiheads_finetuning", False),
                       ("freeze_blocks", None), ("block_lr_factors", None), ("unfreeze_after", None),
                       ("length_scale", None), ("energy_scale", None), ("corresponding_states", False),
                       ("converged_stage_two", "off"), ("early_stop_min_epochs", 0)):
        if hasattr(two, key):
            setattr(two, key, value)
    return two, changed


def describe(changed: Dict[str, Any]) -> List[str]:
    """The stage-two flags in full, for the one line printed when it starts."""
    return [f"--{key} {value}" for key, value in changed.items()]


def validation_energy_check(results_path) -> Dict[str, Any]:
    """Stage one's validation errors (stage two's first evaluation, before any step) against those of the
    stage-two epoch MACE keeps (the first lowest validation loss; an epoch retrained after a resume counts
    with its newest row): ``keep_stage_two`` is True when its validation energy MAE is the lower (meV/atom,
    forces meV/Å)."""
    # stage one: the first initial evaluation (a resumed chunk logs its checkpoint's again, later in the file)
    start = next((row for row in iter_mace_results_file(results_path)
                  if row.get("mode") == "eval" and row.get("loss") is not None and row.get("epoch") is None), None)
    latest = dict(validated_rows_in_order(results_path))  # the newest row of each epoch
    if start is None or not latest:
        raise UserInputError(f"{results_path}: no stage-two validation to judge (did stage two run?)")
    kept_epoch = min(sorted(latest), key=lambda epoch: latest[epoch]["loss"])
    kept = latest[kept_epoch]
    one_e, two_e = 1000 * start["mae_e_per_atom"], 1000 * kept["mae_e_per_atom"]
    return {"kept_epoch": kept_epoch, "stage_one_valid_energy_mae_meV_per_atom": one_e,
            "stage_two_valid_energy_mae_meV_per_atom": two_e,
            "stage_one_valid_force_mae_meV_per_A": 1000 * start["mae_f"],
            "stage_two_valid_force_mae_meV_per_A": 1000 * kept["mae_f"], "keep_stage_two": two_e < one_e}


def apply_validation_check(model_dir, name: str, results_path) -> Dict[str, Any]:
    """After stage two of run ``name``: keep ``<name>_stagetwo.model`` if it lowered the validation energy
    MAE, else move it to ``<name>_stagetwo_rejected.model`` and put stage one's model in its place."""
    import shutil

    check = validation_energy_check(results_path)
    folder = Path(model_dir)
    two = folder / f"{stage_two_name(name)}.model"
    if not check["keep_stage_two"]:
        shutil.move(two, folder / f"{stage_two_name(name)}_rejected.model")
        shutil.copyfile(folder / f"{name}.model", two)
    return check
