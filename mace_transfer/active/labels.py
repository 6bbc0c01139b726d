"""Labels for the loop through the resumable labeller
:func:`mace_transfer.datagen.dft.labeller.label_structures`: one executor task per structure (the labeller
spec's calculator is built where the task runs), this process alone appends each frame (fsync'd) or the
failure to the ``*.failed.jsonl`` sidecar. A rerun skips what is in either, so nothing is labelled twice
after a restart, and a structure the labeller fails on is recorded and skipped.

Labeller specs (``LabellerSpec.kind``):

* ``classical``: ``element`` + ``potential`` (``sw`` / ``tersoff``, :mod:`mace_transfer.datagen.classical`);
* ``cp2k``: ``settings`` (a YAML such as ``configs/dft_pbe.yaml``) and ``nprocs``;
* ``model``: ``path`` of a MACE model as a teacher (:mod:`mace_transfer.datagen.teacher`'s identity);
* ``python``: ``factory`` ``"module:function"`` returning any ASE calculator;
* ``pool``: ``path`` of a labelled extxyz pool; a candidate's label is read from the pool only when the
  candidate is labelled (``info["pool_index"]``).

DFT CPU s: what the labeller records per frame (``dft_cpu_s``: CP2K's own ranks, a pool frame's recorded
cost); a labeller that does not say (a classical potential, a Python calculator) counts 0.
Units: eV, eV/Å, eV/Å^3, s.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, all_changes

from mace_transfer import UserInputError
from mace_transfer.execution import ExecutorSpec

logger = logging.getLogger(__name__)

KINDS = ("classical", "cp2k", "model", "python", "pool")


@dataclass(frozen=True)
class LabellerSpec:
    """Which labeller (see the module doc); plain values, so a task can carry it to a worker."""

    kind: str
    element: str = ""
    potential: str = "sw"
    settings: str = ""
    nprocs: Optional[int] = None
    path: str = ""
    factory: str = ""

    def check(self) -> None:
        """One-line refusals of a spec that cannot work (before any round runs)."""
        if self.kind not in KINDS:
            raise UserInputError(f"labeller kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind in ("model", "pool") and not Path(self.path).is_file():
            raise UserInputError(f"{self.kind} labeller file not found: {self.path}")
        if self.kind == "cp2k" and self.settings and not Path(self.settings).is_file():
            raise UserInputError(f"DFT settings file not found: {self.settings}")
        if self.kind == "python" and ":" not in self.factory:
            raise UserInputError(f"python labeller needs module:function, got {self.factory!r}")
        if self.kind == "classical":
            from mace_transfer.datagen import classical

            classical.calculator(self.element, self.potential)  # a bad pair is one line

    def tag(self) -> str:
        """The settings tag written into every label (never mix two labellers in one file)."""
        if self.kind == "cp2k":
            from mace_transfer.datagen.dft import load_settings

            return load_settings(self.settings or None, nprocs=self.nprocs).physics_hash()
        if self.kind in ("model", "pool"):
            from mace_transfer.datagen.teacher import file_identity

            return f"{self.kind}-{file_identity(self.path)[:10]}"
        text = json.dumps(asdict(self), sort_keys=True)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"



_POOLS: Dict[tuple, List[Atoms]] = {}


def read_pool(path: str) -> List[Atoms]:
    """The frames of a labelled pool file (read once per process and file version)."""
    from ase.io import read

    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _POOLS:
        _POOLS.clear()
        _POOLS[key] = read(path, ":", format="extxyz")
    return _POOLS[key]


class PoolCalculator(Calculator):
    """The stored labels of a labelled pool (energy eV, forces eV/Å, stress eV/Å^3 when every frame has
    one) for a structure that carries its ``info["pool_index"]``. ``last_cpu_s``: the pool frame's
    recorded ``dft_cpu_s`` (what its DFT cost), else None."""

    def __init__(self, path: str):
        super().__init__()
        self.frames = read_pool(str(path))
        stress = all("REF_stress" in f.info for f in self.frames if all(f.pbc))
        self.implemented_properties = ["energy", "forces"] + (["stress"] if stress else [])
        self.last_cpu_s: Optional[float] = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        index = int(self.atoms.info["pool_index"])
        frame = self.frames[index]
        if len(frame) != len(self.atoms) or not np.allclose(frame.positions, self.atoms.positions, atol=1e-6):
            raise CalculationFailed(f"pool frame {index} is not this structure")
        self.results = {"energy": float(frame.info["REF_energy"]), "forces": np.asarray(frame.arrays["REF_forces"])}
        if "stress" in self.implemented_properties:
            self.results["stress"] = np.asarray(frame.info["REF_stress"], dtype=float).reshape(6)
        self.last_cpu_s = float(frame.info["dft_cpu_s"]) if "dft_cpu_s" in frame.info else None


def build_calculator(spec: LabellerSpec) -> Calculator:
    """The spec's ASE calculator (built where the labelling task runs)."""
    if spec.kind == "pool":
        return PoolCalculator(spec.path)
    if spec.kind == "classical":
        from mace_transfer.datagen import classical

        return classical.calculator(spec.element, spec.potential)
    if spec.kind == "cp2k":
        from mace_transfer.datagen.dft import CP2KCalculator, load_settings

        return CP2KCalculator(load_settings(spec.settings or None, nprocs=spec.nprocs))
    if spec.kind == "model":
        from mace_transfer.evaluate.models import load_model

        return load_model(spec.path).calc
    if spec.kind == "python":
        module, _, name = spec.factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    raise ValueError(f"no calculator for labeller kind {spec.kind!r}")


def label_batch(structures: Sequence[Atoms], spec: LabellerSpec, out_path: Path,
                executor: Optional[ExecutorSpec] = None, checkpoint: Callable[[str], None] = lambda name: None,
                say: Callable[[str], None] = logger.info) -> Dict[str, float]:
    """Label ``structures`` into ``out_path`` with the resumable labeller, one executor task each (the
    calculator is built where the task runs); returns ``labelled`` / ``failed`` (all in the file and
    its sidecar), ``cpu_s`` (labeller CPU s of every label in the file, as the labels record it) and
    ``wall_s``. ``checkpoint("label-frame")`` after each frame is written."""
    from mace_transfer.datagen.dft import labeller

    out_path = Path(out_path)
    t0 = time.perf_counter()

    def log(line: str) -> None:
        say(line)
        if line.startswith("label: ["):  # the labeller's line after a frame (or a failure) is on disk
            checkpoint("label-frame")

    try:
        labeller.label_structures(structures, functools.partial(build_calculator, spec), out_path,
                                  settings_tag=spec.tag(), executor=executor, log=log)
    except labeller.CP2KNotRunnable as exc:
        raise UserInputError(f"CP2K cannot run here: {exc}") from None
    except labeller.LabellingAborted as exc:
        raise UserInputError(f"labeller failed on every structure in a row ({exc}); see "
                             f"{labeller.failed_sidecar(out_path)}") from None
    frames = labeller.read_complete_frames(out_path) if out_path.exists() else []
    failed = labeller.read_failed(labeller.failed_sidecar(out_path))
    return {"labelled": len(frames), "failed": len(failed),
            "cpu_s": float(sum(float(f.info.get("dft_cpu_s", 0.0)) for f in frames)),
            "wall_s": time.perf_counter() - t0,
            "failures": [{"index": rec["source_index"], "error": rec["message"][:300]} for rec in failed.values()]}
