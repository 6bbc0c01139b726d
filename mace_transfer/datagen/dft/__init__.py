"""PBE labels with a real DFT code (CP2K), resumable; an unconverged SCF never becomes a label.

Modules (each imports only the ones above it):

- :mod:`.cp2k` -- running CP2K: :class:`PBESettings`, input writer, output parser,
  :class:`CP2KCalculator` (energy eV, forces eV/Å, stress eV/Å^3), :func:`isolated_atom`.
- :mod:`.labeller` -- the resumable labeller: :func:`label_structures`, :func:`add_isolated_atoms`,
  :func:`scale_lengths` and the bookkeeping of done and failed structures.
- :mod:`.assemble` -- :func:`assemble_labelled`: labeller outputs of one element into one training file.
"""

from mace_transfer.datagen.dft.assemble import assemble_labelled
from mace_transfer.datagen.dft.cp2k import (
    ATOM_MULTIPLICITY,
    CP2KCalculator,
    CP2KNotRunnable,
    PBESettings,
    SCFNotConverged,
    cp2k_input,
    isolated_atom,
    kpoint_mesh,
    load_settings,
    parse_cp2k_output,
)
from mace_transfer.datagen.dft.labeller import (
    LOW_CORE_USAGE,
    SAME_GEOMETRY_ATOL,
    LabellingAborted,
    OutputBusy,
    SettingsMismatch,
    add_isolated_atoms,
    failed_sidecar,
    label_id,
    label_structures,
    labelled_source_indices,
    read_complete_frames,
    read_done,
    read_failed,
    same_structure,
    scale_lengths,
    structure_hash,
)

__all__ = [
    # cp2k
    "ATOM_MULTIPLICITY", "CP2KCalculator", "CP2KNotRunnable", "PBESettings", "SCFNotConverged", "cp2k_input",
    "isolated_atom", "kpoint_mesh", "load_settings", "parse_cp2k_output",
    # labeller
    "LOW_CORE_USAGE", "SAME_GEOMETRY_ATOL", "LabellingAborted", "OutputBusy", "SettingsMismatch",
    "add_isolated_atoms", "failed_sidecar", "label_id", "label_structures", "labelled_source_indices",
    "read_complete_frames", "read_done", "read_failed", "same_structure", "scale_lengths",
    "structure_hash",
    # assemble
    "assemble_labelled",
]
