"""The client against a real gateway and the emulator (see run.py)."""

from __future__ import annotations

import asyncio
import os
import time
import unittest
from typing import List, Tuple

import grpc
from google.protobuf import struct_pb2

import emulator
from flowgate import NO_RETRY, AsyncClient, Client, FlowgateError, RetryPolicy, pb

ADDR = os.environ["FLOWGATE_ADDR"]
KEYS = {name: os.environ[f"FLOWGATE_KEY_{name.upper()}"] for name in ("app", "narrow", "tight", "metered")}
C = grpc.StatusCode
STREAM_TIMEOUT = 20.0


def request(provider: str, inputs: dict, **workflow: object) -> pb.InvokeRequest:
    target = pb.WorkflowTarget(provider=provider, **workflow)
    message = struct_pb2.Struct()
    message.update(inputs)
    return pb.InvokeRequest(target=target, inputs=message)


def fh_summarize() -> pb.InvokeRequest:
    return request("fh", {"topic": "gRPC gateways"}, deployment=pb.Deployment(name="summarize", variant="default"))


def tutor(workflow_id: str, inputs: dict) -> pb.InvokeRequest:
    return request("tutor", inputs, workflow_id=workflow_id)


def knouds(slug: str, inputs: dict, provider: str = "kn") -> pb.InvokeRequest:
    return request(provider, inputs, slug=slug)


class Recorder:
    """An ``on_retry`` hook that remembers every retry."""

    def __init__(self) -> None:
        self.retries: List[Tuple[FlowgateError, float, int]] = []

    def __call__(self, error: FlowgateError, delay: float, attempt: int) -> None:
        self.retries.append((error, delay, attempt))


