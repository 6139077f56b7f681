"""The retry policy on its own: which errors are retried, and how long it waits."""

from __future__ import annotations

import unittest
from datetime import timedelta

import grpc

from flowgate import ErrorDetails, ErrorInfo, FlowgateError, RetryInfo, RetryPolicy, is_safe
from flowgate.retry import retry_delay

C = grpc.StatusCode


def error(code: grpc.StatusCode, reason: str = "", retry_after: float = -1) -> FlowgateError:
    info = ErrorInfo(reason, "flowgate") if reason else None
    retry = RetryInfo(timedelta(seconds=retry_after)) if retry_after >= 0 else None
    return FlowgateError(code, "m", ErrorDetails(error_info=info, retry_info=retry), {})


class SafetyTable(unittest.TestCase):
    def test_refusals_with_retry_info_are_safe_for_paid_runs(self) -> None:
        for reason in ("CALLER_QUOTA_EXCEEDED", "RATE_LIMIT_WINDOW_EXHAUSTED", "OVERLOADED"):
            self.assertTrue(is_safe(error(C.RESOURCE_EXHAUSTED, reason, 1), paid=True, idempotency_key=False))
        # Credits spent, concurrency: no RetryInfo, waiting does not help.
        self.assertFalse(is_safe(error(C.RESOURCE_EXHAUSTED, "insufficient_credits"), paid=True, idempotency_key=True))

    def test_nothing_sent_upstream_is_safe(self) -> None:
        for reason in ("CIRCUIT_OPEN", "UPSTREAM_UNREACHABLE", "STATE_STORE_UNAVAILABLE", "SHUTTING_DOWN"):
            self.assertTrue(is_safe(error(C.UNAVAILABLE, reason), paid=True, idempotency_key=False))

    def test_a_paid_run_that_may_have_started_is_never_retried_without_a_key(self) -> None:
        for code, reason in (
            (C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
            (C.UNAVAILABLE, ""),  # the answer was lost on the way
            (C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
            (C.DEADLINE_EXCEEDED, ""),
            (C.INTERNAL, "internal_server_error"),
        ):
            self.assertFalse(is_safe(error(code, reason), paid=True, idempotency_key=False), (code, reason))

    def test_a_key_makes_a_lost_answer_safe_but_not_a_stored_one(self) -> None:
        self.assertTrue(is_safe(error(C.UNAVAILABLE), paid=True, idempotency_key=True))
        # flowgate stored this answer under the key: a retry would replay it.
        self.assertFalse(is_safe(error(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"), paid=True, idempotency_key=True))
        self.assertTrue(is_safe(error(C.DEADLINE_EXCEEDED, "IDEMPOTENT_REQUEST_IN_FLIGHT", 1), paid=True, idempotency_key=True))

    def test_reads_retry_transient_failures_only(self) -> None:
        self.assertTrue(is_safe(error(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"), paid=False, idempotency_key=False))
        self.assertTrue(is_safe(error(C.DEADLINE_EXCEEDED, "RUN_WATCH_LIMIT"), paid=False, idempotency_key=False))
        for code in (C.INVALID_ARGUMENT, C.NOT_FOUND, C.PERMISSION_DENIED, C.UNAUTHENTICATED, C.FAILED_PRECONDITION, C.INTERNAL):
            self.assertFalse(is_safe(error(code, "X"), paid=False, idempotency_key=False), code)


class Delays(unittest.TestCase):
    def test_retry_info_is_the_wait(self) -> None:
        e = error(C.RESOURCE_EXHAUSTED, "LOCAL_RATE_LIMIT", 1.5)
        self.assertEqual(retry_delay(e, 1, RetryPolicy(), paid=True, idempotency_key=False), 1.5)

    def test_a_wait_past_the_deadline_or_the_cap_ends_the_retries(self) -> None:
        e = error(C.RESOURCE_EXHAUSTED, "CALLER_QUOTA_EXCEEDED", 30)
        self.assertIsNone(retry_delay(e, 1, RetryPolicy(), paid=True, idempotency_key=False, remaining=10))
        self.assertIsNone(retry_delay(e, 1, RetryPolicy(max_delay=20), paid=True, idempotency_key=False))

    def test_attempts_are_bounded_and_backoff_is_capped(self) -> None:
        e = error(C.UNAVAILABLE, "CIRCUIT_OPEN")
        policy = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=0.15)
        for attempt in (1, 2):
            delay = retry_delay(e, attempt, policy, paid=True, idempotency_key=False)
            self.assertIsNotNone(delay)
            self.assertLessEqual(delay, 0.15)
        self.assertIsNone(retry_delay(e, 3, policy, paid=True, idempotency_key=False))


if __name__ == "__main__":
    unittest.main()
