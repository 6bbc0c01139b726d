"""A study's report: ``summary.json``, ``summary.md``, ``learning_curve.png`` and ``stability.png``
made from the finished records only (no training, no MD, no model loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from mace_transfer.studies import selection
from mace_transfer.studies.config import STRATEGIES, target_symbol
from mace_transfer.studies.records import (aggregate, attach_reach_scratch, data_efficiency, load_runs,
                                           write_json)


def write_report(config: Dict[str, Any], out=None) -> Dict[str, Any]:
    """summary.json, summary.md, learning_curve.png (+ stability.png) from the finished records in
    ``out`` (default ``config["out"]``); returns the summary."""
    out = Path(out or config["out"])
    records = load_runs(out)
    attach_reach_scratch(records)
    summary = {"table": aggregate(records), "n_runs": len(records)}
    for name in ("zero_shot", "freeze_selection", "timing"):
        path = out / f"{name}.json"
        if path.is_file():
            summary[name] = json.loads(path.read_text())
    efficiency = [data_efficiency(records, strategy, int(n))
                  for n in (config.get("report") or {}).get("data_efficiency_at", [])
                  for strategy in _order({r["strategy"] for r in records}) if strategy != "scratch"]
    if any(efficiency):
        summary["data_efficiency"] = [e for e in efficiency if e]
    for folder in ("lr_selection", "loss_selection"):
        files = sorted((out / folder).glob("*.json"))
        if files:
            summary[folder] = {p.stem: json.loads(p.read_text()) for p in files}
    source_json = out / (config.get("source", {}) or {}).get("cache", "source/si.model")
    if source_json.with_suffix(".json").is_file():
        src = json.loads(source_json.with_suffix(".json").read_text())
        summary["source"] = {k: src.get(k) for k in ("n_train", "n_valid", "wall_s", "epochs_run",
                                                     "best_valid_rmse_f_meV_A", "machine")}
    md = [json.loads(p.read_text()) for p in sorted((out / "md").glob("*.json"))]
    if md:
        summary["md"] = md
    write_json(out / "summary.json", summary)
    if records:
        plot_learning_curve(summary["table"], out / "learning_curve.png", summary.get("zero_shot"),
                            title=config.get("title", "SW-Ge: Si-initialised vs scratch"),
                            target=target_symbol(config))
    if md:
        plot_stability(md, out / "stability.png", target=target_symbol(config))
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


def _color(strategy: str) -> str:
    """One colour per strategy in every figure (matplotlib's C0, C1, ... in STRATEGIES order)."""
    return f"C{STRATEGIES.index(strategy) % 10}" if strategy in STRATEGIES else "k"


def _order(strategies) -> List[str]:
    return [s for s in STRATEGIES if s in strategies] + sorted(s for s in strategies if s not in STRATEGIES)


def plot_learning_curve(table, png, zero_shot=None, title: str = "SW-Ge: Si-initialised vs scratch",
                        target: str = "Ge") -> None:
    """Test force MAE vs N, log-log, mean ± sample std over seeds (error bars), one line per strategy."""
    from mace_transfer.evaluate.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=150)
    strategies = _order(table)
    for i, strategy in enumerate(strategies):
        sizes = sorted(int(n) for n in table[strategy])
        stats = [table[strategy][str(n)]["force_mae_meV_per_A"] for n in sizes]
        keep = [(n, s) for n, s in zip(sizes, stats) if s["mean"] is not None]
        if not keep:
            continue
        x = np.array([n for n, _ in keep], dtype=float) * (1 + 0.03 * (i - len(strategies) / 2))
        mean = np.array([s["mean"] for _, s in keep])
        std = np.array([s["std"] for _, s in keep])
        low = np.maximum(mean - std, mean * 0.05)
        ax.errorbar(x, mean, yerr=[mean - low, std], marker="o", ms=4, capsize=3, label=strategy,
                    color=_color(strategy))
    if zero_shot:
        for key, style, text in (("remap", ":", "zero-shot remap"),
                                 ("remap_rescale", "--", "zero-shot remap + rescale (estimated s, k)"),
                                 ("remap_rescale_known", "-.", "zero-shot remap + rescale (SW σ, ε ratios)"),
                                 ("classical", (0, (1, 3)), "zero-shot classical model")):
            if key in zero_shot:
                ax.axhline(zero_shot[key]["force_mae_meV_per_A"], color="grey", ls=style, lw=1, label=text)
    ax.set_xscale("log")
    ax.set_yscale("log")
    all_sizes = sorted({int(n) for s in table.values() for n in s})
    ax.set_xticks(all_sizes)
    ax.set_xticklabels([str(n) for n in all_sizes])
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 4.0, 5.0, 7.0), numticks=30))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    counts = [e["force_mae_meV_per_A"]["n"] for s in table.values() for e in s.values()]
    ax.set_xlabel(f"{target} training configurations N")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    seeds = f"{min(counts)}" if counts and min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    ax.set_title(f"{title}\n(mean ± sample std over {seeds} seeds)", fontsize=8)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(png), dpi=None)


