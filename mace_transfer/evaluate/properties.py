"""Crystal properties of diamond-structure Si/Ge from any ASE calculator.

Part of :mod:`mace_transfer.evaluate`. Units: Å, eV, GPa, THz. Every function takes a
calculator and an element symbol and builds its own cells, so a MACE model and a classical
reference are measured in exactly the same way.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Optional, Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.data import atomic_numbers, reference_states
from ase.eos import EquationOfState
from ase.optimize import LBFGS

from mace_transfer import UserInputError

#: property name -> (human label, unit); the order is the order of the summary tables
PROPERTY_LABELS = {
    "lattice_constant_A": ("lattice constant a0", "Å"),
    "bulk_modulus_GPa": ("bulk modulus B (E-V fit)", "GPa"),
    "cohesive_energy_eV": ("cohesive energy", "eV/atom"),
    "C11_GPa": ("C11", "GPa"),
    "C12_GPa": ("C12", "GPa"),
    "C44_relaxed_GPa": ("C44 (relaxed: internal sublattice relaxation)", "GPa"),
    "C44_unrelaxed_GPa": ("C44^0 (unrelaxed, ions clamped)", "GPa"),
    "vacancy_formation_eV": ("vacancy formation energy (relaxed, 64-atom cell)", "eV"),
    "vacancy_formation_unrelaxed_eV": ("vacancy formation energy (unrelaxed)", "eV"),
    "phonon_gamma_optical_THz": ("phonon Γ optical", "THz"),
    "phonon_X_TA_THz": ("phonon X TA", "THz"),
    "phonon_X_LA_THz": ("phonon X LA", "THz"),
    "phonon_X_TO_THz": ("phonon X TO", "THz"),
}

_EV_TO_THZ = units._e / units._hplanck / 1e12  # frequency (THz) of a quantum of 1 eV


def guess_lattice_constant(element: str) -> float:
    """Experimental cubic lattice constant of ``element`` from ASE's table (Å); 5.5 if unknown."""
    state = reference_states[atomic_numbers[element]] or {}
    return float(state.get("a", 5.5))


def diamond(element: str, lattice_constant: float, repeat: int = 1) -> Atoms:
    """Cubic diamond cell, ``8 * repeat**3`` atoms, lattice constant in Å."""
    return bulk(element, "diamond", a=lattice_constant, cubic=True).repeat(repeat)


def _energy(atoms: Atoms, calc) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _stress(atoms: Atoms) -> np.ndarray:
    """Voigt stress (eV/Å³, ASE sign: positive is tensile); numerical if the calculator has none."""
    try:
        return np.asarray(atoms.get_stress(voigt=True), dtype=float)
    except PropertyNotImplementedError:
        return np.asarray(atoms.calc.calculate_numerical_stress(atoms, voigt=True), dtype=float)


def _relax(atoms: Atoms, fmax: float, steps: int) -> bool:
    """Relax positions at fixed cell; True when forces fell below ``fmax`` (eV/Å)."""
    optimizer = LBFGS(atoms, logfile=None)
    return bool(optimizer.run(fmax=fmax, steps=steps))


#: a model's lone-atom energy within this of its E0 (eV) counts as knowing the isolated atom
LONE_ATOM_TOLERANCE_EV = 1e-3


def isolated_atom_reference(calc, element: str) -> Optional[float]:
    """The isolated-atom energy (eV) a MACE calculator's model carries for ``element`` (its E0), or
    None for a calculator that carries none (a classical potential: its lone atom is exact)."""
    models = getattr(calc, "models", None)
    if not models or not hasattr(models[0], "atomic_energies_fn"):
        return None
    model = models[0]
    numbers = [int(z) for z in model.atomic_numbers]
    z = atomic_numbers[element]
    if z not in numbers:
        return None
    energies = model.atomic_energies_fn.atomic_energies.detach().reshape(-1, len(numbers))
    return float(energies[-1, numbers.index(z)])


