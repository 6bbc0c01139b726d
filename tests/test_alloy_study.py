"""The Si -> SiGe study (issue 18) end to end on Tersoff labels with a tiny MACE: every route runs,
the saved models know both elements and load in MACECalculator, replay keeps the Si predictions
near the source's, and the E-V analysis recovers the labels' own a0 and mixing energy."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from conftest import labelled
from mace_transfer.datagen import alloy
from mace_transfer.studies.alloy import calculator_energy, ev_properties, run_alloy


def _labelled(frames):
    return labelled(frames, alloy.tersoff_sige_calculator())


def _cells(x, n, seed, a=None):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        cell = alloy.alloy_cell(x, rng, supercell=(1, 1, 1), lattice_constant=a)
        cell.positions += rng.normal(0, 0.08, size=cell.positions.shape)
        cell.info["x_ge"] = x
        frames.append(cell)
    return _labelled(frames)


def _kinds(frames):
    """Two solid cells and one labelled as a melt, as the PBE test sets' sampler kinds."""
    for atoms, kind in zip(frames, ("md_450K", "md_450K", "liquid")):
        atoms.info["config_type"] = kind
    return frames


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("alloy")
    write(root / "si.xyz", _cells(0.0, 14, 0, 5.43), format="extxyz")
    write(root / "ge.xyz", _cells(1.0, 8, 1, 5.66), format="extxyz")
    write(root / "alloy.xyz", _cells(0.5, 8, 2, 5.55), format="extxyz")
    write(root / "alloy_test.xyz", _kinds(_cells(0.5, 3, 3, 5.55)), format="extxyz")
    write(root / "ge_test.xyz", _kinds(_cells(1.0, 3, 4, 5.66)), format="extxyz")
    write(root / "si_test.xyz", _cells(0.0, 3, 5, 5.43), format="extxyz")
    ev = [f for x in (0.0, 0.5, 1.0) for f in alloy.ev_scan(x, strains=(-0.04, -0.02, 0.0, 0.02, 0.04))]
    write(root / "ev.xyz", _labelled(ev), format="extxyz")
    mace = {"model": "MACE", "num_channels": 8, "max_L": 0, "r_max": 4.0, "num_interactions": 2,
            "correlation": 2, "num_radial_basis": 6, "batch_size": 2, "valid_batch_size": 4,
            "energy_key": "REF_energy", "forces_key": "REF_forces", "energy_weight": 1.0,
            "forces_weight": 10.0, "default_dtype": "float64", "eval_interval": 1, "error_table": "PerAtomMAE"}
    config = {"kind": "alloy", "out": str(root / "out"), "work": str(root / "work"), "threads": 1,
              "element_map": "Si:Ge", "target_E0s": "{14: 0.0, 32: 0.0}", "n_valid": 2, "valid_seed": 1,
              "n_valid_alloy": 2, "n_ge": 4, "n_si": 6, "seeds": [0], "m_alloy": [0, 4],
              "data": {"source": str(root / "si.xyz"), "target": str(root / "ge.xyz"), "test": str(root / "ge_test.xyz"),
                       "si": str(root / "si.xyz"), "alloy": str(root / "alloy.xyz"), "ev": str(root / "ev.xyz"),
                       "test_sets": {"alloy": str(root / "alloy_test.xyz"), "ge": str(root / "ge_test.xyz"),
                                     "si": str(root / "si_test.xyz")}},
              "source": {"cache": "source/si.model", "n_valid": 2,
                         "mace": {"max_num_epochs": 25, "lr": 0.01, "E0s": "{14: 0.0}"}},
              "mace": mace, "routes": {"replay": {"lr": 0.002}, "plain": {"lr": 0.002},
                                       "mixed": {"lr": 0.002}, "scratch": {"lr": 0.01}},
              "budget": {"mode": "converged", "patience_steps": 6, "min_patience_epochs": 2,
                         "scheduler_patience_steps": 4, "max_steps": 12, "max_epochs": 12}}
    summary = run_alloy(config, sizes=[4], progress=lambda *_: None)
    return root, config, summary


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_every_route_gives_a_two_element_model_tested_on_three_sets(study):
    from mace.calculators import MACECalculator

    root, config, summary = study
    assert summary["n_runs"] == 4
    for route in ("replay", "mixed", "plain", "scratch"):
        record = json.loads((root / "out" / "records" / f"{route}_M0004_s0.json").read_text())
        assert set(record["test_sets"]) == {"alloy", "ge", "si"}
        assert record["n_ge"] == 4 and record["m_alloy"] == 4
        calc = MACECalculator(model_paths=record["model"], device="cpu", default_dtype="float64")
        cell = bulk("Si", "diamond", a=5.5, cubic=True)
        cell.symbols[:4] = "Ge"
        cell.calc = calc
        assert np.isfinite(cell.get_potential_energy())
        assert set(record["ev"]) == {"0", "0.5", "1"}
    assert "replay, M=4" in (root / "out" / "summary.md").read_text()


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_si_data_in_the_fine_tune_bounds_the_forgetting(study):
    """Learning Ge and the alloy without Si forgets Si most; MACE's replay (Si on a pt_head) forgets
    less, Si mixed into the training set least; nothing brings it below the source's own error.
    (In this toy, 12 steps: source 38, mixed 73, replay 132, plain 219 meV/Å; the Default head that
    predicts Si after replay never trains on Si itself, only the shared layers do.)"""
    root, _, _ = study
    before = json.loads((root / "out" / "source_si.json").read_text())["force_mae_meV_per_A"]

    def si_after(route):
        record = json.loads((root / "out" / "records" / f"{route}_M0004_s0.json").read_text())
        return record["test_sets"]["si"]["force_mae_meV_per_A"]

    assert before < si_after("mixed") < si_after("replay") < si_after("plain")


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_ev_reference_is_the_labels_own_fit(study):
    """The PBE (here Tersoff) reference: a0 from the fitted minimum of the labels, mixing energy
    exactly zero at x = 0 and 1 by construction."""
    root, _, _ = study
    reference = json.loads((root / "out" / "ev_pbe.json").read_text())
    assert reference["0"]["mixing_meV_per_atom"] == pytest.approx(0.0, abs=1e-9)
    assert reference["1"]["mixing_meV_per_atom"] == pytest.approx(0.0, abs=1e-9)
    frames = read(root / "ev.xyz", ":")
    again = ev_properties(lambda a: float(a.info["REF_energy"]), frames)
    assert again["0.5"]["a0_A"] == pytest.approx(reference["0.5"]["a0_A"], rel=1e-12)
    assert 5.3 < reference["0"]["a0_A"] < 5.6  # Tersoff Si near 5.43 Å, from E-V points around Vegard's a


def test_calculator_energy_fits_sw_germaniums_lattice_constant_and_leaves_frames_alone():
    """An E-V scan of diamond Ge under Stillinger-Weber (Ding-Andersen) fits its known a0, 5.654 Å;
    the frames keep their own labels and no calculator is left attached."""
    from mace_transfer.datagen import classical

    frames = []
    for a in np.linspace(5.55, 5.75, 5):
        atoms = bulk("Ge", "diamond", a=a, cubic=True)
        atoms.info.update(x_ge=1.0, REF_energy=123.0)
        frames.append(atoms)
    fitted = ev_properties(calculator_energy(classical.calculator("Ge", "sw")), frames)["1"]
    assert fitted["a0_A"] == pytest.approx(5.654, abs=0.002)
    assert all(f.calc is None and f.info["REF_energy"] == 123.0 for f in frames)


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_zero_alloy_case_validates_on_ge_only_and_a_partial_pool_is_refused(study, tmp_path):
    """M = 0 sees no alloy, not even for its best epoch; M > 0 waits for the whole pool, since its
    validation cells are drawn from all of it (a growing pool would move them)."""
    from mace_transfer import UserInputError
    from mace_transfer.studies.alloy import AlloySweep

    _, config, _ = study
    config = dict(config, out=str(tmp_path / "out"), work=str(tmp_path / "work"))
    sweep = AlloySweep(config, progress=lambda *_: None)
    subset = sweep.write_alloy_subset(tmp_path / "m0", "plain", 0, 0)
    valid = read(subset["files"]["valid_file"], ":")
    assert subset["n_valid_alloy"] == 0 and len(valid) == config["n_valid"]
    assert all(set(a.get_chemical_symbols()) == {"Ge"} for a in valid)
    subset = sweep.write_alloy_subset(tmp_path / "m4", "plain", 4, 0)
    assert len(read(subset["files"]["valid_file"], ":")) == config["n_valid"] + config["n_valid_alloy"]
    partial = AlloySweep(dict(config, alloy_pool_size=9), progress=lambda *_: None)
    partial.write_alloy_subset(tmp_path / "m0_partial", "plain", 0, 0)  # M = 0 needs no pool
    with pytest.raises(UserInputError, match="8 of 9 structures labelled"):
        partial.write_alloy_subset(tmp_path / "m4_partial", "plain", 4, 0)


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_replay_keeps_a_si_readout_that_predicts_si_better_than_the_default_head(study):
    """MACE's multihead replay trains a pt_head on the replayed Si: on the Si test set that head beats
    the Default head (which never saw Si); a head the model lacks is one clear error."""
    from mace_transfer import UserInputError, evaluate

    root, _, summary = study
    record = json.loads((root / "out" / "records" / "replay_M0004_s0.json").read_text())
    pt_head = record["si_test_pt_head"]["force_mae_meV_per_A"]
    assert pt_head < record["test_sets"]["si"]["force_mae_meV_per_A"]
    assert "si (pt_head)" in (root / "out" / "summary.md").read_text()
    assert summary["table"]["replay"]["4"]["si (pt_head):force_mae_meV_per_A"]["mean"] == pytest.approx(pt_head)
    with pytest.raises(UserInputError, match="has no head 'Si_head'"):
        evaluate.load_model(record["model"], head="Si_head")


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_pt_head_errors_are_added_to_replay_records_written_before_them(study, tmp_path):
    import shutil

    from mace_transfer.studies.alloy import AlloySweep

    root, config, _ = study
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    path = out / "records" / "replay_M0004_s0.json"
    record = json.loads(path.read_text())
    kept = record.pop("si_test_pt_head")
    path.write_text(json.dumps(record))
    sweep = AlloySweep(dict(config, out=str(out)), progress=lambda *_: None)
    assert sweep.add_missing_pt_head_errors() == 1 and sweep.add_missing_pt_head_errors() == 0
    again = json.loads(path.read_text())["si_test_pt_head"]
    assert again["force_mae_meV_per_A"] == pytest.approx(kept["force_mae_meV_per_A"], rel=1e-9)


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_a_cut_replay_run_is_parked_and_resumed_not_retrained(study, tmp_path, monkeypatch):
    """Alloy runs outlive a session as the learning curve's do: a replay run (MACE's multihead path,
    with its Si replay file) cut after training keeps its checkpoint, ``park`` copies it to
    <out>/partial/, and a fresh work folder (another session) resumes from it: the same epochs in the
    record, none trained again, the wall time of both chunks, the parked copy gone."""
    import shutil

    from mace_transfer.studies import alloy as alloy_study

    root, config, _ = study
    config = dict(config, out=str(tmp_path / "out"), work=str(tmp_path / "work"),
                  source={"model": str(root / "out" / "source" / "si.model")})

    def cut(*args, **kwargs):
        raise KeyboardInterrupt("cut")

    monkeypatch.setattr(alloy_study, "model_errors", cut)
    with pytest.raises(KeyboardInterrupt):
        alloy_study.AlloySweep(config, progress=lambda *_: None).alloy_run("replay", 4, 0)
    monkeypatch.undo()
    run_alloy(config, park=True, progress=lambda *_: None)
    parked = tmp_path / "out" / "partial" / "replay_M0004_s0"
    assert len(list((parked / "checkpoints").glob("*.pt"))) == 1 and (parked / "si_replay.xyz").is_file()
    first_epochs = alloy_study.read_results(parked / "results")["epoch"]
    before = json.loads((parked / "chunks.json").read_text())["parked_chunk_s"]
    shutil.rmtree(tmp_path / "work")
    said = []
    record = alloy_study.AlloySweep(config, progress=said.append).alloy_run("replay", 4, 0)
    assert any("resuming from its checkpoint" in line for line in said)
    assert record["curve"]["epoch"] == first_epochs and record["wall_s"] >= before > 0
    assert not parked.exists() and (tmp_path / "out" / "records" / "replay_M0004_s0.json").is_file()
    assert set(record["test_sets"]) == {"alloy", "ge", "si"} and "si_test_pt_head" in record


