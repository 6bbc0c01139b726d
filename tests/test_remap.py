"""Species remap is exact: the remapped model reproduces the source to float64 round-off."""

import numpy as np
import pytest
import torch
from conftest import energy_forces, make_mace_model, rattled_diamond

from mace_transfer import UserInputError
from mace_transfer.transfer.estimate import estimate_corresponding_states, predict, refit_energy_shift
from mace_transfer.transfer.remap import load_model, parse_element_map, remap_elements

INTERACTIONS = [
    "RealAgnosticResidualInteractionBlock",
    "RealAgnosticInteractionBlock",
    "RealAgnosticDensityResidualInteractionBlock",
    "RealAgnosticResidualNonLinearInteractionBlock",
]


def _e0(model, z):
    zs = [int(x) for x in model.atomic_numbers]
    return float(model.atomic_energies_fn.atomic_energies[..., zs.index(z)])


def _binding(model, atoms):
    """E - ΣE0 (eV) and forces (eV/Å)."""
    energy, forces = energy_forces(model, atoms)
    e0 = sum(_e0(model, z) for z in atoms.numbers)
    return energy - e0, forces


def _as(atoms, mapping):
    out = atoms.copy()
    out.numbers = [mapping.get(int(z), int(z)) for z in out.numbers]
    return out


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_replace_reproduces_source(interaction):
    src = make_mace_model([14], interaction)
    before = {k: v.clone() for k, v in src.state_dict().items()}
    ge = remap_elements(src, {"Si": "Ge"}, atomic_energies={"Ge": -7.25})
    assert [int(z) for z in ge.atomic_numbers] == [32]
    assert _e0(ge, 32) == -7.25
    si_cell = rattled_diamond("Si")
    e_src, f_src = _binding(src, si_cell)
    e_new, f_new = _binding(ge, _as(si_cell, {14: 32}))
    assert abs(e_src) > 1e-3  # a non-trivial energy
    assert e_new == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f_new, f_src, atol=1e-8)
    # the input model is never modified
    for k, v in src.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_identity_map_rereferences_e0_only():
    """Ge:Ge (a classical Ge model as the start of a DFT Ge model): only the E0s change."""
    src = make_mace_model([14, 32])
    new = remap_elements(src, "Ge:Ge", atomic_energies={"Ge": -103.12})
    assert [int(z) for z in new.atomic_numbers] == [14, 32]
    assert _e0(new, 32) == -103.12 and _e0(new, 14) == _e0(src, 14)
    cell = rattled_diamond("Si")
    cell.numbers[::2] = 32
    (e_src, f_src), (e_new, f_new) = energy_forces(src, cell), energy_forces(new, cell)
    n_ge = int((cell.numbers == 32).sum())
    assert e_new - e_src == pytest.approx(n_ge * (-103.12 - _e0(src, 32)), abs=1e-6)
    np.testing.assert_allclose(f_new, f_src, atol=1e-8)
    with pytest.raises(UserInputError, match="already in the model"):
        remap_elements(src, "Ge:Ge", mode="extend")


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_extend_keeps_source_and_copies_target(interaction):
    src = make_mace_model([14], interaction)
    sige = remap_elements(src, "Si:Ge", mode="extend")
    assert [int(z) for z in sige.atomic_numbers] == [14, 32]
    si_cell = rattled_diamond("Si", repeat=(1, 1, 1))
    e_src, f_src = _binding(src, si_cell)
    e_si, f_si = _binding(sige, si_cell)
    e_ge, f_ge = _binding(sige, _as(si_cell, {14: 32}))
    assert e_si == pytest.approx(e_src, abs=1e-6)
    assert e_ge == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f_si, f_src, atol=1e-8)
    np.testing.assert_allclose(f_ge, f_src, atol=1e-8)
    # Ge is an exact copy of Si, so a mixed cell has the same binding energy as pure Si
    mixed = si_cell.copy()
    mixed.numbers[::2] = 32
    e_mix, f_mix = _binding(sige, mixed)
    assert e_mix == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f_mix, f_src, atol=1e-8)


