"""The reference a model is compared with, and the comparison itself.

Part of :mod:`mace_transfer.evaluate`. A reference is a classical potential by name
(``sw-ge``, ``tersoff-si``, ... from :mod:`mace_transfer.datagen.classical`), any ASE
calculator, or fixed values (a dict or JSON file, e.g. DFT's) in the units of
:data:`~mace_transfer.evaluate.properties.PROPERTY_LABELS`. :func:`choose_element` picks the
element whose diamond crystal is measured; :func:`compare` and :func:`compare_structure` give
relative errors of properties and of RDF/ADF curves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers as ATOMIC_NUMBERS

from mace_transfer import UserInputError
from mace_transfer.evaluate.md import curve_difference
from mace_transfer.evaluate.models import Model
from mace_transfer.evaluate.properties import PROPERTY_LABELS

#: reference names accepted as strings: potential-element
REFERENCE_NAMES = ("sw-si", "sw-ge", "tersoff-si", "tersoff-ge")
_JSON_META_KEYS = {"element", "label", "source", "structure"}


@dataclass
class Reference:
    """A reference: a calculator (properties computed like a model's) and/or fixed values."""

    label: str
    calc: Optional[Calculator] = None
    element: Optional[str] = None
    values: Dict[str, float] = field(default_factory=dict)
    structure: Dict[str, dict] = field(default_factory=dict)  # {T: {"rdf": .., "adf": ..}}


def resolve_reference(reference) -> Optional[Reference]:
    """A :class:`Reference` from None, a name in :data:`REFERENCE_NAMES`, an ASE calculator,
    a dict of values, or a JSON file.

    A JSON/dict reference holds property values under the keys of
    :data:`mace_transfer.evaluate.properties.PROPERTY_LABELS` (e.g. ``"lattice_constant_A"``,
    ``"C44_relaxed_GPa"``), optionally ``"element"``, ``"label"``, ``"source"`` and
    ``"structure"``: ``{"300": {"rdf": {"r_A": [...], "g": [...]}, "adf": {"theta_deg": [...],
    "p": [...]}}}``. Unknown keys are an error (a typo would silently drop a comparison).
    """
    if reference is None or isinstance(reference, Reference):
        return reference
    if isinstance(reference, dict):
        return _reference_from_values(dict(reference), "reference")
    if isinstance(reference, (str, os.PathLike)):
        text = str(reference)
        name = text.strip().lower().replace("_", "-")
        if name in REFERENCE_NAMES:
            from mace_transfer.datagen import classical

            potential, element = name.split("-")
            element = element.capitalize()
            return Reference(name, classical.calculator(element, potential), element)
        path = Path(text)
        if not path.is_file():
            raise UserInputError(f"reference {text!r} is neither one of {', '.join(REFERENCE_NAMES)}"
                                 f" nor an existing JSON file")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserInputError(f"reference file {path} is not valid JSON: {exc}") from None
        if not isinstance(values, dict):
            raise UserInputError(f"reference file {path} must hold a JSON object of values")
        return _reference_from_values(values, path.stem)
    if hasattr(reference, "get_potential_energy") or isinstance(reference, Calculator):
        element = getattr(reference, "element", None)
        return Reference(str(getattr(reference, "name", None) or type(reference).__name__),
                         reference, element if isinstance(element, str) else None)
    raise UserInputError(f"cannot use {reference!r} as a reference")


def _reference_from_values(values: dict, default_label: str) -> Reference:
    unknown = sorted(set(values) - set(PROPERTY_LABELS) - _JSON_META_KEYS)
    if unknown:
        raise UserInputError(f"reference values: unknown key(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(PROPERTY_LABELS)}, {', '.join(sorted(_JSON_META_KEYS))}")
    numbers = {key: float(values[key]) for key in PROPERTY_LABELS if values.get(key) is not None}
    return Reference(str(values.get("label", default_label)), None, values.get("element"),
                     numbers, dict(values.get("structure", {})))


def choose_element(element: Optional[str], reference: Optional[Reference],
                   frames: Optional[Sequence[Atoms]], models: Sequence[Model]) -> str:
    """The element whose diamond crystal is measured: explicit, else the reference's, else
    the test file's (single element), else the one element every model knows."""
    candidates = [element, reference.element if reference else None]
    in_test = None
    if frames:
        found = {s for atoms in frames for s in atoms.get_chemical_symbols()}
        in_test = found.pop() if len(found) == 1 else None
        candidates.append(in_test)
    known = [set(m.elements) for m in models if m.elements is not None]
    if known and len(set.intersection(*known)) == 1:
        candidates.append(next(iter(set.intersection(*known))))
    chosen = next((c for c in candidates if c), None)
    if chosen is None:
        raise UserInputError("cannot tell which element's crystal to measure; pass --element")
    chosen = str(chosen).strip().capitalize()
    if chosen not in ATOMIC_NUMBERS:
        raise UserInputError(f"unknown element {chosen!r}")
    if reference and reference.element and reference.element != chosen:
        raise UserInputError(f"reference {reference.label} describes {reference.element}, "
                             f"not {chosen}")
    if in_test and in_test != chosen:
        raise UserInputError(f"the test set holds only {in_test} but the crystal to measure is "
                             f"{chosen} (from the reference or --element)")
    return chosen


def compare(values: Dict[str, object], reference: Dict[str, object]) -> Dict[str, dict]:
    """{property: {value, reference, relative_error}} for every property either side has."""
    table = {}
    for key in PROPERTY_LABELS:
        value, ref = values.get(key), reference.get(key)
        if value is None and (ref is None or values.get(key.rsplit("_", 1)[0] + "_note")):
            continue  # nothing to compare, or the model declined this property (its note says why)
        relative = None
        if value is not None and ref is not None and ref != 0:
            relative = float((value - ref) / abs(ref))
        table[key] = {"value": value, "reference": ref, "relative_error": relative}
    return table


def compare_structure(curves: Dict[str, dict], reference: Dict[str, dict]) -> Dict[str, dict]:
    """Relative L1 differences of RDF and ADF per temperature (see ``curve_difference``)."""
    result = {}
    for temperature, ref in reference.items():
        mine = curves.get(temperature)
        if mine is None:
            result[temperature] = {"rdf_difference": None, "adf_difference": None}
            continue
        entry = {}
        for kind, x in (("rdf", ("r_A", "g")), ("adf", ("theta_deg", "p"))):
            entry[f"{kind}_difference"] = (curve_difference(
                mine[kind][x[0]], mine[kind][x[1]], ref[kind][x[0]], ref[kind][x[1]])
                if kind in ref and kind in mine else None)
        result[temperature] = entry
    return result
