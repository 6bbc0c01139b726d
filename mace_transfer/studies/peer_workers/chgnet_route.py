"""CHGNet route of the peer worker (imported by ``worker.py`` as ``chgnet_route``).

Runs in ``.venv-peers`` only; imports nothing of mace_transfer and no MACE. CPU only.

- :func:`calculator`: an ASE calculator of CHGNet 0.3.0 (the weights shipped in the chgnet wheel,
  nothing is downloaded) or of a checkpoint written by :func:`finetune`. ASE units: energy eV
  (total), forces eV/Å, stress eV/Å³ (6-vector, ASE Voigt order and sign).
- :func:`finetune`: fit CHGNet's AtomRef to the labels' energy zero, then train with CHGNet's own
  ``Trainer`` / ``StructureData`` / ``get_loader`` epoch by epoch, keeping the best-validation-loss
  checkpoint and stopping after ``patience_epochs`` epochs without improvement.

An energy shift (eV per atom of an element) is put into the model itself: CHGNet's AtomRef is an
intensive linear model, energy per atom = sum over elements of (atom fraction x weight), so adding
``d`` to an element's weight adds ``d`` eV per atom of that element to the total energy, and
nothing to forces or stress (AtomRef sees only the composition).
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.data import atomic_numbers
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from chgnet.data.dataset import StructureData, get_loader
from chgnet.model import CHGNet
from chgnet.model.dynamics import CHGNetCalculator
from chgnet.trainer import Trainer
from pymatgen.io.ase import AseAtomsAdaptor

MODEL_NAME = "0.3.0"
# CHGNet Trainer defaults (energy_loss_ratio, force_loss_ratio, stress_loss_ratio, criterion);
# MSE is also what CHGNet's fine-tuning example asks for.
DEFAULT_WEIGHTS = {"energy_weight": 1.0, "force_weight": 1.0, "stress_weight": 0.1}
DEFAULT_LOSS = "MSE"
HUBER_DELTA = 0.1  # CombinedLoss default delta (eV/atom, eV/Å, GPa alike)


def _load(model) -> CHGNet:
    """CHGNet 0.3.0 from the wheel (``model`` None) or from a ``finetune`` checkpoint, on CPU."""
    with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet v0.3.0 initialized with ..."
        if model is None:
            return CHGNet.load(model_name=MODEL_NAME, use_device="cpu", verbose=False)
        return CHGNet.from_file(str(model)).to("cpu")


def _shift_atomref(net: CHGNet, shift_eV_per_atom: dict) -> None:
    """Add ``{symbol: eV}`` to the AtomRef weight of each element (eV per atom of it)."""
    ref = net.composition_model
    if ref is None or not ref.is_intensive or not hasattr(ref, "fc"):
        raise ValueError("expected CHGNet with an intensive AtomRef composition model")
    with torch.no_grad():
        for symbol, ev in shift_eV_per_atom.items():
            ref.fc.weight[0, atomic_numbers[symbol] - 1] += float(ev)


class _Calculator(CHGNetCalculator):
    """CHGNet's ASE calculator, energy/forces/stress only, stress as an ASE Voigt 6-vector.

    CHGNetCalculator already converts: energy eV/atom x n_atoms -> eV, stress GPa x units.GPa ->
    eV/Å³ (CHGNet's stress is (1/V) dE/dstrain, ASE's sign), but leaves it a 3x3 matrix.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def calculate(self, atoms=None, properties=None, system_changes=None, task="efs"):
        super().calculate(atoms, properties, system_changes, task=task)
        self.results["energy"] = self.results["free_energy"] = float(self.results["energy"])
        self.results["forces"] = np.asarray(self.results["forces"], dtype=float)
        self.results["stress"] = full_3x3_to_voigt_6_stress(
            np.asarray(self.results["stress"], dtype=float))
        self.results.pop("crystal_fea", None)


def calculator(model, energy_shift_eV_per_atom: dict) -> CHGNetCalculator:
    """ASE calculator: ``model`` None (zero-shot CHGNet 0.3.0) or a checkpoint path from
    :func:`finetune`; ``energy_shift_eV_per_atom`` ``{symbol: eV}`` added per atom of that
    element to the energy (``{}``: none), put into the model's AtomRef weights.
    Results: energy eV (total), forces eV/Å, stress eV/Å³ (ASE Voigt 6-vector)."""
    net = _load(model)
    _shift_atomref(net, energy_shift_eV_per_atom or {})
    with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet will run on cpu"
        return _Calculator(model=net, use_device="cpu", on_isolated_atoms="warn")


