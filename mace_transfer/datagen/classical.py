"""Classical Stillinger-Weber and Tersoff potentials for Si and Ge as ASE calculators.

Built on matscipy's many-body calculator (``matscipy.calculators.manybody.Manybody``) and its
explicit functional forms; this module only supplies the published parameter sets.
Units: energy eV, forces eV/Å, stress eV/Å^3 (ASE sign convention, Voigt order xx yy zz yz xz xy).

Public API: :func:`calculator`, :func:`available`, :func:`parameters`,
:func:`isolated_atom_energy`, :data:`REFERENCE_VALUES`.
"""

from __future__ import annotations

import copy
import warnings
from typing import Dict, List, Tuple

import numpy as np
from matscipy.calculators.manybody import Manybody
from matscipy.calculators.manybody.explicit_forms import StillingerWeber, TersoffBrenner
from matscipy.neighbours import CutoffNeighbourhood, first_neighbours, triplet_list

from mace_transfer import UserInputError

# --------------------------------------------------------------------------- parameter sets
# Stillinger-Weber: E = sum_{i<j} eps f2(r_ij/sigma) + sum_{i, j<k} eps lambda h(r_ij, r_ik, theta_jik).
# Keys follow matscipy's StillingerWeber explicit form. Energies eV, lengths Å.
_SW_COMMON = {
    "costheta0": 1.0 / 3.0,  # enters as (cos theta + 1/3)^2
    "A": 7.049556277,
    "B": 0.6022245584,
    "p": 4,
    "a": 1.80,
    "gamma": 1.20,
}

SW_PARAMETERS: Dict[str, dict] = {
    "Si": {
        "__ref__": "F. H. Stillinger and T. A. Weber, Phys. Rev. B 31, 5262 (1985)",
        "el": "Si",
        "epsilon": 2.1683,
        "sigma": 2.0951,
        "lambda1": 21.0,
        **_SW_COMMON,
    },
    "Ge": {
        "__ref__": "K. Ding and H. C. Andersen, Phys. Rev. B 34, 6987 (1986)",
        "el": "Ge",
        "epsilon": 1.93,
        "sigma": 2.181,
        "lambda1": 31.0,
        **_SW_COMMON,
    },
}

# Tersoff (1989 multicomponent paper, Table I; Si is the 'Si(C)' set of PRB 38, 9902 (1988)).
# Keys follow matscipy's TersoffBrenner explicit form in 'Tersoff' style, single element:
# A, B eV; lambda, mu 1/Å; r1 = R, r2 = S cutoff radii Å; lambda3 = 0 (no exponential angular term).
TERSOFF_PARAMETERS: Dict[str, dict] = {
    "Si": {
        "__ref__": "J. Tersoff, Phys. Rev. B 39, 5566 (1989), Table I (Si)",
        "style": "Tersoff",
        "el": ["Si"],
        "A": [1.8308e3],
        "B": [4.7118e2],
        "chi": [1.0],
        "lambda": [2.4799],
        "mu": [1.7322],
        "lambda3": [0.0],
        "beta": [1.1000e-6],
        "n": [7.8734e-1],
        "c": [1.0039e5],
        "d": [1.6217e1],
        "h": [-5.9825e-1],
        "r1": [2.70],
        "r2": [3.00],
    },
    "Ge": {
        "__ref__": "J. Tersoff, Phys. Rev. B 39, 5566 (1989), Table I (Ge)",
        "style": "Tersoff",
        "el": ["Ge"],
        "A": [1.769e3],
        "B": [4.1923e2],
        "chi": [1.0],
        "lambda": [2.4451],
        "mu": [1.7047],
        "lambda3": [0.0],
        "beta": [9.0166e-7],
        "n": [7.5627e-1],
        "c": [1.0643e5],
        "d": [1.5652e1],
        "h": [-4.3884e-1],
        "r1": [2.80],
        "r2": [3.10],
    },
}

_PARAMETERS = {"sw": SW_PARAMETERS, "tersoff": TERSOFF_PARAMETERS}

# --------------------------------------------------------------------------- reference values
#: Published diamond-lattice properties of each potential: lattice constant (Å) and cohesive
#: energy (eV/atom, the diamond crystal's energy per atom relative to free atoms, so negative).
#: SW: a = 4 * 2^(1/6) sigma / sqrt(3) and E = -2 epsilon exactly, by construction of the form.
#: Ding & Andersen quote the experimental 3.85 eV for Ge; their epsilon gives 2 * 1.93 = 3.86 eV.
#: Tersoff: values listed beside the parameters in Tersoff 1989, Table I.
REFERENCE_VALUES: Dict[Tuple[str, str], Dict[str, object]] = {
    ("Si", "sw"): {"lattice_constant": 5.431, "cohesive_energy": -4.3366,
                   "source": "Stillinger & Weber, PRB 31, 5262 (1985)"},
    ("Ge", "sw"): {"lattice_constant": 5.654, "cohesive_energy": -3.86,
                   "source": "Ding & Andersen, PRB 34, 6987 (1986)"},
    ("Si", "tersoff"): {"lattice_constant": 5.432, "cohesive_energy": -4.63,
                        "source": "Tersoff, PRB 39, 5566 (1989)"},
    ("Ge", "tersoff"): {"lattice_constant": 5.658, "cohesive_energy": -3.85,
                        "source": "Tersoff, PRB 39, 5566 (1989)"},
}


# --------------------------------------------------------------------------- API
def available() -> List[Tuple[str, str]]:
    """Valid ``(element, potential)`` pairs, e.g. ``('Ge', 'sw')``."""
    return [(element, potential) for potential, table in _PARAMETERS.items() for element in table]


