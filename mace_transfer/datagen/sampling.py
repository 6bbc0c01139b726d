"""Deterministic configuration sampler: MD ladder, liquid, strained and vacancy cells of Si or Ge.

Frames are labelled with a classical potential (:mod:`mace_transfer.datagen.classical`) in MACE's keys:
``REF_energy`` (info, eV), ``REF_forces`` (arrays, eV/Å), ``REF_stress`` (info, Voigt 6
xx yy zz yz xz xy, eV/Å^3, ASE sign convention as ``Atoms.get_stress``), ``config_type`` (info).

The frame stream is a fixed sequence of *units*, independent of how many frames are asked for:
each round holds one MD unit per ladder temperature, one strain unit and one vacancy unit, and
every unit draws its random numbers from its own seed ``(seed, unit_index)``. So frame ``i`` is
the same whatever ``n`` is, and a cut or extended run appends exactly the missing frames.

Public API: :func:`sample_configurations`, :func:`isolated_atom_frames`, :func:`settings_hash`,
:func:`close_contact_scan`, :func:`close_pair_variants`, :data:`DEFAULT_TEMPERATURES`, :data:`MELTING_POINTS`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from mace_transfer import UserInputError
from mace_transfer.datagen import classical

#: Default MD temperature ladder (K); the top rungs lie above SW Si's melting point, but below
#: SW Ge's (~3300 K): add a rung such as 3500 K for Ge liquid (see data/README.md).
DEFAULT_TEMPERATURES: Tuple[float, ...] = (300, 600, 900, 1200, 1500, 2000, 2500)

#: Approximate melting points (K) of each potential at zero pressure. MD at or above it starts
#: from a pre-melted cell and is tagged ``liquid``. See ``data/README.md`` for sources and caveats.
MELTING_POINTS: Dict[Tuple[str, str], float] = {
    ("Si", "sw"): 1691.0,  # Broughton & Li, PRB 35, 9120 (1987)
    ("Ge", "sw"): 3300.0,  # our estimate (uncertain by a few 100 K): Ding-Andersen's lambda = 31 melts far above Si
    ("Si", "tersoff"): 2547.0,  # Cook & Clancy, PRB 47, 7686 (1993), Tersoff (T3)
    ("Ge", "tersoff"): 2300.0,  # placeholder, not verified
}

SAMPLER_VERSION = 2  # 2: pre-melting continues until the cell is molten
_POSITION_DECIMALS = 8
# A cell counts as molten once this fraction of atoms moved this many nearest-neighbour distances.
_MELT_FRACTION = 0.9
_MELT_DISPLACEMENT = 0.6
_MAX_PREMELT_CHUNKS = 10  # extxyz writes %16.8f; labels are computed on the rounded positions


@dataclass(frozen=True)
class SamplerSettings:
    """Everything that determines the frame stream (not ``n`` or the output path).

    Units: temperatures K, timestep fs, friction 1/fs, rattle Å, strains dimensionless.
    """

    element: str
    potential: str
    supercell: Tuple[int, int, int]
    temperatures: Tuple[float, ...]
    melting_point: float
    max_strain: float
    rattle: float
    vacancies: int
    seed: int
    timestep_fs: float
    friction_per_fs: float
    equilibration_steps: int
    premelt_steps: int
    snapshot_interval: int
    snapshots_per_unit: int
    isolated_atom: bool
    version: int = SAMPLER_VERSION
    driver: str = ""  # the name of a calculator that drives the MD instead of ``potential`` ("": none)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the settings (no ``driver`` key without a driver, so the
        hashes of classical-driven files made before drivers existed are unchanged)."""
        data = asdict(self)
        if not data["driver"]:
            del data["driver"]
        return json.dumps(data, sort_keys=True)


