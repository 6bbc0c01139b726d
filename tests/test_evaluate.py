"""Tests of mace_transfer.evaluate: physics checked on the classical references themselves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from mace_transfer import UserInputError
from mace_transfer import evaluate as ev
from mace_transfer.evaluate import properties as props
from mace_transfer.evaluate.close_contact import _softening_distance
from mace_transfer.datagen.classical import calculator
from mace_transfer.evaluate.md import MDSettings, angular_distribution, curve_difference
from mace_transfer.evaluate.md import md_stability
from mace_transfer.evaluate.md import radial_distribution

A_SW_GE = 5.654  # Ding & Andersen SW-Ge lattice constant, Å


# --------------------------------------------------------------------------- helpers
class ScaledForces(Calculator):
    """Wraps a calculator and multiplies its forces by ``factor``; NaN from call ``nan_after``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, inner, factor=1.0, nan_after=None):
        super().__init__()
        self.inner, self.factor, self.nan_after, self.calls = inner, factor, nan_after, 0

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        copy = self.atoms.copy()
        copy.calc = self.inner
        forces = self.factor * copy.get_forces()
        if self.nan_after is not None and self.calls > self.nan_after:
            forces[:] = np.nan
        self.results = {"energy": copy.get_potential_energy(), "forces": forces}


def labelled_frames(calc, element="Ge", a=A_SW_GE, n=4):
    """Rattled and strained 8-atom diamond cells labelled by ``calc`` with MACE's keys."""
    frames = []
    for i in range(n):
        atoms = props.diamond(element, a * (1 + 0.01 * i))
        atoms.rattle(0.05, seed=i)
        atoms.calc = calc
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.info["config_type"] = "bulk" if i < n // 2 else "strained"
        atoms.calc = None
        frames.append(atoms)
    return frames


def write_frames(path, frames):
    import ase.io

    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="module")
def mace_model_path(tmp_path_factory):
    """A random-weight single-element (Ge) MACE model saved as a .model file."""
    import mace  # noqa: F401
    import torch
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=4.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=1,
        hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([-3.0]), avg_num_neighbors=12.0, atomic_numbers=[32],
        correlation=2, gate=torch.nn.functional.silu, atomic_inter_scale=1.0,
        atomic_inter_shift=0.0)
    path = tmp_path_factory.mktemp("mace") / "random_ge.model"
    torch.save(model, path)
    return path


# --------------------------------------------------------------------------- errors + lattice
def test_reference_as_model_has_zero_error_and_known_lattice(tmp_path):
    sw_ge = calculator("Ge", "sw")
    isolated = Atoms("Ge", cell=np.eye(3) * 12.0, pbc=False)  # E0 frame: dropped from errors
    isolated.info.update(REF_energy=0.0, config_type="IsolatedAtom")
    test_file = write_frames(tmp_path / "test.xyz", [isolated] + labelled_frames(sw_ge))
    metrics = ev.evaluate(sw_ge, test_file, "sw-ge", labels=["sw"], out=tmp_path / "out",
                          skip=("md", "structure", "vacancy"), progress=False)
    errors = metrics["models"]["sw"]["errors"]
    # extxyz stores positions to 1e-8 Å: the only source of error
    assert errors["overall"]["energy_mae_meV_per_atom"] < 1e-4
    assert errors["overall"]["force_rmse_meV_per_A"] < 1e-3
    assert set(errors["per_config_type"]) == {"bulk", "strained"}
    assert errors["overall"]["n_configs"] == 4
    properties = metrics["models"]["sw"]["properties"]
    assert abs(properties["lattice_constant_A"] - A_SW_GE) < 0.005
    assert properties["cohesive_energy_eV"] == pytest.approx(2 * 1.93, abs=1e-3)  # SW: -2 eps
    comparison = metrics["models"]["sw"]["comparison"]  # same potential: zero error
    assert len(comparison) >= 10
    assert all(abs(row["relative_error"]) < 1e-8 for row in comparison.values())
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["element"] == "Ge" and "_parity" not in json.dumps(on_disk)
    assert (tmp_path / "out" / "force_parity.png").stat().st_size > 1000
    assert "| sw | all | 4 |" in (tmp_path / "out" / "summary.md").read_text()
    # in memory (no file round-off) the error is exactly zero
    exact = ev.test_errors(sw_ge, labelled_frames(sw_ge, n=2), progress=False)
    assert exact["overall"]["force_mae_meV_per_A"] == 0.0


def test_sw_si_elastic_constants_vacancy_match_literature():
    """Stillinger-Weber Si: C11 151.4, C12 76.4, relaxed C44 56.4 GPa; relaxed vacancy 2.82 eV."""
    sw_si = calculator("Si", "sw")
    lattice = props.lattice_and_bulk_modulus(sw_si, "Si")
    assert lattice["lattice_constant_A"] == pytest.approx(5.431, abs=0.002)
    elastic = props.elastic_constants(sw_si, "Si", lattice["lattice_constant_A"])
    assert elastic["C11_GPa"] == pytest.approx(151.4, rel=0.01)
    assert elastic["C12_GPa"] == pytest.approx(76.4, rel=0.01)
    assert elastic["C44_relaxed_GPa"] == pytest.approx(56.4, rel=0.01)
    assert elastic["C44_unrelaxed_GPa"] > 1.5 * elastic["C44_relaxed_GPa"]
    # the E-V fit and the stress-strain route must agree: B = (C11 + 2 C12) / 3
    assert lattice["bulk_modulus_GPa"] == pytest.approx(
        (elastic["C11_GPa"] + 2 * elastic["C12_GPa"]) / 3, rel=0.005)
    vacancy = props.vacancy_formation_energy(sw_si, "Si", lattice["lattice_constant_A"])
    assert vacancy["vacancy_formation_unrelaxed_eV"] == pytest.approx(2 * 2.1683, abs=1e-3)
    assert vacancy["vacancy_formation_eV"] == pytest.approx(2.82, abs=0.05)


def test_phonons_match_frozen_phonon_and_are_supercell_exact():
    sw_ge = calculator("Ge", "sw")
    result = props.phonons_gamma_x(sw_ge, "Ge", A_SW_GE, supercell=2)
    larger = props.phonons_gamma_x(sw_ge, "Ge", A_SW_GE, supercell=4)
    for key in ("phonon_gamma_optical_THz", "phonon_X_TA_THz", "phonon_X_LA_THz",
                "phonon_X_TO_THz"):
        assert result[key] == pytest.approx(larger[key], rel=1e-6)  # Γ and X are commensurate
    assert result["phonon_gamma_acoustic_max_abs_THz"] < 1e-3
    assert 0 < result["phonon_X_TA_THz"] < result["phonon_X_LA_THz"] < result["phonon_X_TO_THz"]
    # independent frozen phonon: move one atom of the 2-atom cell (a Γ displacement pattern);
    # omega^2 = 2 Phi_00 / m by the acoustic sum rule
    primitive = bulk("Ge", "diamond", a=A_SW_GE)
    primitive.calc = sw_ge
    delta = 1e-3
    forces = []
    for sign in (1, -1):
        primitive.positions[0, 0] += sign * delta
        forces.append(primitive.get_forces()[0, 0])
        primitive.positions[0, 0] -= sign * delta
    phi = -(forces[0] - forces[1]) / (2 * delta)  # eV/Å²
    omega = np.sqrt(2 * phi / primitive.get_masses()[0])  # in ASE units (1/ASE time)
    frequency_thz = omega * units.fs / (2 * np.pi) * 1e3  # 1/fs -> THz
    assert result["phonon_gamma_optical_THz"] == pytest.approx(frequency_thz, rel=1e-3)


