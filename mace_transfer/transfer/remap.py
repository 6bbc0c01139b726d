"""Species remap: turn a trained MACE model of element A into a model of element B, exactly.

MACE indexes a few tensors by chemical element (the position of the element in the model's
``atomic_numbers`` buffer, which is also the one-hot order of ``node_attrs``):

* ``node_embedding.linear`` and, in the non-linear interaction block, ``source_embedding`` and
  ``target_embedding``: e3nn ``Linear`` layers whose input is the one-hot ``n x 0e``;
* ``interactions.N.skip_tp``: an e3nn ``FullyConnectedTensorProduct`` whose second input is the
  one-hot (every interaction class MACE 0.3.16 builds except the non-linear one, where
  ``skip_tp`` is a plain ``Linear``);
* every symmetric-contraction weight (``products.N.symmetric_contractions.contractions.M.weights_max``
  and ``.weights.K``), indexed by element on their first axis;
* ``atomic_energies_fn.atomic_energies`` (E0s, eV), element on the last axis.

e3nn divides a path by sqrt(fan-in); the fan-in of the one-hot layers is proportional to the
number of elements ``n``, so when ``n`` changes (``extend`` mode) the copied weights are multiplied
by sqrt(n_new / n_old) and the outputs stay identical.

Corresponding-states rescale (length scale s, energy scale k) is built into the model so the saved
file is ordinary MACE: the cutoff ``r_max`` and the Bessel radial basis are stretched so that the
radial features at s·r equal the source's at r (``bessel_weights / s``, ``prefactor · s``,
``r_max · s``), and the ScaleShift block's ``scale`` and ``shift`` are multiplied by k. Then
E_new(s·R) - ΣE0 = k·(E_src(R) - ΣE0) and F_new(s·R) = (k/s)·F_src(R).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import mace  # noqa: F401  (before e3nn/torch.load: MACE sets torch.load's weights-only default)
import numpy as np
import torch
from ase.data import atomic_numbers as _SYMBOL_TO_Z
from ase.data import chemical_symbols

from mace_transfer import UserInputError

log = logging.getLogger(__name__)

ElementLike = Union[str, int]

SUPPORTED_MODEL_CLASSES = ("ScaleShiftMACE",)


# ----------------------------------------------------------------------------- elements
def to_atomic_number(element: ElementLike) -> int:
    """Atomic number of a symbol ('Ge'), a number (32) or a numeric string ('32')."""
    if isinstance(element, (int, np.integer)):
        z = int(element)
    else:
        text = str(element).strip()
        if text.isdigit():
            z = int(text)
        elif text in _SYMBOL_TO_Z:
            z = _SYMBOL_TO_Z[text]
        else:
            raise UserInputError(f"unknown element {element!r}")
    if not 1 <= z < len(chemical_symbols):
        raise UserInputError(f"unknown element {element!r}")
    return z


def parse_element_map(
    element_map: Union[str, Mapping[ElementLike, ElementLike]],
) -> Dict[int, int]:
    """``"Si:Ge,C:Sn"`` or ``{"Si": "Ge"}`` -> ``{14: 32, 6: 50}``; duplicates are an error.

    An identity entry (``"Ge:Ge"``, replace mode) is allowed: it keeps every weight and only
    re-references the model (new E0s, refit shift, rescale), e.g. a Ge model trained on a classical
    potential as the start of a DFT Ge model.
    """
    if isinstance(element_map, str):
        pairs = []
        for item in element_map.split(","):
            item = item.strip()
            if not item:
                continue
            if item.count(":") != 1:
                raise UserInputError(
                    f"element map entry {item!r} is not source:target (e.g. Si:Ge)"
                )
            pairs.append(tuple(part.strip() for part in item.split(":")))
    else:
        pairs = list(element_map.items())
    if not pairs:
        raise UserInputError("empty element map (expected e.g. Si:Ge)")
    mapping: Dict[int, int] = {}
    targets = set()
    for src, tgt in pairs:
        z_src, z_tgt = to_atomic_number(src), to_atomic_number(tgt)
        if z_src in mapping:
            raise UserInputError(f"element map names source {chemical_symbols[z_src]} twice")
        if z_tgt in targets:
            raise UserInputError(f"element map names target {chemical_symbols[z_tgt]} twice")
        mapping[z_src] = z_tgt
        targets.add(z_tgt)
    return mapping


def symbols(zs: Iterable[int]) -> str:
    return ",".join(chemical_symbols[int(z)] for z in zs)


# ----------------------------------------------------------------------------- model checks
def load_model(path: Union[str, Path], device: str = "cpu") -> torch.nn.Module:
    """Load a MACE ``.model`` file; a missing, corrupt or non-MACE file is a UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"model file not found: {path}")
    try:
        model = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - pickle/zip raise many kinds
        raise UserInputError(f"{path} is not a readable MACE model ({type(exc).__name__})") from None
    if isinstance(model, torch.nn.Module) and hasattr(model, "atomic_numbers") and is_cueq_model(model):
        model = from_cueq_layout(model, str(path))
    check_model(model, str(path))
    return model


