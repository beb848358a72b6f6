import { describe, expect, it } from "@effect/vitest"
import { Budget, Governor, LlmClient, Pricing, RateLimiter, TokenEstimator } from "@sluice/core"
import { Duration, Effect, FastCheck as fc, Fiber, Layer, Stream, TestClock } from "effect"

const MODEL = "claude-haiku-4-5"
const PROVIDER = "fake"
const KEY = `${PROVIDER}/${MODEL}`
const price = Pricing.defaultTable[MODEL]!

/** What the fake provider does with one call. */
type Step =
  | { readonly _tag: "answer"; readonly latency: number; readonly output: number }
  | {
    readonly _tag: "fail"
    readonly latency: number
    readonly error: "RateLimited" | "Overloaded" | "ServerError" | "QuotaExhausted" | "Timeout" | "NetworkError"
  }
  | { readonly _tag: "hang" }

/** What the provider saw of one call: answered (billed its usage), refused (billed nothing), or it may have run. */
interface Reached {
  readonly request: LlmClient.Request
  outcome: { readonly _tag: "answered"; readonly usage: LlmClient.Usage } | { readonly _tag: "refused" } | {
    readonly _tag: "may-have-run"
  }
}

const inputOf = (request: LlmClient.Request) =>
  request.messages.reduce((sum, message) => sum + (typeof message.content === "string" ? message.content.length : 0), 0)

const errorOf = (error: Extract<Step, { _tag: "fail" }>["error"]): LlmClient.ProviderError => {
  const fields = { provider: PROVIDER, model: MODEL, detail: "scripted" }
  switch (error) {
    case "RateLimited":
      return new LlmClient.RateLimited({ ...fields, status: 429, retryAfter: Duration.seconds(2) })
    case "Overloaded":
      return new LlmClient.Overloaded({ ...fields, status: 529 })
    case "ServerError":
      return new LlmClient.ServerError({ ...fields, status: 500 })
    case "QuotaExhausted":
      return new LlmClient.QuotaExhausted({ ...fields, status: 429, code: "insufficient_quota" })
    case "Timeout":
      return new LlmClient.Timeout({ ...fields })
    case "NetworkError":
      return new LlmClient.NetworkError({ ...fields })
  }
}

/** A provider that follows a script, one step per call it receives (then answers), and records what reached it. */
const scripted = (steps: ReadonlyArray<Step>) => {
  const reached: Array<Reached> = []
  const complete = (request: LlmClient.Request): Effect.Effect<LlmClient.Response, LlmClient.ProviderError> =>
    Effect.suspend(() => {
      const step = steps[reached.length] ?? { _tag: "answer", latency: 100, output: 10 }
      const record: Reached = { request, outcome: { _tag: "may-have-run" } }
      reached.push(record)
      switch (step._tag) {
        case "hang":
          return Effect.never
        case "fail":
          return Effect.zipRight(
            Effect.sleep(Duration.millis(step.latency)),
            Effect.suspend(() => {
              const error = errorOf(step.error)
              if (!LlmClient.mayHaveRun(error)) record.outcome = { _tag: "refused" }
              return Effect.fail(error)
            })
          )
        case "answer":
          return Effect.zipRight(
            Effect.sleep(Duration.millis(step.latency)),
            Effect.sync(() => {
              const usage = {
                inputTokens: inputOf(request),
                outputTokens: Math.min(step.output, request.maxOutputTokens),
                cacheReadInputTokens: 0,
                cacheWriteInputTokens: 0
              }
              record.outcome = { _tag: "answered", usage }
              return {
                id: `msg_${reached.length}`,
                model: request.model,
                content: [{ type: "text" as const, text: "ok" }],
                stopReason: "end_turn" as const,
                usage,
                rateLimits: { dimensions: {} }
              }
            })
          )
      }
    })
  const provider: LlmClient.Provider = {
    provider: PROVIDER,
    complete,
    stream: (request) =>
      Stream.unwrap(Effect.map(complete(request), (response) =>
        Stream.make<Array<LlmClient.StreamEvent>>(
          { _tag: "TextDelta", text: "ok" },
          { _tag: "Done", response }
        )))
  }
  return { provider, reached }
}

