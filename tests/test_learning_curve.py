"""mace_transfer.studies (learning curves): subsets, MACE result parsing, aggregation, resumable tiny sweep."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.io import write
from conftest import write_sw_ge_dataset, write_sw_si_dataset
from test_pipeline import TINY_MACE

from mace_transfer import UserInputError
from mace_transfer.cli import _learning_curve as run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    """The learning-curve study's names, from the modules of mace_transfer.studies they live in."""
    from types import SimpleNamespace

    from mace_transfer.studies import config, data, learning_curve, records, report, runs

    modules = (config, data, records, runs, report, learning_curve)
    return SimpleNamespace(**{k: getattr(m, k) for m in modules for k in vars(m) if not k.startswith("__")})


def _record(strategy, n, seed, mae, curve_rmse=(50.0, 40.0), energy=1.0):
    return {"strategy": strategy, "n_train": n, "seed": seed, "name": f"{strategy}_{n}_{seed}",
            "test": {"force_mae_meV_per_A": mae, "force_rmse_meV_per_A": 1.3 * mae,
                     "energy_mae_meV_per_atom": energy, "energy_rmse_meV_per_atom": energy},
            "wall_s": 10.0, "epochs_run": len(curve_rmse), "best_epoch": len(curve_rmse) - 1,
            "best_valid_rmse_f_meV_A": min(curve_rmse),
            "curve": {"epoch": list(range(len(curve_rmse))), "valid_rmse_f_meV_A": list(curve_rmse),
                      "train_step_s": [2.0] * len(curve_rmse), "initial_valid_rmse_f_meV_A": 500.0}}


def test_subsets_fixed_validation_nested_training(lc):
    valid, pool = lc.split_target(50, 10, valid_seed=7)
    assert len(valid) == 10 and len(pool) == 40 and not set(valid) & set(pool)
    assert lc.split_target(50, 10, valid_seed=7) == (valid, pool)  # the same for every N and seed
    small, large = lc.training_indices(pool, 5, seed=1), lc.training_indices(pool, 20, seed=1)
    assert large[:5] == small  # nested in N
    assert lc.training_indices(pool, 5, seed=2) != small  # the seed changes the subset
    with pytest.raises(UserInputError):
        lc.training_indices(pool, 41, seed=0)
    with pytest.raises(UserInputError):
        lc.split_target(10, 10, valid_seed=0)


def test_epoch_budget_is_steps_clipped(lc):
    budget = {"steps": 200, "min_epochs": 15, "max_epochs": 80}
    assert lc.epochs_for(5, 5, budget) == 80  # 1 step/epoch -> 200, clipped
    assert lc.epochs_for(25, 5, budget) == 40  # 5 steps/epoch
    assert lc.epochs_for(100, 5, budget) == 15  # 20 steps/epoch -> 10, raised to the minimum
    assert lc.epochs_for(100, 5, {"epochs": 7}) == 7


def test_aggregate_mean_sample_std_and_reach_scratch(lc):
    records = [_record("scratch", 5, 0, 100.0, (90.0, 60.0)), _record("scratch", 5, 1, 120.0, (80.0, 70.0)),
               _record("transfer", 5, 0, 40.0, (65.0, 50.0)), _record("transfer", 5, 1, 60.0, (75.0, 72.0)),
               _record("transfer", 10, 0, 30.0)]
    lc.attach_reach_scratch(records)
    table = lc.aggregate(records)
    stats = table["scratch"]["5"]["force_mae_meV_per_A"]
    assert stats["mean"] == pytest.approx(110.0)
    assert stats["std"] == pytest.approx(math.sqrt(200.0))  # sample std of (100, 120)
    assert stats["n"] == 2 and table["scratch"]["5"]["seeds"] == [0, 1]
    assert table["transfer"]["10"]["force_mae_meV_per_A"]["std"] == 0.0
    # transfer seed 0 reaches scratch's 60 at epoch 1 (2 epochs, 4 s); seed 1 (target 70) never does
    assert records[2]["reach_scratch"] == {"epochs": 2, "train_step_s": 4.0}
    assert records[3]["reach_scratch"] is None
    reach = table["transfer"]["5"]["reach_scratch"]
    assert (reach["reached"], reach["of"], reach["epochs"]["mean"]) == (1, 2, 2.0)
    assert "reach_scratch" not in table["transfer"]["10"]  # no scratch run at N=10
    md = lc.summary_markdown({"table": table, "n_runs": 5})
    assert "| scratch | 110.0 ± 14.1 (n=2) |" in md
    assert "by config_type" not in md  # older records have no per-part errors: no table

    for rec, liquid in zip(records, (150.0, 170.0, 60.0, 80.0, 45.0)):
        rec["test_per_config_type"] = {"liquid": {"force_mae_meV_per_A": liquid},
                                       "md_450K": {"force_mae_meV_per_A": liquid / 3}}
    table = lc.aggregate(records)
    assert table["scratch"]["5"]["force_mae_per_config_type"]["liquid"]["mean"] == pytest.approx(160.0)
    md = lc.summary_markdown({"table": table, "n_runs": 5})
    assert "Test force MAE (meV/Å) by config_type, N=10:" in md  # the largest N
    assert "| transfer | 45.0 (n=1) | 15.0 (n=1) |" in md and "| scratch | – | – |" in md


def test_read_results_curve_and_best_epoch(lc, tmp_path):
    rows = [{"mode": "eval", "epoch": None, "loss": 9.0, "rmse_f": 0.5, "mae_f": 0.4},
            {"mode": "opt", "epoch": 0, "time": 1.5}, {"mode": "opt", "epoch": 0, "time": 0.5},
            {"mode": "eval", "epoch": 0, "loss": 3.0, "rmse_f": 0.2, "mae_f": 0.15},
            {"mode": "opt", "epoch": 1, "time": 1.0},
            {"mode": "eval", "epoch": 1, "loss": 4.0, "rmse_f": 0.25, "mae_f": 0.2}]
    (tmp_path / "x_run-1_train.txt").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curve = lc.read_results(tmp_path)
    assert curve["epoch"] == [0, 1] and curve["initial_valid_rmse_f_meV_A"] == pytest.approx(500.0)
    assert curve["valid_rmse_f_meV_A"] == pytest.approx([200.0, 250.0])
    assert curve["train_step_s"] == pytest.approx([2.0, 1.0])
    assert lc.best_epoch(curve) == 0 and lc.valid_rmse_at(curve, 0) == pytest.approx(200.0)
    assert lc.time_to_reach(curve, 210.0) == {"epochs": 1, "train_step_s": 2.0}
    assert lc.time_to_reach(curve, 100.0) is None



def test_tiny_sweep_end_to_end_and_resume(lc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sw_si_dataset(tmp_path / "si.xyz", n=6)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 9, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 3, seed=4)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    config = {
        "out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1,
        "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"},
        "n_valid": 3, "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [3, 50], "seeds": [0],
        "mace": mace,
        "source": {"n_valid": 2, "mace": {"E0s": "{14: 0.0}", "lr": 0.01, "max_num_epochs": 2}},
        "budget": {"epochs": 2, "patience": 5},
        "strategies": {"scratch": {"lr": 0.01},
                       "transfer_freeze": {"lr": 0.002, "init": "remap", "freeze_candidates": ["embedding"],
                                           "select": {"n": 3, "seed": 0}}},
    }
    path = tmp_path / "lc.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["--config", str(path), "--no-zero-shot"]) == 0
    out = capsys.readouterr().out
    assert "N=50 dropped" in out and "[2/2]" in out and "ETA" in out
    records = lc.load_runs(tmp_path / "res")
    assert sorted((r["strategy"], r["n_train"]) for r in records) == [("scratch", 3), ("transfer_freeze", 3)]
    for rec in records:
        assert rec["epochs_run"] == 2 and rec["wall_s"] > 0 and rec["freeze_blocks"] == (
            "embedding" if rec["strategy"] == "transfer_freeze" else None)
        assert np.isfinite(rec["test"]["force_mae_meV_per_A"]) and rec["test"]["force_mae_meV_per_A"] > 0
        assert rec["best_valid_rmse_f_meV_A"] == pytest.approx(
            rec["curve"]["valid_rmse_f_meV_A"][rec["curve"]["epoch"].index(rec["best_epoch"])])
    by_n = {(r["strategy"], r["n_train"]): r for r in records}
    # the same seed: the same training subset for every strategy
    selection = json.loads((tmp_path / "res" / "freeze_selection.json").read_text())
    assert selection["chosen"] == "embedding"  # the selection run at N=3 seed 0 is reused, not retrained
    assert by_n[("transfer_freeze", 3)]["reused_from"].endswith("freeze-embedding_N0003_s0.json")
    assert by_n[("scratch", 3)]["train_indices"] == by_n[("transfer_freeze", 3)]["train_indices"]
    assert (tmp_path / "res" / "learning_curve.png").stat().st_size > 0
    assert (tmp_path / "res" / "source" / "si.model").is_file()
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["table"]["scratch"]["3"]["force_mae_meV_per_A"]["mean"] == pytest.approx(
        by_n[("scratch", 3)]["test"]["force_mae_meV_per_A"])
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "res" / "records").glob("*.json")}
    assert run_cli(["--config", str(path), "--no-zero-shot"]) == 0  # resumes: nothing retrained
    assert "0 to train" in capsys.readouterr().out
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "res" / "records").glob("*.json")}
    with pytest.raises(UserInputError, match="classical"):
        run_cli(["--config", str(path), "--strategies", "classical_pretrain"])
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 4, seed=5)  # new test data: finished runs would mix two sets
    with pytest.raises(UserInputError, match="changed since"):
        run_cli(["--config", str(path), "--no-zero-shot"])


