"""Bad input, tried as a new user would: each is answered by one `error:` line and exit code 2, and
nothing is written on refusal (issue 19). One row per mistake, every console script."""

import pytest
import torch
import yaml
from ase.build import bulk
from ase.io import write
from conftest import make_mace_model, write_sw_si_dataset

from mace_transfer.cli import _eval, _guarded, _label, _learning_curve, _remap, _train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A Si model, SW-Si and Ge training files, a structure to label, a broken YAML."""
    root = tmp_path_factory.mktemp("inputs")
    torch.save(make_mace_model([14]), root / "si.model")
    write_sw_si_dataset(root / "si.xyz", n=4)
    ge = [bulk("Ge", "diamond", a=5.65, cubic=True) for _ in range(3)]
    for i, atoms in enumerate(ge):
        atoms.rattle(0.05, seed=i)
        atoms.info["REF_energy"] = -4.0 * len(atoms)
        atoms.arrays["REF_forces"] = 0.1 * atoms.positions
    write(root / "ge.xyz", ge, format="extxyz")
    write(root / "one.xyz", [bulk("Si", "diamond", a=5.43, cubic=True)], format="extxyz")
    (root / "broken.yaml").write_text("stages: [unclosed\n")
    (root / "lc.yaml").write_text(yaml.safe_dump({"out": "x"}))
    (root / "exists.model").write_bytes(b"")
    return root


def _train_argv(root, out, *extra):
    return ["--name", "x", "--train_file", str(root / "ge.xyz"), "--E0s", "{32: -4.0}",
            "--model_dir", str(out), "--checkpoints_dir", str(out / "c"), "--results_dir", str(out / "r"),
            "--log_dir", str(out / "l"), "--device", "cpu", *extra]


SOURCE = ("--source_model", "{root}/si.model", "--element_map", "Si:Ge")

#: (console script, argv with {root} and {out}, a piece of the one-line answer)
CASES = [
    (_train, ["--source_model", "{root}/missing.model", "--element_map", "Si:Ge"], "not found"),
    (_train, ["--element_map", "Si:Ge"], "needs --source_model"),
    (_train, ["--source_model", "{root}/si.model"], "needs --element_map"),
    (_train, [*SOURCE, "--foundation_model", "{root}/si.model"], "not both"),
    (_train, ["--source_model", "{root}/si.model", "--element_map", "Si-Ge"], "Si-Ge"),
    (_train, ["--source_model", "{root}/si.model", "--element_map", "Si:Xx"], "Xx"),
    (_train, ["--source_model", "{root}/si.model", "--element_map", "C:Ge"], "C"),
    (_train, [*SOURCE, "--length_scale", "-1"], "must be positive"),
    (_train, [*SOURCE, "--energy_scale", "big"], "positive number or 'auto'"),
    (_train, [*SOURCE, "--freeze_blocks", "interactions.7"], "interactions.7"),
    (_train, [*SOURCE, "--block_lr_factors", "{not json"], "block_lr_factors"),
    (_train, [*SOURCE, "--E0s", "{32: "], "--E0s is not a dictionary"),
    (_train, ["--forces_key", "REF_force"], "--forces_key REF_force names nothing"),
    (_train, ["--energy_key", "DFT_energy"], "--energy_key DFT_energy names nothing"),
    (_train, ["--valid_file", "{root}/missing_valid.xyz"], "--valid_file"),
    (_train, ["--test_file", "{root}/missing_test.xyz"], "--test_file"),
    (_train, ["--early_stop_patience", "0"], "must be >= 1"),
    (_train, ["--early_stop_patience", "4", "--swa"], "stage two would never start"),
    (_train, ["--pipeline", "{root}/missing.yaml"], "not found"),
    (_train, ["--pipeline", "{root}/broken.yaml"], "not valid YAML"),
    (_remap, ["{root}/si.model", "{root}/no_such_folder/ge.model", "--element_map", "Si:Ge"], "does not exist"),
    (_remap, ["{root}/missing.model", "{out}/ge.model", "--element_map", "Si:Ge"], "does not exist"),
    (_remap, ["{root}/si.model", "{root}/exists.model", "--element_map", "Si:Ge"], "--overwrite"),
    (_remap, ["{root}/si.model", "{out}/ge.model", "--element_map", "Si:Ge", "--E0s", "{Ge: 1}"], "not JSON"),
    (_label, ["--in", "{root}/one.xyz", "--out", "{out}/o.xyz", "--settings", "{root}/cp2k_elsewhere.yaml"],
     "settings file not found"),
    (_label, ["--in", "{root}/missing.xyz", "--out", "{out}/o.xyz"], "missing.xyz"),
    (_label, ["--in", "{root}/one.xyz", "--out", "{out}/o.xyz", "--engine", "vasp"], "vasp"),
    (_eval, ["{root}/missing.model", "--test", "{root}/ge.xyz", "--out", "{out}/ev"], "missing.model"),
    (_learning_curve, ["--config", "{root}/missing.yaml"], "not found"),
    (_learning_curve, ["--config", "{root}/lc.yaml"], "missing"),
]


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command, argv, message", CASES,
                         ids=[f"{c.__name__[1:]}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, capsys, command, argv, message):
    out = tmp_path / "out"
    out.mkdir()
    args = [a.replace("{root}", str(files)).replace("{out}", str(out)) for a in argv]
    if command is _train:
        args = _train_argv(files, out, *args)
    before = _snapshot(files)
    assert _guarded(command, args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert _snapshot(files) == before
    assert _snapshot(out) == []


def test_labeller_without_cp2k_marks_no_structure_failed(files, tmp_path, capsys):
    """No CP2K on the machine is nobody's structure's fault: one line, no failed-structure record."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"command": "no-such-cp2k-launcher -np {nprocs} cp2k.psmp"}))
    args = ["--in", str(files / "one.xyz"), "--out", str(tmp_path / "o.xyz"), "--settings", str(settings)]
    assert _guarded(_label, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot run CP2K") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.yaml"]


