"""Build an engine for a backend from an artifact directory (``vdeblur build``); torch-free.

``plan(artifact, backend, precision, shapes)`` says what a build would do (no TensorRT or GPU
needed); ``build(...)`` does it and returns a JSON-serialisable result. Backends:

- ``onnxruntime`` (:mod:`vdeblur.build.onnxruntime`): the portable graph optimised offline,
  verified on output frames against the source graph, with its session.json;
- ``tensorrt`` (:mod:`vdeblur.build.tensorrt`): an engine of the ``trt`` lowering with the vdeblur
  AOT plugins, one optimisation profile from ``--shapes`` (:mod:`vdeblur.build.profile`).

Everything is written under ``DIR/engines/`` (:mod:`vdeblur.build.cache`; layout, formats and the
lookup the runtimes use: :mod:`vdeblur.contract.engines`). Files land by rename, so a failed build
leaves nothing half-written.

Layering: this package imports the contract (and vdeblur.errors, vdeblur.data, vdeblur.metrics),
never the runtime, export or models; the TensorRT build registers the plugins through a lazy import
of ``vdeblur.plugins.lowering``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vdeblur.build.onnxruntime import build_onnxruntime, plan_onnxruntime
from vdeblur.build.profile import (
    DEFAULT_SHAPES,
    SHAPE_NAMES,
    BuildPlan,
    dynamic_inputs,
    format_shapes,
    input_dims,
    input_profiles,
    onnx_inputs,
    parse_shapes,
    parse_shapes_with_notes,
    shape_notes,
    shapes_text,
)
from vdeblur.build.tensorrt import build_tensorrt, plan_tensorrt, probe_gpu, trt_build_flags
from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.engines import BACKENDS, cache_key, list_engines, ort_session_options
from vdeblur.errors import ExportError, UsageError

__all__ = ["BACKENDS", "DEFAULT_SHAPES", "BuildPlan", "Progress", "build", "cache_key", "dynamic_inputs",
           "format_shapes", "input_dims", "input_profiles", "list_engines", "onnx_inputs", "ort_session_options",
           "parse_shapes", "plan", "probe_gpu", "shape_notes", "trt_build_flags"]

Progress = Callable[[str, float], None]  # (stage, fraction done in [0, 1]); the CLI's progress bar


def plan(artifact_dir: str | Path, backend: str, precision: str = "fp32",
         shapes: str | Sequence[Sequence[int]] | None = None) -> BuildPlan:
    """The build plan for ``backend`` ("onnxruntime" | "tensorrt") and the artifact's ``precision``
    graph (the ``portable`` lowering for ONNX Runtime, ``trt`` for TensorRT).

    shapes: "HxW:HxW:HxW" min:opt:max frame sizes (see :func:`parse_shapes`) or three (h, w) pairs.
    Does not need TensorRT or a GPU; when they are present it also computes the cache key and
    whether a cached engine would be reused.
    """
    if backend not in BACKENDS:
        raise UsageError(f"build: backend {backend!r} is unknown. Expected one of {', '.join(BACKENDS)}.")
    directory = Path(artifact_dir)
    man = manifest_mod.read(directory)
    if man.kind != "step":
        raise ExportError(f"{directory}: is a {man.kind} artifact. `vdeblur build` supports step graphs only "
                          "(MTU, MMP-RNN, ARVo) for now.")
    interface = man.interface
    lowering = "trt" if backend == "tensorrt" else "portable"
    entry = man.graph(precision, lowering)
    onnx_path = directory / entry.file
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: is missing (listed in the manifest as the {precision}/{lowering} graph). "
                          "Re-export the artifact.")
    sha = manifest_mod.sha256_file(onnx_path)
    if sha != entry.sha256:
        raise ExportError(f"{onnx_path}: its sha256 {sha[:12]}... does not match the manifest "
                          f"({entry.sha256[:12]}...): the file changed after export. Re-export the artifact.")
    text = shapes_text(shapes)
    parsed, notes = parse_shapes_with_notes(text, int(interface["pad_multiple"]))
    shape_dict = {k: list(s) for k, s in zip(SHAPE_NAMES, parsed, strict=True)}
    profiles = input_profiles(interface, parsed)
    declared, plugins = onnx_inputs(onnx_path)
    dynamic = dynamic_inputs(profiles, declared, str(onnx_path))
    if backend == "onnxruntime":
        return plan_onnxruntime(directory, precision, entry, onnx_path, sha, shape_dict, profiles, dynamic,
                                plugins, notes, text)
    return plan_tensorrt(directory, precision, entry, onnx_path, sha, parsed, shape_dict, profiles, dynamic,
                         plugins, notes)


def build(artifact_dir: str | Path, backend: str, precision: str = "fp32",
          shapes: str | Sequence[Sequence[int]] | None = None, dry_run: bool = False,
          progress: Progress | None = None) -> dict[str, Any]:
    """Build the ``backend`` engine of an artifact's ``precision`` graph; returns a JSON-serialisable
    result (backend, precision, engine paths, cache hit, timings in seconds, verification numbers).

    dry_run: return ``{"dry_run": True, "plan": plan(...).to_dict(), ...}`` without building.
    progress: called as ``progress(stage, fraction)`` with fraction in [0, 1].
    """
    t0 = time.perf_counter()
    report = progress or (lambda stage, fraction: None)
    report("planning", 0.0)
    p = plan(artifact_dir, backend, precision, shapes)
    if dry_run:
        report("done", 1.0)
        return {"backend": p.backend, "precision": p.precision, "dry_run": True, "cache_hit": p.cached,
                "cache_key": p.cache_key, "shapes": format_shapes(p.shapes.values()), "plan": p.to_dict()}
    result = build_onnxruntime(p, report) if backend == "onnxruntime" else build_tensorrt(p, report)
    result["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    report("done", 1.0)
    return result
