"""Learning curves: target-element MACE models initialised from a source model vs from scratch.

Reproduces the set-up of Röcken & Zavadlav (arXiv 2502.13522), on Stillinger-Weber data
(``configs/learning_curve_sw.yaml``) or PBE data (``configs/learning_curve_pbe.yaml``):

1. one Si source model (trained once on ``data.source``, cached under ``<out>/source/``);
2. zero-shot test errors of the remapped model (Si weights read as Ge), with and without the
   corresponding-states rescale (s, k estimated on the validation set);
3. for ``transfer_freeze``: each candidate block set trained at one small N; the lowest
   *validation* force RMSE wins (``<out>/freeze_selection.json``);
4. the sweep: N (sizes) x seeds x strategies; each run writes ``<out>/records/<name>.json`` (test force
   MAE/RMSE meV/Å, energy MAE meV/atom, wall seconds, epochs run, best epoch, validation curve)
   and is skipped when that file exists;
5. optional: ``--md`` (MD stability, a0 and B vs ``md.reference``, SW-Ge by default, for the
   ``md.seeds`` runs) and
   ``--timing`` (``mace_transfer_train`` vs MACE's own ``run_train`` per epoch);
6. ``summary.json``, ``summary.md``, ``learning_curve.png`` (and ``stability.png``) from every
   finished run.

Validation set: ``n_valid`` configurations of ``data.target`` drawn once (``valid_seed``), the same
for every N, seed and strategy. Training subsets are nested: for seed s the rest of the pool is
shuffled once with s and the first N are taken, so N=5 is inside N=10 for the same seed. The seed
is also MACE's ``--seed``. ``data.extra_train`` (optional): configurations added to every run's
training set, not counted in N and never in validation (e.g. close-pair cells for the short-range
wall, ``scripts/make_close_pairs.py``).

Strategies: ``scratch``; ``transfer`` (remap the source, fine-tune); ``transfer_freeze`` (+ a
frozen block set); ``transfer_rescale`` (+ corresponding-states s, k); ``mace_freeze`` (MACE's own
``--freeze N`` on the remapped file as ``--foundation_model``); ``classical_pretrain`` (a target
model trained once on ``data.classical``, a classical potential's labels, then re-referenced to
the target E0s and fine-tuned; only meaningful when the target labels are not classical).

Usage (also a pipeline stage, ``kind: learning_curve``)::

    mace_transfer_learning_curve --config configs/learning_curve_sw.yaml \
        [--out DIR] [--sizes 5,10,25] [--seeds 0,1] [--strategies scratch,transfer] \
        [--max-runs N] [--md] [--timing] [--report-only]

Architecture: floor 3 beside :mod:`mace_transfer.pipeline` (whose YAML, MACE-results and argv
helpers it uses); every training goes through :mod:`mace_transfer.train`.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError

STRATEGIES = ("scratch", "transfer", "transfer_freeze", "transfer_rescale", "mace_freeze",
              "classical_pretrain")
INITS = ("scratch", "remap", "foundation", "classical")
#: per-run records live in <out>/records/ (not "runs/": the repository's .gitignore ignores runs/)
RECORDS = "records"
METRICS = ("force_mae_meV_per_A", "force_rmse_meV_per_A", "energy_mae_meV_per_atom",
           "energy_rmse_meV_per_atom")


# ----------------------------------------------------------------------------- config
def load_config(path) -> Dict[str, Any]:
    """Read and check the learning-curve YAML (see configs/learning_curve_sw.yaml)."""
    from mace_transfer.pipeline import read_yaml_mapping

    path = Path(path)
    config = read_yaml_mapping(path)
    if "base" in config:  # another study's config, these keys overriding (mappings merged key by key)
        base_path = Path(config.pop("base"))
        if base_path.resolve() == path.resolve():
            raise UserInputError(f"{path}: 'base' names the file itself")
        config = _merged(load_config(base_path), config)
    for key in ("data", "mace", "strategies", "sizes", "seeds", "budget", "element_map"):
        if key not in config:
            raise UserInputError(f"{path}: missing {key!r}")
    for key in ("source", "target", "test"):
        if key not in config["data"]:
            raise UserInputError(f"{path}: data needs {key!r}")
    for name, spec in config["strategies"].items():
        if name not in STRATEGIES:
            raise UserInputError(f"{path}: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        if "lr" not in (spec or {}):
            raise UserInputError(f"{path}: strategy {name!r} needs an 'lr'")
        if spec.get("init", "scratch") not in INITS:
            raise UserInputError(f"{path}: strategy {name!r}: init must be one of {', '.join(INITS)}")
        if spec.get("init") == "classical" and "classical" not in config["data"]:
            raise UserInputError(f"{path}: strategy {name!r} starts from a classical model: "
                                 "data needs 'classical' (target-element labels of a classical potential)")
    config.setdefault("out", "docs/results/sw")
    config.setdefault("work", "runs/learning_curve_sw")
    config.setdefault("n_valid", 20)
    config.setdefault("valid_seed", 1234)
    config.setdefault("target_E0s", "{32: 0.0}")
    config.setdefault("threads", 1)
    config.setdefault("source", {})
    return config


def _merged(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` updated by ``override``; nested mappings merged, ``null`` removes a key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
            continue
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def epochs_for(n_train: int, batch_size: int, budget: Dict[str, Any]) -> int:
    """Epoch budget at training size N: about ``steps`` optimizer steps, clipped to the limits."""
    if "epochs" in budget:
        return int(budget["epochs"])
    steps_per_epoch = math.ceil(n_train / batch_size)
    wanted = math.ceil(int(budget.get("steps", 200)) / steps_per_epoch)
    return int(min(int(budget.get("max_epochs", 100)), max(int(budget.get("min_epochs", 1)), wanted)))


def run_name(strategy: str, n_train: int, seed: int) -> str:
    return f"{strategy}_N{n_train:04d}_s{seed}"


# ----------------------------------------------------------------------------- data
def read_frames(path) -> list:
    """Configurations of an extxyz file without IsolatedAtom frames (E0s come from the config)."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"data file not found: {path}")
    frames = [a for a in read(path, ":") if a.info.get("config_type") != "IsolatedAtom"]
    if not frames:
        raise UserInputError(f"{path} holds no configurations")
    return frames


def split_target(n_frames: int, n_valid: int, valid_seed: int):
    """(validation indices, training-pool indices): one fixed shuffle with ``valid_seed``."""
    if n_valid >= n_frames:
        raise UserInputError(f"n_valid={n_valid} leaves no training pool ({n_frames} configurations)")
    order = list(range(n_frames))
    random.Random(valid_seed).shuffle(order)
    return sorted(order[:n_valid]), order[n_valid:]


