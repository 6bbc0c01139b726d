"""Every shipped model is the file its card describes and reproduces its card (issue 50).

``models/cards.json`` is written by ``scripts/model_cards.py``. Default suite: each file's SHA-256, its
elements and architecture read off the loaded model, and the force MAE on the first test structures (the
card's ``quick_check``) recomputed through ``MACECalculator``; ``-m slow``: the card's full test errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ase.data import atomic_numbers

from mace_transfer.evaluate.errors import read_test_file
from mace_transfer.evaluate.errors import test_errors as errors_on
from mace_transfer.evaluate.models import load_model
from mace_transfer.studies.data import file_sha256

ROOT = Path(__file__).resolve().parents[1]
CARDS = json.loads((ROOT / "models" / "cards.json").read_text())


def test_the_shipped_models_are_the_four_the_readme_names():
    assert [c["name"] for c in CARDS] == ["si_pbe_medium", "ge_pbe_medium_n292", "ge_pbe_medium_n20",
                                          "ge_pbe_student_n20"]
    for card in CARDS:
        assert (ROOT / "models" / f"{card['name']}.md").is_file()


@pytest.mark.parametrize("card", CARDS, ids=[c["name"] for c in CARDS])
def test_model_matches_its_card(card):
    path = ROOT / "models" / f"{card['name']}.model"
    assert file_sha256(path) == card["sha256"]
    model = load_model(path)  # a float64 MACECalculator, as mace_transfer_eval loads it
    assert model.atomic_numbers == [atomic_numbers[s] for s in card["elements"]]
    assert model.atomic_numbers == card["architecture"]["elements"]
    frames = read_test_file(ROOT / card["test_file"])[: card["quick_check"]["frames"]]
    errors = errors_on(model.calc, frames, progress=False)["overall"]
    assert errors["force_mae_meV_per_A"] == pytest.approx(card["quick_check"]["force_mae_meV_per_A"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS, ids=[c["name"] for c in CARDS])
def test_model_reproduces_its_cards_test_errors(card):
    model = load_model(ROOT / "models" / f"{card['name']}.model")
    errors = errors_on(model.calc, read_test_file(ROOT / card["test_file"]), progress=False)["overall"]
    assert errors["n_configs"] == card["test"]["n_configs"]
    for key in ("force_mae_meV_per_A", "energy_mae_meV_per_atom"):
        assert errors[key] == pytest.approx(card["test"][key], rel=1e-6)
