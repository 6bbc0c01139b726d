"""``mace_transfer_active``'s flags and their check: command line -> :class:`~mace_transfer.active.loop.LoopSettings`.

Every bad input is a :class:`mace_transfer.UserInputError` (one line from the console script): a budget or
batch below 1, a missing file, an element map without the target element, a model lacking it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from mace_transfer import UserInputError
from mace_transfer.active.explore import ExploreSettings
from mace_transfer.active.labels import LabellerSpec
from mace_transfer.active.loop import LoopSettings
from mace_transfer.active.select import DEFAULT_MIN_DISTANCE
from mace_transfer.active.stop import StopRule
from mace_transfer.execution import ExecutorSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The loop's flags (units in the help)."""
    start = parser.add_argument_group("start model (one of)")
    start.add_argument("--source_model", help="trained MACE .model of the source element (remapped by --element_map)")
    start.add_argument("--element_map", help="source:target, e.g. Si:Ge (as mace_transfer_train)")
    start.add_argument("--model", help="any MACE .model that has --element (used as it is)")
    start.add_argument("--scratch", action="store_true",
                       help="no start model: pool mode only; each member trains from MACE's random init (seeded "
                       "by member; --member_noise does not apply) with the architecture and the E0s of "
                       "--mace_options (E0s required), later rounds warm-start from it")
    start.add_argument("--element", help="the element to learn (default: the target of --element_map)")
    start.add_argument("--length_scale", type=float, default=1.0,
                       help="corresponding-states s of the round-0 explorer (no labels yet to estimate it)")
    start.add_argument("--energy_scale", type=float, default=1.0, help="corresponding-states k of the round-0 explorer")
    lab = parser.add_argument_group("labeller (default: CP2K with --dft_settings)")
    lab.add_argument("--labeller", choices=["cp2k", "classical", "model", "python"], default="cp2k")
    lab.add_argument("--dft_settings", default="configs/dft_pbe.yaml", help="CP2K settings YAML")
    lab.add_argument("--nprocs", type=int, default=None, help="MPI ranks per CP2K run")
    lab.add_argument("--potential", default="sw", help="classical labeller: sw or tersoff")
    lab.add_argument("--teacher", help="model labeller: a MACE .model whose predictions are the labels")
    lab.add_argument("--calculator", help="python labeller: module:function returning an ASE calculator")
    lab.add_argument("--pool", help="pool mode: a labelled extxyz; candidates are its structures, a label is "
                     "read only once its structure is selected (no MD, no labeller)")
    loop = parser.add_argument_group("loop")
    loop.add_argument("--out", required=True, help="the loop's folder (rerun to resume)")
    loop.add_argument("--budget", type=int, required=True, help="DFT calls in all (failed ones count)")
    loop.add_argument("--batch_size", type=int, default=4, help="labels per round")
    loop.add_argument("--initial", type=int, default=None, help="labels of round 0 (default: --batch_size)")
    loop.add_argument("--committee", type=int, default=3, help="committee members (>= 3)")
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--restart_from_source", action="store_true",
                      help="fine-tune each round from the start model instead of the previous round's members")
    loop.add_argument("--member_noise", type=float, default=0.02,
                      help="relative weight noise of the start of members k > 0 (their only difference from "
                      "member 0 on few labels); not with --scratch (members differ by their init seed)")
    loop.add_argument("--selection", choices=["uncertainty", "random"], default="uncertainty",
                      help="random: the baseline (a seeded random draw each round; committee trained alike)")
    loop.add_argument("--min_distance", type=float, default=DEFAULT_MIN_DISTANCE,
                      help="near-duplicate descriptor distance (neighbours per Å; docs/ACTIVE.md)")
    loop.add_argument("--max_per_kind", type=int, default=None,
                      help="at most this many cells of one config_type (md_300K, liquid, vacancy...) in a batch")
    loop.add_argument("--stop_threshold", type=float, default=30.0,
                      help="fresh committee force uncertainty counted as converged (meV/Å)")
    loop.add_argument("--stop_rounds", type=int, default=2, help="consecutive converged rounds that stop the loop")
    loop.add_argument("--epochs", type=int, default=None, help="MACE epochs per fine-tune")
    loop.add_argument("--lr", type=float, default=None, help="MACE learning rate of the fine-tunes")
    loop.add_argument("--mace_options", help="YAML of further MACE flags for the fine-tunes (a dict)")
    loop.add_argument("--valid_file", help="fixed validation extxyz (default: the labels themselves)")
    loop.add_argument("--test_file", help="labelled extxyz tested every round (errors, calibration)")
    loop.add_argument("--device", default="cpu", help="torch device of MD and training")
    md = parser.add_argument_group("exploration (MD with the current model)")
    md.add_argument("--lattice_constant", type=float, default=None, help="Å (default: ASE's for --element)")
    md.add_argument("--supercell", default="2,2,2", help="repeats of the cubic diamond cell")
    md.add_argument("--temperatures", default="300,900,1500", help="ladder, K")
    md.add_argument("--liquid_temperature", type=float, default=2500.0, help="K (0: no liquid unit)")
    md.add_argument("--max_strain", type=float, default=0.04, help="strained unit, |eps| <= this (0: none)")
    md.add_argument("--vacancies", type=int, default=1, help="vacancy unit, atoms removed (0: none)")
    md.add_argument("--equilibration", type=int, default=50, help="MD steps before the first snapshot")
    md.add_argument("--interval", type=int, default=20, help="MD steps between snapshots")
    md.add_argument("--snapshots", type=int, default=3, help="snapshots per unit")
    md.add_argument("--timestep", type=float, default=2.0, help="fs")
    md.add_argument("--contact_bound", type=float, default=1.6,
                    help="a pair closer than this (Å) ends a unit as a broken geometry (a candidate)")


