import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Fallback, LlmClient, Metrics } from "@sluice/core"
import * as Anthropic from "@sluice/providers/Anthropic"
import * as OpenAiCompatible from "@sluice/providers/OpenAiCompatible"
import { Duration, Effect, Redacted } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Errors from "../../packages/providers/src/internal/errors.js"

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

  it.each(
    [
      [400, "BadRequest"],
      [413, "BadRequest"],
      [422, "BadRequest"],
      [401, "Unauthorized"],
      [403, "Unauthorized"],
      [404, "NotFound"]
    ] as const
  )("%i is %s and never retried", (status, tag) => {
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

// ---------------------------------------------------------------------------
// An account out of money: the bodies the providers send, through each layer
// ---------------------------------------------------------------------------

/** OpenAI's answer when the account has no credit left (a 429, like a rate limit). */
const openAiInsufficientQuota = {
  error: {
    message:
      "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
    type: "insufficient_quota",
    param: null,
    code: "insufficient_quota"
  }
}
/** Anthropic's answer when the credit balance is empty: a 400 invalid_request_error. */
const anthropicCreditTooLow = {
  type: "error",
  error: {
    type: "invalid_request_error",
    message:
      "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."
  },
  request_id: "req_011CreditTooLow"
}
/** Anthropic's answer when the organisation's monthly spend limit is reached: also a 400. */
const anthropicSpendLimit = {
  type: "error",
  error: {
    type: "invalid_request_error",
    message: "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."
  }
}

/** A server that answers every request with one status and JSON body; closed with the scope. */
const canned = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  Effect.acquireRelease(
    Effect.async<Http.Server>((resume) => {
      const server = Http.createServer((_request, response) => {
        _request.resume()
        response.writeHead(status, { "content-type": "application/json", ...headers })
        response.end(JSON.stringify(body))
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

const openAiCall = (url: string) =>
  Effect.flatMap(
    OpenAiCompatible.make({ apiKey: Redacted.make("sk-test"), baseURL: `${url}/v1` }),
    (client) =>
      Effect.flip(
        client.complete({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], maxOutputTokens: 16 })
      )
  ).pipe(Effect.provide(FetchHttpClient.layer))

const anthropicCall = (url: string) =>
  Effect.flatMap(
    Anthropic.make({ apiKey: Redacted.make("sk-ant-test"), baseURL: url }),
    (client) =>
      Effect.flip(
        client.complete({ model: "claude-haiku-4-5", messages: [{ role: "user", content: "hi" }], maxOutputTokens: 16 })
      )
  )

describe("an account out of money is QuotaExhausted, never RateLimited", () => {
  const mapped = (status: number, errorType: string | undefined, detail: string, errorCode?: string) =>
    Errors.fromHttpFailure({
      provider: "p",
      model: "m",
      status,
      headers: { "retry-after": "20" },
      errorType,
      errorCode,
      detail,
      now: 0,
      rateLimits: { dimensions: {} }
    })

  it.each(
    [
      [
        "OpenAI 429 insufficient_quota (code)",
        429,
        "insufficient_quota",
        openAiInsufficientQuota.error.message,
        undefined,
        "insufficient_quota"
      ],
      [
        "OpenAI 429 insufficient_quota with a null code (type only)",
        429,
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        undefined,
        "insufficient_quota"
      ],
      [
        "OpenAI's quota message without its code",
        429,
        undefined,
        openAiInsufficientQuota.error.message,
        undefined,
        "insufficient_quota"
      ],
      [
        "Anthropic 400 credit balance too low",
        400,
        "invalid_request_error",
        anthropicCreditTooLow.error.message,
        undefined,
        "credit_balance_too_low"
      ],
      [
        "Anthropic 400 spend limit reached",
        400,
        "invalid_request_error",
        anthropicSpendLimit.error.message,
        undefined,
        "usage_limit_reached"
      ],
      [
        "Anthropic 402 billing_error",
        402,
        "billing_error",
        "Your organization's billing is not set up.",
        undefined,
        "billing_error"
      ],
      [
        "Anthropic 429 enforced_spend_limit_reached",
        429,
        "rate_limit_error",
        "Monthly usage threshold crossed.",
        "enforced_spend_limit_reached",
        "enforced_spend_limit_reached"
      ],
      [
        "Anthropic 429 contract_spend_limit_reached",
        429,
        "rate_limit_error",
        "Contract spend limit reached.",
        "contract_spend_limit_reached",
        "contract_spend_limit_reached"
      ],
      ["any 402 Payment Required", 402, undefined, "Payment Required", undefined, "payment_required"]
    ] as const
  )("%s", (_name, status, errorType, detail, errorCode, code) => {
    const error = mapped(status, errorType, detail, errorCode)
    expect(error._tag).toBe("QuotaExhausted")
    expect(error.retryable).toBe(false)
    if (error._tag === "QuotaExhausted") expect(error.code).toBe(code)
  })

  it("stays narrow: a plain 429, a ramp limit, and a 400 about the request keep their meaning", () => {
    expect(mapped(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")._tag)
      .toBe("RateLimited")
    expect(mapped(429, "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini on tokens per min (TPM)")._tag).toBe(
      "RateLimited"
    )
    expect(mapped(429, "rate_limit_error", "Usage is growing too fast.", "ramp_limit_exceeded")._tag).toBe(
      "RateLimited"
    )
    expect(
      mapped(400, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\"")._tag
    ).toBe("BadRequest")
    expect(mapped(500, "api_error", "credit balance is too low")._tag).toBe("ServerError") // a 5xx is the provider's fault, whatever it says
  })

  it("is not a fallback error (every model of the account is out of money) and counts as quota_exhausted", () => {
    const error = mapped(429, "insufficient_quota", openAiInsufficientQuota.error.message)
    expect(Fallback.isFallbackError(error)).toBe(false)
    expect(Metrics.outcomeOf(error)).toBe("quota_exhausted")
    expect(LlmClient.isRetryable(error as LlmClient.ProviderError)).toBe(false)
  })

  it.scoped("through the OpenAI-compatible layer: OpenAI's 429 insufficient_quota body", () =>
    Effect.gen(function*() {
      const url = yield* canned(429, openAiInsufficientQuota, { "retry-after": "20", "x-request-id": "req_quota" })
      const error = yield* openAiCall(url)
      expect(error._tag).toBe("QuotaExhausted")
      expect(error.retryable).toBe(false)
      expect(error.requestId).toBe("req_quota")
      if (error._tag === "QuotaExhausted") expect(error.code).toBe("insufficient_quota")
    }))

  it.scoped("through the OpenAI-compatible layer: an ordinary 429 is still RateLimited", () =>
    Effect.gen(function*() {
      const url = yield* canned(429, {
        error: {
          message: "Rate limit reached for gpt-4o-mini",
          type: "tokens",
          param: null,
          code: "rate_limit_exceeded"
        }
      }, { "retry-after": "2" })
      expect((yield* openAiCall(url))._tag).toBe("RateLimited")
    }))

  it.scoped("through the Anthropic layer (the SDK): the 400 credit-balance and spend-limit bodies", () =>
    Effect.gen(function*() {
      const credit = yield* anthropicCall(yield* canned(400, anthropicCreditTooLow))
      expect(credit._tag).toBe("QuotaExhausted")
      expect(credit.retryable).toBe(false)
      if (credit._tag === "QuotaExhausted") expect(credit.code).toBe("credit_balance_too_low")
      const spend = yield* anthropicCall(yield* canned(400, anthropicSpendLimit))
      expect(spend._tag).toBe("QuotaExhausted")
      const malformed = yield* anthropicCall(
        yield* canned(400, {
          type: "error",
          error: { type: "invalid_request_error", message: "max_tokens: Field required" }
        })
      )
      expect(malformed._tag).toBe("BadRequest")
    }))
})

describe("readErrorBody", () => {
  it("reads both providers' bodies, parsed or as text, and maps them to QuotaExhausted with fromHttpFailure", () => {
    expect(Errors.readErrorBody(openAiInsufficientQuota)).toEqual({
      errorType: "insufficient_quota",
      errorCode: undefined,
      message: openAiInsufficientQuota.error.message
    })
    expect(Errors.readErrorBody(JSON.stringify(anthropicCreditTooLow))).toEqual({
      errorType: "invalid_request_error",
      errorCode: undefined,
      message: anthropicCreditTooLow.error.message
    })
    const spend = {
      type: "error",
      error: {
        type: "rate_limit_error",
        message: "Monthly threshold crossed.",
        details: { error_code: "enforced_spend_limit_reached" }
      }
    }
    const read = Errors.readErrorBody(JSON.stringify(spend))
    expect(read).toEqual({
      errorType: "rate_limit_error",
      errorCode: "enforced_spend_limit_reached",
      message: "Monthly threshold crossed."
    })
    const error = Errors.fromHttpFailure({
      provider: "anthropic",
      model: "m",
      status: 429,
      headers: {},
      errorType: read.errorType,
      errorCode: read.errorCode,
      detail: read.message ?? "",
      now: 0,
      rateLimits: { dimensions: {} }
    })
    expect(error._tag).toBe("QuotaExhausted")
    expect(Errors.readErrorBody("<html>bad gateway</html>")).toEqual({
      errorType: undefined,
      errorCode: undefined,
      message: undefined
    })
    expect(Errors.readErrorBody(undefined)).toEqual({ errorType: undefined, errorCode: undefined, message: undefined })
  })
})
