"""Every config the repo ships loads with the loader that runs it, and names only files the repo ships.

A README or RESULTS command that starts with ``--config configs/X.yaml`` must not stop on a renamed data
file or a bad key. Paths under ``cache`` (and under a pipeline's ``workdir``) are made by the run itself.
"""

from pathlib import Path

import pytest
import yaml

from mace_transfer.studies.config import load_config
from mace_transfer.studies.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
FILE_SUFFIXES = (".xyz", ".model", ".json", ".yaml")


def named_files(value, key=None):
    """Every string in a config that names a file (by its suffix), except the run's own ``cache``."""
    if key == "cache":
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from named_files(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from named_files(v)
    elif isinstance(value, str) and value.endswith(FILE_SUFFIXES) and "/" in value:
        yield value


def kind_of(path: Path) -> str:
    raw = yaml.safe_load(path.read_text())
    if "stages" in raw:
        return "pipeline"
    if "out" in raw or "base" in raw:
        return "study"
    return "settings"  # the DFT settings (configs/dft_pbe.yaml), read by mace_transfer_label


RUN_CONFIGS = [p for p in CONFIGS if kind_of(p) != "settings"]


def test_the_repo_ships_study_and_pipeline_configs():
    assert {kind_of(p) for p in RUN_CONFIGS} == {"study", "pipeline"}


def test_shipped_dft_settings_are_those_of_every_shipped_pbe_label():
    """configs/dft_pbe.yaml reproduces the settings tag of every PBE frame in data/ (one setting, exact)."""
    from ase.io import read

    from mace_transfer.datagen.dft.cp2k import load_settings

    tag = load_settings(ROOT / "configs" / "dft_pbe.yaml").physics_hash()
    labelled = sorted((ROOT / "data").glob("*pbe*.xyz"))
    assert labelled
    tags = {atoms.info.get("dft_settings") for path in labelled for atoms in read(path, ":")}
    assert tags == {tag}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.name for p in RUN_CONFIGS])
def test_shipped_config_loads_and_its_files_exist(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name files relative to the repo root, as the README runs them
    kind = kind_of(path)
    if kind == "study":
        config = load_config(str(path.relative_to(ROOT)))
        made_here = ()
    else:
        config = load_pipeline(path.relative_to(ROOT))
        made_here = (str(config["workdir"]).rstrip("/") + "/",)  # the pipeline's own stage outputs
    names = [f.format(seed=seed) for f in named_files(config)  # a per-seed file (data.train_order) for each seed
             for seed in (config.get("seeds") or [0] if "{seed}" in f else [None])]
    missing = [f for f in names if not f.startswith(made_here) and not (ROOT / f).exists()]
    assert not missing, f"{path.name} names files the repo does not ship: {missing}"
