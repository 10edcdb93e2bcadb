"""Prometheus metrics of `vdeblur serve`, in the text exposition format 0.0.4 (GET /metrics).

Triton's names where Triton has the quantity (so dashboards built for Triton work), labelled
``{model="<name>",version="1"}``: ``nv_inference_request_success`` / ``_failure`` (requests),
``nv_inference_count`` (frames in), ``nv_inference_exec_count`` (backend calls; count / exec_count
is the mean batch), the cumulative microsecond counters ``nv_inference_request_duration_us``,
``nv_inference_queue_duration_us``, ``nv_inference_compute_infer_duration_us``, and the gauge
``nv_inference_pending_request_count``. vdeblur's own, prefixed ``vdeblur_``: active sequences, queue
depth (submissions waiting for the backend), frames out, sequences started / ended / expired,
rejected requests by reason, and the request latency histogram.

Hand-written: prometheus_client's Counter would append ``_total``/``_created`` and change Triton's
names. Thread-safe (one lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (frames in)",
    "nv_inference_exec_count": "Number of model executions performed (backend calls, batched)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in microseconds",
    "vdeblur_frames_out_total": "Output frames sent",
    "vdeblur_sequences_started_total": "Sequences started",
    "vdeblur_sequences_ended_total": "Sequences ended by sequence_end",
    "vdeblur_sequences_expired_total": "Sequences freed after the idle timeout",
}
_GAUGES = {
    "nv_inference_pending_request_count": "Requests admitted and not yet answered",
    "vdeblur_active_sequences": "Sequences holding state",
    "vdeblur_queue_depth": "Steps and clip windows waiting for the backend",
}
REJECT_REASONS = ("auth", "full", "invalid", "unavailable", "not_found", "internal")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class Metrics:
    """Counters, gauges and the latency histogram of every served model."""

    def __init__(self, models: list[str]) -> None:
        self._lock = threading.Lock()
        self.models = list(models)
        self._values: dict[tuple[str, str], float] = {(n, m): 0 for n in _COUNTERS for m in models}
        self._gauges: dict[tuple[str, str], Callable[[], float]] = {}
        self._rejected: dict[tuple[str, str], int] = {(m, r): 0 for m in models for r in REJECT_REASONS}
        self._buckets: dict[str, list[int]] = {m: [0] * len(LATENCY_BUCKETS) for m in models}
        self._latency_sum: dict[str, float] = dict.fromkeys(models, 0.0)
        self._latency_count: dict[str, int] = dict.fromkeys(models, 0)

    def add(self, name: str, model: str, value: float = 1) -> None:
        with self._lock:
            self._values[(name, model)] += value

    def gauge(self, name: str, model: str, read: Callable[[], float]) -> None:
        """A gauge read when scraped."""
        self._gauges[(name, model)] = read

    def reject(self, model: str, reason: str) -> None:
        if model not in self.models:  # an unknown model name is counted under no model
            return
        with self._lock:
            self._rejected[(model, reason)] += 1

    def request(self, model: str, seconds: float, ok: bool) -> None:
        """One answered request: success or failure, its duration in the histogram."""
        with self._lock:
            self._values[("nv_inference_request_success" if ok else "nv_inference_request_failure", model)] += 1
            self._values[("nv_inference_request_duration_us", model)] += int(seconds * 1e6)
            if ok:
                for i, le in enumerate(LATENCY_BUCKETS):
                    if seconds <= le:
                        self._buckets[model][i] += 1
                self._latency_sum[model] += seconds
                self._latency_count[model] += 1

    def value(self, name: str, model: str) -> float:
        with self._lock:
            if name == "vdeblur_rejected_requests_total":
                return sum(v for (m, _), v in self._rejected.items() if m == model)
            return self._values[(name, model)]

    def render(self) -> str:
        """The whole exposition, text format 0.0.4."""
        lines: list[str] = []
        with self._lock:
            values = dict(self._values)
            rejected = dict(self._rejected)
            buckets = {m: list(b) for m, b in self._buckets.items()}
            lsum, lcount = dict(self._latency_sum), dict(self._latency_count)
        labels = {m: f'model="{_escape(m)}",version="1"' for m in self.models}
        for name, help_text in _COUNTERS.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            lines += [f"{name}{{{labels[m]}}} {_num(values[(name, m)])}" for m in self.models]
        for name, help_text in _GAUGES.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for m in self.models:
                read = self._gauges.get((name, m))
                lines.append(f"{name}{{{labels[m]}}} {_num(read() if read else 0)}")
        name = "vdeblur_rejected_requests_total"
        lines += [f"# HELP {name} Requests refused before inference, by reason", f"# TYPE {name} counter"]
        lines += [f'{name}{{{labels[m]},reason="{r}"}} {rejected[(m, r)]}' for m in self.models for r in REJECT_REASONS]
        name = "vdeblur_request_duration_seconds"
        lines += [f"# HELP {name} Successful request latency, from arrival to answer", f"# TYPE {name} histogram"]
        for m in self.models:
            for le, count in zip(LATENCY_BUCKETS, buckets[m], strict=True):
                lines.append(f'{name}_bucket{{{labels[m]},le="{le}"}} {count}')
            lines.append(f'{name}_bucket{{{labels[m]},le="+Inf"}} {lcount[m]}')
            lines.append(f"{name}_sum{{{labels[m]}}} {_num(lsum[m])}")
            lines.append(f"{name}_count{{{labels[m]}}} {lcount[m]}")
        return "\n".join(lines) + "\n"
