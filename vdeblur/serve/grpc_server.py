"""The gRPC endpoint: Triton's ``inference.GRPCInferenceService`` on grpc.aio, from tritonclient's stubs.

- ServerLive / ServerReady (no token needed: health probes), ModelReady, ServerMetadata,
  ModelMetadata, ModelConfig, ModelInfer (unary: FRAME_OUT holds the n >= 0 outputs that became
  ready, stacked) and ModelStreamInfer (decoupled: one response per output frame, in order, each with
  the parameters ``sequence_id`` and ``frame_index``; a refused request answers with
  ``error_message`` and the stream stays usable, as in Triton).
- Each stream handles its requests one after the other (the next request is read when the previous
  one is answered), so a fast client is pushed back by HTTP/2 flow control; streams run
  concurrently, and the model work runs on worker threads (the batcher batches across them).
- The server runs its own event loop on a thread; :class:`GrpcServer` starts and stops it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vdeblur.errors import ServiceError, UsageError, missing_dependency
from vdeblur.serve.protocol import DATATYPE, MAX_SIDE, OUTPUT, InferRequest, SequenceId, parse_request
from vdeblur.serve.sequences import Output
from vdeblur.serve.service import Service

_INT64_MAX = 2**63 - 1
MAX_MESSAGE = MAX_SIDE * MAX_SIDE * 3 + (1 << 20)  # the largest frame a request may carry, plus its header


def _modules() -> tuple[Any, Any, Any]:
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError as e:
        raise missing_dependency("tritonclient[grpc]", "serve", "`vdeblur serve` (gRPC)") from e
    return grpc, service_pb2, service_pb2_grpc


def _param(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _set_id(params: Any, sid: SequenceId | None) -> None:
    if sid is None:
        return
    if isinstance(sid, str):
        params["sequence_id"].string_param = sid
    elif sid > _INT64_MAX:
        params["sequence_id"].uint64_param = sid
    else:
        params["sequence_id"].int64_param = sid


def parse(request: Any) -> InferRequest:
    """A ModelInferRequest -> a validated request (ServiceError INVALID_ARGUMENT otherwise)."""
    if request.model_version not in ("", "1"):
        raise ServiceError(f"model {request.model_name!r}: version {request.model_version!r} does not exist. "
                           "Expected version 1.", "NOT_FOUND")
    params = {k: _param(v) for k, v in request.parameters.items()}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ServiceError(f"request: {len(raw)} raw input contents for {len(request.inputs)} inputs. "
                           "Expected one per input.")
    inputs = []
    for i, t in enumerate(request.inputs):
        values = None if raw else list(t.contents.uint_contents)
        inputs.append((t.name, t.datatype, list(t.shape), raw[i] if raw else None, values))
    outputs = [o.name for o in request.outputs] or None
    return parse_request(request.model_name, inputs, params, request.id, outputs)


def servicer(service: Service, executor: ThreadPoolExecutor) -> Any:
    """The servicer, a subclass of tritonclient's generated ``GRPCInferenceServiceServicer`` (the
    methods it does not override answer UNIMPLEMENTED)."""
    grpc, pb, pbg = _modules()

    def response(req: InferRequest, outputs: list[Output]) -> Any:
        r = pb.ModelInferResponse(model_name=req.model, model_version="1", id=req.request_id)
        _set_id(r.parameters, req.sequence_id)
        r.parameters["frame_count"].int64_param = len(outputs)
        if outputs:
            r.parameters["frame_index"].int64_param = outputs[0][0]
            frames = outputs[0][1][None] if len(outputs) == 1 else np.stack([f for _, f in outputs])
            r.outputs.add(name=OUTPUT, datatype=DATATYPE, shape=list(frames.shape))
            r.raw_output_contents.append(frames.tobytes())
        return r

    class _Servicer(pbg.GRPCInferenceServiceServicer):  # type: ignore[misc,name-defined]
        async def _abort(self, context: Any, e: ServiceError) -> None:
            await context.abort(getattr(grpc.StatusCode, e.status), str(e))

        async def _authorized(self, context: Any, model: str | None = None) -> None:
            try:
                service.authorize(dict(context.invocation_metadata()).get("authorization"), model)
            except ServiceError as e:
                await self._abort(context, e)

        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=service.ready)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            await self._authorized(context)
            return pb.ModelReadyResponse(ready=service.model_ready(request.name, request.version))

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            await self._authorized(context)
            return pb.ServerMetadataResponse(**service.server_metadata())

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            await self._authorized(context)
            try:
                meta = service.model_metadata(request.name, request.version)
            except ServiceError as e:
                await self._abort(context, e)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                            inputs=[tensor(**t) for t in meta["inputs"]],
                                            outputs=[tensor(**t) for t in meta["outputs"]])

        async def ModelConfig(self, request: Any, context: Any) -> Any:
            await self._authorized(context)
            try:
                return pb.ModelConfigResponse(config=service.model_config(request.name, request.version))
            except ServiceError as e:
                await self._abort(context, e)

        async def _run(self, request: Any) -> tuple[InferRequest, list[Output]]:
            try:
                req = parse(request)
            except ServiceError as e:
                service.refuse(request.model_name, e)
                raise
            arrived = service.admit(req.model)
            loop = asyncio.get_running_loop()
            return req, await loop.run_in_executor(executor, service.infer, req, arrived)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            await self._authorized(context, request.model_name)
            try:
                req, outputs = await self._run(request)
            except ServiceError as e:
                await self._abort(context, e)
            return response(req, outputs)

        async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
            await self._authorized(context)
            async for request in request_iterator:
                try:
                    req, outputs = await self._run(request)
                except ServiceError as e:
                    yield pb.ModelStreamInferResponse(error_message=str(e))
                    continue
                for out in outputs:
                    r = response(req, [out])
                    if req.empty_final:
                        r.parameters["triton_final_response"].bool_param = False
                    yield pb.ModelStreamInferResponse(infer_response=r)
                if req.empty_final:  # Triton's marker: this request has no more responses
                    r = pb.ModelInferResponse(model_name=req.model, model_version="1", id=req.request_id)
                    _set_id(r.parameters, req.sequence_id)
                    r.parameters["triton_final_response"].bool_param = True
                    yield pb.ModelStreamInferResponse(infer_response=r)

    return _Servicer()


class GrpcServer:
    """grpc.aio server on its own thread: ``start()`` binds and returns the port, ``stop(grace)``
    lets in-flight RPCs finish for up to ``grace`` seconds."""

    def __init__(self, service: Service, host: str, port: int, workers: int) -> None:
        self.service, self.host, self.port = service, host, port
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vdeblur-grpc")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> int:
        grpc, _, pbg = _modules()
        servicer_obj = servicer(self.service, self.executor)

        async def main() -> None:
            self._done = asyncio.Event()
            try:
                self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                                        ("grpc.max_send_message_length", -1),
                                                        ("grpc.so_reuseport", 0)])
                pbg.add_GRPCInferenceServiceServicer_to_server(servicer_obj, self._server)
                self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
                await self._server.start()
            except BaseException as e:  # noqa: BLE001 - reported to start()'s caller
                self._error = e
                self._started.set()
                return
            self._started.set()
            await self._done.wait()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="vdeblur-grpc-loop", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise UsageError(f"--grpc-port {self.port}: cannot listen on {self.host}:{self.port} ({self._error}). "
                             "Expected a free port (0 picks one).") from self._error
        return int(self.port)

    def stop(self, grace: float) -> None:
        if self._thread is None or self._loop is None or self._loop.is_closed():
            return

        async def shutdown() -> None:
            await self._server.stop(grace)
            assert self._done is not None
            self._done.set()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=grace + 10)
        except RuntimeError:  # the loop already stopped
            pass
        self._thread.join(timeout=grace + 10)
        self.executor.shutdown(wait=True, cancel_futures=True)
