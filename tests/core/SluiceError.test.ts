/**
 * The one classification of errors (`SluiceError.classify`), as a table over
 * every error a call can fail with, and the names the layers keep for it
 * (`Retry.isRetryable`, `Fallback.isFallbackError`, `Metrics.outcomeOf`,
 * `Admission.isAdmissionError`, `LlmClient.mayHaveRun`), which must agree with
 * it row by row.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  Admission,
  Budget,
  CircuitBreaker,
  Cost,
  Fallback,
  LimiterStore,
  LlmClient,
  Metrics,
  Pricing,
  RateLimiter,
  Retry,
  SluiceError
} from "@sluice/core"
import { Duration, Equal } from "effect"

const provider = { provider: "anthropic", model: "claude-haiku-4-5", detail: "boom" }

interface Row {
  readonly error: SluiceError.CallError
  readonly origin: SluiceError.Origin
  readonly retryable: boolean
  readonly mayHaveRun: boolean
  readonly fallback: boolean
  readonly outcome: string
  /** Whether the admission path refused the call itself (the limiter, the budget, the price table). */
  readonly admission: boolean
}

// One row per tag: a new error without a row does not compile.
const table: { readonly [Tag in SluiceError.CallError["_tag"]]: Row } = {
  RateLimited: {
    error: new LlmClient.RateLimited({ ...provider, status: 429, retryAfter: Duration.seconds(7) }),
    origin: "provider",
    retryable: true,
    mayHaveRun: false,
    fallback: true,
    outcome: "rate_limited",
    admission: false
  },
  QuotaExhausted: {
    error: new LlmClient.QuotaExhausted({ ...provider, status: 429, code: "insufficient_quota", shouldRetry: true }),
    origin: "provider",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "quota_exhausted",
    admission: false
  },
  Overloaded: {
    error: new LlmClient.Overloaded({ ...provider, status: 529 }),
    origin: "provider",
    retryable: true,
    mayHaveRun: false,
    fallback: true,
    outcome: "overloaded",
    admission: false
  },
  ServerError: {
    error: new LlmClient.ServerError({ ...provider, status: 503 }),
    origin: "provider",
    retryable: true,
    mayHaveRun: false,
    fallback: false,
    outcome: "server_error",
    admission: false
  },
  BadRequest: {
    error: new LlmClient.BadRequest({ ...provider, status: 400 }),
    origin: "provider",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "bad_request",
    admission: false
  },
  Unauthorized: {
    error: new LlmClient.Unauthorized({ ...provider, status: 401 }),
    origin: "provider",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "unauthorized",
    admission: false
  },
  NotFound: {
    error: new LlmClient.NotFound({ ...provider, status: 404 }),
    origin: "provider",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "not_found",
    admission: false
  },
  Timeout: {
    error: new LlmClient.Timeout({ ...provider, after: Duration.seconds(30) }),
    origin: "provider",
    retryable: true,
    mayHaveRun: true,
    fallback: false,
    outcome: "timeout",
    admission: false
  },
  NetworkError: {
    error: new LlmClient.NetworkError({ ...provider, cause: new Error("ECONNRESET") }),
    origin: "provider",
    retryable: true,
    mayHaveRun: true,
    fallback: false,
    outcome: "network_error",
    admission: false
  },
  CostTooLarge: {
    error: new RateLimiter.CostTooLarge({ key: "k", dimension: "inputTokens", amount: 10, capacity: 5 }),
    origin: "limiter",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "cost_too_large",
    admission: true
  },
  Shed: {
    error: new RateLimiter.Shed({ key: "k", priority: "batch", reason: "queue-full", waiting: 3 }),
    origin: "limiter",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "shed",
    admission: true
  },
  UnknownKey: {
    error: new RateLimiter.UnknownKey({ key: "k" }),
    origin: "limiter",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "unknown_key",
    admission: true
  },
  WaitTimeout: {
    error: new RateLimiter.WaitTimeout({ key: "k", priority: "normal", maxWait: Duration.seconds(2) }),
    origin: "limiter",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "wait_timeout",
    admission: true
  },
  InvalidCost: {
    error: new Cost.InvalidCost({ key: "k", dimension: "requests", value: -1 }),
    origin: "limiter",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "invalid_cost",
    admission: true
  },
  LimiterStoreError: {
    error: new LimiterStore.LimiterStoreError({ key: "k", operation: "reserve", cause: "down" }),
    origin: "limiter",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "limiter_store_error",
    admission: true
  },
  CircuitOpen: {
    error: new CircuitBreaker.CircuitOpen({
      key: "k",
      openedAt: 0,
      probeAt: 30_000,
      reason: "consecutive-failures",
      state: "open"
    }),
    origin: "breaker",
    retryable: false,
    mayHaveRun: false,
    fallback: true,
    outcome: "circuit_open",
    admission: false
  },
  AllRungsFailed: {
    error: new Fallback.AllRungsFailed({
      attempts: [{
        model: "claude-opus-4-1",
        key: undefined,
        error: new LlmClient.Overloaded({ ...provider, status: 529 })
      }]
    }),
    origin: "fallback",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "all_rungs_failed",
    admission: false
  },
  BudgetExceeded: {
    error: new Budget.BudgetExceeded({
      scope: "global",
      window: "day",
      spentUsd: 1,
      reservedUsd: 0,
      limitUsd: 1,
      attemptedUsd: 0.1
    }),
    origin: "budget",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "budget_exceeded",
    admission: true
  },
  BudgetLedgerError: {
    error: new Budget.BudgetLedgerError({ operation: "reserve", cause: "down" }),
    origin: "budget",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "budget_ledger_error",
    admission: true
  },
  UnknownModel: {
    error: new Pricing.UnknownModel({ model: "gpt-9" }),
    origin: "pricing",
    retryable: false,
    mayHaveRun: false,
    fallback: false,
    outcome: "unknown_model",
    admission: true
  }
}

