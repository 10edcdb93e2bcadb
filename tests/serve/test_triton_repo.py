"""`vdeblur triton-repo` (vdeblur.serve.triton_repo): the written config and the model, run as Triton runs it.

No Triton server runs here. The model is run on ONNX Runtime (Triton's onnxruntime backend runs the
same file) by an emulation of Triton's sequence batcher with implicit state: the START request gets
state inputs of the config's dims with every variable dim 1 and garbage data, START = 1; later
requests get the previous request's state outputs, START = 0; batched sequences are rows of one
execution. The client drops the first `vdeblur_lookahead` responses and flushes with the last frame
repeated `vdeblur_flush_steps` times (FLUSH = 1 when `vdeblur_flush_input` names it), reading those
from the config's parameters. Its uint8 frames must equal Stream's for the same frames.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from vdeblur.contract.interface import ClipSpec
from vdeblur.data.texture import moving_texture
from vdeblur.errors import BackendError, ExportError, MissingDependencyError, UsageError
from vdeblur.runtime.stream import Stream
from vdeblur.serve.triton_repo import PARAMETERS, check_config, read_config, write_triton_repo

H, W = 37, 50  # odd: padded to 40x52 (mtu, multiple 4) and 48x64 (mmprnn, multiple 16)
NP_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
            "TYPE_UINT8": np.uint8}


def _frames(count: int, seed: int, height: int = H, width: int = W) -> list[np.ndarray]:
    video = moving_texture(count, height, width, seed=seed)  # (T, 3, H, W) float32 in [0, 1]
    return list((video.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8))


def _stream(artifact: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    outs: list[tuple[int, np.ndarray]] = []
    with Stream(artifact, backend="onnxruntime") as s:
        for f in frames:
            outs += s.push(f)
        outs += s.flush()
    assert [i for i, _ in outs] == list(range(len(frames)))
    return [o for _, o in outs]


class Triton:
    """Triton's sequence batcher with implicit state, over ONNX Runtime (see the module docstring)."""

    def __init__(self, model_dir: Path, seed: int = 0) -> None:
        import onnxruntime as ort

        self.cfg = read_config(model_dir / "config.pbtxt")
        self.batching = self.cfg.max_batch_size > 0
        self.params = {k: v.string_value for k, v in self.cfg.parameters.items()}
        name = self.cfg.default_model_filename
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(model_dir / "1" / name), opts, providers=["CPUExecutionProvider"])
        self.state: dict[int, dict[str, np.ndarray]] = {}  # sequence id -> state input name -> (1, ...) array
        self.rng = np.random.default_rng(seed)

    def _garbage(self, st: Any, like: np.ndarray | None) -> np.ndarray:
        """Uninitialised state of the START request: every variable dim 1 (or, batched with running
        sequences, their shape: Triton batches equal shapes only)."""
        dims = [1 if d == -1 else d for d in st.dims]
        shape = like.shape if like is not None else ((1, *dims) if self.batching else tuple(dims))
        dtype = NP_TYPES[mc.DataType.Name(st.data_type)]
        if np.issubdtype(dtype, np.integer):
            return self.rng.integers(-(2**30), 2**30, size=shape).astype(dtype)
        junk = (self.rng.standard_normal(shape) * 1e30).astype(dtype)
        junk.flat[:: 7] = np.nan
        return junk

    def execute(self, rows: list[tuple[int, np.ndarray, bool, bool]]) -> list[np.ndarray]:
        """One model execution of rows (sequence id, frame (H, W, 3) uint8, start, flush) -> FRAME_OUT rows."""
        control = (1, 1) if self.batching else (1,)  # Triton's START tensor of one request
        feeds: dict[str, list[np.ndarray]] = {"FRAME": [f[None] for _, f, _, _ in rows],
                                              "START": [np.full(control, int(s), np.int32) for _, _, s, _ in rows]}
        if self.params["vdeblur_flush_input"]:  # an ordinary input: the client sends (1, 1), as to `vdeblur serve`
            feeds[self.params["vdeblur_flush_input"]] = [np.full((1, 1), int(fl), np.int32) for _, _, _, fl in rows]
        running = [self.state[seq] for seq, _, start, _ in rows if not start]
        for st in self.cfg.sequence_batching.state:
            feeds[st.input_name] = [
                self._garbage(st, running[0][st.input_name] if running else None) if start
                else self.state[seq][st.input_name] for seq, _, start, _ in rows]
        outputs = [o.name for o in self.session.get_outputs()]
        result = dict(zip(outputs, self.session.run(outputs, {k: np.concatenate(v) for k, v in feeds.items()}),
                          strict=True))
        for i, (seq, _, _, _) in enumerate(rows):
            self.state[seq] = {st.input_name: result[st.output_name][i : i + 1]
                               for st in self.cfg.sequence_batching.state}
        return [result["FRAME_OUT"][i] for i in range(len(rows))]


class Client:
    """One video through a Triton model as docs/triton.md tells a client to send it."""

    def __init__(self, seq: int, frames: list[np.ndarray], params: dict[str, str]) -> None:
        self.seq, self.frames = seq, frames
        self.lookahead = int(params["vdeblur_lookahead"])
        self.flush_steps = int(params["vdeblur_flush_steps"])
        self.sent = 0
        self.outputs: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return self.sent >= len(self.frames) + self.flush_steps

    def request(self) -> tuple[int, np.ndarray, bool, bool]:
        k = self.sent
        flush = k >= len(self.frames)
        return self.seq, self.frames[-1] if flush else self.frames[k], k == 0, flush

    def response(self, out: np.ndarray) -> None:
        self.sent += 1
        if self.sent > self.lookahead and len(self.outputs) < len(self.frames):  # warm-up, then one per frame
            self.outputs.append(out)


def _run(triton: Triton, clients: list[Client], starts: list[int]) -> None:
    """Every client's requests; client i joins at time starts[i]; the active ones batch in one execution."""
    t = 0
    while not all(c.done for c in clients):
        active = [c for c, s in zip(clients, starts, strict=True) if s <= t and not c.done]
        if active:
            for c, out in zip(active, triton.execute([c.request() for c in active]), strict=True):
                c.response(out)
        t += 1


def _alone(model_dir: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    triton = Triton(model_dir)
    client = Client(0, frames, triton.params)
    _run(triton, [client], [0])
    return client.outputs


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, mtu_artifact: Path, mmprnn_artifact: Path) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    write_triton_repo(mtu_artifact, out)
    write_triton_repo(mmprnn_artifact, out)
    return out


# ----- 1. the config ---------------------------------------------------------------------------


def test_config_parses_with_tritonclient_and_passes_the_load_time_rules(repo: Path) -> None:
    for name, flush in (("mtu", ""), ("mmprnn", "FLUSH")):
        text = (repo / name / "config.pbtxt").read_text()
        assert "kind: CONTROL_SEQUENCE_START" in text and "initial_state {" not in text
        cfg = text_format.Parse(text, mc.ModelConfig())
        # any frame size: one sequence per execution (see test_batching_needs_one_frame_size)
        assert cfg.name == name and cfg.backend == "onnxruntime" and cfg.max_batch_size == 1
        oldest = cfg.sequence_batching.oldest
        assert cfg.sequence_batching.WhichOneof("strategy_choice") == "oldest"
        assert list(oldest.preferred_batch_size) == [1] and oldest.max_candidate_sequences == 16
        assert {k: v.string_value for k, v in cfg.parameters.items()} == {
            "vdeblur_lookahead": "2", "vdeblur_flush_steps": "2", "vdeblur_flush_input": flush,
            "vdeblur_pad_multiple": "4" if name == "mtu" else "16", "vdeblur_version": "0.1.0"}
        assert set(cfg.parameters) == set(PARAMETERS)
        assert [i.name for i in cfg.input] == ["FRAME", *([flush] if flush else [])]
        assert [(o.name, list(o.dims)) for o in cfg.output] == [("FRAME_OUT", [-1, -1, 3])]
        states = cfg.sequence_batching.state
        assert [(s.input_name, s.output_name) for s in states] == [(f"STATE_IN_0{i}", f"STATE_OUT_0{i}")
                                                                   for i in range(5)]
        assert list(states[0].dims) == [1] and states[0].data_type == mc.TYPE_INT32  # the step counter, (N,)
        assert list(states[1].dims) == ([4, 3, -1, -1] if name == "mtu" else [2, 3, -1, -1])
        check_config(cfg, repo / name / "1" / "model.onnx")
        assert read_config(repo / name / "config.pbtxt") == cfg


def _broken(repo: Path, name: str, edit: Any) -> Any:
    cfg = read_config(repo / name / "config.pbtxt")
    edit(cfg)
    return cfg


def _variable_initial_state(cfg: Any) -> None:
    init = cfg.sequence_batching.state[2].initial_state.add()
    init.data_type, init.name, init.zero_data = mc.TYPE_FP32, "zeros", True
    init.dims.extend([3, -1, -1])


def _control_as_input(cfg: Any) -> None:
    i = cfg.input.add()
    i.name, i.data_type = "START", mc.TYPE_INT32
    i.dims.extend([2])


def _fixed_output_dims(cfg: Any) -> None:
    cfg.output[0].ClearField("dims")
    cfg.output[0].dims.extend([H, W, 3])


def _drop_flush(cfg: Any) -> None:
    del cfg.input[1]


@pytest.mark.parametrize(("name", "edit", "error"), [
    ("mtu", _variable_initial_state, r"'initial_state' field for state input name 'STATE_IN_02' contains variable "
                                     r"dimensions \[3, -1, -1\]\. Expected fixed dims"),
    ("mtu", lambda c: setattr(c.sequence_batching.state[3], "input_name", "STATE_IN_99"),
     r"'STATE_IN_99' is not an input of model\.onnx .*Expected every config tensor in the graph"),
    ("mtu", lambda c: setattr(c.sequence_batching.state[1], "output_name", "STATE_IN_01_next"),
     r"'STATE_IN_01' and 'STATE_IN_01_next': one is a prefix of the other"),
    ("mtu", _control_as_input, r"control input 'START' is also an input with dims \[2\]\. Expected dims \[ 1 \]"),
    ("mtu", lambda c: c.sequence_batching.state[0].ClearField("dims"), r"STATE_IN_00.* has empty dims"),
    ("mtu", lambda c: setattr(c.input[0], "data_type", mc.TYPE_FP32),
     r"'FRAME' is TYPE_FP32 in the config and TYPE_UINT8 in model\.onnx"),
    ("mtu", lambda c: c.sequence_batching.state[1].dims.append(-1),
     r"'STATE_IN_01' has dims .*\(rank 6 with the batch\) and rank 5"),
    ("mtu", _fixed_output_dims, r"'FRAME_OUT' has dims \[37, 50, 3\] in the config and \[-1, -1, -1, 3\] in "
                                r"model\.onnx\. Expected the graph's dims exactly"),
    ("mtu", lambda c: setattr(c, "max_batch_size", -1), r"max_batch_size is -1"),
    ("mtu", lambda c: setattr(c, "max_batch_size", 8),
     r"states \['STATE_IN_01', .*\] have variable dims with max_batch_size 8\. Triton gives a sequence's first request "
     r"state dims of 1"),
    ("mtu", lambda c: setattr(c, "name", "other"), r"model 'other': its directory is 'mtu'"),
    ("mmprnn", _drop_flush, r"graph inputs \['FLUSH'\] of model\.onnx are not in the config"),
], ids=["variable_initial_state", "state_not_in_graph", "prefix_names", "control_dims", "empty_state_dims",
        "input_type", "state_rank", "output_dims_not_exact", "negative_max_batch", "batching_variable_states",
        "name_not_directory", "graph_input_not_fed"])
