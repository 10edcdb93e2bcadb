"""`vdeblur serve`: artifacts behind the KServe v2 / Triton protocol, over gRPC and HTTP/REST.

    with Server(["art/"], grpc_port=8001, http_port=8000) as server:   # binds 127.0.0.1
        server.wait()                                                    # until stop() or SIGTERM

Lifecycle: ``start()`` opens every artifact (one backend each, shared by its sequences), binds both
ports (0 picks a free one; ``grpc_port``/``http_port`` None leaves that endpoint off), and starts the
idle-sequence reaper; ``stop(grace)`` drains: readiness turns false, new sequences are refused
(UNAVAILABLE), requests in flight and open sequences are served for up to ``grace`` seconds, then
both endpoints close and the backends are released. :meth:`install_signal_handlers` makes SIGTERM
and SIGINT call ``stop``.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from vdeblur.errors import UsageError
from vdeblur.serve.grpc_server import GrpcServer
from vdeblur.serve.http_server import HttpServer
from vdeblur.serve.sequences import ServedModel
from vdeblur.serve.service import Service

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def model_names(artifacts: list[str | Path], name: str | None) -> list[str]:
    """Each artifact's model name: its directory name, or ``name`` (one artifact only)."""
    if not artifacts:
        raise UsageError("serve: no artifact given. Expected one or more artifact directories.")
    if name is not None and len(artifacts) != 1:
        raise UsageError(f"serve: --name with {len(artifacts)} artifacts. Expected --name with one artifact "
                         "(the others are named after their directories).")
    names = [name] if name is not None else [Path(a).resolve().name for a in artifacts]
    for n in names:
        if not n or n.startswith(".") or not set(n) <= _NAME_OK:
            raise UsageError(f"serve: model name {n!r} is not allowed. Expected letters, digits, '.', '_' or '-' "
                             "(rename the directory or pass --name).")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UsageError(f"serve: two artifacts would both be served as {sorted(dupes)}. Expected distinct "
                         "directory names.")
    return names


class Server:
    """The service, its gRPC and HTTP endpoints and its housekeeping, as one object with a lifecycle."""

    def __init__(self, artifacts: list[str | Path], *, host: str = "127.0.0.1", http_port: int | None = 8000,
                 grpc_port: int | None = 8001, backend: str = "onnxruntime", precision: str = "fp32",
                 device: str = "auto", name: str | None = None, token: str | None = None, max_sequences: int = 64,
                 max_queue: int = 256, sequence_timeout: float = 60.0, max_batch: int = 8,
                 threads: int | None = None, window: int | None = None, overlap: int | None = None) -> None:
        if http_port is None and grpc_port is None:
            raise UsageError("serve: both endpoints are off. Expected an HTTP port, a gRPC port, or both.")
        self.names = model_names(artifacts, name)
        self.artifacts = [Path(a) for a in artifacts]
        self.host = host
        self.http_port, self.grpc_port = http_port, grpc_port
        self._options = dict(backend=backend, precision=precision, device=device, max_batch=max_batch,
                             threads=threads, window=window, overlap=overlap)
        self._limits = dict(token=token, max_sequences=max_sequences, max_queue=max_queue,
                            sequence_timeout=sequence_timeout)
        self.service: Service | None = None
        self._grpc: GrpcServer | None = None
        self._http: HttpServer | None = None
        self._stopped = threading.Event()
        self._reaper: threading.Thread | None = None
        self._stop_lock = threading.Lock()

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Server:
        models: dict[str, ServedModel] = {}
        try:
            for n, a in zip(self.names, self.artifacts, strict=True):
                models[n] = ServedModel(n, a, **self._options)  # type: ignore[arg-type]
            self.service = Service(models, **self._limits)  # type: ignore[arg-type]
            if self.grpc_port is not None:
                workers = max(8, self.service.table.max_sequences * len(models) + 4)
                self._grpc = GrpcServer(self.service, self.host, self.grpc_port, workers)
                self.grpc_port = self._grpc.start()
            if self.http_port is not None:
                self._http = HttpServer(self.service, self.host, self.http_port)
                self.http_port = self._http.start()
        except BaseException:
            self._close_all(0.0)
            for m in models.values():
                m.close()
            raise
        self._reaper = threading.Thread(target=self._reap, name="vdeblur-reaper", daemon=True)
        self._reaper.start()
        return self

    def _reap(self) -> None:
        assert self.service is not None
        period = min(1.0, self.service.table.timeout / 4)
        while not self._stopped.wait(period):
            self.service.table.expire()

    def stop(self, grace: float = 10.0) -> None:
        """Drain for up to ``grace`` seconds (see the module docstring), then close everything."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self.service is not None:
                self.service.table.draining = True
                deadline = time.monotonic() + grace
                while self.service.table.pending() and time.monotonic() < deadline:
                    time.sleep(0.02)
            self._close_all(max(0.0, grace))
            self._stopped.set()

    def _close_all(self, grace: float) -> None:
        if self._grpc is not None:
            self._grpc.stop(min(grace, 1.0))
            self._grpc = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self.service is not None:
            self.service.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (True) or ``timeout`` passed (False)."""
        return self._stopped.wait(timeout)

    def install_signal_handlers(self, grace: float = 10.0) -> None:
        """SIGTERM and SIGINT drain and stop the server (main thread only)."""
        def handler(signum: int, frame: Any) -> None:
            threading.Thread(target=self.stop, args=(grace,), name="vdeblur-drain", daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def describe(self) -> dict[str, Any]:
        assert self.service is not None
        return {"host": self.host, "http_port": self.http_port, "grpc_port": self.grpc_port,
                "models": [m.describe() for m in self.service.models.values()],
                "auth": self._limits["token"] is not None, "max_sequences": self._limits["max_sequences"],
                "max_queue": self._limits["max_queue"], "sequence_timeout": self._limits["sequence_timeout"]}

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)
