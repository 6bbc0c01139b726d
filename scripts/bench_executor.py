"""Measure the executor seam (issue 47): labelling on 2 Dask workers vs 1, and the scheduling overhead per task.

Not a timed test: writes one JSON record under ``docs/results/executor/`` (docs/EXECUTION.md quotes it).

1. Labelling: the first ``--n`` structures of ``--in`` through :func:`label_structures` on a local Dask
   cluster of 1 worker, then of 2 workers (one CP2K rank per task, ``configs/dft_pbe.yaml`` physics), each into
   a fresh file; the ratio of the two walls is the speed-up. ``--engine sw`` labels with Stillinger-Weber instead
   (no CP2K; then the overhead dominates and the ratio says nothing about DFT).
2. Overhead: ``--noop`` no-op tasks on the 2-worker cluster: (wall of the batch) / tasks, in ms per task, also
   as a percentage of the mean CP2K label wall of step 1.

3. ``--study``: a tiny learning-curve sweep (scratch, N = 3 and 4, seeds 0 and 1: four MACE trainings of a tiny
   model on SW-Ge cells) on 1 worker, then 2, each in a fresh folder; the ratio of the walls.

The load average (``os.getloadavg``) and ``uptime`` are recorded before and after each part: other processes on
the machine slow both arms, unevenly.

Usage: ``.venv/bin/python scripts/bench_executor.py --in data/ge_structures16.xyz --n 4``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def noop(i: int) -> int:
    """A task that does nothing: what is left of its wall is the executor's own cost."""
    return i


def label_arm(structures, calculator, workers: int, folder: Path, say) -> dict:
    """Label ``structures`` on a local cluster of ``workers`` workers; walls in s (cluster start excluded)."""
    from mace_transfer.datagen import dft
    from mace_transfer.execution import ExecutorSpec, open_executor

    spec = ExecutorSpec(kind="local", workers=workers, threads_per_task=1)
    out = folder / f"labelled_{workers}w.xyz"
    lines = []
    with open_executor(spec, say=lines.append) as client:
        client.run(__import__, "mace_transfer.datagen.dft.labeller")  # warm: each worker imports the labeller once
        load_before, t0 = os.getloadavg(), time.perf_counter()
        counts = dft.label_structures(structures, calculator, out, settings_tag="bench", log=lines.append,
                                      executor=spec)
        wall = time.perf_counter() - t0
    frames = dft.read_complete_frames(out)
    say(f"{workers} worker(s): {counts['labelled']} labelled in {wall:.1f} s; load {load_before} -> {os.getloadavg()}")
    return {"workers": workers, "wall_s": round(wall, 2), "labelled": counts["labelled"], "failed": counts["failed"],
            "label_wall_s": [f.info.get("dft_wall_s") for f in frames],
            "label_cpu_s": [f.info.get("dft_cpu_s") for f in frames],
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
            "executor_line": next((x for x in lines if x.startswith("executor: local")), None)}


def overhead(n: int, say) -> dict:
    """ms per no-op task on a 2-worker local cluster (cluster start excluded)."""
    from mace_transfer.execution import ExecutorSpec, Task, open_executor, run_tasks

    spec = ExecutorSpec(kind="local", workers=2)
    tasks = [Task(f"noop-{i}", noop, (i,)) for i in range(n)]
    with open_executor(spec, say=lambda line: None):
        run_tasks(tasks[:10], spec, say=lambda line: None)  # warm: the workers import the task's module once
        t0 = time.perf_counter()
        outcomes = run_tasks(tasks, spec, say=lambda line: None)
        wall = time.perf_counter() - t0
    assert all(o.ok for o in outcomes)
    per_task_ms = 1000 * wall / n
    say(f"overhead: {n} no-op tasks in {wall:.2f} s on 2 workers = {per_task_ms:.2f} ms per task")
    return {"tasks": n, "wall_s": round(wall, 3), "ms_per_task": round(per_task_ms, 3),
            "loadavg_after": list(os.getloadavg())}


def _sw_ge_file(path: Path, n: int, seed: int) -> None:
    """``n`` rattled 8-atom Ge cells labelled by SW-Ge (REF_energy eV, REF_forces eV/Å)."""
    import numpy as np
    from ase.build import bulk
    from ase.io import write

    from mace_transfer.datagen import classical

    rng, frames = np.random.default_rng(seed), []
    for _ in range(n):
        atoms = bulk("Ge", "diamond", a=5.65 * (1 + 0.02 * rng.uniform(-1, 1)), cubic=True)
        atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
        atoms.calc = classical.calculator("Ge", "sw")
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info.update(REF_energy=energy, config_type="rattled")
        atoms.arrays["REF_forces"] = forces
        frames.append(atoms)
    write(path, frames, format="extxyz")


TINY_MACE = {"model": "ScaleShiftMACE", "num_channels": 8, "max_L": 0, "r_max": 4.0, "correlation": 2,
             "num_radial_basis": 6, "batch_size": 2, "valid_batch_size": 4, "device": "cpu",
             "default_dtype": "float64", "energy_key": "REF_energy", "forces_key": "REF_forces"}


def study_arm(workers: int, folder: Path, say) -> dict:
    """Four tiny scratch runs of one study through the sweep on a local cluster of ``workers``; wall in s."""
    from mace_transfer.execution import ExecutorSpec, open_executor
    from mace_transfer.studies.runs import Sweep

    folder.mkdir()
    for name, n, seed in (("ge.xyz", 9, 3), ("ge_test.xyz", 3, 4), ("si.xyz", 1, 5)):
        _sw_ge_file(folder / name, n, seed)
    config = {"out": str(folder / "res"), "work": str(folder / "work"), "element_map": "Si:Ge", "threads": 1,
              "data": {"source": str(folder / "si.xyz"), "target": str(folder / "ge.xyz"),
                       "test": str(folder / "ge_test.xyz")},
              "n_valid": 3, "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [3, 4], "seeds": [0, 1],
              "mace": TINY_MACE, "budget": {"epochs": 3, "patience": 5}, "strategies": {"scratch": {"lr": 0.01}}}
    spec = ExecutorSpec(kind="local", workers=workers)
    with open_executor(spec, say=lambda line: None) as client:
        client.run(__import__, "mace_transfer.studies.runs")  # warm: torch, MACE and the study imported once
        load_before, t0 = os.getloadavg(), time.perf_counter()
        finished = Sweep(config, progress=lambda line: None).sweep([3, 4], [0, 1], ["scratch"], executor=spec)
        wall = time.perf_counter() - t0
    say(f"study, {workers} worker(s): {finished} runs in {wall:.1f} s; load {load_before} -> {os.getloadavg()}")
    return {"workers": workers, "runs": finished, "wall_s": round(wall, 2), "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="inp", default=str(ROOT / "data" / "ge_structures16.xyz"))
    parser.add_argument("--n", type=int, default=4, help="structures per arm")
    parser.add_argument("--engine", choices=["cp2k", "sw"], default="cp2k")
    parser.add_argument("--settings", default=str(ROOT / "configs" / "dft_pbe.yaml"))
    parser.add_argument("--noop", type=int, default=500, help="no-op tasks for the overhead")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "executor"))
    parser.add_argument("--study", action="store_true", help="also a tiny study's sweep on 1 vs 2 workers")
    parser.add_argument("--only-study", action="store_true", help="only the tiny study (no labels, no overhead)")
    args = parser.parse_args(argv)

    from ase.io import read

    from mace_transfer.datagen import classical, dft

    def say(line):
        print(line, flush=True)

    structures = [a for a in read(args.inp, index=":") if a.info.get("config_type") != "IsolatedAtom"][:args.n]
    if args.engine == "cp2k":
        settings = dft.load_settings(args.settings, nprocs=1)
        calculator = functools.partial(dft.CP2KCalculator, settings)
        engine = subprocess.run(["cp2k.psmp", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    else:
        calculator = functools.partial(classical.calculator, structures[0].get_chemical_symbols()[0], "sw")
        engine = ["Stillinger-Weber (matscipy)"]
    record = {"command": " ".join([Path(sys.executable).name] + sys.argv), "started_utc": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(), "engine": engine, "input": args.inp,
        "n_structures": len(structures), "atoms_per_structure": sorted({len(a) for a in structures}),
        "uptime_before": uptime()}
    say(f"bench: {record['uptime_before']}")
    if not args.only_study:
        with tempfile.TemporaryDirectory(prefix="bench_executor_") as tmp:
            arms = [label_arm(structures, calculator, workers, Path(tmp), say) for workers in (1, 2)]
        record["labelling"] = {"one_worker": arms[0], "two_workers": arms[1],
                               "speed_up": round(arms[0]["wall_s"] / arms[1]["wall_s"], 3)}
        record["uptime_mid"] = uptime()
        record["overhead"] = overhead(args.noop, say)
        walls = [w for arm in arms for w in arm["label_wall_s"] if w]
        mean_label = sum(walls) / len(walls)
        record["overhead"]["percent_of_mean_label_wall"] = round(
            100 * record["overhead"]["ms_per_task"] / 1000 / mean_label, 4)
        record["mean_label_wall_s"] = round(mean_label, 2)
        say(f"bench: speed-up {record['labelling']['speed_up']}x on 2 workers; overhead "
            f"{record['overhead']['ms_per_task']} ms per task = {record['overhead']['percent_of_mean_label_wall']} % "
            f"of a {mean_label:.1f} s label")
    if args.study or args.only_study:
        with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
            arms = [study_arm(workers, Path(tmp) / f"w{workers}", say) for workers in (1, 2)]
        record["study"] = {"one_worker": arms[0], "two_workers": arms[1],
                           "speed_up": round(arms[0]["wall_s"] / arms[1]["wall_s"], 3)}
        say(f"bench: tiny study speed-up {record['study']['speed_up']}x on 2 workers")
    record["uptime_after"] = uptime()
    say(f"bench: {record['uptime_after']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "study" if args.only_study else args.engine
    path = out / f"bench_{kind}_{time.strftime('%Y%m%dT%H%M', time.gmtime())}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    say(f"bench: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
