"""GPU rows of the training matrix (issue 19): skipped without CUDA; run them with
``bash scripts/gpu_checks.sh`` on a GPU machine (it writes docs/gpu/<date>.json with the GPU named).

* ``--device cuda`` training from a remapped Si source: the result says Ge and predicts as on the CPU;
* ``--enable_cueq``: a transferred start trains with cuEquivariance and its saved model (cuEq layout
  during training, e3nn on disk as MACE saves it) remaps again, through MACE's converter if needed;
* ``--distributed`` under ``torchrun --nproc_per_node 1``: the remap is done once, the same file;
* MACECalculator on CUDA gives the CPU's energy and forces.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_mace_model, rattled_diamond, write_sw_ge_dataset

from mace_transfer.transfer import remap, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = ["--num_channels", "8", "--max_L", "0", "--r_max", "4.0", "--num_radial_basis", "6",
        "--correlation", "2", "--batch_size", "2", "--valid_batch_size", "2", "--max_num_epochs", "3",
        "--default_dtype", "float64", "--seed", "1", "--valid_fraction", "0.34",
        "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", "{32: -3.5}"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    torch.save(make_mace_model([14], r_max=4.0), root / "si.model")
    write_sw_ge_dataset(root / "ge.xyz", 6, seed=3, stress=True)
    return root


def _argv(data, out, name, *extra):
    return ["--name", name, "--train_file", str(data / "ge.xyz"), "--source_model", str(data / "si.model"),
            "--element_map", "Si:Ge", "--model_dir", str(out), "--checkpoints_dir", str(out / "c"),
            "--results_dir", str(out / "r"), "--log_dir", str(out / "l"), *TINY, *extra]


def _energy_forces(model_path, device):
    from mace.calculators import MACECalculator

    atoms = rattled_diamond("Ge", a=5.65)
    atoms.calc = MACECalculator(model_paths=str(model_path), device=device, default_dtype="float64")
    return atoms.get_potential_energy(), atoms.get_forces()


def test_cuda_training_from_a_remapped_source_predicts_as_on_the_cpu(data, tmp_path):
    assert train.main(_argv(data, tmp_path, "cuda", "--device", "cuda")) == 0
    model = remap.load_model(tmp_path / "cuda.model")
    assert [int(z) for z in model.atomic_numbers] == [32]
    e_gpu, f_gpu = _energy_forces(tmp_path / "cuda.model", "cuda")
    e_cpu, f_cpu = _energy_forces(tmp_path / "cuda.model", "cpu")
    assert e_gpu == pytest.approx(e_cpu, abs=1e-6)
    np.testing.assert_allclose(f_gpu, f_cpu, atol=1e-6)


def test_enable_cueq_training_from_a_remapped_source_and_remapping_its_result(data, tmp_path):
    pytest.importorskip("cuequivariance_torch")
    assert train.main(_argv(data, tmp_path, "cueq", "--device", "cuda", "--enable_cueq", "True")) == 0
    model = remap.load_model(tmp_path / "cueq.model")  # converted back when saved in cuEq layout
    back = remap.remap_elements(model, {"Ge": "Si"})
    assert [int(z) for z in back.atomic_numbers] == [14]


def test_distributed_torchrun_one_process_remaps_once(data, tmp_path):
    argv = _argv(data, tmp_path, "ddp", "--device", "cuda", "--distributed")
    script = os.path.join(os.path.dirname(sys.executable), "mace_transfer_train")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", script, *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ddp.model").is_file()
    assert len(list(tmp_path.glob("ddp_remapped_source*.model"))) == 1  # one rank, one remap
