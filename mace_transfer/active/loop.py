"""The active-learning loop: rounds of explore -> select -> label -> fine-tune -> check, until the stop rule.

Round ``r`` (folder ``OUT/round_RRR``):

1. *explore* with the committee of round ``r-1`` (round 0: the start model alone; a scratch start has
   none, pool mode only): MD units (:mod:`mace_transfer.active.explore`), or in pool mode the pool's
   structures not yet taken, scored by the committee; candidates in ``candidates.xyz``;
2. *stop?* the fresh uncertainty below the threshold for K rounds stops here (:mod:`mace_transfer.active.stop`);
3. *select* ``batch_size`` candidates (round 0: ``initial``, by diversity alone; then highest uncertainty with
   the diversity rule, :mod:`mace_transfer.active.select`), never more than the budget left: ``selected.xyz``;
4. *label* them (:mod:`mace_transfer.active.labels`): ``labels.xyz`` (+ ``labels.failed.jsonl``);
5. *fine-tune* the committee on every label so far (``train.xyz``): member 0 on all of them, member k > 0 on a
   seeded bootstrap resample; warm start from the previous round's member k, or with ``warm_start=False``
   from the start (the remapped source) each round; a member k > 0 that starts from the start model starts
   from its own seeded perturbed copy of it (``member_noise``, :func:`committee.perturbed_copy`): with few
   labels in one batch, data order and bootstrap alone leave the members one model; a scratch start trains
   each member from MACE's random init (seeded by member) instead; ``member_K/``;
6. *check*: validation and test errors of the committee mean, the calibration of its uncertainty on the test
   set; then ``record.json``, the round's record and its last marker.

Resumable after kill -9 anywhere: every step ends with an atomically written marker (``explore.json``,
``select.json``, ``label.json``, ``member_K.json``, ``check.json``, ``record.json``); a rerun skips each step
whose marker exists and redoes the one that was cut (exploration by unit, labels by structure through the
labeller's own bookkeeping, members one by one). Nothing is labelled twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from mace_transfer import UserInputError
from mace_transfer.active import committee, explore as exploration, select
from mace_transfer.active.labels import LabellerSpec, label_batch
from mace_transfer.active.stop import StopRule
from mace_transfer.execution import ExecutorSpec, Task, run_tasks

logger = logging.getLogger(__name__)

#: environment variable naming a point where the loop kills itself with SIGKILL (``name@round:count``, e.g.
#: ``label-frame@1:1``: after the first label this process writes in round 1): the fault-injection seam the
#: resume tests use (a real kill -9 at a known point). Points: ``explore-unit``, ``label-frame``,
#: ``train-member`` (each after its file or marker is on disk), ``step-<name>`` (before a step's marker)
KILL_AT = "MACE_TRANSFER_ACTIVE_KILL_AT"
_PASSED: Dict[str, int] = {}

#: MACE options every member gets unless ``mace`` overrides them
MACE_DEFAULTS: Dict[str, Any] = {
    "energy_key": "REF_energy", "forces_key": "REF_forces", "stress_key": "REF_stress",
    "default_dtype": "float64", "max_num_epochs": 20, "batch_size": 5, "valid_batch_size": 10,
    "eval_interval": 1, "restart_latest": False, "lr": 0.002,
}


def checkpoint(name: str) -> None:
    """A named point of the loop; kills this process here when :data:`KILL_AT` says so."""
    _PASSED[name] = _PASSED.get(name, 0) + 1
    wanted = os.environ.get(KILL_AT, "")
    if wanted and wanted == f"{name}:{_PASSED[name]}":
        logger.warning("active: killed at %s (%s)", wanted, KILL_AT)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class LoopSettings:
    """Everything a loop needs; ``identity()`` is what a rerun into the same ``out`` must keep.

    ``start``: ``{"source_model": path, "element_map": "Si:Ge"}`` (+ optional ``length_scale``,
    ``energy_scale`` for the round-0 explorer), ``{"model": path}`` (any MACE model with ``element``) or
    ``{"scratch": True}`` (no start model: members trained from random init with the architecture and the
    ``E0s`` of ``mace``; pool mode only, as exploration MD needs a model in round 0);
    ``mace``: MACE options for the members (flags of ``mace_transfer_train``; :data:`MACE_DEFAULTS` below);
    ``pool``: a labelled extxyz (pool mode: no MD, the pool's labels read only once selected);
    ``selection``: ``uncertainty`` (the loop) or ``random`` (the baseline: a seeded random draw each round,
    the committee trained and checked alike)."""

    out: str
    element: str
    start: Dict[str, Any]
    labeller: LabellerSpec
    stop: StopRule
    batch_size: int = 4
    initial: Optional[int] = None
    committee: int = 3
    seed: int = 0
    warm_start: bool = True
    bootstrap: bool = True
    selection: str = "uncertainty"
    member_noise: float = 0.02
    min_distance: float = select.DEFAULT_MIN_DISTANCE
    max_per_kind: Optional[int] = None
    explore: Optional[exploration.ExploreSettings] = None
    pool: Optional[str] = None
    mace: Dict[str, Any] = field(default_factory=dict)
    valid_file: Optional[str] = None
    test_file: Optional[str] = None
    device: str = "cpu"
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)

    def identity(self) -> Dict[str, Any]:
        """The settings a resumed loop must share with the run it resumes (not budget, stop, executor)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("stop", "executor", "out", "device")}
        return json.loads(json.dumps(data, default=str))


