"""README's headline table and figure, from the records only (issue 50):

    .venv/bin/python scripts/headline.py      # writes docs/results/headline.md, headline.png, README's blocks

Medium MACE (64 ch, L = 1) Si→Ge transfer_rescale and plain transfer against the same size from
scratch (docs/results/converged_medium/records: every run trained to convergence under one recipe,
choices on validation), and SevenNet-0 fine-tuned with its own code on exactly the same Ge subsets
(docs/results/peers/records); test force MAE (meV/Å) and energy MAE (meV/atom) on the 60 PBE Ge test
structures, mean over seeds (their number in parentheses), zero-shot with the energy zero fitted on the 8
validation cells. README.md's block between the headline markers is replaced by the table.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = (  # label, records folder, strategy, zero-shot file, its key
    ("MACE medium, Si→Ge transfer_rescale", "docs/results/converged_medium", "transfer_rescale", "remap_rescale"),
    ("MACE medium, Si→Ge transfer (no rescale)", "docs/results/converged_medium", "transfer", "remap"),
    ("MACE medium from scratch", "docs/results/converged_medium", "scratch", None),
    ("SevenNet-0 fine-tuned, stopped by its caps", "docs/results/peers", "sevenn", "sevenn"),
)
SIZES = (2, 5, 10, 20, 50, 292)
START, END = "<!-- headline:start -->", "<!-- headline:end -->"
DEMO = "docs/results/demo_pbe"  # make demo's report and timing on a fresh clone, copied from runs/demo_pbe/report


def seed_values(folder: str, strategy: str):
    """{N: [(force MAE, energy MAE, converged) per seed]} of one strategy's records (``converged``: the record
    says its run stopped on its own rule, not on a cap)."""
    out = defaultdict(list)
    for path in sorted((ROOT / folder / "records").glob(f"{strategy}_N*_s*.json")):
        rec = json.loads(path.read_text())
        if rec.get("strategy") != strategy or not rec.get("test"):
            continue
        out[int(rec["n_train"])].append((rec["test"]["force_mae_meV_per_A"], rec["test"]["energy_mae_meV_per_atom"],
                                         bool(rec.get("converged"))))
    return out


def zero_shot(folder: str, key: str):
    if key is None:
        return None
    data = json.loads((ROOT / folder / "zero_shot.json").read_text()).get(key)
    if not data:
        return None
    energy = data.get("energy_zero_fitted", {}).get("energy_mae_meV_per_atom", data["energy_mae_meV_per_atom"])
    return data["force_mae_meV_per_A"], energy


def table_markdown(rows) -> str:
    head = "| test force / energy MAE (meV/Å / meV/atom) | zero-shot | " + " | ".join(f"N = {n}" for n in SIZES) + " |"
    lines = [head, "|---|---|" + "---|" * len(SIZES)]
    for label, zs, values in rows:
        cells = [f"{zs[0]:.1f} / {zs[1]:.1f}" if zs else "–"]
        for n in SIZES:
            v = values.get(n)
            if not v:
                cells.append("–")
                continue
            f = statistics.mean(x[0] for x in v)
            e = statistics.mean(x[1] for x in v)
            capped = "" if all(x[2] for x in v) else " †"
            cells.append(f"{f:.1f} / {e:.2f} ({len(v)}){capped}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n† at least one run stopped by its epoch or step cap, not converged (its record says so).\n"


def figure(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, _, values in rows:
        ns = sorted(values)
        for axis, index in zip(axes, (0, 1)):
            means = [statistics.mean(x[index] for x in values[n]) for n in ns]
            spread = [statistics.stdev(x[index] for x in values[n]) if len(values[n]) > 1 else 0 for n in ns]
            axis.errorbar(ns, means, yerr=spread, marker="o", capsize=3, label=label)
    for axis, what in zip(axes, ("test force MAE (meV/Å)", "test energy MAE (meV/atom)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("PBE Ge training structures N")
        axis.set_ylabel(what)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("60 PBE Ge test structures; mean ± std over seeds (3 at N ≤ 50, 1 at 292)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def replace_block(text: str, name: str, block: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return text
    before, rest = text.split(start, 1)
    return before + start + "\n" + block + end + rest.split(end, 1)[1]


def demo_block() -> str:
    """README's make-demo paragraph from the committed demo report and its fresh-clone timing."""
    metrics = json.loads((ROOT / DEMO / "metrics.json").read_text())["models"]
    timing = json.loads((ROOT / DEMO / "timing.json").read_text())
    rows = ["| Ge model (20 PBE structures, 40 epochs) | test force MAE (meV/Å) | energy MAE (meV/atom) |",
            "|---|---|---|"]
    for label in ("transfer", "scratch", "zero-shot remap"):
        overall = metrics[label]["errors"]["overall"]
        rows.append(f"| {label} | {overall['force_mae_meV_per_A']:.1f} | {overall['energy_mae_meV_per_atom']:.2f} |")
    stages = timing["stages_wall_s"]
    return (f"`make demo` (`configs/demo_pbe_si_to_ge.yaml`) remaps the shipped PBE-Si medium model "
            f"(`models/si_pbe_medium.model`) to Ge, fine-tunes it on 20 shipped PBE Ge structures, trains the same "
            f"architecture from scratch for the same {timing['epochs']} epochs beside it (speed to accuracy, not "
            f"accuracy at convergence: the table below has that), and tests both and the zero-shot remap on the 60 "
            f"PBE Ge test structures (`runs/demo_pbe/report/`: `summary.md`, `force_parity.png`, "
            f"`training_curves.png`). Measured on a fresh clone, {timing['machine']}, {timing['date']}: "
            f"**{timing['wall_s_total'] / 60:.1f} min** from `make demo` to the report, set-up included "
            f"(transfer {stages['ge_transfer']} s, scratch {stages['ge_scratch']} s, report {stages['report']} s; "
            f"`{DEMO}/`):\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    rows = [(label, zero_shot(folder, zkey), seed_values(folder, strategy)) for label, folder, strategy, zkey in ROWS]
    table = table_markdown(rows)
    out = ROOT / "docs" / "results"
    (out / "headline.md").write_text(table)
    figure(rows, out / "headline.png")
    readme = ROOT / "README.md"
    text = replace_block(readme.read_text(), "headline", table)
    if (ROOT / DEMO / "timing.json").is_file():
        text = replace_block(text, "demo", demo_block())
    readme.write_text(text)
    print(table)


if __name__ == "__main__":
    main()
