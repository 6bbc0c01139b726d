"""The peers study's report (issue 22), from records alone: the peers' tables beside the MACE
strategies of the studies named in ``compare_with`` (their own records, same data and test set),
the goal check, force MAE vs N with the peers drawn beside our strategies, and accuracy vs MD
speed at one N (the Pareto view)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from mace_transfer.studies.config import PEERS
from mace_transfer.studies.records import aggregate, load_runs, write_json
from mace_transfer.studies.report import _pm


def _study_label(path: Path) -> str:
    """'tiny' for docs/results/converged_tiny, else the folder name."""
    return path.name.replace("converged_", "")


def compared_rows(config: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """{"<study> <strategy>": {N: stats}} of every ``compare_with`` study's records."""
    rows: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for folder in [Path(p) for p in config.get("compare_with") or []]:
        records = load_runs(folder)
        for strategy, by_n in aggregate(records).items():
            rows[f"MACE {_study_label(folder)} {strategy}"] = by_n
    return rows


def compared_zero_shot(config: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Zero-shot rows of the compared studies, each remapped source once: two studies that share a
    source (the teacher study uses the tiny one) give the same forces on the same test set, whatever
    energy zero each used, so a force MAE already listed is not listed again."""
    found = {}
    for folder in [Path(p) for p in config.get("compare_with") or []]:
        path = folder / "zero_shot.json"
        if path.is_file():
            zero = json.loads(path.read_text())
            for key in ("remap", "remap_rescale"):
                seen = {round(v["force_mae_meV_per_A"], 6) for v in found.values()}
                if key in zero and round(zero[key]["force_mae_meV_per_A"], 6) not in seen:
                    entry = dict(zero[key])  # the peers' energy protocol (zero fitted on validation) where measured
                    if "energy_zero_fitted" in entry:
                        entry["energy_mae_meV_per_atom"] = entry["energy_zero_fitted"]["energy_mae_meV_per_atom"]
                    else:
                        entry["_zero_not_fitted"] = True
                    found[f"MACE {_study_label(folder)} {key.replace('_', ' + ')}"] = entry
    return found


def late_drop(records, window: int = 20) -> Dict[str, Dict[str, Any]]:
    """{peer: {N: stats}} of how far each run was from a plateau when it stopped: the % its best
    validation loss fell during its last ``window`` epochs (0 when it stopped early on patience)."""
    drops: Dict[tuple, List[float]] = {}
    for rec in records:
        losses = (rec.get("curve") or {}).get("valid_loss") or []
        if len(losses) <= window:
            continue
        before = min(losses[:-window])
        drops.setdefault((rec["strategy"], int(rec["n_train"])), []).append(100.0 * (before - min(losses)) / before)
    table: Dict[str, Dict[str, Any]] = {}
    for (peer, n), values in sorted(drops.items()):
        table.setdefault(peer, {})[str(n)] = {"mean": float(np.mean(values)), "max": float(np.max(values)),
                                             "n": len(values)}
    return table


def md_rows(config: Dict[str, Any], out: Path) -> Dict[str, Dict[str, Any]]:
    """{"<model> N=<n> s<seed>": MD record} of the peers' ``<out>/md/`` and every ``compare_with``
    study's ``md/`` (MD ladder, a0/B vs the PBE reference, close-contact wall)."""
    rows = {}
    for folder, label in [(out, None)] + [(Path(p), f"MACE {_study_label(Path(p))}")
                                          for p in config.get("compare_with") or []]:
        for path in sorted((folder / "md").glob("*.json")):
            record = json.loads(path.read_text())
            name = PEERS.get(record["strategy"], record["strategy"]) if label is None else f"{label} {record['strategy']}"
            rows[f"{name}, N={record['n_train']} s{record['seed']}"] = record
    return rows


def _md_markdown(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """The MD ladder, a0/B and close-contact wall of each model with an MD record."""
    if not rows:
        return []
    first = next(iter(rows.values()))
    temps = (first.get("md_settings") or {}).get("temperatures_K")
    ref = first.get("reference") or {}
    lines = ["", f"MD ladder (Langevin, 64-atom diamond Ge, highest stable temperature of {temps} K), "
             f"a0 and B from an E-V fit against PBE (a0 {ref.get('lattice_constant_A', float('nan')):.3f} Å, "
             f"B {ref.get('bulk_modulus_GPa', float('nan')):.1f} GPa), and the close-contact wall "
             "(energy as one bond closes, eV above the 2.50 Å frame; PBE in the header):", ""]
    wall = next((r["close_contact"] for r in rows.values() if r.get("close_contact")), None)
    marks = [1.9, 1.5, 1.3]
    picks = []
    if wall:
        distances = np.array(wall["distance_A"])
        picks = [int(np.argmin(np.abs(distances - d))) for d in marks]
        reference = wall.get("reference_eV") or [float("nan")] * len(distances)
        heads = [f"E({distances[i]:.2f} Å), PBE {reference[i]:.2f}" for i in picks]
    else:
        heads = []
    lines += ["| model | stable to (K) | a0 (Å) | B (GPa) | " + " | ".join(heads + ["max abs error (eV)"] if wall else []) +
              (" |" if wall else ""), "|---|---|---|---|" + "---|" * ((len(heads) + 1) if wall else 0)]
    for name, record in rows.items():
        props = record.get("properties") or {}
        cells = [f"{record.get('max_stable_temperature_K') or 0:.0f}" if record.get("max_stable_temperature_K")
                 else "none", f"{props.get('lattice_constant_A', float('nan')):.3f}",
                 f"{props.get('bulk_modulus_GPa', float('nan')):.1f}"]
        if wall:
            curve = record.get("close_contact")
            cells += ([f"{curve['energy_eV'][i]:.2f}" for i in picks] + [f"{curve.get('max_abs_error_eV', float('nan')):.1f}"]
                      if curve else ["–"] * (len(picks) + 1))
        retrained = " (retrained)" if record.get("retrained") else ""
        lines.append(f"| {name}{retrained} | " + " | ".join(cells) + " |")
    return lines


def goal_check(peers: Dict[str, Dict[str, Any]], ours: Dict[str, Dict[str, Any]],
               sizes: List[int]) -> List[Dict[str, Any]]:
    """Per N: our best force and energy MAE over the best fine-tuned peer's (goal: <= 0.6, <= 0.5)."""
    rows = []
    for n in sizes:
        def best(table, key):
            found = [(v[str(n)][key]["mean"], name) for name, v in table.items()
                     if str(n) in v and v[str(n)][key]["mean"] is not None]
            return min(found) if found else None

        peer_f, peer_e = best(peers, "force_mae_meV_per_A"), best(peers, "energy_mae_meV_per_atom")
        our_f, our_e = best(ours, "force_mae_meV_per_A"), best(ours, "energy_mae_meV_per_atom")
        if not (peer_f and our_f):
            continue
        rows.append({"n_train": n, "best_peer_force": peer_f, "ours_force": our_f,
                     "force_ratio": our_f[0] / peer_f[0], "best_peer_energy": peer_e, "ours_energy": our_e,
                     "energy_ratio": our_e[0] / peer_e[0] if peer_e and our_e else None})
    return rows


def goal_verdict(rows: List[Dict[str, Any]], sizes: List[int], force_limit: float = 0.6,
                 energy_limit: float = 0.5) -> str:
    """One line saying plainly whether the goal is met at every N of ``sizes``: met only when every
    N has a row and every ratio is within its limit; an N with no run of ours or no peer is "not decided"."""
    by_n = {row["n_train"]: row for row in rows}
    missing = [n for n in sizes if n not in by_n]
    parts = []
    for label, key, limit in (("Forces", "force_ratio", force_limit), ("Energies", "energy_ratio", energy_limit)):
        ratios = {n: by_n[n][key] for n in sizes if n in by_n and by_n[n][key] is not None}
        over = [n for n, r in ratios.items() if r > limit]
        unknown = missing + [n for n in sizes if n in by_n and by_n[n][key] is None]
        if over:
            verdict = (f"not met (ratio > {limit:g} at N = {', '.join(map(str, over))}; "
                       f"smallest {min(ratios.values()):.2f})")
        elif unknown:
            verdict = f"not decided (no comparison at N = {', '.join(map(str, sorted(unknown)))})"
        else:
            verdict = f"met at every N ({', '.join(map(str, sizes))}; largest ratio {max(ratios.values()):.2f})"
        parts.append(f"{label} (≤ {limit:g}×): {verdict}.")
    return " ".join(parts)


def write_peers_report(config: Dict[str, Any], out=None) -> Dict[str, Any]:
    """summary.json, summary.md, peers_vs_n.png, pareto.png in ``out`` from its records."""
    out = Path(out or config["out"])
    records = load_runs(out)
    peers = aggregate(records)
    ours = compared_rows(config)
    summary: Dict[str, Any] = {"table": peers, "n_runs": len(records), "compared": ours}
    for name in ("zero_shot", "md_speed"):
        if (out / f"{name}.json").is_file():
            summary[name] = json.loads((out / f"{name}.json").read_text())
    summary["compared_zero_shot"] = compared_zero_shot(config)
    lr_files = sorted((out / "lr_selection").glob("*.json"))
    if lr_files:
        summary["lr_selection"] = {p.stem: json.loads(p.read_text()) for p in lr_files}
    sizes = sorted({int(n) for s in peers.values() for n in s})
    goal_sizes = [n for n in sizes if 5 <= n <= 50]
    summary["goal"] = goal_check(peers, ours, goal_sizes)
    summary["goal_verdict"] = goal_verdict(summary["goal"], goal_sizes)
    summary["md"] = md_rows(config, out)
    summary["late_drop"] = late_drop(records)
    write_json(out / "summary.json", summary)
    if records:
        plot_peers_vs_n(peers, ours, out / "peers_vs_n.png")
    pareto_n = int((config.get("md_speed") or {}).get("n_train", 20))
    if summary.get("md_speed"):
        plot_pareto(peers, ours, summary["md_speed"], config, pareto_n, out / "pareto.png")
    (out / "summary.md").write_text(peers_markdown(summary, config))
    return summary


def _rows_table(title: str, rows: Dict[str, Dict[str, Any]], sizes: List[int], key: str, digits: int) -> List[str]:
    lines = ["", title, "", "| model | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for name, by_n in rows.items():
        lines.append(f"| {name} | " + " | ".join(_pm(by_n.get(str(n), {}).get(key), digits) for n in sizes) + " |")
    return lines


def peers_markdown(summary: Dict[str, Any], config: Dict[str, Any]) -> str:
    peers = {PEERS.get(k, k): v for k, v in summary["table"].items()}
    ours = summary["compared"]
    sizes = sorted({int(n) for s in list(peers.values()) + list(ours.values()) for n in s})
    lines = ["Peers: universal potentials fine-tuned on the learning curve's own subsets, beside our MACE "
             "starts (test set, mean ± sample std over seeds).", "", "Zero-shot (no Ge training; every model's "
             "energy zero fitted on the 8 validation cells, one constant per element):", "",
             "| model | force MAE (meV/Å) | energy MAE (meV/atom; * = the Ge E0 alone, zero not yet fitted) | stress MAE (meV/Å³) |", "|---|---|---|---|"]
    zero = {PEERS.get(k, k): v for k, v in (summary.get("zero_shot") or {}).items()}
    zero.update(summary.get("compared_zero_shot") or {})
    for name, errors in zero.items():
        stress = errors.get("stress_mae_meV_per_A3")
        star = "*" if errors.get("_zero_not_fitted") else ""
        lines.append(f"| {name} | {errors['force_mae_meV_per_A']:.1f} | {errors['energy_mae_meV_per_atom']:.1f}{star} | "
                     f"{'–' if stress is None else f'{stress:.2f}'} |")
    lines += _rows_table("Test force MAE (meV/Å):", {**peers, **ours}, sizes, "force_mae_meV_per_A", 1)
    lines += _rows_table("Test energy MAE (meV/atom):", {**peers, **ours}, sizes, "energy_mae_meV_per_atom", 2)
    stressed = {k: v for k, v in {**peers, **ours}.items()
                if any((e.get("stress_mae_meV_per_A3") or {}).get("n") for e in v.values())}
    if stressed:
        lines += _rows_table("Test stress MAE (meV/Å³, six Voigt components; 1 meV/Å³ = 0.160 GPa; only runs "
                             "recorded since the metric was added, `n` in summary.json):", stressed, sizes,
                             "stress_mae_meV_per_A3", 2)
    lines += _rows_table("Peers: epochs run (early stop after `patience_epochs` without a lower validation loss, "
                         "or the `max_epochs` cap):", peers, sizes, "epochs_run", 0)
    if summary.get("late_drop"):
        lines += ["", "Peers: how far from a plateau each fine-tune stopped: % its best validation loss fell in its "
                  "last 20 epochs (mean, max over seeds; ~0 = a plateau):", "",
                  "| peer | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for peer, by_n in summary["late_drop"].items():
            cells = [f"{by_n[str(n)]['mean']:.1f} (max {by_n[str(n)]['max']:.1f})" if str(n) in by_n else "–"
                     for n in sizes]
            lines.append(f"| {PEERS.get(peer, peer)} | " + " | ".join(cells) + " |")
    lines += _rows_table("Peers: wall seconds per fine-tune (one thread, test evaluation not included):", peers,
                         sizes, "wall_s", 0)
    if summary.get("lr_selection"):
        lines += ["", "Learning rate (lowest best validation loss at the selection N, seed; the test error is "
                  "recorded, not used):", "", "| peer | grid | chosen | best validation loss per lr |", "|---|---|---|---|"]
        for peer, entry in summary["lr_selection"].items():
            tries = ", ".join(f"{k}: {v['best_valid_loss']:.4g}" for k, v in entry.get("tries", {}).items())
            lines.append(f"| {PEERS.get(peer, peer)} | {entry['grid']} | {entry.get('chosen')} | {tries} |")
    if summary.get("md_speed"):
        speed = summary["md_speed"]
        models = sorted({k.split("|")[0] for k in speed})
        columns = sorted({(int(k.split("|")[1]), int(k.split("|")[2])) for k in speed})
        lines += ["", "MD speed (atom-steps/s, NVE 1 fs, diamond Ge, this machine's CPU):", "",
                  "| model | " + " | ".join(f"{a} atoms, {t} thr." for a, t in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for model in models:
            cells = [f"{speed[f'{model}|{a}|{t}']:.0f}" if f"{model}|{a}|{t}" in speed else "–" for a, t in columns]
            lines.append(f"| {PEERS.get(model, model)} | " + " | ".join(cells) + " |")
    lines += _md_markdown(summary.get("md") or {})
    if summary.get("goal"):
        lines += ["", "Goal (issue 22): our best force MAE ≤ 0.6× and energy MAE ≤ 0.5× the best fine-tuned "
                  "peer's at every N from 5 to 50:", "",
                  "| N | best peer (force) | ours (force) | ratio | best peer (energy) | ours (energy) | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for row in summary["goal"]:
            def name(pair):
                return f"{pair[0]:.1f} ({PEERS.get(pair[1], pair[1])})" if pair else "–"
            energy_ratio = f"{row['energy_ratio']:.2f}" if row["energy_ratio"] is not None else "–"
            lines.append(f"| {row['n_train']} | {name(row['best_peer_force'])} | {name(row['ours_force'])} | "
                         f"{row['force_ratio']:.2f} | {name(row['best_peer_energy'])} | {name(row['ours_energy'])} "
                         f"| {energy_ratio} |")
        lines += ["", summary["goal_verdict"]]
    return "\n".join(lines) + "\n"


def plot_peers_vs_n(peers, ours, png: Path) -> None:
    """Test force MAE vs N (log-log, mean ± std): peers dashed, our MACE starts solid."""
    from mace_transfer.evaluate.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=150)
    for i, (name, by_n, style) in enumerate([(PEERS.get(k, k), v, "--") for k, v in peers.items()]
                                            + [(k, v, "-") for k, v in ours.items()]):
        sizes = sorted(int(n) for n in by_n if by_n[n]["force_mae_meV_per_A"]["mean"] is not None)
        if not sizes:
            continue
        mean = np.array([by_n[str(n)]["force_mae_meV_per_A"]["mean"] for n in sizes])
        std = np.array([by_n[str(n)]["force_mae_meV_per_A"]["std"] for n in sizes])
        ax.errorbar(sizes, mean, yerr=[np.minimum(std, mean * 0.95), std], ls=style, marker="os^Dv<>p"[i % 8],
                    ms=4, capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Ge training configurations N")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    ax.set_title("Fine-tuned universal potentials (dashed) vs our MACE starts (solid)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, png, dpi=None)


def plot_pareto(peers, ours, speed: Dict[str, float], config: Dict[str, Any], n_train: int, png: Path) -> None:
    """Test force MAE at ``n_train`` vs MD speed (64 atoms, 1 thread): lower right is better."""
    from mace_transfer.evaluate.report import pyplot, save_figure

    labels = (config.get("md_speed") or {}).get("speed_of", {})  # "MACE tiny transfer_rescale" -> speed label
    points = []
    for name, by_n in list(peers.items()) + list(ours.items()):
        key = name if name in PEERS else labels.get(name)
        rate = speed.get(f"{key}|64|1")
        stats = by_n.get(str(n_train), {}).get("force_mae_meV_per_A", {})
        if rate and stats.get("mean") is not None:
            points.append((PEERS.get(name, name), rate, stats["mean"], stats["std"]))
    if not points:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=150)
    for i, (name, rate, mean, std) in enumerate(points):
        ax.errorbar([rate], [mean], yerr=[[std], [std]], marker="os^Dv<>p"[i % 8], ms=6, capsize=3, ls="", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MD speed, 64-atom Ge, one thread (atom-steps/s)")
    ax.set_ylabel(f"test force MAE at N = {n_train} (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, png, dpi=None)
