"""cantools without python-can until something uses python-can.

cantools' package ``__init__`` imports its ``tester`` module (which drives a live bus),
and ``tester`` imports python-can, which imports asammdf for its MF4 reader, and asammdf
sympy and pandas: ~0.6 s of a core in every process that decodes a DBC. That is every
ingest's decoder process (``ingest.budget``), every Ray worker that ingests and every
``fleetmine ingest``, for code ingest never runs. :func:`defer_cantools_tester` registers
``cantools.tester`` as a module whose code runs when a name in it is first asked for, so
python-can loads only where it is used: the readers of python-can's formats import it
when they read (``ingest/can/vector_*.py``, ``peak_trc.py``, ``asam_mdf4.py``).

(:class:`importlib.util.LazyLoader` does not serve here: the import system reads the
module's ``__spec__`` when cantools binds the name, which loads a ``LazyLoader`` module.)
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["defer_cantools_tester"]


class _OnFirstUse(types.ModuleType):
    """A module whose code runs when one of its names is first asked for (not a dunder:
    the import system asks those of any module it binds)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # once: a plain module from here on
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(self)
        return getattr(self, name)


def defer_cantools_tester() -> None:
    """Register ``cantools.tester`` to load on first use; a no-op once cantools is loaded
    or where its layout is not the one this knows (it then loads as it always did)."""
    if "cantools" in sys.modules or "cantools.tester" in sys.modules:
        return
    found = importlib.util.find_spec("cantools")  # finds the package, does not import it
    if found is None or not found.submodule_search_locations:
        return
    path = Path(next(iter(found.submodule_search_locations))) / "tester.py"
    spec = importlib.util.spec_from_file_location("cantools.tester", path)
    if spec is None or spec.loader is None or not path.is_file():
        return
    module = _OnFirstUse(spec.name)
    module.__spec__, module.__loader__ = spec, spec.loader
    module.__file__, module.__package__ = str(path), "cantools"
    sys.modules[spec.name] = module
