"""SevenNet-0 route of the peer worker (imported by ``worker.py`` as ``sevenn_route``).

Runs only in ``.venv-peers`` (sevenn 0.13); imports nothing of mace_transfer and no MACE.
Units everywhere on this side: energy eV, forces eV/Å, stress eV/Å³ in ASE's Voigt order
(xx, yy, zz, yz, xz, xy) and ASE's sign. SevenNet keeps stress internally as minus that, in the
order (xx, yy, zz, xy, yz, zx); its ``SevenNetCalculator`` converts back to ASE's, and the labels
below are converted to SevenNet's the same way its own ``dataload._set_atoms_y`` does.

Fine-tuning follows SevenNet's ``continue`` route (``sevenn/presets/fine_tune.yaml``,
``scripts/train.py``): model and config from the 7net-0 checkpoint, its ``Trainer``,
``LossDefinition``s, ``ErrorRecorder`` and optimizer/scheduler tables, checkpoints written by
``Trainer.write_checkpoint`` so ``SevenNetCalculator`` / ``sevenn.util.load_checkpoint`` read them.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import all_changes

import sevenn
import sevenn._keys as KEY
from sevenn.calculator import SevenNetCalculator

MODEL_NAME = "7net-0"  # SevenNet-0 (11Jul2024), shipped inside the sevenn wheel
# SevenNet's own fine-tuning defaults (sevenn/presets/fine_tune.yaml)
FT_DEFAULTS = {"loss": "huber", "huber_delta": 0.01, "energy_weight": 1.0, "force_weight": 1.0,
               "stress_weight": 0.01, "scheduler": "exponentiallr", "gamma": 0.99}


class _ShiftedSevenNet(SevenNetCalculator):
    """SevenNetCalculator adding ``shift[symbol]`` eV per atom to energy (forces, stress unchanged)."""

    def __init__(self, model: str, shift: dict):
        super().__init__(model, device="cpu")
        self.shift = {str(k): float(v) for k, v in shift.items()}

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        per_atom = np.array([self.shift.get(s, 0.0) for s in self.atoms.get_chemical_symbols()])
        self.results["energies"] = self.results["energies"] + per_atom
        for key in ("energy", "free_energy"):
            self.results[key] = float(self.results[key] + per_atom.sum())


def calculator(model, energy_shift_eV_per_atom: dict):
    """ASE calculator (CPU): ``model`` None = zero-shot 7net-0 from the wheel (no download), else a
    checkpoint path written by :func:`finetune`. ``energy_shift_eV_per_atom`` {symbol: eV} is added
    per atom of that element to the energy (eV); {} for none. Stress eV/Å³, ASE Voigt and sign."""
    name = MODEL_NAME if model is None else str(model)
    if not energy_shift_eV_per_atom:
        return SevenNetCalculator(name, device="cpu")
    return _ShiftedSevenNet(name, energy_shift_eV_per_atom)


def _graphs(frames, cutoff: float) -> list:
    """SevenNet graphs with labels: y_energy eV, y_force eV/Å, y_stress eV/Å³ in SevenNet's order
    and sign (NaN where a frame has no REF_stress or is not periodic: SevenNet's losses skip NaN)."""
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import atoms_to_graph

    graphs = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.info["y_energy"] = float(atoms.info["REF_energy"])
        atoms.arrays["y_force"] = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        stress = atoms.info.get("REF_stress")
        y_stress = np.full(6, np.nan)
        if stress is not None and atoms.pbc.all():
            s = np.asarray(stress, dtype=float).reshape(-1)
            if s.size == 9:  # 3x3 -> ASE Voigt
                s = s.reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            y_stress = -s[[0, 1, 2, 5, 3, 4]]
        atoms.info["y_stress"] = y_stress
        graphs.append(AtomGraphData.from_numpy_dict(atoms_to_graph(atoms, cutoff, transfer_info=False)))
    return graphs


def _energy_reference(model, frames, graphs, batch_size: int) -> dict:
    """Per-element delta (eV/atom) = least squares of (E_ref - E_7net-0) on element counts."""
    from torch_geometric.loader import DataLoader

    model.set_is_batch_data(True)
    model.eval()
    predicted = []
    for batch in DataLoader(graphs, batch_size=batch_size, shuffle=False):
        predicted.append(model(batch)[KEY.PRED_TOTAL_ENERGY].detach().reshape(-1).double())
    residual = np.array([a.info["REF_energy"] for a in frames]) - torch.cat(predicted).numpy()
    symbols = sorted({s for a in frames for s in a.get_chemical_symbols()})
    counts = np.array([[a.get_chemical_symbols().count(s) for s in symbols] for a in frames], float)
    if len(symbols) == 1:
        return {symbols[0]: float(np.mean(residual / counts[:, 0]))}
    coef = np.linalg.lstsq(counts, residual, rcond=None)[0]
    return {s: float(c) for s, c in zip(symbols, coef)}


def _put_shift(model, config: dict, delta: dict) -> None:
    """Add delta (eV/atom) to SevenNet's per-species atomic-energy shift (``rescale_atomic_energy``,
    indexed by type_map[Z]) and to the config's Z-indexed ``shift`` list, so the checkpoint alone
    predicts energies on the labels' zero."""
    from ase.data import atomic_numbers

    type_map = config[KEY.TYPE_MAP]
    with torch.no_grad():
        for symbol, value in delta.items():
            z = atomic_numbers[symbol]
            model.rescale_atomic_energy.shift[type_map[z]] += value
            if isinstance(config.get(KEY.SHIFT), list):
                config[KEY.SHIFT][z] = float(config[KEY.SHIFT][z] + value)


def finetune(train: list, valid: list, settings: dict, out_dir: Path) -> dict:
    """Fit the energy reference into 7net-0, fine-tune all weights with SevenNet's Trainer (Adam,
    ``lr``, ``batch_size``, ``seed``), up to ``max_epochs`` with early stop after
    ``patience_epochs`` without a better validation loss; keep the best as ``checkpoint_best.pth``.
    Losses: per-atom energy (eV/atom), forces (eV/Å), stress (kbar, SevenNet's unit)."""
    import sevenn.util as util
    from sevenn.error_recorder import ErrorRecorder
    from sevenn.train.loss import get_loss_functions_from_config
    from sevenn.train.optim import optim_dict, scheduler_dict
    from sevenn.train.trainer import Trainer
    from torch_geometric.loader import DataLoader

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed, batch_size = int(settings["seed"]), int(settings["batch_size"])
    lr, max_epochs, patience = float(settings["lr"]), int(settings["max_epochs"]), int(settings["patience_epochs"])
    loss = str(settings.get("loss", FT_DEFAULTS["loss"])).lower()
    weights = {k: float(settings.get(f"{k}_weight", FT_DEFAULTS[f"{k}_weight"]))
               for k in ("energy", "force", "stress")}
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    checkpoint = util.load_checkpoint(MODEL_NAME)
    config, model = checkpoint.config, checkpoint.build_model()
    train_graphs, valid_graphs = _graphs(train, config[KEY.CUTOFF]), _graphs(valid, config[KEY.CUTOFF])
    delta = _energy_reference(model, train, train_graphs, batch_size)
    _put_shift(model, config, delta)

    has_stress = any(not torch.isnan(g[KEY.STRESS]).all() for g in train_graphs)
    loss_param = {"delta": FT_DEFAULTS["huber_delta"]} if loss == "huber" else {}
    scheduler_param = {"gamma": FT_DEFAULTS["gamma"]}
    config.update({
        KEY.LOSS: loss, KEY.LOSS_PARAM: loss_param, KEY.FORCE_WEIGHT: weights["force"],
        KEY.STRESS_WEIGHT: weights["stress"], KEY.IS_TRAIN_STRESS: has_stress and weights["stress"] > 0,
        KEY.OPTIMIZER: "adam", KEY.OPTIM_PARAM: {"lr": lr}, KEY.SCHEDULER: FT_DEFAULTS["scheduler"],
        KEY.SCHEDULER_PARAM: scheduler_param, KEY.BATCH_SIZE: batch_size, KEY.EPOCH: max_epochs,
        KEY.RANDOM_SEED: seed, KEY.TRAIN_SHIFT_SCALE: False, KEY.DEVICE: "cpu", KEY.IS_DDP: False,
        KEY.ERROR_RECORD: [["Energy", "MAE"], ["Force", "MAE"], ["TotalLoss", "None"]],
        KEY.CONTINUE: {KEY.CHECKPOINT: MODEL_NAME, KEY.RESET_OPTIMIZER: True,
                       KEY.RESET_SCHEDULER: True, KEY.RESET_EPOCH: True},
        # the state dict is now in this sevenn's layout: with 7net-0's "0.9.1" left in the config,
        # load_checkpoint would re-sort the convolution weights (backward_compatibility) again
        "version": sevenn.__version__,
    })
    loss_functions = get_loss_functions_from_config(config)
    loss_functions[0] = (loss_functions[0][0], weights["energy"])  # sevenn hard-codes energy 1.0
    trainer = Trainer(model, loss_functions, optim_dict["adam"], {"lr": lr},
                      scheduler_dict[FT_DEFAULTS["scheduler"]], scheduler_param, device="cpu")
    recorders = {k: ErrorRecorder.from_config(config, trainer.loss_functions) for k in ("train", "valid")}
    loaders = {"train": DataLoader(train_graphs, batch_size=batch_size, shuffle=True),
               "valid": DataLoader(valid_graphs, batch_size=batch_size, shuffle=False)}

    path = out_dir / "checkpoint_best.pth"
    curve = {k: [] for k in ("epoch", "train_loss", "valid_loss", "valid_force_mae_meV_A",
                             "valid_energy_mae_meV_atom", "wall_s")}
    best, best_epoch, setup_s = float("inf"), 0, time.perf_counter() - start
    train_start = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        epoch_start = time.perf_counter()
        errors = {}
        for key in ("train", "valid"):
            trainer.run_one_epoch(loaders[key], is_train=key == "train", error_recorder=recorders[key])
            errors[key] = {m.name: float(m.get()) for m in recorders[key].metrics}
            recorders[key].epoch_forward()  # history + reset
        trainer.scheduler_step()
        valid_loss = errors["valid"]["TotalLoss"]
        if valid_loss < best:
            best, best_epoch = valid_loss, epoch
            trainer.write_checkpoint(str(path), config=config, epoch=epoch)
        now = time.perf_counter()
        for key, value in (("epoch", epoch), ("train_loss", errors["train"]["TotalLoss"]),
                           ("valid_loss", valid_loss),
                           ("valid_force_mae_meV_A", 1000 * errors["valid"]["Force_MAE"]),
                           ("valid_energy_mae_meV_atom", 1000 * errors["valid"]["Energy_MAE"]),
                           ("wall_s", now - train_start)):
            curve[key].append(value)
        print(f"epoch {epoch} train_loss {curve['train_loss'][-1]:.6g} valid_loss {valid_loss:.6g} "
              f"valid_F_MAE {curve['valid_force_mae_meV_A'][-1]:.1f} meV/A "
              f"valid_E_MAE {curve['valid_energy_mae_meV_atom'][-1]:.2f} meV/atom "
              f"{now - epoch_start:.1f} s", flush=True)
        if epoch - best_epoch >= patience:
            break

    route = {
        "model": MODEL_NAME, "model_file": checkpoint.checkpoint_path, "sevenn_version": sevenn.__version__,
        "trainer": "sevenn.train.trainer.Trainer", "recorder": "sevenn.error_recorder.ErrorRecorder",
        "loss": loss, "loss_param": loss_param,
        "loss_terms": "per-atom energy eV/atom, force eV/A, stress kbar (sevenn LossDefinitions)",
        "weights": weights, "is_train_stress": config[KEY.IS_TRAIN_STRESS],
        "optimizer": "adam", "optim_param": {"lr": lr},
        "scheduler": FT_DEFAULTS["scheduler"], "scheduler_param": scheduler_param,
        "batch_size": batch_size, "max_epochs": max_epochs, "patience_epochs": patience, "seed": seed,
        "train_shift_scale": False, "trained": "all weights (shift/scale fixed, as fine_tune.yaml)",
        "energy_reference": "delta added to rescale_atomic_energy.shift per element",
        "best_metric": "valid TotalLoss", "train_frames": len(train), "valid_frames": len(valid),
    }
    return {"checkpoint": str(path), "best_epoch": best_epoch, "epochs_run": len(curve["epoch"]),
            "energy_shift_eV_per_atom": delta, "curve": curve, "route": route, "setup_s": setup_s}
