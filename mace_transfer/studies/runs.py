"""A study's runs: the source model, the zero-shot remap, freeze selection and each (strategy, N, seed)
training -> test errors -> record; resumable (a run whose record exists is skipped), plus the timing
comparison. Every training goes through :mod:`mace_transfer.transfer.train`; the MD ladder of
finished runs is :mod:`mace_transfer.studies.md_runs`."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import platform
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError
from mace_transfer.studies import parking, selection
from mace_transfer.studies.config import METRICS, RECORDS, converged_options, epochs_for, run_name
from mace_transfer.studies.data import StudyData, file_sha256
from mace_transfer.studies.records import (best_epoch, file_at_hand, load_runs, read_results, valid_rmse_at,
                                           write_json)


def machine_info(threads: int) -> Dict[str, Any]:
    """nproc, CPU model, load average, torch threads and versions, for the results file."""
    import torch

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import mace

    return {"nproc": os.cpu_count(), "cpu_model": model or platform.processor(),
            "load_average_1_5_15": list(os.getloadavg()), "torch_threads": threads,
            "torch": torch.__version__, "mace": getattr(mace, "__version__", "?"),
            "python": platform.python_version(), "host": platform.node()}


# ----------------------------------------------------------------------------- MACE calls
@contextlib.contextmanager
def mace_quiet(log_path: Path):
    """Send MACE's console logging and warnings to ``log_path``; undo MACE's global changes.

    MACE's ``run`` adds handlers to the root logger on every call and sets torch's default dtype;
    both are restored here so many runs can share one process.
    """
    import torch

    root = logging.getLogger()
    handlers, filters, level = list(root.handlers), list(root.filters), root.level
    dtype = torch.get_default_dtype()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for handler in handlers:  # e.g. a basicConfig handler: it would echo MACE's DEBUG lines
        root.removeHandler(handler)
    with open(log_path, "a") as stream, contextlib.redirect_stdout(stream), \
            contextlib.redirect_stderr(stream), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
            for handler in handlers:
                root.addHandler(handler)
            root.filters = filters
            root.setLevel(level)
            torch.set_default_dtype(dtype)


def run_dirs(folder: Path, name: str) -> Dict[str, str]:
    return {"name": name, "model_dir": str(folder), "checkpoints_dir": str(folder / "checkpoints"),
            "results_dir": str(folder / "results"), "log_dir": str(folder / "logs")}


def model_errors(model_path, frames, groups: bool = False, head: Optional[str] = None) -> Dict[str, Any]:
    """Overall test errors (meV/Å, meV/atom) of a .model file on ``frames`` (``head``: a multihead
    model's readout, default MACE's "Default").

    ``groups``: instead ``{"overall", "per_config_type", "per_length_scale"}``, the last keyed by the
    frames' ``length_scale`` (1 = the cell as sampled; see ``dft.scale_lengths``), only when they differ.
    """
    from mace_transfer import evaluate

    def trimmed(stats):
        return {k: stats[k] for k in METRICS}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = evaluate.load_model(model_path, head=head)
        by_scale = (lambda a: f"{float(a.info.get('length_scale', 1.0)):.6g}") if groups else None
        errors = evaluate.test_errors(model.calc, frames, progress=False, group_by=by_scale)
    if not groups:
        return errors["overall"]
    per_scale = errors["per_group"] if len(errors["per_group"]) > 1 else {}
    return {"overall": trimmed(errors["overall"]),
            "per_config_type": {k: trimmed(v) for k, v in errors["per_config_type"].items()},
            "per_length_scale": {k: trimmed(v) for k, v in per_scale.items()}}


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _same_split(folder: Path, split: Dict[str, list]) -> bool:
    """Whether ``folder`` holds exactly the extxyz files ``split`` ({file name: frames}) would write."""
    import io

    from ase.io import write

    for name, frames in split.items():
        if not (folder / name).is_file():
            return False
        text = io.StringIO()
        write(text, frames, format="extxyz")
        if (folder / name).read_text() != text.getvalue():
            return False
    return True


class Sweep(StudyData):
    """One learning-curve study's work on its data: source model, zero-shot, selection, runs, extras."""

    def __init__(self, config: Dict[str, Any], out=None, work=None, progress=print):
        super().__init__(config, out, work, progress)
        self.threads = int(config.get("threads", 1))

    # -------------------------------------------------------------- MACE
    def _train(self, options: Dict[str, Any], folder: Path, use_mace_directly: bool = False) -> float:
        """Train with ``options`` (MACE + our flags); returns wall seconds."""
        import torch

        from mace_transfer.transfer import train
        from mace_transfer.transfer.train import mace_argv

        torch.set_num_threads(self.threads)
        if options.get("device", "cpu") == "auto":  # the same config on a laptop and a GPU node
            options = dict(options, device="cuda" if torch.cuda.is_available() else "cpu")
        start = time.time()
        with mace_quiet(folder / "console.log"):
            if use_mace_directly:  # the plain mace_run_train path, for the timing comparison only
                from mace.tools import build_default_arg_parser

                train.run_mace_only(mace_argv(options, build_default_arg_parser()))
            else:
                argv = mace_argv(options)
                (folder / "argv.json").write_text(json.dumps(argv, indent=1))
                train.run(train.parse_args(argv))
        return time.time() - start

    def source_model(self) -> Path:
        """The source model: ``source.model`` if given, else trained once into ``source.cache``."""
        return self._trained_once("source", "source/si.model")

    def classical_model(self) -> Path:
        """A target-element model trained once on ``data.classical`` (``classical.cache``)."""
        return self._trained_once("classical", "classical/classical.model")

    def _trained_once(self, key: str, default_cache: str) -> Path:
        """The model of stage ``key`` (``source`` or ``classical``): ``<key>.model`` if given, else the
        cache, else trained once. In a converged study a training cut by a session's end resumes from its
        checkpoint (still in ``work/<key>`` or parked under ``<out>/partial/<key>``), as the runs do,
        unless its training split differs from the one the config now gives (then it starts again)."""
        spec = self.config.get(key, {}) or {}
        if spec.get("model"):
            path = Path(spec["model"])
            if not path.is_file():
                raise UserInputError(f"{key}.model {path} does not exist")
            return path
        path = self.out / spec.get("cache", default_cache)
        if path.is_file():
            return path
        from ase.io import write

        frames = self.frames(key)
        n_valid = int(spec.get("n_valid", max(1, len(frames) // 10)))
        order = list(range(len(frames)))
        random.Random(int(spec.get("seed", 1))).shuffle(order)
        folder = self.work / key
        options = dict(self.config["mace"])
        options.update(spec.get("mace", {}))
        if not options.get("E0s") and not any(a.info.get("config_type") == "IsolatedAtom" for a in frames):
            # MACE would stop on an assertion deep inside run_train
            raise UserInputError(f"{key}: training its model needs atomic energies: set {key}.mace.E0s "
                                 f"(eV per element) or give a trained {key}.model")
        done_before = self.resume_point(key, folder)
        split = {"train.xyz": [frames[i] for i in order[n_valid:]], "valid.xyz": [frames[i] for i in order[:n_valid]]}
        if done_before is not None and not _same_split(folder, split):
            self.say(f"{key}: the training split changed since its cut run: training again")
            shutil.rmtree(folder)
            done_before = None
        if done_before is None:
            folder.mkdir(parents=True)
            for file_name, part in split.items():
                write(folder / file_name, part, format="extxyz")
        name = Path(default_cache).stem
        options.update(train_file=str(folder / "train.xyz"), valid_file=str(folder / "valid.xyz"),
                       seed=int(spec.get("seed", 1)), **run_dirs(folder, name))
        self.say(f"{key}: training a model on {len(frames) - n_valid} configurations of "
                 f"{', '.join(map(str, self.data_paths(key)))} "
                 f"({n_valid} validation)")
        wall = self.train_chunk(key, options, folder, done_before)
        curve = read_results(folder / "results")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f"{name}.model", path)
        with contextlib.suppress(OSError):  # finished: nothing left to park or resume
            shutil.rmtree(folder / "checkpoints")
        parking.drop_parked(self.out, key)
        epoch = best_epoch(curve)
        write_json(path.with_suffix(".json"), {
            "n_train": len(frames) - n_valid, "n_valid": n_valid, "wall_s": wall,
            "epochs_run": len(curve["epoch"]), "best_epoch": epoch,
            "best_valid_rmse_f_meV_A": valid_rmse_at(curve, epoch), "curve": curve,
            "data": self.config["data"][key], "machine": machine_info(self.threads),
            "train_xyz_sha256": file_sha256(folder / "train.xyz"), "valid_xyz_sha256": file_sha256(folder / "valid.xyz")})
        self.say(f"{key}: done in {_fmt_time(wall)}, valid force RMSE "
                 f"{valid_rmse_at(curve, epoch):.1f} meV/Å -> {path}")
        return path

    def remapped_model(self, length_scale: float = 1.0, energy_scale: float = 1.0,
                       tag: str = "") -> Path:
        """The source model remapped (replace) to the target element, cached in ``work``."""
        import torch

        from mace_transfer.transfer import remap, train

        # the scales are part of the cache key: a changed estimate must not reuse an old file
        scales = "" if (length_scale, energy_scale) == (1.0, 1.0) else f"_s{length_scale:.6f}_k{energy_scale:.6f}"
        path = self.work / f"remapped{tag}{scales}.model"
        if path.is_file():
            return path
        model = remap.load_model(self.source_model())
        new = remap.remap_elements(model, self.config["element_map"], mode="replace",
                                   atomic_energies=train._parse_e0s(self.config["target_E0s"]),
                                   length_scale=length_scale, energy_scale=energy_scale)
        torch.save(new, path)
        return path

    # -------------------------------------------------------------- zero-shot
    def zero_shot(self) -> Dict[str, Any]:
        """Test errors of the remapped source model before any target training (± rescale)."""
        path = self.out / "zero_shot.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
        known = self.config.get("known_scales")  # e.g. the SW parameter ratios sigma, epsilon
        classical = any((spec or {}).get("init") == "classical" for spec in self.config["strategies"].values())
        if ("remap" in result and (not known or "remap_rescale_known" in result)
                and (not classical or "classical" in result)
                and {"energy_zero_fitted", "stress_mae_meV_per_A3"} <= set(result["remap"])):
            return result
        from mace_transfer.transfer import remap

        self.say("zero-shot: remapped source model on the test set")
        if "remap" not in result:
            model = remap.load_model(self.source_model())
            scales = remap.estimate_corresponding_states(
                model, self.config["element_map"], self.valid_frames(),
                forces_key=self.config["mace"].get("forces_key", "REF_forces"))
            rescaled = self.remapped_model(scales["length_scale"], scales["energy_scale"], "_rescaled")
            result.update(remap=self._zero_shot_errors(self.remapped_model()),
                          remap_rescale=self._zero_shot_errors(rescaled), scales_from_validation_set=scales)
        for key, scales in (("remap", None), ("remap_rescale", result.get("scales_from_validation_set"))):
            if key in result and not {"energy_zero_fitted", "stress_mae_meV_per_A3"} <= set(result[key]):
                model = self.remapped_model() if scales is None else self.remapped_model(
                    scales["length_scale"], scales["energy_scale"], "_rescaled")
                result[key].update(self._zero_shot_errors(model))  # (records from before stress)
        if known:
            s, k = float(known["length_scale"]), float(known["energy_scale"])
            result["remap_rescale_known"] = model_errors(self.remapped_model(s, k, "_rescaled_known"),
                                                         self.frames("test"))
            result["known_scales"] = dict(known)
        if classical and "classical" not in result:  # the classical model, target E0s, no refit
            import torch

            from mace_transfer.transfer import train

            target = self.target_symbol()
            rereferenced = self.work / "classical_rereferenced.model"
            torch.save(remap.remap_elements(remap.load_model(self.classical_model()), f"{target}:{target}",
                                            atomic_energies=train._parse_e0s(self.config["target_E0s"])),
                       rereferenced)
            result["classical"] = model_errors(rereferenced, self.frames("test"))
        write_json(path, result)
        for key in ("remap", "remap_rescale", "remap_rescale_known", "classical"):
            if key in result:
                self.say(f"zero-shot {key}: test force MAE {result[key]['force_mae_meV_per_A']:.1f} meV/Å")
        return result

    def _zero_shot_errors(self, model_path) -> Dict[str, Any]:
        """Test errors of one zero-shot model and, from the same predictions, its test energy MAE
        with the energy zero fitted on the validation cells (one constant per element): the
        protocol of the peers' zero-shot energies (``energy_zero_fitted``)."""
        from mace_transfer import evaluate
        from mace_transfer.evaluate.errors import energy_mae_with_fitted_zero

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = evaluate.load_model(model_path).calc
            errors = evaluate.test_errors(calc, self.frames("test"), progress=False)
            fitted = energy_mae_with_fitted_zero(calc, self.valid_frames(), self.frames("test"),
                                                 test_energies=errors["_energies"])
        return dict(errors["overall"], energy_zero_fitted=dict(fitted, fitted_on="validation cells"))

    # -------------------------------------------------------------- one run
    def strategy_options(self, strategy: str, n_train: int, seed: int, freeze_blocks: Optional[str] = None,
                         lr: Optional[float] = None, loss_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """MACE options of one run: the shared ``mace`` block, the budget at this N (extra training
        frames count), the strategy's start and flags; ``lr`` overrides the strategy's, ``loss_flags``
        (a ``loss_grid`` option) are applied last."""
        spec = self.config["strategies"][strategy]
        options = dict(self.config["mace"])
        budget = self.config["budget"]
        n_total, batch = n_train + len(self.extra_train_frames()), int(options.get("batch_size", 5))
        options.update(lr=float(spec["lr"] if lr is None else lr), seed=int(seed), E0s=self.config["target_E0s"],
                       restart_latest=False)
        if budget.get("mode") == "converged" and n_total < batch:
            batch = options["batch_size"] = n_total  # MACE drops a partial batch: N < batch would train on nothing
        if budget.get("mode") == "converged":
            options.update(converged_options(n_total, batch, budget))
        else:
            options.update(max_num_epochs=epochs_for(n_total, batch, budget),
                           patience=int(budget.get("patience", 1000)))
        options.update(spec.get("mace", {}) or {})
        init = spec.get("init", "scratch")
        if init == "remap":
            options.update(source_model=str(self.source_model()), element_map=self.config["element_map"])
            if not {"length_scale", "energy_scale", "corresponding_states"} & set(options):
                options["corresponding_states"] = False  # plain transfer: the rescale is its own strategy
        elif init == "foundation":
            options.update(foundation_model=str(self.remapped_model()))
        elif init == "classical":  # same element: re-referenced to the target E0s, shift refit
            target = self.target_symbol()
            options.update(source_model=str(self.classical_model()), element_map=f"{target}:{target}",
                           corresponding_states=False)
        if freeze_blocks:
            options["freeze_blocks"] = freeze_blocks
        options.update(loss_flags or {})
        return options

    def train_run(self, strategy: str, n_train: int, seed: int, record_path: Path,
                  freeze_blocks: Optional[str] = None, lr: Optional[float] = None,
                  loss_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Train one (strategy, N, seed), test it, write ``record_path``; the record."""
        name = record_path.stem
        folder = self.work / name
        done_before = self.resume_point(name, folder)
        subset = self.write_subset(folder, n_train, seed)
        options = self.strategy_options(strategy, n_train, seed, freeze_blocks, lr, loss_flags)
        options.update(train_file=subset["train_file"], valid_file=subset["valid_file"],
                       **run_dirs(folder, name))
        wall = self.train_chunk(name, options, folder, done_before)
        model_path = folder / f"{name}.model"
        curve = read_results(folder / "results")
        epoch = best_epoch(curve)
        grouped = model_errors(model_path, self.frames("test"), groups=True)
        errors = grouped["overall"]
        record = {
            "strategy": strategy, "n_train": n_train, "seed": seed, "name": name,
            "lr": options["lr"], "max_num_epochs": options["max_num_epochs"],
            "patience": options.get("patience"), "freeze_blocks": options.get("freeze_blocks"),
            "mace_freeze": options.get("freeze"), "init": self.config["strategies"][strategy].get("init", "scratch"),
            "extra_flags": self.config["strategies"][strategy].get("mace", {}), "loss_flags": loss_flags or {},
            "test": {k: errors[k] for k in METRICS},
            "test_per_config_type": grouped["per_config_type"],
            "test_per_length_scale": grouped["per_length_scale"],
            "wall_s": wall, "epochs_run": len(curve["epoch"]), "best_epoch": epoch,
            **self._convergence(options, curve, epoch, n_train + subset["n_extra_train"]),
            "best_valid_rmse_f_meV_A": valid_rmse_at(curve, epoch),
            "initial_valid_rmse_f_meV_A": curve["initial_valid_rmse_f_meV_A"],
            "corresponding_states": self._scales_from_log(folder),
            "train_indices": subset["train_indices"], "n_extra_train": subset["n_extra_train"],
            "model": str(model_path), "curve": curve,
            "load_average_after": list(os.getloadavg()),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.finish_run(name, folder, record_path, record)
        return record

    # ------------------------------------------------ runs that outlive a session (studies.parking)
    def resume_point(self, name: str, folder: Path) -> Optional[float]:
        """Where run ``name`` starts. In a converged study a run cut in an earlier process resumes from
        its newest checkpoint (parked under ``<out>/partial/`` or still in ``work``): returns the wall
        seconds it trained before. Otherwise None, and a leftover folder without a checkpoint is removed
        (a cut run that starts again must not count half a wall time)."""
        resumable = (self.config.get("budget") or {}).get("mode") == "converged"  # hours-long runs continue
        if resumable:
            parking.unpark(self.out, name, folder)  # a run cut in an earlier session (see park_runs)
        done_before = parking.chunks_wall(folder) if resumable and parking.checkpoints(folder) else None
        if folder.exists() and done_before is None:
            shutil.rmtree(folder)
        return done_before

    def train_chunk(self, name: str, options: Dict[str, Any], folder: Path,
                    done_before: Optional[float]) -> float:
        """Train (or resume, when ``done_before`` is not None) one run; its wall seconds over all chunks."""
        if done_before is not None:
            options["restart_latest"] = True
            self.say(f"{name}: resuming from its checkpoint ({_fmt_time(done_before)} trained before)")
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / parking.CHUNKS, {"wall_s_before": done_before or 0.0, "chunk_start_unix": time.time()})
        return (done_before or 0.0) + self._train(options, folder)

    def finish_run(self, name: str, folder: Path, record_path: Path, record: Dict[str, Any]) -> None:
        """Write a finished run's record; its checkpoints and parked copy go (the model stays)."""
        with contextlib.suppress(OSError):
            shutil.rmtree(folder / "checkpoints")
        write_json(record_path, record)
        parking.drop_parked(self.out, name)

    def park_runs(self) -> List[str]:
        """Park every run of ``work`` cut mid-training (:func:`parking.park_runs`), and a cut
        once-trained stage (``source``, ``classical``); a finished stage's old checkpoints stay put."""
        finished = [key for key, default in (("source", "source/si.model"), ("classical", "classical/classical.model"))
                    if (self.config.get(key) or {}).get("model")
                    or (self.out / (self.config.get(key) or {}).get("cache", default)).is_file()]
        return parking.park_runs(self.work, self.out, self.say, skip=finished)

    @staticmethod
    def _convergence(options: Dict[str, Any], curve: Dict[str, Any], epoch: Optional[int],
                     n_total: int) -> Dict[str, Any]:
        """Optimizer steps run and to the kept (best-validation) epoch; for an early-stopping run,
        whether it stopped on its plateau criterion before the epoch cap (``converged``)."""
        steps_per_epoch = max(1, n_total // int(options.get("batch_size", 5)))  # MACE drops the partial batch
        extra: Dict[str, Any] = {"optimizer_steps_run": len(curve["epoch"]) * steps_per_epoch,
                                 "optimizer_steps_to_best": None if epoch is None else (epoch + 1) * steps_per_epoch}
        if options.get("early_stop_patience") is not None:
            extra.update(early_stop_patience=options["early_stop_patience"],
                         early_stop_min_delta=options.get("early_stop_min_delta", 0.0),
                         scheduler_patience=options.get("scheduler_patience"),
                         converged=len(curve["epoch"]) < int(options["max_num_epochs"]),
                         best_valid_loss=None if epoch is None else curve["valid_loss"][curve["epoch"].index(epoch)])
        return extra

    # -------------------------------------------------------------- learning-rate selection
    def lr_choice(self, strategy: str) -> Optional[float]:
        """The learning rate of ``strategy``: its ``lr`` without ``lr_grid.<strategy>``, else the grid
        value with the lowest best validation loss at ``lr_grid.select`` (N, seed)
        (:func:`selection.choose_lr`; ``<out>/lr_selection/<strategy>.json``, one file per strategy,
        so strategies can be selected in parallel processes)."""
        grid = (self.config.get("lr_grid") or {}).get(strategy)
        if not grid:
            return None
        select = (self.config.get("lr_grid") or {}).get("select", {"n": 20, "seed": 0})
        n_train, seed = int(select["n"]), int(select["seed"])

        def summarise(record):
            return {"best_valid_loss": min(v for v in record["curve"]["valid_loss"] if v is not None),
                    "best_valid_rmse_f_meV_A": record["best_valid_rmse_f_meV_A"],
                    "test_force_mae_meV_per_A": record["test"]["force_mae_meV_per_A"],
                    "epochs_run": record["epochs_run"], "wall_s": record["wall_s"]}

        return selection.choose_lr(self.out, strategy, [float(v) for v in grid], n_train, seed,
                                   lambda lr, path: self.train_run(strategy, n_train, seed, path, lr=lr),
                                   summarise, self.say)

    # -------------------------------------------------------------- loss selection
    def loss_choice(self, strategy: str) -> Optional[Dict[str, Any]]:
        """The MACE loss flags of ``strategy``: None without ``loss_grid`` (the ``mace`` block's loss),
        else the ``loss_grid.options`` entry :func:`selection.choose_loss` picks at ``loss_grid.select``
        (N, seed), trained with the start's chosen learning rate and judged on the validation cells
        (``loss_grid.energy_goal_meV_per_atom``, default 5). An option equal to a run already trained
        there (e.g. ``{}``: the study's own loss) reuses that run while its model is at hand."""
        grid = self.config.get("loss_grid") or {}
        options = grid.get("options") or {}
        if not options or strategy not in grid.get("strategies", list(self.config["strategies"])):
            return None
        select = grid.get("select", {"n": 20, "seed": 0})
        n_train, seed = int(select["n"]), int(select["seed"])
        lr = self.lr_choice(strategy)
        valid_indices, _ = self.split()
        valid = [self.frames("target")[i] for i in valid_indices]

        def train(tag, flags, record_path):
            earlier = []  # an equal run trained before: the sweep's record, then a selection run
            path = self.out / RECORDS / f"{run_name(strategy, n_train, seed)}.json"
            if path.is_file():
                record = json.loads(path.read_text())
                if (record.get("loss_flags") or {}) == flags and (lr is None or record.get("lr") == lr):
                    earlier.append(dict(record, reused_from=str(path)))
            earlier.append(selection.selected_run(self.out, strategy, n_train, seed, None, lr, flags))
            for done in filter(None, earlier):
                model = file_at_hand(self.out, done)  # its work folder, or <out>/models/
                if model is not None:
                    return dict(done, model=model)
            return self.train_run(strategy, n_train, seed, record_path, lr=lr, loss_flags=flags)

        def validate(record):
            errors = model_errors(record["model"], valid)
            return {"valid_force_mae_meV_per_A": errors["force_mae_meV_per_A"],
                    "valid_energy_mae_meV_per_atom": errors["energy_mae_meV_per_atom"]}

        tag = selection.choose_loss(self.out, strategy, options, n_train, seed,
                                    float(grid.get("energy_goal_meV_per_atom", 5.0)), train, validate, self.say)
        return dict(options[tag])

    @staticmethod
    def _scales_from_log(folder: Path) -> Optional[Dict[str, float]]:
        """The s, k that ``--length_scale/--energy_scale auto`` chose (train.py logs them)."""
        log = folder / "console.log"
        if not log.is_file():
            return None
        match = re.search(r"corresponding states estimated: (\{.*?\})", log.read_text())
        if not match:
            return None
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(match.group(1))
        return None

    # -------------------------------------------------------------- freeze selection
    def freeze_choice(self) -> Optional[str]:
        """The block set of ``transfer_freeze``: fixed, or chosen on validation at a small N."""
        spec = self.config["strategies"].get("transfer_freeze")
        if not spec:
            return None
        if spec.get("freeze_blocks"):
            return spec["freeze_blocks"]
        candidates = spec.get("freeze_candidates") or []
        if not candidates:
            raise UserInputError("transfer_freeze needs freeze_blocks or freeze_candidates")
        path = self.out / "freeze_selection.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        select = spec.get("select", {"n": 10, "seed": 0})
        n_train, seed = int(select["n"]), int(select["seed"])
        results = done.get("candidates", {})
        for blocks in candidates:
            if blocks in results:
                continue
            self.say(f"freeze selection: transfer + freeze {blocks} at N={n_train} seed={seed}")
            tag = re.sub(r"[^A-Za-z0-9]+", "-", blocks).strip("-")
            record = self.train_run("transfer_freeze", n_train, seed,
                                    self.out / "selection" / f"freeze-{tag}_N{n_train:04d}_s{seed}.json",
                                    freeze_blocks=blocks)
            results[blocks] = {"best_valid_rmse_f_meV_A": record["best_valid_rmse_f_meV_A"],
                               "test_force_mae_meV_per_A": record["test"]["force_mae_meV_per_A"],
                               "wall_s": record["wall_s"]}
            write_json(path, {"n_train": n_train, "seed": seed, "candidates": results,
                              "chosen": None, "rule": "lowest validation force RMSE"})
        chosen = min(candidates, key=lambda b: results[b]["best_valid_rmse_f_meV_A"])
        write_json(path, {"n_train": n_train, "seed": seed, "candidates": results, "chosen": chosen,
                          "rule": "lowest validation force RMSE (the test error is recorded, not used)"})
        self.say(f"freeze selection: {chosen} (validation force RMSE "
                 f"{results[chosen]['best_valid_rmse_f_meV_A']:.1f} meV/Å)")
        return chosen

    # -------------------------------------------------------------- sweep
    def sweep(self, sizes: Sequence[int], seeds: Sequence[int], strategies: Sequence[str],
              max_runs: Optional[int] = None) -> int:
        """Train every missing (strategy, N, seed); N ascending. Returns the number trained."""
        freeze = self.freeze_choice() if "transfer_freeze" in strategies else None
        lrs = {strategy: self.lr_choice(strategy) for strategy in strategies}  # None: the strategy's lr
        losses = {strategy: self.loss_choice(strategy) for strategy in strategies}  # None: the mace block's
        plan = [(s, n, seed) for n in sizes for seed in seeds for s in strategies]
        todo = [p for p in plan if not (self.out / RECORDS / f"{run_name(*p)}.json").is_file()]
        self.say(f"sweep: {len(plan)} runs, {len(plan) - len(todo)} done already, {len(todo)} to train")
        stale = [r["name"] for r in load_runs(self.out)
                 if losses.get(r["strategy"]) is not None and (r.get("loss_flags") or {}) != losses[r["strategy"]]]
        if stale:
            self.say(f"warning: {len(stale)} finished runs were trained with another loss than the one chosen "
                     f"({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}): give the study a new `out`")
        if max_runs is not None:
            todo = todo[:max_runs]
        walls = {(r["strategy"], int(r["n_train"])): r["wall_s"] for r in load_runs(self.out)}
        for number, (strategy, n_train, seed) in enumerate(todo, 1):
            path = self.out / RECORDS / f"{run_name(strategy, n_train, seed)}.json"
            blocks = freeze if strategy == "transfer_freeze" else None
            selected = strategy == "transfer_freeze" or lrs[strategy] is not None or losses[strategy] is not None
            record = selection.selected_run(self.out, strategy, n_train, seed, blocks, lrs[strategy],
                                            losses[strategy]) if selected else None
            if record is not None:
                record["name"] = path.stem
                write_json(path, record)
            else:
                record = self.train_run(strategy, n_train, seed, path, freeze_blocks=blocks, lr=lrs[strategy],
                                        loss_flags=losses[strategy])
            walls[(strategy, n_train)] = record["wall_s"]
            remaining = todo[number:]
            eta = sum(self._guess_wall(walls, s, n) for s, n, _ in remaining)
            self.say(f"[{number}/{len(todo)}] {strategy:16s} N={n_train:<4d} seed={seed}: test force MAE "
                     f"{record['test']['force_mae_meV_per_A']:7.1f} meV/Å, energy MAE "
                     f"{record['test']['energy_mae_meV_per_atom']:6.2f} meV/atom, "
                     f"{record['epochs_run']} epochs (best {record['best_epoch']}), "
                     f"{_fmt_time(record['wall_s'])}; ETA {_fmt_time(eta)}")
        return len(todo)

    @staticmethod
    def _guess_wall(walls, strategy: str, n_train: int) -> float:
        if (strategy, n_train) in walls:
            return walls[(strategy, n_train)]
        same_n = [w for (s, n), w in walls.items() if n == n_train]
        if same_n:
            return float(np.mean(same_n))
        return float(np.mean(list(walls.values()))) if walls else 0.0

    # -------------------------------------------------------------- extras
    def timing(self) -> Dict[str, Any]:
        """Seconds per epoch: mace_transfer_train vs MACE's own run_train, same argv (scratch)."""
        path = self.out / "timing.json"
        if path.is_file():
            return json.loads(path.read_text())
        spec = self.config.get("timing", {})
        n_train, seed = int(spec.get("n", 25)), int(spec.get("seed", 0))
        epochs, repeats = int(spec.get("epochs", 5)), int(spec.get("repeats", 2))
        result: Dict[str, Any] = {"n_train": n_train, "epochs": epochs, "repeats": repeats,
                                  "mace_run_train": [], "mace_transfer_train": [],
                                  "mace_transfer_train_freeze": []}
        freeze = (self.config["strategies"].get("transfer_freeze") or {}).get("freeze_candidates", ["embedding"])[0]
        for repeat in range(repeats):
            for key in ("mace_run_train", "mace_transfer_train", "mace_transfer_train_freeze"):
                folder = self.work / "timing" / f"{key}_{repeat}"
                if folder.exists():
                    shutil.rmtree(folder)
                subset = self.write_subset(folder, n_train, seed)
                options = self.strategy_options("scratch", n_train, seed)
                options.update(max_num_epochs=epochs, patience=epochs + 1, train_file=subset["train_file"],
                               valid_file=subset["valid_file"], **run_dirs(folder, key))
                if key == "mace_transfer_train_freeze":
                    options["freeze_blocks"] = freeze
                wall = self._train(options, folder, use_mace_directly=(key == "mace_run_train"))
                curve = read_results(folder / "results")
                result[key].append({"wall_s": wall, "train_step_s_per_epoch": float(np.mean(curve["train_step_s"]))})
                self.say(f"timing {key} #{repeat}: {wall:.1f} s wall, "
                         f"{result[key][-1]['train_step_s_per_epoch']:.2f} s of optimizer steps per epoch")
        result["freeze_blocks"] = freeze
        result["machine"] = machine_info(self.threads)
        write_json(path, result)
        return result

    # -------------------------------------------------------------- report