def _shifted(path_in, path_out, shift_per_atom):
    """The same frames with REF_energy moved by ``shift_per_atom`` eV/atom (another energy zero)."""
    from ase.io import read

    frames = read(path_in, ":")
    for atoms in frames:
        atoms.info["REF_energy"] += shift_per_atom * len(atoms)
    write(path_out, frames, format="extxyz")


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_pipeline_stage_with_classical_pretrain(lc, tmp_path, monkeypatch, capsys):
    """A learning_curve pipeline stage; classical_pretrain starts from an SW-Ge model re-referenced
    to the target's E0 (target = SW-Ge with its energy zero moved by -100 eV/atom)."""
    from mace_transfer.studies import pipeline
    from mace_transfer.studies.md_runs import add_missing_stress, md_and_properties

    monkeypatch.chdir(tmp_path)
    write_sw_si_dataset(tmp_path / "si.xyz", n=6)
    write_sw_ge_dataset(tmp_path / "ge_classical.xyz", 6, seed=1)
    write_sw_ge_dataset(tmp_path / "ge_sw.xyz", 7, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_sw_test.xyz", 3, seed=4, stress=True)
    _shifted(tmp_path / "ge_sw.xyz", tmp_path / "ge.xyz", -100.0)
    _shifted(tmp_path / "ge_sw_test.xyz", tmp_path / "ge_test.xyz", -100.0)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    mace["device"] = "auto"  # resolved before MACE sees it (MACE itself knows no "auto")
    config = {
        "out": "res", "element_map": "Si:Ge", "threads": 1,
        "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz", "classical": "ge_classical.xyz"},
        "n_valid": 3, "valid_seed": 0, "target_E0s": "{32: -100.0}", "sizes": [3], "seeds": [0], "mace": mace,
        "source": {"n_valid": 2, "mace": {"E0s": "{14: 0.0}", "lr": 0.01, "max_num_epochs": 2}},
        "classical": {"n_valid": 2, "cache": "classical/ge_sw.model",
                      "mace": {"E0s": "{32: 0.0}", "lr": 0.01, "max_num_epochs": 2}},
        "budget": {"epochs": 2, "patience": 5},
        "strategies": {"scratch": {"lr": 0.01}, "classical_pretrain": {"lr": 0.002, "init": "classical"}},
        "md": {"seeds": [0], "strategies": ["scratch"], "sizes": [3], "temperatures": [300], "md_seeds": [0],
               "md_steps": 3},
    }
    (tmp_path / "lc.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump({"workdir": "runs", "stages": [
        {"name": "curve", "kind": "learning_curve", "config": "lc.yaml", "md": True}]}))
    pipeline.run_pipeline_file(str(tmp_path / "pipe.yaml"))
    records = {r["strategy"]: r for r in lc.load_runs(tmp_path / "res")}
    assert set(records) == {"scratch", "classical_pretrain"}
    assert records["classical_pretrain"]["init"] == "classical"
    assert (tmp_path / "runs" / "curve" / "work" / "classical_pretrain_N0003_s0").is_dir()
    # zero-shot of the re-referenced classical model on the shifted test set = the classical model
    # on the unshifted one, exactly: only the energy zero moved
    zero = json.loads((tmp_path / "res" / "zero_shot.json").read_text())["classical"]
    direct = lc.model_errors(tmp_path / "res" / "classical" / "ge_sw.model", lc.read_frames("ge_sw_test.xyz"))
    assert zero["force_mae_meV_per_A"] == pytest.approx(direct["force_mae_meV_per_A"], rel=1e-9)
    assert zero["energy_mae_meV_per_atom"] == pytest.approx(direct["energy_mae_meV_per_atom"], abs=1e-3)
    # the fine-tuned model knows the target's energy zero: errors of meV, not 100 eV, per atom
    assert records["classical_pretrain"]["test"]["energy_mae_meV_per_atom"] < 5000
    # a record from before the stress metric gets it from its model, still at hand, with --md
    stress = records["classical_pretrain"]["test"]["stress_mae_meV_per_A3"]
    assert stress > 0
    path = tmp_path / "res" / "records" / "classical_pretrain_N0003_s0.json"
    path.write_text(json.dumps(dict(records["classical_pretrain"], test=dict(
        records["classical_pretrain"]["test"], stress_mae_meV_per_A3=None))))
    assert add_missing_stress(lc.Sweep(dict(config, work=str(tmp_path / "work_stress")))) == 1
    refreshed = json.loads(path.read_text())
    assert refreshed["test"]["stress_mae_meV_per_A3"] == pytest.approx(stress, rel=1e-6)
    assert abs(refreshed["test_errors_refreshed"]["force_mae_change_meV_per_A"]) < 1e-3
    md = sorted(p.name for p in (tmp_path / "res" / "md").glob("*.json"))
    assert md == ["scratch_N0003_s0.json"]  # md.strategies: only scratch
    md_record = json.loads((tmp_path / "res" / "md" / md[0]).read_text())
    assert md_record["md_settings"]["temperatures_K"] == [300] and "max_stable_temperature_K" in md_record
    assert md_record["retrained"] is False
    (tmp_path / "res" / "md" / md[0]).unlink()
    # a fresh clone has the record, not the model (work folders are not committed): --md trains the
    # run again with the record's lr and seed and notes how closely it reproduces the recorded errors
    Path(records["scratch"]["model"]).unlink()
    md_and_properties(lc.Sweep(dict(config, work=str(tmp_path / "work_again"))), [0])
    again = json.loads((tmp_path / "res" / "md" / md[0]).read_text())
    assert again["retrained"] is True and Path(again["model"]).is_file()
    assert again["retrained_test_force_mae_meV_per_A"] == pytest.approx(
        records["scratch"]["test"]["force_mae_meV_per_A"], rel=1e-3)  # same seed, same data, same lr
    (tmp_path / "res" / "md" / md[0]).unlink()
    for leftover in (tmp_path / "res" / "md" / "retrained").glob("*"):
        leftover.unlink()
    (tmp_path / "res" / "md" / "retrained").rmdir()
    other_sizes = dict(config, md=dict(config["md"], sizes=[4]), work=str(tmp_path / "work_md"))
    md_and_properties(lc.Sweep(other_sizes), [0])  # md.sizes: no run at N=3 qualifies
    assert not list((tmp_path / "res" / "md").glob("*.json"))
    (tmp_path / "res" / "md").rmdir()
    capsys.readouterr()
    pipeline.run_pipeline_file(str(tmp_path / "pipe.yaml"))  # the stage is done: skipped
    assert "done already" in capsys.readouterr().out


def test_data_limits_take_a_fixed_prefix_of_a_growing_file(lc, tmp_path):
    """A study on the first K frames of a file still being labelled survives the file growing."""
    from ase.io import read

    write_sw_ge_dataset(tmp_path / "ge.xyz", 6, seed=3)
    write_sw_ge_dataset(tmp_path / "test.xyz", 2, seed=4)
    config = {"out": str(tmp_path / "res"), "work": str(tmp_path / "work"), "element_map": "Si:Ge",
              "data": {"source": "si.xyz", "target": str(tmp_path / "ge.xyz"), "test": str(tmp_path / "test.xyz"),
                       "limits": {"target": 4}}}
    sweep = lc.Sweep(config)
    frames = sweep.frames("target")
    assert len(frames) == 4
    np.testing.assert_array_equal(frames[3].positions, read(tmp_path / "ge.xyz", 3).positions)
    first = sweep.check_data()
    (tmp_path / "res" / "records").mkdir()
    (tmp_path / "res" / "records" / "scratch_N0003_s0.json").write_text(json.dumps(_record("scratch", 3, 0, 9.0)))
    more = read(tmp_path / "ge.xyz", ":") + read(tmp_path / "test.xyz", ":")
    write(tmp_path / "ge.xyz", more, format="extxyz")  # labelling went on: the prefix is unchanged
    assert lc.Sweep(config).check_data()["target"]["sha256"] == first["target"]["sha256"]
    moved = read(tmp_path / "ge.xyz", ":")
    moved[0].positions[0, 0] += 0.01
    write(tmp_path / "ge.xyz", moved, format="extxyz")  # a frame inside the prefix changed
    with pytest.raises(UserInputError, match="changed since"):
        lc.Sweep(config).check_data()
    config["data"]["limits"] = {"target": 99}
    with pytest.raises(UserInputError, match="limits.target asks for 99"):
        lc.Sweep(config).frames("target")


