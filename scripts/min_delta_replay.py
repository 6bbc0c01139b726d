"""What ``--early_stop_min_delta`` would have done to the converged studies' runs, replayed from their
recorded validation curves (nothing is retrained):

    python scripts/min_delta_replay.py 0.001 0.003 > /tmp/min_delta.md

For each finished run of docs/results/converged_*/records/ and each relative min_delta: the epoch the run
would have stopped at (same patience and minimum epochs as recorded) and the lowest validation loss it
would have kept by then, against the recorded run (min_delta 0). Runs whose kept loss would rise by more
than 1 % are listed first.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mace_transfer.transfer.early_stop import should_stop  # noqa: E402


def replay(history, patience: int, min_epochs: int, min_delta: float):
    """(stop epoch, kept epoch, kept loss) of the run had it used ``min_delta``."""
    seen = history
    for end in range(1, len(history) + 1):
        if should_stop(history[:end], patience, min_epochs, min_delta):
            seen = history[:end]
            break
    kept = min(seen, key=lambda row: (row[1], row[0]))
    return seen[-1][0], kept[0], kept[1]


def main(deltas) -> None:
    rows = []
    for path in sorted(Path("docs/results").glob("converged_*/records/*.json")):
        record = json.loads(path.read_text())
        curve = record.get("curve") or {}
        history = [(e, loss) for e, loss in zip(curve.get("epoch", []), curve.get("valid_loss", []))
                   if e is not None and loss is not None]
        if not history or record.get("early_stop_patience") is None:
            continue
        patience, min_epochs = int(record["early_stop_patience"]), int(record.get("early_stop_min_epochs") or 0)
        base = replay(history, patience, min_epochs, 0.0)
        cells = []
        worst = 0.0
        for delta in deltas:
            stop, kept, loss = replay(history, patience, min_epochs, delta)
            worst = max(worst, loss / base[2] - 1)
            cells.append(f"{stop} ({kept}) {100 * (loss / base[2] - 1):+.1f} %")
        rows.append((worst > 0.01, f"| {path.parts[2][10:]} {record['name']} | {base[0]} ({base[1]}) | "
                     + " | ".join(cells) + " |"))
    print("| run | recorded: last epoch (kept) | " + " | ".join(
        f"min_delta {d:g}: last epoch (kept), kept loss vs recorded" for d in deltas) + " |")
    print("|---|---|" + "---|" * len(deltas))
    for _, line in sorted(rows, key=lambda row: not row[0]):
        print(line)


if __name__ == "__main__":
    main([float(value) for value in sys.argv[1:]] or [0.001, 0.003])
