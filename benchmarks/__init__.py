"""collab's benchmark suites, run by ``collab bench SUITE|all`` (and ``make bench``).

A suite is a module ``benchmarks/<suite>.py`` that defines

- ``run(results_dir: Path | None = None, log: Callable[[str], None] | None = None) -> dict``:
  measure on real components, write ``<results_dir>/<suite>.json`` (and a PNG)
  through :mod:`benchmarks.report`, and return the same dict;
- ``render(results: dict) -> rich renderable``: the table printed on stdout.

Modules without a ``run`` function (``report``, private helpers) are not
suites. Discovery never imports a suite, so listing suites stays cheap even
when one of them needs torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from collab.errors import InternalError, NotFound

NOT_SUITES = frozenset({"report"})


def suite_names() -> list[str]:
    """Names of the suite modules present under ``benchmarks/``, sorted."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.ispkg and not info.name.startswith("_") and info.name not in NOT_SUITES
    )


def load_suite(name: str) -> ModuleType:
    """Import the suite ``name``; NotFound if there is none, InternalError if it is not one."""
    if name not in suite_names():
        raise NotFound(f"no benchmark suite named {name!r}", hint=f"known: {', '.join(suite_names()) or 'none'}")
    module = importlib.import_module(f"{__name__}.{name}")
    if not callable(getattr(module, "run", None)):
        raise InternalError(f"benchmarks/{name}.py defines no run() function")
    return module
