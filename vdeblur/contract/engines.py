"""The engine cache of an artifact: where `vdeblur build` puts engines, and how runtimes find them.

The build writes (:mod:`vdeblur.build`); runtimes only read, and never build: an engine that is not
in the cache is an error naming the `vdeblur build` command (:func:`build_command`). Layout, under
the artifact directory::

    engines/<backend>/<precision>/                          one directory per backend and precision
    engines/onnxruntime/<precision>/model.optimized.onnx    the portable graph after ONNX Runtime's
                                                            offline optimisation
    engines/onnxruntime/<precision>/session.json            how to open it (below)
    engines/tensorrt/<precision>/<key>.plan                 a serialized TensorRT engine
    engines/tensorrt/<precision>/<key>.json                 its sidecar (below), written last: an
                                                            engine without one is an interrupted build
    engines/tensorrt/timing.cache                           TensorRT's timing cache, for every precision
    engines/tensorrt-rtx/<precision>/<key>.plan             a serialized TensorRT-RTX engine (built on any
    engines/tensorrt-rtx/<precision>/<key>.json             machine for RTX GPUs), and its sidecar

``session.json`` (format 1): backend, precision, ``model`` (path relative to its directory: the
optimised model, or the source graph after a fallback), model_sha256, ``source`` {file, sha256,
lowering}, optimized_with, ``optimized_for`` (the execution providers it was optimised for; a
runtime with others opens the source graph), ``session_options`` (what :func:`ort_session_options`
turns into ``onnxruntime.SessionOptions``), providers ([name, options] in preference order),
verification, fallback (None, or why and what it uses), int8, cpu, vdeblur, created.

Sidecar (format 1): ``key`` (:func:`cache_key`), ``engine`` (file name), bytes and sha256 of the
engine, ``onnx`` {file, sha256, lowering}, precision, ``shapes`` (padded min/opt/max frame sizes
{"min": [h, w], ...}), profiles, dynamic_inputs, inputs, outputs, plugins, ``tensorrt`` (version),
``gpu`` {name, compute_capability}, flags, strongly_typed, workspace_bytes, optimization_level,
versions, build_s, created. A TensorRT-RTX sidecar has ``backend`` "tensorrt-rtx", ``tensorrt`` the
TensorRT-RTX version, ``gpu`` None and ``compute_capabilities``: the GPU targets it was built for
(:func:`parse_compute_capabilities`; TensorRT-RTX's default set when none were asked for).

Profile sizes (``--shapes``, part of the cache key, read by the build and by the runtime's
``shapes=`` option): ``"HxW:HxW:HxW"`` min:opt:max frame sizes, or one ``"HxW"`` for a fixed size,
rounded up to the pad multiple (:func:`parse_shapes`).

Torch-free and import-light: onnxruntime is the caller's module (:func:`ort_session_options`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vdeblur.contract.files import read_json, sha256_file
from vdeblur.contract.interface import padded_size
from vdeblur.errors import UsageError

Size = tuple[int, int]
Shapes = tuple[Size, Size, Size]

ENGINES = "engines"
BACKENDS = ("onnxruntime", "tensorrt", "tensorrt-rtx")
TRT_BACKENDS = ("tensorrt", "tensorrt-rtx")  # the backends whose engines are <key>.plan + <key>.json sidecars
# GPU targets of TensorRT-RTX engines (its ComputeCapability enum: SM75 ... SM121). Data-center GPUs
# (9.0, 10.0) are not RTX targets: they use the tensorrt backend.
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# What TensorRT-RTX builds for when no target is set (its documentation: 8.0, 8.6, 8.9, 12.0; Turing
# only when asked for).
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0")
ORT_MODEL = "model.optimized.onnx"
ORT_SESSION = "session.json"
TIMING_CACHE = "timing.cache"
SESSION_FORMAT = 1
SIDECAR_FORMAT = 1
CACHE_KEY_FORMAT = 1
ORT_RUN_LEVEL = "ORT_ENABLE_ALL"  # the level runtimes open a saved (optimised) model with
DEFAULT_SHAPES: Shapes = ((256, 256), (720, 1280), (1088, 1920))
SHAPE_NAMES = ("min", "opt", "max")
_SIZE = re.compile(r"^\s*([+-]?[0-9]+)\s*[xX]\s*([+-]?[0-9]+)\s*$")


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def engine_dir(artifact: str | Path, backend: str, precision: str) -> Path:
    """``<artifact>/engines/<backend>/<precision>``: where the engines of one backend and precision live."""
    return Path(artifact) / ENGINES / backend / precision


def timing_cache_path(artifact: str | Path, backend: str = "tensorrt") -> Path:
    """``<artifact>/engines/<backend>/timing.cache`` (tactic timings: shared by the precisions)."""
    return Path(artifact) / ENGINES / _trt_backend(backend) / TIMING_CACHE


def engine_files(artifact: str | Path, precision: str, key: str, backend: str = "tensorrt") -> tuple[Path, Path]:
    """(engine, sidecar) paths of the ``backend`` ("tensorrt" | "tensorrt-rtx") engine with cache key ``key``."""
    directory = engine_dir(artifact, _trt_backend(backend), precision)
    return directory / f"{key}.plan", directory / f"{key}.json"


def _trt_backend(backend: str) -> str:
    if backend not in TRT_BACKENDS:
        raise UsageError(f"engine cache: backend {backend!r} has no engine files. Expected one of "
                         f"{', '.join(TRT_BACKENDS)}.")
    return backend


def build_command(artifact: str | Path, backend: str, precision: str = "fp32", shapes: str | None = None) -> str:
    """The `vdeblur build` command line that makes the engine a runtime looks for."""
    command = f"vdeblur build {artifact} --backend {backend} --precision {precision}"
    return command + (f" --shapes {shapes}" if shapes else "")


# --------------------------------------------------------------------------------------------
# Profile sizes (--shapes)
# --------------------------------------------------------------------------------------------


def parse_shapes(text: str | None, pad_multiple: int) -> Shapes:
    """``"HxW:HxW:HxW"`` (min:opt:max frame sizes) -> ((h, w), (h, w), (h, w)), padded.

    None or "" gives :data:`DEFAULT_SHAPES`; a single ``"HxW"`` is a fixed size (min = opt = max).
    Sizes are rounded up to multiples of ``pad_multiple`` (the frame size the graph sees; see
    :func:`shape_notes` for what was rounded). Raises UsageError for bad syntax, sizes that are not
    positive and sizes that decrease from min to opt to max.
    """
    return parse_shapes_with_notes(text, pad_multiple)[0]


def shape_notes(text: str | None, pad_multiple: int) -> list[str]:
    """The notes of :func:`parse_shapes`: one line per size it rounded up."""
    return parse_shapes_with_notes(text, pad_multiple)[1]


def format_shapes(shapes: Iterable[Sequence[int]]) -> str:
    """((h, w), (h, w), (h, w)) -> ``"HxW:HxW:HxW"``."""
    return ":".join(f"{int(h)}x{int(w)}" for h, w in shapes)


def shapes_text(shapes: str | Sequence[Sequence[int]] | None) -> str | None:
    """A ``shapes`` argument (text, three (h, w) pairs or None) as --shapes text (or None)."""
    if shapes is None or isinstance(shapes, str):
        return shapes
    try:
        return format_shapes(shapes)
    except (TypeError, ValueError) as e:
        raise UsageError(f"shapes: {shapes!r} is not three (height, width) pairs. Expected e.g. "
                         "((256, 256), (720, 1280), (1088, 1920)) or '256x256:720x1280:1088x1920'.") from e


def parse_shapes_with_notes(text: str | None, pad_multiple: int) -> tuple[Shapes, list[str]]:
    """(:func:`parse_shapes`, :func:`shape_notes`) in one pass."""
    if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int) or pad_multiple < 1:
        raise UsageError(f"pad_multiple: {pad_multiple!r} is not a positive integer. Check the manifest.")
    subject = "--shapes" if text is None or not text.strip() else f"--shapes {text!r}"
    if text is None or not text.strip():
        sizes = list(DEFAULT_SHAPES)
    else:
        parts = text.split(":")
        if len(parts) not in (1, 3):
            raise UsageError(
                f"{subject}: has {len(parts)} sizes. Expected min:opt:max as HxW:HxW:HxW "
                "(e.g. 256x256:720x1280:1088x1920), or one HxW for a fixed size."
            )
        sizes = []
        for name, part in zip(SHAPE_NAMES, parts, strict=False):
            m = _SIZE.match(part)
            if m is None:
                raise UsageError(
                    f"{subject}: {part.strip()!r} is not a size. Expected HEIGHTxWIDTH in pixels, e.g. 720x1280."
                )
            h, w = int(m.group(1)), int(m.group(2))
            if h < 1 or w < 1:
                raise UsageError(
                    f"{subject}: the {name} size {h}x{w} is not positive. Expected heights and widths >= 1."
                )
            sizes.append((h, w))
        if len(sizes) == 1:
            sizes *= 3
    for axis, axis_name in enumerate(("height", "width")):
        values = [s[axis] for s in sizes]
        if not values[0] <= values[1] <= values[2]:
            raise UsageError(
                f"{subject}: the {axis_name}s {values[0]}, {values[1]}, {values[2]} decrease. "
                "Expected min <= opt <= max in each dimension."
            )
    rounded, notes = [], []
    for name, (h, w) in zip(SHAPE_NAMES, sizes, strict=True):
        hp, wp = padded_size(h, pad_multiple), padded_size(w, pad_multiple)
        if (hp, wp) != (h, w):
            notes.append(f"{name} size {h}x{w} rounded up to {hp}x{wp} (the runtime pads frames to multiples "
                         f"of {pad_multiple}, the graph sees the padded size)")
        rounded.append((hp, wp))
    return (rounded[0], rounded[1], rounded[2]), notes


# --------------------------------------------------------------------------------------------
# TensorRT-RTX GPU targets (--compute-capability)
# --------------------------------------------------------------------------------------------


def parse_compute_capabilities(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"8.6,8.9"`` (or a list; "86", "sm86" and "sm_86" too) -> ("8.6", "8.9"), sorted, unique;
    None or "" -> None (TensorRT-RTX's default targets, :data:`RTX_DEFAULT_TARGETS`).

    Raises UsageError for a value that is not a compute capability TensorRT-RTX builds for
    (e.g. 9.0, a data-center GPU: use the tensorrt backend there)."""
    if text is None:
        return None
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if not items:
        return None
    found = set()
    for item in items:
        m = re.fullmatch(r"(?i)(?:sm_?)?(\d+)(?:\.(\d))?", item)
        cc = None
        if m is not None:
            major, minor = (m.group(1), m.group(2)) if m.group(2) is not None else (m.group(1)[:-1], m.group(1)[-1:])
            cc = f"{int(major)}.{int(minor)}" if major else None
        if cc not in RTX_COMPUTE_CAPABILITIES:
            hint = (" Data-center GPUs (9.0, 10.0) are not TensorRT-RTX targets: use --backend tensorrt on them."
                    if cc in ("9.0", "10.0", "10.3") else "")
            raise UsageError(f"--compute-capability {item!r}: is not a TensorRT-RTX target. Expected a comma list "
                             f"of {', '.join(RTX_COMPUTE_CAPABILITIES)}.{hint}")
        found.add(cc)
    return tuple(sorted(found, key=lambda c: tuple(int(x) for x in c.split("."))))