def training_indices(pool: Sequence[int], n_train: int, seed: int) -> List[int]:
    """The first N of the pool shuffled with ``seed``: nested in N for one seed."""
    if n_train > len(pool):
        raise UserInputError(f"N={n_train} is larger than the training pool ({len(pool)})")
    order = list(pool)
    random.Random(seed).shuffle(order)
    return order[:n_train]


# ----------------------------------------------------------------------------- MACE results
def read_results(results_dir) -> Dict[str, Any]:
    """Validation curve and step times from MACE's ``*_train.txt`` (one JSON object a line).

    ``epoch``/``valid_rmse_f_meV_A``/``valid_mae_f_meV_A``/``valid_loss`` per validated epoch;
    ``train_step_s`` = summed optimizer-step seconds per epoch; ``initial_*`` before training.
    """
    from mace_transfer.pipeline import iter_mace_results

    curve: Dict[str, Any] = {"epoch": [], "valid_rmse_f_meV_A": [], "valid_mae_f_meV_A": [],
                             "valid_loss": [], "initial_valid_rmse_f_meV_A": None}
    steps: Dict[int, float] = {}
    for row in iter_mace_results(results_dir):
        if row.get("mode") == "opt" and row.get("epoch") is not None:
            steps[int(row["epoch"])] = steps.get(int(row["epoch"]), 0.0) + float(row.get("time", 0.0))
        elif row.get("mode") == "eval":
            rmse = 1000.0 * float(row["rmse_f"]) if row.get("rmse_f") is not None else None
            if row.get("epoch") is None:
                curve["initial_valid_rmse_f_meV_A"] = rmse
                continue
            curve["epoch"].append(int(row["epoch"]))
            curve["valid_rmse_f_meV_A"].append(rmse)
            curve["valid_mae_f_meV_A"].append(
                1000.0 * float(row["mae_f"]) if row.get("mae_f") is not None else None)
            curve["valid_loss"].append(float(row["loss"]) if row.get("loss") is not None else None)
    curve["train_step_s"] = [steps.get(e, 0.0) for e in curve["epoch"]]
    return curve


def best_epoch(curve: Dict[str, Any]) -> Optional[int]:
    """The epoch MACE keeps: lowest validation loss (the first one on ties)."""
    losses = [(loss, i) for i, loss in enumerate(curve["valid_loss"]) if loss is not None]
    return curve["epoch"][min(losses)[1]] if losses else None


def valid_rmse_at(curve: Dict[str, Any], epoch: Optional[int]) -> Optional[float]:
    if epoch is None or epoch not in curve["epoch"]:
        return None
    return curve["valid_rmse_f_meV_A"][curve["epoch"].index(epoch)]


def time_to_reach(curve: Dict[str, Any], target: float) -> Optional[Dict[str, float]]:
    """First epoch whose validation force RMSE (meV/Å) is <= target; epochs and step seconds."""
    elapsed = 0.0
    if curve.get("initial_valid_rmse_f_meV_A") is not None and curve["initial_valid_rmse_f_meV_A"] <= target:
        return {"epochs": 0, "train_step_s": 0.0}
    for epoch, rmse, seconds in zip(curve["epoch"], curve["valid_rmse_f_meV_A"], curve["train_step_s"]):
        elapsed += seconds
        if rmse is not None and rmse <= target:
            return {"epochs": epoch + 1, "train_step_s": elapsed}
    return None


