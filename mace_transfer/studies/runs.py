"""A study's runs on its start models (:mod:`mace_transfer.studies.starts`): each (strategy, N, seed)
training -> test errors -> record, resumable (a run whose record exists is skipped; a cut one continues
from its checkpoint), the learning-rate, loss and freeze choices on validation, and the timing comparison.
The MD ladder of finished runs is :mod:`mace_transfer.studies.md_runs`."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mace_transfer import UserInputError
from mace_transfer.execution import ExecutorSpec, Outcome, Task, local_workers, run_tasks
from mace_transfer.studies import parking, selection
from mace_transfer.studies.config import (KEPT_MODELS, METRICS, RECORDS, converged_options, epochs_for, run_name,
                                         seeds_at_size)
from mace_transfer.studies.plan import finished_walls, guess_wall_s
from mace_transfer.studies.records import (best_epoch, file_at_hand, load_runs, lowest_valid_loss, read_results,
                                           supersede_runs, valid_rmse_at, write_json)
from mace_transfer.studies.starts import STAGE_CACHES, StartModels, _fmt_time, machine_info, model_errors, run_dirs


class Sweep(StartModels):
    """One learning-curve study's runs on its start models: options, training, records, choices, sweep."""

    # -------------------------------------------------------------- one run
    def strategy_options(self, strategy: str, n_train: int, seed: int, freeze_blocks: Optional[str] = None,
                         lr: Optional[float] = None, loss_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """MACE options of one run: the shared ``mace`` block, the budget at this N (extra training
        frames count), the strategy's start and flags; ``lr`` overrides the strategy's, ``loss_flags``
        (a ``loss_grid`` option) are applied last."""
        spec = self.config["strategies"][strategy]
        if self.config.get("stage_two"):
            return self.stage_two_options(strategy, n_train, seed)
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

    def stage_one_record(self, strategy: str, n_train: int, seed: int) -> Tuple[Path, Dict[str, Any]]:
        """The converged run a ``stage_two`` study continues: ``<stage_two.from>/models/<run>.model`` and
        its record, refused in one line when missing or trained on other structures than this subset. Read
        once per run (the options at its start and the record at its end both ask)."""
        cache = self.__dict__.setdefault("_stage_one_records", {})
        if (strategy, n_train, seed) not in cache:
            cache[strategy, n_train, seed] = self._read_stage_one_record(strategy, n_train, seed)
        return cache[strategy, n_train, seed]

    def _read_stage_one_record(self, strategy: str, n_train: int, seed: int) -> Tuple[Path, Dict[str, Any]]:
        study = Path(self.config["stage_two"]["from"])
        name = run_name(strategy, n_train, seed)
        model, record_path = study / KEPT_MODELS / f"{name}.model", study / RECORDS / f"{name}.json"
        if not model.is_file() or not record_path.is_file():
            raise UserInputError(f"stage_two.from: {study} has no finished {name} (model and record)")
        record = json.loads(record_path.read_text())
        if record.get("train_indices") != self.train_indices(n_train, seed):
            raise UserInputError(f"stage_two.from: {record_path} was trained on other structures than this "
                                 f"study's N={n_train}, seed {seed} (check data, n_valid, valid_seed)")
        return model, dict(record, record_path=str(record_path))

    def stage_two_options(self, strategy: str, n_train: int, seed: int) -> Dict[str, Any]:
        """MACE options of a stage-two run: the ``mace`` block, the budget with ``stage_two.budget`` over it,
        ``stage_two.lr`` and ``stage_two.mace`` (the loss and its weights), started from the stage-one model
        as MACE's ``--foundation_model`` (same element, same E0s: a continuation, not a transfer; seam: MACE's
        own fine-tuning load, ``load_foundations_elements``, which copies every weight and the scale/shift)."""
        stage_two = self.config["stage_two"]
        options = dict(self.config["mace"])
        budget = dict(self.config["budget"], **(stage_two.get("budget") or {}))
        batch = int(options.get("batch_size", 5))
        if n_train < batch:
            batch = options["batch_size"] = n_train
        model, _ = self.stage_one_record(strategy, n_train, seed)
        options.update(lr=float(stage_two["lr"]), seed=int(seed), E0s=self.config["target_E0s"],
                       restart_latest=False, foundation_model=str(model), multiheads_finetuning=False)
        options.update(converged_options(n_train, batch, budget))
        options.update(stage_two.get("mace") or {})
        return options

    def train_run(self, strategy: str, n_train: int, seed: int, record_path: Path,
                  freeze_blocks: Optional[str] = None, lr: Optional[float] = None,
                  loss_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Train one (strategy, N, seed), test it, write ``record_path``; the record."""
        record = self.run_record(strategy, n_train, seed, record_path, freeze_blocks, lr, loss_flags)
        self.finish_run(record_path.stem, self.work / record_path.stem, record_path, record)
        return record

    def run_record(self, strategy: str, n_train: int, seed: int, record_path: Path,
                   freeze_blocks: Optional[str] = None, lr: Optional[float] = None,
                   loss_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Train and test one (strategy, N, seed) into its work folder; its record, not yet written
        (:meth:`finish_run` writes it: here, or in the parent of a Dask worker, :func:`train_task`)."""
        name = record_path.stem
        folder = self.work / name
        done_before = self.resume_point(name, folder)
        subset = self.write_subset(folder, n_train, seed)
        options = self.strategy_options(strategy, n_train, seed, freeze_blocks, lr, loss_flags)
        options.update(train_file=subset["train_file"], valid_file=subset["valid_file"],
                       **run_dirs(folder, name))
        if subset["estimate_file"] and options.get("source_model"):
            # data.extra_train (e.g. close-pair cells) trains the model but would dominate the
            # corresponding-states k and the shift refit with its large forces and energies
            options["estimate_file"] = subset["estimate_file"]
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
            "estimate_file": options.get("estimate_file"),
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
            **self._stage_one_summary(strategy, n_train, seed, self._results_log(name, seed),
                                      {k: errors[k] for k in METRICS}),
            "load_average_after": list(os.getloadavg()),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return record

    def _results_log(self, name: str, seed: int) -> Path:
        """MACE's results log of run ``name`` in its work folder (``run_dirs``: ``<work>/<name>/results``)."""
        return self.work / name / "results" / f"{name}_run-{seed}_train.txt"

    def _stage_one_summary(self, strategy: str, n_train: int, seed: int, results: Path,
                           test: Dict[str, Any]) -> Dict[str, Any]:
        """A stage-two run's record entries: its ``stage_two`` block, the stage-one run it continued (record
        path, test errors, best epoch), the validation energy check of ``--converged_stage_two``
        (:func:`~mace_transfer.transfer.stage_two.validation_energy_check` on MACE's results log ``results``)
        and ``test_kept``: the test errors of the model that check keeps; nothing for an ordinary run."""
        if not self.config.get("stage_two"):
            return {}
        from mace_transfer.transfer.stage_two import validation_energy_check

        _, one = self.stage_one_record(strategy, n_train, seed)
        check = validation_energy_check(results)
        return {"stage_two": self.config["stage_two"],
                "stage_one": {"record": one["record_path"], "test": one["test"], "best_epoch": one.get("best_epoch"),
                              "lr": one.get("lr"), "loss_flags": one.get("loss_flags") or {}},
                "valid_energy_check": check, "test_kept": test if check["keep_stage_two"] else one["test"]}

    def add_missing_stage_two_checks(self) -> int:
        """Records of a stage-two study finished without the validation energy check (by a process started
        before it existed) get it from their MACE results log, while their work folder is at hand; returns
        how many were filled in."""
        if not self.config.get("stage_two"):
            return 0
        filled = 0
        for path in sorted((self.out / RECORDS).glob("*.json")):
            record = json.loads(path.read_text())
            results = self._results_log(record["name"], record["seed"])
            if "valid_energy_check" in record or not results.is_file():
                continue
            record.update(self._stage_one_summary(record["strategy"], record["n_train"], record["seed"], results,
                                                  record["test"]))
            write_json(path, record)
            filled += 1
        return filled

    # ------------------------------------------------ runs that outlive a session (studies.parking)
    def finish_run(self, name: str, folder: Path, record_path: Path, record: Dict[str, Any]) -> None:
        """Write a finished run's record, with what each training chunk ran on (``devices``) and the epoch
        of the model MACE kept (``kept_epoch``: the highest checkpoint on disk, which it reloads); its
        checkpoints and parked copy go (the model stays)."""
        kept = parking.checkpoints(folder)
        record.update(devices=parking.chunk_devices(folder),
                      kept_epoch=parking.checkpoint_epoch(kept[-1]) if kept else None)
        with contextlib.suppress(OSError):
            shutil.rmtree(folder / "checkpoints")
        write_json(record_path, record)
        parking.drop_parked(self.out, name)

    def park_runs(self) -> List[str]:
        """Park every run of ``work`` cut mid-training (:func:`parking.park_runs`), and a cut
        once-trained stage (``source``, ``classical``); a finished stage's old checkpoints stay put."""
        finished = [key for key in STAGE_CACHES if self.stage_done(key)]
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
        n_train, seed = selection.select_point(self.config.get("lr_grid"))

        def summarise(record):
            return {"best_valid_loss": lowest_valid_loss(record),
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
        if not selection.loss_selected(self.config, strategy):
            return None
        grid = self.config["loss_grid"]
        options = grid["options"]
        n_train, seed = selection.select_point(grid)
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
        n_train, seed = selection.select_point(spec, default_n=10)
        results = done.get("candidates", {})
        for blocks in candidates:
            if blocks in results:
                continue
            self.say(f"freeze selection: transfer + freeze {blocks} at N={n_train} seed={seed}")
            record = self.train_run("transfer_freeze", n_train, seed,
                                    self.out / "selection" / f"{selection.freeze_try_name(blocks, n_train, seed)}.json",
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

    def choices(self, strategy: str) -> Tuple[Optional[str], Optional[float], Optional[Dict[str, Any]]]:
        """The frozen blocks, learning rate and loss flags chosen on validation for ``strategy`` (None:
        not chosen, the config's). One process at a time per strategy: a second one waits for the first's
        tries and then reads them (each chooser skips finished tries), so no try is trained twice."""
        lock = parking.claim(self.work, f"select_{strategy}")
        if lock is None:
            self.say(f"{strategy}: waiting for another process's choices on validation")
            lock = parking.claim(self.work, f"select_{strategy}", wait=True)
        with lock:
            freeze = self.freeze_choice() if strategy == "transfer_freeze" else None
            return freeze, self.lr_choice(strategy), self.loss_choice(strategy)

    # -------------------------------------------------------------- sweep
    def sweep(self, sizes: Sequence[int], seeds: Sequence[int], strategies: Sequence[str],
              max_runs: Optional[int] = None, executor: Optional[ExecutorSpec] = None) -> int:
        """Train every missing (strategy, N, seed); N ascending; ``seeds_above`` in the config limits the seeds
        at large N (:func:`~mace_transfer.studies.config.seeds_at_size`); a run another process is training
        (its lock held: :func:`parking.claim`) is left to it, and a start's choices on validation are made by
        one process at a time (:meth:`choices`). ``executor``: a Dask spec runs one task per run on its
        workers (:meth:`_sweep_on_dask`); None trains here, one run after the other. Returns the number of
        runs this call finished."""
        choices = {strategy: self.choices(strategy) for strategy in strategies}  # None: the config's
        self._supersede_other_losses({strategy: loss for strategy, (_, _, loss) in choices.items()})
        plan = [(s, n, seed) for n in sizes for seed in seeds_at_size(self.config.get("seeds_above"), n, seeds)
                for s in strategies]
        todo = [p for p in plan if not (self.out / RECORDS / f"{run_name(*p)}.json").is_file()]
        self.say(f"sweep: {len(plan)} runs, {len(plan) - len(todo)} done already, {len(todo)} to train")
        if max_runs is not None:
            todo = todo[:max_runs]
        walls = finished_walls(load_runs(self.out))
        if executor is not None and executor.kind != "serial":
            return self._sweep_on_dask(todo, choices, executor, walls)
        finished = 0
        for number, (strategy, n_train, seed) in enumerate(todo, 1):
            path = self.out / RECORDS / f"{run_name(strategy, n_train, seed)}.json"
            lock = parking.claim(self.work, f"train_{path.stem}")  # two sweeps of one study share its runs
            if lock is None:
                self.say(f"{path.stem}: another process is training it; skipped")
                continue
            with lock:
                if path.is_file():  # finished by another process meanwhile
                    continue
                record = self._train_or_take(strategy, n_train, seed, path, *choices[strategy])
            finished += 1
            self._say_finished(record, walls, number, todo)
        return finished

    def _say_finished(self, record: Dict[str, Any], walls: Dict, number: int, todo: Sequence[Tuple],
                      parallel: int = 1) -> None:
        """The progress line of the ``number``-th of ``todo`` runs to finish, with an ETA from the walls so far
        (``parallel`` runs at a time)."""
        walls.setdefault((record["strategy"], record["n_train"]), []).append(float(record["wall_s"]))
        eta = sum(guess_wall_s(walls, s, n)[0] or 0.0 for s, n, _ in todo[number:]) / max(1, parallel)
        self.say(f"[{number}/{len(todo)}] {record['strategy']:16s} N={record['n_train']:<4d} seed={record['seed']}: "
                 f"test force MAE {record['test']['force_mae_meV_per_A']:7.1f} meV/Å, energy MAE "
                 f"{record['test']['energy_mae_meV_per_atom']:6.2f} meV/atom, "
                 f"{record['epochs_run']} epochs (best {record['best_epoch']}), "
                 f"{_fmt_time(record['wall_s'])}; ETA {_fmt_time(eta)}")

    def _sweep_on_dask(self, todo: Sequence[Tuple[str, int, int]], choices: Dict[str, Tuple],
                       executor: ExecutorSpec, walls: Dict) -> int:
        """The sweep's runs as Dask tasks (:func:`train_task`, one per run). This process claims each run
        before submitting it (:func:`parking.claim`: another command of the study skips it), writes each
        record as its task ends (:meth:`finish_run`) and then lets its claim go; a run whose task failed
        gets no record (a line in ``<out>/failed_runs.jsonl``) and is trained again by a rerun."""
        claims, tasks, finished = {}, [], 0
        try:
            for strategy, n_train, seed in todo:
                path = self.out / RECORDS / f"{run_name(strategy, n_train, seed)}.json"
                lock = parking.claim(self.work, f"train_{path.stem}")
                if lock is None:
                    self.say(f"{path.stem}: another process is training it; skipped")
                    continue
                taken = None if path.is_file() else self._take_selected(strategy, n_train, seed, path,
                                                                           *choices[strategy])
                if path.is_file():  # finished meanwhile, or its selection try is this run (taken: counted)
                    lock.close()
                    if taken is not None:
                        finished += 1
                        self._say_finished(taken, walls, finished, todo)
                    continue
                claims[path.stem] = lock
                tasks.append(Task(path.stem, train_task, (self.config, str(self.out), str(self.work), os.getcwd(),
                                                          strategy, n_train, seed, str(path), *choices[strategy])))

            def on_done(outcome: Outcome) -> None:
                nonlocal finished
                path = self.out / RECORDS / f"{outcome.key}.json"
                try:
                    if outcome.ok:
                        self.finish_run(outcome.key, self.work / outcome.key, path, outcome.value)
                        finished += 1
                        self._say_finished(outcome.value, walls, finished, todo,
                                           parallel=local_workers(executor) if executor.kind == "local" else 1)
                    else:
                        with open(self.out / "failed_runs.jsonl", "a") as fh:
                            fh.write(json.dumps({"name": outcome.key, "error": outcome.error,
                                                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
                        self.say(f"{outcome.key}: FAILED ({outcome.error}); no record, a rerun trains it again")
                finally:
                    claims.pop(outcome.key).close()

            run_tasks(tasks, executor, on_done, say=self.say)
        finally:
            for lock in claims.values():
                lock.close()
        return finished

    def _take_selected(self, strategy: str, n_train: int, seed: int, path: Path, blocks: Optional[str],
                       lr: Optional[float], loss_flags: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """The record of one planned run written from its selection try's, when a choice on validation already
        trained this (N, seed) with the chosen settings (:meth:`choices`); else None."""
        selected = strategy == "transfer_freeze" or lr is not None or loss_flags is not None
        record = selection.selected_run(self.out, strategy, n_train, seed, blocks, lr,
                                        loss_flags) if selected else None
        if record is not None:
            record["name"] = path.stem
            write_json(path, record)
        return record

    def _train_or_take(self, strategy: str, n_train: int, seed: int, path: Path, blocks: Optional[str],
                       lr: Optional[float], loss_flags: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The record of one planned run with the choices of :meth:`choices`: its selection try's
        (:meth:`_take_selected`), else a new training's."""
        record = self._take_selected(strategy, n_train, seed, path, blocks, lr, loss_flags)
        if record is None:
            return self.train_run(strategy, n_train, seed, path, freeze_blocks=blocks, lr=lr, loss_flags=loss_flags)
        return record

    def _supersede_other_losses(self, losses: Dict[str, Optional[Dict[str, Any]]]) -> None:
        """Finished runs of a start trained with another loss than the one its ``loss_grid`` chose are
        moved, with their models and MD/E-V results, to ``<out>/superseded/<that loss's tag>/``
        (:func:`records.supersede_runs`): the study's tables then compare one loss per start, and the
        sweep retrains those (N, seed) with the chosen loss when they are asked for."""
        options = (self.config.get("loss_grid") or {}).get("options") or {}
        by_tag: Dict[str, List[str]] = {}
        for record in load_runs(self.out):
            chosen = losses.get(record["strategy"])
            flags = record.get("loss_flags") or {}
            if chosen is None or flags == chosen:
                continue
            tag = next((t for t, f in options.items() if (f or {}) == flags),
                       "loss-" + "-".join(f"{k}{v:g}" if isinstance(v, (int, float)) else f"{k}{v}"
                                          for k, v in sorted(flags.items())))
            by_tag.setdefault(tag, []).append(record["name"])
        for tag, names in by_tag.items():
            reason = f"trained with loss {tag}; the loss grid chose another for its start"
            folder = supersede_runs(self.out, names, tag, reason)
            self.say(f"superseded: {len(names)} runs trained with loss {tag} moved to {folder} "
                     f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); asked-for (N, seed) "
                     f"are retrained with the chosen loss")

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


def train_task(config: Dict[str, Any], out: str, work: str, cwd: str, strategy: str, n_train: int, seed: int,
               record_path: str, freeze_blocks: Optional[str], lr: Optional[float],
               loss_flags: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """One study run as a Dask task: trains and tests it in ``cwd`` (the study's relative paths are the
    parent's, so records are identical to a serial sweep's); returns its record, which the parent writes
    (:meth:`Sweep._sweep_on_dask`). A worker that dies mid-run is replaced by Dask and the run starts
    again (a converged study's run resumes from its newest checkpoint, :meth:`Sweep.resume_point`)."""
    before = os.getcwd()
    os.chdir(cwd)  # one task per worker process at a time (execution.make_cluster)
    try:
        sweep = Sweep(config, out, work)
        return sweep.run_record(strategy, n_train, seed, Path(record_path), freeze_blocks, lr, loss_flags)
    finally:
        os.chdir(before)
