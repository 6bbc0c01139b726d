"""The peers' driver (issue 22): what it computes from a peer's files is exact, and a whole peers
study runs on a stand-in worker (a Lennard-Jones "peer") without the peers installed. The real
peers (.venv-peers, ``make peers``) are exercised by the slow tests at the end."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.lj import LennardJones
from ase.io import read, write

from conftest import write_sw_ge_dataset
from mace_transfer import UserInputError
from mace_transfer.evaluate import test_errors as errors_of
from mace_transfer.studies import peers as peers_module
from mace_transfer.studies.peers import PredictedCalculator, fit_energy_shift, run_peers

REPO = Path(__file__).resolve().parents[1]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"


def _lj(epsilon):
    return LennardJones(sigma=2.2, epsilon=epsilon, rc=4.5, smooth=True)


def _predicted(frames, calc, offset_per_atom=0.0):
    """``frames`` with ``calc``'s predictions stored as a peer worker writes them."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = calc
        copy.info["peer_energy"] = copy.get_potential_energy() + offset_per_atom * len(copy)
        copy.arrays["peer_forces"] = copy.get_forces()
        copy.info["peer_stress"] = copy.get_stress()
        copy.calc = None
        out.append(copy)
    return out


def test_energy_shift_is_exact_for_two_elements():
    """One constant per element recovered exactly (least squares on counts, consistent system)."""
    from ase.build import bulk

    frames = []
    for n_ge in (2, 4, 6, 8):
        atoms = bulk("Si", "diamond", a=5.5, cubic=True)
        atoms.symbols[:n_ge] = "Ge"
        frames.append(atoms)
    shift = {"Ge": -103.1, "Si": -4.7}
    predicted = [float(i) for i in range(4)]
    for atoms, e in zip(frames, predicted):
        atoms.info["REF_energy"] = e + sum(shift[s] for s in atoms.get_chemical_symbols())
    fitted = fit_energy_shift(frames, predicted)
    assert fitted == pytest.approx(shift, abs=1e-9)


def test_predicted_calculator_gives_the_peer_errors_exactly(tmp_path):
    """Errors of stored predictions through the product's test_errors equal the live calculator's;
    the energy shift moves energies only; an unknown configuration is an error."""
    write_sw_ge_dataset(tmp_path / "ge.xyz", 4, seed=0)
    frames = read(tmp_path / "ge.xyz", ":")
    live = errors_of(_lj(0.3), frames, progress=False)["overall"]
    stored = errors_of(PredictedCalculator(_predicted(frames, _lj(0.3), -100.0), {"Ge": 100.0}), frames,
                         progress=False)["overall"]
    assert stored["force_mae_meV_per_A"] == pytest.approx(live["force_mae_meV_per_A"], rel=1e-12)
    assert stored["energy_mae_meV_per_atom"] == pytest.approx(live["energy_mae_meV_per_atom"], rel=1e-9)
    other = frames[0].copy()
    other.positions[0, 0] += 0.01
    other.calc = PredictedCalculator(_predicted(frames, _lj(0.3)))
    with pytest.raises(KeyError, match="no stored peer prediction"):
        other.get_forces()


def _fake_run_job(job, folder, threads=1):
    """A stand-in for the peers' worker: zero-shot = LJ(ε 0.3) with a -50 eV/atom zero; the
    "fine-tuned" model = LJ(ε 0.2 + lr), so the lowest lr has the lowest validation loss."""
    folder.mkdir(parents=True, exist_ok=True)
    if job["task"] == "predict":
        model = job.get("model")
        epsilon = 0.3 if model is None else float(Path(model).read_text())
        offset = -50.0 if model is None else 0.0
        write(job["out"], _predicted(read(job["frames"], ":"), _lj(epsilon), offset), format="extxyz")
        return {"frames": len(read(job["frames"], ":"))}
    if job["task"] == "finetune":
        settings = job["settings"]
        checkpoint = Path(job["out_dir"]) / "best.txt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(str(0.2 + settings["lr"]))
        loss = [1.0, 0.5 + settings["lr"], 0.6]
        return {"checkpoint": str(checkpoint), "best_epoch": 2, "epochs_run": 3,
                "energy_shift_eV_per_atom": {"Ge": 0.0},
                "curve": {"epoch": [1, 2, 3], "train_loss": loss, "valid_loss": loss,
                          "valid_force_mae_meV_A": [300.0, 200.0, 250.0],
                          "valid_energy_mae_meV_atom": [9.0, 8.0, 8.5], "wall_s": [1.0, 2.0, 3.0]},
                "route": {"fake": True}, "versions": {}}
    raise AssertionError(job["task"])


