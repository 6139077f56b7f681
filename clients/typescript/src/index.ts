// @flowgate/client: the generated WorkflowGateway types and service, and the
// typed layer over them (errors, rate-limit metadata, retries, streams).
export * from "./gen/flowgate/v1/gateway_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export { flowgateClient, flowgateTransport, type FlowgateClient, type FlowgateOptions, type Protocol } from "./client.js";
export { errorDetails, type FlowgateErrorDetails } from "./errors.js";
export { rateLimitFrom, type RateLimitMetadata } from "./ratelimit.js";
export { REFUSED_BEFORE_UPSTREAM, invokeWithRetry, retryDelayMs, withRetry, type RetryPolicy } from "./retry.js";
export { followRun, invokeWithRateLimit, isTerminal, outputJson, waitForRun } from "./stream.js";
