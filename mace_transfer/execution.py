"""The one seam between mace-transfer's parallel work and an engine that runs it (issue 47).

A *task* is an ordinary module-level function with file or value inputs and a picklable return value,
so the serial path and an engine run the same code. The caller (the labeller, a study, the active
loop) writes every output file itself from the returned values, in the parent process: a task that
dies and reruns on another worker can therefore never write twice.

Public API (the contract the labeller, studies and the active loop code against)
--------------------------------------------------------------------------------
- :class:`ExecutorSpec` -- where tasks run: ``serial`` (this process, the default), ``local`` (a Dask
  ``LocalCluster`` sized to the machine), ``scheduler`` (a running Dask scheduler at ``address``),
  ``slurm`` / ``pbs`` (dask-jobqueue clusters from a YAML block);
- :class:`Task`, :class:`Outcome` -- one unit of work and what became of it (``ok`` / ``error``);
- :func:`run_tasks` -- run tasks, call ``on_done(outcome)`` in this process as each ends (in completion
  order), return the outcomes in task order; a task that raises is an ``Outcome(ok=False)`` with its
  reason, the rest go on;
- :func:`spec_from_config` -- an ``executor:`` YAML block and/or ``--scheduler ADDRESS`` -> spec;
- :func:`pinned_threads` -- a task's own ``OMP_NUM_THREADS`` / torch thread count.

This module imports nothing of the package (the lowest floor), so every layer may use it; Dask is
imported only when a non-serial spec is used.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

#: the kinds of executor an ``executor:`` block may name
KINDS = ("serial", "local", "scheduler", "slurm", "pbs")


@dataclass(frozen=True)
class ExecutorSpec:
    """Where tasks run.

    ``workers``: worker processes of a local cluster (default: cores // threads_per_task) or jobs of
    a jobqueue cluster; ``threads_per_task``: the threads one task may use (``OMP_NUM_THREADS`` and
    torch's); ``address``: a running scheduler (``tcp://host:8786``); ``jobqueue``: keyword
    arguments of the dask-jobqueue cluster class (``cores``, ``memory``, ``queue``, ``walltime``,
    ``account``, ``job_extra_directives``...); ``retries``: how often a task whose worker died is run
    again elsewhere.
    """

    kind: str = "serial"
    workers: Optional[int] = None
    threads_per_task: int = 1
    address: Optional[str] = None
    jobqueue: Dict[str, Any] = field(default_factory=dict)
    retries: int = 2


@dataclass
class Task:
    """One unit of work: ``fn(*args, **kwargs)``; ``key`` is unique in one call and stable across
    reruns (e.g. ``label-0007-<structure hash>``, a study's run name)."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What became of a task: its return ``value`` or its ``error`` (``"ExcType: first line"``);
    ``wall_s`` the task's own wall time in s (measured where it ran)."""

    key: str
    ok: bool
    value: Any = None
    error: Optional[str] = None
    wall_s: float = 0.0


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the body with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and torch's intra-op threads set to
    ``threads``; restore both after."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(threads)
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    except ImportError:  # a task that needs no torch (CP2K through ASE) runs without it
        pass
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)


def error_line(exc: BaseException) -> str:
    """``"ExcType: first line of the message"`` (one line, for records and logs)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def call_task(fn: Callable[..., Any], args: tuple, kwargs: Dict[str, Any], threads: int, key: str) -> Outcome:
    """Run one task where it lands (this process or a worker) with its threads pinned; an exception
    becomes ``Outcome(ok=False)``."""
    start = time.perf_counter()
    with pinned_threads(threads):
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a task's failure is data, the rest go on
            return Outcome(key, False, error=error_line(exc), wall_s=time.perf_counter() - start)
    return Outcome(key, True, value=value, wall_s=time.perf_counter() - start)


def _check_keys(tasks: Sequence[Task]) -> None:
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"task keys must be unique in one call: {dup[:3]} repeated")


def run_serial(tasks: Sequence[Task], spec: ExecutorSpec,
               on_done: Optional[Callable[[Outcome], None]] = None) -> List[Outcome]:
    """Run ``tasks`` one after the other in this process."""
    outcomes = []
    for task in tasks:
        outcome = call_task(task.fn, task.args, task.kwargs, spec.threads_per_task, task.key)
        if on_done is not None:
            on_done(outcome)
        outcomes.append(outcome)
    return outcomes


def run_tasks(tasks: Sequence[Task], spec: Optional[ExecutorSpec] = None,
              on_done: Optional[Callable[[Outcome], None]] = None,
              say: Callable[[str], None] = print) -> List[Outcome]:
    """Run ``tasks`` where ``spec`` says (serial when None); ``on_done`` is called in this process as
    each task ends; returns the outcomes in the order of ``tasks``."""
    tasks = list(tasks)
    _check_keys(tasks)
    spec = spec or ExecutorSpec()
    if spec.kind == "serial":
        return run_serial(tasks, spec, on_done)
    raise NotImplementedError(f"executor kind {spec.kind!r} is not built yet")


def spec_from_config(block: Optional[Dict[str, Any]] = None, scheduler: Optional[str] = None) -> ExecutorSpec:
    """An ``executor:`` block (``kind``, ``workers``, ``threads_per_task``, ``address``, ``retries``,
    ``jobqueue``) and/or a ``--scheduler ADDRESS`` (which wins) -> :class:`ExecutorSpec`; no block
    and no address is the serial spec. Bad input raises ValueError with one line."""
    block = dict(block or {})
    unknown = sorted(set(block) - {"kind", "workers", "threads_per_task", "address", "retries", "jobqueue"})
    if unknown:
        raise ValueError(f"executor: unknown key(s) {', '.join(unknown)}")
    if scheduler:
        block["kind"], block["address"] = "scheduler", scheduler
    kind = block.get("kind", "serial")
    if kind not in KINDS:
        raise ValueError(f"executor: kind {kind!r} is not one of {', '.join(KINDS)}")
    return ExecutorSpec(kind=kind, workers=block.get("workers"),
                        threads_per_task=int(block.get("threads_per_task", 1)),
                        address=block.get("address"), jobqueue=dict(block.get("jobqueue") or {}),
                        retries=int(block.get("retries", 2)))
