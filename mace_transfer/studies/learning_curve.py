"""Learning curves: target-element MACE models initialised from a source model vs from scratch.

Reproduces the set-up of Röcken & Zavadlav (arXiv 2502.13522), on Stillinger-Weber data
(``configs/learning_curve_sw.yaml``) or PBE data (``configs/learning_curve_pbe.yaml``):

1. one Si source model (trained once on ``data.source``, cached under ``<out>/source/``);
2. zero-shot test errors of the remapped model (Si weights read as Ge), with and without the
   corresponding-states rescale (s, k estimated on the validation set);
3. for ``transfer_freeze``: each candidate block set trained at one small N; the lowest
   *validation* force RMSE wins (``<out>/freeze_selection.json``);
4. the sweep: N (sizes) x seeds x strategies; each run writes ``<out>/records/<name>.json`` (test force
   MAE/RMSE meV/Å, energy MAE meV/atom, wall seconds, epochs run, best epoch, validation curve)
   and is skipped when that file exists;
5. optional: ``--md`` (MD stability, a0 and B vs ``md.reference``, SW-Ge by default, for the
   ``md.seeds`` runs; first the stress MAE of runs recorded before that metric, where the model is at hand) and
   ``--timing`` (``mace_transfer_train`` vs MACE's own ``run_train`` per epoch);
6. ``summary.json``, ``summary.md``, ``learning_curve.png`` (and ``stability.png``) from every
   finished run.

Validation set: ``n_valid`` configurations of ``data.target`` drawn once (``valid_seed``), the same
for every N, seed and strategy. Training subsets are nested: for seed s the rest of the pool is
shuffled once with s and the first N are taken, so N=5 is inside N=10 for the same seed. The seed
is also MACE's ``--seed``. ``data.extra_train`` (optional): configurations added to every run's
training set, not counted in N and never in validation (e.g. close-pair cells for the short-range
wall, ``scripts/make_close_pairs.py``), each at MACE's per-configuration loss weight ``data.extra_train_weight``
when given (e.g. a teacher's labels replayed beside the DFT structures), and with its energy term weighted by
``data.extra_train_energy_weight`` when given (0: forces only).

Strategies: ``scratch``; ``transfer`` (remap the source, fine-tune); ``transfer_freeze`` (+ a
frozen block set); ``transfer_rescale`` (+ corresponding-states s, k); ``mace_freeze`` (MACE's own
``--freeze N`` on the remapped file as ``--foundation_model``); ``classical_pretrain`` (a target
model trained once on ``data.classical``, a classical potential's labels, then re-referenced to
the target E0s and fine-tuned; only meaningful when the target labels are not classical);
``teacher_pretrain`` (the same route when ``data.classical`` holds an accurate model's labels, e.g.
scripts/make_teacher_labels.py: a fast student taught by a slow teacher, issue 23).

Usage (also a pipeline stage, ``kind: learning_curve``)::

    mace_transfer_learning_curve --config configs/learning_curve_sw.yaml \
        [--out DIR] [--sizes 5,10,25] [--seeds 0,1] [--strategies scratch,transfer] \
        [--max-runs N] [--md] [--timing] [--report-only] [--park] [--plan] \
        [--executor local|FILE.yaml] [--scheduler tcp://host:8786]

The sweep's runs train one after the other here, or as Dask tasks (one per run) where the config's
``executor:`` block or ``--executor`` / ``--scheduler`` say (:mod:`mace_transfer.execution`,
docs/EXECUTION.md); the records are the same. Source, selections, MD and timing stay in this process.

Architecture: this module is the entry (:func:`run_study`); :mod:`~mace_transfer.studies.config`
reads the YAML, :mod:`~mace_transfer.studies.data` the files and splits, :mod:`~mace_transfer.studies.runs`
trains (every training through :mod:`mace_transfer.transfer.train`) and writes one record per run,
:mod:`~mace_transfer.studies.report` makes every table and figure from the records alone.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence

from mace_transfer import UserInputError
from mace_transfer.execution import ExecutorSpec, spec_from_config
from mace_transfer.studies import md_runs
from mace_transfer.studies.config import load_config
from mace_transfer.studies.plan import format_plan, full_plan
from mace_transfer.studies.records import write_json
from mace_transfer.studies.report import write_report
from mace_transfer.studies.runs import Sweep, machine_info


def study_executor(config: Dict[str, Any], block: Optional[Dict[str, Any]] = None,
                   scheduler: Optional[str] = None) -> ExecutorSpec:
    """The executor of a study's sweep: ``block`` (else the config's ``executor:`` block) and ``scheduler``;
    a task's threads default to the study's ``threads``. Bad input is a one-line UserInputError."""
    block = (config.get("executor") or {}) if block is None else block
    if not isinstance(block, dict):
        raise UserInputError(f"executor: expected a mapping, got {type(block).__name__}")
    block = dict(block)
    block.setdefault("threads_per_task", int(config.get("threads", 1)))
    try:
        return spec_from_config(block, scheduler=scheduler)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def run_study(config, *, out=None, work=None, sizes: Optional[Sequence[int]] = None,
              seeds: Optional[Sequence[int]] = None, strategies: Optional[Sequence[str]] = None,
              max_runs: Optional[int] = None, md: bool = False, timing: bool = False,
              zero_shot: bool = True, report_only: bool = False, park: bool = False,
              plan: bool = False, progress=print, executor: Optional[ExecutorSpec] = None) -> Dict[str, Any]:
    """Run (or resume) a learning-curve study and write its report; returns the summary.

    ``config`` is a YAML path or an already-loaded mapping; ``sizes``, ``seeds`` and ``strategies``
    default to the config's. ``report_only`` only aggregates the finished runs; ``park`` copies the
    runs cut mid-training to ``<out>/partial/`` (:meth:`Sweep.park_runs`) and trains nothing; ``plan``
    prints what is done, parked and left with a wall-time guess (:mod:`~mace_transfer.studies.plan`),
    writes nothing and returns ``{"plan": rows}``. ``executor``: where the sweep's runs train (one Dask task
    per run, :mod:`mace_transfer.execution`); None: the config's ``executor:`` block, else here, serially.
    """
    if not isinstance(config, dict):
        config = load_config(config)
    if plan and config.get("kind") in ("peers", "alloy"):
        raise UserInputError(f"--plan is for learning-curve studies, not kind: {config['kind']}")
    if config.get("kind") == "peers":  # the yardstick: fine-tuned universal potentials (studies.peers)
        from mace_transfer.studies.peers import run_peers

        return run_peers(config, out=out, work=work, sizes=sizes, seeds=seeds, peers=strategies,
                         max_runs=max_runs, timing=timing, md=md, zero_shot=zero_shot, report_only=report_only,
                         progress=progress)
    if config.get("kind") == "alloy":  # Si -> SiGe by extension (studies.alloy); sizes = alloy counts M
        from mace_transfer.studies.alloy import run_alloy

        return run_alloy(config, out=out, work=work, sizes=sizes, seeds=seeds, strategies=strategies,
                         max_runs=max_runs, report_only=report_only, park=park, progress=progress)
    names = list(strategies) if strategies else list(config["strategies"])
    for name in names:
        if name not in config["strategies"]:
            raise UserInputError(f"strategy {name!r} is not in the config (it has "
                                 f"{', '.join(config['strategies'])})")
    seeds = [int(s) for s in (seeds if seeds else config["seeds"])]
    if max_runs is not None and max_runs < 0:
        raise UserInputError("max_runs must be >= 0")
    # TorchScript/e3nn UserWarnings on every model load would drown the one-line-per-run progress
    warnings.filterwarnings("ignore", category=UserWarning)
    sweep = Sweep(config, out, work, progress=progress)
    if plan:
        rows = full_plan(sweep.out, sweep.work, config, sweep.sizes(sizes), seeds, names)
        progress(format_plan(rows, title=f"plan: {config.get('title', sweep.out)} ({sweep.out})"))
        return {"plan": rows}
    if park:
        sweep.park_runs()
    elif not report_only:
        write_json(sweep.out / "machine.json", machine_info(sweep.threads))
        sweep.check_data()
        if not config.get("stage_two"):  # a stage-two study continues another study's models
            sweep.source_model()
            if zero_shot:
                sweep.zero_shot()
        sweep.sweep(sweep.sizes(sizes), seeds, names, max_runs, executor=executor or study_executor(config))
        if timing:
            sweep.timing()
        if md:
            md_runs.add_missing_stress(sweep)  # runs recorded before the stress metric, model at hand
            md_runs.md_and_properties(sweep, [int(s) for s in config.get("md", {}).get("seeds", [0])],
                                      only=names if strategies else None)
    if config.get("stage_two") and not plan:
        sweep.add_missing_stage_two_checks()
    summary = write_report(config, sweep.out)
    progress(f"report: {sweep.out}/summary.md, {sweep.out}/summary.json ({summary['n_runs']} runs)")
    return summary