# --------------------------------------------------------------------------- MD
def test_md_stable_reference_and_broken_models_flagged():
    sw_ge = calculator("Ge", "sw")
    settings = MDSettings(temperatures_K=(300,), seeds=(0, 1), steps=100, repeat=1)
    stable = md_stability(sw_ge, "Ge", A_SW_GE, settings, progress=False)
    assert stable["max_stable_temperature_K"] == 300
    assert all(run["failure"] is None for run in stable["runs"])
    assert stable["atom_steps_per_s"] > 0
    # forces pointing uphill pump energy in: caught by the energy-jump criterion
    uphill = md_stability(ScaledForces(sw_ge, -1.0), "Ge", A_SW_GE, settings, progress=False)
    assert uphill["max_stable_temperature_K"] is None
    assert all("energy jump" in run["failure"] for run in uphill["runs"])
    assert all(0 < run["time_to_failure_ps"] < 0.1 for run in uphill["runs"])
    # NaN forces from the 20th call on
    nan = md_stability(ScaledForces(sw_ge, 1.0, nan_after=20), "Ge", A_SW_GE,
                       MDSettings(temperatures_K=(300,), seeds=(0,), steps=50, repeat=1),
                       progress=False)
    assert nan["runs"][0]["failure"] is not None
    assert nan["runs"][0]["time_to_failure_ps"] <= 0.021
    # a floor above the bond length (2.45 Å) must trip the minimum-distance criterion
    floor = md_stability(sw_ge, "Ge", A_SW_GE,
                         MDSettings(temperatures_K=(600,), seeds=(0,), steps=50, repeat=1,
                                    min_distance_A=2.6), progress=False)
    assert "closer than 2.6" in floor["runs"][0]["failure"]


def test_rdf_and_adf_of_perfect_diamond():
    crystal = props.diamond("Ge", A_SW_GE, 2)
    r, g = radial_distribution([crystal], r_max=5.0, bins=500)
    bond = np.sqrt(3) / 4 * A_SW_GE
    assert r[np.nonzero(g)[0][0]] == pytest.approx(bond, abs=0.01)  # first shell
    density = len(crystal) / crystal.get_volume()
    first_shell = r < 0.5 * (bond + A_SW_GE / np.sqrt(2))
    coordination = np.sum(4 * np.pi * r[first_shell] ** 2 * density * g[first_shell]) * (r[1] - r[0])
    assert coordination == pytest.approx(4.0, rel=0.02)
    theta, p = angular_distribution([crystal], cutoff=1.3 * bond, bins=180)
    assert theta[np.argmax(p)] == pytest.approx(np.degrees(np.arccos(-1 / 3)), abs=1.0)
    assert np.sum(p) * (theta[1] - theta[0]) == pytest.approx(1.0)
    # the comparison metric: 0 for identical curves, exactly 1 for a curve twice the reference
    assert curve_difference(r, g, r, g) == 0.0
    assert curve_difference(r, 2 * g, r, g) == pytest.approx(1.0, rel=1e-12)
    compared = ev.compare_structure({"300": {"rdf": {"r_A": r, "g": g}}},
                                    {"300": {"rdf": {"r_A": r, "g": g}}, "900": {}})
    assert compared["300"]["rdf_difference"] == 0.0 and compared["900"]["rdf_difference"] is None


# --------------------------------------------------------------------------- MACE models
def test_mace_model_zero_error_on_its_own_labels(tmp_path, mace_model_path):
    model = ev.load_model(mace_model_path)
    assert model.elements == ["Ge"]
    frames = labelled_frames(model.calc, n=2)
    result = ev.test_errors(ev.load_model(mace_model_path).calc, frames, progress=False)
    assert result["overall"]["force_mae_meV_per_A"] < 1e-6
    assert result["overall"]["energy_mae_meV_per_atom"] < 1e-6


