"""Input validation shared by the ops' entry points (clear errors before any kernel runs)."""

from __future__ import annotations

import torch

from vdeblur.errors import ShapeError, UsageError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_feature(name: str, x: torch.Tensor, op: str) -> None:
    """A feature map: 4-D (N, C, H, W), floating point."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{op}: {name} is a {type(x).__name__}. Expected a torch.Tensor (N, C, H, W).")
    if x.dim() != 4:
        raise ShapeError(f"{op}: {name} has shape {tuple(x.shape)}. Expected 4 dimensions (N, C, H, W).")
    if x.dtype not in FLOAT_DTYPES:
        raise ShapeError(
            f"{op}: {name} has dtype {x.dtype}. Expected a floating-point dtype (float32, float16, bfloat16, float64)."
        )


def check_same(op: str, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], dims: slice) -> None:
    if tuple(a.shape[dims]) != tuple(b.shape[dims]):
        raise ShapeError(
            f"{op}: {names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} do not match. "
            f"Expected equal sizes in dimensions {dims.start or 0}..{(dims.stop or 4) - 1}."
        )
    if a.device != b.device:
        raise ShapeError(f"{op}: {names[0]} is on {a.device} and {names[1]} on {b.device}. Expected one device.")


def check_int(op: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{op}: {name}={value!r} is invalid. Expected an integer >= {minimum}.")
    return value