def from_cueq_layout(model: torch.nn.Module, name: str = "model") -> torch.nn.Module:
    """A model trained with ``--enable_cueq`` back in e3nn layout, through MACE's own converter
    (``mace.cli.convert_cueq_e3nn.run``): the remap gathers e3nn-layout element-indexed tensors.
    The conversion needs cuEquivariance installed; without it the refusal says so in one line."""
    try:
        from mace.cli.convert_cueq_e3nn import run as cueq_to_e3nn

        dtype = torch.get_default_dtype()
        try:
            converted = cueq_to_e3nn(model, device="cpu", return_model=True)
        finally:
            torch.set_default_dtype(dtype)  # MACE's converter sets the model's dtype as default
    except Exception as exc:  # noqa: BLE001 - ImportError without cuEquivariance, shape errors
        raise UserInputError(
            f"{name} is in cuEquivariance layout and MACE's converter failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); convert it where cuEquivariance is "
            "installed: python -m mace.cli.convert_cueq_e3nn IN.model --output_model OUT.model"
        ) from None
    log.info("%s: converted from cuEquivariance to e3nn layout (mace.cli.convert_cueq_e3nn)", name)
    return converted


def is_cueq_model(model: torch.nn.Module) -> bool:
    """True for a model in cuEquivariance layout (``--enable_cueq`` conversion)."""
    cfg = getattr(model, "cueq_config", None)
    if cfg is not None and getattr(cfg, "enabled", False):
        return True
    return any("cuequivariance" in type(m).__module__ for m in model.modules())


def check_model(model: object, name: str = "model") -> None:
    """Raise UserInputError unless ``model`` is an e3nn-layout ScaleShiftMACE."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers"):
        raise UserInputError(f"{name} is not a MACE model (got {type(model).__name__})")
    cls = type(model).__name__
    if cls not in SUPPORTED_MODEL_CLASSES:
        raise UserInputError(
            f"{name} is a {cls}; remap supports {', '.join(SUPPORTED_MODEL_CLASSES)} "
            "(train with --model ScaleShiftMACE, MACE's default)"
        )
    if is_cueq_model(model):
        raise UserInputError(
            f"{name} is in cuEquivariance layout; convert it back first: "
            "python -m mace.cli.convert_cueq_e3nn IN.model OUT.model"
        )


def model_elements(model: torch.nn.Module) -> List[int]:
    """The model's atomic numbers, in its one-hot order."""
    return [int(z) for z in model.atomic_numbers]