def lattice_and_bulk_modulus(calc, element: str, guess: Optional[float] = None,
                             strain: float = 0.02, n_points: int = 9) -> Dict[str, float]:
    """Equilibrium lattice constant (Å), bulk modulus (GPa) and cohesive energy (eV/atom).

    A bounded 1-D search over ``a`` in [0.8, 1.25] x ``guess`` finds the minimum of the
    8-atom cubic cell's energy; a Birch-Murnaghan E-V fit (``ase.eos``) over lattice
    constants within ±``strain`` of it gives a0 and B. The cohesive energy is that of an
    isolated atom minus the crystal's energy per atom (positive when bound); it is left out (with
    ``cohesive_energy_note``) for a MACE model whose lone atom is not its E0: such a model never saw
    an isolated atom, its lone-atom energy is an extrapolation (eV off).
    """
    from scipy.optimize import minimize_scalar

    guess = guess or guess_lattice_constant(element)
    cell8 = diamond(element, 1.0)
    scaled = cell8.get_scaled_positions()

    def energy_per_atom(a: float) -> float:
        atoms = cell8.copy()
        atoms.set_cell(np.eye(3) * a)
        atoms.set_scaled_positions(scaled)
        return _energy(atoms, calc) / len(atoms)

    bounds = (0.8 * guess, 1.25 * guess)
    best = minimize_scalar(energy_per_atom, bounds=bounds, method="bounded",
                           options={"xatol": 1e-4})
    a_min = float(best.x)
    lattice = a_min * np.linspace(1 - strain, 1 + strain, n_points)
    energies = [energy_per_atom(a) * 8 for a in lattice]
    v0, e0, modulus = EquationOfState(lattice**3, energies, eos="birchmurnaghan").fit()
    isolated = Atoms(element, positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 20.0, pbc=False)
    result = {
        "lattice_constant_A": float(v0 ** (1 / 3)),
        "bulk_modulus_GPa": float(modulus / units.GPa),
    }
    lone, reference = _energy(isolated, calc), isolated_atom_reference(calc, element)
    if reference is None or abs(lone - reference) <= LONE_ATOM_TOLERANCE_EV:
        result["cohesive_energy_eV"] = float(lone - e0 / 8)
    else:  # the lone atom is an extrapolation of this model: no cohesive energy to compare
        result["cohesive_energy_note"] = (
            f"not reported: the model's lone {element} atom is {lone - reference:+.3f} eV from its E0 "
            "(never trained on an isolated atom)")
    if min(abs(a_min - bounds[0]), abs(a_min - bounds[1])) < 1e-3 * guess:
        result["warning"] = f"energy minimum at the search bound a={a_min:.3f} Å: no bound crystal?"
    return result


def elastic_constants(calc, element: str, lattice_constant: float, strain: float = 0.005,
                      fmax: float = 1e-4, steps: int = 200) -> Dict[str, float]:
    """Cubic C11, C12, relaxed C44 and unrelaxed C44^0 (GPa) from central finite strains.

    Stress-strain on the 8-atom cell at ``lattice_constant``: ``±strain`` along xx gives
    C11 = dσxx/dεxx and C12 = dσyy/dεxx; a symmetric shear εyz = εzy = ±strain gives
    C44 = dσyz/dγyz with γyz = 2εyz, once with the ions clamped (C44^0) and once with the
    positions relaxed at fixed cell to ``fmax`` eV/Å (C44, the diamond sublattice's internal
    relaxation; Kleinman). Uniaxial strain along a cube axis drives no internal relaxation
    in diamond, yet those cells are relaxed too, for symmetry of treatment.
    """
    base = diamond(element, lattice_constant)

    def stress_at(strain_tensor: np.ndarray, relax: bool) -> np.ndarray:
        atoms = base.copy()
        atoms.set_cell(base.cell.array @ (np.eye(3) + strain_tensor), scale_atoms=True)
        atoms.calc = calc
        if relax:
            _relax(atoms, fmax, steps)
        return _stress(atoms) / units.GPa

    uniaxial = np.zeros((3, 3))
    uniaxial[0, 0] = strain
    shear = np.zeros((3, 3))
    shear[1, 2] = shear[2, 1] = strain
    plus, minus = stress_at(uniaxial, True), stress_at(-uniaxial, True)
    c11 = (plus[0] - minus[0]) / (2 * strain)
    c12 = (plus[1] - minus[1]) / (2 * strain)
    shear_plus, shear_minus = stress_at(shear, True), stress_at(-shear, True)
    clamped_plus, clamped_minus = stress_at(shear, False), stress_at(-shear, False)
    return {
        "C11_GPa": float(c11),
        "C12_GPa": float(c12),
        "C44_relaxed_GPa": float((shear_plus[3] - shear_minus[3]) / (4 * strain)),
        "C44_unrelaxed_GPa": float((clamped_plus[3] - clamped_minus[3]) / (4 * strain)),
    }


