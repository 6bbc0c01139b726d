"""Resumable labelling: label structures with any ASE calculator into one extxyz file, frame by frame.

Public API
----------
- :func:`label_structures` -- label a list of structures into an extxyz file with MACE keys
  (``REF_energy`` eV, ``REF_forces`` eV/Å, ``REF_stress`` eV/Å^3, ``config_type``); each finished
  frame is appended and fsync'd at once, a rerun skips frames already done (index + hash of
  numbers/positions/cell/pbc), failures go to a ``*.failed.jsonl`` sidecar and are skipped.
- :func:`label_one` -- the task of one structure (serial or on a Dask worker, :mod:`mace_transfer.execution`).
- :func:`add_isolated_atoms` -- append an ``IsolatedAtom`` frame (MACE's E0s) per element.
- :func:`scale_lengths` -- bring a sampled cell to another density before labelling.
- Bookkeeping: :func:`structure_hash`, :func:`label_id`, :func:`read_done`, :func:`same_structure`,
  :func:`read_failed`, :func:`failed_sidecar`, :func:`labelled_source_indices`,
  :func:`read_complete_frames`.

One labeller per output file (an ``flock``, else :class:`OutputBusy`); a half-written last frame is
cut on the next start. Units: energy eV, length Å, force eV/Å, stress eV/Å^3, time s.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed

from mace_transfer.datagen.dft.cp2k import CP2KNotRunnable, PBESettings, isolated_atom
from mace_transfer.execution import ExecutorSpec, Outcome, Task, run_tasks


class SettingsMismatch(ValueError):
    """The output file holds labels made with other physics settings."""


class LabellingAborted(RuntimeError):
    """Too many consecutive failures: something systematic is wrong (engine, settings)."""


class OutputBusy(RuntimeError):
    """Another process is labelling into the same output file."""


LOW_CORE_USAGE = 0.6  # below this fraction of its cores the labeller warns (once per run)


def _core_usage(cpu_s: Optional[float], wall_s: float, nprocs: Optional[int]) -> Optional[Tuple[float, int]]:
    """(CPU s / (wall s * ranks), ranks) of the last engine run; None when the engine does not say."""
    if cpu_s is None or not nprocs or wall_s <= 0:
        return None
    return float(cpu_s) / (wall_s * int(nprocs)), int(nprocs)


# ----------------------------------------------------------------------------- bookkeeping
def structure_hash(atoms: Atoms) -> str:
    """sha1 (12 hex) of atomic numbers, positions, cell and pbc, exactly as given (float64 bytes)."""
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype=np.float64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()[:12]


def label_id(index: int, atoms: Atoms) -> str:
    """Identity of input structure ``index``: ``"<index>-<hash>"``."""
    return f"{index}-{structure_hash(atoms)}"


def scale_lengths(atoms: Atoms, factor: float) -> Atoms:
    """A copy of ``atoms`` with cell and positions scaled isotropically by ``factor`` (a_new / a_old).

    For a classical potential with one length scale (Stillinger-Weber) this maps a configuration
    sampled at its lattice constant onto the same state at another lattice constant (corresponding
    states): how SW-sampled cells are brought to PBE density. The input's ``REF_*`` labels no
    longer belong to the structure and are dropped; ``info["length_scale"]`` records ``factor``.
    """
    factor = float(factor)
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"length scale must be a positive number, got {factor}")
    scaled = atoms.copy()
    scaled.set_cell(np.asarray(atoms.cell) * factor, scale_atoms=True)
    for key in [k for k in scaled.info if k.startswith("REF_")]:
        del scaled.info[key]
    for key in [k for k in scaled.arrays if k.startswith("REF_")]:
        del scaled.arrays[key]
    scaled.info["length_scale"] = factor * float(atoms.info.get("length_scale", 1.0))
    return scaled


def labelled_source_indices(path: os.PathLike) -> set:
    """``source_index`` of every labelled frame in ``path`` (empty if the file does not exist)."""
    from ase.io import iread

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return set()
    return {int(f.info["source_index"]) for f in iread(str(path), index=":", format="extxyz")
            if "source_index" in f.info}


def failed_sidecar(out_path: os.PathLike) -> Path:
    """``labelled.xyz`` -> ``labelled.failed.jsonl``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".failed.jsonl")


