"""The transport-neutral service: models, sequences, auth, metadata, config, metrics.

The gRPC servicer (:mod:`vdeblur.serve.grpc_server`) and the HTTP handler
(:mod:`vdeblur.serve.http_server`) translate the wire format and call this; both answer the same
requests with the same results and the same errors (:class:`vdeblur.errors.ServiceError`, whose
``status`` each maps to its own code).
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

from vdeblur import __version__
from vdeblur.errors import ServiceError, UsageError, VdeblurError, missing_dependency
from vdeblur.serve.metrics import Metrics
from vdeblur.serve.protocol import DATATYPE, EXTENSIONS, INPUT, OUTPUT, InferRequest, tensor_metadata
from vdeblur.serve.sequences import Output, SequenceTable, ServedModel

_REASON = {"UNAUTHENTICATED": "auth", "RESOURCE_EXHAUSTED": "full", "INVALID_ARGUMENT": "invalid",
           "UNAVAILABLE": "unavailable", "NOT_FOUND": "not_found", "INTERNAL": "internal"}


def model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2 as mc
    except ImportError as e:
        raise missing_dependency("tritonclient", "serve", "`vdeblur serve` (the Triton protocol definitions)") from e
    return mc


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped); refuses an empty file."""
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise UsageError(f"--token-file {path}: cannot read it ({e.strerror}). "
                         "Expected a file holding the token.") from e
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"--token-file {path}: holds no token or one with whitespace inside. Expected one line.")
    return token


class Service:
    """Everything both transports share. ``token``: the bearer token requests must carry (None: no auth)."""

    def __init__(self, models: dict[str, ServedModel], token: str | None = None, max_sequences: int = 64,
                 max_queue: int = 256, sequence_timeout: float = 60.0) -> None:
        self.models = models
        self.metrics = Metrics(list(models))
        self.table = SequenceTable(models, self.metrics, max_sequences=max_sequences, max_queue=max_queue,
                                   sequence_timeout=sequence_timeout)
        self._token = f"Bearer {token}".encode() if token else None

    # ----- auth and health ---------------------------------------------------------------------

    def authorize(self, header: str | None, model: str | None = None) -> None:
        """Check an ``Authorization`` header value; UNAUTHENTICATED when it is missing or wrong."""
        if self._token is None:
            return
        if header is None or not hmac.compare_digest(header.encode(), self._token):
            if model is not None:
                self.metrics.reject(model, "auth")
            raise ServiceError("request: missing or wrong token. Expected the header `authorization: Bearer <token>` "
                               "with the token of the server's --token-file.", "UNAUTHENTICATED")

    @property
    def ready(self) -> bool:
        return not self.table.draining

    def model_ready(self, name: str, version: str = "") -> bool:
        return name in self.models and version in ("", "1") and self.ready

    # ----- metadata and config -----------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "vdeblur", "version": __version__, "extensions": list(EXTENSIONS)}

    def _model(self, name: str, version: str = "") -> ServedModel:
        model = self.table.model(name)
        if version not in ("", "1"):
            raise ServiceError(f"model {name!r}: version {version!r} does not exist. Expected version 1.", "NOT_FOUND")
        return model

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self._model(name, version)
        inputs, outputs = tensor_metadata()
        return {"name": model.name, "versions": ["1"], "platform": "vdeblur", "inputs": inputs, "outputs": outputs}

    def model_config(self, name: str, version: str = "") -> Any:
        """The model's configuration as Triton's ``ModelConfig`` protobuf: I/O, sequence batching
        (idle timeout), decoupled streaming, and ``parameters`` with what a client needs to know."""
        model = self._model(name, version)
        mc = model_config_pb2()
        cfg = mc.ModelConfig(name=model.name, platform="vdeblur", backend=model.backend_name, max_batch_size=0)
        cfg.input.add(name=INPUT, data_type=mc.TYPE_UINT8, dims=[1, -1, -1, 3], format=mc.ModelInput.FORMAT_NHWC)
        cfg.output.add(name=OUTPUT, data_type=mc.TYPE_UINT8, dims=[-1, -1, -1, 3])
        cfg.sequence_batching.max_sequence_idle_microseconds = int(self.table.timeout * 1e6)
        cfg.sequence_batching.direct.SetInParent()
        cfg.model_transaction_policy.decoupled = True
        on_cpu = str(getattr(model.batcher.backend, "device", "cpu")).startswith("cpu")
        group = mc.ModelInstanceGroup
        cfg.instance_group.add(count=1, kind=group.KIND_CPU if on_cpu else group.KIND_GPU)
        for key, value in model.describe().items():
            if value is not None and key not in ("name", "artifact"):  # no server paths to clients
                cfg.parameters[f"vdeblur_{key}"].string_value = str(value)
        cfg.parameters["vdeblur_version"].string_value = __version__
        cfg.parameters["vdeblur_max_sequences"].string_value = str(self.table.max_sequences)
        return cfg

    def model_config_json(self, name: str, version: str = "") -> dict[str, Any]:
        from google.protobuf import json_format

        out = json_format.MessageToDict(self.model_config(name, version), preserving_proto_field_name=True)
        for section in ("input", "output"):  # int64 fields come out as strings: give numbers, as Triton does
            for t in out.get(section, []):
                t["dims"] = [int(d) for d in t.get("dims", [])]
        return out

    # ----- inference ----------------------------------------------------------------------------

    def admit(self, model: str) -> float:
        """Count a request in before it queues for a worker (RESOURCE_EXHAUSTED when the model's
        queue is full); returns its arrival time for :meth:`infer`."""
        t0 = time.perf_counter()
        try:
            self.table.admit(model)
        except ServiceError as e:
            self.refuse(model, e)
            raise
        return t0

    def infer(self, req: InferRequest, arrived: float) -> list[Output]:
        """Run an admitted request; records its metrics and releases its admission."""
        ok = False
        try:
            outputs = self.table.infer(req)
            ok = True
            return outputs
        except ServiceError as e:
            self.metrics.reject(req.model, _REASON[e.status])
            raise
        except VdeblurError as e:  # a backend failure: the sequence's state is intact (see batcher)
            raise ServiceError(f"model {req.model!r}: {e}", "INTERNAL") from e
        finally:
            self.table.release(req.model)
            self.metrics.request(req.model, time.perf_counter() - arrived, ok)

    def refuse(self, model: str, error: ServiceError) -> None:
        """Count a request refused before it was admitted (a malformed one)."""
        self.metrics.reject(model, _REASON[error.status])
        if model in self.models:
            self.metrics.request(model, 0.0, False)

    def close(self) -> None:
        self.table.close()
        for model in self.models.values():
            model.close()


def describe_outputs(outputs: list[Output]) -> dict[str, Any]:
    """Response parameters of a unary answer: the first frame index and the count."""
    if not outputs:
        return {"frame_count": 0}
    return {"frame_index": outputs[0][0], "frame_count": len(outputs)}


__all__ = ["DATATYPE", "Service", "describe_outputs", "model_config_pb2", "read_token"]