def plot_stability(md_records, png, target: str = "Ge") -> None:
    """Highest stable MD temperature (K) vs N per strategy."""
    from mace_transfer.evaluate.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=150)
    strategies = _order({r["strategy"] for r in md_records})
    top = max((r["max_stable_temperature_K"] or 0) for r in md_records)
    for i, strategy in enumerate(strategies):
        rows = sorted((r["n_train"], r["max_stable_temperature_K"] or 0) for r in md_records
                      if r["strategy"] == strategy)
        shift = 1 + 0.04 * (i - (len(strategies) - 1) / 2)  # side by side where the lines coincide
        ax.plot([n * shift for n, _ in rows], [t for _, t in rows], marker="osD^v"[i % 5], ls="-",
                alpha=0.8, label=strategy, color=_color(strategy))
    ax.set_ylim(0, top * 1.1 + 100)
    ax.set_xscale("log")
    ax.set_xlabel(f"{target} training configurations N")
    ax.set_ylabel("highest stable MD temperature (K)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, Path(png), dpi=None)


def _pm(stats, digits=1) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    text = f"{stats['mean']:.{digits}f}"
    if stats["n"] > 1:
        text += f" ± {stats['std']:.{digits}f}"
    return text + (f" (n={stats['n']})" if stats["n"] != 1 else " (n=1)")


def _size_table(table, sizes, title: str, cell) -> List[str]:
    """Markdown lines: ``title``, then one row per strategy, one column per N, ``cell(entry)`` each."""
    lines = ["", title, "", "| strategy | " + " | ".join(f"N={n}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for strategy in _order(table):
        cells = [cell(table[strategy].get(str(n), {})) for n in sizes]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(summary) -> str:
    """Markdown tables: strategy x N (force MAE, energy MAE, wall, epochs), reach-scratch, extras."""
    table = summary["table"]
    sizes = sorted({int(n) for s in table.values() for n in s})
    lines = ["Test force MAE (meV/Å), mean ± sample std over seeds:", "",
             "| strategy | " + " | ".join(f"N={n}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for key, digits, title in (("force_mae_meV_per_A", 1, None), ("energy_mae_meV_per_atom", 2,
                                                                  "Test energy MAE (meV/atom):"),
                               ("wall_s", 0, "Wall seconds per training (MACE set-up, epochs, final error table; test evaluation not included):"),
                               ("epochs_run", 0, "Epochs run (MACE 0.3.16's --patience never stops a serial run; the lowest-validation-loss checkpoint is kept):")):
        if title:
            lines += ["", title, "", "| strategy | " + " | ".join(f"N={n}" for n in sizes) + " |",
                      "|---|" + "---|" * len(sizes)]
        for strategy in _order(table):
            cells = [_pm(table[strategy].get(str(n), {}).get(key), digits) for n in sizes]
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    def reach_cell(entry) -> str:
        reach = entry.get("reach_scratch")
        if not reach:
            return "–"
        if reach["epochs"]["mean"] is None:
            return f"never ({reach['reached']}/{reach['of']})"
        return (f"{reach['epochs']['mean']:.1f} ep, {reach['train_step_s']['mean']:.0f} s "
                f"({reach['reached']}/{reach['of']})")

    lines += _size_table(table, sizes, "Epochs (and optimizer-step seconds) to reach scratch's final validation "
                         "force RMSE at the same N and seed (reached/runs):", reach_cell)
    for group, what in (("per_config_type", "config_type"), ("per_length_scale", "cell scale (1 = as sampled)")):
        key = f"force_mae_{group}"
        with_parts = [n for n in sizes if any(key in table[s].get(str(n), {}) for s in table)]
        if not with_parts:
            continue
        n = with_parts[-1]
        parts = sorted({k for s in table for k in table[s].get(str(n), {}).get(key, {})})
        lines += ["", f"Test force MAE (meV/Å) by {what}, N={n}:", "",
                  "| strategy | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
        for strategy in _order(table):
            by_part = table[strategy].get(str(n), {}).get(key, {})
            lines.append(f"| {strategy} | " + " | ".join(_pm(by_part.get(k)) for k in parts) + " |")
    if "zero_shot" in summary:
        z = summary["zero_shot"]
        sc = z.get("scales_from_validation_set", {})
        lines += ["", "Zero-shot (remapped Si model, no Ge training) on the test set:", "",
                  "| model | force MAE (meV/Å) | energy MAE (meV/atom) |", "|---|---|---|"]
        for key in ("remap", "remap_rescale", "remap_rescale_known", "classical"):
            if key in z:
                lines.append(f"| {key} | {z[key]['force_mae_meV_per_A']:.1f} | "
                             f"{z[key]['energy_mae_meV_per_atom']:.1f} |")
        if sc:
            lines.append(f"\nremap_rescale: s = {sc.get('length_scale', float('nan')):.4f}, "
                         f"k = {sc.get('energy_scale', float('nan')):.4f} (estimated on the validation set)")
        if "known_scales" in z:
            kn = z["known_scales"]
            lines.append(f"remap_rescale_known: s = {kn['length_scale']}, k = {kn['energy_scale']} "
                         f"({kn.get('source', 'given in the config')})")
    if any("converged" in e for s in table.values() for e in s.values()):
        def converged_cell(entry) -> str:
            if "converged" not in entry:
                return "–"
            done = entry["converged"]
            return f"{_pm(entry['optimizer_steps_to_best'], 0)}, {done['converged']}/{done['of']} converged"

        lines += _size_table(table, sizes, "Convergence (budget.mode converged): optimizer steps to the kept "
                             "(best-validation) epoch, and runs that stopped on their plateau criterion before "
                             "the step cap:", converged_cell)
    if "data_efficiency" in summary:
        lines += ["", "Data efficiency: the N scratch needs to reach a start's test force MAE at N_ref (a power "
                  "law fitted per seed to scratch's errors over N; mean ± sample std over seeds):", "",
                  "| start | N_ref | scratch needs N | ratio | seeds | extrapolated |", "|---|---|---|---|---|---|"]
        for e in summary["data_efficiency"]:
            lines.append(f"| {e['strategy']} | {e['n_ref']} | {_pm(e['n_equal'], 1)} | {_pm(e['ratio'], 2)} | "
                         f"{e['ratio']['n']} | {e['extrapolated']} |")
        pooled = [e for e in summary["data_efficiency"] if e.get("pooled")]
        if pooled:
            lines += ["", "The same on the seed means (scratch's mean MAE per N, the start's mean at N_ref; the "
                      "range from the start's best and worst seed): one fit over every seed's scratch runs, steadier where a seed's "
                      "own scratch curve is short or flat:", "",
                      "| start | N_ref | scratch needs N | ratio (range) | scratch sizes (seeds each) | "
                      "start's seeds | extrapolated |", "|---|---|---|---|---|---|---|"]
            for e in pooled:
                p = e["pooled"]
                sizes_seeds = ", ".join(f"{n} ({k})" for n, k in p["baseline_sizes"].items())
                lines.append(f"| {e['strategy']} | {e['n_ref']} | {p['n_equal']:.1f} | {p['ratio']:.2f} "
                             f"({p['ratio_range'][0]:.2f}–{p['ratio_range'][1]:.2f}) | {sizes_seeds} | "
                             f"{p['n_strategy_seeds']} | {'yes' if p['extrapolated'] else 'no'} |")
    if "lr_selection" in summary:
        lines += ["", "Learning rate of each start, chosen on the lowest best validation loss "
                  "(test force MAE recorded, not used):", "",
                  "| strategy | N, seed | lr: best validation loss (test force MAE meV/Å) | chosen |", "|---|---|---|---|"]
        for strategy in _order(summary["lr_selection"]):
            sel = summary["lr_selection"][strategy]
            tries = ", ".join(f"{lr}: {t['best_valid_loss']:.4g} ({t['test_force_mae_meV_per_A']:.1f})"
                              for lr, t in sel.get("tries", {}).items())
            lines.append(f"| {strategy} | {sel['n_train']}, {sel['seed']} | {tries} | {sel.get('chosen', '–')} |")
    if "loss_selection" in summary:
        lines += ["", "Loss of each start, chosen on the validation cells: " + selection.LOSS_RULE + ":", "",
                  "| strategy | N, seed | energy goal (meV/atom) | option: flags | valid force / energy MAE "
                  "(meV/Å, meV/atom) | test force / energy MAE | chosen |", "|---|---|---|---|---|---|---|"]
        for strategy in _order(summary["loss_selection"]):
            sel = summary["loss_selection"][strategy]
            for tag, t in sel.get("tries", {}).items():
                lines.append(f"| {strategy} | {sel['n_train']}, {sel['seed']} | {sel['energy_goal_meV_per_atom']:g} | "
                             f"{tag}: {t['flags'] or 'the study loss'} | {t['valid_force_mae_meV_per_A']:.1f} / "
                             f"{t['valid_energy_mae_meV_per_atom']:.1f} | {t['test_force_mae_meV_per_A']:.1f} / "
                             f"{t['test_energy_mae_meV_per_atom']:.1f} | {'**yes**' if sel.get('chosen') == tag else ''} |")
    if "freeze_selection" in summary:
        fs = summary["freeze_selection"]
        lines += ["", f"transfer_freeze block set chosen at N={fs['n_train']}, seed {fs['seed']} "
                  f"by {fs['rule']}: **{fs['chosen']}**", "",
                  "| frozen blocks | valid force RMSE (meV/Å) | test force MAE (meV/Å) |", "|---|---|---|"]
        for blocks, row in fs["candidates"].items():
            lines.append(f"| {blocks} | {row['best_valid_rmse_f_meV_A']:.1f} | "
                         f"{row['test_force_mae_meV_per_A']:.1f} |")
    if "timing" in summary:
        t = summary["timing"]
        lines += ["", f"Timing, N={t['n_train']}, {t['epochs']} epochs, {t['repeats']} repeats "
                  "(optimizer-step seconds per epoch; wall seconds per run):", ""]
        for key in ("mace_run_train", "mace_transfer_train", "mace_transfer_train_freeze"):
            rows = t.get(key, [])
            if rows:
                lines.append(f"- {key}: " + ", ".join(f"{r['train_step_s_per_epoch']:.2f} s/epoch "
                                                      f"({r['wall_s']:.0f} s)" for r in rows))
    if "md" in summary:
        lines += ["", "MD stability and crystal properties vs the reference:", "",
                  "| run | highest stable T (K) | a0 (Å) | a0 error | B (GPa) | B error |", "|---|---|---|---|---|---|"]

        def _rel(record, key):
            value = ((record.get("comparison") or {}).get(key) or {}).get("relative_error")
            return "–" if value is None else f"{100 * value:+.1f} %"

        rank = {name: i for i, name in enumerate(STRATEGIES)}
        for r in sorted(summary["md"], key=lambda r: (rank.get(r["strategy"], len(rank)), r["n_train"], r["seed"])):
            props_ = r.get("properties") or {}
            a0, bulk = props_.get("lattice_constant_A"), props_.get("bulk_modulus_GPa")
            lines.append(f"| {r['strategy']} N={r['n_train']} s{r['seed']} | {r['max_stable_temperature_K']} | "
                         f"{a0 if a0 is None else f'{a0:.4f}'} | {_rel(r, 'lattice_constant_A')} | "
                         f"{bulk if bulk is None else f'{bulk:.1f}'} | {_rel(r, 'bulk_modulus_GPa')} |")
    return "\n".join(lines) + "\n"

