"""MACE's results log and the early stop read from it.

MACE writes one JSON object a line to ``<results_dir>/<name>_run-<seed>_train.txt`` (``mode`` "opt"
per optimizer step batch, "eval" per validation: ``loss``, ``rmse_f`` eV/Å, ...). The readers below are
what every study and report reads training curves with; :func:`early_stop_seam` is the one seam into
MACE's training loop (``mace.tools.train``'s epoch limit) behind ``--early_stop_patience``: MACE
0.3.16's own ``--patience`` never stops a serial run.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from mace_transfer import UserInputError

log = logging.getLogger(__name__)


def iter_mace_results_file(path) -> Iterator[Dict[str, Any]]:
    """The rows of one MACE results log (one JSON object a line; bad or half-written lines skipped)."""
    path = Path(path)
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def iter_mace_results(results_dir) -> Iterator[Dict[str, Any]]:
    """The rows of MACE's ``*_train.txt`` results files (one JSON object a line; bad lines skipped)."""
    for path in sorted(Path(results_dir).glob("*_train.txt")):
        yield from iter_mace_results_file(path)


def results_file(args) -> Path:
    """MACE's results log of this run: ``<results_dir>/<name>_run-<seed>_train.txt`` (JSON lines).

    Read before MACE's ``tools.check_args`` fills the directories in, so resolved as it will:
    without ``--results_dir``, ``<work_dir>/results`` (``--work_dir`` defaults to ".")."""
    folder = args.results_dir or Path(getattr(args, "work_dir", None) or ".") / "results"
    return Path(folder) / f"{args.name}_run-{args.seed}_train.txt"


