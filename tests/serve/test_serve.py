"""`vdeblur serve` driven by the real tritonclient (gRPC and HTTP) on loopback.

Outputs equal `vdeblur run` on the same frames; sequences interleave; every refusal is a protocol
error that leaves the other sequences (and the refused one) as they were.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from vdeblur.errors import UsageError  # noqa: E402
from vdeblur.runtime.stream import Stream  # noqa: E402
from vdeblur.serve.server import Server  # noqa: E402

H, W = 37, 50  # not a multiple of the pad multiple: the server pads and crops


def frames_of(n: int, seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def reference(artifact: Path, frames: np.ndarray) -> list[np.ndarray]:
    with Stream(artifact) as s:
        outs = [o for f in frames for o in s.push(f)] + s.flush()
    assert [i for i, _ in outs] == list(range(len(frames)))
    return [o for _, o in outs]


def grpc_input(frame: np.ndarray, dtype: str = "UINT8") -> Any:
    x = frame[None]
    inp = grpcclient.InferInput("FRAME", list(x.shape), dtype)
    inp.set_data_from_numpy(x.astype(np.float32) if dtype == "FP32" else x)
    return inp


def http_input(frame: np.ndarray, binary: bool = True) -> Any:
    inp = httpclient.InferInput("FRAME", [1, *frame.shape], "UINT8")
    inp.set_data_from_numpy(frame[None], binary_data=binary)
    return inp


class StreamClient:
    """One gRPC client with one open stream; collects (sequence_id, frame_index, frame) or errors."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.results: list[tuple[Any, int, np.ndarray]] = []
        self.errors: list[InferenceServerException] = []
        self.client.start_stream(callback=self._callback, headers=headers)

    def _callback(self, result: Any, error: Any) -> None:
        if error is not None:
            self.errors.append(error)
            return
        p = result.get_response().parameters
        sid = p["sequence_id"]
        sid = getattr(sid, sid.WhichOneof("parameter_choice"))
        self.results.append((sid, p["frame_index"].int64_param, result.as_numpy("FRAME_OUT")[0]))

    def send(self, model: str, frame: np.ndarray, sid: Any, start: bool = False, end: bool = False,
             dtype: str = "UINT8") -> None:
        self.client.async_stream_infer(model, [grpc_input(frame, dtype)], sequence_id=sid, sequence_start=start,
                                       sequence_end=end)

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()

    def of(self, sid: Any) -> list[tuple[int, np.ndarray]]:
        return [(i, f) for s, i, f in self.results if s == sid]


@pytest.fixture(scope="module")
def server(mtu_artifact: Path, mmprnn_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Server([mtu_artifact, mmprnn_artifact], http_port=0, grpc_port=0, max_sequences=4,
                sequence_timeout=30.0) as srv:
        yield srv


def test_grpc_stream_equals_vdeblur_run(server: Server, mtu_artifact: Path, tmp_path: Path) -> None:
    """Frames from a PNG folder through `vdeblur run` and through the gRPC stream: the same bytes."""
    from PIL import Image

    from vdeblur.runtime.run import run_video

    frames = frames_of(6, seed=1)
    src = tmp_path / "in"
    src.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{i:04d}.png")
    run_video(mtu_artifact, src, f"{tmp_path / 'out'}/")
    ran = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "out").glob("*.png"))]
    assert len(ran) == len(frames)

    c = StreamClient(server.grpc_port)
    for i, f in enumerate(frames):
        c.send("mtu", f, 11, start=i == 0, end=i == len(frames) - 1)
    c.close()
    assert not c.errors
    got = c.of(11)
    assert [i for i, _ in got] == list(range(len(frames)))  # one response per frame, in order
    for (_, out), want in zip(got, ran, strict=True):
        np.testing.assert_array_equal(out, want)


def test_http_answers_with_the_outputs_that_are_ready(server: Server, mmprnn_artifact: Path) -> None:
    """HTTP: one answer per request holding the outputs that became ready (none during the
    lookahead warm-up; the pending ones at sequence_end), in order, equal to a Stream's."""
    frames = frames_of(5, seed=2)
    want = reference(mmprnn_artifact, frames)
    lookahead = int(server.service.model_config("mmprnn").parameters["vdeblur_lookahead"].string_value)
    assert lookahead >= 1
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    got: list[np.ndarray] = []
    for i, f in enumerate(frames):
        r = client.infer("mmprnn", [http_input(f, binary=i % 2 == 0)], sequence_id="cam-A", sequence_start=i == 0,
                         sequence_end=i == len(frames) - 1)
        params = r.get_response()["parameters"]
        out = r.as_numpy("FRAME_OUT")
        expected = 0 if i < lookahead else 1
        if i == len(frames) - 1:
            expected = 1 + lookahead
        assert params["frame_count"] == expected and params["sequence_id"] == "cam-A"
        if expected:
            assert params["frame_index"] == len(got) and out.shape == (expected, H, W, 3)
            got += list(out)
        else:
            assert out is None
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    client.close()


