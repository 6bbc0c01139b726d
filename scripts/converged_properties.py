"""a0 and B of the converged studies' finished Ge models against PBE (issue 21, deliverable 4):

    python scripts/converged_properties.py docs/results/converged_medium [docs/results/converged_tiny ...]

For every run record whose model is at hand (its work folder or ``<out>/models/``; nothing is trained):
(1) a0 (Å) and B (GPa) of the relaxed 8-atom diamond cell (``evaluate.properties.lattice_and_bulk_modulus``:
bounded search, Birch-Murnaghan fit within ±2 %), against ``data/ge_pbe_reference.json`` (PBE E-V of the
8-atom cell, 4x4x4 k); (2) the same fit on the five 16-atom Ge cells of ``data/sige_ev_pbe16.xyz`` (x = 1,
a = 5.783 Å × 0.97 … 1.03, ideal sites, the labels' own DFT settings), model and PBE on identical cells.
One JSON per run in ``<out>/properties/`` (a run already there is skipped), then a markdown table per run and
one per (study, start, N): the 8-atom a0 error (%) and B (GPa), mean ± sample std over the seeds at hand.
"""

import json
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ase.io import read  # noqa: E402

from mace_transfer import evaluate  # noqa: E402
from mace_transfer.evaluate.properties import lattice_and_bulk_modulus  # noqa: E402
from mace_transfer.studies.alloy import calculator_energy, ev_properties  # noqa: E402
from mace_transfer.studies.records import file_at_hand, load_runs, write_json  # noqa: E402

REFERENCE = ROOT / "data/ge_pbe_reference.json"
EV_SCAN = ROOT / "data/sige_ev_pbe16.xyz"


def ge_scan():
    return [atoms for atoms in read(EV_SCAN, ":") if round(float(atoms.info["x_ge"]), 4) == 1.0]


def pbe_on_scan(scan) -> dict:
    return ev_properties(lambda atoms: float(atoms.info["REF_energy"]), scan)["1"]


def measure(model_path: str, scan) -> dict:
    calc = evaluate.load_model(model_path).calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relaxed = lattice_and_bulk_modulus(calc, "Ge", guess=5.78)
    on_scan = ev_properties(calculator_energy(calc), scan)["1"]
    return {"diamond8": {k: relaxed[k] for k in ("lattice_constant_A", "bulk_modulus_GPa")},
            "pbe_scan16": {"a0_A": on_scan["a0_A"], "B0_GPa": on_scan["B0_GPa"]}}


def main(outs) -> None:
    scan = ge_scan()
    reference = json.loads(REFERENCE.read_text())
    pbe16 = pbe_on_scan(scan)
    print(f"PBE: 8-atom a0 {reference['lattice_constant_A']:.3f} Å, B {reference['bulk_modulus_GPa']:.1f} GPa; "
          f"16-atom scan a0 {pbe16['a0_A']:.4f} Å, B {pbe16['B0_GPa']:.1f} GPa\n")
    print("| study | run | a0 (Å), 8-atom, relaxed | vs PBE | B (GPa) | vs PBE | a0 on the PBE scan cells | vs PBE | B there | vs PBE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    by_start = defaultdict(list)  # (study, start, N) -> [(a0 error %, B GPa)] over seeds
    for out in map(Path, outs):
        folder = out / "properties"
        for rec in load_runs(out):
            path = folder / f"{rec['name']}.json"
            if not path.is_file():
                model = file_at_hand(out, rec)
                if model is None:
                    continue
                start = time.time()
                values = measure(model, scan)
                write_json(path, {"name": rec["name"], "strategy": rec["strategy"], "n_train": rec["n_train"],
                                  "seed": rec["seed"], "model": model, **values,
                                  "pbe": {"diamond8": {"lattice_constant_A": reference["lattice_constant_A"],
                                                       "bulk_modulus_GPa": reference["bulk_modulus_GPa"],
                                                       "source": str(REFERENCE.relative_to(ROOT))},
                                          "pbe_scan16": {"a0_A": pbe16["a0_A"], "B0_GPa": pbe16["B0_GPa"],
                                                         "source": str(EV_SCAN.relative_to(ROOT)) + " (x = 1)"}},
                                  "wall_s": time.time() - start})
            values = json.loads(path.read_text())
            d8, s16 = values["diamond8"], values["pbe_scan16"]
            if d8["lattice_constant_A"] is not None and d8["bulk_modulus_GPa"] is not None:
                by_start[(out.name, rec["strategy"], rec["n_train"])].append(
                    (100 * (d8["lattice_constant_A"] / reference["lattice_constant_A"] - 1), d8["bulk_modulus_GPa"]))

            def rel(value, ref):
                return "–" if value is None else f"{100 * (value / ref - 1):+.2f} %"

            def num(value, digits):
                return "–" if value is None else f"{value:.{digits}f}"

            print(f"| {out.name} | {rec['name']} | {num(d8['lattice_constant_A'], 4)} | "
                  f"{rel(d8['lattice_constant_A'], reference['lattice_constant_A'])} | "
                  f"{num(d8['bulk_modulus_GPa'], 1)} | {rel(d8['bulk_modulus_GPa'], reference['bulk_modulus_GPa'])} | "
                  f"{num(s16['a0_A'], 4)} | {rel(s16['a0_A'], pbe16['a0_A'])} | {num(s16['B0_GPa'], 1)} | "
                  f"{rel(s16['B0_GPa'], pbe16['B0_GPa'])} |")

    print_seed_means(by_start, reference)


def mean_std(values, digits, sign=""):
    text = f"{statistics.mean(values):{sign}.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "") + f" ({len(values)})"


def print_seed_means(by_start, reference) -> None:
    """Per (study, start, N): the relaxed 8-atom a0 error (%) and B (GPa), mean ± sample std (seeds)."""
    print(f"\n| study | start | N | a0 error (%), 8-atom | B (GPa; PBE {reference['bulk_modulus_GPa']:.1f}) |")
    print("|---|---|---|---|---|")
    for (study, start, n), values in sorted(by_start.items()):
        print(f"| {study} | {start} | {n} | {mean_std([v[0] for v in values], 2, '+')} | "
              f"{mean_std([v[1] for v in values], 1)} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["docs/results/converged_medium", "docs/results/converged_tiny"])
