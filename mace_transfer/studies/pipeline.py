"""Staged runs from a YAML file: sample -> label -> pretrain -> remap -> fine-tune -> evaluate.

A pipeline file::

    workdir: runs/demo              # every stage writes under <workdir>/<stage name>/
    mace: {max_L: 0, ...}           # MACE flags shared by every training stage
    stages:
      - {name: si, kind: train, mace: {train_file: data/si_sw.xyz}}
      - {name: ge, kind: train, source: si, element_map: "Si:Ge",
         subset: {file: data/ge_sw.xyz, n_train: 10, n_valid: 10, seed: 0}}
      - {name: report, kind: evaluate, models: [ge], test: data/ge_sw_test.xyz}

Stage kinds: ``sample`` (classical configurations), ``train`` (``mace_transfer_train``; ``source``
= a stage or ``.model`` to remap with ``element_map``, ``foundation`` = a same-element stage to
continue from), ``classical_pretrain`` (sample + train on a classical potential), ``pretrain``
(structures labelled by any ``teacher``: a stage or ``.model`` file, ``sw-ge``/``tersoff-si``..., or a
peer ``{peer: sevenn|chgnet, model: <checkpoint or null>}`` run in its own environment (``make peers``);
``structures`` = an extxyz file or a sampler spec ``{element, potential, n, options}``, whose MD a
``driver`` may run instead of the classical potential (``teacher``, a stage, a ``.model`` or ``sw-ge``); then the
student trains on the teacher's labels, with ``source``/``element_map``/``subset``/``mace`` as a
``train`` stage; ``classical_pretrain`` is the case whose teacher is the sampler's own potential), ``evaluate`` and
``learning_curve`` (a whole study of :mod:`mace_transfer.studies.learning_curve`: ``config`` = its YAML,
optional ``sizes``, ``seeds``, ``strategies``, ``md``, ``timing``, ``out``; resumable run by run) and ``active``
(the active-learning loop of :mod:`mace_transfer.active`: ``args`` = ``mace_transfer_active`` flags as a mapping,
``source`` = a stage or ``.model`` remapped with ``args.element_map``; the stage's model is the last round's first
committee member, trained on every label; resumable round by round).
A stage whose output exists is skipped, so a cut run resumes; a training stage cut mid-way
resumes from MACE's own latest checkpoint (``--restart_latest``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from mace_transfer import UserInputError
from mace_transfer.studies import learning_curve
from mace_transfer.studies.config import read_yaml_mapping
from mace_transfer.transfer import train
from mace_transfer.transfer.early_stop import iter_mace_results
from mace_transfer.transfer.stage_two import stage_two_name
from mace_transfer.transfer.train import mace_argv

STAGE_KINDS = ("sample", "train", "classical_pretrain", "pretrain", "evaluate", "learning_curve", "active")
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- config
def load_pipeline(path) -> Dict[str, Any]:
    """Read and check a pipeline YAML file."""
    path = Path(path)
    config = read_yaml_mapping(path, "pipeline file")
    if not isinstance(config.get("stages"), list):
        raise UserInputError(f"{path}: expected a mapping with a 'stages' list")
    names = set()
    for i, stage in enumerate(config["stages"]):
        if not isinstance(stage, dict) or "name" not in stage:
            raise UserInputError(f"{path}: stage {i} needs a 'name'")
        if stage.get("kind") not in STAGE_KINDS:
            raise UserInputError(
                f"{path}: stage {stage['name']!r} has kind {stage.get('kind')!r}; "
                f"choose from {', '.join(STAGE_KINDS)}"
            )
        if stage["name"] in names:
            raise UserInputError(f"{path}: two stages are named {stage['name']!r}")
        names.add(stage["name"])
    config.setdefault("workdir", str(Path("runs") / path.stem))
    config["_base"] = str(path.parent)
    return config


# ----------------------------------------------------------------------------- helpers
def _one_subset(stage) -> Dict[str, Any]:
    """The ``subset`` of a stage that trains on its own labels: one mapping, its file that output."""
    if not isinstance(stage["subset"], dict):
        raise UserInputError(f"stage {stage['name']!r}: a {stage['kind']} stage's subset is one mapping "
                             "(it draws from the stage's own labels), not a list")
    return stage["subset"]


def model_teacher(path: os.PathLike):
    """(ASE calculator, name, settings tag) of a MACE ``.model`` as a teacher: the file name and the
    first 10 hex digits of its bytes' hash (:func:`datagen.teacher.file_identity`), written into
    every frame it labels."""
    from mace_transfer import evaluate
    from mace_transfer.datagen import teacher

    path = Path(path)
    return evaluate.load_model(path).calc, path.name, teacher.file_identity(path)[:10]


class Pipeline:
    """Runs the stages of a loaded pipeline config in order."""

    def __init__(self, config: Dict[str, Any]):
        self.config = config
        self.base = Path(config.get("_base", "."))
        self.workdir = Path(config["workdir"])
        self.outputs: Dict[str, Path] = {}

    def path(self, value) -> Path:
        """A path from the YAML, relative to the current directory (as on the command line)."""
        return Path(value)

    def stage_dir(self, stage) -> Path:
        return self.workdir / stage["name"]

    def model_of(self, ref: str) -> Path:
        """A stage name (its output model) or a ``.model`` path."""
        if ref in self.outputs:
            return self.outputs[ref]
        path = self.path(ref)
        if path.suffix == ".model":
            return path
        raise UserInputError(f"{ref!r} is neither an earlier stage nor a .model file")

    # ------------------------------------------------------------------ stages
    def run(self) -> Dict[str, Path]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        stages = self.config["stages"]
        for number, stage in enumerate(stages, 1):
            label = f"[{number}/{len(stages)}] {stage['kind']} {stage['name']}"
            out = self.expected_output(stage)
            if out.exists():
                print(f"{label}: done already ({out}), skipped", flush=True)
                self.outputs[stage["name"]] = out
                continue
            print(f"{label}: running", flush=True)
            start = time.time()
            getattr(self, f"run_{stage['kind']}")(stage)
            if not out.exists():
                raise UserInputError(f"stage {stage['name']!r} finished without writing {out}")
            self.outputs[stage["name"]] = out
            print(f"{label}: finished in {time.time() - start:.0f} s -> {out}", flush=True)
        return self.outputs

    def expected_output(self, stage) -> Path:
        folder = self.stage_dir(stage)
        if stage["kind"] == "sample":
            return self.path(stage["out"]) if "out" in stage else folder / f"{stage['name']}.xyz"
        if stage["kind"] == "evaluate":
            return folder / "metrics.json"
        if stage["kind"] == "learning_curve":
            return folder / "learning_curve.json"
        options = dict(self.config.get("mace", {}), **(stage.get("mace") or {}))
        if stage["kind"] == "train" and options.get("converged_stage_two", "off") != "off":
            return folder / f"{stage_two_name(stage['name'])}.model"  # the stage's model is stage two's
        return folder / f"{stage['name']}.model"

    def _sample(self, stage, out: Path, driver=None) -> Path:
        """Sampled structures of ``stage`` into ``out``; ``driver``: (ASE calculator, name) that runs the
        MD instead of the stage's classical potential (which then sets only the geometry recipe)."""
        from mace_transfer.datagen import sampling

        for key in ("element", "potential", "n"):
            if key not in stage:
                raise UserInputError(f"stage {stage['name']!r} needs {key!r}")
        out.parent.mkdir(parents=True, exist_ok=True)
        options = dict(stage.get("options", {}))
        if driver is not None:
            options.update(driver=driver[0], driver_name=driver[1])
        sampling.sample_configurations(
            stage["element"], stage["potential"], int(stage["n"]), out_path=str(out), **options
        )
        return out

    def run_sample(self, stage) -> None:
        self._sample(stage, self.expected_output(stage))

    def _subset(self, stage, folder: Path) -> Dict[str, str]:
        """Disjoint random train/valid subsets of ``subset.file`` (extxyz) -> MACE file flags.

        ``subset`` may be a list of such specs (e.g. N Ge + M alloy + some Si for a Si+Ge model): each
        file is drawn from on its own, and the training and validation files hold them all, in order."""
        from ase.io import read, write

        specs = stage["subset"] if isinstance(stage["subset"], list) else [stage["subset"]]
        train_frames, valid = [], []
        for spec in specs:
            frames = read(self.path(spec["file"]), ":")
            n_train, n_valid = int(spec["n_train"]), int(spec.get("n_valid", 0))
            if n_train + n_valid > len(frames):
                raise UserInputError(
                    f"stage {stage['name']!r}: {n_train}+{n_valid} configurations asked, "
                    f"{spec['file']} has {len(frames)}"
                )
            order = list(range(len(frames)))
            random.Random(int(spec.get("seed", 0))).shuffle(order)
            # the validation set is drawn first, so it is the same for every n_train
            valid += [frames[i] for i in order[:n_valid]]
            train_frames += [frames[i] for i in order[n_valid : n_valid + n_train]]
        files = {"train_file": str(folder / "train.xyz")}
        write(files["train_file"], train_frames, format="extxyz")
        if valid:
            files["valid_file"] = str(folder / "valid.xyz")
            write(files["valid_file"], valid, format="extxyz")
        return files

    def _train(self, stage, extra: Optional[Dict[str, Any]] = None) -> None:
        folder = self.stage_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        options: Dict[str, Any] = dict(self.config.get("mace", {}))
        options.update(stage.get("mace", {}))
        options.update(extra or {})
        if "subset" in stage:
            options.update(self._subset(stage, folder))
        if "source" in stage:
            options["source_model"] = str(self.model_of(stage["source"]))
            options["element_map"] = stage.get("element_map") or options.get("element_map")
            if not options["element_map"]:
                raise UserInputError(f"stage {stage['name']!r}: 'source' needs 'element_map'")
        if "foundation" in stage:
            options["foundation_model"] = str(self.model_of(stage["foundation"]))
        options.update(
            name=stage["name"],
            work_dir=str(folder),
            model_dir=str(folder),
            checkpoints_dir=str(folder / "checkpoints"),
            results_dir=str(folder / "results"),
            log_dir=str(folder / "logs"),
        )
        options.setdefault("restart_latest", True)
        argv = mace_argv(options)
        (folder / "argv.json").write_text(json.dumps(argv, indent=1))
        train.run(train.parse_args(argv))  # train.run drops the log handlers MACE's run() adds

    def run_train(self, stage) -> None:
        self._train(stage)

    def run_classical_pretrain(self, stage) -> None:
        """Sample classical configurations of ``element`` with ``potential``, then train on them."""
        data = self.path(stage["data"]) if "data" in stage else self.stage_dir(stage) / "classical.xyz"
        if not data.exists() or "data" not in stage:
            self._sample(stage, data)
        extra: Dict[str, Any] = {}
        if "subset" not in stage:
            extra["train_file"] = str(data)
        else:
            stage = dict(stage, subset=dict(_one_subset(stage), file=str(data)))
        self._train(stage, extra)

    def _teacher(self, stage, structures: List):
        """(ASE calculator, name, settings tag) of ``stage["teacher"]``; ``structures`` (the frames it
        will label) are what a peer teacher predicts in its own environment."""
        ref = stage.get("teacher")
        if isinstance(ref, dict):  # a universal potential in its own environment (studies.peers)
            from mace_transfer.studies.peers import peer_teacher

            return peer_teacher(ref, structures, self.stage_dir(stage) / "peer_teacher")
        return self._local_calculator(ref)

    def _local_calculator(self, ref):
        """(ASE calculator, name, settings tag) of a reference potential (``sw-ge``), a stage or a
        ``.model`` file: what runs in this process."""
        from mace_transfer import evaluate
        from mace_transfer.datagen import classical, teacher

        if str(ref).lower() in evaluate.REFERENCE_NAMES:
            potential, element = str(ref).lower().split("-")
            return classical.calculator(element.capitalize(), potential), str(ref).lower(), \
                teacher.teacher_settings_hash(str(ref).lower())
        return model_teacher(self.model_of(str(ref)))

    def _driver(self, stage, ref) -> tuple:
        """(ASE calculator, name) that drives a pretrain stage's sampler MD: ``teacher`` (the stage's own
        teacher), another stage, a ``.model`` file or a reference potential (``sw-ge``). A peer teacher
        predicts through files in its own environment, so it cannot drive MD step by step."""
        ref = stage.get("teacher") if ref == "teacher" else ref
        if isinstance(ref, dict) or not ref:
            raise UserInputError(f"stage {stage['name']!r}: structures.driver must be a MACE model, a stage "
                                 "or a reference potential (a peer teacher cannot drive the sampler's MD)")
        calc, name, settings = self._local_calculator(ref)
        return calc, f"{name}:{settings}"

    def _structures(self, stage) -> List:
        """The structures a teacher labels: an extxyz file, or the sampler's (``{element, potential, n}``)."""
        from ase.io import read

        spec = stage.get("structures")
        if isinstance(spec, dict):
            spec = dict(spec)
            driver = self._driver(stage, spec.pop("driver")) if spec.get("driver") else None
            path = self._sample(dict(spec, name=stage["name"]), self.stage_dir(stage) / "structures.xyz", driver)
        elif spec:
            path = self.path(spec)
            if not path.is_file():
                raise UserInputError(f"stage {stage['name']!r}: structures file {path} does not exist")
        else:
            raise UserInputError(f"stage {stage['name']!r} needs 'structures' (a file or a sampler spec)")
        frames = [a for a in read(path, ":") if a.info.get("config_type") != "IsolatedAtom"]
        return frames[: int(stage["n"])] if "n" in stage else frames

    def run_pretrain(self, stage) -> None:
        """A student trained on a teacher's labels: label ``structures`` with ``teacher``, then train."""
        from mace_transfer.datagen import teacher

        if not stage.get("teacher"):  # before any sampling
            from mace_transfer import evaluate

            raise UserInputError(f"stage {stage['name']!r} needs a 'teacher' (a stage, a .model file or "
                                 f"one of {', '.join(evaluate.REFERENCE_NAMES)})")
        structures = self._structures(stage)
        calc, name, settings = self._teacher(stage, structures)
        labelled = self.stage_dir(stage) / "teacher_labels.xyz"
        teacher.label_with_teacher(structures, calc, labelled, name=name, settings=settings,
                                   progress=lambda message: print(message, flush=True))
        if "subset" in stage:
            self._train(dict(stage, subset=dict(_one_subset(stage), file=str(labelled))))
        else:
            self._train(stage, {"train_file": str(labelled)})

    def run_evaluate(self, stage) -> None:
        from mace_transfer import evaluate

        folder = self.stage_dir(stage)
        models = [self.model_of(m) for m in stage["models"]]
        labels = stage.get("labels", list(stage["models"]))
        metrics = evaluate.evaluate(
            [str(m) for m in models],
            test=str(self.path(stage["test"])) if stage.get("test") else None,
            reference=stage.get("reference"),
            labels=labels,
            out=str(folder),
            temperatures=stage.get("temperatures"),
            seeds=stage.get("seeds"),
            md_steps=stage.get("md_steps"),
            skip=stage.get("skip", ()),
        )
        curves = {
            label: self.stage_dir({"name": name}) / "results"
            for label, name in zip(labels, stage["models"])
            if name in self.outputs
        }
        if curves:
            plot_training_curves(curves, folder / "training_curves.png")
        print(summary_table(metrics, labels), flush=True)

    def run_learning_curve(self, stage) -> None:
        if "config" not in stage:
            raise UserInputError(f"stage {stage['name']!r} needs 'config' (a learning-curve YAML)")
        folder = self.stage_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        config = learning_curve.load_config(str(self.path(stage["config"])))  # read once, used twice
        summary = learning_curve.run_study(
            config, out=stage.get("out"), work=stage.get("work", folder / "work"),
            sizes=stage.get("sizes"), seeds=stage.get("seeds"), strategies=stage.get("strategies"),
            md=bool(stage.get("md", False)), timing=bool(stage.get("timing", False)),
            progress=lambda message: print(message, flush=True),
        )
        out = stage.get("out") or config["out"]
        (folder / "learning_curve.json").write_text(json.dumps(
            {"config": str(stage["config"]), "out": str(out), "n_runs": summary["n_runs"]}, indent=1))


    def run_active(self, stage) -> None:
        import argparse
        import shutil

        from mace_transfer.active import loop, options

        folder = self.stage_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        flags = dict(stage.get("args") or {})
        if "source" in stage:
            flags["source_model"] = str(self.model_of(stage["source"]))
        flags["out"] = str(folder / "loop")
        parser = argparse.ArgumentParser(prog=f"stage {stage['name']}", add_help=False)
        options.add_arguments(parser)
        try:
            args = parser.parse_args(mace_argv(flags, parser, "active-loop", "mace_transfer_active"))
        except UserInputError as exc:
            raise UserInputError(f"stage {stage['name']!r}: {exc}") from None
        except SystemExit:
            raise UserInputError(f"stage {stage['name']!r}: bad active-loop options {flags}") from None
        active = loop.ActiveLoop(options.settings_from_args(args), say=lambda m: print(m, flush=True))
        records = active.run()
        if not any(r.get("models") for r in records):
            raise UserInputError(f"stage {stage['name']!r}: the loop trained no model")
        shutil.copyfile(active.models_of(records)[0], folder / f"{stage['name']}.model")


