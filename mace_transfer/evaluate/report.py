"""Report of :func:`mace_transfer.evaluate.evaluate`: ``metrics.json``, ``summary.md``, PNGs.

PNGs (matplotlib, Agg backend): ``force_parity.png``, ``md_survival.png``, ``rdf_<T>K.png``,
``adf_<T>K.png``, ``close_contact.png``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import numpy as np

from mace_transfer.evaluate.properties import PROPERTY_LABELS


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path, dpi=120) -> Path:
    """Write ``figure`` to ``path`` (PNG) and release it; ``dpi=None`` keeps the figure's own."""
    figure.savefig(path, dpi=dpi if dpi is not None else "figure")
    pyplot().close(figure)
    return path


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _percent(value) -> str:
    if value is None:
        return "–"
    return "0.0%" if abs(value) < 5e-4 else f"{100 * value:+.1f}%"


def strip_private(value):
    """A JSON-ready copy: keys starting with '_' dropped, numpy made plain, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): strip_private(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [strip_private(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # strict JSON has no NaN/inf
    return value


def write_report(result: dict, out) -> List[Path]:
    """Write every report file of ``result`` into directory ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "summary.md"]
    written[0].write_text(json.dumps(strip_private(result), indent=1, allow_nan=True))
    written[1].write_text(summary_markdown(result))
    written += plot_parity(result, out)
    written += plot_survival(result, out)
    written += plot_structure(result, out)
    written += plot_close_contact(result, out)
    return written


