"""Ahead-of-time compilation of the Triton kernels for TensorRT's AOT plugins (no tensorrt needed).

TensorRT's quickly deployable plugins (``@trtp.aot_impl``) take PTX, a kernel name, launch
parameters and the int scalars to pass. :func:`compile_op` compiles an op's kernel as its spec's
launch plan says (pointer types from the input and output dtypes, int scalars, the attributes as
constexprs); :func:`compile_kernel` compiles any ``@triton.jit`` kernel for a given GPU architecture
on any machine (Triton ships the NVIDIA back end and ptxas), and reads the register and spill counts
from ``ptxas -v`` for the op cards.

Triton appends hidden pointer parameters (global and profile scratch) to every kernel. TensorRT
launches AOT kernels with the declared parameters only, so a kernel that needs scratch memory
cannot be used: :func:`compile_kernel` refuses it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vdeblur.errors import ExportError

if TYPE_CHECKING:
    from vdeblur.plugins.spec import OpSpec

SUPPORTED_ARCHS = (75, 80, 86, 89, 90, 100, 120)

_TRITON_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_COMPILED: dict[tuple[Any, ...], CompiledKernel] = {}


@dataclass(frozen=True)
class CompiledKernel:
    """A kernel compiled to PTX for one GPU architecture, with what ptxas reports about it."""

    name: str
    ptx: str
    arch: int
    num_warps: int
    shared_mem: int
    registers: int | None
    spill_stores: int | None
    spill_loads: int | None

    @property
    def block_x(self) -> int:
        return self.num_warps * 32

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ptx")
        d["ptx_bytes"] = len(self.ptx)
        return d


def triton_dtype(dtype: str) -> str:
    """'float32' | 'float16' | 'bfloat16' -> Triton's pointer element name."""
    try:
        return _TRITON_DTYPES[dtype]
    except KeyError:
        raise ExportError(f"aot: dtype {dtype!r} is not supported. Expected one of {sorted(_TRITON_DTYPES)}.") from None


def compile_op(spec: OpSpec, dtype: str, attrs: Mapping[str, Any], arch: int = 90) -> CompiledKernel:
    """PTX of op ``spec``'s kernel for ``sm_<arch>`` and inputs of ``dtype`` ('float32' | 'float16'),
    with the attributes baked in. Kernel parameters: one pointer per input, the launch plan's int
    scalars, one pointer per output (TensorRT's AOT order), then the constexprs.

    Compiled once per process for each (kernel, launch plan, dtypes, attributes, target): TensorRT
    asks again for every plugin node of a graph, and a graph has many nodes of one op."""
    values = spec.bind_attrs(attrs)
    key = (spec.launch, len(spec.inputs), tuple(o.dtype for o in spec.outputs), dtype, tuple(values.items()), arch)
    if key not in _COMPILED:
        _COMPILED[key] = _compile_op(spec, dtype, values, arch)
    return _COMPILED[key]


def _compile_op(spec: OpSpec, dtype: str, values: dict[str, Any], arch: int) -> CompiledKernel:
    t = triton_dtype(dtype)
    types = [f"*{t}"] * len(spec.inputs) + ["i32"] * len(spec.launch.scalars)
    types += [f"*{triton_dtype(spec.output_dtype(i, dtype))}" for i in range(len(spec.outputs))]
    fn = spec.launch.load()
    constexprs = spec.launch.constexprs(values)
    names = [p for p in inspect.signature(getattr(fn, "fn", fn)).parameters if p not in constexprs]
    if len(names) != len(types):
        raise ExportError(
            f"aot: kernel {spec.launch.kernel} takes {names} besides its constexprs. Expected {len(types)} "
            f"parameters: {len(spec.inputs)} input pointers, scalars {list(spec.launch.scalars)}, "
            f"{len(spec.outputs)} output pointers."
        )
    return compile_kernel(fn, dict(zip(names, types, strict=True)), constexprs, arch, num_warps=spec.launch.num_warps)


