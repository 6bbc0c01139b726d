"""Pipeline: stages in order, outputs feed the next stage, a rerun skips what is done."""

import json

import pytest
import torch
import yaml

from mace_transfer import UserInputError
from mace_transfer.studies.pipeline import Pipeline, load_pipeline, mace_argv

TINY_MACE = {
    "model": "ScaleShiftMACE", "num_channels": 8, "max_L": 0, "r_max": 4.0, "correlation": 2,
    "num_radial_basis": 6, "batch_size": 2, "valid_batch_size": 4, "max_num_epochs": 2,
    "device": "cpu", "default_dtype": "float64", "seed": 1, "energy_key": "REF_energy",
    "forces_key": "REF_forces", "stress_key": "REF_stress",
}
FAST_SAMPLING = {"supercell": [1, 1, 1], "temperatures": [300, 900], "equilibration_steps": 5,
                 "snapshot_interval": 3, "snapshots_per_unit": 2, "seed": 4, "progress": False}


def test_mace_argv_booleans_and_unknown_keys():
    argv = mace_argv({"max_L": 0, "amsgrad": True, "ema": False, "swa": True, "E0s": "average"})
    assert argv == ["--max_L", "0", "--amsgrad", "--swa", "--E0s", "average"]
    with pytest.raises(UserInputError, match="unknown training option"):
        mace_argv({"not_a_flag": 1})


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_pipeline(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stages": [{"name": "a", "kind": "bake"}]}))
    with pytest.raises(UserInputError, match="kind"):
        load_pipeline(bad)


def test_classical_pretrain_then_remap_then_evaluate_and_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {
        "workdir": "runs/p",
        "mace": TINY_MACE,
        "stages": [
            {"name": "si", "kind": "classical_pretrain", "element": "Si", "potential": "sw", "n": 6,
             "options": FAST_SAMPLING, "mace": {"E0s": "{14: 0.0}", "valid_fraction": 0.34}},
            {"name": "ge_data", "kind": "sample", "element": "Ge", "potential": "sw", "n": 6,
             "options": FAST_SAMPLING},
            {"name": "ge", "kind": "train", "source": "si", "element_map": "Si:Ge",
             "subset": {"file": "runs/p/ge_data/ge_data.xyz", "n_train": 4, "n_valid": 2},
             "mace": {"E0s": "{32: 0.0}", "lr": 0.001, "freeze_blocks": "embedding"}},
            {"name": "report", "kind": "evaluate", "models": ["ge"], "labels": ["transfer"],
             "test": "runs/p/ge_data/ge_data.xyz", "reference": "sw-ge",
             "skip": ["md", "structure", "lattice", "elastic", "vacancy", "phonons"]},
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    outputs = Pipeline(load_pipeline(path)).run()
    ge = torch.load(outputs["ge"], map_location="cpu", weights_only=False)
    assert [int(z) for z in ge.atomic_numbers] == [32]
    assert all(p.requires_grad for p in ge.parameters())
    si = torch.load(outputs["si"], map_location="cpu", weights_only=False)
    # the frozen embedding was carried over from the Si model unchanged
    assert torch.equal(ge.node_embedding.linear.weight, si.node_embedding.linear.weight)
    metrics = json.loads(outputs["report"].read_text())
    assert metrics["models"]["transfer"]["errors"]["overall"]["force_mae_meV_per_A"] > 0
    assert (tmp_path / "runs/p/report/training_curves.png").stat().st_size > 0
    stamp = outputs["ge"].stat().st_mtime_ns
    again = Pipeline(load_pipeline(path)).run()
    assert again["ge"].stat().st_mtime_ns == stamp  # skipped, not retrained


def test_a_list_of_subsets_draws_from_each_file_on_its_own(tmp_path, monkeypatch):
    """N Ge + M Si (the alloy workflow's training file): each file drawn with its own seed, validation
    cells first, the training and validation files the concatenation in order; a stage that trains on
    its own labels refuses a list in one line."""
    from ase.io import read

    from conftest import write_sw_ge_dataset, write_sw_si_dataset

    monkeypatch.chdir(tmp_path)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 6, seed=1)
    write_sw_si_dataset(tmp_path / "si.xyz", n=5)
    stage = {"name": "sige", "kind": "train", "subset": [{"file": "ge.xyz", "n_train": 3, "n_valid": 2, "seed": 4},
                                                          {"file": "si.xyz", "n_train": 2, "seed": 0}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"workdir": "runs", "stages": [stage]}))
    pipeline = Pipeline(load_pipeline(path))
    (tmp_path / "out").mkdir()
    files = pipeline._subset(stage, tmp_path / "out")
    train, valid = read(files["train_file"], ":"), read(files["valid_file"], ":")
    assert [a.get_chemical_symbols()[0] for a in train] == ["Ge"] * 3 + ["Si"] * 2
    assert [a.get_chemical_symbols()[0] for a in valid] == ["Ge"] * 2
    ge = read(tmp_path / "ge.xyz", ":")
    (tmp_path / "one").mkdir()
    one = pipeline._subset(dict(stage, subset=stage["subset"][0]), tmp_path / "one")  # the same draw alone
    assert [a.positions.tolist() for a in read(one["train_file"], ":")] == [a.positions.tolist() for a in train[:3]]
    assert all(any((a.positions == g.positions).all() for g in ge) for a in train[:3] + valid)
    with pytest.raises(UserInputError, match="subset is one mapping"):
        pipeline.run_classical_pretrain(dict(stage, kind="classical_pretrain", data="ge.xyz"))


@pytest.mark.slow  # make test-slow: two tiny trainings and an evaluation (~45 s); the stage itself is in test_train
def test_a_train_stage_with_converged_stage_two_hands_on_the_stage_two_model(tmp_path, monkeypatch):
    """``converged_stage_two: energy`` in a train stage: the stage's model (what later stages read and what
    makes a rerun skip it) is ``<name>_stagetwo.model``, and the evaluate stage tests that file."""
    from conftest import make_mace_model, write_sw_ge_dataset

    from mace_transfer.studies.starts import model_errors

    monkeypatch.chdir(tmp_path)
    torch.save(make_mace_model([14], r_max=4.0), tmp_path / "si.model")
    write_sw_ge_dataset(tmp_path / "ge.xyz", 6, seed=3, stress=True)
    mace = dict(TINY_MACE, E0s="{32: -4.0}", valid_fraction=0.34, converged_stage_two="energy",
                train_file="ge.xyz")
    config = {"workdir": "runs/p", "mace": mace, "stages": [
        {"name": "ge", "kind": "train", "source": "si.model", "element_map": "Si:Ge"},
        {"name": "report", "kind": "evaluate", "models": ["ge"], "labels": ["ge"], "test": "ge.xyz",
         "skip": ["md", "structure", "lattice", "elastic", "vacancy", "phonons"]}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    outputs = Pipeline(load_pipeline(tmp_path / "p.yaml")).run()
    assert outputs["ge"].resolve() == tmp_path / "runs/p/ge/ge_stagetwo.model" and (tmp_path / "runs/p/ge/ge.model").is_file()
    from ase.io import read

    reported = json.loads(outputs["report"].read_text())["models"]["ge"]["errors"]["overall"]
    direct = model_errors(outputs["ge"], read(tmp_path / "ge.xyz", ":"))
    assert reported["force_mae_meV_per_A"] == pytest.approx(direct["force_mae_meV_per_A"], rel=1e-6)
    stamp = outputs["ge"].stat().st_mtime_ns
    assert Pipeline(load_pipeline(tmp_path / "p.yaml")).run()["ge"].stat().st_mtime_ns == stamp  # skipped
