"""What `vdeblur serve` accepts and answers, independent of the transport (gRPC or HTTP/REST).

The KServe v2 / Triton inference protocol, as vdeblur models speak it:

- input ``FRAME``: UINT8, shape [1, H, W, 3], RGB, 2 <= H, W <= :data:`MAX_SIDE`;
- output ``FRAME_OUT``: UINT8, [n, H, W, 3]: the outputs that became ready with this request, in
  order (a gRPC stream sends each in its own response, n = 1);
- request parameters ``sequence_id`` (uint64 or int64 > 0, or a non-empty string; 0 or absent: a
  one-frame sequence of its own), ``sequence_start``, ``sequence_end`` (bool);
- response parameters ``sequence_id``, ``frame_index`` (int64, 0-based within the sequence, of the
  first frame in FRAME_OUT) and ``frame_count`` (n).

:func:`parse_request` turns the transport-neutral pieces of a request into an :class:`InferRequest`
or raises :class:`vdeblur.errors.ServiceError` (INVALID_ARGUMENT) saying what is wrong; every byte a
client sends is checked before it reaches a model. This module imports neither grpc nor tritonclient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vdeblur.errors import ServiceError

INPUT = "FRAME"
OUTPUT = "FRAME_OUT"
DATATYPE = "UINT8"
MAX_SIDE = 8192  # 8K: larger frames are refused before any memory is allocated for them
MAX_SEQUENCE_ID = 2**64 - 1
MAX_STRING_ID = 256
# Server extensions listed in the server metadata (Triton's names).
EXTENSIONS = ["binary_tensor_data", "sequence", "sequence(string_id)", "parameters"]

SequenceId = int | str


@dataclass
class InferRequest:
    """One frame for one sequence, validated. ``sequence_id`` None: a one-frame sequence of its own."""

    model: str
    frame: np.ndarray  # (H, W, 3) uint8
    sequence_id: SequenceId | None
    start: bool
    end: bool
    request_id: str = ""
    outputs: list[str] | None = None  # names requested; None: all
    binary_output: bool = True  # HTTP: answer FRAME_OUT as binary data (else JSON "data")
    empty_final: bool = False  # gRPC stream: close each request with an empty final response (Triton's flag)


def _bool_param(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ServiceError(f"request: parameter {name!r} is {value!r}. Expected a bool.")


def sequence_id_of(value: Any) -> SequenceId | None:
    """The ``sequence_id`` parameter: a positive int below 2**64 or a non-empty string (up to
    256 characters); 0, "" and None mean no sequence."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ServiceError(f"request: sequence_id is {value!r}. Expected an integer or a string.")
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if v < 0 or v > MAX_SEQUENCE_ID:
            raise ServiceError(f"request: sequence_id {v} is out of range. Expected 0 <= id < 2**64.")
        return v or None
    if isinstance(value, str):
        if len(value) > MAX_STRING_ID:
            raise ServiceError(f"request: sequence_id is a string of {len(value)} characters. "
                               f"Expected at most {MAX_STRING_ID}.")
        return value or None
    raise ServiceError(f"request: sequence_id is a {type(value).__name__}. Expected an integer or a string.")


def frame_of(name: str, datatype: str, shape: list[int], data: bytes | memoryview | None,
             values: list[Any] | None = None) -> np.ndarray:
    """The FRAME input as an (H, W, 3) uint8 array, from raw bytes (binary data) or a flat list of
    values (JSON ``data`` / gRPC ``contents``). Checks name, datatype, shape, size and value range."""
    if name != INPUT:
        raise ServiceError(f"request: input {name!r} is unknown. Expected one input named {INPUT!r}.")
    if datatype != DATATYPE:
        raise ServiceError(f"request: input {INPUT} has datatype {datatype}. Expected {DATATYPE} (RGB bytes).")
    shape = [int(s) for s in shape]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise ServiceError(f"request: input {INPUT} has shape {shape}. Expected [1, H, W, 3] (one RGB frame).")
    h, w = shape[1], shape[2]
    if not (2 <= h <= MAX_SIDE and 2 <= w <= MAX_SIDE):
        raise ServiceError(f"request: input {INPUT} is {w}x{h}. Expected 2 to {MAX_SIDE} pixels on each side.")
    size = h * w * 3
    if data is not None:
        if len(data) != size:
            raise ServiceError(f"request: input {INPUT} carries {len(data)} bytes. Expected {size} for shape {shape}.")
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
    if values is None:
        raise ServiceError(f"request: input {INPUT} carries no data. Expected binary data or a data list.")
    if len(values) != size:
        raise ServiceError(f"request: input {INPUT} carries {len(values)} values. Expected {size} for shape {shape}.")
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as e:
        raise ServiceError(f"request: input {INPUT} data is not a flat list of numbers ({e}).") from e
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise ServiceError(f"request: input {INPUT} data holds values that are not integers in 0..255. "
                           "Expected UINT8 values.")
    return arr.astype(np.uint8).reshape(h, w, 3)


def parse_request(model: str, inputs: list[tuple[str, str, list[int], bytes | memoryview | None, list[Any] | None]],
                  parameters: dict[str, Any], request_id: str = "", outputs: list[str] | None = None,
                  binary_output: bool = True) -> InferRequest:
    """A request from its pieces: ``inputs`` as (name, datatype, shape, raw bytes or None, values or
    None); ``parameters`` as plain Python values."""
    if len(inputs) != 1:
        names = [i[0] for i in inputs]
        raise ServiceError(f"request: {len(inputs)} inputs {names}. Expected exactly one, {INPUT!r}.")
    for out in outputs or []:
        if out != OUTPUT:
            raise ServiceError(f"request: output {out!r} is unknown. Expected {OUTPUT!r}.")
    frame = frame_of(*inputs[0])
    sid = sequence_id_of(parameters.get("sequence_id"))
    start = _bool_param("sequence_start", parameters.get("sequence_start", False))
    end = _bool_param("sequence_end", parameters.get("sequence_end", False))
    empty_final = _bool_param("triton_enable_empty_final_response",
                              parameters.get("triton_enable_empty_final_response", False))
    if sid is None and (start or end):
        # Triton's wording: the flags need an id to belong to.
        raise ServiceError("request: sequence_start or sequence_end without a sequence_id. Expected a non-zero "
                           "sequence_id with the flags, or neither (a one-frame request).")
    return InferRequest(model=model, frame=frame, sequence_id=sid, start=start, end=end, request_id=request_id,
                        outputs=outputs, binary_output=binary_output, empty_final=empty_final)


def tensor_metadata() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of every served model, as model metadata lists them."""
    return ([{"name": INPUT, "datatype": DATATYPE, "shape": [1, -1, -1, 3]}],
            [{"name": OUTPUT, "datatype": DATATYPE, "shape": [-1, -1, -1, 3]}])
