"""PBE labels with a real DFT code (CP2K), resumable; an unconverged SCF never becomes a label.

Public API
----------
- :class:`PBESettings`, :func:`load_settings` -- the physics and run settings (``configs/dft_pbe.yaml``).
- :func:`kpoint_mesh` -- Monkhorst-Pack mesh from a k-spacing rule (Å^-1, 2π included).
- :class:`CP2KCalculator` -- an ASE calculator: writes a CP2K input, runs ``cp2k.psmp``, parses
  energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE/MACE sign and Voigt order). Raises
  :class:`SCFNotConverged` (an ASE ``SCFError``) when CP2K reports ``SCF run NOT converged``.
- :func:`label_structures` -- label a list of structures with any ASE calculator into an extxyz file
  with MACE keys (``REF_energy``, ``REF_forces``, ``REF_stress``, ``config_type``); each finished
  frame is appended and fsync'd at once, a rerun skips frames already done (index + hash of
  numbers/positions/cell/pbc), failures go to a ``*.failed.jsonl`` sidecar and are skipped.
- :func:`isolated_atom` -- the isolated-atom frame (``config_type=IsolatedAtom``) for MACE's E0s.
- :func:`assemble_labelled` -- merge labeller outputs of one element (e.g. two cell densities) into
  one training file: one E0 frame per element, each sampled structure once, one DFT setting.

Units: energy eV, length Å, force eV/Å, stress eV/Å^3, temperature K, cutoff Ry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, SCFError, all_changes
from ase.units import Bohr, GPa, Hartree

# Physics settings enter the settings hash; run settings (how/where CP2K runs) do not.
_RUN_ONLY_FIELDS = ("command", "nprocs", "timeout_s", "scratch_dir", "data_dir", "keep_failed_dirs")
# Fields added after labels were first made: left out of the hash while at their default, so old
# label files still resume. A new physics field must default to the old behaviour and go here.
_HASH_IF_NOT_DEFAULT: Tuple[str, ...] = ()

# Ground-state spin multiplicity (Hund's rule) of isolated main-group atoms.
ATOM_MULTIPLICITY = {
    "H": 2, "He": 1, "Li": 2, "Be": 1, "B": 2, "C": 3, "N": 4, "O": 3, "F": 2, "Ne": 1,
    "Na": 2, "Mg": 1, "Al": 2, "Si": 3, "P": 4, "S": 3, "Cl": 2, "Ar": 1,
    "Ga": 2, "Ge": 3, "As": 4, "Se": 3, "Br": 2, "Kr": 1, "In": 2, "Sn": 3, "Sb": 4, "Te": 3,
}


class SCFNotConverged(SCFError):
    """CP2K finished but reported ``SCF run NOT converged``: the result must not be a label."""


class SettingsMismatch(ValueError):
    """The output file holds labels made with other physics settings."""


class LabellingAborted(RuntimeError):
    """Too many consecutive failures: something systematic is wrong (engine, settings)."""


class OutputBusy(RuntimeError):
    """Another process is labelling into the same output file."""


@dataclass
class PBESettings:
    """CP2K/PBE settings. Cutoffs in Ry, k-spacing in Å^-1 (2π included), temperature in K."""

    functional: str = "PBE"
    basis_set: str = "DZVP-MOLOPT-SR-GTH"
    basis_set_file: str = "BASIS_MOLOPT"
    pseudopotential: str = "GTH-PBE"
    potential_file: str = "GTH_POTENTIALS"
    cutoff_ry: float = 400.0
    rel_cutoff_ry: float = 60.0
    kspacing: float = 0.2
    smearing: str = "FERMI_DIRAC"
    electronic_temperature_k: float = 1000.0
    added_mos_per_atom: float = 0.75
    added_mos_min: int = 8
    eps_scf: float = 1.0e-7
    max_scf: int = 150
    mixing_alpha: float = 0.3
    nbroyden: int = 8
    stress: bool = True
    isolated_atom_box: float = 12.0
    isolated_atom_spin_polarized: bool = True
    # run settings (not physics)
    # --bind-to none: each mpirun would otherwise pin its rank 0 to core 0, so concurrent runs share it
    command: str = "mpirun --allow-run-as-root --bind-to none -np {nprocs} cp2k.psmp"
    nprocs: int = 2
    timeout_s: float = 7200.0
    scratch_dir: Optional[str] = None
    data_dir: Optional[str] = None
    keep_failed_dirs: bool = True

    def __post_init__(self):
        # 400 and 400.0 are the same cutoff: coerce to the field's type so the hash agrees.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool) or value is None:
                continue
            if isinstance(f.default, float) and isinstance(value, (int, float)):
                setattr(self, f.name, float(value))
            elif isinstance(f.default, int) and isinstance(value, (int, float)):
                setattr(self, f.name, int(value))

    def physics_hash(self) -> str:
        """Short hash of the physics settings (not of how CP2K is run)."""
        defaults = PBESettings.__dataclass_fields__
        physics = {k: v for k, v in dataclasses.asdict(self).items()
                   if k not in _RUN_ONLY_FIELDS
                   and not (k in _HASH_IF_NOT_DEFAULT and v == defaults[k].default)}
        blob = json.dumps(physics, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


def load_settings(path: Optional[os.PathLike] = None, **overrides) -> PBESettings:
    """Read a YAML file of :class:`PBESettings` fields (unknown keys are an error); apply overrides."""
    values: Dict = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"settings file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        loaded.pop("engine", None)
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(PBESettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown DFT settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return PBESettings(**values)


# ----------------------------------------------------------------------------- k-points
def kpoint_mesh(cell, pbc, kspacing: float) -> Tuple[int, int, int]:
    """Mesh n_i = max(1, ceil(|b_i| / kspacing)), |b_i| in Å^-1 with 2π (VASP KSPACING rule).

    Non-periodic directions get 1. The same rule gives consistent sampling for any cell size.
    """
    if kspacing <= 0:
        raise ValueError("kspacing must be > 0 (Å^-1)")
    cell = np.asarray(cell, dtype=float)
    reciprocal = 2.0 * np.pi * np.linalg.inv(cell).T  # rows b_i, b_i . a_j = 2π δ_ij
    mesh = []
    for i in range(3):
        if not pbc[i]:
            mesh.append(1)
            continue
        mesh.append(max(1, int(math.ceil(np.linalg.norm(reciprocal[i]) / kspacing - 1e-9))))
    return tuple(mesh)


# ----------------------------------------------------------------------------- CP2K input/output
def cp2k_input(
    atoms: Atoms,
    settings: PBESettings,
    *,
    isolated: bool = False,
    multiplicity: Optional[int] = None,
) -> str:
    """CP2K input text for one ENERGY_FORCE calculation of ``atoms`` (positions in Å).

    Bulk (default): spin-unpolarised, Fermi-Dirac smearing with added MOs, Broyden mixing,
    Monkhorst-Pack mesh from ``settings.kspacing`` (Γ-only code path when the mesh is 1x1x1),
    analytical stress. ``isolated=True``: Γ only, no stress; spin-polarised (UKS) with the spin
    moment fixed at the Hund's-rule value (``FIXED_MAGNETIC_MOMENT``, same smearing) when
    ``settings.isolated_atom_spin_polarized``.
    """
    s = settings
    cell = np.asarray(atoms.cell)
    if abs(np.linalg.det(cell)) < 1e-6:
        raise ValueError("CP2K needs a 3D cell (set atoms.cell; a box for molecules/atoms)")
    lines = [
        "&GLOBAL",
        "  PROJECT job",
        "  RUN_TYPE ENERGY_FORCE",
        "  PRINT_LEVEL LOW",
        "&END GLOBAL",
        "&FORCE_EVAL",
        "  METHOD QS",
    ]
    want_stress = s.stress and not isolated and all(atoms.pbc)
    if want_stress:
        lines.append("  STRESS_TENSOR ANALYTICAL")
    lines += [
        "  &DFT",
        f"    BASIS_SET_FILE_NAME {s.basis_set_file}",
        f"    POTENTIAL_FILE_NAME {s.potential_file}",
    ]
    spin_polarized = isolated and s.isolated_atom_spin_polarized
    if spin_polarized:
        lines += ["    UKS T", f"    MULTIPLICITY {int(multiplicity or 1)}"]
    lines += [
        "    &MGRID",
        f"      CUTOFF {s.cutoff_ry:g}",
        f"      REL_CUTOFF {s.rel_cutoff_ry:g}",
        "    &END MGRID",
    ]
    mesh = (1, 1, 1) if isolated else kpoint_mesh(cell, atoms.pbc, s.kspacing)
    if mesh != (1, 1, 1):
        lines += [
            "    &KPOINTS",
            "      SCHEME MONKHORST-PACK {} {} {}".format(*mesh),
            "      SYMMETRY F",  # CP2K 2023.1 aborts in cryssym.F for symmetric cells with SYMMETRY T
            "    &END KPOINTS",
        ]
    lines += ["    &SCF", f"      EPS_SCF {s.eps_scf:.3E}", f"      MAX_SCF {int(s.max_scf)}"]
    added = max(int(s.added_mos_min), int(math.ceil(s.added_mos_per_atom * len(atoms))))
    lines += [
        f"      ADDED_MOS {added}",
        "      &SMEAR ON",
        f"        METHOD {s.smearing}",
        f"        ELECTRONIC_TEMPERATURE [K] {s.electronic_temperature_k:g}",
    ]
    if spin_polarized:
        # spin moment fixed at the Hund's-rule value; the smearing spreads the open p shell evenly
        # (a spherical atom), which converges where OT on the symmetry-broken atom stagnates
        lines.append(f"        FIXED_MAGNETIC_MOMENT {int(multiplicity or 1) - 1}")
    lines += [
        "      &END SMEAR",
        "      &MIXING",
        "        METHOD BROYDEN_MIXING",
        f"        ALPHA {s.mixing_alpha:g}",
        f"        NBROYDEN {int(s.nbroyden)}",
        "      &END MIXING",
    ]
    lines += [
        "    &END SCF",
        "    &XC",
        f"      &XC_FUNCTIONAL {s.functional}",
        "      &END XC_FUNCTIONAL",
        "    &END XC",
        "  &END DFT",
        "  &SUBSYS",
        "    &CELL",
    ]
    for name, vec in zip("ABC", cell):
        lines.append(f"      {name} {vec[0]:.10f} {vec[1]:.10f} {vec[2]:.10f}")
    periodic = "".join(ax for ax, p in zip("XYZ", atoms.pbc) if p) or "NONE"
    if isolated:
        periodic = "XYZ"  # a neutral atom in a large periodic box
    lines += [f"      PERIODIC {periodic}", "    &END CELL", "    &COORD"]
    for sym, pos in zip(atoms.get_chemical_symbols(), atoms.positions):
        lines.append(f"      {sym} {pos[0]:.10f} {pos[1]:.10f} {pos[2]:.10f}")
    lines.append("    &END COORD")
    for sym in sorted(set(atoms.get_chemical_symbols())):
        lines += [
            f"    &KIND {sym}",
            f"      BASIS_SET {s.basis_set}",
            f"      POTENTIAL {s.pseudopotential}",
            "    &END KIND",
        ]
    lines += ["  &END SUBSYS", "  &PRINT", "    &FORCES ON", "    &END FORCES"]
    if want_stress:
        lines += ["    &STRESS_TENSOR ON", "    &END STRESS_TENSOR"]
    lines += ["  &END PRINT", "&END FORCE_EVAL", ""]
    return "\n".join(lines)


_ENERGY_RE = re.compile(r"ENERGY\| Total FORCE_EVAL \( QS \) energy[^:]*:\s+(\S+)")
_SCF_CONVERGED_RE = re.compile(r"SCF run converged in\s+(\d+)\s+steps")
_ENTROPIC_RE = re.compile(r"Electronic entropic energy:\s+(\S+)")


def parse_cp2k_output(text: str, n_atoms: int, want_stress: bool) -> Dict:
    """Energy (eV), forces (eV/Å), stress (Voigt xx,yy,zz,yz,xz,xy in eV/Å^3, ASE sign) from a CP2K log.

    Raises :class:`SCFNotConverged` on ``SCF run NOT converged``, CalculationFailed when a
    quantity is missing (crash or truncated output).
    """
    if "SCF run NOT converged" in text:
        raise SCFNotConverged("CP2K: SCF run NOT converged")
    converged = _SCF_CONVERGED_RE.findall(text)
    if not converged:
        raise CalculationFailed("CP2K output has no 'SCF run converged' line")
    energies = _ENERGY_RE.findall(text)
    if not energies:
        raise CalculationFailed("CP2K output has no total energy")
    results: Dict = {"energy": float(energies[-1]) * Hartree, "n_scf": int(converged[-1])}
    entropic = _ENTROPIC_RE.findall(text)  # the -TS term (eV) included in the total energy
    results["entropic_energy"] = float(entropic[-1]) * Hartree if entropic else 0.0

    lines = text.splitlines()
    start = max((i for i, line in enumerate(lines) if "ATOMIC FORCES in [a.u.]" in line), default=None)
    if start is None:
        raise CalculationFailed("CP2K output has no ATOMIC FORCES block")
    forces = []
    for line in lines[start + 1:]:
        parts = line.split()
        if len(parts) == 6 and parts[0].isdigit():
            forces.append([float(x) for x in parts[3:6]])
            if len(forces) == n_atoms:
                break
        elif parts and parts[0] == "SUM":
            break
    if len(forces) != n_atoms:
        raise CalculationFailed(f"CP2K forces: found {len(forces)} of {n_atoms} atoms")
    results["forces"] = np.array(forces) * Hartree / Bohr

    if want_stress:
        starts = [i for i, line in enumerate(lines) if "STRESS| Analytical stress tensor [GPa]" in line]
        if not starts:
            raise CalculationFailed("CP2K output has no analytical stress tensor")
        rows = []
        for line in lines[starts[-1] + 2: starts[-1] + 5]:
            rows.append([float(x) for x in line.split()[2:5]])
        sigma = np.array(rows) * GPa  # CP2K sign: positive = compressed (pressure-like)
        voigt = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]])
        results["stress"] = -voigt  # ASE/MACE: stress = (1/V) dE/dε
    return results


class CP2KCalculator(Calculator):
    """ASE calculator running one fresh ``cp2k.psmp`` per call (no persistent shell).

    Each call works in a new directory under ``settings.scratch_dir`` (system temp by default),
    removed after success; on failure it is kept when ``settings.keep_failed_dirs`` (path in
    the exception message). ``isolated=True`` gives the isolated-atom treatment (see
    :func:`cp2k_input`).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, settings: Optional[PBESettings] = None, *, isolated: bool = False,
                 multiplicity: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings or PBESettings()
        self.isolated = isolated
        self.multiplicity = multiplicity
        self.last_wall_s: Optional[float] = None  # s, wall time of the last CP2K run
        self.last_cpu_s: Optional[float] = None  # s, CPU time of all its MPI ranks together
        self.last_n_scf: Optional[int] = None
        self.last_entropic_energy: Optional[float] = None  # eV, CP2K's -TS term

    def _command(self) -> List[str]:
        return shlex.split(self.settings.command.format(nprocs=int(self.settings.nprocs)))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        s = self.settings
        text_in = cp2k_input(atoms, s, isolated=self.isolated, multiplicity=self.multiplicity)
        want_stress = s.stress and not self.isolated and all(atoms.pbc)
        if s.scratch_dir:
            Path(s.scratch_dir).mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="cp2k_", dir=s.scratch_dir))
        (workdir / "job.inp").write_text(text_in)
        # one OpenMP thread per rank; MPI ranks yield the CPU while waiting (shared machines)
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_mpi_yield_when_idle="1")
        if s.data_dir:
            env["CP2K_DATA_DIR"] = s.data_dir
        t0 = time.perf_counter()
        cpu0 = _children_cpu_s()
        try:
            with open(workdir / "stdout.txt", "w") as out:
                proc = subprocess.Popen(
                    self._command() + ["-i", "job.inp", "-o", "job.out"],
                    cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env,
                )
                try:
                    proc.wait(timeout=s.timeout_s)
                except subprocess.TimeoutExpired as exc:
                    proc.terminate()  # mpirun forwards SIGTERM to its ranks; SIGKILL would orphan them
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    raise CalculationFailed(f"CP2K timed out after {s.timeout_s:g} s (in {workdir})") from exc
                except BaseException:
                    proc.terminate()
                    proc.wait()
                    raise
        except FileNotFoundError as exc:
            raise CalculationFailed(f"cannot run CP2K ({exc}); run `make dft-setup`") from exc
        self.last_cpu_s = _children_cpu_s() - cpu0
        self.last_wall_s = time.perf_counter() - t0
        log_path = workdir / "job.out"
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        try:
            if proc.returncode != 0 and "SCF run NOT converged" not in text:
                raise CalculationFailed(f"CP2K exit code {proc.returncode}: {_abort_message(text, workdir)}")
            results = parse_cp2k_output(text, len(atoms), want_stress)
        except CalculationFailed as exc:
            if not s.keep_failed_dirs:
                _remove_tree(workdir)
            raise type(exc)(f"{exc} [{workdir}]") from exc
        _remove_tree(workdir)
        self.last_n_scf = results.pop("n_scf")
        self.last_entropic_energy = results.pop("entropic_energy")
        # With smearing CP2K's total energy is the Mermin free energy F = E - TS, the one consistent
        # with the forces: the bulk label. An isolated atom's open p shell is spread evenly over
        # degenerate orbitals, and its -TS (~ -0.16 eV at 1000 K) is an artefact of the smearing:
        # its energy is the internal energy E = F + TS of that spherical atom.
        energy = results["energy"]
        if self.isolated:
            energy = results["energy"] - self.last_entropic_energy
        self.results = {"energy": energy, "free_energy": results["energy"], "forces": results["forces"]}
        if "stress" in results:
            self.results["stress"] = results["stress"]


