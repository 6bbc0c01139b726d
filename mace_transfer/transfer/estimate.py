"""What a transferred start estimates from the target data (the model itself is built in :mod:`.remap`).

* the corresponding-states scales, length s and energy k (:func:`estimate_corresponding_states`), from the
  target structures' size against the source element's crystal at the source model's minimum (Å) and a
  least-squares fit of the target forces (eV/Å);
* MACE's ``--E0s average`` (:func:`average_e0s`, eV per element);
* the per-atom energy shift that zeroes the remapped model's mean energy error on the training data
  (:func:`refit_energy_shift`, eV/atom).

:func:`predict` evaluates an in-memory MACE model on one structure (energy in eV, forces in eV/Å).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase.data import chemical_symbols

from mace_transfer import UserInputError
from mace_transfer.transfer.remap import (
    ElementLike,
    check_model,
    model_elements,
    parse_element_map,
    symbols,
    to_atomic_number,
)

__all__ = [
    "predict",
    "nearest_neighbour_distance",
    "atomic_length",
    "equilibrium_nearest_neighbour",
    "estimate_corresponding_states",
    "average_e0s",
    "refit_energy_shift",
]


# ----------------------------------------------------------------------------- corresponding states
def predict(model: torch.nn.Module, atoms) -> Tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of ``atoms`` under an in-memory MACE model.

    A direct call on MACE's own data pipeline (no TorchScript compile, unlike MACECalculator),
    in the model's dtype; the model is not modified.
    """
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable, torch_geometric

    dtype = next(model.parameters()).dtype
    table = AtomicNumberTable(model_elements(model))
    unknown = sorted(set(int(z) for z in atoms.numbers) - set(table.zs))
    if unknown:
        raise UserInputError(f"model has no {symbols(unknown)} (it has {symbols(table.zs)})")
    config = mace_data.config_from_atoms(atoms)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        data = mace_data.AtomicData.from_config(config, z_table=table, cutoff=float(model.r_max))
        batch = next(iter(torch_geometric.dataloader.DataLoader([data], batch_size=1)))
    finally:
        torch.set_default_dtype(previous)
    device = next(model.parameters()).device
    out = model(batch.to(device).to_dict(), compute_force=True, training=False)
    return float(out["energy"].detach().sum()), out["forces"].detach().cpu().numpy()


def nearest_neighbour_distance(atoms_list: Sequence) -> float:
    """Median over all atoms of the distance to the nearest neighbour (Å)."""
    from ase.neighborlist import neighbor_list

    nearest = []
    for atoms in atoms_list:
        i, d = neighbor_list("id", atoms, 6.0)
        if len(d) == 0:
            continue
        per_atom = np.full(len(atoms), np.inf)
        np.minimum.at(per_atom, i, d)
        nearest.extend(per_atom[np.isfinite(per_atom)])
    if not nearest:
        raise UserInputError("no neighbours within 6 Å in the target data: cannot estimate a length scale")
    return float(np.median(nearest))


def atomic_length(atoms_list: Sequence) -> float:
    """Median over structures of (volume per atom)^(1/3) (Å); all structures fully periodic."""
    lengths = [(atoms.get_volume() / len(atoms)) ** (1 / 3) for atoms in atoms_list if len(atoms) > 1]
    if not lengths:
        raise UserInputError("no periodic structures to estimate a length scale from")
    return float(np.median(lengths))


def _source_equilibrium_crystal(model: torch.nn.Module, element: ElementLike):
    """``element``'s ASE reference crystal (``ase.build.bulk``) at the model's energy minimum.

    The cell is scaled isotropically over ±8 % and the minimum found by an equation-of-state fit.
    """
    from ase.build import bulk
    from ase.eos import EquationOfState

    symbol = chemical_symbols[to_atomic_number(element)]
    try:
        ref = bulk(symbol)
    except Exception as exc:  # noqa: BLE001
        raise UserInputError(f"no ASE reference crystal for {symbol}: {exc}") from None
    volumes, energies = [], []
    for f in np.linspace(0.92, 1.08, 9):
        atoms = ref.copy()
        atoms.set_cell(ref.cell * f, scale_atoms=True)
        volumes.append(atoms.get_volume())
        energies.append(predict(model, atoms)[0])
    try:
        v0, _, _ = EquationOfState(volumes, energies).fit()
    except ValueError as exc:  # ASE: 'No minimum!' for a model whose crystal has no minimum within ±8 %
        raise UserInputError(f"the source model's {symbol} crystal has no energy minimum between 0.92 and 1.08 "
                             f"times ASE's reference lattice ({exc}); give --length_scale and --energy_scale "
                             "or --corresponding_states False") from None
    atoms = ref.copy()
    atoms.set_cell(ref.cell * (v0 / ref.get_volume()) ** (1 / 3), scale_atoms=True)
    return atoms


def equilibrium_nearest_neighbour(model: torch.nn.Module, element: ElementLike) -> float:
    """Nearest-neighbour distance (Å) of ``element``'s reference crystal at the model's minimum."""
    return nearest_neighbour_distance([_source_equilibrium_crystal(model, element)])


