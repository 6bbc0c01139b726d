"""A study's data: the files of ``data.*`` read with their limits and config_type filters, the fixed
validation split, nested training subsets, and the SHA-256 record that keeps a resumed study on the
same data (``<out>/data.json``)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError
from mace_transfer.studies.config import target_symbol
from mace_transfer.studies.records import load_runs, write_json


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


def ordered_indices(path, pool: Sequence[int], n_train: int) -> List[int]:
    """The first N target indices of a selection order file (``{"target_indices": [...]}``, e.g. the labels
    of an active-learning loop in the order it chose them, ``scripts/active_pool.py order``); refused in one
    line when the file is missing, repeats an index, names one outside the training pool or is too short."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"data.train_order: {path} not found")
    try:
        order = [int(i) for i in json.loads(path.read_text())["target_indices"]]
    except (ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"data.train_order: {path} is not a JSON object with a list 'target_indices' "
                             f"({error})") from None
    outside = sorted(set(order) - set(pool))
    if outside or len(set(order)) != len(order):
        raise UserInputError(f"data.train_order: {path} repeats an index or names structures outside the "
                             f"training pool ({outside[:5]}); it must come from this study's split")
    if n_train > len(order):
        raise UserInputError(f"data.train_order: {path} orders {len(order)} structures, N={n_train} asked")
    return order[:n_train]


def file_sha256(path) -> str:
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



#: config keys for the extra training frames -> the ``atoms.info`` keys MACE's ``config_from_atoms`` reads
#: (mace/data/utils.py: ``config_weight`` scales a frame's whole loss, ``config_energy_weight`` its energy term)
EXTRA_TRAIN_WEIGHTS = {"extra_train_weight": "config_weight", "extra_train_energy_weight": "config_energy_weight"}


class StudyData:
    """The configurations a study trains, validates and tests on (``config["data"]``)."""

    def __init__(self, config: Dict[str, Any], out=None, work=None, progress=print):
        self.config = config
        self.out = Path(out or config["out"])
        self.work = Path(work or config["work"])
        self.say = progress
        self._frames: Dict[str, list] = {}
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def target_symbol(self) -> str:
        """The target element of ``element_map`` ("Si:Ge" -> "Ge")."""
        return target_symbol(self.config)

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
                digest = file_sha256(paths[0])
            else:
                digest = _sha256_text(" ".join(file_sha256(p) for p in paths))
            current[key] = {"path": ", ".join(map(str, paths)), "configurations": len(self.frames(key)),
                            "sha256": digest}
        for key, info_key in EXTRA_TRAIN_WEIGHTS.items():
            if self.config["data"].get(key) is not None and "extra_train" in current:
                current["extra_train"][info_key] = float(self.config["data"][key])
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
        """The ``data.extra_train`` configurations (none when the key is absent); with
        ``data.extra_train_weight`` w each carries ``info["config_weight"] = w``, MACE's per-configuration
        loss weight (e.g. a teacher's labels replayed at a low weight beside the DFT structures), and with
        ``data.extra_train_energy_weight`` w_E ``info["config_energy_weight"] = w_E``, MACE's per-configuration
        weight of the energy term alone (0: the frames teach forces only, e.g. close-pair cells whose
        wall energies would otherwise pull the equation of state)."""
        if not self.config["data"].get("extra_train"):
            return []
        weights = {info_key: float(self.config["data"][key]) for key, info_key in EXTRA_TRAIN_WEIGHTS.items()
                   if self.config["data"].get(key) is not None}
        if not weights:
            return self.frames("extra_train")
        frames = [atoms.copy() for atoms in self.frames("extra_train")]
        for atoms in frames:
            atoms.info.update(weights)
        return frames

    def train_indices(self, n_train: int, seed: int) -> List[int]:
        """Target indices of the N training structures of ``seed``: the first N of the pool shuffled with the
        seed, or with ``data.train_order`` (a path, ``{seed}`` filled in) the first N of that file's order."""
        pool = self.split()[1]
        order_file = self.config["data"].get("train_order")
        if order_file is None:
            return training_indices(pool, n_train, seed)
        return ordered_indices(str(order_file).format(seed=seed), pool, n_train)

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
        valid_idx = self.split()[0]
        train_idx = self.train_indices(n_train, seed)
        folder.mkdir(parents=True, exist_ok=True)
        extra = self.extra_train_frames()
        write(folder / "train.xyz", [target[i] for i in train_idx] + list(extra), format="extxyz")
        write(folder / "valid.xyz", [target[i] for i in valid_idx], format="extxyz")
        subset = {"train_file": str(folder / "train.xyz"), "valid_file": str(folder / "valid.xyz"),
                  "train_indices": train_idx, "n_extra_train": len(extra), "estimate_file": None}
        if extra:  # a transferred start's s, k and shift come from the N target structures alone
            write(folder / "estimate.xyz", [target[i] for i in train_idx], format="extxyz")
            subset["estimate_file"] = str(folder / "estimate.xyz")
        return subset

    # -------------------------------------------------------------- MACE
