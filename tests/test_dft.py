"""Tests of mace_transfer.dft: k-point rule, CP2K input/output handling, resumable labelling.

The bookkeeping tests use ASE's EMT (Cu) as a stand-in engine; the ``slow`` tests run real CP2K.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import CalculationFailed
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.units import GPa, Bohr, Hartree

from mace_transfer.datagen import dft
from mace_transfer.datagen.dft import labeller
from mace_transfer.cli import label_main


# ----------------------------------------------------------------------------- k-points / input
def test_kpoint_mesh_density_rule():
    """|b| = 2π/a for cubic cells; doubling a cell halves its mesh along that axis."""
    a = 5.43
    si8 = bulk("Si", "diamond", a=a, cubic=True)
    n = int(np.ceil(2 * np.pi / a / 0.3))
    assert n == 4
    assert dft.kpoint_mesh(si8.cell, si8.pbc, 0.3) == (4, 4, 4)
    assert dft.kpoint_mesh(si8.repeat((2, 1, 1)).cell, si8.pbc, 0.3) == (2, 4, 4)
    assert dft.kpoint_mesh(si8.repeat(2).cell, si8.pbc, 0.3) == (2, 2, 2)
    assert dft.kpoint_mesh(si8.cell, [True, True, False], 0.3) == (4, 4, 1)
    # non-orthogonal primitive fcc cell: |b| = 2π sqrt(3)/a
    prim = bulk("Si", "diamond", a=a)
    expect = int(np.ceil(2 * np.pi * np.sqrt(3) / a / 0.3))
    assert dft.kpoint_mesh(prim.cell, prim.pbc, 0.3) == (expect,) * 3
    with pytest.raises(ValueError):
        dft.kpoint_mesh(si8.cell, si8.pbc, 0.0)


def test_cp2k_input_bulk_and_isolated():
    s = dft.PBESettings(kspacing=0.3, cutoff_ry=400, electronic_temperature_k=1000)
    si16 = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    text = dft.cp2k_input(si16, s)
    for needle in ("&XC_FUNCTIONAL PBE", "BASIS_SET DZVP-MOLOPT-SR-GTH", "POTENTIAL GTH-PBE",
                   "CUTOFF 400", "SCHEME MONKHORST-PACK 2 4 4", "METHOD FERMI_DIRAC",
                   "ELECTRONIC_TEMPERATURE [K] 1000", "ADDED_MOS 12", "STRESS_TENSOR ANALYTICAL",
                   "PERIODIC XYZ"):
        assert needle in text, needle
    assert "UKS" not in text
    assert text.count("\n      Si ") == 16
    atom_text = dft.cp2k_input(
        bulk("Si", "diamond", a=5.43)[:1], s, isolated=True, multiplicity=dft.ATOM_MULTIPLICITY["Si"])
    assert "UKS T" in atom_text and "MULTIPLICITY 3" in atom_text
    assert "FIXED_MAGNETIC_MOMENT 2" in atom_text  # triplet: two more up than down electrons
    assert "KPOINTS" not in atom_text and "STRESS" not in atom_text


def test_physics_hash_ignores_run_settings():
    base = dft.PBESettings()
    assert base.physics_hash() == dft.PBESettings(nprocs=7, command="cp2k.psmp").physics_hash()
    assert base.physics_hash() != dft.PBESettings(cutoff_ry=500).physics_hash()


def test_load_settings_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("engine: cp2k\ncutoff_ry: 500\nkspacing: 0.25\n")
    s = dft.load_settings(path, nprocs=3)
    assert (s.cutoff_ry, s.kspacing, s.nprocs) == (500, 0.25, 3)
    path.write_text("cutof_ry: 500\n")
    with pytest.raises(ValueError, match="cutof_ry"):
        dft.load_settings(path)


_CP2K_LOG = """
  *** SCF run converged in    12 steps ***
  Electronic entropic energy:                                  -0.00018215815325
 ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:              -31.486674686979036
 ATOMIC FORCES in [a.u.]

 # Atom   Kind   Element          X              Y              Z
      1      1      Si         -0.01000000     0.00000000     0.02000000
      2      1      Si          0.01000000    -0.00000000    -0.02000000
 SUM OF ATOMIC FORCES           0.00000000     0.00000000     0.00000000     0.00000000

 STRESS| Analytical stress tensor [GPa]
 STRESS|                        x                   y                   z
 STRESS|      x        1.00000000000E+00   4.00000000000E-01   5.00000000000E-01
 STRESS|      y        4.00000000000E-01   2.00000000000E+00   6.00000000000E-01
 STRESS|      z        5.00000000000E-01   6.00000000000E-01   3.00000000000E+00
