"""MD speed of MACE architectures (issue 23: which student sizes are >= 5x faster than the teacher).

Untrained models of each size (the cost of a force call does not depend on the weights), 64-atom
diamond Ge, velocity Verlet at 1 fs, one thread; the best of ``--repeats`` timings of ``--steps`` steps
(after 5 warm-up steps) in atom-steps/s. A size is ``channels,max_L,correlation,r_max``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/md_speed_sizes.py --out docs/results/md_speed_sizes.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SIZES = ["16,0,2,4.5", "32,0,2,4.5", "16,1,2,4.5", "32,0,3,4.5", "64,1,3,5.0"]


def build_model(channels: int, max_l: int, correlation: int, r_max: float):
    """A ScaleShiftMACE for Ge with the studies' other settings (2 interactions, 8 Bessel functions)."""
    import numpy as np
    import torch
    from mace import modules  # before e3nn: MACE sets up torch.load for e3nn's constants
    from e3nn import o3

    hidden = o3.Irreps(f"{channels}x0e" + (f"+{channels}x1o" if max_l >= 1 else ""))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=1, hidden_irreps=hidden,
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.array([-103.12]), avg_num_neighbors=16.0,
        atomic_numbers=[32], correlation=correlation, gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0, atomic_inter_shift=0.0)


def atom_steps_per_s(model_path: Path, steps: int, repeats: int) -> float:
    from ase import units
    from ase.build import bulk
    from ase.md.verlet import VelocityVerlet

    from mace_transfer import evaluate

    atoms = bulk("Ge", "diamond", a=5.66, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = evaluate.load_model(model_path).calc
    dynamics = VelocityVerlet(atoms, 1.0 * units.fs)
    dynamics.run(5)
    best = 0.0
    for _ in range(repeats):
        tick = time.perf_counter()
        dynamics.run(steps)
        best = max(best, len(atoms) * steps / (time.perf_counter() - tick))
    return best


def main(argv=None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="channels,max_L,correlation,r_max (Å)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="JSON record (printed in any case)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            channels, max_l, correlation, r_max = size.split(",")
            path = Path(tmp) / "m.model"
            torch.save(build_model(int(channels), int(max_l), int(correlation), float(r_max)), path)
            speed = atom_steps_per_s(path, args.steps, args.repeats)
            rows.append({"channels": int(channels), "max_L": int(max_l), "correlation": int(correlation),
                         "r_max_A": float(r_max), "atom_steps_per_s": round(speed, 1)})
            print(f"{size}: {speed:.0f} atom-steps/s", flush=True)
    record = {"atoms": 64, "threads": 1, "steps": args.steps, "repeats": args.repeats,
              "load_average": os.getloadavg(), "sizes": rows,
              "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
