"""Sequences: each is one :class:`vdeblur.runtime.stream.Stream` with its own state, on a shared model.

Semantics (Triton's sequence batcher where it has one, stated where it does not):

- a sequence is keyed by (model, sequence_id); ``sequence_start`` opens it (on an id already open it
  starts the sequence over, dropping its pending frames, as Triton does); a request without START
  for an unknown id is refused (INVALID_ARGUMENT, Triton's wording); ``sequence_end`` flushes it:
  its pending outputs come with that request's answer, and its state is freed;
- a request without a sequence_id is a one-frame sequence of its own (START and END at once);
- every frame of a sequence has the size of its first: a frame of another size is refused
  (INVALID_ARGUMENT) and the sequence goes on untouched; start a new sequence for a new size;
- frames of one sequence run in arrival order, one at a time; different sequences run concurrently
  and share the model's backend (see :mod:`vdeblur.serve.batcher`);
- at most ``max_sequences`` sequences hold state per model: one more START is refused
  (RESOURCE_EXHAUSTED) without touching the others; at most ``max_queue`` requests wait per model;
- a sequence idle for ``sequence_timeout`` seconds is freed (its state and pending outputs dropped);
- while draining (shutdown), new sequences are refused (UNAVAILABLE); open ones go on.

Requests are validated before they get here (:mod:`vdeblur.serve.protocol`); any refusal is a
:class:`vdeblur.errors.ServiceError` and leaves every sequence as it was.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import ServiceError, VdeblurError
from vdeblur.runtime.backends import open_backend
from vdeblur.runtime.stream import Stream
from vdeblur.serve.batcher import Batcher, SequenceBackend
from vdeblur.serve.metrics import Metrics
from vdeblur.serve.protocol import InferRequest, SequenceId

Output = tuple[int, np.ndarray]  # (frame_index, (H, W, 3) uint8)


@dataclass
class _Sequence:
    id: SequenceId | None
    stream: Stream
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_seen: float = field(default_factory=time.monotonic)
    size: tuple[int, int] | None = None
    busy: int = 0  # requests inside or waiting for the lock
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        self.stream.close()


class ServedModel:
    """One artifact served under a name: its backend behind a batcher, its open sequences."""

    def __init__(self, name: str, artifact: str | Path, backend: str = "onnxruntime", precision: str = "fp32",
                 device: str = "auto", max_batch: int = 8, threads: int | None = None,
                 window: int | None = None, overlap: int | None = None) -> None:
        options: dict[str, Any] = {"threads": threads} if threads else {}
        opened = open_backend(artifact, backend, precision=precision, device=device, **options)
        self.name = name
        self.artifact = Path(artifact)
        self.backend_name = backend
        self.precision = precision
        self.iface = opened.iface
        self.window, self.overlap = window, overlap
        self.on_batch: Any = None  # set by the table: metrics of each backend call
        self.batcher = Batcher(opened, max_batch, on_batch=lambda n, q, c: self.on_batch and self.on_batch(n, q, c))
        probe = self.new_stream()  # fails now, not at the first request, when window/overlap do not fit
        self.lookahead: int = probe.lookahead
        self.window, self.overlap = probe.window, probe.overlap
        probe.close()

    def new_stream(self) -> Stream:
        return Stream(backend=SequenceBackend(self.batcher), window=self.window, overlap=self.overlap)

    def describe(self) -> dict[str, Any]:
        iface = self.iface
        out: dict[str, Any] = {"name": self.name, "artifact": str(self.artifact), "kind": iface.kind,
                               "backend": self.backend_name, "precision": self.precision,
                               "lookahead": self.lookahead, "max_batch": self.batcher.max_batch,
                               "family": iface.manifest.model.get("family")}
        if iface.kind == "clip":
            out.update(window=self.window, overlap=self.overlap)
        return out

    def close(self) -> None:
        self.batcher.close()


class SequenceTable:
    """The open sequences of every served model, their limits and their timeouts."""

    def __init__(self, models: dict[str, ServedModel], metrics: Metrics, max_sequences: int = 64,
                 max_queue: int = 256, sequence_timeout: float = 60.0) -> None:
        if max_sequences < 1 or max_queue < 1 or sequence_timeout <= 0:
            raise ServiceError("server: --max-sequences, --max-queue and --sequence-timeout must be positive.")
        self.models = models
        self.metrics = metrics
        self.max_sequences = max_sequences
        self.max_queue = max_queue
        self.timeout = float(sequence_timeout)
        self.draining = False
        self._lock = threading.Lock()
        self._open: dict[tuple[str, SequenceId], _Sequence] = {}
        self._pending: dict[str, int] = dict.fromkeys(models, 0)
        for name, model in models.items():
            model.on_batch = self._batch_metrics(name)
            metrics.gauge("vdeblur_active_sequences", name, lambda n=name: self.active(n))
            metrics.gauge("vdeblur_queue_depth", name, lambda m=model: m.batcher.depth)
            metrics.gauge("nv_inference_pending_request_count", name, lambda n=name: self._pending[n])

    def _batch_metrics(self, name: str) -> Any:
        def record(size: int, queued: float, compute: float) -> None:
            self.metrics.add("nv_inference_exec_count", name)
            self.metrics.add("nv_inference_queue_duration_us", name, int(queued * 1e6))
            self.metrics.add("nv_inference_compute_infer_duration_us", name, int(compute * 1e6))
        return record

    # ----- queries ---------------------------------------------------------------------------

    def model(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise ServiceError(f"model {name!r}: not served here. Expected one of {sorted(self.models)}.",
                               "NOT_FOUND")
        return model

    def active(self, model: str | None = None) -> int:
        with self._lock:
            return sum(1 for (m, _) in self._open if model is None or m == model)

    def pending(self) -> int:
        with self._lock:
            return sum(self._pending.values())

    def state_bytes(self) -> int:
        with self._lock:
            seqs = list(self._open.values())
        return sum(s.stream.backend.state_bytes() for s in seqs if isinstance(s.stream.backend, SequenceBackend))

    # ----- admission (before a request is queued on a worker thread) -------------------------

    def admit(self, model: str) -> None:
        """Count a request in; refuse it when the model's queue is full (RESOURCE_EXHAUSTED)."""
        self.model(model)
        with self._lock:
            if self._pending[model] >= self.max_queue:
                raise ServiceError(f"model {model!r}: {self._pending[model]} requests are waiting (--max-queue "
                                   f"{self.max_queue}). Retry later.", "RESOURCE_EXHAUSTED")
            self._pending[model] += 1

    def release(self, model: str) -> None:
        with self._lock:
            self._pending[model] -= 1

    # ----- inference ---------------------------------------------------------------------------

    def infer(self, req: InferRequest) -> list[Output]:
        """Push one frame into its sequence; the outputs that became ready, in order (at
        ``sequence_end``, every output still pending)."""
        model = self.model(req.model)
        h, w = req.frame.shape[:2]
        if req.sequence_id is None:
            return self._one_frame(model, req.frame)
        seq = self._acquire(model, req)
        try:
            with seq.lock:
                if seq.closed:  # expired or restarted while this request waited for the lock
                    raise ServiceError(f"sequence {req.sequence_id}: it ended while this request waited "
                                       f"(timeout or a new sequence_start). Start it again.")
                if seq.size is not None and seq.size != (h, w):
                    raise ServiceError(f"sequence {req.sequence_id}: frame is {w}x{h}, but the sequence started at "
                                       f"{seq.size[1]}x{seq.size[0]}. Expected one size per sequence: end it and "
                                       "start a new sequence for the new size.")
                outputs = seq.stream.push(req.frame)
                seq.size = (h, w)
                if req.end:
                    outputs += seq.stream.flush()
                    self._remove(model.name, seq, "vdeblur_sequences_ended_total")
                self.metrics.add("nv_inference_count", model.name)
                self.metrics.add("vdeblur_frames_out_total", model.name, len(outputs))
                return outputs
        except VdeblurError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in one sequence must not take the server down
            self._remove(model.name, seq, None)
            raise ServiceError(f"sequence {req.sequence_id}: internal error ({type(e).__name__}: {e}); the "
                               "sequence was dropped. Start it again.", "INTERNAL") from e
        finally:
            with self._lock:
                seq.busy -= 1
                seq.last_seen = time.monotonic()

    def _one_frame(self, model: ServedModel, frame: np.ndarray) -> list[Output]:
        if self.draining:
            raise ServiceError("server: shutting down, no new sequences. Retry on another server.", "UNAVAILABLE")
        stream = model.new_stream()
        try:
            outputs = stream.push(frame) + stream.flush()
        finally:
            stream.close()
        self.metrics.add("nv_inference_count", model.name)
        self.metrics.add("vdeblur_frames_out_total", model.name, len(outputs))
        return outputs

    def _acquire(self, model: ServedModel, req: InferRequest) -> _Sequence:
        key = (model.name, req.sequence_id)
        assert req.sequence_id is not None
        with self._lock:
            seq = self._open.get(key)
            if req.start:
                if self.draining:
                    raise ServiceError("server: shutting down, no new sequences. Retry on another server.",
                                       "UNAVAILABLE")
                if seq is None and sum(1 for (m, _) in self._open if m == model.name) >= self.max_sequences:
                    raise ServiceError(f"model {model.name!r}: {self.max_sequences} sequences are open "
                                       f"(--max-sequences {self.max_sequences}). End one or retry later.",
                                       "RESOURCE_EXHAUSTED")
                if seq is not None:  # START on an open id starts it over (Triton's semantics)
                    seq.closed = True
                    old = seq
                else:
                    old = None
                seq = _Sequence(req.sequence_id, model.new_stream())
                self._open[key] = seq
                self.metrics.add("vdeblur_sequences_started_total", model.name)
            elif seq is None:
                raise ServiceError(f"inference request for sequence {req.sequence_id} to model '{model.name}' must "
                                   "specify the START flag on the first request of the sequence (it is not open: "
                                   "never started, ended, or freed after the idle timeout).")
            else:
                old = None
            seq.busy += 1
            seq.last_seen = time.monotonic()
        if old is not None:
            with old.lock:
                old.stream.close()
        return seq

    def _remove(self, model: str, seq: _Sequence, counter: str | None) -> None:
        with self._lock:
            key = (model, seq.id)
            if self._open.get(key) is seq:
                del self._open[key]
        seq.close()
        if counter:
            self.metrics.add(counter, model)

    # ----- housekeeping ------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Free the sequences idle for longer than the timeout (not those with a request in
        progress); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [(k, s) for k, s in self._open.items() if s.busy == 0 and now - s.last_seen > self.timeout]
            for k, _ in stale:
                del self._open[k]
        for (model, _), seq in stale:
            with seq.lock:
                seq.close()
            self.metrics.add("vdeblur_sequences_expired_total", model)
        return len(stale)

    def close(self) -> None:
        with self._lock:
            seqs = list(self._open.values())
            self._open.clear()
        for s in seqs:
            s.close()