def steps_to_epochs(steps: int, n_train: int, batch_size: int) -> int:
    """Epochs holding at least ``steps`` optimizer steps at ``n_train`` structures (MACE's training loader drops
    the last partial batch; a batch larger than N is N): a patience in steps waits as long at N = 2 as at 292."""
    steps_per_epoch = max(1, n_train // max(1, min(batch_size, n_train)))
    return math.ceil(int(steps) / steps_per_epoch)


def should_stop(history: Sequence[tuple], patience: int, min_epochs: int = 0, min_delta: float = 0.0) -> bool:
    """True when the last validated epoch is >= ``min_epochs`` and >= ``patience`` epochs after the
    last improvement: an epoch whose loss is below ``(1 - min_delta)`` x the loss of the improvement
    before it (``min_delta`` = 0: the lowest-loss epoch, the first one on ties, as MACE's strict ``<``
    keeps it). ``history``: (epoch, validation loss) rows in epoch order."""
    if not history:
        return False
    improved_epoch, improved_loss = history[0]
    for epoch, loss in history[1:]:
        if loss < improved_loss * (1.0 - min_delta):
            improved_epoch, improved_loss = epoch, loss
    last_epoch = history[-1][0]
    return last_epoch >= min_epochs and last_epoch - improved_epoch >= patience


def validated_rows_in_order(path) -> List[tuple]:
    """(epoch, MACE's eval row) per validation, in the order MACE logged them, all chunks of a run: an
    epoch trained again after a resume appears again (the last head's row when several heads log)."""
    rows: List[tuple] = []
    for row in iter_mace_results_file(path):
        if row.get("mode") == "eval" and row.get("epoch") is not None and row.get("loss") is not None:
            entry = (int(row["epoch"]), row)
            if rows and rows[-1][0] == entry[0]:
                rows[-1] = entry  # another head of the same validation
            else:
                rows.append(entry)
    return rows


def validated_epochs_in_order(path) -> List[tuple]:
    """(epoch, validation loss) per validation, as :func:`validated_rows_in_order`."""
    return [(epoch, float(row["loss"])) for epoch, row in validated_rows_in_order(path)]


def validation_history(path) -> List[tuple]:
    """(epoch, validation loss) per validated epoch from MACE's results log, in epoch order; an epoch
    logged again (retrained after a resume) counts with its newest loss.

    With several heads (multihead replay) MACE keeps the checkpoint on the last head's loss: so
    does this (the last eval row of each epoch). The initial evaluation (epoch null) is skipped.
    """
    return sorted(dict(validated_epochs_in_order(path)).items())


def improves_on_earlier_epochs(logged: Sequence[tuple], epoch: int) -> bool:
    """True when the newest validation (``epoch``, the last of ``logged``) is below every validation
    logged before it in the run, whichever chunk logged it: MACE's ``loss < lowest_loss`` over the whole
    run. (A resumed chunk retrains from its checkpoint's epoch: the loss the checkpoint was kept for
    stays in the log and still counts.)"""
    if not logged or logged[-1][0] != epoch:
        return True  # nothing logged for it: leave MACE's own decision
    earlier = [loss for _, loss in logged[:-1]]
    return not earlier or logged[-1][1] < min(earlier)


def keep_global_best(handler, results_path: Path):
    """Make ``handler.save`` (MACE's ``CheckpointHandler``) skip checkpoints that are not the best epoch of
    the whole run. A resumed MACE process starts with ``lowest_loss = inf`` and saves its first epoch
    as "best" even when the checkpoint it resumed from was better; its final ``load_latest`` (the
    highest epoch on disk) would then keep the resumed chunk's best, not the run's. Returns the handler."""
    original = handler.save

    def save_if_global_best(state, epochs, keep_last=False):
        if improves_on_earlier_epochs(validated_epochs_in_order(results_path), int(epochs)):
            return original(state, epochs, keep_last)
        log.info(f"mace-transfer: epoch {epochs} not saved: an earlier chunk of this run validated lower")
        return None

    handler.save = save_if_global_best
    return handler


class EpochLimit:
    """Stands in for ``max_num_epochs`` in MACE's ``while epoch < max_num_epochs`` (``tools.train``).

    ``epoch < limit`` is ``int.__lt__`` -> NotImplemented -> ``limit.__gt__(epoch)``: true while
    ``epoch < maximum`` and :func:`should_stop` is false on the results log MACE has written so far.
    """

    def __init__(self, maximum: int, results_path: Path, patience: int, min_epochs: int = 0,
                 min_delta: float = 0.0):
        self.maximum, self.results_path = int(maximum), Path(results_path)
        self.patience, self.min_epochs, self.min_delta = int(patience), int(min_epochs), float(min_delta)
        self.stopped_at: Optional[int] = None

    def __gt__(self, epoch) -> bool:
        if epoch >= self.maximum:
            return False
        if should_stop(validation_history(self.results_path), self.patience, self.min_epochs, self.min_delta):
            self.stopped_at = int(epoch)
            return False
        return True

    def __int__(self) -> int:
        return self.maximum


@contextmanager
def early_stop_seam(args):
    """The seam: MACE's ``run`` calls ``mace.tools.train(..., max_num_epochs=args.max_num_epochs)``;
    inside this context that call gets an :class:`EpochLimit` instead, so the loop ends once the
    validation loss has not improved for ``--early_stop_patience`` epochs, and (without Stage Two) MACE's
    checkpoint handler saves only epochs that beat every earlier epoch of the run's log
    (:func:`keep_global_best`: a run resumed over several processes keeps its best epoch, not its last
    chunk's). Everything after the loop (best checkpoint reloaded, error tables, the saved ``.model``) is MACE's own. The original
    function is restored on exit, also after an error. Without the flag nothing is patched."""
    if args.early_stop_patience is None:
        yield None
        return
    from mace import tools

    original = tools.train
    limit = EpochLimit(args.max_num_epochs, results_file(args), args.early_stop_patience,
                       args.early_stop_min_epochs, args.early_stop_min_delta)

    def train_with_early_stop(*a, **kw):
        kw["max_num_epochs"] = limit
        if kw.get("swa") is None and kw.get("checkpoint_handler") is not None:  # Stage Two changes the loss
            keep_global_best(kw["checkpoint_handler"], limit.results_path)
        original(*a, **kw)
        if limit.stopped_at is not None:
            message = (f"mace-transfer: early stop before epoch {limit.stopped_at}: validation loss not "
                       f"improved for {limit.patience} epochs")
            log.info(message)

    tools.train = train_with_early_stop
    try:
        yield limit
    finally:
        tools.train = original


def check_early_stop(args) -> None:
    """One-line refusals of an early stop that cannot mean what it says."""
    if args.early_stop_patience is None:
        return
    if not 0.0 <= args.early_stop_min_delta < 1.0:
        raise UserInputError(f"--early_stop_min_delta is a relative improvement in [0, 1), got {args.early_stop_min_delta}")
    if args.early_stop_patience < 1:
        raise UserInputError(f"--early_stop_patience must be >= 1, got {args.early_stop_patience}")
    if args.swa:
        raise UserInputError("--early_stop_patience ends the whole run; with --swa, stage two would never "
                             "start: use MACE's --start_swa instead")
    if args.distributed:
        raise UserInputError("--early_stop_patience reads the results log of one process: not with --distributed")