def _peers_config(tmp_path):
    write_sw_ge_dataset(tmp_path / "target.xyz", 14, seed=1)
    write_sw_ge_dataset(tmp_path / "test.xyz", 4, seed=2)
    return {"kind": "peers", "out": str(tmp_path / "out"), "work": str(tmp_path / "work"),
            "data": {"source": str(tmp_path / "target.xyz"), "target": str(tmp_path / "target.xyz"),
                     "test": str(tmp_path / "test.xyz")},
            "n_valid": 3, "valid_seed": 7, "element_map": "Si:Ge", "threads": 1,
            "sizes": [2, 5], "seeds": [0, 1], "peers_seeds_above": {"n": 2, "seeds": [0]},
            "peers_select": {"n": 5, "seed": 0},
            "peers": {"sevenn": {"lr_grid": [0.1, 0.01], "max_epochs": 5}}}


def test_peers_study_on_a_stand_in_worker(tmp_path, monkeypatch):
    """Zero-shot shift fitted on validation only, lr chosen on validation loss, the selection run
    reused, one seed above N = 2, records whose test errors are the model's, and the report."""
    monkeypatch.setattr(peers_module, "run_job", _fake_run_job)
    monkeypatch.setattr(peers_module, "peers_python", lambda: Path(sys.executable))
    config = _peers_config(tmp_path)
    summary = run_peers(config, progress=lambda *_: None)
    out = Path(config["out"])
    test = read(tmp_path / "test.xyz", ":")

    zero = json.loads((out / "zero_shot.json").read_text())["sevenn"]
    valid = peers_module.PeerSweep(config, progress=lambda *_: None).valid_frames()
    per_atom = [(a.info["REF_energy"] - p.info["peer_energy"]) / len(a) for a, p in zip(valid, _predicted(valid, _lj(0.3), -50.0))]
    assert zero["energy_shift_eV_per_atom"]["Ge"] == pytest.approx(np.mean(per_atom), abs=1e-9)  # validation only
    expected = errors_of(_lj(0.3), test, progress=False)["overall"]
    assert zero["force_mae_meV_per_A"] == pytest.approx(expected["force_mae_meV_per_A"], rel=1e-9)

    lr = json.loads((out / "lr_selection" / "sevenn.json").read_text())
    assert lr["chosen"] == 0.01 and set(lr["tries"]) == {"0.1", "0.01"}
    names = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert names == ["sevenn_N0002_s0", "sevenn_N0002_s1", "sevenn_N0005_s0"]
    reused = json.loads((out / "records" / "sevenn_N0005_s0.json").read_text())
    assert reused["reused_from"].endswith("lr-sevenn-0.01_N0005_s0.json") and reused["lr"] == 0.01
    finetuned = errors_of(_lj(0.21), test, progress=False)["overall"]
    assert reused["test"]["force_mae_meV_per_A"] == pytest.approx(finetuned["force_mae_meV_per_A"], rel=1e-9)
    assert reused["best_valid_mae_f_meV_A"] == 200.0 and reused["converged"]
    assert summary["n_runs"] == 3 and (out / "summary.md").is_file() and (out / "peers_vs_n.png").is_file()
    assert "SevenNet-0" in (out / "summary.md").read_text()
    run_peers(config, progress=lambda *_: None)  # resumed: nothing trained again
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == names


