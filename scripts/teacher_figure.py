"""The teacher stage at N = 20 (issue 23): accuracy against MD speed, and the CPU cost of each route,
from the committed records only (docs/results/teacher_*, converged_*, md_speed_sizes.json):

    python scripts/teacher_figure.py --measure-labelling 40   # times the teacher on 40 cells (once)
    python scripts/teacher_figure.py                           # -> docs/results/teacher_speed_accuracy.png + table

MD speed: 64-atom Ge, one thread, every size in one measurement (``scripts/md_speed_sizes.py``; taken beside
training jobs, so only the ratios to the teacher are quoted). Cost: wall seconds of one thread from the
records (teacher training, student pretraining, fine-tune) and the teacher's measured labelling rate;
the runs shared two cores with one to three other jobs, so costs compare to within ~1.5x, not better.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "docs" / "results"
TEACHER = {"record": "converged_medium/superseded/f100_e1/records/transfer_rescale_N0020_s0.json",
           "model": "teacher_tiny/teacher/medium_transfer_rescale_N0020_s0.model"}
LABELS = ROOT / "data" / "ge_teacher_medium_N20s0.xyz"
RATE_FILE = RESULTS / "teacher_labelling_rate.json"

#: (label, size key of md_speed_sizes.json, final record, pretraining stage json or None, M teacher labels,
#:  kind[, the teacher's record when not TEACHER's]) -- kind: "teacher", "student" (taught, then fine-tuned on the
#:  20 PBE), "dft" (the 20 PBE alone). The Si sources (trained once, reused) are not counted.
ROUTES = (
    ("medium teacher: Si→Ge transfer_rescale", (64, 1, 3), TEACHER["record"], None, 0, "teacher"),
    ("tiny L=0, taught M=2000", (16, 0, 2), "teacher_tiny/records/teacher_pretrain_N0020_s0.json",
     "teacher_tiny/classical/student_pretrained.json", 2000, "student"),
    ("tiny L=0, taught M=500", (16, 0, 2), "teacher_tiny_m500/records/teacher_pretrain_N0020_s0.json",
     "teacher_tiny_m500/classical/student_pretrained.json", 500, "student"),
    ("small L=0 (32 ch), taught M=2000", (32, 0, 2), "teacher_small/records/teacher_pretrain_N0020_s0.json",
     "teacher_small/classical/student_small_pretrained.json", 2000, "student"),
    ("tiny L=1, taught M=500 (1:1 fine-tune)", (16, 1, 2), "teacher_l1_loss/records/teacher_pretrain_N0020_s0.json",
     "teacher_l1/classical/student_l1_pretrained.json", 500, "student"),
    ("tiny L=1, taught M=2000 (1:1 fine-tune)", (16, 1, 2), "teacher_l1_m2000/records/teacher_pretrain_N0020_s0.json",
     "teacher_l1_m2000/classical/student_l1_m2000_pretrained.json", 2000, "student"),
    ("tiny L=0, Si→Ge transfer_rescale on DFT alone", (16, 0, 2),
     "converged_tiny/records/transfer_rescale_N0020_s0.json", None, 0, "dft"),
    ("tiny L=0, scratch on DFT alone", (16, 0, 2), "converged_tiny/records/scratch_N0020_s0.json", None, 0, "dft"),
    ("small L=0, scratch on DFT alone", (32, 0, 2), "teacher_small/records/scratch_N0020_s0.json", None, 0, "dft"),
    ("tiny L=1, scratch on DFT alone", (16, 1, 2), "teacher_l1/records/scratch_N0020_s0.json", None, 0, "dft"),
    ("tiny L=1, Si→Ge transfer_rescale on DFT alone", (16, 1, 2),
     "teacher_l1_transfer/records/transfer_rescale_N0020_s0.json", None, 0, "dft"),
    ("tiny L=1 from its Si remap, taught M=500 by the 10:1 teacher", (16, 1, 2),
     "teacher_l1_s0_e10_remap/records/teacher_pretrain_N0020_s0.json",
     "teacher_l1_s0_e10_remap/classical/student_l1_s0_e10_remap_pretrained.json", 500, "student",
     "converged_medium/records/transfer_rescale_N0020_s0.json"),
)
MARKERS = {"teacher": ("*", "C3"), "student": ("o", "C0"), "dft": ("s", "0.5")}


def measure_labelling(count: int) -> dict:
    """Seconds per structure of the teacher on the first ``count`` cells of its own label file."""
    from ase.io import read

    from mace_transfer.datagen import teacher
    from mace_transfer.studies.pipeline import model_teacher

    calc, name, settings = model_teacher(RESULTS / TEACHER["model"])
    structures = read(LABELS, f":{count}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.time()
        teacher.label_with_teacher(structures, calc, Path(folder) / "x.xyz", name=name, settings=settings,
                                   progress=lambda message: None)
        seconds = time.time() - start
    return {"structures": count, "atoms_each": len(structures[0]), "s_per_structure": seconds / count,
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "load_average": list(os.getloadavg()),
            "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def speeds() -> dict:
    data = json.loads((RESULTS / "md_speed_sizes.json").read_text())
    return {(s["channels"], s["max_L"], s["correlation"]): s["atom_steps_per_s"] for s in data["sizes"]}


def rows(rate: dict) -> list:
    speed = speeds()
    out = []
    for label, size, record, stage, labels, kind, *teacher_record in ROUTES:
        rec = json.loads((RESULTS / record).read_text())
        pretrain = json.loads((RESULTS / stage).read_text())["wall_s"] if stage else 0.0
        labelling = labels * rate["s_per_structure"]
        # a student's route pays for its teacher too; the teacher and the DFT-alone routes for themselves
        cost = rec["wall_s"] + pretrain
        if kind == "student":
            teacher = teacher_record[0] if teacher_record else TEACHER["record"]
            cost += json.loads((RESULTS / teacher).read_text())["wall_s"] + labelling
        out.append({"label": label, "kind": kind, "speed_vs_teacher": speed[size] / speed[(64, 1, 3)],
                    "force": rec["test"]["force_mae_meV_per_A"], "energy": rec["test"]["energy_mae_meV_per_atom"],
                    "cpu_h": cost / 3600.0, "labelling_s": labelling, "pretrain_s": pretrain,
                    "final_s": rec["wall_s"]})
    return out


def figure(table: list, out: Path) -> None:
    from mace_transfer.evaluate.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), dpi=150)
    for ax, (key, ylabel) in zip(axes, (("force", "test force MAE (meV/Å)"), ("energy", "test energy MAE (meV/atom)"))):
        for number, row in enumerate(table, 1):
            marker, colour = MARKERS[row["kind"]]
            ax.scatter(row["speed_vs_teacher"], row[key], marker=marker, color=colour, s=90 if marker == "*" else 30,
                       zorder=3)
            ax.annotate(str(number), (row["speed_vs_teacher"], row[key]), fontsize=7, xytext=(5, -2),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlim(0.7, 25)
        ax.set_xlabel("MD speed relative to the teacher (64-atom Ge, one thread)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    key_text = "\n".join(f"{n}  {row['label']}" for n, row in enumerate(table, 1))
    fig.text(0.745, 0.5, "star: teacher; circles: students, taught then\nfine-tuned on the 20 PBE; squares: the 20 PBE "
             "alone\n\n" + key_text, fontsize=7, va="center", family="monospace")
    fig.suptitle("Ge at N = 20 PBE structures, seed 0: accuracy against MD speed (issue 23)", fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.735, wspace=0.25, bottom=0.12)
    save_figure(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure-labelling", type=int, metavar="K", help="time the teacher on K cells first")
    parser.add_argument("--out", default=str(RESULTS / "teacher_speed_accuracy.png"))
    args = parser.parse_args()
    if args.measure_labelling:
        RATE_FILE.write_text(json.dumps(measure_labelling(args.measure_labelling), indent=1) + "\n")
    if not RATE_FILE.is_file():
        parser.error(f"{RATE_FILE} is missing: run with --measure-labelling 40 once")
    rate = json.loads(RATE_FILE.read_text())
    table = rows(rate)
    print(f"teacher labelling: {rate['s_per_structure']:.2f} s per {rate['atoms_each']}-atom cell (one thread, "
          f"load {rate['load_average'][0]:.1f})\n")
    print("| route (N = 20 PBE, seed 0) | MD speed vs teacher | test force / energy MAE | CPU hours (one thread) |")
    print("|---|---|---|---|")
    for row in table:
        print(f"| {row['label']} | {row['speed_vs_teacher']:.1f}× | {row['force']:.1f} / {row['energy']:.2f} | "
              f"{row['cpu_h']:.2f} |")
    figure(table, Path(args.out))
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
