#!/usr/bin/env python
"""Temperature transferability: test force errors inside and outside the training temperatures.

Compares two finished learning-curve sweeps on the same test set: one trained on cold cells only
(``configs/learning_curve_pbe2_lowT.yaml``) and one on every config_type
(``configs/learning_curve_pbe3.yaml``). For each strategy and N it pools the per-config_type test force
MAE (meV/Å) of each run into an "in range" and an "out of range" MAE, weighting each config_type by its
number of force components in the test file (so the pooled value is the MAE over those components), and
reports mean ± sample std over seeds plus the out-of-range penalty of cold-only training.

    python scripts/temperature_transfer.py --cold docs/results/pbe2_lowT --all docs/results/pbe3 \
        --test data/ge_test_pbe.xyz --out docs/results/temperature_transfer
"""
import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from mace_transfer.studies.records import load_runs, write_json

OUT_OF_RANGE = ("md_1050K", "md_1350K", "md_1650K", "liquid")  # above the 900 K of the cold training cells
IN_RANGE = ("md_450K", "md_750K", "strain", "vacancy")


def components_per_type(test_path):
    """config_type -> number of force components (3 × atoms) in the test file."""
    from ase.io import iread

    counts = Counter()
    for atoms in iread(str(test_path), index=":", format="extxyz"):
        counts[str(atoms.info.get("config_type", "Default"))] += 3 * len(atoms)
    return counts


def pooled(record, types, weights):
    """Force MAE (meV/Å) over the components of ``types``, from one run's per-config_type table."""
    per = record["test_per_config_type"]
    missing = [t for t in types if t not in per]
    if missing:
        raise SystemExit(f"{record['name']}: no test error for config_type {', '.join(missing)}")
    w = np.array([weights[t] for t in types], float)
    return float(np.dot(w, [per[t]["force_mae_meV_per_A"] for t in types]) / w.sum())


def load(folder, weights):
    """(strategy, N) -> {"in": [...], "out": [...]} over seeds, from ``<folder>/records/*.json``."""
    records = load_runs(folder)
    if not records:
        raise SystemExit(f"{folder}: no finished runs in records/")
    table = defaultdict(lambda: {"in": [], "out": []})
    for record in records:
        key = (record["strategy"], int(record["n_train"]))
        table[key]["in"].append(pooled(record, IN_RANGE, weights))
        table[key]["out"].append(pooled(record, OUT_OF_RANGE, weights))
    return table


def mean_std(values):
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", required=True, help="results folder of the cold-only sweep")
    parser.add_argument("--all", required=True, help="results folder of the all-temperature sweep")
    parser.add_argument("--test", required=True, help="the test file both sweeps used (extxyz)")
    parser.add_argument("--out", required=True, help="folder for summary.md, summary.json, hot_cold.png")
    args = parser.parse_args(argv)
    weights = components_per_type(args.test)
    unknown = [t for t in OUT_OF_RANGE + IN_RANGE if t not in weights]
    if unknown:
        raise SystemExit(f"{args.test}: no config_type {', '.join(unknown)}")
    cold, full = load(args.cold, weights), load(args.all, weights)
    keys = sorted(set(cold) & set(full))
    if not keys:
        raise SystemExit("the two sweeps share no (strategy, N)")
    rows, summary = [], []
    for strategy, n in keys:
        c_in, c_out = mean_std(cold[(strategy, n)]["in"]), mean_std(cold[(strategy, n)]["out"])
        a_in, a_out = mean_std(full[(strategy, n)]["in"]), mean_std(full[(strategy, n)]["out"])
        penalty = 100.0 * (c_out[0] / a_out[0] - 1.0)
        summary.append({"strategy": strategy, "n_train": n, "seeds_cold": len(cold[(strategy, n)]["in"]),
                        "seeds_all": len(full[(strategy, n)]["in"]), "cold_in": c_in, "cold_out": c_out,
                        "all_in": a_in, "all_out": a_out, "out_of_range_penalty_pct": penalty})
        rows.append(f"| {strategy} | {n} | {c_in[0]:.1f} ± {c_in[1]:.1f} | {a_in[0]:.1f} ± {a_in[1]:.1f} | "
                    f"{c_out[0]:.1f} ± {c_out[1]:.1f} | {a_out[0]:.1f} ± {a_out[1]:.1f} | {penalty:+.0f} % |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = (f"Test force MAE (meV/Å), mean ± sample std over seeds; cold = trained on cold cells only "
            f"(`{args.cold}`), all = trained on every config_type (`{args.all}`). In range: "
            f"{', '.join(IN_RANGE)}; out of range: {', '.join(OUT_OF_RANGE)} (pooled over force components "
            f"of `{args.test}`). Penalty: cold out / all out − 1.\n\n"
            "| strategy | N | in range, cold | in range, all | out of range, cold | out of range, all | penalty |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    (out / "summary.md").write_text(text)
    write_json(out / "summary.json", summary)
    plot(summary, out / "hot_cold.png")
    print(text)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    colours = {"scratch": "tab:grey", "transfer": "tab:blue", "transfer_rescale": "tab:orange"}
    for ax, part, title in ((axes[0], "in", "test inside 300–900 K"), (axes[1], "out", "test at 1050 K – liquid")):
        for strategy in sorted({s["strategy"] for s in summary}):
            rows = sorted((s for s in summary if s["strategy"] == strategy), key=lambda s: s["n_train"])
            n = [s["n_train"] for s in rows]
            for which, style in (("all", "-"), ("cold", "--")):
                m = [s[f"{which}_{part}"][0] for s in rows]
                e = [s[f"{which}_{part}"][1] for s in rows]
                ax.errorbar(n, m, yerr=e, fmt="o" + style, capsize=3, color=colours.get(strategy),
                            label=f"{strategy}, {'all T' if which == 'all' else 'cold only'}")
        ax.set_xscale("log")
        ns = sorted({s["n_train"] for s in summary})
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("Ge training structures N")
        ax.set_title(title)
    axes[0].set_ylabel("test force MAE (meV/Å)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    sys.exit(main())