def test_missing_peers_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MACE_TRANSFER_PEERS_PYTHON", str(tmp_path / "nothing" / "python"))
    with pytest.raises(UserInputError, match="make peers"):
        peers_module.peers_python()


def test_peers_config_is_checked(tmp_path):
    from mace_transfer.studies.config import load_config

    base = REPO / "configs" / "converged_tiny.yaml"
    for body, message in (("peers: {mace: {}}", "unknown peer 'mace'"),
                          ("peers: {sevenn: {lr_grid: [-1]}}", "positive learning rates"),
                          ("peers: {sevenn: {epochs: 3}}", "unknown key 'epochs'"),
                          ("peers: {sevenn: {max_steps: 0}}", "max_steps must be a positive integer"),
                          ("", "needs a 'peers' mapping")):
        path = tmp_path / "peers.yaml"
        path.write_text(f"base: {base}\nkind: peers\n{body}\n")
        with pytest.raises(UserInputError, match=message):
            load_config(path)
    path.write_text(f"base: {base}\nkind: peer\n")
    with pytest.raises(UserInputError, match="kind must be"):
        load_config(path)


def test_peer_step_budgets_bind_only_at_large_n():
    """max_steps / patience_steps shorten the epoch cap and patience where an epoch holds many
    optimizer steps (N = 292: 59 steps at batch 5) and leave small N as configured."""
    spec = {"max_epochs": 120, "patience_epochs": 20, "batch_size": 5, "max_steps": 1500, "patience_steps": 400}
    assert peers_module.peer_epochs(20 + 0, spec) == {"max_epochs": 120, "patience_epochs": 20}
    assert peers_module.peer_epochs(50, spec) == {"max_epochs": 120, "patience_epochs": 20}
    assert peers_module.peer_epochs(292, spec) == {"max_epochs": 26, "patience_epochs": 7}  # ceil(1500/59)
    assert peers_module.peer_epochs(292, dict(spec, patience_steps=1)) == {"max_epochs": 26, "patience_epochs": 3}
    plain = {k: spec[k] for k in ("max_epochs", "patience_epochs", "batch_size")}
    assert peers_module.peer_epochs(292, plain) == {"max_epochs": 120, "patience_epochs": 20}


def test_a_gone_checkpoint_is_trained_again_once_and_both_errors_noted(tmp_path):
    """On a fresh clone the work folders (checkpoints) are gone: the MD path trains the run again
    with its record's lr and seed, once, and notes the recorded and the retrained test error."""
    from mace_transfer.studies.md_runs import trained_model

    class Study:
        out = tmp_path / "res"
        calls = []

        def say(self, text):
            pass

        def train_run(self, strategy, n_train, seed, path, lr=None):
            self.calls.append((strategy, n_train, seed, lr))
            checkpoint = tmp_path / "again.pth"
            checkpoint.write_text("weights")
            record = {"checkpoint": str(checkpoint), "test": {"force_mae_meV_per_A": 31.0}}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
            return record

    study = Study()
    present = tmp_path / "kept.pth"
    present.write_text("weights")
    rec = {"name": "chgnet_N0020_s1", "strategy": "chgnet", "n_train": 20, "seed": 1, "lr": 3e-4,
           "checkpoint": str(present), "test": {"force_mae_meV_per_A": 30.0}}
    assert trained_model(study, rec, key="checkpoint") == (str(present), {"checkpoint": str(present),
                                                                          "retrained": False})
    present.unlink()
    path, note = trained_model(study, rec, key="checkpoint")
    assert study.calls == [("chgnet", 20, 1, 3e-4)] and path == str(tmp_path / "again.pth")
    assert note["retrained"] and note["recorded_test_force_mae_meV_per_A"] == 30.0
    assert note["retrained_test_force_mae_meV_per_A"] == 31.0
    assert trained_model(study, rec, key="checkpoint")[0] == path and len(study.calls) == 1  # reused
    # a MACE run whose work folder is gone but whose model was kept in <out>/models: no training
    kept = study.out / "models" / "transfer_rescale_N0020_s0.model"
    kept.parent.mkdir(parents=True)
    kept.write_text("weights")
    mace_rec = dict(rec, name="transfer_rescale_N0020_s0", model=str(tmp_path / "gone.model"))
    assert trained_model(study, mace_rec) == (str(kept), {"model": str(kept), "retrained": False})
    assert len(study.calls) == 1


