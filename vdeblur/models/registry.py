"""The model registry: generic; it knows no family by name.

A *family* module (``vdeblur/models/<family>.py``) defines the architecture, its defaults and its
*presets* (released configurations such as ``mtu2``) and calls :func:`register_family` at import.
The registry discovers family modules by importing the modules of this package, so a new family
is one new file. Only families that exist are listed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vdeblur.errors import UsageError

_NOT_FAMILIES = {"registry", "blocks", "checkpoints"}


@dataclass(frozen=True)
class Preset:
    """A released configuration of one family."""

    name: str
    family: str
    config: dict[str, Any]
    summary: str = ""


@dataclass
class Family:
    name: str
    builder: Callable[..., Any]
    kind: str  # "step" or "clip"
    defaults: dict[str, Any] = field(default_factory=dict)
    presets: list[Preset] = field(default_factory=list)


_FAMILIES: dict[str, Family] = {}
_PRESETS: dict[str, Preset] = {}
_loaded = False


def register_family(name: str, builder: Callable[..., Any], kind: str, defaults: dict[str, Any] | None = None,
                    presets: Sequence[Preset] = ()) -> None:
    """Register a family's constructor, defaults and presets (called by the family's module)."""
    if kind not in ("step", "clip"):
        raise UsageError(f"{name}: kind {kind!r} is unknown. Expected 'step' or 'clip'.")
    for p in presets:
        if p.family != name:
            raise UsageError(f"{p.name}: preset of family {p.family!r} registered by {name!r}. Expected {name!r}.")
        owner = _PRESETS.get(p.name)
        if owner is not None and owner.family != name:
            raise UsageError(f"{p.name}: preset name already used by family {owner.family!r}. Expected unique names.")
    _FAMILIES[name] = Family(name, builder, kind, dict(defaults or {}), list(presets))
    for p in presets:
        _PRESETS[p.name] = p


def _load_families() -> None:
    """Import every module of vdeblur.models once (family modules register themselves)."""
    global _loaded
    if _loaded:
        return
    import vdeblur.models as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name not in _NOT_FAMILIES and not info.name.startswith("_"):
            importlib.import_module(f"vdeblur.models.{info.name}")
    _loaded = True


class _PresetView(Mapping[str, Preset]):
    """``PRESETS``: every preset by name, in family then release order (loads the families)."""

    def _all(self) -> dict[str, Preset]:
        _load_families()
        return {p.name: p for f in families() for p in f.presets}

    def __getitem__(self, name: str) -> Preset:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


PRESETS: Mapping[str, Preset] = _PresetView()


def families() -> list[Family]:
    """The registered families by the name of the module that registered them, then in registration
    order within a module: the same order whichever family a process imported first."""
    _load_families()
    order = {name: i for i, name in enumerate(_FAMILIES)}
    return sorted(_FAMILIES.values(), key=lambda f: (getattr(f.builder, "__module__", "") or "", order[f.name]))


def family_names() -> list[str]:
    return [f.name for f in families()]


def list_presets() -> list[Preset]:
    """All presets, family by family in release order."""
    return list(PRESETS.values())


def resolve(name: str, **overrides: Any) -> tuple[str, str | None, dict[str, Any]]:
    """Resolve a preset or family name to ``(family, preset_or_None, config)``."""
    _load_families()
    if name in _PRESETS:
        p = _PRESETS[name]
        return p.family, p.name, {**p.config, **overrides}
    if name in _FAMILIES:
        return name, None, {**_FAMILIES[name].defaults, **overrides}
    known = ", ".join([*PRESETS, *_FAMILIES])
    raise UsageError(f"{name}: unknown model. Expected a preset or a family: {known}.")


def create(name: str, **overrides: Any) -> Any:
    """Build the PyTorch reference module for a preset or a family.

    ``overrides`` are configuration keywords named like the official constructors.
    """
    family, _, config = resolve(name, **overrides)
    return _FAMILIES[family].builder(**config)
