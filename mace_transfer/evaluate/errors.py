"""Energy, force and stress errors of a calculator against a labelled extxyz test file.

Part of :mod:`mace_transfer.evaluate`. The test file uses MACE's keys (``REF_energy`` in eV,
``REF_forces`` in eV/Å, ``REF_stress`` in eV/Å³ as ASE's Voigt six-vector xx yy zz yz xz xy,
``config_type``); errors are reported as MAE/RMSE in meV/atom (energy), meV/Å (force components)
and meV/Å³ (stress components; 1 meV/Å³ = 0.1602 GPa), overall, per ``config_type`` and optionally
per group. Stress counts only where the frame has ``REF_stress``, the cell is periodic and the
calculator implements stress.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from mace_transfer import UserInputError


def _read_extxyz(path: Union[str, os.PathLike], what: str) -> List[Atoms]:
    """Frames of an extxyz file without its ``IsolatedAtom`` frames; a one-line UserInputError
    naming ``what`` if the file is missing or unreadable."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} {path} does not exist")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # ASE raises many kinds for a malformed file
        raise UserInputError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from None
    return [a for a in frames if a.info.get("config_type") != "IsolatedAtom"]


def read_test_file(path: Union[str, os.PathLike]) -> List[Atoms]:
    """Frames of an extxyz test file; each must carry ``REF_forces`` (eV/Å).

    Frames with ``config_type=IsolatedAtom`` are dropped: MACE reads them as E0s, not as data.
    """
    frames = _read_extxyz(path, "test file")
    if not frames:
        raise UserInputError(f"test file {path} holds no configurations (besides IsolatedAtom)")
    for index, atoms in enumerate(frames):
        forces = atoms.arrays.get("REF_forces")
        if forces is None or np.shape(forces) != (len(atoms), 3):
            other = " (it has 'forces'; MACE's key is REF_forces)" if (
                atoms.calc is not None and "forces" in atoms.calc.results) else ""
            raise UserInputError(f"test file {path}: configuration {index} has no REF_forces "
                                 f"array{other}")
    return frames