# ----------------------------------------------------------------------------- element plan
def plan_elements(
    source_zs: Sequence[int], element_map: Mapping[int, int], mode: str
) -> Tuple[List[int], List[int]]:
    """New atomic numbers (sorted) and, for each, the index of the source element it copies."""
    if mode not in ("replace", "extend"):
        raise UserInputError(f"remap mode must be 'replace' or 'extend', got {mode!r}")
    source_zs = [int(z) for z in source_zs]
    missing = [z for z in element_map if z not in source_zs]
    if missing:
        raise UserInputError(
            f"source element {symbols(missing)} is not in the model (it has {symbols(source_zs)})"
        )
    if mode == "replace":
        remaining = set(source_zs) - set(element_map)
        clash = [z for z in element_map.values() if z in remaining]
        if clash:
            raise UserInputError(
                f"target element {symbols(clash)} is already in the model; "
                "use --remap_mode extend or map it away too"
            )
        pairs = [(element_map.get(z, z), i) for i, z in enumerate(source_zs)]
    else:
        clash = [z for z in element_map.values() if z in source_zs]
        if clash:
            raise UserInputError(f"target element {symbols(clash)} is already in the model")
        pairs = [(z, i) for i, z in enumerate(source_zs)]
        pairs += [(tgt, source_zs.index(src)) for src, tgt in element_map.items()]
    pairs.sort()
    return [z for z, _ in pairs], [i for _, i in pairs]


def _element_modules(model: torch.nn.Module) -> Dict[str, str]:
    """Names of the e3nn modules fed by the element one-hot -> 'linear' or 'tp'."""
    found = {"node_embedding.linear": "linear"}
    for idx, block in enumerate(model.interactions):
        attrs_irreps = getattr(block, "node_attrs_irreps", None)
        for child_name, child in block.named_children():
            name = f"interactions.{idx}.{child_name}"
            if getattr(child, "irreps_in2", None) == attrs_irreps and hasattr(child, "weight_views"):
                found[name] = "tp"
            elif (
                getattr(child, "irreps_in", None) == attrs_irreps
                and hasattr(child, "weight_views")
                and child_name in ("source_embedding", "target_embedding")
            ):
                found[name] = "linear"
    return found


def _gather_linear(module, weight: torch.Tensor, index: torch.Tensor, factor: float):
    views = [v[index, :] * factor for v in module.weight_views(weight=weight)]
    return torch.cat([v.reshape(-1) for v in views])


def _gather_tp(module, weight: torch.Tensor, index: torch.Tensor, factor: float):
    views = [v[:, index, :] * factor for v in module.weight_views(weight=weight)]
    return torch.cat([v.reshape(-1) for v in views])


def _contraction_keys(model: torch.nn.Module) -> List[str]:
    keys = []
    for name, module in model.named_modules():
        if type(module).__name__ == "Contraction":
            keys.append(f"{name}.weights_max")
            keys += [f"{name}.weights.{k}" for k in range(len(module.weights))]
    return keys