def _graphs(net: CHGNet, frames: list) -> tuple[list, list]:
    """Frames CHGNet can represent and their crystal graphs (frames with an atom that has no
    neighbour within the 6 Å cutoff, e.g. an isolated atom, are dropped)."""
    kept, graphs = [], []
    for atoms in frames:
        try:
            graphs.append(net.graph_converter(AseAtomsAdaptor.get_structure(atoms)))
        except ValueError:
            continue
        kept.append(atoms)
    return kept, graphs


def _fit_reference(net: CHGNet, frames: list, graphs: list) -> dict:
    """Per-element shift (eV/atom) of the energy zero from ``net`` to the labels: least squares of
    the per-atom residual (REF_energy - predicted)/n against atom fractions (the form of CHGNet's
    intensive AtomRef); one element: the mean residual per atom."""
    pred = net.predict_graph(graphs, task="e", batch_size=16)
    pred = [pred] if isinstance(pred, dict) else pred
    symbols = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    fractions = np.zeros((len(frames), len(symbols)))
    residual = np.zeros(len(frames))
    for i, (atoms, p) in enumerate(zip(frames, pred)):
        counts = Counter(atoms.get_chemical_symbols())
        fractions[i] = [counts[s] / len(atoms) for s in symbols]
        residual[i] = atoms.info["REF_energy"] / len(atoms) - float(p["e"])
    delta = np.linalg.lstsq(fractions, residual, rcond=None)[0]
    return {s: float(d) for s, d in zip(symbols, delta)}


def _dataset(net: CHGNet, frames: list, with_stress: bool) -> StructureData:
    """CHGNet StructureData: energy eV/atom, forces eV/Å, stress in VASP's kbar convention
    (StructureData multiplies by -0.1 to get CHGNet's GPa, ASE sign)."""
    stresses = None
    if with_stress:
        stresses = [voigt_6_to_full_3x3_stress(np.asarray(a.info["REF_stress"], dtype=float))
                    / units.GPa * -10.0 for a in frames]
    with contextlib.redirect_stdout(io.StringIO()):
        return StructureData(
            structures=[AseAtomsAdaptor.get_structure(a) for a in frames],
            energies=[a.info["REF_energy"] / len(a) for a in frames],
            forces=[np.asarray(a.arrays["REF_forces"], dtype=float) for a in frames],
            stresses=stresses, graph_converter=net.graph_converter, shuffle=False)


class _LossLog:
    """Wraps the Trainer's CombinedLoss, keeping the frame-weighted mean of its loss."""

    def __init__(self, loss):
        self.loss, self.total, self.frames = loss, 0.0, 0

    def __call__(self, targets, prediction):
        out = self.loss(targets, prediction)
        self.total += float(out["loss"]) * len(targets["e"])
        self.frames += len(targets["e"])
        return out

    def take(self) -> float:
        mean = self.total / max(self.frames, 1)
        self.total, self.frames = 0.0, 0
        return mean


