"""Tests of mace_transfer.freeze: block names, the per-block plan, the optimizer seam, and real
MACE training through ``mace.cli.run_train.run`` (frozen tensors stay bit-identical)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import mace  # noqa: F401  (before any torch.load of MACE objects)
import numpy as np
import pytest
import torch
from e3nn import o3
from mace import modules
from mace.tools import build_default_arg_parser

import mace.cli.run_train as run_train
from conftest import labelled
from mace_transfer import UserInputError
from mace_transfer.transfer import freeze


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def small_model_template():
    """Random-weight float64 ScaleShiftMACE for Si: 2 interactions, 8x0e+8x1o hidden, r_max 4 Å
    (built once: constructing the symmetric contractions takes seconds)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        return modules.ScaleShiftMACE(
            r_max=4.0,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=2,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=2,
            num_elements=1,
            hidden_irreps=o3.Irreps("8x0e+8x1o"),
            MLP_irreps=o3.Irreps("8x0e"),
            atomic_energies=np.array([-4.0]),
            avg_num_neighbors=8,
            atomic_numbers=[14],
            correlation=2,
            gate=torch.nn.functional.silu,
            atomic_inter_scale=1.0,
            atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def small_model(small_model_template, float64):
    """A fresh copy of the template per test (tests freeze parameters in place)."""
    return copy.deepcopy(small_model_template)


def mace_args(*extra):
    return build_default_arg_parser().parse_args(
        ["--name", "unit", "--train_file", "unused.xyz", *extra]
    )


def names_in_groups(options, model):
    ids = {id(p) for g in options["params"] for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


# --------------------------------------------------------------------------- block names
def test_block_names_of_small_model(small_model):
    assert freeze.block_names(small_model) == [
        "embedding",
        "radial",
        "interactions",
        "interactions.0",
        "interactions.1",
        "products",
        "products.0",
        "products.1",
        "readouts",
        "readouts.0",
        "readouts.1",
    ]


def test_param_block_and_radial():
    assert freeze.param_block("node_embedding.linear.weight") == "embedding"
    assert freeze.param_block("interactions.1.conv_tp_weights.layer0.weight") == "interactions.1"
    assert freeze.param_block("products.0.linear.weight") == "products.0"
    assert freeze.param_block("readouts.1.linear_2.weight") == "readouts.1"
    assert freeze.param_block("scale_shift.scale") == "scale_shift"
    assert freeze.is_radial("interactions.0.conv_tp_weights.layer3.weight")
    assert not freeze.is_radial("interactions.0.linear.weight")


def test_freeze_blocks_whole_interaction_includes_its_radial_mlp(small_model):
    frozen = freeze.freeze_blocks(small_model, "interactions.0,embedding")
    expected = [
        n
        for n, _ in small_model.named_parameters()
        if n.startswith("interactions.0.") or n.startswith("node_embedding.")
    ]
    assert frozen == expected
    assert "interactions.0.conv_tp_weights.layer1.weight" in frozen
    for name, param in small_model.named_parameters():
        assert param.requires_grad == (name not in frozen)


def test_regex_selector_with_comma_inside_braces(small_model):
    frozen = freeze.freeze_blocks(small_model, r"re:skip_tp,re:layer[0-9]{1,2}\.weight$")
    assert frozen == [
        n for n, _ in small_model.named_parameters() if "skip_tp" in n or ".conv_tp_weights.layer" in n
    ]
    assert len(frozen) == 2 + 8


def test_unknown_block_lists_valid_names(small_model):
    with pytest.raises(UserInputError) as err:
        freeze.freeze_blocks(small_model, ["interactions.2"])
    message = str(err.value)
    assert "interactions.2" in message
    for valid in ("embedding", "radial", "interactions.1", "products.1", "readouts.0"):
        assert valid in message
    with pytest.raises(UserInputError, match="matches no parameter"):
        freeze.freeze_blocks(small_model, ["re:^nothing_like_this"])
    with pytest.raises(UserInputError, match="unknown block 'readouts.2'"):
        freeze.FreezeSpec.from_strings(None, '{"readouts.2": 0.5}').check_model(small_model)


# --------------------------------------------------------------------------- spec parsing
@pytest.mark.parametrize(
    "blocks, factors, after, match",
    [
        (None, "{interactions: 1}", None, "not valid JSON"),
        (None, "[1, 2]", None, "JSON object"),
        (None, '{"readouts": -0.1}', None, ">= 0"),
        (None, '{"readouts": "fast"}', None, "must be a number"),
        ("readouts", '{"readouts": 0.5}', None, "both"),
        (None, '{"readouts": 0.5}', 2, "needs --freeze_blocks"),
        ("readouts", None, 0, ">= 1"),
        ("readouts", None, "1.5", "whole number"),
        ("re:(unclosed", None, None, "bad regular expression"),
    ],
)
def test_spec_rejects_bad_input(blocks, factors, after, match):
    with pytest.raises(UserInputError, match=match):
        freeze.FreezeSpec.from_strings(blocks, factors, after)


def test_spec_empty_is_inactive_and_seam_patches_nothing():
    spec = freeze.FreezeSpec.from_strings(None, "", None)
    assert not spec.active
    original = run_train.get_params_options
    with freeze.optimizer_seam(spec) as session:
        assert session is None
        assert run_train.get_params_options is original


# --------------------------------------------------------------------------- the plan
def test_more_specific_names_win(small_model):
    spec = freeze.FreezeSpec.from_strings(
        "interactions",
        '{"radial": 0.5, "interactions.1": 0.25, "readouts": 0.1, "re:^readouts\\\\.1\\\\.linear_2": 2}',
    )
    plan = freeze.plan_parameters(small_model, spec)
    # radial (3) beats interactions.N (2) and interactions (1)
    assert plan["interactions.0.conv_tp_weights.layer0.weight"] == freeze.ParamPlan("trainable", 0.5)
    assert plan["interactions.1.conv_tp_weights.layer0.weight"] == freeze.ParamPlan("trainable", 0.5)
    # interactions.1 (2) beats the freeze of interactions (1)
    assert plan["interactions.1.linear.weight"] == freeze.ParamPlan("trainable", 0.25)
    assert plan["interactions.0.linear.weight"] == freeze.ParamPlan("frozen", 0.0)
    # re: (4) beats readouts (1)
    assert plan["readouts.1.linear_2.weight"] == freeze.ParamPlan("trainable", 2.0)
    assert plan["readouts.1.linear_1.weight"] == freeze.ParamPlan("trainable", 0.1)
    assert plan["products.0.linear.weight"] == freeze.ParamPlan("trainable", 1.0)


def test_conflicting_regexes_are_an_error(small_model):
    spec = freeze.FreezeSpec.from_strings(None, '{"re:linear": 0.5, "re:weight$": 0.2}')
    with pytest.raises(UserInputError, match="conflicting"):
        freeze.plan_parameters(small_model, spec)


def test_factor_zero_is_permanent_and_freeze_thaws_with_its_factor(small_model):
    spec = freeze.FreezeSpec.from_strings("interactions.0", '{"interactions": 0.3, "embedding": 0}', 2)
    plan = freeze.plan_parameters(small_model, spec)
    assert plan["node_embedding.linear.weight"] == freeze.ParamPlan("frozen", 0.0)
    assert plan["interactions.0.linear.weight"] == freeze.ParamPlan("thaws", 0.3)
    assert plan["interactions.1.linear.weight"] == freeze.ParamPlan("trainable", 0.3)


# --------------------------------------------------------------------------- the seam
def test_seam_groups_keep_mace_decay_and_factors(small_model):
    args = mace_args("--lr", "0.02", "--weight_decay", "1e-3", "--lr_params_factors",
                     '{"readouts_lr_factor": 0.5}')
    spec = freeze.FreezeSpec.from_strings("interactions.0,embedding", '{"readouts.1": 0.1}')
    original = run_train.get_params_options
    with freeze.optimizer_seam(spec):
        assert run_train.get_params_options is not original
        options = run_train.get_params_options(args, small_model)
        optimizer = torch.optim.AdamW(**options)
        frozen = {n for n, p in small_model.named_parameters() if not p.requires_grad}
        assert frozen == {
            n for n, _ in small_model.named_parameters()
            if n.startswith("interactions.0.") or n.startswith("node_embedding.")
        }
        assert names_in_groups(options, small_model) == {
            n for n, _ in small_model.named_parameters()
        } - frozen
        by_name = {g["name"]: g for g in optimizer.param_groups}
        # MACE's decay split survives the per-block split, lr = args.lr x MACE factor x block factor
        assert by_name["interactions_decay:interactions.1"]["weight_decay"] == 1e-3
        assert by_name["interactions_no_decay:interactions.1"]["weight_decay"] == 0.0
        assert by_name["products:products.0"]["weight_decay"] == 1e-3
        assert by_name["readouts:readouts.0"]["lr"] == 0.02 * 0.5
        assert by_name["readouts:readouts.1"]["lr"] == 0.02 * 0.5 * 0.1
        assert by_name["products:products.1"]["lr"] == 0.02
        assert not any(name.startswith("embedding") for name in by_name)
    assert run_train.get_params_options is original
    assert all(p.requires_grad for p in small_model.parameters())


def test_seam_restores_mace_function_after_an_error(small_model):
    spec = freeze.FreezeSpec.from_strings("interactions.5")
    original = run_train.get_params_options
    with pytest.raises(UserInputError, match="valid for this model"):
        with freeze.optimizer_seam(spec):
            run_train.get_params_options(mace_args(), small_model)
    assert run_train.get_params_options is original


def _toy_loss(model):
    """A smooth scalar of every parameter, so each gets a nonzero gradient when trainable."""
    return sum((p * p).sum() for p in model.parameters() if p.requires_grad)


def test_gradual_unfreezing_at_epoch_boundary_with_decayed_lr(small_model, caplog):
    """2 steps/epoch, thaw after 1 epoch; ExponentialLR gamma 0.5 has decayed lr once by then."""
    args = mace_args("--lr", "0.01")
    spec = freeze.FreezeSpec.from_strings("interactions.0", '{"interactions": 0.4}', 1)
    with freeze.optimizer_seam(spec, steps_per_epoch=2) as session:
        with caplog.at_level(logging.INFO, logger=freeze.log.name):
            options = run_train.get_params_options(args, small_model)
        table = caplog.text
        assert "interactions.0 [radial]" in table and "0 -> 0.004" in table
        assert "frozen, thaws after epoch 1" in table
        optimizer = torch.optim.Adam(**options)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
        start = {n: p.detach().clone() for n, p in small_model.named_parameters()}
        held = [g for g in optimizer.param_groups if "interactions.0" in g["name"]]
        assert held and all(g["lr"] == 0.0 for g in held)
        scheduler.step()  # as MACE does between epochs (here before epoch 0 ends: lr x 0.5)
        for step in range(4):
            optimizer.zero_grad()
            _toy_loss(small_model).backward()
            optimizer.step()
            if step == 0:
                assert not small_model.interactions[0].linear.weight.requires_grad
                assert optimizer.state.get(small_model.interactions[0].linear.weight) is None
            if step == 1:  # last step of epoch 0: thawed right after it, values untouched
                assert session.unfrozen_at_step == 2
                assert small_model.interactions[0].linear.weight.requires_grad
                for name, p in small_model.named_parameters():
                    if name.startswith("interactions.0."):
                        assert torch.equal(p, start[name])
                # joins at the scheduler's current decay: 0.01 x 0.4 x 0.5
                assert all(g["lr"] == pytest.approx(0.01 * 0.4 * 0.5, rel=1e-12) for g in held)
    for name, p in small_model.named_parameters():
        assert not torch.equal(p, start[name]), name
    assert all(p.requires_grad for p in small_model.parameters())


def test_everything_frozen_is_an_error(small_model):
    spec = freeze.FreezeSpec.from_strings("interactions,products,readouts,embedding")
    with freeze.optimizer_seam(spec):
        with pytest.raises(UserInputError, match="nothing left to train"):
            run_train.get_params_options(mace_args(), small_model)


def test_ensure_trainable_file(small_model, tmp_path):
    freeze.freeze_blocks(small_model, "embedding,readouts.1")
    path = tmp_path / "m.model"
    torch.save(small_model, path)
    assert freeze.ensure_trainable_file(path) == 3
    reloaded = torch.load(path, weights_only=False)
    assert all(p.requires_grad for p in reloaded.parameters())
    assert freeze.ensure_trainable_file(path) == 0


# --------------------------------------------------------------------------- real MACE training
def write_si_dataset(path: Path, n_frames: int = 6) -> None:
    """Rattled (0.1 Å) 8-atom diamond Si cells, a = 5.43 Å, labelled by Stillinger-Weber (eV, eV/Å)."""
    from ase.build import bulk
    from ase.io import write
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import StillingerWeber
    from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
        Stillinger_Weber_PRB_31_5262_Si,
    )

    calc = Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))
    cells = []
    for seed in range(n_frames):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.rattle(0.1, seed=seed)
        cells.append(atoms)
    frames = labelled(cells, calc)
    write(path, frames, format="extxyz")


def train_argv(work: Path, epochs: int, *extra: str):
    return [
        "--name", "fz", "--work_dir", str(work), "--train_file", str(work / "train.xyz"),
        "--valid_fraction", "0.34", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
        "--num_channels", "8", "--max_L", "0", "--correlation", "2", "--r_max", "4.0",
        "--radial_MLP", "[16]", "--num_radial_basis", "4",
        "--batch_size", "2", "--E0s", "average", "--device", "cpu", "--default_dtype", "float64",
        "--seed", "1", "--max_num_epochs", str(epochs), "--save_all_checkpoints",
        "--keep_checkpoints", "--plot", "False", *extra,
    ]


@pytest.fixture
def mace_process_state():
    """MACE's run() sets the default dtype and adds root-logger handlers: undo both.

    One torch thread: on the shared 2-core machine this halves the wall time of a run."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    root = logging.getLogger()
    handlers, filters, level = list(root.handlers), list(root.filters), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.filters[:] = filters
    root.setLevel(level)
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def run_training(argv, blocks, factors=None, after=None):
    """Train through mace_transfer.train.main when it exists, else MACE's run() in the seam."""
    try:
        from mace_transfer.transfer import train
    except ImportError:
        train = None
    flags = ["--freeze_blocks", blocks]
    if factors:
        flags += ["--block_lr_factors", factors]
    if after is not None:
        flags += ["--unfreeze_after", str(after)]
    if train is not None and hasattr(train, "main"):
        assert train.main(argv + flags) == 0
        return freeze.LAST_SESSION
    args = build_default_arg_parser().parse_args(argv)
    with freeze.optimizer_seam(freeze.FreezeSpec.from_strings(blocks, factors, after)) as session:
        run_train.run(args)
    return session


def checkpoint_state(work: Path, epoch: int):
    path = work / "checkpoints" / f"fz_run-1_epoch-{epoch}.pt"
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def changed_blocks(initial, state):
    """Blocks (param_block names) with at least one parameter tensor that is not bit-identical."""
    out = set()
    for name, value in state.items():
        if name in initial and initial[name].is_floating_point() and not torch.equal(initial[name], value):
            out.add(freeze.param_block(name))
    return out


def param_names_of(state, blocks):
    return [n for n in state if freeze.param_block(n) in blocks]


@pytest.fixture(scope="module")
def si_data(tmp_path_factory):
    work = tmp_path_factory.mktemp("si_sw")
    write_si_dataset(work / "train.xyz")
    return work / "train.xyz"


def fresh_work(tmp_path, si_data):
    (tmp_path / "train.xyz").write_bytes(si_data.read_bytes())
    return tmp_path


ALL_BLOCKS = {"embedding", "interactions.0", "interactions.1", "products.0", "products.1",
              "readouts.0", "readouts.1"}


def test_real_training_permanent_and_gradual_freeze(tmp_path, si_data, mace_process_state):
    """One 2-epoch MACE run with EMA: embedding frozen by factor 0 (whole run), interactions.0
    frozen for 1 epoch. Bit-identical where frozen, changed everywhere else."""
    work = fresh_work(tmp_path, si_data)
    session = run_training(
        train_argv(work, 2, "--ema", "--ema_decay", "0.9"),
        "interactions.0", '{"embedding": 0}', 1,
    )
    initial = freeze.LAST_INITIAL_STATE
    assert session is not None and session.steps_per_epoch == 2 and session.unfrozen_at_step == 2
    assert session.restored_after_training
    in_groups = {n for _, _, names in session.groups_at_first_step for n in names}
    held = {n for name, lr, names in session.groups_at_first_step if lr == 0.0 for n in names}
    assert not any(n.startswith("node_embedding.") for n in in_groups)  # factor 0: absent
    assert held == {n for n in in_groups if n.startswith("interactions.0.")}  # held at lr 0

    after_epoch0 = checkpoint_state(work, 0)
    assert changed_blocks(initial, after_epoch0) == ALL_BLOCKS - {"embedding", "interactions.0"}
    final = torch.load(work / "fz.model", weights_only=False)
    assert all(p.requires_grad for p in final.parameters())
    final_state = {k: v.detach() for k, v in final.state_dict().items()}
    assert changed_blocks(initial, final_state) == ALL_BLOCKS - {"embedding"}
    for name in param_names_of(final_state, {"embedding"}):
        assert torch.equal(final_state[name], initial[name])
    log_text = (work / "logs" / "fz_run-1.log").read_text()
    assert "mace-transfer block plan" in log_text and "thaws after epoch 1" in log_text


def test_real_training_freeze_interaction0_and_embedding(tmp_path, si_data, mace_process_state):
    work = fresh_work(tmp_path, si_data)
    session = run_training(train_argv(work, 2), "interactions.0,embedding")
    in_groups = {n for _, _, names in session.groups_at_first_step for n in names}
    assert in_groups and not any(freeze.param_block(n) in {"embedding", "interactions.0"} for n in in_groups)
    initial = freeze.LAST_INITIAL_STATE
    final = torch.load(work / "fz.model", weights_only=False)
    assert all(p.requires_grad for p in final.parameters())
    state = {k: v.detach() for k, v in final.state_dict().items()}
    frozen = param_names_of(state, {"interactions.0", "embedding"})
    assert "interactions.0.conv_tp_weights.layer1.weight" in frozen
    for name in frozen:
        assert torch.equal(state[name], initial[name]), name
    assert changed_blocks(initial, state) == ALL_BLOCKS - {"embedding", "interactions.0"}


def test_real_training_gradual_unfreezing(tmp_path, si_data, mace_process_state):
    work = fresh_work(tmp_path, si_data)
    run_training(train_argv(work, 3), "interactions.0,embedding", None, 1)
    initial = freeze.LAST_INITIAL_STATE
    assert changed_blocks(initial, checkpoint_state(work, 0)) == ALL_BLOCKS - {
        "embedding", "interactions.0"
    }
    final = torch.load(work / "fz.model", weights_only=False)
    assert changed_blocks(initial, final.state_dict()) == ALL_BLOCKS