describe("SluiceError.classify", () => {
  for (const [tag, row] of Object.entries(table)) {
    it(`${tag}: ${row.origin}, retryable ${row.retryable}, may have run ${row.mayHaveRun}, fallback ${row.fallback}, outcome ${row.outcome}`, () => {
      expect(row.error._tag).toBe(tag)
      expect(SluiceError.isSluiceError(row.error)).toBe(true)
      expect(SluiceError.classify(row.error)).toEqual({
        origin: row.origin,
        retryable: row.retryable,
        mayHaveRun: row.mayHaveRun,
        fallback: row.fallback,
        outcome: row.outcome
      })
      expect(SluiceError.isProviderError(row.error)).toBe(row.origin === "provider")
      expect(SluiceError.isGovernanceError(row.error)).toBe(row.origin !== "provider")
    })
  }

  it("the layers' own names give the table's answers for every error", () => {
    for (const row of Object.values(table)) {
      expect(Retry.isRetryable(row.error)).toBe(row.retryable)
      expect(Retry.isProviderError(row.error)).toBe(row.origin === "provider")
      expect(Fallback.isFallbackError(row.error)).toBe(row.fallback)
      expect(Metrics.outcomeOf(row.error)).toBe(row.outcome)
      expect(Admission.isAdmissionError(row.error)).toBe(row.admission)
      if (SluiceError.isProviderError(row.error)) {
        expect(LlmClient.mayHaveRun(row.error)).toBe(row.mayHaveRun)
        expect(LlmClient.isRetryable(row.error)).toBe(row.retryable)
        expect(row.error.retryable).toBe(row.retryable)
      }
    }
  })

  it("x-should-retry wins over the status: a 400 the provider says to retry is retryable, a 429 it says not to is not", () => {
    expect(SluiceError.classify(new LlmClient.BadRequest({ ...provider, status: 400, shouldRetry: true })).retryable)
      .toBe(true)
    expect(SluiceError.classify(new LlmClient.RateLimited({ ...provider, status: 429, shouldRetry: false })).retryable)
      .toBe(false)
  })

  it("a ladder's failure may have run exactly when one of its rungs' errors may have", () => {
    const timedOut = new Fallback.AllRungsFailed({
      attempts: [
        { model: "claude-opus-4-1", key: undefined, error: new LlmClient.RateLimited({ ...provider, status: 429 }) },
        { model: "claude-haiku-4-5", key: undefined, error: new LlmClient.Timeout(provider) }
      ]
    })
    expect(SluiceError.classify(timedOut).mayHaveRun).toBe(true)
    expect(SluiceError.classify(new Fallback.AllRungsFailed({ attempts: [] })).mayHaveRun).toBe(false)
  })

  it("an error Sluice does not know: not retried, no fallback, may have run, outcome from its tag or `error`", () => {
    expect(SluiceError.classify(new Error("boom"))).toEqual({
      origin: undefined,
      retryable: false,
      mayHaveRun: true,
      fallback: false,
      outcome: "error"
    })
    expect(SluiceError.classify("boom").outcome).toBe("error")
    expect(SluiceError.classify(undefined).outcome).toBe("error")
    // A foreign tagged error keeps its label (`Metrics.outcomeOf` gave it before), and a look-alike
    // without the type id is not taken for Sluice's.
    const lookAlike = { _tag: "RateLimited", retryable: true, provider: "x" }
    expect(SluiceError.isSluiceError(lookAlike)).toBe(false)
    expect(SluiceError.classify(lookAlike)).toEqual({
      origin: undefined,
      retryable: false,
      mayHaveRun: true,
      fallback: false,
      outcome: "rate_limited"
    })
    expect(SluiceError.classify({ _tag: "UnknownError" }).outcome).toBe("unknown_error")
  })
})

describe("SluiceError classes", () => {
  it("the old names are the same classes: an error built under one name is an instance of the other", () => {
    expect(LlmClient.RateLimited).toBe(SluiceError.RateLimited)
    expect(LlmClient.QuotaExhausted).toBe(SluiceError.QuotaExhausted)
    expect(RateLimiter.Shed).toBe(SluiceError.Shed)
    expect(Cost.InvalidCost).toBe(SluiceError.InvalidCost)
    expect(LimiterStore.LimiterStoreError).toBe(SluiceError.LimiterStoreError)
    expect(CircuitBreaker.CircuitOpen).toBe(SluiceError.CircuitOpen)
    expect(Fallback.AllRungsFailed).toBe(SluiceError.AllRungsFailed)
    expect(Budget.BudgetExceeded).toBe(SluiceError.BudgetExceeded)
    expect(Pricing.UnknownModel).toBe(SluiceError.UnknownModel)
    expect(new RateLimiter.UnknownKey({ key: "k" })).toBeInstanceOf(SluiceError.UnknownKey)
  })

  it("the type id is on the prototype: an error's own keys are unchanged, and equal fields still make equal errors", () => {
    const error = new RateLimiter.UnknownKey({ key: "k" })
    expect(SluiceError.TypeId in error).toBe(true)
    expect(Reflect.ownKeys(error)).not.toContain(SluiceError.TypeId)
    expect(Object.keys(error)).toEqual(["key", "_tag"])
    expect(Equal.equals(error, new RateLimiter.UnknownKey({ key: "k" }))).toBe(true)
  })

  it("keeps its messages", () => {
    expect(table.RateLimited.error.message).toBe("Rate limited from anthropic (claude-haiku-4-5), HTTP 429: boom")
    expect(table.Shed.error.message).toBe(`Shed batch call on key "k" (queue-full, 3 waiting)`)
    expect(table.WaitTimeout.error.message).toBe(`Waited more than 2s for key "k" (normal) without being granted`)
    expect(table.CircuitOpen.error.message).toBe(
      `Circuit breaker for key "k" is open since 1970-01-01T00:00:00.000Z (consecutive-failures); it lets a probe through at 1970-01-01T00:00:30.000Z`
    )
    expect(table.AllRungsFailed.error.message).toBe(
      "Every model of the ladder failed: claude-opus-4-1: Overloaded (Overloaded from anthropic (claude-haiku-4-5), HTTP 529: boom)"
    )
    expect(table.UnknownModel.error.message).toBe(
      `No price for model "gpt-9": add it to the price table (Pricing.layer)`
    )
  })
})
