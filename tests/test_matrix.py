"""MACE training paths x a transferred start (``--source_model si.model --element_map Si:Ge``).

One row per MACE feature: LoRA, EMA, stage two (SWA), ``--restart_latest`` after SIGKILL,
``--E0s`` modes, ``--config`` YAML, ``--model MACE``, stress/universal losses, MACE's ``--freeze``,
``--unfreeze_after`` across a restart, multihead replay. Each test asserts what the flag must do,
not only that the run ends. Everything is a tiny float64 model on SW-Ge data; the runs that kill a
subprocess are ``slow`` (``-m slow``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mace  # noqa: F401  (before any torch.load of MACE objects)
import numpy as np
import pytest
import torch
import yaml
from ase.io import read
from conftest import (energy_forces, make_mace_model, rattled_diamond, write_sw_ge_dataset,
                      write_sw_si_dataset)

from mace_transfer.cli import _guarded, _train
from mace_transfer.transfer import early_stop, freeze, train

#: as tests/test_train.py's TINY (8 channels, L=0, float64, 2 epochs) + --plot False (MACE's end-of-run
#: plots cost time and fail on one head anyway); the Si source model's own architecture wins over
#: the size flags (MACE's foundation path)
TINY = [
    "--plot", "False", "--num_channels", "8", "--max_L", "0", "--r_max", "4.0", "--num_radial_basis", "6",
    "--correlation", "2", "--batch_size", "2", "--valid_batch_size", "2",
    "--max_num_epochs", "2", "--device", "cpu", "--default_dtype", "float64", "--seed", "1",
    "--valid_fraction", "0.34", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
]
GE, SI = 32, 14


# --------------------------------------------------------------------------- data and helpers

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """si.model (tiny random ScaleShiftMACE for Si, r_max 4 Å), ge.xyz (6 SW-Ge cells), si.xyz."""
    root = tmp_path_factory.mktemp("matrix_data")
    torch.save(make_mace_model([SI], r_max=4.0), root / "si.model")
    write_sw_ge_dataset(root / "ge.xyz", 6, seed=3, stress=True)
    write_sw_si_dataset(root / "si.xyz", n=6)
    return root


def _dirs(tmp_path, tag):
    d = tmp_path / tag
    return ["--name", tag, "--model_dir", str(d), "--checkpoints_dir", str(d / "ckpt"),
            "--results_dir", str(d / "res"), "--log_dir", str(d / "log")]


def _argv(data, tmp_path, tag, *extra):
    return (["--train_file", str(data / "ge.xyz"), "--source_model", str(data / "si.model"),
             "--element_map", "Si:Ge"] + TINY + _dirs(tmp_path, tag) + list(extra))


@contextlib.contextmanager
def _mace_process_state():
    """MACE's run() sets the default dtype and adds root-logger handlers: undo both afterwards."""
    dtype = torch.get_default_dtype()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        torch.set_default_dtype(dtype)


def _run(argv):
    with _mace_process_state():
        return train.main(argv)


def _guarded_run(argv):
    with _mace_process_state():
        return _guarded(_train, argv)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _out(tmp_path, tag):
    return _load(tmp_path / tag / f"{tag}.model")


def _start(tmp_path, tag):
    """The remapped source model our code wrote and handed to MACE as --foundation_model."""
    return _load(tmp_path / tag / f"{tag}_remapped_source.model")


def _zs(model):
    return [int(z) for z in model.atomic_numbers]


def _e0s(model):
    return model.atomic_energies_fn.atomic_energies.detach().reshape(-1).tolist()


def _params(model_or_state):
    state = model_or_state if isinstance(model_or_state, dict) else dict(model_or_state.named_parameters())
    return {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}


def _unchanged_blocks(before, after):
    """(blocks with every parameter bit-identical, blocks with at least one changed) over the
    parameter names both have."""
    same, changed = set(), set()
    for name in before.keys() & after.keys():
        (same if torch.equal(before[name], after[name]) else changed).add(freeze.param_block(name))
    return same - changed, changed


def _log(tmp_path, tag):
    return (tmp_path / tag / "log" / f"{tag}_run-1.log").read_text()


def _rows(tmp_path, tag):
    return list(early_stop.iter_mace_results_file(tmp_path / tag / "res" / f"{tag}_run-1_train.txt"))


def _mean_energy_error_per_atom(model, frames):
    """mean over ``frames`` of (E_ref - E_model) / N, eV/atom."""
    model = model.double()
    return float(np.mean([(a.info["REF_energy"] - energy_forces(model, a)[0]) / len(a) for a in frames]))


def _ge_atoms():
    return rattled_diamond("Ge", a=5.65)


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    """The plain transferred run (2 epochs, seed 1) other rows compare against."""
    tmp = tmp_path_factory.mktemp("baseline")
    assert _run(_argv(data, tmp, "plain")) == 0
    return tmp, _out(tmp, "plain")


# --------------------------------------------------------------------------- 1. LoRA
@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_lora_is_merged_at_save_and_the_merged_model_trained(data, tmp_path):
    assert _run(_argv(data, tmp_path, "lora", "--lora", "True", "--lora_rank", "2", "--lora_alpha", "2.0")) == 0
    assert "Injecting LoRA layers with rank=2 and alpha=2.0" in _log(tmp_path, "lora")
    out = _out(tmp_path, "lora")
    assert not [k for k in out.state_dict() if "lora" in k.lower()]
    assert not [type(m).__name__ for m in out.modules() if type(m).__name__.startswith("LoRA")]
    assert _zs(out) == [GE]
    assert all(p.requires_grad for p in out.parameters())
    from mace.calculators import MACECalculator

    atoms = _ge_atoms()
    atoms.calc = MACECalculator(model_paths=str(tmp_path / "lora" / "lora.model"), device="cpu",
                                default_dtype="float64")
    e_calc, f_calc = atoms.get_potential_energy(), atoms.get_forces()
    e_out, f_out = energy_forces(out.double(), _ge_atoms())
    assert e_calc == pytest.approx(e_out, abs=1e-8)
    np.testing.assert_allclose(f_calc, f_out, atol=1e-8)
    # training happened: the merged low-rank update moved the predictions off the remapped start
    e_start, f_start = energy_forces(_start(tmp_path, "lora").double(), _ge_atoms())
    assert np.abs(f_out - f_start).max() > 1e-7
    assert np.isfinite(e_out) and e_out != e_start


# --------------------------------------------------------------------------- 2. EMA
@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_ema_changes_the_saved_weights_against_the_same_seed_without_ema(data, tmp_path, baseline):
    assert _run(_argv(data, tmp_path, "ema", "--ema", "--ema_decay", "0.9")) == 0
    assert "Using Exponential Moving Average with decay: 0.9" in _log(tmp_path, "ema")
    out = _out(tmp_path, "ema")
    assert _zs(out) == [GE]
    ema, plain = _params(out.state_dict()), _params(baseline[1].state_dict())
    assert ema.keys() == plain.keys()
    diff = max(float((ema[k] - plain[k]).abs().max()) for k in ema if ema[k].numel())
    assert diff > 1e-6
    # the baseline and this run start from the same remapped weights
    start_ema, start_plain = _params(_start(tmp_path, "ema")), _params(_start(baseline[0], "plain"))
    assert _same(start_ema, start_plain)


# --------------------------------------------------------------------------- 3. stage two (SWA)
@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_swa_stage_two_starts_and_writes_a_valid_stagetwo_model(data, tmp_path):
    assert _run(_argv(data, tmp_path, "swa", "--swa", "--start_swa", "1", "--max_num_epochs", "3")) == 0
    log = _log(tmp_path, "swa")
    assert "Changing loss based on Stage Two Weights" in log
    assert "Loaded Stage two model from epoch 2" in log
    assert (tmp_path / "swa" / "ckpt" / "swa_run-1_epoch-2_swa.pt").is_file()
    stage_one, stage_two = _out(tmp_path, "swa"), _load(tmp_path / "swa" / "swa_stagetwo.model")
    assert _zs(stage_one) == _zs(stage_two) == [GE]
    e, f = energy_forces(stage_two.double(), _ge_atoms())
    assert np.isfinite(e) and np.isfinite(f).all()
    _, changed = _unchanged_blocks(_params(stage_one), _params(stage_two))
    assert changed  # stage two trained on after stage one's checkpoint


# --------------------------------------------------------------------------- 4/10. kill + restart
def _ckpt(ckpt_dir, name, epoch):
    return Path(ckpt_dir) / f"{name}_run-1_epoch-{epoch}.pt"


def _ckpt_epochs(ckpt_dir, name):
    return sorted(int(p.stem.rsplit("-", 1)[1]) for p in Path(ckpt_dir).glob(f"{name}_run-1_epoch-*.pt"))


def _train_until_checkpoint_then_sigkill(argv, ckpt_dir, name, epoch, log_path, timeout=240):
    """Run ``mace_transfer_train argv`` in a subprocess, SIGKILL it once the checkpoint of
    ``epoch`` is complete on disk, and return the latest checkpoint epoch left behind."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = "import sys; from mace_transfer.cli import train_main; train_main(sys.argv[1:])"
    target = _ckpt(ckpt_dir, name, epoch)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    tail = Path(log_path).read_text()[-2000:]
                    pytest.fail(f"training ended (rc {proc.returncode}) before epoch {epoch} was "
                                f"checkpointed and killed:\n{tail}")
                if target.is_file():
                    try:
                        torch.load(target, map_location="cpu", weights_only=False)
                        break
                    except Exception:  # noqa: BLE001 - still being written
                        pass
                assert time.monotonic() < deadline, f"no {target.name} after {timeout} s"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # MACE saves checkpoints in place (torch.save to the final name): a kill during a save leaves
    # a truncated newest file. Drop that one, as a user restarting would.
    for e in reversed(_ckpt_epochs(ckpt_dir, name)):
        try:
            torch.load(_ckpt(ckpt_dir, name, e), map_location="cpu", weights_only=False)
            return e
        except Exception:  # noqa: BLE001
            _ckpt(ckpt_dir, name, e).unlink()
    pytest.fail("no loadable checkpoint left after the kill")


#: enough epochs that the subprocess is still training when its epoch-1 checkpoint appears
KILL_EPOCHS = ["--max_num_epochs", "15", "--save_all_checkpoints", "--keep_checkpoints"]


@pytest.mark.slow
def test_restart_latest_after_sigkill_resumes_from_the_checkpoint(data, tmp_path):
    argv = _argv(data, tmp_path, "rs", *KILL_EPOCHS)
    ckpt_dir = tmp_path / "rs" / "ckpt"
    latest = _train_until_checkpoint_then_sigkill(argv, ckpt_dir, "rs", 1, tmp_path / "killed.out")
    assert latest >= 1 and not (tmp_path / "rs" / "rs.model").exists()
    remapped_before = _start(tmp_path, "rs").state_dict()
    at_kill = _params(_load(_ckpt(ckpt_dir, "rs", latest))["model"])

    assert _run(argv + ["--restart_latest"]) == 0
    # the restart loaded the newest checkpoint before training (and MACE resumes at its epoch)
    resumed_log = _log(tmp_path, "rs").rsplit("===========VERIFYING SETTINGS===========", 1)[1]
    loading = f"Loading checkpoint: {_ckpt(ckpt_dir, 'rs', latest)}"
    assert loading in resumed_log
    assert resumed_log.index(loading) < resumed_log.index("Started training")
    rows = _rows(tmp_path, "rs")
    last_initial = max(i for i, r in enumerate(rows) if r.get("mode") == "eval" and r.get("epoch") is None)
    resumed_epochs = [r["epoch"] for r in rows[last_initial + 1:] if r.get("mode") == "eval"]
    assert resumed_epochs == list(range(latest, 15))
    # the remap was not redone with other weights
    remapped_after = _start(tmp_path, "rs").state_dict()
    assert remapped_after.keys() == remapped_before.keys()
    for key, value in remapped_before.items():
        assert torch.equal(remapped_after[key], value), key
    # a valid Ge model that trained on from the killed run's weights
    out = _out(tmp_path, "rs")
    assert _zs(out) == [GE] and all(p.requires_grad for p in out.parameters())
    from mace.calculators import MACECalculator

    atoms = _ge_atoms()
    atoms.calc = MACECalculator(model_paths=str(tmp_path / "rs" / "rs.model"), device="cpu", default_dtype="float64")
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()
    _, changed = _unchanged_blocks(at_kill, _params(out))
    assert changed


@pytest.fixture(scope="module")
def killed_gradual(data, tmp_path_factory):
    """--freeze_blocks interactions.0 --unfreeze_after 1, killed once epoch 1 is checkpointed."""
    tmp = tmp_path_factory.mktemp("gradual")
    argv = _argv(data, tmp, "gu", *KILL_EPOCHS, "--freeze_blocks", "interactions.0", "--unfreeze_after", "1")
    ckpt_dir = tmp / "gu" / "ckpt"
    latest = _train_until_checkpoint_then_sigkill(argv, ckpt_dir, "gu", 1, tmp / "killed.out")
    states = {e: _params(_load(_ckpt(ckpt_dir, "gu", e))["model"]) for e in _ckpt_epochs(ckpt_dir, "gu")}
    return {"tmp": tmp, "argv": argv, "ckpt_dir": ckpt_dir, "latest": latest, "states": states,
            "start": _params(_start(tmp, "gu"))}


def _block(state, block):
    return {k: v for k, v in state.items() if freeze.param_block(k) == block}


def _same(a, b):
    """True when the tensors under the names both dicts have are bit-identical (checkpoints also
    hold buffers, a model's parameter list does not)."""
    common = a.keys() & b.keys()
    assert common, "nothing to compare"
    return all(torch.equal(a[k], b[k]) for k in common)


@pytest.mark.slow
def test_unfreeze_after_before_the_kill_freezes_then_thaws(killed_gradual):
    states, start = killed_gradual["states"], killed_gradual["start"]
    assert killed_gradual["latest"] >= 1
    assert _block(states[0], "interactions.0")
    assert _same(_block(states[0], "interactions.0"), _block(start, "interactions.0"))  # epoch 0 frozen
    assert not _same(_block(states[1], "interactions.0"), _block(states[0], "interactions.0"))  # epoch 1 thawed
    assert not _same(_block(states[0], "interactions.1"), _block(start, "interactions.1"))


@pytest.mark.slow
def test_unfreeze_after_survives_restart_latest(killed_gradual):
    k = killed_gradual
    latest, before = k["latest"], k["states"][k["latest"]]
    assert _run(k["argv"] + ["--restart_latest"]) == 0
    resumed = _params(_load(_ckpt(k["ckpt_dir"], "gu", latest))["model"])
    # epoch `latest` >= unfreeze_after (1): the block trains in the first resumed epoch
    assert not _same(_block(resumed, "interactions.0"), _block(before, "interactions.0"))


# --------------------------------------------------------------------------- 5. E0s
@pytest.fixture(scope="module")
def e0_runs(data, tmp_path_factory):
    """lr 0, one epoch, --model MACE: the saved model is the start MACE built (E0s included), per
    --E0s mode. Returns (saved model, remapped start, MACE's log)."""
    tmp = tmp_path_factory.mktemp("e0s")
    cache = {}

    def get(mode):
        if mode not in cache:
            tag = {"{32: -3.5}": "dict"}.get(mode, mode)
            assert _run(_argv(data, tmp, tag, "--E0s", mode, "--lr", "0.0", "--max_num_epochs", "1",
                              "--model", "MACE")) == 0
            cache[mode] = (_out(tmp, tag), _start(tmp, tag), _log(tmp, tag))
        return cache[mode]

    return get


@pytest.fixture(scope="module")
def ge_frames(data):
    return read(data / "ge.xyz", ":")


def test_e0s_dict_is_the_saved_models_e0(e0_runs, ge_frames):
    out, start, _ = e0_runs("{32: -3.5}")
    assert _zs(out) == [GE]
    assert _e0s(out) == pytest.approx([-3.5]) and _e0s(start) == pytest.approx([-3.5])
    # the shift refit is consistent with that E0: no mean energy offset at the start
    assert _mean_energy_error_per_atom(out, ge_frames) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_e0s_average_is_the_mean_energy_per_atom_of_the_training_data(e0_runs, ge_frames, data):
    out, start, _ = e0_runs("average")
    per_atom = [a.info["REF_energy"] / len(a) for a in ge_frames]
    (e0,) = _e0s(out)
    assert min(per_atom) <= e0 <= max(per_atom)  # least squares over the training split
    # computed before the shift refit and handed to MACE: the start carries it too, not the Si E0
    assert _e0s(start) == pytest.approx([e0], abs=1e-9)
    assert abs(e0 - _e0s(torch.load(data / "si.model", weights_only=False))[0]) > 0.1


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_e0s_average_keeps_the_refitted_start_free_of_an_energy_offset(e0_runs, ge_frames):
    out, _, _ = e0_runs("average")
    assert _mean_energy_error_per_atom(out, ge_frames) == pytest.approx(0.0, abs=1e-3)


def test_e0s_estimated_corrects_the_remapped_e0_by_its_residual(e0_runs, ge_frames):
    out, start, _ = e0_runs("estimated")
    (e0,), (e0_start,) = _e0s(out), _e0s(start)
    residuals = [(a.info["REF_energy"] - energy_forces(start.double(), a)[0]) / len(a) for a in ge_frames]
    # least squares over the training split of the remapped start's per-atom residuals
    assert min(residuals) - 1e-9 <= e0 - e0_start <= max(residuals) + 1e-9
    assert abs(e0 - e0_start) < 0.05  # the refitted start is already unbiased on these frames
    assert abs(_mean_energy_error_per_atom(out, ge_frames)) < 0.05


# --------------------------------------------------------------------------- 6. --config YAML
def test_config_file_carries_our_flags_like_the_command_line(data, tmp_path):
    config = tmp_path / "transfer.yaml"
    config.write_text(yaml.safe_dump({"source_model": str(data / "si.model"), "element_map": "Si:Ge",
                                      "freeze_blocks": "embedding"}))
    argv = ["--config", str(config), "--train_file", str(data / "ge.xyz")] + TINY + _dirs(tmp_path, "cfg")
    by_config = vars(train.parse_args(argv))
    by_cli = vars(train.parse_args(_argv(data, tmp_path, "cfg", "--freeze_blocks", "embedding")))
    assert by_config.pop("config") == str(config) and by_cli.pop("config") is None
    assert by_config == by_cli  # configargparse: the YAML keys land on the same flags
    assert _run(argv) == 0
    out = _out(tmp_path, "cfg")
    assert _zs(out) == [GE]
    same, changed = _unchanged_blocks(_params(_start(tmp_path, "cfg")), _params(out))
    assert "embedding" in same
    assert {"interactions.0", "interactions.1", "products.0", "readouts.0"} <= changed
    assert "mace-transfer block plan (freeze=embedding" in _log(tmp_path, "cfg")


# --------------------------------------------------------------------------- 7. --model MACE
def test_model_mace_with_a_transferred_start_becomes_scaleshiftmace_with_the_remapped_weights(e0_runs):
    """MACE 0.3.16 turns --model MACE/ScaleShiftMACE with a foundation into 'FoundationMACE', a
    ScaleShiftMACE built from the foundation's config. (The E0s runs pass --model MACE: lr 0, so
    the saved model is the start MACE built.)"""
    assert train.parse_args(["--name", "x", "--train_file", "x.xyz"]).model == "MACE"  # MACE's default
    out, start, log = e0_runs("{32: -3.5}")
    assert "Loading FOUNDATION model" in log
    assert type(out).__name__ == "ScaleShiftMACE" and _zs(out) == [GE]
    e_out, f_out = energy_forces(out.double(), _ge_atoms())
    e_start, f_start = energy_forces(start.double(), _ge_atoms())
    assert e_out == pytest.approx(e_start, abs=1e-8)
    np.testing.assert_allclose(f_out, f_start, atol=1e-8)


# --------------------------------------------------------------------------- 8. stress / universal
@pytest.mark.parametrize("loss, loss_class", [
    ("stress", "WeightedEnergyForcesStressLoss"),
    ("universal", "UniversalLoss"),
])
@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_stress_and_universal_losses_train_on_stress(data, tmp_path, loss, loss_class):
    assert _run(_argv(data, tmp_path, loss, "--loss", loss, "--stress_key", "REF_stress",
                      "--stress_weight", "10.0")) == 0
    log = _log(tmp_path, loss)
    assert loss_class in log and "stress_weight=10.000" in log
    rows = _rows(tmp_path, loss)
    opt = [r for r in rows if r.get("mode") == "opt"]
    evals = [r for r in rows if r.get("mode") == "eval" and r.get("epoch") is not None]
    assert len(opt) == 4 and [r["epoch"] for r in evals] == [0, 1]
    assert all(np.isfinite(r["loss"]) for r in opt + evals)
    assert all(np.isfinite(r["rmse_stress"]) and r["rmse_stress"] > 0 for r in evals)
    assert _zs(_out(tmp_path, loss)) == [GE]


# --------------------------------------------------------------------------- 9. --freeze N
@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_mace_freeze_and_freeze_blocks_freeze_the_union(data, tmp_path):
    """MACE's --freeze 1 (embedding) + our --freeze_blocks readouts.1: both stay bit-identical,
    every other block trains, and the saved model is trainable again."""
    assert _run(_argv(data, tmp_path, "fz", "--freeze", "1", "--freeze_blocks", "readouts.1")) == 0
    out = _out(tmp_path, "fz")
    same, changed = _unchanged_blocks(_params(_start(tmp_path, "fz")), _params(out))
    assert {"embedding", "readouts.1"} <= same
    assert changed >= {"interactions.0", "interactions.1", "products.0", "products.1", "readouts.0"}
    assert all(p.requires_grad for p in out.parameters())
    assert "Freezing embedding weights" in _log(tmp_path, "fz")


def test_mace_freeze_conflicting_with_our_thaw_is_a_one_line_refusal(data, tmp_path, capsys):
    argv = _argv(data, tmp_path, "fzc", "--freeze", "1", "--freeze_blocks", "embedding",
                 "--unfreeze_after", "1", "--dry_run")  # a refusal comes before MACE trains
    code = _guarded_run(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "--freeze" in err and "\n" not in err


# --------------------------------------------------------------------------- 11. multihead replay
def test_multihead_replay_of_si_data_on_a_replaced_model_is_a_one_line_refusal(data, tmp_path, capsys):
    argv = _argv(data, tmp_path, "mh", "--multiheads_finetuning", "True", "--pt_train_file", str(data / "si.xyz"))
    code = _guarded_run(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "\n" not in err


def test_multihead_replay_of_si_data_works_with_remap_mode_extend(data, tmp_path):
    """--remap_mode extend keeps Si next to Ge: MACE's multihead fine-tuning then replays the Si
    data on a pt_head (and forces lr 1e-4 + EMA, as it always does without --force_mh_ft_lr)."""
    assert _run(_argv(data, tmp_path, "mhx", "--multiheads_finetuning", "True",
                      "--pt_train_file", str(data / "si.xyz"), "--remap_mode", "extend")) == 0
    log = _log(tmp_path, "mhx")
    assert "Using multiheads finetuning mode" in log
    assert "Multihead finetuning mode, setting learning rate to 0.0001" in log
    out = _out(tmp_path, "mhx")
    assert _zs(out) == [SI, GE] and list(out.heads) == ["pt_head", "Default"]
    heads = {r.get("head") for r in _rows(tmp_path, "mhx") if r.get("mode") == "eval"}
    assert heads == {"pt_head", "Default"}


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_extend_on_target_only_data_keeps_the_source_element(data, tmp_path):
    """Ge-only training data and no replay: MACE builds its element table from the data, so without
    --foundation_model_elements (which extend now sets) it failed on a one-hot of the wrong width (a
    ScaleShiftMACE's force-RMS scaling) or dropped Si; the saved model keeps Si and Ge."""
    assert _run(_argv(data, tmp_path, "ext", "--remap_mode", "extend")) == 0
    assert _zs(_out(tmp_path, "ext")) == [SI, GE]
