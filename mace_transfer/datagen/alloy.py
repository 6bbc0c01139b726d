"""Si(1-x)Ge(x) alloy structures for DFT labelling (issue 18).

Cells: the 16-atom diamond cell (8-atom cubic cell x (2, 1, 1)) at Vegard's lattice constant between
this project's PBE values (:data:`PBE_LATTICE_CONSTANT`, Å), with exactly round(16 x) Ge atoms on
random sites (a new draw for every unit) or, once per x, an ordered arrangement. Geometries come
from Tersoff's 1989 Si-Ge potential (:func:`tersoff_sige_calculator`: the published Si and Ge sets,
Tersoff's mixing rules and chi_SiGe = 1.00061) run by matscipy: Langevin NVT at a temperature
ladder, a liquid (pre-melted far above Tersoff's melting point), strained and vacancy cells.
The Tersoff energies are never labels: the DFT labeller drops them.

Units: Å, K, fs, eV. Every frame carries ``config_type``, ``x_ge`` (its Ge fraction),
``occupation`` (random | ordered), ``sample_index`` and ``sampler_settings`` (hash of the settings).
"""

from __future__ import annotations

import hashlib
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from mace_transfer import UserInputError
from mace_transfer.datagen import classical

#: 0 K PBE lattice constants of this project's labels (Å; data/PROVENANCE.md, docs/DFT.md)
PBE_LATTICE_CONSTANT = {"Si": 5.470, "Ge": 5.783}
#: Tersoff, PRB 39, 5566 (1989): the Si-Ge bond-order scale
CHI_SIGE = 1.00061
ALLOY_VERSION = 1


def tersoff_sige_parameters() -> dict:
    """matscipy 'Tersoff'-style parameters for Si and Ge together (eV, Å): per-pair arrays in
    matscipy's pair order (Si-Si, Si-Ge, Ge-Ge), mixed by Tersoff's rules: A, B, R, S geometric,
    lambda, mu arithmetic, chi_SiGe = 1.00061; beta, n, c, d, h per element."""
    si = classical.parameters("Si", "tersoff")
    ge = classical.parameters("Ge", "tersoff")

    def geometric(key):
        return [si[key][0], float(np.sqrt(si[key][0] * ge[key][0])), ge[key][0]]

    def arithmetic(key):
        return [si[key][0], (si[key][0] + ge[key][0]) / 2, ge[key][0]]

    return {
        "__ref__": "J. Tersoff, Phys. Rev. B 39, 5566 (1989), Si-Ge with chi = 1.00061",
        "style": "Tersoff", "el": ["Si", "Ge"],
        "A": geometric("A"), "B": geometric("B"), "r1": geometric("r1"), "r2": geometric("r2"),
        "lambda": arithmetic("lambda"), "mu": arithmetic("mu"),
        "chi": [1.0, CHI_SIGE, 1.0], "lambda3": [0.0, 0.0, 0.0],
        **{key: [si[key][0], ge[key][0]] for key in ("beta", "n", "c", "d", "h")},
    }


def tersoff_sige_calculator():
    """An ASE calculator (matscipy many-body) for any Si/Ge structure: eV, eV/Å, eV/Å³."""
    import warnings

    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import TersoffBrenner

    class TersoffSiGe(Manybody):
        name = "tersoff-SiGe"

        def calculate(self, *args, **kwargs):
            with warnings.catch_warnings():  # matscipy masks xi == 0 itself (as classical.ClassicalCalculator)
                warnings.filterwarnings("ignore", message="'where' used without 'out'")
                super().calculate(*args, **kwargs)

    form = TersoffBrenner(tersoff_sige_parameters())
    neighbourhood = classical._FastTripletNeighbourhood(atom_types=form["atom_type"], pair_types=form["pair_type"])
    return TersoffSiGe(**form, neighbourhood=neighbourhood)


def vegard_lattice_constant(x_ge: float) -> float:
    """(1 - x) a_Si + x a_Ge (Å), the PBE values of :data:`PBE_LATTICE_CONSTANT`."""
    return (1 - x_ge) * PBE_LATTICE_CONSTANT["Si"] + x_ge * PBE_LATTICE_CONSTANT["Ge"]


def _check_x(x_ge: float, n_sites: int) -> int:
    if not 0.0 <= float(x_ge) <= 1.0:
        raise UserInputError(f"Ge fraction x must be in [0, 1], got {x_ge!r}")
    return int(round(float(x_ge) * n_sites))


