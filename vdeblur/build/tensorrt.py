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
    """A TensorRT logger that keeps the errors for our messages (created inside the build).

    name: how its lines are prefixed on stderr; quiet: substrings of messages that are neither
    printed nor kept (TensorRT-RTX reports the missing CUDA driver of a CPU-only build as errors)."""

    def __init__(self, trt: Any, name: str = "TensorRT", quiet: Sequence[str] = ()) -> None:
        outer = self

        class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                if any(q in msg for q in quiet):
                    return
                s = trt.ILogger.Severity
                if severity in (s.INTERNAL_ERROR, s.ERROR):
                    outer.errors.append(msg)
                if severity in (s.INTERNAL_ERROR, s.ERROR, s.WARNING):
                    print(f"[{name}] {msg}", file=sys.stderr)

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


@dataclass
class Compiled:
    """What :func:`compile_engine` returns: the serialized engine, the inputs set in the profile,
    the builder config (for its timing cache), timings in seconds and notes."""

    data: bytes
    dynamic: list[str]
    config: Any
    timings: dict[str, float]
    notes: list[str]


def compile_engine(trt: Any, log: _Log, p: BuildPlan, report: Progress, *, network_flags: int,
                   builder_flags: Sequence[str] = (), register: Callable[[], None] | None = None,
                   configure: Callable[[Any], None] | None = None, timing_path: Path | None = None,
                   onnx_bytes: bytes | None = None, what: str = "TensorRT") -> Compiled:
    """Parse ``p.onnx`` and build a serialized engine with one optimisation profile: the steps the
    TensorRT and TensorRT-RTX builds share (TENSORRT.md, "Builder"); ``trt`` is either module.

    register: registers the plugin creators before parsing; configure(config): backend settings
    (TensorRT-RTX: the target compute capabilities); timing_path: a timing cache to load (None:
    none); onnx_bytes: the graph to parse instead of the file (a rewritten copy; the file's
    directory still resolves external data). The parsed network's inputs must take the plan's
    profiles, its outputs must be the manifest's."""
    timings: dict[str, float] = {}
    notes: list[str] = []
    report("parsing the ONNX graph", 0.05)
    t = time.perf_counter()
    if register is not None:
        register()
    builder = trt.Builder(log.logger)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, log.logger)
    ok = (parser.parse(onnx_bytes, str(p.onnx)) if onnx_bytes is not None else parser.parse_from_file(str(p.onnx)))
    if not ok:
        raise ExportError(format_parser_errors([parser.get_error(i) for i in range(parser.num_errors)], p.onnx))
    declared = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        declared[tensor.name] = [int(d) for d in tensor.shape]
    dynamic = dynamic_inputs(p.profiles, declared, f"{p.onnx} (as parsed by {what})")
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    man = manifest_mod.read(p.artifact)
    if sorted(outputs) != sorted(man.interface["output_names"]):
        raise BackendError(f"{p.onnx}: the network's outputs are {outputs}. Expected {man.interface['output_names']} "
                           "(the manifest's output_names); re-export the artifact.")
    timings["parse"] = round(time.perf_counter() - t, 3)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(p.workspace_bytes or DEFAULT_WORKSPACE))
    config.builder_optimization_level = int(p.optimization_level)
    for name in builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if configure is not None:
        configure(config)
    profile = builder.create_optimization_profile()
    for name in dynamic:
        shapes = p.profiles[name]
        profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    if config.add_optimization_profile(profile) < 0:
        raise BackendError(f"{p.onnx}: {what} rejected the optimisation profile ({log.last()}). "
                           f"Expected min <= opt <= max shapes for {', '.join(dynamic)}; check --shapes.")
    if timing_path is not None:
        blob = timing_path.read_bytes() if timing_path.is_file() else b""
        timing = config.create_timing_cache(blob)
        if not config.set_timing_cache(timing, ignore_mismatch=False):
            notes.append(f"{timing_path} was made for another GPU or TensorRT: started a new one")
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    report(f"building the {what} engine", 0.15)
    t = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{p.onnx}: {what} could not build the engine ({log.last()}). "
                           f"Expected a graph of supported layers and vdeblur plugins; see the {what} log above.")
    timings["build"] = round(time.perf_counter() - t, 3)
    return Compiled(bytes(serialized), dynamic, config, timings, notes)