# ----------------------------------------------------------------------------- reporting
def read_training_curve(results_dir: Path) -> Dict[str, List[float]]:
    """Validation epochs and force RMSE (meV/Å) from MACE's ``*_train.txt`` results file."""
    epochs, rmse_f = [], []
    for row in iter_mace_results(results_dir):
        if row.get("mode") == "eval" and row.get("rmse_f") is not None:
            epochs.append(int(row["epoch"]) if row.get("epoch") is not None else len(epochs))
            rmse_f.append(1000.0 * float(row["rmse_f"]))
    return {"epoch": epochs, "rmse_f_meV_A": rmse_f}


def plot_training_curves(results: Dict[str, Path], out_png: Path) -> None:
    """Validation force RMSE vs epoch for several training runs (one PNG)."""
    from mace_transfer.evaluate.report import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(5, 3.6), dpi=150)
    for label, folder in results.items():
        curve = read_training_curve(folder)
        if curve["epoch"]:
            ax.plot(curve["epoch"], curve["rmse_f_meV_A"], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation force RMSE (meV/Å)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out_png, dpi=None)


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_table(metrics: Dict[str, Any], labels: List[str]) -> str:
    """Markdown table of test energy/force errors per model."""
    rows = ["| model | force MAE (meV/Å) | force RMSE (meV/Å) | energy MAE (meV/atom) |", "|---|---|---|---|"]
    models = metrics.get("models", {})
    for label in labels:
        errors = (models.get(label) or {}).get("errors", {}).get("overall", {})
        if not errors:
            continue
        rows.append(
            f"| {label} | {_fmt(errors.get('force_mae_meV_per_A'), 1)} | "
            f"{_fmt(errors.get('force_rmse_meV_per_A'), 1)} | "
            f"{_fmt(errors.get('energy_mae_meV_per_atom'), 2)} |"
        )
    return "\n".join(rows)


def run_pipeline_file(path) -> int:
    """Entry point of ``mace_transfer_train --pipeline FILE.yaml``."""
    Pipeline(load_pipeline(path)).run()
    return 0
