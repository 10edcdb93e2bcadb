"""The one shape grammar and the torch-free interface specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vdeblur.contract.interface import (
    ClipSpec,
    FlushSpec,
    StateSpec,
    StepSpec,
    check_shape,
    parse_dim,
    resolve_dim,
    resolve_shape,
    spec_from_dict,
)
from vdeblur.errors import ShapeError


def spec(**kw: object) -> StepSpec:
    states = [StateSpec("count", "count_next", ["N"], "int32", 0.0),
              StateSpec("low", "low_next", ["N", 2, "Hp/4", "Wp/4"], "float32", 0.5)]
    base = dict(family="toy", config={}, lookahead=2, pad_multiple=8, states=states,
                flush=FlushSpec(steps=2, flag_input="is_flush"))
    return StepSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_grammar() -> None:
    assert [resolve_dim(d, 2, 32, 48) for d in (7, "N", "Hp", "Wp", "Hp/4", "Wp/16")] == [7, 2, 32, 48, 8, 3]
    assert parse_dim("Wp/16") == ("Wp", 16) and parse_dim(3) == 3
    assert resolve_shape(["N", 3, "Hp/2", "Wp"], 1, 8, 12) == (1, 3, 4, 12)
    for bad in ("H*2", "Hq", "Hp/0", "Hp/-2", " Hp", "hp", -1, 2.5, True):
        with pytest.raises(ShapeError, match=r"state shape: dimension .* (is not understood|is negative)\. Expected"):
            parse_dim(bad)  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"state 'x': Hp=18 is not divisible by 4\. Pad the frames first"):
        resolve_dim("Hp/4", 1, 18, 8, "state 'x'")
    check_shape(["N", "Hp/4"], pad_multiple=8)
    with pytest.raises(ShapeError, match=r"Hp/16 does not divide every padded size \(pad multiple 8\)"):
        check_shape(["N", "Hp/16"], pad_multiple=8)


def test_step_spec_round_trip_and_views() -> None:
    s = spec()
    s.check()
    assert s.input_names == ["frame", "is_flush", "count", "low"]
    assert s.output_names == ["output", "count_next", "low_next"]
    assert s.padded(17, 8) == (24, 8)
    arrays = s.initial_arrays(1, 16, 24)
    assert arrays[0].dtype == np.int32 and arrays[0].shape == (1,)
    assert arrays[1].shape == (1, 2, 4, 6) and np.all(arrays[1] == 0.5)
    again = spec_from_dict(json.loads(s.to_json()))
    assert again == s


@pytest.mark.parametrize(("change", "message"), [
    ({"pad_mode": "mirror"}, "pad_mode 'mirror'"),
    ({"pad_multiple": 0}, "pad_multiple=0"),
    ({"flush": FlushSpec(steps=2, frame="black")}, "flush frame policy 'black'"),
    ({"states": [StateSpec("a", "frame", ["N"])]}, "tensor names repeat"),
    ({"states": [StateSpec("a", "b", ["N"], "uint8")]}, "dtype 'uint8'"),
    ({"states": [StateSpec("a", "b", ["N", "Hp/16"])]}, "does not divide every padded size"),
])
def test_step_spec_check_rejects(change: dict, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        spec(**change).check()


def test_clip_spec() -> None:
    c = ClipSpec(family="dstnet", config={}, window=10, overlap=2, pad_multiple=4)
    c.check()
    assert isinstance(spec_from_dict(c.to_dict()), ClipSpec)
    with pytest.raises(ShapeError, match="window=4, overlap=4"):
        ClipSpec(family="x", config={}, window=4, overlap=4, pad_multiple=4).check()
