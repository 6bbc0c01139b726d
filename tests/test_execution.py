"""The executor seam (mace_transfer.execution, issue 47) on a real Dask LocalCluster with two worker
processes: outcomes in task order, a raising task recorded, labelling identical to the serial path, a
worker killed with SIGKILL mid-label (the structure is labelled again and written once), the Slurm/PBS
job scripts a jobqueue block builds (nothing submitted)."""

import functools
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.io import read

from mace_transfer import execution
from mace_transfer.datagen import classical, dft

pytest.importorskip("distributed")

WORKERS = execution.ExecutorSpec(kind="local", workers=2)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    """One two-worker LocalCluster for the module (starting one costs seconds)."""
    with execution.open_executor(WORKERS, say=lambda line: None) as opened:
        yield opened


# ---------------------------------------------------------------- task functions (module level: picklable)
def _square_or_raise(i):
    if i == 3:
        raise ValueError(f"bad input {i}\nsecond line")
    return i * i, os.environ.get("OMP_NUM_THREADS")


def _sw_ge():
    return classical.calculator("Ge", "sw")


def _sw_ge_sleeping_once(marker):
    """SW-Ge; the first task to find no ``marker`` writes its process id there and sleeps (to be killed)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return _sw_ge()
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(120)
    raise AssertionError("this worker should have been killed")


def _ge_cells(n, seed=0):
    rng = np.random.default_rng(seed)
    cells = []
    for i in range(n):
        atoms = bulk("Ge", "diamond", a=5.65, cubic=True)
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        atoms.info["config_type"] = f"rattled_{i % 2}"
        cells.append(atoms)
    return cells


def _by_index(path):
    frames = read(path, ":")
    assert len({f.info["label_id"] for f in frames}) == len(frames)  # no frame written twice
    return {f.info["source_index"]: f for f in frames}


def _assert_same_frames(a, b):
    assert sorted(a) == sorted(b)
    for index in a:
        fa, fb = a[index], b[index]
        assert {k: v for k, v in fa.info.items() if k not in ("dft_wall_s", "REF_stress")} == {
            k: v for k, v in fb.info.items() if k not in ("dft_wall_s", "REF_stress")}
        assert np.array_equal(fa.info["REF_stress"], fb.info["REF_stress"])
        assert np.array_equal(fa.arrays["REF_forces"], fb.arrays["REF_forces"])
        assert np.array_equal(fa.positions, fb.positions) and np.array_equal(fa.cell, fb.cell)


# ---------------------------------------------------------------- the seam itself
def test_outcomes_in_task_order_a_raising_task_recorded_the_rest_done(client):
    tasks = [execution.Task(f"t{i}", _square_or_raise, (i,)) for i in range(6)]
    seen, lines = [], []
    outcomes = execution.run_tasks(tasks, WORKERS, seen.append, say=lines.append, client=client)
    assert [o.key for o in outcomes] == [f"t{i}" for i in range(6)] and sorted(o.key for o in seen) == sorted(
        o.key for o in outcomes)
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]
    assert outcomes[3].error == "ValueError: bad input 3" and outcomes[3].value is None
    assert [o.value[0] for o in outcomes if o.ok] == [0, 1, 4, 16, 25]
    assert {o.value[1] for o in outcomes if o.ok} == {"1"}  # each task pinned to its thread count
    assert len(lines) == 6 and "6/6 done (1 failed)" in lines[-1] and "ETA" in lines[-1]
    serial = execution.run_tasks(tasks)  # the same outcomes in this process
    assert [(o.ok, o.value, o.error) for o in serial] == [(o.ok, o.value, o.error) for o in outcomes]


def _malloc_trim_setting():
    """(the worker process's start-up value, the value a task and what it starts see) of MALLOC_TRIM_THRESHOLD_."""
    start = dict(line.split(b"=", 1) for line in open("/proc/self/environ", "rb").read().split(b"\0") if b"=" in line)
    return start.get(b"MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_workers_and_tasks_run_without_dasks_malloc_trim_threshold(client):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers; with it a CP2K label cost 110 instead
    of 82 CPU-s here. A local cluster's workers start without it and a task runs without it."""
    import dask

    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"]  # Dask's default
    outcomes = execution.run_tasks([execution.Task(f"env{i}", _malloc_trim_setting) for i in range(2)],
                                   execution.ExecutorSpec(kind="local", workers=2))
    assert [o.value for o in outcomes] == [(None, None), (None, None)]


def test_an_exception_in_on_done_cancels_the_rest_and_is_raised(client):
    tasks = [execution.Task(f"s{i}", time.sleep, (0.5,)) for i in range(6)]

    def stop(outcome):
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        execution.run_tasks(tasks, WORKERS, stop, say=lambda line: None, client=client)


def test_bad_executor_blocks_are_one_line_errors():
    for block, match in (({"kind": "cloud"}, "not one of"), ({"workers": 0, "kind": "local"}, "workers"),
                         ({"kind": "scheduler"}, "address"), ({"kind": "slurm", "jobqueue": {"cores": 2}}, "memory"),
                         ({"threads": 2}, "unknown key")):
        with pytest.raises(ValueError, match=match) as exc:
            execution.spec_from_config(block)
        assert "\n" not in str(exc.value)
    spec = execution.spec_from_config({"kind": "local", "workers": 3}, scheduler="tcp://h:8786")
    assert (spec.kind, spec.address, spec.workers) == ("scheduler", "tcp://h:8786", 3)
    assert execution.spec_from_config(None) == execution.ExecutorSpec()


SLURM_YAML = """
executor:
  kind: slurm
  workers: 4                  # jobs, one worker each
  threads_per_task: 8         # OMP_NUM_THREADS / MPI ranks of one task
  retries: 3
  jobqueue:                   # dask_jobqueue.SLURMCluster's own options
    cores: 8
    memory: 16GB
    queue: compute
    account: proj42
    walltime: "02:00:00"
    job_extra_directives: ["--constraint=cpu"]
"""


def test_the_jobqueue_block_builds_the_expected_job_scripts():
    block = yaml.safe_load(SLURM_YAML)["executor"]
    cluster = execution.make_cluster(execution.spec_from_config(block))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p compute", "#SBATCH -A proj42", "#SBATCH -t 02:00:00", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --constraint=cpu", "export OMP_NUM_THREADS=8", "--nthreads 1"):
        assert line in script, line
    assert "#SBATCH --mem=15G" in script  # dask-jobqueue writes 16 GB as 15 GiB
    pbs = dict(block, kind="pbs", jobqueue={"cores": 4, "memory": "8GB", "queue": "workq", "walltime": "01:00:00"})
    cluster = execution.make_cluster(execution.spec_from_config(pbs))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#PBS -q workq" in script and "#PBS -l walltime=01:00:00" in script and "ncpus=4" in script


# ---------------------------------------------------------------- the labeller through the seam
def test_labelling_on_two_workers_gives_the_serial_frames(tmp_path, client):
    """SW-Ge stands in for CP2K through the same labeller path (the workers build it from a partial)."""
    cells = _ge_cells(6)
    serial, parallel = tmp_path / "serial.xyz", tmp_path / "dask.xyz"
    dft.label_structures(cells, _sw_ge(), serial, settings_tag="sw", log=lambda m: None)
    lines = []
    counts = dft.label_structures(cells, functools.partial(classical.calculator, "Ge", "sw"), parallel,
                                  settings_tag="sw", log=lines.append, executor=WORKERS)
    assert counts["labelled"] == 6 and counts["remaining"] == 0
    _assert_same_frames(_by_index(serial), _by_index(parallel))
    assert sum("executor: " in line for line in lines) == 6
    with pytest.raises(ValueError, match="factory"):
        dft.label_structures(cells, _sw_ge(), tmp_path / "x.xyz", executor=WORKERS, log=lambda m: None)


def test_a_structure_whose_task_raises_is_recorded_failed_and_the_rest_labelled(tmp_path, client):
    cells = _ge_cells(4)
    cells[1] = cells[1].copy()
    cells[1].set_chemical_symbols(["Si"] * 8)  # SW-Ge refuses silicon: the task raises
    out = tmp_path / "o.xyz"
    counts = dft.label_structures(cells, functools.partial(classical.calculator, "Ge", "sw"), out,
                                  settings_tag="sw", log=lambda m: None, executor=WORKERS)
    assert (counts["labelled"], counts["failed"]) == (3, 1)
    assert sorted(_by_index(out)) == [0, 2, 3]
    failed = dft.read_failed(dft.failed_sidecar(out))
    assert [r["source_index"] for r in failed.values()] == [1]
    assert next(iter(failed.values()))["error"] == "UserInputError"


def test_a_worker_killed_mid_label_is_labelled_again_and_written_once(tmp_path, client):
    cells = _ge_cells(5, seed=1)
    marker = tmp_path / "sleeping.pid"
    killed = []

    def kill_the_sleeper():
        deadline = time.time() + 60
        while time.time() < deadline:
            if marker.is_file() and marker.read_text():
                pid = int(marker.read_text())
                time.sleep(0.3)  # well inside the task
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_sleeper)
    killer.start()
    out = tmp_path / "o.xyz"
    counts = dft.label_structures(cells, functools.partial(_sw_ge_sleeping_once, str(marker)), out,
                                  settings_tag="sw", log=lambda m: None, executor=WORKERS)
    killer.join()
    assert killed and counts["labelled"] == 5 and counts["failed"] == 0
    serial = tmp_path / "serial.xyz"
    dft.label_structures(cells, _sw_ge(), serial, settings_tag="sw", log=lambda m: None)
    _assert_same_frames(_by_index(serial), _by_index(out))
    assert not dft.failed_sidecar(out).exists()


# ---------------------------------------------------------------- a study through the seam
def _tiny_study(folder):
    """A tiny learning-curve study in ``folder`` (relative paths, as a user's config has them)."""
    from conftest import write_sw_ge_dataset, write_sw_si_dataset
    from test_pipeline import TINY_MACE

    folder.mkdir()
    write_sw_si_dataset(folder / "si.xyz", n=6)
    write_sw_ge_dataset(folder / "ge.xyz", 7, seed=3)
    write_sw_ge_dataset(folder / "ge_test.xyz", 2, seed=4)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    return {"out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1,
            "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"},
            "n_valid": 2, "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [3], "seeds": [0, 1],
            "mace": mace, "source": {"n_valid": 2, "mace": {"E0s": "{14: 0.0}", "lr": 0.01, "max_num_epochs": 1}},
            "budget": {"epochs": 2, "patience": 5},
            "strategies": {"scratch": {"lr": 0.01}, "transfer": {"lr": 0.002, "init": "remap"}}}


