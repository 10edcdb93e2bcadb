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


# --------------------------------------------------------------------------------------------
# Clip windows
# --------------------------------------------------------------------------------------------


class _WindowClipper:
    """A clip 'graph' whose output for a frame depends on the window it ran in: frame value * 1000 +
    the window's first frame value (so tests can tell which window decided each output)."""

    def __init__(self) -> None:
        self.windows: list[list[int]] = []

    def clip(self, frames: np.ndarray) -> np.ndarray:
        values = frames[0, :, 0, 0, 0].astype(int).tolist()
        self.windows.append(values)
        return frames * 1000 + frames[:, :1]


def _video(n: int) -> np.ndarray:
    return np.broadcast_to(np.arange(n, dtype=np.float32)[None, :, None, None, None], (1, n, 3, 4, 4)).copy()


def _official_split(n: int, num_frame: int = 30) -> list[tuple[int, int]]:
    """(frame, first frame of the window that gives it) per the official DSTNet test: clips of
    num_frame without overlap, an extra clip of the last num_frame frames when n % num_frame, whose
    outputs for frames an earlier clip gave are dropped (results/merge_full.py); n < num_frame: one clip."""
    if n <= num_frame:
        return [(i, 0) for i in range(n)]
    starts = [i * num_frame for i in range(n // num_frame)]
    owner = {}
    for s in starts:
        for i in range(s, s + num_frame):
            owner[i] = s
    if n % num_frame:
        for i in range(n - num_frame, n):
            owner.setdefault(i, n - num_frame)
    return sorted(owner.items())


@pytest.mark.parametrize("n", [1, 7, 29, 30, 31, 59, 60, 61, 95])
def test_clip_windows_reproduce_the_official_30_frame_split(n: int) -> None:
    from vdeblur.contract.driver import ClipDriver

    clipper = _WindowClipper()
    driver = ClipDriver(clipper, 30, 0)
    video = _video(n)
    outs = []
    for t in range(n):
        outs += driver.push(video[:, t])
    outs += driver.finish()
    got = [(int(o[0, 0, 0, 0]) // 1000, int(o[0, 0, 0, 0]) % 1000) for o in outs]
    assert got == _official_split(n)
    assert all(len(w) == min(30, n) for w in clipper.windows)


@pytest.mark.parametrize(("n", "window", "overlap"), [(17, 5, 2), (13, 5, 3), (12, 4, 1), (20, 5, 0), (21, 6, 4),
                                                      (6, 6, 2), (5, 6, 2), (40, 8, 7)])
def test_clip_windows_keep_the_centre_one_output_per_frame(n: int, window: int, overlap: int) -> None:
    from vdeblur.contract.driver import ClipDriver

    clipper = _WindowClipper()
    driver = ClipDriver(clipper, window, overlap)
    video = _video(n)
    outs: list[np.ndarray] = []
    decided_at: list[int] = []
    for t in range(n):
        ready = driver.push(video[:, t])
        outs += ready
        decided_at += [t] * len(ready)
    tail = driver.finish()
    outs += tail
    decided_at += [n - 1] * len(tail)
    frames = [int(o[0, 0, 0, 0]) // 1000 for o in outs]
    assert frames == list(range(n))  # one output per input, in order
    owners = [int(o[0, 0, 0, 0]) % 1000 for o in outs]
    assert all(len(w) == min(window, n) for w in clipper.windows)
    stride = window - overlap
    for f, s in zip(frames, owners, strict=True):
        assert s <= f < s + window  # decided by a window that contains it
        if n > window and s % stride == 0 and s + window <= n and s > 0:
            assert f - s >= overlap - overlap // 2  # interior windows drop ceil(overlap / 2) at their start
        if n > window and s + window < n - 1 and s + stride + window <= n:
            assert s + window - f > overlap // 2  # ... and hold back overlap // 2 at their end
    assert all(d - f <= window - 1 or d == n - 1 for f, d in zip(frames, decided_at, strict=True))  # latency


def test_clip_driver_short_video_is_one_clip_and_starts_over() -> None:
    from vdeblur.contract.driver import ClipDriver

    clipper = _WindowClipper()
    driver = ClipDriver(clipper, 8, 2)
    for t in range(5):
        assert driver.push(_video(5)[:, t]) == []
    assert len(driver.finish()) == 5
    assert clipper.windows == [[0, 1, 2, 3, 4]]
    assert driver.finish() == []  # nothing pending: a new sequence
    driver.push(_video(1)[:, 0])
    assert len(driver.finish()) == 1


def test_clip_driver_rejects_bad_windows_and_wrong_output_shapes() -> None:
    from vdeblur.contract.driver import ClipDriver
    from vdeblur.contract.interface import ClipSpec

    for window, overlap in ((0, 0), (4, 4), (4, -1)):
        with pytest.raises(ShapeError, match="window"):
            ClipDriver(_WindowClipper(), window, overlap)

    class Bad:
        def clip(self, frames: np.ndarray) -> np.ndarray:
            return frames[:, :-1]

    driver = ClipDriver(Bad(), 2, 0)
    driver.push(_video(2)[:, 0])
    with pytest.raises(ShapeError, match="Expected the same shape"):
        driver.push(_video(2)[:, 1])
    spec = ClipSpec(family="dstnet", config={}, window=30, overlap=8, pad_multiple=16)
    assert spec.latency == 29 and spec.windowed(30, 0).latency == 29 and spec.windowed(4).overlap == 3
    with pytest.raises(ShapeError, match="latency"):
        ClipSpec(family="dstnet", config={}, window=30, overlap=8, pad_multiple=16, latency=3).check()


def test_drive_clip_pads_and_crops() -> None:
    from vdeblur.contract.driver import FunctionClipper, drive_clip
    from vdeblur.contract.interface import ClipSpec

    spec = ClipSpec(family="x", config={}, window=4, overlap=2, pad_multiple=8)
    seen: list[tuple[int, ...]] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["frames"]
        seen.append(x.shape)
        return [x[:, :, ::-1].copy()]  # BGR: per frame, independent of the window

    frames = np.random.default_rng(0).random((1, 9, 3, 10, 13), dtype=np.float32)
    out = drive_clip(FunctionClipper(spec, run), spec, frames)
    assert out.shape == frames.shape
    np.testing.assert_array_equal(out, frames[:, :, ::-1])
    assert {s[3:] for s in seen} == {(16, 16)} and all(s[1] == 4 for s in seen)


def test_clip_windows_owners_spelled_out() -> None:
    from vdeblur.contract.driver import ClipDriver

    def owners(n: int, window: int, overlap: int) -> list[int]:
        driver = ClipDriver(_WindowClipper(), window, overlap)
        outs = [o for t in range(n) for o in driver.push(_video(n)[:, t])] + driver.finish()
        return [int(o[0, 0, 0, 0]) % 1000 for o in outs]

    # windows 0-4, 3-7, 6-10, 9-13, 12-16; each drops 1 at its start and holds 1 back at its end
    assert owners(17, 5, 2) == [0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9, 9, 12, 12, 12, 12]
    # windows 0-3, 3-6, 6-9, then the video's last window 8-11 gives the frames not yet decided
    assert owners(12, 4, 1) == [0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 8, 8]
