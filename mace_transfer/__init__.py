"""mace-transfer: transfer learning across chemical elements for MACE.

Modules (one per capability): ``remap`` (element-indexed weights A->B), ``freeze``
(block freezing and per-block learning rates), ``classical`` (SW/Tersoff calculators),
``sampling`` (configurations), ``dft`` (PBE labels), ``train`` (the door to MACE's
training), ``pipeline`` (staged runs), ``evaluate`` (errors, MD stability, properties),
``cli`` (console scripts).
"""

__version__ = "0.1.0"


class UserInputError(ValueError):
    """Bad input from a user: printed as one line by the console scripts (exit code 2)."""