#: what differs between two trainings of one run: when and how long, and the machine's load
TIMING_KEYS = {"wall_s", "finished_utc", "load_average_after", "curve", "train_step_s"}


def _same_record(a, b, path="record"):
    """Equal records up to the timing keys; floats to 1e-12 relative (the last bit of a float64 sum of
    energies may differ between two processes), everything else exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) - TIMING_KEYS == set(b) - TIMING_KEYS, path
        for key in set(a) - TIMING_KEYS:
            _same_record(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_record(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-300), path
    else:
        assert a == b, path


def _study_records(tmp_path, monkeypatch, run):
    """The records of ``run(config, executor)`` in a fresh tiny study, serial and on two workers."""
    from mace_transfer.studies import records

    found = {}
    for name, executor in (("serial", None), ("dask", WORKERS)):
        monkeypatch.chdir(tmp_path)
        config = _tiny_study(tmp_path / name)
        monkeypatch.chdir(tmp_path / name)
        run(config, executor)
        found[name] = {r["name"]: r for r in records.load_runs(tmp_path / name / "res")}
    return found


def test_a_study_run_on_a_worker_writes_the_serial_record(tmp_path, monkeypatch, client):
    """One scratch run trained on a Dask worker: the parent writes the record a serial sweep writes."""
    from mace_transfer.studies.runs import Sweep

    lines = []
    found = _study_records(tmp_path, monkeypatch, lambda config, executor: Sweep(config, progress=lines.append).sweep(
        [3], [0], ["scratch"], executor=executor))
    assert list(found["serial"]) == list(found["dask"]) == ["scratch_N0003_s0"]
    _same_record(found["serial"]["scratch_N0003_s0"], found["dask"]["scratch_N0003_s0"])
    assert sum("[1/1] scratch" in line for line in lines) == 2 and any("executor: 1/1 done" in line for line in lines)


@pytest.mark.slow
def test_a_tiny_study_on_two_workers_writes_the_serial_records(tmp_path, monkeypatch, client):
    """The whole command's path (source model, remap, four runs) serial vs two workers: 150 s here."""
    from mace_transfer.studies import learning_curve

    found = _study_records(tmp_path, monkeypatch, lambda config, executor: learning_curve.run_study(
        config, zero_shot=False, progress=lambda line: None, executor=executor))
    assert sorted(found["serial"]) == sorted(found["dask"]) and len(found["serial"]) == 4
    for run, serial in found["serial"].items():
        _same_record(serial, found["dask"][run], run)