def settings_hash(settings: SamplerSettings) -> str:
    """Short SHA-256 of the canonical settings JSON; stored in every frame's info."""
    return hashlib.sha256(settings.to_json().encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- validation
def _validated_settings(element, potential, *, supercell, temperatures, melting_point, max_strain,
                        rattle, vacancies, seed, timestep_fs, friction_per_fs, equilibration_steps,
                        premelt_steps, snapshot_interval, snapshots_per_unit,
                        isolated_atom) -> SamplerSettings:
    calc = classical.calculator(element, potential)  # raises UserInputError for a bad pair
    element, potential = calc.element, calc.potential
    try:
        supercell = tuple(int(x) for x in supercell)
    except (TypeError, ValueError):
        raise UserInputError(f"supercell must be three positive integers, got {supercell!r}") from None
    if len(supercell) != 3 or min(supercell) < 1:
        raise UserInputError(f"supercell must be three positive integers, got {supercell!r}")
    try:
        temperatures = tuple(float(t) for t in temperatures)
    except (TypeError, ValueError):
        raise UserInputError(f"temperatures must be numbers in K, got {temperatures!r}") from None
    if not temperatures:
        raise UserInputError("temperature ladder is empty; give at least one temperature in K")
    if min(temperatures) <= 0 or not all(np.isfinite(temperatures)):
        raise UserInputError(f"temperatures must be positive and finite (K), got {list(temperatures)}")
    if melting_point is None:
        melting_point = MELTING_POINTS[(element, potential)]
    if not float(melting_point) > 0:
        raise UserInputError(f"melting_point must be positive (K), got {melting_point!r}")
    if not 0 <= float(max_strain) < 0.5:
        raise UserInputError(f"max_strain must be in [0, 0.5), got {max_strain!r}")
    if float(rattle) < 0:
        raise UserInputError(f"rattle must be >= 0 Å, got {rattle!r}")
    n_atoms = 8 * int(np.prod(supercell))
    if not 0 <= int(vacancies) < n_atoms // 2:
        raise UserInputError(f"vacancies must be in [0, {n_atoms // 2}) for a {n_atoms}-atom cell")
    for name, value in (("timestep_fs", timestep_fs), ("friction_per_fs", friction_per_fs)):
        if not float(value) > 0:
            raise UserInputError(f"{name} must be positive, got {value!r}")
    for name, value in (("equilibration_steps", equilibration_steps), ("premelt_steps", premelt_steps)):
        if int(value) < 0:
            raise UserInputError(f"{name} must be >= 0, got {value!r}")
    for name, value in (("snapshot_interval", snapshot_interval), ("snapshots_per_unit", snapshots_per_unit)):
        if int(value) < 1:
            raise UserInputError(f"{name} must be >= 1, got {value!r}")
    return SamplerSettings(
        element=element, potential=potential, supercell=supercell, temperatures=temperatures,
        melting_point=float(melting_point), max_strain=float(max_strain), rattle=float(rattle),
        vacancies=int(vacancies), seed=int(seed), timestep_fs=float(timestep_fs),
        friction_per_fs=float(friction_per_fs), equilibration_steps=int(equilibration_steps),
        premelt_steps=int(premelt_steps), snapshot_interval=int(snapshot_interval),
        snapshots_per_unit=int(snapshots_per_unit), isolated_atom=bool(isolated_atom),
    )


# --------------------------------------------------------------------------- the unit plan
def _unit_kinds(settings: SamplerSettings) -> List[Tuple[str, Optional[float]]]:
    """One round of units: ``('md', T)`` per ladder rung, then ``('strain', None)``, ``('vacancy', None)``."""
    kinds: List[Tuple[str, Optional[float]]] = [("md", t) for t in settings.temperatures]
    if settings.max_strain > 0:
        kinds.append(("strain", None))
    if settings.vacancies > 0:
        kinds.append(("vacancy", None))
    return kinds


def _unit_rng(settings: SamplerSettings, unit_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([settings.seed, unit_index]))


def _crystal(settings: SamplerSettings) -> Atoms:
    """Perfect diamond supercell at the potential's 0 K lattice constant (Å)."""
    lattice_constant = classical.REFERENCE_VALUES[(settings.element, settings.potential)]["lattice_constant"]
    return bulk(settings.element, "diamond", a=lattice_constant, cubic=True).repeat(settings.supercell)


def _nearest_neighbour_distance(settings: SamplerSettings) -> float:
    """Diamond nearest-neighbour distance (Å) at the potential's lattice constant."""
    lattice_constant = classical.REFERENCE_VALUES[(settings.element, settings.potential)]["lattice_constant"]
    return float(lattice_constant) * np.sqrt(3.0) / 4.0


def _config_type_md(settings: SamplerSettings, temperature: float) -> str:
    return "liquid" if temperature >= settings.melting_point else f"md_{temperature:g}K"


def _run_md(atoms: Atoms, settings: SamplerSettings, temperature: float, rng, calc,
            premelt: bool) -> List[Atoms]:
    """Langevin NVT at ``temperature`` (K); returns ``snapshots_per_unit`` snapshots after equilibration."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.set_constraint(FixCom())
    timestep = settings.timestep_fs * units.fs
    friction = settings.friction_per_fs / units.fs
    if premelt:
        # Melt well above the melting point, then settle at the target: a crystal heated for a
        # few ps superheats far past T_m and would not give liquid frames. Keep melting (in
        # chunks of premelt_steps, at most _MAX_PREMELT_CHUNKS) until nearly every atom has left
        # its lattice site; a half-molten cell regrows crystal at the target temperature.
        melt_temperature = max(2.0 * settings.melting_point, temperature)
        thermalize_momenta(atoms, temperature_K=melt_temperature, rng=rng)
        Stationary(atoms)
        melt = Langevin(atoms, timestep, temperature_K=melt_temperature, friction=friction, fixcm=False,
                        rng=rng)
        sites = atoms.positions.copy()
        nearest_neighbour = _nearest_neighbour_distance(settings)
        for _ in range(_MAX_PREMELT_CHUNKS):
            melt.run(max(settings.premelt_steps, 1))
            moved = np.linalg.norm(atoms.positions - sites, axis=1) > _MELT_DISPLACEMENT * nearest_neighbour
            if moved.mean() >= _MELT_FRACTION:
                break
    else:
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
    dynamics = Langevin(atoms, timestep, temperature_K=temperature, friction=friction, fixcm=False, rng=rng)
    dynamics.run(settings.equilibration_steps)
    snapshots = []
    for _ in range(settings.snapshots_per_unit):
        dynamics.run(settings.snapshot_interval)
        snapshots.append(Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True))
    return snapshots


def _random_strain(rng, max_strain: float, shear: bool) -> np.ndarray:
    """Symmetric strain tensor: isotropic (eps I) or pure shear (traceless off-diagonal), |eps| <= max."""
    if not shear:
        return np.eye(3) * rng.uniform(-max_strain, max_strain)
    off = rng.uniform(-max_strain, max_strain, size=3)
    return np.array([[0.0, off[2], off[1]], [off[2], 0.0, off[0]], [off[1], off[0], 0.0]])


def _generate_unit(settings: SamplerSettings, unit_index: int, calc) -> List[Tuple[Atoms, str, Optional[float]]]:
    """All frames of one unit as ``(atoms, config_type, temperature_K or None)``; deterministic."""
    kinds = _unit_kinds(settings)
    kind, temperature = kinds[unit_index % len(kinds)]
    rng = _unit_rng(settings, unit_index)
    crystal = _crystal(settings)
    if kind == "md":
        liquid = temperature >= settings.melting_point
        frames = _run_md(crystal, settings, temperature, rng, calc, premelt=liquid)
        return [(f, _config_type_md(settings, temperature), temperature) for f in frames]
    if kind == "strain":
        out = []
        for k in range(settings.snapshots_per_unit):
            atoms = crystal.copy()
            strain = _random_strain(rng, settings.max_strain, shear=bool(k % 2))
            atoms.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
            atoms.positions += rng.normal(0.0, settings.rattle, size=atoms.positions.shape)
            out.append((atoms, "strain", None))
        return out
    # vacancy: remove atoms, then MD at a crystalline ladder temperature
    atoms = crystal.copy()
    removed = rng.choice(len(atoms), size=settings.vacancies, replace=False)
    del atoms[sorted(int(i) for i in removed)]
    solid = [t for t in settings.temperatures if t < settings.melting_point] or [min(settings.temperatures)]
    temperature = float(solid[int(rng.integers(len(solid)))])
    frames = _run_md(atoms, settings, temperature, rng, calc, premelt=False)
    return [(f, "vacancy", temperature) for f in frames]


# --------------------------------------------------------------------------- labelling
def _label(atoms: Atoms, calc, config_type: str, extra: Dict[str, object]) -> Atoms:
    """A clean copy of ``atoms`` with REF_energy (eV), REF_forces (eV/Å), REF_stress (Voigt, eV/Å^3)."""
    frame = Atoms(atoms.numbers, positions=np.round(atoms.positions, _POSITION_DECIMALS),
                  cell=atoms.cell, pbc=atoms.pbc)
    frame.calc = calc
    energy = float(frame.get_potential_energy())
    forces = np.round(frame.get_forces(), _POSITION_DECIMALS)  # what extxyz keeps (%16.8f)
    stress = np.array(frame.get_stress(voigt=True)) if frame.pbc.all() else None
    frame.calc = None
    frame.info["config_type"] = config_type
    frame.info["REF_energy"] = energy
    if stress is not None:
        frame.info["REF_stress"] = stress
    frame.arrays["REF_forces"] = forces
    frame.info.update(extra)
    return frame


def isolated_atom_frames(element: str, potential: str, box: float = 20.0) -> List[Atoms]:
    """One free atom in a ``box`` Å non-periodic cell, ``config_type=IsolatedAtom``.

    ``REF_energy`` is the classical isolated-atom energy (0 eV for SW and Tersoff), so MACE reads
    its E0 for the element from a training file that contains this frame.
    """
    calc = classical.calculator(element, potential)
    atom = Atoms(calc.element, positions=[[box / 2] * 3], cell=[box] * 3, pbc=False)
    frame = _label(atom, calc, "IsolatedAtom", {})
    frame.info["REF_energy"] = classical.isolated_atom_energy(calc.element, calc.potential)
    return [frame]


# --------------------------------------------------------------------------- file handling
def _frame_text(frame: Atoms) -> str:
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, frame, format="extxyz")
    return buffer.getvalue()


def _read_existing(out_path: str, digest: str, overwrite: bool) -> List[Atoms]:
    """Frames already in ``out_path`` made with the same settings; refuses other settings."""
    import ase.io

    if not os.path.exists(out_path) or os.path.getsize(out_path) == 0:
        return []
    if overwrite:
        os.remove(out_path)
        return []
    try:
        frames = ase.io.read(out_path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - any parse failure means we cannot resume safely
        raise UserInputError(f"cannot read existing {out_path} to resume ({exc}); pass overwrite=True "
                             "(--overwrite) to regenerate it") from None
    found = {str(f.info.get("sampler_settings", "<none>")) for f in frames}
    if found != {digest}:
        raise UserInputError(
            f"{out_path} was made with other sampler settings ({', '.join(sorted(found))} != {digest}); "
            "pass overwrite=True (--overwrite) to replace it, or choose another output path"
        )
    return frames


def _sidecar_path(out_path: str) -> str:
    return out_path + ".settings.json"


# --------------------------------------------------------------------------- public entry point
def sample_configurations(
    element: str,
    potential: str,
    n: int,
    *,
    supercell: Sequence[int] = (2, 2, 2),
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    melting_point: Optional[float] = None,
    max_strain: float = 0.04,
    rattle: float = 0.05,
    vacancies: int = 1,
    seed: int = 0,
    timestep_fs: float = 1.5,
    friction_per_fs: float = 0.02,
    equilibration_steps: int = 150,
    premelt_steps: int = 300,
    snapshot_interval: int = 30,
    snapshots_per_unit: int = 4,
    isolated_atom: bool = False,
    out_path: Optional[str] = None,
    overwrite: bool = False,
    progress: bool = True,
    driver=None,
    driver_name: Optional[str] = None,
) -> List[Atoms]:
    """``n`` labelled configurations of ``element`` with the classical ``potential``; seeded, resumable.

    Frames cycle through units (``snapshots_per_unit`` frames each): Langevin NVT MD at each
    ``temperatures`` rung (K; ``config_type`` ``md_<T>K``, or ``liquid`` at/above ``melting_point``,
    which starts from a cell pre-melted at 2 T_m for ``premelt_steps``), strained crystals
    (isotropic / shear up to ``max_strain``, rattled by ``rattle`` Å; ``strain``) and cells with
    ``vacancies`` atoms removed, run at a crystalline rung (``vacancy``). Supercell of the 8-atom
    cubic diamond cell; MD timestep ``timestep_fs`` fs, ``equilibration_steps`` steps, then a
    snapshot every ``snapshot_interval`` steps. ``isolated_atom`` prepends one ``IsolatedAtom``
    frame (not counted in ``n``).

    With ``out_path`` the frames go to an extxyz file (each frame tagged with the settings hash,
    full settings in ``<out_path>.settings.json``); rerunning with the same settings appends only
    the missing frames, a file made with other settings is refused unless ``overwrite``.
    Returns the ``n`` configurations (plus the isolated atom first, if asked).

    ``driver`` (an ASE calculator, e.g. a trained MACE teacher) drives the MD and labels the frames
    instead of ``potential``, which then only sets the recipe's geometry (its lattice constant and
    melting point); ``driver_name`` identifies it in the settings hash (required with a driver).
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise UserInputError(f"n must be a positive integer number of configurations, got {n!r}")
    if driver is not None and not driver_name:
        raise UserInputError("a sampler driver needs a driver_name (its identity in the settings hash)")
    if driver is not None and isolated_atom:
        raise UserInputError("isolated_atom labels the free atom with the classical potential: not with a driver")
    n = int(n)
    settings = _validated_settings(
        element, potential, supercell=supercell, temperatures=temperatures, melting_point=melting_point,
        max_strain=max_strain, rattle=rattle, vacancies=vacancies, seed=seed, timestep_fs=timestep_fs,
        friction_per_fs=friction_per_fs, equilibration_steps=equilibration_steps,
        premelt_steps=premelt_steps, snapshot_interval=snapshot_interval,
        snapshots_per_unit=snapshots_per_unit, isolated_atom=isolated_atom,
    )
    if driver is not None:
        settings = replace(settings, driver=str(driver_name))
    digest = settings_hash(settings)
    calc = driver if driver is not None else classical.calculator(settings.element, settings.potential)

    existing: List[Atoms] = []
    if out_path is not None:
        out_dir = os.path.dirname(os.path.abspath(out_path))
        if not os.path.isdir(out_dir):
            raise UserInputError(f"output folder {out_dir} does not exist")
        existing = _read_existing(out_path, digest, overwrite)
        with open(_sidecar_path(out_path), "w", encoding="utf-8") as handle:
            json.dump({"sampler_settings": digest, **json.loads(settings.to_json())}, handle, indent=1, sort_keys=True)
            handle.write("\n")

    header: List[Atoms] = []
    if settings.isolated_atom:
        if existing and existing[0].info.get("config_type") == "IsolatedAtom":
            header = [existing[0]]
        else:
            header = isolated_atom_frames(settings.element, settings.potential)
            header[0].info["sampler_settings"] = digest
            if out_path is not None:
                if existing:  # cannot happen with matching settings: the isolated atom is written first
                    raise UserInputError(f"{out_path} lacks its leading IsolatedAtom frame; use overwrite")
                with open(out_path, "a", encoding="utf-8") as handle:
                    handle.write(_frame_text(header[0]))
    sampled = [f for f in existing if f.info.get("config_type") != "IsolatedAtom"]
    indices = [int(f.info.get("sample_index", -1)) for f in sampled]
    if indices != list(range(len(sampled))):
        raise UserInputError(f"{out_path} frames are not a contiguous prefix of the sample stream; use overwrite")

    frames = sampled[:n]
    missing = n - len(frames)
    if missing > 0:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, initial=len(frames), unit="frame",
                       desc=f"sampling {settings.element} {settings.potential}")
        per_unit = settings.snapshots_per_unit
        handle = open(out_path, "a", encoding="utf-8") if out_path is not None else None
        try:
            index = len(frames)
            while index < n:
                unit_index = index // per_unit
                for offset, (atoms, config_type, temperature) in enumerate(_generate_unit(settings, unit_index, calc)):
                    sample_index = unit_index * per_unit + offset
                    if sample_index < index or sample_index >= n:
                        continue
                    extra = {"sample_index": sample_index, "sampler_settings": digest}
                    if temperature is not None:
                        extra["temperature_K"] = float(temperature)
                    frame = _label(atoms, calc, config_type, extra)
                    frames.append(frame)
                    if handle is not None:
                        handle.write(_frame_text(frame))
                        handle.flush()
                    if bar is not None:
                        bar.update(1)
                    index += 1
        finally:
            if handle is not None:
                handle.close()
            if bar is not None:
                bar.close()
    return header + frames


