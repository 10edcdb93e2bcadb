"""The TensorRT build: an engine of the ``trt`` lowering with the vdeblur AOT plugins.

The engine is built from the ``trt`` lowering of the precision's graph with the vdeblur plugins
registered, as a strongly typed network (the precision lives in the ONNX), with one optimisation
profile covering every dynamic input (frame, flush flag, states) for the min/opt/max frame sizes of
``--shapes``. Engines are cached by :func:`vdeblur.contract.engines.cache_key` (ONNX sha256,
precision, shapes, TensorRT version, GPU name and compute capability, plus builder settings and the
plugin sources): a hit skips the build. Files: ``engines/tensorrt/<precision>/<key>.plan`` and its
``.json`` sidecar, ``engines/tensorrt/timing.cache`` (loaded when present).

The TensorRT calls are in :func:`build_tensorrt`; everything else here (flags per TensorRT version,
parser messages, the plan) is plain Python, tested without TensorRT. The plugins are registered
through ``vdeblur.plugins.lowering`` (imported inside :func:`register_plugins_once`: the one edge
from the build to a layer other than the contract; ``import vdeblur.plugins`` is torch-free).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdeblur import __version__
from vdeblur.build import cache
from vdeblur.build.profile import SHAPE_NAMES, BuildPlan, Shapes, dynamic_inputs, format_shapes
from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.device import nvidia_gpus
from vdeblur.contract.engines import SIDECAR_FORMAT, cache_hit, cache_key, engine_dir, engine_files, timing_cache_path
from vdeblur.errors import BackendError, ExportError, missing_dependency

Progress = Callable[[str, float], None]

MIN_TENSORRT = (10, 9)  # AOT quickly deployable plugins
DEFAULT_WORKSPACE = 8 << 30  # bytes of tactic scratch memory TensorRT may use while building
DEFAULT_OPT_LEVEL = 3  # builder_optimization_level 0-5 (TensorRT's default)
_PRECISION_FLAGS = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}


# --------------------------------------------------------------------------------------------
# Version policy and flags, parser errors (plain Python)
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


def key_extra(flags: Mapping[str, Sequence[str]], workspace: int, opt_level: int,
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
    """Digest of the plugin package's Python sources: the AOT kernels' PTX is baked into engines
    (the files are read, not imported)."""
    root = Path(__file__).resolve().parents[1] / "plugins"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Dependencies and the GPU
# --------------------------------------------------------------------------------------------


def try_import_tensorrt() -> Any:
    """The tensorrt module, or None when it is not installed (plans only; builds use import_tensorrt)."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise missing_dependency("tensorrt", "tensorrt", "building a TensorRT engine (on an NVIDIA GPU)") from e
    return tensorrt


def probe_gpu() -> tuple[dict[str, str] | None, str]:
    """(name and compute capability of CUDA device 0 as this process sees it, or None; why not):
    :func:`vdeblur.contract.device.nvidia_gpus`, which creates no CUDA context."""
    gpus, reason = nvidia_gpus()
    return (gpus[0], "") if gpus else (None, reason)


def dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Plan and build
# --------------------------------------------------------------------------------------------


def plan_tensorrt(directory: Path, precision: str, entry: Any, onnx_path: Path, sha: str, parsed: Shapes,
                  shape_dict: dict[str, list[int]], profiles: dict[str, dict[str, list[int]]],
                  dynamic: list[str], plugins: list[str], notes: list[str]) -> BuildPlan:
    out = engine_dir(directory, "tensorrt", precision)
    outputs = {"timing_cache": str(timing_cache_path(directory))}
    trt = try_import_tensorrt()
    flags: dict[str, list[str]] = {"network": [], "builder": []}
    key = cached = gpu = None
    versions: dict[str, str | None] = {"tensorrt": None, "vdeblur": __version__, "triton": dist_version("triton")}
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
                            extra=key_extra(flags, DEFAULT_WORKSPACE, DEFAULT_OPT_LEVEL, versions))
            engine, sidecar = engine_files(directory, precision, key)
            outputs["engine"], outputs["sidecar"] = str(engine), str(sidecar)
            cached = cache_hit(engine, sidecar, key)
    if Path(outputs["timing_cache"]).is_file():
        notes.append("timing cache present: it is loaded (a mismatching one is replaced)")
    return BuildPlan(
        backend="tensorrt", precision=precision, artifact=str(directory), onnx=str(onnx_path), onnx_sha256=sha,
        lowering=entry.lowering, shapes=shape_dict, profiles=profiles, dynamic_inputs=dynamic, plugins=plugins,
        flags=flags, workspace_bytes=DEFAULT_WORKSPACE, optimization_level=DEFAULT_OPT_LEVEL,
        engine_dir=str(out), outputs=outputs, cache_key=key, cached=cached, versions=versions, gpu=gpu,
        settings={"batch": 1, "profiles": 1}, notes=notes,
    )