def test_multi_element_source_with_reordering():
    src = make_mace_model([6, 14], seed=3)  # C + Si
    cell = rattled_diamond("Si", a=5.0)
    cell.numbers[[0, 3, 5]] = 6
    e_src, f_src = _binding(src, cell)
    # Si -> Ge keeps the order [C, Ge]
    cge = remap_elements(src, {"Si": "Ge"})
    assert [int(z) for z in cge.atomic_numbers] == [6, 32]
    e1, f1 = _binding(cge, _as(cell, {14: 32}))
    assert e1 == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f1, f_src, atol=1e-8)
    # C -> Sn reorders: [Si, Sn], tensors permuted
    sisn = remap_elements(src, {"C": "Sn"})
    assert [int(z) for z in sisn.atomic_numbers] == [14, 50]
    e2, f2 = _binding(sisn, _as(cell, {6: 50}))
    assert e2 == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f2, f_src, atol=1e-8)
    # swapping both elements is a pure permutation
    swapped = remap_elements(src, {"C": "Si", "Si": "C"})
    e3, f3 = _binding(swapped, _as(cell, {6: 14, 14: 6}))
    assert e3 == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f3, f_src, atol=1e-8)
    # extend a two-element model: C, Si + Ge (copy of Si)
    csige = remap_elements(src, {"Si": "Ge"}, mode="extend")
    assert [int(z) for z in csige.atomic_numbers] == [6, 14, 32]
    mixed = cell.copy()
    mixed.numbers[[1, 2]] = 32
    e4, f4 = _binding(csige, mixed)
    assert e4 == pytest.approx(e_src, abs=1e-6)
    np.testing.assert_allclose(f4, f_src, atol=1e-8)


@pytest.mark.parametrize("s,k", [(1.042, 0.89), (0.95, 1.3)])
def test_corresponding_states_rescale(s, k):
    src = make_mace_model([14])
    ge = remap_elements(src, {"Si": "Ge"}, length_scale=s, energy_scale=k, atomic_energies={"Ge": -1.0})
    assert float(ge.r_max) == pytest.approx(float(src.r_max) * s)
    si_cell = rattled_diamond("Si")
    e_src, f_src = _binding(src, si_cell)
    ge_cell = _as(si_cell, {14: 32})
    ge_cell.set_cell(ge_cell.cell * s, scale_atoms=True)
    e_new, f_new = _binding(ge, ge_cell)
    assert e_new == pytest.approx(k * e_src, abs=1e-6)
    np.testing.assert_allclose(f_new, (k / s) * f_src, atol=1e-8)


