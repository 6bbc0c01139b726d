"""Evaluate MACE models, or any ASE calculator, against a test set and a reference potential.

Three measurements, each available alone, then a report (``metrics.json``, ``summary.md``, PNGs):

1. :func:`test_errors`: energy (meV/atom) and force (meV/Å) MAE/RMSE vs an extxyz test file
   with MACE's keys (``REF_energy``, ``REF_forces``, ``config_type``), overall and per config_type.
2. :func:`mace_transfer.evaluate_md.md_stability`: NVT Langevin on a 64-atom diamond cell over a
   temperature ladder and seeds; time to failure (ps), highest temperature held, atom-steps/s.
3. :func:`crystal_properties`: a0 and B (E-V fit), C11, C12, relaxed C44, relaxed vacancy
   formation energy, phonons at Γ and X; plus RDF/ADF from MD; each compared with a reference
   (``sw-ge``, ``tersoff-si``, ... from :mod:`mace_transfer.classical`, a calculator, or a JSON
   file of values such as DFT's; see :func:`resolve_reference`).
4. :func:`close_contact_curve`: energy (eV) as one bond of the crystal is compressed, vs a
   labelled scan (``scripts/make_close_contact.py``): whether the model has a short-range wall.

:func:`evaluate` runs everything for several models (e.g. transfer vs scratch) and writes the report.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers as ATOMIC_NUMBERS
from ase.data import chemical_symbols

from mace_transfer import UserInputError
from mace_transfer import evaluate_properties as props
from mace_transfer.evaluate_md import MDSettings, curve_difference, md_stability
from mace_transfer.evaluate_md import structure_curves, structure_snapshots

#: what ``skip`` may name
SKIPPABLE = ("errors", "md", "structure", "lattice", "elastic", "vacancy", "phonons")
#: reference names accepted as strings: potential-element
REFERENCE_NAMES = ("sw-si", "sw-ge", "tersoff-si", "tersoff-ge")
_JSON_META_KEYS = {"element", "label", "source", "structure"}


# --------------------------------------------------------------------------- models
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
               label: Optional[str] = None) -> Model:
    """Load a MACE ``.model`` file as a float64 ``MACECalculator`` on ``device``.

    Raises UserInputError when the path is missing or is not a MACE model.
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
    calc = MACECalculator(models=network, device=device, default_dtype="float64")
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


# --------------------------------------------------------------------------- close contact
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


# --------------------------------------------------------------------------- test errors
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


def _error_stats(energy_errors: np.ndarray, force_errors: np.ndarray) -> Dict[str, object]:
    """MAE/RMSE of per-atom energy errors (meV/atom) and force components (meV/Å)."""
    energy_errors = energy_errors[np.isfinite(energy_errors)] * 1000
    force_errors = force_errors.ravel() * 1000

    def mae(x):
        return float(np.mean(np.abs(x))) if x.size else None

    def rmse(x):
        return float(np.sqrt(np.mean(x**2))) if x.size else None

    return {"energy_mae_meV_per_atom": mae(energy_errors),
            "energy_rmse_meV_per_atom": rmse(energy_errors),
            "force_mae_meV_per_A": mae(force_errors), "force_rmse_meV_per_A": rmse(force_errors),
            "n_configs": int(len(energy_errors)), "n_force_components": int(force_errors.size)}


def test_errors(calc, frames: Sequence[Atoms], progress: bool = True,
                label: str = "", group_by: Optional[Callable[[Atoms], str]] = None) -> Dict[str, object]:
    """Energy/force errors of ``calc`` against ``frames`` (``REF_energy``, ``REF_forces``).

    Overall and per ``config_type`` ("Default" when absent); frames without ``REF_energy``
    count for forces only. ``group_by`` (a frame -> key function) adds ``per_group``, the same
    statistics per key, from the same single evaluation. ``_parity`` holds reference and
    predicted force components (eV/Å).
    """
    from tqdm.auto import tqdm

    energy_errors, force_errors, kinds = [], [], []
    reference_forces, predicted_forces = [], []
    for atoms in tqdm(frames, desc=f"errors {label}".strip(), disable=not progress, leave=False):
        copy = atoms.copy()
        copy.calc = calc
        predicted = np.asarray(copy.get_forces(), dtype=float)
        reference = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        ref_energy = atoms.info.get("REF_energy")
        energy_errors.append(np.nan if ref_energy is None else
                             (copy.get_potential_energy() - float(ref_energy)) / len(atoms))
        force_errors.append(predicted - reference)
        kinds.append(str(atoms.info.get("config_type", "Default")))
        reference_forces.append(reference.ravel())
        predicted_forces.append(predicted.ravel())
    energy_errors = np.asarray(energy_errors)

    def per_key(keys):
        stats = {}
        for key in sorted(set(keys)):
            chosen = [i for i, k in enumerate(keys) if k == key]
            stats[key] = _error_stats(energy_errors[chosen],
                                      np.concatenate([force_errors[i].ravel() for i in chosen]))
        return stats

    result = {"overall": _error_stats(energy_errors, np.concatenate([f.ravel() for f in force_errors])),
              "per_config_type": per_key(kinds)}
    if group_by is not None:
        result["per_group"] = per_key([str(group_by(atoms)) for atoms in frames])
    result["_parity"] = {"reference": np.concatenate(reference_forces),
                         "predicted": np.concatenate(predicted_forces)}
    return result