# ----------------------------------------------------------------------------- remap
def remap_elements(
    model: torch.nn.Module,
    element_map: Union[str, Mapping[ElementLike, ElementLike]],
    *,
    mode: str = "replace",
    atomic_energies: Optional[Mapping[ElementLike, float]] = None,
    length_scale: float = 1.0,
    energy_scale: float = 1.0,
) -> torch.nn.Module:
    """A new MACE model where each source element of ``element_map`` becomes its target.

    ``mode="replace"``: the target takes the source's place. ``mode="extend"``: the model keeps
    the source and gains the target as a copy of it. ``atomic_energies``: E0 in eV per element of
    the new model (usually the targets); when None the source's E0 is kept for each target (a
    warning says so). ``length_scale`` s and ``energy_scale`` k (replace mode only): corresponding
    states, E_new(s·R) - ΣE0 = k·(E_src(R) - ΣE0). The input model is never modified.
    """
    from mace.tools.scripts_utils import extract_config_mace_model

    check_model(model)
    mapping = parse_element_map(element_map)
    length_scale, energy_scale = float(length_scale), float(energy_scale)
    if not (length_scale > 0 and energy_scale > 0):
        raise UserInputError("length and energy scales must be positive")
    rescale = length_scale != 1.0 or energy_scale != 1.0
    if rescale and mode == "extend":
        raise UserInputError(
            "corresponding-states rescale needs --remap_mode replace "
            "(in extend mode source and target share one radial basis)"
        )
    source_zs = model_elements(model)
    new_zs, gather = plan_elements(source_zs, mapping, mode)
    n_old, n_new = len(source_zs), len(new_zs)

    config = extract_config_mace_model(model)
    if rescale and config.get("radial_type") != "bessel":
        raise UserInputError("length rescale supports the Bessel radial basis only")
    if rescale and (config.get("distance_transform") not in (None, "None") or config.get("pair_repulsion")):
        raise UserInputError("length rescale does not support distance transforms or ZBL repulsion")
    if config.get("embedding_specs"):
        raise UserInputError("models with extra embeddings (embedding_specs) are not supported")
    if config.get("distance_transform") not in (None, "None"):
        warnings.warn("the model's distance transform uses covalent radii of the new elements")

    index = torch.tensor(gather, dtype=torch.long)
    old_e0 = model.atomic_energies_fn.atomic_energies.detach().cpu()
    new_e0 = old_e0.index_select(-1, index).clone()
    given = {to_atomic_number(z): float(e) for z, e in (atomic_energies or {}).items()}
    unknown = [z for z in given if z not in new_zs]
    if unknown:
        raise UserInputError(f"E0 given for {symbols(unknown)}, not in the new model ({symbols(new_zs)})")
    kept = [z for z in mapping.values() if z not in given]
    if kept:
        warnings.warn(
            f"no E0 given for {symbols(kept)}: keeping the source element's E0 "
            "(pass atomic_energies / --E0s for the target)"
        )
    for z, e0 in given.items():
        new_e0[..., new_zs.index(z)] = e0

    config.update(
        atomic_numbers=new_zs,
        num_elements=n_new,
        atomic_energies=new_e0.numpy(),
        r_max=config["r_max"] * length_scale,
        atomic_inter_scale=np.asarray(config["atomic_inter_scale"]) * energy_scale,
        atomic_inter_shift=np.asarray(config["atomic_inter_shift"]) * energy_scale,
    )
    dtype = next(model.parameters()).dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        new_model = type(model)(**config)
    finally:
        torch.set_default_dtype(previous)

    src_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    new_state = new_model.state_dict()
    factor = math.sqrt(n_new / n_old)
    done = set()
    src_modules = dict(model.named_modules())
    for name, kind in _element_modules(model).items():
        key = f"{name}.weight"
        gather_fn = _gather_linear if kind == "linear" else _gather_tp
        new_state[key] = gather_fn(src_modules[name], src_state[key], index, factor)
        done.add(key)
    for key in _contraction_keys(model):
        weight = src_state[key]
        # an element-agnostic product keeps one weight row for all elements
        new_state[key] = weight if _is_agnostic(model) else weight.index_select(0, index)
        done.add(key)
    new_state["atomic_energies_fn.atomic_energies"] = new_e0.to(dtype)
    done.update({"atomic_energies_fn.atomic_energies", "atomic_numbers"})
    if hasattr(new_model, "scale_shift") and new_model.scale_shift is not None:
        done.update({"scale_shift.scale", "scale_shift.shift"})

    for key, value in new_state.items():
        if key in done:
            continue
        if key not in src_state:
            raise UserInputError(f"cannot remap: the rebuilt model has an unknown tensor {key}")
        src = src_state[key]
        if src.shape != value.shape:
            raise UserInputError(
                f"cannot remap {key}: element-indexed in an unsupported way ({tuple(src.shape)})"
            )
        new_state[key] = src
    if rescale:
        for key in list(new_state):
            if key == "r_max" or key.endswith(".r_max"):
                new_state[key] = src_state[key] * length_scale
            elif key.endswith("bessel_fn.bessel_weights"):
                new_state[key] = src_state[key] / length_scale
            elif key.endswith("bessel_fn.prefactor"):
                new_state[key] = src_state[key] * length_scale
    new_model.load_state_dict(new_state)
    _copy_plain_attributes(model, new_model)
    new_model.eval()
    log.info(
        "remapped %s -> %s (mode=%s, s=%.6g, k=%.6g)",
        symbols(source_zs), symbols(new_zs), mode, length_scale, energy_scale,
    )
    return new_model


def _is_agnostic(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "use_agnostic_product", False))


def _copy_plain_attributes(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy non-tensor attributes MACE reads at run time (heads, avg_num_neighbors)."""
    if hasattr(src, "heads"):
        dst.heads = list(src.heads)
    for a, b in zip(src.interactions, dst.interactions):
        b.avg_num_neighbors = a.avg_num_neighbors
    dst.to(next(src.parameters()).device)
