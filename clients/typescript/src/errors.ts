// The rich details of a flowgate error (README "Errors"), decoded from the
// status whatever the protocol: gRPC's grpc-status-details-bin and Connect's
// error JSON carry the same google.rpc messages.
import { Code, ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type ErrorInfo,
  type PreconditionFailure,
  type QuotaFailure,
  type ResourceInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";
import { rateLimitFrom, type RateLimitMetadata } from "./ratelimit.js";

/** A failed call, with its details decoded. */
export interface FlowgateErrorDetails {
  /** The status code (`Code.ResourceExhausted`, …). */
  code: Code;
  /** The status code's name (`ResourceExhausted`). */
  codeName: string;
  message: string;
  /** `ErrorInfo.reason`: the upstream's code or flowgate's own. */
  reason?: string;
  /** `ErrorInfo.domain`: the provider kind or `flowgate`. */
  domain?: string;
  /** `ErrorInfo.metadata`: provider, http_status, upstream_request_id, … */
  metadata: Record<string, string>;
  errorInfo?: ErrorInfo;
  retryInfo?: RetryInfo;
  /** `RetryInfo.retry_delay` in milliseconds, when sent. */
  retryDelayMs?: number;
  quotaFailure?: QuotaFailure;
  badRequest?: BadRequest;
  preconditionFailure?: PreconditionFailure;
  resourceInfo?: ResourceInfo;
  /** The `x-ratelimit-*` metadata sent with the error. */
  rateLimit: RateLimitMetadata;
}

/** The details of `error` (any thrown value; non-Connect errors become `Unknown`). */
export function errorDetails(error: unknown): FlowgateErrorDetails {
  const err = ConnectError.from(error);
  const errorInfo = err.findDetails(ErrorInfoSchema)[0];
  const retryInfo = err.findDetails(RetryInfoSchema)[0];
  const delay = retryInfo?.retryDelay;
  return {
    code: err.code,
    codeName: Code[err.code],
    message: err.rawMessage,
    reason: errorInfo?.reason,
    domain: errorInfo?.domain,
    metadata: { ...(errorInfo?.metadata ?? {}) },
    errorInfo,
    retryInfo,
    retryDelayMs:
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + Math.floor(delay.nanos / 1e6),
    quotaFailure: err.findDetails(QuotaFailureSchema)[0],
    badRequest: err.findDetails(BadRequestSchema)[0],
    preconditionFailure: err.findDetails(PreconditionFailureSchema)[0],
    resourceInfo: err.findDetails(ResourceInfoSchema)[0],
    rateLimit: rateLimitFrom(err.metadata),
  };
}
