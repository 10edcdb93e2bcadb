"""PyTorch reference architectures of the supported model families."""

from vdeblur.models.registry import PRESETS, Preset, create, list_presets

__all__ = ["PRESETS", "Preset", "create", "list_presets"]
