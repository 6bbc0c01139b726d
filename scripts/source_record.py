"""Install a Si source trained by scripts/train_si_sources.sh as a study's cached source model.

Copies ``runs/sources/<size>/si_pbe_<size>.model`` to ``<study out>/source/`` and writes the JSON
record a study writes for a source it trains itself (training/validation counts, epochs, best
epoch, validation force RMSE curve, machine), read from MACE's results log of that training.

    python scripts/source_record.py tiny docs/results/converged_tiny
"""

import shutil
import sys
from pathlib import Path

from mace_transfer.studies.records import best_epoch, read_results, valid_rmse_at, write_json
from mace_transfer.studies.runs import machine_info


def main(size: str, out: str) -> None:
    work = Path("runs/sources") / size
    model = work / f"si_pbe_{size}.model"
    if not model.is_file():
        sys.exit(f"error: {model} does not exist: run SIZE={size} scripts/train_si_sources.sh first")
    target = Path(out) / "source" / model.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, target)
    valid = [int(i) for i in next(work.glob("*valid_indices_*.txt")).read_text().split()]
    curve = read_results(work / "results")
    epoch = best_epoch(curve)
    write_json(target.with_suffix(".json"), {
        "n_train": 300 - len(valid), "n_valid": len(valid), "valid_indices": valid,
        "epochs_run": len(curve["epoch"]), "best_epoch": epoch,
        "best_valid_rmse_f_meV_A": valid_rmse_at(curve, epoch), "curve": curve,
        "data": "data/si_pbe.xyz", "recipe": "scripts/train_si_sources.sh SIZE=" + size,
        "wall_s": None, "machine": machine_info(1)})
    print(f"{target}: best epoch {epoch} of {len(curve['epoch'])}, valid force RMSE "
          f"{valid_rmse_at(curve, epoch):.1f} meV/Å")


if __name__ == "__main__":
    main(*sys.argv[1:3])