"""


def test_parse_cp2k_output_units_and_signs():
    res = dft.parse_cp2k_output(_CP2K_LOG, 2, want_stress=True)
    assert res["energy"] == pytest.approx(-31.486674686979036 * Hartree, rel=1e-14)
    np.testing.assert_allclose(res["forces"][0], np.array([-0.01, 0.0, 0.02]) * Hartree / Bohr)
    # CP2K prints a pressure-like tensor (positive = compressed); ASE/MACE stress is its negative,
    # Voigt order xx yy zz yz xz xy.
    np.testing.assert_allclose(res["stress"], -np.array([1.0, 2.0, 3.0, 0.6, 0.5, 0.4]) * GPa)
    assert res["n_scf"] == 12
    assert res["entropic_energy"] == pytest.approx(-0.00018215815325 * Hartree)


def test_parse_cp2k_output_detects_unconverged_and_truncated():
    bad = _CP2K_LOG.replace("  *** SCF run converged in    12 steps ***",
                            " *** WARNING in qs_scf.F:601 :: SCF run NOT converged ***")
    with pytest.raises(dft.SCFNotConverged):
        dft.parse_cp2k_output(bad, 2, want_stress=True)
    with pytest.raises(CalculationFailed):
        dft.parse_cp2k_output(_CP2K_LOG.split(" ATOMIC FORCES")[0], 2, want_stress=True)
    with pytest.raises(CalculationFailed):
        dft.parse_cp2k_output(_CP2K_LOG, 3, want_stress=False)


# ----------------------------------------------------------------------------- bookkeeping
class FlakyEMT(EMT):
    """EMT that raises an SCF failure for structures whose first x coordinate is in ``fail_x``."""

    def __init__(self, fail_x=(), **kwargs):
        super().__init__(**kwargs)
        self.fail_x = [round(x, 8) for x in fail_x]
        self.n_calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        self.n_calls += 1
        if round(float(atoms.positions[0, 0]), 8) in self.fail_x:
            raise dft.SCFNotConverged("simulated: SCF run NOT converged")
        super().calculate(atoms, properties, system_changes)


def _structures(n=5):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.info["config_type"] = "md_300K" if i % 2 else "strain"
        atoms.info["REF_energy"] = 123.0  # a classical label that must be replaced
        out.append(atoms)
    return out


def test_label_resume_skip_and_failure_sidecar(tmp_path):
    structures = _structures(5)
    out = tmp_path / "labelled.xyz"
    calc = FlakyEMT(fail_x=[structures[2].positions[0, 0]])
    logs = []
    c1 = dft.label_structures(structures, calc, out, settings_tag="t1", max_new=2, log=logs.append)
    assert (c1["labelled"], c1["failed"], c1["remaining"]) == (2, 0, 3)
    c2 = dft.label_structures(structures, calc, out, settings_tag="t1", log=logs.append)
    assert (c2["done_before"], c2["labelled"], c2["failed"], c2["remaining"]) == (2, 2, 1, 0)

    frames = read(out, ":")
    assert [f.info["source_index"] for f in frames] == [0, 1, 3, 4]
    failed = [json.loads(line) for line in dft.failed_sidecar(out).read_text().splitlines()]
    assert [r["source_index"] for r in failed] == [2] and failed[0]["error"] == "SCFNotConverged"
    for frame in frames:
        ref = structures[frame.info["source_index"]].copy()
        ref.calc = EMT()
        assert frame.info["REF_energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(frame.arrays["REF_forces"], ref.get_forces(), atol=1e-7)
        np.testing.assert_allclose(frame.info["REF_stress"], ref.get_stress(voigt=True), atol=1e-9)
        assert frame.info["config_type"] == structures[frame.info["source_index"]].info["config_type"]
        assert frame.info["label_id"] == dft.label_id(frame.info["source_index"], ref)
    # Newton's third law for a pair-functional: forces sum to zero
    assert np.abs(frames[0].arrays["REF_forces"].sum(axis=0)).max() < 1e-10

    # A third run does nothing: done ones skipped, the failed one skipped unless retried.
    calls = calc.n_calls
    c3 = dft.label_structures(structures, calc, out, settings_tag="t1", log=logs.append)
    assert (c3["labelled"], c3["failed"], c3["skipped_failed"], calc.n_calls) == (0, 0, 1, calls)
    c4 = dft.label_structures(structures, EMT(), out, settings_tag="t1", retry_failed=True, log=logs.append)
    assert c4["labelled"] == 1 and len(read(out, ":")) == 5

    with pytest.raises(dft.SettingsMismatch):
        dft.label_structures(structures, EMT(), out, settings_tag="other", log=logs.append)


def test_label_changed_structure_is_relabelled_and_truncated_tail_repaired(tmp_path):
    structures = _structures(3)
    out = tmp_path / "labelled.xyz"
    dft.label_structures(structures, EMT(), out, settings_tag="t", log=lambda m: None)
    text = out.read_text()
    # simulate a crash in the middle of writing a fourth frame
    out.write_text(text + text.splitlines(keepends=True)[0] + "Lattice=\"3.6 0 0\n")
    moved = [a.copy() for a in structures]
    moved[1].positions[0, 0] += 1e-6  # a different structure at the same index
    logs = []
    counts = dft.label_structures(moved, EMT(), out, settings_tag="t", log=logs.append)
    assert counts["labelled"] == 1 and any("incomplete last frame" in m for m in logs)
    frames = read(out, ":")
    assert [f.info["source_index"] for f in frames] == [0, 1, 2, 1]


def test_label_same_structure_with_other_float_bits_is_not_relabelled(tmp_path):
    """A structure whose float64 positions differ in the last bits (a length scale applied through
    the cell on another CPU) is matched by index and geometry (< 1e-7 Å), not labelled twice."""
    structures = _structures(3)
    out = tmp_path / "labelled.xyz"
    dft.label_structures(structures, EMT(), out, settings_tag="t", log=lambda m: None)
    noisy = [a.copy() for a in structures]
    for atoms in noisy:
        atoms.positions *= 1 + 1e-15
        atoms.set_cell(np.asarray(atoms.cell) * (1 + 1e-15))
    assert all(dft.label_id(i, a) != dft.label_id(i, b) for i, (a, b) in enumerate(zip(noisy, structures)))
    calc = FlakyEMT()
    logs = []
    counts = dft.label_structures(noisy, calc, out, settings_tag="t", log=logs.append)
    assert (counts["labelled"], counts["remaining"], calc.n_calls) == (0, 0, 0)
    assert "3 done before (3 matched by geometry)" in logs[0]
    # the same geometry at another index is another structure
    swapped = [noisy[1], noisy[0], noisy[2]]
    assert dft.label_structures(swapped, EMT(), out, settings_tag="t", log=logs.append)["labelled"] == 2


def test_done_before_counts_structures_of_this_input_only(tmp_path):
    """``done_before`` counts the structures of this input (and range) already in the file, not
    every frame there: an E0 reference or labels outside ``index_range`` do not inflate it."""
    structures = _structures(4)
    out = tmp_path / "labelled.xyz"
    dft.label_structures(structures, EMT(), out, settings_tag="t", index_range=(0, 3), log=lambda m: None)
    logs = []
    counts = dft.label_structures(structures, EMT(), out, settings_tag="t", index_range=(2, 4),
                                  log=logs.append)
    assert (counts["done_before"], counts["outside_range"], counts["labelled"]) == (1, 2, 1)
    assert "4 structures, 1 done before" in logs[0]


class StarvedEMT(EMT):
    """EMT that reports the CPU time of an engine given ``nprocs`` ranks but only ``share`` of them."""

    def __init__(self, nprocs, share, **kwargs):
        super().__init__(**kwargs)
        self.settings = dft.PBESettings(nprocs=nprocs)
        self.share = share
        self.last_cpu_s = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        t0 = time.perf_counter()
        super().calculate(atoms, properties, system_changes)
        time.sleep(0.3)  # the engine's time dominates the labeller's own (writing, bookkeeping) even on a busy machine
        self.last_cpu_s = self.share * self.settings.nprocs * (time.perf_counter() - t0)


def test_label_reports_core_usage_and_warns_once_when_starved(tmp_path):
    # Two one-rank runs bound to one core each get half of it: the log must say so (docs/DFT.md).
    logs = []
    dft.label_structures(_structures(3), StarvedEMT(nprocs=2, share=0.5), tmp_path / "a.xyz",
                         settings_tag="t", log=logs.append)
    lines = [m for m in logs if "index" in m]
    assert len(lines) == 3 and all(" of 2 cores)" in m for m in lines)
    assert all(40 <= float(m.split("(")[-1].split(" %")[0]) <= 50 for m in lines)  # half a core, not all of one
    assert sum("warning" in m for m in logs) == 1
    logs = []
    dft.label_structures(_structures(3), StarvedEMT(nprocs=1, share=1.0), tmp_path / "b.xyz",
                         settings_tag="t", log=logs.append)
    assert not any("warning" in m for m in logs) and sum(" of 1 core)" in m for m in logs) == 3


def test_consecutive_failures_abort(tmp_path):
    structures = _structures(4)
    calc = FlakyEMT(fail_x=[a.positions[0, 0] for a in structures])
    with pytest.raises(dft.LabellingAborted):
        dft.label_structures(structures, calc, tmp_path / "o.xyz", max_consecutive_failures=2,
                             log=lambda m: None)
    assert len(dft.read_failed(dft.failed_sidecar(tmp_path / "o.xyz"))) == 2
    assert not (tmp_path / "o.xyz").exists() or read(tmp_path / "o.xyz", ":") == []


def test_isolated_atom_frame_with_standin(tmp_path):
    out = tmp_path / "o.xyz"
    settings = dft.PBESettings()
    added = dft.add_isolated_atoms(["Cu", "Cu"], out, settings, calculator_factory=lambda s: EMT(),
                                   log=lambda m: None)
    assert added == ["Cu"]
    assert dft.add_isolated_atoms(["Cu"], out, settings, calculator_factory=lambda s: EMT(),
                                  log=lambda m: None) == []
    (frame,) = read(out, ":")
    assert frame.info["config_type"] == "IsolatedAtom"
    free = frame.copy()
    free.calc = EMT()
    assert frame.info["REF_energy"] == pytest.approx(free.get_potential_energy(), abs=1e-12)
    assert frame.info["REF_energy"] > 3.0  # EMT's free Cu atom lies ~3.5 eV above its fcc reference
    assert frame.cell.lengths() == pytest.approx([settings.isolated_atom_box] * 3)
    assert np.all(frame.arrays["REF_forces"] == 0)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        label_main(["--in", str(tmp_path / "missing.xyz"), "--out", str(tmp_path / "o.xyz")])
    assert exc.value.code == 2
    assert "input file not found" in capsys.readouterr().err
    src = tmp_path / "in.xyz"
    write(src, _structures(1))
    with pytest.raises(SystemExit) as exc:
        label_main(["--in", str(src), "--out", str(tmp_path / "o.xyz"), "--engine", "vasp"])
    assert exc.value.code == 2
    assert "unknown --engine" in capsys.readouterr().err


def test_index_ranges_split_one_input_between_labellers(tmp_path, capsys):
    """Two labellers on disjoint --indices ranges, each into its own file: together every structure
    exactly once, and the assembler merges them."""
    structures = _structures(5)
    tag = dft.PBESettings().physics_hash()
    a, b = tmp_path / "a.xyz", tmp_path / "b.xyz"
    ca = dft.label_structures(structures, EMT(), a, settings_tag=tag, index_range=(None, 3), log=lambda m: None)
    logs = []
    cb = dft.label_structures(structures, EMT(), b, settings_tag=tag, index_range=(3, None), log=logs.append)
    assert (ca["labelled"], ca["outside_range"], ca["remaining"]) == (3, 2, 0)
    assert (cb["labelled"], cb["outside_range"], cb["remaining"]) == (2, 3, 0)
    assert "3 outside indices 3:" in logs[0]
    assert dft.labelled_source_indices(a) == {0, 1, 2} and dft.labelled_source_indices(b) == {3, 4}
    summary = dft.assemble_labelled([a, b], tmp_path / "all.xyz")
    assert summary["n_structures"] == 5
    assert [f.info["source_index"] for f in read(tmp_path / "all.xyz", ":")] == [0, 1, 2, 3, 4]

    src = tmp_path / "in.xyz"
    write(src, structures)
    for bad in ("3", "5:2", "-1:", "a:b", "1:2:3"):
        with pytest.raises(SystemExit) as exc:
            label_main(["--in", str(src), "--out", str(tmp_path / "o.xyz"), "--indices", bad])
        assert exc.value.code == 2
        assert "--indices" in capsys.readouterr().err.strip().splitlines()[-1]


def test_one_writer_per_output_file(tmp_path, capsys):
    """A second labeller on the same output is refused (no interleaved frames); the first goes on."""
    structures = _structures(2)
    out = tmp_path / "labelled.xyz"
    held = labeller._writer_lock(out)  # another process labelling into out
    try:
        with pytest.raises(dft.OutputBusy, match="another labelling process"):
            dft.label_structures(structures, EMT(), out, settings_tag="t", log=lambda m: None)
        with pytest.raises(dft.OutputBusy):
            dft.add_isolated_atoms(["Cu"], out, dft.PBESettings(), log=lambda m: None)
        src = tmp_path / "in.xyz"
        write(src, structures)
        with pytest.raises(SystemExit) as exc:
            label_main(["--in", str(src), "--out", str(out)])
        assert exc.value.code == 2 and "another labelling process" in capsys.readouterr().err
        assert out.read_text() == ""  # nothing written by the refused ones
    finally:
        held.close()
    counts = dft.label_structures(structures, EMT(), out, settings_tag="t", log=lambda m: None)
    assert counts["labelled"] == 2 and len(read(out, ":")) == 2


def test_scale_lengths_is_an_exact_sw_corresponding_state():
    """SW has one length scale sigma: a configuration scaled by s under SW(sigma * s) has the same
    energy, forces / s and stress / s^3. This is why SW-sampled cells may be brought to PBE density."""
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import StillingerWeber

    from mace_transfer.datagen import classical

    rng = np.random.default_rng(3)
    atoms = bulk("Ge", "diamond", a=5.654, cubic=True).repeat((2, 1, 1))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    atoms.info.update(REF_energy=1.0, config_type="md_900K")
    atoms.arrays["REF_forces"] = np.ones((len(atoms), 3))
    s = 5.783 / 5.654
    scaled = dft.scale_lengths(atoms, s)
    assert "REF_energy" not in scaled.info and "REF_forces" not in scaled.arrays
    assert scaled.info["length_scale"] == pytest.approx(s) and scaled.info["config_type"] == "md_900K"
    np.testing.assert_allclose(scaled.get_all_distances(mic=True), s * atoms.get_all_distances(mic=True),
                               rtol=1e-12)
    assert atoms.cell[0, 0] == pytest.approx(11.308)  # the input is not touched

    def sw(sigma_factor):
        params = classical.parameters("Ge", "sw")
        params["sigma"] *= sigma_factor
        return Manybody(**StillingerWeber(params))

    ref, new = atoms.copy(), scaled.copy()
    ref.calc, new.calc = sw(1.0), sw(s)
    assert new.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(new.get_forces(), ref.get_forces() / s, atol=1e-9)
    np.testing.assert_allclose(new.get_stress(), ref.get_stress() / s**3, atol=1e-10)
    assert np.abs(ref.get_forces()).max() > 0.1  # not a trivial (force-free) check
    with pytest.raises(ValueError):
        dft.scale_lengths(atoms, 0.0)


def test_label_scaled_copies_skip_indices_labelled_elsewhere(tmp_path):
    structures = _structures(5)
    plain = tmp_path / "plain.xyz"
    dft.label_structures(structures, EMT(), plain, settings_tag="t", max_new=2, log=lambda m: None)
    assert dft.labelled_source_indices(plain) == {0, 1}
    assert dft.labelled_source_indices(tmp_path / "absent.xyz") == set()

    scaled_out = tmp_path / "scaled.xyz"
    out = tmp_path / "o.xyz"
    src = tmp_path / "in.xyz"
    write(src, structures)
    with pytest.raises(SystemExit) as exc:
        label_main(["--in", str(src), "--out", str(out), "--length-scale", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        label_main(["--in", str(src), "--out", str(out), "--skip-labelled-in", str(tmp_path / "nope.xyz")])
    assert exc.value.code == 2

    scaled = [dft.scale_lengths(a, 1.02) for a in structures]
    counts = dft.label_structures(scaled, EMT(), scaled_out, settings_tag="t",
                                  skip_indices=dft.labelled_source_indices(plain), log=lambda m: None)
    assert (counts["labelled"], counts["skipped_elsewhere"], counts["remaining"]) == (3, 2, 0)
    frames = read(scaled_out, ":")
    assert [f.info["source_index"] for f in frames] == [2, 3, 4]
    for frame in frames:
        assert frame.info["length_scale"] == pytest.approx(1.02)
        ref = scaled[frame.info["source_index"]].copy()
        ref.calc = EMT()
        assert frame.info["REF_energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        # the scaled cell, not the sampled one, was labelled
        np.testing.assert_allclose(frame.cell.array, 1.02 * structures[frame.info["source_index"]].cell.array)


# ----------------------------------------------------------------------------- real CP2K
needs_cp2k = pytest.mark.skipif(shutil.which("cp2k.psmp") is None or shutil.which("mpirun") is None,
                                reason="CP2K not installed (make dft-setup)")


@pytest.mark.slow
@needs_cp2k
def test_cp2k_si2_forces_match_finite_differences(tmp_path):
    """2-atom Si: zero forces in perfect diamond; rattled forces = -dE/dx by central differences."""
    # Coarse 3x3x3 mesh (kspacing 0.8 Å^-1): force/energy consistency does not depend on k sampling,
    # and CP2K's k-point cost per atom is high in a 2-atom cell.
    s = dft.load_settings("configs/dft_pbe.yaml", scratch_dir=str(tmp_path), kspacing=0.8)
    perfect = bulk("Si", "diamond", a=5.47)
    perfect.calc = dft.CP2KCalculator(s)
    assert np.abs(perfect.get_forces()).max() < 1e-3  # eV/Å, by symmetry

    atoms = bulk("Si", "diamond", a=5.47)
    atoms.positions[0] += [0.08, -0.05, 0.03]
    atoms.calc = dft.CP2KCalculator(s)
    force = atoms.get_forces()[0, 0]
    np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0, atol=2e-3)
    h = 0.01
    energies = []
    for sign in (+1, -1):
        displaced = atoms.copy()
        displaced.positions[0, 0] += sign * h
        displaced.calc = dft.CP2KCalculator(s)
        energies.append(displaced.get_potential_energy())
    assert force == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=5e-3)
    # stress = (1/V) dE/dε (ASE/MACE sign): central difference of E under a small xx / yz strain
    stress = atoms.get_stress(voigt=True)
    for voigt_index, (i, j) in ((0, (0, 0)), (3, (1, 2))):
        strained_energies = []
        for sign in (+1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = sign * 0.004
            strained = atoms.copy()
            strained.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
            strained.calc = dft.CP2KCalculator(s)
            strained_energies.append(strained.get_potential_energy())
        d_eps = 2 * 0.004 * (1 if i == j else 2)  # engineering shear strain 2ε_yz
        fd = (strained_energies[0] - strained_energies[1]) / d_eps / atoms.get_volume()
        assert stress[voigt_index] == pytest.approx(fd, abs=2e-4)  # eV/Å^3 (2e-4 = 0.03 GPa)


def test_isolated_atom_failure_recorded_not_raised(tmp_path):
    out = tmp_path / "o.xyz"
    flaky = FlakyEMT(fail_x=[6.0])  # the atom sits at the box centre, x = 12 Å / 2
    factory = lambda symbol: flaky  # noqa: E731
    settings = dft.PBESettings()
    assert dft.add_isolated_atoms(["Cu"], out, settings, calculator_factory=factory, log=lambda m: None) == []
    assert list(dft.read_failed(dft.failed_sidecar(out))) == ["IsolatedAtom-Cu"]
    calls = flaky.n_calls
    dft.add_isolated_atoms(["Cu"], out, settings, calculator_factory=factory, log=lambda m: None)
    assert flaky.n_calls == calls  # not retried


# ----------------------------------------------------------------------------- assemble
def test_assemble_merges_densities_once_each_and_refuses_mixtures(tmp_path, capsys):
    from mace_transfer.cli import assemble_main

    structures = _structures(5)
    settings = dft.PBESettings()
    tag = settings.physics_hash()
    plain, scaled_out = tmp_path / "plain.xyz", tmp_path / "scaled.xyz"
    dft.add_isolated_atoms(["Cu"], plain, settings, calculator_factory=lambda s: EMT(), log=lambda m: None)
    dft.label_structures(structures, EMT(), plain, settings_tag=tag, max_new=2, log=lambda m: None)
    dft.add_isolated_atoms(["Cu"], scaled_out, settings, calculator_factory=lambda s: EMT(), log=lambda m: None)
    scaled = [dft.scale_lengths(a, 1.02) for a in structures]
    dft.label_structures(scaled, EMT(), scaled_out, settings_tag=tag,
                         skip_indices=dft.labelled_source_indices(plain), log=lambda m: None)
    # a labeller is mid-write on the scaled file: its cut last frame must be left out, file untouched
    half = scaled_out.read_text().splitlines(keepends=True)[:5]
    busy = tmp_path / "busy.xyz"
    busy.write_text(scaled_out.read_text() + "".join(half))
    before = busy.read_bytes()

    out = tmp_path / "cu_pbe.xyz"
    summary = dft.assemble_labelled([plain, busy], out)
    assert busy.read_bytes() == before
    assert summary["n_structures"] == 5 and summary["isolated"] == ["Cu"]
    assert summary["per_input"] == {str(plain): 2, str(busy): 3}
    frames = read(out, ":")
    assert frames[0].info["config_type"] == "IsolatedAtom"
    assert sum(f.info["config_type"] == "IsolatedAtom" for f in frames) == 1
    assert [f.info["source_index"] for f in frames[1:]] == [0, 1, 2, 3, 4]
    for frame in frames[1:]:
        i = frame.info["source_index"]
        s = 1.0 if i < 2 else 1.02
        assert frame.info["length_scale"] == pytest.approx(s)
        assert frame.info["labelled_file"] == ("plain.xyz" if i < 2 else "busy.xyz")
        ref = (structures[i] if i < 2 else scaled[i]).copy()
        ref.calc = EMT()
        assert frame.info["REF_energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(frame.arrays["REF_forces"], ref.get_forces(), atol=1e-7)  # extxyz: 8 decimals

    with pytest.raises(FileExistsError):
        dft.assemble_labelled([plain, scaled_out], out)
    assert read(out, ":")[1].info["source_index"] == 0  # untouched
    with pytest.raises(ValueError, match="labelled in both"):
        dft.assemble_labelled([plain, plain], tmp_path / "dup.xyz")
    other = tmp_path / "other.xyz"
    dft.label_structures(scaled, EMT(), other, settings_tag="different", log=lambda m: None)
    with pytest.raises(ValueError, match="different DFT settings"):
        dft.assemble_labelled([plain, other], tmp_path / "mix.xyz")
    assert not (tmp_path / "dup.xyz").exists() and not (tmp_path / "mix.xyz").exists()

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        assemble_main(["--out", str(out), str(plain), str(scaled_out)])
    assert exc.value.code == 2
    assert "exists" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit) as exc:
        assemble_main(["--out", str(out), "--force", str(plain), str(scaled_out)])
    assert exc.value.code == 0
    assert "E0 Cu + 5 structures" in capsys.readouterr().out
