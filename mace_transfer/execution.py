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
- :func:`pinned_threads` -- a task's own ``OMP_NUM_THREADS`` / torch thread count;
- :func:`open_executor` -- keep one Dask client (and its cluster) open across several
  :func:`run_tasks` calls (``client=``), e.g. the rounds of the active loop;
- :class:`ExecutorLost` -- the scheduler went away: finished tasks were handed to ``on_done``, a
  rerun of the same command resumes from what the caller recorded.

Faults: a worker that dies mid-task (kill -9, out of memory, a lost node) makes Dask's scheduler
run the task again on another worker, up to ``retries`` times (Dask's ``allowed-failures``), then
its outcome is ``ok=False`` (``KilledWorker``). The caller writes each outcome once, when Dask
hands it back, so a rerun task is never written twice.

This module imports nothing of the package (the lowest floor), so every layer may use it; Dask is
imported only when a non-serial spec is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

LOG = logging.getLogger(__name__)

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


#: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker (``distributed.nanny.pre-spawn-environ``):
#: glibc then trims the heap at every free, which made a 16-atom CP2K label take 110 instead of 82 CPU-s on
#: this machine (2026-12-07, one label each way side by side). Local clusters start without it, and a task
#: (and what it starts) runs without it on any worker.
DROPPED_FROM_TASK_ENV = ("MALLOC_TRIM_THRESHOLD_",)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the body with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` and torch's
    intra-op threads set to ``threads``; restore both after. Torch is set only when already imported
    (a CP2K label needs no torch; a task that imports it inside reads the variables instead)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names + DROPPED_FROM_TASK_ENV}
    for name in names:
        os.environ[name] = str(threads)
    for name in DROPPED_FROM_TASK_ENV:  # what a task starts (CP2K) must not inherit it
        os.environ.pop(name, None)
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch_threads is not None:
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



# ----------------------------------------------------------------------------- Dask
class ExecutorLost(RuntimeError):
    """The Dask scheduler could not be reached or went away mid-run (one line; rerun to resume)."""


def local_workers(spec: ExecutorSpec) -> int:
    """Worker processes of a local cluster: ``spec.workers``, else the usable cores // threads per task."""
    if spec.workers:
        return int(spec.workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, spec.threads_per_task))


def make_cluster(spec: ExecutorSpec):
    """The Dask cluster ``spec`` asks for (None for ``scheduler``: one runs already). A ``slurm`` / ``pbs``
    cluster is built with no job submitted (``cluster.job_script()`` shows what would be)."""
    threads = str(spec.threads_per_task)
    if spec.kind == "local":
        import dask
        from distributed import LocalCluster

        spawn_env = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}).items()
                     if k not in DROPPED_FROM_TASK_ENV}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
            return LocalCluster(n_workers=local_workers(spec), threads_per_worker=1, processes=True,
                                dashboard_address=":0", silence_logs=logging.ERROR,
                                env={name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                "OPENBLAS_NUM_THREADS")})
    if spec.kind in ("slurm", "pbs"):
        import dask_jobqueue

        cls = dask_jobqueue.SLURMCluster if spec.kind == "slurm" else dask_jobqueue.PBSCluster
        options = dict(spec.jobqueue)
        options.setdefault("processes", 1)  # one worker process per job, one task at a time
        options.setdefault("job_script_prologue", [f"export OMP_NUM_THREADS={threads}"])
        options.setdefault("worker_extra_args", ["--nthreads", "1"])
        try:
            return cls(**options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"executor.jobqueue ({spec.kind}): {error_line(exc)}") from None
    return None


#: clients opened by :func:`open_executor`, with their spec: :func:`run_tasks` with an equal spec reuses one
_OPEN: List[tuple] = []


@contextlib.contextmanager
def open_executor(spec: ExecutorSpec, say: Callable[[str], None] = print) -> Iterator[Any]:
    """A Dask client for ``spec`` (None for ``serial``), its cluster started and closed around the body.

    Says in one line where tasks run (workers x threads per task) and the dashboard's address. Inside
    the body, :func:`run_tasks` with an equal spec (also through the labeller or a study) uses this
    client instead of starting a cluster per call.
    """
    if spec.kind == "serial":
        yield None
        return
    import dask
    from distributed import Client

    # a task whose worker dies runs again elsewhere, ``retries`` times (read when a scheduler is made)
    with dask.config.set({"distributed.scheduler.allowed-failures": int(spec.retries)}):
        cluster = make_cluster(spec)
        try:
            if spec.kind in ("slurm", "pbs"):
                cluster.scale(jobs=int(spec.workers or 1))
            try:
                client = Client(cluster if cluster is not None else spec.address, timeout=30)
            except OSError as exc:
                raise ExecutorLost(f"executor: cannot reach the Dask scheduler at {spec.address} "
                                   f"({error_line(exc)})") from None
            lost = False
            try:
                say(f"executor: {_where(spec, client)}; dashboard {client.dashboard_link}")
                _OPEN.append((spec, client))
                yield client
            except ExecutorLost:
                lost = True
                raise
            finally:
                _OPEN.remove((spec, client))
                quiet = logging.getLogger("distributed.client")
                level = quiet.level
                if lost:  # closing stops the client's reconnecting, which Dask logs as an error with a traceback
                    quiet.setLevel(logging.CRITICAL)
                try:
                    client.close()
                finally:
                    quiet.setLevel(level)
        finally:
            if cluster is not None:
                cluster.close()


def _where(spec: ExecutorSpec, client) -> str:
    if spec.kind == "local":
        return (f"local Dask cluster, {local_workers(spec)} worker processes x {spec.threads_per_task} "
                f"thread(s) per task, one task per worker at a time")
    if spec.kind == "scheduler":
        workers = client.nthreads()
        return (f"Dask scheduler {spec.address}, {len(workers)} workers ({sum(workers.values())} task slots) "
                f"x {spec.threads_per_task} thread(s) per task (retries set by that scheduler's "
                "distributed.scheduler.allowed-failures)")
    return (f"{spec.kind} cluster, {int(spec.workers or 1)} job(s) of one worker x "
            f"{spec.threads_per_task} thread(s) per task (jobs start when the queue lets them)")


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else (
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s")


def _outcome_of(future, key: str, done: int, total: int) -> Outcome:
    """What became of one finished Dask future; a cancelled one means the scheduler went away."""
    if future.status == "finished":
        return future.result()
    if future.status == "cancelled":
        raise ExecutorLost(f"executor: lost the Dask scheduler after {done} of {total} tasks (those are "
                           "recorded); rerun the same command to resume")
    return Outcome(key, False, error=error_line(future.exception()))  # KilledWorker after the retries


#: seconds between two questions to the scheduler for its task slots (workers come and go on a cluster)
SLOTS_EVERY_S = 10.0


def run_dask(client, tasks: Sequence[Task], spec: ExecutorSpec,
             on_done: Optional[Callable[[Outcome], None]] = None,
             say: Callable[[str], None] = print) -> List[Outcome]:
    """Submit ``tasks`` to ``client``; hand each outcome to ``on_done`` here as it ends, with a progress
    line (done / running / failed, ETA); returns the outcomes in task order. An exception from
    ``on_done`` cancels the tasks not yet finished and is raised."""
    from distributed import as_completed

    tag = uuid.uuid4().hex[:8]  # a long-lived scheduler must never see a key twice
    futures = {client.submit(call_task, t.fn, t.args, t.kwargs, spec.threads_per_task, t.key,
                             key=f"{t.key}-{tag}", pure=False): t.key for t in tasks}
    outcomes: Dict[str, Outcome] = {}
    failed, start = 0, time.perf_counter()
    slots, slots_at = 0, -SLOTS_EVERY_S
    try:
        for future in as_completed(list(futures)):
            key = futures[future]
            outcome = _outcome_of(future, key, len(outcomes), len(tasks))
            outcomes[key] = outcome
            failed += not outcome.ok
            left = len(tasks) - len(outcomes)
            if time.perf_counter() - slots_at > SLOTS_EVERY_S:  # one call to the scheduler, not one per task
                slots, slots_at = sum(client.nthreads().values()), time.perf_counter()
            running = min(left, slots)
            eta = (time.perf_counter() - start) / len(outcomes) * left
            say(f"executor: {len(outcomes)}/{len(tasks)} done ({failed} failed), {running} running; "
                f"{key} {'ok' if outcome.ok else 'FAILED: ' + str(outcome.error)} in {outcome.wall_s:.1f} s; "
                f"ETA {_fmt_s(eta)}")
            if on_done is not None:
                on_done(outcome)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if not f.done()])
        raise
    return [outcomes[t.key] for t in tasks]


def run_tasks(tasks: Sequence[Task], spec: Optional[ExecutorSpec] = None,
              on_done: Optional[Callable[[Outcome], None]] = None,
              say: Callable[[str], None] = print, client: Any = None) -> List[Outcome]:
    """Run ``tasks`` where ``spec`` says (serial when None); ``on_done`` is called in this process as
    each task ends; returns the outcomes in the order of ``tasks``. ``client``: an open Dask client
    (:func:`open_executor`) to reuse instead of starting a cluster for this call."""
    tasks = list(tasks)
    _check_keys(tasks)
    spec = spec or ExecutorSpec()
    if spec.kind == "serial" or not tasks:
        return run_serial(tasks, spec, on_done)
    client = client if client is not None else next((c for s, c in reversed(_OPEN) if s == spec), None)
    if client is not None:
        return run_dask(client, tasks, spec, on_done, say)
    with open_executor(spec, say) as opened:
        return run_dask(opened, tasks, spec, on_done, say)


def spec_from_config(block: Optional[Dict[str, Any]] = None, scheduler: Optional[str] = None) -> ExecutorSpec:
    """An ``executor:`` block (``kind``, ``workers``, ``threads_per_task``, ``address``, ``retries``,
    ``jobqueue``) and/or a ``--scheduler ADDRESS`` (which wins) -> :class:`ExecutorSpec`; no block
    and no address is the serial spec. Bad input raises ValueError with one line."""
    if block is not None and not isinstance(block, dict):
        raise ValueError(f"executor: expected a mapping, got {type(block).__name__}")
    block = dict(block or {})
    unknown = sorted(set(block) - {"kind", "workers", "threads_per_task", "address", "retries", "jobqueue"})
    if unknown:
        raise ValueError(f"executor: unknown key(s) {', '.join(unknown)}")
    if scheduler:
        block["kind"], block["address"] = "scheduler", scheduler
    kind = block.get("kind", "serial")
    if kind not in KINDS:
        raise ValueError(f"executor: kind {kind!r} is not one of {', '.join(KINDS)}")
    numbers = {}
    for name, default, least in (("workers", None, 1), ("threads_per_task", 1, 1), ("retries", 2, 0)):
        value = block.get(name, default)
        if value is None:
            numbers[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"executor: {name} must be an integer >= {least}, got {value!r}")
        numbers[name] = value
    if kind == "scheduler" and not block.get("address"):
        raise ValueError("executor: kind scheduler needs an address (tcp://host:8786) or --scheduler")
    jobqueue = block.get("jobqueue") or {}
    if not isinstance(jobqueue, dict):
        raise ValueError("executor: jobqueue must be a mapping of the dask-jobqueue cluster's options")
    if kind in ("slurm", "pbs") and not {"cores", "memory"} <= set(jobqueue):
        raise ValueError(f"executor: kind {kind} needs jobqueue.cores and jobqueue.memory (e.g. 16, 60GB)")
    return ExecutorSpec(kind=kind, workers=numbers["workers"], threads_per_task=numbers["threads_per_task"],
                        address=block.get("address"), jobqueue=dict(jobqueue), retries=numbers["retries"])
