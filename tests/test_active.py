"""Active learning (issue 49) on CPU: tiny MACE models, Stillinger-Weber Ge standing in for DFT.

The loop runs for real (MD, MACE training, selection, labels) in a forked process killed with SIGKILL at
named points (``MACE_TRANSFER_ACTIVE_KILL_AT``) while exploring, labelling and training, then resumed.
"""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.io import read
from conftest import make_mace_model, write_sw_ge_dataset

from mace_transfer.active import committee, explore, select
from mace_transfer.active.labels import LabellerSpec, label_batch
from mace_transfer.active import loop as loop_module
from mace_transfer.active.loop import KILL_AT
from mace_transfer.active.stop import StopRule
from mace_transfer.cli import _active, _guarded
from mace_transfer.datagen.dft.labeller import failed_sidecar, read_failed

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def si_source(tmp_path_factory):
    """A tiny Si MACE model (random weights, r_max 4 Å), built once: e3nn's code generation is slow."""
    path = tmp_path_factory.mktemp("source") / "si.model"
    torch.save(make_mace_model([14], r_max=4.0, hidden="8x0e"), path)
    return path


# ----------------------------------------------------------------------------- committee
def test_uncertainty_is_the_committee_spread_of_force_vectors(tmp_path, si_source):
    """sigma_i from MACE's committee calculator equals the spread of the members' own forces; a committee
    of one model three times is certain (0 eV/Å)."""
    paths = [si_source] + [committee.perturbed_copy(si_source, tmp_path / f"m{k}.model", 0.2, seed=k)
                           for k in (1, 2)]
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=3)
    calc = committee.committee_calculator(paths)
    atoms.calc = calc
    atoms.get_forces()
    got = committee.uncertainty_now(calc)
    forces = []
    for path in paths:
        single = atoms.copy()
        single.calc = committee.committee_calculator([path])
        forces.append(single.get_forces())
    forces = np.array(forces)
    sigma = np.sqrt(((forces - forces.mean(axis=0)) ** 2).mean(axis=0).sum(axis=1))
    assert got["max"] == pytest.approx(sigma.max(), rel=1e-9)
    assert got["mean"] == pytest.approx(sigma.mean(), rel=1e-9)
    assert got["max"] > 0.01 * np.abs(forces).max() > 0  # the perturbed members disagree
    same = committee.committee_calculator([paths[0]] * 3)
    atoms.calc = same
    atoms.get_forces()
    assert committee.uncertainty_now(same)["max"] == pytest.approx(0.0, abs=1e-12)
    assert committee.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- selection
def _cells():
    """Four kinds of 8-atom Ge cell, each with a near-duplicate (a 0.001 Å rattle of it)."""
    base = []
    for k, strain in enumerate((0.0, 0.03, -0.03, 0.06)):
        atoms = bulk("Ge", "diamond", a=5.654 * (1 + strain), cubic=True)
        atoms.rattle(0.05, seed=k)
        twin = atoms.copy()
        twin.rattle(0.001, seed=100 + k)
        base += [atoms, twin]
    return base


