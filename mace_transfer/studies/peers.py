"""The yardstick (issue 22): universal potentials fine-tuned on exactly the learning curve's data.

SevenNet-0 (``sevenn`` 0.13) and CHGNet 0.3.0 (``chgnet`` 0.4.2) ship their weights inside their
PyPI wheels, but SevenNet needs e3nn >= 0.5 and MACE 0.3.16 pins 0.4.4: the peers live in their own
environment (``make peers`` -> ``.venv-peers``) and this driver runs them through files
(:mod:`mace_transfer.studies.peer_workers.worker`: extxyz and a JSON job in, predictions,
checkpoints and a JSON result out). Nothing here imports a peer.

Same data as the learning curve (:class:`~mace_transfer.studies.data.StudyData`: the validation
cells, the nested training subsets of each seed, the test file), same error code
(:func:`mace_transfer.evaluate.errors.test_errors`, through :class:`PredictedCalculator`), records
of the same shape in ``<out>/records/`` (``strategy`` = the peer), so one report reads both.

Per peer (config ``peers.<name>``): the zero-shot model with its energy zero moved to the labels'
(one constant per element, least squares on the validation cells: CP2K's zero is ~100 eV/atom from
the VASP zero the peers learnt); fine-tuning with the peer's own trainer (the route fits the same
constant on the training cells first, inside the model), learning rate chosen on validation from
``lr_grid`` at ``select`` (N, seed), best-validation checkpoint, early stop after
``patience_epochs``; MD speed (atom-steps/s, NVE, 64- and 512-atom diamond Ge, 1 and 2 threads).

Usage (a learning-curve config with ``kind: peers``)::

    make peers
    mace_transfer_learning_curve --config configs/peers_ge.yaml [--sizes 5,20] [--seeds 0] \
        [--strategies sevenn,chgnet] [--timing] [--report-only]
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError
from ase.calculators.calculator import Calculator, all_changes

from mace_transfer.studies import selection
from mace_transfer.studies.config import METRICS, PEERS, RECORDS, run_name, seeds_at_size
from mace_transfer.studies.data import StudyData
from mace_transfer.studies.records import write_json
from mace_transfer.evaluate.errors import fit_energy_shift  # noqa: F401 (re-exported)

#: the environment variable naming the peers' Python (default: ./.venv-peers/bin/python)
PEERS_PYTHON_VARIABLE = "MACE_TRANSFER_PEERS_PYTHON"
WORKER = Path(__file__).resolve().parent / "peer_workers" / "worker.py"
#: what a peer's block may hold, with the defaults
PEER_DEFAULTS = {"lr_grid": [1e-3, 3e-4], "max_epochs": 300, "patience_epochs": 30, "batch_size": 5}
#: optional step budgets (binding only at large N, where an epoch holds many optimizer steps)
PEER_STEP_BUDGETS = ("max_steps", "patience_steps")


def peer_epochs(n_cells: int, spec: Dict[str, Any]) -> Dict[str, int]:
    """Epoch cap and early-stop patience (epochs) at ``n_cells`` training cells: ``max_epochs`` and
    ``patience_epochs``, each shortened to ``max_steps`` / ``patience_steps`` optimizer steps when
    those are given (as the MACE study budgets in steps, so N = 292 does not wait 120 epochs of
    59 steps); patience never below 3 epochs."""
    steps_per_epoch = math.ceil(n_cells / int(spec["batch_size"]))
    max_epochs, patience = int(spec["max_epochs"]), int(spec["patience_epochs"])
    if spec.get("max_steps") is not None:
        max_epochs = max(1, min(max_epochs, math.ceil(int(spec["max_steps"]) / steps_per_epoch)))
    if spec.get("patience_steps") is not None:
        patience = max(3, min(patience, math.ceil(int(spec["patience_steps"]) / steps_per_epoch)))
    return {"max_epochs": max_epochs, "patience_epochs": patience}


def peers_python() -> Path:
    """The Python of the peers' environment; one-line error when ``make peers`` has not run."""
    path = Path(os.environ.get(PEERS_PYTHON_VARIABLE) or Path(".venv-peers") / "bin" / "python")
    if not path.is_file():
        raise UserInputError(f"the peers' environment is missing ({path} not found): run `make peers` "
                             f"(or set {PEERS_PYTHON_VARIABLE})")
    return path