# --------------------------------------------------------------------------- markdown
def summary_markdown(result: dict) -> str:
    """Markdown tables: errors, MD stability, properties vs reference, RDF/ADF differences."""
    models = result["models"]
    labels = list(models)
    reference = result.get("reference") or {}
    lines = [f"# Evaluation: diamond {result['element']}" if result["element"] else "# Evaluation: test errors", ""]
    described = ", ".join(f"**{label}** (`{entry['source']}`)" for label, entry in models.items())
    lines.append(f"Models: {described}. Reference: {reference.get('label', 'none')}.")
    lines.append("")

    with_errors = [k for k in labels if "errors" in models[k]]
    if with_errors:
        lines += ["## Errors vs test set", "",
                  "| model | config_type | n | E MAE (meV/atom) | E RMSE (meV/atom) | "
                  "F MAE (meV/Å) | F RMSE (meV/Å) |", "|---|---|---|---|---|---|---|"]
        for label in with_errors:
            errors = models[label]["errors"]
            rows = [("all", errors["overall"])] + list(errors["per_config_type"].items())
            for kind, stats in rows:
                lines.append(f"| {label} | {kind} | {stats['n_configs']} | "
                             f"{_fmt(stats['energy_mae_meV_per_atom'])} | "
                             f"{_fmt(stats['energy_rmse_meV_per_atom'])} | "
                             f"{_fmt(stats['force_mae_meV_per_A'])} | "
                             f"{_fmt(stats['force_rmse_meV_per_A'])} |")
        lines.append("")

    with_md = [k for k in labels if "md_stability" in models[k]]
    if with_md:
        md = result["settings"]["md"]
        lines += ["## MD stability", "",
                  f"NVT Langevin, {md['repeat'] ** 3 * 8} atoms, {md['steps']} steps × "
                  f"{md['timestep_fs']} fs, seeds {md['seeds']}. A run fails on non-finite "
                  f"values, a pair closer than the distance floor, or a one-step energy "
                  f"jump above {md['max_energy_jump_eV_per_atom']} eV/atom. Cells: surviving "
                  f"fraction of seeds (mean time held, ps).", ""]
        temperatures = list(models[with_md[0]]["md_stability"]["per_temperature"])
        lines.append("| model | " + " | ".join(f"{t} K" for t in temperatures)
                     + " | highest T held (K) | floor (Å) | atom-steps/s |")
        lines.append("|---" * (len(temperatures) + 4) + "|")
        for label in with_md:
            stability = models[label]["md_stability"]
            cells = [f"{row['survival_fraction']:.2f} ({row['mean_time_held_ps']:.3g})"
                     for row in stability["per_temperature"].values()]
            lines.append(f"| {label} | " + " | ".join(cells) +
                         f" | {_fmt(stability['max_stable_temperature_K'])} | "
                         f"{_fmt(stability.get('distance_floor_A'), 3)} | "
                         f"{_fmt(stability['atom_steps_per_s'], 3)} |")
        failures = [(label, run) for label in with_md
                    for run in models[label]["md_stability"]["runs"] if run["failure"]]
        if failures:
            lines += ["", "Failures:", ""]
            lines += [f"- {label}: {run['temperature_K']:g} K seed {run['seed']}: "
                      f"{run['failure']} at {run['time_to_failure_ps']:.3g} ps"
                      for label, run in failures]
        lines.append("")

    with_scan = [k for k in labels if "close_contact" in models[k]]
    if with_scan:
        first = models[with_scan[0]]["close_contact"]
        lines += ["## Short-range wall (close-contact scan)", "",
                  "Energy (eV) relative to the perfect crystal as one bond is compressed to the "
                  "pair distance in the header. Softening: the longest distance at which the energy "
                  "falls as the pair closes further (– = a wall over the whole scan).", ""]
        lines.append("| model | " + " | ".join(f"{d:.2f} Å" for d in first["distance_A"])
                     + " | softening (Å) | max abs error (eV) |")
        lines.append("|---" * (len(first["distance_A"]) + 3) + "|")
        if "reference_eV" in first:
            lines.append("| reference | " + " | ".join(f"{e:.2f}" for e in first["reference_eV"])
                         + f" | {_fmt(first['reference_softening_A'], 3)} | – |")
        for label in with_scan:
            scan = models[label]["close_contact"]
            lines.append(f"| {label} | " + " | ".join(f"{e:.2f}" for e in scan["energy_eV"])
                         + f" | {_fmt(scan['softening_A'], 3)} | {_fmt(scan.get('max_abs_error_eV'), 3)} |")
        lines.append("")

    ref_props = reference.get("properties", {})
    def declined(key):  # every model left the property out and said why (e.g. no lone atom: no E_coh)
        note = key.rsplit("_", 1)[0] + "_note"
        return all(note in models[m].get("properties", {}) for m in labels)

    keys = [k for k in PROPERTY_LABELS if any(k in models[m].get("properties", {}) for m in labels)
            or (k in ref_props and not declined(k))]
    if keys:
        lines += ["## Crystal properties", "",
                  "Value (relative error vs reference). C44 is the relaxed one (internal "
                  "sublattice relaxation); C44^0 clamps the ions.", ""]
        lines.append("| property | unit | reference | " + " | ".join(labels) + " |")
        lines.append("|---" * (len(labels) + 3) + "|")
        for key in keys:
            name, unit = PROPERTY_LABELS[key]
            cells = []
            for label in labels:
                value = models[label].get("properties", {}).get(key)
                relative = models[label].get("comparison", {}).get(key, {}).get("relative_error")
                cells.append(_fmt(value) + ("" if relative is None else f" ({_percent(relative)})"))
            lines.append(f"| {name} | {unit} | {_fmt(ref_props.get(key))} | "
                         + " | ".join(cells) + " |")
        notes = [(label, w) for label in labels
                 for w in models[label].get("properties", {}).get("warnings", [])]
        notes += [(label, f"{PROPERTY_LABELS[k][0]} {v}") for label in labels
                  for key, v in models[label].get("properties", {}).items() if key.endswith("_note")
                  for k in PROPERTY_LABELS if k.rsplit("_", 1)[0] + "_note" == key]
        notes += [("reference", w) for w in ref_props.get("warnings", [])]
        if notes:
            lines += ["", "Warnings:", ""] + [f"- {label}: {w}" for label, w in notes]
        lines.append("")

    with_structure = [k for k in labels if "structure_comparison" in models[k]]
    if with_structure:
        lines += ["## Structure from MD (RDF, ADF)", "",
                  "Relative L1 difference to the reference curve, ∫|y − y_ref| / ∫|y_ref| "
                  "(0 = identical; – = no curve, e.g. the run failed).", "",
                  "| model | T (K) | RDF difference | ADF difference |", "|---|---|---|---|"]
        for label in with_structure:
            for temperature, row in models[label]["structure_comparison"].items():
                lines.append(f"| {label} | {temperature} | {_fmt(row['rdf_difference'], 3)} | "
                             f"{_fmt(row['adf_difference'], 3)} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots
def plot_parity(result: dict, out: Path) -> List[Path]:
    """Predicted vs reference force components, one panel per model (eV/Å)."""
    with_errors = [(k, v["errors"]) for k, v in result["models"].items()
                   if "errors" in v and "_parity" in v["errors"]]
    if not with_errors:
        return []
    plt = pyplot()
    figure, axes = plt.subplots(1, len(with_errors), figsize=(4.2 * len(with_errors), 4),
                                squeeze=False)
    for axis, (label, errors) in zip(axes[0], with_errors):
        reference, predicted = errors["_parity"]["reference"], errors["_parity"]["predicted"]
        finite = np.isfinite(predicted)
        axis.scatter(reference[finite], predicted[finite], s=3, alpha=0.4)
        span = [float(np.min(reference)), float(np.max(reference))]
        axis.plot(span, span, "k--", lw=0.8)
        stats = errors["overall"]
        axis.set_title(f"{label}: MAE {_fmt(stats['force_mae_meV_per_A'], 3)} meV/Å")
        axis.set_xlabel("reference force component (eV/Å)")
        axis.set_ylabel("predicted (eV/Å)")
    figure.tight_layout()
    return [save_figure(figure, out / "force_parity.png")]


def survival_groups(result: dict) -> Dict[str, List[str]]:
    """Model labels grouped by name without a trailing ``_s<seed>`` (``transfer_s0``, ``transfer_s1``
    -> ``transfer``), so models trained with several seeds are pooled; other labels stay alone."""
    groups: Dict[str, List[str]] = {}
    for label, entry in result["models"].items():
        if "md_stability" in entry:
            groups.setdefault(re.sub(r"_s\d+$", "", label), []).append(label)
    if all(len(members) == 1 for members in groups.values()):  # nothing to pool: one curve per model
        return {label: [label] for members in groups.values() for label in members}
    return groups


def plot_survival(result: dict, out: Path) -> List[Path]:
    """Surviving fraction of MD runs and mean time held (ps) vs temperature (K).

    Models named ``<name>_s<seed>`` are pooled per name (all their runs: training seeds x MD seeds);
    otherwise one curve per model."""
    groups = survival_groups(result)
    if not groups:
        return []
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    for i, (name, members) in enumerate(groups.items()):
        runs = [run for label in members for run in result["models"][label]["md_stability"]["runs"]]
        temperatures = sorted({float(r["temperature_K"]) for r in runs})
        at = [[r for r in runs if float(r["temperature_K"]) == t] for t in temperatures]
        survival = [np.mean([r["failure"] is None for r in rows]) for rows in at]
        held = [np.mean([r["time_to_failure_ps"] if r["failure"] else r["time_ps"] for r in rows]) for rows in at]
        label = name if len(members) == 1 else f"{name} ({len(members)} models, {len(at[0])} runs/T)"
        top.plot(temperatures, survival, "o-", color=colours(i % colours.N), label=label)
        bottom.plot(temperatures, held, "o-", color=colours(i % colours.N), label=label)
    top.set_ylabel("fraction of MD runs surviving")
    top.set_ylim(-0.05, 1.05)
    top.legend(fontsize=8)
    bottom.set_ylabel("mean time held (ps)")
    bottom.set_xlabel("temperature (K)")
    figure.tight_layout()
    return [save_figure(figure, out / "md_survival.png")]


def plot_structure(result: dict, out: Path) -> List[Path]:
    """RDF and ADF per temperature, each model overlaid with the reference."""
    reference = (result.get("reference") or {}).get("structure", {})
    temperatures = sorted({t for v in result["models"].values() for t in v.get("structure", {})}
                          | set(reference), key=float)
    if not temperatures:
        return []
    plt = pyplot()
    paths = []
    for temperature in temperatures:
        for kind, (x_key, y_key, x_label, y_label) in {
                "rdf": ("r_A", "g", "r (Å)", "g(r)"),
                "adf": ("theta_deg", "p", "bond angle (degrees)", "probability density (1/degree)"),
        }.items():
            figure, axis = plt.subplots(figsize=(6, 4))
            curve = reference.get(temperature, {}).get(kind)
            if curve:
                label = (result.get("reference") or {}).get("label", "reference")
                axis.plot(curve[x_key], curve[y_key], "k--", lw=1.5, zorder=5,
                          label=f"{label} (reference)")
            for model, entry in result["models"].items():
                curve = entry.get("structure", {}).get(temperature, {}).get(kind)
                if curve:
                    axis.plot(curve[x_key], curve[y_key], lw=1.2, label=model)
            axis.set_xlabel(x_label)
            axis.set_ylabel(y_label)
            axis.set_title(f"{kind.upper()} at {temperature} K")
            axis.legend()
            figure.tight_layout()
            paths.append(save_figure(figure, out / f"{kind}_{temperature}K.png"))
    return paths


def plot_close_contact(result: dict, out: Path) -> List[Path]:
    """Energy (eV) vs compressed pair distance (Å): each model and, if labelled, the reference.

    Models named ``<name>_s<seed>`` are pooled per name: mean curve and min-max band."""
    with_scan = {k: v["close_contact"] for k, v in result["models"].items() if "close_contact" in v}
    if not with_scan:
        return []
    groups: Dict[str, List[str]] = {}
    for label in with_scan:
        groups.setdefault(re.sub(r"_s\d+$", "", label), []).append(label)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    first = next(iter(with_scan.values()))
    if "reference_eV" in first:
        axis.plot(first["distance_A"], first["reference_eV"], "ko--", lw=1.5, zorder=5, label="reference")
    colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    for i, (name, members) in enumerate(groups.items()):
        colour = colours(i % colours.N)
        x = np.asarray(with_scan[members[0]]["distance_A"])
        curves = np.array([with_scan[m]["energy_eV"] for m in members])
        label = name if len(members) == 1 else f"{name} ({len(members)} seeds)"
        axis.plot(x, curves.mean(axis=0), "o-", ms=3, lw=1.2, color=colour, label=label)
        if len(members) > 1:
            axis.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.2, lw=0)
    axis.set_xlabel("compressed pair distance (Å)")
    axis.set_ylabel("energy relative to the crystal (eV)")
    axis.set_title("short-range wall: one bond compressed")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return [save_figure(figure, out / "close_contact.png")]