def test_selection_takes_the_highest_uncertainty_and_never_a_near_duplicate():
    cells = _cells()
    descriptors = [select.descriptor(a) for a in cells]
    # twins are near-duplicates, different cells are not
    for i in range(0, 8, 2):
        assert select.distance(descriptors[i], descriptors[i + 1]) < select.DEFAULT_MIN_DISTANCE
    # the two most uncertain are twins; a geometry the committee could not evaluate (inf) comes first
    uncertainty = [0.9, 0.95, 0.1, 0.2, 0.5, 0.45, float("inf"), 0.3]
    batch = select.select_batch(uncertainty, descriptors, 3)
    assert batch == [6, 1, 4]  # inf, then 0.95; 0.9 is 1's twin; then 0.5
    for a in batch:
        for b in batch:
            if a != b:
                assert select.distance(descriptors[a], descriptors[b]) >= select.DEFAULT_MIN_DISTANCE
    # exactness: every candidate passed over for a less uncertain one is a near-duplicate of one taken
    lowest = min(uncertainty[i] for i in batch)
    for i, u in enumerate(uncertainty):
        if i not in batch and u > lowest:
            assert min(select.distance(descriptors[i], descriptors[j]) for j in batch) < select.DEFAULT_MIN_DISTANCE
    # a batch is never padded with near-duplicates: 4 distinct cells, 6 asked
    assert len(select.select_batch(uncertainty, descriptors, 6)) == 4
    # at most one cell of a kind: cells 0-3 one kind, 4-7 another
    kinds = ["a"] * 4 + ["b"] * 4
    assert select.select_batch(uncertainty, descriptors, 3, kinds=kinds, max_per_kind=1) == [6, 1]
    # round 0 (no uncertainty): farthest-point sampling, no twins
    diverse = select.diverse_batch(descriptors, 8, seed=1)
    assert len(diverse) == 4 and len({i // 2 for i in diverse}) == 4


# ----------------------------------------------------------------------------- stop rule
def test_stop_rule_needs_k_rounds_below_threshold():
    rule = StopRule(budget=10, threshold_meV_A=30, rounds=2)
    assert not rule.converged([0.02])
    assert not rule.converged([0.02, 0.031])
    assert not rule.converged([0.02, None])
    assert rule.converged([0.5, 0.02, 0.029])
    assert not rule.converged([0.02, float("inf")])
    assert rule.budget_left(7) == 3 and rule.budget_left(12) == 0
    with pytest.raises(ValueError):
        StopRule(budget=0)


# ----------------------------------------------------------------------------- exploration
def test_exploration_keeps_a_broken_geometry_as_a_candidate_and_resumes_by_unit(tmp_path):
    """Real Langevin MD under a potential that pulls Ge bonds to 1.1 Å: every unit ends at a pair closer
    than the bound, recorded as a candidate, not raised; a rerun redoes only a missing unit, identically."""
    lj = LennardJones(sigma=1.0, epsilon=40.0, rc=3.0, smooth=True)
    settings = explore.ExploreSettings(element="Ge", lattice_constant=5.654, temperatures=(300.0,),
                                       liquid_temperature=None, max_strain=0.03, vacancies=1, equilibration=200,
                                       interval=10, snapshots=2, min_distance_A=1.6)
    frames, _ = explore.explore(lj, settings, tmp_path / "a", seed=5, round_index=1)
    units = {}
    for frame in frames:
        units.setdefault(int(frame.info["explore_unit"]), []).append(frame)
    assert sorted(units) == [0, 1, 2]  # md 300 K, strain, vacancy
    for found in units.values():
        last = found[-1]
        assert "broken" in last.info
        closest = min(last.get_distances(i, range(len(last)), mic=True)[i + 1:].min() for i in range(len(last) - 1))
        assert closest < 1.6 or "energy" in last.info["broken"]
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    (tmp_path / "a" / "unit_001.xyz").unlink()
    again, _ = explore.explore(lj, settings, tmp_path / "a", seed=5, round_index=1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    assert len(again) == len(frames)


# ----------------------------------------------------------------------------- labels
def test_pool_labels_are_read_only_for_selected_structures_and_a_failure_is_recorded(tmp_path):
    pool = tmp_path / "pool.xyz"
    write_sw_ge_dataset(pool, n=4, seed=2, stress=True)
    frames = read(pool, ":")
    chosen = []
    for index in (3, 1):
        bare = frames[index].copy()
        bare.calc = None
        bare.info = {"pool_index": index, "config_type": "rattled"}
        del bare.arrays["REF_forces"]
        chosen.append(bare)
    stats = label_batch(chosen, LabellerSpec("pool", path=str(pool)), tmp_path / "labels.xyz")
    out = read(tmp_path / "labels.xyz", ":")
    assert stats["labelled"] == 2 and [int(a.info["pool_index"]) for a in out] == [3, 1]
    for got, index in zip(out, (3, 1)):
        np.testing.assert_allclose(got.arrays["REF_forces"], frames[index].arrays["REF_forces"], atol=1e-8)
        assert got.info["REF_energy"] == pytest.approx(frames[index].info["REF_energy"])
    # a labeller failing on one structure: recorded and skipped; a rerun labels nothing again
    sys.path.insert(0, str(TESTS))
    cells = [bulk("Ge", "diamond", a=5.654, cubic=True), bulk("Ge", "diamond", a=5.654, cubic=True)]
    cells[1].set_cell(cells[1].cell * [1.02, 1.0, 1.0], scale_atoms=True)
    cells[0].rattle(0.05, seed=1)
    spec = LabellerSpec("python", factory="active_labellers:flaky_sw")
    stats = label_batch(cells, spec, tmp_path / "flaky.xyz")
    assert (stats["labelled"], stats["failed"]) == (1, 1)
    assert [r["source_index"] for r in read_failed(failed_sidecar(tmp_path / "flaky.xyz")).values()] == [1]
    text = (tmp_path / "flaky.xyz").read_bytes()
    assert label_batch(cells, spec, tmp_path / "flaky.xyz")["labelled"] == 1
    assert (tmp_path / "flaky.xyz").read_bytes() == text


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change, message", [
    ({"--budget": "0"}, "--budget must be >= 1"),
    ({"--source_model": "missing.model"}, "does not exist"),
    ({"--element_map": "Si:Sn"}, "maps nothing to Ge"),
    ({"--committee": "2"}, "--committee must be >= 3"),
])
def test_bad_input_is_one_line(tmp_path, capsys, si_source, change, message):
    argv = {"--source_model": str(si_source), "--element_map": "Si:Ge", "--element": "Ge", "--budget": "4",
            "--labeller": "classical", "--out": str(tmp_path / "out")}
    argv.update(change)
    flat = [x for pair in argv.items() for x in pair]
    assert _guarded(_active, flat) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_model_lacking_the_element_is_one_line(tmp_path, capsys, si_source):
    argv = ["--model", str(si_source), "--element", "Ge", "--budget", "4", "--labeller", "classical",
            "--out", str(tmp_path / "out")]
    assert _guarded(_active, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no Ge" in err[0]



# ----------------------------------------------------------------------------- scratch start (pool mode)
#: a tiny MACE architecture for scratch members (SW's isolated Ge atom: 0 eV)
SCRATCH_MACE = ('model: ScaleShiftMACE\nnum_channels: 8\nmax_L: 0\nr_max: 4.5\nnum_interactions: 2\n'
                'correlation: 2\nnum_radial_basis: 4\nbatch_size: 2\nvalid_batch_size: 4\nE0s: "{32: 0.0}"\n')


def _scratch_argv(tmp_path, budget=4, mace=SCRATCH_MACE):
    """A tiny scratch pool loop: 6 SW-Ge cells in the pool, 2 labels a round, a committee of 3, one epoch."""
    pool = tmp_path / "pool.xyz"
    if not pool.exists():
        write_sw_ge_dataset(pool, n=6, seed=3, stress=True)
    options = tmp_path / "scratch.yaml"
    options.write_text(mace)
    return ["--scratch", "--element", "Ge", "--pool", str(pool), "--budget", str(budget), "--batch_size", "2",
            "--committee", "3", "--seed", "0", "--epochs", "1", "--mace_options", str(options),
            "--out", str(tmp_path / "loop")]


def test_scratch_pool_loop_trains_its_first_committee_from_random_init_then_warm_starts(
        tmp_path, capsys, si_source):
    """``--scratch`` in pool mode, two rounds end to end: round 0 has no model (diverse selection, no
    uncertainty), its members are MACE models of the options' architecture trained from random init, each
    from its own seed (they predict different forces); round 1 scores the pool with that committee, picks by
    uncertainty and warm-starts; a rerun with another start into the same --out is refused."""
    import json

    from mace_transfer.transfer import remap

    argv = _scratch_argv(tmp_path)
    assert _guarded(_active, argv) == 0, capsys.readouterr().err[-3000:]
    out = tmp_path / "loop"
    rec0, rec1 = (json.loads((out / f"round_{r:03d}" / "record.json").read_text()) for r in (0, 1))
    assert not (out / "round_002").exists() and not (out / "start.model").exists()
    assert rec0["models_explored_with"] == [] and rec0["fresh_uncertainty_meV_A"]["max"] is None
    assert rec0["selected"]["rule"] == "diversity" and rec0["train"]["start"] == "scratch"
    assert rec1["models_explored_with"] == rec0["models"] and rec1["selected"]["rule"] == "uncertainty"
    assert rec1["train"]["start"] == "warm" and rec1["fresh_uncertainty_meV_A"]["max"] > 0
    assert rec1["labels_used"] == 4 and rec1["stop"].startswith("budget")
    assert json.loads((out / "active.json").read_text())["identity"]["start"] == {"scratch": True}
    # round 0's members: the options' architecture (r_max 4.5 Å, not MACE's 5), one model each
    atoms = read(tmp_path / "pool.xyz", "5")
    forces = []
    for path in rec0["models"]:
        model = remap.load_model(path)
        assert remap.model_elements(model) == [32] and float(model.r_max) == pytest.approx(4.5)
        work = atoms.copy()
        work.calc = committee.committee_calculator([path])
        forces.append(work.get_forces())
    for a in range(3):
        for b in range(a):
            assert np.abs(forces[a] - forces[b]).max() > 1e-4
    capsys.readouterr()
    # resumed with the same flags: nothing to do; with another start: refused in one line
    assert _guarded(_active, argv) == 0
    other = [x for x in argv if x != "--scratch"] + ["--source_model", str(si_source), "--element_map", "Si:Ge"]
    capsys.readouterr()
    assert _guarded(_active, other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "start" in err[0]


@pytest.mark.parametrize("change, message", [
    ("no pool", "--scratch needs --pool"),
    ("no E0s", "--scratch needs the target's isolated-atom energies"),
    ("with --model", "give one start"),
])
def test_bad_scratch_input_is_one_line(tmp_path, capsys, si_source, change, message):
    argv = _scratch_argv(tmp_path, mace=SCRATCH_MACE.replace('E0s: "{32: 0.0}"\n', "")
                         if change == "no E0s" else SCRATCH_MACE)
    if change == "no pool":
        at = argv.index("--pool")
        argv = argv[:at] + argv[at + 2:] + ["--labeller", "classical"]
    elif change == "with --model":
        argv += ["--model", str(si_source)]
    assert _guarded(_active, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "loop").exists()


def test_loop_settings_refuse_a_scratch_start_without_a_pool_or_e0s(tmp_path):
    """The loop's own check (LoopSettings built in code, not by the flags): refused before any folder."""
    from mace_transfer import UserInputError
    from mace_transfer.active.loop import ActiveLoop, LoopSettings

    pool = tmp_path / "pool.xyz"
    write_sw_ge_dataset(pool, n=2, seed=3)
    base = dict(out=str(tmp_path / "loop"), element="Ge", start={"scratch": True}, stop=StopRule(budget=2))
    cases = [(dict(labeller=LabellerSpec("classical", element="Ge", potential="sw"),
                   explore=explore.ExploreSettings(element="Ge", lattice_constant=5.654), mace={"E0s": "{32: 0.0}"}),
              "--scratch needs --pool"),
             (dict(labeller=LabellerSpec("pool", path=str(pool)), pool=str(pool), mace={}), "isolated-atom energies")]
    for extra, message in cases:
        with pytest.raises(UserInputError, match=message):
            ActiveLoop(LoopSettings(**base, **extra)).prepare()
    assert not (tmp_path / "loop").exists()


# ----------------------------------------------------------------------------- the loop, killed and resumed
class Finished:
    """How a loop process ended: ``returncode`` (negative: killed by that signal) and its output."""

    def __init__(self, returncode, output):
        self.returncode, self.stdout, self.stderr = returncode, output, output


def _run(argv, kill_at=None, timeout=600):
    """``mace_transfer_active argv`` in a forked child (a real process, SIGKILLed at ``kill_at`` by the
    loop's kill seam; forked rather than started afresh, so it does not import torch and MACE again)."""
    import tempfile
    import time

    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))  # the child's labeller factory imports active_labellers
    log = tempfile.NamedTemporaryFile(prefix="active-", suffix=".log", delete=False)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run the console script, never return into pytest
        code = 70
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            sys.stdout = sys.stderr = open(log.name, "a", buffering=1)  # pytest's capture holds the old ones
            os.environ.pop(KILL_AT, None)
            if kill_at:
                os.environ[KILL_AT] = kill_at
            loop_module._PASSED.clear()
            code = _guarded(_active, list(argv))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"loop process ran over {timeout} s")
        time.sleep(0.2)
    output = Path(log.name).read_text()
    os.unlink(log.name)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return Finished(code, output)