def test_interleaved_sequences_keep_their_own_state(server: Server, mtu_artifact: Path,
                                                    mmprnn_artifact: Path) -> None:
    """Two sequences interleaved on one stream, a third on another stream at the same time, of two
    models: each equals its own Stream."""
    a, b, c = frames_of(5, seed=3), frames_of(5, seed=4), frames_of(4, seed=5, h=24, w=30)
    s1, s2 = StreamClient(server.grpc_port), StreamClient(server.grpc_port)

    def other() -> None:
        for i, f in enumerate(c):
            s2.send("mmprnn", f, 2**62 + 5, start=i == 0, end=i == len(c) - 1)

    t = threading.Thread(target=other)
    t.start()
    for i in range(5):
        s1.send("mtu", a[i], 21, start=i == 0, end=i == 4)
        s1.send("mtu", b[i], "22", start=i == 0, end=i == 4)
    t.join()
    s1.close()
    s2.close()
    assert not s1.errors and not s2.errors, [e.message() for e in s1.errors + s2.errors]
    for sid, frames, art, client in ((21, a, mtu_artifact, s1), ("22", b, mtu_artifact, s1),
                                     (2**62 + 5, c, mmprnn_artifact, s2)):
        got = client.of(sid)
        assert [i for i, _ in got] == list(range(len(frames))), sid
        for (_, out), want in zip(got, reference(art, frames), strict=True):
            np.testing.assert_array_equal(out, want)


def test_refused_requests_are_errors_that_lose_no_state(server: Server, mtu_artifact: Path) -> None:
    frames = frames_of(5, seed=6)
    c = StreamClient(server.grpc_port)
    c.send("mtu", frames[0], 31, start=True)
    c.send("mtu", frames[1], 31, dtype="FP32")  # wrong datatype
    c.send("mtu", frames_of(1, seed=9, h=40, w=50)[0], 31)  # another size mid-sequence
    c.send("mtu", frames[1], 32)  # an unknown sequence without START
    c.send("nope", frames[1], 31)  # an unknown model
    for i in range(1, 5):
        c.send("mtu", frames[i], 31, end=i == 4)
    c.close()
    messages = [e.message() for e in c.errors]
    assert len(messages) == 4, messages
    assert "datatype FP32. Expected UINT8" in messages[0]
    assert "frame is 50x40, but the sequence started at 50x37" in messages[1]
    assert "sequence 32 to model 'mtu' must specify the START flag" in messages[2]
    assert "model 'nope': not served here" in messages[3]
    got = c.of(31)  # the sequence went on as if the refused requests had not been sent
    assert [i for i, _ in got] == list(range(5))
    for (_, out), want in zip(got, reference(mtu_artifact, frames), strict=True):
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("body, match", [
    ({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [2, 4, 4, 3], "data": [0] * 96}]},
     r"shape \[2, 4, 4, 3\]. Expected \[1, H, W, 3\]"),
    ({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [0] * 47}]},
     "carries 47 values. Expected 48"),
    ({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [300] * 48}]},
     "not integers in 0..255"),
    ({"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [0] * 48}]},
     "input 'IMAGE' is unknown"),
    ({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [1, 9000, 4, 3], "data": []}]},
     "Expected 2 to 8192 pixels"),
    ({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [0] * 48}],
      "parameters": {"sequence_start": True}}, "sequence_start or sequence_end without a sequence_id"),
    ({"inputs": []}, "0 inputs"),
])
def test_http_malformed_requests_get_400(server: Server, body: dict, match: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/v2/models/mtu/infer",
                                 data=json.dumps(body).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400
    message = json.loads(e.value.read())["error"]
    assert re.search(match, message), message


def test_binary_size_mismatch_and_bad_header_length(server: Server) -> None:
    url = f"http://127.0.0.1:{server.http_port}/v2/models/mtu/infer"
    head = json.dumps({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [1, 4, 4, 3],
                                   "parameters": {"binary_data_size": 48}}]}).encode()
    for body, hlen, match in ((head + bytes(40), len(head), "has binary_data_size 48, but 40 bytes follow"),
                              (head + bytes(48), len(head) + 100, "does not fit a body"),
                              (head + bytes(50), len(head), "2 bytes follow the binary inputs")):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Inference-Header-Content-Length": str(hlen)})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 400 and match in json.loads(e.value.read())["error"]
    head = json.dumps({"inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": [1, 4, 4, 3],
                                   "parameters": {"binary_data_size": 48}}],
                       "parameters": {"binary_data_output": True}}).encode()
    ok = urllib.request.Request(url, data=head + bytes(48), method="POST",
                                headers={"Inference-Header-Content-Length": str(len(head))})
    with urllib.request.urlopen(ok) as r:  # well formed: a one-frame sequence
        hlen = int(r.headers["Inference-Header-Content-Length"])
        body = r.read()
    answer = json.loads(body[:hlen])
    assert answer["parameters"]["frame_count"] == 1 and answer["outputs"][0]["shape"] == [1, 4, 4, 3]
    assert len(body) - hlen == 48