def _complete_frames_end(data: bytes) -> int:
    """Byte offset where the last complete extxyz frame of ``data`` ends (all of it if none is cut)."""
    lines = data.splitlines(keepends=True)
    offset = good_end = 0
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:
            offset += len(lines[i])
            i += 1
            good_end = offset
            continue
        try:
            n = int(head)
        except ValueError:
            break
        frame = lines[i:i + n + 2]
        if len(frame) < n + 2 or not frame[-1].endswith(b"\n"):
            break
        offset += sum(len(x) for x in frame)
        i += n + 2
        good_end = offset
    return good_end


def _repair_tail(path: Path, log: Callable[[str], None]) -> None:
    """Cut an incomplete last extxyz frame (a crash mid-write) so the file reads cleanly."""
    if not path.exists():
        return
    data = path.read_bytes()
    good_end = _complete_frames_end(data)
    if good_end < len(data):
        log(f"label: {path}: cutting {len(data) - good_end} bytes of an incomplete last frame")
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())


def read_complete_frames(path: os.PathLike) -> List[Atoms]:
    """Every complete frame of a labelled extxyz file, without touching the file.

    Safe while a labeller appends to it: a frame being written is left out, not repaired.
    """
    from ase.io import read

    data = Path(path).read_bytes()
    data = data[:_complete_frames_end(data)]
    if not data.strip():
        return []
    return read(io.StringIO(data.decode()), index=":", format="extxyz")


def read_done(out_path: os.PathLike, log: Callable[[str], None] = print,
              geometry: Optional[Dict[int, Atoms]] = None) -> Dict[str, str]:
    """``label_id -> dft_settings`` of frames already in ``out_path`` (after repairing its tail).

    ``geometry``: a dict to fill with ``source_index -> frame`` of the same frames, for
    :func:`same_structure` when a hash does not match (see :func:`label_structures`).
    """
    from ase.io import iread

    out_path = Path(out_path)
    if not out_path.exists() or out_path.stat().st_size == 0:
        return {}
    _repair_tail(out_path, log)
    done = {}
    for frame in iread(str(out_path), index=":", format="extxyz"):
        if "label_id" in frame.info:
            done[str(frame.info["label_id"])] = str(frame.info.get("dft_settings", ""))
            if geometry is not None and int(frame.info.get("source_index", -1)) >= 0:
                geometry[int(frame.info["source_index"])] = frame
    return done


SAME_GEOMETRY_ATOL = 1e-7  # Å: far below any physical difference, above float64 noise and the 1e-8 of extxyz


def same_structure(a: Atoms, b: Atoms, atol: float = SAME_GEOMETRY_ATOL) -> bool:
    """Same elements, pbc, and cell and positions within ``atol`` Å (element by element)."""
    return (len(a) == len(b) and np.array_equal(a.numbers, b.numbers) and np.array_equal(a.pbc, b.pbc)
            and np.allclose(np.asarray(a.cell), np.asarray(b.cell), rtol=0.0, atol=atol)
            and np.allclose(a.positions, b.positions, rtol=0.0, atol=atol))


def read_failed(failed_path: os.PathLike) -> Dict[str, dict]:
    """``label_id -> record`` of structures recorded as failed."""
    failed_path = Path(failed_path)
    records = {}
    if failed_path.exists():
        for line in failed_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from a crash
            records[rec["label_id"]] = rec
    return records


def _append_durably(path: Path, text: str) -> None:
    """Append ``text`` in one write, then flush and fsync."""
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _frame_text(frame: Atoms) -> str:
    from ase.io import write

    buf = io.StringIO()
    write(buf, frame, format="extxyz")
    return buf.getvalue()


_DROP_INFO_PREFIXES = ("REF_",)
_DROP_INFO_KEYS = {"energy", "free_energy", "forces", "stress", "virial", "virials", "label_id",
                   "dft_settings", "source_index", "dft_wall_s", "dft_cpu_s", "dft_n_scf"}


def _labelled_frame(atoms: Atoms, results: Dict, index: int, lid: str, settings_tag: str) -> Atoms:
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    for key, value in atoms.info.items():
        if key in _DROP_INFO_KEYS or key.startswith(_DROP_INFO_PREFIXES):
            continue
        if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
            frame.info[key] = value
    frame.info.setdefault("config_type", "Default")
    frame.info["REF_energy"] = float(results["energy"])
    if results.get("stress") is not None:
        frame.info["REF_stress"] = np.asarray(results["stress"], dtype=float).reshape(6)
    frame.info["label_id"] = lid
    frame.info["source_index"] = int(index)
    frame.info["dft_settings"] = settings_tag
    frame.arrays["REF_forces"] = np.asarray(results["forces"], dtype=float).reshape(len(atoms), 3)
    return frame


def _writer_lock(out_path: Path):
    """An exclusive advisory lock (flock) on ``out_path``: one labeller per output file, so two
    processes never append interleaved frames. Returns the open handle; closing it releases the lock."""
    import fcntl

    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(out_path, "a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputBusy(f"{out_path} is being written by another labelling process; "
                         "wait for it or choose another output file") from None
    return handle


def _locks_output(func):
    """Run ``func`` holding :func:`_writer_lock` on its ``out_path`` argument."""
    import functools
    import inspect

    signature = inspect.signature(func)

    @functools.wraps(func)
    def locked(*args, **kwargs):
        out_path = Path(signature.bind(*args, **kwargs).arguments["out_path"])
        existed = out_path.exists()
        lock = _writer_lock(out_path)
        try:
            return func(*args, **kwargs)
        finally:
            if not existed and out_path.stat().st_size == 0:
                out_path.unlink()  # the lock created it and nothing was labelled: leave no empty file
            lock.close()

    return locked


def label_one(calculator: Union[Calculator, Callable[[], Calculator]], atoms: Atoms,
              compute_stress: bool = True) -> Dict:
    """Label one structure where this task runs (this process or a Dask worker).

    ``calculator``: an ASE calculator, or a picklable zero-argument factory of one (e.g.
    ``functools.partial(CP2KCalculator, settings)``), built here, in the worker. Returns
    ``status`` ``"ok"`` with ``energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3, periodic cells),
    ``wall_s``, ``cpu_s``, ``n_scf``, ``nprocs`` (what the engine says, else None); ``"failed"`` with
    ``error``, ``message`` for ASE's ``CalculationFailed`` (an unconverged SCF); ``"not_runnable"``
    when the engine is not installed. Any other exception is raised (the executor records it).
    """
    calc = calculator if isinstance(calculator, Calculator) else calculator()
    work = atoms.copy()
    work.calc = calc
    t0 = time.perf_counter()
    try:
        results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
        if compute_stress and all(work.pbc) and "stress" in calc.implemented_properties:
            results["stress"] = work.get_stress(voigt=True)
    except CP2KNotRunnable as exc:
        return {"status": "not_runnable", "message": str(exc)}
    except CalculationFailed as exc:
        return {"status": "failed", "error": type(exc).__name__, "message": str(exc)[:2000],
                "wall_s": time.perf_counter() - t0}
    return dict(results, status="ok", wall_s=time.perf_counter() - t0, cpu_s=getattr(calc, "last_cpu_s", None),
                n_scf=getattr(calc, "last_n_scf", None),
                nprocs=getattr(getattr(calc, "settings", None), "nprocs", None))