def alloy_cell(x_ge: float, rng: Optional[np.random.Generator] = None, ordered: bool = False,
               supercell: Tuple[int, int, int] = (2, 1, 1), lattice_constant: Optional[float] = None) -> Atoms:
    """A diamond Si/Ge cell with exactly round(N x) Ge atoms (Å): on sites drawn by ``rng``, or
    ``ordered``: Ge fills the sites in order of (sublattice, z, y, x), so x = 0.5 puts all Ge on one
    fcc sublattice (the zincblende arrangement) and x = 0.25, 0.75 fill or empty half of it in layers."""
    a = vegard_lattice_constant(x_ge) if lattice_constant is None else float(lattice_constant)
    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(supercell)
    n_ge = _check_x(x_ge, len(atoms))
    if ordered:
        fractional = atoms.get_scaled_positions() * np.array(supercell)  # in cubic-cell units
        sublattice = np.round((fractional * 4) % 2).astype(int).sum(axis=1) % 2  # 0: fcc, 1: fcc + (1/4)^3
        order = np.lexsort((fractional[:, 0], fractional[:, 1], fractional[:, 2], sublattice))
        chosen = order[:n_ge]
    else:
        if rng is None:
            raise UserInputError("a random occupation needs a random generator")
        chosen = rng.choice(len(atoms), size=n_ge, replace=False)
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    symbols[list(chosen)] = "Ge"
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _md(atoms: Atoms, temperature: float, rng, calc, steps: int, snapshots: int, interval: int,
        premelt_temperature: Optional[float] = None, timestep_fs: float = 1.5) -> List[Atoms]:
    """Langevin NVT (friction 0.02/fs) at ``temperature`` K: ``snapshots`` frames every ``interval``
    steps after ``steps`` of equilibration. With ``premelt_temperature``, first melt there in chunks of
    300 steps (at most 10) until 90 % of the atoms left their sites by 0.6 nearest-neighbour distances."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.set_constraint(FixCom())
    sites = atoms.positions.copy()
    nearest = float(np.cbrt(atoms.get_volume() / len(atoms) * 8)) * np.sqrt(3) / 4

    def thermostat(target):
        thermalize_momenta(atoms, temperature_K=target, rng=rng)
        Stationary(atoms)
        return Langevin(atoms, timestep_fs * units.fs, temperature_K=target, friction=0.02 / units.fs,
                        fixcm=False, rng=rng)

    if premelt_temperature:
        melt = thermostat(premelt_temperature)
        for _ in range(10):
            melt.run(300)
            moved = atoms.positions - sites
            moved -= np.round(moved @ np.linalg.inv(atoms.cell.array)) @ atoms.cell.array
            if (np.linalg.norm(moved, axis=1) > 0.6 * nearest).mean() >= 0.9:
                break
    dynamics = thermostat(temperature)
    dynamics.run(steps)
    frames = []
    for _ in range(snapshots):
        dynamics.run(interval)
        frames.append(Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True))
    return frames


def alloy_structures(x_ge: float, n: int, seed: int = 0, *,
                     temperatures: Sequence[float] = (300, 600, 900, 1200, 1500),
                     liquid_temperature: float = 3000.0, max_strain: float = 0.04, rattle: float = 0.05,
                     snapshots_per_unit: int = 2, equilibration_steps: int = 150, snapshot_interval: int = 40,
                     ordered_first: bool = True) -> List[Atoms]:
    """``n`` unlabelled Si(1-x)Ge(x) 16-atom cells for DFT; deterministic in ``seed``.

    Units cycle: MD at each ladder temperature (K; ``md_<T>K``), a liquid (pre-melted at 2x
    ``liquid_temperature``, sampled at it: above Tersoff's melting points, ``liquid``), a strained
    crystal (isotropic or shear up to ``max_strain``, rattled ``rattle`` Å; ``strain``) and a
    one-vacancy cell at 600 K (``vacancy``); every unit draws a new random occupation. With
    ``ordered_first`` frame 0 is the ordered cell at Vegard's a, rattled (``ordered``)."""
    if int(n) < 1:
        raise UserInputError(f"n must be a positive number of structures, got {n!r}")
    settings = dict(version=ALLOY_VERSION, x_ge=float(x_ge), seed=int(seed), temperatures=[float(t) for t in temperatures],
                    liquid_temperature=float(liquid_temperature), max_strain=float(max_strain), rattle=float(rattle),
                    snapshots_per_unit=int(snapshots_per_unit), equilibration_steps=int(equilibration_steps),
                    snapshot_interval=int(snapshot_interval), ordered_first=bool(ordered_first),
                    lattice_constants=PBE_LATTICE_CONSTANT, chi_sige=CHI_SIGE)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    calc = tersoff_sige_calculator()
    kinds = [("md", float(t)) for t in temperatures] + [("liquid", float(liquid_temperature)),
                                                        ("strain", None), ("vacancy", 600.0)]
    frames: List[Tuple[Atoms, str, Optional[float], str]] = []
    if ordered_first:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 999_999]))
        cell = alloy_cell(x_ge, ordered=True)
        cell.positions += rng.normal(0.0, rattle, size=cell.positions.shape)
        frames.append((cell, "ordered", None, "ordered"))
    unit = 0
    while len(frames) < n:
        kind, temperature = kinds[unit % len(kinds)]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), unit]))
        cell = alloy_cell(x_ge, rng)
        if kind in ("md", "liquid"):
            premelt = 2 * temperature if kind == "liquid" else None
            tag = "liquid" if kind == "liquid" else f"md_{temperature:g}K"
            frames += [(f, tag, temperature, "random") for f in _md(cell, temperature, rng, calc, equilibration_steps,
                                                                   snapshots_per_unit, snapshot_interval, premelt)]
        elif kind == "strain":
            for k in range(snapshots_per_unit):
                strained = cell.copy()
                if k % 2:
                    off = rng.uniform(-max_strain, max_strain, size=3)
                    strain = np.array([[0, off[2], off[1]], [off[2], 0, off[0]], [off[1], off[0], 0]])
                else:
                    strain = np.eye(3) * rng.uniform(-max_strain, max_strain)
                strained.set_cell(strained.cell @ (np.eye(3) + strain), scale_atoms=True)
                strained.positions += rng.normal(0.0, rattle, size=strained.positions.shape)
                frames.append((strained, "strain", None, "random"))
        else:
            del cell[int(rng.integers(len(cell)))]
            frames += [(f, "vacancy", temperature, "random") for f in _md(cell, temperature, rng, calc, equilibration_steps,
                                                                         snapshots_per_unit, snapshot_interval)]
        unit += 1
    out = []
    for index, (atoms, tag, temperature, occupation) in enumerate(frames[: int(n)]):
        frame = Atoms(atoms.numbers, positions=np.round(atoms.positions, 8), cell=atoms.cell, pbc=True)
        frame.info.update(config_type=tag, x_ge=float(np.mean(frame.numbers == 32)), occupation=occupation,
                          sample_index=index, sampler_settings=digest)
        if temperature is not None:
            frame.info["temperature_K"] = float(temperature)
        out.append(frame)
    return out


