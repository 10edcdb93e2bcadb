"""Model registry: presets (released configurations) and families (constructors).

A *preset* names a released configuration (``mtu2``, ``mmprnn_a7b8c16``...); a *family* names an
architecture whose configuration is given as keyword arguments named like the official
constructors. Family modules register their builder with :func:`register_family`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vdeblur.errors import UsageError


@dataclass(frozen=True)
class Preset:
    """A released configuration of one family."""

    name: str
    family: str
    config: dict[str, Any]
    summary: str = ""


def _mtu(hg: int, rb: int, ch: int, skip: list[int]) -> dict[str, Any]:
    return {"hg_num": hg, "rb_num": rb, "ch": ch, "max_displacement": 10, "skip_corr_index": skip}


def _mmprnn(a: int, b: int, c: int) -> dict[str, Any]:
    return {
        "n_features": c,
        "n_blocks_a": a,
        "n_blocks_b": b,
        "future_frames": 2,
        "past_frames": 2,
        "activation": "gelu",
        "do_skip": True,
    }


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("mtu1", "mtu", _mtu(1, 8, 26, []), "MTU, 1 stack, 0.54 M params (PG 2022)"),
        Preset("mtu2", "mtu", _mtu(2, 8, 26, [1]), "MTU, 2 stacks, 1.04 M params: the 30 fps model"),
        Preset("mtu4", "mtu", _mtu(4, 8, 26, [1, 2, 3]), "MTU, 4 stacks, 2.04 M params"),
        Preset("mtu10", "mtu", _mtu(10, 8, 26, list(range(1, 10))), "MTU, 10 stacks, 5.03 M params"),
        Preset("mtu10_L", "mtu", _mtu(10, 6, 48, list(range(1, 10))), "MTU, 10 wide stacks, 13.80 M params"),
        Preset("mmprnn_a3b4c16", "mmprnn", _mmprnn(3, 4, 16), "MMP-RNN A3B4C16, 1.97 M params (ECCV 2022)"),
        Preset("mmprnn_a7b8c16", "mmprnn", _mmprnn(7, 8, 16), "MMP-RNN A7B8C16, 3.05 M params"),
        Preset("mmprnn_a9b10c18", "mmprnn", _mmprnn(9, 10, 18), "MMP-RNN A9B10C18, 4.05 M params"),
        Preset("dstnet", "dstnet", {"num_feat": 64, "num_block": 15}, "DSTNet, 7.45 M params (CVPR 2023)"),
        Preset("dstnet_L", "dstnet_L", {"num_feat": 96, "num_block": 30}, "DSTNet-L, 38.09 M params"),
    ]
}

FAMILY_NAMES = ("mtu", "mmprnn", "dstnet", "dstnet_L", "ahfnet", "arvo")


@dataclass
class _Family:
    builder: Callable[..., Any]
    kind: str  # "step" or "clip"
    defaults: dict[str, Any] = field(default_factory=dict)


_FAMILIES: dict[str, _Family] = {}


def register_family(
    name: str, builder: Callable[..., Any], kind: str, defaults: dict[str, Any] | None = None
) -> None:
    """Register the constructor of a family (called by the family's module at import)."""
    if name not in FAMILY_NAMES:
        raise UsageError(f"{name}: not a known family. Expected one of {', '.join(FAMILY_NAMES)}.")
    _FAMILIES[name] = _Family(builder, kind, dict(defaults or {}))


def is_available(family: str) -> bool:
    """Whether the architecture of ``family`` is implemented in this version."""
    _load_families()
    return family in _FAMILIES


def _load_families() -> None:
    # Family modules register themselves when imported; importing them here keeps
    # `vdeblur.models.registry` importable without torch for listing presets.
    import importlib

    for module in ("mtu", "mmprnn", "dstnet", "ahfnet", "arvo"):
        try:
            importlib.import_module(f"vdeblur.models.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"vdeblur.models.{module}":
                raise


def list_presets() -> list[Preset]:
    """All presets, in registry order."""
    return list(PRESETS.values())


def resolve(name: str, **overrides: Any) -> tuple[str, str | None, dict[str, Any]]:
    """Resolve a preset or family name to ``(family, preset_or_None, config)``."""
    if name in PRESETS:
        p = PRESETS[name]
        return p.family, p.name, {**p.config, **overrides}
    if name in FAMILY_NAMES:
        _load_families()
        defaults = _FAMILIES[name].defaults if name in _FAMILIES else {}
        return name, None, {**defaults, **overrides}
    known = ", ".join([*PRESETS, *FAMILY_NAMES])
    raise UsageError(f"{name}: unknown model. Expected a preset or a family: {known}.")


def create(name: str, **overrides: Any) -> Any:
    """Build the PyTorch reference module for a preset or a family.

    ``overrides`` are configuration keywords named like the official constructors.
    """
    family, _, config = resolve(name, **overrides)
    _load_families()
    if family not in _FAMILIES:
        raise UsageError(
            f"{name}: the {family} architecture is not implemented in this version of vdeblur. "
            f"Available families: {', '.join(sorted(_FAMILIES)) or 'none'}."
        )
    return _FAMILIES[family].builder(**config)