def rtx_targets(targets: Sequence[str] | None) -> tuple[str, ...]:
    """The compute capabilities an engine built for ``targets`` (None: the default) runs on."""
    return tuple(targets) if targets else RTX_DEFAULT_TARGETS


# --------------------------------------------------------------------------------------------
# ONNX Runtime: session.json
# --------------------------------------------------------------------------------------------


def default_session_options() -> dict[str, Any]:
    """The ``session_options`` a build writes into session.json (before its int8 settings)."""
    return {
        "graph_optimization_level": ORT_RUN_LEVEL,
        "execution_mode": "ORT_SEQUENTIAL",
        "intra_op_num_threads": 0,  # 0: ONNX Runtime's default, one thread per physical core
        "inter_op_num_threads": 1,
        "config_entries": {
            # a stream runs one step per frame with gaps between frames: spinning burns a core for little
            "session.intra_op.allow_spinning": "0",
            "session.inter_op.allow_spinning": "0",
        },
    }


def ort_session_options(ort: Any, settings: Mapping[str, Any]) -> Any:
    """``onnxruntime.SessionOptions`` from session.json's ``session_options`` (``ort``: the module)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    opts.execution_mode = getattr(ort.ExecutionMode, settings.get("execution_mode", "ORT_SEQUENTIAL"))
    opts.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    opts.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    for key, value in settings.get("config_entries", {}).items():
        opts.add_session_config_entry(key, str(value))
    return opts


def read_session(artifact: str | Path, precision: str) -> dict[str, Any] | None:
    """The session.json of the ONNX Runtime engine of ``precision``, or None when there is none."""
    return read_json(engine_dir(artifact, "onnxruntime", precision) / ORT_SESSION)


# --------------------------------------------------------------------------------------------
# TensorRT: cache key, sidecars, the lookup
# --------------------------------------------------------------------------------------------


def cache_key(onnx_sha256: str, precision: str, shapes: Sequence[Sequence[int]], trt_version: str,
              gpu: Mapping[str, Any] | str, *, extra: Mapping[str, Any] | None = None,
              backend: str = "tensorrt") -> str:
    """The name of a cached TensorRT engine: ``<precision>-<20 hex digits>``.

    A digest of the ONNX sha256, the precision, the min/opt/max frame sizes, the TensorRT version
    and the GPU (name and compute capability; a dict or a string; for TensorRT-RTX the target
    compute capabilities), plus ``extra`` (builder settings, plugin sources) and the backend
    (TensorRT-RTX keys differ from TensorRT keys of the same components): stable across runs and
    dict orders, different when any component differs.
    """
    payload = {
        "format": CACHE_KEY_FORMAT,
        "onnx_sha256": str(onnx_sha256).lower(),
        "precision": str(precision),
        "shapes": [[int(h), int(w)] for h, w in shapes],
        "tensorrt": str(trt_version),
        "gpu": dict(gpu) if isinstance(gpu, Mapping) else str(gpu),
        "extra": dict(extra or {}),
    }
    if backend != "tensorrt":  # TensorRT keys stay what they were before TensorRT-RTX
        payload["backend"] = _trt_backend(backend)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    prefix = re.sub(r"[^A-Za-z0-9_]+", "_", str(precision)) or "x"
    return f"{prefix}-{digest[:20]}"


def cache_hit(engine: Path, sidecar: Path, key: str) -> bool:
    """True when ``engine`` and its sidecar exist, the sidecar names ``key`` and the engine's size
    and sha256 match it (what the build checks before skipping a build)."""
    if not engine.is_file() or not sidecar.is_file():
        return False
    meta = read_json(sidecar)
    if meta is None:
        return False
    return (meta.get("key") == key and meta.get("bytes") == engine.stat().st_size
            and meta.get("sha256") == sha256_file(engine))


def list_engines(artifact: str | Path, precision: str | None = None, backend: str = "tensorrt"
                 ) -> list[dict[str, Any]]:
    """The sidecars of the ``backend`` ("tensorrt" | "tensorrt-rtx") engines cached in an artifact
    (of one precision, or all), sorted by path; a sidecar whose engine file is missing is left out."""
    root = Path(artifact) / ENGINES / _trt_backend(backend)
    found = []
    for sidecar in sorted(root.glob(f"{precision or '*'}/*.json")):
        meta = read_json(sidecar)
        if meta is not None and (sidecar.parent / str(meta.get("engine", ""))).is_file():
            found.append(meta)
    return found


def choose_cached_engine(sidecars: Sequence[Mapping[str, Any]], precision: str, onnx_sha256: str | Sequence[str],
                         trt_version: str | None, gpu: Mapping[str, Any] | None,
                         shapes: Sequence[Sequence[int]] | None = None, *,
                         compute_capability: str | None = None) -> Mapping[str, Any] | None:
    """The newest sidecar (of :func:`list_engines`) made from this ONNX (or one of these) at this
    precision, by this TensorRT version for this GPU (None: not checked), with these padded
    min/opt/max frame sizes (None: any profile); ``compute_capability`` (TensorRT-RTX, e.g. "8.9"):
    built with it among its targets (None: not checked)."""
    want = None if shapes is None else {k: [int(d) for d in s] for k, s in zip(SHAPE_NAMES, shapes, strict=True)}
    shas = {onnx_sha256} if isinstance(onnx_sha256, str) else set(onnx_sha256)
    fits = []
    for meta in sidecars:
        if meta.get("precision") != precision or (meta.get("onnx") or {}).get("sha256") not in shas:
            continue
        if compute_capability is not None and compute_capability not in rtx_targets(meta.get("compute_capabilities")):
            continue
        if trt_version is not None and str(meta.get("tensorrt")) != str(trt_version):
            continue
        if gpu is not None and meta.get("gpu") != dict(gpu):
            continue
        if want is not None and meta.get("shapes") != want:
            continue
        fits.append(meta)
    return max(fits, key=lambda m: str(m.get("created", ""))) if fits else None


def find_engine(artifact: str | Path, precision: str, onnx_sha256: str | Sequence[str], *, trt_version: str | None,
                gpu: Mapping[str, Any] | None, shapes: Sequence[Sequence[int]] | None = None,
                backend: str = "tensorrt", compute_capability: str | None = None
                ) -> tuple[Path, dict[str, Any]] | None:
    """The lookup: (engine path, sidecar) of the newest cached ``backend`` engine that fits (see
    :func:`choose_cached_engine`), or None."""
    meta = choose_cached_engine(list_engines(artifact, precision, backend), precision, onnx_sha256, trt_version, gpu,
                                shapes, compute_capability=compute_capability)
    if meta is None:
        return None
    return engine_dir(artifact, backend, precision) / str(meta["engine"]), dict(meta)


def describe_sidecar(meta: Mapping[str, Any]) -> str:
    """One line about a cached engine: ``fp16 256x256:720x1280:1088x1920, TensorRT 10.13, NVIDIA H100 (sm 9.0)``."""
    shapes = meta.get("shapes") or {}
    sizes = format_shapes(shapes[k] for k in SHAPE_NAMES) if all(k in shapes for k in SHAPE_NAMES) else "?"
    if meta.get("backend") == "tensorrt-rtx":
        targets = ", ".join(rtx_targets(meta.get("compute_capabilities")))
        return f"{meta.get('precision')} {sizes}, TensorRT-RTX {meta.get('tensorrt')}, sm {targets}"
    gpu = meta.get("gpu") or {}
    return (f"{meta.get('precision')} {sizes}, TensorRT {meta.get('tensorrt')}, "
            f"{gpu.get('name', '?')} (sm {gpu.get('compute_capability', '?')})")
