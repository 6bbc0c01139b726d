"""Labels from a teacher: any ASE calculator (SW, Tersoff, a trained MACE model, ...) relabels given
structures, for a cheap-label pretraining stage (issue 23; classical pretraining is one case).

Each output frame carries the teacher's labels in MACE's keys (``REF_energy`` eV, ``REF_forces`` eV/Å,
``REF_stress`` eV/Å^3 for periodic cells, ASE's sign convention) and its identity in ``info``
(``teacher``: a name, ``teacher_settings``: a hash of what defines it, ``teacher_index``: the input
structure). Energies keep full precision in the file, forces and positions 8 decimals (extxyz), and
positions are rounded to those 8 decimals before labelling, so a label belongs to the stored geometry.
Resumable: frames are appended one by one; a rerun skips the indices already in the
output and refuses an output made by another teacher.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
from ase import Atoms

from mace_transfer import UserInputError

#: decimals of positions in extxyz (``%16.8f``): structures are labelled as they will be stored
POSITION_DECIMALS = 8
#: keys of an input structure's old labels, dropped before the teacher's are written
_OLD_LABELS = ("REF_energy", "REF_stress", "energy", "free_energy", "stress")


def teacher_settings_hash(description: str) -> str:
    """A short, stable tag of what defines a teacher (its file's bytes, or its name and parameters)."""
    return hashlib.sha256(description.encode()).hexdigest()[:10]


def file_identity(path: os.PathLike) -> str:
    """The bytes of a model file as a teacher identity (the same weights give the same tag)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _done(out_path: Path, settings: str) -> set:
    """The ``teacher_index`` values already in ``out_path`` (made by this teacher, else refused)."""
    from ase.io import read

    if not out_path.is_file() or out_path.stat().st_size == 0:
        return set()
    frames = read(out_path, ":")
    others = {str(a.info.get("teacher_settings")) for a in frames} - {settings}
    if others:
        raise UserInputError(f"{out_path} holds labels of another teacher ({', '.join(sorted(others))}; "
                             f"this one is {settings}): use another output file")
    return {int(a.info["teacher_index"]) for a in frames}


def label_with_teacher(structures: Sequence[Atoms], calculator, out_path: os.PathLike, *, name: str,
                       settings: str, stress: bool = True,
                       progress: Optional[Callable[[str], None]] = None) -> List[Atoms]:
    """Label ``structures`` with ``calculator`` into ``out_path`` (extxyz, appended frame by frame).

    ``name``/``settings``: the teacher's identity written into every frame. Returns every labelled
    frame of the output, in input order. ``progress`` (default: a line to stderr every ~10 %)."""
    from ase.io import read, write

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out_path, settings)
    todo = [i for i in range(len(structures)) if i not in done]
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    say(f"teacher {name}: {len(structures)} structures, {len(done)} labelled before, {len(todo)} to label")
    step, start = max(1, len(todo) // 10), time.time()
    for count, index in enumerate(todo, 1):
        atoms = structures[index].copy()
        # the labels belong to the geometry extxyz stores (%16.8f), not to bits it drops
        atoms.positions = np.round(atoms.positions, POSITION_DECIMALS)
        for key in _OLD_LABELS:
            atoms.info.pop(key, None)
        atoms.arrays.pop("REF_forces", None)
        atoms.calc = calculator
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        virial = atoms.get_stress(voigt=True) if stress and all(atoms.pbc) else None
        atoms.calc = None
        atoms.info.update(REF_energy=float(energy), teacher=name, teacher_settings=settings,
                          teacher_index=index)
        if virial is not None:
            atoms.info["REF_stress"] = virial
        atoms.arrays["REF_forces"] = forces
        with open(out_path, "a") as stream:
            write(stream, atoms, format="extxyz")
            stream.flush()
            os.fsync(stream.fileno())
        if count % step == 0 or count == len(todo):
            rate = count / max(time.time() - start, 1e-9)
            say(f"teacher {name}: {count}/{len(todo)} ({rate:.2f} structures/s)")
    frames = read(out_path, ":") if out_path.stat().st_size else []
    return sorted(frames, key=lambda a: int(a.info["teacher_index"]))
