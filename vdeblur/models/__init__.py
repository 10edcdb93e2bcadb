"""PyTorch reference architectures of the supported model families.

``create`` builds a preset or a family, ``load_checkpoint`` loads a released checkpoint into it,
``run_clip`` is the reference result of the whole deployment path for a clip. Importing this
package does not import torch (listing presets stays cheap); the functions import it when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdeblur.models.registry import PRESETS, Preset, create, list_presets

if TYPE_CHECKING:
    import torch

    from vdeblur.models.checkpoints import LoadReport

__all__ = ["PRESETS", "Preset", "create", "list_presets", "load_checkpoint", "run_clip"]


def load_checkpoint(model: Any, path: str | Path) -> LoadReport:
    """Load a released checkpoint into ``model`` (strict, safe); returns a LoadReport.

    See :func:`vdeblur.models.checkpoints.load_checkpoint` for the accepted formats.
    """
    from vdeblur.models.checkpoints import load_checkpoint as _load

    return _load(model, path)


def run_clip(model: Any, frames: torch.Tensor) -> torch.Tensor:
    """Reference result for a clip: frames (N, T, 3, H, W) float RGB in [0, 1] -> (N, T, 3, H, W).

    Streaming models run frame by frame under the streaming semantics (zero state / first-frame
    handling at the start, history replicated at both ends); frames are padded to the model's
    multiple (edge replication) and cropped back. See :func:`vdeblur.models.blocks.run_clip`.
    """
    from vdeblur.models.blocks import run_clip as _run

    return _run(model, frames)
