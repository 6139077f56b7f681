// The client against a real gateway and the provider emulator, started by
// tests/typescript_client.rs (FLOWGATE_URL), over gRPC and the Connect
// protocol (JSON and binary): every call below goes through the gateway.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  RunStatus,
  errorDetails,
  flowgateClient,
  followRun,
  invokeWithRateLimit,
  invokeWithRetry,
  outputJson,
  waitForRun,
  withRetry,
  type FlowgateClient,
  type Protocol,
} from "../src/index.js";

const baseUrl = process.env.FLOWGATE_URL;
if (baseUrl === undefined) {
  throw new Error("FLOWGATE_URL is not set: run this through tests/typescript_client.rs");
}

/** The details of the error `call` must fail with. */
async function failure(call: () => Promise<unknown>) {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof ConnectError, `not a ConnectError: ${String(error)}`);
    return errorDetails(error);
  }
  assert.fail("the call succeeded");
}

const protocols: Protocol[] = ["grpc", "connect-json", "connect-binary"];

for (const protocol of protocols) {
  describe(`over ${protocol}`, () => {
    const client: FlowgateClient = flowgateClient({ baseUrl, protocol });

    it("runs a workflow synchronously on every dialect", async () => {
      const { response, rateLimit } = await invokeWithRateLimit(client, {
        target: { provider: "fh", workflow: { case: "deployment", value: { name: "summarize", variant: "default" } } },
        inputs: { topic: "enterprise AI" },
      });
      assert.equal(response.status, RunStatus.COMPLETED);
      assert.match(String(outputJson(response.output)), /enterprise AI/);
      assert.equal(response.provider, "fh");
      assert.ok(rateLimit.remaining !== undefined, "x-ratelimit-remaining is sent");
      assert.equal(BigInt(rateLimit.remaining), response.rateLimit?.remaining);

      const tutor = await client.invoke({
        target: { provider: "tutor", workflow: { case: "workflowId", value: "wf_research" } },
        inputs: { topic: "gRPC gateways" },
      });
      assert.equal(tutor.status, RunStatus.COMPLETED);
      assert.ok(tutor.citations.length > 0);

      const knouds = await client.invoke({
        target: { provider: "kn", workflow: { case: "slug", value: "summarize-text" } },
        inputs: { text: `typed ${protocol}` },
      });
      assert.equal(knouds.status, RunStatus.COMPLETED);
      assert.equal(knouds.provider, "kn");
    });

    it("streams an async run to its terminal event", async () => {
      const accepted = await client.invoke({
        target: { provider: "kn", workflow: { case: "slug", value: "render-video" } },
        inputs: { prompt: "a fox" },
        asyncOptions: { enabled: true },
      });
      assert.equal(accepted.status, RunStatus.RUNNING);
      const statuses: RunStatus[] = [];
      let output: unknown;
      for await (const event of followRun(client, accepted.runId, { timeoutMs: 15_000 })) {
        statuses.push(event.status);
        output = outputJson(event.output);
      }
      assert.deepEqual(statuses, [RunStatus.RUNNING, RunStatus.COMPLETED]);
      assert.match((output as { url: string }).url, /\.mp4$/);
      const last = await waitForRun(client, accepted.runId, { timeoutMs: 15_000 });
      assert.equal(last.status, RunStatus.COMPLETED);
    });

    it("decodes the details of each error class", async () => {
      const invalid = await failure(() => client.invoke({ inputs: { a: 1 } }));
      assert.equal(invalid.code, Code.InvalidArgument);
      assert.match(invalid.badRequest?.fieldViolations[0]?.field ?? "", /^target/);

      const missing = await failure(() =>
        client.invoke({
          target: { provider: "fh", workflow: { case: "deployment", value: { name: "no-such-deployment", variant: "default" } } },
        }),
      );
      assert.equal(missing.code, Code.NotFound);
      assert.equal(missing.resourceInfo?.resourceType, "fetchhive.deployment");
      assert.equal(missing.domain, "fetchhive");

      const unknownRun = await failure(async () => {
        for await (const _ of client.streamStatus({ runId: "not-a-run" })) {
          // no event comes
        }
      });
      assert.equal(unknownRun.code, Code.NotFound);
      assert.equal(unknownRun.reason, "UNKNOWN_RUN");

      const broke = await failure(() =>
        client.invoke({ target: { provider: "kn-broke", workflow: { case: "slug", value: "summarize-text" } }, inputs: { text: "x" } }),
      );
      assert.equal(broke.code, Code.ResourceExhausted);
      assert.ok(broke.quotaFailure !== undefined && broke.quotaFailure.violations.length > 0);

      const trial = await failure(() =>
        client.invoke({ target: { provider: "kn-trial", workflow: { case: "slug", value: "summarize-text" } }, inputs: { text: "x" } }),
      );
      assert.equal(trial.code, Code.FailedPrecondition);
      assert.equal(trial.reason, "grant_exhausted");
      assert.equal(trial.preconditionFailure?.violations[0]?.type, "PLAN");

      const scoped = await failure(() =>
        client.invoke({ target: { provider: "kn-scoped", workflow: { case: "slug", value: "render-video" } }, inputs: { prompt: "x" } }),
      );
      assert.equal(scoped.code, Code.PermissionDenied);
      assert.equal(scoped.reason, "CAPABILITY_DENIED");
      assert.equal(scoped.metadata.required_capability, "workflow:render-video:run");

      const badKey = await failure(() =>
        client.invoke({ target: { provider: "kn-badkey", workflow: { case: "slug", value: "summarize-text" } }, inputs: { text: "x" } }),
      );
      assert.equal(badKey.code, Code.Unauthenticated);
      assert.equal(badKey.reason, "UPSTREAM_CREDENTIAL_REJECTED");

      const outage = await failure(() =>
        client.invoke({ target: { provider: "fh-outage", workflow: { case: "deployment", value: { name: "model-outage", variant: "default" } } } }),
      );
      assert.equal(outage.code, Code.Unavailable);
      assert.equal(outage.reason, "model_provider_error");

      const limited = { target: { provider: "kn-limited", workflow: { case: "slug" as const, value: "summarize-text" } }, inputs: { text: "x" } };
      const spent = await failure(async () => {
        // The window holds one call: the second (at the latest) is refused.
        await client.invoke(limited);
        await client.invoke(limited);
      });
      assert.equal(spent.code, Code.ResourceExhausted);
      assert.equal(spent.reason, "LOCAL_RATE_LIMIT");
      assert.ok((spent.retryDelayMs ?? 0) > 0 && (spent.retryDelayMs ?? 0) <= 2_000, `${spent.retryDelayMs}`);
    });

    it("ends a call at its deadline", async () => {
      const accepted = await client.invoke({
        target: { provider: "kn", workflow: { case: "slug", value: "render-video" } },
        inputs: { prompt: "slow" },
        asyncOptions: { enabled: true },
      });
      const late = await failure(async () => {
        for await (const _ of client.streamStatus({ runId: accepted.runId }, { timeoutMs: 50 })) {
          // the run completes after the deadline
        }
      });
      assert.equal(late.code, Code.DeadlineExceeded);
    });

    it("retries only what is safe", async () => {
      // Refused by the gateway before any upstream call: retried after
      // RetryInfo even without an idempotency key.
      const limited = { target: { provider: "kn-limited", workflow: { case: "slug" as const, value: "summarize-text" } }, inputs: { text: "x" } };
      await client.invoke(limited).catch(() => undefined);
      const retries: string[] = [];
      const response = await invokeWithRetry(client, limited, {
        maxAttempts: 4,
        onRetry: (_, error) => retries.push(error.reason ?? ""),
      });
      assert.equal(response.status, RunStatus.COMPLETED);
      assert.ok(retries.length >= 1 && retries.every((reason) => reason === "LOCAL_RATE_LIMIT"), retries.join());

      // An upstream outage may have started a paid run: never retried
      // without a key, retried with one.
      const outage = { target: { provider: "fh-outage", workflow: { case: "deployment" as const, value: { name: "model-outage", variant: "default" } } } };
      let attempts = 0;
      const unkeyed = await failure(() =>
        withRetry(
          () => {
            attempts++;
            return client.invoke(outage);
          },
          { paidRun: true, maxAttempts: 3, baseDelayMs: 10 },
        ),
      );
      assert.equal(unkeyed.code, Code.Unavailable);
      assert.equal(attempts, 1);
      const keyedRetries: number[] = [];
      const keyed = await failure(() =>
        invokeWithRetry(
          client,
          { ...outage, idempotencyKey: `outage-${protocol}-${Date.now()}` },
          { maxAttempts: 3, baseDelayMs: 10, onRetry: (attempt) => keyedRetries.push(attempt) },
        ),
      );
      assert.equal(keyed.code, Code.Unavailable);
      assert.deepEqual(keyedRetries, [1, 2]);

      // Errors the caller must fix are never retried.
      let fixes = 0;
      await failure(() =>
        withRetry(
          () => {
            fixes++;
            return client.invoke({ inputs: { a: 1 } });
          },
          { paidRun: false, baseDelayMs: 10 },
        ),
      );
      assert.equal(fixes, 1);
    });
  });
}