def _normalise(element: str, potential: str) -> Tuple[str, str]:
    """Canonical spelling (``'Ge'``, ``'sw'``) or UserInputError listing the valid pairs."""
    element_key = str(element).strip().capitalize()
    potential_key = str(potential).strip().lower().replace("-", "_")
    potential_key = {"stillinger_weber": "sw", "stillingerweber": "sw"}.get(potential_key, potential_key)
    if (element_key, potential_key) not in available():
        valid = ", ".join(f"{e}/{p}" for e, p in available())
        raise UserInputError(
            f"no classical potential for element={element!r}, potential={potential!r}; valid: {valid}"
        )
    return element_key, potential_key


def parameters(element: str, potential: str) -> dict:
    """A copy of the parameter dict (matscipy's keys; eV and Å) for ``(element, potential)``."""
    element_key, potential_key = _normalise(element, potential)
    return copy.deepcopy(_PARAMETERS[potential_key][element_key])


def isolated_atom_energy(element: str, potential: str) -> float:
    """Energy of one free atom (eV): 0 for SW and Tersoff, whose terms all vanish beyond the cutoff."""
    _normalise(element, potential)
    return 0.0


class _FastTripletNeighbourhood(CutoffNeighbourhood):
    """matscipy's cutoff neighbourhood without the work energy/forces/stress never use.

    ``CutoffNeighbourhood.get_triplets`` recomputes the pair list and always builds the j-k pair
    index of every triplet in a Python loop (~75% of a 64-atom evaluation); ``Manybody.calculate``
    asks only for ``'ijdD'``. Here the pair list of the preceding ``get_pairs`` call is reused and
    the C triplet list is used alone; any request involving ``'k'`` goes to matscipy unchanged.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cached_pairs = None  # (positions, cell, pbc, cutoff, (i, j, d, D))

    def _pairs_ijdD(self, atoms, cutoff):
        cached = self._cached_pairs
        if (cached is not None and cached[3] == cutoff and np.array_equal(cached[0], atoms.positions)
                and np.array_equal(cached[1], atoms.cell.array) and np.array_equal(cached[2], atoms.pbc)):
            return cached[4]
        pairs = super().get_pairs(atoms, "ijdD", cutoff)
        self._cached_pairs = (atoms.positions.copy(), atoms.cell.array.copy(), atoms.pbc.copy(), cutoff, pairs)
        return pairs

    def get_pairs(self, atoms, quantities, cutoff=None):
        cutoff = self.cutoff if cutoff is None else cutoff
        if quantities != "ijdD":
            return super().get_pairs(atoms, quantities, cutoff)
        return self._pairs_ijdD(atoms, cutoff)

    def get_triplets(self, atoms, quantities, neighbours=None, cutoff=None):
        cutoff = self.cutoff if cutoff is None else cutoff
        if "k" in quantities or neighbours is not None or not np.isscalar(cutoff):
            return super().get_triplets(atoms, quantities, neighbours=neighbours, cutoff=cutoff)
        i_p, j_p, d_p, D_p = self._pairs_ijdD(atoms, cutoff)
        ij_t, ik_t = triplet_list(first_neighbours(len(atoms), i_p), d_p, cutoff)
        D = np.zeros((len(ij_t), 3, 3))
        D[:, 0] = D_p[ij_t]
        D[:, 1] = D_p[ik_t]
        D[:, 2] = D[:, 1] - D[:, 0]
        connectivity = np.array([ij_t, ik_t]).T
        return self.make_result(quantities, connectivity, D, np.linalg.norm(D, axis=-1), None,
                                accepted_quantities="ijdD")


class ClassicalCalculator(Manybody):
    """matscipy many-body calculator that refuses atoms of any element but its own.

    matscipy's single-element forms treat every atom as the same type, so a Si potential would
    silently evaluate a Ge structure; this subclass makes that a UserInputError instead.
    """

    def __init__(self, element: str, potential: str):
        self.element, self.potential = _normalise(element, potential)
        params = parameters(self.element, self.potential)
        form = StillingerWeber(params) if self.potential == "sw" else TersoffBrenner(params)
        neighbourhood = _FastTripletNeighbourhood(atom_types=form["atom_type"], pair_types=form["pair_type"])
        super().__init__(**form, neighbourhood=neighbourhood)
        self.name = f"{self.potential}-{self.element}"

    def calculate(self, atoms=None, properties=None, system_changes=None):
        """Energy (eV), forces (eV/Å), stress (eV/Å^3) of ``atoms`` (a single-element structure)."""
        from ase.calculators.calculator import all_changes
        from ase.data import atomic_numbers

        if atoms is not None:
            numbers = np.unique(atoms.numbers)
            if numbers.size and (numbers.size > 1 or numbers[0] != atomic_numbers[self.element]):
                found = sorted(set(atoms.get_chemical_symbols()))
                raise UserInputError(
                    f"{self.name} potential describes only {self.element}; structure contains {found}"
                )
        with warnings.catch_warnings():
            # matscipy's Tersoff bond-order derivative masks xi == 0 itself; its numpy warning is noise.
            warnings.filterwarnings("ignore", message="'where' used without 'out'")
            super().calculate(atoms, properties or ["energy"], system_changes or all_changes)


def calculator(element: str, potential: str) -> ClassicalCalculator:
    """An ASE calculator for ``potential`` in {'sw', 'tersoff'} and ``element`` in {'Si', 'Ge'}.

    Results: energy (eV), forces (eV/Å), stress (eV/Å^3, Voigt xx yy zz yz xz xy).
    Raises UserInputError for an unknown pair (the message lists :func:`available`).
    """
    return ClassicalCalculator(element, potential)
