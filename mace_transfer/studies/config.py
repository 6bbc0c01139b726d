"""The learning-curve study's configuration: YAML (with ``base`` inheritance) -> a checked mapping.

Names shared by every layer of a study live here: the strategies and their starts, the records folder,
the test metrics (meV/Å, meV/atom), the epoch budget at training size N and the run names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

from mace_transfer import UserInputError
from mace_transfer.transfer.early_stop import steps_to_epochs


STRATEGIES = ("scratch", "transfer", "transfer_freeze", "transfer_rescale", "mace_freeze",
              "classical_pretrain", "teacher_pretrain")
INITS = ("scratch", "remap", "foundation", "classical")
#: the peers of a ``kind: peers`` study (:mod:`~mace_transfer.studies.peers`) and how reports name them
PEERS = {"sevenn": "SevenNet-0 (sevenn 0.13)", "chgnet": "CHGNet 0.3.0 (chgnet 0.4.2)"}
#: per-run records live in <out>/records/ (not "runs/": the repository's .gitignore ignores runs/)
RECORDS = "records"
#: finished runs' models committed beside the records, <out>/models/<run>.model (work folders are not committed)
KEPT_MODELS = "models"
METRICS = ("force_mae_meV_per_A", "force_rmse_meV_per_A", "energy_mae_meV_per_atom",
           "energy_rmse_meV_per_atom", "stress_mae_meV_per_A3")  # stress: None where not measured


def read_yaml_mapping(path, what: str = "config file") -> Dict[str, Any]:
    """A YAML file that must hold a mapping; missing or malformed files are a UserInputError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UserInputError(f"{path}: expected a mapping")
    return config


def _check_extra_train_weight(path: Path, data: dict, key: str, zero_allowed: bool) -> None:
    """A per-frame loss weight on the extra training frames (``data.<key>``): a number (> 0, or >= 0 where
    ``zero_allowed``) that needs ``data.extra_train``; absent means MACE's default of 1."""
    weight = data.get(key)
    if weight is None:
        return
    bound = "a number >= 0" if zero_allowed else "a positive number"
    if (not data.get("extra_train") or isinstance(weight, bool) or not isinstance(weight, (int, float))
            or weight < 0 or (weight == 0 and not zero_allowed)):
        raise UserInputError(f"{path}: data.{key} must be {bound} and needs data.extra_train")


