"""A committee of MACE models: its calculator, the force uncertainty from its spread, and one member's
fine-tune as an executor task.

Uncertainty (eV/Å). For a committee of K models with forces F_k (n atoms x 3), MACE's committee
calculator returns ``forces_comm`` (K x n x 3). The force uncertainty of atom i is the committee's
standard deviation of its force vector, sigma_i = sqrt(sum_alpha var_k F_k,i,alpha) (population
variance, as MACE's ``forces_var``); a structure's uncertainty is the largest sigma_i of its atoms (a
vacancy or a short contact is local: a mean over atoms would dilute it). The mean sigma_i is kept beside it.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError

logger = logging.getLogger(__name__)


def atom_uncertainties(forces_comm: np.ndarray) -> np.ndarray:
    """sigma_i (eV/Å) of each atom from committee forces ``forces_comm`` (K x n x 3, eV/Å)."""
    forces = np.asarray(forces_comm, dtype=float)
    if forces.ndim != 3 or forces.shape[0] < 2:
        raise ValueError(f"need committee forces of shape (K >= 2, n, 3), got {forces.shape}")
    return np.sqrt(forces.var(axis=0).sum(axis=-1))


def structure_uncertainty(forces_comm: np.ndarray) -> Dict[str, float]:
    """``{"max": largest sigma_i, "mean": mean sigma_i}`` in eV/Å; non-finite forces give +inf."""
    sigma = atom_uncertainties(forces_comm)
    if not np.all(np.isfinite(sigma)):
        return {"max": float("inf"), "mean": float("inf")}
    return {"max": float(sigma.max()), "mean": float(sigma.mean())}


def committee_calculator(model_paths: Sequence[os.PathLike], device: str = "cpu"):
    """MACE's own ``MACECalculator`` over ``model_paths`` (float64): energy and forces are the committee
    mean; with two or more models its results also hold ``forces_comm`` (K x n x 3)."""
    import mace  # noqa: F401  (registers MACE's classes before unpickling)
    from mace.calculators import MACECalculator

    paths = [str(p) for p in model_paths]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserInputError(f"model file not found: {missing[0]}")
    return MACECalculator(model_paths=paths, device=device, default_dtype="float64")


def uncertainty_now(calc) -> Optional[Dict[str, float]]:
    """The uncertainty of the structure ``calc`` last evaluated (None for a single model)."""
    forces_comm = getattr(calc, "results", {}).get("forces_comm")
    return None if forces_comm is None else structure_uncertainty(forces_comm)


def evaluate_frames(calc, frames) -> List[Dict[str, float]]:
    """Per frame: the committee's uncertainty (eV/Å, ``max``/``mean``; None for one model) and, where the
    frame has ``REF_forces``, the committee mean's true force error (eV/Å): ``true_max`` (largest atom
    error norm) and ``true_mae`` (mean absolute component)."""
    out = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        try:
            forces = np.asarray(work.get_forces(), dtype=float)
        except Exception as exc:  # noqa: BLE001 - a broken geometry can make the neighbour list throw
            logger.warning("committee: evaluation failed (%s); uncertainty set to inf", exc)
            out.append({"max": float("inf"), "mean": float("inf")})
            continue
        row: Dict[str, float] = dict(uncertainty_now(calc) or {})
        if "REF_forces" in atoms.arrays:
            error = forces - np.asarray(atoms.arrays["REF_forces"], dtype=float)
            row["true_max"] = float(np.linalg.norm(error, axis=1).max())
            row["true_mae"] = float(np.abs(error).mean())
        out.append(row)
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman rank correlation of ``x`` and ``y`` (None with fewer than 3 finite pairs or no spread)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return None
    return float(spearmanr(x[keep], y[keep]).statistic)


def calibration(rows: Sequence[Dict[str, float]]) -> Dict[str, Optional[float]]:
    """Rank correlation between predicted uncertainty and true force error over frames (from
    :func:`evaluate_frames`): ``spearman_max`` (largest sigma_i vs largest atom error) and
    ``spearman_mean`` (mean sigma_i vs force MAE)."""
    rows = [r for r in rows if "true_max" in r and "max" in r]
    return {"spearman_max": spearman([r["max"] for r in rows], [r["true_max"] for r in rows]),
            "spearman_mean": spearman([r["mean"] for r in rows], [r["true_mae"] for r in rows])}


# ----------------------------------------------------------------------------- a member's fine-tune
def perturbed_copy(source: os.PathLike, target: os.PathLike, noise: float, seed: int) -> Path:
    """Write a copy of the MACE model ``source`` whose every parameter w is w (1 + noise x N(0, 1))
    (seeded): the start of a committee member, so that members fine-tuned on few labels from one start
    do not stay one model (with one batch of data, data order and bootstrap cannot part them)."""
    import torch

    from mace_transfer.transfer import remap

    model = remap.load_model(source)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for parameter in model.parameters():
            noise_draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.mul_(1.0 + float(noise) * noise_draw.to(parameter.dtype))
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(model, tmp)
    os.replace(tmp, target)
    return target


def cpu_seconds() -> float:
    """CPU s of this process and its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def train_member(options: Dict[str, object]) -> Dict[str, float]:
    """Fine-tune one committee member: MACE options -> ``transfer.train`` (the one door to MACE's run).

    An executor task (module level, picklable arguments). MACE writes the model into the member's own
    ``model_dir`` (a rerun writes the same folder); returns ``model`` (its path), ``cpu_s``, ``wall_s``."""
    from mace_transfer.transfer import train

    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    args = train.parse_args(train.mace_argv(dict(options)))
    train.run(args)
    model = Path(str(options["model_dir"])) / f"{options['name']}.model"
    if not model.is_file():
        raise RuntimeError(f"MACE finished without writing {model}")
    return {"model": str(model), "cpu_s": cpu_seconds() - start_cpu, "wall_s": time.perf_counter() - start_wall}
