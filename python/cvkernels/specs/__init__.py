"""The kernel families: every module here declares ``FAMILY`` (a :class:`cvkernels.spec.Family`).

Modules are discovered, not listed: adding ``specs/<family>.py`` adds the family to the build,
the backends, ``cvk check``, the bench and the test matrix.
"""
from __future__ import annotations

import importlib
import pkgutil

FAMILIES = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name.startswith("_"):
        continue
    _mod = importlib.import_module(f"{__name__}.{_info.name}")
    if not hasattr(_mod, "FAMILY"):
        raise ImportError(f"cvkernels.specs.{_info.name} declares no FAMILY")
    FAMILIES.append(_mod.FAMILY)
_names = [f.name for f in FAMILIES]
if len(set(_names)) != len(_names):
    raise ImportError(f"cvkernels.specs: duplicate family names in {_names}")
