"""Retries only what flowgate's error table says is safe.

:func:`retry_delay` is the whole policy (see the table in this package's
README): a refusal that proves no run started and says when to come back
is retried after its ``RetryInfo``; an answer after which a paid run *may*
have started upstream is never retried. Reads (StreamStatus,
GetWorkflowSchema, VerifyWebhook) cost nothing, so any transient failure of
theirs is retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, TypeVar

import grpc

from .errors import FlowgateError

T = TypeVar("T")

# UNAVAILABLE reasons flowgate answers before anything was sent upstream.
NOTHING_SENT = frozenset(
    {"CIRCUIT_OPEN", "UPSTREAM_UNREACHABLE", "STATE_STORE_UNAVAILABLE", "SHUTTING_DOWN"}
)
# A stream the gateway stopped following: reopening it is how to go on.
STREAM_REOPEN = frozenset({"RUN_POLL_GAVE_UP", "RUN_WATCH_FAILED", "RUN_WATCH_LIMIT"})


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them.

    ``max_attempts`` counts the first one. Without ``RetryInfo`` the wait
    doubles from ``initial_backoff`` up to ``max_backoff``, jittered down by
    up to half; a ``RetryInfo`` longer than ``max_delay``, or one that
    does not fit in the call's remaining timeout, ends the retries.
    ``on_retry(error, delay_seconds, attempt)`` is called before each wait.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    max_delay: float = 60.0
    on_retry: Optional[Callable[[FlowgateError, float, int], None]] = None


NO_RETRY = RetryPolicy(max_attempts=1)


def is_safe(error: FlowgateError, *, paid: bool, idempotency_key: bool) -> bool:
    """True when calling again cannot start a second paid run.

    ``paid``: the call is an Invoke (a run that costs credits);
    ``idempotency_key``: it carries one.
    """
    code, reason = error.code, error.reason
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # A refusal: nothing ran. Waiting only helps when flowgate says how long.
        return error.details.retry_info is not None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and reason == "IDEMPOTENT_REQUEST_IN_FLIGHT":
        return True
    if code == grpc.StatusCode.UNAVAILABLE and reason in NOTHING_SENT:
        return True
    if not paid:
        return code == grpc.StatusCode.UNAVAILABLE or reason in STREAM_REOPEN
    # A paid run that may have started. Only a key makes another attempt
    # safe, and only when the answer was lost on the way (no ErrorInfo):
    # flowgate stores its own such answers under the key and replays them.
    return idempotency_key and not error.from_gateway and code == grpc.StatusCode.UNAVAILABLE


def retry_delay(
    error: FlowgateError,
    attempt: int,
    policy: RetryPolicy,
    *,
    paid: bool,
    idempotency_key: bool,
    remaining: Optional[float] = None,
) -> Optional[float]:
    """Seconds to wait before attempt ``attempt + 1``, or None: do not retry."""
    if attempt >= policy.max_attempts:
        return None
    if not is_safe(error, paid=paid, idempotency_key=idempotency_key):
        return None
    retry_info = error.details.retry_info
    if retry_info is not None:
        delay = max(retry_info.retry_delay.total_seconds(), 0.0)
        if delay > policy.max_delay:
            return None
    else:
        ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
    if remaining is not None and delay >= remaining:
        return None
    return delay


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.monotonic()


def call(
    attempt_once: Callable[[Optional[float]], T],
    *,
    timeout: Optional[float],
    policy: RetryPolicy,
    paid: bool,
    idempotency_key: bool,
) -> T:
    """Runs ``attempt_once(timeout_left)`` until it succeeds or may not be retried."""
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 1
    while True:
        try:
            return attempt_once(_remaining(deadline))
        except FlowgateError as error:
            delay = retry_delay(
                error,
                attempt,
                policy,
                paid=paid,
                idempotency_key=idempotency_key,
                remaining=_remaining(deadline),
            )
            if delay is None:
                raise
            if policy.on_retry:
                policy.on_retry(error, delay, attempt)
            time.sleep(delay)
            attempt += 1


async def call_async(
    attempt_once: Callable[[Optional[float]], Awaitable[T]],
    *,
    timeout: Optional[float],
    policy: RetryPolicy,
    paid: bool,
    idempotency_key: bool,
) -> T:
    """:func:`call` for ``grpc.aio``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 1
    while True:
        try:
            return await attempt_once(_remaining(deadline))
        except FlowgateError as error:
            delay = retry_delay(
                error,
                attempt,
                policy,
                paid=paid,
                idempotency_key=idempotency_key,
                remaining=_remaining(deadline),
            )
            if delay is None:
                raise
            if policy.on_retry:
                policy.on_retry(error, delay, attempt)
            await asyncio.sleep(delay)
            attempt += 1
