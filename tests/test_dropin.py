"""Drop-in, proven: without transfer flags ``mace_transfer_train`` writes bitwise the same model as
``mace_run_train`` (issue 50).

Each row runs ``mace_run_train`` and ``mace_transfer_train`` on the same flags, each in a fresh
process, then compares every tensor of the two saved
``.model`` files with ``torch.equal`` (no tolerance) and the model classes. Tiny float64 models on
6 Stillinger-Weber Ge cells (with stress and virials); a foundation model file where the row needs
one. One row runs in the default suite (two fresh processes, ~25 s); the rest of the matrix is ``slow``
(``make test-slow``); the pass-through of MACE's replay keywords is also checked without training
(``tests/test_train.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mace  # noqa: F401  (before any torch.load of MACE objects)
import numpy as np
import pytest
import torch
import yaml
from ase.io import read, write
from conftest import make_mace_model, write_sw_ge_dataset



GE = 32
TINY = [
    "--plot", "False", "--num_channels", "8", "--max_L", "0", "--r_max", "4.0", "--num_radial_basis", "6",
    "--correlation", "2", "--batch_size", "2", "--valid_batch_size", "2",
    "--max_num_epochs", "2", "--device", "cpu", "--default_dtype", "float64", "--seed", "1",
    "--valid_fraction", "0.34", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """ge.xyz: 6 SW-Ge cells with REF_energy/forces/stress/virials (virials = -stress x volume, eV);
    ge.model: a tiny random Ge ScaleShiftMACE (r_max 4 Å) as a foundation model file;
    replay.xyz: 4 more SW-Ge cells (REF_ keys, as MACE reads a replay file given by path);
    mp_replay.xyz: the same in the keys of MACE's Materials Project replay set (energy, forces, stress)."""
    root = tmp_path_factory.mktemp("dropin")
    write_sw_ge_dataset(root / "ge.xyz", 6, seed=5, stress=True)
    frames = read(root / "ge.xyz", ":")
    for atoms in frames:
        stress = atoms.info["REF_stress"]
        voigt = np.array([[stress[0], stress[5], stress[4]], [stress[5], stress[1], stress[3]],
                          [stress[4], stress[3], stress[2]]])
        atoms.info["REF_virials"] = -voigt * atoms.get_volume()
    write(root / "ge.xyz", frames, format="extxyz")
    torch.save(make_mace_model([GE], r_max=4.0), root / "ge.model")
    write_sw_ge_dataset(root / "replay.xyz", 4, seed=9, stress=True)
    replay = read(root / "replay.xyz", ":")
    for atoms in replay:
        atoms.info["energy"] = atoms.info.pop("REF_energy")
        atoms.info["stress"] = atoms.info.pop("REF_stress")
        atoms.arrays["forces"] = atoms.arrays.pop("REF_forces")
    write(root / "mp_replay.xyz", replay, format="extxyz")
    return root


def _dirs(root, tag):
    d = root / tag
    return ["--name", tag, "--model_dir", str(d), "--checkpoints_dir", str(d / "ckpt"),
            "--results_dir", str(d / "res"), "--log_dir", str(d / "log"), "--work_dir", str(d)]


def _script(name):
    return str(Path(sys.executable).parent / name)


def _both(tmp_path, argv, env=None, first_chunk_epochs=None):
    """``mace_run_train`` and ``mace_transfer_train`` on ``argv``, each a fresh process (side by side,
    one thread each; in one process MACE's own second run already differs from its first in the last
    bit), each in its own folders; ``first_chunk_epochs``: a first run of that many epochs before.
    Returns the two saved models."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    commands = {"mace": _script("mace_run_train"), "ours": _script("mace_transfer_train")}

    def run_all(args_of):
        procs = {tag: subprocess.Popen([cmd] + args_of(tag), env=env, stdout=subprocess.PIPE, cwd=tmp_path,
                                       stderr=subprocess.STDOUT, text=True)  # MACE writes replay files to cwd
                 for tag, cmd in commands.items()}
        for tag, proc in procs.items():
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{tag} failed:\n{out[-3000:]}"

    if first_chunk_epochs is not None:
        def chunk(tag):
            full = list(argv) + _dirs(tmp_path, tag)
            full[full.index("--max_num_epochs") + 1] = str(first_chunk_epochs)
            return full
        run_all(chunk)
    run_all(lambda tag: list(argv) + _dirs(tmp_path, tag))
    return [torch.load(tmp_path / tag / f"{tag}.model", map_location="cpu", weights_only=False)
            for tag in commands]


def _assert_bitwise_same(reference, ours):
    assert type(ours) is type(reference)
    ref_state, our_state = reference.state_dict(), ours.state_dict()
    assert list(our_state) == list(ref_state)
    different = [k for k in ref_state if not torch.equal(ref_state[k], our_state[k])]
    assert different == [], f"tensors differ from mace_run_train's: {different[:5]}"
    assert list(getattr(ours, "heads", [])) == list(getattr(reference, "heads", []))


def _train_flags(data, *extra):
    return ["--train_file", str(data / "ge.xyz")] + TINY + list(extra)


# --------------------------------------------------------------------------- default suite
@pytest.mark.parametrize("extra", [
    pytest.param(["--model", "MACE", "--E0s", "average"], id="MACE-E0s-average"),
    pytest.param(["--model", "ScaleShiftMACE", "--E0s", "{32: -3.9}", "--loss", "stress",
                  "--compute_stress", "True", "--stress_key", "REF_stress", "--stress_weight", "10"],
                 id="ScaleShiftMACE-stress-E0s-dict", marks=pytest.mark.slow),
])
def test_plain_runs_write_bitwise_maces_model(data, tmp_path, extra):
    _assert_bitwise_same(*_both(tmp_path, _train_flags(data, *extra)))


@pytest.mark.slow
def test_foundation_model_file_with_multihead_replay_of_a_keyword_source(data, tmp_path):
    """``--pt_train_file mp``: MACE's keyword for its Materials Project replay set (read from MACE's
    cache, here a 4-cell stand-in placed where MACE looks: ``$XDG_CACHE_HOME/mace``), with
    ``--filter_type_pt`` and ``--real_pt_data_ratio_threshold``; ours passes it through as MACE
    reads it (it was refused as a missing file) and writes MACE's model bit for bit."""
    cache = tmp_path / "cache"
    (cache / "mace").mkdir(parents=True)
    (cache / "mace" / "mp_traj_combinedxyz").write_text((data / "mp_replay.xyz").read_text())
    argv = _train_flags(data, "--foundation_model", str(data / "ge.model"), "--pt_train_file", "mp",
                        "--filter_type_pt", "combinations", "--subselect_pt", "random",
                        "--num_samples_pt", "4", "--real_pt_data_ratio_threshold", "0.5", "--atomic_numbers", "[32]",
                        "--E0s", "foundation", "--force_mh_ft_lr", "True", "--lr", "0.005")
    reference, ours = _both(tmp_path, argv, env={"XDG_CACHE_HOME": str(cache)})
    assert list(ours.heads) == ["pt_head", "Default"]
    _assert_bitwise_same(reference, ours)


# --------------------------------------------------------------------------- the rest of the matrix
SLOW_ROWS = [
    pytest.param(["--model", "MACE", "--E0s", "average", "--loss", "virials",
                  "--virials_key", "REF_virials", "--virials_weight", "1"], id="MACE-virials"),
    pytest.param(["--E0s", "average", "--ema", "--ema_decay", "0.9"], id="EMA"),
    pytest.param(["--E0s", "average", "--swa", "--start_swa", "1", "--max_num_epochs", "3"], id="SWA-stage-two"),
    pytest.param(["--foundation_model", "{root}/ge.model", "--E0s", "foundation"], id="foundation-file"),
    pytest.param(["--foundation_model", "{root}/ge.model", "--E0s", "estimated"], id="foundation-file-E0s-estimated"),
    pytest.param(["--foundation_model", "{root}/ge.model", "--E0s", "foundation", "--lora", "True",
                  "--lora_rank", "2", "--lora_alpha", "2.0"], id="foundation-file-LoRA"),
    pytest.param(["--foundation_model", "{root}/ge.model", "--E0s", "foundation", "--pt_train_file",
                  "{root}/replay.xyz", "--force_mh_ft_lr", "True", "--lr", "0.005"], id="multihead-xyz-replay"),
]


@pytest.mark.slow
@pytest.mark.parametrize("extra", SLOW_ROWS)
def test_the_matrix_writes_bitwise_maces_model(data, tmp_path, extra):
    extra = [e.replace("{root}", str(data)) for e in extra]
    _assert_bitwise_same(*_both(tmp_path, _train_flags(data, *extra)))


@pytest.mark.slow
def test_config_yaml_writes_bitwise_maces_model(data, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": "MACE", "E0s": "average", "amsgrad": True, "lr": 0.003}))
    _assert_bitwise_same(*_both(tmp_path, _train_flags(data, "--config", str(config))))


@pytest.mark.slow
def test_restart_latest_writes_bitwise_maces_model(data, tmp_path):
    """A first chunk of 1 epoch, then ``--restart_latest`` to 3 epochs: MACE resumes its own
    checkpoint in both, and the two final models agree bit for bit."""
    argv = _train_flags(data, "--E0s", "average", "--restart_latest")
    argv[argv.index("--max_num_epochs") + 1] = "3"
    _assert_bitwise_same(*_both(tmp_path, argv, first_chunk_epochs=1))
