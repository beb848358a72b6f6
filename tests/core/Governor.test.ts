import { describe, expect, it } from "@effect/vitest"
import {
  Budget,
  CircuitBreaker,
  Governor,
  LlmClient,
  Metrics,
  Pipeline,
  Pricing,
  RateLimiter,
  TokenEstimator
} from "@sluice/core"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import {
  Chunk,
  ConfigProvider,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Random,
  Stream,
  TestClock,
  Tracer
} from "effect"

const MODEL = "claude-haiku-4-5"
const KEY = `simulator/${MODEL}`

const quota = { requestsPerMinute: 60, inputTokensPerMinute: 20_000, outputTokensPerMinute: 4_000 }
const limiterQuota = {
  requests: { limit: quota.requestsPerMinute, per: "1 minute" },
  inputTokens: { limit: quota.inputTokensPerMinute, per: "1 minute" },
  outputTokens: { limit: quota.outputTokensPerMinute, per: "1 minute" }
}

const ask = (text: string, maxOutputTokens = 100): LlmClient.Request => ({
  model: MODEL,
  messages: [{ role: "user", content: text }],
  maxOutputTokens
})

/** A character-count estimator: these tests are about the Governor, not tiktoken (which takes a second to load). */
const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)

/** A governed client over the in-process simulator, with the simulator's stats. */
const governed = (
  options: Governor.Options,
  simulator: SimulatedClient.Options = {},
  quotas: RateLimiter.Options["quotas"] = { [KEY]: limiterQuota }
) =>
  Governor.layer(options).pipe(
    Layer.provideMerge(SimulatedClient.layer({ quota, ...simulator })),
    Layer.provideMerge(RateLimiter.layerMemory({ quotas })),
    Layer.provide(EstimatorFast)
  )

/** Advances the clock a minute at a time until every fiber is done. */
const drain = <A, E>(fibers: ReadonlyArray<Fiber.RuntimeFiber<A, E>>) =>
  Effect.gen(function*() {
    for (let round = 0; round < 120 && fibers.some((fiber) => fiber.unsafePoll() === null); round++) {
      yield* TestClock.adjust(Duration.minutes(1))
    }
    return yield* Effect.forEach(fibers, Fiber.await)
  })

const grantsOf = (key: string) =>
  Metric.value(Metrics.grants.pipe(Metric.tagged("key", key), Metric.tagged("class", "normal")))