def test_data_from_several_files_with_per_file_limits(lc, tmp_path):
    """data.target may list files (e.g. labels at SW density + the PBE-density ones): read in order,
    a list of limits takes a prefix of each file, an int a prefix of the concatenation."""
    from ase.io import read

    write_sw_ge_dataset(tmp_path / "a.xyz", 3, seed=5)
    write_sw_ge_dataset(tmp_path / "b.xyz", 4, seed=6)
    a, b = read(tmp_path / "a.xyz", ":"), read(tmp_path / "b.xyz", ":")
    for atoms in b:
        atoms.info["config_type"] = "hot"
    write(tmp_path / "b.xyz", b, format="extxyz")
    files = [str(tmp_path / "a.xyz"), str(tmp_path / "b.xyz")]
    config = {"out": str(tmp_path / "res"), "work": str(tmp_path / "work"), "element_map": "Si:Ge",
              "data": {"source": "si.xyz", "target": files, "test": str(tmp_path / "b.xyz"),
                       "limits": {"target": [2, None]}}}
    frames = lc.Sweep(config).frames("target")
    assert len(frames) == 2 + 4
    np.testing.assert_array_equal(frames[1].positions, a[1].positions)
    np.testing.assert_array_equal(frames[2].positions, b[0].positions)
    config["data"]["limits"] = {"target": 5}
    frames = lc.Sweep(config).frames("target")
    assert len(frames) == 5 and np.array_equal(frames[4].positions, b[1].positions)
    config["data"]["limits"] = {}
    record = lc.Sweep(config).check_data()
    assert record["target"]["configurations"] == 7 and str(tmp_path / "b.xyz") in record["target"]["path"]
    config["data"]["config_types"] = {"target": ["rattled"]}
    assert len(lc.Sweep(config).frames("target")) == 3  # the 3 of a.xyz, none of the 4 "hot"
    config["data"]["limits"] = {"target": [2, None]}
    assert len(lc.Sweep(config).frames("target")) == 2  # limits first, then the filter
    config["data"]["config_types"] = {"target": ["liquid"]}
    with pytest.raises(UserInputError, match="liquid not in"):
        lc.Sweep(config).frames("target")
    del config["data"]["config_types"]
    config["data"]["limits"] = {"target": [2]}
    with pytest.raises(UserInputError, match="2 files"):
        lc.Sweep(config).frames("target")
    config["data"]["limits"] = {"target": [2, 9]}
    with pytest.raises(UserInputError, match="b.xyz has 4 configurations"):
        lc.Sweep(config).frames("target")


def test_grouped_test_errors_partition_the_overall_error(lc, tmp_path):
    """Per-config-type and per-density force MAEs, weighted by force components, give the overall."""
    import torch
    from ase.io import read
    from conftest import make_mace_model

    from mace_transfer.datagen import dft

    path = tmp_path / "ge.model"
    torch.save(make_mace_model([32]), path)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 5, seed=7)
    frames = read(tmp_path / "ge.xyz", ":")
    for i in (1, 3):  # two cells at another density (labels stay: only the grouping is tested)
        frames[i] = dft.scale_lengths(frames[i], 1.02)
        frames[i].info["REF_energy"] = -1.0
        frames[i].arrays["REF_forces"] = np.zeros((len(frames[i]), 3))
        frames[i].info["config_type"] = "liquid"
    grouped = lc.model_errors(path, frames, groups=True)
    assert grouped["overall"] == {k: v for k, v in lc.model_errors(path, frames).items() if k in lc.METRICS}
    assert set(grouped["per_config_type"]) == {"rattled", "liquid"}
    assert set(grouped["per_length_scale"]) == {"1", "1.02"}
    for parts, weights in ((grouped["per_config_type"], {"rattled": 3, "liquid": 2}),
                           (grouped["per_length_scale"], {"1": 3, "1.02": 2})):
        mae = sum(weights[k] * parts[k]["force_mae_meV_per_A"] for k in weights) / 5
        assert mae == pytest.approx(grouped["overall"]["force_mae_meV_per_A"], rel=1e-12)
    same_density = lc.model_errors(path, read(tmp_path / "ge.xyz", ":"), groups=True)
    assert same_density["per_length_scale"] == {}


def test_config_base_merges_and_null_removes(lc, tmp_path):
    base = yaml.safe_load((ROOT / "configs" / "learning_curve_sw.yaml").read_text())
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({
        "base": str(tmp_path / "base.yaml"), "out": "elsewhere", "budget": {"steps": 800},
        "strategies": {"mace_freeze": None}}))
    config = lc.load_config(tmp_path / "long.yaml")
    assert config["out"] == "elsewhere" and config["mace"] == base["mace"]
    assert config["budget"] == dict(base["budget"], steps=800)  # merged key by key
    assert "mace_freeze" not in config["strategies"] and config["strategies"]["transfer"] == base["strategies"]["transfer"]
    (tmp_path / "self.yaml").write_text(yaml.safe_dump({"base": str(tmp_path / "self.yaml")}))
    with pytest.raises(UserInputError, match="itself"):
        lc.load_config(tmp_path / "self.yaml")


def _sweep_config_with_extra_file(tmp_path, **data) -> dict:
    """A 12-frame SW-Ge target (4 validation) and a 3-frame extra file x.xyz; ``data`` joins the data keys."""
    write_sw_ge_dataset(tmp_path / "t.xyz", 12, seed=5)
    write_sw_ge_dataset(tmp_path / "x.xyz", 3, seed=7)
    return {"out": str(tmp_path / "res"), "work": str(tmp_path / "work"), "element_map": "Si:Ge",
            "n_valid": 4, "valid_seed": 1, "mace": {"batch_size": 2}, "target_E0s": "{32: 0.0}",
            "budget": {"steps": 40, "min_epochs": 1, "max_epochs": 1000},
            "strategies": {"scratch": {"lr": 0.01}},
            "data": {"source": "si.xyz", "target": str(tmp_path / "t.xyz"), "test": str(tmp_path / "t.xyz"), **data}}


def test_extra_train_frames_join_every_training_set_outside_n_and_validation(lc, tmp_path):
    """data.extra_train: added to every run's train.xyz, never to validation, not counted in N; the
    step budget counts them; its file is fingerprinted with the rest of the data."""
    from ase.io import read

    config = _sweep_config_with_extra_file(tmp_path)
    plain = lc.Sweep(dict(config))
    config["data"] = dict(config["data"], extra_train=str(tmp_path / "x.xyz"))
    sweep = lc.Sweep(config)
    extra = read(tmp_path / "x.xyz", ":")
    subset = sweep.write_subset(tmp_path / "run", 5, seed=0)
    train = read(subset["train_file"], ":")
    valid = read(subset["valid_file"], ":")
    assert subset["n_extra_train"] == 3 and len(train) == 5 + 3 and len(valid) == 4
    for atoms, ref in zip(train[5:], extra):
        np.testing.assert_array_equal(atoms.positions, ref.positions)
    assert subset["train_indices"] == plain.write_subset(tmp_path / "run0", 5, seed=0)["train_indices"]
    assert sweep.strategy_options("scratch", 5, 0)["max_num_epochs"] == lc.epochs_for(8, 2, config["budget"])
    assert plain.strategy_options("scratch", 5, 0)["max_num_epochs"] == lc.epochs_for(5, 2, config["budget"])
    assert sweep.check_data()["extra_train"]["configurations"] == 3
    # a transferred start's s, k and shift are estimated on the N target structures alone
    estimate = read(subset["estimate_file"], ":")
    assert len(estimate) == 5
    for atoms, ref in zip(estimate, train[:5]):
        np.testing.assert_array_equal(atoms.positions, ref.positions)
    assert plain.write_subset(tmp_path / "run1", 5, seed=0)["estimate_file"] is None


def test_train_order_trains_on_the_first_n_of_a_selection_order_per_seed(lc, tmp_path):
    """data.train_order: seed s trains on the first N target indices of its order file (an active loop's
    labels in the order chosen), validation unchanged; a bad order file is refused in one line."""
    from ase.io import read

    config = _sweep_config_with_extra_file(tmp_path, train_order=str(tmp_path / "order_s{seed}.json"))
    sweep = lc.Sweep(config)
    valid, pool = sweep.split()
    chosen = {0: [pool[7], pool[2], pool[5], pool[0]], 1: [pool[1], pool[6], pool[3]]}
    for seed, order in chosen.items():
        (tmp_path / f"order_s{seed}.json").write_text(json.dumps({"target_indices": order}))
    subset = sweep.write_subset(tmp_path / "run", 3, seed=0)
    assert subset["train_indices"] == chosen[0][:3]
    target = read(tmp_path / "t.xyz", ":")
    for atoms, index in zip(read(subset["train_file"], ":"), chosen[0][:3]):
        np.testing.assert_array_equal(atoms.positions, target[index].positions)
        assert atoms.info["REF_energy"] == target[index].info["REF_energy"]
    assert len(read(subset["valid_file"], ":")) == len(valid)
    assert sweep.train_indices(3, seed=1) == chosen[1]  # {seed} picks the file
    with pytest.raises(UserInputError, match="orders 3 structures, N=4"):
        sweep.train_indices(4, seed=1)
    with pytest.raises(UserInputError, match="not found"):
        sweep.train_indices(2, seed=2)
    (tmp_path / "order_s2.json").write_text(json.dumps({"target_indices": [valid[0], pool[0]]}))
    with pytest.raises(UserInputError, match="outside the training pool"):  # a validation cell
        sweep.train_indices(2, seed=2)
    (tmp_path / "order_s2.json").write_text(json.dumps({"target_indices": [pool[0], pool[0]]}))
    with pytest.raises(UserInputError, match="repeats an index"):
        sweep.train_indices(2, seed=2)
    (tmp_path / "order_s2.json").write_text(json.dumps([pool[0]]))
    with pytest.raises(UserInputError, match="target_indices"):
        sweep.train_indices(1, seed=2)
    del config["data"]["train_order"]  # without it: the seeded shuffle of the pool
    assert lc.Sweep(config).train_indices(3, seed=0) == lc.training_indices(pool, 3, 0)


