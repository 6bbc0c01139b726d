"""The evaluation layer: how good is a MACE model (or any ASE calculator) for one element?

It measures errors on a labelled test set, MD stability, crystal properties, liquid/solid
structure and the short-range wall, compares them with a reference, and writes a report.
Arrows point down only: ``suite`` imports the others; none imports ``suite``.

- ``suite``: :func:`evaluate`, the orchestrator (all measurements for several models + report).
- ``models``: :class:`Model`; load a MACE ``.model`` file or wrap any ASE calculator.
- ``errors``: energy (meV/atom) and force (meV/Å) MAE/RMSE vs an extxyz test file.
- ``close_contact``: energy (eV) vs compressed bond length (Å) against a labelled scan.
- ``properties``: diamond-crystal a0, B, C11/C12/C44, vacancy, phonons (Å, eV, GPa, THz).
- ``md``: MD stability ladder (K, ps) and RDF/ADF from MD snapshots.
- ``reference``: the reference (classical name, calculator or JSON values) and comparisons.
- ``report``: ``metrics.json``, ``summary.md`` and PNGs of an :func:`evaluate` result.
"""

from mace_transfer.evaluate.close_contact import close_contact_curve
from mace_transfer.evaluate.errors import test_errors
from mace_transfer.evaluate.models import load_model
from mace_transfer.evaluate.reference import REFERENCE_NAMES, compare_structure, resolve_reference
from mace_transfer.evaluate.suite import SKIPPABLE, evaluate

__all__ = ["REFERENCE_NAMES", "SKIPPABLE", "close_contact_curve", "compare_structure", "evaluate",
           "load_model", "resolve_reference", "test_errors"]
