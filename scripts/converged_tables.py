"""The tables of docs/RESULTS.md section 11, from the converged studies' summary.json only:

    python scripts/converged_tables.py > /tmp/tables.md

Per model size (and the tiny model's SW-Ge pretraining): test force MAE (meV/Å), test energy MAE (meV/atom), optimizer steps to the kept epoch,
the run's wall time (minutes, every chunk of it, one CPU thread unless the record's `devices` say otherwise),
mean ± sample std over seeds (n = seeds), the zero-shot remap and the data-efficiency ratio on the seed
means (``records.data_efficiency``); then the runs a loss choice superseded
(``<study>/superseded/<loss>/records/``, e.g. the medium study's forces:energy 100:1 runs), as their own table.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mace_transfer.studies.records import aggregate, best_on_validation, data_efficiency, load_runs  # noqa: E402

STUDIES = (("medium (64 ch, L=1, corr. 3, r_max 5 Å)", "docs/results/converged_medium"),
           ("tiny (16 ch, L=0, corr. 2, r_max 4.5 Å)", "docs/results/converged_tiny"),
           ("tiny, SW-Ge pretraining then PBE", "docs/results/converged_tiny_sw"))
STARTS = ("scratch", "transfer", "transfer_rescale", "classical_pretrain")
# Studies of the same recipe with another scratch lr: the baseline then takes, per (N, seed), the run
# with the lower validation loss (records.best_on_validation), and the data efficiency is re-solved.
BASELINE_VARIANTS = {"docs/results/converged_tiny": ("docs/results/converged_tiny_scratch_lr",)}


def cell(stats, digits, scale=1.0):
    """mean ± sample std (n seeds) of one table cell, each value times ``scale`` (e.g. 1/60: s -> min)."""
    if not stats or stats.get("mean") is None:
        return "–"
    text = f"{stats['mean'] * scale:.{digits}f}"
    return text + (f" ± {stats['std'] * scale:.{digits}f}" if stats["n"] > 1 else "") + f" ({stats['n']})"


def print_tables(table, metrics) -> None:
    sizes = sorted({int(n) for s in table.values() for n in s})
    for key, digits, what, *scale in metrics:
        if not sizes:
            break
        print(f"| {what} | " + " | ".join(f"N={n}" for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for start in STARTS:
            row = table.get(start, {})
            if row:
                print(f"| {start} | " + " | ".join(cell(row.get(str(n), {}).get(key), digits, *scale) for n in sizes) + " |")
        print()


def print_efficiency(rows, title) -> None:
    print(f"| {title} | N_ref | scratch needs N | ratio (seed range) | bootstrap over seeds, 68 % / 95 % | extrapolated |")
    print("|---|---|---|---|---|---|")
    for e in rows:
        p = e["pooled"]
        boot = p.get("ratio_bootstrap") or {}
        interval = (f"{boot['p16']:.1f}–{boot['p84']:.1f} / {boot['p2.5']:.1f}–{boot['p97.5']:.1f}"
                    if "p16" in boot else "–")
        print(f"| {e['strategy']} | {e['n_ref']} | {p['n_equal']:.0f} | {p['ratio']:.1f} "
              f"({p['ratio_range'][0]:.1f}–{p['ratio_range'][1]:.1f}) | {interval} | {'yes' if p['extrapolated'] else 'no'} |")
    print()


def print_tuned_baseline(folder: str, n_refs) -> None:
    """Scratch with its lr chosen on validation per (N, seed) over the study and its variants."""
    variants = BASELINE_VARIANTS.get(folder)
    if not variants:
        return
    study = load_runs(Path(folder))
    others = [load_runs(Path(v)) for v in variants]
    scratch = best_on_validation([r for r in study if r["strategy"] == "scratch"], *others)
    varied = {(int(r["n_train"]), int(r["seed"])) for records in others for r in records}
    picked = ", ".join(f"N={r['n_train']} s{r['seed']}: {r['lr']:g}" for r in scratch
                       if (int(r["n_train"]), int(r["seed"])) in varied)
    rows = [e for e in (data_efficiency(scratch + [r for r in study if r["strategy"] != "scratch"], start, n)
                        for start in ("transfer", "transfer_rescale") for n in n_refs) if e and e.get("pooled")]
    if rows:
        print(f"Scratch with its lr chosen on validation per (N, seed) over `{folder}` and "
              f"{', '.join(f'`{v}`' for v in variants)} (where both ran: {picked}):\n")
        tuned = aggregate([r for r in scratch if (int(r["n_train"]), int(r["seed"])) in varied])["scratch"]
        print("tuned scratch, force / energy MAE: " + ", ".join(
            f"N={n} {cell(e['force_mae_meV_per_A'], 1)} / {cell(e['energy_mae_meV_per_atom'], 1)}"
            for n, e in sorted(tuned.items(), key=lambda kv: int(kv[0]))) + "\n")
        print_efficiency(rows, "data efficiency, tuned scratch")


def main() -> None:
    for label, folder in STUDIES:
        path = Path(folder) / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        if not summary.get("n_runs"):
            continue
        print(f"**{label}** ({summary['n_runs']} runs; `{folder}/summary.md`)\n")
        print_tables(summary["table"], (("force_mae_meV_per_A", 1, "test force MAE (meV/Å)"),
                                        ("energy_mae_meV_per_atom", 1, "test energy MAE (meV/atom)"),
                                        ("optimizer_steps_to_best", 0, "optimizer steps to the kept epoch"),
                                        ("wall_s", 0, "wall time of the whole run (min, one thread; GPU chunks included)",
                                         1 / 60)))
        zero = summary.get("zero_shot", {})
        if zero:
            print("zero-shot: " + ", ".join(f"{k} {v['force_mae_meV_per_A']:.1f} meV/Å / {v['energy_mae_meV_per_atom']:.0f} "
                                              "meV/atom" for k, v in zero.items() if isinstance(v, dict) and "force_mae_meV_per_A" in v))
            print()
        pooled = [e for e in summary.get("data_efficiency", []) if e.get("pooled")]
        if pooled:
            print_efficiency(pooled, "data efficiency (seed means)")
            print_tuned_baseline(folder, sorted({e["n_ref"] for e in pooled}))
        for aside in sorted((Path(folder) / "superseded").glob("*/records")):
            records = load_runs(aside.parent)
            print(f"*{label}, superseded by the loss choice: loss {aside.parent.name}* ({len(records)} runs; "
                  f"`{aside}`)\n")
            print_tables(aggregate(records), (("force_mae_meV_per_A", 1, "test force MAE (meV/Å)"),
                                              ("energy_mae_meV_per_atom", 1, "test energy MAE (meV/atom)")))


if __name__ == "__main__":
    main()
