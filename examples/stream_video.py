"""Stream a video file through `vdeblur serve` or NVIDIA Triton Inference Server with tritonclient.

    python examples/stream_video.py blurry.mp4 sharp.mp4 --url 127.0.0.1:8001 --model mtu2
    python examples/stream_video.py blurry.mp4 sharp.mp4 --url 127.0.0.1:8000 --model mtu2 --protocol http

The same code talks to both servers, over gRPC streaming or HTTP, as one sequence (``sequence_id`` =
a random id unless given), and tells them apart by the model's configuration:

- `vdeblur serve` (platform "vdeblur") keeps the model's lookahead and flush itself. gRPC: each
  response holds one output frame and its ``frame_index``. HTTP: each answer holds the outputs that
  became ready with that request (``FRAME_OUT`` [n, H, W, 3], ``frame_index`` of the first; none
  during the warm-up); ``sequence_end`` on the last frame brings the pending ones.
- Triton with a repository from `vdeblur triton-repo`: Triton answers every request with the output
  of the frame ``vdeblur_lookahead`` requests earlier (the first answers are warm-up and are
  dropped here), and at the end this client sends ``vdeblur_flush_steps`` more requests repeating
  the last frame (with ``FLUSH`` = 1 when the model has that input) to get the last outputs.

Frames are read and written with vdeblur's video I/O (timestamps, colour tags and the PNG-folder
convention of `vdeblur run`: an output ending in '/' is a folder of PNGs); only tritonclient and
vdeblur's torch-free runtime are imported. gRPC keeps at most ``--in-flight`` frames waiting for
their output.
"""

from __future__ import annotations

import argparse
import queue
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from vdeblur.runtime.video import FrameSink, VideoSource


class _Plan:
    """What the model's configuration says: which server, lookahead, flush."""

    def __init__(self, platform: str, params: dict[str, str]) -> None:
        self.triton = platform != "vdeblur"
        self.lookahead = int(params.get("vdeblur_lookahead", "0"))
        self.flush_steps = int(params.get("vdeblur_flush_steps", str(self.lookahead)))
        self.flush_input = params.get("vdeblur_flush_input", "")

    def requests(self, frames: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, bool, bool, int]]:
        """(frame, start, end, flush) of every request: the frames (a frame is sent once the next one is
        known, so the last one can end the sequence), then Triton's flush requests."""
        previous: np.ndarray | None = None
        count = 0
        for frame in frames:
            if previous is not None:
                yield previous, count == 1, False, 0
            previous = frame
            count += 1
        if previous is None:
            return
        steps = self.flush_steps if self.triton else 0
        yield previous, count == 1, steps == 0, 0
        for i in range(steps):
            yield previous, False, i == steps - 1, 1


def _grpc(url: str, model: str, headers: dict[str, str] | None, sid: int, frames: Iterator[np.ndarray],
          in_flight: int) -> Iterator[tuple[int, np.ndarray]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    config = client.get_model_config(model, headers=headers).config
    plan = _Plan(config.platform, {k: v.string_value for k, v in config.parameters.items()})
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
    sent = received = n = 0  # requests, answers to them (Triton: warm-up answers included), frames

    def take() -> tuple[int, np.ndarray] | None:
        nonlocal received
        result, error = answers.get()
        if error is not None:
            raise error
        received += 1
        if plan.triton:  # one answer per request: that of frame k - lookahead (warm-up before frame 0)
            index = received - 1 - plan.lookahead
            return (index, result.as_numpy("FRAME_OUT")[0]) if 0 <= index < n else None
        return result.get_response().parameters["frame_index"].int64_param, result.as_numpy("FRAME_OUT")[0]

    try:
        total = None
        for frame, start, end, flush in plan.requests(frames):
            x = np.ascontiguousarray(frame[None])
            inputs = [grpcclient.InferInput("FRAME", list(x.shape), "UINT8")]
            inputs[0].set_data_from_numpy(x)
            if plan.triton and plan.flush_input:
                inputs.append(grpcclient.InferInput(plan.flush_input, [1, 1], "INT32"))
                inputs[1].set_data_from_numpy(np.full((1, 1), flush, np.int32))
            client.async_stream_infer(model, inputs, sequence_id=sid, sequence_start=start, sequence_end=end)
            sent += 1
            n += not flush
            if end:  # vdeblur: one answer per frame; Triton: one per request, the frame's L requests later
                total = n if not plan.triton else min(sent, n + plan.lookahead)
            while sent - received > in_flight + plan.lookahead and (total is None or received < total):
                out = take()
                if out is not None:
                    yield out
        while total is not None and received < total:
            out = take()
            if out is not None:
                yield out
    finally:
        client.stop_stream()
        client.close()


def _http(url: str, model: str, headers: dict[str, str] | None, sid: int,
          frames: Iterator[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    config = client.get_model_config(model, headers=dict(headers) if headers else None)
    plan = _Plan(config.get("platform", ""), {k: v.get("string_value", "")
                                              for k, v in config.get("parameters", {}).items()})
    answered = n = 0  # answers (Triton: warm-up answers included), frames sent
    try:
        for frame, start, end, flush in plan.requests(frames):
            inputs = [httpclient.InferInput("FRAME", [1, *frame.shape], "UINT8")]
            inputs[0].set_data_from_numpy(np.ascontiguousarray(frame[None]))
            if plan.triton and plan.flush_input:
                inputs.append(httpclient.InferInput(plan.flush_input, [1, 1], "INT32"))
                inputs[1].set_data_from_numpy(np.full((1, 1), flush, np.int32))
            # a fresh headers dict per call: tritonclient.http writes into the one it is given
            result = client.infer(model, inputs, sequence_id=sid, sequence_start=start, sequence_end=end,
                                  headers=dict(headers) if headers else None)
            out = result.as_numpy("FRAME_OUT")
            n += not flush
            if plan.triton:  # one answer per request: that of frame k - lookahead (warm-up before frame 0)
                answered += 1
                index = answered - 1 - plan.lookahead
                if 0 <= index < n:
                    yield index, out[0]
            elif out is not None:  # vdeblur: 0, 1, or at sequence_end 1 + lookahead frames
                first = int(result.get_response()["parameters"]["frame_index"])
                for i, f in enumerate(out):
                    yield first + i, f
    finally:
        client.close()


def stream_video(source: str | Path, output: str | Path, url: str = "127.0.0.1:8001", model: str = "model",
                 protocol: str = "grpc", token: str | None = None, sequence_id: int | None = None,
                 in_flight: int = 8) -> dict[str, Any]:
    """Deblur ``source`` into ``output`` through the server at ``url``; returns a summary."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    sid = sequence_id or random.randrange(1, 2**62)
    src = VideoSource(source)
    times: list[float] = []

    def frames() -> Iterator[np.ndarray]:
        for frame, t in src.frames():
            times.append(t)
            yield frame if frame.dtype == np.uint8 else (frame >> 8).astype(np.uint8)  # the protocol is 8-bit

    outputs = (_grpc(url, model, headers, sid, frames(), in_flight) if protocol == "grpc"
               else _http(url, model, headers, sid, frames()))
    written = 0
    with FrameSink(output, fps=src.fps, color=src.color) as sink:
        for index, frame in outputs:
            if index != written:
                raise RuntimeError(f"frame {index} arrived while frame {written} was expected")
            sink.write(frame, times[index])
            written += 1
        if written != len(times):
            raise RuntimeError(f"{written} output frames for {len(times)} input frames")
        sink.commit(end=src.end)
    return {"frames": written, "model": model, "protocol": protocol, "sequence_id": sid, "output": str(output)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="video file or image folder")
    p.add_argument("output", help="video file (.mp4, .mkv, .webm...) or a folder for PNGs, with a trailing '/'")
    p.add_argument("--url", default="127.0.0.1:8001", help="the server's address (default 127.0.0.1:8001, gRPC)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="grpc (streaming) or http")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--token-file", help="file holding the server's bearer token")
    p.add_argument("--sequence-id", type=int, help="sequence id (default: random)")
    p.add_argument("--in-flight", type=int, default=8, help="gRPC: frames sent ahead of their output (default 8)")
    args = p.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    try:
        summary = stream_video(args.input, args.output, args.url, args.model, args.protocol, token,
                               args.sequence_id, args.in_flight)
    except InferenceServerException as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
