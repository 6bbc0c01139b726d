"""Configuration sampler: determinism, resume, refusal, labels, tags (8-atom cells, few MD steps)."""

import ase.io
import numpy as np
import pytest

from mace_transfer import UserInputError, cli
from mace_transfer.datagen import classical, sampling

# 8-atom cells and a handful of MD steps keep every test to a few seconds.
FAST = dict(supercell=(1, 1, 1), temperatures=(300, 3000), equilibration_steps=4, premelt_steps=4,
            snapshot_interval=2, snapshots_per_unit=2, progress=False)


def _positions(frames):
    return [f.positions.copy() for f in frames]


def test_same_seed_gives_identical_frames_and_other_seed_differs():
    first = sampling.sample_configurations("Si", "sw", 5, seed=7, **FAST)
    second = sampling.sample_configurations("Si", "sw", 5, seed=7, **FAST)
    other = sampling.sample_configurations("Si", "sw", 5, seed=8, **FAST)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.arrays["REF_forces"], b.arrays["REF_forces"])
        assert a.info["REF_energy"] == b.info["REF_energy"]
    assert not np.allclose(first[0].positions, other[0].positions)


def test_frame_i_does_not_depend_on_n():
    short = sampling.sample_configurations("Ge", "sw", 3, seed=1, **FAST)
    long = sampling.sample_configurations("Ge", "sw", 6, seed=1, **FAST)
    for a, b in zip(short, long[:3]):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_one_round_has_every_config_type(tmp_path):
    # one round = md_300K unit, liquid unit (3000 K > SW Si melting point), strain unit, vacancy unit
    frames = sampling.sample_configurations("Si", "sw", 8, seed=0, **FAST)
    types = [f.info["config_type"] for f in frames]
    assert types == ["md_300K"] * 2 + ["liquid"] * 2 + ["strain"] * 2 + ["vacancy"] * 2
    assert [f.info["sample_index"] for f in frames] == list(range(8))
    assert all(len(f) == 8 for f in frames[:6]) and all(len(f) == 7 for f in frames[6:])
    cubic = 5.431 * np.eye(3)
    assert all(not np.allclose(f.cell.array, cubic) for f in frames[4:6])  # strained cells
    np.testing.assert_allclose(frames[0].cell.array, cubic)
    assert frames[2].info["REF_energy"] / 8 > frames[0].info["REF_energy"] / 8 + 0.1  # hot / molten


def test_labels_equal_a_fresh_calculator_evaluation(tmp_path):
    out = tmp_path / "si.xyz"
    sampling.sample_configurations("Si", "tersoff", 8, seed=3, out_path=str(out), **FAST)
    frames = ase.io.read(out, ":")
    assert len(frames) == 8
    calc = classical.calculator("Si", "tersoff")
    for frame in frames:
        fresh = frame.copy()
        fresh.calc = calc
        assert frame.info["REF_energy"] == pytest.approx(fresh.get_potential_energy(), abs=1e-7)
        np.testing.assert_allclose(frame.arrays["REF_forces"], fresh.get_forces(), atol=1e-7)
        np.testing.assert_allclose(frame.info["REF_stress"], fresh.get_stress(voigt=True), atol=1e-9)
        assert np.abs(frame.arrays["REF_forces"]).max() > 1e-3  # thermal / rattled, not a perfect lattice


def test_resume_appends_only_missing_frames(tmp_path):
    out = tmp_path / "ge.xyz"
    sampling.sample_configurations("Ge", "sw", 3, seed=2, out_path=str(out), **FAST)
    first_text = out.read_text()
    frames = sampling.sample_configurations("Ge", "sw", 5, seed=2, out_path=str(out), **FAST)
    assert len(frames) == 5
    assert out.read_text().startswith(first_text)
    on_disk = ase.io.read(out, ":")
    assert [f.info["sample_index"] for f in on_disk] == list(range(5))
    # identical to a single uninterrupted run
    reference = tmp_path / "ge_once.xyz"
    sampling.sample_configurations("Ge", "sw", 5, seed=2, out_path=str(reference), **FAST)
    assert reference.read_text() == out.read_text()
    # asking for fewer returns a prefix and leaves the file alone
    fewer = sampling.sample_configurations("Ge", "sw", 2, seed=2, out_path=str(out), **FAST)
    assert len(fewer) == 2 and reference.read_text() == out.read_text()


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    out = tmp_path / "si.xyz"
    sampling.sample_configurations("Si", "sw", 2, seed=0, out_path=str(out), **FAST)
    with pytest.raises(UserInputError, match="other sampler settings"):
        sampling.sample_configurations("Si", "sw", 2, seed=1, out_path=str(out), **FAST)
    frames = sampling.sample_configurations("Si", "sw", 2, seed=1, out_path=str(out), overwrite=True, **FAST)
    assert len(ase.io.read(out, ":")) == 2
    assert frames[0].info["sampler_settings"] != ""
    assert (tmp_path / "si.xyz.settings.json").exists()


@pytest.mark.parametrize("temperatures", [(), (300, -5), (0,)])
def test_bad_temperature_ladder_is_refused(temperatures):
    with pytest.raises(UserInputError, match="temperature"):
        sampling.sample_configurations("Si", "sw", 2, **{**FAST, "temperatures": temperatures})


@pytest.mark.parametrize("bad", [dict(n=0), dict(supercell=(1, 0, 1)), dict(element="C"), dict(vacancies=-1)])
def test_other_bad_input_is_refused(bad):
    kwargs = {"element": "Si", "potential": "sw", "n": 2, **FAST, **bad}
    with pytest.raises(UserInputError):
        sampling.sample_configurations(**kwargs)


