"""What a study has done and what it still needs (``mace_transfer_learning_curve --plan``; trains nothing).

Per (strategy, N, seed) of the requested grid: ``done`` (a record: its test errors and wall time),
``parked`` (cut in an earlier session, under ``<out>/partial/``: the wall time trained so far), ``started``
(a work folder with a checkpoint and no record: a run cut in this checkout, or one training now) or ``to
train``. Each unfinished run gets a wall-time guess from the study's own finished runs
(:func:`guess_wall_s`), so a user can size a session (or a GPU loan) before starting one. Reads records
and folders only. Selection tries still to train (``lr_grid``, ``loss_grid``, ``transfer_freeze``'s
``freeze_candidates``; :func:`selection_plan`) come first, as the sweep trains them first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mace_transfer.studies import parking
from mace_transfer.studies.selection import (freeze_try_name, loss_selected, loss_try_name, lr_try_name,
                                             select_point)
from mace_transfer.studies.config import run_name, seeds_at_size
from mace_transfer.studies.records import load_runs
from mace_transfer.studies.starts import _fmt_time

Walls = Dict[Tuple[str, int], List[float]]


def finished_walls(records: Sequence[Dict[str, Any]]) -> Walls:
    """{(strategy, N): [wall seconds of each finished seed]} of a study's records."""
    walls: Walls = {}
    for record in records:
        if record.get("wall_s") is not None:
            walls.setdefault((record["strategy"], int(record["n_train"])), []).append(float(record["wall_s"]))
    return walls


def guess_wall_s(walls: Walls, strategy: str, n_train: int) -> Tuple[Optional[float], str]:
    """Wall seconds one more run of ``strategy`` at ``n_train`` should take, and where the guess comes from:
    the mean of the finished seeds at that (strategy, N); else the same strategy at the nearest N on a log
    scale (mean over its seeds); else the mean of every start at that N; else of every finished run.
    ``(None, "no finished run")`` for a study with no records."""
    if walls.get((strategy, n_train)):
        return float(np.mean(walls[(strategy, n_train)])), f"{strategy} N={n_train}"
    same = [n for s, n in walls if s == strategy]
    if same:
        nearest = min(same, key=lambda n: (abs(math.log(n) - math.log(n_train)), n))
        return float(np.mean(walls[(strategy, nearest)])), f"{strategy} N={nearest}"
    same_n = [w for (s, n), ws in walls.items() if n == n_train for w in ws]
    if same_n:
        return float(np.mean(same_n)), f"every start at N={n_train}"
    every = [w for ws in walls.values() for w in ws]
    if every:
        return float(np.mean(every)), "every finished run"
    return None, "no finished run"


def _unfinished_row(out: Path, work: Path, walls: Walls, strategy: str, n_train: int, seed: int,
                    name: str) -> Dict[str, Any]:
    """A row for a run without a record: started (checkpoint in ``work``), parked or to train, with its guess."""
    row: Dict[str, Any] = {"strategy": strategy, "n_train": int(n_train), "seed": int(seed), "name": name}
    folder, parked = work / name, out / parking.PARKED / name
    if parking.checkpoints(folder):
        row.update(status="started", trained_s=parking.chunks_wall(folder))
    elif parking.checkpoints(parked):
        row.update(status="parked", trained_s=parking.chunks_wall(parked))
    else:
        row.update(status="to train", trained_s=0.0)
    guess, source = guess_wall_s(walls, strategy, int(n_train))
    row.update(guess_from=source, left_s=None if guess is None else max(0.0, guess - row["trained_s"]))
    return row


def _tried(path: Path, key: str) -> Dict[str, Any]:
    """The ``key`` entry (``tries`` or ``candidates``) of a selection summary file, ``{}`` when absent."""
    return (json.loads(path.read_text()).get(key) or {}) if path.is_file() else {}


def selection_plan(out, work, config: Dict[str, Any], strategies: Sequence[str]) -> List[Dict[str, Any]]:
    """The selection tries ``strategies`` still need before their sweep runs (``status`` started, parked or
    to train, named as their records under ``<out>/selection/``; ``becomes_run``: the chosen try will be the
    sweep's run at that N and seed): each ``lr_grid`` value, each ``loss_grid``
    option (but ``{}`` where the sweep's own run at that N and seed is done: it is reused) and, for
    ``transfer_freeze`` without fixed ``freeze_blocks``, each of its ``freeze_candidates``. Tries already
    summarised or recorded are left out."""
    out, work = Path(out), Path(work)
    walls = finished_walls(load_runs(out))
    tries = []  # (strategy, n, seed, name, done, becomes the sweep's run at that N and seed)
    lr_grid = config.get("lr_grid") or {}
    loss_grid = config.get("loss_grid") or {}
    for strategy in strategies:
        n_train, seed = select_point(lr_grid)
        done = _tried(out / "lr_selection" / f"{strategy}.json", "tries")
        by_loss = loss_selected(config, strategy)
        for lr in lr_grid.get(strategy) or []:
            key = f"{float(lr):g}"  # the chosen try is the sweep's run unless a loss choice may change its loss
            tries.append((strategy, n_train, seed, lr_try_name(strategy, lr, n_train, seed), key in done,
                          not by_loss))
        if by_loss:
            n_train, seed = select_point(loss_grid)
            done = _tried(out / "loss_selection" / f"{strategy}.json", "tries")
            own_run = (out / "records" / f"{run_name(strategy, n_train, seed)}.json").is_file()
            for tag, flags in loss_grid["options"].items():
                reused = not flags and own_run
                finished = reused or (tag in done and done[tag].get("flags") == flags)
                tries.append((strategy, n_train, seed, loss_try_name(strategy, tag, n_train, seed), finished, True))
    spec = (config.get("strategies") or {}).get("transfer_freeze") or {}
    if "transfer_freeze" in strategies and not spec.get("freeze_blocks"):
        n_train, seed = select_point(spec, default_n=10)
        done = _tried(out / "freeze_selection.json", "candidates")
        for blocks in spec.get("freeze_candidates") or []:
            tries.append(("transfer_freeze", n_train, seed, freeze_try_name(blocks, n_train, seed), blocks in done,
                          True))
    return [dict(_unfinished_row(out, work, walls, strategy, n_train, seed, name), becomes_run=becomes)
            for strategy, n_train, seed, name, done, becomes in tries
            if not done and not (out / "selection" / f"{name}.json").is_file()]


