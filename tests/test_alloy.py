"""SiGe alloy structures (issue 18): Tersoff's Si-Ge potential and the alloy cells for DFT."""

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from mace_transfer import UserInputError
from mace_transfer.datagen import alloy, classical


@pytest.mark.parametrize("element", ["Si", "Ge"])
def test_sige_tersoff_is_the_pure_potential_on_a_pure_cell(element):
    """Mixing rules touch only mixed pairs: a pure cell gets exactly the one-element Tersoff."""
    atoms = bulk(element, "diamond", a=5.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.08, seed=3)
    mixed, pure = atoms.copy(), atoms.copy()
    mixed.calc = alloy.tersoff_sige_calculator()
    pure.calc = classical.calculator(element, "tersoff")
    assert mixed.get_potential_energy() == pure.get_potential_energy()
    assert np.array_equal(mixed.get_forces(), pure.get_forces())


def test_sige_tersoff_forces_and_stress_are_derivatives_of_its_energy():
    atoms = alloy.alloy_cell(0.5, np.random.default_rng(0))
    atoms.rattle(0.07, seed=1)
    atoms.calc = alloy.tersoff_sige_calculator()
    forces, stress = atoms.get_forces(), atoms.get_stress()
    step = 1e-4
    for index, axis in ((0, 0), (5, 2), (11, 1)):
        shifted = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[index, axis] += sign * step
            shifted.append(moved.get_potential_energy())
        assert forces[index, axis] == pytest.approx(-(shifted[0] - shifted[1]) / (2 * step), abs=1e-5)
    strained = []
    for sign in (1, -1):  # uniaxial xx strain: sigma_xx = dE/d(eps_xx) / V
        moved = atoms.copy()
        moved.calc = atoms.calc
        moved.set_cell(atoms.cell @ np.diag([1 + sign * step, 1, 1]), scale_atoms=True)
        strained.append(moved.get_potential_energy())
    assert stress[0] == pytest.approx((strained[0] - strained[1]) / (2 * step) / atoms.get_volume(), abs=1e-6)


def test_mixed_bond_is_not_the_average_pair():
    """A lone Si-Ge dimer: Tersoff's geometric/arithmetic mixing plus chi_SiGe = 1.00061 give a bond
    energy between the Si-Si and Ge-Ge ones (and not their mean exactly)."""
    from ase import Atoms

    def dimer(pair):
        atoms = Atoms(pair, positions=[[0, 0, 0], [2.4, 0, 0]], cell=[20, 20, 20], pbc=False)
        atoms.calc = alloy.tersoff_sige_calculator()
        return atoms.get_potential_energy()

    si, ge, mixed = dimer("Si2"), dimer("Ge2"), dimer("SiGe")
    assert min(si, ge) < mixed < max(si, ge)
    assert mixed != pytest.approx((si + ge) / 2, abs=1e-6)


def test_alloy_cells_hold_the_composition_and_the_ordered_cell_is_zincblende():
    for x in (0.25, 0.5, 0.75):
        cell = alloy.alloy_cell(x, np.random.default_rng(4))
        assert (cell.numbers == 32).sum() == round(16 * x) and len(cell) == 16
        assert cell.cell.lengths()[1] == pytest.approx(alloy.vegard_lattice_constant(x))
    ordered = alloy.alloy_cell(0.5, ordered=True)
    i, j = neighbor_list("ij", ordered, 0.5 * (3 ** 0.5 / 4 + 2 ** 0.5 / 2) * ordered.cell.lengths()[1])
    assert len(i) == 4 * 16  # four nearest neighbours each
    assert not ((ordered.numbers[i] == 32) & (ordered.numbers[j] == 32)).any()  # Ge bonds only to Si
    assert alloy.vegard_lattice_constant(0) == 5.470 and alloy.vegard_lattice_constant(1) == 5.783
    with pytest.raises(UserInputError, match="in \\[0, 1\\]"):
        alloy.alloy_cell(1.5, np.random.default_rng(0))


def test_alloy_structures_are_deterministic_and_tagged():
    first = alloy.alloy_structures(0.25, 6, seed=2, equilibration_steps=20, snapshot_interval=5)
    again = alloy.alloy_structures(0.25, 6, seed=2, equilibration_steps=20, snapshot_interval=5)
    other = alloy.alloy_structures(0.25, 6, seed=3, equilibration_steps=20, snapshot_interval=5)
    assert all(np.array_equal(a.positions, b.positions) and np.array_equal(a.numbers, b.numbers)
               for a, b in zip(first, again))
    assert not np.array_equal(first[1].positions, other[1].positions)
    assert [f.info["config_type"] for f in first] == ["ordered", "md_300K", "md_300K", "md_600K", "md_600K", "md_900K"]
    assert all(f.info["x_ge"] == 0.25 and f.info["sample_index"] == k for k, f in enumerate(first))
    assert first[1].info["occupation"] == "random" and first[0].info["occupation"] == "ordered"


def test_ev_scan_scales_the_volume():
    frames = alloy.ev_scan(0.5)
    volumes = np.array([f.get_volume() for f in frames])
    expected = frames[2].get_volume() * (1 + np.array([-0.03, -0.015, 0.0, 0.015, 0.03])) ** 3
    assert volumes == pytest.approx(expected, rel=1e-12)
    assert all(np.array_equal(f.numbers, frames[0].numbers) for f in frames)
    fit = alloy.fit_birch_murnaghan(volumes, (volumes - volumes[2]) ** 2 * 1e-3 - 70.0)
    assert fit["V0_A3"] == pytest.approx(volumes[2], rel=1e-3)
