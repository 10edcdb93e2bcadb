"""The registry of ops: every folder of vdeblur/plugins that holds a ``spec.py`` defining ``SPEC``.

Adding an op is adding its folder; nothing here names an op. Torch-free.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from vdeblur.errors import UsageError
from vdeblur.plugins.spec import OpSpec

_HERE = Path(__file__).parent
_SPECS: dict[str, OpSpec] = {}


def specs() -> dict[str, OpSpec]:
    """name -> OpSpec of every op, sorted by name (the op folders are imported on the first call)."""
    if not _SPECS:
        found = {}
        for m in sorted(pkgutil.iter_modules([str(_HERE)]), key=lambda m: m.name):
            if not (m.ispkg and (_HERE / m.name / "spec.py").is_file()):
                continue
            spec = getattr(importlib.import_module(f"{__package__}.{m.name}.spec"), "SPEC", None)
            if not isinstance(spec, OpSpec) or spec.name != m.name:
                raise UsageError(f"plugins: {m.name}/spec.py defines no SPEC named {m.name!r}. "
                                 f"Expected SPEC = OpSpec(name={m.name!r}, ...).")
            found[m.name] = spec
        _SPECS.update(found)
    return dict(_SPECS)


def get(name: str) -> OpSpec:
    """The spec of op ``name`` (its folder, e.g. "correlation")."""
    known = specs()
    if name not in known:
        raise UsageError(f"plugins: op {name!r} is unknown. Expected one of {', '.join(known)}.")
    return known[name]