def close_contact_scan(element: str, lattice_constant: float, distances: Sequence[float],
                       repeat: Tuple[int, int, int] = (2, 1, 1), include_crystal: bool = True) -> List[Atoms]:
    """Diamond cells with one bond compressed: the short-range wall a potential must have.

    Atom 0 of a ``repeat`` supercell of the cubic diamond cell (``lattice_constant`` in Å) moves
    along [111] toward its nearest neighbour until the pair is ``distances[k]`` Å apart; every other
    atom stays on its lattice site. Frame ``k`` has ``config_type="close_contact"``,
    ``info["pair_distance_A"]`` and ``info["pair"] = "0-j"``; no labels. Distances must lie in
    (0.5, nearest-neighbour distance]. ``include_crystal`` puts the perfect crystal first
    (``pair_distance_A`` = the nearest-neighbour distance), the zero of the scan's energies.
    """
    crystal = bulk(element, "diamond", a=float(lattice_constant), cubic=True).repeat(tuple(repeat))
    target = np.full(3, lattice_constant / 4.0)
    j = int(np.argmin(np.linalg.norm(crystal.positions - target, axis=1)))
    bond = crystal.positions[j] - crystal.positions[0]
    d0 = float(np.linalg.norm(bond))
    frames = []
    for d in ([d0] if include_crystal else []) + list(distances):
        d = float(d)
        if not 0.5 < d <= d0 + 1e-9:
            raise ValueError(f"pair distance {d} Å outside (0.5, {d0:.4f}] (the nearest-neighbour distance)")
        atoms = crystal.copy()
        atoms.positions[0] += bond / d0 * (d0 - d)
        atoms.info.update({"config_type": "close_contact", "pair_distance_A": d, "pair": f"0-{j}"})
        frames.append(atoms)
    return frames


