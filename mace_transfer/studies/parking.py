"""Runs of a converged study cut by the end of a session: parked under ``<out>/partial/<run>/``
(newest checkpoint, MACE's results log, the subset files, the wall time so far), committed, and
resumed by a later session or machine instead of started again (:meth:`runs.Sweep.train_run`).
Wall time is kept whole across the cuts: ``chunks.json`` holds the seconds of the earlier chunks."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from mace_transfer.studies.config import RECORDS
from mace_transfer.studies.records import write_json

#: unfinished runs of a converged study, parked for a later session
PARKED = "partial"
#: a run folder's record of its training chunks (wall seconds of earlier, cut processes)
CHUNKS = "chunks.json"


def claim(work: Path, name: str, wait: bool = False) -> Optional[IO[str]]:
    """An exclusive lock on ``<work>/.<name>.lock`` (open it ``with`` the returned file), or None while
    another process holds it (``wait``: block until it is free instead): several processes of one study
    share its runs, none trains or runs MD on one twice, and a dead process's lock goes with it (flock).

    Kept beside Dask (issue 47), for what Dask does not see: Dask runs each task of one command once at a
    time and reruns it when its worker dies, but two *commands* on one study (two sweeps, a serial one
    beside a Dask one, a second user) do not share a scheduler. On Dask the parent claims each run before
    submitting it and lets go once it has written the record (:meth:`runs.Sweep._sweep_on_dask`), so the
    workers take no locks and the claims work on one machine's file system even when the workers are on
    other nodes; the strategy's ``select_`` claim keeps the choices on validation to one process."""
    Path(work).mkdir(parents=True, exist_ok=True)
    handle = open(Path(work) / f".{name}.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def checkpoint_epoch(path: Path) -> int:
    """The epoch in a MACE checkpoint's name (``<name>_run-<seed>_epoch-<E>.pt``); -1 without one."""
    match = re.search(r"_epoch-(\d+)", Path(path).name)
    return int(match.group(1)) if match else -1


def checkpoints(folder: Path) -> List[Path]:
    """MACE's checkpoints of a run folder, oldest epoch first (none when the folder is missing)."""
    return sorted((folder / "checkpoints").glob("*.pt"), key=checkpoint_epoch) if folder.is_dir() else []


def cut_chunk_s(folder: Path, chunks: Dict[str, Any]) -> float:
    """Wall seconds of the last chunk of a cut run: from its start to MACE's last results line."""
    logs = list((folder / "results").glob("*_train.txt"))
    started = chunks.get("chunk_start_unix")
    if started is None and (folder / "argv.json").is_file():  # a run begun before chunks were recorded
        started = (folder / "argv.json").stat().st_mtime
    if not logs or not started:
        return 0.0
    return max(0.0, max(p.stat().st_mtime for p in logs) - float(started))


def chunks_wall(folder: Path) -> float:
    """Wall seconds a resumed run trained before (chunks of earlier, cut processes)."""
    path = folder / CHUNKS
    if not path.is_file():
        return 0.0
    chunks = json.loads(path.read_text())
    if "parked_chunk_s" in chunks:
        return float(chunks["wall_s_before"]) + float(chunks["parked_chunk_s"])
    return float(chunks.get("wall_s_before", 0.0)) + cut_chunk_s(folder, chunks)


def chunk_devices(folder: Path) -> List[str]:
    """What each training chunk of a run ran on so far (``cpu`` or a GPU's name), oldest first."""
    path = folder / CHUNKS
    return list(json.loads(path.read_text()).get("devices", [])) if path.is_file() else []


def unpark(out: Path, name: str, folder: Path) -> bool:
    """Copy the parked run ``name`` into its work ``folder`` (when that does not exist yet)."""
    parked = out / PARKED / name
    if parked.is_dir() and not folder.exists():
        shutil.copytree(parked, folder)
        return True
    return False


def drop_parked(out: Path, name: str) -> None:
    """Remove the parked copy of a run that has now finished."""
    parked = out / PARKED / name
    if parked.is_dir():
        shutil.rmtree(parked)


def park_runs(work: Path, out: Path, say: Callable[[str], None] = print, skip: Sequence[str] = ()) -> List[str]:
    """Copy every unfinished run of ``work`` that has a checkpoint (a process cut mid-run) to
    ``<out>/partial/<run>/``, except the folders named in ``skip``; returns the parked run names."""
    parked = []
    for folder in sorted(p for p in work.glob("*") if p.is_dir()):
        newest = checkpoints(folder)
        if not newest or folder.name in skip or (out / RECORDS / f"{folder.name}.json").is_file() \
                or (out / "selection" / f"{folder.name}.json").is_file():
            continue
        target = out / PARKED / folder.name
        if target.exists():
            shutil.rmtree(target)
        (target / "checkpoints").mkdir(parents=True)
        shutil.copy(newest[-1], target / "checkpoints" / newest[-1].name)
        shutil.copytree(folder / "results", target / "results")
        for data in folder.glob("*.xyz"):  # the subsets (and an alloy replay run's Si)
            shutil.copy(data, target / data.name)
        chunks = json.loads((folder / CHUNKS).read_text()) if (folder / CHUNKS).is_file() else {}
        write_json(target / CHUNKS, {"wall_s_before": chunks.get("wall_s_before", 0.0),
                                     "parked_chunk_s": cut_chunk_s(folder, chunks),
                                     **{key: chunks[key] for key in ("settings", "devices") if key in chunks}})
        parked.append(folder.name)
        say(f"parked {folder.name}: {newest[-1].name} -> {target}")
    return parked
