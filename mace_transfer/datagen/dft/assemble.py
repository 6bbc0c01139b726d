"""Assembling: merge labeller outputs of one element (e.g. two cell densities) into one training file.

:func:`assemble_labelled` writes one E0 frame per element, each sampled structure once, one DFT
setting (energies eV, forces eV/Å, stress eV/Å^3, as labelled).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence, Tuple

from ase import Atoms

from mace_transfer.datagen.dft.labeller import _frame_text, read_complete_frames


def assemble_labelled(
    inputs: Sequence[os.PathLike],
    out_path: os.PathLike,
    *,
    overwrite: bool = False,
) -> Dict:
    """Merge labelled files of one element set into one MACE training file; return a summary.

    The inputs are labeller outputs of the same sampled structures (e.g. a file labelled at the
    sampled density and one labelled at PBE density, ``--skip-labelled-in`` the first). The result
    holds one ``IsolatedAtom`` frame per element (first) and then every structure once, ordered by
    (sampler run, ``source_index``); frames without ``length_scale`` get 1.0 and each frame records
    its ``labelled_file``. Refused with ``ValueError``: mixed ``dft_settings`` (different physics),
    a sampled structure (``sampler_settings``, ``source_index``) in two inputs, isolated-atom
    energies that disagree, a frame without labels.
    Frames still being written by a running labeller are left out. Written atomically;
    ``FileExistsError`` if ``out_path`` exists and ``overwrite`` is false.
    """
    out_path = Path(out_path)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("no input files to assemble")
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"labelled file not found: {path}")
        if path.resolve() == out_path.resolve():
            raise ValueError(f"{path} is both an input and the output")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite (--force) to replace it")

    settings_seen: Dict[str, str] = {}
    isolated: Dict[str, Atoms] = {}
    structures: Dict[Tuple[int, int], Atoms] = {}
    sampler_order: Dict[str, int] = {}
    per_input: Dict[str, int] = {}
    for path in inputs:
        try:
            frames = read_complete_frames(path)
        except Exception as exc:  # ASE raises many kinds for a malformed file
            raise ValueError(f"cannot read {path} as labelled extxyz: {exc}") from None
        per_input[str(path)] = 0
        for k, frame in enumerate(frames):
            where = f"{path} frame {k}"
            tag = str(frame.info.get("dft_settings", ""))
            if not tag:
                raise ValueError(f"{where} has no dft_settings: not a mace_transfer_label output")
            settings_seen.setdefault(tag, where)
            if len(settings_seen) > 1:
                first, other = (f"{t} ({w})" for t, w in settings_seen.items())
                raise ValueError(f"different DFT settings in one dataset: {first} vs {other}")
            if "REF_energy" not in frame.info or "REF_forces" not in frame.arrays:
                raise ValueError(f"{where} has no REF_energy/REF_forces")
            frame.info.setdefault("length_scale", 1.0)
            frame.info["labelled_file"] = path.name
            if frame.info.get("config_type") == "IsolatedAtom":
                symbol = frame.get_chemical_symbols()[0]
                if symbol in isolated:
                    e_old = float(isolated[symbol].info["REF_energy"])
                    e_new = float(frame.info["REF_energy"])
                    if abs(e_old - e_new) > 1e-6:
                        raise ValueError(f"isolated {symbol}: E0 {e_new:.6f} eV in {where} differs "
                                         f"from {e_old:.6f} eV ({isolated[symbol].info['labelled_file']})")
                    continue
                isolated[symbol] = frame
                continue
            if "source_index" not in frame.info:
                raise ValueError(f"{where} has no source_index")
            # a sampled structure is (sampler run, index in its file); files without a sampler hash
            # are taken to index the same structure file
            key = (sampler_order.setdefault(str(frame.info.get("sampler_settings", "")), len(sampler_order)),
                   int(frame.info["source_index"]))
            if key in structures:
                raise ValueError(f"source_index {key[1]} is labelled in both "
                                 f"{structures[key].info['labelled_file']} and {path.name}: "
                                 "each sampled structure must appear once")
            structures[key] = frame
            per_input[str(path)] += 1

    ordered = [isolated[s] for s in sorted(isolated)] + [structures[i] for i in sorted(structures)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            for frame in ordered:
                fh.write(_frame_text(frame))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    config_types: Dict[str, int] = {}
    for frame in structures.values():
        key = str(frame.info.get("config_type", "Default"))
        config_types[key] = config_types.get(key, 0) + 1
    return {
        "out": str(out_path),
        "n_structures": len(structures),
        "isolated": sorted(isolated),
        "per_input": per_input,
        "config_types": dict(sorted(config_types.items())),
        "dft_settings": next(iter(settings_seen), ""),
    }