# ----------------------------------------------------------------------------- small file helpers
def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file, fsync and rename (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, default=_plain)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _stats_meV(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """max / median / 90th percentile (meV/Å) of uncertainties in eV/Å (None when there are none)."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n_inf = sum(1 for v in values if v is not None and not np.isfinite(v))
    if finite.size == 0 and not n_inf:
        return {"max": None, "median": None, "p90": None, "n_infinite": 0}
    return {"max": float("inf") if n_inf else float(1000 * finite.max()),
            "median": float(1000 * np.median(finite)) if finite.size else None,
            "p90": float(1000 * np.percentile(finite, 90)) if finite.size else None, "n_infinite": n_inf}


def model_e0s(path: str) -> str:
    """The E0s of a MACE model file as MACE's ``--E0s`` dict text (eV per element). Given explicitly:
    MACE 0.3.16's ``--E0s foundation`` fails on a one-element model (its squeeze leaves a 0-d tensor)."""
    from mace_transfer.transfer import remap

    model = remap.load_model(path)
    zs = remap.model_elements(model)
    energies = model.atomic_energies_fn.atomic_energies.detach().reshape(-1, len(zs))[-1]
    return repr({int(z): float(e) for z, e in zip(zs, energies)})


class ActiveLoop:
    """One loop in ``settings.out``: :meth:`run` goes on from wherever the last process stopped."""

    def __init__(self, settings: LoopSettings, say: Callable[[str], None] = print):
        self.s = settings
        self.out = Path(settings.out)
        self.say = say

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        """Check the settings, write or compare ``active.json``, make the start model."""
        s = self.s
        if s.selection not in ("uncertainty", "random"):
            raise UserInputError(f"selection must be uncertainty or random, got {s.selection!r}")
        if s.batch_size < 1 or s.committee < 3:
            raise UserInputError(f"need batch_size >= 1 and a committee of >= 3 models "
                                 f"(got batch_size {s.batch_size}, committee {s.committee})")
        if (s.pool is None) == (s.explore is None):
            raise UserInputError("give either exploration settings or a pool, not both or neither")
        # the one check of a scratch start's needs (flags or settings built in code); messages name the flags
        if self.scratch and s.pool is None:
            raise UserInputError("--scratch needs --pool (a pool to select from: exploration MD needs a model in "
                                 "round 0)")
        if self.scratch and not s.mace.get("E0s"):
            raise UserInputError("--scratch needs the target's isolated-atom energies: E0s in --mace_options "
                                 "(LoopSettings.mace), e.g. E0s: \"{32: -103.12}\"")
        for name, path in (("pool", s.pool), ("valid_file", s.valid_file), ("test_file", s.test_file)):
            if path and not Path(path).is_file():
                raise UserInputError(f"{name} {path} does not exist")
        s.labeller.check()
        self.out.mkdir(parents=True, exist_ok=True)
        saved = self.out / "active.json"
        identity = s.identity()
        if saved.exists():
            before = read_json(saved)["identity"]
            if before != identity:
                changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
                raise UserInputError(f"{self.out} holds a loop with other settings ({', '.join(changed)}); "
                                     "use another --out")
        write_json(saved, {"identity": identity, "stop": asdict(s.stop), "executor": asdict(s.executor)})
        if not self.scratch:
            self.start_model()

    @property
    def scratch(self) -> bool:
        """A scratch start: no start model; members trained from random init until a committee exists."""
        return bool(self.s.start.get("scratch"))

    def start_model(self) -> Path:
        """The round-0 explorer: the given model, or the remapped source (``start.model``)."""
        from mace_transfer.transfer import remap

        s = self.s
        if self.scratch:
            raise RuntimeError("a scratch start has no start model")  # callers handle the scratch case
        z = remap.to_atomic_number(s.element)
        if "model" in s.start:
            model = remap.load_model(s.start["model"])
            path = Path(s.start["model"])
        else:
            path = self.out / "start.model"
            if path.exists():
                model = remap.load_model(path)
            else:
                source = remap.load_model(s.start["source_model"])
                if z not in remap.parse_element_map(s.start["element_map"]).values():
                    raise UserInputError(f"--element_map {s.start['element_map']} maps nothing to {s.element}")
                from mace_transfer.transfer.train import parse_e0s

                # the target's E0s of the MACE options when given as a dict (else the source's, with a warning)
                model = remap.remap_elements(source, s.start["element_map"],
                                             length_scale=float(s.start.get("length_scale") or 1.0),
                                             energy_scale=float(s.start.get("energy_scale") or 1.0),
                                             atomic_energies=parse_e0s(s.mace.get("E0s")))
                import torch

                tmp = path.with_name(path.name + ".tmp")
                torch.save(model, tmp)
                os.replace(tmp, path)
        if z not in remap.model_elements(model):
            raise UserInputError(f"model {path} has no {s.element} (it has {remap.symbols(remap.model_elements(model))})")
        return path

    # ------------------------------------------------------------------ the rounds
    def round_dir(self, r: int) -> Path:
        return self.out / f"round_{r:03d}"

    def records(self) -> List[Dict[str, Any]]:
        """The finished rounds' records, in order."""
        out, r = [], 0
        while (self.round_dir(r) / "record.json").exists():
            out.append(read_json(self.round_dir(r) / "record.json"))
            r += 1
        return out

    def run(self) -> List[Dict[str, Any]]:
        """Run rounds until the stop rule; returns every round's record."""
        self.prepare()
        records = self.records()
        while not self.finished(records):
            records.append(self.run_round(len(records), records))
        self.say(f"active: stopped after round {records[-1]['round']}: {records[-1]['stop']}; "
                 f"{records[-1]['labels_used']} labels, {records[-1]['dft_calls']} DFT calls")
        return records

    def finished(self, records: List[Dict[str, Any]]) -> bool:
        """The last round stopped the loop (a budget stop no longer holds when a rerun gives a larger budget)."""
        if not records or not records[-1]["stop"]:
            return False
        last = records[-1]
        return not (last["stop"].startswith("budget") and self.s.stop.budget_left(last["dft_calls"]) > 0)

    def models_of(self, records: List[Dict[str, Any]]) -> List[str]:
        """The current models: the last round's committee, or the start model (none for a scratch start)."""
        for record in reversed(records):
            if record.get("models"):
                return record["models"]
        return [] if self.scratch else [str(self.start_model())]

    def run_round(self, r: int, records: List[Dict[str, Any]]) -> Dict[str, Any]:
        s, folder = self.s, self.round_dir(r)
        folder.mkdir(parents=True, exist_ok=True)
        models = self.models_of(records)
        # no model yet (a scratch start before its first committee): no uncertainty, as one start model
        calc = committee.committee_calculator(models, s.device) if models else None
        found = self.step(folder / "explore.json", lambda: self.explore(r, calc, folder))
        candidates = exploration.read_frames(folder / "candidates.xyz")
        fresh = [float(f.info["uncertainty_eV_A"]) for f in candidates if "uncertainty_eV_A" in f.info]
        history = [rec["fresh_uncertainty_eV_A"] for rec in records if rec["round"] > 0] + (
            [max(fresh) if fresh else None] if r > 0 else [])
        dft_before = records[-1]["dft_calls"] if records else 0
        record = {"round": r, "mode": "pool" if s.pool else "explore", "models_explored_with": models,
                  "explore": found, "fresh_uncertainty_eV_A": max(fresh) if fresh else None,
                  "fresh_uncertainty_meV_A": _stats_meV(fresh), "labels_new": 0, "failed": [],
                  "labels_used": records[-1]["labels_used"] if records else 0, "dft_calls": dft_before,
                  "models": models, "stop": None}
        if r > 0 and s.stop.converged(history):
            record["stop"] = (f"converged: fresh uncertainty below {s.stop.threshold_meV_A:g} meV/Å "
                              f"for {s.stop.rounds} rounds")
        elif not candidates:
            record["stop"] = "no candidates left"
        if record["stop"]:
            return self.finish(folder, record)
        n = min((s.initial or s.batch_size) if r == 0 else s.batch_size, s.stop.budget_left(dft_before))
        chosen = self.step(folder / "select.json", lambda: self.select(r, candidates, n, folder))
        selected = exploration.read_frames(folder / "selected.xyz")
        labelled = self.step(folder / "label.json", lambda: self.label(r, selected, folder))
        record.update(selected=chosen, label=labelled, labels_new=labelled["labelled"],
                      failed=labelled["failures"], dft_calls=dft_before + labelled["labelled"] + labelled["failed"])
        frames = self.all_labels(r)
        record["labels_used"] = len(frames)
        if frames:
            record["train"] = self.train(r, frames, folder)
            record["models"] = record["train"]["models"]
            record["check"] = self.step(folder / "check.json", lambda: self.check(record["models"], frames))
        if s.stop.budget_left(record["dft_calls"]) == 0:
            record["stop"] = f"budget: {record['dft_calls']} of {s.stop.budget} DFT calls"
        return self.finish(folder, record)

    def finish(self, folder: Path, record: Dict[str, Any]) -> Dict[str, Any]:
        """Add the round's wall and CPU s by step and write ``record.json`` (the round's last marker)."""
        steps = {k: record.get(k) or {} for k in ("explore", "label", "check")}
        train = record.get("train") or {}
        record["cpu_s"] = {"exploration": steps["explore"].get("cpu_s", 0.0), "dft": steps["label"].get("cpu_s", 0.0),
                           "training": train.get("cpu_s", 0.0), "check": steps["check"].get("cpu_s", 0.0)}
        record["wall_s"] = {"exploration": steps["explore"].get("wall_s", 0.0),
                            "select": (record.get("selected") or {}).get("wall_s", 0.0),
                            "dft": steps["label"].get("wall_s", 0.0), "training": train.get("wall_s", 0.0),
                            "check": steps["check"].get("wall_s", 0.0)}
        record["wall_s"]["total"] = float(sum(record["wall_s"].values()))
        record["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(folder / "record.json", record)
        fresh = record["fresh_uncertainty_meV_A"]["max"]
        self.say(f"active: round {record['round']}: {record['labels_new']} new labels ({record['labels_used']} in all, "
                 f"{record['dft_calls']} DFT calls), fresh uncertainty max "
                 f"{'-' if fresh is None else f'{fresh:.1f}'} meV/Å"
                 + (f", test force MAE {record['check']['test']['force_mae_meV_per_A']:.1f} meV/Å"
                    if (record.get("check") or {}).get("test") else ""))
        return record

    @staticmethod
    def step(marker: Path, work: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """The step's result from its marker, or run it (timed) and write the marker."""
        if marker.exists():
            return read_json(marker)
        t0 = time.perf_counter()
        result = work()
        result.setdefault("wall_s", time.perf_counter() - t0)
        checkpoint(f"step-{marker.stem}@{int(marker.parent.name.split('_')[-1])}")
        write_json(marker, result)
        return result

    # ------------------------------------------------------------------ steps
    def explore(self, r: int, calc, folder: Path) -> Dict[str, Any]:
        """MD units (or the pool's remaining structures, scored) -> ``candidates.xyz``."""
        cpu0 = committee.cpu_seconds()
        if self.s.pool:
            frames = self.pool_candidates(r)
            if getattr(calc, "num_models", 1) > 1:
                for frame, row in zip(frames, committee.evaluate_frames(calc, frames)):
                    frame.info["uncertainty_eV_A"], frame.info["uncertainty_mean_eV_A"] = row["max"], row["mean"]
            checkpoint(f"explore-unit@{r}")
        else:
            frames, _ = exploration.explore(calc, self.s.explore, folder / "explore", self.s.seed, r,
                                            lambda name: checkpoint(f"{name}@{r}"))
        exploration.write_atomically(folder / "candidates.xyz", frames)
        return {"n_candidates": len(frames), "n_broken": sum("broken" in f.info for f in frames),
                "broken": sorted({str(f.info["broken"]).split(",")[0] for f in frames if "broken" in f.info}),
                "cpu_s": committee.cpu_seconds() - cpu0}

    def pool_candidates(self, r: int) -> List[Atoms]:
        """The pool's structures not selected in an earlier round, without their labels."""
        taken = set()
        for q in range(r):
            path = self.round_dir(q) / "selected.xyz"
            if path.exists():
                taken |= {int(f.info["pool_index"]) for f in exploration.read_frames(path)}
        from ase.io import read

        out = []
        for index, atoms in enumerate(read(self.s.pool, ":", format="extxyz")):
            if index in taken or atoms.info.get("config_type") == "IsolatedAtom":
                continue
            bare = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            bare.info.update(pool_index=index, config_type=str(atoms.info.get("config_type", "Default")))
            out.append(bare)
        return out

    def select(self, r: int, candidates: List[Atoms], n: int, folder: Path) -> Dict[str, Any]:
        """Choose ``n`` candidates -> ``selected.xyz``; the record of the choice."""
        t0 = time.perf_counter()
        descriptors = [select.descriptor(a) for a in candidates]
        uncertainty = [a.info.get("uncertainty_eV_A") for a in candidates]
        if n <= 0:
            chosen, rule = [], "none"
        elif self.s.selection == "random":  # the baseline: a seeded random draw, nothing else
            rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, r, 7]))
            chosen, rule = [int(i) for i in rng.permutation(len(candidates))[:n]], "random"
        elif all(u is None for u in uncertainty):
            chosen, rule = select.diverse_batch(descriptors, n, self.s.min_distance, seed=self.s.seed + r), "diversity"
        else:
            kinds = [str(a.info.get("config_type", "Default")) for a in candidates]
            chosen = select.select_batch(uncertainty, descriptors, n, self.s.min_distance, kinds, self.s.max_per_kind)
            rule = "uncertainty"
        picked = []
        for i in chosen:
            atoms = candidates[i].copy()
            atoms.info["candidate_index"], atoms.info["round"] = i, r
            picked.append(atoms)
        exploration.write_atomically(folder / "selected.xyz", picked)
        pairs = [select.distance(descriptors[a], descriptors[b]) for k, a in enumerate(chosen) for b in chosen[k + 1:]]
        return {"indices": chosen, "rule": rule,
                "uncertainty_meV_A": [None if uncertainty[i] is None else 1000 * float(uncertainty[i]) for i in chosen],
                "config_types": [str(candidates[i].info.get("config_type")) for i in chosen],
                "broken": [candidates[i].info.get("broken") for i in chosen],
                "min_pair_distance": min(pairs) if pairs else None, "wall_s": time.perf_counter() - t0}

    def label(self, r: int, selected: List[Atoms], folder: Path) -> Dict[str, Any]:
        """Label ``selected`` -> ``labels.xyz`` (failures in its sidecar, recorded and skipped)."""
        return label_batch(selected, self.s.labeller, folder / "labels.xyz", self.s.executor,
                           lambda name: checkpoint(f"{name}@{r}"), self.say)

    def all_labels(self, r: int) -> List[Atoms]:
        """Every label of rounds 0..r, in order."""
        from mace_transfer.datagen.dft.labeller import read_complete_frames

        frames = []
        for q in range(r + 1):
            path = self.round_dir(q) / "labels.xyz"
            if path.exists():
                frames += read_complete_frames(path)
        return frames

    # ------------------------------------------------------------------ fine-tune
    def member_options(self, r: int, k: int, folder: Path, train_file: Path, previous: Optional[str]) -> Dict[str, Any]:
        """MACE options of member ``k`` of round ``r``."""
        s = self.s
        member = folder / f"member_{k}"
        options = dict(MACE_DEFAULTS, device=s.device)
        options.update(s.mace)
        n_train = len(exploration.read_frames(train_file))
        options["batch_size"] = max(1, min(int(options["batch_size"]), n_train))
        options.update(name=f"member_{k}", seed=1000 * s.seed + 10 * r + k, train_file=str(train_file),
                       valid_file=s.valid_file or str(folder / "train.xyz"), model_dir=str(member),
                       work_dir=str(member), checkpoints_dir=str(member / "checkpoints"),
                       results_dir=str(member / "results"), log_dir=str(member / "logs"))
        if previous is not None:
            options.update(foundation_model=previous, E0s=model_e0s(previous))
            return options
        if self.scratch:  # random init seeded by (seed, r, k): the architecture and E0s of s.mace, no noise
            return options
        start = str(s.start.get("model") or s.start["source_model"])
        if k > 0 and s.member_noise > 0:  # a first committee: each member from its own perturbed start
            member.mkdir(parents=True, exist_ok=True)
            start = str(committee.perturbed_copy(start, folder / f"member_{k}_start.model", s.member_noise,
                                                 seed=1000 * s.seed + 10 * r + k))
        if "model" in s.start:
            options.update(foundation_model=start, E0s=model_e0s(start))
        else:
            options.update(source_model=start, element_map=s.start["element_map"], **self.scales(folder))
        return options

    def scales(self, folder: Path) -> Dict[str, float]:
        """One corresponding-states estimate (s, k) for every member of a round that starts from the source:
        of the unperturbed source on the round's labels (``scales.json``), so the members share one r_max
        (MACE's committee needs it). Empty when the ``mace`` options set the scales themselves."""
        from mace_transfer.transfer import estimate, remap

        if {"length_scale", "energy_scale", "corresponding_states"} & set(self.s.mace):
            return {}
        marker = folder / "scales.json"
        if not marker.exists():
            frames = exploration.read_frames(folder / "train.xyz")
            try:
                found = estimate.estimate_corresponding_states(remap.load_model(self.s.start["source_model"]),
                                                               self.s.start["element_map"], frames)
            except (UserInputError, ValueError) as exc:  # e.g. a source whose crystal has no EOS minimum
                self.say(f"active: corresponding-states rescale off: {exc}")
                found = {"length_scale": 1.0, "energy_scale": 1.0}
            write_json(marker, found)
        found = read_json(marker)
        return {"length_scale": float(found["length_scale"]), "energy_scale": float(found["energy_scale"])}

    def member_data(self, r: int, k: int, frames: List[Atoms], folder: Path) -> Path:
        """Member 0 trains on every label; member k > 0 on a bootstrap resample seeded by (seed, r, k)."""
        if k == 0 or not self.s.bootstrap:
            return folder / "train.xyz"
        rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, r, k]))
        path = folder / f"member_{k}_train.xyz"
        if not path.exists():
            exploration.write_atomically(path, [frames[i] for i in rng.integers(len(frames), size=len(frames))])
        return path

    def train(self, r: int, frames: List[Atoms], folder: Path) -> Dict[str, Any]:
        """Fine-tune every member without a marker (through the executor); the committee's models and cost."""
        s = self.s
        if not (folder / "train.xyz").exists():
            exploration.write_atomically(folder / "train.xyz", frames)
        previous = self.models_of(self.records()[:r]) if (r > 0 and s.warm_start) else None
        if previous is not None and len(previous) != s.committee:
            previous = None  # the previous round had no committee yet: start from the start (or scratch)
        tasks = []
        for k in range(s.committee):
            if (folder / f"member_{k}.json").exists():
                continue
            shutil.rmtree(folder / f"member_{k}", ignore_errors=True)  # a cut training starts over
            options = self.member_options(r, k, folder, self.member_data(r, k, frames, folder),
                                          previous[k] if previous else None)
            tasks.append(Task(f"train-{r:03d}-{k}", committee.train_member, (options,)))

        def done(outcome) -> None:
            if not outcome.ok:
                raise RuntimeError(f"active: {outcome.key} failed: {outcome.error}")
            write_json(folder / f"member_{outcome.key.rsplit('-', 1)[1]}.json", outcome.value)
            checkpoint(f"train-member@{r}")

        run_tasks(tasks, s.executor, on_done=done)
        members = [read_json(folder / f"member_{k}.json") for k in range(s.committee)]
        return {"models": [m["model"] for m in members], "cpu_s": float(sum(m["cpu_s"] for m in members)),
                "wall_s": float(sum(m["wall_s"] for m in members)),
                "start": "warm" if previous else ("scratch" if self.scratch else
                                                  "model" if "model" in s.start else "remapped source"),
                "n_train": len(frames)}

    # ------------------------------------------------------------------ check
    def check(self, models: List[str], frames: List[Atoms]) -> Dict[str, Any]:
        """Errors of the committee mean on validation (``valid_file``, else the training labels) and test;
        the calibration of its uncertainty on the test set (rank correlation with the true error)."""
        from ase.io import read

        from mace_transfer.evaluate.errors import test_errors

        cpu0 = committee.cpu_seconds()
        calc = committee.committee_calculator(models, self.s.device)
        keep = ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "force_rmse_meV_per_A", "n_configs")
        def labelled(path):  # structures with labels (an IsolatedAtom frame is MACE's E0, not a test)
            return [a for a in read(path, ":") if "REF_forces" in a.arrays
                    and a.info.get("config_type") != "IsolatedAtom"]

        valid = labelled(self.s.valid_file) if self.s.valid_file else frames
        result: Dict[str, Any] = {"valid_source": self.s.valid_file or "training labels",
                                  "valid": {k: test_errors(calc, valid, progress=False)["overall"][k] for k in keep}}
        if self.s.test_file:
            test = labelled(self.s.test_file)
            errors = test_errors(calc, test, progress=False)
            result["test"] = {k: errors["overall"][k] for k in keep}
            result["test_per_config_type"] = {t: {k: v[k] for k in keep} for t, v in errors["per_config_type"].items()}
            rows = committee.evaluate_frames(calc, test)
            result["calibration"] = committee.calibration(rows)
            result["test_uncertainty_meV_A"] = _stats_meV([row.get("max") for row in rows])
        result["cpu_s"] = committee.cpu_seconds() - cpu0
        return result
