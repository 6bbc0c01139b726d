"""Which candidates to label: highest uncertainty, no two near-duplicates in one batch.

Descriptor (model-free, so a batch is judged the same way whatever model is current): for each atom,
a smooth radial density of its neighbours, g_i(r) = sum_j exp(-(r - r_ij)^2 / 2 w^2) / (sqrt(2 pi) w)
on r = 1.0, 1.1, ..., ``r_cut`` Å (w = 0.1 Å; neighbours per Å). A structure's descriptor is the mean
of g_i over its atoms followed by their standard deviation over atoms (the spread tells a vacancy or a
short contact from a uniform cell at the same density and temperature).

Distance between two structures: the root-mean-square difference of their descriptors (neighbours per
Å). Two structures are near-duplicates when their distance is below ``min_distance``
(:data:`DEFAULT_MIN_DISTANCE`).

Rule (:func:`select_batch`): go through candidates by decreasing uncertainty (ties: lower index first;
a non-finite uncertainty, a geometry the committee could not evaluate, counts as the highest) and take
one unless it is a near-duplicate of one already taken; stop at ``batch_size``. A batch is never
padded with near-duplicates: it may be shorter.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms

#: radial grid of the descriptor (Å) and its Gaussian width (Å)
R_MIN, R_STEP, R_CUT, WIDTH = 1.0, 0.1, 5.0, 0.1
#: near-duplicate distance (neighbours per Å, RMS over the descriptor). Measured on every third structure
#: of data/ge_pbe.xyz (100 PBE Ge cells of 16 atoms): pairs of one config_type lie at a median 1.31 (5th
#: percentile 0.44), pairs of different types at a median 3.09 (1st percentile 0.63, 5th 0.86); so pairs
#: below 0.5 are close snapshots of one kind of cell (docs/ACTIVE.md)
DEFAULT_MIN_DISTANCE = 0.5


def descriptor(atoms: Atoms, r_cut: float = R_CUT) -> np.ndarray:
    """The structure's descriptor (see the module doc): mean and standard deviation over atoms of g_i(r)."""
    from matscipy.neighbours import neighbour_list

    grid = np.arange(R_MIN, r_cut + 1e-9, R_STEP)
    i, d = neighbour_list("id", atoms, r_cut + 3 * WIDTH)
    per_atom = np.zeros((len(atoms), grid.size))
    weights = np.exp(-((grid[None, :] - d[:, None]) ** 2) / (2 * WIDTH**2)) / (np.sqrt(2 * np.pi) * WIDTH)
    np.add.at(per_atom, i, weights)
    return np.concatenate([per_atom.mean(axis=0), per_atom.std(axis=0)])


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two descriptors (neighbours per Å)."""
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _order(uncertainty: Sequence[Optional[float]]) -> List[int]:
    """Indices by decreasing uncertainty; non-finite first, None last, ties by index."""
    def key(index):
        value = uncertainty[index]
        if value is None:
            return (2, 0.0, index)
        if not np.isfinite(value):
            return (0, 0.0, index)
        return (1, -float(value), index)

    return sorted(range(len(uncertainty)), key=key)


def select_batch(uncertainty: Sequence[Optional[float]], descriptors: Sequence[np.ndarray], batch_size: int,
                 min_distance: float = DEFAULT_MIN_DISTANCE, kinds: Optional[Sequence[str]] = None,
                 max_per_kind: Optional[int] = None) -> List[int]:
    """Indices of the batch (in the order taken) by the rule of the module doc; with ``kinds`` (a candidate's
    kind of cell, e.g. its ``config_type``) and ``max_per_kind``, also at most that many of one kind."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    taken: List[int] = []
    for index in _order(uncertainty):
        if len(taken) == batch_size:
            break
        if max_per_kind and kinds is not None and sum(kinds[j] == kinds[index] for j in taken) >= max_per_kind:
            continue
        if all(distance(descriptors[index], descriptors[j]) >= min_distance for j in taken):
            taken.append(index)
    return taken


def diverse_batch(descriptors: Sequence[np.ndarray], batch_size: int, min_distance: float = DEFAULT_MIN_DISTANCE,
                  seed: int = 0) -> List[int]:
    """A batch without uncertainties (the first round, one model): farthest-point sampling from a seeded
    random first candidate; stops early when the farthest left is a near-duplicate of the batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(descriptors)
    if n == 0:
        return []
    first = int(np.random.default_rng(seed).integers(n))
    taken = [first]
    nearest = np.array([distance(descriptors[first], d) for d in descriptors])
    while len(taken) < min(batch_size, n):
        index = int(np.argmax(nearest))
        if nearest[index] < min_distance:
            break
        taken.append(index)
        nearest = np.minimum(nearest, [distance(descriptors[index], d) for d in descriptors])
    return taken
