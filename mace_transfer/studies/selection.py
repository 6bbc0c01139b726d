"""Choices made on validation, never on test: a start's learning rate from a small grid (our MACE
starts and the peers alike) and the frozen block set of ``transfer_freeze``. Every try is a record
(``<out>/selection/``) and a line of ``<out>/lr_selection/<strategy>.json``, so a cut selection
resumes and the chosen run is reused by the sweep instead of being trained twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from mace_transfer.studies.records import write_json

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
        record_path = out / "selection" / f"lr-{strategy}-{key}_N{n_train:04d}_s{seed}.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else train(float(lr), record_path)
        tries[key] = summarise(record)
        write_json(path, entry)
    chosen = min(grid, key=lambda lr: tries[f"{float(lr):g}"]["best_valid_loss"])
    entry.update(chosen=float(chosen), rule=RULE)
    write_json(path, entry)
    return float(chosen)


def selected_run(out: Path, strategy: str, n_train: int, seed: int, freeze: Optional[str] = None,
                 lr: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The selection run (freeze blocks or learning rate) of the chosen setting when it is this
    (N, seed), else None: it is not trained twice."""
    for path in sorted((out / "selection").glob(f"*_N{n_train:04d}_s{seed}.json")):
        record = json.loads(path.read_text())
        if (record.get("strategy") == strategy and record.get("freeze_blocks") == freeze
                and (lr is None or record.get("lr") == lr)):
            return dict(record, reused_from=str(path))
    return None
