"""Active learning seeded by a transferred model (issue 49): explore -> select -> label -> fine-tune -> check.

One floor between ``studies`` and ``evaluate``: it may import ``transfer``, ``datagen``, ``evaluate`` and
``mace_transfer.execution``, never ``studies`` or ``cli``.

* :mod:`committee`: a committee of MACE models (MACE's own ``MACECalculator(model_paths=[...])``), the
  per-structure force uncertainty (eV/Å) from its spread, its calibration, and the member fine-tune task;
* :mod:`explore`: MD with the current model in the sampler's kinds of cells, seeded and resumable; a
  geometry the model breaks on is a candidate, not a crash;
* :mod:`select`: highest uncertainty with a diversity rule (no two near-duplicates in one batch);
* :mod:`labels`: labellers (CP2K, any ASE calculator, a classical potential, a labelled pool) run as
  executor tasks and written by the resumable labeller in this process;
* :mod:`stop`: the stop rule (uncertainty below a threshold for K rounds, or the DFT budget);
* :mod:`loop`: the rounds, their markers and records (resumable after kill -9 at any step).

docs/ACTIVE.md says how to run it and what a round's record holds.
"""
