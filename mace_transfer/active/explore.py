"""Exploration: MD with the current model in the sampler's kinds of cells, seeded and resumable.

One round of exploration is a fixed list of *units* (as :mod:`mace_transfer.datagen.sampling`): one
Langevin NVT run per ladder temperature (``md``), one liquid run (pre-melted at twice its temperature),
one strained cell and one vacancy cell (each then run at the lowest ladder temperature). Unit ``u`` of
round ``r`` draws its random numbers from its own seed ``(seed, r, u)``, so a unit is the same whatever
ran before it, and a restart redoes only the units whose file is missing.

Each unit keeps ``snapshots`` frames, one every ``interval`` MD steps after ``equilibration`` steps,
with the committee's uncertainty at that step (``info["uncertainty_eV_A"]``, ``["uncertainty_mean_eV_A"]``).
A geometry the model breaks on (a pair closer than ``min_distance_A``, a total-energy change in one
step above ``max_energy_jump_eV_per_atom``, a non-finite energy or position) ends the unit and is kept
as a candidate with ``info["broken"]`` saying why: the loop labels what the model cannot handle.
Units: K, fs, Å, eV.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from mace_transfer.active.committee import cpu_seconds, uncertainty_now
from mace_transfer.evaluate.md import minimum_distance

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExploreSettings:
    """What one round of exploration runs (K, fs, 1/fs, Å, eV/atom)."""

    element: str
    lattice_constant: float
    supercell: Tuple[int, int, int] = (1, 1, 1)
    temperatures: Tuple[float, ...] = (300.0, 900.0, 1500.0)
    liquid_temperature: Optional[float] = 2500.0
    premelt_steps: int = 200
    max_strain: float = 0.04
    vacancies: int = 1
    equilibration: int = 50
    interval: int = 20
    snapshots: int = 3
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.01
    min_distance_A: float = 1.6
    max_energy_jump_eV_per_atom: float = 0.2

    def units(self) -> List[Tuple[str, float]]:
        """One round's units: ``(kind, temperature K)``."""
        out = [("md", float(t)) for t in self.temperatures]
        low = float(min(self.temperatures))
        if self.liquid_temperature:
            out.append(("liquid", float(self.liquid_temperature)))
        if self.max_strain > 0:
            out.append(("strain", low))
        if self.vacancies > 0:
            out.append(("vacancy", low))
        return out

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def start_cell(settings: ExploreSettings, kind: str, rng: np.random.Generator) -> Atoms:
    """The unit's starting cell: the diamond crystal, strained (isotropic or shear, |eps| <= max_strain)
    or with ``vacancies`` random atoms removed."""
    atoms = bulk(settings.element, "diamond", a=settings.lattice_constant, cubic=True).repeat(settings.supercell)
    if kind == "strain":
        eps = rng.uniform(-settings.max_strain, settings.max_strain, size=3)
        strain = np.diag(eps) if rng.random() < 0.5 else np.array(
            [[0.0, eps[2], eps[1]], [eps[2], 0.0, eps[0]], [eps[1], eps[0], 0.0]])
        atoms.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
    elif kind == "vacancy":
        removed = rng.choice(len(atoms), size=min(settings.vacancies, len(atoms) // 2), replace=False)
        del atoms[sorted(int(i) for i in removed)]
    return atoms


def _broken(atoms: Atoms, energy: float, previous: Optional[float], settings: ExploreSettings) -> Optional[str]:
    """Why the model broke at this step, or None."""
    if not (np.isfinite(energy) and np.all(np.isfinite(atoms.positions))):
        return "non-finite energy or positions"
    closest = minimum_distance(atoms, settings.min_distance_A)
    if closest < settings.min_distance_A:
        return f"pair at {closest:.3f} Å, closer than {settings.min_distance_A:g} Å"
    if previous is not None:
        jump = abs(energy - previous) / len(atoms)
        if jump > settings.max_energy_jump_eV_per_atom:
            return f"energy jump {jump:.3g} eV/atom in one step"
    return None


def _frame(atoms: Atoms, calc, kind: str, temperature: float, step: int, unit: int,
           broken: Optional[str] = None) -> Atoms:
    """A clean copy of the current geometry with its uncertainty and origin in ``info``."""
    frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update(config_type=kind if kind != "md" else f"md_{temperature:g}K", explore_unit=unit,
                      explore_step=step, temperature_K=temperature)
    sigma = None if broken and "non-finite" in broken else uncertainty_now(calc)
    if broken:
        frame.info["broken"] = broken
        sigma = sigma if sigma is not None else ({"max": float("inf"), "mean": float("inf")}
                                                 if getattr(calc, "num_models", 1) > 1 else None)
    if sigma is not None:
        frame.info["uncertainty_eV_A"] = sigma["max"]
        frame.info["uncertainty_mean_eV_A"] = sigma["mean"]
    return frame


def run_unit(calc, settings: ExploreSettings, seed: int, round_index: int, unit: int) -> List[Atoms]:
    """The candidates of one unit (see the module doc); deterministic for (seed, round, unit)."""
    kind, temperature = settings.units()[unit]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(round_index), int(unit)]))
    atoms = start_cell(settings, kind, rng)
    atoms.calc = calc
    atoms.set_constraint(FixCom())
    timestep, friction = settings.timestep_fs * units.fs, settings.friction_per_fs / units.fs
    plan = []
    if kind == "liquid":
        plan.append((2.0 * temperature, settings.premelt_steps, False))
    plan.append((temperature, settings.equilibration + settings.interval * settings.snapshots, True))
    thermalize_momenta(atoms, temperature_K=plan[0][0], rng=rng)
    Stationary(atoms)
    frames: List[Atoms] = []
    previous, step = None, 0
    for target, steps, keep in plan:
        dynamics = Langevin(atoms, timestep, temperature_K=target, friction=friction, fixcm=False, rng=rng)
        for n, _ in enumerate(dynamics.irun(steps=steps)):
            try:
                energy = atoms.get_potential_energy() + atoms.get_kinetic_energy()
            except Exception as exc:  # noqa: BLE001 - a model gone wrong can make the neighbour list throw
                logger.info("explore: unit %d step %d: %s", unit, step, exc)
                energy = float("nan")
            broken = _broken(atoms, energy, previous, settings)
            if broken:
                frames.append(_frame(atoms, calc, kind, temperature, step, unit, broken))
                logger.info("explore: unit %d (%s %g K) broke at step %d: %s", unit, kind, temperature, step, broken)
                return frames
            if keep and n > settings.equilibration and (n - settings.equilibration) % settings.interval == 0:
                frames.append(_frame(atoms, calc, kind, temperature, step, unit))
            previous = energy
            step += n > 0
    return frames


def unit_path(folder: Path, unit: int) -> Path:
    return Path(folder) / f"unit_{unit:03d}.xyz"


def write_atomically(path: Path, frames: Sequence[Atoms]) -> None:
    """Write extxyz ``frames`` to ``path`` through a temporary file and a rename (never half a file)."""
    from ase.io import write

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        write(handle, list(frames), format="extxyz")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_frames(path: Path) -> List[Atoms]:
    """Every frame of an extxyz file (an empty file: none)."""
    from ase.io import read

    path = Path(path)
    return read(path, ":", format="extxyz") if path.stat().st_size else []


def explore(calc, settings: ExploreSettings, folder: Path, seed: int, round_index: int,
            checkpoint: Callable[[str], None] = lambda name: None) -> Tuple[List[Atoms], float]:
    """Run every unit of one round whose file in ``folder`` is missing; returns all its candidates (in
    unit order) and the CPU s spent here this time. ``checkpoint("explore-unit")`` after each unit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cpu0, frames = cpu_seconds(), []
    for unit in range(len(settings.units())):
        path = unit_path(folder, unit)
        if not path.exists():
            t0 = time.perf_counter()
            found = run_unit(calc, settings, seed, round_index, unit)
            write_atomically(path, found)
            logger.info("explore: round %d unit %d: %d candidates in %.1f s", round_index, unit, len(found),
                        time.perf_counter() - t0)
            checkpoint("explore-unit")
        frames += read_frames(path)
    return frames, cpu_seconds() - cpu0
