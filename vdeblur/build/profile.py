"""What a build will do: frame sizes (``--shapes``), the optimisation profile of every graph input,
and the :class:`BuildPlan`.

The ``--shapes`` grammar itself is part of the engine-cache contract (the runtime selects engines by
it too): :mod:`vdeblur.contract.engines` (``parse_shapes``, ``shape_notes``, ``format_shapes``,
``DEFAULT_SHAPES``), re-exported here. State shapes resolve through THE shape grammar of
:mod:`vdeblur.contract.interface`. Plain Python; onnx is imported to read a graph's declared inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vdeblur.contract.engines import (
    DEFAULT_SHAPES,
    SHAPE_NAMES,
    Shapes,
    format_shapes,
    parse_shapes,
    parse_shapes_with_notes,
    shape_notes,
    shapes_text,
)
from vdeblur.contract.interface import resolve_shape
from vdeblur.contract.precision import plugin_ids
from vdeblur.errors import ExportError

__all__ = ["DEFAULT_SHAPES", "SHAPE_NAMES", "BuildPlan", "Shapes", "clip_frames", "dynamic_inputs", "format_shapes",
           "input_dims", "input_profiles", "onnx_inputs", "parse_shapes", "parse_shapes_with_notes", "shape_notes",
           "shapes_text"]


def input_dims(interface: Mapping[str, Any]) -> dict[str, list[int | str]]:
    """Symbolic shape of every input of a step graph, in ``input_names`` order.

    The frame is (N, 3, Hp, Wp), the flush flag (N,), each state its manifest shape. A clip graph
    has one input, the frames (N, T, 3, Hp, Wp)."""
    if interface.get("kind") == "clip":
        return {interface["frame_input"]: ["N", "T", 3, "Hp", "Wp"]}
    dims: dict[str, list[int | str]] = {interface["frame_input"]: ["N", 3, "Hp", "Wp"]}
    flag = (interface.get("flush") or {}).get("flag_input")
    if flag:
        dims[flag] = ["N"]
    for s in interface["states"]:
        dims[s["input_name"]] = list(s["shape"])
    names = list(interface.get("input_names") or dims)
    if set(names) != set(dims) or len(names) != len(dims):
        raise ExportError(f"manifest: input_names {names} do not match the frame, flush flag and states "
                          f"({list(dims)}). Re-export the artifact.")
    return {n: dims[n] for n in names}


def input_profiles(interface: Mapping[str, Any], shapes: Shapes, batch: int = 1) -> dict[str, dict[str, list[int]]]:
    """{input name: {"min": shape, "opt": shape, "max": shape}} for padded frame sizes ``shapes``.

    Batch ``batch`` (1: one stream per engine context). Clip graphs: the number of frames T runs
    from 1 (a video shorter than a window is one clip of its length) to the manifest's window (opt:
    the window). Raises ShapeError for a dimension outside the shape grammar."""
    frames = clip_frames(interface)
    profiles: dict[str, dict[str, list[int]]] = {}
    for name, dims in input_dims(interface).items():
        profiles[name] = {}
        for key, (h, w) in zip(SHAPE_NAMES, shapes, strict=True):
            grammar = [frames[key] if d == "T" else d for d in dims]
            profiles[name][key] = list(resolve_shape(grammar, batch, h, w, f"profile {key} ({h}x{w}), input {name!r}"))
    return profiles


def clip_frames(interface: Mapping[str, Any]) -> dict[str, int]:
    """The profile's number of frames of a clip graph: min 1, opt and max the manifest's window
    (the runtime's ``--window`` may be shorter, never longer, on such an engine)."""
    window = int(interface.get("window") or 1)
    return {"min": 1, "opt": window, "max": window}


def onnx_inputs(path: str | Path) -> tuple[dict[str, list[int]], list[str]]:
    """(declared input shapes, plugin ids) of an ONNX graph: -1 for a dynamic (symbolic or unknown)
    dimension; the ``vdeblur::Name`` ids of its plugin nodes, sorted."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf / IO errors of many types
        raise ExportError(f"{path}: cannot be read as ONNX ({first_line(e)}). Re-export the artifact.") from e
    init = {t.name for t in model.graph.initializer}
    shapes = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        dims = i.type.tensor_type.shape.dim
        shapes[i.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    plugins = plugin_ids(model.graph)
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
        for key in SHAPE_NAMES:
            want = list(profiles[name][key])
            if len(dims) != len(want) or any(d not in (-1, v) for d, v in zip(dims, want, strict=True)):
                raise ExportError(f"{subject}: input {name!r} has shape {dims} (-1 = dynamic), which cannot take "
                                  f"the {key} profile shape {want}. Expected the manifest's state layout; "
                                  "re-export the artifact.")
        if -1 in dims:
            dynamic.append(name)
    return dynamic


@dataclass
class BuildPlan:
    """What :func:`vdeblur.build.build` would do; ``build(..., dry_run=True)`` returns it without building.

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


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
