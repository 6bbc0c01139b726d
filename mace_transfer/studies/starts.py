"""The models a study starts from, and the training door every run goes through.

:class:`StartModels` (on :class:`~mace_transfer.studies.data.StudyData`'s data and splits): MACE training with
the study's thread count (``_train``, the only caller of :mod:`mace_transfer.transfer.train` in the studies),
resumable chunks (``resume_point``/``train_chunk``: a run cut by a session's end continues from its checkpoint),
the once-trained stages (the source, the classical or teacher pretraining: ``source_model``,
``classical_model``), the remapped source and its zero-shot errors. :class:`~mace_transfer.studies.runs.Sweep`
builds the runs on it. Units: errors meV/Å and meV/atom, wall times s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

from mace_transfer import UserInputError
from mace_transfer.studies import parking
from mace_transfer.studies.config import METRICS
from mace_transfer.studies.data import StudyData, file_sha256
from mace_transfer.studies.records import best_epoch, read_results, valid_rmse_at, write_json


def resolve_device(device: str) -> str:
    """A config's ``device``; ``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu`` (the same config
    on a laptop and a GPU node)."""
    import torch

    if str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def torch_device_name(device: str) -> str:
    """``cpu``, or the CUDA card's name (``NVIDIA H200``) for a ``cuda`` device (``auto`` resolved by
    :func:`resolve_device`): what a chunk ran on."""
    import torch

    device = resolve_device(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return device


def machine_info(threads: int) -> Dict[str, Any]:
    """nproc, CPU model, the GPU (None without CUDA), load average, torch threads and versions, for the results file."""
    import torch

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import mace

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"nproc": os.cpu_count(), "cpu_model": model or platform.processor(), "gpu": gpu,
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


#: seconds between the progress lines of a run in training (config ``progress_every_s``)
PROGRESS_EVERY_S = 600.0


def progress_line(name: str, results_dir: Path, chunk_s: float) -> Optional[str]:
    """One line on a run in training, read from MACE's results log: its last validated epoch, the
    best-validation epoch so far and that epoch's validation force RMSE (meV/Å); None before epoch 0."""
    curve = read_results(results_dir)
    if not curve["epoch"]:
        return None
    best = best_epoch(curve)
    rmse = valid_rmse_at(curve, best)
    at_best = f" (force RMSE {rmse:.1f} meV/Å)" if rmse is not None else ""
    return (f"{name}: epoch {curve['epoch'][-1]}, best validation at epoch {best}{at_best}, "
            f"{_fmt_time(chunk_s)} in this chunk")


@contextlib.contextmanager
def progress_watch(name: str, results_dir: Path, say: Callable[[str], None], every_s: float) -> Iterator[None]:
    """While the body trains, ``say`` a :func:`progress_line` every ``every_s`` seconds (a daemon
    thread reading the log MACE writes; half-written lines are skipped). ``every_s`` <= 0: silent."""
    if every_s <= 0:
        yield
        return
    stop, start = threading.Event(), time.time()

    def watch() -> None:
        while not stop.wait(every_s):
            line = progress_line(name, results_dir, time.time() - start)
            if line:
                say(line)

    thread = threading.Thread(target=watch, name=f"progress-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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


#: the once-trained stages and their default cache under ``<out>`` (config ``<stage>.cache`` overrides)
STAGE_CACHES = {"source": "source/si.model", "classical": "classical/classical.model"}


#: options that do not change what a run learns: where its files are, the device, a longer budget
_NOT_SETTINGS = ("train_file", "valid_file", "test_file", "name", "model_dir", "checkpoints_dir", "results_dir",
                 "log_dir", "restart_latest", "device", "max_num_epochs")


def run_settings(options: Dict[str, Any]) -> Dict[str, str]:
    """What defines a run's training (its MACE options but :data:`_NOT_SETTINGS`), as strings: a cut
    run resumes only under the same settings (:meth:`StartModels.train_chunk`)."""
    return {key: str(value) for key, value in sorted(options.items()) if key not in _NOT_SETTINGS}


class StartModels(StudyData):
    """A study's training door and starting models: source, classical/teacher pretraining, remap, zero-shot."""


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
        if options.get("device", "cpu") == "auto":
            options = dict(options, device=resolve_device("auto"))
        start = time.time()
        console = sys.stdout  # MACE's console goes to console.log below; progress lines stay here

        def say(line: str) -> None:
            # the study's progress callable prints to sys.stdout, which mace_quiet points at console.log:
            # point it back for the one line (the watcher is joined before mace_quiet restores stdout)
            quiet, sys.stdout = sys.stdout, console
            try:
                self.say(line)
            finally:
                sys.stdout = quiet

        every_s = float(self.config.get("progress_every_s", PROGRESS_EVERY_S))
        with mace_quiet(folder / "console.log"), progress_watch(folder.name, folder / "results", say, every_s):
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
        return self._trained_once("source")

    def classical_model(self) -> Path:
        """A target-element model trained once on ``data.classical`` (``classical.cache``)."""
        return self._trained_once("classical")

    def stage_done(self, key: str) -> bool:
        """Whether once-trained stage ``key`` needs no training: its model given, or its cache written."""
        spec = self.config.get(key, {}) or {}
        return bool(spec.get("model")) or (self.out / spec.get("cache", STAGE_CACHES[key])).is_file()

    def _trained_once(self, key: str) -> Path:
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
        default_cache = STAGE_CACHES[key]
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
                                   atomic_energies=train.parse_e0s(self.config["target_E0s"]),
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
        from mace_transfer.transfer import estimate, remap

        self.say("zero-shot: remapped source model on the test set")
        if "remap" not in result:
            model = remap.load_model(self.source_model())
            scales = estimate.estimate_corresponding_states(
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
                                            atomic_energies=train.parse_e0s(self.config["target_E0s"])),
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

    # -------------------------------------------------------------- resumable chunks
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
        """Train (or resume, when ``done_before`` is not None) one run; its wall seconds over all chunks.

        A checkpoint trained with other settings (:func:`run_settings`: a changed loss, learning rate,
        model, ...) is not resumed: its training state and parked copy go and the run starts again
        (a cut run from before settings were recorded is resumed as it is)."""
        settings = run_settings(options)
        chunks = folder / parking.CHUNKS
        earlier_chunks = json.loads(chunks.read_text()) if done_before is not None and chunks.is_file() else {}
        devices = list(earlier_chunks.get("devices", []))
        if done_before is not None:
            earlier = earlier_chunks.get("settings")
            if earlier is not None and earlier != settings:
                changed = sorted(k for k in set(earlier) | set(settings) if earlier.get(k) != settings.get(k))
                self.say(f"{name}: its checkpoint was trained with other settings ("
                         + ", ".join(f"{k}: {earlier.get(k)} -> {settings.get(k)}" for k in changed[:3])
                         + "): training again")
                for part in ("checkpoints", "results", "logs"):
                    shutil.rmtree(folder / part, ignore_errors=True)
                parking.drop_parked(self.out, name)
                done_before, devices = None, []
        if done_before is not None:
            options["restart_latest"] = True
            self.say(f"{name}: resuming from its checkpoint ({_fmt_time(done_before)} trained before)")
        folder.mkdir(parents=True, exist_ok=True)
        device = torch_device_name(options.get("device", "cpu"))
        write_json(chunks, {"wall_s_before": done_before or 0.0, "chunk_start_unix": time.time(),
                            "settings": settings, "devices": devices + [device]})
        return (done_before or 0.0) + self._train(options, folder)
