"""The synchronous client: ``grpc`` stubs plus typed answers and errors."""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Tuple, TypeVar

import grpc

from . import retry as _retry
from .errors import FlowgateError
from .metadata import as_dict
from .results import Invoked, attempt_timeout, call_metadata, is_terminal, stream_ended_early
from .v1 import gateway_pb2 as pb
from .v1 import gateway_pb2_grpc as pb_grpc

R = TypeVar("R")


class Client:
    """A flowgate client over one channel.

    ``target`` is ``host:port``; ``api_key`` the caller's key, sent as
    ``authorization: Bearer``; ``credentials`` makes it a TLS channel (the
    default is plaintext, for loopback). ``retry`` is the default
    :class:`~flowgate.retry.RetryPolicy` of every method.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: Optional[str] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        retry: _retry.RetryPolicy = _retry.RetryPolicy(),
    ) -> None:
        if credentials is None:
            self.channel = grpc.insecure_channel(target)
        else:
            self.channel = grpc.secure_channel(target, credentials)
        self.stub = pb_grpc.WorkflowGatewayStub(self.channel)
        self._api_key = api_key
        self._retry = retry

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def invoke(
        self,
        request: pb.InvokeRequest,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
        metadata: Sequence[Tuple[str, str]] = (),
    ) -> Invoked:
        """Runs a workflow. Retried only where the error table says it is safe
        (a paid run is never retried when it may have started)."""
        md = call_metadata(self._api_key, metadata)

        def once(remaining: Optional[float]) -> Invoked:
            try:
                response, call = self.stub.Invoke.with_call(
                    request, timeout=attempt_timeout(remaining), metadata=md
                )
            except grpc.RpcError as error:
                raise FlowgateError.from_rpc_error(error) from None
            return Invoked.from_metadata(response, as_dict(call.initial_metadata()))

        return _retry.call(
            once,
            timeout=timeout,
            policy=retry or self._retry,
            paid=True,
            idempotency_key=bool(request.idempotency_key),
        )

    def stream_status(
        self, run_id: str, *, timeout: Optional[float] = None
    ) -> Iterator[pb.RunStatusEvent]:
        """Every event of the run's status stream as it comes (no retries)."""
        call = self.stub.StreamStatus(
            pb.StreamStatusRequest(run_id=run_id),
            timeout=timeout,
            metadata=call_metadata(self._api_key, ()),
        )
        try:
            yield from call
        except grpc.RpcError as error:
            raise FlowgateError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def wait_for_run(
        self,
        run_id: str,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
    ) -> pb.RunStatusEvent:
        """Follows the run to its terminal event (COMPLETED, FAILED or
        CANCELLED) and returns it, reopening the stream where safe."""

        def once(remaining: Optional[float]) -> pb.RunStatusEvent:
            for event in self.stream_status(run_id, timeout=attempt_timeout(remaining)):
                if is_terminal(event.status):
                    return event
            raise stream_ended_early(run_id)

        return _retry.call(
            once, timeout=timeout, policy=retry or self._retry, paid=False, idempotency_key=False
        )

    def get_workflow_schema(
        self,
        target: pb.WorkflowTarget,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
    ) -> pb.GetWorkflowSchemaResponse:
        """A workflow's input fields."""
        request = pb.GetWorkflowSchemaRequest(target=target)
        return self._read(self.stub.GetWorkflowSchema, request, timeout, retry)

    def verify_webhook(
        self,
        request: pb.VerifyWebhookRequest,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
    ) -> pb.VerifyWebhookResponse:
        """Checks a webhook delivery's signature."""
        return self._read(self.stub.VerifyWebhook, request, timeout, retry)

    def _read(
        self,
        method: Callable[..., R],
        request: object,
        timeout: Optional[float],
        retry: Optional[_retry.RetryPolicy],
    ) -> R:
        md = call_metadata(self._api_key, ())

        def once(remaining: Optional[float]) -> R:
            try:
                return method(request, timeout=attempt_timeout(remaining), metadata=md)
            except grpc.RpcError as error:
                raise FlowgateError.from_rpc_error(error) from None

        return _retry.call(
            once, timeout=timeout, policy=retry or self._retry, paid=False, idempotency_key=False
        )
