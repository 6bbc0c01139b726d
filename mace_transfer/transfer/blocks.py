"""Block names of a MACE model and the selectors that name them (``--freeze_blocks``, ``--block_lr_factors``).

Pure introspection of parameter names: nothing here touches an optimizer or MACE's code (that seam is
:mod:`mace_transfer.transfer.freeze`, which uses these names).

Block names (see :func:`block_names`)
-------------------------------------
``embedding`` (``node_embedding.*``), ``radial`` (every radial MLP,
``interactions.N.conv_tp_weights.*``), ``interactions.N`` / ``products.N`` / ``readouts.N`` (the
whole block; ``interactions.N`` *includes* its radial MLP, so it overlaps ``radial``),
``interactions`` / ``products`` / ``readouts`` (all of them), any other top-level module that has
parameters (e.g. ``joint_embedding``), and ``re:<regex>`` (``re.search`` over parameter names).

Specificity (when several names cover one parameter, the most specific decides):
``re:`` (4) > ``radial`` (3) > ``embedding``, ``interactions.N``, ``products.N``, ``readouts.N``,
other top-level modules (2) > ``interactions``, ``products``, ``readouts`` (1).
``radial`` names a part *inside* interaction blocks, hence it beats a whole ``interactions.N``;
for one layer's radial MLP use ``re:^interactions\\.0\\.conv_tp_weights\\.``.  Two regexes that
cover one parameter must agree, otherwise it is an error.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Sequence, Tuple, Union

import torch

from mace_transfer import UserInputError

__all__ = [
    "GENERAL_BLOCKS", "EMBEDDING", "RADIAL", "REGEX_PREFIX", "param_block", "is_radial", "display_block",
    "block_names", "specificity", "covers", "check_selectors", "split_list", "check_syntax", "freeze_blocks",
]


GENERAL_BLOCKS = ("interactions", "products", "readouts")
EMBEDDING = "embedding"
RADIAL = "radial"
REGEX_PREFIX = "re:"
# --------------------------------------------------------------------------- block names
def param_block(name: str) -> str:
    """Whole block a parameter belongs to: ``embedding``, ``interactions.N``, ``products.N``,
    ``readouts.N`` or, for anything else, its top-level module name (e.g. ``scale_shift``)."""
    parts = name.split(".")
    if parts[0] == "node_embedding":
        return EMBEDDING
    if parts[0] in GENERAL_BLOCKS and len(parts) > 1 and parts[1].isdigit():
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def is_radial(name: str) -> bool:
    """True for a radial-MLP parameter, ``interactions.N.conv_tp_weights.*``."""
    parts = name.split(".")
    return len(parts) > 2 and parts[0] == "interactions" and parts[2] == "conv_tp_weights"


def display_block(name: str) -> str:
    """Row label of the log table: the block, with ``[radial]`` for radial-MLP parameters."""
    block = param_block(name)
    return f"{block} [radial]" if is_radial(name) else block


def _index_key(block: str) -> Tuple:
    head, _, index = block.partition(".")
    return (head, int(index) if index.isdigit() else -1)


def block_names(model: torch.nn.Module) -> List[str]:
    """Valid ``--freeze_blocks`` / ``--block_lr_factors`` names for ``model`` (besides ``re:``)."""
    names = [n for n, _ in model.named_parameters()]
    blocks = {param_block(n) for n in names}
    out: List[str] = []
    if EMBEDDING in blocks:
        out.append(EMBEDDING)
    if any(is_radial(n) for n in names):
        out.append(RADIAL)
    for general in GENERAL_BLOCKS:
        indexed = sorted((b for b in blocks if b.startswith(general + ".")), key=_index_key)
        if indexed:
            out.append(general)
            out.extend(indexed)
    others = sorted(b for b in blocks if b != EMBEDDING and b.partition(".")[0] not in GENERAL_BLOCKS)
    out.extend(others)
    return out


def specificity(selector: str) -> int:
    if selector.startswith(REGEX_PREFIX):
        return 4
    if selector == RADIAL:
        return 3
    if selector in GENERAL_BLOCKS:
        return 1
    return 2


def covers(selector: str, name: str) -> bool:
    if selector.startswith(REGEX_PREFIX):
        return re.search(selector[len(REGEX_PREFIX):], name) is not None
    if selector == RADIAL:
        return is_radial(name)
    if selector in GENERAL_BLOCKS:
        return name.startswith(selector + ".")
    return param_block(name) == selector


def check_selectors(model: torch.nn.Module, selectors: Iterable[str], flag: str) -> None:
    """Raise UserInputError for a name this model does not have or a regex that matches nothing."""
    valid = block_names(model)
    names = [n for n, _ in model.named_parameters()]
    for selector in selectors:
        if selector.startswith(REGEX_PREFIX):
            if not any(covers(selector, n) for n in names):
                raise UserInputError(
                    f"{flag}: {selector!r} matches no parameter of this model "
                    f"(names look like {names[0]!r}, {names[-1]!r})"
                )
        elif selector not in valid:
            raise UserInputError(
                f"{flag}: unknown block {selector!r}; valid for this model: "
                f"{', '.join(valid)}, or re:<regex over parameter names>"
            )


def split_list(text: str) -> List[str]:
    """Split a comma-separated list; commas inside (), [] or {} (regex syntax) are kept."""
    items, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def check_syntax(selector: str, flag: str) -> None:
    if selector.startswith(REGEX_PREFIX):
        pattern = selector[len(REGEX_PREFIX):]
        if not pattern:
            raise UserInputError(f"{flag}: empty regular expression in {selector!r}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserInputError(f"{flag}: bad regular expression {pattern!r}: {exc}") from None


def freeze_blocks(model: torch.nn.Module, names: Union[str, Sequence[str]]) -> List[str]:
    """Set ``requires_grad=False`` on every parameter covered by any of ``names`` (block names or
    ``re:`` patterns, a list or a comma-separated string). Returns the frozen parameter names."""
    selectors = split_list(names) if isinstance(names, str) else [s.strip() for s in names]
    for selector in selectors:
        check_syntax(selector, "freeze_blocks")
    check_selectors(model, selectors, "freeze_blocks")
    frozen = []
    for name, param in model.named_parameters():
        if any(covers(s, name) for s in selectors):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