def test_like_for_like_compares_alloy_and_ge_on_the_same_sampler_kinds():
    from mace_transfer.studies.alloy import like_for_like

    def mae(value):
        return {"force_mae_meV_per_A": value}

    alloy_errors = {"md_450K": mae(6.0), "strain": mae(10.0), "liquid": mae(150.0), "vacancy": mae(40.0)}
    ge_errors = {"md_450K": mae(4.0), "strain": mae(5.0), "liquid": mae(20.0), "md_750K": mae(7.0)}
    result = like_for_like(alloy_errors, ge_errors)  # shared: liquid, md_450K, strain
    assert result["alloy_over_ge:solid"] == pytest.approx((1.5 + 2.0) / 2, rel=1e-15)
    assert result["alloy_over_ge:all"] == pytest.approx((1.5 + 2.0 + 7.5) / 3, rel=1e-15)
    assert result["melt_force_mae:alloy"] == 150.0 and result["melt_force_mae:ge"] == 20.0
    assert like_for_like({"liquid": mae(1.0)}, {"md_450K": mae(1.0)}) == {}


@pytest.mark.slow  # the module fixture trains a source and four routes: ~70 s on a quiet machine
def test_alloy_records_keep_errors_per_sampler_kind(study):
    """The per-kind errors of each test set add up to the overall ones (equal-size cells: the overall
    force MAE is the cell-count-weighted mean), and the summary's like-for-like ratio is theirs."""
    root, _, summary = study
    record = json.loads((root / "out" / "records" / "mixed_M0004_s0.json").read_text())
    for test_set in ("alloy", "ge"):
        kinds = record["test_sets_per_config_type"][test_set]
        assert set(kinds) == {"md_450K", "liquid"}
        weighted = (2 * kinds["md_450K"]["force_mae_meV_per_A"] + kinds["liquid"]["force_mae_meV_per_A"]) / 3
        assert weighted == pytest.approx(record["test_sets"][test_set]["force_mae_meV_per_A"], rel=1e-9)
    kinds = record["test_sets_per_config_type"]
    solid = kinds["alloy"]["md_450K"]["force_mae_meV_per_A"] / kinds["ge"]["md_450K"]["force_mae_meV_per_A"]
    assert summary["table"]["mixed"]["4"]["alloy_over_ge:solid"]["mean"] == pytest.approx(solid, rel=1e-12)
    assert "without the melts" in (root / "out" / "summary.md").read_text()
