"""Choices made on validation, never on test: a start's learning rate from a small grid (our MACE
starts and the peers alike), its loss (force:energy weights, stress loss) and the frozen block set of
``transfer_freeze``. Every try is a record
(``<out>/selection/``) and a line of ``<out>/lr_selection/<strategy>.json``, so a cut selection
resumes and the chosen run is reused by the sweep instead of being trained twice."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from mace_transfer.studies.records import write_json


def select_point(block: Optional[Dict[str, Any]], default_n: int = 20) -> Tuple[int, int]:
    """(N, seed) at which a selection is made: the ``select`` entry of ``block`` (``lr_grid``, ``loss_grid``
    or a ``transfer_freeze`` spec), else (``default_n``, 0)."""
    select = (block or {}).get("select", {"n": default_n, "seed": 0})
    return int(select["n"]), int(select["seed"])


def loss_selected(config: Dict[str, Any], strategy: str) -> bool:
    """Whether ``loss_grid`` chooses the loss of ``strategy``: it has options and names the strategy
    (no ``strategies`` list: every strategy of the config)."""
    grid = config.get("loss_grid") or {}
    return bool(grid.get("options")) and strategy in grid.get("strategies", list(config.get("strategies") or {}))


def lr_try_name(strategy: str, lr: float, n_train: int, seed: int) -> str:
    """Record stem (under ``<out>/selection/``) of one ``lr_grid`` try."""
    return f"lr-{strategy}-{float(lr):g}_N{n_train:04d}_s{seed}"


def loss_try_name(strategy: str, tag: str, n_train: int, seed: int) -> str:
    """Record stem of one ``loss_grid`` try."""
    return f"loss-{strategy}-{tag}_N{n_train:04d}_s{seed}"


def freeze_try_name(blocks: str, n_train: int, seed: int) -> str:
    """Record stem of one ``freeze_candidates`` try (the block list with punctuation turned into dashes)."""
    tag = re.sub(r"[^A-Za-z0-9]+", "-", blocks).strip("-")
    return f"freeze-{tag}_N{n_train:04d}_s{seed}"


RULE = "lowest best validation loss (the test error is recorded, not used)"


def choose_lr(out: Path, strategy: str, grid: Sequence[float], n_train: int, seed: int,
              train: Callable[[float, Path], Dict[str, Any]],
              summarise: Callable[[Dict[str, Any]], Dict[str, Any]],
              say: Callable[[str], None] = print) -> float:
    """The grid value whose run at (``n_train``, ``seed``) has the lowest best validation loss.

    ``train(lr, record_path)`` trains one try and returns its record; ``summarise(record)`` is the
    line kept for it (it must hold ``best_valid_loss``). Resumable: finished tries are skipped, a try
    whose record exists (a process cut before it updated the summary) is read, not retrained."""
    path = out / "lr_selection" / f"{strategy}.json"
    entry = json.loads(path.read_text()) if path.is_file() else {}
    entry.update(strategy=strategy, n_train=n_train, seed=seed, grid=[float(v) for v in grid])
    tries = entry.setdefault("tries", {})
    for lr in grid:
        key = f"{float(lr):g}"
        if key in tries:
            continue
        say(f"lr selection: {strategy} lr={key} at N={n_train} seed={seed}")
        record_path = out / "selection" / f"{lr_try_name(strategy, lr, n_train, seed)}.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else train(float(lr), record_path)
        tries[key] = summarise(record)
        write_json(path, entry)
    chosen = min(grid, key=lambda lr: tries[f"{float(lr):g}"]["best_valid_loss"])
    entry.update(chosen=float(chosen), rule=RULE)
    write_json(path, entry)
    return float(chosen)


def selected_run(out: Path, strategy: str, n_train: int, seed: int, freeze: Optional[str] = None,
                 lr: Optional[float] = None, loss_flags: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The selection run (freeze blocks, learning rate or loss) of the chosen setting when it is this
    (N, seed), else None: it is not trained twice."""
    for path in sorted((out / "selection").glob(f"*_N{n_train:04d}_s{seed}.json")):
        record = json.loads(path.read_text())
        if (record.get("strategy") == strategy and record.get("freeze_blocks") == freeze
                and (lr is None or record.get("lr") == lr)
                and (record.get("loss_flags") or {}) == (loss_flags or {})):
            return dict(record, reused_from=str(path))
    return None


LOSS_RULE = ("among the loss options whose validation energy MAE is at most the energy goal, the lowest "
             "validation force MAE; if none reaches the goal, the lowest validation energy MAE "
             "(the test error is recorded, not used)")


def pick_loss(tries: Dict[str, Dict[str, Any]], energy_goal_meV_per_atom: float) -> str:
    """The loss option of :data:`LOSS_RULE` from ``{tag: {"valid_force_mae_meV_per_A",
    "valid_energy_mae_meV_per_atom"}}`` (ties: the first tag)."""
    if not tries:
        raise ValueError("no loss option was tried")
    meeting = [tag for tag, t in tries.items() if t["valid_energy_mae_meV_per_atom"] <= energy_goal_meV_per_atom]
    if meeting:
        return min(meeting, key=lambda tag: tries[tag]["valid_force_mae_meV_per_A"])
    return min(tries, key=lambda tag: tries[tag]["valid_energy_mae_meV_per_atom"])


def choose_loss(out: Path, strategy: str, options: Dict[str, Dict[str, Any]], n_train: int, seed: int,
                energy_goal_meV_per_atom: float,
                train: Callable[[str, Dict[str, Any], Path], Dict[str, Any]],
                validate: Callable[[Dict[str, Any]], Dict[str, float]],
                say: Callable[[str], None] = print) -> str:
    """The tag of ``options`` (``{tag: MACE loss flags}``, e.g. ``forces_weight``, ``energy_weight``,
    ``loss: stress`` with ``stress_weight``) chosen by :func:`pick_loss` at (``n_train``, ``seed``).

    ``train(tag, flags, record_path)`` trains one try (or returns an equal run trained before) and
    returns its record; ``validate(record)`` gives its model's validation force and energy MAE
    (meV/Å, meV/atom). Resumable like :func:`choose_lr`: ``<out>/loss_selection/<strategy>.json``."""
    path = out / "loss_selection" / f"{strategy}.json"
    entry = json.loads(path.read_text()) if path.is_file() else {}
    entry.update(strategy=strategy, n_train=n_train, seed=seed, options=options,
                 energy_goal_meV_per_atom=float(energy_goal_meV_per_atom))
    tries = entry.setdefault("tries", {})
    for tag, flags in options.items():
        if tag in tries and tries[tag].get("flags") == flags:
            continue
        say(f"loss selection: {strategy} {tag} {flags} at N={n_train} seed={seed}")
        record_path = out / "selection" / f"{loss_try_name(strategy, tag, n_train, seed)}.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else train(tag, flags, record_path)
        tries[tag] = dict(validate(record), flags=flags, lr=record.get("lr"),
                          test_force_mae_meV_per_A=record["test"]["force_mae_meV_per_A"],
                          test_energy_mae_meV_per_atom=record["test"]["energy_mae_meV_per_atom"],
                          epochs_run=record.get("epochs_run"), wall_s=record.get("wall_s"),
                          record=record.get("reused_from") or str(record_path))
        write_json(path, entry)
    chosen = pick_loss({tag: tries[tag] for tag in options}, energy_goal_meV_per_atom)
    entry.update(chosen=chosen, rule=LOSS_RULE)
    write_json(path, entry)
    say(f"loss selection: {strategy} -> {chosen} {options[chosen]}")
    return chosen