def close_pair_variants(frames: Sequence[Atoms], n: int, distance_range_A: Tuple[float, float],
                        seed: int = 0) -> List[Atoms]:
    """``n`` copies of ``frames`` (cycled) with one nearest-neighbour pair pushed closer.

    Training structures for the short-range wall: in copy ``i`` of frame ``i % len(frames)`` a
    random atom and its nearest neighbour (minimum image) move symmetrically along their bond
    to a distance drawn uniformly from ``distance_range_A`` (Å), or are left as they are if already
    closer; nothing else moves. ``config_type="close_pair"``, ``info["pair_distance_A"]``,
    ``info["derived_from"]`` (the frame's ``sample_index``, else its position) and the frame's
    ``length_scale`` if it has one. Reproducible for
    a ``seed``. Labels of the input frames are dropped.
    """
    lo, hi = (float(x) for x in distance_range_A)
    if not 0.5 < lo <= hi:
        raise ValueError(f"distance range must satisfy 0.5 < low <= high (Å), got {distance_range_A}")
    if not frames or n < 1:
        raise ValueError("need at least one frame and n >= 1")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = frames[i % len(frames)]
        atoms = Atoms(numbers=base.numbers, positions=base.positions, cell=base.cell, pbc=base.pbc)
        a = int(rng.integers(len(atoms)))
        others = [k for k in range(len(atoms)) if k != a]
        vectors = atoms.get_distances(a, others, mic=True, vector=True)
        lengths = np.linalg.norm(vectors, axis=1)
        b = others[int(np.argmin(lengths))]
        bond, d_now = vectors[int(np.argmin(lengths))], float(lengths.min())
        d = min(float(rng.uniform(lo, hi)), d_now)
        shift = bond / d_now * (d_now - d) / 2.0
        atoms.positions[a] += shift
        atoms.positions[b] -= shift
        atoms.wrap()
        atoms.info.update({"config_type": "close_pair", "pair_distance_A": d, "pair": f"{a}-{b}",
                           "derived_from": int(base.info.get("sample_index", i % len(frames)))})
        if "length_scale" in base.info:  # cells brought to another density first (dft.scale_lengths)
            atoms.info["length_scale"] = float(base.info["length_scale"])
        out.append(atoms)
    return out
