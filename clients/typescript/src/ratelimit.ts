// The provider's rate-limit window as flowgate reports it in response
// metadata (`x-ratelimit-*`, README "Errors"), as typed values. Absent
// headers are absent fields, never zero.

export interface RateLimitMetadata {
  /** Requests allowed in the window. */
  limit?: number;
  /** Requests left in the window. */
  remaining?: number;
  /** When the window resets. */
  reset?: Date;
  /** How long to wait before retrying, in milliseconds. */
  retryAfterMs?: number;
}

function whole(headers: Headers, name: string): number | undefined {
  const text = headers.get(name);
  if (text === null || !/^\d{1,15}$/.test(text.trim())) {
    return undefined;
  }
  return Number(text.trim());
}

/** The `x-ratelimit-*` values in `headers` (response headers or trailers). */
export function rateLimitFrom(headers: Headers): RateLimitMetadata {
  const out: RateLimitMetadata = {};
  const limit = whole(headers, "x-ratelimit-limit");
  const remaining = whole(headers, "x-ratelimit-remaining");
  const reset = whole(headers, "x-ratelimit-reset");
  const retryAfter = whole(headers, "x-ratelimit-retry-after");
  if (limit !== undefined) out.limit = limit;
  if (remaining !== undefined) out.remaining = remaining;
  if (reset !== undefined) out.reset = new Date(reset * 1000);
  if (retryAfter !== undefined) out.retryAfterMs = retryAfter * 1000;
  return out;
}