def load_config(path) -> Dict[str, Any]:
    """Read and check the learning-curve YAML (see configs/learning_curve_sw.yaml)."""
    path = Path(path)
    config = read_yaml_mapping(path)
    if "base" in config:  # another study's config, these keys overriding (mappings merged key by key)
        base_path = Path(config.pop("base"))
        if base_path.resolve() == path.resolve():
            raise UserInputError(f"{path}: 'base' names the file itself")
        config = _merged(load_config(base_path), config)
    for key in ("data", "mace", "strategies", "sizes", "seeds", "budget", "element_map"):
        if key not in config:
            raise UserInputError(f"{path}: missing {key!r}")
    for key in ("source", "target", "test"):
        if key not in config["data"]:
            raise UserInputError(f"{path}: data needs {key!r}")
    for key, zero_allowed in (("extra_train_weight", False), ("extra_train_energy_weight", True)):
        _check_extra_train_weight(path, config["data"], key, zero_allowed)
    for name, spec in config["strategies"].items():
        if name not in STRATEGIES:
            raise UserInputError(f"{path}: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        if "lr" not in (spec or {}):
            raise UserInputError(f"{path}: strategy {name!r} needs an 'lr'")
        if spec.get("init", "scratch") not in INITS:
            raise UserInputError(f"{path}: strategy {name!r}: init must be one of {', '.join(INITS)}")
        grid = (config.get("lr_grid") or {}).get(name)
        if grid is not None and name == "transfer_freeze":
            raise UserInputError(f"{path}: lr_grid.transfer_freeze: its block set is chosen on validation "
                                 "already; give it one 'lr'")
        if grid is not None and (not isinstance(grid, list) or not grid or not all(
                isinstance(v, (int, float)) and v > 0 for v in grid)):
            raise UserInputError(f"{path}: lr_grid.{name} must be a list of positive learning rates")
        if spec.get("init") == "classical" and "classical" not in config["data"]:
            raise UserInputError(f"{path}: strategy {name!r} starts from a classical model: "
                                 "data needs 'classical' (target-element labels of a classical potential)")
    _check_loss_grid(config.get("loss_grid"), config["strategies"], path)
    _check_stage_two(config, path)
    config.setdefault("out", "docs/results/sw")
    config.setdefault("work", "runs/learning_curve_sw")
    config.setdefault("n_valid", 20)
    config.setdefault("valid_seed", 1234)
    config.setdefault("target_E0s", "{32: 0.0}")
    config.setdefault("threads", 1)
    config.setdefault("source", {})
    mode = config["budget"].get("mode", "steps")
    if mode not in ("steps", "converged"):
        raise UserInputError(f"{path}: budget.mode must be 'steps' (a fixed step budget) or 'converged', got {mode!r}")
    kind = config.setdefault("kind", "learning_curve")
    if kind not in ("learning_curve", "peers", "alloy"):
        raise UserInputError(f"{path}: kind must be 'learning_curve', 'peers' or 'alloy', got {kind!r}")
    if kind == "peers":
        _check_peers(config, path)
    for key in ("seeds_above", "peers_seeds_above"):
        _check_seeds_above(config.get(key), key, path)
    return config


def _check_stage_two(config: Dict[str, Any], path) -> None:
    """``stage_two``: {from: a finished study's out folder, lr: > 0, mace: {MACE flags}, budget: {...}}; its
    runs continue that study's models, so its own lr and loss are not chosen again (no lr_grid/loss_grid)."""
    block = config.get("stage_two")
    if block is None:
        return
    if not isinstance(block, dict) or not block.get("from") or not isinstance(block.get("lr"), (int, float)) \
            or isinstance(block.get("lr"), bool) or block["lr"] <= 0:
        raise UserInputError(f"{path}: stage_two needs 'from' (a finished study's out folder) and a positive 'lr'")
    unknown = sorted(set(block) - {"from", "lr", "mace", "budget"})
    if unknown:
        raise UserInputError(f"{path}: stage_two: unknown key {unknown[0]!r} (from, lr, mace, budget)")
    for key in ("mace", "budget"):
        if block.get(key) is not None and not isinstance(block[key], dict):
            raise UserInputError(f"{path}: stage_two.{key} must be a mapping")
    for key in ("lr_grid", "loss_grid"):
        if config.get(key):
            raise UserInputError(f"{path}: stage_two runs continue chosen models: set {key}: null")


def _check_seeds_above(limit, key: str, path) -> None:
    """``{n: 50, seeds: [0]}``: a positive integer N and a non-empty list of integer seeds (None: no limit)."""
    if limit is None:
        return
    n = limit.get("n") if isinstance(limit, dict) else None
    seeds = limit.get("seeds") if isinstance(limit, dict) else None
    if (isinstance(n, bool) or not isinstance(n, int) or n < 1 or not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise UserInputError(f"{path}: {key} must be {{n: <positive integer>, seeds: [<integer>, ...]}}, got {limit!r}")


def seeds_at_size(limit, n_train: int, seeds: Sequence[int]) -> List[int]:
    """The seeds a study trains at training size ``n_train``: every one of ``seeds`` up to ``limit['n']``,
    above it only those also in ``limit['seeds']`` (``limit`` None: every seed at every N). Issue 21's
    design, ``seeds_above: {n: 50, seeds: [0]}``: three seeds for N <= 50, one at N = 292."""
    if limit is None or n_train <= int(limit["n"]):
        return [int(s) for s in seeds]
    return [int(s) for s in seeds if int(s) in {int(k) for k in limit["seeds"]}]


#: what a ``peers.<name>`` block may hold (studies.peers.PEER_DEFAULTS gives the first four)
#: MACE flags a loss_grid option may set (the loss and its weights, nothing else)
LOSS_FLAGS = ("loss", "energy_weight", "forces_weight", "stress_weight", "virials_weight")


def _check_loss_grid(grid, strategies, path) -> None:
    """``loss_grid``: ``options`` {tag: MACE loss flags}, optional ``strategies``, ``select``
    {n, seed}, ``energy_goal_meV_per_atom`` (studies.selection.choose_loss)."""
    if grid is None:
        return
    if not isinstance(grid, dict) or not isinstance(grid.get("options"), dict) or not grid["options"]:
        raise UserInputError(f"{path}: loss_grid needs 'options': {{tag: {{forces_weight: ..., energy_weight: ...}}}}")
    for tag, flags in grid["options"].items():
        unknown = sorted(set(flags or {}) - set(LOSS_FLAGS))
        if not isinstance(flags, dict) or unknown:
            raise UserInputError(f"{path}: loss_grid.options.{tag}: a mapping of {', '.join(LOSS_FLAGS)}"
                                 + (f" (not {unknown[0]!r})" if unknown else ""))
    for name in grid.get("strategies", []):
        if name not in strategies:
            raise UserInputError(f"{path}: loss_grid.strategies: {name!r} is not a strategy of this study")
    goal = grid.get("energy_goal_meV_per_atom", 5.0)
    if not isinstance(goal, (int, float)) or goal <= 0:
        raise UserInputError(f"{path}: loss_grid.energy_goal_meV_per_atom must be a positive number (meV/atom)")


PEER_KEYS = ("lr_grid", "max_epochs", "patience_epochs", "batch_size", "max_steps", "patience_steps", "loss",
             "energy_weight", "force_weight", "stress_weight")


def _check_peers(config: Dict[str, Any], path: Path) -> None:
    peers = config.get("peers")
    if not isinstance(peers, dict) or not peers:
        raise UserInputError(f"{path}: kind: peers needs a 'peers' mapping ({', '.join(PEERS)})")
    for name, block in peers.items():
        if name not in PEERS:
            raise UserInputError(f"{path}: unknown peer {name!r}; choose from {', '.join(PEERS)}")
        unknown = sorted(set(block or {}) - set(PEER_KEYS))
        if unknown:
            raise UserInputError(f"{path}: peers.{name}: unknown key {unknown[0]!r} ({', '.join(PEER_KEYS)})")
        grid = (block or {}).get("lr_grid")
        if grid is not None and (not isinstance(grid, list) or not grid or not all(
                isinstance(v, (int, float)) and v > 0 for v in grid)):
            raise UserInputError(f"{path}: peers.{name}.lr_grid must be a list of positive learning rates")
        for key in ("max_epochs", "patience_epochs", "batch_size", "max_steps", "patience_steps"):
            value = (block or {}).get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserInputError(f"{path}: peers.{name}.{key} must be a positive integer, got {value!r}")


def _merged(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` updated by ``override``; nested mappings merged, ``null`` removes a key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
            continue
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def converged_options(n_train: int, batch_size: int, budget: Dict[str, Any]) -> Dict[str, Any]:
    """MACE options of the converged recipe at training size N (``budget.mode: converged``);
    ``batch_size`` is the run's (at most N: see ``runs.Sweep.strategy_options``).

    Patience and limits are given in optimizer steps, so a run at N = 2 (one step an epoch) and one at
    N = 292 (59 steps) wait as long for an improvement: ``patience_steps`` -> epochs without a lower
    validation loss before the run stops (at least ``min_patience_epochs``); ``scheduler_patience_steps``
    -> MACE's plateau schedule patience (at least 3 epochs); ``max_steps`` -> the epoch cap (at most
    ``max_epochs``), which a converged run never reaches; ``min_improvement`` (relative, optional) ->
    ``--early_stop_min_delta``: smaller decreases of the validation loss do not count as improvements.
    """
    def epochs(key: str, default: int) -> int:
        return steps_to_epochs(int(budget.get(key, default)), n_train, batch_size)

    options = {"max_num_epochs": min(int(budget.get("max_epochs", 5000)), epochs("max_steps", 20000)),
               "early_stop_patience": max(int(budget.get("min_patience_epochs", 20)), epochs("patience_steps", 600)),
               "scheduler_patience": max(3, epochs("scheduler_patience_steps", 200)),
               "early_stop_min_epochs": int(budget.get("min_epochs", 0))}
    if budget.get("min_improvement"):  # absent in the studies recorded before it existed: their argv unchanged
        options["early_stop_min_delta"] = float(budget["min_improvement"])
    return options


def epochs_for(n_train: int, batch_size: int, budget: Dict[str, Any]) -> int:
    """Epoch budget at training size N: about ``steps`` optimizer steps, clipped to the limits."""
    if "epochs" in budget:
        return int(budget["epochs"])
    steps_per_epoch = math.ceil(n_train / batch_size)
    wanted = math.ceil(int(budget.get("steps", 200)) / steps_per_epoch)
    return int(min(int(budget.get("max_epochs", 100)), max(int(budget.get("min_epochs", 1)), wanted)))


def target_symbol(config: Dict[str, Any]) -> str:
    """The target element of ``element_map`` ("Si:Ge" -> "Ge")."""
    return config["element_map"].split(":")[-1].strip()


def run_name(strategy: str, n_train: int, seed: int) -> str:
    return f"{strategy}_N{n_train:04d}_s{seed}"