def _numbers(text: str, kind, flag: str):
    try:
        return tuple(kind(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise UserInputError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def _file(path: Optional[str], flag: str) -> Optional[str]:
    if path and not Path(path).is_file():
        raise UserInputError(f"{flag} {path} does not exist")
    return path


def settings_from_args(args: argparse.Namespace, executor: Optional[ExecutorSpec] = None) -> LoopSettings:
    """Check the flags (one-line refusals) and build the loop's settings; ``executor``: where committee
    fine-tunes and labels run (serial when None; the console script's ``--executor``/``--scheduler``)."""
    from mace_transfer.transfer import remap

    if args.budget < 1:
        raise UserInputError(f"--budget must be >= 1 DFT call, got {args.budget}")
    if args.batch_size < 1 or (args.initial is not None and args.initial < 1):
        raise UserInputError("--batch_size and --initial must be >= 1")
    if args.max_per_kind is not None and args.max_per_kind < 1:
        raise UserInputError(f"--max_per_kind must be >= 1, got {args.max_per_kind}")
    if args.committee < 3:
        raise UserInputError(f"--committee must be >= 3 models, got {args.committee}")
    if sum(map(bool, (args.model, args.source_model, args.scratch))) != 1:
        raise UserInputError("give one start: --source_model with --element_map, --model, or --scratch")
    if args.source_model and not args.element_map:
        raise UserInputError("--source_model needs --element_map (e.g. Si:Ge)")
    if not args.scratch:
        _file(args.model or args.source_model, "--model" if args.model else "--source_model")
    element = args.element
    if args.element_map:
        targets = list(remap.parse_element_map(args.element_map).values())
        element = element or (remap.symbols(targets) if len(targets) == 1 else None)
        if element and remap.to_atomic_number(element) not in targets:
            raise UserInputError(f"--element_map {args.element_map} maps nothing to {element}")
    if not element:
        raise UserInputError("give --element (the element to learn)")
    element = remap.symbols([remap.to_atomic_number(element)])
    start = ({"scratch": True} if args.scratch else {"model": args.model} if args.model else
             {"source_model": args.source_model, "element_map": args.element_map,
              "length_scale": args.length_scale, "energy_scale": args.energy_scale})
    if args.pool:
        labeller = LabellerSpec("pool", path=_file(args.pool, "--pool"))
    elif args.labeller == "cp2k":
        labeller = LabellerSpec("cp2k", settings=_file(args.dft_settings, "--dft_settings"), nprocs=args.nprocs)
    elif args.labeller == "classical":
        labeller = LabellerSpec("classical", element=element, potential=args.potential)
    elif args.labeller == "model":
        labeller = LabellerSpec("model", path=_file(args.teacher, "--teacher") or "")
    else:
        labeller = LabellerSpec("python", factory=args.calculator or "")
    mace = {}
    if args.mace_options:
        import yaml

        mace = yaml.safe_load(Path(_file(args.mace_options, "--mace_options")).read_text()) or {}
        if not isinstance(mace, dict):
            raise UserInputError(f"--mace_options {args.mace_options} must hold a dict of MACE flags")
    if args.epochs is not None:
        mace["max_num_epochs"] = args.epochs
    if args.lr is not None:
        mace["lr"] = args.lr
    explore = None
    if not args.pool:
        from mace_transfer.evaluate.properties import guess_lattice_constant

        supercell = _numbers(args.supercell, int, "--supercell")
        if len(supercell) != 3 or min(supercell) < 1:
            raise UserInputError(f"--supercell must be three positive integers, got {args.supercell!r}")
        temperatures = _numbers(args.temperatures, float, "--temperatures")
        if not temperatures or min(temperatures) <= 0:
            raise UserInputError(f"--temperatures must be positive K, got {args.temperatures!r}")
        explore = ExploreSettings(
            element=element, lattice_constant=args.lattice_constant or guess_lattice_constant(element),
            supercell=supercell, temperatures=temperatures, liquid_temperature=args.liquid_temperature or None,
            max_strain=args.max_strain, vacancies=args.vacancies, equilibration=args.equilibration,
            interval=args.interval, snapshots=args.snapshots, timestep_fs=args.timestep,
            min_distance_A=args.contact_bound)
    try:
        stop = StopRule(budget=args.budget, threshold_meV_A=args.stop_threshold, rounds=args.stop_rounds)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    return LoopSettings(
        out=args.out, element=element, start=start, labeller=labeller, stop=stop, batch_size=args.batch_size,
        initial=args.initial, committee=args.committee, seed=args.seed, warm_start=not args.restart_from_source,
        member_noise=args.member_noise, selection=args.selection, max_per_kind=args.max_per_kind, min_distance=args.min_distance, explore=explore, pool=args.pool, mace=mace,
        valid_file=_file(args.valid_file, "--valid_file"), test_file=_file(args.test_file, "--test_file"),
        device=args.device, executor=executor or ExecutorSpec())