def test_extra_train_weight_is_the_loss_weight_mace_reads(lc, tmp_path):
    """data.extra_train_weight: every extra frame, and no target frame, reaches MACE with that loss weight
    (its per-configuration ``config_weight``); a weight without extra frames, or not positive, is refused."""
    from ase.io import read
    from mace.data.utils import config_from_atoms

    config = _sweep_config_with_extra_file(tmp_path, extra_train=str(tmp_path / "x.xyz"), extra_train_weight=0.1)
    subset = lc.Sweep(config).write_subset(tmp_path / "run", 5, seed=0)
    weights = [config_from_atoms(atoms).weight
               for atoms in read(subset["train_file"], ":")]
    assert weights == [1.0] * 5 + [0.1] * 3
    assert "config_weight" not in read(tmp_path / "x.xyz", 0).info   # the data file itself is untouched
    assert lc.Sweep(config).check_data()["extra_train"]["config_weight"] == 0.1
    for bad in ({"extra_train_weight": 0.0}, {"extra_train_weight": 0.1, "extra_train": None}):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(dict(config, data=dict(config["data"], **bad), sizes=[5], seeds=[0])))
        with pytest.raises(UserInputError, match="extra_train_weight"):
            lc.load_config(path)


def test_extra_train_energy_weight_leaves_the_extra_frames_forces_only_in_mace_s_loss(lc, tmp_path):
    """data.extra_train_energy_weight 0: MACE reads an energy weight of 0 on every extra frame and 1 on every target
    frame, forces kept at 1 (its ``config_energy_weight``); with extra_train_weight both apply; a negative weight or
    one without extra frames is refused."""
    from ase.io import read
    from mace.data.utils import KeySpecification
    from mace.data.utils import config_from_atoms as mace_reads

    keys = KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})

    def config_from_atoms(atoms):
        return mace_reads(atoms, keys)

    config = _sweep_config_with_extra_file(tmp_path, extra_train=str(tmp_path / "x.xyz"), extra_train_energy_weight=0)
    frames = read(lc.Sweep(config).write_subset(tmp_path / "run", 5, seed=0)["train_file"], ":")
    read_by_mace = [config_from_atoms(atoms) for atoms in frames]
    assert [c.property_weights["energy"] for c in read_by_mace] == [1.0] * 5 + [0.0] * 3
    assert [c.property_weights["forces"] for c in read_by_mace] == [1.0] * 8
    assert [c.weight for c in read_by_mace] == [1.0] * 8
    assert lc.Sweep(config).check_data()["extra_train"]["config_energy_weight"] == 0.0
    both = dict(config, data=dict(config["data"], extra_train_weight=0.1))
    frames = read(lc.Sweep(both).write_subset(tmp_path / "run2", 5, seed=0)["train_file"], ":")
    assert [(c.weight, c.property_weights["energy"]) for c in map(config_from_atoms, frames)][4:] == \
        [(1.0, 1.0)] + [(0.1, 0.0)] * 3
    for bad in ({"extra_train_energy_weight": -1.0}, {"extra_train_energy_weight": 0, "extra_train": None},
                {"extra_train_energy_weight": True}):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(dict(config, data=dict(config["data"], **bad), sizes=[5], seeds=[0])))
        with pytest.raises(UserInputError, match="extra_train_energy_weight"):
            lc.load_config(path)


def test_converged_budget_counts_patience_in_optimizer_steps(lc):
    budget = {"mode": "converged", "patience_steps": 600, "min_patience_epochs": 20, "max_steps": 20000,
              "max_epochs": 5000, "scheduler_patience_steps": 200}
    small = lc.converged_options(2, 5, budget)  # 1 step an epoch
    large = lc.converged_options(292, 5, budget)  # 58 steps an epoch (MACE drops the partial batch)
    assert small == {"max_num_epochs": 5000, "early_stop_patience": 600, "scheduler_patience": 200,
                     "early_stop_min_epochs": 0}
    assert large == {"max_num_epochs": math.ceil(20000 / 58), "early_stop_patience": 20,
                     "scheduler_patience": 4, "early_stop_min_epochs": 0}
    assert lc.converged_options(2, 5, dict(budget, min_improvement=0.001)) == dict(small, early_stop_min_delta=0.001)


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_converged_sweep_chooses_each_lr_on_validation_and_stops_early(lc, tmp_path, monkeypatch, capsys):
    """lr grid {0, 0.01}: lr 0 never lowers the validation loss, so 0.01 must win on validation; the
    selection run is reused as the sweep's record; every run stops on its plateau before the cap."""
    monkeypatch.chdir(tmp_path)
    write_sw_si_dataset(tmp_path / "si.xyz", n=6)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 7, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 2, seed=4)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    config = {
        "out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1,
        "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"},
        "n_valid": 2, "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [4], "seeds": [0],
        "mace": mace,
        "source": {"n_valid": 2, "mace": {"E0s": "{14: 0.0}", "lr": 0.01, "max_num_epochs": 2}},
        "budget": {"mode": "converged", "patience_steps": 2, "min_patience_epochs": 2, "max_steps": 400,
                   "scheduler_patience_steps": 2},
        "strategies": {"scratch": {"lr": 0.01}},
        "lr_grid": {"select": {"n": 4, "seed": 0}, "scratch": [0.0, 0.01]},
    }
    path = tmp_path / "lc.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(UserInputError, match="positive learning rates"):
        lc.load_config(path)
    config["lr_grid"]["scratch"] = [1e-12, 0.01]  # as good as 0: no step moves the loss visibly
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["--config", str(path), "--no-zero-shot"]) == 0
    selection = json.loads((tmp_path / "res" / "lr_selection" / "scratch.json").read_text())
    tries = selection["tries"]
    assert set(tries) == {"1e-12", "0.01"}
    assert selection["chosen"] == min((0.01, 1e-12), key=lambda lr: tries[f"{lr:g}"]["best_valid_loss"])
    assert tries["0.01"]["best_valid_loss"] < tries["1e-12"]["best_valid_loss"]
    (record,) = lc.load_runs(tmp_path / "res")
    assert record["lr"] == 0.01 and record["reused_from"].endswith("lr-scratch-0.01_N0004_s0.json")
    assert record["early_stop_patience"] == 2 and record["converged"] is True
    assert record["epochs_run"] < 200  # the cap (400 steps at 2 steps an epoch) was never reached
    assert record["epochs_run"] - 1 - record["best_epoch"] == 2  # stopped `patience` epochs after the best
    assert record["optimizer_steps_run"] == 2 * record["epochs_run"]
    assert record["optimizer_steps_to_best"] == 2 * (record["best_epoch"] + 1)
    summary = (tmp_path / "res" / "summary.md").read_text()
    assert f"| scratch | {record['optimizer_steps_to_best']} (n=1), 1/1 converged |" in summary
    assert "| scratch | 4, 0 | 1e-12: " in summary and "| 0.01 |" in summary


def test_converged_runs_below_one_batch_train_on_every_structure(lc, tmp_path):
    """MACE drops the last partial batch: N = 2 at batch 5 would train on nothing (MACE then fails
    in compute_avg_num_neighbors). A converged run takes batch = N below one batch."""
    config = {"out": str(tmp_path / "res"), "work": str(tmp_path / "work"), "element_map": "Si:Ge",
              "data": {"source": "si.xyz", "target": "ge.xyz", "test": "t.xyz"}, "target_E0s": "{32: 0.0}",
              "mace": {"batch_size": 5}, "strategies": {"scratch": {"lr": 0.01}},
              "budget": {"mode": "converged", "patience_steps": 10, "min_patience_epochs": 2}}
    sweep = lc.Sweep(config)
    assert sweep.strategy_options("scratch", 2, 0)["batch_size"] == 2
    assert sweep.strategy_options("scratch", 7, 0)["batch_size"] == 5
    assert sweep.strategy_options("scratch", 7, 0)["early_stop_patience"] == 10  # 1 step an epoch (7 // 5)


