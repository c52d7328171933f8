"""learn2learn's algorithms and data subpackages, loaded without its top-level ``__init__``.

``import learn2learn`` (0.2.0) imports all its subpackages, among them ``vision`` (torchvision) and
``gym`` (gym). Beside a CPU-only torch, PyPI's torchvision does not import (its compiled operators
belong to another torch build) and installing it would pull another torch, so the reference
comparisons of the tests and benchmarks (MAML's adapted weights and meta-gradients, its per-step
time, its episode sampler) would never run. They need only ``learn2learn.algorithms`` (MAML,
``clone_module``, ``update_module``: torch alone) and ``learn2learn.data`` (MetaDataset, TaskDataset
and their transforms: numpy, requests, tqdm). This module runs those subpackages' own code, as
installed, unchanged; only the package's ``__init__`` (which imports the rest) is skipped.
``.ci/install_learn2learn.sh`` installs learn2learn 0.2.0 without its dependencies.

    from l2l_import import import_learn2learn
    l2l = import_learn2learn()          # ImportError (with the reason) where learn2learn is absent
    maml = l2l.algorithms.MAML(net, lr=0.4)
    tasks = import_learn2learn("data").data.TaskDataset(...)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def import_learn2learn(*subpackages: str) -> ModuleType:
    """learn2learn's package module holding ``utils`` and ``subpackages`` (default ``algorithms``;
    ``data`` also needs requests), with its ``__init__`` not run. ``sys.modules`` is left
    as it was: the loaded modules refer to each other directly, and a later ``import learn2learn``
    still runs the package's own ``__init__``."""
    if "learn2learn" in sys.modules:  # already imported whole
        return sys.modules["learn2learn"]
    spec = importlib.util.find_spec("learn2learn")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("No module named 'learn2learn'", name="learn2learn")
    before = set(sys.modules)
    package = importlib.util.module_from_spec(spec)  # its __init__ is not executed
    sys.modules["learn2learn"] = package
    try:
        for name in ("utils", *(subpackages or ("algorithms",))):  # utils: used by the others at run time
            setattr(package, name, importlib.import_module(f"learn2learn.{name}"))
    finally:
        for name in set(sys.modules) - before:
            if name == "learn2learn" or name.startswith("learn2learn."):
                del sys.modules[name]
    return package
