"""Issue 48's tables, generated from the records: each energy lever against stage one and fine-tuned SevenNet-0.

Reads the converged medium study (stage one), every stage-two study given, the peers' records and the
offset analysis (scripts/energy_offset.py); writes ``docs/results/energy_levers.md`` and
``docs/results/energy_levers.json``. Numbers are test-set MAEs (forces meV/Å, energies meV/atom), mean ±
sample std over the seeds present, with the worst/best energy ratio over seeds; nothing here was used to
choose anything (choices were made on the validation cells, see docs/RESULTS.md section 17).

    .venv/bin/python scripts/energy_tables.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from headline import replace_block  # noqa: E402  (scripts/, this script's own folder)

RESULTS = ROOT / "docs" / "RESULTS.md"   # its <!-- energy_levers:start/end --> block is this script's output
README = ROOT / "README.md"              # and README's <!-- energy:start/end --> block
SIZES = (5, 20, 50)
#: (label, study folder, which records) in table order; a missing folder is skipped
LEVERS = [
    ("stage one (converged_medium recipe)", "docs/results/converged_medium", "test"),
    ("+ stage two: stress loss, E:F:S 100:10:100, lr 0.001", "docs/results/energy_stage2", "test"),
    ("+ the same, kept only where it lowers the validation energy MAE (`--converged_stage_two energy`)",
     "docs/results/energy_stage2", "test_kept"),
    ("+ stage two at lr 1e-4", "docs/results/energy_stage2_lr1e-4", "test"),
    ("+ stage two at lr 1e-4, kept only where it lowers the validation energy MAE", "docs/results/energy_stage2_lr1e-4",
     "test_kept"),
    ("+ stage two, E:F:S 1000:10:1000", "docs/results/energy_stage2_e1000", "test"),
    ("+ stage two without stress, E:F 100:10", "docs/results/energy_stage2_nostress", "test"),
    ("+ stage two, stress only, E:F:S 1:10:100", "docs/results/energy_stage2_stressonly", "test"),
]
RECIPE = 2  # the row the goals are judged on: what --converged_stage_two energy does
PEER_PLATEAU = "docs/results/peers_long"   # SevenNet-0 at its plateau (N = 20 so far)
PEER_CAPPED = "docs/results/peers"         # SevenNet-0 stopped by its caps


def records(folder: Path, strategy: str) -> Dict[int, List[dict]]:
    out: Dict[int, List[dict]] = {}
    for path in sorted((folder / "records").glob(f"{strategy}_N*_s*.json")):
        record = json.loads(path.read_text())
        if record.get("strategy") == strategy and record["n_train"] in SIZES:
            out.setdefault(record["n_train"], []).append(record)
    return out


def stats(values: List[float]) -> Optional[dict]:
    if not values:
        return None
    return {"mean": mean(values), "std": stdev(values) if len(values) > 1 else 0.0, "n": len(values),
            "worst_over_best": max(values) / min(values) if min(values) > 0 else None}


def cell(s: Optional[dict], digits: int) -> str:
    if s is None:
        return "–"
    spread = f" ± {s['std']:.{digits}f}" if s["n"] > 1 else ""
    return f"{s['mean']:.{digits}f}{spread} (n={s['n']})"


def summarise(runs: Dict[int, List[dict]], test_key: str = "test") -> Dict[int, dict]:
    """Per N: stats of the test errors under ``test_key`` (``test``, or ``test_kept`` of a stage-two record)."""
    out = {}
    for n, rs in runs.items():
        rs = [r for r in rs if test_key in r]
        if rs:
            out[n] = {"force": stats([r[test_key]["force_mae_meV_per_A"] for r in rs]),
                      "energy": stats([r[test_key]["energy_mae_meV_per_atom"] for r in rs]),
                      "stress": stats([r[test_key]["stress_mae_meV_per_A3"] for r in rs
                                       if r[test_key].get("stress_mae_meV_per_A3") is not None]),
                      "seeds": sorted(r["seed"] for r in rs),
                      "force_by_seed": {r["seed"]: r[test_key]["force_mae_meV_per_A"] for r in rs},
                      "energy_by_seed": {r["seed"]: r[test_key]["energy_mae_meV_per_atom"] for r in rs}}
    return out


def peer_rows() -> Dict[int, dict]:
    """SevenNet-0 per N: the plateau runs where they exist, else the capped ones (marked)."""
    plateau = summarise(records(ROOT / PEER_PLATEAU, "sevenn"))
    capped = summarise(records(ROOT / PEER_CAPPED, "sevenn"))
    return {n: dict(plateau.get(n) or capped[n], at_plateau=n in plateau) for n in SIZES if n in plateau or n in capped}


def goal_lines(table: Dict[str, dict], peer: Dict[int, dict]) -> List[str]:
    """Issue 48's goals for the stage-two recipe on transfer_rescale, each said as met or not (seeds present)."""
    key = "transfer_rescale | " + LEVERS[RECIPE][0]
    base_key = "transfer_rescale | " + LEVERS[0][0]
    if key not in table:
        return ["Goals: no stage-two run finished yet."]
    lines = ["Issue 48's goals for transfer_rescale + `--converged_stage_two energy` (stage two kept where it lowers the "
             "validation energy MAE), per N with the seeds finished:", ""]
    for n in SIZES:
        row, base = table[key]["per_n"].get(n), table[base_key]["per_n"].get(n)
        if row is None or n not in peer:
            lines.append(f"- N = {n}: no stage-two run finished yet.")
            continue
        e, f, pe, pf = row["energy"], row["force"], peer[n]["energy"], peer[n]["force"]
        where = "at its plateau" if peer[n]["at_plateau"] else "capped, †"
        checks = [
            f"energy {e['mean']:.2f} vs ≤ 0.5 × SevenNet-0's {pe['mean']:.2f} ({where}) = {0.5 * pe['mean']:.2f}: "
            + ("met" if e["mean"] <= 0.5 * pe["mean"] else "not met"),
            f"force {f['mean']:.1f} vs ≤ 0.5 × {pf['mean']:.1f} = {0.5 * pf['mean']:.1f}: "
            + ("met" if f["mean"] <= 0.5 * pf["mean"] else "not met"),
            f"worst/best seed energy {e['worst_over_best']:.1f} (≤ 2: " + ("met" if e["worst_over_best"] <= 2 else "not met") + ")"
            if e["n"] > 1 else "one seed: spread not measured",
        ]
        same = [seed for seed in row["seeds"] if base is not None and seed in base["force_by_seed"]]
        if same:  # the same seeds' stage-one runs
            change = (mean(row["force_by_seed"][k] for k in same) / mean(base["force_by_seed"][k] for k in same)) - 1
            checks.append(f"force vs stage one on the same seeds {100 * change:+.1f} % (≤ +5 %: "
                          + ("met" if change <= 0.05 else "not met") + ")")
        lines.append(f"- N = {n} (seeds {', '.join(map(str, row['seeds']))}): " + "; ".join(checks) + ".")
    return lines


