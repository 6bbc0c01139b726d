"""Block freezing, per-block learning rates and gradual unfreezing for MACE training.

THE SEAM (the only place mace-transfer touches MACE's optimizer)
-----------------------------------------------------------------
``mace.cli.run_train`` imports ``get_params_options`` by name from
``mace.tools.scripts_utils`` and calls it once, ``param_options = get_params_options(args, model)``,
right before ``get_optimizer(args, param_options)``.  :func:`optimizer_seam` replaces the name
``mace.cli.run_train.get_params_options`` with a wrapper for the duration of a ``with`` block and
puts the original back on exit.  The wrapper

1. calls MACE's own ``get_params_options`` (so MACE's groups -- embedding, interactions
   decay/no-decay, products, readouts, extra heads -- their weight decay and ``--lr_params_factors``
   are kept), then
2. applies the plan to the model it receives.  That is the model MACE will train: MACE's
   cuEquivariance/OEQ conversion rebuilds the model *before* this call, so freezing anything
   earlier would be lost.  Frozen parameters get ``requires_grad=False`` and are left out of every
   group; every MACE group is split by block, each part with ``lr = MACE's group lr x factor``.

Two public torch hooks (not patches of MACE) are registered while the ``with`` block is open:

* a global ``torch.optim.optimizer.register_optimizer_step_post_hook`` that recognises *our*
  optimizer by parameter identity (it holds the seam's parameters) and counts its steps: the epoch
  boundary for ``--unfreeze_after`` is step ``E x steps_per_epoch``.  ``steps_per_epoch`` is
  ``len(train_loader)``, read (read-only) from the local ``train_loader`` of MACE's ``run()``, the
  caller of the wrapper, unless the caller of :func:`optimizer_seam` passes it;
* on that optimizer, ``register_load_state_dict_post_hook``: after training MACE reloads the best
  checkpoint (``checkpoint_handler.load_latest``) and only then saves the ``.model``; the hook
  sets ``requires_grad=True`` on every parameter there, so the saved ``.model`` is fully trainable.
  It is registered at the optimizer's first step, so a ``--restart_latest`` load before training
  does not fire it.  If no reload happens, exit warns; :func:`ensure_trainable_file` re-saves.

EMA: MACE builds ``ExponentialMovingAverage(model.parameters(), ...)`` -- all parameters, not
filtered by ``requires_grad`` (torch_ema documents that it averages whatever it is given).  For a
parameter that never changes the EMA update ``s <- s - (1-d)(s - p)`` with ``s == p`` is exactly
the identity, so frozen tensors stay bit-identical through ``ema.average_parameters()`` swaps
(tested).  Excluding them would need a second patch of MACE (the EMA is built outside the seam),
so we do not.

Block names (``embedding``, ``radial``, ``interactions.N`` ..., ``re:<regex>``) and their specificity are
defined in :mod:`mace_transfer.transfer.blocks`.

Semantics
---------
* ``--block_lr_factors`` ``{"name": factor}``: lr = MACE's group lr x factor (default 1.0).
  Factor 0 freezes for the whole run (``--unfreeze_after`` does not thaw it).
* ``--freeze_blocks``: frozen; with ``--unfreeze_after E`` frozen for the first E epochs only
  (MACE's epochs 0..E-1, i.e. the checkpoint ``*_epoch-{E-1}.pt`` is the last frozen one), then
  trainable with the most specific *factor* that covers the parameter (1.0 if none).  A name may
  not appear in both flags.  ``--freeze_blocks interactions --block_lr_factors '{"radial": 1}'``
  therefore trains only the radial MLPs of the interactions.
* Thawing happens right after the last optimizer step of epoch E-1: the parameters are held (only
  when ``--unfreeze_after`` is given) in their own groups with ``lr=0`` and ``requires_grad=False``,
  so torch's Adam/AdamW skip them entirely (no gradient: no step, no weight decay, no state).  At
  the boundary ``requires_grad`` is switched on and the group lr becomes target x (current lr /
  initial lr of the live groups), i.e. the thawed block joins at the scheduler's current decay.
  Keeping the group count constant keeps MACE's checkpoints loadable (optimizer state dicts must
  match group by group).

Limits: ``--lbfgs`` is refused (MACE builds LBFGS from all parameters, outside the seam).  With
``--swa``, MACE's SWALR sets every group to ``--swa_lr`` in stage two, so per-block factors stop
applying there (frozen parameters stay frozen: no gradient).  With ``--restart_latest`` the
``--unfreeze_after`` epochs count from the start of the first run: the seam reads the epoch of the
checkpoint MACE resumes from (:func:`resumed_epoch`) and thaws at once when it is past.

Units: learning rates are MACE's (dimensionless step sizes); epochs count MACE's training epochs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from mace_transfer import UserInputError
from mace_transfer.transfer.blocks import (  # noqa: F401  (block_names, param_block, is_radial re-exported)
    block_names,
    check_selectors,
    check_syntax,
    covers,
    display_block,
    freeze_blocks,
    is_radial,
    param_block,
    specificity,
    split_list,
)

__all__ = [
    "FreezeSpec",
    "ParamPlan",
    "SeamSession",
    "block_names",
    "param_block",
    "is_radial",
    "freeze_blocks",
    "plan_parameters",
    "format_plan_table",
    "optimizer_seam",
    "ensure_trainable_file",
    "LAST_INITIAL_STATE",
    "LAST_SESSION",
]

log = logging.getLogger(__name__)

#: key of the info dict (nominal lr, held for thawing) put in every param group the seam builds
GROUP_TAG = "mace_transfer_seam"

#: state dict (cloned, CPU) of the model the last seam saw at optimizer creation, before any step
LAST_INITIAL_STATE: Optional[Dict[str, torch.Tensor]] = None
#: the last :class:`SeamSession` that built an optimizer (plan, step count, unfreeze record)
LAST_SESSION: Optional["SeamSession"] = None


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class FreezeSpec:
    """What to freeze and how fast each block learns.

    ``freeze``: block names / ``re:`` patterns; ``lr_factors``: (name, factor >= 0) pairs;
    ``unfreeze_after``: epochs (>= 1) after which ``freeze`` blocks thaw, or None.
    """

    freeze: Tuple[str, ...] = ()
    lr_factors: Tuple[Tuple[str, float], ...] = ()
    unfreeze_after: Optional[int] = None

    @property
    def active(self) -> bool:
        """False when the spec changes nothing (the seam then does not patch MACE at all)."""
        return bool(self.freeze or self.lr_factors)

    @classmethod
    def from_strings(
        cls,
        freeze_blocks: Optional[str] = None,
        block_lr_factors: Optional[str] = None,
        unfreeze_after: Optional[Union[int, str]] = None,
    ) -> "FreezeSpec":
        """Build from the command-line strings; None or "" means "not given".

        Raises UserInputError on malformed JSON, negative factors, bad regexes, a name in both
        flags, or ``unfreeze_after`` < 1 or without ``freeze_blocks``."""
        freeze = tuple(split_list(freeze_blocks or ""))
        for selector in freeze:
            check_syntax(selector, "--freeze_blocks")
        factors: List[Tuple[str, float]] = []
        if block_lr_factors not in (None, ""):
            try:
                raw = json.loads(block_lr_factors)
            except json.JSONDecodeError as exc:
                raise UserInputError(
                    f"--block_lr_factors: not valid JSON ({exc.msg} at char {exc.pos}): "
                    f"{block_lr_factors!r}; expected e.g. '{{\"interactions.0\": 0.1}}'"
                ) from None
            if not isinstance(raw, dict):
                raise UserInputError(
                    f"--block_lr_factors: expected a JSON object {{block: factor}}, got {raw!r}"
                )
            for name, value in raw.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserInputError(
                        f"--block_lr_factors: factor of {name!r} must be a number, got {value!r}"
                    )
                if not math.isfinite(value) or value < 0:
                    raise UserInputError(
                        f"--block_lr_factors: factor of {name!r} must be finite and >= 0, got {value}"
                    )
                check_syntax(name.strip(), "--block_lr_factors")
                factors.append((name.strip(), float(value)))
        both = sorted(set(freeze) & {n for n, _ in factors})
        if both:
            raise UserInputError(
                f"{', '.join(both)} named in both --freeze_blocks and --block_lr_factors; "
                "use one (factor 0 freezes for the whole run)"
            )
        after: Optional[int] = None
        if unfreeze_after not in (None, ""):
            try:
                after = int(unfreeze_after)
            except (TypeError, ValueError):
                raise UserInputError(
                    f"--unfreeze_after: expected a whole number of epochs, got {unfreeze_after!r}"
                ) from None
            if after < 1 or str(after) != str(unfreeze_after).strip():
                raise UserInputError(
                    f"--unfreeze_after: expected a whole number of epochs >= 1, got {unfreeze_after!r}"
                )
            if not freeze:
                raise UserInputError("--unfreeze_after needs --freeze_blocks (nothing to unfreeze)")
        return cls(freeze=freeze, lr_factors=tuple(factors), unfreeze_after=after)

    def check_model(self, model: torch.nn.Module) -> None:
        """Raise UserInputError now if ``model`` lacks a named block (e.g. before a long data load;
        the seam checks again on the model MACE actually trains)."""
        plan_parameters(model, self)


@dataclass(frozen=True)
class ParamPlan:
    """Fate of one parameter: ``state`` is ``trainable``, ``frozen`` (whole run) or ``thaws``
    (frozen for ``unfreeze_after`` epochs); ``factor`` multiplies MACE's group lr while (or once)
    trainable."""

    state: str
    factor: float


def _decide(entries: List[Tuple[int, str, str, float]], name: str):
    """Most specific of (level, selector, kind, factor) entries; raises if the top ones disagree."""
    top = max(e[0] for e in entries)
    best = [e for e in entries if e[0] == top]
    if len({(kind, factor) for _, _, kind, factor in best}) > 1:
        described = ", ".join(
            f"{sel} ({'freeze' if kind == 'freeze' else f'factor {factor:g}'})"
            for _, sel, kind, factor in best
        )
        raise UserInputError(f"parameter {name!r} is covered by conflicting names: {described}")
    return best[0]


def plan_parameters(model: torch.nn.Module, spec: FreezeSpec) -> Dict[str, ParamPlan]:
    """Resolve ``spec`` against ``model``: parameter name -> :class:`ParamPlan`.

    Raises UserInputError for names the model lacks (listing the valid ones)."""
    check_selectors(model, spec.freeze, "--freeze_blocks")
    check_selectors(model, [n for n, _ in spec.lr_factors], "--block_lr_factors")
    plan: Dict[str, ParamPlan] = {}
    for name, _ in model.named_parameters():
        lr_entries = [
            (specificity(sel), sel, "lr", factor)
            for sel, factor in spec.lr_factors
            if covers(sel, name)
        ]
        freeze_entries = [
            (specificity(sel), sel, "freeze", 0.0) for sel in spec.freeze if covers(sel, name)
        ]
        factor = _decide(lr_entries, name)[3] if lr_entries else 1.0
        if not lr_entries and not freeze_entries:
            plan[name] = ParamPlan("trainable", 1.0)
            continue
        _, _, kind, top_factor = _decide(lr_entries + freeze_entries, name)
        if kind == "freeze":
            thaws = spec.unfreeze_after is not None and factor > 0
            plan[name] = ParamPlan("thaws" if thaws else "frozen", factor if thaws else 0.0)
        elif top_factor == 0.0:
            plan[name] = ParamPlan("frozen", 0.0)
        else:
            plan[name] = ParamPlan("trainable", top_factor)
    return plan


# --------------------------------------------------------------------------- the table
def format_plan_table(
    model: torch.nn.Module,
    plan: Dict[str, ParamPlan],
    lrs: Dict[str, List[float]],
    unfreeze_after: Optional[int] = None,
) -> str:
    """Text table: block, number of parameters, trainable/frozen, learning rate(s).

    ``lrs``: parameter name -> learning rates of the optimizer groups holding it (empty when the
    parameter is in no group; for a held parameter, the lr it gets once thawed)."""
    rows: Dict[str, Dict] = {}
    for name, param in model.named_parameters():
        label = display_block(name)
        p = plan.get(name, ParamPlan("trainable", 1.0))
        if p.state == "thaws":
            state = f"frozen, thaws after epoch {unfreeze_after}"
        elif p.state == "frozen":
            state = "frozen"
        elif not lrs.get(name):
            state = "not in MACE's optimizer"
        elif not param.requires_grad:
            state = "frozen by MACE (--freeze/LoRA)"
        else:
            state = "trainable"
        row = rows.setdefault(label, {"count": 0, "states": [], "lrs": []})
        row["count"] += param.numel()
        if state not in row["states"]:
            row["states"].append(state)
        for lr in lrs.get(name, []):
            if lr not in row["lrs"]:
                row["lrs"].append(lr)
    header = f"{'block':<26} {'parameters':>10}  {'status':<32} learning rate"
    lines = [header, "-" * len(header)]
    for label, row in rows.items():
        lr_text = ", ".join(f"{lr:.3g}" for lr in row["lrs"]) or "-"
        if any(state.startswith("frozen, thaws") for state in row["states"]):
            lr_text = f"0 -> {lr_text}"
        lines.append(f"{label:<26} {row['count']:>10}  {' / '.join(row['states']):<32} {lr_text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the seam
@dataclass
class SeamSession:
    """State of one :func:`optimizer_seam` block: what it planned and what it has done."""

    spec: FreezeSpec
    original: object
    steps_per_epoch: Optional[int] = None
    model: Optional[torch.nn.Module] = None
    plan: Dict[str, ParamPlan] = field(default_factory=dict)
    steps: int = 0
    unfreeze_step: Optional[int] = None
    unfrozen_at_step: Optional[int] = None
    restored_after_training: bool = False
    #: weak reference to the optimizer MACE built from our groups (set at its first step)
    optimizer_ref: Optional[Callable] = None
    #: indices (into the optimizer's param groups) of held groups -> their lr once thawed
    _pending: Dict[int, float] = field(default_factory=dict)
    #: (index, nominal lr) of a live group: its lr / nominal lr is the scheduler's decay so far
    _reference: Optional[Tuple[int, float]] = None
    #: (group name, lr, parameter names) of every optimizer group at the first step
    groups_at_first_step: List[Tuple[str, float, List[str]]] = field(default_factory=list)
    _param_ids: set = field(default_factory=set)
    _hook_handles: List = field(default_factory=list)

    # -- the wrapper that replaces mace.cli.run_train.get_params_options
    def get_params_options(self, args, model: torch.nn.Module):
        """MACE's ``get_params_options`` followed by freezing and the per-block split."""
        global LAST_INITIAL_STATE, LAST_SESSION
        if getattr(args, "lbfgs", False):
            raise UserInputError(
                "--freeze_blocks/--block_lr_factors cannot be used with --lbfgs "
                "(MACE builds its LBFGS optimizer from all parameters, outside the seam)"
            )
        options = self.original(args, model)
        plan = plan_parameters(model, self.spec)
        if self.spec.unfreeze_after is not None:
            if self.steps_per_epoch is None:
                self.steps_per_epoch = _steps_per_epoch_from_caller()
            self.unfreeze_step = self.spec.unfreeze_after * self.steps_per_epoch

        LAST_INITIAL_STATE = {
            key: value.detach().clone().cpu() for key, value in model.state_dict().items()
        }
        names = {id(p): n for n, p in model.named_parameters()}
        new_groups, lrs = _split_groups(options, names, plan)
        self._pending = {
            i: g[GROUP_TAG]["nominal_lr"] for i, g in enumerate(new_groups) if g[GROUP_TAG]["held"]
        }
        live = [i for i, g in enumerate(new_groups) if not g[GROUP_TAG]["held"]]
        if not live:
            raise UserInputError("every parameter is frozen: nothing left to train")
        self._reference = next(
            ((i, new_groups[i][GROUP_TAG]["nominal_lr"]) for i in live
             if new_groups[i][GROUP_TAG]["nominal_lr"] > 0),
            None,
        )
        self._param_ids = {id(p) for g in new_groups for p in g["params"]}
        for name, param in model.named_parameters():
            if plan[name].state != "trainable":
                param.requires_grad_(False)
        options = dict(options)
        options["params"] = new_groups
        self.model, self.plan, self.steps = model, plan, 0
        self.unfrozen_at_step, self.restored_after_training = None, False
        resumed = resumed_epoch(args) if getattr(args, "restart_latest", False) else None
        if resumed is not None and self.unfreeze_step is not None:
            # MACE resumes at the checkpoint's epoch: count the steps before it, thaw now if past
            self.steps = resumed * self.steps_per_epoch
            if self.steps >= self.unfreeze_step:
                for group in new_groups:
                    if group[GROUP_TAG]["held"]:
                        group[GROUP_TAG] = dict(group[GROUP_TAG], held=False)
                        for param in group["params"]:
                            param.requires_grad_(True)
                self._pending, self.unfrozen_at_step = {}, self.steps
                log.info("mace-transfer: resumed at epoch %d, past --unfreeze_after %d: held blocks trainable",
                         resumed, self.spec.unfreeze_after)
        LAST_SESSION = self
        log.info(
            "mace-transfer block plan (freeze=%s, lr factors=%s, unfreeze_after=%s, "
            "steps/epoch=%s):\n%s",
            ",".join(self.spec.freeze) or "-",
            json.dumps(dict(self.spec.lr_factors)) if self.spec.lr_factors else "-",
            self.spec.unfreeze_after,
            self.steps_per_epoch,
            format_plan_table(model, plan, lrs, self.spec.unfreeze_after),
        )
        return options

    # -- global optimizer step post-hook (public torch API)
    def on_optimizer_step(self, optimizer, args, kwargs) -> None:
        # ours = built from the seam's groups; identified by parameter identity, which survives
        # optimizer.load_state_dict (that replaces the group dicts by the checkpoint's)
        if not self._param_ids or not any(
            id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"]
        ):
            return
        self.steps += 1
        if self.steps == 1:
            self.optimizer_ref = weakref.ref(optimizer)
            names = {id(p): n for n, p in self.model.named_parameters()}
            self.groups_at_first_step = [
                (g.get("name", "?"), float(g["lr"]), [names.get(id(p), "?") for p in g["params"]])
                for g in optimizer.param_groups
            ]
            self._hook_handles.append(
                optimizer.register_load_state_dict_post_hook(self._on_checkpoint_loaded)
            )
        if (
            self.unfreeze_step is not None
            and self.unfrozen_at_step is None
            and self.steps >= self.unfreeze_step
        ):
            self._unfreeze(optimizer)

    def _unfreeze(self, optimizer) -> None:
        groups = optimizer.param_groups
        scale = 1.0
        if self._reference is not None:
            index, nominal = self._reference
            scale = float(groups[index]["lr"]) / nominal
        thawed = []
        for index, nominal in sorted(self._pending.items()):
            group = groups[index]
            group["lr"] = nominal * scale
            if "initial_lr" in group:
                group["initial_lr"] = nominal
            group[GROUP_TAG] = dict(group.get(GROUP_TAG, {}), held=False)
            for param in group["params"]:
                param.requires_grad_(True)
            thawed.append(f"{group.get('name', '?')} (lr {group['lr']:.3g})")
        self._pending = {}
        self.unfrozen_at_step = self.steps
        log.info(
            "mace-transfer: unfreezing after epoch %d (optimizer step %d): %s",
            self.spec.unfreeze_after,
            self.steps,
            ", ".join(thawed) or "nothing",
        )

    # -- optimizer load_state_dict post-hook: MACE reloads the best checkpoint, then saves
    def _on_checkpoint_loaded(self, optimizer) -> None:
        if self.model is None:
            return
        for param in self.model.parameters():
            param.requires_grad_(True)
        self.restored_after_training = True
        log.info("mace-transfer: checkpoint reloaded after training; all parameters trainable again")

    def close(self) -> None:
        """Remove hooks; put ``requires_grad=True`` back on what the plan froze."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()
        if self.model is not None:
            for name, param in self.model.named_parameters():
                if self.plan.get(name, ParamPlan("trainable", 1.0)).state != "trainable":
                    param.requires_grad_(True)


def resumed_epoch(args) -> Optional[int]:
    """The epoch MACE's ``--restart_latest`` resumes at: that of the newest checkpoint of this run
    (``<checkpoints_dir>/<name>_run-<seed>_epoch-<N>[_swa].pt``, MACE's CheckpointIO naming), or None."""
    folder = Path(getattr(args, "checkpoints_dir", None) or "checkpoints")
    pattern = re.compile(rf"^{re.escape(f'{args.name}_run-{args.seed}')}_epoch-(\d+)(_swa)?\.pt$")
    epochs = [int(m.group(1)) for p in (folder.glob("*.pt") if folder.is_dir() else [])
              if (m := pattern.match(p.name))]
    return max(epochs) if epochs else None


def _steps_per_epoch_from_caller() -> int:
    """``len(train_loader)`` read from MACE's ``run()`` frame (the caller of the seam wrapper).

    Read-only; pass ``steps_per_epoch`` to :func:`optimizer_seam` to avoid it."""
    frame = sys._getframe(2)  # 0: here, 1: SeamSession.get_params_options, 2: MACE's run()
    loader = frame.f_locals.get("train_loader")
    if loader is None:
        raise RuntimeError(
            "--unfreeze_after: cannot find MACE's train_loader in the caller of "
            "get_params_options; pass steps_per_epoch to freeze.optimizer_seam"
        )
    return max(1, len(loader))


def _split_groups(options, names: Dict[int, str], plan: Dict[str, ParamPlan]):
    """Split every MACE group by block; drop frozen parameters; hold thawing ones at lr 0.

    Returns (new groups, parameter name -> list of group learning rates)."""
    default_lr = options.get("lr", 0.0)
    new_groups: List[Dict] = []
    lrs: Dict[str, List[float]] = {}
    for group in options["params"]:
        params = list(group["params"])
        base_lr = group.get("lr", default_lr)
        buckets: Dict[Tuple, List] = {}
        for param in params:
            name = names[id(param)]
            p = plan[name]
            if p.state == "frozen":
                continue
            key = (display_block(name), p.state, p.factor)
            buckets.setdefault(key, []).append((name, param))
        for (label, state, factor), members in buckets.items():
            new = {k: v for k, v in group.items() if k != "params"}
            new["params"] = [param for _, param in members]
            new["name"] = f"{group.get('name', 'group')}:{label.replace(' ', '')}"
            # bookkeeping shown in the optimizer's state dict; the seam itself keeps its own copy
            new[GROUP_TAG] = {"nominal_lr": base_lr * factor, "held": state == "thaws"}
            new["lr"] = 0.0 if state == "thaws" else base_lr * factor
            new_groups.append(new)
            for name, _ in members:  # a held group is listed with the lr it gets once thawed
                lrs.setdefault(name, []).append(base_lr * factor)
    return new_groups, lrs


@contextlib.contextmanager
def optimizer_seam(
    spec: Optional[FreezeSpec], steps_per_epoch: Optional[int] = None
) -> Iterator[Optional[SeamSession]]:
    """Within the block, MACE's ``run(args)`` builds its optimizer through the freezing wrapper.

    ``spec`` None or inactive: nothing is patched (yields None).  ``steps_per_epoch``: optimizer
    steps per epoch for ``--unfreeze_after``; None reads ``len(train_loader)`` from MACE's run().
    On exit the original ``get_params_options`` is back, the hooks are removed and the parameters
    the plan froze have ``requires_grad=True`` again."""
    if spec is None or not spec.active:
        yield None
        return
    import mace.cli.run_train as run_train

    original = run_train.get_params_options
    if isinstance(getattr(original, "__self__", None), SeamSession):
        raise RuntimeError("freeze.optimizer_seam is already open (nested seams are not supported)")
    session = SeamSession(spec=spec, original=original, steps_per_epoch=steps_per_epoch)
    run_train.get_params_options = session.get_params_options
    step_handle = register_optimizer_step_post_hook(session.on_optimizer_step)
    try:
        yield session
    finally:
        run_train.get_params_options = original
        step_handle.remove()
        session.close()
        if session.steps > 0 and not session.restored_after_training:
            log.warning(
                "mace-transfer: MACE did not reload a checkpoint after training; a .model it "
                "saved may hold requires_grad=False parameters (freeze.ensure_trainable_file fixes it)"
            )


def ensure_trainable_file(path) -> int:
    """Load a saved MACE ``.model``, set ``requires_grad=True`` on every parameter and re-save it
    in place if any was False. Returns how many parameter tensors were switched."""
    import mace  # noqa: F401  (registers MACE classes before torch.load)

    model = torch.load(path, map_location="cpu", weights_only=False)
    switched = 0
    for param in model.parameters():
        if not param.requires_grad:
            param.requires_grad_(True)
            switched += 1
    if switched:
        torch.save(model, path)
    return switched