def test_metadata_config_and_metrics(server: Server) -> None:
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    h = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert g.is_server_live() and g.is_server_ready() and h.is_server_live() and h.is_server_ready()
    assert g.is_model_ready("mtu") and h.is_model_ready("mmprnn") and not h.is_model_ready("nope")
    assert "sequence" in g.get_server_metadata().extensions
    meta = h.get_model_metadata("mtu")
    assert meta["inputs"] == [{"name": "FRAME", "datatype": "UINT8", "shape": [1, -1, -1, 3]}]
    cfg = g.get_model_config("mmprnn").config
    assert cfg.input[0].name == "FRAME" and cfg.model_transaction_policy.decoupled
    assert cfg.parameters["vdeblur_kind"].string_value == "step"
    assert h.get_model_config("mmprnn")["input"][0]["dims"] == [1, -1, -1, 3]
    with pytest.raises(InferenceServerException) as e:
        g.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    # Prometheus' own parser reads it. The text keeps Triton's counter names (no _total); this parser
    # reports counter samples with _total appended, as it does for Triton's.
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {(s.name, s.labels.get("model"), s.labels.get("reason"), s.labels.get("le")): s.value
              for f in families.values() for s in f.samples}
    assert families["vdeblur_request_duration_seconds"].type == "histogram"
    assert families["vdeblur_active_sequences"].type == "gauge"
    assert "\nnv_inference_request_success{" in text and "nv_inference_request_success_total{" not in text
    assert values[("nv_inference_request_success_total", "mtu", None, None)] >= 10
    assert values[("nv_inference_count_total", "mtu", None, None)] >= 10
    assert (values[("vdeblur_request_duration_seconds_count", "mtu", None, None)]
            == values[("nv_inference_request_success_total", "mtu", None, None)]
            == values[("vdeblur_request_duration_seconds_bucket", "mtu", None, "+Inf")])
    assert values[("vdeblur_rejected_requests_total", "mtu", "invalid", None)] >= 1
    g.close()
    h.close()


