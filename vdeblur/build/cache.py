"""Writing the engine cache (the layout, formats and lookup are :mod:`vdeblur.contract.engines`).

Every file lands by rename (:func:`vdeblur.contract.files.atomic_write`, or :func:`install` for a
file a tool wrote to a temporary name), so a failed or interrupted build leaves nothing
half-written; a TensorRT sidecar is written after its engine and marks it complete; an engine
directory a failed build created is removed again (:func:`prune_empty`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vdeblur.contract.engines import cache_hit, engine_dir, engine_files, list_engines, timing_cache_path
from vdeblur.contract.files import atomic_write, sha256_bytes, write_json

__all__ = ["cache_hit", "engine_dir", "engine_files", "install", "list_engines", "now", "prune_empty", "temp_file",
           "timing_cache_path", "write_engine", "write_session", "write_timing_cache"]


def temp_file(directory: Path, prefix: str, suffix: str) -> Path:
    """A new empty file in ``directory`` (created) for a tool to write to; :func:`install` moves it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.close(fd)
    return Path(name)


def install(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` (from :func:`temp_file`) to ``path``, with the mode of a plainly created file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
    os.replace(tmp, path)


def write_session(path: Path, session: Mapping[str, Any]) -> None:
    """session.json of an ONNX Runtime engine (format: :mod:`vdeblur.contract.engines`)."""
    write_json(path, dict(session))


def write_timing_cache(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def write_engine(engine: Path, sidecar: Path, data: bytes, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write a serialized TensorRT engine, then its sidecar (``meta`` plus the engine's file name,
    size and sha256): the sidecar last, because it marks the engine complete. Returns the sidecar."""
    full = {**meta, "engine": engine.name, "bytes": len(data), "sha256": sha256_bytes(data)}
    atomic_write(engine, data)
    write_json(sidecar, full)
    return full


def prune_empty(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    stop = stop.resolve()
    path = path.resolve()
    while path != stop and stop in path.parents and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


def now() -> str:
    """UTC time for ``created`` fields (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