def test_every_flag_answers_to_both_spellings(files, tmp_path, capsys):
    """MACE's underscore is the one spelling shown; the hyphenated form of release 0.1 still works."""
    from mace_transfer.cli import FlagParser

    parser = FlagParser(prog="x")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--length_scale", type=float)
    assert parser.parse_args(["--no_progress", "--length-scale", "2"]).no_progress is True
    assert parser.parse_args(["--no-progress", "--length_scale", "2"]).length_scale == 2.0
    assert "--no_progress" in parser.format_help() and "--length_scale" in parser.format_help()
    for spelling in ("--length-scale", "--length_scale"):  # the same refusal through a real script
        args = ["--in", str(files / "one.xyz"), "--out", str(tmp_path / "o.xyz"), spelling, "0"]
        assert _guarded(_label, args) == 2
        assert "length" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--multiheads_finetuning", "True", "--pt_train_file", "{root}/si.xyz"], "use --remap_mode extend"),
    (["--freeze", "1", "--freeze_blocks", "embedding", "--unfreeze_after", "1"], "use --freeze_blocks"),
    (["--freeze", "2", "--block_lr_factors", '{"readouts": 0.5}'], "use --freeze_blocks"),
])
def test_combinations_that_cannot_work_are_refused(files, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    args = _train_argv(files, out, *SOURCE, *[a.replace("{root}", str(files)) for a in extra])
    args = [a.replace("{root}", str(files)) for a in args]
    assert _guarded(_train, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_a_default_rescale_that_cannot_be_estimated_is_switched_off_not_refused(files, tmp_path, capsys):
    """These Ge labels (forces 0.1 x positions) give no positive energy scale: asked for explicitly,
    that is one error line; chosen by default, the plain remap goes on and the log says why."""
    from mace_transfer.transfer import train

    out = tmp_path / "out"
    explicit = _train_argv(files, out, *SOURCE, "--energy_scale", "auto")
    explicit = [a.replace("{root}", str(files)) for a in explicit]
    assert _guarded(_train, explicit) == 2
    assert "energy scale" in capsys.readouterr().err
    args = train.parse_args([a.replace("{root}", str(files)) for a in _train_argv(files, out, *SOURCE)])
    train.choose_defaults(args)
    remapped = train.prepare_source_model(args)
    assert "corresponding-states rescale off" in capsys.readouterr().out
    assert float(remapped.r_max) == pytest.approx(float(torch.load(files / "si.model", weights_only=False).r_max))
