"""A loop's rounds as a table: its records (``OUT/round_RRR/record.json``) -> markdown.

Units: meV/Å (forces, uncertainty), meV/atom (energy), CPU s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence


def read_records(out: Path) -> List[Dict]:
    """Every finished round's record of the loop in ``out``, in order."""
    records, r = [], 0
    while (Path(out) / f"round_{r:03d}" / "record.json").exists():
        records.append(json.loads((Path(out) / f"round_{r:03d}" / "record.json").read_text()))
        r += 1
    return records


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(loops: Dict[str, Sequence[Dict]]) -> str:
    """One table row per round of each named loop."""
    lines = ["| loop | round | labels | DFT calls | rule | selected kinds | fresh σ max / median (meV/Å) "
             "| test F MAE (meV/Å) | test E MAE (meV/atom) | Spearman (max) | CPU s explore / DFT / train |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, records in loops.items():
        for rec in records:
            check = rec.get("check") or {}
            test = check.get("test") or {}
            fresh = rec.get("fresh_uncertainty_meV_A") or {}
            kinds = ", ".join(sorted(set((rec.get("selected") or {}).get("config_types") or []))) or "–"
            cpu = rec.get("cpu_s") or {}
            lines.append(
                f"| {name} | {rec['round']} | {rec['labels_used']} | {rec['dft_calls']} | "
                f"{(rec.get('selected') or {}).get('rule', '–')} | {kinds} | "
                f"{_fmt(fresh.get('max'))} / {_fmt(fresh.get('median'))} | {_fmt(test.get('force_mae_meV_per_A'))} | "
                f"{_fmt(test.get('energy_mae_meV_per_atom'), 2)} | "
                f"{_fmt((check.get('calibration') or {}).get('spearman_max'), 2)} | "
                f"{_fmt(cpu.get('exploration'), 0)} / {_fmt(cpu.get('dft'), 0)} / {_fmt(cpu.get('training'), 0)} |")
    return "\n".join(lines) + "\n"