def compile_kernel(
    fn: Any,
    signature: dict[str, str],
    constexprs: dict[str, Any],
    arch: int = 90,
    num_warps: int = 4,
    num_stages: int = 2,
    resource_usage: bool = True,
) -> CompiledKernel:
    """Compile a ``@triton.jit`` kernel to PTX for ``sm_<arch>``.

    signature: parameter name -> Triton type ("*fp32", "i32"...), in kernel order, without the
    constexprs; constexprs: name -> value (the op attributes baked into the kernel).
    """
    if arch not in SUPPORTED_ARCHS:
        raise ExportError(f"aot: sm_{arch} is not a supported target. Expected one of {SUPPORTED_ARCHS}.")
    if os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter patches triton.language process-wide, so compile in a clean process.
        return _compile_in_subprocess(fn, signature, constexprs, arch, num_warps, num_stages, resource_usage)
    import triton
    from triton.backends.compiler import GPUTarget

    sig = dict(signature)
    sig.update({k: "constexpr" for k in constexprs})
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs))
    try:
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as e:  # triton raises many types; keep the cause
        raise ExportError(f"aot: compiling {getattr(fn, '__name__', fn)} for sm_{arch} failed: {e}.") from e
    md = k.metadata
    scratch = getattr(md, "global_scratch_size", 0) or 0
    profile = getattr(md, "profile_scratch_size", 0) or 0
    if scratch or profile:
        raise ExportError(
            f"aot: kernel {md.name} needs {scratch} B of global scratch and {profile} B of profile scratch. "
            "TensorRT AOT plugins cannot pass Triton's hidden scratch pointers; change the kernel."
        )
    regs = stores = loads = None
    if resource_usage:
        regs, stores, loads = ptxas_resource_usage(k.asm["ptx"], arch)
    return CompiledKernel(
        name=md.name, ptx=k.asm["ptx"], arch=arch, num_warps=md.num_warps, shared_mem=md.shared,
        registers=regs, spill_stores=stores, spill_loads=loads,
    )


def ptxas_resource_usage(ptx: str, arch: int) -> tuple[int | None, int | None, int | None]:
    """(registers, spill store bytes, spill load bytes) from ``ptxas -v``; Nones if ptxas is absent."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(arch).path
    except Exception:
        return None, None, None
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, "-v", f"--gpu-name=sm_{arch}{suffix}", src, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True, text=True, check=False,
        )
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise ExportError(f"aot: ptxas rejected the PTX for sm_{arch}: {text.strip()[-500:]}.")
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return (
        int(regs.group(1)) if regs else None,
        int(spill.group(1)) if spill else None,
        int(spill.group(2)) if spill else None,
    )


def _compile_in_subprocess(
    fn: Any, signature: dict[str, str], constexprs: dict[str, Any], arch: int, num_warps: int,
    num_stages: int, resource_usage: bool,
) -> CompiledKernel:
    inner = getattr(fn, "fn", fn)
    request = {
        "module": inner.__module__, "name": inner.__name__, "signature": signature, "constexprs": constexprs,
        "arch": arch, "num_warps": num_warps, "num_stages": num_stages, "resource_usage": resource_usage,
    }
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "vdeblur.plugins.aot"], input=json.dumps(request),
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise ExportError(f"aot: compiling {inner.__name__} for sm_{arch} failed: {proc.stderr.strip()[-800:]}.")
    return CompiledKernel(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _main() -> None:
    import importlib

    req = json.loads(sys.stdin.read())
    fn = getattr(importlib.import_module(req["module"]), req["name"])
    ck = compile_kernel(fn, req["signature"], req["constexprs"], req["arch"], req["num_warps"],
                        req["num_stages"], req["resource_usage"])
    print(json.dumps(asdict(ck)))


if __name__ == "__main__":
    _main()
