"""Build an engine for a backend from an artifact directory (``vdeblur build``).

Everything is written under ``DIR/engines/`` beside the artifact's graphs::

    engines/onnxruntime/<precision>/model.optimized.onnx   the portable graph after ORT's offline
                                                            optimisation (ORT_ENABLE_EXTENDED)
    engines/onnxruntime/<precision>/session.json            how to open it: session options,
                                                            execution providers in preference order,
                                                            the source graph, the verification numbers
    engines/tensorrt/timing.cache                           TensorRT timing cache (loaded when present)
    engines/tensorrt/<key>.plan                             serialized engine of the trt-lowered graph
    engines/tensorrt/<key>.json                             sidecar: what the key was made of, profiles,
                                                            flags, I/O names, engine sha256

ONNX Runtime. The optimised model is saved at ``ORT_ENABLE_EXTENDED``: basic and extended fusions
(FusedConv, ...) are portable across CPUs. ``ORT_ENABLE_ALL`` adds the NCHWc layout transform, whose
block size depends on the CPU's vector width; ORT itself warns that such a saved model "may contain
hardware specific optimizations" and should only be used where it was optimised. The runtime opens
the saved model with ``ORT_ENABLE_ALL`` (session.json ``session_options``), so the layout transform
is redone online for the local CPU. Fusions are applied to nodes of the execution providers of the
optimising session (which are those of session.json), and a model optimised with the CUDA provider
keeps Memcpy nodes that the CPU provider cannot load (onnxruntime issue 11348): ``optimized_for``
lists those providers, and a runtime that uses others must open ``source`` instead. Intra-op
spinning is off (``allow_spinning`` "0"): a stream runs one step per frame with gaps between frames,
where spinning threads burn a core for little latency gain.

Verification compares what users see: a synthetic clip (textured scene under camera motion,
lookahead + 4 frames at the min size of ``--shapes``) streams through the optimised model and
through the source graph without any graph optimisation, and the output frames must meet the
precision's bar (``vdeblur.contract.precision.ENGINE_BARS``: PSNR and the fraction within half an
8-bit level). An optimised model below its bar is not used: the build falls back to the source
graph opened without graph optimisation (session.json ``fallback`` says why, with the numbers), and
the result and the CLI say so. int8 on an x86 CPU without VNNI: a graph whose weights exceed the
7-bit range would saturate ONNX Runtime's U8S8 kernels (``vdeblur.contract.device``), so its Q/DQ
run in float (``session.disable_quant_qdq``: right, not fast), and session.json records it with
the CPU the engine was built on.

TensorRT. The engine is built from the ``trt`` lowering of the precision's graph with the vdeblur
AOT plugins registered, as a strongly typed network (the precision lives in the ONNX), with one
optimisation profile covering every dynamic input (frame, flush flag, states) for the min/opt/max
frame sizes of ``--shapes``. Engines are cached by :func:`cache_key` (ONNX sha256, precision, shapes,
TensorRT version, GPU name and compute capability, plus builder settings and the plugin sources):
a hit skips the build. The TensorRT calls are in ``_build_tensorrt`` and nothing else imports
tensorrt; everything else here is plain Python, tested without it. Files are written to a temporary
name and renamed, so a failed build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur import __version__
from vdeblur.errors import BackendError, ExportError, ShapeError, UsageError, missing_dependency
from vdeblur.export import manifest as manifest_mod

Size = tuple[int, int]
Shapes = tuple[Size, Size, Size]
Progress = Callable[[str, float], None]  # (stage, fraction done in [0, 1]); the CLI's progress bar

DEFAULT_SHAPES: Shapes = ((256, 256), (720, 1280), (1088, 1920))
BACKENDS = ("onnxruntime", "tensorrt")
ENGINES = "engines"
TIMING_CACHE = "timing.cache"
ORT_MODEL = "model.optimized.onnx"
ORT_SESSION = "session.json"
SIDECAR_FORMAT = 1
CACHE_KEY_FORMAT = 1
MIN_TENSORRT = (10, 9)  # AOT quickly deployable plugins
DEFAULT_WORKSPACE = 8 << 30  # bytes of tactic scratch memory TensorRT may use while building
DEFAULT_OPT_LEVEL = 3  # builder_optimization_level 0-5 (TensorRT's default)
ORT_SAVE_LEVEL = "ORT_ENABLE_EXTENDED"  # the level of the saved model (portable, see above)
ORT_RUN_LEVEL = "ORT_ENABLE_ALL"  # the level the runtime opens the saved model with
VERIFY_EXTRA_FRAMES = 4  # verification clip: lookahead + this many frames
PLUGIN_DOMAIN = "vdeblur"  # = vdeblur.plugins._onnx.DOMAIN (importing vdeblur.plugins imports torch)
_SHAPE_NAMES = ("min", "opt", "max")
_SIZE = re.compile(r"^\s*([+-]?[0-9]+)\s*[xX]\s*([+-]?[0-9]+)\s*$")
_DIM = re.compile(r"^(N|Hp|Wp)(?:/([1-9][0-9]*))?$")  # the StateSpec shape grammar (stepgraph.py)


# --------------------------------------------------------------------------------------------
# --shapes
# --------------------------------------------------------------------------------------------


def parse_shapes(text: str | None, pad_multiple: int) -> Shapes:
    """``"HxW:HxW:HxW"`` (min:opt:max frame sizes) -> ((h, w), (h, w), (h, w)), padded.

    None or "" gives :data:`DEFAULT_SHAPES`; a single ``"HxW"`` is a fixed size (min = opt = max).
    Sizes are rounded up to multiples of ``pad_multiple`` (the frame size the graph sees; see
    :func:`shape_notes` for what was rounded). Raises UsageError for bad syntax, sizes that are not
    positive and sizes that decrease from min to opt to max.
    """
    return _parse_shapes(text, pad_multiple)[0]


def shape_notes(text: str | None, pad_multiple: int) -> list[str]:
    """The notes of :func:`parse_shapes`: one line per size it rounded up."""
    return _parse_shapes(text, pad_multiple)[1]


def format_shapes(shapes: Iterable[Sequence[int]]) -> str:
    """((h, w), (h, w), (h, w)) -> ``"HxW:HxW:HxW"``."""
    return ":".join(f"{int(h)}x{int(w)}" for h, w in shapes)


def _parse_shapes(text: str | None, pad_multiple: int) -> tuple[Shapes, list[str]]:
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
        for name, part in zip(_SHAPE_NAMES, parts, strict=False):
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
    for name, (h, w) in zip(_SHAPE_NAMES, sizes, strict=True):
        hp, wp = _round_up(h, pad_multiple), _round_up(w, pad_multiple)
        if (hp, wp) != (h, w):
            notes.append(f"{name} size {h}x{w} rounded up to {hp}x{wp} (the runtime pads frames to multiples "
                         f"of {pad_multiple}, the graph sees the padded size)")
        rounded.append((hp, wp))
    return (rounded[0], rounded[1], rounded[2]), notes


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _coerce_shapes_text(shapes: str | Sequence[Sequence[int]] | None) -> str | None:
    if shapes is None or isinstance(shapes, str):
        return shapes
    try:
        return format_shapes(shapes)
    except (TypeError, ValueError) as e:
        raise UsageError(f"shapes: {shapes!r} is not three (height, width) pairs. Expected e.g. "
                         "((256, 256), (720, 1280), (1088, 1920)) or '256x256:720x1280:1088x1920'.") from e


# --------------------------------------------------------------------------------------------
# Profiles: concrete min/opt/max shapes of every graph input
# --------------------------------------------------------------------------------------------


def resolve_dim(dim: int | str, n: int, hp: int, wp: int) -> int:
    """One dimension of a manifest shape: an int, or ``N`` / ``Hp`` / ``Wp`` optionally ``/k``.

    The grammar of ``StateSpec.resolve`` (export/stepgraph.py), without importing torch."""
    if isinstance(dim, int) and not isinstance(dim, bool):
        return dim
    m = _DIM.match(str(dim))
    if m is None:
        raise ExportError(f"manifest: state dimension {dim!r} is not understood. Expected an int, N, Hp, Wp or Hp/k.")
    value = {"N": n, "Hp": hp, "Wp": wp}[m.group(1)]
    k = int(m.group(2) or 1)
    if value % k:
        raise ShapeError(f"profile: {m.group(1)}={value} is not divisible by {k}. "
                         "Use frame sizes that are multiples of the state's divisor.")
    return value // k


def input_dims(interface: Mapping[str, Any]) -> dict[str, list[int | str]]:
    """Symbolic shape of every input of a step graph, in ``input_names`` order.

    The frame is (N, 3, Hp, Wp), the flush flag (N,), each state its manifest shape."""
    dims: dict[str, list[int | str]] = {interface["frame_input"]: ["N", 3, "Hp", "Wp"]}
    flag = (interface.get("flush") or {}).get("flag_input")
    if flag:
        dims[flag] = ["N"]
    for s in interface["states"]:
        dims[s["input_name"]] = list(s["shape"])
    names = list(interface.get("input_names") or dims)
    missing = [n for n in names if n not in dims]
    if missing or set(names) != set(dims):
        raise ExportError(f"manifest: input_names {names} do not match the frame, flush flag and states "
                          f"({list(dims)}). Re-export the artifact.")
    return {n: dims[n] for n in names}


def input_profiles(interface: Mapping[str, Any], shapes: Shapes, batch: int = 1) -> dict[str, dict[str, list[int]]]:
    """{input name: {"min": shape, "opt": shape, "max": shape}} for padded frame sizes ``shapes``.

    Batch ``batch`` (1: one stream per engine context)."""
    profiles: dict[str, dict[str, list[int]]] = {}
    for name, dims in input_dims(interface).items():
        profiles[name] = {
            key: [resolve_dim(d, batch, h, w) for d in dims]
            for key, (h, w) in zip(_SHAPE_NAMES, shapes, strict=True)
        }
    return profiles


def onnx_inputs(path: str | Path) -> tuple[dict[str, list[int]], list[str]]:
    """(declared input shapes, plugin ids) of an ONNX graph: -1 for a dynamic (symbolic or unknown)
    dimension; the ``vdeblur::Name`` ids of its plugin nodes, sorted."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf / IO errors of many types
        raise ExportError(f"{path}: cannot be read as ONNX ({_first_line(e)}). Re-export the artifact.") from e
    init = {t.name for t in model.graph.initializer}
    shapes = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        dims = i.type.tensor_type.shape.dim
        shapes[i.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    plugins = sorted({f"vdeblur::{n.op_type}" for n in model.graph.node if n.domain == PLUGIN_DOMAIN})
    return shapes, plugins


def dynamic_inputs(profiles: Mapping[str, Mapping[str, Sequence[int]]], declared: Mapping[str, Sequence[int]],
                   subject: str) -> list[str]:
    """The inputs that need ``set_shape`` in the optimisation profile (a -1 in ``declared``).

    declared: input name -> shape as the graph (or the parsed TensorRT network) declares it, -1 for
    dynamic dims. Raises ExportError when names, ranks or static dims disagree with the profiles."""
    if list(declared) != list(profiles):
        raise ExportError(f"{subject}: its inputs are {list(declared)}. Expected {list(profiles)} "
                          "(the manifest's input_names). Re-export the artifact.")
    dynamic = []
    for name, dims in declared.items():
        dims = [int(d) for d in dims]
        for key in _SHAPE_NAMES:
            want = list(profiles[name][key])
            if len(dims) != len(want) or any(d not in (-1, v) for d, v in zip(dims, want, strict=True)):
                raise ExportError(f"{subject}: input {name!r} has shape {dims} (-1 = dynamic), which cannot take "
                                  f"the {key} profile shape {want}. Expected the manifest's state layout; "
                                  "re-export the artifact.")
        if -1 in dims:
            dynamic.append(name)
    return dynamic


# --------------------------------------------------------------------------------------------
# TensorRT version logic, cache key, parser errors (plain Python)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtFlags:
    """Network creation and builder flags chosen for an installed TensorRT (names of the enums)."""

    version: str
    strongly_typed: bool
    network: tuple[str, ...]
    builder: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def network_bits(self, trt: Any) -> int:
        """The ``flags`` argument of ``builder.create_network``."""
        bits = 0
        for name in self.network:
            bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        return bits


def version_tuple(version: str) -> tuple[int, int]:
    """'10.13.0.35' -> (10, 13); unparsable parts are 0."""
    parts = (re.findall(r"[0-9]+", str(version)) + ["0", "0"])[:2]
    return int(parts[0]), int(parts[1])


_PRECISION_FLAGS = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}