# --------------------------------------------------------------------------- reference
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
    :data:`mace_transfer.evaluate_properties.PROPERTY_LABELS` (e.g. ``"lattice_constant_A"``,
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
            from mace_transfer import classical

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
    unknown = sorted(set(values) - set(props.PROPERTY_LABELS) - _JSON_META_KEYS)
    if unknown:
        raise UserInputError(f"reference values: unknown key(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(props.PROPERTY_LABELS)}, {', '.join(sorted(_JSON_META_KEYS))}")
    numbers = {key: float(values[key]) for key in props.PROPERTY_LABELS if values.get(key) is not None}
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


def check_elements(model: Model, elements: Sequence[str], where: str) -> None:
    """UserInputError when ``model`` (if it lists its elements) lacks one of ``elements``."""
    if model.elements is None:
        return
    missing = sorted(set(elements) - set(model.elements))
    if missing:
        name = model.source if model.source.endswith(".model") else model.label
        raise UserInputError(f"model {name} has no {', '.join(missing)} (present in "
                             f"{where}); it knows {', '.join(model.elements)}")


# --------------------------------------------------------------------------- properties
def crystal_properties(calc, element: str, skip: Sequence[str] = (),
                       lattice_guess: Optional[float] = None, say=None) -> Dict[str, object]:
    """Diamond-crystal properties of ``calc`` (see :data:`PROPERTY_LABELS` for keys and units).

    Elastic constants, vacancy and phonons are measured at the calculator's own a0 (or at
    ``lattice_guess`` when ``"lattice"`` is skipped). Non-fatal notes land in ``warnings``.
    """
    say = say or (lambda message: None)
    values: Dict[str, object] = {}
    warnings = []
    a0 = lattice_guess or props.guess_lattice_constant(element)
    steps = [("lattice", lambda: props.lattice_and_bulk_modulus(calc, element, a0)),
             ("elastic", lambda: props.elastic_constants(calc, element, a0)),
             ("vacancy", lambda: props.vacancy_formation_energy(calc, element, a0)),
             ("phonons", lambda: props.phonons_gamma_x(calc, element, a0))]
    for name, compute in steps:
        if name in skip:
            continue
        say(f"  {name}")
        try:
            measured = compute()
        except UserInputError:
            raise
        except Exception as exc:  # a broken model must not sink the whole report
            warnings.append(f"{name} failed: {type(exc).__name__}: {exc}")
            continue
        if "warning" in measured:
            warnings.append(f"{name}: {measured.pop('warning')}")
        values.update(measured)
        if name == "lattice":
            a0 = values["lattice_constant_A"]
    if warnings:
        values["warnings"] = warnings
    return values


def compare(values: Dict[str, object], reference: Dict[str, object]) -> Dict[str, dict]:
    """{property: {value, reference, relative_error}} for every property either side has."""
    table = {}
    for key in props.PROPERTY_LABELS:
        value, ref = values.get(key), reference.get(key)
        if value is None and ref is None:
            continue
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


# --------------------------------------------------------------------------- everything
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
    crystal = choose_element(element, ref, frames, loaded)
    for model in loaded:
        if frames is not None:
            check_elements(model, sorted({s for a in frames for s in a.get_chemical_symbols()}),
                           str(test) if isinstance(test, (str, os.PathLike)) else "the test set")
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
                a0 = ref_a0 or props.guess_lattice_constant(crystal)
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
        if not {"lattice", "elastic", "vacancy", "phonons"} <= set(skip):
            say(f"{model.label}: crystal properties of diamond {crystal}")
            entry["properties"] = crystal_properties(model.calc, crystal, skip, ref_a0, say)
        a0 = (entry.get("properties", {}).get("lattice_constant_A") or ref_a0
              or props.guess_lattice_constant(crystal))
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
        from mace_transfer.evaluate_report import write_report

        written = write_report(result, out)
        say(f"wrote {', '.join(str(p) for p in written)}")
    return strip_private(result)


def strip_private(value):
    """A JSON-ready copy: keys starting with '_' dropped, numpy made plain, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): strip_private(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [strip_private(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # strict JSON has no NaN/inf
    return value
