"""Labellers for tests/test_active.py, importable by a loop in a subprocess (``--calculator
active_labellers:flaky_sw`` with tests/ on PYTHONPATH)."""

import numpy as np
from ase.calculators.calculator import CalculationFailed

from mace_transfer.datagen.classical import ClassicalCalculator


class SWFailingOnStrainedCells(ClassicalCalculator):
    """Stillinger-Weber Ge that fails, as an unconverged SCF would, on any cell that is not cubic."""

    def calculate(self, atoms=None, properties=None, system_changes=None):
        cell = np.asarray(atoms.cell)
        if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-9 or np.ptp(np.diag(cell)) > 1e-9:
            raise CalculationFailed("SCF not converged (test labeller: strained cell)")
        super().calculate(atoms, properties, system_changes)


def flaky_sw():
    return SWFailingOnStrainedCells("Ge", "sw")