def _error_stats(energy_errors: np.ndarray, force_errors: np.ndarray,
                 stress_errors: Optional[np.ndarray] = None) -> Dict[str, object]:
    """MAE/RMSE of per-atom energy errors (meV/atom), force components (meV/Å) and stress
    components (meV/Å³; None when no frame had a stress to compare)."""
    energy_errors = energy_errors[np.isfinite(energy_errors)] * 1000
    force_errors = force_errors.ravel() * 1000
    stress_errors = np.zeros(0) if stress_errors is None else np.asarray(stress_errors, dtype=float).ravel() * 1000

    def mae(x):
        return float(np.mean(np.abs(x))) if x.size else None

    def rmse(x):
        return float(np.sqrt(np.mean(x**2))) if x.size else None

    return {"energy_mae_meV_per_atom": mae(energy_errors),
            "energy_rmse_meV_per_atom": rmse(energy_errors),
            "force_mae_meV_per_A": mae(force_errors), "force_rmse_meV_per_A": rmse(force_errors),
            "stress_mae_meV_per_A3": mae(stress_errors), "stress_rmse_meV_per_A3": rmse(stress_errors),
            "n_configs": int(len(energy_errors)), "n_force_components": int(force_errors.size),
            "n_stress_configs": int(stress_errors.size // 6)}


def _stress_error(atoms: Atoms, reference) -> Optional[np.ndarray]:
    """Predicted minus reference stress (eV/Å³, Voigt); None when the calculator has none here."""
    from ase.calculators.calculator import PropertyNotImplementedError

    try:
        predicted = atoms.get_stress(voigt=True)
    except PropertyNotImplementedError:
        return None
    reference = np.asarray(reference, dtype=float).reshape(-1)
    if reference.size == 9:  # a full 3x3 matrix
        reference = reference.reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return np.asarray(predicted, dtype=float) - reference


def _stacked(stress_errors) -> np.ndarray:
    """The available stress error rows (eV/Å³) as one array (empty when none)."""
    rows = [e for e in stress_errors if e is not None]
    return np.concatenate(rows) if rows else np.zeros(0)


def test_errors(calc, frames: Sequence[Atoms], progress: bool = True,
                label: str = "", group_by: Optional[Callable[[Atoms], str]] = None) -> Dict[str, object]:
    """Energy/force errors of ``calc`` against ``frames`` (``REF_energy``, ``REF_forces``).

    Overall and per ``config_type`` ("Default" when absent); frames without ``REF_energy``
    count for forces only; stress (Voigt, eV/Å³) where the frame has ``REF_stress``, the cell is
    periodic and ``calc`` implements stress. ``group_by`` (a frame -> key function) adds ``per_group``, the same
    statistics per key, from the same single evaluation. ``_parity`` holds reference and
    predicted force components (eV/Å), ``_energies`` the predicted energy of each frame (eV).
    """
    from tqdm.auto import tqdm

    energy_errors, force_errors, stress_errors, kinds = [], [], [], []
    reference_forces, predicted_forces, predicted_energies = [], [], []
    has_stress = "stress" in getattr(calc, "implemented_properties", ())
    for atoms in tqdm(frames, desc=f"errors {label}".strip(), disable=not progress, leave=False):
        copy = atoms.copy()
        copy.calc = calc
        predicted = np.asarray(copy.get_forces(), dtype=float)
        reference = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        ref_energy = atoms.info.get("REF_energy")
        predicted_energies.append(float(copy.get_potential_energy()))
        energy_errors.append(np.nan if ref_energy is None else (predicted_energies[-1] - float(ref_energy)) / len(atoms))
        force_errors.append(predicted - reference)
        ref_stress = atoms.info.get("REF_stress")
        stress_errors.append(_stress_error(copy, ref_stress) if has_stress and ref_stress is not None
                             and all(atoms.pbc) else None)
        kinds.append(str(atoms.info.get("config_type", "Default")))
        reference_forces.append(reference.ravel())
        predicted_forces.append(predicted.ravel())
    energy_errors = np.asarray(energy_errors)

    def per_key(keys):
        stats = {}
        for key in sorted(set(keys)):
            chosen = [i for i, k in enumerate(keys) if k == key]
            stats[key] = _error_stats(energy_errors[chosen],
                                      np.concatenate([force_errors[i].ravel() for i in chosen]),
                                      _stacked([stress_errors[i] for i in chosen]))
        return stats

    result = {"overall": _error_stats(energy_errors, np.concatenate([f.ravel() for f in force_errors]),
                                      _stacked(stress_errors)),
              "per_config_type": per_key(kinds)}
    if group_by is not None:
        result["per_group"] = per_key([str(group_by(atoms)) for atoms in frames])
    result["_parity"] = {"reference": np.concatenate(reference_forces),
                         "predicted": np.concatenate(predicted_forces)}
    result["_energies"] = np.asarray(predicted_energies)  # eV per frame, for a refit of the zero
    return result


def fit_energy_shift(frames, predicted_energies: Sequence[float], energy_key: str = "REF_energy") -> Dict[str, float]:
    """One constant per element (eV/atom) that moves predicted energies onto the labels' zero:
    least squares of (E_label - E_predicted) on the element counts (exact for one element: the
    mean per-atom difference)."""
    symbols = sorted({s for a in frames for s in a.get_chemical_symbols()})
    counts = np.array([[a.get_chemical_symbols().count(s) for s in symbols] for a in frames], dtype=float)
    residual = np.array([float(a.info[energy_key]) - e for a, e in zip(frames, predicted_energies)])
    solution, *_ = np.linalg.lstsq(counts, residual, rcond=None)
    return {s: float(v) for s, v in zip(symbols, solution)}


def energy_mae_with_fitted_zero(calc, fit_frames: Sequence[Atoms], test_frames: Sequence[Atoms],
                                energy_key: str = "REF_energy",
                                test_energies: Optional[Sequence[float]] = None) -> Dict[str, object]:
    """Test energy MAE (meV/atom) once ``calc``'s energy zero is moved by one constant per element
    fitted on ``fit_frames`` (:func:`fit_energy_shift`): the energy error left after the zero is
    refit on a few cells, as the peers' zero is fitted (``studies.peers``) and as fine-tuning does.
    ``test_energies``: ``calc``'s energies of ``test_frames`` (eV) when already predicted
    (:func:`test_errors` ``["_energies"]``), so the test set is not evaluated twice."""

    def energies(frames):
        found = []
        for atoms in frames:
            copy = atoms.copy()
            copy.calc = calc
            found.append(float(copy.get_potential_energy()))
        return found

    shift = fit_energy_shift(fit_frames, energies(fit_frames), energy_key)
    errors = [(e + sum(shift.get(s, 0.0) for s in a.get_chemical_symbols()) - float(a.info[energy_key])) / len(a)
              for a, e in zip(test_frames, energies(test_frames) if test_energies is None else test_energies)
              if energy_key in a.info]
    return {"energy_mae_meV_per_atom": float(np.mean(np.abs(errors)) * 1000), "shift_eV_per_atom": shift,
            "n_fit_configs": len(fit_frames)}
