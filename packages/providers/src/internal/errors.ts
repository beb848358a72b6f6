/**
 * One mapping from an HTTP failure to `LlmClient.ProviderError`, shared by every
 * provider layer so that a 429 means the same thing whoever sent it.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import { LlmClient } from "@sluice/core"
import type { RateLimitSnapshot } from "@sluice/core/RateLimitSnapshot"
import * as RateLimitHeaders from "../RateLimitHeaders.js"

/** What a failed HTTP exchange told us. */
export interface HttpFailure {
  readonly provider: string
  readonly model: string | undefined
  readonly status: number
  readonly headers: RateLimitHeaders.HeaderInput
  /** The provider's error type (`overloaded_error`, `rate_limit_exceeded`, …), if the body had one. */
  readonly errorType: string | undefined
  readonly detail: string
  /** `now` in epoch milliseconds, for HTTP-date `retry-after` values. */
  readonly now: number
  /** The snapshot parsed from the same headers. */
  readonly rateLimits: RateLimitSnapshot
}

const header = (headers: RateLimitHeaders.HeaderInput, name: string): string | undefined => {
  if (headers instanceof Headers) return headers.get(name) ?? undefined
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name) continue
    if (typeof value === "string") return value
    if (Array.isArray(value)) return value[0] as string | undefined
  }
  return undefined
}

/** `x-should-retry: true|false`, the provider's own verdict. */
export const shouldRetry = (headers: RateLimitHeaders.HeaderInput): boolean | undefined => {
  const value = header(headers, "x-should-retry")?.trim().toLowerCase()
  return value === "true" ? true : value === "false" ? false : undefined
}

/** The provider's request id, for support tickets. */
export const requestId = (headers: RateLimitHeaders.HeaderInput): string | undefined =>
  header(headers, "request-id") ?? header(headers, "x-request-id")

/** Maps a failed response to the error union. */
export const fromHttpFailure = (failure: HttpFailure): LlmClient.ProviderError => {
  const base = {
    provider: failure.provider,
    model: failure.model,
    status: failure.status,
    detail: failure.detail,
    shouldRetry: shouldRetry(failure.headers),
    requestId: requestId(failure.headers)
  }
  const retryAfter = Option.getOrUndefined(RateLimitHeaders.retryAfter(failure.headers, failure.now))
  const overloaded = failure.status === 529 || failure.errorType === "overloaded_error"
  if (overloaded) return new LlmClient.Overloaded({ ...base, retryAfter })
  switch (failure.status) {
    case 429:
      return new LlmClient.RateLimited({
        ...base,
        retryAfter: retryAfter ?? failure.rateLimits.retryAfter,
        dimension: RateLimitHeaders.exhaustedDimension(failure.rateLimits),
        rateLimits: failure.rateLimits
      })
    case 401:
    case 403:
      return new LlmClient.Unauthorized(base)
    case 404:
      return new LlmClient.NotFound(base)
    case 408:
      return new LlmClient.Timeout(base)
  }
  if (failure.status >= 500) return new LlmClient.ServerError({ ...base, retryAfter })
  // 400, 413, 422 and every other 4xx: the request itself is wrong.
  return new LlmClient.BadRequest(base)
}

/** A timeout of the whole call. */
export const timeout = (provider: string, model: string | undefined, after: Duration.Duration | undefined) =>
  new LlmClient.Timeout({
    provider,
    model,
    detail: after === undefined ? "the request timed out" : `no answer within ${Duration.format(after)}`,
    after
  })

/** The connection failed, was reset, or the body could not be read. */
export const network = (provider: string, model: string | undefined, cause: unknown) =>
  new LlmClient.NetworkError({
    provider,
    model,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })
