// Retries only what the README's error table says is safe to retry, and a
// paid run (Invoke) only when a repeat cannot start a second run: the
// request carries an idempotency_key, or the gateway refused it before any
// upstream call.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, type CallOptions } from "@connectrpc/connect";

import type { FlowgateClient } from "./client.js";
import { errorDetails, type FlowgateErrorDetails } from "./errors.js";
import { InvokeRequestSchema, type InvokeResponse } from "./gen/flowgate/v1/gateway_pb.js";

/** Reasons flowgate answers before calling the provider: no run started. */
export const REFUSED_BEFORE_UPSTREAM: ReadonlySet<string> = new Set([
  "OVERLOADED",
  "LOCAL_RATE_LIMIT",
  "RATE_LIMIT_WINDOW_EXHAUSTED",
  "CIRCUIT_OPEN",
  "CALLER_QUOTA_EXCEEDED",
]);

export interface RetryPolicy {
  /** Attempts in all, the first included. Default 3. */
  maxAttempts?: number;
  /** First backoff when the error names no delay; doubles, with jitter. Default 200 ms. */
  baseDelayMs?: number;
  /** No wait is longer (a longer RetryInfo ends the retries). Default 10 s. */
  maxDelayMs?: number;
  /** True for a call that may start a paid run (Invoke). */
  paidRun: boolean;
  /** True when the paid run carries an `idempotency_key`. */
  idempotent?: boolean;
  /** Stops waiting between attempts. */
  signal?: AbortSignal;
  /** Told before each retry. */
  onRetry?: (attempt: number, error: FlowgateErrorDetails, delayMs: number) => void;
}

/**
 * How long to wait before retrying after `error` (attempt `attempt`, from
 * 1), or `undefined` when it must not be retried:
 * - UNAVAILABLE: after RetryInfo, else exponential backoff;
 * - RESOURCE_EXHAUSTED with RetryInfo (rate windows, OVERLOADED, caller
 *   quotas that reset): after RetryInfo; without it (credits, concurrency
 *   caps) never;
 * - DEADLINE_EXCEEDED with reason IDEMPOTENT_REQUEST_IN_FLIGHT: after RetryInfo;
 * - anything else never (fix the request, the key or the plan first);
 * - a paid run only with an idempotency key, or when the reason is one of
 *   {@link REFUSED_BEFORE_UPSTREAM}.
 */
export function retryDelayMs(
  error: FlowgateErrorDetails,
  attempt: number,
  policy: RetryPolicy,
): number | undefined {
  const base = policy.baseDelayMs ?? 200;
  const max = policy.maxDelayMs ?? 10_000;
  const backoff = Math.min(max, base * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
  let delay: number | undefined;
  switch (error.code) {
    case Code.Unavailable:
      delay = error.retryDelayMs ?? backoff;
      break;
    case Code.ResourceExhausted:
      delay = error.retryDelayMs;
      break;
    case Code.DeadlineExceeded:
      delay = error.reason === "IDEMPOTENT_REQUEST_IN_FLIGHT" ? (error.retryDelayMs ?? backoff) : undefined;
      break;
    default:
      delay = undefined;
  }
  if (delay === undefined || delay > max) {
    return undefined;
  }
  const safe = !policy.paidRun || policy.idempotent === true || REFUSED_BEFORE_UPSTREAM.has(error.reason ?? "");
  return safe ? delay : undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `call` until it succeeds or {@link retryDelayMs} says stop; the last error is thrown. */
export async function withRetry<T>(call: () => Promise<T>, policy: RetryPolicy): Promise<T> {
  const maxAttempts = Math.max(1, policy.maxAttempts ?? 3);
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const details = errorDetails(error);
      const delay = attempt < maxAttempts ? retryDelayMs(details, attempt, policy) : undefined;
      if (delay === undefined) {
        throw error;
      }
      policy.onRetry?.(attempt, details, delay);
      await sleep(delay, policy.signal);
    }
  }
}

/** Invoke with {@link withRetry}: a paid run, idempotent when the request has a key. */
export function invokeWithRetry(
  client: FlowgateClient,
  request: MessageInitShape<typeof InvokeRequestSchema>,
  policy: Omit<RetryPolicy, "paidRun" | "idempotent"> = {},
  options?: CallOptions,
): Promise<InvokeResponse> {
  const idempotent = (request.idempotencyKey ?? "") !== "";
  return withRetry(() => client.invoke(request, options), { ...policy, paidRun: true, idempotent });
}
