"""The asyncio client (``grpc.aio``): the same methods as
:class:`flowgate.Client`, awaited."""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable, Optional, Sequence, Tuple, TypeVar

import grpc
import grpc.aio

from . import retry as _retry
from .errors import FlowgateError
from .metadata import as_dict
from .results import Invoked, attempt_timeout, call_metadata, is_terminal, stream_ended_early
from .v1 import gateway_pb2 as pb
from .v1 import gateway_pb2_grpc as pb_grpc

R = TypeVar("R")


class AsyncClient:
    """A flowgate client on a ``grpc.aio`` channel (see :class:`flowgate.Client`)."""

    def __init__(
        self,
        target: str,
        *,
        api_key: Optional[str] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        retry: _retry.RetryPolicy = _retry.RetryPolicy(),
    ) -> None:
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials)
        self.stub = pb_grpc.WorkflowGatewayStub(self.channel)
        self._api_key = api_key
        self._retry = retry

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def invoke(
        self,
        request: pb.InvokeRequest,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
        metadata: Sequence[Tuple[str, str]] = (),
    ) -> Invoked:
        """Runs a workflow (retried as :meth:`flowgate.Client.invoke` is)."""
        md = call_metadata(self._api_key, metadata)

        async def once(remaining: Optional[float]) -> Invoked:
            call = self.stub.Invoke(request, timeout=attempt_timeout(remaining), metadata=md)
            try:
                response = await call
                initial = await call.initial_metadata()
            except grpc.RpcError as error:
                raise FlowgateError.from_rpc_error(error) from None
            return Invoked.from_metadata(response, as_dict(initial))

        return await _retry.call_async(
            once,
            timeout=timeout,
            policy=retry or self._retry,
            paid=True,
            idempotency_key=bool(request.idempotency_key),
        )

    async def stream_status(
        self, run_id: str, *, timeout: Optional[float] = None
    ) -> AsyncIterator[pb.RunStatusEvent]:
        """Every event of the run's status stream as it comes (no retries)."""
        call = self.stub.StreamStatus(
            pb.StreamStatusRequest(run_id=run_id),
            timeout=timeout,
            metadata=call_metadata(self._api_key, ()),
        )
        try:
            async for event in call:
                yield event
        except grpc.RpcError as error:
            raise FlowgateError.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def wait_for_run(
        self,
        run_id: str,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
    ) -> pb.RunStatusEvent:
        """Follows the run to its terminal event and returns it."""

        async def once(remaining: Optional[float]) -> pb.RunStatusEvent:
            events = self.stream_status(run_id, timeout=attempt_timeout(remaining))
            try:
                async for event in events:
                    if is_terminal(event.status):
                        return event
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            raise stream_ended_early(run_id)

        return await _retry.call_async(
            once, timeout=timeout, policy=retry or self._retry, paid=False, idempotency_key=False
        )

    async def get_workflow_schema(
        self,
        target: pb.WorkflowTarget,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
    ) -> pb.GetWorkflowSchemaResponse:
        """A workflow's input fields."""
        request = pb.GetWorkflowSchemaRequest(target=target)
        return await self._read(self.stub.GetWorkflowSchema, request, timeout, retry)

    async def verify_webhook(
        self,
        request: pb.VerifyWebhookRequest,
        *,
        timeout: Optional[float] = None,
        retry: Optional[_retry.RetryPolicy] = None,
    ) -> pb.VerifyWebhookResponse:
        """Checks a webhook delivery's signature."""
        return await self._read(self.stub.VerifyWebhook, request, timeout, retry)

    async def _read(
        self,
        method: Callable[..., Awaitable[R]],
        request: object,
        timeout: Optional[float],
        retry: Optional[_retry.RetryPolicy],
    ) -> R:
        md = call_metadata(self._api_key, ())

        async def once(remaining: Optional[float]) -> R:
            try:
                return await method(request, timeout=attempt_timeout(remaining), metadata=md)
            except grpc.RpcError as error:
                raise FlowgateError.from_rpc_error(error) from None

        return await _retry.call_async(
            once, timeout=timeout, policy=retry or self._retry, paid=False, idempotency_key=False
        )
