import { describe, expect, it } from "@effect/vitest"
import { LlmClient } from "@sluice/core"
import * as Errors from "../../packages/providers/src/internal/errors.js"
import { Duration } from "effect"

const failure = (status: number, headers: Record<string, string> = {}, errorType?: string) =>
  Errors.fromHttpFailure({
    provider: "anthropic",
    model: "claude-haiku-4-5",
    status,
    headers,
    errorType,
    detail: "boom",
    now: 0,
    rateLimits: { dimensions: { inputTokens: { remaining: 0 } } }
  })

describe("ProviderError mapping", () => {
  it("429 is RateLimited, retryable, with retry-after and the exhausted dimension", () => {
    const error = failure(429, { "retry-after": "7" })
    expect(error._tag).toBe("RateLimited")
    expect(error.retryable).toBe(true)
    if (error._tag === "RateLimited") {
      expect(error.retryAfter).toEqual(Duration.seconds(7))
      expect(error.dimension).toBe("inputTokens")
    }
    expect(LlmClient.isRetryable(error)).toBe(true)
  })

  it("529 and overloaded_error are Overloaded and retryable", () => {
    expect(failure(529)._tag).toBe("Overloaded")
    expect(failure(503, {}, "overloaded_error")._tag).toBe("Overloaded")
    expect(failure(529).retryable).toBe(true)
  })

  it.each([500, 502, 503, 504])("%i is a retryable ServerError", (status) => {
    const error = failure(status)
    expect(error._tag).toBe("ServerError")
    expect(error.retryable).toBe(true)
  })

  it.each([
    [400, "BadRequest"],
    [413, "BadRequest"],
    [422, "BadRequest"],
    [401, "Unauthorized"],
    [403, "Unauthorized"],
    [404, "NotFound"]
  ] as const)("%i is %s and never retried", (status, tag) => {
    const error = failure(status)
    expect(error._tag).toBe(tag)
    expect(error.retryable).toBe(false)
  })

  it("x-should-retry wins over the status", () => {
    expect(failure(400, { "x-should-retry": "true" }).retryable).toBe(true)
    expect(failure(503, { "x-should-retry": "false" }).retryable).toBe(false)
  })

  it("errors carry the provider, model, status and request id in their message", () => {
    const error = failure(404, { "request-id": "req_123" })
    expect(error.message).toContain("anthropic")
    expect(error.message).toContain("claude-haiku-4-5")
    expect(error.message).toContain("404")
    expect(error.requestId).toBe("req_123")
  })
})
