"""Files of the pool-based active-learning study (issue 49, 2a) and the selection orders it hands to the
converged learning-curve machinery.

    python scripts/active_pool.py files --out runs/active_pool
        pool.xyz: the 292 PBE Ge structures of data/ge_pbe.xyz outside the converged study's 8 validation
        cells (studies.data.split_target(300, 8, 1234)), in the order of that split's pool, so that
        pool index j is target index pool[j]; valid.xyz: those 8 cells; pool_map.json: pool -> target index.
    python scripts/active_pool.py order --loop runs/active_pool/uncertainty_s0 --map runs/active_pool/pool_map.json \
        --out docs/results/active_pool/orders/uncertainty_s0.json
        the target indices the loop labelled, round by round in the order it chose them, as
        ``{"target_indices": [...]}`` for a learning-curve config's ``data.train_order``.
    python scripts/active_pool.py collect
        for every loop runs/active_pool/<selection>_s<seed>: its finished rounds' records copied to
        docs/results/active_pool/loops/<loop>/round_RRR.json and its order to docs/results/active_pool/orders/
        (what is committed; runs/ is not).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGET = "data/ge_pbe.xyz"
N_VALID, VALID_SEED = 8, 1234  # configs/converged_tiny.yaml, inherited by configs/converged_medium.yaml


def write_files(out: Path) -> None:
    from ase.io import write

    from mace_transfer.studies.data import read_frames, split_target

    frames = read_frames(TARGET)
    valid, pool = split_target(len(frames), N_VALID, VALID_SEED)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "pool.xyz", [frames[i] for i in pool], format="extxyz")
    write(out / "valid.xyz", [frames[i] for i in valid], format="extxyz")
    (out / "pool_map.json").write_text(json.dumps({"target": TARGET, "n_valid": N_VALID, "valid_seed": VALID_SEED,
                                                   "valid": valid, "pool_to_target": pool}, indent=1))
    print(f"{out}: pool.xyz {len(pool)}, valid.xyz {len(valid)}")


def selection_order(loop: Path, pool_to_target) -> list:
    """Target indices of the loop's labels (``round_RRR/selected.xyz``, rounds in order, up to the last round
    whose labelling finished; its committee may still be training, the choice is made)."""
    from ase.io import read

    order = []
    for folder in sorted(loop.glob("round_[0-9][0-9][0-9]")):
        path = folder / "selected.xyz"
        if not path.is_file() or not (folder / "label.json").is_file():
            break  # a round whose labelling step has not finished: its choice may not be final
        order += [int(pool_to_target[int(a.info["pool_index"])]) for a in read(path, ":", format="extxyz")]
    return order


def write_order(loop: Path, mapping: dict, out: Path) -> int:
    indices = selection_order(loop, mapping["pool_to_target"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"loop": str(loop), "target": mapping["target"], "target_indices": indices}, indent=1))
    return len(indices)


def collect(runs: Path, results: Path) -> None:
    import shutil

    mapping = json.loads((runs / "pool_map.json").read_text())
    for loop in sorted(p for p in runs.iterdir() if (p / "active.json").is_file()):
        rounds = sorted(loop.glob("round_[0-9][0-9][0-9]/record.json"))
        target = results / "loops" / loop.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(loop / "active.json", target / "active.json")
        for record in rounds:
            shutil.copyfile(record, target / f"{record.parent.name}.json")
        n = write_order(loop, mapping, results / "orders" / f"{loop.name}.json")
        print(f"{loop.name}: {len(rounds)} rounds, {n} labels in order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    files = sub.add_parser("files")
    files.add_argument("--out", default="runs/active_pool")
    order = sub.add_parser("order")
    order.add_argument("--loop", required=True)
    order.add_argument("--map", default="runs/active_pool/pool_map.json")
    order.add_argument("--out", required=True)
    gather = sub.add_parser("collect")
    gather.add_argument("--runs", default="runs/active_pool")
    gather.add_argument("--results", default="docs/results/active_pool")
    args = parser.parse_args()
    if args.command == "collect":
        collect(Path(args.runs), Path(args.results))
        return
    if args.command == "files":
        write_files(Path(args.out))
        return
    n = write_order(Path(args.loop), json.loads(Path(args.map).read_text()), Path(args.out))
    print(f"{args.out}: {n} target indices")


if __name__ == "__main__":
    main()
