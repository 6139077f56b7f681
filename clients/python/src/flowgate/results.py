"""What the clients return: an Invoke answer with its metadata, and runs'
terminal states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import grpc

from . import details as _details
from .errors import FlowgateError
from .metadata import REPLAYED_HEADER, CallerQuota, RateLimit
from .v1 import gateway_pb2 as pb

TERMINAL = frozenset(
    {pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_CANCELLED}
)


def is_terminal(status: int) -> bool:
    """True for COMPLETED, FAILED and CANCELLED: the run will not change again."""
    return status in TERMINAL


@dataclass(frozen=True)
class Invoked:
    """An Invoke answer: the response and its typed response metadata."""

    response: pb.InvokeResponse
    rate_limit: Optional[RateLimit]
    quota: Optional[CallerQuota]
    replayed: bool
    """True when flowgate replayed a stored answer for the idempotency key."""

    @classmethod
    def from_metadata(cls, response: pb.InvokeResponse, md: Mapping[str, str]) -> "Invoked":
        return cls(
            response=response,
            rate_limit=RateLimit.from_metadata(md),
            quota=CallerQuota.from_metadata(md),
            replayed=md.get(REPLAYED_HEADER) == "true",
        )


def stream_ended_early(run_id: str) -> FlowgateError:
    """The error for a StreamStatus stream that closed OK before a terminal event."""
    return FlowgateError(
        grpc.StatusCode.UNKNOWN,
        f"the status stream of {run_id} ended before the run's terminal event",
        _details.ErrorDetails(),
        {},
    )


def call_metadata(api_key: Optional[str], extra: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The request metadata: the caller's key (``authorization: Bearer``) and ``extra``."""
    md = [("authorization", f"Bearer {api_key}")] if api_key else []
    md.extend(extra)
    return md


def attempt_timeout(remaining: Optional[float]) -> Optional[float]:
    """A gRPC timeout for an attempt with ``remaining`` seconds left."""
    return None if remaining is None else max(remaining, 0.001)