class _Log:
    """A TensorRT logger that keeps the errors for our messages (created inside build_tensorrt)."""

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


def register_plugins_once() -> None:
    """Register the vdeblur QDPs with TensorRT once per process (a second build in the same process
    must not register them again)."""
    global _PLUGINS_REGISTERED
    if not _PLUGINS_REGISTERED:
        from vdeblur.plugins.lowering import register_tensorrt_plugins  # the one build -> plugins edge

        register_tensorrt_plugins()
        _PLUGINS_REGISTERED = True


def build_tensorrt(p: BuildPlan, report: Progress) -> dict[str, Any]:
    """The TensorRT calls (TENSORRT.md, "Builder"); everything they need is in the plan."""
    trt = import_tensorrt()
    gpu, reason = probe_gpu()
    if gpu is None:
        raise BackendError(f"tensorrt: no NVIDIA GPU is visible ({reason}). Building a TensorRT engine needs an "
                           "NVIDIA GPU with its driver; on this machine use --backend onnxruntime.")
    flags = trt_build_flags(trt, p.precision)
    names = {"network": list(flags.network), "builder": list(flags.builder)}
    key = cache_key(p.onnx_sha256, p.precision, [p.shapes[k] for k in SHAPE_NAMES], flags.version, gpu,
                    extra=key_extra(names, int(p.workspace_bytes or DEFAULT_WORKSPACE), int(p.optimization_level),
                                    p.versions))
    engine_path, sidecar_path = engine_files(p.artifact, p.precision, key)
    timing_path = timing_cache_path(p.artifact)
    result: dict[str, Any] = {
        "backend": "tensorrt", "precision": p.precision, "artifact": p.artifact, "engine": str(engine_path),
        "sidecar": str(sidecar_path), "timing_cache": str(timing_path), "cache_key": key, "cache_hit": False,
        "tensorrt": flags.version, "gpu": f"{gpu['name']} (sm {gpu['compute_capability']})",
        "shapes": format_shapes(p.shapes.values()), "profiles": p.profiles, "flags": names,
        "timings_s": {}, "notes": [*p.notes, *flags.notes],
    }
    if cache_hit(engine_path, sidecar_path, key):
        result["cache_hit"] = True
        return result

    timings = result["timings_s"]
    log = _Log(trt)
    report("parsing the ONNX graph", 0.05)
    t = time.perf_counter()
    register_plugins_once()
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
    timing = config.create_timing_cache(blob)
    if not config.set_timing_cache(timing, ignore_mismatch=False):
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
    cache.write_timing_cache(timing_path, bytes(config.get_timing_cache().serialize()))
    cache.write_engine(engine_path, sidecar_path, data, {
        "format_version": SIDECAR_FORMAT, "key": key,
        "onnx": {"file": os.path.relpath(p.onnx, p.artifact), "sha256": p.onnx_sha256, "lowering": p.lowering},
        "precision": p.precision, "shapes": p.shapes, "profiles": p.profiles, "dynamic_inputs": dynamic,
        "inputs": man.interface["input_names"], "outputs": man.interface["output_names"],
        "plugins": p.plugins, "tensorrt": flags.version, "gpu": gpu, "flags": names,
        "strongly_typed": flags.strongly_typed, "workspace_bytes": p.workspace_bytes,
        "optimization_level": p.optimization_level, "versions": p.versions, "build_s": timings["build"],
        "created": cache.now(),
    })
    return result