def ev_scan(x_ge: float, strains: Sequence[float] = (-0.03, -0.015, 0.0, 0.015, 0.03), seed: int = 0,
            ordered: bool = False) -> List[Atoms]:
    """One cell (random occupation from ``seed``, or ordered) at Vegard's a scaled by (1 + s) for
    each linear strain s, atoms on ideal sites: the E-V scan behind a0(x) and the mixing energy
    (``config_type`` ``ev_scan``, ``length_scale`` 1 + s)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 123_457]))
    base = alloy_cell(x_ge, None if ordered else rng, ordered=ordered)
    frames = []
    for index, strain in enumerate(strains):
        atoms = base.copy()
        atoms.set_cell(atoms.cell * (1 + float(strain)), scale_atoms=True)
        atoms.info.update(config_type="ev_scan", x_ge=float(np.mean(atoms.numbers == 32)),
                          occupation="ordered" if ordered else "random", length_scale=1 + float(strain),
                          lattice_constant_A=vegard_lattice_constant(x_ge) * (1 + float(strain)),
                          sample_index=index)
        frames.append(atoms)
    return frames


def fit_birch_murnaghan(volumes: Sequence[float], energies: Sequence[float]) -> Dict[str, float]:
    """Third-order Birch-Murnaghan fit: V0 (Å³), E0 (eV), B0 (GPa) of one cell's E-V points."""
    from ase.eos import EquationOfState

    eos = EquationOfState(list(volumes), list(energies), eos="birchmurnaghan")
    v0, e0, b0 = eos.fit()
    return {"V0_A3": float(v0), "E0_eV": float(e0), "B0_GPa": float(b0 / units.GPa)}