class Gateway(unittest.TestCase):
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = Client(ADDR, api_key=KEYS["app"])

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    def tearDown(self) -> None:
        emulator.clear_faults()

    def failure(self, call, *args, **kwargs) -> FlowgateError:  # type: ignore[no-untyped-def]
        with self.assertRaises(FlowgateError) as raised:
            call(*args, **kwargs)
        return raised.exception

    # --- per dialect, a synchronous Invoke -----------------------------------

    def test_sync_invoke_per_dialect(self) -> None:
        cases = {
            "fh": fh_summarize(),
            "tutor": tutor("wf_story", {"story": "a dragon learns Rust"}),
            "kn": knouds("summarize-text", {"text": "flowgate translates gRPC to REST"}),
        }
        for provider, message in cases.items():
            with self.subTest(provider=provider):
                invoked = self.client.invoke(message, timeout=15)
                response = invoked.response
                self.assertEqual(response.status, pb.RUN_STATUS_COMPLETED)
                self.assertEqual(response.provider, provider)
                self.assertTrue(response.run_id)
                self.assertTrue(response.HasField("output"))
                self.assertFalse(invoked.replayed)
                # The provider's window, typed from x-ratelimit-* metadata.
                self.assertIsNotNone(invoked.rate_limit)
                assert invoked.rate_limit is not None
                self.assertIsNotNone(invoked.rate_limit.limit)
                self.assertLessEqual(invoked.rate_limit.remaining, invoked.rate_limit.limit)
                # The caller's balance, typed from x-flowgate-* metadata.
                assert invoked.quota is not None
                self.assertLess(invoked.quota.requests_remaining, 1000)
                self.assertIsNotNone(invoked.quota.requests_reset_after)
                self.assertLessEqual(invoked.quota.credits_remaining, 1000.0)

    # --- async runs, streamed to the terminal event --------------------------

    def test_async_run_followed_to_completion(self) -> None:
        message = knouds("render-video", {"prompt": "a fox"})
        message.async_options.enabled = True
        started = self.client.invoke(message, timeout=15).response
        self.assertIn(started.status, (pb.RUN_STATUS_QUEUED, pb.RUN_STATUS_RUNNING))
        events = list(self.client.stream_status(started.run_id, timeout=STREAM_TIMEOUT))
        self.assertEqual(events[-1].status, pb.RUN_STATUS_COMPLETED)
        self.assertTrue(all(e.run_id == started.run_id for e in events))
        self.assertTrue(events[-1].HasField("output"))
        # A finished run's stream answers its terminal event at once.
        final = self.client.wait_for_run(started.run_id, timeout=STREAM_TIMEOUT)
        self.assertEqual(final.status, pb.RUN_STATUS_COMPLETED)
        self.assertEqual(final.output, events[-1].output)

    def test_async_client_invokes_and_streams(self) -> None:
        async def scenario() -> None:
            async with AsyncClient(ADDR, api_key=KEYS["app"]) as client:
                message = tutor("wf_story", {"story": "an async dragon"})
                message.async_options.enabled = True
                invoked = await client.invoke(message, timeout=15)
                started = invoked.response
                self.assertTrue(started.run_id)
                # grpc.aio metadata, typed the same way.
                assert invoked.quota is not None
                self.assertIsNotNone(invoked.quota.requests_remaining)
                statuses = [e.status async for e in client.stream_status(started.run_id, timeout=STREAM_TIMEOUT)]
                self.assertEqual(statuses[-1], pb.RUN_STATUS_COMPLETED)
                final = await client.wait_for_run(started.run_id, timeout=STREAM_TIMEOUT)
                self.assertEqual(final.status, pb.RUN_STATUS_COMPLETED)
                self.assertTrue(final.HasField("output"))
                with self.assertRaises(FlowgateError) as raised:
                    await client.invoke(tutor("wf_unpublished", {"story": "x"}), timeout=15)
                self.assertEqual(raised.exception.code, C.NOT_FOUND)
                assert raised.exception.details.resource_info is not None
                self.assertEqual(raised.exception.details.resource_info.resource_type, "aitutor.workflow")
                self.assertIsNotNone(raised.exception.quota)
                schema = await client.get_workflow_schema(pb.WorkflowTarget(provider="kn", slug="summarize-text"), timeout=15)
                self.assertIn("text", [f.name for f in schema.fields])

        asyncio.run(scenario())

    # --- one typed error per class -------------------------------------------

    def test_invalid_argument_carries_bad_request(self) -> None:
        error = self.failure(self.client.invoke, tutor("wf_story", {}), timeout=15)
        self.assertEqual(error.code, C.INVALID_ARGUMENT)
        self.assertEqual(error.domain, "aitutor")
        assert error.details.bad_request is not None
        fields = [v.field for v in error.details.bad_request.field_violations]
        self.assertIn("inputs.story", fields)
        # The error answer carries the caller's balance too.
        self.assertIsNotNone(error.quota)

    def test_not_found_carries_resource_info(self) -> None:
        error = self.failure(self.client.invoke, tutor("wf_unpublished", {"story": "x"}), timeout=15)
        self.assertEqual(error.code, C.NOT_FOUND)
        assert error.details.resource_info is not None
        self.assertEqual(error.details.resource_info.resource_type, "aitutor.workflow")
        self.assertEqual(error.details.resource_info.resource_name, "wf_unpublished")
        # A forged run id: NOT_FOUND / UNKNOWN_RUN, not retried.
        recorder = Recorder()
        error = self.failure(self.client.wait_for_run, "fgr_forged", timeout=5, retry=RetryPolicy(on_retry=recorder))
        self.assertEqual((error.code, error.reason), (C.NOT_FOUND, "UNKNOWN_RUN"))
        self.assertEqual(recorder.retries, [])

    def test_permission_denied_carries_error_info(self) -> None:
        with Client(ADDR, api_key=KEYS["narrow"]) as narrow:
            error = self.failure(narrow.invoke, knouds("summarize-text", {"text": "x"}), timeout=15)
        self.assertEqual(error.code, C.PERMISSION_DENIED)
        info = error.details.error_info
        assert info is not None
        self.assertEqual((info.reason, info.domain), ("CALLER_CAPABILITY_DENIED", "flowgate"))
        self.assertEqual(info.metadata["required_capability"], "invoke:kn/summarize-text")

    def test_resource_exhausted_carries_quota_failure_and_retry_info(self) -> None:
        with Client(ADDR, api_key=KEYS["tight"]) as tight:
            tight.invoke(knouds("summarize-text", {"text": "one"}), timeout=15)
            started = time.monotonic()
            error = self.failure(tight.invoke, knouds("summarize-text", {"text": "two"}), timeout=15)
        self.assertEqual((error.code, error.reason), (C.RESOURCE_EXHAUSTED, "CALLER_QUOTA_EXCEEDED"))
        assert error.details.quota_failure is not None and error.details.retry_info is not None
        self.assertEqual(error.details.quota_failure.violations[0].subject, "caller:tight")
        delay = error.details.retry_info.retry_delay.total_seconds()
        self.assertTrue(0 < delay <= 3600, delay)
        assert error.quota is not None
        self.assertEqual(error.quota.requests_remaining, 0)
        # An hour does not fit in the call's 15 s: raised at once, not waited for.
        self.assertLess(time.monotonic() - started, 5)

    def test_unavailable_paid_run_is_not_retried_without_a_key(self) -> None:
        path = "/api/workflows/summarize-text/run"
        before = emulator.count("POST", path)
        emulator.inject(dialect="knouds", path_contains=path, status=503, body="{}", times=1)
        recorder = Recorder()
        message = knouds("summarize-text", {"text": "unavailable"})
        error = self.failure(self.client.invoke, message, timeout=15, retry=RetryPolicy(on_retry=recorder))
        self.assertEqual(error.code, C.UNAVAILABLE)
        assert error.details.error_info is not None
        self.assertEqual(error.details.error_info.domain, "knouds")
        self.assertEqual(error.details.error_info.metadata.get("http_status"), "503")
        # A run may have started upstream: one attempt, no retry.
        self.assertEqual(recorder.retries, [])
        self.assertEqual(emulator.count("POST", path), before + 1)
        # The fault was spent: the same call would have worked.
        self.assertEqual(self.client.invoke(message, timeout=15).response.status, pb.RUN_STATUS_COMPLETED)

    def test_deadline(self) -> None:
        emulator.inject(dialect="aitutor", path_contains="wf_research", latency_ms=3000, times=1)
        started = time.monotonic()
        recorder = Recorder()
        message = tutor("wf_research", {"topic": "deadlines"})
        error = self.failure(self.client.invoke, message, timeout=0.5, retry=RetryPolicy(on_retry=recorder))
        self.assertEqual(error.code, C.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - started, 2.5)
        # A paid run that may have started: not retried.
        self.assertEqual(recorder.retries, [])

    # --- the retry helper ----------------------------------------------------

    def test_retries_a_safe_error(self) -> None:
        path = "/api/workflows/no-input/schema"
        before = emulator.count("GET", path)
        emulator.inject(dialect="knouds", path_contains=path, status=503, body="{}", times=1)
        recorder = Recorder()
        target = pb.WorkflowTarget(provider="kn", slug="no-input")
        # The gateway remembers a failed fetch for schemas.failure_ttl (200 ms
        # here); the first retry waits at least 0.5 s.
        policy = RetryPolicy(initial_backoff=1.0, on_retry=recorder)
        schema = self.client.get_workflow_schema(target, timeout=15, retry=policy)
        self.assertTrue(schema.name)
        self.assertEqual([(e.code, attempt) for e, _, attempt in recorder.retries], [(C.UNAVAILABLE, 1)])
        self.assertEqual(emulator.count("GET", path), before + 2)

    def test_retry_honours_retry_info(self) -> None:
        with Client(ADDR, api_key=KEYS["metered"]) as metered:
            message = knouds("summarize-text", {"text": "metered"})
            for _ in range(3):
                # Spend the 2 s window, then call again through the helper.
                refusal = None
                for _ in range(3):
                    try:
                        metered.invoke(message, timeout=15, retry=NO_RETRY)
                    except FlowgateError as error:
                        refusal = error
                        break
                self.assertIsNotNone(refusal, "the 1-per-2s quota never refused")
                recorder = Recorder()
                started = time.monotonic()
                invoked = metered.invoke(message, timeout=15, retry=RetryPolicy(on_retry=recorder))
                if recorder.retries:  # else the window turned in between: again
                    break
            self.assertEqual(invoked.response.status, pb.RUN_STATUS_COMPLETED)
            [(error, delay, attempt)] = recorder.retries
            self.assertEqual((error.code, error.reason, attempt), (C.RESOURCE_EXHAUSTED, "CALLER_QUOTA_EXCEEDED", 1))
            assert error.details.retry_info is not None
            self.assertEqual(delay, error.details.retry_info.retry_delay.total_seconds())
            self.assertGreaterEqual(time.monotonic() - started, delay)


if __name__ == "__main__":
    unittest.main()