def study_plan(out, work, sizes: Sequence[int], seeds: Sequence[int],
               strategies: Sequence[str], seeds_above=None) -> List[Dict[str, Any]]:
    """One row per (strategy, N, seed), N ascending as the sweep trains them (the seeds at each N as the
    config's ``seeds_above`` allows, :func:`~mace_transfer.studies.config.seeds_at_size`): ``status``, the record's
    test errors (done), ``trained_s`` (parked, started) and ``left_s`` (the guess less what was trained,
    never below 0) with ``guess_from``."""
    out, work = Path(out), Path(work)
    records = {r["name"]: r for r in load_runs(out) if "name" in r}
    walls = finished_walls(records.values())
    rows = []
    for n_train in sizes:
        for seed in seeds_at_size(seeds_above, int(n_train), seeds):
            for strategy in strategies:
                name = run_name(strategy, int(n_train), int(seed))
                row: Dict[str, Any] = {"strategy": strategy, "n_train": int(n_train), "seed": int(seed),
                                       "name": name}
                record = records.get(name)  # load_runs read <out>/records/<name>.json
                if record is not None:
                    test = record.get("test") or {}
                    row.update(status="done", wall_s=record.get("wall_s"),
                               force_mae_meV_per_A=test.get("force_mae_meV_per_A"),
                               energy_mae_meV_per_atom=test.get("energy_mae_meV_per_atom"))
                    rows.append(row)
                    continue
                rows.append(_unfinished_row(out, work, walls, strategy, int(n_train), int(seed), name))
    return rows


def full_plan(out, work, config: Dict[str, Any], sizes: Sequence[int], seeds: Sequence[int],
              strategies: Sequence[str]) -> List[Dict[str, Any]]:
    """:func:`selection_plan`'s tries, then :func:`study_plan`'s runs, less the runs a pending try will
    become (the sweep reuses the chosen try at its selection N and seed: a loss or freeze try always, an lr
    try where no loss choice follows), so no run is counted twice."""
    tries = selection_plan(out, work, config, strategies)
    pending = {(row["strategy"], row["n_train"], row["seed"]) for row in tries if row["becomes_run"]}
    runs = study_plan(out, work, sizes, seeds, strategies, config.get("seeds_above"))
    return tries + [row for row in runs
                    if row["status"] != "to train" or (row["strategy"], row["n_train"], row["seed"]) not in pending]


def _time(seconds: Optional[float]) -> str:
    """The sweep's time format (:func:`starts._fmt_time`); ``?`` where no guess exists."""
    return "?" if seconds is None else _fmt_time(seconds)


def format_plan(rows: Sequence[Dict[str, Any]], title: str = "") -> str:
    """The plan as aligned text: one line per run, then the totals (hours at one process per run)."""
    lines = [title] if title else []
    width = max([28] + [len(row["name"]) for row in rows])
    lines.append(f"{'run':{width}s} {'status':9s} detail")
    for row in rows:
        if row["status"] == "done":
            detail = (f"{row['force_mae_meV_per_A']:.1f} meV/Å, {row['energy_mae_meV_per_atom']:.2f} meV/atom, "
                      f"{_time(row['wall_s'])}")
        else:
            trained = f"{_time(row['trained_s'])} trained, " if row["trained_s"] else ""
            detail = f"{trained}~{_time(row['left_s'])} left (guess from {row['guess_from']})"
        lines.append(f"{row['name']:{width}s} {row['status']:9s} {detail}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "parked", "started", "to train")}
    left = [r["left_s"] for r in rows if r["status"] != "done"]
    total = None if any(s is None for s in left) else sum(left)
    lines.append(", ".join(f"{k} {v}" for k, v in counts.items())
                 + f"; ~{_time(total)} of training left at one process per run (guesses from this study's "
                 "finished runs on this machine)")
    return "\n".join(lines)
