"""``FlowgateError``: a failed call with its details decoded."""

from __future__ import annotations

from typing import Mapping, Optional

import grpc
from grpc_status import rpc_status

from . import details as _details
from .metadata import CallerQuota, RateLimit, as_dict


class FlowgateError(Exception):
    """A call flowgate (or the transport) answered with a non-OK status.

    ``code`` is the ``grpc.StatusCode``; ``details`` the decoded
    ``google.rpc`` details (:class:`flowgate.details.ErrorDetails`);
    ``rate_limit`` and ``quota`` the response metadata, when sent. An error
    without ``ErrorInfo`` did not come from flowgate's error table (for
    example a connection that failed, or the client's own deadline).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: _details.ErrorDetails,
        metadata: Mapping[str, str],
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.metadata = dict(metadata)
        self.rate_limit: Optional[RateLimit] = RateLimit.from_metadata(self.metadata)
        self.quota: Optional[CallerQuota] = CallerQuota.from_metadata(self.metadata)

    @property
    def reason(self) -> Optional[str]:
        """``ErrorInfo.reason``, when flowgate sent one."""
        info = self.details.error_info
        return info.reason if info else None

    @property
    def domain(self) -> Optional[str]:
        """``ErrorInfo.domain``, when flowgate sent one."""
        info = self.details.error_info
        return info.domain if info else None

    @property
    def from_gateway(self) -> bool:
        """True when flowgate itself answered (the error carries ``ErrorInfo``)."""
        return self.details.error_info is not None

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "FlowgateError":
        """Decodes a ``grpc.RpcError`` or ``grpc.aio.AioRpcError``."""
        code = error.code()
        message = error.details() or ""
        try:
            status = rpc_status.from_call(error)
        except ValueError:
            # A status trailer that disagrees with the call's own status is
            # not trusted.
            status = None
        initial = getattr(error, "initial_metadata", None)
        metadata = as_dict(
            initial() if callable(initial) else None,
            error.trailing_metadata(),
        )
        return cls(code, message, _details.decode(status), metadata)
