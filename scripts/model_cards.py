"""Ship the models worth taking: copy each into models/, measure it, write its card (issue 50).

    .venv/bin/python scripts/model_cards.py            # all models (about 2 CPU-min)
    .venv/bin/python scripts/model_cards.py --check    # recompute and compare, write nothing
    .venv/bin/python scripts/model_cards.py --render   # new descriptions, the measured numbers kept

For every model in :data:`MODELS`: the file is copied from the study that trained it into
``models/<name>.model``; its SHA-256, architecture (read off the model), test errors (recomputed here
with ``mace_transfer.evaluate`` on the card's test file, float64 ``MACECalculator``; the same numbers
``mace_transfer_eval`` prints) and the quick check (force MAE on the first :data:`QUICK_FRAMES` test
structures, what ``tests/test_models.py`` reproduces in the default suite) go to ``models/cards.json``;
``models/<name>.md`` and ``models/README.md`` are generated from that JSON. Nothing is typed by hand
but the descriptions and recipes below.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from headline import replace_block  # noqa: E402  (scripts/, this script's own folder)
from mace_transfer.studies.data import file_sha256 as sha256  # noqa: E402

OUT = ROOT / "models"
QUICK_FRAMES = 10
DFT_TAG = ("CP2K 2023.1, PBE, GTH-PBE pseudopotentials, DZVP-MOLOPT-SR-GTH, 400 Ry cutoff, k-spacing 0.2 1/Å, "
           "Fermi-Dirac 1000 K (energies: Mermin free energy) -- settings hash `ff50ad3367` on every frame, "
           "`configs/dft_pbe.yaml`, docs/DFT.md")
#: MD speed, 64-atom diamond Ge, one thread, float32 MACECalculator: both sizes from one run of
#: `python scripts/md_speed_sizes.py` (docs/results/md_speed_sizes.json, load average ~4, so a ratio, not a
#: quiet-machine speed: the medium size ran 477 atom-steps/s on a quiet machine, docs/RESULTS.md section 13)
MD_SPEED_FILE = "docs/results/md_speed_sizes.json"
MD_SPEED_SIZES = {"medium": (64, 1), "student": (16, 1)}

MODELS = [
    {
        "name": "si_pbe_medium",
        "summary": "PBE silicon, the medium source every Ge model here starts from",
        "from": "docs/results/converged_medium/source/si_pbe_medium.model",
        "record": "docs/results/converged_medium/source/si_pbe_medium.json",
        "elements": ["Si"],
        "data": "data/si_pbe.xyz: 300 PBE Si structures (16-atom cells: MD 300-2500 K, liquid, strain, vacancy), "
                "285 train / 15 validation",
        "recipe": "scripts/train_si_sources.sh SIZE=medium (MACE from scratch, 64 ch, L = 1, correlation 3, "
                  "r_max 5 Å; best validation epoch kept)",
        "test": "data/si_test_pbe16.xyz",
        "md_speed": "medium",
    },
    {
        "name": "ge_pbe_medium_n292",
        "summary": "PBE germanium from all 292 training structures, started from si_pbe_medium (Si→Ge remap + "
                   "corresponding-states rescale)",
        "from": "docs/results/converged_medium/models/transfer_rescale_N0292_s0.model",
        "record": "docs/results/converged_medium/records/transfer_rescale_N0292_s0.json",
        "elements": ["Ge"],
        "data": "data/ge_pbe.xyz: the 292 training structures (8 validation cells held out)",
        "recipe": "configs/converged_medium.yaml, strategy transfer_rescale, N = 292, seed 0 (forces:energy 10:1, "
                  "lr chosen on validation, trained to convergence)",
        "test": "data/ge_test_pbe.xyz",
        "md_speed": "medium",
    },
    {
        "name": "ge_pbe_medium_n20",
        "summary": "PBE germanium from 20 structures, started from si_pbe_medium: the data-scarce case "
                   "(seed chosen on validation among three)",
        "from": "docs/results/converged_medium/models/transfer_rescale_N0020_s0.model",
        "record": "docs/results/converged_medium/records/transfer_rescale_N0020_s0.json",
        "elements": ["Ge"],
        "data": "data/ge_pbe.xyz: 20 structures (the record's train_indices), 8 validation cells",
        "recipe": "configs/converged_medium.yaml, strategy transfer_rescale, N = 20, seed 0 (lowest validation "
                  "loss of seeds 0-2)",
        "test": "data/ge_test_pbe.xyz",
        "md_speed": "medium",
    },
    {
        "name": "ge_pbe_student_n20",
        "summary": "the fast student: a 16-channel L = 1 MACE (~7x the medium model's MD speed, measured in "
                   "one run) taught by ge_pbe_medium_n20's 10:1 teacher, then fine-tuned "
                   "on the same 20 PBE structures",
        "from": "runs/student_ship/work/teacher_pretrain_N0020_s0/teacher_pretrain_N0020_s0.model",
        "record": "docs/results/teacher_l1_s0_e10_remap/retrain_20261207/record.json (the study's own run, "
                  "records/teacher_pretrain_N0020_s0.json, kept no model file: retrained 2026-12-07 from the "
                  "committed pretrained student, same config: test force MAE within 1e-6, energy MAE within 2e-4 relative)",
        "elements": ["Ge"],
        "data": "data/ge_teacher_medium10_N20s0.xyz (500 cells labelled by the teacher), then the 20 PBE "
                "structures of seed 0",
        "recipe": "configs/teacher_l1_s0_e10_remap.yaml (student started from its own Si→Ge remap, taught at "
                  "forces:energy 10:1, fine-tuned at 1:1); reproduced with `mace_transfer_learning_curve "
                  "--config configs/teacher_l1_s0_e10_remap.yaml --no_zero_shot`",
        "test": "data/ge_test_pbe.xyz",
        "md_speed": "student",
    },
]


def architecture(path: Path) -> dict:
    """Channels, L, correlation order, r_max (Å), interactions, class: read off the model itself."""
    import mace  # noqa: F401
    import torch

    model = torch.load(path, map_location="cpu", weights_only=False)
    hidden = model.interactions[0].hidden_irreps
    return {
        "class": type(model).__name__,
        "channels": int(hidden[0].mul),
        "max_L": int(max(ir.l for _, ir in hidden)),
        "correlation": int(model.products[0].symmetric_contractions.contractions[0].correlation),
        "r_max_A": float(model.r_max),
        "interactions": int(model.num_interactions),
        "elements": [int(z) for z in model.atomic_numbers],
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def measure(model_path: Path, test: str) -> dict:
    """Test errors on the whole test file and the quick check on its first QUICK_FRAMES structures."""
    from mace_transfer.evaluate.errors import read_test_file, test_errors
    from mace_transfer.evaluate.models import load_model

    calc = load_model(model_path).calc
    frames = read_test_file(ROOT / test)
    full = test_errors(calc, frames, progress=False)["overall"]
    quick = test_errors(calc, frames[:QUICK_FRAMES], progress=False)["overall"]
    keys = ("force_mae_meV_per_A", "force_rmse_meV_per_A", "energy_mae_meV_per_atom", "stress_mae_meV_per_A3")
    return {"test": {k: full[k] for k in keys if k in full} | {"n_configs": full["n_configs"]},
            "quick_check": {"frames": QUICK_FRAMES, "force_mae_meV_per_A": quick["force_mae_meV_per_A"]}}


def md_speed(kind: str) -> dict:
    data = json.loads((ROOT / MD_SPEED_FILE).read_text())
    value = next(s["atom_steps_per_s"] for s in data["sizes"] if (s["channels"], s["max_L"]) == MD_SPEED_SIZES[kind])
    load = ", ".join(f"{x:.1f}" for x in data.get("load_average", []))
    return {"atom_steps_per_s": round(float(value), 1),
            "system": f"64-atom diamond Ge, one CPU thread, float32, one run for all sizes at load average {load}",
            "source": MD_SPEED_FILE}


def card_markdown(card: dict) -> str:
    arch, test = card["architecture"], card["test"]
    return "\n".join([
        f"# {card['name']}.model", "", card["summary"], "",
        "| | |", "|---|---|",
        f"| elements | {', '.join(card['elements'])} |",
        f"| architecture | {arch['class']}, {arch['channels']} channels, L = {arch['max_L']}, correlation "
        f"{arch['correlation']}, {arch['interactions']} interactions, r_max {arch['r_max_A']:.3g} Å, "
        f"{arch['parameters']:,} parameters |",
        f"| data | {card['data']} |",
        f"| DFT | {DFT_TAG} |",
        f"| recipe | {card['recipe']} |",
        f"| record | {card['record']} |",
        f"| test ({test['n_configs']} structures, `{card['test_file']}`) | force MAE {test['force_mae_meV_per_A']:.2f} "
        f"meV/Å (RMSE {test['force_rmse_meV_per_A']:.2f}), energy MAE {test['energy_mae_meV_per_atom']:.2f} "
        f"meV/atom" + (f", stress MAE {test['stress_mae_meV_per_A3']:.2f} meV/Å³" if "stress_mae_meV_per_A3" in test
                       else "") + " |",
        f"| MD speed | {card['md_speed']['atom_steps_per_s']:,.0f} atom-steps/s "
        f"({card['md_speed']['system']}; `{card['md_speed']['source']}`) |",
        "| licence | MIT (this repository's); the labels are this project's own CP2K calculations |",
        f"| SHA-256 | `{card['sha256']}` |",
        "", "Check the file before loading it (a `.model` is a pickle: loading runs code):", "",
        "```bash", f"sha256sum models/{card['name']}.model   # must print {card['sha256']}", "```", "",
        "Measure the test errors above:", "",
        "```bash", card["command"], "```", "",
    ])


def index_markdown(cards: list) -> str:
    lines = ["# Models to take", "",
             "Generated by `python scripts/model_cards.py` from `cards.json`; each card says how the model was "
             "made and how to check it. `tests/test_models.py` checks every SHA-256 and reproduces every card's "
             "force MAE (the first 10 test structures by default, all of them with `-m slow`).", "",
             "A `.model` file is a Python pickle: loading it runs code, as with every MACE model. Load only files "
             "whose SHA-256 matches their card (`sha256sum models/*.model`).", "",
             "| model | elements | size | test force / energy MAE | MD speed (atom-steps/s, one run at load ~4) | card |",
             "|---|---|---|---|---|---|"]
    for card in cards:
        arch, test = card["architecture"], card["test"]
        lines.append(f"| `{card['name']}.model` | {', '.join(card['elements'])} | {arch['channels']} ch, L = "
                     f"{arch['max_L']} | {test['force_mae_meV_per_A']:.1f} meV/Å / "
                     f"{test['energy_mae_meV_per_atom']:.2f} meV/atom ({test['n_configs']} structures) | "
                     f"{card['md_speed']['atom_steps_per_s']:,.0f} | [{card['name']}.md]({card['name']}.md) |")
    return "\n".join(lines) + "\n"


def build(spec: dict) -> dict:
    target = OUT / f"{spec['name']}.model"
    source = ROOT / spec["from"]
    if source.is_file() and (not target.is_file() or sha256(target) != sha256(source)):
        shutil.copyfile(source, target)
    card = {k: spec[k] for k in ("name", "summary", "elements", "data", "recipe", "record")}
    card["test_file"] = spec["test"]
    card["sha256"] = sha256(target)
    card["architecture"] = architecture(target)
    card.update(measure(target, spec["test"]))
    card["md_speed"] = md_speed(spec["md_speed"])
    card["command"] = (f"mace_transfer_eval models/{spec['name']}.model --test {spec['test']} "
                       "--skip md,structure,lattice,elastic,vacancy,phonons --out runs/card_check")
    return card


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="recompute, compare with models/cards.json")
    parser.add_argument("--only", default=None, help="comma-separated model names")
    parser.add_argument("--render", action="store_true",
                        help="re-render the cards from models/cards.json with the descriptions above (measures nothing)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    cards_path = OUT / "cards.json"
    old = {c["name"]: c for c in json.loads(cards_path.read_text())} if cards_path.is_file() else {}
    only = set(args.only.split(",")) if args.only else None
    cards = []
    for spec in MODELS:
        if args.render:
            cards.append(old[spec["name"]] | {k: spec[k] for k in ("summary", "elements", "data", "recipe", "record")})
            continue
        if only and spec["name"] not in only:
            if spec["name"] in old:
                cards.append(old[spec["name"]])
            continue
        card = build(spec)
        print(f"{card['name']}: force MAE {card['test']['force_mae_meV_per_A']:.3f} meV/Å, "
              f"energy {card['test']['energy_mae_meV_per_atom']:.3f} meV/atom, sha256 {card['sha256'][:12]}")
        cards.append(card)
    if args.check:
        bad = [c["name"] for c in cards if old.get(c["name"], {}).get("test") != c["test"]]
        print("all cards reproduced" if not bad else f"differ: {bad}")
        return 1 if bad else 0
    cards_path.write_text(json.dumps(cards, indent=1) + "\n")
    for card in cards:
        (OUT / f"{card['name']}.md").write_text(card_markdown(card))
    (OUT / "README.md").write_text(index_markdown(cards))
    readme = ROOT / "README.md"  # the front door's block between the models markers: the index table
    table = index_markdown(cards).split("\n\n")[-1].strip()
    readme.write_text(replace_block(readme.read_text(), "models", table.replace("](", "](models/") + "\n"))
    print(f"wrote {cards_path}, {len(cards)} cards, models/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