def fold_int32_dequantize(model: Any) -> int:
    """Replace every DequantizeLinear of an INT32 constant in an ``onnx.ModelProto`` by its float
    value (in place); returns how many.

    ONNX Runtime's static quantizer writes Conv biases as INT32 constants behind DequantizeLinear;
    TensorRT's DequantizeLinear takes int8/uint8/fp8/int4 inputs only and rejects the graph. The
    folded constant is exactly what the node computes: ``(x - zero_point) * scale`` (per tensor, or
    per channel along ``axis``), in the scale's type."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, folded, candidates = [], [], set()
    for node in model.graph.node:
        x = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" and node.input else None
        if x is None or x.data_type != TensorProto.INT32 or not all(n in inits for n in node.input if n):
            nodes.append(node)
            continue
        value = numpy_helper.to_array(x).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] else np.zeros(scale.shape))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scale_b, zero_b = scale.astype(np.float64), zero
        if scale.ndim == 1 and value.ndim > 0 and scale.size > 1:
            shape = [1] * value.ndim
            shape[axis % value.ndim] = scale.size
            scale_b, zero_b = scale_b.reshape(shape), zero.reshape(shape)
        candidates.update(n for n in node.input if n)
        folded.append(numpy_helper.from_array(((value - zero_b) * scale_b).astype(scale.dtype), node.output[0]))
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {n for node in nodes for n in node.input} | {o.name for o in model.graph.output}
        keep = [i for i in model.graph.initializer if i.name not in candidates or i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep + folded)
    return len(folded)


def symmetric_activations(model: Any) -> int:
    """Make the uint8 (asymmetric) Q/DQ pairs of an ``onnx.ModelProto`` symmetric int8 (in place);
    returns how many nodes changed.

    TensorRT quantizes with zero point 0 only (it rejects a non-zero one); ONNX Runtime's int8
    variant has uint8 activations with zero points (fast on x86 CPUs). The same calibrated range
    [(0 - zp) * s, (255 - zp) * s] is kept, quantized symmetrically: scale ``s * max(zp, 255 - zp) / 127``
    and an int8 zero point 0, so a one-sided range loses up to one bit of resolution. The result is
    an int8 graph for TensorRT that differs from the validated variant."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    made: dict[tuple[str, str], tuple[str, str]] = {}
    changed = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        scale_name, zero_name = node.input[1], node.input[2]
        zero_init, scale_init = inits.get(zero_name), inits.get(scale_name)
        if zero_init is None or scale_init is None or zero_init.data_type != TensorProto.UINT8:
            continue
        if (scale_name, zero_name) not in made:
            zero = numpy_helper.to_array(zero_init).astype(np.float64)
            scale = numpy_helper.to_array(scale_init)
            new_scale = (scale.astype(np.float64) * np.maximum(zero, 255.0 - zero) / 127.0).astype(scale.dtype)
            names = (f"{scale_name}__int8_symmetric", f"{zero_name}__int8_symmetric")
            model.graph.initializer.extend([numpy_helper.from_array(new_scale, names[0]),
                                            numpy_helper.from_array(np.zeros(zero.shape, np.int8), names[1])])
            made[(scale_name, zero_name)] = names
        node.input[1], node.input[2] = made[(scale_name, zero_name)]
        changed += 1
    if changed:
        used = {n for node in model.graph.node for n in node.input}
        old = {n for pair in made for n in pair}
        keep = [i for i in model.graph.initializer if i.name not in old or i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return changed


GraphRewrite = Callable[[Any], int]


def rewrite_graph(onnx_path: str | Path, rewrites: Sequence[tuple[GraphRewrite, str]]
                  ) -> tuple[bytes | None, list[str]]:
    """(the serialized graph after ``rewrites``, or None when none changed anything; one note per
    rewrite that did, ``"<count> <what>"``). rewrites: (function on the ModelProto returning how
    many nodes it changed, what it does)."""
    import onnx

    model = onnx.load(str(onnx_path))
    notes = []
    for fn, what in rewrites:
        count = fn(model)
        if count:
            notes.append(f"{count} {what}")
    return (model.SerializeToString() if notes else None), notes


REWRITE_CHECK_FRAMES = 4  # frames after the warm-up of the fidelity check of a rewritten graph


def rewritten_fidelity(p: BuildPlan, onnx_bytes: bytes) -> dict[str, Any]:
    """What the rewrite did to the numbers, measured: the rewritten graph against the artifact's fp32
    graph on the same frames (:func:`vdeblur.contract.driver.drive_spec` over ONNX Runtime, Q/DQ computed
    in float so that the CPU's integer kernels do not enter), judged by the precision's variant bar
    (:data:`vdeblur.contract.precision.VARIANT_BARS`) like the export judged the graph it wrote.
    Raises BackendError, writing nothing, when it falls short. Only portable graphs run in ONNX
    Runtime: for a trt-lowered graph the result says it was not measured."""
    from vdeblur.contract.driver import drive_spec, runner
    from vdeblur.contract.interface import StepSpec
    from vdeblur.contract.precision import DISABLE_QDQ, VARIANT_BARS, frame_metrics
    from vdeblur.data.texture import moving_texture

    if p.lowering != "portable":
        return {"measured": False, "why": "a trt-lowered graph does not run in ONNX Runtime"}
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_dependency("onnxruntime", "dev", "checking a rewritten int8 graph") from e
    man = manifest_mod.read(p.artifact)
    spec = man.spec()
    h, w = p.shapes["min"]
    warmup = spec.lookahead if isinstance(spec, StepSpec) else 0  # a clip graph: one clip of these frames
    frames = moving_texture(warmup + REWRITE_CHECK_FRAMES, h, w, seed=11)[None]

    def session(model: str | bytes, float_qdq: bool) -> Any:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if float_qdq:
            opts.add_session_config_entry(DISABLE_QDQ, "1")
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    want = drive_spec(runner(session(str(Path(p.artifact) / man.graph("fp32", "portable").file), False), spec),
                      spec, frames)
    got = drive_spec(runner(session(onnx_bytes, True), spec), spec, frames)
    metrics = frame_metrics(got, want)
    bar = VARIANT_BARS.get(p.precision, VARIANT_BARS["int8"])
    short = bar.check(metrics["psnr_db"], metrics["within_half_level"])
    result = {"measured": True, "against": "the artifact's fp32 graph", "frames": int(frames.shape[1]),
              "size": [h, w], **metrics, "bar": bar.to_dict(), "passed": short is None}
    if short is not None:
        raise BackendError(f"{p.onnx}: the {p.precision} graph rewritten for TensorRT falls short of its bar against "
                           f"the fp32 graph ({short}). Expected the rewrite to keep the variant's fidelity; no engine "
                           "was written. Re-export with another calibration, or build another precision.")
    return result


def check_rewrites(p: BuildPlan, onnx_bytes: bytes | None, notes: list[str]) -> dict[str, Any] | None:
    """:func:`rewritten_fidelity` when a rewrite changed the numbers (symmetric activations), else None."""
    if onnx_bytes is None or not any(SYMMETRIC_NOTE in n for n in notes):
        return None
    return rewritten_fidelity(p, onnx_bytes)


SYMMETRIC_NOTE = "made symmetric int8"

# The graph rewrites every TensorRT build applies (what TensorRT's ONNX parser rejects, made exact or said).
TRT_REWRITES: tuple[tuple[GraphRewrite, str], ...] = (
    (fold_int32_dequantize, "integer-bias DequantizeLinear nodes folded into float constants (TensorRT "
                            "dequantizes int8/fp8 only; exact)"),
    (symmetric_activations, "uint8 Q/DQ nodes made symmetric int8 over the same calibrated range (TensorRT has "
                            "no zero points; this int8 engine is not the validated ONNX Runtime variant: the "
                            "rewritten graph is measured against the fp32 graph, see rewrite_check)"),
)


def sidecar(p: BuildPlan, key: str, compiled: Compiled, **fields: Any) -> dict[str, Any]:
    """The sidecar of an engine built from plan ``p`` (:mod:`vdeblur.contract.engines`), plus
    ``fields`` (backend-specific: tensorrt version, gpu, flags...)."""
    man = manifest_mod.read(p.artifact)
    return {
        "format_version": SIDECAR_FORMAT, "key": key,
        "onnx": {"file": os.path.relpath(p.onnx, p.artifact), "sha256": p.onnx_sha256, "lowering": p.lowering},
        "precision": p.precision, "shapes": p.shapes, "profiles": p.profiles, "dynamic_inputs": compiled.dynamic,
        "inputs": man.interface["input_names"], "outputs": man.interface["output_names"],
        "plugins": p.plugins, "workspace_bytes": p.workspace_bytes, "optimization_level": p.optimization_level,
        "versions": p.versions, "build_s": compiled.timings["build"], "created": cache.now(), **fields,
    }


def build_tensorrt(p: BuildPlan, report: Progress) -> dict[str, Any]:
    """The TensorRT build (TENSORRT.md, "Builder"); everything it needs is in the plan."""
    trt = import_tensorrt()
    gpu, reason = probe_gpu()
    if gpu is None:
        raise BackendError(f"tensorrt: no NVIDIA GPU is visible ({reason}). Building a TensorRT engine needs an "
                           "NVIDIA GPU with its driver; on this machine use --backend onnxruntime, or "
                           "--backend tensorrt-rtx (engines for RTX GPUs, built without one).")
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

    log = _Log(trt)
    onnx_bytes, rewritten = rewrite_graph(p.onnx, TRT_REWRITES)
    result["notes"] += rewritten
    result["rewrite_check"] = check_rewrites(p, onnx_bytes, rewritten)
    compiled = compile_engine(trt, log, p, report, network_flags=flags.network_bits(trt), builder_flags=flags.builder,
                              register=register_plugins_once, timing_path=timing_path, onnx_bytes=onnx_bytes)
    result["timings_s"].update(compiled.timings)
    result["notes"] += compiled.notes

    report("checking the engine", 0.9)
    engine = trt.Runtime(log.logger).deserialize_cuda_engine(compiled.data)
    if engine is None:
        raise BackendError(f"{p.onnx}: the engine TensorRT just built does not deserialize ({log.last()}).")
    io = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    man = manifest_mod.read(p.artifact)
    expected = [*man.interface["input_names"], *man.interface["output_names"]]
    if sorted(io) != sorted(expected):
        raise BackendError(f"{p.onnx}: the engine's tensors are {io}. Expected {expected}.")

    report("writing", 0.95)
    cache.write_timing_cache(timing_path, bytes(compiled.config.get_timing_cache().serialize()))
    cache.write_engine(engine_path, sidecar_path, compiled.data, sidecar(
        p, key, compiled, tensorrt=flags.version, gpu=gpu, flags=names, strongly_typed=flags.strongly_typed,
        rewrites=rewritten, rewrite_check=result["rewrite_check"]))
    return result
