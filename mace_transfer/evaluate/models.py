"""Models to evaluate: a MACE ``.model`` file or any ASE calculator, as a :class:`Model`.

Part of :mod:`mace_transfer.evaluate`. :func:`load_model` reads a MACE file as a float64
``MACECalculator`` (on a given torch device), :func:`as_model` accepts a path, a calculator
or a Model, and :func:`check_elements` tells a user which elements a model lacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Union

from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers as ATOMIC_NUMBERS
from ase.data import chemical_symbols

from mace_transfer import UserInputError


@dataclass
class Model:
    """A calculator to evaluate; ``atomic_numbers`` is None when unknown (a plain calculator)."""

    label: str
    calc: Calculator
    source: str
    atomic_numbers: Optional[List[int]] = None

    @property
    def elements(self) -> Optional[List[str]]:
        return None if self.atomic_numbers is None else [chemical_symbols[z] for z in
                                                         self.atomic_numbers]


def load_model(path: Union[str, os.PathLike], device: str = "cpu",
               label: Optional[str] = None, head: Optional[str] = None) -> Model:
    """Load a MACE ``.model`` file as a float64 ``MACECalculator`` on ``device``.

    ``head``: which readout of a multihead model predicts (MACE's default: the one named "Default").
    Raises UserInputError when the path is missing, is not a MACE model or lacks the head.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"model file {path} does not exist")
    import mace  # noqa: F401  (registers MACE's classes before unpickling)
    import torch
    from mace.calculators import MACECalculator

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} requested but torch sees no CUDA GPU")
    try:
        network = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # pickle, zip or torch errors: all mean "not a model file"
        raise UserInputError(f"{path} is not a MACE model (torch.load failed: "
                             f"{type(exc).__name__})") from None
    if not (isinstance(network, torch.nn.Module) and hasattr(network, "atomic_numbers")
            and hasattr(network, "r_max")):
        raise UserInputError(f"{path} is not a MACE model (found {type(network).__name__})")
    heads = list(getattr(network, "heads", None) or ["Default"])
    if head is not None and head not in heads:  # MACE would fall back to another head with a warning
        raise UserInputError(f"{path} has no head {head!r} (its heads: {', '.join(heads)})")
    calc = MACECalculator(models=network, device=device, default_dtype="float64",
                          **({"head": head} if head is not None else {}))
    numbers = [int(z) for z in network.atomic_numbers]
    return Model(label or path.stem, calc, str(path), numbers)


def as_model(model, device: str = "cpu", label: Optional[str] = None) -> Model:
    """A :class:`Model` from a ``.model`` path, an ASE calculator or a Model."""
    if isinstance(model, Model):
        return replace(model, label=label) if label else model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device, label)
    if hasattr(model, "get_potential_energy") or isinstance(model, Calculator):
        numbers = None
        if hasattr(model, "z_table"):  # an already built MACECalculator
            numbers = [int(z) for z in model.z_table.zs]
        elif isinstance(getattr(model, "element", None), str):  # mace_transfer.classical
            numbers = [ATOMIC_NUMBERS[model.element]]
        name = label or getattr(model, "name", None) or type(model).__name__
        return Model(str(name), model, type(model).__name__, numbers)
    raise UserInputError(f"cannot evaluate {model!r}: give a .model path or an ASE calculator")


def check_elements(model: Model, elements: Sequence[str], where: str) -> None:
    """UserInputError when ``model`` (if it lists its elements) lacks one of ``elements``."""
    if model.elements is None:
        return
    missing = sorted(set(elements) - set(model.elements))
    if missing:
        name = model.source if model.source.endswith(".model") else model.label
        raise UserInputError(f"model {name} has no {', '.join(missing)} (present in "
                             f"{where}); it knows {', '.join(model.elements)}")