def estimate_corresponding_states(
    model: torch.nn.Module,
    element_map: Union[str, Mapping[ElementLike, ElementLike]],
    target_atoms: Sequence,
    *,
    forces_key: str = "REF_forces",
    length_scale: Optional[float] = None,
) -> Dict[str, float]:
    """Estimate the corresponding-states scales s (length) and k (energy) from target data.

    * s (skipped when ``length_scale`` is given), against the source element's ASE reference
      crystal at the source model's equilibrium: for fully periodic target data, the ratio of
      (volume per atom)^(1/3), median over target structures (exact for a crystal and its MD
      snapshots at fixed cell); otherwise the ratio of median nearest-neighbour distances (biased
      low by thermal motion: the nearest of four vibrating neighbours is closer than the mean).
    * k from forces, which do not depend on E0s: with F_new(R) = (k/s)·F_src(R/s),
      k = s·Σ F_target·F_src / Σ F_src·F_src, where F_src is the source model on each target
      structure shrunk by 1/s with target species mapped back to source species (eV/Å).
    """
    mapping = parse_element_map(element_map)
    inverse = {t: s for s, t in mapping.items()}
    frames = list(target_atoms)
    if not frames:
        raise UserInputError("no target structures to estimate corresponding states from")
    details: Dict[str, float] = {}
    if length_scale is None:
        if len(mapping) != 1:
            raise UserInputError("'auto' length scale needs a single source:target pair")
        (source,) = mapping
        crystal = _source_equilibrium_crystal(model, source)
        if all(atoms.pbc.all() for atoms in frames):
            d_target, d_source = atomic_length(frames), atomic_length([crystal])
            details["method"] = "volume per atom"
        else:
            d_target = nearest_neighbour_distance(frames)
            d_source = nearest_neighbour_distance([crystal])
            details["method"] = "nearest-neighbour distance"
        length_scale = d_target / d_source
        details.update(length_target=d_target, length_source=d_source)
    num = den = 0.0
    for atoms in frames:
        if forces_key not in atoms.arrays:
            raise UserInputError(f"target structure without {forces_key!r} forces")
        f_target = np.asarray(atoms.arrays[forces_key])
        shrunk = atoms.copy()
        shrunk.calc = None
        shrunk.numbers = [inverse.get(int(z), int(z)) for z in shrunk.numbers]
        shrunk.set_cell(shrunk.cell / length_scale, scale_atoms=True)
        f_src = predict(model, shrunk)[1]
        num += float(np.sum(f_target * f_src))
        den += float(np.sum(f_src * f_src))
    if den <= 0:
        raise UserInputError("source model gives zero forces on the target data: cannot fit k")
    energy_scale = length_scale * num / den
    if energy_scale <= 0:
        raise UserInputError(f"fitted energy scale {energy_scale:.3g} is not positive")
    details.update(length_scale=float(length_scale), energy_scale=float(energy_scale))
    return details


def average_e0s(frames: Sequence, *, energy_key: str = "REF_energy") -> Dict[int, float]:
    """{Z: E0 in eV} as MACE's ``--E0s average`` computes them: the least-squares solution of
    E = Σ_Z n_Z E0_Z over ``frames`` (isolated-atom frames left out, as MACE does)."""
    frames = [a for a in frames if a.info.get("config_type") != "IsolatedAtom"]
    zs = sorted({int(z) for atoms in frames for z in atoms.numbers})
    if not frames or any(energy_key not in a.info for a in frames):
        raise UserInputError(f"--E0s average needs {energy_key!r} on every training structure")
    counts = np.array([[np.count_nonzero(a.numbers == z) for z in zs] for a in frames], dtype=float)
    energies = np.array([float(a.info[energy_key]) for a in frames])
    solution = np.linalg.lstsq(counts, energies, rcond=None)[0]
    return {z: float(e) for z, e in zip(zs, solution)}


def refit_energy_shift(
    model: torch.nn.Module, frames: Sequence, *, energy_key: str = "REF_energy"
) -> Tuple[torch.nn.Module, float]:
    """A copy of ``model`` whose per-atom energy shift absorbs its mean error on ``frames``.

    delta = Σ(E_ref - E_model) / Σ N_atoms (eV/atom) is added to the ScaleShift block's shift,
    so the model's mean energy error on ``frames`` becomes zero while forces are unchanged. This
    keeps the first fine-tuning steps from spending the transferred weights on a constant energy
    offset between elements. Returns (new model, delta in eV/atom).
    """
    import copy

    check_model(model)
    present = sorted({int(z) for atoms in frames for z in atoms.numbers})
    missing = [z for z in present if z not in model_elements(model)]
    if missing:
        raise UserInputError(
            f"training data has {symbols(missing)}, which the remapped model "
            f"({symbols(model_elements(model))}) lacks: check the element map"
        )
    residual, atoms_total = 0.0, 0
    for atoms in frames:
        if energy_key not in atoms.info:
            raise UserInputError(f"training structure without {energy_key!r}: cannot refit the energy shift")
        residual += float(atoms.info[energy_key]) - predict(model, atoms)[0]
        atoms_total += len(atoms)
    if atoms_total == 0:
        raise UserInputError("no training structures to refit the energy shift on")
    delta = residual / atoms_total
    new = copy.deepcopy(model)
    with torch.no_grad():
        new.scale_shift.shift += delta
    return new, delta
