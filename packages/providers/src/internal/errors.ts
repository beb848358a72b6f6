/**
 * One mapping from an HTTP failure to `SluiceError.ProviderError`, shared by every
 * provider layer so that a 429 means the same thing whoever sent it.
 *
 * A failure that says the account is out of money (OpenAI's 429
 * `insufficient_quota`, Anthropic's `billing_error`, its 400 "credit balance is
 * too low", a spend limit reached) is `QuotaExhausted`, not `RateLimited`: no
 * wait helps, so it must neither be retried nor pause the key. The match is
 * deliberately narrow (see {@link quotaExhaustedCode}); anything else keeps its
 * status's meaning.
 */
import { SluiceError } from "@sluice/core"
import type { RateLimitSnapshot } from "@sluice/core/RateLimitSnapshot"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as RateLimitHeaders from "../RateLimitHeaders.js"

/** What a failed HTTP exchange told us. */
export interface HttpFailure {
  readonly provider: string
  readonly model: string | undefined
  readonly status: number
  readonly headers: RateLimitHeaders.HeaderInput
  /** The provider's error type (`overloaded_error`, `rate_limit_exceeded`, …), if the body had one. */
  readonly errorType: string | undefined
  /**
   * A finer code, when the body had one besides the type: Anthropic's
   * `error.details.error_code` (`enforced_spend_limit_reached`, …; the SDK's
   * `APIError.errorCode`).
   */
  readonly errorCode?: string | undefined
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

/**
 * Codes (an error type or a finer code) that mean the account cannot pay for
 * any call, whatever the status: OpenAI's `insufficient_quota` (a 429) and
 * `billing_hard_limit_reached`, Anthropic's `billing_error` type (402) and its
 * spend-limit codes (`contract_spend_limit_reached` and
 * `enforced_spend_limit_reached` come as 429 `rate_limit_error`,
 * `linked_organization_spend_limit_reached` as 402). Anthropic's
 * `ramp_limit_exceeded` is absent on purpose: it asks for a retry later.
 */
const quotaCodes: ReadonlySet<string> = new Set([
  "insufficient_quota",
  "billing_hard_limit_reached",
  "billing_error",
  "contract_spend_limit_reached",
  "enforced_spend_limit_reached",
  "linked_organization_spend_limit_reached"
])

/**
 * Messages that say the same where the body has no such code: Anthropic sends
 * an empty credit balance and a reached monthly spend limit as a 400
 * `invalid_request_error`, OpenAI's `insufficient_quota` message may reach us
 * without its code (a gateway, a body kept only as text). Each becomes the code
 * on the right.
 */
const quotaMessages: ReadonlyArray<readonly [RegExp, string]> = [
  [/credit balance is too low/i, "credit_balance_too_low"],
  [/reached your specified API usage limits/i, "usage_limit_reached"],
  [/exceeded your current quota/i, "insufficient_quota"]
]

/**
 * The code of a failure that says the account is out of money, or `undefined`:
 * a billing code in the type or the finer code (any status), a 402, or one of
 * the billing messages on a 400, 403 or 429. Matching a message is the last
 * resort (Anthropic says its wording may change), kept to phrases that cannot
 * describe a request or a rate.
 */
export const quotaExhaustedCode = (
  failure: Pick<HttpFailure, "status" | "errorType" | "errorCode" | "detail">
): string | undefined => {
  if (failure.errorCode !== undefined && quotaCodes.has(failure.errorCode)) return failure.errorCode
  if (failure.errorType !== undefined && quotaCodes.has(failure.errorType)) return failure.errorType
  if (failure.status === 402) return failure.errorCode ?? failure.errorType ?? "payment_required"
  if (failure.status !== 400 && failure.status !== 403 && failure.status !== 429) return undefined
  return quotaMessages.find(([pattern]) => pattern.test(failure.detail))?.[1]
}

/** What an error body says, as {@link fromHttpFailure} takes it. */
export interface ErrorBody {
  /** OpenAI's `error.code` when it is a string, else `error.type` (Anthropic's, OpenAI's). */
  readonly errorType: string | undefined
  /** Anthropic's `error.details.error_code`. */
  readonly errorCode: string | undefined
  readonly message: string | undefined
}

const parseJson = Option.liftThrowable((text: string): unknown => JSON.parse(text))

const stringField = (record: unknown, key: string): string | undefined => {
  if (typeof record !== "object" || record === null) return undefined
  const value = (record as Record<string, unknown>)[key]
  return typeof value === "string" ? value : undefined
}

/**
 * Reads an error body of either shape, parsed or as text (what `@effect/ai`
 * keeps): Anthropic's `{ type: "error", error: { type, message, details: {
 * error_code } } }` and OpenAI's `{ error: { type, code, message } }`. Text
 * that is not JSON, or JSON of another shape, reads as nothing.
 */
export const readErrorBody = (body: unknown): ErrorBody => {
  const parsed = typeof body === "string" ? Option.getOrUndefined(parseJson(body)) : body
  const error = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>).error : undefined
  return {
    errorType: stringField(error, "code") ?? stringField(error, "type"),
    errorCode: stringField(
      typeof error === "object" && error !== null ? (error as Record<string, unknown>).details : undefined,
      "error_code"
    ),
    message: stringField(error, "message")
  }
}

/** Maps a failed response to the error union. */
export const fromHttpFailure = (failure: HttpFailure): SluiceError.ProviderError => {
  const base = {
    provider: failure.provider,
    model: failure.model,
    status: failure.status,
    detail: failure.detail,
    shouldRetry: shouldRetry(failure.headers),
    requestId: requestId(failure.headers)
  }
  const quota = quotaExhaustedCode(failure)
  if (quota !== undefined) return new SluiceError.QuotaExhausted({ ...base, code: quota })
  const retryAfter = Option.getOrUndefined(RateLimitHeaders.retryAfter(failure.headers, failure.now))
  const overloaded = failure.status === 529 || failure.errorType === "overloaded_error"
  if (overloaded) return new SluiceError.Overloaded({ ...base, retryAfter })
  switch (failure.status) {
    case 429:
      return new SluiceError.RateLimited({
        ...base,
        retryAfter: retryAfter ?? failure.rateLimits.retryAfter,
        dimension: RateLimitHeaders.exhaustedDimension(failure.rateLimits),
        rateLimits: failure.rateLimits
      })
    case 401:
    case 403:
      return new SluiceError.Unauthorized(base)
    case 404:
      return new SluiceError.NotFound(base)
    case 408:
      return new SluiceError.Timeout(base)
  }
  if (failure.status >= 500) return new SluiceError.ServerError({ ...base, retryAfter })
  // 400, 413, 422 and every other 4xx: the request itself is wrong.
  return new SluiceError.BadRequest(base)
}

/** A timeout of the whole call. */
export const timeout = (provider: string, model: string | undefined, after: Duration.Duration | undefined) =>
  new SluiceError.Timeout({
    provider,
    model,
    detail: after === undefined ? "the request timed out" : `no answer within ${Duration.format(after)}`,
    after
  })

/** The connection failed, was reset, or the body could not be read. */
export const network = (provider: string, model: string | undefined, cause: unknown) =>
  new SluiceError.NetworkError({
    provider,
    model,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })
