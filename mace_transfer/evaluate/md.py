"""MD stability ladder and liquid/solid structure (RDF, ADF) from any ASE calculator.

Part of :mod:`mace_transfer.evaluate`. Units: K, fs (timestep), ps (times), Å, eV, degrees.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from matscipy.neighbours import neighbour_list

from mace_transfer import UserInputError
from mace_transfer.evaluate.properties import diamond


@dataclass
class MDSettings:
    """NVT Langevin stability runs on a cubic diamond cell.

    A run fails at the first step with a non-finite energy or position, a pair closer than
    ``min_distance_A`` (a physical floor; Si/Ge bonds are 2.35-2.45 Å), or a total-energy
    change in one step above ``max_energy_jump_eV_per_atom`` (a thermostat step changes it by
    ~0.01 eV/atom at 2500 K; a broken potential by far more).
    """

    temperatures_K: Sequence[float] = (300, 600, 1200, 1800, 2500)
    seeds: Sequence[int] = (0, 1, 2)
    steps: int = 2000
    timestep_fs: float = 1.0
    friction_per_fs: float = 0.01
    repeat: int = 2  # 2x2x2 cubic cells = 64 atoms
    min_distance_A: float = 1.5
    min_distance_fraction: Optional[float] = None  # if set: floor = this x crystal bond length
    max_energy_jump_eV_per_atom: float = 0.1
    structure_temperatures_K: Sequence[float] = ()  # RDF/ADF sampled at these (seed = seeds[0])
    snapshot_interval: int = 10  # steps between RDF/ADF snapshots (second half of the run)
    rdf_bins: int = 120
    adf_cutoff_A: Optional[float] = None  # default: 1.3 x nearest-neighbour distance
    adf_bins: int = 90

    def distance_floor(self, lattice_constant: float) -> float:
        """The minimum-distance floor (Å): ``min_distance_fraction`` x the diamond bond
        length √3/4 a0 when set, else ``min_distance_A``."""
        if self.min_distance_fraction is not None:
            return float(self.min_distance_fraction * np.sqrt(3) / 4 * lattice_constant)
        return float(self.min_distance_A)

    def to_dict(self) -> dict:
        return {key: (list(value) if isinstance(value, (tuple, list)) else value)
                for key, value in asdict(self).items()}


@dataclass
class RunResult:
    """One MD run: ``failure`` is None when it held for all steps."""

    temperature_K: float
    seed: int
    steps_done: int
    time_ps: float
    failure: Optional[str] = None
    time_to_failure_ps: Optional[float] = None
    mean_temperature_K: Optional[float] = None
    snapshots: List[Atoms] = field(default_factory=list, repr=False)


def minimum_distance(atoms: Atoms, cutoff: float) -> float:
    """Shortest interatomic distance (Å) under ``cutoff`` (periodic); ``inf`` if none is."""
    distances = neighbour_list("d", atoms, cutoff)
    return float(distances.min()) if len(distances) else float("inf")


def run_md(calc, atoms: Atoms, temperature_K: float, seed: int, settings: MDSettings,
           keep_snapshots: bool = False, on_step=None,
           distance_floor: Optional[float] = None) -> RunResult:
    """One Langevin NVT run from ``atoms`` (copied) with Maxwell-Boltzmann velocities (seeded).

    ``distance_floor`` (Å) defaults to ``settings.min_distance_A``.

    ``on_step(n)`` is called after every step (progress bars). Snapshots of the second half,
    every ``snapshot_interval`` steps, are kept when ``keep_snapshots``.
    """
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(atoms, timestep=settings.timestep_fs * units.fs,
                        temperature_K=temperature_K, fixcm=False,
                        friction=settings.friction_per_fs / units.fs, rng=rng)
    n_atoms = len(atoms)
    result = RunResult(temperature_K=float(temperature_K), seed=int(seed), steps_done=0,
                       time_ps=settings.steps * settings.timestep_fs / 1000)
    floor = settings.min_distance_A if distance_floor is None else distance_floor
    temperatures = []
    previous_energy = None
    steps = dynamics.irun(steps=settings.steps)
    for step in range(settings.steps + 1):
        try:
            next(steps)  # irun yields once before the first step, then after each
            energy = atoms.get_potential_energy() + atoms.get_kinetic_energy()
        except UserInputError:
            raise
        except Exception as exc:  # a model that produced NaN can make the neighbour list throw
            energy, result.failure = float("nan"), f"calculator error: {type(exc).__name__}: {exc}"
        if step == 0 and result.failure is None:
            previous_energy = energy
            continue
        result.steps_done = step
        if on_step is not None and step > 0:
            on_step(1)
        if result.failure:
            pass
        elif not (np.isfinite(energy) and np.all(np.isfinite(atoms.positions))):
            result.failure = "non-finite energy or positions"
        elif minimum_distance(atoms, floor) < floor:
            result.failure = f"pair closer than {floor:.3g} Å"
        elif abs(energy - previous_energy) / n_atoms > settings.max_energy_jump_eV_per_atom:
            result.failure = (f"energy jump {abs(energy - previous_energy) / n_atoms:.3g} eV/atom "
                              f"in one step")
        if result.failure:
            result.time_to_failure_ps = step * settings.timestep_fs / 1000
            result.snapshots = []
            break
        previous_energy = energy
        temperatures.append(atoms.get_temperature())
        if keep_snapshots and step > settings.steps // 2 and step % settings.snapshot_interval == 0:
            result.snapshots.append(atoms.copy())
    if temperatures:
        result.mean_temperature_K = float(np.mean(temperatures[len(temperatures) // 2:]))
    return result


def md_stability(calc, element: str, lattice_constant: float, settings: MDSettings,
                 progress: bool = True, label: str = "") -> Dict[str, object]:
    """Run the temperature x seed ladder; summarise failures, survival and throughput.

    Returns a JSON-ready dict (``runs``, ``per_temperature``, ``max_stable_temperature_K``:
    the highest ladder temperature at which every seed, and every seed at all lower
    temperatures, held for the whole run; None if even the lowest failed;
    ``atom_steps_per_s``) and, under ``"_snapshots"``, {T: [Atoms]} for RDF/ADF.
    """
    from tqdm.auto import tqdm

    start = diamond(element, lattice_constant, settings.repeat)
    temperatures = sorted(float(t) for t in settings.temperatures_K)
    structure_temperatures = {float(t) for t in settings.structure_temperatures_K}
    total = len(temperatures) * len(settings.seeds) * settings.steps
    runs: List[RunResult] = []
    wall = 0.0
    with tqdm(total=total, desc=f"MD {label}".strip(), unit="step", disable=not progress,
              leave=False) as bar:
        for temperature in temperatures:
            for seed in settings.seeds:
                keep = temperature in structure_temperatures and seed == settings.seeds[0]
                tick = time.perf_counter()
                run = run_md(calc, start, temperature, seed, settings, keep, bar.update,
                             settings.distance_floor(lattice_constant))
                wall += time.perf_counter() - tick
                bar.update(settings.steps - run.steps_done)  # skipped steps of a failed run
                runs.append(run)
    per_temperature = {}
    for temperature in temperatures:
        at_t = [r for r in runs if r.temperature_K == temperature]
        survived = [r.failure is None for r in at_t]
        held = [r.time_to_failure_ps if r.failure else r.time_ps for r in at_t]
        per_temperature[f"{temperature:g}"] = {
            "survival_fraction": float(np.mean(survived)),
            "mean_time_held_ps": float(np.mean(held)),
            "min_time_to_failure_ps": min((r.time_to_failure_ps for r in at_t if r.failure),
                                          default=None),
        }
    max_stable = None
    for temperature in temperatures:
        if per_temperature[f"{temperature:g}"]["survival_fraction"] < 1.0:
            break
        max_stable = temperature
    atom_steps = sum(r.steps_done for r in runs) * len(start)
    return {
        "n_atoms": len(start),
        "lattice_constant_A": float(lattice_constant),
        "distance_floor_A": settings.distance_floor(lattice_constant),
        "run_time_ps": settings.steps * settings.timestep_fs / 1000,
        "runs": [{key: value for key, value in asdict(r).items() if key != "snapshots"}
                 for r in runs],
        "per_temperature": per_temperature,
        "max_stable_temperature_K": max_stable,
        "atom_steps_per_s": float(atom_steps / wall) if wall > 0 else None,
        "_snapshots": {r.temperature_K: r.snapshots for r in runs if r.snapshots},
    }


def structure_snapshots(calc, element: str, lattice_constant: float, settings: MDSettings,
                        progress: bool = True, label: str = "") -> Dict[float, List[Atoms]]:
    """Snapshots {T: [Atoms]} at each of ``settings.structure_temperatures_K`` (first seed)."""
    from tqdm.auto import tqdm

    start = diamond(element, lattice_constant, settings.repeat)
    snapshots = {}
    temperatures = [float(t) for t in settings.structure_temperatures_K]
    with tqdm(total=len(temperatures) * settings.steps, desc=f"MD {label}".strip(), unit="step",
              disable=not progress, leave=False) as bar:
        for temperature in temperatures:
            run = run_md(calc, start, temperature, settings.seeds[0], settings, True,
                         bar.update, settings.distance_floor(lattice_constant))
            if run.snapshots:
                snapshots[temperature] = run.snapshots
    return snapshots


def radial_distribution(frames: Sequence[Atoms], r_max: float, bins: int = 120):
    """Radial distribution function g(r) averaged over ``frames``: (r centres in Å, g)."""
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    for atoms in frames:
        counts += np.histogram(neighbour_list("d", atoms, r_max), bins=edges)[0] / len(atoms)
    density = np.mean([len(a) / a.get_volume() for a in frames])
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), counts / (len(frames) * density * shells)


def angular_distribution(frames: Sequence[Atoms], cutoff: float, bins: int = 90):
    """Bond-angle distribution of neighbours within ``cutoff`` Å: (θ centres in degrees,
    probability density per degree, normalised to 1 over 0-180°)."""
    edges = np.linspace(0.0, 180.0, bins + 1)
    counts = np.zeros(bins)
    for atoms in frames:
        first, vectors = neighbour_list("iD", atoms, cutoff)
        for centre in np.unique(first):
            bonds = vectors[first == centre]
            unit = bonds / np.linalg.norm(bonds, axis=1)[:, None]
            upper = np.triu_indices(len(unit), k=1)
            cosines = np.clip((unit @ unit.T)[upper], -1.0, 1.0)
            counts += np.histogram(np.degrees(np.arccos(cosines)), bins=edges)[0]
    width = edges[1] - edges[0]
    density = counts / (counts.sum() * width) if counts.sum() else counts
    return 0.5 * (edges[1:] + edges[:-1]), density


def structure_curves(snapshots: Dict[float, List[Atoms]], lattice_constant: float,
                     settings: MDSettings) -> Dict[str, dict]:
    """RDF and ADF curves per temperature, as JSON-ready lists: {T: {"rdf": ..., "adf": ...}}.

    RDF up to half the shortest cell length (max 6 Å); ADF within ``settings.adf_cutoff_A``
    (default 1.3 x the crystal's nearest-neighbour distance √3/4 a0).
    """
    cutoff = settings.adf_cutoff_A or 1.3 * np.sqrt(3) / 4 * lattice_constant
    curves = {}
    for temperature, frames in snapshots.items():
        r_max = min(6.0, 0.5 * float(np.min(frames[0].cell.lengths())) - 1e-6)
        r, g = radial_distribution(frames, r_max, settings.rdf_bins)
        theta, p = angular_distribution(frames, cutoff, settings.adf_bins)
        curves[f"{temperature:g}"] = {"rdf": {"r_A": r.tolist(), "g": g.tolist()},
                                      "adf": {"theta_deg": theta.tolist(), "p": p.tolist(),
                                              "cutoff_A": float(cutoff)},
                                      "n_frames": len(frames)}
    return curves


def curve_difference(x_model, y_model, x_reference, y_reference) -> Optional[float]:
    """Relative L1 difference ∫|y - y_ref| dx / ∫|y_ref| dx over the reference grid
    (0 = identical; the model curve is interpolated, zero beyond its range)."""
    x_reference = np.asarray(x_reference, dtype=float)
    y_reference = np.asarray(y_reference, dtype=float)
    y_model = np.interp(x_reference, np.asarray(x_model, dtype=float),
                        np.asarray(y_model, dtype=float), left=0.0, right=0.0)
    norm = np.trapezoid(np.abs(y_reference), x_reference)
    if norm <= 0:
        return None
    return float(np.trapezoid(np.abs(y_model - y_reference), x_reference) / norm)
