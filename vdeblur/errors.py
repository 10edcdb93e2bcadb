"""The error hierarchy of vdeblur.

Every message follows one style (DESIGN.md, "Style"):
``<subject>: <what happened>. <what was expected / how to fix>``
"""

from __future__ import annotations


class VdeblurError(Exception):
    """Base class of every error vdeblur raises on purpose (the CLI prints these without a traceback)."""

    exit_code = 1


class UsageError(VdeblurError):
    """Bad arguments: unknown names, out-of-range values, malformed options."""

    exit_code = 2


class ShapeError(VdeblurError):
    """Tensors of the wrong rank, size, dtype or device for an op or a model."""


class CheckpointError(VdeblurError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""


class ExportError(VdeblurError):
    """ONNX export, lowering or validation failed."""


class BackendError(VdeblurError):
    """A backend (ONNX Runtime, TensorRT, torch) could not be opened or run."""


class MissingDependencyError(VdeblurError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def missing_dependency(module: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error for a missing optional import, naming the extra to install."""
    return MissingDependencyError(
        f"{module}: not installed, but {purpose} needs it. "
        f"Install it with `pip install 'vdeblur[{extra}]'`."
    )


class ServiceError(VdeblurError):
    """A request the inference service refuses; ``status`` is the protocol status it answers with.

    Statuses are gRPC code names (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, RESOURCE_EXHAUSTED,
    UNAVAILABLE, INTERNAL); :data:`HTTP_STATUS` maps each to the HTTP status of the REST endpoint.
    """

    HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
                   "UNAVAILABLE": 503, "INTERNAL": 500}

    def __init__(self, message: str, status: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        if status not in self.HTTP_STATUS:
            raise ValueError(f"ServiceError: status {status!r} is unknown")
        self.status = status

    @property
    def http_status(self) -> int:
        return self.HTTP_STATUS[self.status]
