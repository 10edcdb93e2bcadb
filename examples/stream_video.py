"""Stream a video file through `vdeblur serve` or NVIDIA Triton Inference Server with tritonclient.

    python examples/stream_video.py blurry.mp4 sharp.mp4 --url 127.0.0.1:8001 --model mtu2

The same code talks to both servers over gRPC streaming (one sequence, ``sequence_id`` = a random
id unless given), and tells them apart by the model's configuration:

- `vdeblur serve` (platform "vdeblur"): the server keeps the model's lookahead and flush: each
  response holds one output frame and its ``frame_index``; ``sequence_end`` on the last frame brings
  the pending outputs.
- Triton with a repository from `vdeblur triton-repo`: Triton answers every request with the output
  of the frame ``lookahead`` requests earlier (the first ``lookahead`` answers are warm-up and are
  dropped here), and at the end this client sends ``vdeblur_flush_steps`` more requests repeating
  the last frame (with ``FLUSH`` = 1 when the model has that input) to get the last outputs.

Frames are read and written with vdeblur's video I/O (timestamps, colour tags and the PNG-folder
convention of `vdeblur run`: an output ending in '/' is a folder of PNGs); only tritonclient and
vdeblur's torch-free runtime are imported. At most ``--in-flight`` frames wait for their output.
"""

from __future__ import annotations

import argparse
import queue
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from vdeblur.runtime.video import FrameSink, VideoSource


def _frame_input(frame: np.ndarray) -> grpcclient.InferInput:
    x = np.ascontiguousarray(frame[None])
    inp = grpcclient.InferInput("FRAME", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    return inp


def _flag_input(name: str, value: int) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, [1, 1], "INT32")
    inp.set_data_from_numpy(np.full((1, 1), value, np.int32))
    return inp


def stream_video(source: str | Path, output: str | Path, url: str = "127.0.0.1:8001", model: str = "model",
                 token: str | None = None, sequence_id: int | None = None, in_flight: int = 8) -> dict[str, Any]:
    """Deblur ``source`` into ``output`` through the server at ``url``; returns a summary."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    client = grpcclient.InferenceServerClient(url)
    config = client.get_model_config(model, headers=headers).config
    params = {k: v.string_value for k, v in config.parameters.items()}
    triton = config.platform != "vdeblur"
    lookahead = int(params.get("vdeblur_lookahead", "0"))
    flush_steps = int(params.get("vdeblur_flush_steps", str(lookahead)))
    flush_input = params.get("vdeblur_flush_input", "")
    sid = sequence_id or random.randrange(1, 2**62)

    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
    src = VideoSource(source)
    times: list[float] = []
    written = 0
    received = 0  # answers so far (Triton: including the warm-up ones)

    def take(sink: FrameSink, block: bool) -> None:
        nonlocal written, received
        result, error = answers.get(block=block)
        if error is not None:
            raise error
        received += 1
        if triton and received <= lookahead:  # warm-up output: no frame of ours yet
            return
        index = result.get_response().parameters["frame_index"].int64_param if not triton else written
        if index != written:
            raise RuntimeError(f"frame {index} arrived while frame {written} was expected")
        sink.write(result.as_numpy("FRAME_OUT")[0], times[index])
        written += 1

    def send(frame: np.ndarray, start: bool, end: bool, flush: int = 0) -> None:
        inputs = [_frame_input(frame)]
        if triton and flush_input:
            inputs.append(_flag_input(flush_input, flush))
        client.async_stream_infer(model, inputs, sequence_id=sid, sequence_start=start, sequence_end=end)

    try:
        with FrameSink(output, fps=src.fps, color=src.color) as sink:
            previous: np.ndarray | None = None
            for frame, t in src.frames():
                if frame.dtype != np.uint8:
                    frame = (frame >> 8).astype(np.uint8)  # the protocol carries 8-bit RGB
                if previous is not None:  # send a frame once the next one is known: the last one ends the sequence
                    send(previous, start=len(times) == 1, end=False)
                    while len(times) - 1 - written > in_flight + lookahead:
                        take(sink, block=True)
                times.append(t)
                previous = frame
            if previous is None:
                raise SystemExit(f"{source}: no frames")
            if triton:
                send(previous, start=len(times) == 1, end=flush_steps == 0)
                for i in range(flush_steps):
                    send(previous, start=False, end=i == flush_steps - 1, flush=1)
                expected = len(times) + lookahead
            else:
                send(previous, start=len(times) == 1, end=True)
                expected = len(times)
            while received < expected:
                take(sink, block=True)
            sink.commit(end=src.end)
    finally:
        client.stop_stream()
        client.close()
    return {"frames": written, "server": "triton" if triton else "vdeblur", "model": model, "sequence_id": sid,
            "output": str(output)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="video file or image folder")
    p.add_argument("output", help="video file (.mp4, .mkv, .webm...) or a folder for PNGs, with a trailing '/'")
    p.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address (default 127.0.0.1:8001)")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--token-file", help="file holding the server's bearer token")
    p.add_argument("--sequence-id", type=int, help="sequence id (default: random)")
    p.add_argument("--in-flight", type=int, default=8, help="frames sent ahead of their output (default 8)")
    args = p.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    try:
        summary = stream_video(args.input, args.output, args.url, args.model, token, args.sequence_id,
                               args.in_flight)
    except InferenceServerException as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