def test_check_config_rejects_what_triton_refuses_at_load_time(repo: Path, name: str, edit: Any, error: str) -> None:
    cfg = _broken(repo, name, edit)
    with pytest.raises((ExportError, UsageError), match=error):
        check_config(cfg, repo / name / "1" / "model.onnx")


def test_read_config_names_the_file_on_a_parse_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "x"\nsequence_batching { control_input [ { name: "START" control [ '
                   '{ kind: CONTROL_SEQUENCE_BEGIN } ] } ] }\n')
    with pytest.raises(ExportError, match=r"config\.pbtxt: is not a valid Triton model configuration .*BEGIN"):
        read_config(bad)


# ----- 2. and 3. the model under the sequence batcher -------------------------------------------


@pytest.mark.parametrize("name", ["mtu", "mmprnn"])
def test_triton_emulation_gives_streams_frames(repo: Path, name: str, request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(f"{name}_artifact")
    for height, width in ((H, W), (29, 66)):  # one model, any frame size (a sequence keeps its size)
        frames = _frames(6, seed=3, height=height, width=width)
        got = _alone(repo / name, frames)
        want = _stream(artifact, frames)
        assert len(got) == len(want) == len(frames)
        for g, w in zip(got, want, strict=True):
            assert g.shape == (height, width, 3) and g.dtype == np.uint8
            # Tolerance: none. The wrapper runs the step graph's nodes on the same ONNX Runtime kernels and
            # mirrors Stream op for op (x / 255 in float32, edge padding, clip, floor(x * 255 + 0.5)).
            np.testing.assert_array_equal(g, w)


def test_unbatched_model_runs_the_same(tmp_path: Path, mmprnn_artifact: Path) -> None:
    out = tmp_path / "models"
    report = write_triton_repo(mmprnn_artifact, out, name="mm_nb", max_batch_size=0)
    cfg = read_config(out / "mm_nb" / "config.pbtxt")
    assert cfg.sequence_batching.WhichOneof("strategy_choice") == "oldest" and report["per_row"] is False
    assert list(cfg.sequence_batching.oldest.preferred_batch_size) == []  # one request per execution
    # without batching the dims carry the batch of 1: the client sends the same shapes as with batching
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("FRAME", [1, -1, -1, 3]), ("FLUSH", [1, 1])]
    assert list(cfg.sequence_batching.state[0].dims) == [1, 1]
    check_config(cfg, out / "mm_nb" / "1" / "model.onnx")
    frames = _frames(4, seed=8)
    for g, w in zip(_alone(out / "mm_nb", frames), _stream(mmprnn_artifact, frames), strict=True):
        np.testing.assert_array_equal(g, w)


def _batch_copy(artifact: Path, dest: Path, batch: int | str) -> Path:
    """The artifact with its step graph's batch dim set to ``batch`` (1, or a symbol: dynamic); MMP-RNN's
    graph computes the same either way. Artifacts of older exports have a fixed batch of 1."""
    shutil.copytree(artifact, dest)
    model = onnx.load(str(dest / "model.onnx"))
    for v in list(model.graph.input) + list(model.graph.output):
        dim = v.type.tensor_type.shape.dim[0]
        if isinstance(batch, int):
            dim.dim_value = batch
        else:
            dim.dim_param = batch
    del model.graph.value_info[:]
    onnx.save(model, str(dest / "model.onnx"))
    return dest


@pytest.mark.parametrize(("name", "batch"), [("mmprnn", 1), ("mmprnn", "N"), ("mtu", None)],
                         ids=["fixed_batch", "dynamic_batch", "mtu_as_exported"])
def test_two_sequences_batched_give_what_each_gives_alone(tmp_path: Path, name: str, batch: int | str | None,
                                                          request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(f"{name}_artifact")
    if batch is not None:
        artifact = _batch_copy(artifact, tmp_path / name, batch)
    dim = onnx.load(str(artifact / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    fixed_batch = dim.HasField("dim_value") and dim.dim_value == 1
    report = write_triton_repo(artifact, tmp_path / "models", name="mm", height=H, width=W)  # batched: one size
    cfg = read_config(tmp_path / "models/mm/config.pbtxt")
    assert cfg.max_batch_size == 8 and list(cfg.sequence_batching.oldest.preferred_batch_size) == [8]
    assert list(cfg.input[0].dims) == [H, W, 3] and -1 not in cfg.sequence_batching.state[1].dims
    check_config(cfg, tmp_path / "models/mm/1/model.onnx")
    # a fixed batch of 1 runs per row in a Loop; a dynamic batch runs the rows together
    assert report["per_row"] is fixed_batch
    assert any(n.op_type == "Loop" for n in onnx.load(str(tmp_path / "models/mm/1/model.onnx")).graph.node) is (
        fixed_batch)
    a, b = _frames(5, seed=1), _frames(4, seed=2)
    triton = Triton(tmp_path / "models" / "mm", seed=5)
    clients = [Client(1, a, triton.params), Client(2, b, triton.params)]
    _run(triton, clients, starts=[0, 2])  # b starts (garbage state, START=1) beside a running; a flushes first
    model_dir = tmp_path / "models" / "mm"
    for client, frames in zip(clients, (a, b), strict=True):
        alone = _alone(model_dir, frames)
        assert len(client.outputs) == len(frames)
        for g, w in zip(client.outputs, alone, strict=True):
            np.testing.assert_array_equal(g, w)


def test_add_prefix_keeps_subgraph_references_to_outer_values_bound() -> None:
    """A Loop body that reads an outer initializer and an outer node's output (as ARVo's Scans read the
    step graph's weights): after the prefix the model checks and computes the same; onnx.compose.add_prefix
    (1.23) leaves the initializer's name unprefixed in the body."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vdeblur.serve.triton_repo import add_prefix

    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "weight"], ["acc_w"], name="add"),
         helper.make_node("Mul", ["acc_w", "x2"], ["acc_out"], name="mul"),
         helper.make_node("Identity", ["cond"], ["cond_out"], name="cond")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc", f32, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", f32, [2])])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "half"], ["x2"], name="half_x"),
         helper.make_node("Loop", ["trips", "", "x"], ["y"], name="loop", body=body)],
        "outer", [helper.make_tensor_value_info("x", f32, [2])], [helper.make_tensor_value_info("y", f32, [2])],
        initializer=[numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "weight"),
                     numpy_helper.from_array(np.array([0.5, 0.5], np.float32), "half"),
                     numpy_helper.from_array(np.array(3, np.int64), "trips")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    prefixed = add_prefix(model, "step/")
    onnx.checker.check_model(prefixed, full_check=True)
    body_nodes = prefixed.graph.node[1].attribute[0].g.node
    names = [n for node in (*prefixed.graph.node, *body_nodes) for n in (*node.input, *node.output) if n]
    assert names and all(n.startswith("step/") for n in names)
    assert [i.name for i in prefixed.graph.input] == ["step/x"] and model.graph.input[0].name == "x"  # a copy
    x = np.array([1.0, 3.0], np.float32)

    def run(m: Any, name: str) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {name: x})[0]

    np.testing.assert_array_equal(run(prefixed, "step/x"), run(model, "x"))


# ----- 4. what is refused -----------------------------------------------------------------------


def test_batching_needs_one_frame_size(tmp_path: Path, mtu_artifact: Path) -> None:
    with pytest.raises(UsageError, match=r"max_batch_size 8: needs a model of one frame size.*first request state "
                                         r"dims of 1.*--height and --width"):
        write_triton_repo(mtu_artifact, tmp_path / "models", max_batch_size=8)
    with pytest.raises(UsageError, match=r"height, width: only one is given"):
        write_triton_repo(mtu_artifact, tmp_path / "models", height=H)
    assert not (tmp_path / "models").exists()


def _clip_copy(artifact: Path, dest: Path) -> Path:
    shutil.copytree(artifact, dest)
    m = json.loads((dest / "manifest.json").read_text())
    spec = ClipSpec(family="dstnet", config={}, window=4, overlap=2, pad_multiple=4)
    m.update(kind="clip", interface=spec.to_dict(), clip={"window": 4, "overlap": 2, "latency": 3})
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_clip_artifacts_are_refused_pointing_to_vdeblur_serve(tmp_path: Path, mtu_artifact: Path) -> None:
    clip = _clip_copy(mtu_artifact, tmp_path / "dstnet")
    with pytest.raises(UsageError, match=r"is a clip artifact \(dstnet, windows of 4 frames\).*one frame per "
                                         r"request.*`vdeblur serve`, which runs clip artifacts by windows"):
        write_triton_repo(clip, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_an_existing_model_is_kept_unless_overwrite(tmp_path: Path, mtu_artifact: Path) -> None:
    out = tmp_path / "models"
    write_triton_repo(mtu_artifact, out, name="m")
    (out / "m" / "marker").write_text("old")
    with pytest.raises(UsageError, match=r"m: exists\. Pass --overwrite to replace it, or choose another --name"):
        write_triton_repo(mtu_artifact, out, name="m", instances=3)
    assert (out / "m" / "marker").is_file()
    write_triton_repo(mtu_artifact, out, name="m", instances=3, overwrite=True)
    assert not (out / "m" / "marker").exists() and read_config(out / "m" / "config.pbtxt").instance_group[0].count == 3
    assert sorted(p.name for p in out.iterdir()) == ["m"]  # no staging directory left
    for bad in ("", ".hidden", "a/b", "../up"):
        with pytest.raises(UsageError, match="is not a usable directory name"):
            write_triton_repo(mtu_artifact, out, name=bad)


def test_a_failure_while_writing_leaves_the_old_model_or_nothing(tmp_path: Path, mtu_artifact: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeblur.serve import triton_repo

    out = tmp_path / "models"
    write_triton_repo(mtu_artifact, out, name="m")
    before = (out / "m" / "config.pbtxt").read_text()

    def refuse(cfg: Any, graph_path: Any = None) -> None:
        raise ExportError("model 'm': refused for the test. Expected nothing written.")

    monkeypatch.setattr(triton_repo, "check_config", refuse)  # fails after the files are written (staged)
    with pytest.raises(ExportError, match="refused for the test"):
        write_triton_repo(mtu_artifact, out, name="m", instances=2, overwrite=True)
    assert (out / "m" / "config.pbtxt").read_text() == before and sorted(p.name for p in out.iterdir()) == ["m"]
    with pytest.raises(ExportError, match="refused for the test"):
        write_triton_repo(mtu_artifact, tmp_path / "new" / "models")
    assert not (tmp_path / "new" / "models").exists()


def test_tensorrt_without_tensorrt_or_a_gpu_fails_and_writes_nothing(tmp_path: Path, mtu_artifact: Path) -> None:
    out = tmp_path / "models"
    with pytest.raises(ExportError, match=r"has no fp32 graph with the trt lowering.*--plugins trt"):
        write_triton_repo(mtu_artifact, out, backend="tensorrt")
    # an artifact that lists a trt graph: then TensorRT and a GPU are what is missing
    art = shutil.copytree(mtu_artifact, tmp_path / "art")
    m = json.loads((art / "manifest.json").read_text())
    m["graphs"].append({**m["graphs"][0], "lowering": "trt"})
    (art / "manifest.json").write_text(json.dumps(m))
    try:
        import tensorrt  # noqa: F401

        from vdeblur.contract.device import nvidia_gpus

        if nvidia_gpus()[0]:
            pytest.skip("TensorRT and a GPU are here: the plan would be built")
    except ImportError:
        pass
    with pytest.raises((MissingDependencyError, BackendError), match=r"tensorrt: (not installed|no NVIDIA GPU)"):
        write_triton_repo(art, out, backend="tensorrt")
    assert not out.exists()
