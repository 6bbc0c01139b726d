"""The summary tables of docs/RESULTS.md section 12 (issue 23), from the study records only:

    .venv/bin/python scripts/teacher_tables.py > /tmp/teacher_tables.md
    .venv/bin/python scripts/teacher_tables.py --write docs/RESULTS.md   # between its two markers

1. The tiny-L1 student size (16 ch, L = 1) per route, test force / energy MAE (meV/Å, meV/atom) on the 60 PBE
   test structures, per N and seed, and the medium teacher that labelled for it.
2. The issue's goal, per (N, seed) of the remap-started student: its force error over its teacher's (≤ 1.15),
   its energy error (≤ 2 meV/atom), its MD speed over the teacher's (≥ 5, 64-atom Ge on one thread,
   ``docs/results/md_speed_sizes.json``), and its force and energy errors over the same size's best run on DFT
   alone at that (N, seed), with and without transfer ("clearly better" = lower force and energy error than
   both). A row is "met" when all four hold.

Each route lists its studies in priority order: where two hold a run for the same (N, seed) (a baseline tuned
at that N and the untuned one), the first wins.
"""

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mace_transfer.studies.records import load_runs  # noqa: E402

RESULTS = Path("docs/results")
STUDENT_ROUTES = (
    ("scratch on the PBE structures alone (lr and loss tuned where noted in the text)", "scratch",
     ("teacher_l1_n5_s1_dft_alone", "teacher_l1_n50_s0_dft_alone", "teacher_l1_n5_s0_e10", "teacher_l1",
      "teacher_l1_s1", "teacher_l1_s2_dft_alone")),
    ("Si→Ge transfer_rescale on the PBE structures alone", "transfer_rescale", ("teacher_l1_transfer",)),
    ("taught (M = 500, 10:1 teacher) from scratch, fine-tuned 1:1", "teacher_pretrain",
     ("teacher_l1_n5_s0_e10", "teacher_l1_n5_s1_e10", "teacher_l1_s1_e10", "teacher_l1_n50_s0_e10")),
    ("taught (M = 2000, 10:1 teacher) from scratch, fine-tuned 1:1", "teacher_pretrain", ("teacher_l1_m2000_e10",)),
    ("**taught (M = 500, 10:1 teacher) from its own Si→Ge remap, fine-tuned 1:1**", "teacher_pretrain",
     ("teacher_l1_s0_e10_remap", "teacher_l1_s1_e10_remap", "teacher_l1_s2_e10_remap", "teacher_l1_n5_s0_e10_remap",
      "teacher_l1_n5_s1_e10_remap", "teacher_l1_n50_s0_e10_remap")),
)
TEACHER = ("the teacher (medium, Si→Ge transfer_rescale, 10:1)", "transfer_rescale", ("converged_medium",))
REMAP_ROUTE = STUDENT_ROUTES[-1]
BASELINE_ROUTES = STUDENT_ROUTES[:2]
BEGIN, END = "<!-- teacher_tables.py: begin -->", "<!-- teacher_tables.py: end -->"
FORCE = "force_mae_meV_per_A"
ENERGY = "energy_mae_meV_per_atom"
# the goal: force within 15 % of the teacher's, energy (meV/atom), MD speed over the teacher's
FORCE_RATIO_GOAL, ENERGY_GOAL_MEV, SPEED_GOAL = 1.15, 2.0, 5.0


def route_runs(strategy: str, studies) -> dict:
    """{(N, seed): test metrics} of ``strategy`` over ``studies``, the first study winning a tie; a run that
    stopped at its epoch cap instead of its plateau criterion (the record's ``converged`` false) is marked
    ``capped``."""
    runs = {}
    for study in studies:
        for record in load_runs(RESULTS / study):
            key = (int(record["n_train"]), int(record["seed"]))
            if record["strategy"] == strategy and key not in runs:
                runs[key] = dict(record["test"], capped=record.get("converged") is False)
    return runs