def test_isolated_atom_frame_gives_mace_its_e0(tmp_path):
    from mace.data.utils import KeySpecification, load_from_xyz

    out = tmp_path / "ge.xyz"
    frames = sampling.sample_configurations("Ge", "sw", 2, seed=0, isolated_atom=True, out_path=str(out), **FAST)
    assert [f.info["config_type"] for f in frames][0] == "IsolatedAtom" and len(frames) == 3
    again = sampling.sample_configurations("Ge", "sw", 3, seed=0, isolated_atom=True, out_path=str(out), **FAST)
    assert len(again) == 4 and len(ase.io.read(out, ":")) == 4
    keys = KeySpecification.from_defaults()  # REF_energy, REF_forces, REF_stress
    e0s, configs = load_from_xyz(str(out), key_specification=keys, extract_atomic_energies=True)
    assert e0s == {32: 0.0}
    assert len(configs) == 3
    assert configs[0].properties["stress"].shape == (6,)
    np.testing.assert_allclose(configs[0].properties["forces"], again[1].arrays["REF_forces"])


def test_crystal_md_energy_follows_equipartition():
    """64-atom SW Si at 300 K: <E_pot>/atom ~ E_coh + 3/2 kB T (harmonic solid), within 0.01 eV."""
    frames = sampling.sample_configurations(
        "Si", "sw", 4, supercell=(2, 2, 2), temperatures=(300,), equilibration_steps=100,
        snapshot_interval=20, snapshots_per_unit=4, seed=0, progress=False)
    mean = np.mean([f.info["REF_energy"] / len(f) for f in frames])
    expected = classical.REFERENCE_VALUES[("Si", "sw")]["cohesive_energy"] + 1.5 * 8.617333e-5 * 300
    assert mean == pytest.approx(expected, abs=0.01)


def test_cli_writes_file_and_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "cli.xyz"
    argv = ["--element", "Si", "--potential", "sw", "--n", "2", "--out", str(out), "--supercell", "1,1,1",
            "--temperatures", "300", "--equilibration_steps", "2", "--snapshot_interval", "2", "--no_progress"]
    assert cli._guarded(cli._sample, argv) == 0
    assert len(ase.io.read(out, ":")) == 2
    bad = argv[:-1] + ["--temperatures", "", "--no_progress"]
    assert cli._guarded(cli._sample, bad) == 2
    assert "temperature ladder is empty" in capsys.readouterr().err


@pytest.mark.slow
def test_liquid_frames_carry_the_latent_heat():
    """64-atom SW Si: liquid at 2000 K lies >= 0.25 eV/atom above the crystal at the same T (ΔH_m ~ 0.3 eV)."""
    common = dict(supercell=(2, 2, 2), max_strain=0, vacancies=0, snapshots_per_unit=3, seed=4, progress=False)
    liquid = sampling.sample_configurations("Si", "sw", 3, temperatures=(2000,), **common)
    crystal = sampling.sample_configurations("Si", "sw", 3, temperatures=(2000,), melting_point=2500, **common)
    assert {f.info["config_type"] for f in liquid} == {"liquid"}
    assert {f.info["config_type"] for f in crystal} == {"md_2000K"}
    gap = np.mean([f.info["REF_energy"] / 64 for f in liquid]) - np.mean([f.info["REF_energy"] / 64 for f in crystal])
    assert gap > 0.25


def test_close_pair_variants_move_one_nearest_pair_symmetrically():
    from ase.build import bulk

    from mace_transfer.datagen.sampling import close_pair_variants

    rng = np.random.default_rng(3)
    frames = []
    for k in range(2):
        atoms = bulk("Ge", "diamond", a=5.78, cubic=True).repeat((2, 1, 1))
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.info["sample_index"] = 10 + k
        frames.append(atoms)
    variants = close_pair_variants(frames, 5, (1.6, 2.0), seed=4)
    again = close_pair_variants(frames, 5, (1.6, 2.0), seed=4)
    assert [v.info["pair"] for v in variants] == [v.info["pair"] for v in again]
    for i, v in enumerate(variants):
        base = frames[i % 2]
        a, b = map(int, v.info["pair"].split("-"))
        d = v.info["pair_distance_A"]
        assert 1.6 <= d <= 2.0 and v.info["config_type"] == "close_pair"
        assert v.info["derived_from"] == 10 + i % 2
        assert v.get_distance(a, b, mic=True) == pytest.approx(d, abs=1e-10)
        # b was a's nearest neighbour; the pair's midpoint stays put (minimum image)
        others = [k for k in range(16) if k != a]
        assert others[int(np.argmin(base.get_distances(a, others, mic=True)))] == b
        shift = v.get_scaled_positions() - base.get_scaled_positions(wrap=False)
        shift -= np.round(shift)  # v is wrapped into the cell, base may not be
        moved = {k for k in range(16) if np.abs(shift[k]).max() > 1e-9}
        assert moved <= {a, b}
        mid_v = v.positions[a] + v.get_distance(a, b, mic=True, vector=True) / 2
        mid_0 = base.positions[a] + base.get_distance(a, b, mic=True, vector=True) / 2
        delta = np.linalg.solve(v.cell.array.T, mid_v - mid_0)
        assert np.allclose(delta - np.round(delta), 0, atol=1e-9)
    with pytest.raises(ValueError):
        close_pair_variants(frames, 2, (2.0, 1.6))
