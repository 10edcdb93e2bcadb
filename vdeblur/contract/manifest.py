"""The artifact's ``manifest.json``: everything downstream of export reads only this.

An artifact directory holds the ONNX graphs, ``manifest.json`` and ``report.json`` (validation).
The manifest describes the graph interface (frame input/output, state tensors with shapes in terms
of the padded frame size, lookahead, flush policy, pad multiple), the model it came from, the
plugins it uses, the graphs per precision and lowering (with the nodes kept in fp32), the opset and
the versions of the tools that wrote it. It is plain JSON, read without torch.

Format versions: 1 (the only one so far). :func:`read` accepts every version up to
:data:`FORMAT_VERSION` and refuses newer ones with a message to upgrade vdeblur.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vdeblur.contract.files import sha256_file, write_json
from vdeblur.contract.interface import ClipSpec, StepSpec, spec_from_dict
from vdeblur.contract.precision import LOWERINGS, PRECISIONS
from vdeblur.errors import ExportError, ShapeError

__all__ = ["FORMAT_VERSION", "MANIFEST", "REPORT", "GraphEntry", "Manifest", "read", "sha256_file", "validate"]

MANIFEST = "manifest.json"
REPORT = "report.json"
FORMAT_VERSION = 1


@dataclass
class GraphEntry:
    """One ONNX file of the artifact."""

    file: str
    precision: str
    lowering: str
    sha256: str
    kept_fp32: list[str] = field(default_factory=list)  # nodes left in fp32 by a precision transform
    psnr_db: float | None = None  # vs the fp32 PyTorch reference on the validation clip
    quantization: dict[str, Any] | None = None  # int8/fp8: weight bits, types, the CPUs it is right on


@dataclass
class Manifest:
    """The content of manifest.json (see DESIGN.md, "Manifest")."""

    model: dict[str, Any]  # family, preset, config, checkpoint {path, sha256} or None, random_weights
    kind: str  # "step" | "clip"
    interface: dict[str, Any]  # StepSpec.to_dict() (step graphs) or ClipSpec.to_dict() (clip graphs)
    graphs: list[GraphEntry]
    plugins: list[dict[str, str]]  # [{"id": "vdeblur::CorrelationArgmax", "version": "1"}]
    opset: int
    versions: dict[str, str]
    clip: dict[str, Any] | None = None  # clip graphs: {window, overlap, latency} (= the interface's)
    format_version: int = FORMAT_VERSION

    # ----- convenience views -------------------------------------------------------------

    def graph(self, precision: str = "fp32", lowering: str = "portable") -> GraphEntry:
        for g in self.graphs:
            if g.precision == precision and g.lowering == lowering:
                return g
        have = ", ".join(f"{g.precision}/{g.lowering}" for g in self.graphs)
        raise ExportError(
            f"artifact: no {precision} graph with the {lowering} lowering. It has: {have}. "
            f"Export it with `vdeblur export ... --precision {precision}`."
        )

    def spec(self) -> StepSpec | ClipSpec:
        """The graph interface as a StepSpec (kind "step") or ClipSpec (kind "clip")."""
        return spec_from_dict(self.interface)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: Path) -> Path:
        return write_json(Path(directory) / MANIFEST, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        validate(d)
        d = dict(d)
        d["graphs"] = [GraphEntry(**g) for g in d["graphs"]]
        return cls(**d)


def read(directory: str | Path) -> Manifest:
    """Read and validate ``DIR/manifest.json``."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ExportError(
            f"{directory}: no {MANIFEST} here. Expected an artifact directory written by `vdeblur export`."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: cannot be read as JSON ({e}). Re-export the artifact.") from e
    return Manifest.from_dict(data)


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format_version": int, "model": dict, "kind": str, "interface": dict, "graphs": list,
    "plugins": list, "opset": int, "versions": dict,
}
_INTERFACE_REQUIRED = ("frame_input", "frame_output", "layout", "value_range", "dtype", "states",
                       "lookahead", "flush", "pad_multiple", "input_names", "output_names")


_CLIP_REQUIRED = ("frame_input", "frame_output", "layout", "value_range", "dtype", "window", "overlap",
                  "latency", "pad_multiple", "kind")


def validate(d: dict[str, Any]) -> None:
    """Check the manifest schema; raises ExportError listing every problem."""
    problems = []
    for key, t in _REQUIRED.items():
        if key not in d:
            problems.append(f"missing {key}")
        elif not isinstance(d[key], t):
            problems.append(f"{key} is a {type(d[key]).__name__}")
    if not problems:
        if d["format_version"] > FORMAT_VERSION:
            problems.append(f"format_version {d['format_version']} is newer than this vdeblur ({FORMAT_VERSION})")
        if d["kind"] not in ("step", "clip"):
            problems.append(f"kind {d['kind']!r} is not step or clip")
        if d["kind"] == "step":
            problems += [f"interface.{k} missing" for k in _INTERFACE_REQUIRED if k not in d["interface"]]
            for i, s in enumerate(d["interface"].get("states", [])):
                for k in ("input_name", "output_name", "shape", "dtype", "initial"):
                    if k not in s:
                        problems.append(f"interface.states[{i}].{k} missing")
            if not problems:
                try:
                    spec_from_dict(d["interface"]).check()
                except (ShapeError, TypeError, KeyError) as e:
                    problems.append(f"interface: {e}")
        if d["kind"] == "clip":
            problems += [f"interface.{k} missing" for k in _CLIP_REQUIRED if k not in d["interface"]]
            if d["interface"].get("kind") != "clip":
                problems.append("interface.kind is not clip")
            if not problems:
                try:
                    spec = spec_from_dict(d["interface"])
                    spec.check()
                except (ShapeError, TypeError, KeyError) as e:
                    problems.append(f"interface: {e}")
                else:
                    summary = d.get("clip")
                    want = {"window": spec.window, "overlap": spec.overlap, "latency": spec.latency}
                    if summary is not None and summary != want:
                        problems.append(f"clip {summary} disagrees with the interface {want}")
        for i, g in enumerate(d["graphs"]):
            for k in ("file", "precision", "lowering", "sha256"):
                if k not in g:
                    problems.append(f"graphs[{i}].{k} missing")
            if g.get("precision") not in PRECISIONS:
                problems.append(f"graphs[{i}].precision {g.get('precision')!r} is unknown")
            if g.get("lowering") not in LOWERINGS:
                problems.append(f"graphs[{i}].lowering {g.get('lowering')!r} is unknown")
        if not any(g.get("precision") == "fp32" for g in d["graphs"]):
            problems.append("no fp32 graph")
    if problems:
        raise ExportError(f"manifest: invalid ({'; '.join(problems)}). Re-export the artifact with this vdeblur.")