def test_save_reload_and_calculator(tmp_path):
    from mace.calculators import MACECalculator

    ge = remap_elements(make_mace_model([14]), {"Si": "Ge"}, atomic_energies={"Ge": -4.0})
    path = tmp_path / "ge.model"
    torch.save(ge, path)
    reloaded = load_model(path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    atoms = _as(rattled_diamond("Si"), {14: 32})
    atoms.calc = calc
    e_file = atoms.get_potential_energy()
    e_mem, _ = energy_forces(reloaded, atoms)
    assert e_file == pytest.approx(e_mem, abs=1e-9)
    assert np.isfinite(atoms.get_forces()).all()


@pytest.mark.slow
def test_lammps_export_accepts_remapped(tmp_path):
    import subprocess
    import sys

    ge = remap_elements(make_mace_model([14]), {"Si": "Ge"}, atomic_energies={"Ge": -4.0})
    path = tmp_path / "ge.model"
    torch.save(ge, path)
    subprocess.run(
        [sys.executable, "-m", "mace.cli.create_lammps_model", str(path)], check=True, cwd=tmp_path
    )
    assert (tmp_path / "ge.model-lammps.pt").is_file()


def test_estimate_corresponding_states_recovers_known_scales():
    """Target data made by a rescaled copy of the source: the estimate recovers s and k."""
    src = make_mace_model([14], correlation=2)
    s_true, k_true = 1.04, 0.9
    target = remap_elements(src, {"Si": "Ge"}, length_scale=s_true, energy_scale=k_true)
    frames = []
    for seed in range(3):
        atoms = _as(rattled_diamond("Si", a=5.43 * s_true, rattle=0.05, seed=seed), {14: 32})
        _, forces = energy_forces(target, atoms)
        atoms.arrays["REF_forces"] = forces
        frames.append(atoms)
    est = estimate_corresponding_states(src, {14: 32}, frames, length_scale=s_true)
    assert est["length_scale"] == pytest.approx(s_true)
    assert est["energy_scale"] == pytest.approx(k_true, rel=1e-6)


def test_errors():
    src = make_mace_model([14])
    with pytest.raises(UserInputError, match="not in the model"):
        remap_elements(src, {"C": "Ge"})
    with pytest.raises(UserInputError, match="unknown element"):
        parse_element_map("Si:Xx")
    with pytest.raises(UserInputError, match="twice"):
        parse_element_map("Si:Ge,C:Ge")
    with pytest.raises(UserInputError, match="rescale"):
        remap_elements(src, {"Si": "Ge"}, mode="extend", length_scale=1.1)
    with pytest.raises(UserInputError, match="already in the model"):
        remap_elements(make_mace_model([14, 32]), {"Si": "Ge"})
    with pytest.raises(UserInputError, match="is not a MACE model"):
        remap_elements(torch.nn.Linear(2, 2), {"Si": "Ge"})


def test_load_model_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_model(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_text("not a model")
    with pytest.raises(UserInputError, match="not a readable MACE model"):
        load_model(bad)
    other = tmp_path / "other.model"
    torch.save(torch.nn.Linear(2, 2), other)
    with pytest.raises(UserInputError, match="not a MACE model"):
        load_model(other)


def test_refit_energy_shift_zeroes_mean_energy_error_keeps_forces():
    src = make_mace_model([14])
    frames = []
    for seed in range(3):
        atoms = rattled_diamond("Si", seed=seed)
        energy, _ = predict(src, atoms)
        atoms.info["REF_energy"] = energy - 0.37 * len(atoms) + 0.01 * seed
        frames.append(atoms)
    new, delta = refit_energy_shift(src, frames)
    assert delta == pytest.approx(-0.37 + 0.01 / len(frames[0]), abs=1e-9)
    residual = sum(a.info["REF_energy"] - predict(new, a)[0] for a in frames)
    assert residual == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(predict(new, frames[0])[1], predict(src, frames[0])[1], atol=1e-10)


def test_remap_command(tmp_path, capsys):
    from mace_transfer.cli import _guarded, _remap

    src = tmp_path / "si.model"
    torch.save(make_mace_model([14]), src)
    out = tmp_path / "ge.model"
    argv = [str(src), str(out), "--element_map", "Si:Ge", "--E0s", '{"Ge": -4.5}']
    assert _guarded(_remap, argv) == 0
    ge = load_model(out)
    assert [int(z) for z in ge.atomic_numbers] == [32]
    assert float(ge.atomic_energies_fn.atomic_energies.reshape(-1)[0]) == -4.5
    # never overwrites silently; bad input is one line, exit 2
    assert _guarded(_remap, argv) == 2
    assert "exists" in capsys.readouterr().err
    assert _guarded(_remap, [str(src), str(tmp_path / "x.model"), "--element_map", "Ge:Sn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not in the model" in err


def test_cueq_layout_model_is_refused_with_conversion_hint():
    from types import SimpleNamespace

    model = make_mace_model([14])
    model.cueq_config = SimpleNamespace(enabled=True)
    with pytest.raises(UserInputError, match="convert_cueq_e3nn"):
        remap_elements(model, {"Si": "Ge"})


def test_auto_length_scale_from_volume_per_atom():
    from mace_transfer.transfer.estimate import _source_equilibrium_crystal, atomic_length

    bulk_ge = rattled_diamond("Ge", a=5.654, rattle=0.0)
    assert atomic_length([bulk_ge]) == pytest.approx((5.654**3 / 8) ** (1 / 3))
    src = make_mace_model([14], correlation=2, seed=5)
    crystal = _source_equilibrium_crystal(src, "Si")
    s_true, k_true = 1.041, 0.89
    target = remap_elements(src, {"Si": "Ge"}, length_scale=s_true, energy_scale=k_true)
    frames = []
    for seed in range(2):
        atoms = crystal.repeat((2, 1, 1))
        atoms.set_cell(atoms.cell * s_true, scale_atoms=True)
        atoms.rattle(0.03, seed=seed)
        atoms.numbers = [32] * len(atoms)
        atoms.arrays["REF_forces"] = energy_forces(target, atoms)[1]
        frames.append(atoms)
    est = estimate_corresponding_states(src, "Si:Ge", frames)
    assert est["method"] == "volume per atom"
    assert est["length_scale"] == pytest.approx(s_true, rel=1e-9)
    assert est["energy_scale"] == pytest.approx(k_true, rel=1e-6)


def test_cueq_layout_file_goes_through_maces_converter_or_one_line(tmp_path):
    """load_model hands a cuEq-layout file to MACE's convert_cueq_e3nn; where that cannot convert it
    (here: a model flagged cuEq without cuEquivariance's tensors), the refusal is one line with the
    command to run where cuEquivariance is installed. The real conversion is a GPU row
    (tests/test_gpu.py, scripts/gpu_checks.sh)."""
    from types import SimpleNamespace

    from mace_transfer.transfer.remap import load_model

    model = make_mace_model([14])
    model.cueq_config = SimpleNamespace(enabled=True)
    torch.save(model, tmp_path / "cueq.model")
    with pytest.raises(UserInputError, match="convert_cueq_e3nn IN.model") as info:
        load_model(tmp_path / "cueq.model")
    assert "\n" not in str(info.value) and "cuEquivariance layout" in str(info.value)