def test_bad_input_is_one_line_user_error(tmp_path, mace_model_path):
    sw_ge = calculator("Ge", "sw")
    good = write_frames(tmp_path / "good.xyz", labelled_frames(sw_ge, n=1))
    with pytest.raises(UserInputError, match="does not exist"):
        ev.evaluate(tmp_path / "missing.model", good, progress=False)
    not_a_model = tmp_path / "notes.model"
    not_a_model.write_text("hello")
    with pytest.raises(UserInputError, match="is not a MACE model"):
        ev.evaluate(not_a_model, good, progress=False)
    no_forces = labelled_frames(sw_ge, n=1)
    del no_forces[0].arrays["REF_forces"]
    with pytest.raises(UserInputError, match="no REF_forces"):
        ev.evaluate(sw_ge, write_frames(tmp_path / "noforces.xyz", no_forces), progress=False)
    silicon = write_frames(tmp_path / "si.xyz",
                           labelled_frames(calculator("Si", "sw"), "Si", 5.431, n=1))
    with pytest.raises(UserInputError, match="has no Si"):
        ev.evaluate(mace_model_path, silicon, progress=False)
    with pytest.raises(UserInputError, match="cannot skip"):
        ev.evaluate(sw_ge, good, skip=("everything",), progress=False)
    with pytest.raises(UserInputError, match="unknown key"):
        ev.resolve_reference({"lattice_constant": 5.65})
    with pytest.raises(UserInputError, match="holds only Ge"):
        ev.evaluate(sw_ge, good, "sw-si", skip=ev.SKIPPABLE[1:], progress=False)