def trt_build_flags(trt_module: Any, precision: str = "fp32") -> TrtFlags:
    """Pick the flags the installed TensorRT has (10.x vs 11).

    - ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` when present (10.x): the graph's types are
      the engine's types, so the precision comes from the ONNX.
    - TensorRT 11 is strongly typed only; if it no longer has the flag, no flag is needed.
    - A 10.x without it (not expected for >= 10.9): a weakly typed network with the builder flag of
      the precision (FP16/BF16/INT8/FP8), which TensorRT 11 removed.
    Raises BackendError for TensorRT older than 10.9 (no AOT plugins) or a missing precision flag.
    """
    version = str(getattr(trt_module, "__version__", "0"))
    major_minor = version_tuple(version)
    if major_minor < MIN_TENSORRT:
        raise BackendError(
            f"tensorrt {version}: is too old for the vdeblur AOT plugins. "
            f"Expected TensorRT >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (`pip install 'vdeblur[tensorrt]'`)."
        )
    creation = getattr(trt_module, "NetworkDefinitionCreationFlag", None)
    builder_flags = getattr(trt_module, "BuilderFlag", None)
    network: list[str] = []
    builder: list[str] = []
    notes: list[str] = []
    if creation is not None and hasattr(creation, "STRONGLY_TYPED"):
        network.append("STRONGLY_TYPED")
        strongly_typed = True
    elif major_minor[0] >= 11:
        strongly_typed = True
        notes.append(f"TensorRT {version} networks are strongly typed without a flag")
    else:
        strongly_typed = False
        flag = _PRECISION_FLAGS.get(precision)
        if flag is not None:
            if builder_flags is None or not hasattr(builder_flags, flag):
                raise BackendError(
                    f"tensorrt {version}: has neither strongly typed networks nor the {flag} builder flag, "
                    f"so it cannot build the {precision} graph. Expected TensorRT >= 10.9."
                )
            builder.append(flag)
        notes.append(f"TensorRT {version} has no STRONGLY_TYPED flag: weakly typed network"
                     + (f" with builder flag {flag}" if flag else ""))
    return TrtFlags(version, strongly_typed, tuple(network), tuple(builder), tuple(notes))


def cache_key(onnx_sha256: str, precision: str, shapes: Sequence[Sequence[int]], trt_version: str,
              gpu: Mapping[str, Any] | str, *, extra: Mapping[str, Any] | None = None) -> str:
    """The name of a cached TensorRT engine: ``<precision>-<20 hex digits>``.

    A digest of the ONNX sha256, the precision, the min/opt/max frame sizes, the TensorRT version
    and the GPU (name and compute capability; a dict or a string), plus ``extra`` (builder settings,
    plugin sources): stable across runs and dict orders, different when any component differs.
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
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    prefix = re.sub(r"[^A-Za-z0-9_]+", "_", str(precision)) or "x"
    return f"{prefix}-{digest[:20]}"


def format_parser_errors(errors: Iterable[Any], onnx_path: str | Path) -> str:
    """One message from TensorRT's ONNX parser errors (``parser.get_error(i)`` objects with
    ``code() desc() node() node_name() node_operator()``)."""
    items = []
    plugin_problem = False
    for i, err in enumerate(errors, 1):
        code = str(_call(err, "code")).rsplit(".", 1)[-1]
        desc = str(_call(err, "desc")).strip().rstrip(".")
        node = _call(err, "node")
        name, op = _call(err, "node_name"), _call(err, "node_operator")
        where = []
        if isinstance(node, int) and node >= 0:
            where.append(f"node {node}")
        if name:
            where.append(repr(str(name)))
        if op:
            where.append(f"({op})")
        items.append(f"[{i}] {' '.join(where) + ': ' if where else ''}{code}: {desc}")
        plugin_problem |= "plugin" in desc.lower() or "creator" in desc.lower()
    hint = ("Check that the graph uses the trt lowering and that TensorRT >= 10.9 with tensorrt.plugin is installed "
            "(the vdeblur plugins are registered before parsing)." if plugin_problem else
            "Check that the graph was exported by this vdeblur with the trt lowering; re-export it if needed.")
    n = len(items)
    return (f"{onnx_path}: TensorRT's ONNX parser failed with {n} error{'s' if n != 1 else ''}: "
            f"{'; '.join(items) or 'no details'}. {hint}")


def _call(obj: Any, name: str) -> Any:
    attr = getattr(obj, name, None)
    return attr() if callable(attr) else attr


# --------------------------------------------------------------------------------------------
# The build plan
# --------------------------------------------------------------------------------------------


@dataclass
class BuildPlan:
    """What :func:`build` would do; ``build(..., dry_run=True)`` returns it without building.

    shapes: padded frame sizes {"min": [h, w], "opt": ..., "max": ...}; profiles: input name ->
    {"min", "opt", "max"} concrete shapes (TensorRT; ONNX Runtime verifies at the min size);
    outputs: the files the build writes (absolute paths); cache_key / cached: None when they cannot
    be known here (TensorRT or a GPU absent).
    """

    backend: str
    precision: str
    artifact: str
    onnx: str
    onnx_sha256: str
    lowering: str
    shapes: dict[str, list[int]]
    profiles: dict[str, dict[str, list[int]]]
    dynamic_inputs: list[str]
    plugins: list[str]
    flags: dict[str, list[str]]
    workspace_bytes: int | None
    optimization_level: int | str
    engine_dir: str
    outputs: dict[str, str]
    cache_key: str | None = None
    cached: bool | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    gpu: dict[str, str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    text = _coerce_shapes_text(shapes)
    parsed, notes = _parse_shapes(text, int(interface["pad_multiple"]))
    shape_dict = {k: list(s) for k, s in zip(_SHAPE_NAMES, parsed, strict=True)}
    profiles = input_profiles(interface, parsed)
    declared, plugins = onnx_inputs(onnx_path)
    dynamic = dynamic_inputs(profiles, declared, str(onnx_path))
    if backend == "onnxruntime":
        return _plan_onnxruntime(directory, precision, entry, onnx_path, sha, shape_dict, profiles, dynamic,
                                 plugins, notes, text)
    return _plan_tensorrt(directory, precision, entry, onnx_path, sha, parsed, shape_dict, profiles, dynamic,
                          plugins, notes)


def _plan_onnxruntime(directory: Path, precision: str, entry: Any, onnx_path: Path, sha: str,
                      shape_dict: dict[str, list[int]], profiles: dict[str, dict[str, list[int]]],
                      dynamic: list[str], plugins: list[str], notes: list[str], text: str | None) -> BuildPlan:
    import onnxruntime as ort

    if plugins:
        raise ExportError(f"{onnx_path}: has vdeblur plugin nodes ({', '.join(plugins)}), which ONNX Runtime cannot "
                          "run. Expected the portable lowering; re-export the artifact.")
    engine_dir = directory / ENGINES / "onnxruntime" / precision
    providers = _ort_providers(ort)
    settings = {
        "optimized_model_level": ORT_SAVE_LEVEL,
        "session_options": _ort_session_options(),
        "providers": providers,
        "verify_size": shape_dict["min"],
    }
    if text:
        notes = [*notes, "onnxruntime: --shapes only sets the verification frame size (the min size); "
                         "ONNX Runtime takes any size at run time"]
    return BuildPlan(
        backend="onnxruntime", precision=precision, artifact=str(directory), onnx=str(onnx_path), onnx_sha256=sha,
        lowering=entry.lowering, shapes=shape_dict, profiles=profiles, dynamic_inputs=dynamic, plugins=plugins,
        flags={}, workspace_bytes=None, optimization_level=ORT_SAVE_LEVEL, engine_dir=str(engine_dir),
        outputs={"model": str(engine_dir / ORT_MODEL), "session": str(engine_dir / ORT_SESSION)},
        cache_key=None, cached=False, versions={"onnxruntime": ort.__version__, "vdeblur": __version__},
        gpu=None, settings=settings, notes=notes,
    )


def _plan_tensorrt(directory: Path, precision: str, entry: Any, onnx_path: Path, sha: str, parsed: Shapes,
                   shape_dict: dict[str, list[int]], profiles: dict[str, dict[str, list[int]]],
                   dynamic: list[str], plugins: list[str], notes: list[str]) -> BuildPlan:
    engine_dir = directory / ENGINES / "tensorrt"
    outputs = {"timing_cache": str(engine_dir / TIMING_CACHE)}
    trt = _try_import_tensorrt()
    flags: dict[str, list[str]] = {"network": [], "builder": []}
    key = cached = gpu = None
    versions: dict[str, str | None] = {"tensorrt": None, "vdeblur": __version__, "triton": _dist_version("triton")}
    notes = list(notes)
    if trt is None:
        notes.append("tensorrt is not installed here: flags, cache key and cache hit are decided at build time "
                     "(STRONGLY_TYPED network on 10.x, no flag on 11)")
    else:
        chosen = trt_build_flags(trt, precision)
        flags = {"network": list(chosen.network), "builder": list(chosen.builder)}
        notes.extend(chosen.notes)
        versions["tensorrt"] = chosen.version
        gpu, reason = probe_gpu()
        if gpu is None:
            notes.append(f"no NVIDIA GPU visible ({reason}): cache key and cache hit are decided at build time")
        else:
            key = cache_key(sha, precision, parsed, chosen.version, gpu,
                            extra=_key_extra(flags, DEFAULT_WORKSPACE, DEFAULT_OPT_LEVEL, versions))
            outputs["engine"] = str(engine_dir / f"{key}.plan")
            outputs["sidecar"] = str(engine_dir / f"{key}.json")
            cached = _cache_hit(Path(outputs["engine"]), Path(outputs["sidecar"]), key)
    if Path(outputs["timing_cache"]).is_file():
        notes.append("timing cache present: it is loaded (a mismatching one is replaced)")
    return BuildPlan(
        backend="tensorrt", precision=precision, artifact=str(directory), onnx=str(onnx_path), onnx_sha256=sha,
        lowering=entry.lowering, shapes=shape_dict, profiles=profiles, dynamic_inputs=dynamic, plugins=plugins,
        flags=flags, workspace_bytes=DEFAULT_WORKSPACE, optimization_level=DEFAULT_OPT_LEVEL,
        engine_dir=str(engine_dir), outputs=outputs, cache_key=key, cached=cached, versions=versions, gpu=gpu,
        settings={"batch": 1, "profiles": 1}, notes=notes,
    )


def _key_extra(flags: Mapping[str, Sequence[str]], workspace: int, opt_level: int,
               versions: Mapping[str, str | None]) -> dict[str, Any]:
    """Components of the engine beyond the five named ones: builder settings, plugin kernels."""
    return {
        "flags": {k: sorted(v) for k, v in flags.items()},
        "workspace_bytes": workspace,
        "optimization_level": opt_level,
        "plugins_sha256": plugin_sources_sha256(),
        "triton": versions.get("triton"),
    }


def plugin_sources_sha256() -> str:
    """Digest of the plugin package's Python sources: the AOT kernels' PTX is baked into engines."""
    root = Path(__file__).resolve().parents[1] / "plugins"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------


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
    if backend == "onnxruntime":
        result = _build_onnxruntime(p, report)
    else:
        result = _build_tensorrt(p, report)
    result["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    report("done", 1.0)
    return result


# ----- ONNX Runtime ----------------------------------------------------------------------------


def _ort_session_options() -> dict[str, Any]:
    """The session settings of session.json (applied by :func:`ort_session_options`)."""
    return {
        "graph_optimization_level": ORT_RUN_LEVEL,
        "execution_mode": "ORT_SEQUENTIAL",
        "intra_op_num_threads": 0,  # 0: ONNX Runtime's default, one thread per physical core
        "inter_op_num_threads": 1,
        "config_entries": {
            "session.intra_op.allow_spinning": "0",
            "session.inter_op.allow_spinning": "0",
        },
    }


def ort_session_options(ort: Any, settings: Mapping[str, Any]) -> Any:
    """``onnxruntime.SessionOptions`` from session.json's ``session_options``."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    opts.execution_mode = getattr(ort.ExecutionMode, settings.get("execution_mode", "ORT_SEQUENTIAL"))
    opts.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    opts.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    for key, value in settings.get("config_entries", {}).items():
        opts.add_session_config_entry(key, str(value))
    return opts