# ----------------------------------------------------------------------------- bookkeeping
def load_runs(out) -> List[Dict[str, Any]]:
    """Every finished run's record under ``<out>/records/``."""
    records = []
    for path in sorted((Path(out) / RECORDS).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            print(f"warning: {path} is not JSON, ignored", file=sys.stderr)
    return records


def write_json(path, data) -> None:
    """Write atomically (temp file + rename), so a cut run never leaves half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    os.replace(tmp, path)


def _stats(values: Sequence[float]) -> Dict[str, Any]:
    """mean, std (sample, ddof=1; 0 for one value), min, max, n of the finite values."""
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if vals.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "n": int(vals.size)}


def aggregate(records: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """{strategy: {N (str): {metric: stats over seeds}}}, test metrics plus wall/epochs/reach."""
    table: Dict[str, Dict[str, Dict[str, Any]]] = {}
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["strategy"], int(rec["n_train"])), []).append(rec)
    for (strategy, n_train), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        entry: Dict[str, Any] = {"seeds": sorted(int(r["seed"]) for r in recs)}
        for metric in METRICS:
            entry[metric] = _stats([r["test"].get(metric) for r in recs])
        for key in ("wall_s", "epochs_run", "best_epoch", "best_valid_rmse_f_meV_A"):
            entry[key] = _stats([r.get(key) for r in recs])
        reached = [r.get("reach_scratch") for r in recs if "reach_scratch" in r]
        if reached:
            entry["reach_scratch"] = {
                "reached": sum(x is not None for x in reached), "of": len(reached),
                "epochs": _stats([x["epochs"] for x in reached if x is not None]),
                "train_step_s": _stats([x["train_step_s"] for x in reached if x is not None])}
        for group in ("per_config_type", "per_length_scale"):  # test force MAE by part of the test set
            parts = sorted({k for r in recs for k in (r.get(f"test_{group}") or {})})
            if parts:
                entry[f"force_mae_{group}"] = {k: _stats([(r.get(f"test_{group}") or {}).get(k, {}).get(
                    "force_mae_meV_per_A") for r in recs]) for k in parts}
        table.setdefault(strategy, {})[str(n_train)] = entry
    return table


def attach_reach_scratch(records: Sequence[Dict[str, Any]]) -> None:
    """Per run: epochs/step seconds to reach scratch's final validation force RMSE (same N, seed)."""
    final = {(int(r["n_train"]), int(r["seed"])): r.get("best_valid_rmse_f_meV_A")
             for r in records if r["strategy"] == "scratch"}
    for rec in records:
        target = final.get((int(rec["n_train"]), int(rec["seed"])))
        if target is None:
            rec.pop("reach_scratch", None)
            continue
        rec["reach_scratch"] = time_to_reach(rec["curve"], target)
        rec["reach_scratch_target_meV_A"] = target


# ----------------------------------------------------------------------------- machine
def machine_info(threads: int) -> Dict[str, Any]:
    """nproc, CPU model, load average, torch threads and versions, for the results file."""
    import torch

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import mace

    return {"nproc": os.cpu_count(), "cpu_model": model or platform.processor(),
            "load_average_1_5_15": list(os.getloadavg()), "torch_threads": threads,
            "torch": torch.__version__, "mace": getattr(mace, "__version__", "?"),
            "python": platform.python_version(), "host": platform.node()}


# ----------------------------------------------------------------------------- MACE calls
@contextlib.contextmanager
def mace_quiet(log_path: Path):
    """Send MACE's console logging and warnings to ``log_path``; undo MACE's global changes.

    MACE's ``run`` adds handlers to the root logger on every call and sets torch's default dtype;
    both are restored here so many runs can share one process.
    """
    import torch

    root = logging.getLogger()
    handlers, filters, level = list(root.handlers), list(root.filters), root.level
    dtype = torch.get_default_dtype()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for handler in handlers:  # e.g. a basicConfig handler: it would echo MACE's DEBUG lines
        root.removeHandler(handler)
    with open(log_path, "a") as stream, contextlib.redirect_stdout(stream), \
            contextlib.redirect_stderr(stream), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
            for handler in handlers:
                root.addHandler(handler)
            root.filters = filters
            root.setLevel(level)
            torch.set_default_dtype(dtype)


def run_dirs(folder: Path, name: str) -> Dict[str, str]:
    return {"name": name, "model_dir": str(folder), "checkpoints_dir": str(folder / "checkpoints"),
            "results_dir": str(folder / "results"), "log_dir": str(folder / "logs")}


def model_errors(model_path, frames, groups: bool = False) -> Dict[str, Any]:
    """Overall test errors (meV/Å, meV/atom) of a .model file on ``frames``.

    ``groups``: instead ``{"overall", "per_config_type", "per_length_scale"}``, the last keyed by the
    frames' ``length_scale`` (1 = the cell as sampled; see ``dft.scale_lengths``), only when they differ.
    """
    from mace_transfer import evaluate

    def trimmed(stats):
        return {k: stats[k] for k in METRICS}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = evaluate.load_model(model_path)
        by_scale = (lambda a: f"{float(a.info.get('length_scale', 1.0)):.6g}") if groups else None
        errors = evaluate.test_errors(model.calc, frames, progress=False, group_by=by_scale)
    if not groups:
        return errors["overall"]
    per_scale = errors["per_group"] if len(errors["per_group"]) > 1 else {}
    return {"overall": trimmed(errors["overall"]),
            "per_config_type": {k: trimmed(v) for k, v in errors["per_config_type"].items()},
            "per_length_scale": {k: trimmed(v) for k, v in per_scale.items()}}


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _frames_sha256(frames) -> str:
    """SHA-256 of the labels and geometry of ``frames`` (for a prefix of a growing file)."""
    import hashlib

    digest = hashlib.sha256()
    for atoms in frames:
        forces = atoms.arrays.get("REF_forces")
        for array in (atoms.numbers, atoms.positions, atoms.cell.array, forces if forces is not None else ()):
            digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
        digest.update(repr(atoms.info.get("REF_energy")).encode())
    return digest.hexdigest()


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# ----------------------------------------------------------------------------- the sweep
class Sweep:
    """One learning-curve study: source model, zero-shot, selection, runs, extras, report."""

    def __init__(self, config: Dict[str, Any], out=None, work=None, progress=print):
        self.config = config
        self.out = Path(out or config["out"])
        self.work = Path(work or config["work"])
        self.say = progress
        self.threads = int(config.get("threads", 1))
        self._frames: Dict[str, list] = {}
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------------------- data
    def target_symbol(self) -> str:
        """The target element of ``element_map`` ("Si:Ge" -> "Ge")."""
        return self.config["element_map"].split(":")[-1].strip()

    def data_paths(self, key: str) -> List[Path]:
        """``data[key]`` as a list of files (one path or a list of paths, read in order)."""
        value = self.config["data"][key]
        paths = [value] if isinstance(value, (str, os.PathLike)) else list(value or [])
        if not paths:
            raise UserInputError(f"data.{key} names no file")
        return [Path(p) for p in paths]

    def frames(self, key: str) -> list:
        """The configurations of ``data[key]`` (one file or several, concatenated in order).

        ``data.limits[key]``: an int keeps the first K configurations of the concatenation, a list
        the first K_i of file i (``null``: all of it). A file still being labelled can then serve a
        study: its first K frames never change. Isolated-atom frames are never counted.
        ``data.config_types[key]``: then only frames of these ``config_type`` (after the limits)."""
        if key not in self._frames:
            paths = self.data_paths(key)
            limit = (self.config["data"].get("limits") or {}).get(key)
            per_file = limit if isinstance(limit, (list, tuple)) else [None] * len(paths)
            if len(per_file) != len(paths):
                raise UserInputError(f"data.limits.{key} has {len(per_file)} entries for {len(paths)} files")
            frames = []
            for path, k in zip(paths, per_file):
                part = read_frames(path)
                if k is not None:
                    if len(part) < int(k):
                        raise UserInputError(f"{path} has {len(part)} configurations (isolated-atom frames "
                                             f"not counted), data.limits.{key} asks for {k}")
                    part = part[: int(k)]
                frames.extend(part)
            if limit is not None and not isinstance(limit, (list, tuple)):
                if len(frames) < int(limit):
                    raise UserInputError(f"{', '.join(map(str, paths))} has {len(frames)} configurations "
                                         f"(isolated-atom frames not counted), data.limits.{key} asks "
                                         f"for {limit}")
                frames = frames[: int(limit)]
            kinds = (self.config["data"].get("config_types") or {}).get(key)
            if kinds is not None:  # e.g. train on low-temperature cells only, test on all
                present = {str(a.info.get("config_type", "Default")) for a in frames}
                unknown = sorted(set(kinds) - present)
                if unknown:
                    raise UserInputError(f"data.config_types.{key}: {', '.join(unknown)} not in "
                                         f"{', '.join(map(str, paths))} (it has {', '.join(sorted(present))})")
                frames = [a for a in frames if str(a.info.get("config_type", "Default")) in set(kinds)]
            self._frames[key] = frames
        return self._frames[key]

    def split(self):
        return split_target(len(self.frames("target")), int(self.config["n_valid"]),
                            int(self.config["valid_seed"]))

    def check_data(self) -> Dict[str, Any]:
        """Record the SHA-256 of the target and test files in ``<out>/data.json``; a resumed
        sweep whose files changed since is refused (its runs would mix two data sets)."""
        current = {}
        for key in ("target", "test") + (("extra_train",) if self.config["data"].get("extra_train") else ()):
            paths = self.data_paths(key)
            for path in paths:
                if not path.is_file():
                    raise UserInputError(f"data file not found: {path}")
            limited = (self.config["data"].get("limits") or {}).get(key) is not None
            filtered = (self.config["data"].get("config_types") or {}).get(key) is not None
            if limited or filtered:  # the frames used, not the files
                digest = _frames_sha256(self.frames(key))
            elif len(paths) == 1:
                digest = _sha256(paths[0])
            else:
                digest = _sha256_text(" ".join(_sha256(p) for p in paths))
            current[key] = {"path": ", ".join(map(str, paths)), "configurations": len(self.frames(key)),
                            "sha256": digest}
        record = self.out / "data.json"
        if record.is_file():
            before = json.loads(record.read_text())
            changed = [k for k in current if before.get(k, {}).get("sha256") != current[k]["sha256"]]
            if changed and load_runs(self.out):
                raise UserInputError(
                    f"{', '.join(current[k]['path'] for k in changed)} changed since the finished runs in "
                    f"{self.out} were made ({record}); use a new --out or restore the data")
        write_json(record, current)
        return current

    def extra_train_frames(self) -> list:
        """The ``data.extra_train`` configurations (none when the key is absent)."""
        return self.frames("extra_train") if self.config["data"].get("extra_train") else []

    def valid_frames(self) -> list:
        target = self.frames("target")
        return [target[i] for i in self.split()[0]]

    def sizes(self, requested: Optional[Sequence[int]] = None) -> List[int]:
        pool = len(self.split()[1])
        sizes = [int(n) for n in (requested or self.config["sizes"])]
        dropped = [n for n in sizes if n > pool]
        if dropped:
            self.say(f"note: N={','.join(map(str, dropped))} dropped: the training pool has {pool} configurations")
        return [n for n in sizes if n <= pool]

    def write_subset(self, folder: Path, n_train: int, seed: int) -> Dict[str, Any]:
        from ase.io import write

        target = self.frames("target")
        valid_idx, pool = self.split()
        train_idx = training_indices(pool, n_train, seed)
        folder.mkdir(parents=True, exist_ok=True)
        extra = self.extra_train_frames()
        write(folder / "train.xyz", [target[i] for i in train_idx] + list(extra), format="extxyz")
        write(folder / "valid.xyz", [target[i] for i in valid_idx], format="extxyz")
        return {"train_file": str(folder / "train.xyz"), "valid_file": str(folder / "valid.xyz"),
                "train_indices": train_idx, "n_extra_train": len(extra)}

    # -------------------------------------------------------------- MACE
    def _train(self, options: Dict[str, Any], folder: Path, use_mace_directly: bool = False) -> float:
        """Train with ``options`` (MACE + our flags); returns wall seconds."""
        import torch

        from mace_transfer import train
        from mace_transfer.pipeline import mace_argv

        torch.set_num_threads(self.threads)
        if options.get("device", "cpu") == "auto":  # the same config on a laptop and a GPU node
            options = dict(options, device="cuda" if torch.cuda.is_available() else "cpu")
        start = time.time()
        with mace_quiet(folder / "console.log"):
            if use_mace_directly:  # the plain mace_run_train path, for the timing comparison only
                from mace.tools import build_default_arg_parser

                train.run_mace_only(mace_argv(options, build_default_arg_parser()))
            else:
                argv = mace_argv(options)
                (folder / "argv.json").write_text(json.dumps(argv, indent=1))
                train.run(train.parse_args(argv))
        return time.time() - start

    def source_model(self) -> Path:
        """The source model: ``source.model`` if given, else trained once into ``source.cache``."""
        return self._trained_once("source", "source/si.model")

    def classical_model(self) -> Path:
        """A target-element model trained once on ``data.classical`` (``classical.cache``)."""
        return self._trained_once("classical", "classical/classical.model")

    def _trained_once(self, key: str, default_cache: str) -> Path:
        spec = self.config.get(key, {}) or {}
        if spec.get("model"):
            path = Path(spec["model"])
            if not path.is_file():
                raise UserInputError(f"{key}.model {path} does not exist")
            return path
        path = self.out / spec.get("cache", default_cache)
        if path.is_file():
            return path
        from ase.io import write

        frames = self.frames(key)
        n_valid = int(spec.get("n_valid", max(1, len(frames) // 10)))
        order = list(range(len(frames)))
        random.Random(int(spec.get("seed", 1))).shuffle(order)
        folder = self.work / key
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        write(folder / "train.xyz", [frames[i] for i in order[n_valid:]], format="extxyz")
        write(folder / "valid.xyz", [frames[i] for i in order[:n_valid]], format="extxyz")
        options = dict(self.config["mace"])
        options.update(spec.get("mace", {}))
        name = Path(default_cache).stem
        options.update(train_file=str(folder / "train.xyz"), valid_file=str(folder / "valid.xyz"),
                       seed=int(spec.get("seed", 1)), **run_dirs(folder, name))
        self.say(f"{key}: training a model on {len(frames) - n_valid} configurations of "
                 f"{', '.join(map(str, self.data_paths(key)))} "
                 f"({n_valid} validation)")
        wall = self._train(options, folder)
        curve = read_results(folder / "results")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f"{name}.model", path)
        epoch = best_epoch(curve)
        write_json(path.with_suffix(".json"), {
            "n_train": len(frames) - n_valid, "n_valid": n_valid, "wall_s": wall,
            "epochs_run": len(curve["epoch"]), "best_epoch": epoch,
            "best_valid_rmse_f_meV_A": valid_rmse_at(curve, epoch), "curve": curve,
            "data": self.config["data"][key], "machine": machine_info(self.threads),
            "train_xyz_sha256": _sha256(folder / "train.xyz"), "valid_xyz_sha256": _sha256(folder / "valid.xyz")})
        self.say(f"{key}: done in {_fmt_time(wall)}, valid force RMSE "
                 f"{valid_rmse_at(curve, epoch):.1f} meV/Å -> {path}")
        return path

    def remapped_model(self, length_scale: float = 1.0, energy_scale: float = 1.0,
                       tag: str = "") -> Path:
        """The source model remapped (replace) to the target element, cached in ``work``."""
        import torch

        from mace_transfer import remap, train

        # the scales are part of the cache key: a changed estimate must not reuse an old file
        scales = "" if (length_scale, energy_scale) == (1.0, 1.0) else f"_s{length_scale:.6f}_k{energy_scale:.6f}"
        path = self.work / f"remapped{tag}{scales}.model"
        if path.is_file():
            return path
        model = remap.load_model(self.source_model())
        new = remap.remap_elements(model, self.config["element_map"], mode="replace",
                                   atomic_energies=train._parse_e0s(self.config["target_E0s"]),
                                   length_scale=length_scale, energy_scale=energy_scale)
        torch.save(new, path)
        return path

    # -------------------------------------------------------------- zero-shot
    def zero_shot(self) -> Dict[str, Any]:
        """Test errors of the remapped source model before any target training (± rescale)."""
        path = self.out / "zero_shot.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
        known = self.config.get("known_scales")  # e.g. the SW parameter ratios sigma, epsilon
        classical = any((spec or {}).get("init") == "classical" for spec in self.config["strategies"].values())
        if ("remap" in result and (not known or "remap_rescale_known" in result)
                and (not classical or "classical" in result)):
            return result
        from mace_transfer import remap

        self.say("zero-shot: remapped source model on the test set")
        if "remap" not in result:
            model = remap.load_model(self.source_model())
            scales = remap.estimate_corresponding_states(
                model, self.config["element_map"], self.valid_frames(),
                forces_key=self.config["mace"].get("forces_key", "REF_forces"))
            rescaled = self.remapped_model(scales["length_scale"], scales["energy_scale"], "_rescaled")
            result.update(remap=model_errors(self.remapped_model(), self.frames("test")),
                          remap_rescale=model_errors(rescaled, self.frames("test")),
                          scales_from_validation_set=scales)
        if known:
            s, k = float(known["length_scale"]), float(known["energy_scale"])
            result["remap_rescale_known"] = model_errors(self.remapped_model(s, k, "_rescaled_known"),
                                                         self.frames("test"))
            result["known_scales"] = dict(known)
        if classical and "classical" not in result:  # the classical model, target E0s, no refit
            import torch

            from mace_transfer import train

            target = self.target_symbol()
            rereferenced = self.work / "classical_rereferenced.model"
            torch.save(remap.remap_elements(remap.load_model(self.classical_model()), f"{target}:{target}",
                                            atomic_energies=train._parse_e0s(self.config["target_E0s"])),
                       rereferenced)
            result["classical"] = model_errors(rereferenced, self.frames("test"))
        write_json(path, result)
        for key in ("remap", "remap_rescale", "remap_rescale_known", "classical"):
            if key in result:
                self.say(f"zero-shot {key}: test force MAE {result[key]['force_mae_meV_per_A']:.1f} meV/Å")
        return result

    # -------------------------------------------------------------- one run
    def strategy_options(self, strategy: str, n_train: int, seed: int,
                         freeze_blocks: Optional[str] = None) -> Dict[str, Any]:
        spec = self.config["strategies"][strategy]
        options = dict(self.config["mace"])
        budget = self.config["budget"]
        options.update(lr=float(spec["lr"]), seed=int(seed), E0s=self.config["target_E0s"],
                       max_num_epochs=epochs_for(n_train + len(self.extra_train_frames()), int(options.get("batch_size", 5)),
                                                 budget),  # steps budget: extra frames count
                       patience=int(budget.get("patience", 1000)), restart_latest=False)
        options.update(spec.get("mace", {}) or {})
        init = spec.get("init", "scratch")
        if init == "remap":
            options.update(source_model=str(self.source_model()), element_map=self.config["element_map"])
        elif init == "foundation":
            options.update(foundation_model=str(self.remapped_model()))
        elif init == "classical":  # same element: re-referenced to the target E0s, shift refit
            target = self.target_symbol()
            options.update(source_model=str(self.classical_model()), element_map=f"{target}:{target}")
        if freeze_blocks:
            options["freeze_blocks"] = freeze_blocks
        return options

    def train_run(self, strategy: str, n_train: int, seed: int, record_path: Path,
                  freeze_blocks: Optional[str] = None) -> Dict[str, Any]:
        """Train one (strategy, N, seed), test it, write ``record_path``; the record."""
        name = record_path.stem
        folder = self.work / name
        if folder.exists():  # a cut run starts again: its wall time must be whole
            shutil.rmtree(folder)
        subset = self.write_subset(folder, n_train, seed)
        options = self.strategy_options(strategy, n_train, seed, freeze_blocks)
        options.update(train_file=subset["train_file"], valid_file=subset["valid_file"],
                       **run_dirs(folder, name))
        wall = self._train(options, folder)
        model_path = folder / f"{name}.model"
        curve = read_results(folder / "results")
        epoch = best_epoch(curve)
        grouped = model_errors(model_path, self.frames("test"), groups=True)
        errors = grouped["overall"]
        record = {
            "strategy": strategy, "n_train": n_train, "seed": seed, "name": name,
            "lr": options["lr"], "max_num_epochs": options["max_num_epochs"],
            "patience": options["patience"], "freeze_blocks": options.get("freeze_blocks"),
            "mace_freeze": options.get("freeze"), "init": self.config["strategies"][strategy].get("init", "scratch"),
            "extra_flags": self.config["strategies"][strategy].get("mace", {}),
            "test": {k: errors[k] for k in METRICS},
            "test_per_config_type": grouped["per_config_type"],
            "test_per_length_scale": grouped["per_length_scale"],
            "wall_s": wall, "epochs_run": len(curve["epoch"]), "best_epoch": epoch,
            "best_valid_rmse_f_meV_A": valid_rmse_at(curve, epoch),
            "initial_valid_rmse_f_meV_A": curve["initial_valid_rmse_f_meV_A"],
            "corresponding_states": self._scales_from_log(folder),
            "train_indices": subset["train_indices"], "n_extra_train": subset["n_extra_train"],
            "model": str(model_path), "curve": curve,
            "load_average_after": list(os.getloadavg()),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with contextlib.suppress(OSError):
            shutil.rmtree(folder / "checkpoints")
        write_json(record_path, record)
        return record

    @staticmethod
    def _scales_from_log(folder: Path) -> Optional[Dict[str, float]]:
        """The s, k that ``--length_scale/--energy_scale auto`` chose (train.py logs them)."""
        log = folder / "console.log"
        if not log.is_file():
            return None
        match = re.search(r"corresponding states estimated: (\{.*?\})", log.read_text())
        if not match:
            return None
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(match.group(1))
        return None

    # -------------------------------------------------------------- freeze selection
    def freeze_choice(self) -> Optional[str]:
        """The block set of ``transfer_freeze``: fixed, or chosen on validation at a small N."""
        spec = self.config["strategies"].get("transfer_freeze")
        if not spec:
            return None
        if spec.get("freeze_blocks"):
            return spec["freeze_blocks"]
        candidates = spec.get("freeze_candidates") or []
        if not candidates:
            raise UserInputError("transfer_freeze needs freeze_blocks or freeze_candidates")
        path = self.out / "freeze_selection.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        select = spec.get("select", {"n": 10, "seed": 0})
        n_train, seed = int(select["n"]), int(select["seed"])
        results = done.get("candidates", {})
        for blocks in candidates:
            if blocks in results:
                continue
            self.say(f"freeze selection: transfer + freeze {blocks} at N={n_train} seed={seed}")
            tag = re.sub(r"[^A-Za-z0-9]+", "-", blocks).strip("-")
            record = self.train_run("transfer_freeze", n_train, seed,
                                    self.out / "selection" / f"freeze-{tag}_N{n_train:04d}_s{seed}.json",
                                    freeze_blocks=blocks)
            results[blocks] = {"best_valid_rmse_f_meV_A": record["best_valid_rmse_f_meV_A"],
                               "test_force_mae_meV_per_A": record["test"]["force_mae_meV_per_A"],
                               "wall_s": record["wall_s"]}
            write_json(path, {"n_train": n_train, "seed": seed, "candidates": results,
                              "chosen": None, "rule": "lowest validation force RMSE"})
        chosen = min(candidates, key=lambda b: results[b]["best_valid_rmse_f_meV_A"])
        write_json(path, {"n_train": n_train, "seed": seed, "candidates": results, "chosen": chosen,
                          "rule": "lowest validation force RMSE (the test error is recorded, not used)"})
        self.say(f"freeze selection: {chosen} (validation force RMSE "
                 f"{results[chosen]['best_valid_rmse_f_meV_A']:.1f} meV/Å)")
        return chosen

    # -------------------------------------------------------------- sweep
    def sweep(self, sizes: Sequence[int], seeds: Sequence[int], strategies: Sequence[str],
              max_runs: Optional[int] = None) -> int:
        """Train every missing (strategy, N, seed); N ascending. Returns the number trained."""
        freeze = self.freeze_choice() if "transfer_freeze" in strategies else None
        plan = [(s, n, seed) for n in sizes for seed in seeds for s in strategies]
        todo = [p for p in plan if not (self.out / RECORDS / f"{run_name(*p)}.json").is_file()]
        self.say(f"sweep: {len(plan)} runs, {len(plan) - len(todo)} done already, {len(todo)} to train")
        if max_runs is not None:
            todo = todo[:max_runs]
        walls = {(r["strategy"], int(r["n_train"])): r["wall_s"] for r in load_runs(self.out)}
        for number, (strategy, n_train, seed) in enumerate(todo, 1):
            path = self.out / RECORDS / f"{run_name(strategy, n_train, seed)}.json"
            record = self._selected_run(strategy, n_train, seed, freeze) if strategy == "transfer_freeze" else None
            if record is not None:
                record["name"] = path.stem
                write_json(path, record)
            else:
                record = self.train_run(strategy, n_train, seed, path,
                                        freeze_blocks=freeze if strategy == "transfer_freeze" else None)
            walls[(strategy, n_train)] = record["wall_s"]
            remaining = todo[number:]
            eta = sum(self._guess_wall(walls, s, n) for s, n, _ in remaining)
            self.say(f"[{number}/{len(todo)}] {strategy:16s} N={n_train:<4d} seed={seed}: test force MAE "
                     f"{record['test']['force_mae_meV_per_A']:7.1f} meV/Å, energy MAE "
                     f"{record['test']['energy_mae_meV_per_atom']:6.2f} meV/atom, "
                     f"{record['epochs_run']} epochs (best {record['best_epoch']}), "
                     f"{_fmt_time(record['wall_s'])}; ETA {_fmt_time(eta)}")
        return len(todo)

    def _selected_run(self, strategy: str, n_train: int, seed: int, freeze: Optional[str]):
        """The freeze-selection run of the chosen block set when it is this (N, seed), else None."""
        for path in sorted((self.out / "selection").glob(f"*_N{n_train:04d}_s{seed}.json")):
            record = json.loads(path.read_text())
            if record.get("strategy") == strategy and record.get("freeze_blocks") == freeze:
                return dict(record, reused_from=str(path))
        return None

    @staticmethod
    def _guess_wall(walls, strategy: str, n_train: int) -> float:
        if (strategy, n_train) in walls:
            return walls[(strategy, n_train)]
        same_n = [w for (s, n), w in walls.items() if n == n_train]
        if same_n:
            return float(np.mean(same_n))
        return float(np.mean(list(walls.values()))) if walls else 0.0

    # -------------------------------------------------------------- extras
    def md_and_properties(self, seeds: Sequence[int]) -> None:
        """MD stability ladder, a0 and B vs ``md.reference`` (default SW-Ge) for the finished ``seeds`` runs."""
        from mace_transfer import evaluate

        import fcntl

        import torch

        torch.set_num_threads(self.threads)  # as for training: no oversubscription beside other jobs
        spec = self.config.get("md", {})
        strategies = spec.get("strategies")  # default: every strategy
        sizes = spec.get("sizes")  # default: every N
        (self.out / "md").mkdir(parents=True, exist_ok=True)
        for rec in load_runs(self.out):
            if int(rec["seed"]) not in seeds or (strategies and rec["strategy"] not in strategies):
                continue
            if sizes and int(rec["n_train"]) not in {int(n) for n in sizes}:
                continue
            path = self.out / "md" / f"{rec['name']}.json"
            if path.is_file():
                continue
            # a lock per run: several --md processes share the work; a dead one's lock is released
            lock = open(self.work / f".md_{rec['name']}.lock", "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            if path.is_file():  # finished by another process meanwhile
                lock.close()
                continue
            self.say(f"md: {rec['name']}")
            start = time.time()
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metrics = evaluate.evaluate(
                    rec["model"], reference=spec.get("reference", "sw-ge"), labels=[rec["name"]],
                    temperatures=spec.get("temperatures"), seeds=spec.get("md_seeds"),
                    md_steps=spec.get("md_steps"), skip=["errors", "structure", "elastic", "vacancy",
                                                         "phonons"], progress=False)
                entry = metrics["models"][rec["name"]]
                write_json(path, {
                    "strategy": rec["strategy"], "n_train": rec["n_train"], "seed": rec["seed"],
                    "max_stable_temperature_K": entry["md_stability"].get("max_stable_temperature_K"),
                    "properties": entry.get("properties"), "comparison": entry.get("comparison"),
                    "reference": metrics["reference"]["properties"], "md_settings": metrics["settings"]["md"],
                    "wall_s": time.time() - start})

    def timing(self) -> Dict[str, Any]:
        """Seconds per epoch: mace_transfer_train vs MACE's own run_train, same argv (scratch)."""
        path = self.out / "timing.json"
        if path.is_file():
            return json.loads(path.read_text())
        spec = self.config.get("timing", {})
        n_train, seed = int(spec.get("n", 25)), int(spec.get("seed", 0))
        epochs, repeats = int(spec.get("epochs", 5)), int(spec.get("repeats", 2))
        result: Dict[str, Any] = {"n_train": n_train, "epochs": epochs, "repeats": repeats,
                                  "mace_run_train": [], "mace_transfer_train": [],
                                  "mace_transfer_train_freeze": []}
        freeze = (self.config["strategies"].get("transfer_freeze") or {}).get("freeze_candidates", ["embedding"])[0]
        for repeat in range(repeats):
            for key in ("mace_run_train", "mace_transfer_train", "mace_transfer_train_freeze"):
                folder = self.work / "timing" / f"{key}_{repeat}"
                if folder.exists():
                    shutil.rmtree(folder)
                subset = self.write_subset(folder, n_train, seed)
                options = self.strategy_options("scratch", n_train, seed)
                options.update(max_num_epochs=epochs, patience=epochs + 1, train_file=subset["train_file"],
                               valid_file=subset["valid_file"], **run_dirs(folder, key))
                if key == "mace_transfer_train_freeze":
                    options["freeze_blocks"] = freeze
                wall = self._train(options, folder, use_mace_directly=(key == "mace_run_train"))
                curve = read_results(folder / "results")
                result[key].append({"wall_s": wall, "train_step_s_per_epoch": float(np.mean(curve["train_step_s"]))})
                self.say(f"timing {key} #{repeat}: {wall:.1f} s wall, "
                         f"{result[key][-1]['train_step_s_per_epoch']:.2f} s of optimizer steps per epoch")
        result["freeze_blocks"] = freeze
        result["machine"] = machine_info(self.threads)
        write_json(path, result)
        return result

    # -------------------------------------------------------------- report
    def report(self) -> Dict[str, Any]:
        """summary.json, summary.md, learning_curve.png (+ stability.png) from finished runs."""
        records = load_runs(self.out)
        attach_reach_scratch(records)
        summary = {"table": aggregate(records), "n_runs": len(records)}
        for name in ("zero_shot", "freeze_selection", "timing"):
            path = self.out / f"{name}.json"
            if path.is_file():
                summary[name] = json.loads(path.read_text())
        source_json = self.out / (self.config.get("source", {}) or {}).get("cache", "source/si.model")
        if source_json.with_suffix(".json").is_file():
            src = json.loads(source_json.with_suffix(".json").read_text())
            summary["source"] = {k: src.get(k) for k in ("n_train", "n_valid", "wall_s", "epochs_run",
                                                         "best_valid_rmse_f_meV_A", "machine")}
        md = [json.loads(p.read_text()) for p in sorted((self.out / "md").glob("*.json"))]
        if md:
            summary["md"] = md
        write_json(self.out / "summary.json", summary)
        if records:
            plot_learning_curve(summary["table"], self.out / "learning_curve.png", summary.get("zero_shot"),
                                title=self.config.get("title", "SW-Ge: Si-initialised vs scratch"),
                                target=self.target_symbol())
        if md:
            plot_stability(md, self.out / "stability.png", target=self.target_symbol())
        (self.out / "summary.md").write_text(summary_markdown(summary))
        return summary


# ----------------------------------------------------------------------------- report helpers
def _color(strategy: str) -> str:
    """One colour per strategy in every figure (matplotlib's C0, C1, ... in STRATEGIES order)."""
    return f"C{STRATEGIES.index(strategy) % 10}" if strategy in STRATEGIES else "k"


def _order(strategies) -> List[str]:
    return [s for s in STRATEGIES if s in strategies] + sorted(s for s in strategies if s not in STRATEGIES)


def plot_learning_curve(table, png, zero_shot=None, title: str = "SW-Ge: Si-initialised vs scratch",
                        target: str = "Ge") -> None:
    """Test force MAE vs N, log-log, mean ± sample std over seeds (error bars), one line per strategy."""
    from mace_transfer.evaluate_report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=150)
    strategies = _order(table)
    for i, strategy in enumerate(strategies):
        sizes = sorted(int(n) for n in table[strategy])
        stats = [table[strategy][str(n)]["force_mae_meV_per_A"] for n in sizes]
        keep = [(n, s) for n, s in zip(sizes, stats) if s["mean"] is not None]
        if not keep:
            continue
        x = np.array([n for n, _ in keep], dtype=float) * (1 + 0.03 * (i - len(strategies) / 2))
        mean = np.array([s["mean"] for _, s in keep])
        std = np.array([s["std"] for _, s in keep])
        low = np.maximum(mean - std, mean * 0.05)
        ax.errorbar(x, mean, yerr=[mean - low, std], marker="o", ms=4, capsize=3, label=strategy,
                    color=_color(strategy))
    if zero_shot:
        for key, style, text in (("remap", ":", "zero-shot remap"),
                                 ("remap_rescale", "--", "zero-shot remap + rescale (estimated s, k)"),
                                 ("remap_rescale_known", "-.", "zero-shot remap + rescale (SW σ, ε ratios)"),
                                 ("classical", (0, (1, 3)), "zero-shot classical model")):
            if key in zero_shot:
                ax.axhline(zero_shot[key]["force_mae_meV_per_A"], color="grey", ls=style, lw=1, label=text)
    ax.set_xscale("log")
    ax.set_yscale("log")
    all_sizes = sorted({int(n) for s in table.values() for n in s})
    ax.set_xticks(all_sizes)
    ax.set_xticklabels([str(n) for n in all_sizes])
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 4.0, 5.0, 7.0), numticks=30))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    counts = [e["force_mae_meV_per_A"]["n"] for s in table.values() for e in s.values()]
    ax.set_xlabel(f"{target} training configurations N")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    seeds = f"{min(counts)}" if counts and min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    ax.set_title(f"{title}\n(mean ± sample std over {seeds} seeds)", fontsize=8)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(png), dpi=None)


