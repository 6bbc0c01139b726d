"""The loop's stop rule.

A round's *fresh uncertainty* is the highest committee force uncertainty (eV/Å, the largest atom's
sigma, :mod:`mace_transfer.active.committee`) among the candidates its exploration found with the
committee of the round before; a geometry the model broke on counts as infinite. The loop stops

* before labelling, when the fresh uncertainty has been below ``threshold_meV_A`` in ``rounds``
  consecutive rounds (the model is sure of everything its own MD visits), or
* after a round whose DFT calls (labels made plus labels failed) reach the ``budget``.

Pool mode (candidates from a labelled pool) has no fresh exploration: the pool's remaining structures
stand in for it, and an empty pool stops the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class StopRule:
    """``threshold_meV_A``: fresh uncertainty counted as converged (meV/Å); ``rounds``: how many
    consecutive converged rounds stop the loop; ``budget``: DFT calls allowed in all."""

    budget: int
    threshold_meV_A: float = 30.0
    rounds: int = 2

    def __post_init__(self):
        if int(self.budget) < 1:
            raise ValueError(f"budget must be >= 1 DFT call, got {self.budget}")
        if not self.threshold_meV_A > 0:
            raise ValueError(f"stop threshold must be > 0 meV/Å, got {self.threshold_meV_A}")
        if int(self.rounds) < 1:
            raise ValueError(f"stop rounds must be >= 1, got {self.rounds}")

    def converged(self, fresh_uncertainties_eV_A: Sequence[Optional[float]]) -> bool:
        """True when the last ``rounds`` fresh uncertainties (eV/Å, one per round, oldest first; None
        where a round had no committee) are all below the threshold."""
        last = list(fresh_uncertainties_eV_A)[-int(self.rounds):]
        return (len(last) == int(self.rounds)
                and all(u is not None and 1000.0 * u < self.threshold_meV_A for u in last))

    def budget_left(self, dft_calls: int) -> int:
        """DFT calls still allowed."""
        return max(0, int(self.budget) - int(dft_calls))
