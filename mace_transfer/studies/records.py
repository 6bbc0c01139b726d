"""A study's records: one JSON per finished run under ``<out>/records/``, the validation curve read
from MACE's results log, and the statistics over seeds that every table and plot is made from."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mace_transfer import UserInputError
from mace_transfer.studies.config import KEPT_MODELS, METRICS, RECORDS
from mace_transfer.transfer.early_stop import iter_mace_results


def read_results(results_dir) -> Dict[str, Any]:
    """Validation curve and step times from MACE's ``*_train.txt`` (one JSON object a line).

    ``epoch``/``valid_rmse_f_meV_A``/``valid_mae_f_meV_A``/``valid_loss`` per validated epoch;
    ``train_step_s`` = summed optimizer-step seconds per epoch; ``initial_*`` before training. After a
    resume, the epochs MACE trained again replace the cut run's from that epoch on (the log keeps both).
    """
    curve: Dict[str, Any] = {"epoch": [], "valid_rmse_f_meV_A": [], "valid_mae_f_meV_A": [],
                             "valid_loss": [], "initial_valid_rmse_f_meV_A": None}
    steps: Dict[int, float] = {}
    for row in iter_mace_results(results_dir):
        if row.get("mode") == "opt" and row.get("epoch") is not None:
            steps[int(row["epoch"])] = steps.get(int(row["epoch"]), 0.0) + float(row.get("time", 0.0))
        elif row.get("mode") == "eval":
            rmse = 1000.0 * float(row["rmse_f"]) if row.get("rmse_f") is not None else None
            if row.get("epoch") is None:
                if curve["initial_valid_rmse_f_meV_A"] is None:  # a resumed run logs its start again
                    curve["initial_valid_rmse_f_meV_A"] = rmse
                continue
            epoch = int(row["epoch"])
            if epoch in curve["epoch"]:  # redone after a resume (MACE restarts at its checkpoint's epoch)
                at = curve["epoch"].index(epoch)
                for key in ("epoch", "valid_rmse_f_meV_A", "valid_mae_f_meV_A", "valid_loss"):
                    del curve[key][at:]
            curve["epoch"].append(epoch)
            curve["valid_rmse_f_meV_A"].append(rmse)
            curve["valid_mae_f_meV_A"].append(
                1000.0 * float(row["mae_f"]) if row.get("mae_f") is not None else None)
            curve["valid_loss"].append(float(row["loss"]) if row.get("loss") is not None else None)
    curve["train_step_s"] = [steps.get(e, 0.0) for e in curve["epoch"]]
    return curve


def best_epoch(curve: Dict[str, Any]) -> Optional[int]:
    """The epoch MACE keeps: lowest validation loss (the first one on ties)."""
    losses = [(loss, i) for i, loss in enumerate(curve["valid_loss"]) if loss is not None]
    return curve["epoch"][min(losses)[1]] if losses else None


def valid_rmse_at(curve: Dict[str, Any], epoch: Optional[int]) -> Optional[float]:
    if epoch is None or epoch not in curve["epoch"]:
        return None
    return curve["valid_rmse_f_meV_A"][curve["epoch"].index(epoch)]


def time_to_reach(curve: Dict[str, Any], target: float) -> Optional[Dict[str, float]]:
    """First epoch whose validation force RMSE (meV/Å) is <= target; epochs and step seconds."""
    elapsed = 0.0
    if curve.get("initial_valid_rmse_f_meV_A") is not None and curve["initial_valid_rmse_f_meV_A"] <= target:
        return {"epochs": 0, "train_step_s": 0.0}
    for epoch, rmse, seconds in zip(curve["epoch"], curve["valid_rmse_f_meV_A"], curve["train_step_s"]):
        elapsed += seconds
        if rmse is not None and rmse <= target:
            return {"epochs": epoch + 1, "train_step_s": elapsed}
    return None


# ----------------------------------------------------------------------------- bookkeeping
def load_runs(out) -> List[Dict[str, Any]]:
    """Every finished run's record under ``<out>/records/``."""
    records = []
    for path in sorted((Path(out) / RECORDS).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            print(f"warning: {path} is not JSON, ignored", file=sys.stderr)
    return records


def write_json(path, data) -> None:
    """Write atomically (temp file + rename), so a cut run never leaves half a record. The temp file
    is the process's own: two sweeps of one study (e.g. two seeds on two cores) write ``machine.json``
    and ``summary.json`` side by side, and a shared temp name let one rename the other's away."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _stats(values: Sequence[float]) -> Dict[str, Any]:
    """mean, std (sample, ddof=1; 0 for one value), min, max, n of the finite values."""
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if vals.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "n": int(vals.size)}


def aggregate(records: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """{strategy: {N (str): {metric: stats over seeds}}}, test metrics plus wall/epochs/reach."""
    table: Dict[str, Dict[str, Dict[str, Any]]] = {}
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["strategy"], int(rec["n_train"])), []).append(rec)
    for (strategy, n_train), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        entry: Dict[str, Any] = {"seeds": sorted(int(r["seed"]) for r in recs)}
        for metric in METRICS:
            entry[metric] = _stats([r["test"].get(metric) for r in recs])
        for key in ("wall_s", "epochs_run", "best_epoch", "best_valid_rmse_f_meV_A"):
            entry[key] = _stats([r.get(key) for r in recs])
        if any("converged" in r for r in recs):  # converged-mode runs (budget.mode: converged)
            entry["optimizer_steps_to_best"] = _stats([r.get("optimizer_steps_to_best") for r in recs])
            entry["converged"] = {"converged": sum(bool(r.get("converged")) for r in recs), "of": len(recs)}
            entry["lr"] = sorted({r["lr"] for r in recs})
        reached = [r.get("reach_scratch") for r in recs if "reach_scratch" in r]
        if reached:
            entry["reach_scratch"] = {
                "reached": sum(x is not None for x in reached), "of": len(reached),
                "epochs": _stats([x["epochs"] for x in reached if x is not None]),
                "train_step_s": _stats([x["train_step_s"] for x in reached if x is not None])}
        for group in ("per_config_type", "per_length_scale"):  # test force MAE by part of the test set
            parts = sorted({k for r in recs for k in (r.get(f"test_{group}") or {})})
            if parts:
                entry[f"force_mae_{group}"] = {k: _stats([(r.get(f"test_{group}") or {}).get(k, {}).get(
                    "force_mae_meV_per_A") for r in recs]) for k in parts}
        table.setdefault(strategy, {})[str(n_train)] = entry
    return table


def attach_reach_scratch(records: Sequence[Dict[str, Any]]) -> None:
    """Per run: epochs/step seconds to reach scratch's final validation force RMSE (same N, seed)."""
    final = {(int(r["n_train"]), int(r["seed"])): r.get("best_valid_rmse_f_meV_A")
             for r in records if r["strategy"] == "scratch"}
    for rec in records:
        target = final.get((int(rec["n_train"]), int(rec["seed"])))
        if target is None:
            rec.pop("reach_scratch", None)
            continue
        rec["reach_scratch"] = time_to_reach(rec["curve"], target)
        rec["reach_scratch_target_meV_A"] = target


def lowest_valid_loss(rec: Dict[str, Any]) -> Optional[float]:
    """A run's lowest validation loss (MACE's loss on the validation set, EMA weights); None without one."""
    losses = [v for v in (rec.get("curve") or {}).get("valid_loss", []) if v is not None and np.isfinite(v)]
    return min(losses) if losses else None


def best_on_validation(*record_sets: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per (strategy, N, seed) over studies that differ only in a hyperparameter (e.g. the
    learning rate): the one with the lowest validation loss; a run with no validation curve loses to
    one with. A baseline tuned per N and seed on validation, never on test (issue 21)."""
    chosen: Dict[tuple, Dict[str, Any]] = {}
    for rec in (r for records in record_sets for r in records):
        key = (rec["strategy"], int(rec["n_train"]), int(rec["seed"]))
        loss, held = lowest_valid_loss(rec), chosen.get(key)
        held_loss = lowest_valid_loss(held) if held else None
        if held is None or (loss is not None and (held_loss is None or loss < held_loss)):
            chosen[key] = rec
    return [chosen[key] for key in sorted(chosen)]


def _n_equal(base: Sequence[Any], mae: float) -> Optional[tuple]:
    """(N, slope) where the power law log(MAE) = a + b log(N) fitted (least squares) to ``base``
    ((N, MAE) pairs, at least two sizes) equals ``mae``; None when the fit does not fall with N."""
    if len({n for n, _ in base}) < 2:
        return None
    slope, intercept = np.polyfit(np.log([n for n, _ in base]), np.log([m for _, m in base]), 1)
    if slope >= 0:  # the baseline does not improve with N: no finite answer
        return None
    return float(np.exp((np.log(mae) - intercept) / slope)), float(slope)


def data_efficiency(records: Sequence[Dict[str, Any]], strategy: str, n_ref: int,
                    baseline: str = "scratch") -> Optional[Dict[str, Any]]:
    """How many structures ``baseline`` needs to reach ``strategy``'s test force MAE at N = ``n_ref``.

    Per seed: a power law log(MAE) = a + b log(N) fitted (least squares) to that seed's baseline runs
    at every N it has, solved for the N where it equals that seed's ``strategy`` MAE at ``n_ref``;
    the ratio is N_equal / n_ref. Pooled (for studies whose seeds do not each span two sizes): the
    same law fitted to the baseline's mean MAE per N over every seed, solved at the strategy's mean
    MAE at ``n_ref`` over its seeds, and at its lowest and highest (the range). Returns {ratio: stats
    over seeds, n_equal: stats, per_seed, pooled} or None where neither is possible. An N_equal
    beyond the largest baseline N is an extrapolation (``extrapolated`` counts them).
    """
    per_seed = {}
    for seed in sorted({int(r["seed"]) for r in records}):
        base = sorted((int(r["n_train"]), r["test"]["force_mae_meV_per_A"]) for r in records
                      if r["strategy"] == baseline and int(r["seed"]) == seed)
        target = [r["test"]["force_mae_meV_per_A"] for r in records
                  if r["strategy"] == strategy and int(r["seed"]) == seed and int(r["n_train"]) == n_ref]
        solved = _n_equal(base, target[0]) if target else None
        if solved is None:
            continue
        n_equal, slope = solved
        per_seed[str(seed)] = {"n_equal": n_equal, "ratio": n_equal / n_ref, "slope": slope,
                               "extrapolated": n_equal > max(n for n, _ in base)}
    pooled = _pooled_efficiency(records, strategy, n_ref, baseline)
    if not per_seed and pooled is None:
        return None
    rows = list(per_seed.values())
    return {"strategy": strategy, "baseline": baseline, "n_ref": n_ref,
            "ratio": _stats([r["ratio"] for r in rows]), "n_equal": _stats([r["n_equal"] for r in rows]),
            "extrapolated": sum(r["extrapolated"] for r in rows), "per_seed": per_seed, "pooled": pooled}


def _pooled_efficiency(records: Sequence[Dict[str, Any]], strategy: str, n_ref: int,
                       baseline: str) -> Optional[Dict[str, Any]]:
    """:func:`data_efficiency` on the seed means (baseline per N, strategy at ``n_ref``), with the
    N_equal of the strategy's best and worst seed as its range; None without two baseline sizes."""
    by_n: Dict[int, List[float]] = {}
    for r in records:
        if r["strategy"] == baseline:
            by_n.setdefault(int(r["n_train"]), []).append(r["test"]["force_mae_meV_per_A"])
    base = sorted((n, float(np.mean(maes))) for n, maes in by_n.items())
    target = [r["test"]["force_mae_meV_per_A"] for r in records
              if r["strategy"] == strategy and int(r["n_train"]) == n_ref]
    solved = _n_equal(base, float(np.mean(target))) if target else None
    if solved is None:
        return None
    n_equal, slope = solved
    # the worst seed (highest MAE) needs the fewest baseline structures, the best seed the most
    low, high = _n_equal(base, max(target))[0], _n_equal(base, min(target))[0]
    return {"n_equal": n_equal, "ratio": n_equal / n_ref, "ratio_range": [low / n_ref, high / n_ref],
            "ratio_bootstrap": _bootstrap_ratio(by_n, target, n_ref),
            "slope": slope, "baseline_sizes": {str(n): len(by_n[n]) for n, _ in base},
            "n_strategy_seeds": len(target), "extrapolated": n_equal > max(n for n, _ in base)}


def _bootstrap_ratio(by_n: Dict[int, List[float]], target: Sequence[float], n_ref: int,
                     resamples: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """Percentiles of the pooled ratio when the seeds are resampled with replacement, independently
    for the baseline at each N and for the strategy at ``n_ref`` (fixed RNG seed: reproducible). It
    carries both spreads, the baseline curve's and the strategy's; a size with one seed contributes
    no spread of its own. Resamples whose fit does not fall with N are dropped and counted."""
    rng = np.random.default_rng(seed)
    sizes = sorted(by_n)
    ratios = []
    for _ in range(resamples):
        base = [(n, float(np.mean(rng.choice(by_n[n], len(by_n[n]))))) for n in sizes]
        solved = _n_equal(base, float(np.mean(rng.choice(list(target), len(target)))))
        if solved is not None:
            ratios.append(solved[0] / n_ref)
    levels = {"p2.5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97.5": 97.5}
    percentiles = {key: float(np.percentile(ratios, q)) for key, q in levels.items()} if ratios else {}
    return {**percentiles, "resamples": resamples, "dropped": resamples - len(ratios), "rng_seed": seed}


def file_at_hand(out: Path, rec: Dict[str, Any], key: str = "model") -> Optional[str]:
    """``rec[key]`` (a run's ``.model`` or a peer's ``checkpoint``) when it still exists, else for a
    MACE model its committed copy ``<out>/models/<name>.model``, else None (nothing is trained)."""
    own = rec.get(key)
    if own and Path(own).exists():
        return str(own)
    kept = Path(out) / KEPT_MODELS / f"{rec['name']}.model"
    return str(kept) if key == "model" and kept.is_file() else None


#: the per-run files of a study, each ``<out>/<folder>/<name><suffix>`` (record, kept model, MD and E-V results)
RUN_FILES = ((RECORDS, ".json"), (KEPT_MODELS, ".model"), ("md", ".json"), ("properties", ".json"))


def supersede_runs(out, names: Sequence[str], tag: str, reason: str) -> Path:
    """Move every file of the runs ``names`` (:data:`RUN_FILES`) to ``<out>/superseded/<tag>/``, the
    same layout below it, so a rerun of those (N, seed) under a new setting neither overwrites nor is
    confused with them. Each moved record gets ``superseded`` = ``reason``; paths to the moved records
    in ``<out>/loss_selection/*.json`` follow them. Nothing is deleted; a name already superseded under
    ``tag`` is refused (one superseded copy per setting). Returns the folder."""
    out = Path(out)
    target = out / "superseded" / tag
    clashes = [name for name in names if (target / RECORDS / f"{name}.json").exists()]
    if clashes:
        raise UserInputError(f"{target / RECORDS / clashes[0]}.json exists: a run is superseded once per setting; "
                             f"move that folder away to supersede {clashes[0]} again")
    moved: Dict[str, str] = {}
    for name in names:
        for folder, suffix in RUN_FILES:
            source = out / folder / f"{name}{suffix}"
            if not source.is_file():
                continue
            destination = target / folder / source.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            if folder == RECORDS:
                write_json(destination, dict(json.loads(source.read_text()), superseded=reason))
                source.unlink()
            else:
                os.replace(source, destination)
            moved[str(source.resolve())] = str(destination)
    for path in sorted((out / "loss_selection").glob("*.json")):
        entry = json.loads(path.read_text())
        changed = False
        for attempt in (entry.get("tries") or {}).values():
            now = moved.get(str(Path(attempt.get("record") or "").resolve()))
            if now is not None:
                attempt["record"], changed = now, True
        if changed:
            write_json(path, entry)
    return target
