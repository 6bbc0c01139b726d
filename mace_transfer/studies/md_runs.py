"""The MD stability ladder, a0/B and close-contact wall of a study's finished runs (config ``md``):
one JSON per run in ``<out>/md/``, of the same shape for our MACE runs and the peers'
(:mod:`mace_transfer.studies.peers` writes its records through :func:`write_md_record`). Units:
temperatures K, a0 Å, B GPa, energies eV."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from mace_transfer.studies import parking
from mace_transfer.studies.config import RECORDS
from mace_transfer.studies.records import file_at_hand, load_runs, write_json
from mace_transfer.studies.runs import model_errors


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


def add_missing_stress(sweep) -> int:
    """Stress MAE (meV/Å³) for the finished runs recorded before the metric existed, where the
    trained model is still at hand (its work folder or ``<out>/models/``; nothing is retrained):
    the test set predicted again, ``test``, ``test_per_config_type`` and ``test_per_length_scale``
    rewritten, and the change of the recorded force MAE noted (``test_errors_refreshed``: zero to
    rounding for the same model on the same frames). Returns how many records were completed."""
    done = 0
    for rec in load_runs(sweep.out):
        if rec.get("test", {}).get("stress_mae_meV_per_A3") is not None:
            continue
        model = file_at_hand(sweep.out, rec)
        if model is None:
            continue
        grouped = model_errors(model, sweep.frames("test"), groups=True)
        if grouped["overall"]["stress_mae_meV_per_A3"] is None:  # a test set without stress labels
            continue
        change = grouped["overall"]["force_mae_meV_per_A"] - rec["test"]["force_mae_meV_per_A"]
        write_json(sweep.out / RECORDS / f"{rec['name']}.json", dict(
            rec, test=grouped["overall"], test_per_config_type=grouped["per_config_type"],
            test_per_length_scale=grouped["per_length_scale"],
            test_errors_refreshed={"model": model, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "force_mae_change_meV_per_A": change}))
        sweep.say(f"stress: {rec['name']}: {grouped['overall']['stress_mae_meV_per_A3']:.2f} meV/Å³ ({model})")
        done += 1
    return done


def md_and_properties(sweep, seeds: Sequence[int], only: Optional[Sequence[str]] = None) -> None:
    """MD stability ladder, a0 and B vs ``md.reference`` (default SW-Ge) for ``sweep``'s (a
    :class:`~mace_transfer.studies.runs.Sweep`) finished ``seeds`` runs of ``md.strategies`` (narrowed to ``only`` when given: the command line's strategies)."""
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
        lock = parking.claim(sweep.work, f"md_{rec['name']}")  # several --md processes share the work
        if lock is None:
            continue
        if path.is_file():  # finished by another process meanwhile
            lock.close()
            continue
        with lock:
            model, extra = trained_model(sweep, rec)
            sweep.say(f"md: {rec['name']} ({model})")
            write_md_record(path, rec, model, spec, extra)



def trained_model(study, rec: Dict[str, Any], key: str = "model") -> Tuple[str, Dict[str, Any]]:
    """The trained file of ``rec`` (``rec[key]``: a MACE ``.model``, or a peer's ``checkpoint``) and
    a note for the MD record. Work folders are not committed, so on a fresh clone it looks for a
    committed copy ``<out>/models/<name>.model`` (MACE), else trains the run again with its record's
    lr and seed (``<out>/md/retrained/<name>.json``, reused while its file exists) and notes both
    test force MAEs, so a reader sees how closely it reproduces the recorded run. ``study`` is a
    :class:`~mace_transfer.studies.runs.Sweep` or a :class:`~mace_transfer.studies.peers.PeerSweep`
    (anything with ``out``, ``say`` and ``train_run(strategy, n, seed, path, lr=...)``)."""
    own = rec.get(key)
    at_hand = file_at_hand(study.out, rec, key)
    if at_hand is not None:
        return at_hand, {key: at_hand, "retrained": False}
    again_path = study.out / "md" / "retrained" / f"{rec['name']}.json"
    again = json.loads(again_path.read_text()) if again_path.is_file() else None
    if again is None or not Path(again[key]).exists():
        study.say(f"md: {rec['name']}: {key} {own} is gone; training it again (lr {rec['lr']:g}, seed {rec['seed']})")
        again = study.train_run(rec["strategy"], int(rec["n_train"]), int(rec["seed"]), again_path, lr=rec["lr"])
    return again[key], {
        key: again[key], "retrained": True,
        "recorded_test_force_mae_meV_per_A": rec["test"]["force_mae_meV_per_A"],
        "retrained_test_force_mae_meV_per_A": again["test"]["force_mae_meV_per_A"]}
