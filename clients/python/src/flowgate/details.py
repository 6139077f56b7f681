"""The rich error details flowgate attaches to every error, as typed values.

flowgate sends a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer; its ``details`` are ``Any``-packed ``google.rpc`` messages. Reading
them takes ``grpcio-status`` (the trailer) and ``googleapis-common-protos``
(the message types); :func:`decode` does both and returns plain dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Dict, Mapping, Optional, Sequence

from google.rpc import error_details_pb2, status_pb2


@dataclass(frozen=True)
class ErrorInfo:
    """Why the call failed: ``reason`` is the vendor's code or flowgate's own,
    ``domain`` the provider kind (``fetchhive``, ``aitutor``, ``knouds``) or
    ``flowgate``, ``metadata`` e.g. ``provider``, ``http_status``,
    ``upstream_request_id``, ``required_capability``."""

    reason: str
    domain: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryInfo:
    """How long to wait before the same call can succeed."""

    retry_delay: timedelta


@dataclass(frozen=True)
class QuotaViolation:
    """One spent quota: ``subject`` e.g. ``caller:ci`` or ``upstream credits``."""

    subject: str
    description: str


@dataclass(frozen=True)
class QuotaFailure:
    violations: Sequence[QuotaViolation]


@dataclass(frozen=True)
class FieldViolation:
    """One wrong request field, e.g. ``inputs.story`` or ``target.slug``."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class BadRequest:
    field_violations: Sequence[FieldViolation]


@dataclass(frozen=True)
class PreconditionViolation:
    """A plan, tier or mode requirement: ``type`` is ``PLAN``, ``TIER``,
    ``MODE`` or ``IDEMPOTENCY``."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class PreconditionFailure:
    violations: Sequence[PreconditionViolation]


@dataclass(frozen=True)
class ResourceInfo:
    """The unknown resource, e.g. type ``aitutor.workflow``, name ``wf_x``."""

    resource_type: str
    resource_name: str
    owner: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """Every detail of one error; absent ones are ``None``."""

    error_info: Optional[ErrorInfo] = None
    retry_info: Optional[RetryInfo] = None
    quota_failure: Optional[QuotaFailure] = None
    bad_request: Optional[BadRequest] = None
    precondition_failure: Optional[PreconditionFailure] = None
    resource_info: Optional[ResourceInfo] = None


def _error_info(m: error_details_pb2.ErrorInfo) -> ErrorInfo:
    return ErrorInfo(reason=m.reason, domain=m.domain, metadata=dict(m.metadata))


def _retry_info(m: error_details_pb2.RetryInfo) -> RetryInfo:
    return RetryInfo(retry_delay=m.retry_delay.ToTimedelta())


def _quota_failure(m: error_details_pb2.QuotaFailure) -> QuotaFailure:
    return QuotaFailure(
        violations=tuple(QuotaViolation(v.subject, v.description) for v in m.violations)
    )


def _bad_request(m: error_details_pb2.BadRequest) -> BadRequest:
    return BadRequest(
        field_violations=tuple(
            FieldViolation(v.field, v.description, v.reason) for v in m.field_violations
        )
    )


def _precondition_failure(m: error_details_pb2.PreconditionFailure) -> PreconditionFailure:
    return PreconditionFailure(
        violations=tuple(
            PreconditionViolation(v.type, v.subject, v.description) for v in m.violations
        )
    )


def _resource_info(m: error_details_pb2.ResourceInfo) -> ResourceInfo:
    return ResourceInfo(m.resource_type, m.resource_name, m.owner, m.description)


# detail message type -> (ErrorDetails field, converter)
_DECODERS = (
    (error_details_pb2.ErrorInfo, "error_info", _error_info),
    (error_details_pb2.RetryInfo, "retry_info", _retry_info),
    (error_details_pb2.QuotaFailure, "quota_failure", _quota_failure),
    (error_details_pb2.BadRequest, "bad_request", _bad_request),
    (error_details_pb2.PreconditionFailure, "precondition_failure", _precondition_failure),
    (error_details_pb2.ResourceInfo, "resource_info", _resource_info),
)


def decode(status: Optional[status_pb2.Status]) -> ErrorDetails:
    """The typed details of a ``google.rpc.Status`` (unknown types are skipped;
    of a type sent twice, the first counts)."""
    if status is None:
        return ErrorDetails()
    found: Dict[str, Any] = {}
    for detail in status.details:
        for message_type, name, convert in _DECODERS:
            if name not in found and detail.Is(message_type.DESCRIPTOR):
                message = message_type()
                detail.Unpack(message)
                found[name] = convert(message)
                break
    return ErrorDetails(**found)