def run_job(job: Dict[str, Any], folder: Path, threads: int = 1) -> Dict[str, Any]:
    """Run one worker job in the peers' environment; its result (JSON). Output goes to
    ``<folder>/<task>.log``; a failed job raises with the log's last lines."""
    folder.mkdir(parents=True, exist_ok=True)
    job = dict(job, threads=threads, result=str(folder / f"{job['task']}_result.json"))
    job_path = folder / f"{job['task']}_job.json"
    write_json(job_path, job)
    log = folder / f"{job['task']}.log"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as handle:
        code = subprocess.run([str(peers_python()), str(WORKER), str(job_path)], stdout=handle,
                              stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"peer job {job_path} failed (exit {code}):\n{tail}")
    return json.loads(Path(job["result"]).read_text())


def _frame_key(atoms) -> bytes:
    """Identity of a configuration (species, positions to 1e-6 Å, cell) for a prediction lookup."""
    parts = (np.asarray(atoms.numbers, dtype=np.int64), np.round(atoms.positions, 6),
             np.round(np.asarray(atoms.cell.array), 6))
    return b"".join(np.ascontiguousarray(p).tobytes() for p in parts)


class PredictedCalculator(Calculator):
    """An ASE calculator that answers from a peer's stored predictions (``peer_energy`` eV,
    ``peer_forces`` eV/Å, ``peer_stress`` eV/Å³) plus ``shift_eV_per_atom`` per atom, so the
    product's error code runs unchanged; a configuration without a prediction is an error."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, predicted_frames, shift_eV_per_atom: Optional[Dict[str, float]] = None):
        super().__init__()
        self.table = {_frame_key(a): a for a in predicted_frames}
        self.shift = dict(shift_eV_per_atom or {})

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        found = self.table.get(_frame_key(self.atoms))
        if found is None:
            raise KeyError("no stored peer prediction for this configuration")
        energy = float(found.info["peer_energy"]) + sum(
            self.shift.get(s, 0.0) for s in self.atoms.get_chemical_symbols())
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": np.asarray(found.arrays["peer_forces"], dtype=float)}
        if "peer_stress" in found.info:
            self.results["stress"] = np.asarray(found.info["peer_stress"], dtype=float)


class PeerCalculator(Calculator):
    """A peer as a live ASE calculator: a worker process in the peers' environment answers each
    configuration (energy eV, forces eV/Å, stress eV/Å³), so the product's MD ladder, E-V and
    close-contact code runs on a peer unchanged. ``model``: a fine-tuned checkpoint, or None for
    the shipped weights; ``shift_eV_per_atom`` moves the energy zero. Close it (or use ``with``)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, peer: str, model=None, shift_eV_per_atom: Optional[Dict[str, float]] = None,
                 threads: int = 1, log=None):
        super().__init__()
        if peer not in PEERS:
            raise UserInputError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
        import tempfile

        self.label = f"{peer}:{Path(model).name if model else 'zero-shot'}"
        self._folder = Path(tempfile.mkdtemp(prefix="peer_calc_"))
        job = self._folder / "serve.json"
        job.write_text(json.dumps({"peer": peer, "model": None if model is None else str(model),
                                   "energy_shift_eV_per_atom": dict(shift_eV_per_atom or {}), "threads": threads}))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self._log = open(log or self._folder / "serve.log", "w")
        self._process = subprocess.Popen([str(peers_python()), str(WORKER), "--serve", str(job)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                         text=True, env=env)
        self._read()  # {"ready": true} once the peer's model is loaded

    def _read(self) -> Dict[str, Any]:
        line = self._process.stdout.readline()
        if not line:
            self._log.flush()
            raise RuntimeError(f"peer worker stopped: {self._log.name}")
        return json.loads(line)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        request = {"numbers": self.atoms.numbers.tolist(), "positions": self.atoms.positions.tolist(),
                   "cell": self.atoms.cell.array.tolist(), "pbc": self.atoms.pbc.tolist()}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        answer = self._read()
        self.results = {"energy": answer["energy"], "free_energy": answer["energy"],
                        "forces": np.asarray(answer["forces"], dtype=float)}
        if answer["stress"] is not None:
            self.results["stress"] = np.asarray(answer["stress"], dtype=float)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=60)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PeerSweep(StudyData):
    """Zero-shot and fine-tuned peers on a learning-curve config's data (``kind: peers``)."""

    def __init__(self, config: Dict[str, Any], out=None, work=None, progress=print):
        super().__init__(config, out, work, progress)
        self.threads = int(config.get("threads", 1))
        unknown = sorted(set(config.get("peers") or {}) - set(PEERS))
        if unknown or not config.get("peers"):
            raise UserInputError(f"peers: {', '.join(unknown) or 'none given'}; choose from {', '.join(PEERS)}")

    def settings(self, peer: str) -> Dict[str, Any]:
        return dict(PEER_DEFAULTS, **(self.config["peers"].get(peer) or {}))

    # -------------------------------------------------------------- predictions
    def predict(self, peer: str, model: Optional[str], frames, folder: Path) -> list:
        """``frames`` with the peer's raw predictions (``peer_energy``, ``peer_forces``, ``peer_stress``)."""
        from ase.io import read, write

        folder.mkdir(parents=True, exist_ok=True)
        write(folder / "frames.xyz", list(frames), format="extxyz")
        run_job({"peer": peer, "task": "predict", "model": model, "energy_shift_eV_per_atom": {},
                 "frames": str(folder / "frames.xyz"), "out": str(folder / "predicted.xyz")},
                folder, self.threads)
        return read(folder / "predicted.xyz", ":")

    def errors(self, predicted, frames, shift: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        """The product's test errors of stored predictions (overall, per config_type)."""
        from mace_transfer.evaluate import test_errors

        errors = test_errors(PredictedCalculator(predicted, shift), frames, progress=False)
        return {"overall": {k: errors["overall"][k] for k in METRICS},
                "per_config_type": {k: {m: v[m] for m in METRICS} for k, v in errors["per_config_type"].items()}}

    def zero_shot(self, peers: Sequence[str]) -> Dict[str, Any]:
        """Each peer's shipped weights on the test set, its energy zero moved to the labels' by one
        constant per element fitted on the validation cells (no test data used)."""
        path = self.out / "zero_shot.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
        for peer in peers:
            if peer in result and "stress_mae_meV_per_A3" in result[peer]:
                continue  # (a record from before stress was measured is redone: same weights, same forces)
            self.say(f"zero-shot {peer}: predicting {len(self.valid_frames())} validation and "
                     f"{len(self.frames('test'))} test configurations")
            folder = self.work / "zero_shot" / peer
            valid = self.predict(peer, None, self.valid_frames(), folder / "valid")
            shift = fit_energy_shift(self.valid_frames(), [a.info["peer_energy"] for a in valid])
            test = self.predict(peer, None, self.frames("test"), folder / "test")
            errors = self.errors(test, self.frames("test"), shift)
            result = json.loads(path.read_text()) if path.is_file() else {}  # another process may have added a peer
            result[peer] = dict(errors["overall"], per_config_type=errors["per_config_type"],
                                energy_shift_eV_per_atom=shift, fitted_on="validation cells")
            write_json(path, result)
            self.say(f"zero-shot {peer}: test force MAE {errors['overall']['force_mae_meV_per_A']:.1f} meV/Å, "
                     f"energy MAE {errors['overall']['energy_mae_meV_per_atom']:.1f} meV/atom")
        return result

    # -------------------------------------------------------------- fine-tuning
    def train_run(self, peer: str, n_train: int, seed: int, record_path: Path, lr: float) -> Dict[str, Any]:
        """Fine-tune ``peer`` on the learning curve's (N, seed) subset; test it; write the record."""
        name = record_path.stem
        folder = self.work / name
        subset = self.write_subset(folder, n_train, seed)
        spec = self.settings(peer)
        n_cells = n_train + subset["n_extra_train"]
        settings = {"lr": float(lr), "seed": int(seed), "batch_size": min(int(spec["batch_size"]), n_cells),
                    **peer_epochs(n_cells, dict(spec, batch_size=min(int(spec["batch_size"]), n_cells)))}
        settings.update({k: v for k, v in spec.items() if k not in PEER_DEFAULTS and k not in PEER_STEP_BUDGETS})
        self.say(f"{name}: fine-tuning {PEERS[peer]}, lr {lr:g}, up to {settings['max_epochs']} epochs")
        start = time.time()
        result = run_job({"peer": peer, "task": "finetune", "train": subset["train_file"],
                          "valid": subset["valid_file"], "out_dir": str(folder / "model"),
                          "settings": settings}, folder, self.threads)
        wall = time.time() - start
        test = self.predict(peer, result["checkpoint"], self.frames("test"), folder / "test")
        errors = self.errors(test, self.frames("test"))
        curve = result["curve"]
        best = int(result["best_epoch"])
        record = {
            "strategy": peer, "peer": PEERS[peer], "n_train": n_train, "seed": seed, "name": name, "lr": float(lr),
            "settings": settings, "route": result.get("route"), "versions": result.get("versions"),
            "test": errors["overall"], "test_per_config_type": errors["per_config_type"],
            "wall_s": wall, "epochs_run": int(result["epochs_run"]), "best_epoch": best,
            "converged": int(result["epochs_run"]) < settings["max_epochs"],
            "best_valid_loss": min(curve["valid_loss"]),
            "best_valid_mae_f_meV_A": curve["valid_force_mae_meV_A"][best - 1],
            "energy_shift_eV_per_atom": result.get("energy_shift_eV_per_atom"),
            "train_indices": subset["train_indices"], "n_extra_train": subset["n_extra_train"],
            "checkpoint": result["checkpoint"], "curve": curve,
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(record_path, record)
        return record

    def lr_choice(self, peer: str) -> float:
        """The grid value with the lowest best validation loss at ``peers_select`` (N, seed)
        (:func:`selection.choose_lr`: ``<out>/lr_selection/<peer>.json``, resumable; the chosen
        run is reused by the sweep)."""
        select = self.config.get("peers_select") or {"n": 20, "seed": 0}
        n_train, seed = int(select["n"]), int(select["seed"])

        def summarise(record):
            return {"best_valid_loss": record["best_valid_loss"],
                    "best_valid_mae_f_meV_A": record["best_valid_mae_f_meV_A"],
                    "test_force_mae_meV_per_A": record["test"]["force_mae_meV_per_A"],
                    "epochs_run": record["epochs_run"], "wall_s": record["wall_s"]}

        return selection.choose_lr(self.out, peer, [float(v) for v in self.settings(peer)["lr_grid"]],
                                   n_train, seed, lambda lr, path: self.train_run(peer, n_train, seed, path, lr),
                                   summarise, self.say)

    def sweep(self, sizes: Sequence[int], seeds: Sequence[int], peers: Sequence[str],
              max_runs: Optional[int] = None) -> int:
        """Fine-tune every missing (peer, N, seed); ``peers_seeds_above`` limits the seeds at large N."""
        lrs = {peer: self.lr_choice(peer) for peer in peers}
        few = self.config.get("peers_seeds_above")  # e.g. {n: 20, seeds: [0]}: one seed where N > 20
        plan = [(p, n, s) for n in sizes for s in seeds_at_size(few, n, seeds) for p in peers]
        todo = [p for p in plan if not (self.out / RECORDS / f"{run_name(*p)}.json").is_file()]
        self.say(f"peers: {len(plan)} runs, {len(plan) - len(todo)} done already, {len(todo)} to train")
        for number, (peer, n_train, seed) in enumerate(todo[:max_runs] if max_runs is not None else todo, 1):
            path = self.out / RECORDS / f"{run_name(peer, n_train, seed)}.json"
            selected = self.out / "selection" / f"lr-{peer}-{lrs[peer]:g}_N{n_train:04d}_s{seed}.json"
            if selected.is_file():
                record = dict(json.loads(selected.read_text()), name=path.stem, reused_from=str(selected))
                write_json(path, record)
            else:
                record = self.train_run(peer, n_train, seed, path, lrs[peer])
            self.say(f"[{number}/{len(todo)}] {peer:8s} N={n_train:<4d} seed={seed}: test force MAE "
                     f"{record['test']['force_mae_meV_per_A']:7.1f} meV/Å, energy MAE "
                     f"{record['test']['energy_mae_meV_per_atom']:6.2f} meV/atom, {record['epochs_run']} epochs "
                     f"(best {record['best_epoch']}), {record['wall_s']:.0f} s")
        return len(todo)

    # -------------------------------------------------------------- MD ladder, a0, B
    def md_and_properties(self, peers: Sequence[str], seeds: Optional[Sequence[int]] = None) -> None:
        """The MD stability ladder and a0/B of each peer's fine-tuned (``md.sizes`` N, ``md.seeds``)
        checkpoints, by the product's own evaluation code through a live :class:`PeerCalculator`;
        records in ``<out>/md/`` of the learning curve's shape."""
        from mace_transfer.studies.records import load_runs
        from mace_transfer.studies.md_runs import trained_model, write_md_record

        spec = self.config.get("md") or {}
        sizes = {int(n) for n in spec.get("sizes", [20])}
        wanted = {int(s) for s in spec.get("seeds", [0])}
        if seeds:  # the command line's seeds narrow md.seeds
            wanted &= {int(s) for s in seeds}
        for rec in load_runs(self.out):
            if rec["strategy"] not in peers or int(rec["n_train"]) not in sizes or int(rec["seed"]) not in wanted:
                continue
            path = self.out / "md" / f"{rec['name']}.json"
            if path.is_file():
                continue
            checkpoint, extra = trained_model(self, rec, key="checkpoint")
            self.say(f"md: {rec['name']} (live {PEERS[rec['strategy']]})")
            with PeerCalculator(rec["strategy"], checkpoint, threads=self.threads) as calc:
                write_md_record(path, rec, calc, spec, extra)

    # -------------------------------------------------------------- MD speed
    def md_speed(self, peers: Sequence[str], seed: int = 0) -> Dict[str, Any]:
        """atom-steps/s of NVE MD (1 fs, 300 K start) on diamond cells of ``md_speed.atoms`` atoms
        (64, 512) at ``md_speed.threads`` (1, 2): each peer's (N, seed) fine-tuned checkpoint, and
        the MACE models named in ``md_speed.mace`` (label: .model path), the same protocol in-process."""
        from mace_transfer.studies.md_runs import trained_model

        spec = self.config.get("md_speed") or {}
        n_train = int(spec.get("n_train", 20))
        path = self.out / "md_speed.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
        steps = int(spec.get("steps", 20))
        a0 = float(spec.get("lattice_constant_A", 5.76))  # Å; in the cell's name: a changed a0 is a new cell
        for atoms_n in [int(a) for a in spec.get("atoms", [64, 512])]:
            cell = self.work / "md_speed" / f"diamond_{atoms_n}_a{a0:g}.xyz"
            for threads in [int(t) for t in spec.get("threads", [1, 2])]:
                for peer in peers:
                    key = f"{peer}|{atoms_n}|{threads}"
                    record = self.out / RECORDS / f"{run_name(peer, n_train, seed)}.json"
                    if key in result or not record.is_file():
                        continue
                    self._write_diamond(cell, atoms_n, a0)
                    checkpoint, _ = trained_model(self, json.loads(record.read_text()), key="checkpoint")
                    got = run_job({"peer": peer, "task": "md_speed", "model": checkpoint, "frames": str(cell),
                                   "steps": steps, "warmup_steps": 3, "timestep_fs": 1.0, "temperature_K": 300.0,
                                   "seed": 0}, self.work / "md_speed" / key.replace("|", "_"), threads)
                    result[key] = got["atom_steps_per_s"]
                    write_json(path, result)
                    self.say(f"MD speed {peer}, {atoms_n} atoms, {threads} threads: {got['atom_steps_per_s']:.0f} atom-steps/s")
                for label, model in (spec.get("mace") or {}).items():
                    key = f"{label}|{atoms_n}|{threads}"
                    if key in result:
                        continue
                    self._write_diamond(cell, atoms_n, a0)
                    result[key] = mace_md_speed(self._speed_model(label, model), cell, steps, threads)
                    write_json(path, result)
                    self.say(f"MD speed {label}, {atoms_n} atoms, {threads} threads: {result[key]:.0f} atom-steps/s")
        return result

    def _speed_model(self, label: str, path) -> Path:
        """``path`` when it knows the target element, else its ``element_map`` remap (same
        architecture, so the same speed) written once to the work folder."""
        import re

        import torch
        from ase.data import atomic_numbers

        from mace_transfer.transfer import remap

        model = remap.load_model(path)
        if atomic_numbers[self.target_symbol()] in [int(z) for z in model.atomic_numbers]:
            return Path(path)
        remapped = self.work / "md_speed" / (re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") + ".model")
        if not remapped.is_file():
            remapped.parent.mkdir(parents=True, exist_ok=True)
            torch.save(remap.remap_elements(model, self.config["element_map"]), remapped)
        return remapped

    def _write_diamond(self, path: Path, n_atoms: int, a0: float) -> None:
        """A cubic diamond supercell of the target element at lattice constant ``a0`` (Å), written
        once (the work folder keeps it for every later timing)."""
        from ase.build import bulk
        from ase.io import write

        if path.is_file():
            return
        repeat = round((n_atoms / 8) ** (1 / 3))
        if 8 * repeat**3 != n_atoms:
            raise UserInputError(f"md_speed.atoms: {n_atoms} is not 8 k^3 (64, 216, 512, ...)")
        atoms = bulk(self.target_symbol(), "diamond", a=a0, cubic=True).repeat(repeat)
        atoms.rattle(0.01, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, atoms, format="extxyz")


def peer_teacher(spec: Dict[str, Any], structures, folder: Path, threads: int = 1):
    """A peer as the teacher of a ``pretrain`` stage: ``spec`` = ``{peer, model (a checkpoint of a
    peers study, or null: the zero-shot weights), energy_shift_eV_per_atom}``. The peer predicts every
    structure once, in its own environment; returns (ASE calculator answering from those predictions,
    teacher name, settings tag) for :func:`mace_transfer.datagen.teacher.label_with_teacher`."""
    import hashlib

    from ase.io import read, write

    from mace_transfer.datagen import teacher

    peer = spec.get("peer")
    if peer not in PEERS:
        raise UserInputError(f"teacher.peer must be one of {', '.join(PEERS)}, got {peer!r}")
    model = spec.get("model")
    if model is not None and not Path(model).is_file():
        raise UserInputError(f"teacher.model: checkpoint {model} not found")
    shift = {str(k): float(v) for k, v in (spec.get("energy_shift_eV_per_atom") or {}).items()}
    identity = teacher.file_identity(model) if model else f"{peer} zero-shot"
    teacher_settings = hashlib.sha256(
        json.dumps([peer, identity, shift], sort_keys=True).encode()).hexdigest()[:10]
    folder.mkdir(parents=True, exist_ok=True)
    rounded = []
    for atoms in structures:  # label_with_teacher labels the stored (8-decimal) geometry
        atoms = atoms.copy()
        atoms.positions = np.round(atoms.positions, 8)
        rounded.append(atoms)
    write(folder / "teacher_frames.xyz", rounded, format="extxyz")
    run_job({"peer": peer, "task": "predict", "model": model, "energy_shift_eV_per_atom": {},
             "frames": str(folder / "teacher_frames.xyz"), "out": str(folder / "teacher_predicted.xyz")},
            folder, threads)
    predicted = read(folder / "teacher_predicted.xyz", ":")
    name = f"{peer}:{Path(model).name if model else 'zero-shot'}"
    return PredictedCalculator(predicted, shift), name, teacher_settings


def mace_md_speed(model_path, cell_path, steps: int, threads: int) -> float:
    """atom-steps/s of a MACE ``.model`` in the peers' MD protocol, in a fresh process (torch's
    thread count is set once per process)."""
    code = ("import sys, time, numpy as np, torch; from ase.io import read; from ase import units; "
            "from ase.md.verlet import VelocityVerlet; "
            "from ase.md.velocitydistribution import MaxwellBoltzmannDistribution; "
            "from mace.calculators import MACECalculator; torch.set_num_threads(int(sys.argv[3])); "
            "a = read(sys.argv[2]); a.calc = MACECalculator(model_paths=sys.argv[1], device='cpu', "
            "default_dtype='float32'); "
            "MaxwellBoltzmannDistribution(a, temperature_K=300, rng=np.random.default_rng(0)); "
            "d = VelocityVerlet(a, timestep=units.fs); d.run(3); t = time.perf_counter(); "
            "d.run(int(sys.argv[4])); print(len(a) * int(sys.argv[4]) / (time.perf_counter() - t))")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(model_path), str(cell_path),
                          str(threads), str(steps)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"MACE MD speed run failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def run_peers(config: Dict[str, Any], *, out=None, work=None, sizes=None, seeds=None, peers=None,
              max_runs: Optional[int] = None, timing: bool = False, md: bool = False, zero_shot: bool = True,
              report_only: bool = False, progress=print) -> Dict[str, Any]:
    """Run (or resume) a peers study (``kind: peers``) and write its report; the summary."""
    from mace_transfer.studies.peers_report import write_peers_report

    names = list(peers) if peers else list(config.get("peers") or {})
    unknown = [p for p in names if p not in (config.get("peers") or {})]
    if unknown:
        raise UserInputError(f"peer {unknown[0]!r} is not in the config (it has "
                             f"{', '.join(config.get('peers') or {})})")
    sweep = PeerSweep(config, out, work, progress=progress)
    if not report_only:
        peers_python()
        sweep.check_data()
        if zero_shot:
            sweep.zero_shot(names)
        sweep.sweep(sweep.sizes(sizes), [int(s) for s in (seeds or config["seeds"])], names, max_runs)
        if timing:
            sweep.md_speed(names)
        if md:
            sweep.md_and_properties(names, seeds)  # md.seeds, narrowed to the command line's seeds
    summary = write_peers_report(config, sweep.out)
    progress(f"report: {sweep.out}/summary.md ({summary['n_runs']} peer runs)")
    return summary
