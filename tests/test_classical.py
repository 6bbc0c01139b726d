"""Physics checks of the classical SW / Tersoff calculators (eV, Å)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.optimize import minimize_scalar

from mace_transfer import UserInputError
from mace_transfer.datagen import classical

PAIRS = [("Si", "sw"), ("Ge", "sw"), ("Si", "tersoff"), ("Ge", "tersoff")]
LATTICE_GUESS = {"Si": 5.43, "Ge": 5.65}


def _rattled_diamond(element, seed=0):
    atoms = bulk(element, "diamond", a=LATTICE_GUESS[element], cubic=True)  # 8 atoms
    atoms.rattle(stdev=0.08, seed=seed)
    return atoms


def test_available_lists_the_four_pairs():
    assert sorted(classical.available()) == sorted(PAIRS)
    assert set(classical.REFERENCE_VALUES) == set(PAIRS)


@pytest.mark.parametrize("element,potential", [("C", "sw"), ("Si", "lj"), ("Ge", "")])
def test_unknown_pair_raises_user_input_error_listing_valid_pairs(element, potential):
    with pytest.raises(UserInputError, match="Si/sw"):
        classical.calculator(element, potential)


def test_names_are_case_insensitive():
    assert classical.calculator("ge", "SW").name == "sw-Ge"


def test_wrong_element_is_refused():
    atoms = bulk("Ge", "diamond", a=5.65, cubic=True)
    atoms.calc = classical.calculator("Si", "sw")
    with pytest.raises(UserInputError, match="only Si"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("element,potential", PAIRS)
def test_forces_match_central_finite_differences(element, potential):
    atoms = _rattled_diamond(element)
    atoms.calc = classical.calculator(element, potential)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.1  # rattled: forces are not trivially zero
    step = 1e-4
    numeric = np.zeros_like(forces)
    for atom in range(len(atoms)):
        for axis in range(3):
            energies = []
            for sign in (+1, -1):
                displaced = atoms.copy()
                displaced.calc = atoms.calc
                displaced.positions[atom, axis] += sign * step
                energies.append(displaced.get_potential_energy())
            numeric[atom, axis] = -(energies[0] - energies[1]) / (2 * step)
    np.testing.assert_allclose(forces, numeric, atol=1e-5)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-9)


@pytest.mark.parametrize("element,potential", [("Si", "sw"), ("Ge", "tersoff")])
def test_stress_matches_strain_derivative(element, potential):
    """sigma_ab = (1/V) dE/d eps_ab for a symmetric strain applied to cell and positions."""
    atoms = _rattled_diamond(element, seed=3)
    atoms.calc = classical.calculator(element, potential)
    stress = atoms.get_stress(voigt=False)
    volume = atoms.get_volume()
    step = 1e-5
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (+1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * step / 2
                strain[b, a] += sign * step / 2
                strained = atoms.copy()
                strained.calc = atoms.calc
                strained.set_cell(atoms.cell @ strain, scale_atoms=True)
                energies.append(strained.get_potential_energy())
            numeric[a, b] = (energies[0] - energies[1]) / (2 * step) / volume
    np.testing.assert_allclose(stress, numeric, atol=1e-6)
    assert np.abs(stress).max() > 1e-3


@pytest.mark.parametrize("element,potential", PAIRS)
def test_diamond_lattice_constant_and_cohesive_energy(element, potential):
    calc = classical.calculator(element, potential)

    def energy_per_atom(lattice_constant):
        atoms = bulk(element, "diamond", a=lattice_constant, cubic=True)
        atoms.calc = calc
        return atoms.get_potential_energy() / len(atoms)

    result = minimize_scalar(energy_per_atom, bounds=(5.2, 6.0), method="bounded",
                             options={"xatol": 1e-6})
    reference = classical.REFERENCE_VALUES[(element, potential)]
    assert result.x == pytest.approx(reference["lattice_constant"], abs=2e-3)
    assert result.fun == pytest.approx(reference["cohesive_energy"], abs=2e-3)


@pytest.mark.parametrize("element,potential", [("Si", "sw"), ("Ge", "sw")])
def test_stillinger_weber_diamond_energy_is_exactly_minus_two_epsilon(element, potential):
    """At r0 = 2^(1/6) sigma the SW pair term is exactly -eps and the three-body term vanishes."""
    params = classical.parameters(element, potential)
    lattice_constant = 4 * 2 ** (1 / 6) * params["sigma"] / np.sqrt(3)
    atoms = bulk(element, "diamond", a=lattice_constant, cubic=True)
    atoms.calc = classical.calculator(element, potential)
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-2 * params["epsilon"], abs=1e-8)
    np.testing.assert_allclose(atoms.get_stress(), 0.0, atol=1e-8)


@pytest.mark.parametrize("element,potential", PAIRS)
def test_isolated_atom_energy(element, potential):
    atom = Atoms(element, positions=[[5.0, 5.0, 5.0]], cell=[10.0] * 3, pbc=False)
    atom.calc = classical.calculator(element, potential)
    assert atom.get_potential_energy() == classical.isolated_atom_energy(element, potential) == 0.0
