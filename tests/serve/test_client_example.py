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


@pytest.mark.parametrize("fixture, protocol", [("mtu_artifact", "grpc"), ("mmprnn_artifact", "grpc"),
                                               ("mmprnn_artifact", "http")])
def test_example_streams_a_video_like_vdeblur_run(fixture: str, protocol: str, request: pytest.FixtureRequest,
                                                  tmp_path: Path) -> None:
    artifact = request.getfixturevalue(fixture)
    video = _video(tmp_path / "in.mp4")
    run_video(artifact, video, f"{tmp_path / 'ran'}/")
    stream_video = _example().stream_video
    with Server([artifact], http_port=0, grpc_port=0, name="deblur") as server:
        port = server.grpc_port if protocol == "grpc" else server.http_port
        summary = stream_video(video, f"{tmp_path / 'served'}/", url=f"127.0.0.1:{port}", model="deblur",
                               protocol=protocol, in_flight=2)
    assert summary["frames"] == 9
    ran = list(iter_frames(tmp_path / "ran"))
    served = list(iter_frames(tmp_path / "served"))
    assert len(ran) == len(served) == 9
    for a, b in zip(ran, served, strict=True):
        np.testing.assert_array_equal(a, b)
    # an mp4 output too (the encoder's side of the example)
    with Server([artifact], http_port=None, grpc_port=0, name="deblur") as server:
        stream_video(video, tmp_path / "served.mp4", url=f"127.0.0.1:{server.grpc_port}", model="deblur")
    assert len(list(iter_frames(tmp_path / "served.mp4"))) == 9


class _TritonStub:
    """Triton's gRPC front over the model of a `vdeblur triton-repo` repository, for the example's Triton
    branch: ModelConfig from config.pbtxt; ModelStreamInfer with one response per request (the model is
    not decoupled), inputs checked against the config as Triton checks them (names and count, datatype,
    shape [1] + dims with -1 as a wildcard), START made from sequence_start, and the model run by the
    sequence-batcher emulation of tests/serve/test_triton_repo.py (garbage state at START, implicit
    state after)."""

    def __init__(self, model_dir: Path) -> None:
        from concurrent import futures

        import grpc
        from tritonclient.grpc import model_config_pb2 as mc
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pbg

        from tests.serve.test_triton_repo import Triton

        triton = Triton(model_dir)
        cfg = triton.cfg
        types = {i.name: i for i in cfg.input}

        def check(request) -> np.ndarray:
            names = [t.name for t in request.inputs]
            if sorted(names) != sorted(types):
                raise ValueError(f"[request id: <id_unknown>] expected {len(types)} inputs but got {len(names)} "
                                 f"inputs for model '{cfg.name}'. Got input(s) {names}, but missing required "
                                 f"input(s) {sorted(set(types) - set(names))}")
            arrays = {}
            for t, raw in zip(request.inputs, request.raw_input_contents, strict=True):
                spec = types[t.name]
                want = {"TYPE_UINT8": "UINT8", "TYPE_INT32": "INT32"}[mc.DataType.Name(spec.data_type)]
                dims = [1, *spec.dims]
                if t.datatype != want or len(t.shape) != len(dims) or any(
                        d != -1 and d != s for d, s in zip(dims, t.shape, strict=True)):
                    raise ValueError(f"inference input '{t.name}' data-type is '{t.datatype}' shape {list(t.shape)}, "
                                     f"but model '{cfg.name}' expects '{want}' {dims}")
                arrays[t.name] = np.frombuffer(raw, dtype=np.uint8 if want == "UINT8" else np.int32).reshape(
                    tuple(t.shape))
            return arrays

        class Servicer(pbg.GRPCInferenceServiceServicer):
            def ModelConfig(self, request, context):  # noqa: N802
                return pb.ModelConfigResponse(config=cfg)

            def ModelStreamInfer(self, request_iterator, context):  # noqa: N802
                for request in request_iterator:
                    p = request.parameters
                    sid, start = p["sequence_id"].int64_param, p["sequence_start"].bool_param
                    try:
                        if not start and sid not in triton.state:
                            raise ValueError(f"inference request for sequence {sid} to model '{cfg.name}' must "
                                             "specify the START flag on the first request of the sequence")
                        arrays = check(request)
                    except ValueError as e:
                        yield pb.ModelStreamInferResponse(error_message=str(e))
                        continue
                    flush = bool(arrays["FLUSH"][0, 0]) if "FLUSH" in arrays else False
                    out = triton.execute([(sid, arrays["FRAME"][0], start, flush)])[0]
                    if p["sequence_end"].bool_param:
                        del triton.state[sid]
                    r = pb.ModelInferResponse(model_name=cfg.name, model_version="1", id=request.id)
                    r.outputs.add(name="FRAME_OUT", datatype="UINT8", shape=[1, *out.shape])
                    r.raw_output_contents.append(np.ascontiguousarray(out).tobytes())
                    yield pb.ModelStreamInferResponse(infer_response=r)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pbg.add_GRPCInferenceServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


@pytest.mark.parametrize("fixture", ["mtu_artifact", "mmprnn_artifact"])
def test_example_drives_a_triton_repo_model_like_vdeblur_run(fixture: str, request: pytest.FixtureRequest,
                                                             tmp_path: Path) -> None:
    """The example's Triton branch (drop the warm-up answers, flush with the last frame and FLUSH = 1)
    against the triton-repo model behind Triton's gRPC front (emulated: no Triton server here)."""
    from vdeblur.serve.triton_repo import write_triton_repo

    artifact = request.getfixturevalue(fixture)
    video = _video(tmp_path / "in.mp4", n=7)
    run_video(artifact, video, f"{tmp_path / 'ran'}/")
    write_triton_repo(artifact, tmp_path / "models", name="deblur")
    stub = _TritonStub(tmp_path / "models" / "deblur")
    try:
        summary = _example().stream_video(video, f"{tmp_path / 'served'}/", url=f"127.0.0.1:{stub.port}",
                                          model="deblur", in_flight=1)
    finally:
        stub.stop()
    assert summary["frames"] == 7
    for a, b in zip(iter_frames(tmp_path / "ran"), iter_frames(tmp_path / "served"), strict=True):
        np.testing.assert_array_equal(a, b)
