"""OpSpec: one declaration per custom op, from which every face of the op is generated.

An op folder holds ``spec.py`` (its :class:`OpSpec`, named ``SPEC``), ``reference.py`` (the math in
plain PyTorch; also the portable ONNX lowering), ``kernel.py`` (the ``@triton.jit`` kernel) and
``README.md`` (the op card). From the spec, generic code builds:

- :mod:`vdeblur.plugins.torchop`: input checks, the entry point, the ``torch.library`` custom op
  with its fake implementation and autograd, and the Triton launcher;
- :mod:`vdeblur.plugins._onnx`: the ``trt`` lowering (one custom node, typed attributes), the ONNX
  schema with type and shape inference;
- :mod:`vdeblur.plugins.qdp`: the TensorRT quickly deployable plugin (shape function, formats, AOT
  implementation); :mod:`vdeblur.plugins.aot` compiles the kernel with the spec's launch plan.

The shape rules (:attr:`Output.shape`, :attr:`Launch.grid`) receive the input shapes as sequences of
dimensions that may be ints, ``torch.SymInt``, TensorRT shape expressions or ONNX dimension
stand-ins: write them with ``+ - * //`` and the ``cdiv`` they are given, never with ``if`` on a
dimension. This module imports neither torch nor triton nor onnx.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdeblur.contract.precision import PLUGIN_DOMAIN
from vdeblur.errors import UsageError

INT, FLOAT, STRING = "INT", "FLOAT", "STRING"
ATTR_TYPES: dict[str, type] = {INT: int, FLOAT: float, STRING: str}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# What the ONNX node and the TensorRT plugin accept (the reference also takes bfloat16 and float64).
PLUGIN_DTYPES = ("float32", "float16")

Dim = Any  # int, torch.SymInt, a TensorRT shape expression or an ONNX dimension stand-in
Shapes = Sequence[Sequence[Dim]]
Attrs = Mapping[str, Any]


def int_cdiv(a: int, b: int) -> int:
    """Ceiling division of ints (the ``cdiv`` of launch plans outside TensorRT)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (as ``triton.next_power_of_2``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def make_function(name: str, params: Sequence[tuple[str, Any]], returns: Any,
                  body: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """A function named ``name`` whose signature is ``params`` (name, annotation object) ->
    ``returns``; a call binds its arguments by that signature and hands them to ``body`` as a dict.

    For the consumers that read a signature (``tensorrt.plugin`` decorators, the ONNX exporter's
    translation table): they see ordinary positional-or-keyword parameters with real annotations.
    """
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    sig = inspect.Signature([inspect.Parameter(p, kind, annotation=a) for p, a in params], return_annotation=returns)

    def fn(*args: Any, **kwargs: Any) -> Any:
        return body(dict(sig.bind(*args, **kwargs).arguments))

    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__annotations__ = {**dict(params), "return": returns}
    fn.__name__ = fn.__qualname__ = name
    return fn


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def _alternatives(values: Sequence[str]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


@dataclass(frozen=True)
class Rule:
    """An extra condition on an attribute value; ``failure`` completes ``<op>: <name>=<value> ...``."""

    holds: Callable[[Any], bool]
    failure: str  # e.g. "is even. Expected an odd window (the pool is centred, stride 1)."


@dataclass(frozen=True)
class Attr:
    """A typed op attribute: INT, FLOAT or STRING (ONNX INT / FLOAT / STRING; TensorRT reads them as
    int32, float32 and char)."""

    name: str
    type: str
    default: Any = REQUIRED
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    doc: str = ""

    @property
    def py_type(self) -> type:
        return ATTR_TYPES[self.type]

    def check(self, op: str, value: Any) -> Any:
        """``value`` as this attribute's Python type, or a UsageError naming the op and the rule."""
        kinds = {INT: "an integer", FLOAT: "a number", STRING: "a string"}
        wanted = kinds[self.type] + ("" if self.minimum is None else f" >= {self.minimum}")
        if self.type == FLOAT and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok_type = isinstance(value, self.py_type) and not isinstance(value, bool)
        if not ok_type or (self.minimum is not None and value < self.minimum):
            raise UsageError(f"{op}: {self.name}={value!r} is invalid. Expected {wanted}.")
        if self.choices and value not in self.choices:
            raise UsageError(f"{op}: {self.name}={value!r} is unknown. Expected {_alternatives(self.choices)}.")
        for rule in self.rules:
            if not rule.holds(value):
                raise UsageError(f"{op}: {self.name}={value!r} {rule.failure}")
        return value


@dataclass(frozen=True)
class Input:
    """A tensor input. ``layout`` names its dimensions, one distinct letter each (rank = its length,
    any rank; H and W are the image dimensions, dynamic in exported graphs; other letters are the
    op's own, e.g. "NGKLHW" for a per-pixel filter bank with K x L taps); ``like``: an earlier input
    whose dimensions ``like_dims`` (letters of the layout) this one must match."""

    name: str
    layout: str = "NCHW"
    channels: int | None = None
    like: str | None = None
    like_dims: str = "NCHW"
    min_hw: int = 1
    dtypes: tuple[str, ...] = FLOAT_DTYPES
    doc: str = ""


@dataclass(frozen=True)
class ShapeRule:
    """An op-specific condition on the input sizes that the layouts and ``like`` cannot say (a
    divisibility, an odd or square kernel). The entry point checks it after the generic checks.

    ``holds(sizes)``: ``sizes[input name][layout letter]`` -> a dimension (int, or torch.SymInt
    while exporting). ``failure`` completes ``<op>: ...`` and may name sizes as format fields
    ``{input.letter}``, e.g. "G={weight.G} does not divide C={x.C}. Expected ...". The TensorRT plugins
    cannot refuse a shape: the kernels must stay memory-safe when a rule does not hold."""

    holds: Callable[[Mapping[str, Mapping[str, Dim]]], bool]
    failure: str


def kernel_rules(name: str, layout: str) -> tuple[ShapeRule, ShapeRule]:
    """The rules of a centred k x k kernel held by input ``name`` (its layout letters ``K``, ``L``):
    square, and k odd (zero padding k // 2). ``layout`` names the input's shape in the messages."""
    square = ShapeRule(lambda s: s[name]["K"] == s[name]["L"],
                       f"{name} has a {{{name}.K}}x{{{name}.L}} kernel. Expected a square k x k kernel "
                       f"({name} {layout}).")
    odd = ShapeRule(lambda s: s[name]["K"] % 2 == 1,
                    f"{name} has an even kernel size k={{{name}.K}}. Expected an odd k (the kernel is centred: "
                    "zero padding k//2).")
    return square, odd


def pixel_channel_grid(block: int) -> Callable[[Shapes, Attrs, Any], tuple[Dim, ...]]:
    """A launch grid for a first input (N, C, H, W): one program per ``block`` pixels of one channel
    of one image, (cdiv(H * W, block), C, N)."""
    def grid(s: Shapes, a: Attrs, cdiv: Any) -> tuple[Dim, ...]:
        n, c, h, w = s[0]
        return cdiv(h * w, block), c, n

    return grid


def like_first(s: Shapes, a: Attrs) -> tuple[Dim, ...]:
    """An output shape rule: the shape (N, C, H, W) of the first input."""
    n, c, h, w = s[0]
    return n, c, h, w


@dataclass(frozen=True)
class Output:
    """A tensor output: ``shape(input_shapes, attrs)`` -> dimensions; ``dtype`` None means the
    dtype of the first input, else a fixed dtype name such as "float32"."""

    name: str
    shape: Callable[[Shapes, Attrs], tuple[Dim, ...]]
    dtype: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class Launch:
    """How the Triton kernel runs. Kernel parameters, in TensorRT's AOT order: one pointer per
    input, the int ``scalars`` ("<input>.<layout letter>", e.g. "f1.C"), one pointer per output;
    then the constexprs ``constexprs(attrs)`` (AOT engines do not serialise attributes, so they are
    baked into the code). ``grid(input_shapes, attrs, cdiv)`` -> (x, y, z)."""

    kernel: str  # "module:function" of the @triton.jit kernel
    grid: Callable[[Shapes, Attrs, Callable[[Dim, int], Dim]], tuple[Dim, Dim, Dim]]
    constexprs: Callable[[Attrs], dict[str, Any]]
    scalars: tuple[str, ...] = ()
    num_warps: int = 4

    def load(self) -> Any:
        """The ``@triton.jit`` function (imports triton)."""
        return _resolve(self.kernel)


@dataclass(frozen=True)
class Tolerance:
    """``|got - want| <= atol + rtol * |want|`` on at least ``fraction`` of the output values."""

    atol: float
    rtol: float = 0.0
    fraction: float = 1.0


@dataclass(frozen=True)
class Tolerances:
    """The op card's tolerances: kernel vs reference in float32 and with float16 inputs; the
    portable ONNX on ONNX Runtime vs reference."""

    kernel: Tolerance
    half: Tolerance
    onnx: Tolerance


@dataclass(frozen=True)
class Example:
    """Input shapes and attributes the op runs on in the test battery and the benchmarks."""

    shapes: tuple[tuple[int, ...], ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OpSpec:
    """Everything that defines one custom op. See the module docstring and README.md."""

    id: str  # "vdeblur::Correlation": torch op, TensorRT plugin id; the name is the ONNX op_type
    name: str  # the op folder and the Python entry point, e.g. "correlation"
    summary: str
    inputs: tuple[Input, ...]
    attrs: tuple[Attr, ...]
    outputs: tuple[Output, ...]
    reference: str  # "module:function"; called as reference(*inputs, *attrs in order)
    launch: Launch
    autograd: str | None  # "reference": backward recomputes the reference under autograd; None: none
    card: str  # the op card, relative to vdeblur/plugins
    examples: tuple[Example, ...]
    tolerances: Tolerances
    plugin_dtypes: tuple[str, ...] = PLUGIN_DTYPES
    shape_rules: tuple[ShapeRule, ...] = ()

    def __post_init__(self) -> None:
        where = f"plugins: spec {self.id!r}"
        namespace, _, plugin = self.id.partition("::")
        if namespace != PLUGIN_DOMAIN or not plugin:
            raise UsageError(f"{where}: the id is malformed. Expected '{PLUGIN_DOMAIN}::<Name>'.")
        names = [i.name for i in self.inputs] + [a.name for a in self.attrs]
        if len(set(names)) != len(names):
            raise UsageError(f"{where}: input and attribute names {names} repeat. Expected unique names.")
        if self.autograd not in (None, "reference"):
            raise UsageError(f"{where}: autograd={self.autograd!r} is unknown. Expected None or 'reference'.")
        for i, inp in enumerate(self.inputs):
            if len(set(inp.layout)) != len(inp.layout):
                raise UsageError(f"{where}: input {inp.name} has layout {inp.layout!r}. Expected one distinct "
                                 "letter per dimension.")
            earlier = {x.name: x for x in self.inputs[:i]}
            if inp.like is not None and (inp.like not in earlier or not set(inp.like_dims) <= set(inp.layout)
                                         or not set(inp.like_dims) <= set(earlier[inp.like].layout)):
                raise UsageError(f"{where}: input {inp.name} is like {inp.like!r} in {inp.like_dims!r}. "
                                 "Expected an earlier input and letters of both layouts.")
        self.scalar_positions()  # raises on a scalar that names no input dimension
        for a in self.attrs:
            if a.default is not REQUIRED:
                a.check(where, a.default)

    @property
    def plugin_name(self) -> str:
        """The ONNX op_type and TensorRT plugin name, e.g. "Correlation"."""
        return self.id.partition("::")[2]

    @property
    def card_path(self) -> Path:
        return Path(__file__).parent / self.card

    def reference_fn(self) -> Callable[..., Any]:
        """The reference function (imports torch)."""
        return _resolve(self.reference)

    def bind_attrs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every attribute, in spec order: the given values checked, the defaults filled in."""
        unknown = set(values) - {a.name for a in self.attrs}
        if unknown:
            raise UsageError(f"{self.name}: attributes {sorted(unknown)} are unknown. "
                             f"Expected {[a.name for a in self.attrs]}.")
        bound = {}
        for a in self.attrs:
            if a.name in values:
                bound[a.name] = a.check(self.name, values[a.name])
            elif a.default is REQUIRED:
                raise UsageError(f"{self.name}: attribute {a.name} is missing. Expected {a.type} {a.name}.")
            else:
                bound[a.name] = a.default
        return bound

    def broken_shape_rule(self, sizes: Mapping[str, Mapping[str, Dim]]) -> str | None:
        """The failure message of the first :attr:`shape_rules` entry that does not hold for
        ``sizes`` (input name -> layout letter -> size), formatted with the sizes; None if all hold."""
        from types import SimpleNamespace

        for rule in self.shape_rules:
            if not rule.holds(sizes):
                return rule.failure.format(**{name: SimpleNamespace(**dims) for name, dims in sizes.items()})
        return None

    def output_shapes(self, shapes: Shapes, attrs: Attrs) -> list[tuple[Dim, ...]]:
        return [tuple(o.shape(shapes, attrs)) for o in self.outputs]

    def output_dtype(self, index: int, input_dtype: str) -> str:
        """Dtype name of output ``index`` for inputs of dtype ``input_dtype``."""
        return self.outputs[index].dtype or input_dtype

    def scalar_positions(self) -> list[tuple[int, int]]:
        """(input index, dimension) of each kernel scalar."""
        index = {inp.name: (i, inp.layout) for i, inp in enumerate(self.inputs)}
        positions = []
        for s in self.launch.scalars:
            name, _, letter = s.partition(".")
            if name not in index or len(letter) != 1 or letter not in index[name][1]:
                raise UsageError(f"plugins: spec {self.id!r}: kernel scalar {s!r} names no input dimension. "
                                 "Expected '<input>.<layout letter>', e.g. 'f1.C'.")
            positions.append((index[name][0], index[name][1].index(letter)))
        return positions

    def plan(self, shapes: Shapes, attrs: Attrs, cdiv: Callable[[Dim, int], Dim] = int_cdiv
             ) -> tuple[tuple[Dim, Dim, Dim], tuple[Dim, ...]]:
        """(grid, int scalars) for inputs of these shapes; ints or TensorRT shape expressions."""
        scalars = tuple(shapes[i][d] for i, d in self.scalar_positions())
        return tuple(self.launch.grid(shapes, attrs, cdiv)), scalars  # type: ignore[return-value]


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