def test_data_efficiency_solves_the_fitted_power_law(lc):
    """Scratch MAE = 100 N^-1/2 exactly; transfer at N=10 equals scratch at N=40: ratio 4 (seed 0),
    and 2 for a seed whose transfer equals scratch at N=20; beyond scratch's largest N: extrapolated."""
    scratch = [_record("scratch", n, s, 100.0 * n ** -0.5) for n in (5, 10, 20, 50) for s in (0, 1)]
    transfer = [_record("transfer", 10, 0, 100.0 * 40 ** -0.5), _record("transfer", 10, 1, 100.0 * 20 ** -0.5),
                _record("transfer", 20, 0, 100.0 * 200 ** -0.5)]
    result = lc.data_efficiency(scratch + transfer, "transfer", 10)
    assert result["per_seed"]["0"]["ratio"] == pytest.approx(4.0) and result["per_seed"]["1"]["ratio"] == pytest.approx(2.0)
    assert result["ratio"]["mean"] == pytest.approx(3.0) and result["extrapolated"] == 0
    far = lc.data_efficiency(scratch + transfer, "transfer", 20)
    assert far["n_equal"]["mean"] == pytest.approx(200.0) and far["extrapolated"] == 1
    assert lc.data_efficiency(scratch, "transfer", 10) is None
    # pooled on the seed means: transfer's mean at N = 10 is 100 N^-1/2 at N = 30 (exact: the fit is exact)
    mean_30 = [_record("transfer", 10, 0, 100.0 * 40 ** -0.5), _record("transfer", 10, 1, 100.0 * 30 ** -0.5),
               _record("transfer", 10, 2, 2 * 100.0 * 30 ** -0.5 - 100.0 * 40 ** -0.5)]
    pooled = lc.data_efficiency(scratch + mean_30, "transfer", 10)["pooled"]
    assert pooled["ratio"] == pytest.approx(3.0) and pooled["slope"] == pytest.approx(-0.5)
    assert pooled["ratio_range"][1] > 3.0 > pooled["ratio_range"][0]
    assert pooled["baseline_sizes"] == {"5": 2, "10": 2, "20": 2, "50": 2} and not pooled["extrapolated"]
    # the bootstrap over seeds: scratch's seeds agree, so only transfer's spread widens it, around 3
    boot = pooled["ratio_bootstrap"]
    assert boot["p2.5"] < boot["p16"] < 3.0 < boot["p84"] < boot["p97.5"] and boot["dropped"] == 0
    assert boot["p2.5"] >= pooled["ratio_range"][0] - 1e-9 and boot["p97.5"] <= pooled["ratio_range"][1] + 1e-9
    # no spread anywhere: every resample is the point estimate, exactly
    same = lc.data_efficiency(scratch + [_record("transfer", 10, s, 100.0 * 40 ** -0.5) for s in (0, 1)], "transfer", 10)
    assert all(v == pytest.approx(4.0) for k, v in same["pooled"]["ratio_bootstrap"].items() if k.startswith("p"))
    # seeds that never hold two scratch sizes each: no per-seed ratio, the pooled one still exists
    split = [_record("scratch", 20, 1, 100.0 * 20 ** -0.5), _record("scratch", 50, 0, 100.0 * 50 ** -0.5),
             _record("transfer", 20, 0, 100.0 * 80 ** -0.5)]
    alone = lc.data_efficiency(split, "transfer", 20)
    assert alone["per_seed"] == {} and alone["pooled"]["ratio"] == pytest.approx(4.0) and alone["pooled"]["extrapolated"]


def test_baseline_tuned_on_validation_loss_not_on_test(lc):
    """Two scratch studies differing in lr: per (N, seed) the run with the lower validation loss is
    kept even where its test error is higher; a run with no validation curve loses; the tuned
    baseline then sets the data efficiency (scratch 100 N^-1/2 at the kept runs: ratio 4 exactly)."""
    def run(n, seed, mae, loss, lr):
        rec = _record("scratch", n, seed, mae)
        rec["lr"], rec["curve"]["valid_loss"] = lr, ([None, loss, 2 * loss] if loss else [])
        return rec

    study = [run(10, 0, 100.0 * 10 ** -0.5, 0.02, 0.003), run(40, 0, 70.0, 0.05, 0.003)]
    other = [run(10, 0, 10.0, 0.03, 0.01), run(40, 0, 100.0 * 40 ** -0.5, 0.04, 0.01), run(40, 1, 1.0, None, 0.01)]
    tuned = lc.best_on_validation(study, other)
    assert [(r["n_train"], r["seed"], r["lr"]) for r in tuned] == [(10, 0, 0.003), (40, 0, 0.01), (40, 1, 0.01)]
    assert lc.lowest_valid_loss(tuned[0]) == 0.02 and lc.lowest_valid_loss(tuned[2]) is None
    assert lc.best_on_validation([run(40, 1, 5.0, 0.1, 0.003)], [tuned[2]])[0]["lr"] == 0.003
    transfer = [_record("transfer", 10, 0, 100.0 * 40 ** -0.5)]
    assert lc.data_efficiency(tuned[:2] + transfer, "transfer", 10)["per_seed"]["0"]["ratio"] == pytest.approx(4.0)


def _write_many(path, value):
    from mace_transfer.studies.records import write_json

    for _ in range(300):
        write_json(path, {"writer": value})


def test_two_sweeps_of_one_study_write_the_same_json_side_by_side(tmp_path):
    """Two processes (two sweeps of one study on two cores) rewrite machine.json at once: with one
    temp name shared by both, one renamed the other's file away (FileNotFoundError, seen live)."""
    import multiprocessing

    path = tmp_path / "machine.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(path, k)) for k in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert json.loads(path.read_text())["writer"] in (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["machine.json"]  # no temp file left behind


def _cut_and_parked_run(lc, tmp_path, monkeypatch, max_steps):
    """A tiny converged scratch run (N = 4, seed 0) cut after training (its test evaluation fails) and
    parked with --park; returns (config, record path, parked folder)."""
    from mace_transfer.studies import runs

    monkeypatch.chdir(tmp_path)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 6, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 2, seed=4)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    config = {"out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1,
              "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"}, "n_valid": 2,
              "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [4], "seeds": [0], "mace": mace,
              "budget": {"mode": "converged", "patience_steps": 4, "min_patience_epochs": 2, "max_steps": max_steps},
              "strategies": {"scratch": {"lr": 0.01}}}
    record_path = tmp_path / "res" / "records" / "scratch_N0004_s0.json"

    def cut(*args, **kwargs):
        raise KeyboardInterrupt("cut")

    monkeypatch.setattr(runs, "model_errors", cut)
    with pytest.raises(KeyboardInterrupt):
        lc.Sweep(config).train_run("scratch", 4, 0, record_path)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert lc.Sweep(config).park_runs() == ["scratch_N0004_s0"]
    return config, record_path, tmp_path / "res" / "partial" / "scratch_N0004_s0"


def test_a_cut_converged_run_is_parked_and_resumed_not_retrained(lc, tmp_path, monkeypatch, capsys):
    """A run cut after training (here: its test evaluation fails) keeps its checkpoint; --park copies
    it to <out>/partial/, a fresh work folder (another machine) resumes from it: no epoch is trained
    again (the plateau is already in MACE's log), the record counts both chunks' wall time and names
    what each chunk ran on."""
    import shutil

    from mace_transfer.studies.plan import study_plan

    config, record_path, parked = _cut_and_parked_run(lc, tmp_path, monkeypatch, max_steps=60)
    assert len(list((parked / "checkpoints").glob("*.pt"))) == 1
    before = json.loads((parked / "chunks.json").read_text())["parked_chunk_s"]
    first_log = (parked / "results" / "scratch_N0004_s0_run-0_train.txt").read_text()
    first_epochs = lc.read_results(parked / "results")["epoch"]

    def state():
        (row,) = study_plan(tmp_path / "res", tmp_path / "work", [4], [0], ["scratch"])
        return row

    assert state()["status"] == "started"  # the cut folder is still in work
    shutil.rmtree(tmp_path / "work")  # a new machine: only the committed files
    row = state()
    assert row["status"] == "parked" and row["trained_s"] == pytest.approx(before)
    assert row["left_s"] is None  # no finished run to guess from
    capsys.readouterr()
    record = lc.Sweep(config).train_run("scratch", 4, 0, record_path)
    assert "resuming from its checkpoint" in capsys.readouterr().out
    assert record["curve"]["epoch"] == first_epochs and record["wall_s"] >= before > 0
    assert record["devices"] == ["cpu", "cpu"]  # one entry per chunk: the cut one and the resumed one
    assert record["kept_epoch"] == record["best_epoch"]  # the model MACE reloaded is the run's best epoch
    row = state()
    assert row["status"] == "done" and row["wall_s"] == record["wall_s"]
    assert row["force_mae_meV_per_A"] == record["test"]["force_mae_meV_per_A"]
    log = (tmp_path / "work" / "scratch_N0004_s0" / "results" / "scratch_N0004_s0_run-0_train.txt").read_text()
    assert log.startswith(first_log)  # MACE appended to the cut run's log
    assert not parked.exists() and record_path.is_file()


