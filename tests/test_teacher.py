"""The teacher stage (issue 23): any calculator labels structures, a student trains on the labels."""

import json

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read
from conftest import energy_forces, make_mace_model, rattled_diamond
from test_pipeline import FAST_SAMPLING, TINY_MACE

from mace_transfer import UserInputError
from mace_transfer.datagen import classical
from mace_transfer.datagen.sampling import sample_configurations
from mace_transfer.datagen.teacher import label_with_teacher
from mace_transfer.studies.pipeline import Pipeline, load_pipeline


class Counting(Calculator):
    """A teacher that counts its calls (SW inside)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self):
        super().__init__()
        self.inner, self.calls = classical.calculator("Ge", "sw"), 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        self.inner.calculate(atoms, ["energy", "forces", "stress"], system_changes)
        self.results = dict(self.inner.results)


def _structures(n):
    return [rattled_diamond("Ge", a=5.65, rattle=0.08, seed=i) for i in range(n)]


def test_teacher_labels_are_exactly_what_the_teacher_returns(tmp_path):
    structures = _structures(3)
    frames = label_with_teacher(structures, classical.calculator("Ge", "sw"), tmp_path / "l.xyz",
                                name="sw-ge", settings="abc", progress=lambda m: None)
    sw = classical.calculator("Ge", "sw")
    for frame in frames:  # the teacher again, on the geometry as stored
        atoms = frame.copy()
        atoms.calc = sw
        assert frame.info["REF_energy"] == atoms.get_potential_energy()  # extxyz keeps an energy's bits
        np.testing.assert_allclose(frame.arrays["REF_forces"], atoms.get_forces(), rtol=0, atol=5e-9)  # %16.8f
        np.testing.assert_allclose(frame.info["REF_stress"], atoms.get_stress(), rtol=0, atol=1e-15)
        assert (frame.info["teacher"], frame.info["teacher_settings"]) == ("sw-ge", "abc")
    assert [f.info["teacher_index"] for f in frames] == [0, 1, 2]


def test_a_mace_teacher_labels_with_its_own_predictions(tmp_path):
    from mace.calculators import MACECalculator

    model = make_mace_model([32])
    torch.save(model, tmp_path / "t.model")
    calc = MACECalculator(model_paths=str(tmp_path / "t.model"), device="cpu", default_dtype="float64")
    frames = label_with_teacher(_structures(2), calc, tmp_path / "l.xyz", name="t", settings="x", progress=print)
    for frame in frames:
        energy, forces = energy_forces(model, frame)
        assert frame.info["REF_energy"] == pytest.approx(energy, abs=1e-9)
        np.testing.assert_allclose(frame.arrays["REF_forces"], forces, rtol=0, atol=5e-9)


def test_teacher_labelling_resumes_and_refuses_another_teacher(tmp_path):
    structures, out = _structures(4), tmp_path / "l.xyz"
    first = Counting()
    label_with_teacher(structures[:2], first, out, name="sw", settings="s1", progress=lambda m: None)
    second = Counting()
    frames = label_with_teacher(structures, second, out, name="sw", settings="s1", progress=lambda m: None)
    assert first.calls == 2 and second.calls == 2  # only the two new structures
    assert [f.info["teacher_index"] for f in frames] == [0, 1, 2, 3]
    with pytest.raises(UserInputError, match="another teacher"):
        label_with_teacher(structures, Counting(), out, name="x", settings="s2", progress=lambda m: None)


def test_pretrain_stage_teacher_model_then_student(tmp_path, monkeypatch):
    """A MACE teacher labels sampled SW-Ge structures; the student (another size) trains on them."""
    monkeypatch.chdir(tmp_path)
    teacher = make_mace_model([32], r_max=4.0)
    torch.save(teacher, tmp_path / "teacher.model")
    config = {"workdir": "runs/t", "mace": TINY_MACE, "stages": [
        {"name": "student", "kind": "pretrain", "teacher": "teacher.model",
         "structures": {"element": "Ge", "potential": "sw", "n": 6, "options": FAST_SAMPLING},
         "mace": {"E0s": "{32: 0.0}", "valid_fraction": 0.34, "num_channels": 4}}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    outputs = Pipeline(load_pipeline(tmp_path / "p.yaml")).run()
    student = torch.load(outputs["student"], map_location="cpu", weights_only=False)
    assert [int(z) for z in student.atomic_numbers] == [32]
    labels = read(tmp_path / "runs/t/student/teacher_labels.xyz", ":")
    assert len(labels) == 6 and {a.info["teacher"] for a in labels} == {"teacher.model"}
    for frame in labels:
        energy, _ = energy_forces(teacher, frame)
        assert frame.info["REF_energy"] == pytest.approx(energy, abs=1e-9)
    bad = dict(config, stages=[dict(config["stages"][0], name="x", teacher=None)])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(UserInputError, match="needs a 'teacher'"):
        Pipeline(load_pipeline(tmp_path / "bad.yaml")).run()


def test_a_driver_runs_the_samplers_md_and_labels_its_frames(tmp_path):
    """The sampler's MD driven by a calculator object: the same potential as the recipe gives the
    classical stream exactly (only the settings hash names the driver); another potential (Tersoff
    driving the SW recipe) gives other frames, each labelled with the driver's own energy."""
    options = FAST_SAMPLING
    plain = sample_configurations("Ge", "sw", 4, **options)
    same = sample_configurations("Ge", "sw", 4, driver=classical.calculator("Ge", "sw"), driver_name="sw copy", **options)
    for a, b in zip(plain, same):
        assert np.array_equal(a.positions, b.positions) and a.info["REF_energy"] == b.info["REF_energy"]
        assert a.info["sampler_settings"] != b.info["sampler_settings"]
    tersoff = classical.calculator("Ge", "tersoff")
    driven = sample_configurations("Ge", "sw", 4, driver=tersoff, driver_name="tersoff-ge", **options)
    md = [i for i, f in enumerate(plain) if f.info["config_type"].startswith("md_")]
    assert md and not np.allclose(driven[md[0]].positions, plain[md[0]].positions)
    for frame in driven:
        atoms = frame.copy()
        atoms.calc = tersoff
        assert frame.info["REF_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    with pytest.raises(UserInputError, match="driver_name"):
        sample_configurations("Ge", "sw", 1, driver=tersoff, **options)


def test_pretrain_structures_sampled_by_the_teachers_own_md(tmp_path, monkeypatch):
    """structures.driver: teacher -- the stage's MACE teacher runs the sampler's MD (its name and hash in
    every frame's sampler settings), then labels those frames; a peer teacher cannot drive MD."""
    monkeypatch.chdir(tmp_path)
    torch.save(make_mace_model([32], r_max=4.0), tmp_path / "teacher.model")
    stage = {"name": "student", "kind": "pretrain", "teacher": "teacher.model",
             "structures": {"element": "Ge", "potential": "sw", "n": 4, "options": FAST_SAMPLING, "driver": "teacher"},
             "mace": {"E0s": "{32: 0.0}", "valid_fraction": 0.5, "num_channels": 4}}
    config = {"workdir": "runs/t", "mace": TINY_MACE, "stages": [stage]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    Pipeline(load_pipeline(tmp_path / "p.yaml")).run()
    sampled = read(tmp_path / "runs/t/student/structures.xyz", ":")
    sidecar = json.loads((tmp_path / "runs/t/student/structures.xyz.settings.json").read_text())
    assert sidecar["driver"].startswith("teacher.model:") and len(sampled) == 4
    classical_stream = sample_configurations("Ge", "sw", 4, **FAST_SAMPLING)
    md = [i for i, f in enumerate(classical_stream) if f.info["config_type"].startswith("md_")]
    assert not np.allclose(sampled[md[0]].positions, classical_stream[md[0]].positions)  # the teacher moved them
    peer = dict(stage, name="p", teacher={"peer": "sevenn", "model": None})
    (tmp_path / "peer.yaml").write_text(yaml.safe_dump(dict(config, stages=[peer])))
    with pytest.raises(UserInputError, match="cannot drive"):
        Pipeline(load_pipeline(tmp_path / "peer.yaml")).run()


def test_teacher_tables_goal_rule(tmp_path, monkeypatch, capsys):
    """scripts/teacher_tables.py: a remap-started student is 'met' only within 1.15x its teacher's force error,
    at <= 2 meV/atom, and below both DFT-alone routes in force and energy at the same (N, seed)."""
    import importlib.util
    from pathlib import Path

    from mace_transfer.studies.records import write_json

    spec = importlib.util.spec_from_file_location("teacher_tables", Path(__file__).parents[1] / "scripts" / "teacher_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)

    def record(study, strategy, n, seed, force, energy):
        write_json(tmp_path / study / "records" / f"{strategy}_N{n:04d}_s{seed}.json",
                   {"strategy": strategy, "n_train": n, "seed": seed,
                    "test": {"force_mae_meV_per_A": force, "energy_mae_meV_per_atom": energy}})

    (tmp_path / "md_speed_sizes.json").write_text(json.dumps({"sizes": [
        {"channels": 16, "max_L": 1, "atom_steps_per_s": 600.0}, {"channels": 64, "max_L": 1, "atom_steps_per_s": 100.0}]}))
    record("converged_medium", "transfer_rescale", 20, 0, 10.0, 1.0)
    record("converged_medium", "transfer_rescale", 20, 1, 10.0, 1.0)
    record("converged_medium", "transfer_rescale", 20, 2, 10.0, 1.0)
    for seed in (0, 1, 2):
        record("teacher_l1", "scratch", 20, seed, 20.0, 5.0)
        record("teacher_l1_transfer", "transfer_rescale", 20, seed, 13.0, 1.5)
    record("teacher_l1_s0_e10_remap", "teacher_pretrain", 20, 0, 11.5, 0.9)   # 1.15x, below both: met
    record("teacher_l1_s1_e10_remap", "teacher_pretrain", 20, 1, 11.6, 0.9)   # 1.16x its teacher: not met
    record("teacher_l1_s2_e10_remap", "teacher_pretrain", 20, 2, 11.0, 1.6)   # energy above the transfer's: not met
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    tables.print_goal_table(tables.load_routes())
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 20,")]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["**met**", "not met", "not met"]
    assert "6.0×" in rows[0] and "1.15×" in rows[0]
    capped = json.loads((tmp_path / "teacher_l1/records/scratch_N0020_s0.json").read_text())
    write_json(tmp_path / "teacher_l1/records/scratch_N0020_s0.json", dict(capped, converged=False))
    tables.print_route_table(tables.load_routes())
    table = capsys.readouterr().out
    assert "20.0 / 5.00 (s0, cap), 20.0 / 5.00 (s1), 20.0 / 5.00 (s2)" in table

    document = tmp_path / "RESULTS.md"
    document.write_text(f"before\n{tables.BEGIN}\nold table\n{tables.END}\nafter\n")
    tables.write_between_markers(document, "| new |\n")
    assert document.read_text() == f"before\n{tables.BEGIN}\n| new |\n{tables.END}\nafter\n"
    document.write_text("no markers\n")
    with pytest.raises(SystemExit):
        tables.write_between_markers(document, "| new |\n")


@pytest.mark.slow  # make test-slow; quiet-machine cost in the issue-50 note
def test_the_teacher_student_route_as_one_pipeline(tmp_path, monkeypatch):
    """configs/pipeline_teacher_student.yaml's route with tiny models: a teacher (transferred from a Si model)
    labels sampled Ge cells, a student of another size started from the Si model is taught on them, then
    fine-tuned on the Ge data from the taught student; the labels are exactly the teacher stage's predictions."""
    monkeypatch.chdir(tmp_path)
    config = {"workdir": "runs/r", "mace": TINY_MACE, "stages": [
        {"name": "si", "kind": "classical_pretrain", "element": "Si", "potential": "sw", "n": 6,
         "options": FAST_SAMPLING, "mace": {"E0s": "{14: 0.0}", "valid_fraction": 0.34, "num_channels": 4}},
        {"name": "ge_data", "kind": "sample", "element": "Ge", "potential": "sw", "n": 6, "options": FAST_SAMPLING},
        {"name": "teacher", "kind": "train", "subset": {"file": "runs/r/ge_data/ge_data.xyz", "n_train": 4, "n_valid": 2},
         "mace": {"E0s": "{32: 0.0}"}},
        {"name": "student", "kind": "pretrain", "teacher": "teacher", "source": "si", "element_map": "Si:Ge",
         "structures": {"element": "Ge", "potential": "sw", "n": 6, "options": dict(FAST_SAMPLING, seed=9)},
         "mace": {"E0s": "{32: 0.0}", "valid_fraction": 0.34, "num_channels": 4}},
        {"name": "student_ft", "kind": "train", "source": "student", "element_map": "Ge:Ge",
         "subset": {"file": "runs/r/ge_data/ge_data.xyz", "n_train": 4, "n_valid": 2},
         "mace": {"E0s": "{32: 0.0}", "num_channels": 4, "corresponding_states": False}}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    outputs = Pipeline(load_pipeline(tmp_path / "p.yaml")).run()
    teacher = torch.load(outputs["teacher"], map_location="cpu", weights_only=False)
    student = torch.load(outputs["student_ft"], map_location="cpu", weights_only=False)
    assert [int(z) for z in student.atomic_numbers] == [32]
    # two sizes: the teacher 8 channels (TINY_MACE), the student 4 (its Si source's)
    assert teacher.node_embedding.linear.weight.numel() == 2 * student.node_embedding.linear.weight.numel()
    labels = read(tmp_path / "runs/r/student/teacher_labels.xyz", ":")
    assert len(labels) == 6
    for frame in labels:
        energy, forces = energy_forces(teacher, frame)
        assert frame.info["REF_energy"] == pytest.approx(energy, abs=1e-9)
        np.testing.assert_allclose(frame.arrays["REF_forces"], forces, atol=1e-7)  # extxyz keeps 8 decimals
    argv = json.loads((tmp_path / "runs/r/student_ft/argv.json").read_text())
    assert argv[argv.index("--source_model") + 1] == str(outputs["student"])
