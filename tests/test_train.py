"""mace_transfer_train is a drop-in superset of mace_run_train."""

import numpy as np
import pytest
import torch
from ase.io import read, write
from conftest import energy_forces, make_mace_model, rattled_diamond, write_sw_si_dataset

from mace_transfer import UserInputError
from mace_transfer.transfer import early_stop, train
from mace_transfer.cli import _guarded, _train

TINY = [
    "--num_channels", "8", "--max_L", "0", "--r_max", "4.0", "--num_radial_basis", "6",
    "--correlation", "2", "--batch_size", "2", "--valid_batch_size", "2",
    "--max_num_epochs", "2", "--device", "cpu", "--default_dtype", "float64", "--seed", "1",
    "--valid_fraction", "0.34", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
]


def _dirs(tmp_path, tag):
    d = tmp_path / tag
    return [
        "--name", tag, "--model_dir", str(d), "--checkpoints_dir", str(d / "ckpt"),
        "--results_dir", str(d / "res"), "--log_dir", str(d / "log"),
    ]


def _state(path):
    model = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def si_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "si.xyz"
    write_sw_si_dataset(path, n=6)
    return path


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_without_our_flags_trains_exactly_what_mace_trains(tmp_path, si_data):
    from mace.cli.run_train import run as mace_run
    from mace.tools import build_default_arg_parser

    common = ["--train_file", str(si_data), "--E0s", "average"] + TINY
    mace_run(build_default_arg_parser().parse_args(common + _dirs(tmp_path, "mace")))
    assert train.main(common + _dirs(tmp_path, "ours")) == 0
    ref = _state(tmp_path / "mace" / "mace.model")
    ours = _state(tmp_path / "ours" / "ours.model")
    assert ref.keys() == ours.keys()
    for key in ref:
        np.testing.assert_allclose(ours[key].numpy(), ref[key].numpy(), rtol=0, atol=1e-12, err_msg=key)
    # and the output is an ordinary MACE model for MACECalculator
    from mace.calculators import MACECalculator

    atoms = rattled_diamond("Si")
    atoms.calc = MACECalculator(model_paths=str(tmp_path / "ours" / "ours.model"), device="cpu", default_dtype="float64")
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (8, 3)


def test_source_model_remap_starts_training_from_remapped_weights(tmp_path, si_data):
    """lr = 0: MACE's foundation path must hand back our remapped model unchanged (Ge, our E0);
    the rescale (on by default) is off here, so the Ge model is the Si model read as Ge."""
    src = make_mace_model([14], r_max=4.0)
    src_path = tmp_path / "si.model"
    torch.save(src, src_path)
    frames = read(si_data, ":")
    for atoms in frames:
        atoms.numbers = [32] * len(atoms)
    ge_data = tmp_path / "ge.xyz"
    write(ge_data, frames, format="extxyz")
    argv = (
        ["--train_file", str(ge_data), "--source_model", str(src_path), "--element_map", "Si:Ge",
         "--E0s", "{32: -3.5}", "--lr", "0.0", "--refit_shift", "False", "--corresponding_states", "False"]
        + TINY
        + _dirs(tmp_path, "ge")
    )
    assert train.main(argv) == 0
    out = torch.load(tmp_path / "ge" / "ge.model", map_location="cpu", weights_only=False)
    assert [int(z) for z in out.atomic_numbers] == [32]
    assert float(out.atomic_energies_fn.atomic_energies.reshape(-1)[0]) == pytest.approx(-3.5)
    atoms = rattled_diamond("Si")
    e_src, f_src = energy_forces(src, atoms)
    ge_atoms = atoms.copy()
    ge_atoms.numbers = [32] * len(atoms)
    e_out, f_out = energy_forces(out.double(), ge_atoms)
    e0_src = float(src.atomic_energies_fn.atomic_energies.reshape(-1)[0])
    assert e_out - 8 * -3.5 == pytest.approx(e_src - 8 * e0_src, abs=1e-6)
    np.testing.assert_allclose(f_out, f_src, atol=1e-8)


def test_bad_input_is_one_line_exit_2(tmp_path, capsys, si_data):
    base = ["--name", "x", "--train_file", str(si_data)] + _dirs(tmp_path, "x")[2:]
    code = _guarded(_train, base + ["--source_model", str(tmp_path / "nope.model"), "--element_map", "Si:Ge"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and "\n" not in err
    not_model = tmp_path / "junk.model"
    not_model.write_bytes(b"\x00junk")
    assert _guarded(_train, base + ["--source_model", str(not_model), "--element_map", "Si:Ge"]) == 2
    torch.save(make_mace_model([14]), tmp_path / "si.model")
    for bad_map in ("Si:Xx", "Si:Ge,Si:Sn", "C:Ge"):
        assert _guarded(_train, base + ["--source_model", str(tmp_path / "si.model"), "--element_map", bad_map]) == 2
    capsys.readouterr()
    code = _guarded(_train, base + ["--source_model", str(tmp_path / "si.model"), "--element_map", "Si:Ge",
                                    "--freeze_blocks", "interactions.7"])
    assert code == 2
    assert "interactions.7" in capsys.readouterr().err
    # Si training data for a Ge model: named, one line
    code = _guarded(_train, base + ["--source_model", str(tmp_path / "si.model"), "--element_map", "Si:Ge"])
    assert code == 2
    assert "training data has Si" in capsys.readouterr().err
    with pytest.raises(UserInputError):
        train._parse_scale("-1", "--length_scale")


# --------------------------------------------------------------------------- early stop (issue 21)
def test_should_stop_counts_epochs_since_the_first_lowest_loss():
    history = [(0, 5.0), (1, 3.0), (2, 3.0), (3, 4.0)]
    assert not early_stop.should_stop(history, patience=3)  # best is epoch 1 (first of the tie): 2 epochs
    assert early_stop.should_stop(history + [(4, 3.5)], patience=3)
    assert not early_stop.should_stop(history + [(4, 3.5)], patience=3, min_epochs=5)
    assert not early_stop.should_stop(history + [(4, 2.9)], patience=1)  # improved at the last epoch
    assert not early_stop.should_stop([], patience=1)


def test_min_delta_counts_only_relative_improvements_and_zero_is_the_plain_rule():
    """A loss creeping down by 0.04 % an epoch: any decrease is an improvement at min_delta 0; at 0.1 %
    only the epoch that is 0.1 % below the last counted one (epoch 3: 0.12 % below epoch 0)."""
    creep = [(e, 1.0 - 0.0004 * e) for e in range(4)]
    assert not early_stop.should_stop(creep[:3], patience=2)
    assert early_stop.should_stop(creep[:3], patience=2, min_delta=0.001)  # epoch 0 is the last counted: 2 >= 2
    assert not early_stop.should_stop(creep, patience=2, min_delta=0.001)  # 0.9988 < 0.999: epoch 3 counts
    assert early_stop.should_stop(creep + [(4, 0.9985), (5, 0.9982)], patience=2, min_delta=0.001)
    dropped = creep + [(6, 0.5), (7, 0.499755859375), (8, 0.498046875)]  # -0.05 %, then -0.39 % after the drop
    assert not early_stop.should_stop(dropped, patience=2, min_delta=0.001)  # 0.498 < 0.5 x 0.999: epoch 8 counts
    assert early_stop.should_stop(dropped[:-1] + [(8, 0.4996)], patience=2, min_delta=0.001)  # epoch 6 last counted
    assert not early_stop.should_stop(dropped[:-1] + [(8, 0.4996)], patience=2)  # without min_delta: epoch 8 counts
    for history in (creep, dropped, [(0, 5.0), (1, 3.0), (2, 3.0), (3, 4.0), (4, 3.5)]):
        for patience in (1, 2, 3, 4):  # min_delta 0 is "epochs since the first lowest loss", as before
            best = min(history, key=lambda row: (row[1], row[0]))[0]
            assert early_stop.should_stop(history, patience, min_delta=0.0) == (history[-1][0] - best >= patience)


def test_epoch_limit_is_what_maces_while_loop_compares_against(tmp_path):
    log = tmp_path / "x_run-1_train.txt"
    limit = early_stop.EpochLimit(10, log, patience=2)
    assert 0 < limit and 9 < limit and not (10 < limit)  # no log yet: only the maximum counts
    rows = [{"mode": "eval", "epoch": None, "loss": 9.0}] + [
        {"mode": "eval", "epoch": e, "loss": loss} for e, loss in enumerate([4.0, 3.0, 3.5, 3.1])]
    log.write_text("\n".join(__import__("json").dumps(r) for r in rows) + "\n{half a line")
    assert not (4 < limit) and limit.stopped_at == 4
    assert int(limit) == 10


def test_early_stop_ends_a_run_whose_validation_loss_never_improves(tmp_path, si_data, capsys):
    """lr 0: every epoch's validation loss equals epoch 0's, so the run stops after `patience` more
    epochs (not at max_num_epochs) and MACE still writes its model; MACE's own loop is restored."""
    from mace import tools

    original = tools.train
    argv = ["--train_file", str(si_data), "--E0s", "average"] + TINY + _dirs(tmp_path, "es") + [
        "--max_num_epochs", "40", "--lr", "0.0", "--early_stop_patience", "3"]
    assert train.main(argv) == 0
    rows = [r for r in early_stop.iter_mace_results(tmp_path / "es" / "res")
            if r.get("mode") == "eval" and r.get("epoch") is not None]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert len({r["loss"] for r in rows}) == 1
    assert "early stop before epoch 4" in capsys.readouterr().out
    assert (tmp_path / "es" / "es.model").is_file()
    assert tools.train is original


def test_early_stop_reads_the_results_log_under_work_dir(tmp_path, si_data, capsys):
    """Only --work_dir given (MACE puts its results log in <work_dir>/results): the early stop must read
    that log, not ./results; before this was fixed such a run never stopped (a 300-epoch Si source ran
    225 epochs past its best)."""
    work = tmp_path / "wd"
    argv = ["--train_file", str(si_data), "--E0s", "average", "--name", "wd", "--work_dir", str(work)] + TINY + [
        "--max_num_epochs", "40", "--lr", "0.0", "--early_stop_patience", "2"]
    assert train.main(argv) == 0
    rows = [r for r in early_stop.iter_mace_results(work / "results")
            if r.get("mode") == "eval" and r.get("epoch") is not None]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert "early stop before epoch 3" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--early_stop_patience", "0"], "must be >= 1"),
    (["--early_stop_patience", "5", "--swa"], "stage two would never start"),
    (["--early_stop_patience", "5", "--early_stop_min_delta", "1.5"], "is a relative improvement in"),
])
def test_early_stop_refusals_are_one_line(tmp_path, si_data, extra, message):
    argv = ["--train_file", str(si_data), "--E0s", "average"] + TINY + _dirs(tmp_path, "bad") + extra
    with pytest.raises(UserInputError, match=message):
        train.main(argv)
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- defaults for a transferred start
@pytest.mark.parametrize("extra, lr, scales", [
    (["--source_model", "si.model", "--element_map", "Si:Ge"], 0.002, ("auto", "auto")),
    (["--source_model", "si.model", "--element_map", "Si:Ge", "--lr", "0.01"], 0.01, ("auto", "auto")),
    (["--source_model", "si.model", "--element_map", "Si:Ge", "--corresponding_states", "False"], 0.002,
     ("1.0", "1.0")),
    (["--source_model", "si.model", "--element_map", "Si:Ge", "--length_scale", "1.05"], 0.002, ("1.05", "1.0")),
    (["--source_model", "si.model", "--element_map", "Si:Ge", "--remap_mode", "extend"], 0.002, ("1.0", "1.0")),
    ([], 0.01, ("1.0", "1.0")),  # no transfer: MACE's own defaults, untouched
])
def test_defaults_protect_a_transferred_start(extra, lr, scales):
    args = train.parse_args(["--name", "x", "--train_file", "t.xyz"] + extra)
    said = train.choose_defaults(args)
    assert args.lr == lr and (args.length_scale, args.energy_scale) == scales
    assert any("--lr not given" in line for line in said) == ("--lr" not in extra and "--source_model" in extra)


def test_lr_named_in_a_config_file_counts_as_given(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.0005\nsource_model: si.model\nelement_map: Si:Ge\n")
    args = train.parse_args(["--config", str(config), "--name", "x", "--train_file", "t.xyz"])
    train.choose_defaults(args)
    assert args.lr == 0.0005 and args.source_model == "si.model"


def test_a_resumed_run_keeps_its_best_epoch_not_its_last_chunks(tmp_path, monkeypatch):
    """A process resumed from a checkpoint starts MACE's loop with ``lowest_loss = inf``: left alone it
    saves its first epochs as "best" (0.8, then 0.55 here) although the earlier chunk validated lower
    (0.5 at epoch 1, the epoch it resumed from and trains again), and MACE's final reload of the highest
    epoch would keep them. Inside the seam only validations below every earlier one of the log are saved."""
    import argparse
    import json

    from mace import tools

    from mace_transfer.transfer.early_stop import early_stop_seam

    log = tmp_path / "results" / "run_run-0_train.txt"
    log.parent.mkdir()
    earlier_chunk = [(0, 1.0), (1, 0.5), (2, 0.6), (3, 0.7)]
    log.write_text("".join(json.dumps({"mode": "eval", "epoch": e, "loss": l}) + "\n" for e, l in earlier_chunk))

    class Handler:  # MACE's CheckpointHandler.save, as the training loop calls it
        saved = []

        def save(self, state, epochs, keep_last=False):
            self.saved.append(epochs)

    def resumed_chunk(**kw):  # MACE's loop resumed at epoch 1's checkpoint, retraining epoch 1 first:
        for epoch, loss in ((1, 0.8), (2, 0.55), (3, 0.45)):  # each validation is a new "lowest" to MACE
            with log.open("a") as handle:
                handle.write(json.dumps({"mode": "eval", "epoch": epoch, "loss": loss}) + "\n")
            kw["checkpoint_handler"].save(state=None, epochs=epoch)

    monkeypatch.setattr(tools, "train", resumed_chunk)
    args = argparse.Namespace(early_stop_patience=100, early_stop_min_epochs=0, early_stop_min_delta=0.0,
                              max_num_epochs=10, results_dir=str(log.parent), work_dir=str(tmp_path),
                              name="run", seed=0)
    handler = Handler()
    with early_stop_seam(args):
        tools.train(checkpoint_handler=handler, swa=None, max_num_epochs=10)
    assert handler.saved == [3]
    assert tools.train is resumed_chunk  # the seam restored MACE's function


def test_estimate_file_keeps_far_from_equilibrium_cells_out_of_k_and_the_shift(tmp_path, capsys):
    """Ge labels made by the Si model rescaled with s = 1.04, k = 0.9 (E0 -4 eV): estimated on those
    alone (--estimate_file), the remapped model reproduces the labels' forces and energies exactly;
    close-pair cells in --train_file, labelled with a 2x stiffer wall and +1 eV/atom, pull k and the
    shift away when they are part of the estimate (the default)."""
    from mace_transfer.transfer.remap import remap_elements

    src = make_mace_model([14], correlation=2)
    torch.save(src, tmp_path / "si.model")
    s_true, k_true = 1.04, 0.9
    truth = remap_elements(src, {"Si": "Ge"}, length_scale=s_true, energy_scale=k_true, atomic_energies={"Ge": -4.0})
    stiff = remap_elements(src, {"Si": "Ge"}, length_scale=s_true, energy_scale=2 * k_true, atomic_energies={"Ge": -4.0})

    def label(model, atoms, offset=0.0):
        energy, forces = energy_forces(model, atoms)
        atoms.info["REF_energy"] = energy + offset * len(atoms)
        atoms.arrays["REF_forces"] = forces
        return atoms

    near = [label(truth, rattled_diamond("Ge", a=5.43 * s_true, rattle=0.05, seed=i)) for i in range(3)]
    close = []
    for i in range(2):
        atoms = rattled_diamond("Ge", a=5.43 * s_true, rattle=0.05, seed=10 + i)
        atoms.positions[1] = atoms.positions[0] + 0.75 * (atoms.positions[1] - atoms.positions[0])
        close.append(label(stiff, atoms, offset=1.0))
    write(tmp_path / "train.xyz", near + close, format="extxyz")
    write(tmp_path / "estimate.xyz", near, format="extxyz")
    probe = rattled_diamond("Ge", a=5.43 * s_true, rattle=0.05, seed=99)
    e_true, f_true = energy_forces(truth, probe)

    def remapped(*extra):
        out = tmp_path / f"out{len(extra)}"
        args = train.parse_args(["--name", "x", "--train_file", str(tmp_path / "train.xyz"), "--E0s", "{32: -4.0}",
                                 "--model_dir", str(out), "--checkpoints_dir", str(out / "c"),
                                 "--results_dir", str(out / "r"), "--log_dir", str(out / "l"), "--device", "cpu",
                                 "--source_model", str(tmp_path / "si.model"), "--element_map", "Si:Ge",
                                 "--length_scale", str(s_true), "--energy_scale", "auto", *extra])
        train.choose_defaults(args)
        return energy_forces(train.prepare_source_model(args), probe)

    energy, forces = remapped("--estimate_file", str(tmp_path / "estimate.xyz"))
    np.testing.assert_allclose(forces, f_true, rtol=1e-4, atol=1e-6)
    assert energy == pytest.approx(e_true, abs=1e-4 * len(probe))
    energy, forces = remapped()
    assert np.abs(forces - f_true).max() > 0.05 * np.abs(f_true).max()  # k pulled towards the stiff wall
    assert abs(energy - e_true) > 0.1 * len(probe)  # the shift pulled by the +1 eV/atom cells
    capsys.readouterr()


def test_estimate_file_needs_a_source_and_must_exist(tmp_path, capsys):
    write_sw_si_dataset(tmp_path / "si.xyz", n=2)
    base = ["--name", "x", "--train_file", str(tmp_path / "si.xyz"), "--E0s", "{14: 0.0}", "--device", "cpu",
            "--model_dir", str(tmp_path / "o")]
    assert _guarded(_train, base + ["--estimate_file", str(tmp_path / "missing.xyz")]) == 2
    assert "--estimate_file" in capsys.readouterr().err
    assert _guarded(_train, base + ["--estimate_file", str(tmp_path / "si.xyz")]) == 2
    assert "needs --source_model" in capsys.readouterr().err


# --------------------------------------------------------------------------- console (issue 50)
def test_a_transferred_runs_console_has_each_line_once_and_no_debug(tmp_path, si_data):
    """A fresh ``mace_transfer_train`` process with ``--source_model``, 1 epoch: MACE's lines in MACE's
    format only (a root handler installed before MACE's set-up printed each again as ``INFO:root:...``
    and let MACE's DEBUG lines through), every ``mace-transfer:`` line once, and MACE's multihead
    warning replaced by one line saying the choice."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    torch.save(make_mace_model([14], r_max=4.0), tmp_path / "si.model")
    frames = read(si_data, ":")
    for atoms in frames:
        atoms.numbers = [32] * len(atoms)
    write(tmp_path / "ge.xyz", frames, format="extxyz")
    argv = ["--train_file", str(tmp_path / "ge.xyz"), "--source_model", str(tmp_path / "si.model"),
            "--element_map", "Si:Ge", "--E0s", "{32: -3.5}", "--plot", "False"] + TINY + _dirs(tmp_path, "ge")
    argv[argv.index("--max_num_epochs") + 1] = "1"
    run = subprocess.run([str(Path(sys.executable).parent / "mace_transfer_train")] + argv, capture_output=True,
                         text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = (run.stdout + run.stderr).splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (\w+): (.*)$")
    logged = [m.groups() for m in map(stamp.match, lines) if m]
    assert len(logged) > 30  # MACE's own log reached the console
    assert not [line for line in lines if "DEBUG" in line]
    assert not [line for line in lines if re.match(r"^(DEBUG|INFO|WARNING):root:", line)]
    messages = [msg for _, msg in logged if msg.strip() and not msg.startswith(("+", "|", "="))]
    assert sorted({m for m in messages if messages.count(m) > 1}) == []
    ours = [line for line in lines if line.startswith("mace-transfer:")]
    assert ours and len(ours) == len(set(ours))
    assert any("multihead fine-tuning off" in line for line in ours)
    assert not [line for line in lines if "not a Materials Project model" in line]


@pytest.mark.parametrize("value", ["mp", "omat", "matpes_pbe", "matpes_r2scan", "{tmp}", "{tmp}/train.h5",
                                   "{tmp}/replay.lmdb", "{tmp}/a.xyz,{tmp}/b.xyz", "['{tmp}/a.xyz']"])
def test_data_file_values_maces_reads_its_own_way_pass_through(tmp_path, si_data, value):
    """``--pt_train_file mp`` (MACE's replay keyword) was refused as a missing file: only a single extxyz path
    is checked before MACE; keywords, folders, .h5/LMDB sources and lists reach MACE untouched."""
    args = train.parse_args(["--name", "x", "--train_file", str(si_data), "--pt_train_file",
                             value.replace("{tmp}", str(tmp_path))])
    train.check_data_files(args)  # no refusal
    assert args.pt_train_file == value.replace("{tmp}", str(tmp_path))


def test_a_missing_extxyz_data_file_is_still_refused_in_one_line(tmp_path, si_data):
    args = train.parse_args(["--name", "x", "--train_file", str(si_data), "--pt_train_file", str(tmp_path / "si.xyz")])
    with pytest.raises(UserInputError, match=r"--pt_train_file .*si\.xyz does not exist"):
        train.check_data_files(args)


def test_a_console_handler_installed_before_the_run_prints_no_line_twice(tmp_path, si_data, capsys):
    """A pipeline that evaluated a model first (MACECalculator's module-level ``logging.warning`` installs a
    basicConfig handler on the root logger) then trains: MACE's lines appear once, and the handler is back
    after the run."""
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    for handler in before:
        root.removeHandler(handler)
    try:
        logging.basicConfig()
        installed = [h for h in root.handlers]
        argv = ["--train_file", str(si_data), "--E0s", "average"] + TINY + _dirs(tmp_path, "twice")
        argv[argv.index("--max_num_epochs") + 1] = "1"
        dtype = torch.get_default_dtype()
        assert train.main(argv) == 0
        torch.set_default_dtype(dtype)
        err = capsys.readouterr()
        assert "INFO:root:" not in err.err + err.out
        assert "Started training" in err.out
        assert root.handlers == installed
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)


def test_a_source_crystal_without_an_energy_minimum_is_one_line_not_a_traceback():
    """ASE's equation-of-state fit raises a bare ValueError('No minimum!') for a model whose crystal has no
    minimum within ±8 %: the estimate says so in one UserInputError (a default rescale is then switched off)."""
    from mace_transfer.transfer import estimate

    model = make_mace_model([14], r_max=4.0, seed=1)  # its Si energy falls monotonically over ±8 % in volume
    with pytest.raises(UserInputError, match="no energy minimum"):
        estimate._source_equilibrium_crystal(model, "Si")


def test_stage_two_continues_stage_one_s_model_with_the_energy_loss(tmp_path, capsys):
    """``--converged_stage_two energy``: a second MACE run from stage one's model. Its validation before any step is
    stage one's at the kept (lowest-loss) epoch, on the same cells: the weights, scale/shift and E0s carried
    over exactly; the flags it ran with are printed in full; stage one's file stays beside it."""
    import json

    from conftest import write_sw_ge_dataset

    torch.save(make_mace_model([14], r_max=4.0), tmp_path / "si.model")
    write_sw_ge_dataset(tmp_path / "ge.xyz", 6, seed=3, stress=True)
    argv = (["--train_file", str(tmp_path / "ge.xyz"), "--source_model", str(tmp_path / "si.model"),
             "--element_map", "Si:Ge", "--E0s", "{32: -4.0}", "--stress_key", "REF_stress",
             "--converged_stage_two", "energy", "--plot", "False"] + TINY + _dirs(tmp_path, "ge"))
    assert train.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    said = [line for line in printed if "stage two (--converged_stage_two energy)" in line]
    assert len(said) == 1 and "--loss stress --energy_weight 100.0 --forces_weight 10.0 --stress_weight 100.0 --lr 0.001" in said[0]
    one, two = tmp_path / "ge" / "ge.model", tmp_path / "ge" / "ge_stagetwo.model"
    assert one.is_file() and two.is_file()

    def evals(name):
        rows = [json.loads(line) for line in (tmp_path / "ge" / "res" / f"{name}_run-1_train.txt").read_text().splitlines()]
        return [r for r in rows if r["mode"] == "eval"]

    first = [r for r in evals("ge") if r["epoch"] is not None]
    kept = min(first, key=lambda r: r["loss"])  # MACE keeps the first lowest-loss epoch
    start = evals("ge_stagetwo")[0]
    assert start["epoch"] is None and start["rmse_f"] == pytest.approx(kept["rmse_f"], rel=1e-9)
    assert start["rmse_e_per_atom"] == pytest.approx(kept["rmse_e_per_atom"], rel=1e-9)
    verdict = [line for line in printed if "mace-transfer: stage two" in line]
    if (tmp_path / "ge" / "ge_stagetwo_rejected.model").is_file():  # it did not lower the validation energy MAE
        assert "not kept" in verdict[-1] and one.read_bytes() == two.read_bytes()
    else:
        assert " kept" in verdict[-1]
        assert any(not torch.equal(a, b) for a, b in zip(_state(one).values(), _state(two).values()))


def test_stage_two_is_kept_only_where_it_lowers_the_validation_energy_error(tmp_path):
    """The check reads MACE's results log: stage one = the first evaluation before any step (a resumed
    chunk's second one is its checkpoint's, not stage one's); stage two = the first lowest-loss epoch, an
    epoch retrained after a resume counted with its newest row."""
    import json

    from mace_transfer.transfer.stage_two import apply_validation_check, validation_energy_check

    def row(epoch, loss, e_meV, f_meV=20.0):
        return {"mode": "eval", "epoch": epoch, "loss": loss, "mae_e_per_atom": e_meV / 1000, "mae_f": f_meV / 1000}

    log = tmp_path / "x_run-0_train.txt"
    rows = [row(None, 3.0, 4.0), row(0, 5.0, 70.0), row(1, 2.0, 6.0), row(2, 2.0, 1.0), row(3, 2.5, 0.5),
            row(None, 2.0, 6.0), row(3, 1.9, 3.0), row(4, 1.9, 2.0)]  # resumed after epoch 3
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    check = validation_energy_check(log)
    assert check["kept_epoch"] == 3 and check["stage_one_valid_energy_mae_meV_per_atom"] == pytest.approx(4.0)
    assert check["stage_two_valid_energy_mae_meV_per_atom"] == pytest.approx(3.0) and check["keep_stage_two"]
    rows[6] = row(3, 1.9, 4.5)  # now worse than stage one: stage one's model takes the stage-two name
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "x.model").write_bytes(b"stage one")
    (tmp_path / "x_stagetwo.model").write_bytes(b"stage two")
    assert not apply_validation_check(tmp_path, "x", log)["keep_stage_two"]
    assert (tmp_path / "x_stagetwo.model").read_bytes() == b"stage one"
    assert (tmp_path / "x_stagetwo_rejected.model").read_bytes() == b"stage two"


def test_stage_two_without_stress_labels_drops_the_stress_term_and_a_bad_preset_is_refused(tmp_path, si_data):
    """No ``REF_stress`` in the training file: stage two runs MACE's weighted loss at the same energy:forces
    weights (no stress weight at all); an unknown preset is one line before any training."""
    from mace_transfer.transfer.stage_two import stage_two_args

    torch.save(make_mace_model([14], r_max=4.0), tmp_path / "si.model")
    frames = read(si_data, ":")
    for atoms in frames:
        atoms.numbers = [32] * len(atoms)
    write(tmp_path / "ge.xyz", frames, format="extxyz")
    argv = (["--train_file", str(tmp_path / "ge.xyz"), "--source_model", str(tmp_path / "si.model"),
             "--element_map", "Si:Ge", "--E0s", "{32: -4.0}", "--converged_stage_two", "energy"] + TINY + _dirs(tmp_path, "ge"))
    torch.save(make_mace_model([32], r_max=4.0), tmp_path / "stage_one.model")
    two, changed = stage_two_args(train.parse_args(argv), tmp_path / "stage_one.model")
    assert (changed["loss"], changed["energy_weight"], changed["forces_weight"]) == ("weighted", 100.0, 10.0)
    assert "stress_weight" not in changed and two.name == "ge_stagetwo" and two.source_model is None
    with pytest.raises(UserInputError, match="choose from off, energy"):
        train.main([a if a != "energy" else "forces" for a in argv])
    assert not (tmp_path / "ge" / "ge.model").exists()