/** An estimator that never learns: the worst case of every call is known to the test. */
const fixedEstimator = (() => {
  const base = TokenEstimator.makeWith((text) => text.length)
  return Layer.succeed(
    TokenEstimator.TokenEstimator,
    TokenEstimator.TokenEstimator.of({ ...base, observe: () => Effect.void })
  )
})()

const worstCaseMicros = (request: LlmClient.Request) =>
  Effect.flatMap(
    TokenEstimator.TokenEstimator,
    (estimator) =>
      Effect.map(estimator.estimate(request), (estimate) =>
        Pricing.costMicros(price, LlmClient.worstCaseUsage(request, estimate.inputTokens)))
  )

/** What the ledger must hold once every call has ended: the real cost of what was answered, the worst case of what may have run. */
const expectedSpendMicros = (reached: ReadonlyArray<Reached>) =>
  Effect.reduce(reached, 0, (sum, { outcome, request }) => {
    switch (outcome._tag) {
      case "answered":
        return Effect.succeed(sum + Pricing.costMicros(price, outcome.usage))
      case "refused":
        return Effect.succeed(sum)
      case "may-have-run":
        return Effect.map(worstCaseMicros(request), (worst) => sum + worst)
    }
  })

const quota = {
  requests: { limit: 600, per: "1 minute" },
  inputTokens: { limit: 1_000_000, per: "1 minute" },
  outputTokens: { limit: 1_000_000, per: "1 minute" }
} as const

const governedOver = (
  provider: LlmClient.Provider,
  options: { readonly limitUsd: number; readonly maxInFlight: number; readonly governor?: Governor.Options }
) =>
  Governor.layer({ retry: { maxAttempts: 3, base: "100 millis" }, ...options.governor }).pipe(
    Layer.provideMerge(Layer.succeed(LlmClient.LlmClient, provider)),
    Layer.provideMerge(RateLimiter.layerMemory({ maxInFlight: options.maxInFlight, quotas: { [KEY]: quota } })),
    Layer.provideMerge(fixedEstimator),
    Layer.provideMerge(
      Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: options.limitUsd }] }).pipe(
        Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
      )
    )
  )

const ask = (text: string, maxOutputTokens = 200, metadata?: LlmClient.RequestMetadata): LlmClient.Request => ({
  model: MODEL,
  messages: [{ role: "user", content: text }],
  maxOutputTokens,
  ...(metadata === undefined ? {} : { metadata })
})

/** Advances the clock until every fiber is done (a minute at a time: pauses and retries included). */
const drain = (fibers: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>) =>
  Effect.gen(function*() {
    for (let round = 0; round < 30 && fibers.some((fiber) => fiber.unsafePoll() === null); round++) {
      yield* TestClock.adjust(Duration.minutes(1))
    }
    expect(fibers.every((fiber) => fiber.unsafePoll() !== null)).toBe(true)
  })

/** Nothing reserved in the ledger, nothing held or queued at the limiter, and it grants `maxInFlight` calls at once. */
const conserved = (maxInFlight: number) =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    const [status] = yield* (yield* Budget.Budget).status
    expect(status!.reservedUsd).toBe(0)
    const stats = yield* limiter.stats(KEY)
    expect(stats.inFlight).toBe(0)
    expect(stats.waiting).toEqual({ interactive: 0, normal: 0, batch: 0 })
    yield* TestClock.adjust(Duration.minutes(2))
    const grants = yield* Effect.forEach(
      Array.from({ length: maxInFlight }, () => limiter.acquire(KEY, { requests: 1 })),
      (acquire) => Effect.fork(Effect.scoped(Effect.zipRight(acquire, Effect.never))),
      { concurrency: "unbounded" }
    )
    yield* TestClock.adjust("1 millis")
    expect((yield* limiter.stats(KEY)).inFlight).toBe(maxInFlight)
    yield* Fiber.interruptAll(grants)
    return status!
  })