def _abort_message(text: str, workdir: Path) -> str:
    """The message inside CP2K's [ABORT] box, else the last lines of its stdout."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "[ABORT]" in line:
            words = [w for l in lines[i + 1:i + 8] for w in l.strip(" *").split()
                     if not set(w) <= set("|/\\O_-*")]  # drop the ASCII-art figure
            return " ".join(words)[:300]
    stdout = workdir / "stdout.txt"
    tail = stdout.read_text(errors="replace")[-300:] if stdout.exists() else ""
    return " ".join(tail.split())


LOW_CORE_USAGE = 0.6  # below this fraction of its cores the labeller warns (once per run)


def _core_usage(cpu_s: Optional[float], wall_s: float, calculator) -> Optional[Tuple[float, int]]:
    """(CPU s / (wall s * ranks), ranks) of the last engine run; None when the engine does not say."""
    nprocs = getattr(getattr(calculator, "settings", None), "nprocs", None)
    if cpu_s is None or not nprocs or wall_s <= 0:
        return None
    return float(cpu_s) / (wall_s * int(nprocs)), int(nprocs)


def _children_cpu_s() -> float:
    """User + system CPU seconds of all waited-for child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() or child.is_symlink() else child.rmdir()
    path.rmdir()


def isolated_atom(symbol: str, settings: Optional[PBESettings] = None,
                  calculator: Optional[Calculator] = None) -> Atoms:
    """One ``config_type=IsolatedAtom`` frame with ``REF_energy`` (eV) for MACE's E0s.

    Same basis/pseudopotential/cutoff as the bulk labels; cubic box of
    ``settings.isolated_atom_box`` Å, Γ only; spin-polarised at the Hund's-rule multiplicity
    (e.g. triplet Si/Ge) unless ``settings.isolated_atom_spin_polarized`` is false.
    ``REF_energy`` is the internal energy of the spherical atom (CP2K's -TS smearing term, kept in
    ``dft_entropic_energy``, left out; see :class:`CP2KCalculator`).
    """
    settings = settings or PBESettings()
    box = settings.isolated_atom_box
    atom = Atoms(symbol, positions=[[box / 2] * 3], cell=[box] * 3, pbc=True)
    if calculator is None:
        mult = ATOM_MULTIPLICITY.get(symbol)
        if mult is None and settings.isolated_atom_spin_polarized:
            raise ValueError(f"no ground-state multiplicity known for {symbol}")
        calculator = CP2KCalculator(settings, isolated=True, multiplicity=mult)
    atom.calc = calculator
    energy = atom.get_potential_energy()
    frame = Atoms(symbol, positions=atom.positions, cell=atom.cell, pbc=atom.pbc)
    frame.info.update({
        "config_type": "IsolatedAtom",
        "REF_energy": float(energy),
        "spin_polarized": bool(settings.isolated_atom_spin_polarized),
    })
    entropic = getattr(calculator, "last_entropic_energy", None)
    if entropic is not None:
        frame.info["dft_entropic_energy"] = float(entropic)  # eV, -TS, left out of REF_energy
    frame.arrays["REF_forces"] = np.zeros((1, 3))
    return frame


