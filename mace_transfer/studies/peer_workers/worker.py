"""Entry of a peer job, run in the peers' own environment (``.venv-peers``, ``make peers``).

    .venv-peers/bin/python mace_transfer/studies/peer_workers/worker.py JOB.json

This file and its sibling routes import nothing of mace_transfer and no MACE: the product's
environment never imports a peer (SevenNet needs e3nn >= 0.5, MACE 0.3.16 pins 0.4.4). The driver
(:mod:`mace_transfer.studies.peers`) writes ``JOB.json`` and reads back what the job writes.

A job (JSON object):

- ``peer``: ``"sevenn"`` (SevenNet-0, route :mod:`sevenn_route`) or ``"chgnet"`` (CHGNet 0.3.0,
  route :mod:`chgnet_route`);
- ``task``: ``"predict"`` | ``"finetune"`` | ``"md_speed"``;
- ``threads``: torch threads (1 by default);
- ``result``: path of the JSON file the job writes its result to.

``predict``: ``model`` (``null``: the zero-shot weights in the wheel; else a checkpoint written by
``finetune``), ``energy_shift_eV_per_atom`` (``{symbol: eV}`` added per atom to the peer's energy,
e.g. the CP2K energy zero; ``{}`` for none), ``frames`` (extxyz in), ``out`` (extxyz written: the
same frames, ``info["peer_energy"]`` in eV, ``arrays["peer_forces"]`` in eV/Å,
``info["peer_stress"]`` in eV/Å³, ASE's Voigt order).

``finetune``: ``train``, ``valid`` (extxyz with ``REF_energy`` eV, ``REF_forces`` eV/Å and, where
present, ``REF_stress`` eV/Å³), ``out_dir``, ``settings`` (``lr``, ``max_epochs``,
``patience_epochs``, ``batch_size``, ``seed``): the route fits the energy reference to the labels'
zero first, trains with the peer's own trainer, keeps the best-validation checkpoint. Result:
``{"checkpoint", "best_epoch", "epochs_run", "energy_shift_eV_per_atom", "curve": {"epoch",
"train_loss", "valid_loss", "valid_force_mae_meV_A", "valid_energy_mae_meV_atom", "wall_s"},
"route": {what the peer's code was asked}}``.

``serve`` (``worker.py --serve JOB.json``): ``model``, ``energy_shift_eV_per_atom``; then one JSON
line per request on stdin (``numbers``, ``positions`` Å, ``cell`` Å, ``pbc``), one JSON line per answer
on stdout (``energy`` eV, ``forces`` eV/Å, ``stress`` eV/Å³ or null), until stdin closes: a live
calculator for the product's MD, E-V and close-contact code
(:class:`mace_transfer.studies.peers.PeerCalculator`). Anything the peer's code prints goes to stderr.

``md_speed``: ``model``, ``energy_shift_eV_per_atom``, ``frames`` (the first frame is run),
``steps``, ``warmup_steps``, ``timestep_fs``, ``temperature_K``, ``seed``: NVE velocity Verlet
through the peer's ASE calculator. Result: ``{"atoms", "steps", "seconds", "atom_steps_per_s"}``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def route(peer: str):
    """The module that knows ``peer``'s code (sevenn_route / chgnet_route)."""
    if peer not in ("sevenn", "chgnet"):
        raise SystemExit(f"error: unknown peer {peer!r} (sevenn, chgnet)")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(f"{peer}_route")


def predict(job: dict) -> dict:
    from ase.io import read, write

    frames = read(job["frames"], ":")
    calc = route(job["peer"]).calculator(job.get("model"), job.get("energy_shift_eV_per_atom") or {})
    start = time.perf_counter()
    for atoms in frames:
        atoms.calc = calc
        energy = float(atoms.get_potential_energy())
        forces = atoms.get_forces().copy()
        stress = atoms.get_stress(voigt=True).copy() if atoms.pbc.all() else None
        atoms.calc = None
        atoms.info["peer_energy"] = energy
        atoms.arrays["peer_forces"] = forces
        if stress is not None:
            atoms.info["peer_stress"] = stress
    seconds = time.perf_counter() - start
    write(job["out"], frames, format="extxyz")
    return {"frames": len(frames), "seconds": seconds}


def md_speed(job: dict) -> dict:
    import numpy as np
    from ase import units
    from ase.io import read
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = read(job["frames"], 0)
    atoms.calc = route(job["peer"]).calculator(job.get("model"), job.get("energy_shift_eV_per_atom") or {})
    MaxwellBoltzmannDistribution(atoms, temperature_K=float(job.get("temperature_K", 300.0)),
                                 rng=np.random.default_rng(int(job.get("seed", 0))))
    dyn = VelocityVerlet(atoms, timestep=float(job.get("timestep_fs", 1.0)) * units.fs)
    dyn.run(int(job.get("warmup_steps", 5)))
    steps = int(job.get("steps", 50))
    start = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - start
    return {"atoms": len(atoms), "steps": steps, "seconds": seconds,
            "atom_steps_per_s": len(atoms) * steps / seconds}


def finetune(job: dict) -> dict:
    from ase.io import read

    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    return route(job["peer"]).finetune(read(job["train"], ":"), read(job["valid"], ":"),
                                       dict(job.get("settings") or {}), out_dir)


TASKS = {"predict": predict, "finetune": finetune, "md_speed": md_speed}


def serve(job: dict) -> int:
    """Answer energy/forces/stress requests, one JSON line each, until stdin closes."""
    from ase import Atoms

    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # the peer's own prints must not corrupt the answers
    calc = route(job["peer"]).calculator(job.get("model"), job.get("energy_shift_eV_per_atom") or {})
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in sys.stdin:
        request = json.loads(line)
        atoms = Atoms(numbers=request["numbers"], positions=request["positions"], cell=request["cell"],
                      pbc=request["pbc"])
        atoms.calc = calc
        answer = {"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().tolist(),
                  "stress": atoms.get_stress(voigt=True).tolist() if atoms.pbc.all() else None}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    serving = bool(argv) and argv[0] == "--serve"
    argv = argv[1:] if serving else argv
    if len(argv) != 1:
        raise SystemExit("usage: worker.py [--serve] JOB.json")
    job = json.loads(Path(argv[0]).read_text())
    threads = int(job.get("threads", 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    if serving:
        return serve(job)
    task = TASKS.get(job.get("task"))
    if task is None:
        raise SystemExit(f"error: unknown task {job.get('task')!r} ({', '.join(TASKS)})")
    start = time.perf_counter()
    result = task(job)
    result.update(task=job["task"], peer=job["peer"], wall_s=time.perf_counter() - start,
                  versions=versions(), threads=threads)
    Path(job["result"]).write_text(json.dumps(result, indent=1, default=float))
    return 0


def versions() -> dict:
    import importlib.metadata as metadata

    found = {}
    for name in ("torch", "e3nn", "sevenn", "chgnet", "ase", "pymatgen"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())