def plot_stability(md_records, png, target: str = "Ge") -> None:
    """Highest stable MD temperature (K) vs N per strategy."""
    from mace_transfer.evaluate_report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=150)
    strategies = _order({r["strategy"] for r in md_records})
    top = max((r["max_stable_temperature_K"] or 0) for r in md_records)
    for i, strategy in enumerate(strategies):
        rows = sorted((r["n_train"], r["max_stable_temperature_K"] or 0) for r in md_records
                      if r["strategy"] == strategy)
        shift = 1 + 0.04 * (i - (len(strategies) - 1) / 2)  # side by side where the lines coincide
        ax.plot([n * shift for n, _ in rows], [t for _, t in rows], marker="osD^v"[i % 5], ls="-",
                alpha=0.8, label=strategy, color=_color(strategy))
    ax.set_ylim(0, top * 1.1 + 100)
    ax.set_xscale("log")
    ax.set_xlabel(f"{target} training configurations N")
    ax.set_ylabel("highest stable MD temperature (K)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, Path(png), dpi=None)


def _pm(stats, digits=1) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    text = f"{stats['mean']:.{digits}f}"
    if stats["n"] > 1:
        text += f" ± {stats['std']:.{digits}f}"
    return text + (f" (n={stats['n']})" if stats["n"] != 1 else " (n=1)")


def summary_markdown(summary) -> str:
    """Markdown tables: strategy x N (force MAE, energy MAE, wall, epochs), reach-scratch, extras."""
    table = summary["table"]
    sizes = sorted({int(n) for s in table.values() for n in s})
    lines = ["Test force MAE (meV/Å), mean ± sample std over seeds:", "",
             "| strategy | " + " | ".join(f"N={n}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for key, digits, title in (("force_mae_meV_per_A", 1, None), ("energy_mae_meV_per_atom", 2,
                                                                  "Test energy MAE (meV/atom):"),
                               ("wall_s", 0, "Wall seconds per training (MACE set-up, epochs, final error table; test evaluation not included):"),
                               ("epochs_run", 0, "Epochs run (MACE 0.3.16's --patience never stops a serial run; the lowest-validation-loss checkpoint is kept):")):
        if title:
            lines += ["", title, "", "| strategy | " + " | ".join(f"N={n}" for n in sizes) + " |",
                      "|---|" + "---|" * len(sizes)]
        for strategy in _order(table):
            cells = [_pm(table[strategy].get(str(n), {}).get(key), digits) for n in sizes]
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    lines += ["", "Epochs (and optimizer-step seconds) to reach scratch's final validation force "
              "RMSE at the same N and seed (reached/runs):", "",
              "| strategy | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for strategy in _order(table):
        cells = []
        for n in sizes:
            reach = table[strategy].get(str(n), {}).get("reach_scratch")
            if not reach:
                cells.append("–")
            elif reach["epochs"]["mean"] is None:
                cells.append(f"never ({reach['reached']}/{reach['of']})")
            else:
                cells.append(f"{reach['epochs']['mean']:.1f} ep, {reach['train_step_s']['mean']:.0f} s "
                             f"({reach['reached']}/{reach['of']})")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    for group, what in (("per_config_type", "config_type"), ("per_length_scale", "cell scale (1 = as sampled)")):
        key = f"force_mae_{group}"
        with_parts = [n for n in sizes if any(key in table[s].get(str(n), {}) for s in table)]
        if not with_parts:
            continue
        n = with_parts[-1]
        parts = sorted({k for s in table for k in table[s].get(str(n), {}).get(key, {})})
        lines += ["", f"Test force MAE (meV/Å) by {what}, N={n}:", "",
                  "| strategy | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
        for strategy in _order(table):
            by_part = table[strategy].get(str(n), {}).get(key, {})
            lines.append(f"| {strategy} | " + " | ".join(_pm(by_part.get(k)) for k in parts) + " |")
    if "zero_shot" in summary:
        z = summary["zero_shot"]
        sc = z.get("scales_from_validation_set", {})
        lines += ["", "Zero-shot (remapped Si model, no Ge training) on the test set:", "",
                  "| model | force MAE (meV/Å) | energy MAE (meV/atom) |", "|---|---|---|"]
        for key in ("remap", "remap_rescale", "remap_rescale_known", "classical"):
            if key in z:
                lines.append(f"| {key} | {z[key]['force_mae_meV_per_A']:.1f} | "
                             f"{z[key]['energy_mae_meV_per_atom']:.1f} |")
        if sc:
            lines.append(f"\nremap_rescale: s = {sc.get('length_scale', float('nan')):.4f}, "
                         f"k = {sc.get('energy_scale', float('nan')):.4f} (estimated on the validation set)")
        if "known_scales" in z:
            kn = z["known_scales"]
            lines.append(f"remap_rescale_known: s = {kn['length_scale']}, k = {kn['energy_scale']} "
                         f"({kn.get('source', 'given in the config')})")
    if "freeze_selection" in summary:
        fs = summary["freeze_selection"]
        lines += ["", f"transfer_freeze block set chosen at N={fs['n_train']}, seed {fs['seed']} "
                  f"by {fs['rule']}: **{fs['chosen']}**", "",
                  "| frozen blocks | valid force RMSE (meV/Å) | test force MAE (meV/Å) |", "|---|---|---|"]
        for blocks, row in fs["candidates"].items():
            lines.append(f"| {blocks} | {row['best_valid_rmse_f_meV_A']:.1f} | "
                         f"{row['test_force_mae_meV_per_A']:.1f} |")
    if "timing" in summary:
        t = summary["timing"]
        lines += ["", f"Timing, N={t['n_train']}, {t['epochs']} epochs, {t['repeats']} repeats "
                  "(optimizer-step seconds per epoch; wall seconds per run):", ""]
        for key in ("mace_run_train", "mace_transfer_train", "mace_transfer_train_freeze"):
            rows = t.get(key, [])
            if rows:
                lines.append(f"- {key}: " + ", ".join(f"{r['train_step_s_per_epoch']:.2f} s/epoch "
                                                      f"({r['wall_s']:.0f} s)" for r in rows))
    if "md" in summary:
        lines += ["", "MD stability and crystal properties vs the reference:", "",
                  "| run | highest stable T (K) | a0 (Å) | a0 error | B (GPa) | B error |", "|---|---|---|---|---|---|"]

        def _rel(record, key):
            value = ((record.get("comparison") or {}).get(key) or {}).get("relative_error")
            return "–" if value is None else f"{100 * value:+.1f} %"

        rank = {name: i for i, name in enumerate(STRATEGIES)}
        for r in sorted(summary["md"], key=lambda r: (rank.get(r["strategy"], len(rank)), r["n_train"], r["seed"])):
            props_ = r.get("properties") or {}
            a0, bulk = props_.get("lattice_constant_A"), props_.get("bulk_modulus_GPa")
            lines.append(f"| {r['strategy']} N={r['n_train']} s{r['seed']} | {r['max_stable_temperature_K']} | "
                         f"{a0 if a0 is None else f'{a0:.4f}'} | {_rel(r, 'lattice_constant_A')} | "
                         f"{bulk if bulk is None else f'{bulk:.1f}'} | {_rel(r, 'bulk_modulus_GPa')} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry
def run_study(config, *, out=None, work=None, sizes: Optional[Sequence[int]] = None,
              seeds: Optional[Sequence[int]] = None, strategies: Optional[Sequence[str]] = None,
              max_runs: Optional[int] = None, md: bool = False, timing: bool = False,
              zero_shot: bool = True, report_only: bool = False, progress=print) -> Dict[str, Any]:
    """Run (or resume) a learning-curve study and write its report; returns the summary.

    ``config`` is a YAML path or an already-loaded mapping; ``sizes``, ``seeds`` and ``strategies``
    default to the config's. ``report_only`` only aggregates the finished runs.
    """
    if not isinstance(config, dict):
        config = load_config(config)
    names = list(strategies) if strategies else list(config["strategies"])
    for name in names:
        if name not in config["strategies"]:
            raise UserInputError(f"strategy {name!r} is not in the config (it has "
                                 f"{', '.join(config['strategies'])})")
    seeds = [int(s) for s in (seeds if seeds else config["seeds"])]
    if max_runs is not None and max_runs < 0:
        raise UserInputError("max_runs must be >= 0")
    # TorchScript/e3nn UserWarnings on every model load would drown the one-line-per-run progress
    warnings.filterwarnings("ignore", category=UserWarning)
    sweep = Sweep(config, out, work, progress=progress)
    if not report_only:
        write_json(sweep.out / "machine.json", machine_info(sweep.threads))
        sweep.check_data()
        sweep.source_model()
        if zero_shot:
            sweep.zero_shot()
        sweep.sweep(sweep.sizes(sizes), seeds, names, max_runs)
        if timing:
            sweep.timing()
        if md:
            sweep.md_and_properties([int(s) for s in config.get("md", {}).get("seeds", [0])])
    summary = sweep.report()
    progress(f"report: {sweep.out}/summary.md, {sweep.out}/summary.json ({summary['n_runs']} runs)")
    return summary
