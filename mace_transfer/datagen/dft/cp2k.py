"""Running CP2K/PBE for one structure: settings, input writer, output parser and the ASE calculator.

Public API
----------
- :class:`PBESettings`, :func:`load_settings` -- the physics and run settings (``configs/dft_pbe.yaml``).
- :func:`kpoint_mesh` -- Monkhorst-Pack mesh from a k-spacing rule (Å^-1, 2π included).
- :func:`cp2k_input`, :func:`parse_cp2k_output` -- the CP2K input text and the parsed CP2K log.
- :class:`CP2KCalculator` -- an ASE calculator: writes a CP2K input, runs ``cp2k.psmp``, parses
  energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE/MACE sign and Voigt order). Raises
  :class:`SCFNotConverged` (an ASE ``SCFError``) when CP2K reports ``SCF run NOT converged``.
- :func:`isolated_atom` -- the isolated-atom frame (``config_type=IsolatedAtom``) for MACE's E0s.

Units: energy eV, length Å, force eV/Å, stress eV/Å^3, temperature K, cutoff Ry.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from typing import Dict, List, Optional, Tuple

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


class CP2KNotRunnable(CalculationFailed):
    """CP2K (or its MPI launcher) is not installed: no structure's fault, so none is marked failed."""


class SCFNotConverged(SCFError):
    """CP2K finished but reported ``SCF run NOT converged``: the result must not be a label."""


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
                    cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
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
            raise CP2KNotRunnable(f"cannot run CP2K ({exc}); run `make dft-setup` or set `command` "
                                  "in the settings file") from exc
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


def _load_prctl():
    """Linux's ``prctl`` through ctypes, loaded here (not in a forked child, where loading could deadlock)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the CP2K child, before exec: SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG), so a
    labeller or Dask worker killed with SIGKILL leaves no CP2K running on (mpirun forwards SIGTERM to its
    ranks). The starting thread waits for CP2K throughout, so it never dies first otherwise."""
    if _PRCTL is not None:
        _PRCTL(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


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