def validation_lines() -> List[str]:
    """What the choices between stage-two variants are made on: the validation cells' energy and force MAE of
    the kept stage-two epoch (stage one's beside it), mean over the seeds finished, transfer_rescale."""
    lines = ["Validation (the 8 cells every run is chosen on; mean over the seeds finished; from each record's "
             "`valid_energy_check`): energy MAE meV/atom / force MAE meV/Å, stage one → stage two:", "",
             "| stage two | " + " | ".join(f"N={n}" for n in SIZES) + " |", "|---|" + "---|" * len(SIZES)]
    for label, folder, test_key in LEVERS[1:]:
        if test_key != "test":
            continue
        runs = records(ROOT / folder, "transfer_rescale")
        cells = []
        for n in SIZES:
            checks = [r["valid_energy_check"] for r in runs.get(n, []) if "valid_energy_check" in r]
            if not checks:
                cells.append("–")
                continue
            one_e, two_e, one_f, two_f = (mean(c[k] for c in checks) for k in (
                "stage_one_valid_energy_mae_meV_per_atom", "stage_two_valid_energy_mae_meV_per_atom",
                "stage_one_valid_force_mae_meV_per_A", "stage_two_valid_force_mae_meV_per_A"))
            cells.append(f"{one_e:.2f} / {one_f:.1f} → {two_e:.2f} / {two_f:.1f} (n={len(checks)})")
        if any(c != "–" for c in cells):
            lines.append(f"| {label.lstrip('+ ')} | " + " | ".join(cells) + " |")
    return lines + [""]


