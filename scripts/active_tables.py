"""Issue 49's pool-study tables (2a), generated from the committed records.

Reads the loops' round records (``docs/results/active_pool/loops/<selection>_s<seed>/``, copied there by
``scripts/active_pool.py collect``), the converged medium runs on the chosen labels
(``docs/results/active_pool/converged/records/``) and the converged medium study's random draws
(``docs/results/converged_medium/records/``, same recipe, same seeds); writes
``docs/results/active_pool/summary.md`` and ``summary.json`` and RESULTS' ``<!-- active_pool -->`` block.
Test-set MAEs on the 60 PBE Ge test structures: forces meV/Å, energies meV/atom; mean ± sample std over
the seeds present (seeds listed). Nothing here chooses anything.

    .venv/bin/python scripts/active_tables.py
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from energy_tables import stats  # noqa: E402  (mean, sample std, n of a list of errors)
from headline import replace_block  # noqa: E402  (scripts/, this script's own folder)

from mace_transfer.active.report import markdown as rounds_markdown  # noqa: E402

STUDY = ROOT / "docs" / "results" / "active_pool"
RANDOM = ROOT / "docs" / "results" / "converged_medium"
RESULTS = ROOT / "docs" / "RESULTS.md"
README = ROOT / "README.md"              # and README's <!-- active:start/end --> block
SIZES = (5, 10, 20, 30, 50)
ALL_292_SCRATCH_FORCE = "scratch_N0292_s0"   # the target: medium scratch on all 292 structures
F, E = "force_mae_meV_per_A", "energy_mae_meV_per_atom"
SPREAD = "active, ≤ 2 of a kind a batch"    # configs/active_pool_k2_medium.yaml (--max_per_kind 2)
README_NAMES = {"active": "the loop: committee uncertainty + diversity rule",
                SPREAD: "the loop, at most 2 of one config_type in a batch of 5"}


def _records(folder: Path, strategy: str) -> Dict[int, Dict[int, dict]]:
    out: Dict[int, Dict[int, dict]] = {}
    for path in sorted((folder / "records").glob(f"{strategy}_N*_s*.json")):
        record = json.loads(path.read_text())
        if record.get("strategy") == strategy:
            out.setdefault(int(record["n_train"]), {})[int(record["seed"])] = record
    return out


def _cell(runs: Dict[int, dict], seeds: Optional[List[int]] = None) -> str:
    chosen = {s: r for s, r in runs.items() if seeds is None or s in seeds}
    if not chosen:
        return "–"
    f, e = stats([r["test"][F] for r in chosen.values()]), stats([r["test"][E] for r in chosen.values()])
    spread = lambda st, d: f"{st['mean']:.{d}f}" + (f" ± {st['std']:.{d}f}" if st["n"] > 1 else "")  # noqa: E731
    return f"{spread(f, 1)} / {spread(e, 2)} (s{','.join(map(str, sorted(chosen)))})"


def loops() -> Dict[str, List[dict]]:
    out = {}
    for folder in sorted((STUDY / "loops").glob("*_s*")):
        rounds = [json.loads(p.read_text()) for p in sorted(folder.glob("round_[0-9][0-9][0-9].json"))]
        if rounds:
            out[folder.name] = rounds
    return out


def pool_kinds() -> Counter:
    """config_type counts of the 292-structure pool (the study's split: 8 validation cells, seed 1234)."""
    from mace_transfer.studies.data import read_frames, split_target

    frames = read_frames(ROOT / "data" / "ge_pbe.xyz")  # without the IsolatedAtom frame, as the studies read it
    return Counter(str(frames[i].info.get("config_type")) for i in split_target(len(frames), 8, 1234)[1])


def kinds_table(all_loops: Dict[str, List[dict]], pool: Counter) -> List[str]:
    kinds = sorted(pool)
    head = "| labels chosen, by config_type | " + " | ".join(kinds) + " |"
    lines = [head, "|---|" + "---|" * len(kinds),
             "| the pool (292), % | " + " | ".join(f"{100 * pool[k] / sum(pool.values()):.0f}" for k in kinds) + " |"]
    for name, rounds in all_loops.items():
        got = Counter(k for r in rounds for k in (r.get("selected") or {}).get("config_types") or [])
        lines.append(f"| {name} ({sum(got.values())} labels), count | " + " | ".join(str(got[k]) for k in kinds) + " |")
    return lines


def finals_table(variants: Dict[str, Dict[int, Dict[int, dict]]], random: Dict[int, Dict[int, dict]],
                 scratch_active: Dict[int, Dict[int, dict]], scratch_random: Dict[int, Dict[int, dict]]) -> List[str]:
    """One row per N: random draws, each selection variant's converged runs, random on the default variant's seeds."""
    names = list(variants)
    active = variants[names[0]]
    lines = ["| N labels | transfer + random | " + " | ".join(f"transfer + {v}" for v in names)
             + " | transfer + random, the active runs' seeds | scratch + random | scratch + active |",
             "|---|---|" + "---|" * len(names) + "---|---|---|"]
    for n in SIZES:
        if n not in random and not any(n in v for v in variants.values()):
            continue
        a = active.get(n, {})
        lines.append(f"| {n} | {_cell(random.get(n, {}))} | "
                     + " | ".join(_cell(variants[v].get(n, {})) for v in names) + " | "
                     f"{_cell(random.get(n, {}), sorted(a)) if a else '–'} | {_cell(scratch_random.get(n, {}))} | "
                     f"{_cell(scratch_active.get(n, {}))} |")
    return lines


def per_kind_table(variants: Dict[str, Dict[int, Dict[int, dict]]], random: Dict[int, Dict[int, dict]]) -> List[str]:
    """Test force MAE per config_type: each selection variant against random, the same N and seeds (the seeds a
    variant shares with the random draws; a row per variant, random on those seeds just above it)."""
    lines = []
    for n in sorted({n for v in variants.values() for n in v}):
        for name, active in variants.items():
            seeds = sorted(s for s in active.get(n, {}) if s in random.get(n, {}))
            if not seeds:
                continue
            kinds = sorted(active[n][seeds[0]]["test_per_config_type"])
            if not lines:
                lines = ["| N, seeds | start | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
            for label, runs in (("random", random[n]), (name, active[n])):
                values = [mean(runs[s]["test_per_config_type"][k][F] for s in seeds) for k in kinds]
                lines.append(f"| {n}, s{','.join(map(str, seeds))} | transfer + {label} | "
                             + " | ".join(f"{v:.1f}" for v in values) + " |")
    return lines


def runs_table(variants: Dict[str, Dict[int, Dict[int, dict]]], random: Dict[int, Dict[int, dict]]) -> List[str]:
    """Every converged run beside the random draw of its N and seed: where its early stop kept it (best epoch of
    epochs run; validation force RMSE there on the 8 cells) and its test errors."""
    lines = ["| N, seed | labels | kept epoch / epochs run | validation force RMSE at the kept epoch (meV/Å) "
             "| test force / energy MAE |", "|---|---|---|---|---|"]
    for n in sorted({n for v in variants.values() for n in v}):
        for seed in sorted({s for v in variants.values() for s in v.get(n, {})}):
            rows = [("random", random.get(n, {}).get(seed))] + [(name, v.get(n, {}).get(seed))
                                                                 for name, v in variants.items()]
            for name, r in rows:
                if r is None:
                    continue
                lines.append(f"| {n}, s{seed} | {name} | {r.get('best_epoch')} / {r.get('epochs_run')} | "
                             f"{r.get('best_valid_rmse_f_meV_A', float('nan')):.1f} | "
                             f"{r['test'][F]:.1f} / {r['test'][E]:.2f} |")
    return lines


def stage_two_table(active_two: Dict[int, Dict[int, dict]], random_two: Dict[int, Dict[int, dict]]) -> List[str]:
    """Issue 48's stage two (``--converged_stage_two energy``: kept only where it lowers the validation energy
    MAE) on the active runs against the same on the random draws, the same N and seeds."""
    lines = ["| N, seed | labels | stage one: test force / energy MAE | + stage two, kept where validation says "
             "| stage two kept |", "|---|---|---|---|---|"]
    for n in sorted(active_two):
        for seed in sorted(active_two[n]):
            for name, runs in (("random", random_two), ("active", active_two)):
                r = runs.get(n, {}).get(seed)
                if r is None:
                    continue
                one, kept = r["stage_one"]["test"], r.get("test_kept") or r["test"]
                lines.append(f"| {n}, s{seed} | {name} | {one[F]:.1f} / {one[E]:.2f} | {kept[F]:.1f} / {kept[E]:.2f} "
                             f"| {'yes' if r['valid_energy_check']['keep_stage_two'] else 'no'} |")
    return lines


def cost_table(all_loops: Dict[str, List[dict]]) -> List[str]:
    lines = ["| loop | round | labels | CPU s: exploration / DFT (recorded in the pool) / committee training / check "
             "| wall s |", "|---|---|---|---|---|"]
    for name, rounds in all_loops.items():
        for r in rounds:
            cpu, wall = r.get("cpu_s") or {}, r.get("wall_s") or {}
            lines.append(f"| {name} | {r['round']} | {r['labels_used']} | " + " / ".join(
                f"{cpu.get(k, 0) or 0:.0f}" for k in ("exploration", "dft", "training", "check"))
                + f" | {wall.get('total', 0) or 0:.0f} |")
    return lines


def goals(active: Dict[int, Dict[int, dict]], random: Dict[int, Dict[int, dict]],
          scratch_active: Dict[int, Dict[int, dict]], target_force: float, variant: str) -> List[str]:
    """The issue's goal lines for one selection variant's converged runs (``variant`` names it in each line)."""
    out = []
    reached = [(n, stats([r["test"][F] for r in runs.values()]), stats([r["test"][E] for r in runs.values()]))
               for n, runs in sorted(active.items()) if n <= 30]
    hit = [(n, f, e) for n, f, e in reached if f["mean"] <= target_force and e["mean"] <= 1.0]
    best = min(reached, key=lambda t: t[1]["mean"]) if reached else None
    out.append(f"- Transfer + {variant} reaches medium scratch's all-292 test force MAE ({target_force:.1f} meV/Å) with "
               f"≤ 30 labels and energy ≤ 1 meV/atom: " + (
                   f"met at N = {hit[0][0]}" if hit else
                   ("not met: its best at ≤ 30 labels is " + f"{best[1]['mean']:.1f} meV/Å, {best[2]['mean']:.2f} "
                    f"meV/atom at N = {best[0]} ({best[1]['n']} seeds)" if best else "not measured yet")) + ".")
    pairs = []
    for n, runs in sorted(active.items()):
        f_active = mean(r["test"][F] for r in runs.values())
        curve = sorted((m, mean(r["test"][F] for r in rr.values())) for m, rr in random.items() if m <= 50)
        # labels random draws need for the same test force MAE: linear in log N between measured sizes
        need = None
        for (m0, f0), (m1, f1) in zip(curve, curve[1:]):
            if f1 <= f_active <= f0:
                t = (f0 - f_active) / (f0 - f1) if f0 != f1 else 0.0
                need = math.exp(math.log(m0) + t * (math.log(m1) - math.log(m0)))
        pairs.append((n, f_active, need))
    out.append(f"- At equal test force error, transfer + {variant} needs ≤ 0.5× the labels of transfer + random: " + "; ".join(
        f"N = {n}: {f:.1f} meV/Å, random draws need " + (f"≈ {need:.0f} labels ({n / need:.2f}×)" if need else
                                                           "more than 50 or fewer than 5 (outside the measured curve)")
        for n, f, need in pairs) + (" (random-draw N interpolated in log N between the measured sizes)." if pairs else
                                    "not measured yet."))
    if scratch_active:
        out.append(f"- Transfer + {variant} beats scratch + active at every budget ≤ 50: " + "; ".join(
            f"N = {n}: {mean(r['test'][F] for r in active[n].values()):.1f} vs "
            f"{mean(r['test'][F] for r in scratch_active[n].values()):.1f} meV/Å"
            for n in sorted(set(active) & set(scratch_active))) + ".")
    else:
        out.append(f"- Transfer + {variant} beats scratch + active at every budget ≤ 50: not measured yet.")
    return out


def readme_block(variants: Dict[str, Dict[int, Dict[int, dict]]], random: Dict[int, Dict[int, dict]]) -> str:
    """README's lines: each selection variant against random draws on the same seeds, at every N measured."""
    sizes = [n for n in SIZES if any(n in v for v in variants.values())]
    lines = ["| medium transfer_rescale, test force / energy MAE (meV/Å / meV/atom); labels chosen by | "
             + " | ".join(f"N = {n}" for n in sizes) + " |"]
    lines.append("|---|" + "---|" * len(sizes))
    seeds_of = {n: sorted({s for v in variants.values() for s in v.get(n, {})}) for n in sizes}
    lines.append("| random draws (section 11), the same seeds | "
                 + " | ".join(_cell(random.get(n, {}), seeds_of[n]) for n in sizes) + " |")
    for name, runs in variants.items():
        lines.append(f"| {README_NAMES.get(name, name)} | " + " | ".join(_cell(runs.get(n, {})) for n in sizes) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    all_loops = loops()
    active = _records(STUDY / "converged", "transfer_rescale")
    variants = {"active": active}
    spread = _records(STUDY / "converged_k2", "transfer_rescale")  # configs/active_pool_k2_medium.yaml
    if spread:
        variants[SPREAD] = spread
    scratch_active = _records(STUDY / "converged_scratch", "scratch")
    random, scratch_random = _records(RANDOM, "transfer_rescale"), _records(RANDOM, "scratch")
    active_two = _records(STUDY / "stage2", "transfer_rescale")          # configs/active_pool_stage2.yaml
    random_two = _records(ROOT / "docs" / "results" / "energy_stage2", "transfer_rescale")
    target = json.loads((RANDOM / "records" / f"{ALL_292_SCRATCH_FORCE}.json").read_text())["test"][F]
    random = {n: r for n, r in random.items() if n <= 50}
    scratch_random = {n: r for n, r in scratch_random.items() if n <= 50}
    parts = [
        "### Converged medium models on the chosen labels against random draws",
        "",
        "Test force / energy MAE (meV/Å / meV/atom), mean ± std over seeds. Random: "
        "docs/results/converged_medium (seed s draws N at random from the pool). Active: the first N labels loop "
        "seed s chose (the first 5 by farthest-point sampling, then 5 a round by committee uncertainty with the "
        "diversity rule), trained under the same recipe and MACE seed (configs/active_pool_medium.yaml).",
        "",
        *finals_table(variants, random, scratch_active, scratch_random),
        "",
        "Goals (issue 49):",
        "",
        *[line for name, runs in variants.items() for line in goals(runs, random, scratch_active, target, name)],
        "",
        "### Where each run stopped (the recipe's early stop on the 8 validation cells)",
        "",
        *runs_table(variants, random),
        "",
        "### With issue 48's stage two on top (`configs/active_pool_stage2.yaml` against docs/results/energy_stage2)",
        "",
        *(stage_two_table(active_two, random_two) if active_two else ["(no stage-two run on active labels yet)"]),
        "",
        "### Where the chosen labels help: test force MAE per config_type (meV/Å), the same N and seeds",
        "",
        *(per_kind_table(variants, random) or ["(no converged active run yet)"]),
        "",
        "### What the loops chose",
        "",
        *kinds_table(all_loops, pool_kinds()),
        "",
        "### The loops round by round (committee of 3 medium fine-tunes, 30 epochs, warm started; its mean on test)",
        "",
        rounds_markdown(all_loops).rstrip(),
        "",
        "### Cost per round",
        "",
        *cost_table(all_loops),
        "",
    ]
    block = "\n".join(parts)
    (STUDY / "summary.md").write_text("# Pool-based active learning, medium MACE (issue 49, 2a)\n\n"
                                      "Generated by `scripts/active_tables.py` from the records; do not edit.\n\n"
                                      + block)
    summary = {"finals": {n: {s: r["test"] for s, r in runs.items()} for n, runs in active.items()},
               "finals_k2": {n: {s: r["test"] for s, r in runs.items()} for n, runs in spread.items()},
               "random": {n: {s: r["test"] for s, r in runs.items()} for n, runs in random.items()},
               "all_292_scratch_force_meV_A": target}
    (STUDY / "summary.json").write_text(json.dumps(summary, indent=1))
    if RESULTS.is_file():
        RESULTS.write_text(replace_block(RESULTS.read_text(), "active_pool", block))
    if README.is_file():
        README.write_text(replace_block(README.read_text(), "active", readme_block(variants, random)))
    print(f"{STUDY / 'summary.md'} written ({len(all_loops)} loops, {sum(len(v) for v in active.values())} "
          "converged active runs)")


if __name__ == "__main__":
    main()