def finetune(train: list, valid: list, settings: dict, out_dir: Path) -> dict:
    """Fine-tune CHGNet 0.3.0 on ``train`` (REF_energy eV, REF_forces eV/Å, REF_stress eV/Å³),
    choosing the epoch by the validation loss on ``valid``; see the module docstring.

    ``settings``: lr, max_epochs, patience_epochs, batch_size, seed, optional loss ('MSE' |
    'Huber' | 'MAE') and energy_weight / force_weight / stress_weight. Returns the result dict
    of the worker's ``finetune`` task (MAEs in meV/atom and meV/Å, wall_s cumulative seconds
    since the first epoch began; train_loss is the running mean over the epoch's batches while
    training, valid_loss the same CombinedLoss on the validation frames after the epoch)."""
    seed = int(settings["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    net = _load(None)
    n_given = (len(train), len(valid))
    train, train_graphs = _graphs(net, train)
    valid, _ = _graphs(net, valid)
    shift = _fit_reference(net, train, train_graphs)
    _shift_atomref(net, shift)
    for param in net.composition_model.parameters():  # Trainer.train's default: AtomRef frozen
        param.requires_grad = False

    with_stress = all("REF_stress" in a.info for a in train + valid)
    targets = "efs" if with_stress else "ef"
    loss = settings.get("loss") or DEFAULT_LOSS
    weights = {k: float(settings.get(k, v)) for k, v in DEFAULT_WEIGHTS.items()}
    batch_size, max_epochs = int(settings["batch_size"]), int(settings["max_epochs"])
    train_loader = get_loader(_dataset(net, train, with_stress), batch_size=batch_size,
                              pin_memory=False)
    valid_loader = get_loader(_dataset(net, valid, with_stress), batch_size=batch_size,
                              pin_memory=False)
    trainer = Trainer(
        model=net, targets=targets, criterion=loss, delta=HUBER_DELTA,
        energy_loss_ratio=weights["energy_weight"], force_loss_ratio=weights["force_weight"],
        stress_loss_ratio=weights["stress_weight"], optimizer="Adam", scheduler="CosLR",
        epochs=max_epochs, learning_rate=float(settings["lr"]), torch_seed=seed, data_seed=seed,
        use_device="cpu", print_freq=10**9)
    log = trainer.criterion = _LossLog(trainer.criterion)

    checkpoint = out_dir / "chgnet_best.pth.tar"
    curve = {k: [] for k in ("epoch", "train_loss", "valid_loss", "valid_force_mae_meV_A",
                             "valid_energy_mae_meV_atom", "wall_s")}
    best_loss, best_epoch, start = math.inf, 0, time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet's own per-batch lines
            trainer._train(train_loader, epoch - 1)
            train_loss = log.take()
            mae = trainer._validate(valid_loader)
            valid_loss = log.take()
        row = (epoch, train_loss, valid_loss, 1000 * mae["f"], 1000 * mae["e"],
               time.perf_counter() - start)
        for key, value in zip(curve, row):
            curve[key].append(value)
        improved = valid_loss < best_loss
        if improved:
            best_loss, best_epoch = valid_loss, epoch
            trainer.save(filename=str(checkpoint))
        print(f"chgnet epoch {epoch}/{max_epochs} train_loss {train_loss:.5g} valid_loss "
              f"{valid_loss:.5g} valid_F_MAE {row[3]:.1f} meV/A valid_E_MAE {row[4]:.2f} "
              f"meV/atom {row[5]:.1f} s{' *' if improved else ''}", flush=True)
        if not math.isfinite(train_loss) or epoch - best_epoch >= int(settings["patience_epochs"]):
            break

    return {
        "checkpoint": str(checkpoint), "best_epoch": best_epoch, "epochs_run": len(curve["epoch"]),
        "energy_shift_eV_per_atom": shift, "curve": curve,
        "route": {
            "model": f"CHGNet {MODEL_NAME} (wheel weights)", "chgnet_version": version("chgnet"),
            "targets": targets, "loss": loss,
            "huber_delta": HUBER_DELTA if loss == "Huber" else None,
            "weights": weights, "optimizer": "Adam (weight_decay 0)",
            "scheduler": "CosLR: CosineAnnealingLR T_max=10*max_epochs, eta_min=0.01*lr, "
                         "stepped up to 10 times per epoch",
            "lr": float(settings["lr"]), "batch_size": batch_size, "seed": seed,
            "trainable": "all CHGNet weights except AtomRef (frozen after the reference fit)",
            "energy_reference": "AtomRef weights += per-element least-squares shift (eV/atom)",
            "energy_label": "REF_energy / n_atoms (eV/atom, CHGNet is intensive)",
            "stress_label": "REF_stress in GPa, ASE sign" if with_stress else None,
            "selection": "lowest validation loss (CHGNet CombinedLoss), early stop after "
                         f"{int(settings['patience_epochs'])} epochs without improvement",
            "frames_used": {"train": len(train), "valid": len(valid)},
            "frames_dropped_isolated_atoms": {"train": n_given[0] - len(train),
                                              "valid": n_given[1] - len(valid)},
            "checkpoint_format": "chgnet Trainer.save (CHGNet.from_file loads it)",
        },
    }
