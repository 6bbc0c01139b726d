"""The MD stability ladder, a0/B and close-contact wall of a study's finished runs (config ``md``):
one JSON per run in ``<out>/md/``, of the same shape for our MACE runs and the peers'
(:mod:`mace_transfer.studies.peers` writes its records through :func:`write_md_record`). Units:
temperatures K, a0 Å, B GPa, energies eV."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from mace_transfer.studies.records import load_runs, write_json


def write_md_record(path: Path, rec: Dict[str, Any], model, spec: Dict[str, Any],
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """The MD stability ladder and a0/B of one run's ``model`` (a .model path or an ASE calculator)
    against ``spec["reference"]`` (config ``md``), and, when ``spec["close_contact"]`` names a PBE
    close-contact scan, the model's energy along it (the close-contact wall); written to ``path``
    beside the run's identity and ``extra``."""
    from mace_transfer import evaluate

    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate.evaluate(
            model, reference=spec.get("reference", "sw-ge"), labels=[rec["name"]],
            temperatures=spec.get("temperatures"), seeds=spec.get("md_seeds"),
            md_steps=spec.get("md_steps"), skip=["errors", "structure", "elastic", "vacancy", "phonons"],
            progress=False, close_contact=spec.get("close_contact"))
    entry = metrics["models"][rec["name"]]
    write_json(path, {
        "strategy": rec["strategy"], "n_train": rec["n_train"], "seed": rec["seed"],
        "max_stable_temperature_K": entry["md_stability"].get("max_stable_temperature_K"),
        "md_stability": entry["md_stability"],
        "properties": entry.get("properties"), "comparison": entry.get("comparison"),
        "close_contact": entry.get("close_contact"),
        "reference": metrics["reference"]["properties"], "md_settings": metrics["settings"]["md"],
        "wall_s": time.time() - start, **(extra or {})})


def md_and_properties(sweep, seeds: Sequence[int], only: Optional[Sequence[str]] = None) -> None:
    """MD stability ladder, a0 and B vs ``md.reference`` (default SW-Ge) for ``sweep``'s (a
    :class:`~mace_transfer.studies.runs.Sweep`) finished ``seeds`` runs of ``md.strategies`` (narrowed to ``only`` when given: the command line's strategies)."""
    import fcntl

    import torch

    torch.set_num_threads(sweep.threads)  # as for training: no oversubscription beside other jobs
    spec = sweep.config.get("md", {})
    strategies = spec.get("strategies")  # default: every strategy
    sizes = spec.get("sizes")  # default: every N
    (sweep.out / "md").mkdir(parents=True, exist_ok=True)
    for rec in load_runs(sweep.out):
        if int(rec["seed"]) not in seeds or (strategies and rec["strategy"] not in strategies):
            continue
        if only and rec["strategy"] not in only:
            continue
        if sizes and int(rec["n_train"]) not in {int(n) for n in sizes}:
            continue
        path = sweep.out / "md" / f"{rec['name']}.json"
        if path.is_file():
            continue
        # a lock per run: several --md processes share the work; a dead one's lock is released
        lock = open(sweep.work / f".md_{rec['name']}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if path.is_file():  # finished by another process meanwhile
            lock.close()
            continue
        with lock:
            model, extra = trained_model(sweep, rec)
            sweep.say(f"md: {rec['name']} ({model})")
            write_md_record(path, rec, model, spec, extra)



def trained_model(sweep, rec: Dict[str, Any]):
    """The trained ``.model`` of ``rec`` and a note for the MD record: the run's own file
    (work folder, not committed), else a committed copy ``<out>/models/<name>.model``, else
    the run trained again with its record's lr and seed (``<out>/md/retrained/``; both test
    force MAEs noted, so a reader sees how closely it reproduces the recorded model)."""
    if Path(rec["model"]).is_file():
        return rec["model"], {"model": rec["model"], "retrained": False}
    kept = sweep.out / "models" / f"{rec['name']}.model"
    if kept.is_file():
        return str(kept), {"model": str(kept), "retrained": False}
    again_path = sweep.out / "md" / "retrained" / f"{rec['name']}.json"
    again = json.loads(again_path.read_text()) if again_path.is_file() else None
    if again is None or not Path(again["model"]).is_file():
        sweep.say(f"md: {rec['name']}: model {rec['model']} is gone; training it again (lr {rec['lr']:g})")
        again = sweep.train_run(rec["strategy"], int(rec["n_train"]), int(rec["seed"]), again_path, lr=rec["lr"])
    return again["model"], {
        "model": again["model"], "retrained": True,
        "recorded_test_force_mae_meV_per_A": rec["test"]["force_mae_meV_per_A"],
        "retrained_test_force_mae_meV_per_A": again["test"]["force_mae_meV_per_A"]}