def _loop_argv(tmp_path, source, budget):
    """A tiny loop: 8-atom Ge cells (300 K MD, a strained and a vacancy cell), 2 labels a round, SW-Ge
    labels that fail on strained cells, a committee of 3 fine-tuned for one epoch, 4 test structures."""
    test = tmp_path / "test.xyz"
    write_sw_ge_dataset(test, n=4, seed=7)
    options = tmp_path / "mace.yaml"
    options.write_text("batch_size: 2\nvalid_batch_size: 4\n")
    return ["--source_model", str(source), "--element_map", "Si:Ge", "--labeller", "python",
            "--calculator", "active_labellers:flaky_sw", "--budget", str(budget), "--batch_size", "2",
            "--committee", "3", "--seed", "0", "--out", str(tmp_path / "loop"), "--supercell", "1,1,1",
            "--temperatures", "300", "--liquid_temperature", "0", "--max_strain", "0.03", "--vacancies", "1",
            "--equilibration", "5", "--interval", "3", "--snapshots", "2", "--epochs", "1",
            "--mace_options", str(options), "--test_file", str(test), "--lattice_constant", "5.654"]


def test_first_round_survives_kill_9_while_exploring_labelling_and_training(tmp_path, si_source):
    """Round 0 end to end (MD with the remapped Si model, diverse selection, labels, a committee of 3 trained
    from the source), killed with SIGKILL while exploring, labelling and training: each restart goes on
    from there, redoing nothing finished; the strained cell's failed label is recorded, the loop goes on
    and stops at its budget of 2 DFT calls."""
    argv = _loop_argv(tmp_path, si_source, budget=2)
    r0 = tmp_path / "loop" / "round_000"
    killed = _run(argv, "explore-unit@0:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    units = sorted(p.name for p in (r0 / "explore").iterdir())
    assert units == ["unit_000.xyz", "unit_001.xyz"] and not (r0 / "explore.json").exists()
    unit0 = (r0 / "explore" / "unit_000.xyz").read_bytes()

    killed = _run(argv, "label-frame@0:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (r0 / "explore" / "unit_000.xyz").read_bytes() == unit0 and (r0 / "explore.json").exists()
    assert (r0 / "select.json").exists() and not (r0 / "label.json").exists()
    written = len(read(r0 / "labels.xyz", ":")) if (r0 / "labels.xyz").exists() else 0
    failed = len(read_failed(failed_sidecar(r0 / "labels.xyz")))
    assert written + failed == 1  # one structure done (labelled or recorded as failed), one to go

    killed = _run(argv, "train-member@0:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(read(r0 / "labels.xyz", ":")) == 1 and len(read_failed(failed_sidecar(r0 / "labels.xyz"))) == 1
    assert (r0 / "member_0.json").exists() and not (r0 / "member_1.json").exists()
    member0 = (r0 / "member_0.json").read_bytes()

    done = _run(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (r0 / "member_0.json").read_bytes() == member0  # not trained again
    import json

    rec = json.loads((r0 / "record.json").read_text())
    assert not (tmp_path / "loop" / "round_001").exists()
    assert rec["selected"]["rule"] == "diversity" and "strain" in rec["selected"]["config_types"]
    assert rec["labels_new"] == 1 and len(rec["failed"]) == 1 and "SCF" in rec["failed"][0]["error"]
    assert rec["dft_calls"] == 2 and rec["stop"] == "budget: 2 of 2 DFT calls"
    assert rec["train"]["start"] == "remapped source" and len(rec["models"]) == 3
    assert set(rec["cpu_s"]) == {"exploration", "dft", "training", "check"} and rec["cpu_s"]["training"] > 0
    assert rec["check"]["test"]["n_configs"] == 4 and "spearman_max" in rec["check"]["calibration"]
    assert "budget: 2 of 2 DFT calls" in done.stdout


@pytest.mark.slow
def test_loop_end_to_end_survives_kill_9_while_exploring_labelling_and_training(tmp_path, si_source):
    """Round 0 labels two diverse cells (one strained: the labeller fails on it, recorded, the loop goes
    on), trains a committee of 3 from the remapped Si source; round 1 explores with it by MD, labels the
    two most uncertain, warm-starts the committee, and stops at the budget of 4 DFT calls. The run is
    killed with SIGKILL in round 1 while exploring, while labelling and while training; each restart
    goes on from there, redoing nothing finished."""
    argv = _loop_argv(tmp_path, si_source, budget=4)
    out = tmp_path / "loop"
    r0, r1 = out / "round_000", out / "round_001"

    killed = _run(argv, "explore-unit@1:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (r0 / "record.json").exists() and (r1 / "explore" / "unit_000.xyz").exists()
    assert not (r1 / "explore" / "unit_001.xyz").exists() and not (r1 / "explore.json").exists()
    unit0 = (r1 / "explore" / "unit_000.xyz").read_bytes()
    record0 = (r0 / "record.json").read_bytes()

    killed = _run(argv, "label-frame@1:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (r1 / "explore" / "unit_000.xyz").read_bytes() == unit0  # not explored again
    assert (r1 / "select.json").exists() and not (r1 / "label.json").exists()
    first_label = (r1 / "labels.xyz").read_bytes()
    assert len(read(r1 / "labels.xyz", ":")) == 1

    killed = _run(argv, "train-member@1:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (r1 / "labels.xyz").read_bytes().startswith(first_label)  # the first label kept, not redone
    assert (r1 / "member_0.json").exists() and not (r1 / "member_1.json").exists()
    member0 = (r1 / "member_0.json").read_bytes()

    done = _run(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (r0 / "record.json").read_bytes() == record0
    assert (r1 / "member_0.json").read_bytes() == member0  # member 0 not trained again
    import json

    rec0, rec1 = (json.loads((r / "record.json").read_text()) for r in (r0, r1))
    assert not (out / "round_002").exists()
    # round 0: diversity alone (no committee yet); the strained cell failed, was recorded, the loop went on
    assert rec0["selected"]["rule"] == "diversity" and "strain" in rec0["selected"]["config_types"]
    assert rec0["labels_new"] == 1 and len(rec0["failed"]) == 1 and "SCF" in rec0["failed"][0]["error"]
    assert rec0["stop"] is None and rec0["train"]["start"] == "remapped source"
    # round 1: explored with round 0's committee, the most uncertain first, no near-duplicates, budget stop
    assert rec1["models_explored_with"] == rec0["models"]
    chosen = rec1["selected"]["uncertainty_meV_A"]
    assert rec1["selected"]["rule"] == "uncertainty" and chosen == sorted(chosen, reverse=True)
    assert 0 < rec1["fresh_uncertainty_meV_A"]["max"] < float("inf")
    assert chosen[0] == pytest.approx(rec1["fresh_uncertainty_meV_A"]["max"])
    assert rec1["selected"]["min_pair_distance"] is None or rec1["selected"]["min_pair_distance"] >= 0.5
    assert rec1["dft_calls"] == 4 and rec1["stop"].startswith("budget")
    assert rec1["train"]["start"] == "warm" and rec1["labels_used"] == rec0["labels_used"] + rec1["labels_new"]
    labels = read(r0 / "labels.xyz", ":") + read(r1 / "labels.xyz", ":")
    assert len({a.info["label_id"] + str(a.info["round"]) for a in labels}) == len(labels) == rec1["labels_used"]
    # every round records its cost and its check
    for rec in (rec0, rec1):
        assert set(rec["cpu_s"]) == {"exploration", "dft", "training", "check"} and rec["cpu_s"]["training"] > 0
        assert rec["wall_s"]["total"] > 0
        assert rec["check"]["test"]["n_configs"] == 4 and rec["check"]["test"]["force_mae_meV_per_A"] > 0
        assert "spearman_max" in rec["check"]["calibration"]
    assert "budget: 4 of 4 DFT calls" in done.stdout


@pytest.mark.slow
def test_pool_mode_reads_labels_only_once_selected_and_stops_on_the_rule(tmp_path, si_source):
    """Pool mode end to end (in-process, real training): candidates carry no labels, the labels used
    are the pool's own for the selected structures, each once; a larger budget continues a loop stopped
    at its budget, and a threshold every fresh uncertainty lies below stops it before labelling."""
    import dataclasses
    import json

    from mace_transfer.active.loop import ActiveLoop, LoopSettings

    pool, test = tmp_path / "pool.xyz", tmp_path / "test.xyz"
    write_sw_ge_dataset(pool, n=8, seed=3, stress=True)
    write_sw_ge_dataset(test, n=3, seed=9)
    settings = LoopSettings(out=str(tmp_path / "loop"), element="Ge",
                            start={"source_model": str(si_source), "element_map": "Si:Ge"},
                            labeller=LabellerSpec("pool", path=str(pool)), stop=StopRule(budget=4), batch_size=2,
                            committee=3, pool=str(pool), mace={"max_num_epochs": 1, "batch_size": 2},
                            test_file=str(test))
    records = ActiveLoop(settings, say=print).run()
    assert [r["selected"]["rule"] for r in records] == ["diversity", "uncertainty"]
    assert records[-1]["stop"].startswith("budget")
    for r in range(2):
        folder = tmp_path / "loop" / f"round_{r:03d}"
        assert not any(k.startswith("REF_") for a in read(folder / "candidates.xyz", ":")
                       for k in list(a.info) + list(a.arrays))
    frames = read(pool, ":")
    labels = read(tmp_path / "loop" / "round_000" / "labels.xyz", ":") + read(
        tmp_path / "loop" / "round_001" / "labels.xyz", ":")
    indices = [int(a.info["pool_index"]) for a in labels]
    assert len(set(indices)) == len(indices) == 4
    for atoms in labels:
        np.testing.assert_allclose(atoms.arrays["REF_forces"], frames[int(atoms.info["pool_index"])].arrays["REF_forces"],
                                   atol=1e-8)
    more = dataclasses.replace(settings, stop=StopRule(budget=6, threshold_meV_A=1e9, rounds=1))
    records = ActiveLoop(more, say=print).run()
    assert len(records) == 3 and records[2]["stop"].startswith("converged") and records[2]["labels_new"] == 0
    assert json.loads((tmp_path / "loop" / "round_002" / "record.json").read_text())["dft_calls"] == 4


def test_the_start_model_takes_the_target_e0s_of_the_mace_options(tmp_path, si_source):
    """The remapped explorer (start.model) carries the E0s the fine-tunes use, exactly, with no
    keep-the-source's-E0 warning; without E0s it keeps Si's and says so."""
    import warnings

    from mace_transfer.active.loop import ActiveLoop, LoopSettings
    from mace_transfer.transfer import remap

    pool = tmp_path / "pool.xyz"
    write_sw_ge_dataset(pool, n=2, seed=3)
    source_e0 = float(remap.load_model(si_source).atomic_energies_fn.atomic_energies.reshape(-1)[-1])
    for name, mace, expected in (("given", {"E0s": "{32: -3.5}"}, -3.5), ("none", {}, source_e0)):
        settings = LoopSettings(out=str(tmp_path / name), element="Ge",
                                start={"source_model": str(si_source), "element_map": "Si:Ge"},
                                labeller=LabellerSpec("pool", path=str(pool)), stop=StopRule(budget=2),
                                pool=str(pool), mace=mace)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ActiveLoop(settings, say=print).prepare()
        model = remap.load_model(tmp_path / name / "start.model")
        assert remap.model_elements(model) == [32]
        assert float(model.atomic_energies_fn.atomic_energies.reshape(-1)[-1]) == expected
        assert any("no E0 given" in str(w.message) for w in caught) == (name == "none")


def test_report_has_one_row_per_round_with_its_numbers():
    from mace_transfer.active.report import markdown

    rec = {"round": 1, "labels_used": 10, "dft_calls": 11, "selected": {"rule": "uncertainty",
           "config_types": ["vacancy", "liquid", "vacancy"]}, "fresh_uncertainty_meV_A": {"max": 91.25, "median": 20.0},
           "check": {"test": {"force_mae_meV_per_A": 28.74, "energy_mae_meV_per_atom": 3.456},
                     "calibration": {"spearman_max": 0.8}}, "cpu_s": {"exploration": 5, "dft": 600, "training": 90}}
    lines = markdown({"active": [dict(rec, round=0), rec]}).strip().splitlines()
    assert len(lines) == 4
    assert lines[-1] == ("| active | 1 | 10 | 11 | uncertainty | liquid, vacancy | 91.2 / 20.0 | 28.7 | 3.46 | 0.80 "
                         "| 5 / 600 / 90 |")


@pytest.mark.slow
def test_pool_loop_on_a_two_worker_dask_cluster_trains_its_committee_and_labels_each_structure_once(
        tmp_path, si_source):
    """The loop's labels and committee fine-tunes through a real LocalCluster (issue 47's third user): every
    member trained on a worker, one model per member, each pool structure labelled once, the budget stop."""
    import json

    from mace_transfer.active.loop import ActiveLoop, LoopSettings
    from mace_transfer.execution import ExecutorSpec, open_executor

    pool, test = tmp_path / "pool.xyz", tmp_path / "test.xyz"
    write_sw_ge_dataset(pool, n=8, seed=3, stress=True)
    write_sw_ge_dataset(test, n=3, seed=9)
    spec = ExecutorSpec(kind="local", workers=2)
    settings = LoopSettings(out=str(tmp_path / "loop"), element="Ge",
                            start={"source_model": str(si_source), "element_map": "Si:Ge"},
                            labeller=LabellerSpec("pool", path=str(pool)), stop=StopRule(budget=4), batch_size=2,
                            committee=3, pool=str(pool), mace={"max_num_epochs": 1, "batch_size": 2},
                            test_file=str(test), executor=spec)
    with open_executor(spec):
        records = ActiveLoop(settings, say=print).run()
    assert [r["selected"]["rule"] for r in records] == ["diversity", "uncertainty"]
    assert records[-1]["stop"].startswith("budget")
    for r in range(2):
        members = [json.loads(p.read_text()) for p in sorted((tmp_path / "loop" / f"round_{r:03d}").glob("member_?.json"))]
        assert len(members) == 3 and len({m["model"] for m in members}) == 3
        assert all(Path(m["model"]).is_file() and m["cpu_s"] > 0 for m in members)
    labels = read(tmp_path / "loop" / "round_000" / "labels.xyz", ":") + read(
        tmp_path / "loop" / "round_001" / "labels.xyz", ":")
    indices = [int(a.info["pool_index"]) for a in labels]
    assert len(set(indices)) == len(indices) == 4


def _active_pipeline(tmp_path, si_source, args):
    import yaml

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path / "work"), "stages": [
        {"name": "al", "kind": "active", "source": str(si_source), "args": args}]}))
    return path


def test_an_active_pipeline_stage_with_an_unknown_option_is_one_line(tmp_path, capsys, si_source):
    from mace_transfer.cli import _guarded, _train

    path = _active_pipeline(tmp_path, si_source, {"element_map": "Si:Ge", "budget": 4, "batchsize": 2})
    assert _guarded(_train, ["--pipeline", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown active-loop option 'batchsize'" in err and "\n" not in err


@pytest.mark.slow
def test_an_active_pipeline_stage_runs_the_pool_loop_and_hands_on_its_final_model(tmp_path, si_source):
    """``kind: active`` in a pipeline: the loop in pool mode to its budget; the stage's model is the last
    round's first member (a Ge model); a rerun of the pipeline skips the finished stage."""
    from mace_transfer.studies.pipeline import run_pipeline_file

    pool, test = tmp_path / "pool.xyz", tmp_path / "test.xyz"
    write_sw_ge_dataset(pool, n=8, seed=3, stress=True)
    write_sw_ge_dataset(test, n=3, seed=9)
    path = _active_pipeline(tmp_path, si_source, {"element_map": "Si:Ge", "budget": 4, "batch_size": 2,
                                                  "pool": str(pool), "epochs": 1,
                                                  "test_file": str(test)})
    assert run_pipeline_file(path) == 0
    model = tmp_path / "work" / "al" / "al.model"
    last = sorted((tmp_path / "work" / "al" / "loop").glob("round_*/record.json"))[-1]
    import json

    assert model.read_bytes() == Path(json.loads(last.read_text())["models"][0]).read_bytes()
    loaded = torch.load(model, map_location="cpu", weights_only=False)
    assert [int(z) for z in loaded.atomic_numbers] == [32]
    assert run_pipeline_file(path) == 0  # done already: skipped
