"""Evaluate MACE models, or any ASE calculator, against a test set and a reference potential.

The orchestrator of :mod:`mace_transfer.evaluate`: :func:`evaluate` loads the models
(:mod:`~mace_transfer.evaluate.models`) and the reference
(:mod:`~mace_transfer.evaluate.reference`), then runs for each model the measurements of the
sibling modules (test errors, close-contact scan, crystal properties, MD stability and RDF/ADF,
any of :data:`SKIPPABLE` left out), compares them with the reference and writes the report
(``metrics.json``, ``summary.md``, PNGs; :mod:`~mace_transfer.evaluate.report`).
Units as in those modules: K, ps, Å, eV, GPa, THz; errors in meV/atom and meV/Å.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Callable, Dict, Optional, Sequence, Union

from ase import Atoms

from mace_transfer import UserInputError
from mace_transfer.evaluate.close_contact import close_contact_curve, read_close_contact_file
from mace_transfer.evaluate.errors import read_test_file, test_errors
from mace_transfer.evaluate.md import MDSettings, md_stability, structure_curves
from mace_transfer.evaluate.md import structure_snapshots
from mace_transfer.evaluate.models import as_model, check_elements
from mace_transfer.evaluate.properties import crystal_properties, guess_lattice_constant
from mace_transfer.evaluate.reference import choose_element, compare, compare_structure
from mace_transfer.evaluate.reference import resolve_reference
from mace_transfer.evaluate.report import strip_private, write_report

#: what ``skip`` may name
SKIPPABLE = ("errors", "md", "structure", "lattice", "elastic", "vacancy", "phonons")


def evaluate(models, test=None, reference=None, *, labels: Optional[Sequence[str]] = None,
             element: Optional[str] = None, out: Optional[Union[str, os.PathLike]] = None,
             temperatures: Optional[Sequence[float]] = None, seeds: Optional[Sequence[int]] = None,
             md_steps: Optional[int] = None, md_settings: Optional[MDSettings] = None,
             device: str = "cpu", skip: Sequence[str] = (), progress: bool = True,
             log: Optional[Callable[[str], None]] = None,
             close_contact: Optional[Union[str, os.PathLike, Sequence[Atoms]]] = None) -> dict:
    """Evaluate one or several models; write ``metrics.json``, ``summary.md`` and PNGs to ``out``.

    ``models``: a ``.model`` path, an ASE calculator, or a list of them; ``labels`` names them
    (default: file stems). ``test``: extxyz path or list of Atoms (MACE keys). ``reference``:
    see :func:`resolve_reference`. ``temperatures`` (K), ``seeds`` and ``md_steps`` override
    ``md_settings`` (:class:`MDSettings`). ``skip``: any of :data:`SKIPPABLE`. ``log``: where the
    one-line stage messages go (default: stderr when ``progress``, else nowhere).
    ``close_contact``: a close-contact scan (path or frames, :func:`close_contact_curve`).
    Returns the metrics dict (the content of ``metrics.json``).
    """
    unknown = sorted(set(skip) - set(SKIPPABLE))
    if unknown:
        raise UserInputError(f"cannot skip {', '.join(unknown)}; choose from {', '.join(SKIPPABLE)}")
    model_list = list(models) if isinstance(models, (list, tuple)) else [models]
    if not model_list:
        raise UserInputError("no model to evaluate")
    if labels is not None and len(labels) != len(model_list):
        raise UserInputError(f"{len(labels)} label(s) for {len(model_list)} model(s)")
    settings = replace(md_settings or MDSettings(), **{key: value for key, value in (
        ("temperatures_K", temperatures), ("seeds", seeds), ("steps", md_steps)) if value is not None})
    if not settings.temperatures_K or not settings.seeds or settings.steps < 1:
        raise UserInputError("MD needs at least one temperature, one seed and one step")
    if "structure" not in skip and not settings.structure_temperatures_K:
        ladder = sorted(settings.temperatures_K)
        settings = replace(settings, structure_temperatures_K=tuple(sorted({ladder[0], ladder[-1]})))
    if "structure" in skip:
        settings = replace(settings, structure_temperatures_K=())

    if log is not None:
        say = log
    else:
        say = (lambda message: print(message, file=sys.stderr, flush=True)) if progress else (
            lambda message: None)
    frames = None
    if test is not None and "errors" not in skip:
        frames = read_test_file(test) if isinstance(test, (str, os.PathLike)) else list(test)
    scan = None
    if close_contact is not None:
        scan = (read_close_contact_file(close_contact) if isinstance(close_contact, (str, os.PathLike))
                else sorted(close_contact, key=lambda a: -float(a.info["pair_distance_A"])))
    loaded = [as_model(m, device, labels[i] if labels else None) for i, m in enumerate(model_list)]
    names = [m.label for m in loaded]
    if len(set(names)) != len(names):
        raise UserInputError(f"model labels must differ: {', '.join(names)}; pass labels")
    ref = resolve_reference(reference)
    # errors (and the close-contact scan) alone need no crystal: e.g. a Si+Ge model on an alloy test set
    crystal_free = ref is None and set(SKIPPABLE) - {"errors"} <= set(skip)
    crystal = None if crystal_free and element is None else choose_element(element, ref, frames, loaded)
    for model in loaded:
        if frames is not None:
            check_elements(model, sorted({s for a in frames for s in a.get_chemical_symbols()}),
                           str(test) if isinstance(test, (str, os.PathLike)) else "the test set")
        if crystal is not None:
            check_elements(model, [crystal], "the crystal to measure")

    result = {"element": crystal, "reference": None, "settings": {
        "md": settings.to_dict(), "skip": list(skip), "device": device,
        "test": str(test) if isinstance(test, (str, os.PathLike)) else None,
        "close_contact": str(close_contact) if isinstance(close_contact, (str, os.PathLike)) else None},
        "models": {}}
    reference_structure: Dict[str, dict] = {}
    ref_a0 = None
    if ref is not None:
        ref_values = dict(ref.values)
        if ref.calc is not None:
            say(f"reference {ref.label}: properties")
            ref_values.update(crystal_properties(ref.calc, crystal, skip, say=say))
            ref_a0 = ref_values.get("lattice_constant_A")
            if settings.structure_temperatures_K:
                a0 = ref_a0 or guess_lattice_constant(crystal)
                snapshots = structure_snapshots(ref.calc, crystal, a0, settings, progress, ref.label)
                reference_structure = structure_curves(snapshots, a0, settings)
        else:
            ref_a0 = ref_values.get("lattice_constant_A")
            reference_structure = ref.structure
        result["reference"] = {"label": ref.label, "properties": ref_values,
                               "structure": reference_structure}

    for model in loaded:
        entry: Dict[str, object] = {"source": model.source}
        if frames is not None:
            say(f"{model.label}: errors on {len(frames)} test configurations")
            entry["errors"] = test_errors(model.calc, frames, progress, model.label)
        if scan is not None:
            check_elements(model, sorted({s for a in scan for s in a.get_chemical_symbols()}),
                           "the close-contact scan")
            say(f"{model.label}: close-contact scan ({len(scan)} pair distances)")
            entry["close_contact"] = close_contact_curve(model.calc, scan)
        if crystal is None:
            result["models"][model.label] = entry
            continue
        if not {"lattice", "elastic", "vacancy", "phonons"} <= set(skip):
            say(f"{model.label}: crystal properties of diamond {crystal}")
            entry["properties"] = crystal_properties(model.calc, crystal, skip, ref_a0, say)
        a0 = (entry.get("properties", {}).get("lattice_constant_A") or ref_a0
              or guess_lattice_constant(crystal))
        snapshots = {}
        if "md" not in skip:
            say(f"{model.label}: MD stability at {', '.join(f'{t:g}' for t in settings.temperatures_K)}"
                f" K, seeds {list(settings.seeds)}, {settings.steps} steps")
            stability = md_stability(model.calc, crystal, a0, settings, progress, model.label)
            snapshots = stability.pop("_snapshots")
            entry["md_stability"] = stability
        ladder = set() if "md" in skip else {float(t) for t in settings.temperatures_K}
        extra = [t for t in settings.structure_temperatures_K if float(t) not in ladder]
        if extra:  # structure temperatures the stability ladder did not visit
            snapshots.update(structure_snapshots(
                model.calc, crystal, a0, replace(settings, structure_temperatures_K=tuple(extra)),
                progress, model.label))
        if settings.structure_temperatures_K:
            entry["structure"] = structure_curves(snapshots, a0, settings)
        if ref is not None:
            entry["comparison"] = compare(entry.get("properties", {}),
                                          result["reference"]["properties"])
            if reference_structure and "structure" in entry:
                entry["structure_comparison"] = compare_structure(entry["structure"],
                                                                  reference_structure)
        result["models"][model.label] = entry

    if out is not None:
        written = write_report(result, out)
        say(f"wrote {', '.join(str(p) for p in written)}")
    return strip_private(result)