def _nvidia_device_present() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _ort_providers(ort: Any) -> list[list[Any]]:
    """[[provider, options], ...] in preference order: CUDA when this onnxruntime has it and an
    NVIDIA device is present, then CPU."""
    providers: list[list[Any]] = []
    if "CUDAExecutionProvider" in ort.get_available_providers() and _nvidia_device_present():
        providers.append(["CUDAExecutionProvider", {"device_id": "0"}])
    providers.append(["CPUExecutionProvider", {}])
    return providers


def _build_onnxruntime(p: BuildPlan, report: Progress) -> dict[str, Any]:
    import onnxruntime as ort

    from vdeblur.contract.device import cpu_info
    from vdeblur.contract.precision import DISABLE_QDQ, ENGINE_BARS, frame_metrics, int8_settings
    from vdeblur.metrics import json_safe

    settings = p.settings
    engine_dir = Path(p.engine_dir)
    engine_dir.mkdir(parents=True, exist_ok=True)
    providers = [(name, opts) for name, opts in settings["providers"]]
    session_options = json.loads(json.dumps(settings["session_options"]))
    int8 = int8_settings(p.onnx)
    notes = list(p.notes)
    if int8 and int8["disable_quant_qdq"]:
        session_options["config_entries"][DISABLE_QDQ] = "1"
        notes.append(int8["note"])
    timings: dict[str, float] = {}
    fd, tmp_name = tempfile.mkstemp(dir=engine_dir, prefix=".model.optimized.", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    ok = False
    fallback: dict[str, Any] | None = None
    try:
        report("optimising with ONNX Runtime", 0.1)
        t = time.perf_counter()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_SAVE_LEVEL)
        opts.optimized_model_filepath = str(tmp)
        opts.log_severity_level = 3
        for key, value in session_options["config_entries"].items():
            opts.add_session_config_entry(key, value)
        try:
            optimiser = ort.InferenceSession(p.onnx, opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(f"{p.onnx}: ONNX Runtime cannot optimise it ({_first_line(e)}). "
                               "Expected a portable-lowering graph; re-export the artifact.") from e
        used = optimiser.get_providers()
        del optimiser
        timings["optimize"] = round(time.perf_counter() - t, 3)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise BackendError(f"{p.onnx}: ONNX Runtime wrote no optimised model. "
                               "Expected a model under 2 GB (larger ones need external initializers).")
        chosen = [[name, dict(o)] for name, o in providers if name in used]
        if len(chosen) < len(providers):
            dropped = [name for name, _ in providers if name not in used]
            notes.append(f"execution providers {', '.join(dropped)} could not be created here and were left out")

        report("verifying the optimised model", 0.5)
        t = time.perf_counter()
        bar = ENGINE_BARS[p.precision]
        got, want = _verify_frames(p, tmp, chosen, session_options)
        metrics = frame_metrics(got, want)
        short = bar.check(metrics["psnr_db"], metrics["within_half_level"])
        h, w = p.shapes["min"]
        verification = {"against": f"{os.path.relpath(p.onnx, p.artifact)} without graph optimisation",
                        "clip": f"synthetic moving texture, {len(want)} output frames at {w}x{h}",
                        "psnr_db": json_safe(metrics["psnr_db"]),
                        "within_half_level": metrics["within_half_level"], "bar": bar.to_dict(),
                        "passed": short is None}
        timings["verify"] = round(time.perf_counter() - t, 3)

        report("writing", 0.9)
        model_path = engine_dir / ORT_MODEL
        session_path = engine_dir / ORT_SESSION
        if short is None:
            model_rel, model_file = ORT_MODEL, tmp
            run_options = session_options
        else:
            # Fall back to the source graph as it is: the reference of the verification itself.
            fallback = {"reason": f"the ONNX Runtime-optimised model differs from the source graph ({short})",
                        "uses": "the source graph without graph optimisation (slower)"}
            notes.append(f"fallback: {fallback['reason']}; {fallback['uses']}")
            model_rel, model_file = os.path.relpath(p.onnx, engine_dir), Path(p.onnx)
            run_options = {**session_options, "graph_optimization_level": "ORT_DISABLE_ALL"}
        session = {
            "format_version": 1,
            "backend": "onnxruntime",
            "precision": p.precision,
            "model": model_rel,
            "model_sha256": manifest_mod.sha256_file(model_file),
            "source": {"file": os.path.relpath(p.onnx, p.artifact), "sha256": p.onnx_sha256, "lowering": p.lowering},
            "optimized_with": {"graph_optimization_level": ORT_SAVE_LEVEL, "onnxruntime": ort.__version__},
            "optimized_for": [name for name, _ in chosen],
            "session_options": run_options,
            "providers": chosen,
            "verification": verification,
            "fallback": fallback,
            "int8": int8,
            "cpu": cpu_info(),
            "vdeblur": __version__,
            "created": _now(),
        }
        session_path.unlink(missing_ok=True)  # never a session.json beside another model
        model_path.unlink(missing_ok=True)
        if fallback is None:
            _default_mode(tmp)
            os.replace(tmp, model_path)
        _atomic_write(session_path, (json.dumps(session, indent=2) + "\n").encode())
        ok = True
    finally:
        tmp.unlink(missing_ok=True)
        if not ok:
            _prune_empty(engine_dir, Path(p.artifact))
    return {
        "backend": "onnxruntime",
        "precision": p.precision,
        "artifact": p.artifact,
        "engine": str(model_path) if fallback is None else p.onnx,
        "session": str(session_path),
        "cache_hit": False,
        "providers": ",".join(name for name, _ in chosen),
        "optimization_level": ORT_SAVE_LEVEL if fallback is None else "ORT_DISABLE_ALL",
        "verified": verification["passed"],
        "verification": verification,
        "fallback": fallback,
        "int8": int8,
        "cpu": cpu_info(),
        "timings_s": timings,
        "notes": notes,
    }


def _verify_frames(p: BuildPlan, optimised: Path, providers: list[list[Any]],
                   session_options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Output frames (T, H, W, 3) float32 of the optimised model (opened as session.json will say)
    and of the source graph without graph optimisation, for the same synthetic clip at the min size,
    streamed the way the runtime streams (vdeblur.runtime.stream.Stream)."""
    from vdeblur.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from vdeblur.runtime.stream import Stream
    from vdeblur.runtime.synthetic import moving_texture

    interface = manifest_mod.read(p.artifact).interface
    h, w = p.shapes["min"]
    frames = moving_texture(int(interface.get("lookahead", 0)) + VERIFY_EXTRA_FRAMES, h, w, seed=11)
    frames = np.ascontiguousarray(frames.transpose(0, 2, 3, 1))
    device = "cuda" if any(name == "CUDAExecutionProvider" for name, _ in providers) else "cpu"
    reference_options = {**session_options, "graph_optimization_level": "ORT_DISABLE_ALL"}
    outputs = []
    for graph, options in ((optimised, session_options), (Path(p.onnx), reference_options)):
        try:
            backend = OnnxRuntimeBackend(p.artifact, p.precision, device=device, graph=graph,
                                         session_options=options)
        except BackendError as e:
            raise BackendError(f"{graph}: the model does not load in ONNX Runtime for verification ({e}). "
                               "Expected it to; re-export the artifact.") from e
        got: dict[int, np.ndarray] = {}
        with Stream(backend=backend) as stream:
            for f in frames:
                got.update(stream.push(f))
            got.update(stream.flush())
        outputs.append(np.stack([got[i] for i in range(len(frames))]))
    return outputs[0], outputs[1]


# ----- TensorRT ------------------------------------------------------------------------------


def _try_import_tensorrt() -> Any:
    """The tensorrt module, or None when it is not installed (plans only; builds use _import_tensorrt)."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise missing_dependency("tensorrt", "tensorrt", "building a TensorRT engine (on an NVIDIA GPU)") from e
    return tensorrt


def probe_gpu() -> tuple[dict[str, str] | None, str]:
    """(name and compute capability of CUDA device 0 as this process sees it, or None; why not).

    Asks pycuda (the [tensorrt] extra), else torch; neither creates a CUDA context."""
    reasons = []
    try:
        import pycuda.driver as cuda
    except ImportError:
        reasons.append("pycuda not installed")
    else:
        try:
            cuda.init()
            if cuda.Device.count() > 0:
                dev = cuda.Device(0)
                major, minor = dev.compute_capability()
                return {"name": str(dev.name()), "compute_capability": f"{major}.{minor}"}, ""
            reasons.append("the CUDA driver reports no device")
        except Exception as e:  # pycuda's driver errors
            reasons.append(f"CUDA driver: {_first_line(e)}")
    try:
        import torch
    except ImportError:
        reasons.append("torch not installed")
    else:
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}, ""
        reasons.append("torch sees no CUDA device")
    return None, "; ".join(reasons)


def _cache_hit(engine: Path, sidecar: Path, key: str) -> bool:
    """True when ``engine`` and its sidecar exist, the sidecar names ``key`` and the engine's size
    and sha256 match it."""
    if not engine.is_file() or not sidecar.is_file():
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (meta.get("key") == key and meta.get("bytes") == engine.stat().st_size
            and meta.get("sha256") == manifest_mod.sha256_file(engine))


def list_engines(artifact_dir: str | Path) -> list[dict[str, Any]]:
    """The sidecars of the TensorRT engines cached in an artifact (for runtime backends)."""
    engine_dir = Path(artifact_dir) / ENGINES / "tensorrt"
    found = []
    for sidecar in sorted(engine_dir.glob("*.json")):
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (engine_dir / str(meta.get("engine", ""))).is_file():
            found.append(meta)
    return found


class _Log:
    """A TensorRT logger that keeps the errors for our messages (created inside _build_tensorrt)."""

    def __init__(self, trt: Any) -> None:
        outer = self

        class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                s = trt.ILogger.Severity
                if severity in (s.INTERNAL_ERROR, s.ERROR):
                    outer.errors.append(msg)
                if severity in (s.INTERNAL_ERROR, s.ERROR, s.WARNING):
                    print(f"[TensorRT] {msg}", file=sys.stderr)

        self.errors: list[str] = []
        self.logger = Logger()

    def last(self) -> str:
        return self.errors[-1] if self.errors else "no error message; see the TensorRT log above"


_PLUGINS_REGISTERED = False


def _register_plugins_once() -> None:
    """Register the vdeblur QDPs with TensorRT once per process (a second build in the same process
    must not register them again)."""
    global _PLUGINS_REGISTERED
    if not _PLUGINS_REGISTERED:
        from vdeblur.plugins.lowering import register_tensorrt_plugins

        register_tensorrt_plugins()
        _PLUGINS_REGISTERED = True


def _build_tensorrt(p: BuildPlan, report: Progress) -> dict[str, Any]:
    """The TensorRT calls (TENSORRT.md, "Builder"); everything they need is in the plan."""
    trt = _import_tensorrt()
    gpu, reason = probe_gpu()
    if gpu is None:
        raise BackendError(f"tensorrt: no NVIDIA GPU is visible ({reason}). Building a TensorRT engine needs an "
                           "NVIDIA GPU with its driver; on this machine use --backend onnxruntime.")
    flags = trt_build_flags(trt, p.precision)
    names = {"network": list(flags.network), "builder": list(flags.builder)}
    key = cache_key(p.onnx_sha256, p.precision, [p.shapes[k] for k in _SHAPE_NAMES], flags.version, gpu,
                    extra=_key_extra(names, int(p.workspace_bytes or DEFAULT_WORKSPACE), int(p.optimization_level),
                                     p.versions))
    engine_dir = Path(p.engine_dir)
    engine_path, sidecar_path = engine_dir / f"{key}.plan", engine_dir / f"{key}.json"
    timing_path = engine_dir / TIMING_CACHE
    result: dict[str, Any] = {
        "backend": "tensorrt", "precision": p.precision, "artifact": p.artifact, "engine": str(engine_path),
        "sidecar": str(sidecar_path), "timing_cache": str(timing_path), "cache_key": key, "cache_hit": False,
        "tensorrt": flags.version, "gpu": f"{gpu['name']} (sm {gpu['compute_capability']})",
        "shapes": format_shapes(p.shapes.values()), "profiles": p.profiles, "flags": names,
        "timings_s": {}, "notes": [*p.notes, *flags.notes],
    }
    if _cache_hit(engine_path, sidecar_path, key):
        result["cache_hit"] = True
        return result

    timings = result["timings_s"]
    log = _Log(trt)
    report("parsing the ONNX graph", 0.05)
    t = time.perf_counter()
    _register_plugins_once()
    builder = trt.Builder(log.logger)
    network = builder.create_network(flags.network_bits(trt))
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(p.onnx):
        raise ExportError(format_parser_errors([parser.get_error(i) for i in range(parser.num_errors)], p.onnx))
    declared = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        declared[tensor.name] = [int(d) for d in tensor.shape]
    dynamic = dynamic_inputs(p.profiles, declared, f"{p.onnx} (as parsed by TensorRT)")
    timings["parse"] = round(time.perf_counter() - t, 3)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(p.workspace_bytes or DEFAULT_WORKSPACE))
    config.builder_optimization_level = int(p.optimization_level)
    for name in flags.builder:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name in dynamic:
        shapes = p.profiles[name]
        profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    if config.add_optimization_profile(profile) < 0:
        raise BackendError(f"{p.onnx}: TensorRT rejected the optimisation profile ({log.last()}). "
                           f"Expected min <= opt <= max shapes for {', '.join(dynamic)}; check --shapes.")
    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        result["notes"].append(f"{timing_path} was made for another GPU or TensorRT: started a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    report("building the TensorRT engine", 0.15)
    t = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{p.onnx}: TensorRT could not build the engine ({log.last()}). "
                           "Expected a graph of supported layers and vdeblur plugins; see the TensorRT log above.")
    timings["build"] = round(time.perf_counter() - t, 3)
    data = bytes(serialized)

    report("checking the engine", 0.9)
    engine = trt.Runtime(log.logger).deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(f"{p.onnx}: the engine TensorRT just built does not deserialize ({log.last()}).")
    io = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    man = manifest_mod.read(p.artifact)
    expected = [*man.interface["input_names"], *man.interface["output_names"]]
    if sorted(io) != sorted(expected):
        raise BackendError(f"{p.onnx}: the engine's tensors are {io}. Expected {expected}.")

    report("writing", 0.95)
    engine_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
    _atomic_write(engine_path, data)
    sidecar = {
        "format_version": SIDECAR_FORMAT, "key": key, "engine": engine_path.name, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "onnx": {"file": os.path.relpath(p.onnx, p.artifact), "sha256": p.onnx_sha256, "lowering": p.lowering},
        "precision": p.precision, "shapes": p.shapes, "profiles": p.profiles, "dynamic_inputs": dynamic,
        "inputs": man.interface["input_names"], "outputs": man.interface["output_names"],
        "plugins": p.plugins, "tensorrt": flags.version, "gpu": gpu, "flags": names,
        "strongly_typed": flags.strongly_typed, "workspace_bytes": p.workspace_bytes,
        "optimization_level": p.optimization_level, "versions": p.versions, "build_s": timings["build"],
        "created": _now(),
    }
    _atomic_write(sidecar_path, (json.dumps(sidecar, indent=2) + "\n").encode())  # last: marks it complete
    return result


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _default_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prune_empty(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    stop = stop.resolve()
    path = path.resolve()
    while path != stop and stop in path.parents and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


def _default_mode(path: Path) -> None:
    """mkstemp creates 0600 files: give them the mode of a plainly created file (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