def test_goal_verdict_says_met_only_when_every_n_is_within_the_limit():
    from mace_transfer.studies.peers_report import goal_verdict

    rows = [{"n_train": 5, "force_ratio": 0.31, "energy_ratio": 1.42},
            {"n_train": 20, "force_ratio": 0.42, "energy_ratio": 0.4},
            {"n_train": 50, "force_ratio": 0.48, "energy_ratio": None}]
    assert goal_verdict(rows, [5, 20, 50]) == (
        "Forces (≤ 0.6×): met at every N (5, 20, 50; largest ratio 0.48). "
        "Energies (≤ 0.5×): not met (ratio > 0.5 at N = 5; smallest 0.40).")
    assert goal_verdict(rows[1:2], [5, 20]) == (
        "Forces (≤ 0.6×): not decided (no comparison at N = 5). "
        "Energies (≤ 0.5×): not decided (no comparison at N = 5).")


def test_peer_workers_import_nothing_of_the_product():
    """The worker runs in the peers' environment: no mace, no mace_transfer import."""
    import ast

    for path in (REPO / "mace_transfer" / "studies" / "peer_workers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not any(n.split(".")[0] in ("mace", "mace_transfer") for n in names), (path, names)


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.is_file(), reason="the peers' environment is not installed (make peers)")
@pytest.mark.parametrize("peer", ["sevenn", "chgnet"])
def test_real_peer_predicts_and_finetunes(tmp_path, peer, monkeypatch):
    """Each real peer: predictions through the worker; a 2-epoch fine-tune on 4 cells moves its
    energies onto the labels' zero (per-atom error < 0.5 eV, against ~100 eV zero-shot)."""
    monkeypatch.setenv("MACE_TRANSFER_PEERS_PYTHON", str(PEERS_PYTHON))
    write_sw_ge_dataset(tmp_path / "train.xyz", 4, seed=3)
    frames = read(tmp_path / "train.xyz", ":")
    for atoms in frames:  # a CP2K-like energy zero
        atoms.info["REF_energy"] = atoms.info["REF_energy"] - 100.0 * len(atoms)
    write(tmp_path / "train.xyz", frames, format="extxyz")
    result = peers_module.run_job({"peer": peer, "task": "finetune", "train": str(tmp_path / "train.xyz"),
                                   "valid": str(tmp_path / "train.xyz"), "out_dir": str(tmp_path / "model"),
                                   "settings": {"lr": 1e-4, "max_epochs": 2, "patience_epochs": 5,
                                                "batch_size": 2, "seed": 0}}, tmp_path / "job")
    assert result["epochs_run"] == 2 and Path(result["checkpoint"]).is_file()
    predicted = peers_module.run_job({"peer": peer, "task": "predict", "model": result["checkpoint"],
                                      "frames": str(tmp_path / "train.xyz"), "out": str(tmp_path / "p.xyz"),
                                      "energy_shift_eV_per_atom": {}}, tmp_path / "predict")
    assert predicted["frames"] == 4
    for atoms in read(tmp_path / "p.xyz", ":"):
        assert abs(atoms.info["peer_energy"] - atoms.info["REF_energy"]) / len(atoms) < 0.5
        assert np.isfinite(atoms.arrays["peer_forces"]).all()


