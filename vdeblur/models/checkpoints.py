"""Checkpoint loading: official release formats, safe loading only, strict key checks.

Accepted: a raw state_dict; ``{'params' | 'params_ema' | 'state_dict': state_dict, ...}`` (other
top-level entries such as optimizer, scheduler, epoch are ignored and reported); keys prefixed with
``module.`` (DataParallel) and/or ``model.`` (ESTRNN-style training wrapper, MMP-RNN). Files are
read with ``torch.load(weights_only=True)`` (tensors and plain containers only: a pickle that would
import or call anything is refused before it runs) or, for ``.safetensors`` files, with safetensors.
Keys a family drops on purpose (``checkpoint_drop()`` of the model, e.g. MTU's training-only
``deblur_layer.*`` heads) are removed and reported; anything else that does not fit raises
:class:`CheckpointError` listing the missing and unexpected keys.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vdeblur.errors import CheckpointError, MissingDependencyError

CONTAINER_KEYS = ("params_ema", "params", "state_dict")  # preference order when several are present
# Wrapper prefixes, stripped in this order when every key carries them (and the model's keys do not):
# nn.DataParallel's "module.", then the "model." of ESTRNN-style training wrappers (MMP-RNN's dp.py
# saves DataParallel(Wrapper(...)) whose network attribute is ``model``).
PREFIXES = ("module.", "model.")
_LIST = 8  # keys listed per category in error messages


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    format: "torch" | "safetensors"; container: "raw" or the unwrapped entry ("params"...);
    stripped_prefix: the key prefix removed ("module.", "module.model."...) or None; loaded: number
    of tensors loaded; dropped: key -> reason, for keys dropped on purpose; ignored_entries:
    top-level entries of the file that are not weights (optimizer, epoch...).
    """

    path: str
    format: str
    container: str
    stripped_prefix: str | None
    loaded: int
    dropped: dict[str, str] = field(default_factory=dict)
    ignored_entries: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line per fact, for humans."""
        lines = [f"{self.path}: loaded {self.loaded} tensors ({self.format}, {self.container})"]
        if self.stripped_prefix:
            lines.append(f"  stripped key prefix {self.stripped_prefix!r}")
        for reason in sorted(set(self.dropped.values())):
            keys = [k for k, r in self.dropped.items() if r == reason]
            lines.append(f"  dropped {len(keys)} keys ({reason}): {_short(keys)}")
        if self.ignored_entries:
            lines.append(f"  ignored entries: {', '.join(self.ignored_entries)}")
        return "\n".join(lines)


def _short(keys: list[str]) -> str:
    head = ", ".join(keys[:_LIST])
    return head + (f" ... and {len(keys) - _LIST} more" if len(keys) > _LIST else "")


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and not head.startswith(b"PK") and head[8:9] == b"{"


def _read_file(path: Path) -> tuple[Any, str]:
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such file. Expected a checkpoint (.pth, .pt, .pth.tar or .safetensors)."
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file. Expected a checkpoint file.")
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise MissingDependencyError(
                f"safetensors: not installed, but reading {path.name} needs it. "
                "Install it with `pip install safetensors`."
            ) from e
        try:
            return load_file(str(path), device="cpu"), "safetensors"
        except Exception as e:
            raise CheckpointError(
                f"{path}: cannot be read as safetensors ({_first_line(e)}). "
                "Expected an intact .safetensors file."
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch"
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file would import or call code while unpickling "
            f"({_unpickling_reason(e)}). vdeblur loads tensors only (torch.load(weights_only=True)); "
            "re-save the weights with torch.save(model.state_dict()) where you trust the file, or use "
            "safetensors."
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot be read ({type(e).__name__}: {_first_line(e)}). Expected an intact PyTorch "
            "checkpoint; the file may be truncated or not a checkpoint at all."
        ) from None


def _unpickling_reason(e: BaseException) -> str:
    """The line of torch's weights-only refusal that names what was blocked (GLOBAL ...)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(e).__name__])[0][:300]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def read_state_dict(
    path: str | Path, expected: Any = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint safely and unwrap it to a flat state_dict.

    ``expected``: the target's keys (optional); a wrapper prefix is stripped only when every key of
    the checkpoint has it and not every expected key does. Returns (state_dict, info) where info has
    format, container, stripped_prefix and ignored_entries (see :class:`LoadReport`).
    """
    path = Path(path)
    obj, fmt = _read_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}. Expected a state_dict or a dict with 'params', "
            "'params_ema' or 'state_dict'."
        )
    container, ignored = "raw", []
    found = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)]
    if found:
        container = found[0]
        ignored = sorted(str(k) for k in obj if k != container)
        obj = obj[container]
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: entries {_short(bad)} are not tensors. Expected a state_dict (name -> tensor), "
            "possibly under 'params', 'params_ema' or 'state_dict'."
        )
    state: dict[str, torch.Tensor] = dict(obj)
    stripped = ""
    targets = list(expected) if expected is not None else []
    for prefix in PREFIXES:
        if targets and all(k.startswith(prefix) for k in targets):
            continue
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            stripped += prefix
    stripped = stripped or None
    info = {"format": fmt, "container": container, "stripped_prefix": stripped, "ignored_entries": ignored}
    return state, info


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a released checkpoint into ``model`` strictly; returns what was done.

    Raises :class:`CheckpointError` when the file cannot be read safely or its keys or shapes do not
    fit the model (the message lists missing and unexpected keys); nothing is loaded then.
    """
    state, info = read_state_dict(path, model.state_dict().keys())
    drop_rules = model.checkpoint_drop() if hasattr(model, "checkpoint_drop") else {}
    expected = model.state_dict()
    dropped: dict[str, str] = {}
    for key in list(state):
        if key in expected:
            continue
        for pattern, reason in drop_rules.items():
            if re.search(pattern, key):
                dropped[key] = reason
                del state[key]
                break
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    name = _describe(model)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_short(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_short(unexpected)})")
        hint = ""
        if len(missing) == len(expected):
            hint = " None of its keys match: it is probably a checkpoint of another model family."
        raise CheckpointError(
            f"{path}: does not fit {name}: {'; '.join(parts)}.{hint} Expected a checkpoint of this family "
            "and configuration (see `vdeblur models` for the presets)."
        )
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(
            f"{path}: tensor shapes do not fit {name}: {_short(wrong)} (checkpoint vs model). "
            "Expected the same configuration as the checkpoint: pick the matching preset."
        )
    model.load_state_dict(state, strict=True)
    return LoadReport(path=str(path), loaded=len(state), dropped=dropped, **info)


def _describe(model: nn.Module) -> str:
    family = getattr(model, "family", "") or type(model).__name__
    config = model.config() if hasattr(model, "config") else {}
    args = ", ".join(f"{k}={v}" for k, v in config.items())
    return f"{family}({args})" if args else family
