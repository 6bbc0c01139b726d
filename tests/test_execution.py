"""The executor seam (mace_transfer.execution, issue 47) on a real Dask LocalCluster with two worker
processes: outcomes in task order, a raising task recorded, labelling identical to the serial path, a
worker killed with SIGKILL mid-label (the structure is labelled again and written once), the Slurm/PBS
job scripts a jobqueue block builds (nothing submitted)."""

import functools
import os
import signal
import threading
import time

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.io import read

from mace_transfer import execution
from mace_transfer.datagen import classical, dft

pytest.importorskip("distributed")

WORKERS = execution.ExecutorSpec(kind="local", workers=2)


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
