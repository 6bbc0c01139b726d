#!/usr/bin/env python
"""How far are the classical potentials from PBE on the shipped structures?

For every structure of the assembled PBE files (``make pbe-data``) this evaluates Stillinger-Weber
and Tersoff (``mace_transfer.classical``) and compares with the PBE labels:

- ``as labelled``: the classical potential on the labelled geometry itself;
- ``corresponding states``: on the geometry divided by the frame's ``length_scale`` (the sampled SW
  cell before it was scaled to PBE density), forces divided by ``length_scale``: for SW this is
  exactly SW with sigma scaled by ``length_scale`` (tests/test_dft.py), the length rescaling
  ``mace_transfer_remap --rescale`` applies to a model.

Force errors in meV/Å over all components; energies in meV/atom after removing each potential's
mean offset per file (classical E0 = 0, PBE's is the isolated atom), plus the least-squares slope
of E_PBE against E_classical (the energy-scale ratio an energy rescaling would need).

    python scripts/classical_vs_pbe.py --out docs/results/classical_vs_pbe
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import numpy as np
from ase.io import read

from mace_transfer.datagen import classical

FILES = {"Si train": "data/si_pbe.xyz", "Ge train": "data/ge_pbe.xyz", "Ge test": "data/ge_test_pbe.xyz"}
POTENTIALS = ("sw", "tersoff")


def evaluate_file(path: str):
    """Per structure: PBE and classical (both geometries) energies/atom (eV) and forces (eV/Å)."""
    frames = [f for f in read(path, ":") if f.info.get("config_type") != "IsolatedAtom"]
    element = frames[0].get_chemical_symbols()[0]
    calcs = {p: classical.calculator(element, p) for p in POTENTIALS}
    rows = []
    for frame in frames:
        s = float(frame.info.get("length_scale", 1.0))
        row = {"config_type": frame.info["config_type"], "n": len(frame),
               "e_pbe": frame.info["REF_energy"] / len(frame), "f_pbe": frame.arrays["REF_forces"]}
        sampled = frame.copy()
        sampled.set_cell(frame.cell / s, scale_atoms=True)
        for p, calc in calcs.items():
            for geometry, atoms, factor in (("labelled", frame.copy(), 1.0), ("cs", sampled, 1.0 / s)):
                atoms.calc = calc
                row[f"e_{p}_{geometry}"] = atoms.get_potential_energy() / len(atoms)
                row[f"f_{p}_{geometry}"] = atoms.get_forces() * factor
        rows.append(row)
    return element, rows


def errors(rows, key):
    """Force MAE/RMSE (meV/Å), |F_PBE| RMS (meV/Å), force ratio (least-squares F_cl = r F_PBE),
    energy RMSE after offset (meV/atom), slope dE_PBE/dE_cl."""
    df = np.concatenate([(r[f"f_{key}"] - r["f_pbe"]).ravel() for r in rows])
    fp = np.concatenate([r["f_pbe"].ravel() for r in rows])
    e_cl = np.array([r[f"e_{key}"] for r in rows])
    e_pbe = np.array([r["e_pbe"] for r in rows])
    fc = fp + df
    de = (e_cl - e_cl.mean()) - (e_pbe - e_pbe.mean())
    slope = float(np.polyfit(e_cl, e_pbe, 1)[0]) if np.ptp(e_cl) > 0 else float("nan")
    return {"force_mae_meV_A": 1e3 * float(np.abs(df).mean()), "force_rmse_meV_A": 1e3 * float(np.sqrt((df ** 2).mean())),
            "force_rms_pbe_meV_A": 1e3 * float(np.sqrt((fp ** 2).mean())),
            "force_ratio": float(fc @ fp / (fp @ fp)),
            "energy_rmse_meV_atom": 1e3 * float(np.sqrt((de ** 2).mean())), "energy_slope": slope,
            "n_structures": len(rows)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/classical_vs_pbe")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    metrics, plots = {}, {}
    for name, path in FILES.items():
        element, rows = evaluate_file(path)
        by_type = defaultdict(list)
        for r in rows:
            by_type[r["config_type"].split("_")[0] if not r["config_type"].startswith("md_") else "md"].append(r)
        metrics[name] = {"file": path, "element": element}
        for p in POTENTIALS:
            for geometry in ("labelled", "cs"):
                key = f"{p}_{geometry}"
                metrics[name][key] = {"all": errors(rows, key), **{t: errors(rs, key) for t, rs in sorted(by_type.items())}}
        plots[name] = rows
    with open(os.path.join(args.out, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=1)

    lines = ["# Classical potentials against the PBE labels", "",
             "`python scripts/classical_vs_pbe.py --out docs/results/classical_vs_pbe` (assembled files of "
             "`make pbe-data`). Force errors over all components (meV/Å); energy RMSE after removing the mean "
             "offset per file (meV/atom); F ratio: least-squares F_classical = ratio × F_PBE; slope: least-squares dE_PBE/dE_classical. cs = corresponding states "
             "(sampled geometry, forces / length_scale).", ""]
    for name, m in metrics.items():
        lines += [f"## {name} ({m['file']}, {m['sw_cs']['all']['n_structures']} structures, "
                  f"RMS |F_PBE| component {m['sw_cs']['all']['force_rms_pbe_meV_A']:.0f} meV/Å)", "",
                  "| potential | geometry | force MAE | force RMSE | F ratio | energy RMSE | slope | "
                  + " | ".join(f"F MAE {t}" for t in m["sw_cs"] if t != "all") + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * (len(m["sw_cs"]) - 1)]
        for p in POTENTIALS:
            for geometry in ("labelled", "cs"):
                e = m[f"{p}_{geometry}"]
                lines.append(f"| {p} | {geometry} | {e['all']['force_mae_meV_A']:.0f} | {e['all']['force_rmse_meV_A']:.0f} | "
                             f"{e['all']['force_ratio']:.2f} | {e['all']['energy_rmse_meV_atom']:.0f} | {e['all']['energy_slope']:.2f} | "
                             + " | ".join(f"{e[t]['force_mae_meV_A']:.0f}" for t in e if t != "all") + " |")
        lines.append("")
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, name in zip(axes, ("Si train", "Ge train")):
        rows = plots[name]
        fp = np.concatenate([r["f_pbe"].ravel() for r in rows])
        for p, colour in (("sw", "C0"), ("tersoff", "C3")):
            fc = np.concatenate([r[f"f_{p}_cs"].ravel() for r in rows])
            mae = metrics[name][f"{p}_cs"]["all"]["force_mae_meV_A"]
            ax.scatter(fp, fc, s=2, alpha=0.3, color=colour, label=f"{p.upper() if p == 'sw' else 'Tersoff'} "
                       f"(MAE {mae:.0f} meV/Å)", rasterized=True)
        lim = 1.05 * np.abs(fp).max()
        ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="PBE force component (eV/Å)",
               ylabel="classical force component (eV/Å)", title=f"{name}: {len(rows)} structures")
        ax.legend(loc="upper left", fontsize=8, markerscale=4)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "forces.png"), dpi=150)


if __name__ == "__main__":
    main()