# ----------------------------------------------------------------------------- bookkeeping
def structure_hash(atoms: Atoms) -> str:
    """sha1 (12 hex) of atomic numbers, positions, cell and pbc, exactly as given (float64 bytes)."""
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype=np.float64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()[:12]


def label_id(index: int, atoms: Atoms) -> str:
    """Identity of input structure ``index``: ``"<index>-<hash>"``."""
    return f"{index}-{structure_hash(atoms)}"


def scale_lengths(atoms: Atoms, factor: float) -> Atoms:
    """A copy of ``atoms`` with cell and positions scaled isotropically by ``factor`` (a_new / a_old).

    For a classical potential with one length scale (Stillinger-Weber) this maps a configuration
    sampled at its lattice constant onto the same state at another lattice constant (corresponding
    states): how SW-sampled cells are brought to PBE density. The input's ``REF_*`` labels no
    longer belong to the structure and are dropped; ``info["length_scale"]`` records ``factor``.
    """
    factor = float(factor)
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"length scale must be a positive number, got {factor}")
    scaled = atoms.copy()
    scaled.set_cell(np.asarray(atoms.cell) * factor, scale_atoms=True)
    for key in [k for k in scaled.info if k.startswith("REF_")]:
        del scaled.info[key]
    for key in [k for k in scaled.arrays if k.startswith("REF_")]:
        del scaled.arrays[key]
    scaled.info["length_scale"] = factor * float(atoms.info.get("length_scale", 1.0))
    return scaled