def test_cli_writes_report_and_rejects_bad_input(tmp_path, mace_model_path, capsys):
    from mace_transfer.cli import _eval, _guarded

    test_file = write_frames(tmp_path / "test.xyz", labelled_frames(calculator("Ge", "sw"), n=2))
    reference = tmp_path / "dft.json"
    reference.write_text(json.dumps({"element": "Ge", "label": "PBE", "lattice_constant_A": 5.76}))
    out = tmp_path / "report"
    code = _guarded(_eval, [str(mace_model_path), "--test", str(test_file), "--reference",
                            str(reference), "--out", str(out), "--labels", "random",
                            "--skip", "md,structure,elastic,vacancy,phonons", "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    row = metrics["models"]["random"]["comparison"]["lattice_constant_A"]
    assert row["reference"] == 5.76
    if row["value"] is not None:
        assert row["relative_error"] == pytest.approx((row["value"] - 5.76) / 5.76)
    assert metrics["models"]["random"]["errors"]["overall"]["force_mae_meV_per_A"] > 0
    assert (out / "force_parity.png").exists() and (out / "summary.md").exists()
    err = capsys.readouterr().err  # --no-progress drops the bars, not the stage lines
    assert "random: errors on 2 test configurations" in err and "wrote " in err
    code = _guarded(_eval, [str(tmp_path / "nope.model"), "--test", str(test_file)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "does not exist" in err
    code = _guarded(_eval, [str(mace_model_path), "--reference", str(reference)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--test TEST.xyz is required unless --skip errors" in err
    code = _guarded(_eval, [str(mace_model_path), "--reference", str(reference), "--out", str(tmp_path / "no_test"),
                            "--skip", "errors,md,structure,elastic,vacancy,phonons", "--no-progress"])
    (entry,) = json.loads((tmp_path / "no_test" / "metrics.json").read_text())["models"].values()
    assert code == 0 and "errors" not in entry and "lattice_constant_A" in entry["properties"]


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_full_evaluation_sw_vs_tersoff_ge(tmp_path):
    """Default-sized run (64 atoms, full ladder) of Tersoff-Ge against SW-Ge, shorter MD."""
    metrics = ev.evaluate([calculator("Ge", "tersoff"), calculator("Ge", "sw")],
                          write_frames(tmp_path / "t.xyz", labelled_frames(calculator("Ge", "sw"))),
                          "sw-ge", labels=["tersoff", "sw"], out=tmp_path / "out", md_steps=300,
                          seeds=(0,), progress=False)
    for label in ("tersoff", "sw"):
        assert metrics["models"][label]["md_stability"]["max_stable_temperature_K"] == 2500
    assert metrics["models"]["sw"]["structure_comparison"]["300"]["rdf_difference"] < 1e-6
    assert (tmp_path / "out" / "rdf_2500K.png").exists()


@pytest.mark.slow
def test_random_mace_model_unstable_at_modest_temperature(mace_model_path):
    """A random-weight MACE is nearly flat (no repulsion): atoms drift into each other at 300 K."""
    model = ev.load_model(mace_model_path)
    result = md_stability(model.calc, "Ge", A_SW_GE,
                          MDSettings(temperatures_K=(300,), seeds=(0,), steps=1000, repeat=1),
                          progress=False)
    assert result["max_stable_temperature_K"] is None
    assert "closer than" in result["runs"][0]["failure"]


def test_survival_pools_models_trained_with_several_seeds(tmp_path):
    from mace_transfer.evaluate import report as evaluate_report

    def entry(failures):
        return {"md_stability": {"runs": [
            {"temperature_K": 300.0, "seed": 0, "time_ps": 1.0, "failure": None, "time_to_failure_ps": None},
            {"temperature_K": 900.0, "seed": 0, "time_ps": 1.0, "failure": "pair" if failures else None,
             "time_to_failure_ps": 0.5 if failures else None}]}}

    result = {"models": {"transfer_s0": entry(False), "transfer_s1": entry(True), "sw": entry(True),
                         "no_md": {}}}
    assert evaluate_report.survival_groups(result) == {"transfer": ["transfer_s0", "transfer_s1"], "sw": ["sw"]}
    single = {"models": {"a_s0": entry(False), "b_s0": entry(True)}}
    assert evaluate_report.survival_groups(single) == {"a_s0": ["a_s0"], "b_s0": ["b_s0"]}
    assert evaluate_report.plot_survival(result, tmp_path)[0].stat().st_size > 1000


def test_close_contact_scan_geometry_and_sw_wall(tmp_path, mace_model_path, capsys):
    """One bond compressed along [111], nothing else moved; SW-Ge has a wall over the whole scan,
    and SW scored against its own labels has zero error; the CLI reports both curves."""
    from ase.io import write

    from mace_transfer.cli import _eval, _guarded
    from mace_transfer.datagen.sampling import close_contact_scan

    a = A_SW_GE
    frames = close_contact_scan("Ge", a, [2.1, 1.7, 1.3])
    crystal = frames[0]
    assert len(crystal) == 16 and crystal.info["pair_distance_A"] == pytest.approx(np.sqrt(3) * a / 4)
    j = int(crystal.info["pair"].split("-")[1])
    for frame, d in zip(frames[1:], (2.1, 1.7, 1.3)):
        assert frame.get_distance(0, j) == pytest.approx(d, abs=1e-12)
        np.testing.assert_array_equal(frame.positions[1:], crystal.positions[1:])
        assert frame.get_distances(0, range(1, 16), mic=True).min() == pytest.approx(d, abs=1e-12)
    with pytest.raises(ValueError, match="outside"):
        close_contact_scan("Ge", a, [2.6])

    sw = calculator("Ge", "sw")
    for frame in frames:
        labelled = frame.copy()
        labelled.calc = sw
        frame.info["REF_energy"] = labelled.get_potential_energy()
    curve = ev.close_contact_curve(sw, frames)
    assert curve["energy_eV"][0] == 0.0
    assert np.all(np.diff(curve["energy_eV"]) > 0)  # rises at every step as the pair closes
    assert curve["softening_A"] is None and curve["reference_softening_A"] is None
    assert curve["max_abs_error_eV"] == 0.0
    assert curve["energy_eV"][-1] > 5.0  # SW at 1.3 Å: many eV above the crystal
    assert _softening_distance(np.array([2.5, 2.0, 1.5, 1.0]), np.array([0, 2.0, 3.0, 1.0])) == 1.5

    scan_file = tmp_path / "scan.xyz"
    write(scan_file, frames[::-1], format="extxyz")  # any order: the reader sorts longest pair first
    out = tmp_path / "report"
    code = _guarded(_eval, [str(mace_model_path), "--close-contact", str(scan_file), "--out", str(out),
                            "--labels", "random", "--no-progress", "--threads", "1",
                            "--skip", "errors,md,structure,lattice,elastic,vacancy,phonons"])
    assert code == 0
    scan = json.loads((out / "metrics.json").read_text())["models"]["random"]["close_contact"]
    assert scan["distance_A"] == pytest.approx([crystal.info["pair_distance_A"], 2.1, 1.7, 1.3])
    assert scan["reference_eV"] == pytest.approx(curve["energy_eV"])
    assert "Short-range wall" in (out / "summary.md").read_text() and (out / "close_contact.png").exists()
    plain = tmp_path / "plain.xyz"
    write(plain, [bulk("Ge", "diamond", a=a, cubic=True)] * 2, format="extxyz")
    capsys.readouterr()
    code = _guarded(_eval, [str(mace_model_path), "--close-contact", str(plain), "--out", str(out),
                            "--skip", "errors,md,structure,lattice,elastic,vacancy,phonons"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "pair_distance_A" in err
    code = _guarded(_eval, [str(mace_model_path), "--close-contact", str(scan_file), "--threads", "0",
                            "--skip", "errors,md,structure,lattice,elastic,vacancy,phonons"])
    assert code == 2 and "--threads must be >= 1" in capsys.readouterr().err


def test_cohesive_energy_only_for_a_model_that_knows_the_lone_atom(si_model, tmp_path):
    """A MACE model's lone atom is E0 + its readout of an atom without neighbours (+ the shift): not
    trained, eV off. Such a model gets no cohesive-energy row; one whose lone atom is exactly its E0
    (all readout weights zero, shift zero) gets E0 - E_bulk/atom, as SW does with its exact zero."""
    from mace.calculators import MACECalculator

    from mace_transfer.evaluate.reference import compare

    path = tmp_path / "si.model"
    torch.save(si_model, path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    e0 = props.isolated_atom_reference(calc, "Si")
    assert e0 == pytest.approx(float(si_model.atomic_energies_fn.atomic_energies.reshape(-1)[0]))
    values = props.lattice_and_bulk_modulus(calc, "Si", guess=5.43)
    assert "cohesive_energy_eV" not in values and "never trained on an isolated atom" in values["cohesive_energy_note"]
    rows = compare(values, {"lattice_constant_A": 5.43, "cohesive_energy_eV": 4.63})
    assert "cohesive_energy_eV" not in rows and "lattice_constant_A" in rows
    assert props.isolated_atom_reference(calculator("Si", "sw"), "Si") is None  # exact lone atom: reported
    with torch.no_grad():  # every atom's energy is then exactly its E0, in the crystal too
        for readout in si_model.readouts:
            for p in readout.parameters():
                p.zero_()
        si_model.scale_shift.shift.zero_()
    torch.save(si_model, path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    assert props.lattice_and_bulk_modulus(calc, "Si", guess=5.43)["cohesive_energy_eV"] == pytest.approx(0.0, abs=1e-6)


def test_report_has_no_row_for_a_property_every_model_declined():
    from mace_transfer.evaluate.report import summary_markdown

    note = "not reported: the model's lone Ge atom is -1.473 eV from its E0 (never trained on an isolated atom)"
    result = {"element": "Ge", "reference": {"label": "sw-ge", "properties": {
                  "lattice_constant_A": 5.654, "cohesive_energy_eV": 3.86}},
              "models": {"transfer": {"source": "t.model", "properties": {
                  "lattice_constant_A": 5.616, "cohesive_energy_note": note}}}}
    text = summary_markdown(result)
    assert "| lattice constant a0 |" in text and "| cohesive energy |" not in text
    assert f"- transfer: cohesive energy {note}" in text
    result["models"]["sw"] = {"source": "sw", "properties": {"lattice_constant_A": 5.654, "cohesive_energy_eV": 3.86}}
    assert "| cohesive energy |" in summary_markdown(result)  # one model reports it: the row is back


def test_stress_error_is_the_strain_derivative_and_exact_in_voigt_order():
    """The stress the error code compares is ASE's (1/V) dE/dε in Voigt order xx yy zz yz xz xy:
    a reference built from a central finite difference of the SW energy gives a stress MAE of
    ~0, one shifted by 1 meV/Å³ in one component gives exactly 1/6 meV/Å³, and frames without a
    reference stress count for energy and forces only."""
    import numpy as np

    sw_ge = calculator("Ge", "sw")
    atoms = labelled_frames(sw_ge, n=1)[0]
    volume, h = atoms.get_volume(), 1e-5
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    reference = []
    for i, j in pairs:
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strain = np.eye(3)
            strain[i, j] += sign * h / (1 if i == j else 2)
            strain[j, i] += 0 if i == j else sign * h / 2
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            strained.calc = sw_ge
            energies.append(strained.get_potential_energy())
        reference.append((energies[0] - energies[1]) / (2 * h) / volume)
    atoms.info["REF_stress"] = np.array(reference)
    exact = ev.test_errors(sw_ge, [atoms], progress=False)["overall"]
    assert exact["stress_mae_meV_per_A3"] < 1e-3 and exact["n_stress_configs"] == 1
    shifted = atoms.copy()
    shifted.info["REF_stress"] = np.array(reference) + np.array([0, 0, 0, 1e-3, 0, 0])
    off = ev.test_errors(sw_ge, [shifted], progress=False)["overall"]
    assert off["stress_mae_meV_per_A3"] == pytest.approx(1 / 6, abs=1e-3)
    del shifted.info["REF_stress"]
    none = ev.test_errors(sw_ge, [shifted], progress=False)["overall"]
    assert none["stress_mae_meV_per_A3"] is None and none["n_stress_configs"] == 0


def test_fitted_energy_zero_removes_exactly_a_constant_per_atom():
    """A model whose energies sit 0.7 eV/atom off the labels (another code's energy zero) has an
    energy MAE of 700 meV/atom raw and 0 once its zero is fitted on other cells."""
    from mace_transfer.evaluate.errors import energy_mae_with_fitted_zero

    sw_ge = calculator("Ge", "sw")
    frames = labelled_frames(sw_ge, n=4)
    for atoms in frames:
        atoms.info["REF_energy"] = float(atoms.info["REF_energy"]) + 0.7 * len(atoms)
    errors = ev.test_errors(sw_ge, frames[2:], progress=False)
    assert errors["overall"]["energy_mae_meV_per_atom"] == pytest.approx(700.0, abs=1e-3)
    fitted = energy_mae_with_fitted_zero(sw_ge, frames[:2], frames[2:])
    assert fitted["shift_eV_per_atom"]["Ge"] == pytest.approx(0.7, abs=1e-7)
    assert fitted["energy_mae_meV_per_atom"] < 1e-3
    # the test energies already predicted by test_errors give the same answer without a second pass
    assert energy_mae_with_fitted_zero(sw_ge, frames[:2], frames[2:], test_energies=errors["_energies"]) == fitted


def test_two_element_model_on_an_alloy_test_set_needs_no_crystal(tmp_path):
    """Errors alone (every crystal part skipped, no reference): a Si+Ge calculator on SiGe cells is
    evaluated without asking which element's crystal to measure, exactly (its own labels)."""
    from conftest import labelled
    from mace_transfer.datagen import alloy

    calc = alloy.tersoff_sige_calculator()
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(3):
        cell = alloy.alloy_cell(0.5, rng, supercell=(1, 1, 1))
        cell.positions += rng.normal(0, 0.05, size=cell.positions.shape)
        frames.append(cell)
    test_file = write_frames(tmp_path / "alloy.xyz", labelled(frames, calc))
    crystal_parts = ("md", "structure", "lattice", "elastic", "vacancy", "phonons")
    metrics = ev.evaluate(calc, test_file, labels=["tersoff"], out=tmp_path / "out", skip=crystal_parts,
                          progress=False)
    assert metrics["element"] is None
    assert metrics["models"]["tersoff"]["errors"]["overall"]["force_rmse_meV_per_A"] < 1e-3
    assert "properties" not in metrics["models"]["tersoff"]
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# Evaluation: test errors")
    with pytest.raises(UserInputError, match="which element"):  # a crystal part asked for: as before
        ev.evaluate(calc, test_file, labels=["tersoff"], skip=crystal_parts[1:], progress=False)