# ---------------------------------------------------------------- the scheduler dies
def _sw_ge_slow():
    time.sleep(1.0)  # long enough to kill the scheduler while tasks run
    return _sw_ge()


def test_a_lost_scheduler_ends_the_run_in_one_line_and_a_rerun_resumes(tmp_path, capfd):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), OMP_NUM_THREADS="1")
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--nworkers", "1", "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)
    out, cells = tmp_path / "o.xyz", _ge_cells(8, seed=2)
    try:
        spec = execution.spec_from_config(None, scheduler=address)

        def kill_after_two(line):
            if "label: [2/8]" in line:
                scheduler.kill()

        with pytest.raises(execution.ExecutorLost, match="rerun the same command") as exc:
            dft.label_structures(cells, _sw_ge_slow, out, settings_tag="sw", log=kill_after_two, executor=spec)
        assert "\n" not in str(exc.value)
        assert "Traceback" not in capfd.readouterr().err  # Dask's own reconnect error stays quiet
    finally:
        for process in (scheduler, worker):
            process.kill()
            process.wait(30)
    done = _by_index(out)
    assert 2 <= len(done) < 8
    counts = dft.label_structures(cells, _sw_ge(), out, settings_tag="sw", log=lambda m: None)  # the rerun
    assert counts["done_before"] == len(done) and counts["labelled"] == 8 - len(done)
    assert sorted(_by_index(out)) == list(range(8))