def readme_block(table: Dict[str, dict], peer: Dict[int, dict]) -> str:
    """README's lines: transfer_rescale's test errors before and after ``--converged_stage_two energy``."""
    one = table.get("transfer_rescale | " + LEVERS[0][0], {}).get("per_n", {})
    two = table.get("transfer_rescale | " + LEVERS[RECIPE][0], {}).get("per_n", {})
    rows = ["| transfer_rescale, test force / energy MAE (meV/Å / meV/atom) | " + " | ".join(f"N = {n}" for n in SIZES) + " |",
            "|---|" + "---|" * len(SIZES)]
    for label, per_n in (("stage one, the same seeds", one), ("+ `--converged_stage_two energy`", two)):
        cells = []
        for n in SIZES:
            row, seeds = per_n.get(n), (two.get(n) or {}).get("seeds", [])
            if row is None or not seeds or not set(seeds) <= set(row["seeds"]):
                cells.append("–")
                continue
            force = mean(row["force_by_seed"][k] for k in seeds)
            energy = mean(row["energy_by_seed"][k] for k in seeds)
            cells.append(f"{force:.1f} / {energy:.2f} (seeds {', '.join(map(str, seeds))})")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append("| SevenNet-0 fine-tuned | " + " | ".join(
        f"{peer[n]['force']['mean']:.1f} / {peer[n]['energy']['mean']:.2f}" + ("" if peer[n]["at_plateau"] else " †")
        for n in SIZES) + " |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/energy_levers")
    args = parser.parse_args()
    table = {}
    for strategy in ("transfer_rescale", "transfer", "scratch"):
        for label, folder, test_key in LEVERS:
            per_n = summarise(records(ROOT / folder, strategy), test_key)
            if per_n:
                table[f"{strategy} | {label}"] = {"study": folder, "strategy": strategy, "test_key": test_key,
                                                  "per_n": per_n}
    peer = peer_rows()
    lines = ["Issue 48: the energy levers at the medium size (64 ch, L=1), test set (60 PBE Ge structures), "
             "mean ± sample std over seeds (n); `worst/best` = the worst seed's energy MAE over the best's. "
             "Generated by `scripts/energy_tables.py` from the records named in each row.", ""]
    for key, digits, unit in (("energy", 2, "meV/atom"), ("force", 1, "meV/Å"), ("stress", 2, "meV/Å³")):
        lines += [f"Test {key} MAE ({unit}):", "", "| start | recipe | " + " | ".join(f"N={n}" for n in SIZES) + " |",
                  "|---|---|" + "---|" * len(SIZES)]
        for name, row in table.items():
            strategy, label = name.split(" | ")
            cells = []
            for n in SIZES:
                s = row["per_n"].get(n, {}).get(key)
                ratio = (f", worst/best {s['worst_over_best']:.1f}" if key == "energy" and s and s["n"] > 1
                         and s["worst_over_best"] else "")
                cells.append(cell(s, digits) + ratio)
            lines.append(f"| {strategy} | {label} | " + " | ".join(cells) + " |")
        cells = [cell(peer[n][key], digits) + ("" if peer[n]["at_plateau"] else " †") if n in peer and peer[n][key] else "–"
                 for n in SIZES]
        lines.append("| SevenNet-0 fine-tuned | its recipe (docs/results/peers*) | " + " | ".join(cells) + " |")
        lines.append("")
    runs = [json.loads(path.read_text()) for _, folder, key in LEVERS if key == "test"
            for path in sorted((ROOT / folder / "records").glob("*.json"))]
    runs = [r for r in runs if r.get("n_train") in SIZES and r.get("strategy") in ("transfer_rescale", "transfer", "scratch")]
    lines += [f"Convergence (each record's `converged`: stopped by its early stop, not by the epoch cap): "
              f"{sum(bool(r.get('converged')) for r in runs)} of {len(runs)} runs in the rows above "
              "(stage one: section 11; stage two: 200 optimizer steps without a lower validation loss).", ""]
    lines += validation_lines()
    lines.append("† SevenNet-0 stopped by its epoch/step caps (docs/results/peers), not at its plateau; "
                 "N = 20 is its plateau run (docs/results/peers_long, one seed).")
    offsets = ROOT / "docs/results/energy_offset/offsets.json"
    if offsets.is_file():
        rows = json.loads(offsets.read_text())["rows"]
        lines += ["", "E0/shift refit (no training; `scripts/energy_offset.py`, docs/results/energy_offset/): "
                  "test energy MAE (meV/atom) of the stage-one models, mean over runs:", "",
                  "| start | N | as trained | shift refit on the N training structures | best constant on the test set (oracle) |",
                  "|---|---|---|---|---|"]
        for strategy in ("transfer_rescale", "transfer", "scratch"):
            for n in SIZES:
                sel = [r for r in rows if r["strategy"] == strategy and r["n_train"] == n]
                if sel:
                    lines.append(f"| {strategy} | {n} ({len(sel)} runs) | {mean(r['test_energy_mae'] for r in sel):.2f} | "
                                 f"{mean(r['test_energy_mae_after_train_shift'] for r in sel):.2f} | "
                                 f"{mean(r['test_energy_mae_after_best_constant'] for r in sel):.2f} |")
    lines += ["", *goal_lines(table, peer)]
    out = ROOT / args.out
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    RESULTS.write_text(replace_block(RESULTS.read_text(), "energy_levers", "\n".join(lines) + "\n"))
    README.write_text(replace_block(README.read_text(), "energy", readme_block(table, peer)))
    out.with_suffix(".json").write_text(json.dumps({"table": table, "sevennet": peer}, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
