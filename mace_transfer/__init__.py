"""mace-transfer: transfer learning across chemical elements for MACE.

One folder per layer, arrows down only (README "Layout"):

* ``cli``: console scripts (parse, call one function below, print a UserInputError as one line);
* ``studies``: learning-curve studies (``config``, ``data``, ``runs``, ``records``, ``report``) and
  staged pipelines;
* ``evaluate``: judge any ASE calculator (test errors, MD stability, crystal properties, close contact);
* ``transfer``: the MACE-facing core (``remap``, ``estimate``: corresponding states, E0s and shift from the
  target data, ``blocks``: block names, ``freeze``, ``train``: the one door to MACE's run,
  ``early_stop``: its results log and epoch-limit seam);
* ``datagen``: labelled configurations (``classical`` SW/Tersoff, ``sampling``, ``dft`` through CP2K).

The flat module names of release 0.1 (``mace_transfer.remap``, ``mace_transfer.dft``, ...) stay
importable for one release: they are the modules of the new layout under their old name.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"


class UserInputError(ValueError):
    """Bad input from a user: printed as one line by the console scripts (exit code 2)."""


#: release-0.1 module name -> its module in the layered layout (removed in 0.3)
MOVED_MODULES = {
    "remap": "transfer.remap",
    "freeze": "transfer.freeze",
    "train": "transfer.train",
    "classical": "datagen.classical",
    "sampling": "datagen.sampling",
    "dft": "datagen.dft",
    "evaluate_md": "evaluate.md",
    "evaluate_properties": "evaluate.properties",
    "evaluate_report": "evaluate.report",
    "learning_curve": "studies.learning_curve",
    "pipeline": "studies.pipeline",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import mace_transfer.remap`` -> the module ``mace_transfer.transfer.remap`` itself (one
    module object under two names, so state and ``isinstance`` are shared), with a DeprecationWarning."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new_name = f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new_name}; the old name goes in mace-transfer 0.3",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new_name)
        self._saved = (module.__spec__, getattr(module, "__loader__", None))
        return module

    def exec_module(self, module):
        # the import machinery stamped the alias spec on the shared module: give it back its own
        module.__spec__, module.__loader__ = self._saved


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
