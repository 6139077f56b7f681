// Following a run: StreamStatus to its terminal event, and Invoke with the
// rate-limit metadata of its answer.
import { toJson, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import type { CallOptions } from "@connectrpc/connect";

import type { FlowgateClient } from "./client.js";
import { errorDetails } from "./errors.js";
import {
  InvokeRequestSchema,
  RunStatus,
  type InvokeResponse,
  type RunStatusEvent,
} from "./gen/flowgate/v1/gateway_pb.js";
import { rateLimitFrom, type RateLimitMetadata } from "./ratelimit.js";
import { retryDelayMs, type RetryPolicy } from "./retry.js";

/** A run's `output` (a `google.protobuf.Value`) as plain JSON; `undefined` when absent. */
export function outputJson(output: Value | undefined): JsonValue | undefined {
  return output === undefined ? undefined : toJson(ValueSchema, output);
}

/** True for COMPLETED, FAILED and CANCELLED: nothing follows. */
export function isTerminal(status: RunStatus): boolean {
  return status === RunStatus.COMPLETED || status === RunStatus.FAILED || status === RunStatus.CANCELLED;
}

/**
 * Every status of run `runId` until its terminal event, which is the last
 * one yielded. A stream the gateway ended early with a retryable status
 * (UNAVAILABLE: shutting down, a lost watch) is reopened, at most
 * `policy.maxAttempts` times in all; a stream that ends without a terminal
 * event otherwise is an error.
 */
export async function* followRun(
  client: FlowgateClient,
  runId: string,
  options?: CallOptions,
  policy: Omit<RetryPolicy, "paidRun"> = {},
): AsyncGenerator<RunStatusEvent, void, undefined> {
  const maxAttempts = Math.max(1, policy.maxAttempts ?? 3);
  for (let attempt = 1; ; attempt++) {
    try {
      for await (const event of client.streamStatus({ runId }, options)) {
        yield event;
        if (isTerminal(event.status)) {
          return;
        }
      }
      throw new Error(`the status stream of ${runId} ended before the run did`);
    } catch (error) {
      const details = errorDetails(error);
      const delay = attempt < maxAttempts ? retryDelayMs(details, attempt, { ...policy, paidRun: false }) : undefined;
      if (delay === undefined) {
        throw error;
      }
      policy.onRetry?.(attempt, details, delay);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** The terminal event of run `runId` (see {@link followRun}). */
export async function waitForRun(
  client: FlowgateClient,
  runId: string,
  options?: CallOptions,
): Promise<RunStatusEvent> {
  let last: RunStatusEvent | undefined;
  for await (const event of followRun(client, runId, options)) {
    last = event;
  }
  if (last === undefined) {
    throw new Error(`no status for run ${runId}`);
  }
  return last;
}

/** Invoke, with the `x-ratelimit-*` metadata of the answer as typed values. */
export async function invokeWithRateLimit(
  client: FlowgateClient,
  request: MessageInitShape<typeof InvokeRequestSchema>,
  options?: CallOptions,
): Promise<{ response: InvokeResponse; rateLimit: RateLimitMetadata }> {
  let headers = new Headers();
  const response = await client.invoke(request, {
    ...options,
    onHeader: (received) => {
      headers = received;
      options?.onHeader?.(received);
    },
  });
  return { response, rateLimit: rateLimitFrom(headers) };
}