def test_plan_guesses_each_runs_wall_time_from_the_nearest_finished_runs(tmp_path):
    """--plan's guess: the same start at the same N (mean over seeds), else the same start at the nearest N on
    a log scale, else every start at that N, else every run; a parked run's guess is less what it trained;
    the totals line adds the guesses."""
    from mace_transfer.studies.plan import format_plan, guess_wall_s, study_plan

    walls = {("scratch", 5): [100.0, 300.0], ("scratch", 50): [1000.0], ("transfer", 20): [60.0]}
    assert guess_wall_s(walls, "scratch", 5) == (200.0, "scratch N=5")
    assert guess_wall_s(walls, "scratch", 20) == (1000.0, "scratch N=50")  # ln 50/20 < ln 20/5
    assert guess_wall_s(walls, "scratch", 10) == (200.0, "scratch N=5")  # ln 10/5 < ln 50/10
    assert guess_wall_s(walls, "transfer_rescale", 20) == (60.0, "every start at N=20")
    assert guess_wall_s(walls, "transfer_rescale", 2) == (pytest.approx(365.0), "every finished run")
    assert guess_wall_s({}, "scratch", 5) == (None, "no finished run")

    out = tmp_path / "res"
    for strategy, n, seed, wall in (("scratch", 5, 0, 100.0), ("scratch", 5, 1, 300.0)):
        name = f"{strategy}_N{n:04d}_s{seed}"
        record = {"strategy": strategy, "n_train": n, "seed": seed, "name": name, "wall_s": wall,
                  "test": {"force_mae_meV_per_A": 40.0 + seed, "energy_mae_meV_per_atom": 9.0}}
        (out / "records").mkdir(parents=True, exist_ok=True)
        (out / "records" / f"{name}.json").write_text(json.dumps(record))
    parked = out / "partial" / "scratch_N0005_s2"
    (parked / "checkpoints").mkdir(parents=True)
    (parked / "checkpoints" / "scratch_N0005_s2_run-2_epoch-7.pt").write_bytes(b"")
    (parked / "chunks.json").write_text(json.dumps({"wall_s_before": 30.0, "parked_chunk_s": 20.0}))
    rows = study_plan(out, tmp_path / "work", [5], [0, 1, 2, 3], ["scratch"])
    assert [r["status"] for r in rows] == ["done", "done", "parked", "to train"]
    assert rows[2]["trained_s"] == 50.0 and rows[2]["left_s"] == 150.0 and rows[3]["left_s"] == 200.0
    text = format_plan(rows)
    assert text.splitlines()[2].split()[:3] == ["scratch_N0005_s1", "done", "41.0"]
    assert text.splitlines()[-1].startswith("done 2, parked 1, started 0, to train 1; ~5m50s")


def test_plan_lists_the_selection_tries_still_to_train_first_and_counts_no_run_twice(tmp_path):
    """--plan lists every lr_grid value, loss_grid option and freeze candidate not yet tried, before the sweep's
    runs; a try already summarised or recorded is left out, the loss option ``{}`` is left out where the sweep's
    own run at the selection's (N, seed) exists (it is reused), and the sweep run a pending try will become is
    not listed again."""
    from mace_transfer.studies.plan import full_plan

    config = {"strategies": {"scratch": {"lr": 0.01}, "transfer_rescale": {"lr": 0.003},
                             "transfer_freeze": {"lr": 0.003, "freeze_candidates": ["interactions", "interactions,products"],
                                                 "select": {"n": 20, "seed": 0}}},
              "lr_grid": {"select": {"n": 20, "seed": 0}, "scratch": [0.01, 0.003]},
              "loss_grid": {"select": {"n": 20, "seed": 1}, "strategies": ["scratch", "transfer_rescale"],
                            "options": {"f100_e1": {}, "f10_e1": {"forces_weight": 10.0, "energy_weight": 1.0}}}}
    out = tmp_path / "res"
    (out / "lr_selection").mkdir(parents=True)
    (out / "lr_selection" / "scratch.json").write_text(json.dumps({"tries": {"0.01": {"best_valid_loss": 1.0}}}))
    (out / "selection").mkdir()
    (out / "selection" / "loss-transfer_rescale-f10_e1_N0020_s1.json").write_text("{}")  # cut before its summary
    (out / "records").mkdir()
    own = {"strategy": "transfer_rescale", "n_train": 20, "seed": 1, "name": "transfer_rescale_N0020_s1",
           "wall_s": 60.0, "test": {"force_mae_meV_per_A": 12.0, "energy_mae_meV_per_atom": 1.0}}
    (out / "records" / "transfer_rescale_N0020_s1.json").write_text(json.dumps(own))
    rows = full_plan(out, tmp_path / "work", config, [20], [0, 1], ["scratch", "transfer_rescale", "transfer_freeze"])
    names = [r["name"] for r in rows]
    assert names[:5] == ["lr-scratch-0.003_N0020_s0", "loss-scratch-f100_e1_N0020_s1", "loss-scratch-f10_e1_N0020_s1",
                         "freeze-interactions_N0020_s0", "freeze-interactions-products_N0020_s0"]
    assert all(r["status"] == "to train" for r in rows[:5])
    # scratch s1 and transfer_freeze s0 are what the pending loss and freeze tries become; scratch s0 stays:
    # the lr try there may not carry the loss chosen afterwards
    assert names[5:] == ["scratch_N0020_s0", "transfer_rescale_N0020_s0", "transfer_rescale_N0020_s1",
                         "transfer_freeze_N0020_s1"]
    assert [r["left_s"] for r in rows if r["status"] != "done"] == [60.0] * 8  # guessed from the one finished run
    assert [r["becomes_run"] for r in rows[:5]] == [False, True, True, True, True]


def test_seeds_above_trains_fewer_seeds_at_large_n_and_the_plan_lists_only_those(tmp_path):
    """``seeds_above: {n: 50, seeds: [0]}`` (issue 21: three seeds for N <= 50, one at N = 292): every seed up to
    and at N = 50, only seed 0 above; the plan lists exactly those runs; a malformed limit is a one-line error."""
    from pathlib import Path

    from mace_transfer.studies.config import load_config, seeds_at_size
    from mace_transfer.studies.plan import study_plan

    limit = {"n": 50, "seeds": [0]}
    assert seeds_at_size(limit, 50, [0, 1, 2]) == [0, 1, 2] and seeds_at_size(limit, 292, [0, 1, 2]) == [0]
    assert seeds_at_size(limit, 292, [1, 2]) == [] and seeds_at_size(None, 292, [0, 1, 2]) == [0, 1, 2]
    rows = study_plan(tmp_path / "res", tmp_path / "work", [50, 292], [0, 1, 2], ["scratch", "transfer"], limit)
    assert [r["name"] for r in rows if r["n_train"] == 292] == ["scratch_N0292_s0", "transfer_N0292_s0"]
    assert len(rows) == 3 * 2 + 2
    base = Path(__file__).resolve().parents[1] / "configs" / "converged_tiny.yaml"
    assert load_config(base)["seeds_above"] == limit  # the converged studies' design
    for bad in ({"n": 1.5}, {"n": 0, "seeds": [0]}, {"n": 50, "seeds": []}, {"n": 50, "seeds": ["0"]}, [50, 0]):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"base": str(base), "seeds_above": bad}))
        with pytest.raises(UserInputError, match="seeds_above must be"):
            load_config(path)


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_a_parked_run_is_not_resumed_under_other_settings(lc, tmp_path, monkeypatch, capsys):
    """A checkpoint cut under one learning rate is not continued under another (a mixed run): the
    run says which setting changed and trains again from its start; its parked copy goes."""
    import shutil

    config, record_path, parked = _cut_and_parked_run(lc, tmp_path, monkeypatch, max_steps=20)
    assert json.loads((parked / "chunks.json").read_text())["settings"]["lr"] == "0.01"
    shutil.rmtree(tmp_path / "work")
    capsys.readouterr()
    changed = dict(config, strategies={"scratch": {"lr": 0.005}})
    record = lc.Sweep(changed).train_run("scratch", 4, 0, record_path)
    said = capsys.readouterr().out
    assert "trained with other settings (lr: 0.01 -> 0.005)" in said and "resuming" not in said
    assert record["lr"] == 0.005 and not parked.exists()
    log = (tmp_path / "work" / "scratch_N0004_s0" / "results" / "scratch_N0004_s0_run-0_train.txt").read_text()
    assert log.count('"epoch": null') == 1  # one start: MACE's initial evaluation was logged once


def test_a_source_to_train_without_atomic_energies_is_one_clear_error(lc, tmp_path):
    """No E0s and no isolated atom in the data: refused before MACE would assert deep in run_train,
    and nothing is trained."""
    write_sw_ge_dataset(tmp_path / "si.xyz", 3, seed=7)
    config = {"out": str(tmp_path / "res"), "work": str(tmp_path / "work"), "element_map": "Si:Ge",
              "mace": {"model": "MACE"}, "data": {"source": str(tmp_path / "si.xyz"), "target": "ge.xyz",
                                                   "test": "t.xyz"}}
    with pytest.raises(UserInputError, match="source.mace.E0s"):
        lc.Sweep(config).source_model()
    assert not (tmp_path / "res" / "source").exists()


