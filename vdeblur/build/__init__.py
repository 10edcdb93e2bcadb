"""Build an engine for a backend from an artifact directory (``vdeblur build``); torch-free.

``plan(artifact, backend, precision, shapes)`` says what a build would do (no TensorRT or GPU
needed); ``build(...)`` does it and returns a JSON-serialisable result. Backends:

- ``onnxruntime`` (:mod:`vdeblur.build.onnxruntime`): the portable graph optimised offline,
  verified on output frames against the source graph, with its session.json;
- ``tensorrt`` (:mod:`vdeblur.build.tensorrt`): an engine of the ``trt`` lowering with the vdeblur
  AOT plugins, one optimisation profile from ``--shapes`` (:mod:`vdeblur.build.profile`), built on
  the data-center GPU it is for;
- ``tensorrt-rtx`` (:mod:`vdeblur.build.tensorrt_rtx`): an engine for RTX GPUs of the compute
  capabilities of ``--compute-capability``, built on any machine (no GPU needed), of the ``trt``
  lowering with the vdeblur IPluginV3 plugins (``portable`` where the artifact has no ``trt`` graph
  of the precision, e.g. int8), with the same profile.

Everything is written under ``DIR/engines/`` (:mod:`vdeblur.build.cache`; layout, formats and the
lookup the runtimes use: :mod:`vdeblur.contract.engines`). Files land by rename, so a failed build
leaves nothing half-written.

Layering: this package imports the contract (and vdeblur.errors, vdeblur.data, vdeblur.metrics),
never the runtime, export or models; the TensorRT and TensorRT-RTX builds register the plugins through
a lazy import of ``vdeblur.plugins.lowering`` (torch-free).
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
from vdeblur.build.tensorrt_rtx import build_tensorrt_rtx, plan_tensorrt_rtx
from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.engines import BACKENDS, cache_key, list_engines, ort_session_options
from vdeblur.errors import ExportError, UsageError

__all__ = ["BACKENDS", "DEFAULT_SHAPES", "BuildPlan", "Progress", "build", "cache_key", "dynamic_inputs",
           "format_shapes", "input_dims", "input_profiles", "list_engines", "onnx_inputs", "ort_session_options",
           "parse_shapes", "plan", "probe_gpu", "shape_notes", "trt_build_flags"]

Progress = Callable[[str, float], None]  # (stage, fraction done in [0, 1]); the CLI's progress bar


def plan(artifact_dir: str | Path, backend: str, precision: str = "fp32",
         shapes: str | Sequence[Sequence[int]] | None = None, *, lowering: str | None = None,
         compute_capability: str | Sequence[str] | None = None) -> BuildPlan:
    """The build plan for ``backend`` ("onnxruntime" | "tensorrt" | "tensorrt-rtx") and the
    artifact's ``precision`` graph.

    shapes: "HxW:HxW:HxW" min:opt:max frame sizes (see :func:`parse_shapes`) or three (h, w) pairs.
    lowering: the graph to build (None: ``portable`` for ONNX Runtime, ``trt`` for TensorRT, ``trt``
    for TensorRT-RTX where the artifact has it, else ``portable``). compute_capability: the
    TensorRT-RTX targets, "8.6,8.9" (None: its default set). Does not need TensorRT or a GPU; when
    they are present (TensorRT-RTX: installed) it also computes the cache key and whether a cached
    engine would be reused.
    """
    if backend not in BACKENDS:
        raise UsageError(f"build: backend {backend!r} is unknown. Expected one of {', '.join(BACKENDS)}.")
    if compute_capability and backend != "tensorrt-rtx":
        raise UsageError(f"build: --compute-capability is for --backend tensorrt-rtx. Expected none with {backend} "
                         "(TensorRT builds for the GPU it runs on).")
    allowed = {"onnxruntime": ("portable",), "tensorrt": ("trt",), "tensorrt-rtx": ("trt", "portable")}[backend]
    if lowering is not None and lowering not in allowed:
        raise UsageError(f"build: --lowering {lowering!r} is not built by {backend}. Expected {' or '.join(allowed)}.")
    directory = Path(artifact_dir)
    man = manifest_mod.read(directory)
    interface = man.interface
    notes_before: list[str] = []
    if lowering is None:
        lowering = allowed[0]
        if backend == "tensorrt-rtx" and not any(g.precision == precision and g.lowering == "trt"
                                                 for g in man.graphs):
            lowering = "portable"
            notes_before.append(f"the artifact has no trt-lowered {precision} graph: building the portable one "
                                "(standard ONNX ops instead of the vdeblur plugins)")
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
    notes = notes_before + notes
    shape_dict = {k: list(s) for k, s in zip(SHAPE_NAMES, parsed, strict=True)}
    profiles = input_profiles(interface, parsed)
    declared, plugins = onnx_inputs(onnx_path)
    dynamic = dynamic_inputs(profiles, declared, str(onnx_path))
    if backend == "onnxruntime":
        return plan_onnxruntime(directory, precision, entry, onnx_path, sha, shape_dict, profiles, dynamic,
                                plugins, notes, text)
    if backend == "tensorrt-rtx":
        return plan_tensorrt_rtx(directory, precision, entry, onnx_path, sha, parsed, shape_dict, profiles, dynamic,
                                 plugins, notes, compute_capability)
    return plan_tensorrt(directory, precision, entry, onnx_path, sha, parsed, shape_dict, profiles, dynamic,
                         plugins, notes)


def build(artifact_dir: str | Path, backend: str, precision: str = "fp32",
          shapes: str | Sequence[Sequence[int]] | None = None, dry_run: bool = False,
          progress: Progress | None = None, *, lowering: str | None = None,
          compute_capability: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Build the ``backend`` engine of an artifact's ``precision`` graph; returns a JSON-serialisable
    result (backend, precision, engine paths, cache hit, timings in seconds, verification numbers).

    dry_run: return ``{"dry_run": True, "plan": plan(...).to_dict(), ...}`` without building.
    lowering, compute_capability: see :func:`plan`.
    progress: called as ``progress(stage, fraction)`` with fraction in [0, 1].
    """
    t0 = time.perf_counter()
    report = progress or (lambda stage, fraction: None)
    report("planning", 0.0)
    p = plan(artifact_dir, backend, precision, shapes, lowering=lowering, compute_capability=compute_capability)
    if dry_run:
        report("done", 1.0)
        return {"backend": p.backend, "precision": p.precision, "dry_run": True, "cache_hit": p.cached,
                "cache_key": p.cache_key, "shapes": format_shapes(p.shapes.values()), "plan": p.to_dict()}
    builders = {"onnxruntime": build_onnxruntime, "tensorrt": build_tensorrt, "tensorrt-rtx": build_tensorrt_rtx}
    result = builders[backend](p, report)
    result["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    report("done", 1.0)
    return result