def speed_ratio() -> float:
    """The tiny-L1 size's MD speed over the medium teacher's (one loaded measurement, so a ratio only)."""
    sizes = json.loads((RESULTS / "md_speed_sizes.json").read_text())["sizes"]
    rate = {(s["channels"], s["max_L"]): s["atom_steps_per_s"] for s in sizes}
    return rate[(16, 1)] / rate[(64, 1)]


def cell(runs: dict, n: int) -> str:
    found = sorted((seed, m) for (size, seed), m in runs.items() if size == n)
    return ", ".join(f"{m[FORCE]:.1f} / {m[ENERGY]:.2f} (s{seed}{', cap' if m['capped'] else ''})"
                     for seed, m in found) or "–"


def load_routes() -> dict:
    """{route label: route_runs} of every student route and the teacher, each read once."""
    return {label: route_runs(strategy, studies) for label, strategy, studies in STUDENT_ROUTES + (TEACHER,)}


def print_route_table(routes: dict) -> None:
    sizes = sorted({n for label, _, _ in STUDENT_ROUTES for n, _ in routes[label]})
    print("| tiny-L1 (16 ch, L = 1), test force / energy MAE | " + " | ".join(f"N = {n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for label, runs in routes.items():
        print(f"| {label} | " + " | ".join(cell(runs, n) for n in sizes) + " |")
    print("\n(cap: the run stopped at its epoch cap, not on its plateau criterion; every other run stopped on it. "
          "A taught student's mark is its DFT fine-tune's; its pretraining on the teacher's labels has its own record, "
          "`<study>/classical/*.json`, and the text says where that ran its epoch cap.)\n")


def print_goal_table(routes: dict) -> None:
    student, teacher = routes[REMAP_ROUTE[0]], routes[TEACHER[0]]
    baselines = [routes[label] for label, _, _ in BASELINE_ROUTES]
    speed = speed_ratio()
    print("| N, seed | student force / energy | teacher force / energy | force vs teacher (≤ 1.15) "
          "| energy ≤ 2 | MD speed vs teacher (≥ 5) | vs scratch alone: force, energy | vs transfer alone: force, "
          "energy | goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(student):
        s, t = student[key], teacher.get(key)
        if t is None:
            continue
        ratio = s[FORCE] / t[FORCE]
        versus, better = [], True
        for runs in baselines:
            b = runs.get(key)
            if b is None:
                versus.append("–")
                continue
            versus.append(f"{s[FORCE] / b[FORCE]:.2f}×, {s[ENERGY] / b[ENERGY]:.2f}×")
            better = better and s[FORCE] < b[FORCE] and s[ENERGY] < b[ENERGY]
        energy_met = s[ENERGY] <= ENERGY_GOAL_MEV
        met = ratio <= FORCE_RATIO_GOAL and energy_met and speed >= SPEED_GOAL and better and "–" not in versus
        print(f"| {key[0]}, s{key[1]} | {s[FORCE]:.1f} / {s[ENERGY]:.2f} | {t[FORCE]:.1f} / {t[ENERGY]:.2f} "
              f"| {ratio:.2f}× | {'yes' if energy_met else 'no'} | {speed:.1f}× | {versus[0]} | {versus[1]} "
              f"| {'**met**' if met else 'not met'} |")
    print()


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between BEGIN and END in ``path`` (both must be there, once each) by ``text``."""
    document = path.read_text()
    if document.count(BEGIN) != 1 or document.count(END) != 1 or document.index(BEGIN) > document.index(END):
        sys.exit(f"{path}: needs one '{BEGIN}' line and, after it, one '{END}' line")
    head, rest = document.split(BEGIN)
    _, tail = rest.split(END)
    path.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="put the tables between the markers of this Markdown file")
    args = parser.parse_args()
    routes = load_routes()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_route_table(routes)
        print_goal_table(routes)
    if args.write:
        write_between_markers(args.write, buffer.getvalue())
    else:
        print(buffer.getvalue(), end="")


if __name__ == "__main__":
    main()