const stepArbitrary: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      _tag: fc.constant("answer" as const),
      latency: fc.integer({ min: 0, max: 3_000 }),
      output: fc.integer({ min: 1, max: 300 })
    })
  },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("fail" as const),
      latency: fc.integer({ min: 0, max: 2_000 }),
      error: fc.constantFrom(
        "RateLimited" as const,
        "Overloaded" as const,
        "ServerError" as const,
        "QuotaExhausted" as const,
        "Timeout" as const,
        "NetworkError" as const
      )
    })
  },
  { weight: 1, arbitrary: fc.constant({ _tag: "hang" as const }) }
)

describe("Admission: one path, released exactly once on every exit", () => {
  it.effect.prop(
    "random calls, streams, provider failures, refusals and interrupts end with nothing reserved or held, spend = what reached the provider, and the limiter granting at once",
    {
      steps: fc.array(stepArbitrary, { minLength: 1, maxLength: 24 }),
      calls: fc.array(
        fc.record({
          stream: fc.boolean(),
          gap: fc.integer({ min: 0, max: 1_500 }),
          length: fc.integer({ min: 10, max: 4_000 }),
          maxOutput: fc.integer({ min: 1, max: 400 }),
          interruptAfter: fc.option(fc.integer({ min: 0, max: 8_000 }), { nil: undefined })
        }),
        { minLength: 1, maxLength: 12 }
      ),
      maxInFlight: fc.integer({ min: 1, max: 3 }),
      limitUsd: fc.constantFrom(0.004, 0.02, 100),
      // Moves the interrupt points. Below about 8, TestClock.adjust itself never sees the fibers settle (even a bare sleep).
      opsBeforeYield: fc.constantFrom(16, 24, 32, 48, 64, 128, 256, 1024, 2048)
    },
    ({ calls, limitUsd, maxInFlight, opsBeforeYield, steps }) => {
      const { provider, reached } = scripted(steps)
      return Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const fibers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
        for (const [index, call] of calls.entries()) {
          yield* TestClock.adjust(Duration.millis(call.gap))
          const request = ask(`${index}:${"x".repeat(call.length)}`, call.maxOutput)
          const run: Effect.Effect<unknown, unknown> = call.stream
            ? Stream.runDrain(client.stream(request))
            : client.complete(request)
          const fiber = yield* Effect.fork(Effect.withMaxOpsBeforeYield(run, opsBeforeYield))
          fibers.push(fiber)
          if (call.interruptAfter !== undefined) {
            yield* Effect.fork(
              Effect.zipRight(Effect.sleep(Duration.millis(call.interruptAfter)), Fiber.interrupt(fiber))
            )
          }
        }
        // Calls that hang (and those queued behind them) end only by interruption.
        yield* TestClock.adjust(Duration.minutes(10))
        yield* Fiber.interruptAll(fibers.filter((fiber) => fiber.unsafePoll() === null))
        yield* drain(fibers)
        const status = yield* conserved(maxInFlight)
        const expected = yield* expectedSpendMicros(reached)
        expect(Pricing.fromUsd(status.spentUsd)).toBeCloseTo(expected, 0)
        // A budget is never passed (a call settles at most its reserved worst case).
        expect(status.spentUsd).toBeLessThanOrEqual(limitUsd + 1e-9)
      }).pipe(Effect.provide(governedOver(provider, { limitUsd, maxInFlight })))
    },
    { fastCheck: { numRuns: 12, seed: 20261202 } }
  )

  it.effect("a call interrupted while queued at the limiter never reached the provider and is charged nothing (#12)", () => {
    const { provider, reached } = scripted([{ _tag: "hang" }, { _tag: "answer", latency: 100, output: 10 }])
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const first = yield* Effect.fork(client.complete(ask("first")))
      yield* TestClock.adjust("1 millis")
      const queued = yield* Effect.fork(client.complete(ask("second")))
      yield* TestClock.adjust("1 millis")
      expect((yield* (yield* RateLimiter.RateLimiter).stats(KEY)).waiting.normal).toBe(1)
      yield* Fiber.interrupt(queued)
      yield* Fiber.interrupt(first)
      expect(reached.length).toBe(1)
      const status = yield* conserved(1)
      // Only the first call (which reached the provider and may have run) is charged: its worst case.
      expect(Pricing.fromUsd(status.spentUsd)).toBeCloseTo(yield* worstCaseMicros(ask("first")), 0)
    }).pipe(Effect.provide(governedOver(provider, { limitUsd: 100, maxInFlight: 1 })))
  })

  it.effect("Governor.stream reserves the budget and settles it to the real cost (#10)", () => {
    const { provider } = scripted([{ _tag: "answer", latency: 500, output: 40 }])
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const fiber = yield* Effect.fork(Stream.runCollect(client.stream(ask("stream me", 300))))
      yield* TestClock.adjust("100 millis")
      const [during] = yield* (yield* Budget.Budget).status
      expect(Pricing.fromUsd(during!.reservedUsd)).toBeCloseTo(yield* worstCaseMicros(ask("stream me", 300)), 0)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
      const status = yield* conserved(2)
      const usage = {
        inputTokens: "stream me".length,
        outputTokens: 40,
        cacheReadInputTokens: 0,
        cacheWriteInputTokens: 0
      }
      expect(Pricing.fromUsd(status.spentUsd)).toBeCloseTo(Pricing.costMicros(price, usage), 0)
    }).pipe(Effect.provide(governedOver(provider, { limitUsd: 100, maxInFlight: 2 })))
  })

  it.effect("a stream the provider refuses (500) gives back its limiter reservation and its budget reservation (#10)", () => {
    const { provider } = scripted([{ _tag: "fail", latency: 0, error: "ServerError" }])
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const limiter = yield* RateLimiter.RateLimiter
      const before = yield* limiter.stats(KEY)
      const error = yield* Effect.flip(Stream.runDrain(client.stream(ask("refused", 300)))).pipe(
        Effect.fork,
        Effect.tap(() => TestClock.adjust("1 millis")),
        Effect.flatMap(Fiber.join)
      )
      expect(error._tag).toBe("ServerError")
      // In a millisecond the buckets refill about 17 tokens: the 300 reserved for output came back.
      const after = yield* limiter.stats(KEY)
      expect(Math.abs(after.levels.outputTokens!.level - before.levels.outputTokens!.level)).toBeLessThan(20)
      expect(Math.abs(after.levels.requests!.level - before.levels.requests!.level)).toBeLessThan(0.1)
      const status = yield* conserved(2)
      expect(status.spentUsd).toBe(0)
    }).pipe(Effect.provide(governedOver(provider, { limitUsd: 100, maxInFlight: 2 })))
  })

  it.effect("tenant B never joins tenant A's call: B's own budget is consulted (#13)", () => {
    const { provider, reached } = scripted([{ _tag: "answer", latency: 1_000, output: 10 }, {
      _tag: "answer",
      latency: 1_000,
      output: 10
    }])
    const layer = Governor.layer({ retry: false }).pipe(
      Layer.provideMerge(Layer.succeed(LlmClient.LlmClient, provider)),
      Layer.provideMerge(RateLimiter.layerMemory({ quotas: { [KEY]: quota } })),
      Layer.provideMerge(fixedEstimator),
      Layer.provideMerge(
        Budget.layer({ limits: [{ scope: { _tag: "tenant", id: "b" }, window: "day", limitUsd: 0.000001 }] }).pipe(
          Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
        )
      )
    )
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const a = yield* Effect.fork(client.complete(ask("the same question", 200, { tenant: "a" })))
      yield* TestClock.adjust("1 millis")
      const b = yield* Effect.fork(Effect.flip(client.complete(ask("the same question", 200, { tenant: "b" }))))
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(a)
      expect((yield* Fiber.join(b))._tag).toBe("BudgetExceeded")
      expect(reached.length).toBe(1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("requests carrying a provider-native body are never joined: their bodies may differ where their translations agree", () => {
    const { provider, reached } = scripted([{ _tag: "answer", latency: 1_000, output: 10 }, {
      _tag: "answer",
      latency: 1_000,
      output: 10
    }])
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const withImage = (image: string): LlmClient.Request => ({
        ...ask("describe the picture"),
        native: { api: "anthropic", body: { image } }
      })
      const a = yield* Effect.fork(client.complete(withImage("cat.png")))
      const b = yield* Effect.fork(client.complete(withImage("dog.png")))
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(a)
      yield* Fiber.join(b)
      expect(reached.length).toBe(2)
    }).pipe(Effect.provide(governedOver(provider, { limitUsd: 100, maxInFlight: 2 })))
  })

  it.effect("a billing error (QuotaExhausted) is neither retried nor a pause of the key, and costs nothing (#15)", () => {
    const { provider, reached } = scripted([{ _tag: "fail", latency: 10, error: "QuotaExhausted" }])
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const fiber = yield* Effect.fork(Effect.flip(client.complete(ask("no money"))))
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(fiber))._tag).toBe("QuotaExhausted")
      expect(reached.length).toBe(1)
      expect(Duration.toMillis((yield* (yield* RateLimiter.RateLimiter).stats(KEY)).pausedFor)).toBe(0)
      const status = yield* conserved(2)
      expect(status.spentUsd).toBe(0)
    }).pipe(Effect.provide(governedOver(provider, { limitUsd: 100, maxInFlight: 2 })))
  })

  it.effect("a call that cannot be admitted within metadata.maxWait fails with WaitTimeout and holds nothing (#14)", () => {
    const { provider } = scripted([{ _tag: "hang" }])
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const first = yield* Effect.fork(client.complete(ask("first")))
      yield* TestClock.adjust("1 millis")
      const waiting = yield* Effect.fork(Effect.flip(client.complete(ask("second", 200, { maxWait: "5 seconds" }))))
      yield* TestClock.adjust("6 seconds")
      const error = yield* Fiber.join(waiting)
      expect(error._tag).toBe("WaitTimeout")
      yield* Fiber.interrupt(first)
      yield* conserved(1)
    }).pipe(Effect.provide(governedOver(provider, { limitUsd: 100, maxInFlight: 1 })))
  })

  it.effect("a retry-after beyond the retry's maxDelay ends the caller's retries at once (#14)", () => {
    const huge = new LlmClient.RateLimited({
      provider: PROVIDER,
      model: MODEL,
      detail: "",
      status: 429,
      retryAfter: Duration.days(1)
    })
    let calls = 0
    const provider: LlmClient.Provider = {
      provider: PROVIDER,
      complete: () => Effect.suspend(() => (calls++, Effect.fail(huge))),
      stream: () => Stream.fail(huge)
    }
    return Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const fiber = yield* Effect.fork(Effect.flip(client.complete(ask("day"))))
      yield* TestClock.adjust("1 second")
      expect(fiber.unsafePoll()).not.toBeNull()
      expect((yield* Fiber.join(fiber))._tag).toBe("RateLimited")
      expect(calls).toBe(1)
    }).pipe(
      Effect.provide(
        governedOver(provider, {
          limitUsd: 100,
          maxInFlight: 2,
          governor: { retry: { maxAttempts: 6, maxElapsed: "30 days" } }
        })
      )
    )
  })
})
