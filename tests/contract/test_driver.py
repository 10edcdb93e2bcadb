"""The one streaming loop: warm-up, flush, padding, state feedback."""

from __future__ import annotations

import numpy as np
import pytest

from vdeblur.contract.driver import FeedbackStepper, StepDriver, drive, pad_frames, pad_in_place
from vdeblur.contract.interface import FlushSpec, StateSpec, StepSpec
from vdeblur.errors import ShapeError


def delay_spec(lookahead: int, flag: bool) -> StepSpec:
    """A step graph that outputs the frame it got ``lookahead`` steps ago (state: the frame history)."""
    return StepSpec(family="delay", config={}, lookahead=lookahead, pad_multiple=4,
                    states=[StateSpec("hist", "hist_next", ["N", lookahead + 1, 3, "Hp", "Wp"]),
                            StateSpec("count", "count_next", ["N"], "int32")],
                    flush=FlushSpec(steps=lookahead, flag_input="is_flush" if flag else None))


def delay_run(spec: StepSpec, seen: list) -> callable:
    def run(feeds: dict) -> list:
        seen.append(feeds)
        hist = np.concatenate([feeds["hist"][:, 1:], feeds["frame"][:, None]], axis=1)
        return [hist[:, 0].copy(), hist, feeds["count"] + 1]
    return run


@pytest.mark.parametrize("lookahead", [0, 1, 2])
@pytest.mark.parametrize("frames", [1, 2, 5])
def test_drive_gives_one_output_per_frame_in_order(lookahead: int, frames: int) -> None:
    spec = delay_spec(lookahead, flag=True)
    clip = np.random.default_rng(0).random((2, frames, 3, 6, 7), dtype=np.float32)
    seen: list = []
    out = drive(FeedbackStepper(spec, delay_run(spec, seen)), spec, clip)
    assert out.shape == clip.shape
    np.testing.assert_array_equal(out, clip)  # the delay graph returns each frame, lookahead steps later
    assert len(seen) == frames + lookahead
    assert [int(f["is_flush"][0]) for f in seen] == [0] * frames + [1] * lookahead
    assert seen[0]["frame"].shape == (2, 3, 8, 8)  # padded to the multiple of 4
    assert [int(f["count"][0]) for f in seen] == list(range(frames + lookahead))  # states fed back


def test_flush_repeats_the_last_frame_and_driver_restarts() -> None:
    spec = delay_spec(2, flag=False)
    seen: list = []
    stepper = FeedbackStepper(spec, delay_run(spec, seen))
    d = StepDriver.for_spec(stepper, spec)
    frames = [np.full((1, 3, 4, 4), v, np.float32) for v in (0.1, 0.2, 0.3)]
    d.begin(1, 4, 4)
    assert [d.push(f) for f in frames][:2] == [None, None]
    tail = d.finish()
    assert len(tail) == 2 and float(tail[-1].mean()) == pytest.approx(0.3)
    assert "is_flush" not in seen[-1] and float(seen[-1]["frame"].mean()) == pytest.approx(0.3)
    assert d.finish() == []  # nothing pending any more
    d.begin(1, 4, 4)  # a new sequence starts from the initial states
    d.push(frames[0])
    assert int(seen[-1]["count"][0]) == 0


def test_pad_frames_modes() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert pad_frames(x, 1) is x
    np.testing.assert_array_equal(pad_frames(x, 4, "replicate")[0, :, 3], [2, 5, 5, 5])
    np.testing.assert_array_equal(pad_frames(x, 4, "zeros")[0, 3], [0, 0, 0, 0])
    with pytest.raises(ShapeError, match="mode 'wrap' is unknown"):
        pad_frames(x, 4, "wrap")
    for mode in ("replicate", "zeros", "reflect"):  # in place (a stream's buffer) == pad_frames
        buf = np.full((1, 4, 4), -1.0, np.float32)
        buf[:, :2, :3] = x
        pad_in_place(buf, 2, 3, mode)
        np.testing.assert_array_equal(buf, pad_frames(x, 4, mode))
    with pytest.raises(ShapeError, match=r"Expected \(N, T, 3, H, W\)"):
        drive(FeedbackStepper(delay_spec(0, False), lambda f: []), delay_spec(0, False), x)