def test_the_console_scripts_end_a_lost_scheduler_with_one_line(capsys):
    from mace_transfer.cli import _guarded

    def lost(argv):
        raise execution.ExecutorLost("executor: lost the Dask scheduler after 2 of 8 tasks (those are recorded); "
                                     "rerun the same command to resume")

    assert _guarded(lost, []) == 3
    assert capsys.readouterr().err.count("\n") == 1


def test_a_bad_executor_flag_is_one_line_for_both_commands(tmp_path, capsys):
    from ase.io import write

    from mace_transfer.cli import label_main, learning_curve_main

    src = tmp_path / "in.xyz"
    write(src, _ge_cells(1))
    bad = tmp_path / "cluster.yaml"
    bad.write_text("executor:\n  kind: slurm\n  jobqueue: {cores: 4}\n")
    for main, argv in ((label_main, ["--in", str(src), "--out", str(tmp_path / "o.xyz")]),
                       (learning_curve_main, ["--config", str(ROOT / "configs" / "learning_curve_sw.yaml")])):
        for flag, message in (("cloud", "neither one of"), (str(bad), "jobqueue.memory")):
            with pytest.raises(SystemExit) as exc:
                main(argv + ["--executor", flag])
            err = capsys.readouterr().err
            assert exc.value.code == 2 and message in err and err.count("\n") == 1
