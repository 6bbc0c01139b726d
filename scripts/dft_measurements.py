"""Measurements behind docs/DFT.md: force convergence vs k-spacing/cutoff on disordered 16-atom cells,
PBE E-V scans of the 8-atom diamond cells, CPU/wall time per calculation (CP2K, configs/dft_pbe.yaml).

    nice -n 5 .venv/bin/python scripts/dft_measurements.py conv [NAME:KSPACING:CUTOFF ...]
    nice -n 5 .venv/bin/python scripts/dft_measurements.py ev
    .venv/bin/python scripts/dft_measurements.py report

Results are appended to runs/dft_measurements/*.jsonl (one line per calculation; a rerun skips what is
there). Units: eV, Å, eV/Å, eV/Å^3, Ry, Å^-1, s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.io import read

from mace_transfer.datagen import dft

OUT = Path("runs/dft_measurements")
CONV_PLAN = [  # (config, kspacing Å^-1, cutoff Ry)
    ("Si_liquid_20", 0.5, 400.0), ("Si_liquid_20", 0.3, 400.0), ("Si_liquid_20", 0.2, 400.0),
    ("Ge_liquid_scaled_24", 0.5, 400.0), ("Ge_liquid_scaled_24", 0.3, 400.0), ("Ge_liquid_scaled_24", 0.2, 400.0),
    ("Ge_liquid_scaled_24", 0.15, 400.0),
]
EV_CENTRE = {"Si": 5.47, "Ge": 5.76}  # Å, published PBE (WIEN2k, ase.collections.dcdft)
EV_STEPS = (-0.03, -0.015, 0.0, 0.015, 0.03)
EV_KSPACING = 0.4  # Å^-1 -> 3x3x3 Monkhorst-Pack on the 8-atom cubic cell


def _settings(**overrides) -> dft.PBESettings:
    base = dft.load_settings("configs/dft_pbe.yaml", scratch_dir=str(OUT / "scratch"))
    return dft.PBESettings(**{**base.__dict__, **overrides})


def _conv_configs():
    """Disordered 16-atom cells: SW-Si liquid frames; a Ge cell = Si frame 24 scaled by 5.66/5.431."""
    si = read("data/si_structures16.xyz", ":")
    ge = si[24].copy()
    ge.set_chemical_symbols(["Ge"] * len(ge))
    ge.set_cell(ge.cell * (5.66 / 5.431), scale_atoms=True)
    return {"Si_liquid_20": si[20], "Ge_liquid_scaled_24": ge}


def _done(path: Path, key):
    if not path.exists():
        return set()
    return {key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def _run(atoms, settings):
    calc = dft.CP2KCalculator(settings)
    atoms.calc = calc
    t0, load = time.time(), os.getloadavg()[0]
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return dict(energy=energy, forces=forces.tolist(), stress=stress.tolist(), wall=time.time() - t0,
                cpu=calc.last_cpu_s, load=load, n_scf=calc.last_n_scf,
                mesh=dft.kpoint_mesh(atoms.cell, atoms.pbc, settings.kspacing))


def conv(only):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "convergence.jsonl"
    done = _done(path, lambda r: (r["name"], r["kspacing"], r["cutoff"]))
    configs = _conv_configs()
    for name, ks, cut in CONV_PLAN:
        if (only and f"{name}:{ks}:{cut}" not in only) or (name, ks, cut) in done:
            continue
        rec = dict(name=name, kspacing=ks, cutoff=cut, **_run(configs[name].copy(), _settings(kspacing=ks, cutoff_ry=cut)))
        with open(path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(name, ks, cut, rec["mesh"], f"E={rec['energy']:.5f} eV cpu={rec['cpu']:.0f} s wall={rec['wall']:.0f} s", flush=True)


def ev():
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "ev.jsonl"
    done = _done(path, lambda r: (r["element"], round(r["a"], 4)))
    for element, centre in EV_CENTRE.items():
        for step in EV_STEPS:
            a = round(centre * (1 + step), 4)
            if (element, a) in done:
                continue
            atoms = bulk(element, "diamond", a=a, cubic=True)
            rec = dict(element=element, a=a, volume=atoms.get_volume(), **_run(atoms, _settings(kspacing=EV_KSPACING)))
            with open(path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(element, a, f"E={rec['energy']:.6f} eV cpu={rec['cpu']:.0f} s", flush=True)


def report():
    from ase.eos import EquationOfState
    from ase.units import GPa

    path = OUT / "convergence.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for name in sorted({r["name"] for r in recs}):
        rows = sorted((r for r in recs if r["name"] == name and r["cutoff"] == 400.0), key=lambda r: -r["kspacing"])
        ref = rows[-1]
        for r in rows:
            d = np.array(r["forces"]) - np.array(ref["forces"])
            ds = (np.array(r["stress"]) - np.array(ref["stress"])) / GPa
            print(f"{name} k={r['kspacing']} mesh={r['mesh']} vs k={ref['kspacing']}: max|dF|={np.abs(d).max()*1e3:.1f} "
                  f"rms dF={np.sqrt((d**2).mean())*1e3:.1f} meV/Å, dE={(r['energy']-ref['energy'])/len(d)*1e3:.2f} meV/atom, "
                  f"max|dσ|={np.abs(ds).max():.3f} GPa; cpu={r.get('cpu') or float('nan'):.0f} s, n_scf={r['n_scf']}")
    path = OUT / "ev.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for element in EV_CENTRE:
        rows = [r for r in recs if r["element"] == element]
        if len(rows) < 5:
            print(element, f"E-V: {len(rows)} of 5 points")
            continue
        v0, e0, b = EquationOfState([r["volume"] for r in rows], [r["energy"] for r in rows], eos="birchmurnaghan").fit()
        cpu = np.mean([r["cpu"] for r in rows])
        print(f"{element}: a0={v0 ** (1 / 3):.4f} Å  B={b / GPa:.1f} GPa  (cpu {cpu:.0f} s per 8-atom 3x3x3 point)")


if __name__ == "__main__":
    {"conv": lambda: conv(sys.argv[2:]), "ev": ev, "report": report}[sys.argv[1]]()
