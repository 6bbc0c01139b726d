"""Console scripts of mace-transfer. Thin: parse, then call one module below.

Every entry point turns a :class:`mace_transfer.UserInputError` into one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from mace_transfer import UserInputError


def _guarded(func: Callable[[Optional[Sequence[str]]], Optional[int]], argv) -> int:
    """Run ``func(argv)``; a UserInputError becomes ``error: <message>`` and exit code 2."""
    try:
        code = func(argv)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


# --------------------------------------------------------------------------- train
def _train(argv):
    from mace_transfer import train

    return train.main(argv)


def train_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_train``: every ``mace_run_train`` flag plus mace-transfer's group."""
    sys.exit(_guarded(_train, argv))


# --------------------------------------------------------------------------- remap
def _remap(argv):
    raise UserInputError("mace_transfer_remap is not implemented yet (issue: species remap)")


def remap_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_remap IN.model OUT.model --element_map Si:Ge``."""
    sys.exit(_guarded(_remap, argv))


# --------------------------------------------------------------------------- sample
def _sample(argv):
    raise UserInputError("mace_transfer_sample is not implemented yet (issue: classical sampling)")


def sample_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_sample --element Ge --potential sw --n 500 --out ge_sw.xyz``."""
    sys.exit(_guarded(_sample, argv))


# --------------------------------------------------------------------------- label
def _label(argv):
    raise UserInputError("mace_transfer_label is not implemented yet (issue: ab initio data)")


def label_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_label --in structures.xyz --out labelled.xyz --engine cp2k``."""
    sys.exit(_guarded(_label, argv))


# --------------------------------------------------------------------------- eval
def _eval(argv):
    raise UserInputError("mace_transfer_eval is not implemented yet (issue: evaluation)")


def eval_main(argv: Optional[Sequence[str]] = None) -> None:
    """``mace_transfer_eval MODEL.model --test TEST.xyz --reference sw-ge --out DIR``."""
    sys.exit(_guarded(_eval, argv))