def test_token_full_server_and_idle_timeout(mtu_artifact: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    from vdeblur.serve.service import read_token

    frames = frames_of(3, seed=7)
    with Server([mtu_artifact], http_port=0, grpc_port=0, name="deblur", token=read_token(token), max_sequences=2,
                sequence_timeout=1.5) as srv:
        h = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        good = {"authorization": "Bearer s3cret"}
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as e:
                h.infer("deblur", [http_input(frames[0])], headers=dict(headers) if headers else None)
            assert e.value.status() == "401" and "missing or wrong token" in e.value.message()
            with pytest.raises(InferenceServerException) as e:
                g.infer("deblur", [grpc_input(frames[0])], headers=headers)
            assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        bad = StreamClient(srv.grpc_port, headers={"authorization": "Bearer wrong"})  # checked when a stream opens
        try:
            bad.send("deblur", frames[0], 8, start=True)
        except InferenceServerException:  # the refusal may have closed the stream already (told to the callback)
            pass
        deadline = time.monotonic() + 10
        while not bad.errors and time.monotonic() < deadline:
            time.sleep(0.02)
        bad.close()
        assert bad.errors and bad.errors[0].status() == "StatusCode.UNAUTHENTICATED" and not bad.results
        assert h.is_server_live()  # health needs no token
        # a full server: two open sequences, a third START is refused, the two go on
        for sid in (1, 2):
            h.infer("deblur", [http_input(frames[0])], sequence_id=sid, sequence_start=True, headers=dict(good))
        with pytest.raises(InferenceServerException) as e:
            g.infer("deblur", [grpc_input(frames[0])], sequence_id=3, sequence_start=True, headers=good)
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED" and "2 sequences are open" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            h.infer("deblur", [http_input(frames[0])], sequence_id=3, sequence_start=True, headers=dict(good))
        assert e.value.status() == "429"
        r = g.infer("deblur", [grpc_input(frames[1])], sequence_id=1, headers=good)
        assert r.get_response().parameters["frame_count"].int64_param == 0  # still warming up: state kept
        # idle sequences are freed after the timeout
        deadline = time.monotonic() + 10  # timeout 1.5 s, checked every 0.375 s
        while srv.service.table.active() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srv.service.table.active() == 0
        with pytest.raises(InferenceServerException) as e:
            g.infer("deblur", [grpc_input(frames[2])], sequence_id=2, headers=good)
        assert "must specify the START flag" in e.value.message()
        text = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{srv.http_port}/metrics", headers={"Authorization": "Bearer s3cret"})).read().decode()
        assert 'vdeblur_sequences_expired_total{model="deblur",version="1"} 2' in text
        assert 'vdeblur_rejected_requests_total{model="deblur",version="1",reason="full"} 2' in text
        h.close()
        g.close()


def test_model_names_and_ports_are_checked(mtu_artifact: Path) -> None:
    with pytest.raises(UsageError, match="--name with 2 artifacts"):
        Server([mtu_artifact, mtu_artifact], name="x")
    with pytest.raises(UsageError, match="both be served as"):
        Server([mtu_artifact, mtu_artifact])
    with pytest.raises(UsageError, match="both endpoints are off"):
        Server([mtu_artifact], http_port=None, grpc_port=None)
    with Server([mtu_artifact], http_port=0, grpc_port=None) as a:
        with pytest.raises(UsageError, match=f"--http-port {a.http_port}: cannot listen"):
            Server([mtu_artifact], http_port=a.http_port, grpc_port=None).start()


@pytest.mark.slow
def test_cli_serve_drains_on_sigterm(mtu_artifact: Path) -> None:
    """`vdeblur serve --json` prints where it listens; SIGTERM mid-sequence lets the request in flight
    finish, refuses nothing already answered, and exits 0."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "vdeblur", "serve", str(mtu_artifact), "--http-port", "0",
                             "--grpc-port", "0", "--json", "--grace", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["status"] == "serving" and info["host"] == "127.0.0.1"
        c = StreamClient(info["grpc_port"])
        frames = frames_of(4, seed=8)
        for i, f in enumerate(frames[:3]):
            c.send("mtu", f, 5, start=i == 0)
        deadline = time.monotonic() + 30
        while len(c.results) < 1 and time.monotonic() < deadline:  # lookahead 2: frame 0 after the third
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        c.close()
        assert [i for _, i, _ in c.results] == [0]
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_clip_artifact_served_by_windows(dstnet_artifact: Path) -> None:
    """A clip artifact (DSTNet, windows of 4 overlapping by 2): one response per frame, in order, each
    frame's output as a Stream gives it; outputs come as windows fill, the rest at sequence_end."""
    art = dstnet_artifact
    frames = frames_of(9, seed=12, h=30, w=44)
    with Server([art], http_port=0, grpc_port=0, name="dstnet") as srv:
        c = StreamClient(srv.grpc_port)
        for i, f in enumerate(frames):
            c.send("dstnet", f, 9, start=i == 0, end=i == len(frames) - 1)
        c.close()
        assert not c.errors
        got = c.of(9)
        assert [i for i, _ in got] == list(range(len(frames)))
        for (_, out), want in zip(got, reference(art, frames), strict=True):
            np.testing.assert_array_equal(out, want)
        h = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
        counts = [h.infer("dstnet", [http_input(f)], sequence_id=4, sequence_start=i == 0,
                          sequence_end=i == len(frames) - 1).get_response()["parameters"]["frame_count"]
                  for i, f in enumerate(frames)]
        h.close()
        assert sum(counts) == len(frames) and counts[0] == 0 and counts[-1] > 1  # windows, then the flush
        cfg = srv.service.model_config("dstnet").parameters
        assert cfg["vdeblur_kind"].string_value == "clip" and cfg["vdeblur_window"].string_value == "4"


def test_stream_marks_each_requests_last_response_when_asked(server: Server) -> None:
    """Triton's `enable_empty_final_response`: after a request's responses (none during the warm-up,
    one per output afterwards, the pending ones at sequence_end) comes an empty one flagged final."""
    frames = frames_of(4, seed=13)
    events: list[tuple[str, int | None]] = []

    def callback(result: Any, error: Any) -> None:
        assert error is None, error
        p = result.get_response().parameters
        final = p["triton_final_response"].bool_param
        events.append(("final", None) if final else ("frame", p["frame_index"].int64_param))

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    client.start_stream(callback=callback)
    for i, f in enumerate(frames):
        client.async_stream_infer("mtu", [grpc_input(f)], request_id=str(i), sequence_id=41, sequence_start=i == 0,
                                  sequence_end=i == 3, enable_empty_final_response=True)
    client.stop_stream()
    client.close()
    # lookahead 2: frames 0, 1 answer nothing but their final marker; frame 2 brings output 0, frame 3 the rest
    assert events == [("final", None), ("final", None), ("frame", 0), ("final", None),
                      ("frame", 1), ("frame", 2), ("frame", 3), ("final", None)]