def test_pick_loss_prefers_force_among_those_meeting_the_energy_goal():
    from mace_transfer.studies.selection import pick_loss

    tries = {"f100": {"valid_force_mae_meV_per_A": 20.0, "valid_energy_mae_meV_per_atom": 9.0},
             "f10": {"valid_force_mae_meV_per_A": 24.0, "valid_energy_mae_meV_per_atom": 4.0},
             "f1": {"valid_force_mae_meV_per_A": 30.0, "valid_energy_mae_meV_per_atom": 1.0}}
    assert pick_loss(tries, 5.0) == "f10"  # f100 misses the goal; f10 has the lower force error of the rest
    assert pick_loss(tries, 10.0) == "f100"  # all meet it: the lowest force error
    assert pick_loss(tries, 0.5) == "f1"  # none meets it: the lowest energy error
    assert pick_loss(tries, 4.0) == "f10"  # the goal is inclusive


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_loss_grid_is_chosen_on_validation_and_its_run_reused(lc, tmp_path, monkeypatch, capsys):
    """A loss_grid tries each option at the selection (N, seed) with MACE's own flags, judges the
    models on the validation cells (the numbers are the model's errors there, recomputed), keeps the
    option of the rule, and the sweep's run at that (N, seed) is the chosen try, not retrained."""
    from mace_transfer.studies.runs import model_errors
    from mace_transfer.studies.selection import pick_loss

    monkeypatch.chdir(tmp_path)
    write_sw_si_dataset(tmp_path / "si.xyz", n=3)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 8, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 2, seed=4)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    config = {"out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1,
              "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"}, "n_valid": 3,
              "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [4], "seeds": [0], "mace": mace,
              "source": {"n_valid": 1, "mace": {"E0s": "{14: 0.0}", "lr": 0.01, "max_num_epochs": 1}},
              "budget": {"epochs": 2, "patience": 5}, "strategies": {"scratch": {"lr": 0.01}},
              "loss_grid": {"select": {"n": 4, "seed": 0}, "energy_goal_meV_per_atom": 1e6,
                            "options": {"study": {}, "e_heavy": {"energy_weight": 1000.0, "forces_weight": 1.0}}}}
    path = tmp_path / "lc.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["--config", str(path), "--no-zero-shot"]) == 0
    chosen_file = json.loads((tmp_path / "res" / "loss_selection" / "scratch.json").read_text())
    tries = chosen_file["tries"]
    assert set(tries) == {"study", "e_heavy"}
    assert chosen_file["chosen"] == pick_loss(tries, 1e6)  # every option meets this goal: lowest force error
    argv = json.loads((tmp_path / "work" / "loss-scratch-e_heavy_N0004_s0" / "argv.json").read_text())
    assert argv[argv.index("--energy_weight") + 1] == "1000.0" and argv[argv.index("--forces_weight") + 1] == "1.0"
    valid = [lc.read_frames("ge.xyz")[i] for i in lc.split_target(8, 3, 0)[0]]
    heavy = json.loads((tmp_path / "res" / "selection" / "loss-scratch-e_heavy_N0004_s0.json").read_text())
    assert tries["e_heavy"]["valid_force_mae_meV_per_A"] == pytest.approx(
        model_errors(heavy["model"], valid)["force_mae_meV_per_A"], rel=1e-9)
    record = lc.load_runs(tmp_path / "res")[0]
    assert record["loss_flags"] == config["loss_grid"]["options"][chosen_file["chosen"]]
    assert record["reused_from"].endswith(f"loss-scratch-{chosen_file['chosen']}_N0004_s0.json")
    assert "Loss of each start" in (tmp_path / "res" / "summary.md").read_text()
    bad = dict(config, loss_grid={"options": {"x": {"lr": 0.1}}})
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserInputError, match="loss_grid.options.x"):
        lc.load_config(path)


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_a_cut_pretraining_stage_is_parked_and_resumed_not_retrained(lc, tmp_path, monkeypatch):
    """The once-trained stages (a teacher/classical pretraining, a source) outlive a session like the
    runs: cut after training, parked, resumed on a fresh work folder with the same epochs and none trained
    again, the wall time of both chunks, checkpoints and parked copy gone; a changed split starts again."""
    import shutil

    from mace_transfer.studies import runs, starts

    monkeypatch.chdir(tmp_path)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 7, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_classical.xyz", 6, seed=1)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    config = {
        "out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1,
        "data": {"source": "ge.xyz", "target": "ge.xyz", "test": "ge.xyz", "classical": "ge_classical.xyz"},
        "n_valid": 3, "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [3], "seeds": [0], "mace": mace,
        "classical": {"n_valid": 2, "cache": "classical/student.model",
                      "mace": {"E0s": "{32: 0.0}", "lr": 0.01, "max_num_epochs": 3}},
        "budget": {"mode": "converged", "patience_steps": 50, "max_epochs": 3},
        "strategies": {"teacher_pretrain": {"lr": 0.002, "init": "classical"}},
    }
    (tmp_path / "lc.yaml").write_text(yaml.safe_dump(config))
    config = lc.load_config(tmp_path / "lc.yaml")
    calls = []

    def cut(*args, **kwargs):
        calls.append(args)
        raise KeyboardInterrupt("cut")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(starts, "read_results", cut)
        runs.Sweep(config, progress=lambda *_: None).classical_model()
    assert calls and not (tmp_path / "res" / "classical" / "student.model").exists()
    assert runs.Sweep(config, progress=lambda *_: None).park_runs() == ["classical"]
    parked = tmp_path / "res" / "partial" / "classical"
    first_epochs = lc.read_results(parked / "results")["epoch"]
    before = json.loads((parked / "chunks.json").read_text())["parked_chunk_s"]
    assert first_epochs == [0, 1, 2] and before > 0  # classical.mace.max_num_epochs: 3
    shutil.rmtree(tmp_path / "work")
    said = []
    path = runs.Sweep(config, progress=said.append).classical_model()
    assert any("classical: resuming from its checkpoint" in line for line in said)
    stage = json.loads(path.with_suffix(".json").read_text())
    assert stage["curve"]["epoch"] == first_epochs and stage["wall_s"] >= before
    assert not parked.exists() and not list((tmp_path / "work" / "classical").glob("checkpoints/*.pt"))
    # a cut stage whose split no longer matches the config's is trained again, not resumed
    (tmp_path / "work" / "classical" / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "work" / "classical" / "checkpoints" / "classical_run-1_epoch-2.pt").write_bytes(b"old run")
    assert runs.Sweep(config, progress=lambda *_: None).park_runs() == []  # a finished stage is not parked
    path.unlink()
    said.clear()
    changed = dict(config, classical=dict(config["classical"], n_valid=3))
    runs.Sweep(changed, progress=said.append).classical_model()
    assert any("split changed" in line for line in said) and not any("resuming" in line for line in said)


def test_runs_of_a_loss_the_grid_did_not_choose_are_moved_aside_whole_not_lost(lc, tmp_path):
    """A start's finished runs trained with another loss than its loss_grid chose leave the study's
    records (so its tables compare one loss per start) for <out>/superseded/<tag>/: record, kept model
    and MD results byte for byte, the record marked, the loss selection's path to it following; runs of
    the chosen loss and of starts without a choice stay; a second copy under the same tag is refused."""
    from types import SimpleNamespace

    from mace_transfer.studies.runs import Sweep

    out = tmp_path / "out"
    f10 = {"forces_weight": 10.0, "energy_weight": 1.0}
    records = {"transfer_rescale_N0020_s0": ("transfer_rescale", {}),
               "transfer_rescale_N0020_s2": ("transfer_rescale", f10), "transfer_N0020_s0": ("transfer", {})}
    for name, (strategy, flags) in records.items():
        lc.write_json(out / "records" / f"{name}.json",
                      dict(_record(strategy, 20, 0, 12.0), name=name, loss_flags=flags))
    (out / "models").mkdir()
    (out / "models" / "transfer_rescale_N0020_s0.model").write_bytes(b"weights-of-100:1")
    lc.write_json(out / "md" / "transfer_rescale_N0020_s0.json", {"held": [300, 900]})
    selection = out / "loss_selection" / "transfer_rescale.json"
    old_path = str(out / "records" / "transfer_rescale_N0020_s0.json")
    lc.write_json(selection, {"tries": {"f100_e1": {"record": old_path}}})
    sweep = SimpleNamespace(out=out, say=lambda *_: None,
                            config={"loss_grid": {"options": {"f100_e1": {}, "f10_e1": f10}}})
    losses = {"transfer_rescale": f10, "transfer": None}
    Sweep._supersede_other_losses(sweep, losses)

    kept = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert kept == ["transfer_N0020_s0", "transfer_rescale_N0020_s2"]
    aside = out / "superseded" / "f100_e1"
    moved = json.loads((aside / "records" / "transfer_rescale_N0020_s0.json").read_text())
    assert moved["loss_flags"] == {} and moved["test"]["force_mae_meV_per_A"] == 12.0
    assert "f100_e1" in moved["superseded"]
    assert (aside / "models" / "transfer_rescale_N0020_s0.model").read_bytes() == b"weights-of-100:1"
    assert json.loads((aside / "md" / "transfer_rescale_N0020_s0.json").read_text()) == {"held": [300, 900]}
    assert not (out / "models" / "transfer_rescale_N0020_s0.model").exists()
    pointer = json.loads(selection.read_text())["tries"]["f100_e1"]["record"]
    assert Path(pointer) == aside / "records" / "transfer_rescale_N0020_s0.json"

    Sweep._supersede_other_losses(sweep, losses)  # nothing left to move: unchanged
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == kept
    lc.write_json(out / "records" / "transfer_rescale_N0020_s0.json",
                  dict(_record("transfer_rescale", 20, 0, 9.0), name="transfer_rescale_N0020_s0", loss_flags={}))
    with pytest.raises(UserInputError, match="superseded once per setting"):
        Sweep._supersede_other_losses(sweep, losses)