def vacancy_formation_energy(calc, element: str, lattice_constant: float, repeat: int = 2,
                             fmax: float = 0.01, steps: int = 500, inward: float = 0.5,
                             rattle: float = 0.02, seed: int = 0) -> Dict[str, float]:
    """Vacancy formation energy (eV) at fixed cell: E(N-1) - (N-1)/N E(N), relaxed and not.

    The default ``repeat=2`` is the 64-atom cubic cell; positions relax to ``fmax`` eV/Å
    from two starts, and the lower energy counts: the ideal vacancy and one whose four
    neighbours are moved ``inward`` Å towards the empty site, both rattled by ``rattle`` Å
    (seeded). The second start matters: Stillinger-Weber exerts no force on the neighbours
    of an ideal vacancy, which is a local minimum 1.5 eV above the reconstructed one.
    """
    from ase.geometry import find_mic

    perfect = diamond(element, lattice_constant, repeat)
    n_atoms = len(perfect)
    e_perfect = _energy(perfect, calc)
    ideal = perfect.copy()
    site = ideal.positions[0].copy()
    del ideal[0]
    result = {"vacancy_formation_unrelaxed_eV":
              float(_energy(ideal, calc) - (n_atoms - 1) / n_atoms * e_perfect)}
    vectors, distances = find_mic(ideal.positions - site, ideal.cell, pbc=True)
    neighbours = np.argsort(distances)[:4]
    relaxed, converged = [], []
    for shift in (0.0, inward):
        defect = ideal.copy()
        defect.positions[neighbours] -= shift * vectors[neighbours] / distances[neighbours, None]
        defect.rattle(stdev=rattle, seed=seed)
        defect.calc = calc
        converged.append(_relax(defect, fmax, steps))
        relaxed.append(float(defect.get_potential_energy()))
    best = int(np.argmin(relaxed))
    result["vacancy_formation_eV"] = relaxed[best] - (n_atoms - 1) / n_atoms * e_perfect
    if not converged[best]:
        result["warning"] = f"vacancy relaxation not converged to {fmax} eV/Å in {steps} steps"
    return result


def phonons_gamma_x(calc, element: str, lattice_constant: float, supercell: int = 2,
                    delta: float = 0.01) -> Dict[str, float]:
    """Diamond phonon frequencies (THz) at Γ (optical) and X (TA, LA, TO), via ``ase.phonons``.

    Finite displacements of ``delta`` Å in a ``supercell``³ repeat of the 2-atom primitive
    cell. X = (½, 0, ½) in the primitive reciprocal basis is commensurate with any even
    ``supercell``, so Γ and X are exact (harmonic) however short the supercell. At X the six
    branches sort as TA (2), LA = LO (2), TO (2). Imaginary modes come out negative.
    """
    from ase.phonons import Phonons

    if supercell % 2:
        raise ValueError("supercell must be even for X to be commensurate")
    primitive = bulk(element, "diamond", a=lattice_constant)
    with tempfile.TemporaryDirectory(prefix="mace_transfer_phonons_") as scratch:
        phonons = Phonons(primitive, calc, supercell=(supercell,) * 3, delta=delta,
                          name=os.path.join(scratch, "phonon"))
        phonons.run()
        phonons.read(acoustic=True)
        frequencies = phonons.band_structure([[0, 0, 0], [0.5, 0, 0.5]], verbose=False)
    gamma, x_point = (np.sort(np.real(f)) * _EV_TO_THZ for f in frequencies)
    return {
        "phonon_gamma_optical_THz": float(np.mean(gamma[3:])),
        "phonon_X_TA_THz": float(np.mean(x_point[0:2])),
        "phonon_X_LA_THz": float(np.mean(x_point[2:4])),
        "phonon_X_TO_THz": float(np.mean(x_point[4:6])),
        "phonon_gamma_acoustic_max_abs_THz": float(np.max(np.abs(gamma[:3]))),
    }


# --------------------------------------------------------------------------- all of them
def crystal_properties(calc, element: str, skip: Sequence[str] = (),
                       lattice_guess: Optional[float] = None, say=None) -> Dict[str, object]:
    """Diamond-crystal properties of ``calc`` (see :data:`PROPERTY_LABELS` for keys and units).

    Elastic constants, vacancy and phonons are measured at the calculator's own a0 (or at
    ``lattice_guess`` when ``"lattice"`` is skipped). Non-fatal notes land in ``warnings``.
    """
    say = say or (lambda message: None)
    values: Dict[str, object] = {}
    warnings = []
    a0 = lattice_guess or guess_lattice_constant(element)
    steps = [("lattice", lambda: lattice_and_bulk_modulus(calc, element, a0)),
             ("elastic", lambda: elastic_constants(calc, element, a0)),
             ("vacancy", lambda: vacancy_formation_energy(calc, element, a0)),
             ("phonons", lambda: phonons_gamma_x(calc, element, a0))]
    for name, compute in steps:
        if name in skip:
            continue
        say(f"  {name}")
        try:
            measured = compute()
        except UserInputError:
            raise
        except Exception as exc:  # a broken model must not sink the whole report
            warnings.append(f"{name} failed: {type(exc).__name__}: {exc}")
            continue
        if "warning" in measured:
            warnings.append(f"{name}: {measured.pop('warning')}")
        values.update(measured)
        if name == "lattice":
            a0 = values["lattice_constant_A"]
    if warnings:
        values["warnings"] = warnings
    return values