def test_a_peer_teaches_exactly_what_it_predicts(tmp_path, monkeypatch):
    """A peer as a pretraining teacher: the labels are the peer's predictions (plus the asked energy
    shift) for the stored geometry, and the frames carry the peer's identity."""
    from mace_transfer.datagen.teacher import label_with_teacher

    monkeypatch.setattr(peers_module, "run_job", _fake_run_job)
    write_sw_ge_dataset(tmp_path / "structures.xyz", 3, seed=5)
    structures = read(tmp_path / "structures.xyz", ":")
    calc, name, settings = peers_module.peer_teacher({"peer": "chgnet", "model": None,
                                                      "energy_shift_eV_per_atom": {"Ge": 50.0}},
                                                     structures, tmp_path / "teacher")
    frames = label_with_teacher(structures, calc, tmp_path / "labels.xyz", name=name, settings=settings,
                                progress=lambda *_: None)
    for atoms, frame in zip(structures, frames):
        atoms.positions = np.round(atoms.positions, 8)
        atoms.calc = _lj(0.3)
        assert frame.info["REF_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        assert np.allclose(frame.arrays["REF_forces"], atoms.get_forces(), atol=1e-8)
        assert frame.info["teacher"] == "chgnet:zero-shot"
    with pytest.raises(UserInputError, match="teacher.peer"):
        peers_module.peer_teacher({"peer": "mace"}, structures, tmp_path / "x")


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.is_file(), reason="the peers' environment is not installed (make peers)")
def test_live_peer_calculator_answers_as_the_batch_prediction(tmp_path, monkeypatch):
    """The served peer (for MD and E-V) gives exactly the batch worker's numbers, and its stress is
    the strain derivative of its energy."""
    monkeypatch.setenv("MACE_TRANSFER_PEERS_PYTHON", str(PEERS_PYTHON))
    write_sw_ge_dataset(tmp_path / "ge.xyz", 2, seed=6)
    frames = read(tmp_path / "ge.xyz", ":")
    peers_module.run_job({"peer": "chgnet", "task": "predict", "model": None, "frames": str(tmp_path / "ge.xyz"),
                          "out": str(tmp_path / "p.xyz"), "energy_shift_eV_per_atom": {}}, tmp_path / "job")
    batch = read(tmp_path / "p.xyz", ":")
    with peers_module.PeerCalculator("chgnet") as calc:
        for atoms, predicted in zip(frames, batch):
            atoms.calc = calc
            assert atoms.get_potential_energy() == pytest.approx(predicted.info["peer_energy"], abs=1e-4)
            assert np.allclose(atoms.get_forces(), predicted.arrays["peer_forces"], atol=1e-4)


def test_a_source_shared_by_two_compared_studies_is_one_zero_shot_row(tmp_path):
    """The teacher study reuses the tiny study's source: same forces, whatever energy zero each used,
    so one row; a study whose energy zero was never fitted is starred."""
    from mace_transfer.studies.peers_report import compared_zero_shot

    tiny, teacher, other = (tmp_path / name for name in ("converged_tiny", "teacher_tiny", "converged_medium"))
    fitted = {"force_mae_meV_per_A": 60.4, "energy_mae_meV_per_atom": 40.0,
              "energy_zero_fitted": {"energy_mae_meV_per_atom": 6.8}}
    for folder, zero in ((tiny, {"remap_rescale": fitted}),
                         (teacher, {"remap_rescale": {"force_mae_meV_per_A": 60.4, "energy_mae_meV_per_atom": 493.7}}),
                         (other, {"remap_rescale": {"force_mae_meV_per_A": 40.1, "energy_mae_meV_per_atom": 41.0}})):
        folder.mkdir()
        (folder / "zero_shot.json").write_text(json.dumps(zero))
    rows = compared_zero_shot({"compare_with": [str(tiny), str(teacher), str(other)]})
    assert [round(r["force_mae_meV_per_A"], 1) for r in rows.values()] == [60.4, 40.1]
    first, second = rows.values()
    assert first["energy_mae_meV_per_atom"] == 6.8 and not first.get("_zero_not_fitted")
    assert second["_zero_not_fitted"] and second["energy_mae_meV_per_atom"] == 41.0
