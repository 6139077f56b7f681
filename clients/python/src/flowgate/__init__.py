"""flowgate's Python client: the generated gRPC stubs (``flowgate.v1``) plus a
thin typed layer: decoded error details, typed rate-limit and quota
metadata, a retry helper that retries only what is safe, and following a
run's status stream to its terminal event.

``flowgate.v1`` is generated from ``proto/`` by grpcio-tools when the
package is built (or by ``codegen.py``); it is never committed.
"""

from .aio import AsyncClient
from .client import Client
from .details import (
    BadRequest,
    ErrorDetails,
    ErrorInfo,
    FieldViolation,
    PreconditionFailure,
    PreconditionViolation,
    QuotaFailure,
    QuotaViolation,
    ResourceInfo,
    RetryInfo,
)
from .errors import FlowgateError
from .metadata import CallerQuota, RateLimit
from .results import TERMINAL, Invoked, is_terminal
from .retry import NO_RETRY, RetryPolicy, is_safe
from .v1 import gateway_pb2 as pb

__all__ = [
    "AsyncClient",
    "BadRequest",
    "CallerQuota",
    "Client",
    "ErrorDetails",
    "ErrorInfo",
    "FieldViolation",
    "FlowgateError",
    "Invoked",
    "NO_RETRY",
    "PreconditionFailure",
    "PreconditionViolation",
    "QuotaFailure",
    "QuotaViolation",
    "RateLimit",
    "ResourceInfo",
    "RetryInfo",
    "RetryPolicy",
    "TERMINAL",
    "is_safe",
    "is_terminal",
    "pb",
]