def test_progress_line_reads_the_best_validation_epoch_from_maces_log(tmp_path):
    """The progress of a run in training comes from MACE's results log: the last validated epoch,
    the lowest-loss epoch so far (not the last) and that epoch's force RMSE in meV/Å."""
    from mace_transfer.studies.starts import progress_line

    rows = [{"mode": "eval", "epoch": None, "loss": 0.9, "rmse_f": 0.3},
            {"mode": "opt", "epoch": 0, "loss": 0.8, "time": 1.0}]
    rows += [{"mode": "eval", "epoch": e, "loss": loss, "rmse_f": f, "mae_f": f}
             for e, loss, f in ((0, 0.5, 0.05), (1, 0.3, 0.0234), (2, 0.4, 0.04))]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run_run-0_train.txt").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"mode\": ")
    assert progress_line("run", tmp_path / "results", 125.0) == \
        "run: epoch 2, best validation at epoch 1 (force RMSE 23.4 meV/Å), 2m05s in this chunk"
    assert progress_line("run", tmp_path / "empty", 1.0) is None


def test_a_long_run_says_its_progress_while_it_trains(lc, tmp_path, monkeypatch, capsys):
    """With progress_every_s set, a run in training prints progress lines to the study's console
    (not into MACE's console.log), each naming a best epoch whose RMSE is the one MACE logged."""
    monkeypatch.chdir(tmp_path)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 6, seed=3)
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 2, seed=4)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    config = {"out": "res", "work": "work", "element_map": "Si:Ge", "threads": 1, "progress_every_s": 0.02,
              "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"}, "n_valid": 2,
              "valid_seed": 0, "target_E0s": "{32: 0.0}", "sizes": [4], "seeds": [0], "mace": mace,
              "budget": {"mode": "converged", "patience_steps": 4, "min_patience_epochs": 2, "max_steps": 40},
              "strategies": {"scratch": {"lr": 0.01}}}
    # the console script's progress callable (a lambda around print), not print itself
    sweep = lc.Sweep(config, progress=lambda message: print(message, flush=True))
    record = sweep.train_run("scratch", 4, 0, tmp_path / "res" / "records" / "scratch_N0004_s0.json")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("scratch_N0004_s0: epoch ")]
    assert lines, "no progress line reached the console"
    rmse_at = dict(zip(record["curve"]["epoch"], record["curve"]["valid_rmse_f_meV_A"]))
    for line in lines:
        best = int(line.split("best validation at epoch ")[1].split(" ")[0])
        assert f"(force RMSE {rmse_at[best]:.1f} meV/Å)" in line
    assert "best validation at epoch" not in (tmp_path / "work" / "scratch_N0004_s0" / "console.log").read_text()


def test_a_chunk_on_device_auto_is_recorded_as_what_it_ran_on():
    """Records name each chunk's device: ``auto`` resolves as the sweep resolves it (CUDA's card name
    when torch sees a GPU, else cpu), never the word ``auto``."""
    import torch

    from mace_transfer.studies.starts import torch_device_name

    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    assert torch_device_name("auto") == expected != "auto"
    assert torch_device_name("cpu") == "cpu"


def test_two_sweeps_share_a_study_s_runs_without_training_one_twice(lc, tmp_path, capsys):
    """A run whose lock another process holds is left to it (not trained a second time into the same
    folder); once that process has written its record, a later sweep does not train it again."""
    from mace_transfer.studies import parking

    sweep = lc.Sweep(_sweep_config_with_extra_file(tmp_path))
    trained = []

    def fake_train(strategy, n_train, seed, record_path, **kwargs):
        trained.append(record_path.stem)
        record = _record(strategy, n_train, seed, 10.0)
        lc.write_json(record_path, record)
        return record

    sweep.train_run = fake_train
    held = parking.claim(sweep.work, "train_scratch_N0004_s0")  # "another process" trains N = 4
    assert held is not None and parking.claim(sweep.work, "train_scratch_N0004_s0") is None
    assert sweep.sweep([4, 5], [0], ["scratch"]) == 1
    assert trained == ["scratch_N0005_s0"]
    assert "scratch_N0004_s0: another process is training it; skipped" in capsys.readouterr().out
    fake_train("scratch", 4, 0, sweep.out / lc.RECORDS / "scratch_N0004_s0.json")  # ... and finishes it
    held.close()
    trained.clear()
    assert sweep.sweep([4, 5], [0], ["scratch"]) == 0 and trained == []


def test_a_second_process_waits_for_the_first_s_lr_choice_and_trains_no_try_again(lc, tmp_path, capsys):
    """Two processes start one study: the second waits on the strategy's selection lock while the first
    trains the lr tries, then reads them (the lower validation loss wins) instead of training them again."""
    import threading
    import time

    from mace_transfer.studies import parking

    config = _sweep_config_with_extra_file(tmp_path)
    config["lr_grid"] = {"scratch": [0.01, 0.003], "select": {"n": 5, "seed": 0}}
    sweep = lc.Sweep(config)
    trained = []

    def fake_train(strategy, n_train, seed, record_path, lr=None, **kwargs):
        trained.append(lr)
        record = _record(strategy, n_train, seed, 10.0)
        record["curve"]["valid_loss"] = [1.0, 0.5 if lr == 0.003 else 0.7]  # 0.003 fits validation better
        lc.write_json(record_path, record)
        return record

    sweep.train_run = fake_train
    first = parking.claim(sweep.work, "select_scratch")  # the first process is choosing
    result = {}
    second = threading.Thread(target=lambda: result.update(choice=sweep.choices("scratch")))
    second.start()
    time.sleep(0.5)
    assert second.is_alive() and not trained  # the second waits, trains nothing meanwhile
    assert sweep.lr_choice("scratch") == 0.003 and sorted(trained) == [0.003, 0.01]  # the first's tries
    first.close()
    second.join(30)
    assert result["choice"] == (None, 0.003, None) and sorted(trained) == [0.003, 0.01]  # read, not retrained
    assert "scratch: waiting for another process's choices on validation" in capsys.readouterr().out


def test_stage_two_continues_each_finished_run_from_its_own_model(lc, tmp_path, monkeypatch, capsys):
    """A ``stage_two`` study starts every run from the finished study's model of the same (strategy, N,
    seed): MACE's validation before any stage-two step is that model's (the weights and scale/shift are
    loaded, not re-initialised); the record names the run it continued; other structures are refused."""
    from mace_transfer.studies.data import read_frames
    from mace_transfer.studies.starts import model_errors

    monkeypatch.chdir(tmp_path)
    write_sw_si_dataset(tmp_path / "si.xyz", n=4)
    write_sw_ge_dataset(tmp_path / "ge.xyz", 7, seed=3, stress=True)
    write_sw_ge_dataset(tmp_path / "ge_test.xyz", 2, seed=4, stress=True)
    mace = {k: v for k, v in TINY_MACE.items() if k not in ("max_num_epochs", "seed")}
    one = {"out": "one", "work": "work_one", "element_map": "Si:Ge", "threads": 1,
           "data": {"source": "si.xyz", "target": "ge.xyz", "test": "ge_test.xyz"},
           "n_valid": 3, "valid_seed": 0, "target_E0s": "{32: -4.0}", "sizes": [4], "seeds": [0],
           "mace": mace, "budget": {"epochs": 2, "patience": 5}, "strategies": {"scratch": {"lr": 0.01}},
           "source": {"n_valid": 2, "mace": {"E0s": "{14: -4.0}", "lr": 0.01, "max_num_epochs": 1}}}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one))
    assert run_cli(["--config", "one.yaml", "--no-zero-shot"]) == 0
    (first,) = lc.load_runs(tmp_path / "one")
    (tmp_path / "one" / "models").mkdir()
    (tmp_path / "one" / "models" / "scratch_N0004_s0.model").write_bytes(Path(first["model"]).read_bytes())

    two = {"base": "one.yaml", "out": "two", "work": "work_two",
           "budget": {"mode": "converged", "patience_steps": 2, "min_patience_epochs": 2, "max_steps": 6},
           "stage_two": {"from": "one", "lr": 0.001,
                         "mace": {"loss": "stress", "energy_weight": 100.0, "forces_weight": 10.0,
                                  "stress_weight": 100.0}}}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two))
    assert run_cli(["--config", "two.yaml"]) == 0
    (second,) = lc.load_runs(tmp_path / "two")
    assert second["stage_one"]["record"] == str(Path("one") / "records" / "scratch_N0004_s0.json")
    assert second["stage_one"]["test"] == first["test"] and second["train_indices"] == first["train_indices"]
    assert second["lr"] == 0.001 and second["stage_two"]["mace"]["loss"] == "stress"
    valid = read_frames(tmp_path / "ge.xyz")
    valid = [valid[i] for i in lc.split_target(len(valid), 3, 0)[0]]
    before = model_errors(tmp_path / "one" / "models" / "scratch_N0004_s0.model", valid)
    assert second["curve"]["initial_valid_rmse_f_meV_A"] == pytest.approx(before["force_rmse_meV_per_A"], rel=1e-6)
    assert second["test"] != first["test"]  # it trained

    (tmp_path / "three.yaml").write_text(yaml.safe_dump(dict(two, out="three", valid_seed=5)))
    with pytest.raises(UserInputError, match="other structures"):
        run_cli(["--config", "three.yaml"])
    (tmp_path / "four.yaml").write_text(yaml.safe_dump(dict(two, out="four", lr_grid={"scratch": [0.01]})))
    with pytest.raises(UserInputError, match="lr_grid: null"):
        lc.load_config(tmp_path / "four.yaml")
