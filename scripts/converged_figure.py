"""Force and energy MAE vs N at convergence, both model sizes in one figure (issue 21), from the
committed records of the converged studies only (their summary.json, made by the study's report):

    python scripts/converged_figure.py            # -> docs/results/converged_sizes.png

Solid lines: the medium MACE (64 ch, L=1); dashed: the tiny one (16 ch, L=0); mean ± sample std over
seeds (error bars), one colour per start; log-log.
"""

import json
import sys
from pathlib import Path

from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from mace_transfer.evaluate.report import pyplot, save_figure

STUDIES = {"medium (64 ch, L=1)": ("docs/results/converged_medium", "-"),
           "tiny (16 ch, L=0)": ("docs/results/converged_tiny", "--")}
COLOURS = {"scratch": "C0", "transfer": "C1", "transfer_rescale": "C3"}
METRICS = (("force_mae_meV_per_A", "test force MAE (meV/Å)"), ("energy_mae_meV_per_atom", "test energy MAE (meV/atom)"))


def main(out: str = "docs/results/converged_sizes.png") -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=150)
    for label, (folder, style) in STUDIES.items():
        path = Path(folder) / "summary.json"
        if not path.is_file():
            continue
        table = json.loads(path.read_text())["table"]
        sizes = sorted({int(n) for s in table.values() for n in s})
        for ax, (metric, ylabel) in zip(axes, METRICS):
            for strategy, colour in COLOURS.items():
                rows = sorted((int(n), e[metric]) for n, e in table.get(strategy, {}).items()
                              if e[metric]["mean"] is not None)
                if not rows:
                    continue
                ax.errorbar([n for n, _ in rows], [s["mean"] for _, s in rows], yerr=[s["std"] for _, s in rows],
                            ls=style, marker="o", ms=3, capsize=2, color=colour, label=f"{strategy}, {label}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sizes)
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0), numticks=30))
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("Ge training structures N")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=6)
    fig.suptitle("PBE-Ge at convergence: PBE-Si-initialised vs scratch (60 test structures)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(out), dpi=None)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:2])