@_locks_output
def label_structures(
    structures: Sequence[Atoms],
    calculator: Union[Calculator, Callable[[], Calculator]],
    out_path: os.PathLike,
    *,
    settings_tag: str = "",
    failed_path: Optional[os.PathLike] = None,
    max_new: Optional[int] = None,
    retry_failed: bool = False,
    skip_indices: Optional[Iterable[int]] = None,
    index_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
    compute_stress: bool = True,
    max_consecutive_failures: int = 3,
    log: Callable[[str], None] = print,
    executor: Optional[ExecutorSpec] = None,
) -> Dict[str, int]:
    """Label ``structures`` with ``calculator``, appending each result to ``out_path`` at once.

    - One task per structure (:func:`label_one`) through :func:`mace_transfer.execution.run_tasks`:
      ``executor`` None (or ``serial``) labels here in input order; a Dask spec labels on its
      workers, which build the calculator from ``calculator`` (then a picklable factory, not an
      instance). Either way this process alone writes ``out_path`` and its sidecar, one frame per
      structure as its task ends (completion order under Dask); a structure whose worker died is
      labelled again by Dask, and written once.

    - Resumable: a structure whose ``label_id`` (index + hash) is in ``out_path`` is skipped; so is
      one recorded in the failed sidecar (unless ``retry_failed``). Frames of another
      ``settings_tag`` in ``out_path`` are an error (never mix settings in one file).
    - ``skip_indices``: input indices not to label here (e.g. those already labelled in another
      file at another density, :func:`labelled_source_indices`), counted as ``skipped_elsewhere``.
    - ``index_range`` ``(start, stop)``: label only input indices ``start <= i < stop`` (``None``:
      open end), so that several labellers share one input, each into its own file; the others
      are counted as ``outside_range`` and are not ``remaining``.
    - A calculation that raises ASE's ``CalculationFailed`` (incl. ``SCFError``, e.g. CP2K's
      unconverged SCF) is written to ``failed_path`` (default ``<out>.failed.jsonl``) and skipped, as is
      one whose task raised (a bad structure) or whose worker died more often than the executor's
      ``retries``; after ``max_consecutive_failures`` in a row (in completion order)
      :class:`LabellingAborted` is raised and the tasks not yet run are cancelled.
    - Labels: ``REF_energy`` (eV), ``REF_forces`` (eV/Å), ``REF_stress`` (eV/Å^3, Voigt
      xx,yy,zz,yz,xz,xy; periodic cells only), input ``config_type`` kept (``Default`` if none),
      plus ``label_id``, ``source_index``, ``dft_settings``, ``dft_wall_s``.

    Returns counts: ``total``, ``done_before`` (structures of this input already in the file),
    ``labelled``, ``failed``, ``skipped_failed``, ``skipped_elsewhere``, ``outside_range``, ``remaining``.
    """
    out_path = Path(out_path)
    if executor is not None and executor.kind != "serial" and isinstance(calculator, Calculator):
        raise ValueError("labelling on Dask needs a picklable calculator factory (e.g. "
                         "functools.partial(CP2KCalculator, settings)), not a calculator instance")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    failed_path = Path(failed_path) if failed_path else failed_sidecar(out_path)
    done_geometry: Dict[int, Atoms] = {}
    done = read_done(out_path, log, geometry=done_geometry)
    other = sorted({tag for tag in done.values() if tag != settings_tag})
    if other:
        raise SettingsMismatch(f"{out_path} holds labels made with other settings ({', '.join(other)}); "
                         f"these are {settings_tag or '(none)'}: use another output file")
    failed = {} if retry_failed else read_failed(failed_path)
    todo = []
    skipped_failed = 0
    elsewhere = {int(i) for i in (skip_indices or ())}
    skipped_elsewhere = 0
    matched_geometry = 0
    done_here = 0  # structures of this input (in range) labelled before: by hash or by geometry
    start, stop = index_range if index_range is not None else (None, None)
    outside = 0
    for index, atoms in enumerate(structures):
        if (start is not None and index < start) or (stop is not None and index >= stop):
            outside += 1
            continue
        lid = label_id(index, atoms)
        if index in elsewhere and lid not in done:
            skipped_elsewhere += 1
            continue
        if lid in done:
            done_here += 1
            continue
        if index in done_geometry and same_structure(done_geometry[index], atoms):
            # labelled already; the hash differs in the last bits of float64 positions (a length
            # scale applied through the cell on another CPU: 3 of 108 Ge frames, 2026-12-01)
            matched_geometry += 1
            done_here += 1
            continue
        if lid in failed:
            skipped_failed += 1
            continue
        todo.append((index, lid, atoms))
    counts = {"total": len(structures), "done_before": done_here, "labelled": 0, "failed": 0,
              "skipped_failed": skipped_failed, "skipped_elsewhere": skipped_elsewhere,
              "outside_range": outside, "remaining": len(todo)}
    if max_new is not None:
        todo = todo[: max(0, int(max_new))]
    log(f"label: {out_path}: {len(structures)} structures, {done_here} done before"
        + (f" ({matched_geometry} matched by geometry)" if matched_geometry else "") + ", "
        f"{skipped_failed} failed before, " + (f"{skipped_elsewhere} labelled elsewhere, " if skipped_elsewhere else "")
        + (f"{outside} outside indices {start if start is not None else ''}:{stop if stop is not None else ''}, "
           if index_range is not None else "")
        + f"{counts['remaining']} to do, {len(todo)} this run")
    by_key = {f"label-{lid}": (index, lid, atoms) for index, lid, atoms in todo}
    state = {"n": 0, "consecutive": 0, "warned_usage": False}
    written = set()  # label ids this run wrote: a task Dask ran twice is still written once

    def on_done(outcome: Outcome) -> None:
        index, lid, atoms = by_key[outcome.key]
        if lid in written:
            return
        written.add(lid)
        state["n"] += 1
        n = state["n"]
        result = outcome.value if outcome.ok else {  # the task itself raised, or its worker died too often
            "status": "failed", "error": str(outcome.error).split(":")[0], "message": str(outcome.error),
            "wall_s": outcome.wall_s}
        if result["status"] == "not_runnable":
            raise CP2KNotRunnable(result["message"])  # the machine's fault, not the structure's: nothing recorded
        if result["status"] == "failed":
            record = {"label_id": lid, "source_index": index, "error": result["error"],
                      "message": result["message"][:2000], "wall_s": round(result["wall_s"], 2),
                      "config_type": str(atoms.info.get("config_type", "Default")),
                      "dft_settings": settings_tag, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _append_durably(failed_path, json.dumps(record) + "\n")
            counts["failed"] += 1
            counts["remaining"] -= 1
            state["consecutive"] += 1
            log(f"label: [{n}/{len(todo)}] index {index} FAILED ({result['error']}: {result['message'][:200]})")
            if state["consecutive"] >= max_consecutive_failures:
                raise LabellingAborted(f"{state['consecutive']} failures in a row; last: {result['message'][:500]}")
            return
        state["consecutive"] = 0
        wall, cpu = result["wall_s"], result["cpu_s"]
        frame = _labelled_frame(atoms, result, index, lid, settings_tag)
        frame.info["dft_wall_s"] = round(wall, 2)
        if cpu is not None:
            frame.info["dft_cpu_s"] = round(float(cpu), 2)
        if result["n_scf"] is not None:
            frame.info["dft_n_scf"] = int(result["n_scf"])
        _append_durably(out_path, _frame_text(frame))
        counts["labelled"] += 1
        counts["remaining"] -= 1
        fmax = float(np.abs(result["forces"]).max())
        usage = _core_usage(cpu, wall, result["nprocs"])
        log(f"label: [{n}/{len(todo)}] index {index} ({frame.info['config_type']}, {len(atoms)} atoms) "
            f"E/atom={result['energy'] / len(atoms):.4f} eV |F|max={fmax:.3f} eV/Å "
            f"wall {wall:.1f} s" + (f", cpu {cpu:.1f} s" if cpu is not None else "")
            + (f" ({100 * usage[0]:.0f} % of {usage[1]} core{'s' * (usage[1] > 1)})" if usage else ""))
        if usage and usage[0] < LOW_CORE_USAGE and not state["warned_usage"]:
            state["warned_usage"] = True
            log(f"label: warning: the engine used {100 * usage[0]:.0f} % of the {usage[1]} core(s) it was "
                "given: other load on the machine, or its ranks bound to cores another run uses "
                "(mpirun --bind-to none, docs/DFT.md)")

    tasks = [Task(key, label_one, (calculator, atoms, compute_stress)) for key, (_, _, atoms) in by_key.items()]
    run_tasks(tasks, executor, on_done, say=log)
    log(f"label: {out_path}: labelled {counts['labelled']}, failed {counts['failed']}, "
        f"remaining {counts['remaining']}")
    return counts


@_locks_output
def add_isolated_atoms(
    symbols: Iterable[str],
    out_path: os.PathLike,
    settings: PBESettings,
    *,
    calculator_factory: Optional[Callable[[str], Calculator]] = None,
    log: Callable[[str], None] = print,
) -> List[str]:
    """Append an ``IsolatedAtom`` frame per element to ``out_path`` unless already there; return those added.

    A failed calculation is recorded in the failed sidecar (and not retried), never raised.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tag = settings.physics_hash()
    done = read_done(out_path, log)
    failed_path = failed_sidecar(out_path)
    failed = read_failed(failed_path)
    added = []
    for symbol in sorted(set(symbols)):
        lid = f"IsolatedAtom-{symbol}"
        if lid in done:
            if done[lid] != tag:
                raise SettingsMismatch(f"{out_path}: IsolatedAtom {symbol} was made with settings {done[lid]}, "
                                       f"these are {tag}: use another output file")
            continue
        if lid in failed:
            continue
        calc = calculator_factory(symbol) if calculator_factory else None
        t0 = time.perf_counter()
        try:
            frame = isolated_atom(symbol, settings, calculator=calc)
        except CP2KNotRunnable:
            raise  # the machine's fault, not the structure's: nothing recorded as failed
        except CalculationFailed as exc:
            record = {"label_id": lid, "source_index": -1, "error": type(exc).__name__,
                      "message": str(exc)[:2000], "config_type": "IsolatedAtom", "dft_settings": tag,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _append_durably(failed_path, json.dumps(record) + "\n")
            log(f"label: isolated {symbol} FAILED ({type(exc).__name__}: {str(exc)[:200]}); recorded, skipped")
            continue
        frame.info.update({"label_id": lid, "source_index": -1, "dft_settings": tag,
                           "dft_wall_s": round(time.perf_counter() - t0, 2)})
        _append_durably(out_path, _frame_text(frame))
        log(f"label: isolated {symbol}: E0 = {frame.info['REF_energy']:.6f} eV")
        added.append(symbol)
    return added
