"""From a Si model to a SiGe alloy model (issue 18): ``kind: alloy`` in a learning-curve config.

The Si source is extended to Si + Ge (``--remap_mode extend``: Ge starts as an exact copy of Si, Si
keeps its weights) and fine-tuned on N Ge and M alloy structures by one of four routes:

- ``replay``: MACE's multihead fine-tuning replays ``n_si`` Si structures on a ``pt_head``
  (``--multiheads_finetuning True --pt_train_file``; ``--force_mh_ft_lr True`` keeps the study's
  learning rate instead of MACE's 1e-4);
- ``mixed``: the same Si structures simply added to the training set;
- ``plain``: neither (Ge + alloy only);
- ``scratch``: no source, trained on the same Si + Ge + alloy data.

Each run is tested on three sets (alloy, Ge, Si: ``data.test_sets``), its Si error compared with the
source's (forgetting), and, when ``data.ev`` holds E-V scans of one cell per composition, on a0(x)
and the mixing energy against PBE (Birch-Murnaghan fits of the same cells). The Ge subsets and
validation cells are the learning curve's (same ``n_valid``, ``valid_seed``, seeds); the alloy pool
has its own fixed validation cells (``n_valid_alloy``, drawn once the pool is complete:
``alloy_pool_size``), used only when M > 0: the zero-alloy-data case (M = 0) sees no alloy at all.
Records: ``<out>/records/<route>_M<M>_s<seed>.json``.

    mace_transfer_learning_curve --config configs/alloy_sige.yaml [--sizes 0,20] [--seeds 0] \
        [--strategies replay,scratch]      # --sizes are the alloy counts M here
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError
from mace_transfer.studies.config import RECORDS, converged_options
from mace_transfer.studies.data import split_target, training_indices
from mace_transfer.studies.records import best_epoch, load_runs, read_results, write_json
from mace_transfer.studies.runs import Sweep, model_errors, run_dirs

ROUTES = ("replay", "mixed", "plain", "scratch")


def alloy_run_name(route: str, m_alloy: int, seed: int) -> str:
    return f"{route}_M{m_alloy:04d}_s{seed}"


def calculator_energy(calc) -> Callable[[Any], float]:
    """``energy_of`` for :func:`ev_properties`: a frame's energy (eV) under the ASE calculator ``calc``
    (computed on a copy: the frame keeps its own labels and calculator)."""

    def energy(atoms) -> float:
        atoms = atoms.copy()
        atoms.calc = calc
        return float(atoms.get_potential_energy())

    return energy


def ev_properties(energy_of, frames) -> Dict[str, Dict[str, float]]:
    """Per composition x: a0 (Å, of the 8-atom cubic cell) and the energy per atom at the minimum
    (eV/atom) of a Birch-Murnaghan fit to ``energy_of(frame)`` over the frames of that x (an E-V
    scan: ``info["x_ge"]``), and the mixing energy (meV/atom) against the x = 0 and x = 1 minima."""
    from mace_transfer.datagen.alloy import fit_birch_murnaghan

    by_x: Dict[float, list] = {}
    for atoms in frames:
        by_x.setdefault(round(float(atoms.info["x_ge"]), 4), []).append(atoms)
    result: Dict[str, Dict[str, Any]] = {}
    for x, scan in sorted(by_x.items()):
        n_atoms = len(scan[0])
        volumes = np.array([a.get_volume() for a in scan])
        energies = np.array([energy_of(a) for a in scan])
        try:
            with warnings.catch_warnings():  # ase warns on a minimum outside the scan: checked below
                warnings.simplefilter("ignore")
                fit = fit_birch_murnaghan(volumes, energies)
        except (RuntimeError, ValueError):  # a model with no minimum near the scan: nothing to fit
            fit = None
        if fit is None or not volumes.min() <= fit["V0_A3"] <= volumes.max():
            result[f"{x:g}"] = {"a0_A": None, "e0_eV_per_atom": None, "B0_GPa": None,
                                "note": "no energy minimum inside the scanned volumes"}
            continue
        cubic_cells = n_atoms / 8
        result[f"{x:g}"] = {"a0_A": float((fit["V0_A3"] / cubic_cells) ** (1 / 3)),
                           "e0_eV_per_atom": fit["E0_eV"] / n_atoms, "B0_GPa": fit["B0_GPa"]}
    if result.get("0", {}).get("e0_eV_per_atom") is not None and result.get("1", {}).get("e0_eV_per_atom") is not None:
        for key, entry in result.items():
            if entry["e0_eV_per_atom"] is None:
                continue
            x = float(key)
            line = (1 - x) * result["0"]["e0_eV_per_atom"] + x * result["1"]["e0_eV_per_atom"]
            entry["mixing_meV_per_atom"] = 1000 * (entry["e0_eV_per_atom"] - line)
    return result


class AlloySweep(Sweep):
    """The alloy study's runs (``kind: alloy``); Ge data and splits from the Sweep (``data.target``)."""

    def __init__(self, config: Dict[str, Any], out=None, work=None, progress=print):
        super().__init__(config, out, work, progress)
        for key in ("si", "alloy", "test_sets"):
            if key not in config["data"]:
                raise UserInputError(f"kind: alloy needs data.{key}")

    # -------------------------------------------------------------- data
    def test_sets(self) -> Dict[str, list]:
        """{name: frames} of ``data.test_sets`` (alloy, Ge, Si), read once per study."""
        from mace_transfer.studies.data import read_frames

        if not hasattr(self, "_test_sets"):
            self._test_sets = {name: read_frames(path) for name, path in self.config["data"]["test_sets"].items()}
        return self._test_sets

    def alloy_split(self):
        """(validation, training-pool) indices of the alloy pool. They are drawn from the whole pool, so
        a pool still being labelled (fewer frames than ``alloy_pool_size``) is refused: its split would
        change as labels land."""
        n_labelled = len(self.frames("alloy"))
        expected = self.config.get("alloy_pool_size")
        if expected is not None and n_labelled < int(expected):
            raise UserInputError(
                f"alloy pool {self.config['data']['alloy']} has {n_labelled} of {int(expected)} structures "
                "labelled; runs with M > 0 wait for the whole pool (its validation cells are drawn from all of "
                "it): scripts/label_alloys.sh")
        return split_target(n_labelled, int(self.config.get("n_valid_alloy", 6)), int(self.config["valid_seed"]))

    def si_frames(self) -> list:
        """The ``n_si`` Si structures replayed or mixed in (a fixed draw, seed 0)."""
        if not hasattr(self, "_si_frames"):
            frames = self.frames("si")
            order = training_indices(range(len(frames)), min(int(self.config.get("n_si", 50)), len(frames)), 0)
            self._si_frames = [frames[i] for i in order]
        return self._si_frames

    def write_alloy_subset(self, folder: Path, route: str, m_alloy: int, seed: int) -> Dict[str, Any]:
        from ase.io import write

        ge, alloy = self.frames("target"), self.frames("alloy")
        ge_valid, ge_pool = self.split()
        n_ge = int(self.config.get("n_ge", 20))
        ge_idx = training_indices(ge_pool, n_ge, seed)
        # M = 0 sees no alloy at all, not even to choose its best epoch: validation on the Ge cells only
        alloy_valid, alloy_idx = [], []
        if m_alloy:
            alloy_valid, alloy_pool = self.alloy_split()
            alloy_idx = training_indices(alloy_pool, m_alloy, seed)
        train = [ge[i] for i in ge_idx] + [alloy[i] for i in alloy_idx]
        if route in ("mixed", "scratch"):
            train += self.si_frames()
        folder.mkdir(parents=True, exist_ok=True)
        write(folder / "train.xyz", train, format="extxyz")
        write(folder / "valid.xyz", [ge[i] for i in ge_valid] + [alloy[i] for i in alloy_valid], format="extxyz")
        files = {"train_file": str(folder / "train.xyz"), "valid_file": str(folder / "valid.xyz")}
        if route == "replay":
            write(folder / "si_replay.xyz", self.si_frames(), format="extxyz")
            files["pt_train_file"] = str(folder / "si_replay.xyz")
        return {"files": files, "n_train": len(train), "ge_indices": ge_idx, "alloy_indices": alloy_idx,
                "n_valid_alloy": len(alloy_valid)}

    # -------------------------------------------------------------- runs
    def route_options(self, route: str, n_total: int, seed: int) -> Dict[str, Any]:
        if route not in ROUTES:
            raise UserInputError(f"unknown alloy route {route!r}; choose from {', '.join(ROUTES)}")
        options = dict(self.config["mace"])
        batch = min(int(options.get("batch_size", 5)), n_total)
        options.update(batch_size=batch, seed=int(seed), E0s=self.config["target_E0s"], restart_latest=False,
                       lr=float((self.config.get("routes") or {}).get(route, {}).get("lr", 0.003)))
        options.update(converged_options(n_total, batch, self.config["budget"]))
        if route != "scratch":
            options.update(source_model=str(self.source_model()), element_map=self.config["element_map"],
                           remap_mode="extend", corresponding_states=False)
        if route == "replay":
            options.update(multiheads_finetuning=True, force_mh_ft_lr=True)
        return options

    def source_si_errors(self) -> Dict[str, Any]:
        """The Si source on the Si test set: the 'before' of forgetting (``<out>/source_si.json``)."""
        path = self.out / "source_si.json"
        if not path.is_file():
            sets = self.test_sets()
            if "si" not in sets:
                return {}
            write_json(path, model_errors(self.source_model(), sets["si"]))
        return json.loads(path.read_text())

    def alloy_run(self, route: str, m_alloy: int, seed: int) -> Dict[str, Any]:
        name = alloy_run_name(route, m_alloy, seed)
        folder = self.work / name
        done_before = self.resume_point(name, folder)  # a run cut by a session's end resumes (--park)
        subset = self.write_alloy_subset(folder, route, m_alloy, seed)
        options = self.route_options(route, subset["n_train"], seed)
        options.update(**subset["files"], **run_dirs(folder, name))
        self.say(f"{name}: {route}, {len(subset['ge_indices'])} Ge + {m_alloy} alloy"
                 f"{' + Si' if route in ('mixed', 'scratch') else ''} ({subset['n_train']} structures)")
        wall = self.train_chunk(name, options, folder, done_before)
        model = folder / f"{name}.model"
        curve = read_results(folder / "results")
        record = {"strategy": route, "route": route, "n_train": m_alloy, "m_alloy": m_alloy, "seed": seed,
                  "n_ge": len(subset["ge_indices"]), "n_si": len(self.si_frames()) if route != "plain" else 0,
                  "name": name, "lr": options["lr"], "wall_s": wall, "epochs_run": len(curve["epoch"]),
                  "best_epoch": best_epoch(curve),
                  "converged": len(curve["epoch"]) < int(options["max_num_epochs"]),
                  **self.test_set_errors(model),
                  "ge_indices": subset["ge_indices"], "alloy_indices": subset["alloy_indices"],
                  "n_valid_alloy": subset["n_valid_alloy"],
                  "model": str(model), "curve": curve,
                  "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record["test"] = record["test_sets"].get("alloy") or next(iter(record["test_sets"].values()))
        self._add_pt_head_errors(record)
        if self.config["data"].get("ev"):
            from mace_transfer import evaluate

            record["ev"] = ev_properties(calculator_energy(evaluate.load_model(model).calc), self.frames("ev"))
        self.finish_run(name, folder, self.out / RECORDS / f"{name}.json", record)
        return record

    def test_set_errors(self, model) -> Dict[str, Any]:
        """``test_sets`` (overall errors per test set) and ``test_sets_per_config_type`` (per sampler kind:
        MD temperature, liquid, strain, vacancy) of a model, meV/Å and meV/atom."""
        grouped = {k: model_errors(model, frames, groups=True) for k, frames in self.test_sets().items()}
        return {"test_sets": {k: g["overall"] for k, g in grouped.items()},
                "test_sets_per_config_type": {k: g["per_config_type"] for k, g in grouped.items()}}

    def add_missing_per_config_type(self) -> int:
        """Per-config-type test errors for records written before they were measured, where the model is
        still at hand (nothing is trained); returns how many records were completed."""
        added = 0
        for path in sorted((self.out / RECORDS).glob("*.json")):
            record = json.loads(path.read_text())
            if "test_sets_per_config_type" in record or not Path(record["model"]).is_file():
                continue
            record["test_sets_per_config_type"] = self.test_set_errors(record["model"])["test_sets_per_config_type"]
            write_json(path, record)
            added += 1
        return added

    def _add_pt_head_errors(self, record: Dict[str, Any]) -> bool:
        """A replay run's Si test errors through its ``pt_head``: MACE's replay keeps the Si readout it
        trained on the replayed Si; the Default head (the one a calculator picks) never saw Si itself.
        False when there is nothing to add (not replay, no Si test set, already there, model gone)."""
        if (record["route"] != "replay" or "si" not in self.test_sets() or "si_test_pt_head" in record
                or not Path(record["model"]).is_file()):
            return False
        record["si_test_pt_head"] = model_errors(record["model"], self.test_sets()["si"], head="pt_head")
        return True

    def add_missing_pt_head_errors(self) -> int:
        """Adds the pt_head Si errors to replay records written before they were measured; returns how many."""
        added = 0
        for path in sorted((self.out / RECORDS).glob("replay_*.json")):
            record = json.loads(path.read_text())
            if self._add_pt_head_errors(record):
                write_json(path, record)
                added += 1
        return added

    def sweep_alloy(self, m_values: Sequence[int], seeds: Sequence[int], routes: Sequence[str],
                    max_runs: Optional[int] = None) -> int:
        plan = [(r, m, s) for m in m_values for s in seeds for r in routes]
        todo = [p for p in plan if not (self.out / RECORDS / f"{alloy_run_name(*p)}.json").is_file()]
        self.say(f"alloy: {len(plan)} runs, {len(plan) - len(todo)} done already, {len(todo)} to train")
        for number, (route, m_alloy, seed) in enumerate(todo[:max_runs] if max_runs is not None else todo, 1):
            record = self.alloy_run(route, m_alloy, seed)
            errors = "; ".join(f"{k} {v['force_mae_meV_per_A']:.1f} meV/Å" for k, v in record["test_sets"].items())
            self.say(f"[{number}/{len(todo)}] {route:8s} M={m_alloy:<3d} seed={seed}: {errors}")
        return len(todo)


#: sampler kinds left out of the like-for-like comparison: the melts (the alloy's at 3000 K, Ge's SW melt)
MELTS = ("liquid",)


def like_for_like(alloy: Dict[str, Dict[str, float]], ge: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Alloy against Ge force MAE on the same sampler kinds: the mean over the config types both test
    sets have, of each type's alloy/Ge ratio (``alloy_over_ge:all``), and without the melts
    (``alloy_over_ge:solid``); the alloy and Ge melt MAEs themselves (meV/Å)."""
    shared = sorted(set(alloy) & set(ge))
    result: Dict[str, float] = {}
    for tag, kinds in (("all", shared), ("solid", [k for k in shared if k not in MELTS])):
        ratios = [alloy[k]["force_mae_meV_per_A"] / ge[k]["force_mae_meV_per_A"] for k in kinds]
        if ratios:
            result[f"alloy_over_ge:{tag}"] = float(np.mean(ratios))
    for kind in MELTS:
        if kind in alloy and kind in ge:
            result["melt_force_mae:alloy"] = alloy[kind]["force_mae_meV_per_A"]
            result["melt_force_mae:ge"] = ge[kind]["force_mae_meV_per_A"]
    return result


def alloy_summary(out: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """summary.json / summary.md of the alloy records: force and energy MAE per test set, Si
    forgetting against the source, a0(x) and mixing energy against PBE."""
    from mace_transfer.studies.records import _stats

    out = Path(out)
    records = load_runs(out)
    source = json.loads((out / "source_si.json").read_text()) if (out / "source_si.json").is_file() else {}
    reference = json.loads((out / "ev_pbe.json").read_text()) if (out / "ev_pbe.json").is_file() else {}
    table: Dict[str, Dict[str, Any]] = {}
    for rec in records:
        entry = table.setdefault(rec["route"], {}).setdefault(str(rec["m_alloy"]), {"seeds": []})
        entry["seeds"].append(rec["seed"])
        sets = dict(rec["test_sets"])
        if rec.get("si_test_pt_head"):
            sets["si (pt_head)"] = rec["si_test_pt_head"]
        for test_set, errors in sets.items():
            for metric in ("force_mae_meV_per_A", "energy_mae_meV_per_atom"):
                entry.setdefault(f"{test_set}:{metric}", []).append(errors[metric])
        per_type = rec.get("test_sets_per_config_type") or {}
        if "alloy" in per_type and "ge" in per_type:
            for key, value in like_for_like(per_type["alloy"], per_type["ge"]).items():
                entry.setdefault(key, []).append(value)
        for x, values in (rec.get("ev") or {}).items():
            if x in reference and values.get("a0_A") is not None and reference[x].get("a0_A") is not None:
                entry.setdefault(f"a0_error_percent:{x}", []).append(
                    100 * (values["a0_A"] / reference[x]["a0_A"] - 1))
                if "mixing_meV_per_atom" in values and "mixing_meV_per_atom" in reference[x]:
                    entry.setdefault(f"mixing_error_meV:{x}", []).append(
                        values["mixing_meV_per_atom"] - reference[x]["mixing_meV_per_atom"])
    for routes in table.values():
        for entry in routes.values():
            for key in [k for k in entry if k != "seeds"]:
                entry[key] = _stats(entry[key])
    summary = {"table": table, "n_runs": len(records), "source_si": source, "ev_pbe": reference}
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(alloy_markdown(summary))
    return summary


def alloy_markdown(summary: Dict[str, Any]) -> str:
    from mace_transfer.studies.report import _pm

    table = summary["table"]
    lines = ["Si -> SiGe: the Si source extended to Si + Ge and fine-tuned on N Ge + M alloy structures "
             "(mean ± std over seeds).", ""]
    if summary.get("source_si"):
        lines += [f"Si source on the Si test set (before): {summary['source_si']['force_mae_meV_per_A']:.1f} meV/Å, "
                  f"{summary['source_si']['energy_mae_meV_per_atom']:.1f} meV/atom.", ""]
    sets = sorted({k.split(":")[0] for r in table.values() for e in r.values() for k in e if ":" in k
                   and not k.startswith(("a0_", "mixing_"))})
    for metric, title in (("force_mae_meV_per_A", "test force MAE (meV/Å)"),
                          ("energy_mae_meV_per_atom", "test energy MAE (meV/atom)")):
        lines += ["| route, M | " + " | ".join(f"{s} {title}" for s in sets) + " |", "|---|" + "---|" * len(sets)]
        for route in [r for r in ROUTES if r in table]:
            for m in sorted(table[route], key=int):
                entry = table[route][m]
                lines.append(f"| {route}, M={m} | " + " | ".join(_pm(entry.get(f"{s}:{metric}"), 1) for s in sets) + " |")
        lines.append("")
    if any("alloy_over_ge:solid" in e for r in table.values() for e in r.values()):
        lines += ["Alloy against Ge on the same sampler kinds (mean over config types of alloy/Ge force MAE; "
                  "the melts: the alloy's Tersoff liquid at 3000 K, Ge's SW melt):", "",
                  "| route, M | alloy/Ge, all kinds | alloy/Ge, without the melts | melt force MAE alloy (meV/Å) "
                  "| melt force MAE Ge (meV/Å) |", "|---|---|---|---|---|"]
        for route in [r for r in ROUTES if r in table]:
            for m in sorted(table[route], key=int):
                entry = table[route][m]
                lines.append(f"| {route}, M={m} | {_pm(entry.get('alloy_over_ge:all'), 2)} | "
                             f"{_pm(entry.get('alloy_over_ge:solid'), 2)} | {_pm(entry.get('melt_force_mae:alloy'), 1)} | "
                             f"{_pm(entry.get('melt_force_mae:ge'), 1)} |")
        lines.append("")
    xs = sorted({k.split(":")[1] for r in table.values() for e in r.values() for k in e if k.startswith("a0_")})
    if xs:
        lines += ["| route, M | " + " | ".join(f"a0 error x={x} (%)" for x in xs) + " | "
                  + " | ".join(f"ΔE_mix error x={x} (meV/atom)" for x in xs if x not in ("0", "1")) + " |",
                  "|---|" + "---|" * (len(xs) + len([x for x in xs if x not in ("0", "1")]))]
        for route in [r for r in ROUTES if r in table]:
            for m in sorted(table[route], key=int):
                entry = table[route][m]
                lines.append(f"| {route}, M={m} | " + " | ".join(_pm(entry.get(f"a0_error_percent:{x}"), 2) for x in xs)
                             + " | " + " | ".join(_pm(entry.get(f"mixing_error_meV:{x}"), 1)
                                                  for x in xs if x not in ("0", "1")) + " |")
    return "\n".join(lines) + "\n"


def run_alloy(config: Dict[str, Any], *, out=None, work=None, sizes=None, seeds=None, strategies=None,
              max_runs: Optional[int] = None, report_only: bool = False, park: bool = False,
              progress=print) -> Dict[str, Any]:
    """Run (or resume) an alloy study and write its summary; ``sizes`` are the alloy counts M.
    ``park`` copies the runs cut mid-training to ``<out>/partial/`` and trains nothing."""
    routes = list(strategies) if strategies else list(config.get("routes") or ROUTES)
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        raise UserInputError(f"unknown alloy route {unknown[0]!r}; choose from {', '.join(ROUTES)}")
    sweep = AlloySweep(config, out, work, progress=progress)
    if park:
        sweep.park_runs()
    elif not report_only:
        sweep.source_si_errors()
        if config["data"].get("ev") and not (sweep.out / "ev_pbe.json").is_file():
            write_json(sweep.out / "ev_pbe.json",
                       ev_properties(lambda a: float(a.info["REF_energy"]), sweep.frames("ev")))
        sweep.sweep_alloy([int(m) for m in (sizes or config.get("m_alloy", [0, 20]))],
                          [int(s) for s in (seeds or config["seeds"])], routes, max_runs)
        sweep.add_missing_pt_head_errors()
        sweep.add_missing_per_config_type()
    summary = alloy_summary(sweep.out, config)
    progress(f"report: {sweep.out}/summary.md ({summary['n_runs']} alloy runs)")
    return summary
