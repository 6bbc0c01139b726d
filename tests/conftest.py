"""Shared fixtures: tiny MACE models with random weights and tiny SW-labelled Si data."""

import mace  # noqa: F401  (import before e3nn: MACE sets torch.load's weights-only default)
import numpy as np
import pytest
import torch
from ase.build import bulk
from e3nn import o3

# tiny models are dominated by per-op overhead: one thread is as fast and does not fight
# over the two cores of a CI machine
torch.set_num_threads(1)


def make_mace_model(
    atomic_numbers,
    interaction="RealAgnosticResidualInteractionBlock",
    *,
    r_max=4.5,
    hidden="8x0e+8x1o",
    correlation=2,
    seed=0,
    dtype=torch.float64,
):
    """A small ScaleShiftMACE with normally distributed weights (every parameter non-trivial)."""
    from mace import modules

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        cls = modules.interaction_classes[interaction]
        first = (
            modules.interaction_classes["RealAgnosticInteractionBlock"]
            if interaction == "RealAgnosticResidualInteractionBlock"
            else cls
        )
        model = modules.ScaleShiftMACE(
            r_max=r_max,
            num_bessel=6,
            num_polynomial_cutoff=5,
            max_ell=2,
            interaction_cls=cls,
            interaction_cls_first=first,
            num_interactions=2,
            num_elements=len(atomic_numbers),
            hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps("8x0e"),
            atomic_energies=np.linspace(-3.0, -5.0, len(atomic_numbers)),
            avg_num_neighbors=8.0,
            atomic_numbers=list(atomic_numbers),
            correlation=correlation,
            gate=torch.nn.functional.silu,
            atomic_inter_scale=1.3,
            atomic_inter_shift=0.2,
        )
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    finally:
        torch.set_default_dtype(previous)
    return model


def energy_forces(model, atoms):
    """(energy eV, forces eV/Å) of ``atoms`` under an in-memory MACE model."""
    from mace_transfer.transfer.estimate import predict

    return predict(model, atoms)


def rattled_diamond(symbol="Si", a=5.43, rattle=0.1, seed=1, repeat=(1, 1, 1)):
    atoms = bulk(symbol, "diamond", a=a, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def labelled(frames, calc, stress=False, **info):
    """Copies of ``frames`` labelled by ``calc``: REF_energy (eV), REF_forces (eV/Å), with
    ``stress`` also REF_stress (eV/Å^3, Voigt); ``info`` added to every frame's info."""
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        if stress:
            atoms.info["REF_stress"] = atoms.get_stress()
        atoms.calc = None
        atoms.info.update(info)
        out.append(atoms)
    return out


def write_sw_si_dataset(path, n=6, seed=0, a=5.43, rattle=0.15):
    """``n`` rattled 8-atom Si cells labelled by matscipy's Stillinger-Weber (REF_ keys)."""
    from ase.io import write
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import StillingerWeber
    from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
        Stillinger_Weber_PRB_31_5262_Si,
    )

    calc = Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))
    rng = np.random.default_rng(seed)
    cells = []
    for i in range(n):
        atoms = bulk("Si", "diamond", a=a * (1 + 0.02 * rng.uniform(-1, 1)), cubic=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        cells.append(atoms)
    frames = labelled(cells, calc, config_type="rattled")
    write(path, frames, format="extxyz")
    return frames


def write_sw_ge_dataset(path, n, seed, stress=False):
    """``n`` rattled 8-atom Ge cells (a within ±2 % of 5.65 Å) labelled by SW-Ge: REF_energy (eV),
    REF_forces (eV/Å), with ``stress`` also REF_stress (eV/Å^3); config_type ``rattled``."""
    from ase.io import write

    from mace_transfer.datagen.classical import calculator

    calc = calculator("Ge", "sw")
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n):
        atoms = bulk("Ge", "diamond", a=5.65 * (1 + 0.02 * rng.uniform(-1, 1)), cubic=True)
        atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
        cells.append(atoms)
    frames = labelled(cells, calc, stress=stress, config_type="rattled")
    write(path, frames, format="extxyz")


@pytest.fixture
def si_model():
    return make_mace_model([14])
