"""aot.py without TensorRT: what compile_op refuses before compiling. Every op's kernel compiling
to PTX per GPU target is in the battery (test_ops.py)."""

from __future__ import annotations

import dataclasses

import pytest

from vdeblur.errors import ExportError
from vdeblur.plugins import specs
from vdeblur.plugins.aot import compile_op


def test_unsupported_target_and_dtype_fail_clearly() -> None:
    spec = specs()["correlation"]
    with pytest.raises(ExportError, match="sm_61 is not a supported target"):
        compile_op(spec, "float32", {"max_displacement": 4}, 61)
    with pytest.raises(ExportError, match="dtype 'int8' is not supported"):
        compile_op(spec, "int8", {"max_displacement": 4}, 90)


def test_a_launch_plan_that_disagrees_with_the_kernel_is_refused() -> None:
    spec = specs()["flow_warp"]
    wrong = dataclasses.replace(spec, launch=dataclasses.replace(spec.launch, scalars=("x.C", "x.H")))
    with pytest.raises(ExportError, match=r"flow_warp_kernel takes .* Expected 5 parameters: 2 input pointers"):
        compile_op(wrong, "float32", {}, 90)