describe("Governor", () => {
  it.effect("a burst far above the quota finishes with zero 429s from the provider", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const sim = yield* SimulatedClient.SimulatedStats
      const fibers = yield* Effect.forEach(
        Array.from({ length: 150 }, (_, i) =>
          ask(`Document ${i}: quarterly figures for region ${i % 7} and the outlook.`)),
        (request) =>
          Effect.fork(client.complete(request))
      )
      const exits = yield* drain(fibers)
      expect(exits.filter(Exit.isSuccess).length).toBe(150)
      const [stats] = (yield* sim.stats).keys
      expect(stats?.accepted).toBe(150)
      expect(stats?.rateLimited).toBe(0)
      // output was the binding limit: the run used most of it in its best minute
      expect(stats?.bestMinuteUtilisation.outputTokens).toBeGreaterThan(0.8)
    }).pipe(Effect.provide(governed({ count: "provider" }))))

  it.effect("with injected 429s, 529s and 500s every call still succeeds or fails with a typed error", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const sim = yield* SimulatedClient.SimulatedStats
      const fibers = yield* Effect.forEach(
        Array.from({ length: 60 }, (_, i) => ask(`Memo ${i} about supplier contracts.`)),
        (request) => Effect.fork(client.complete(request))
      )
      const exits = yield* drain(fibers)
      const typed = new Set([
        "RateLimited",
        "Overloaded",
        "ServerError",
        "NetworkError",
        "Timeout",
        "AllRungsFailed",
        "Shed",
        "CostTooLarge"
      ])
      for (const exit of exits) {
        if (Exit.isSuccess(exit)) continue
        expect(exit.cause._tag).toBe("Fail")
        if (exit.cause._tag === "Fail") expect(typed.has(exit.cause.error._tag)).toBe(true)
      }
      expect(exits.filter(Exit.isSuccess).length).toBeGreaterThan(55)
      const [stats] = (yield* sim.stats).keys
      expect((stats?.overloaded ?? 0) + (stats?.serverErrors ?? 0)).toBeGreaterThan(0)
    }).pipe(
      Effect.provide(
        governed({ count: "provider" }, {
          faults: {
            overloadedRate: 0.2,
            serverErrorRate: 0.1,
            bursts: [{ startSeconds: 10, durationSeconds: 5, status: 429 }]
          },
          seed: 7
        })
      ),
      Effect.withRandom(Random.make(3))
    ))

  it.effect("a retry passes the limiter again; the provider's refusal is refunded", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const limiter = yield* RateLimiter.RateLimiter
      const before = (yield* grantsOf("retry/key")).count
      const fiber = yield* Effect.fork(client.complete(ask("try me")))
      const exits = yield* drain([fiber])
      expect(Exit.isFailure(exits[0]!)).toBe(true)
      // maxAttempts 3: three grants, each refused with a 529 and refunded
      expect((yield* grantsOf("retry/key")).count - before).toBe(3)
      const stats = yield* limiter.stats("retry/key")
      expect(stats.levels.inputTokens?.level).toBe(quota.inputTokensPerMinute)
    }).pipe(Effect.provide(governed(
      { key: () => "retry/key", retry: { maxAttempts: 3 } },
      { faults: { overloadedRate: 1 } },
      { "retry/key": limiterQuota }
    ))))

  it.effect("the permit settles to the real usage and the snapshot is observed: the limiter's view matches the provider's", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const limiter = yield* RateLimiter.RateLimiter
      const response = yield* client.complete(ask("How full is the bucket?"))
      const levels = (yield* limiter.stats(KEY)).levels
      expect(levels.inputTokens?.level).toBe(response.rateLimits.dimensions.inputTokens?.remaining)
      expect(levels.outputTokens?.level).toBe(response.rateLimits.dimensions.outputTokens?.remaining)
      expect(levels.requests?.level).toBe(quota.requestsPerMinute - 1)
    }).pipe(Effect.provide(governed({}))))

  it.effect("under a tracer of its own, a document's call has its spans: Pipeline.document > Governor.complete > TokenEstimator.estimate", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const spans: Array<{ readonly name: string; readonly parent: string | undefined }> = []
      const native = yield* Effect.tracer
      const recording = Tracer.make({
        span: (name, parent, context, links, startTime, kind, options) => {
          spans.push({
            name,
            parent: Option.getOrUndefined(Option.map(parent, (p) => p._tag === "Span" ? p.name : "external"))
          })
          return native.span(name, parent, context, links, startTime, kind, options)
        },
        context: native.context
      })
      const outcomes = yield* Stream.runCollect(
        Pipeline.run(Stream.make({ id: "d1", text: "Where are my spans?" }), (doc) => client.complete(ask(doc.text)))
      ).pipe(Effect.provide(Pipeline.layerCheckpointNone), Effect.withTracer(recording))
      expect(Chunk.toReadonlyArray(outcomes).map((outcome) => outcome._tag)).toEqual(["Succeeded"])
      expect(spans).toContainEqual({ name: "Pipeline.document", parent: undefined })
      expect(spans).toContainEqual({ name: "Governor.complete", parent: "Pipeline.document" })
      expect(spans).toContainEqual({ name: "TokenEstimator.estimate", parent: "Governor.complete" })
    }).pipe(Effect.provide(governed({}))))

  it.effect("identical calls in flight are coalesced into one provider call, charged once", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const sim = yield* SimulatedClient.SimulatedStats
      const before = (yield* grantsOf(KEY)).count
      const fibers = yield* Effect.all([
        Effect.fork(client.complete(ask("same question"))),
        Effect.fork(client.complete(ask("same question")))
      ])
      yield* TestClock.adjust(Duration.millis(100))
      const [a, b] = yield* Effect.forEach(fibers, Fiber.join)
      expect(a).toBe(b)
      expect((yield* sim.stats).keys[0]?.accepted).toBe(1)
      expect((yield* grantsOf(KEY)).count - before).toBe(1)
    }).pipe(Effect.provide(governed({}, { latency: { baseMs: 100 } }))))

  it.effect("a rate-limited model falls back to the next rung at once; the 429 pauses the first rung's key", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const limiter = yield* RateLimiter.RateLimiter
      const response = yield* client.complete({ ...ask("who answers?"), model: "claude-opus-4-1" })
      expect(response.model).toBe(MODEL)
      expect((yield* limiter.stats("simulator/claude-opus-4-1")).pausedFor).toEqual(Duration.seconds(30))
    }).pipe(Effect.provide(
      Governor.layer({ fallback: [{ model: MODEL }] }).pipe(
        Layer.provide(Layer.scoped(
          LlmClient.LlmClient,
          Effect.map(SimulatedClient.make({ quota }), ({ client }) => ({
            ...client,
            // opus is rate limited at the provider; everything else goes to the simulator
            complete: (request: LlmClient.Request) =>
              request.model === "claude-opus-4-1"
                ? Effect.fail(
                  new LlmClient.RateLimited({
                    provider: "simulator",
                    model: request.model,
                    status: 429,
                    detail: "busy",
                    retryAfter: Duration.seconds(30)
                  })
                )
                : client.complete(request)
          }))
        )),
        Layer.provideMerge(
          RateLimiter.layerMemory({ quotas: { "simulator/claude-opus-4-1": limiterQuota, [KEY]: limiterQuota } })
        ),
        Layer.provide(EstimatorFast)
      )
    )))

  it.effect("when every rung fails, AllRungsFailed names each rung's reason", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const error = yield* Effect.flip(client.complete({ ...ask("anyone?"), model: "claude-opus-4-1" }))
      expect(error._tag).toBe("AllRungsFailed")
      if (error._tag !== "AllRungsFailed") return
      expect(error.attempts.map((attempt) => attempt.model)).toEqual(["claude-opus-4-1", MODEL])
      expect(error.message).toContain("Overloaded")
    }).pipe(Effect.provide(governed({ fallback: [{ model: MODEL }], retry: false }, { faults: { overloadedRate: 1 } }, {
      "simulator/claude-opus-4-1": limiterQuota,
      [KEY]: limiterQuota
    }))))

  it.effect("while a breaker is open the response cache answers", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const breaker = yield* CircuitBreaker.CircuitBreaker
      const first = yield* client.complete(ask("cache me"))
      // trip the breaker on the key with provider failures
      for (let i = 0; i < 2; i++) {
        yield* Effect.ignore(
          breaker.run(KEY, Effect.fail(new LlmClient.ServerError({ provider: "simulator", detail: "down" })))
        )
      }
      expect(yield* breaker.state(KEY)).toBe("open")
      const again = yield* client.complete(ask("cache me"))
      expect(again).toEqual(first)
      const uncached = yield* Effect.flip(client.complete(ask("never seen")))
      expect(uncached._tag).toBe("CircuitOpen")
    }).pipe(Effect.provide(
      governed({ cacheTtl: "10 minutes", retry: false, coalesce: true }).pipe(
        Layer.provideMerge(CircuitBreaker.layer({ consecutiveFailures: 2 }))
      )
    )))

  it.effect("a budget rejection takes no quota and makes no call; an accepted call is charged its real cost", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const budget = yield* Budget.Budget
      const sim = yield* SimulatedClient.SimulatedStats
      const before = (yield* grantsOf("budget/key")).count
      const response = yield* client.complete(ask("a cheap call", 50))
      const [status] = yield* budget.status
      const expected = (response.usage.inputTokens * 1 + response.usage.outputTokens * 5) / 1_000_000
      expect(status?.spentUsd).toBeCloseTo(expected, 6)
      expect(status?.reservedUsd).toBe(0)
      // max_tokens 100,000 at $5 per million is $0.50: over the $0.01 limit
      const error = yield* Effect.flip(client.complete(ask("an expensive call", 100_000)))
      expect(error._tag).toBe("BudgetExceeded")
      expect((yield* grantsOf("budget/key")).count - before).toBe(1)
      expect((yield* sim.stats).keys[0]?.accepted).toBe(1)
    }).pipe(Effect.provide(
      governed(
        { key: () => "budget/key", retry: false },
        {},
        { "budget/key": { ...limiterQuota, outputTokens: { limit: 1_000_000, per: "1 minute" } } }
      ).pipe(
        Layer.provideMerge(
          Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 0.01 }] }).pipe(
            Layer.provide([Pricing.layer(), Budget.layerLedgerMemory]),
            Layer.orDie
          )
        )
      )
    )))

  it("plain options are validated, each error naming its field", () => {
    const result = Governor.validate({
      retry: { maxAttempts: 0, maxDelay: "soon" as never },
      fallback: [{ model: "" }],
      count: "guess" as never
    })
    expect(result._tag).toBe("Left")
    if (result._tag === "Left") {
      expect(result.left.issues.map((issue) => issue.path).sort()).toEqual([
        "count",
        "fallback.0.model",
        "retry.maxAttempts",
        "retry.maxDelay"
      ])
    }
    expect(Governor.validate({ retry: { maxAttempts: 3, base: "500 millis" }, cacheTtl: "5 minutes" })._tag).toBe(
      "Right"
    )
  })

  it.effect("options come from Config, validated, the error naming the variable", () =>
    Effect.gen(function*() {
      const options = yield* Effect.withConfigProvider(
        Governor.config,
        ConfigProvider.fromMap(
          new Map([["SLUICE_RETRY_MAX_ATTEMPTS", "3"], ["SLUICE_FALLBACK", "claude-sonnet-4-5, claude-haiku-4-5"], [
            "SLUICE_CACHE_TTL",
            "5 minutes"
          ]])
        )
      )
      expect(options.retry).toMatchObject({ maxAttempts: 3 })
      expect(options.fallback).toEqual([{ model: "claude-sonnet-4-5" }, { model: "claude-haiku-4-5" }])
      expect(options.cacheTtl).toEqual(Duration.minutes(5))
      const error = yield* Effect.flip(
        Effect.withConfigProvider(
          Governor.config,
          ConfigProvider.fromMap(new Map([["SLUICE_RETRY_MAX_ATTEMPTS", "0"]]))
        )
      )
      expect(String(error)).toContain("SLUICE_RETRY_MAX_ATTEMPTS")
      const garbage = yield* Effect.flip(
        Effect.withConfigProvider(Governor.config, ConfigProvider.fromMap(new Map([["SLUICE_COUNT", "guess"]])))
      )
      expect(String(garbage)).toContain("SLUICE_COUNT")
      // the prompt-cache prediction: on for 5 minutes by default, and from the environment
      expect(options).toMatchObject({ predictCacheReads: true, promptCacheTtl: Duration.minutes(5) })
      const cache = yield* Effect.withConfigProvider(
        Governor.config,
        ConfigProvider.fromMap(
          new Map([["SLUICE_PREDICT_CACHE_READS", "false"], ["SLUICE_PROMPT_CACHE_TTL", "1 hour"]])
        )
      )
      expect(cache).toMatchObject({ predictCacheReads: false, promptCacheTtl: Duration.hours(1) })
    }))
})
