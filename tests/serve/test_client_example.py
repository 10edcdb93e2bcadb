"""examples/stream_video.py (tritonclient) streams a real video file through `vdeblur serve`: its
output equals `vdeblur run` on the same file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")

from vdeblur.runtime.run import run_video  # noqa: E402
from vdeblur.runtime.video import FrameSink, iter_frames  # noqa: E402
from vdeblur.serve.server import Server  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stream_video.py"


def _example():
    spec = importlib.util.spec_from_file_location("stream_video", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _video(path: Path, n: int = 9, h: int = 48, w: int = 64) -> Path:
    yy, xx = np.mgrid[0:h, 0:w]
    with FrameSink(path, fps=25) as sink:
        for t in range(n):  # a moving gradient with texture: a real encode, not noise
            r = (xx * 4 + t * 9) % 256
            g = (yy * 5 + t * 3) % 256
            b = ((xx + yy) * 3 + t * 5) % 256
            sink.write(np.stack([r, g, b], -1).astype(np.uint8), t / 25)
        sink.commit()
    return path


@pytest.mark.parametrize("fixture", ["mtu_artifact", "mmprnn_artifact"])
def test_example_streams_a_video_like_vdeblur_run(fixture: str, request: pytest.FixtureRequest,
                                                  tmp_path: Path) -> None:
    artifact = request.getfixturevalue(fixture)
    video = _video(tmp_path / "in.mp4")
    run_video(artifact, video, f"{tmp_path / 'ran'}/")
    stream_video = _example().stream_video
    with Server([artifact], http_port=None, grpc_port=0, name="deblur") as server:
        summary = stream_video(video, f"{tmp_path / 'served'}/", url=f"127.0.0.1:{server.grpc_port}",
                               model="deblur", in_flight=2)
    assert summary["server"] == "vdeblur" and summary["frames"] == 9
    ran = list(iter_frames(tmp_path / "ran"))
    served = list(iter_frames(tmp_path / "served"))
    assert len(ran) == len(served) == 9
    for a, b in zip(ran, served, strict=True):
        np.testing.assert_array_equal(a, b)
    # an mp4 output too (the encoder's side of the example)
    with Server([artifact], http_port=None, grpc_port=0, name="deblur") as server:
        stream_video(video, tmp_path / "served.mp4", url=f"127.0.0.1:{server.grpc_port}", model="deblur")
    assert len(list(iter_frames(tmp_path / "served.mp4"))) == 9
