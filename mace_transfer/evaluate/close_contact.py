"""Close-contact scan: energy (eV) as one bond of the crystal is compressed.

Part of :mod:`mace_transfer.evaluate`. Reads a labelled scan (extxyz with
``info["pair_distance_A"]``, from ``scripts/make_close_contact.py``) and tells whether a
calculator has a short-range wall: energies in eV relative to the longest pair, distances in Å.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from mace_transfer import UserInputError
from mace_transfer.evaluate.errors import _read_extxyz


def read_close_contact_file(path: Union[str, os.PathLike]) -> List[Atoms]:
    """Frames of a close-contact scan (extxyz, ``info["pair_distance_A"]`` on each), longest pair first."""
    frames = _read_extxyz(path, "close-contact file")
    if len(frames) < 2:
        raise UserInputError(f"close-contact file {path} needs at least two frames")
    for index, atoms in enumerate(frames):
        if "pair_distance_A" not in atoms.info:
            raise UserInputError(f"close-contact file {path}: frame {index} has no pair_distance_A "
                                 "(make it with scripts/make_close_contact.py)")
    return sorted(frames, key=lambda a: -float(a.info["pair_distance_A"]))


def _softening_distance(distances: np.ndarray, energies: np.ndarray) -> Optional[float]:
    """The longest pair distance (Å) at which the energy falls as the pair closes further, or None."""
    for k in range(1, len(distances)):
        if energies[k] < energies[k - 1]:
            return float(distances[k - 1])
    return None


def close_contact_curve(calc, frames: Sequence[Atoms]) -> Dict[str, object]:
    """Energies (eV) of the scan relative to its longest-pair frame, for ``calc`` and, where the
    frames carry ``REF_energy``, for the reference; ``softening_A``: where the energy first falls as
    the pair closes (None: a wall over the whole scan); ``max_abs_error_eV`` vs the reference."""
    distances = np.array([float(a.info["pair_distance_A"]) for a in frames])
    energies = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        energies.append(float(atoms.get_potential_energy()))
    energies = np.array(energies) - energies[0]
    out: Dict[str, object] = {"distance_A": distances.tolist(), "energy_eV": energies.tolist(),
                              "softening_A": _softening_distance(distances, energies)}
    if all("REF_energy" in a.info for a in frames):
        reference = np.array([float(a.info["REF_energy"]) for a in frames])
        reference -= reference[0]
        out["reference_eV"] = reference.tolist()
        out["reference_softening_A"] = _softening_distance(distances, reference)
        out["max_abs_error_eV"] = float(np.max(np.abs(energies - reference)))
    return out