def labelled_source_indices(path: os.PathLike) -> set:
    """``source_index`` of every labelled frame in ``path`` (empty if the file does not exist)."""
    from ase.io import iread

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return set()
    return {int(f.info["source_index"]) for f in iread(str(path), index=":", format="extxyz")
            if "source_index" in f.info}


def failed_sidecar(out_path: os.PathLike) -> Path:
    """``labelled.xyz`` -> ``labelled.failed.jsonl``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".failed.jsonl")


def _complete_frames_end(data: bytes) -> int:
    """Byte offset where the last complete extxyz frame of ``data`` ends (all of it if none is cut)."""
    lines = data.splitlines(keepends=True)
    offset = good_end = 0
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:
            offset += len(lines[i])
            i += 1
            good_end = offset
            continue
        try:
            n = int(head)
        except ValueError:
            break
        frame = lines[i:i + n + 2]
        if len(frame) < n + 2 or not frame[-1].endswith(b"\n"):
            break
        offset += sum(len(x) for x in frame)
        i += n + 2
        good_end = offset
    return good_end


def _repair_tail(path: Path, log: Callable[[str], None]) -> None:
    """Cut an incomplete last extxyz frame (a crash mid-write) so the file reads cleanly."""
    if not path.exists():
        return
    data = path.read_bytes()
    good_end = _complete_frames_end(data)
    if good_end < len(data):
        log(f"label: {path}: cutting {len(data) - good_end} bytes of an incomplete last frame")
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())


def read_complete_frames(path: os.PathLike) -> List[Atoms]:
    """Every complete frame of a labelled extxyz file, without touching the file.

    Safe while a labeller appends to it: a frame being written is left out, not repaired.
    """
    from ase.io import read

    data = Path(path).read_bytes()
    data = data[:_complete_frames_end(data)]
    if not data.strip():
        return []
    return read(io.StringIO(data.decode()), index=":", format="extxyz")


def read_done(out_path: os.PathLike, log: Callable[[str], None] = print,
              geometry: Optional[Dict[int, Atoms]] = None) -> Dict[str, str]:
    """``label_id -> dft_settings`` of frames already in ``out_path`` (after repairing its tail).

    ``geometry``: a dict to fill with ``source_index -> frame`` of the same frames, for
    :func:`same_structure` when a hash does not match (see :func:`label_structures`).
    """
    from ase.io import iread

    out_path = Path(out_path)
    if not out_path.exists() or out_path.stat().st_size == 0:
        return {}
    _repair_tail(out_path, log)
    done = {}
    for frame in iread(str(out_path), index=":", format="extxyz"):
        if "label_id" in frame.info:
            done[str(frame.info["label_id"])] = str(frame.info.get("dft_settings", ""))
            if geometry is not None and int(frame.info.get("source_index", -1)) >= 0:
                geometry[int(frame.info["source_index"])] = frame
    return done


SAME_GEOMETRY_ATOL = 1e-7  # Å: far below any physical difference, above float64 noise and the 1e-8 of extxyz


def same_structure(a: Atoms, b: Atoms, atol: float = SAME_GEOMETRY_ATOL) -> bool:
    """Same elements, pbc, and cell and positions within ``atol`` Å (element by element)."""
    return (len(a) == len(b) and np.array_equal(a.numbers, b.numbers) and np.array_equal(a.pbc, b.pbc)
            and np.allclose(np.asarray(a.cell), np.asarray(b.cell), rtol=0.0, atol=atol)
            and np.allclose(a.positions, b.positions, rtol=0.0, atol=atol))


def read_failed(failed_path: os.PathLike) -> Dict[str, dict]:
    """``label_id -> record`` of structures recorded as failed."""
    failed_path = Path(failed_path)
    records = {}
    if failed_path.exists():
        for line in failed_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from a crash
            records[rec["label_id"]] = rec
    return records


def _append_durably(path: Path, text: str) -> None:
    """Append ``text`` in one write, then flush and fsync."""
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _frame_text(frame: Atoms) -> str:
    from ase.io import write

    buf = io.StringIO()
    write(buf, frame, format="extxyz")
    return buf.getvalue()


_DROP_INFO_PREFIXES = ("REF_",)
_DROP_INFO_KEYS = {"energy", "free_energy", "forces", "stress", "virial", "virials", "label_id",
                   "dft_settings", "source_index", "dft_wall_s", "dft_cpu_s", "dft_n_scf"}


def _labelled_frame(atoms: Atoms, results: Dict, index: int, lid: str, settings_tag: str) -> Atoms:
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    for key, value in atoms.info.items():
        if key in _DROP_INFO_KEYS or key.startswith(_DROP_INFO_PREFIXES):
            continue
        if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
            frame.info[key] = value
    frame.info.setdefault("config_type", "Default")
    frame.info["REF_energy"] = float(results["energy"])
    if results.get("stress") is not None:
        frame.info["REF_stress"] = np.asarray(results["stress"], dtype=float).reshape(6)
    frame.info["label_id"] = lid
    frame.info["source_index"] = int(index)
    frame.info["dft_settings"] = settings_tag
    frame.arrays["REF_forces"] = np.asarray(results["forces"], dtype=float).reshape(len(atoms), 3)
    return frame


def _writer_lock(out_path: Path):
    """An exclusive advisory lock (flock) on ``out_path``: one labeller per output file, so two
    processes never append interleaved frames. Returns the open handle; closing it releases the lock."""
    import fcntl

    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(out_path, "a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputBusy(f"{out_path} is being written by another labelling process; "
                         "wait for it or choose another output file") from None
    return handle


def _locks_output(func):
    """Run ``func`` holding :func:`_writer_lock` on its ``out_path`` argument."""
    import functools
    import inspect

    signature = inspect.signature(func)

    @functools.wraps(func)
    def locked(*args, **kwargs):
        out_path = Path(signature.bind(*args, **kwargs).arguments["out_path"])
        existed = out_path.exists()
        lock = _writer_lock(out_path)
        try:
            return func(*args, **kwargs)
        finally:
            if not existed and out_path.stat().st_size == 0:
                out_path.unlink()  # the lock created it and nothing was labelled: leave no empty file
            lock.close()

    return locked


@_locks_output
def label_structures(
    structures: Sequence[Atoms],
    calculator: Calculator,
    out_path: os.PathLike,
    *,
    settings_tag: str = "",
    failed_path: Optional[os.PathLike] = None,
    max_new: Optional[int] = None,
    retry_failed: bool = False,
    skip_indices: Optional[Iterable[int]] = None,
    index_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
    compute_stress: bool = True,
    max_consecutive_failures: int = 3,
    log: Callable[[str], None] = print,
) -> Dict[str, int]:
    """Label ``structures`` with ``calculator``, appending each result to ``out_path`` at once.

    - Resumable: a structure whose ``label_id`` (index + hash) is in ``out_path`` is skipped; so is
      one recorded in the failed sidecar (unless ``retry_failed``). Frames of another
      ``settings_tag`` in ``out_path`` are an error (never mix settings in one file).
    - ``skip_indices``: input indices not to label here (e.g. those already labelled in another
      file at another density, :func:`labelled_source_indices`), counted as ``skipped_elsewhere``.
    - ``index_range`` ``(start, stop)``: label only input indices ``start <= i < stop`` (``None``:
      open end), so that several labellers share one input, each into its own file; the others
      are counted as ``outside_range`` and are not ``remaining``.
    - A calculation that raises ASE's ``CalculationFailed`` (incl. ``SCFError``, e.g. CP2K's
      unconverged SCF) is written to ``failed_path`` (default ``<out>.failed.jsonl``) and skipped;
      after ``max_consecutive_failures`` in a row :class:`LabellingAborted` is raised.
    - Labels: ``REF_energy`` (eV), ``REF_forces`` (eV/Å), ``REF_stress`` (eV/Å^3, Voigt
      xx,yy,zz,yz,xz,xy; periodic cells only), input ``config_type`` kept (``Default`` if none),
      plus ``label_id``, ``source_index``, ``dft_settings``, ``dft_wall_s``.

    Returns counts: ``total``, ``done_before`` (structures of this input already in the file),
    ``labelled``, ``failed``, ``skipped_failed``, ``skipped_elsewhere``, ``outside_range``, ``remaining``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    failed_path = Path(failed_path) if failed_path else failed_sidecar(out_path)
    done_geometry: Dict[int, Atoms] = {}
    done = read_done(out_path, log, geometry=done_geometry)
    other = sorted({tag for tag in done.values() if tag != settings_tag})
    if other:
        raise SettingsMismatch(f"{out_path} holds labels made with other settings ({', '.join(other)}); "
                         f"these are {settings_tag or '(none)'}: use another output file")
    failed = {} if retry_failed else read_failed(failed_path)
    todo = []
    skipped_failed = 0
    elsewhere = {int(i) for i in (skip_indices or ())}
    skipped_elsewhere = 0
    matched_geometry = 0
    done_here = 0  # structures of this input (in range) labelled before: by hash or by geometry
    start, stop = index_range if index_range is not None else (None, None)
    outside = 0
    for index, atoms in enumerate(structures):
        if (start is not None and index < start) or (stop is not None and index >= stop):
            outside += 1
            continue
        lid = label_id(index, atoms)
        if index in elsewhere and lid not in done:
            skipped_elsewhere += 1
            continue
        if lid in done:
            done_here += 1
            continue
        if index in done_geometry and same_structure(done_geometry[index], atoms):
            # labelled already; the hash differs in the last bits of float64 positions (a length
            # scale applied through the cell on another CPU: 3 of 108 Ge frames, 2026-12-01)
            matched_geometry += 1
            done_here += 1
            continue
        if lid in failed:
            skipped_failed += 1
            continue
        todo.append((index, lid, atoms))
    counts = {"total": len(structures), "done_before": done_here, "labelled": 0, "failed": 0,
              "skipped_failed": skipped_failed, "skipped_elsewhere": skipped_elsewhere,
              "outside_range": outside, "remaining": len(todo)}
    if max_new is not None:
        todo = todo[: max(0, int(max_new))]
    log(f"label: {out_path}: {len(structures)} structures, {done_here} done before"
        + (f" ({matched_geometry} matched by geometry)" if matched_geometry else "") + ", "
        f"{skipped_failed} failed before, " + (f"{skipped_elsewhere} labelled elsewhere, " if skipped_elsewhere else "")
        + (f"{outside} outside indices {start if start is not None else ''}:{stop if stop is not None else ''}, "
           if index_range is not None else "")
        + f"{counts['remaining']} to do, {len(todo)} this run")
    consecutive = 0
    warned_usage = False
    for n, (index, lid, atoms) in enumerate(todo, 1):
        work = atoms.copy()
        work.calc = calculator
        t0 = time.perf_counter()
        try:
            results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
            if compute_stress and all(work.pbc) and "stress" in calculator.implemented_properties:
                results["stress"] = work.get_stress(voigt=True)
        except CalculationFailed as exc:
            wall = time.perf_counter() - t0
            record = {"label_id": lid, "source_index": index, "error": type(exc).__name__,
                      "message": str(exc)[:2000], "wall_s": round(wall, 2),
                      "config_type": str(atoms.info.get("config_type", "Default")),
                      "dft_settings": settings_tag, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _append_durably(failed_path, json.dumps(record) + "\n")
            counts["failed"] += 1
            counts["remaining"] -= 1
            consecutive += 1
            log(f"label: [{n}/{len(todo)}] index {index} FAILED ({type(exc).__name__}: {str(exc)[:200]})")
            if consecutive >= max_consecutive_failures:
                raise LabellingAborted(f"{consecutive} failures in a row; last: {exc}") from exc
            continue
        wall = time.perf_counter() - t0
        consecutive = 0
        frame = _labelled_frame(atoms, results, index, lid, settings_tag)
        frame.info["dft_wall_s"] = round(wall, 2)
        cpu = getattr(calculator, "last_cpu_s", None)
        if cpu is not None:
            frame.info["dft_cpu_s"] = round(float(cpu), 2)
        n_scf = getattr(calculator, "last_n_scf", None)
        if n_scf is not None:
            frame.info["dft_n_scf"] = int(n_scf)
        _append_durably(out_path, _frame_text(frame))
        counts["labelled"] += 1
        counts["remaining"] -= 1
        fmax = float(np.abs(results["forces"]).max())
        usage = _core_usage(cpu, wall, calculator)
        log(f"label: [{n}/{len(todo)}] index {index} ({frame.info['config_type']}, {len(atoms)} atoms) "
            f"E/atom={results['energy'] / len(atoms):.4f} eV |F|max={fmax:.3f} eV/Å "
            f"wall {wall:.1f} s" + (f", cpu {cpu:.1f} s" if cpu is not None else "")
            + (f" ({100 * usage[0]:.0f} % of {usage[1]} core{'s' * (usage[1] > 1)})" if usage else ""))
        if usage and usage[0] < LOW_CORE_USAGE and not warned_usage:
            warned_usage = True
            log(f"label: warning: the engine used {100 * usage[0]:.0f} % of the {usage[1]} core(s) it was "
                "given: other load on the machine, or its ranks bound to cores another run uses "
                "(mpirun --bind-to none, docs/DFT.md)")
    log(f"label: {out_path}: labelled {counts['labelled']}, failed {counts['failed']}, "
        f"remaining {counts['remaining']}")
    return counts


@_locks_output
def add_isolated_atoms(
    symbols: Iterable[str],
    out_path: os.PathLike,
    settings: PBESettings,
    *,
    calculator_factory: Optional[Callable[[str], Calculator]] = None,
    log: Callable[[str], None] = print,
) -> List[str]:
    """Append an ``IsolatedAtom`` frame per element to ``out_path`` unless already there; return those added.

    A failed calculation is recorded in the failed sidecar (and not retried), never raised.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tag = settings.physics_hash()
    done = read_done(out_path, log)
    failed_path = failed_sidecar(out_path)
    failed = read_failed(failed_path)
    added = []
    for symbol in sorted(set(symbols)):
        lid = f"IsolatedAtom-{symbol}"
        if lid in done:
            if done[lid] != tag:
                raise SettingsMismatch(f"{out_path}: IsolatedAtom {symbol} was made with settings {done[lid]}, "
                                       f"these are {tag}: use another output file")
            continue
        if lid in failed:
            continue
        calc = calculator_factory(symbol) if calculator_factory else None
        t0 = time.perf_counter()
        try:
            frame = isolated_atom(symbol, settings, calculator=calc)
        except CalculationFailed as exc:
            record = {"label_id": lid, "source_index": -1, "error": type(exc).__name__,
                      "message": str(exc)[:2000], "config_type": "IsolatedAtom", "dft_settings": tag,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _append_durably(failed_path, json.dumps(record) + "\n")
            log(f"label: isolated {symbol} FAILED ({type(exc).__name__}: {str(exc)[:200]}); recorded, skipped")
            continue
        frame.info.update({"label_id": lid, "source_index": -1, "dft_settings": tag,
                           "dft_wall_s": round(time.perf_counter() - t0, 2)})
        _append_durably(out_path, _frame_text(frame))
        log(f"label: isolated {symbol}: E0 = {frame.info['REF_energy']:.6f} eV")
        added.append(symbol)
    return added


def assemble_labelled(
    inputs: Sequence[os.PathLike],
    out_path: os.PathLike,
    *,
    overwrite: bool = False,
) -> Dict:
    """Merge labelled files of one element set into one MACE training file; return a summary.

    The inputs are labeller outputs of the same sampled structures (e.g. a file labelled at the
    sampled density and one labelled at PBE density, ``--skip-labelled-in`` the first). The result
    holds one ``IsolatedAtom`` frame per element (first) and then every structure once, ordered by
    (sampler run, ``source_index``); frames without ``length_scale`` get 1.0 and each frame records
    its ``labelled_file``. Refused with ``ValueError``: mixed ``dft_settings`` (different physics),
    a sampled structure (``sampler_settings``, ``source_index``) in two inputs, isolated-atom
    energies that disagree, a frame without labels.
    Frames still being written by a running labeller are left out. Written atomically;
    ``FileExistsError`` if ``out_path`` exists and ``overwrite`` is false.
    """
    out_path = Path(out_path)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("no input files to assemble")
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"labelled file not found: {path}")
        if path.resolve() == out_path.resolve():
            raise ValueError(f"{path} is both an input and the output")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite (--force) to replace it")

    settings_seen: Dict[str, str] = {}
    isolated: Dict[str, Atoms] = {}
    structures: Dict[Tuple[int, int], Atoms] = {}
    sampler_order: Dict[str, int] = {}
    per_input: Dict[str, int] = {}
    for path in inputs:
        try:
            frames = read_complete_frames(path)
        except Exception as exc:  # ASE raises many kinds for a malformed file
            raise ValueError(f"cannot read {path} as labelled extxyz: {exc}") from None
        per_input[str(path)] = 0
        for k, frame in enumerate(frames):
            where = f"{path} frame {k}"
            tag = str(frame.info.get("dft_settings", ""))
            if not tag:
                raise ValueError(f"{where} has no dft_settings: not a mace_transfer_label output")
            settings_seen.setdefault(tag, where)
            if len(settings_seen) > 1:
                first, other = (f"{t} ({w})" for t, w in settings_seen.items())
                raise ValueError(f"different DFT settings in one dataset: {first} vs {other}")
            if "REF_energy" not in frame.info or "REF_forces" not in frame.arrays:
                raise ValueError(f"{where} has no REF_energy/REF_forces")
            frame.info.setdefault("length_scale", 1.0)
            frame.info["labelled_file"] = path.name
            if frame.info.get("config_type") == "IsolatedAtom":
                symbol = frame.get_chemical_symbols()[0]
                if symbol in isolated:
                    e_old = float(isolated[symbol].info["REF_energy"])
                    e_new = float(frame.info["REF_energy"])
                    if abs(e_old - e_new) > 1e-6:
                        raise ValueError(f"isolated {symbol}: E0 {e_new:.6f} eV in {where} differs "
                                         f"from {e_old:.6f} eV ({isolated[symbol].info['labelled_file']})")
                    continue
                isolated[symbol] = frame
                continue
            if "source_index" not in frame.info:
                raise ValueError(f"{where} has no source_index")
            # a sampled structure is (sampler run, index in its file); files without a sampler hash
            # are taken to index the same structure file
            key = (sampler_order.setdefault(str(frame.info.get("sampler_settings", "")), len(sampler_order)),
                   int(frame.info["source_index"]))
            if key in structures:
                raise ValueError(f"source_index {key[1]} is labelled in both "
                                 f"{structures[key].info['labelled_file']} and {path.name}: "
                                 "each sampled structure must appear once")
            structures[key] = frame
            per_input[str(path)] += 1

    ordered = [isolated[s] for s in sorted(isolated)] + [structures[i] for i in sorted(structures)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            for frame in ordered:
                fh.write(_frame_text(frame))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    config_types: Dict[str, int] = {}
    for frame in structures.values():
        key = str(frame.info.get("config_type", "Default"))
        config_types[key] = config_types.get(key, 0) + 1
    return {
        "out": str(out_path),
        "n_structures": len(structures),
        "isolated": sorted(isolated),
        "per_input": per_input,
        "config_types": dict(sorted(config_types.items())),
        "dft_settings": next(iter(settings_seen), ""),
    }
