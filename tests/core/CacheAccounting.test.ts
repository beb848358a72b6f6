import { describe, expect, it } from "@effect/vitest"
import {
  Budget,
  Governor,
  LlmClient,
  Metrics,
  Pricing,
  Quota,
  RateLimiter,
  RateLimitSnapshot,
  TokenEstimator
} from "@sluice/core"
import { Effect, Either, Layer, Metric, Ref } from "effect"

const perMinute = (limit: number) => ({ limit, per: "1 minute" })

/** A usage with every part of the input: 300 plain, 6,000 read from the cache, 1,500 written to it. */
const cachedUsage: LlmClient.Usage = {
  inputTokens: 300,
  cacheReadInputTokens: 6_000,
  cacheWriteInputTokens: 1_500,
  outputTokens: 200
}

const request: LlmClient.Request = {
  model: "claude-sonnet-4-5",
  system: "You extract facts from contracts. ".repeat(200),
  systemCacheControl: { type: "ephemeral" },
  messages: [{ role: "user", content: "Contract 17: the supplier delivers by March." }],
  maxOutputTokens: 400
}

/** A character-count estimator: these tests are about settlement, not tiktoken. */
const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)

/**
 * A provider named `provider` that answers every call with `usage`, and
 * records the input bucket's level while the call is in flight (what the
 * reservation took).
 */
const fakeProvider = (provider: string, key: string, usage: LlmClient.Usage, duringCall: Ref.Ref<number | undefined>) =>
  Layer.effect(
    LlmClient.LlmClient,
    Effect.map(RateLimiter.RateLimiter, (limiter) =>
      LlmClient.LlmClient.of({
        provider,
        complete: (call) =>
          Effect.gen(function*() {
            const levels = (yield* Effect.orDie(limiter.stats(key))).levels
            yield* Ref.set(duringCall, levels.inputTokens?.level ?? levels.tokens?.level)
            return {
              id: "msg_1",
              model: call.model,
              content: [{ type: "text", text: "ok" }],
              stopReason: "end_turn",
              usage,
              rateLimits: RateLimitSnapshot.empty
            }
          }),
        stream: () => Effect.dieMessage("not streamed") as never
      }))
  )

/** A Governor over the fake provider, with a limiter holding `quota` on `key`. */
const governedBy = (
  options: Governor.Options,
  provider: string,
  quota: Quota.QuotaInput,
  duringCall: Ref.Ref<number | undefined>,
  usage: LlmClient.Usage = cachedUsage
) => {
  const key = `${provider}/${request.model}`
  return Governor.layer({ retry: false, ...options }).pipe(
    Layer.provide(fakeProvider(provider, key, usage, duringCall)),
    Layer.provideMerge(RateLimiter.layerMemory({ quotas: { [key]: quota } })),
    Layer.provide(EstimatorFast)
  )
}

/** Runs one call through a Governor and answers the input bucket's level during and after it. */
const settleOnce = (
  options: Governor.Options,
  provider: string,
  quota: Quota.QuotaInput,
  dimension: "inputTokens" | "tokens"
) =>
  Effect.gen(function*() {
    const duringCall = yield* Ref.make<number | undefined>(undefined)
    return yield* Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const limiter = yield* RateLimiter.RateLimiter
      yield* client.complete(request)
      const after = (yield* limiter.stats(`${provider}/${request.model}`)).levels[dimension]?.level
      return { during: (yield* Ref.get(duringCall))!, after: after! }
    }).pipe(Effect.provide(governedBy(options, provider, quota, duringCall)))
  })

describe("Cache-aware accounting", () => {
  describe("the rules as data", () => {
    it("finds each call's rule by provider and model, the longest prefix winning", () => {
      const rule = (provider: string, model: string) =>
        Quota.cacheCountingFor(Quota.defaultCacheCounting, provider, model)
      expect(rule("anthropic", "claude-sonnet-4-5")).toEqual({ cacheReadsCount: false, cacheWritesCount: true })
      expect(rule("anthropic", "claude-sonnet-4-5-20250929")).toEqual({
        cacheReadsCount: false,
        cacheWritesCount: true
      })
      // Claude 3.x models counted cache reads against ITPM
      expect(rule("anthropic", "claude-3-5-haiku-latest")).toEqual({ cacheReadsCount: true, cacheWritesCount: true })
      expect(rule("anthropic-eu", "claude-haiku-4-5")).toEqual({ cacheReadsCount: false, cacheWritesCount: true })
      expect(rule("simulator", "claude-haiku-4-5")).toEqual({ cacheReadsCount: false, cacheWritesCount: true })
      expect(rule("openai", "gpt-4o")).toEqual({ cacheReadsCount: true, cacheWritesCount: true })
      // a provider the table does not know counts everything
      expect(rule("my-gateway", "llama-3")).toEqual(Quota.countAll)
      expect(Quota.cacheCountingFor({}, "anything", "x")).toEqual(Quota.countAll)
      // an exact provider/model entry beats the provider's
      const table = {
        ...Quota.defaultCacheCounting,
        "anthropic/claude-opus-4-1": { cacheReadsCount: true, cacheWritesCount: false }
      }
      expect(Quota.cacheCountingFor(table, "anthropic", "claude-opus-4-1")).toEqual({
        cacheReadsCount: true,
        cacheWritesCount: false
      })
      expect(Quota.cacheCountingFor(table, "anthropic", "claude-opus-4")).toEqual({
        cacheReadsCount: false,
        cacheWritesCount: true
      })
    })

    it("a table with a wrong field is refused, naming the field", () => {
      const result = Quota.decodeCacheCounting({
        anthropic: { cacheReadsCount: "no", cacheWritesCount: true },
        openai: { cacheReadsCount: true }
      })
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.issues.map((issue) => issue.path).sort()).toEqual([
          "anthropic.cacheReadsCount",
          "openai.cacheWritesCount"
        ])
      }
      expect(Either.isRight(Quota.decodeCacheCounting(Quota.defaultCacheCounting))).toBe(true)
      const invalid = Governor.validate({ cacheCounting: { anthropic: { cacheReadsCount: 1 } } as never })
      expect(Either.isLeft(invalid)).toBe(true)
      if (Either.isLeft(invalid)) {
        expect(invalid.left.issues.map((issue) => issue.path)).toContain("cacheCounting.anthropic.cacheReadsCount")
      }
    })

    it("usageCost counts plain input always, and cache reads and writes as the rule says", () => {
      const anthropic = Quota.cacheCountingFor(Quota.defaultCacheCounting, "anthropic", "claude-sonnet-4-5")
      const openai = Quota.cacheCountingFor(Quota.defaultCacheCounting, "openai", "gpt-4o")
      expect(LlmClient.usageCost(cachedUsage, anthropic)).toEqual({
        requests: 1,
        inputTokens: 300 + 1_500,
        outputTokens: 200
      })
      expect(LlmClient.usageCost(cachedUsage, openai)).toEqual({
        requests: 1,
        inputTokens: 300 + 6_000 + 1_500,
        outputTokens: 200
      })
      expect(LlmClient.usageCost(cachedUsage, { cacheReadsCount: false, cacheWritesCount: false }).inputTokens).toBe(
        300
      )
      // without a rule, everything counts (the conservative default)
      expect(LlmClient.usageCost(cachedUsage).inputTokens).toBe(7_800)
    })
  })

  describe("settlement in the Governor", () => {
    const anthropicQuota = { requests: perMinute(100), inputTokens: perMinute(50_000), outputTokens: perMinute(10_000) }
    const openaiQuota = { requests: perMinute(100), tokens: perMinute(50_000) }

    it.effect("Anthropic: the whole prompt is reserved as uncached, and the settlement gives back the cache reads", () =>
      Effect.gen(function*() {
        const { during, after } = yield* settleOnce({}, "anthropic", anthropicQuota, "inputTokens")
        // the reservation took the estimate of the whole prompt: far more than the 1,800 tokens that count
        expect(50_000 - during).toBeGreaterThan(1_800)
        // settled: plain input + cache writes, not the 6,000 cache reads
        expect(after).toBe(50_000 - (300 + 1_500))
      }))

    it.effect("OpenAI: cached tokens count against TPM, output too", () =>
      Effect.gen(function*() {
        const { after } = yield* settleOnce({}, "openai", openaiQuota, "tokens")
        expect(after).toBe(50_000 - (300 + 6_000 + 1_500 + 200))
      }))

    it.effect("a rule given in the options wins over the default table", () =>
      Effect.gen(function*() {
        const { after } = yield* settleOnce(
          { cacheCounting: { anthropic: { cacheReadsCount: true, cacheWritesCount: false } } },
          "anthropic",
          anthropicQuota,
          "inputTokens"
        )
        expect(after).toBe(50_000 - (300 + 6_000))
      }))

    it.effect("the old cacheReadsCount option still overrides the reads of every rule", () =>
      Effect.gen(function*() {
        const counted = yield* settleOnce({ cacheReadsCount: true }, "anthropic", anthropicQuota, "inputTokens")
        expect(counted.after).toBe(50_000 - (300 + 6_000 + 1_500))
        const free = yield* settleOnce({ cacheReadsCount: false }, "openai", openaiQuota, "tokens")
        expect(free.after).toBe(50_000 - (300 + 1_500 + 200))
      }))

    it.effect("the budget is charged each part of the input at its own price", () =>
      Effect.gen(function*() {
        const duringCall = yield* Ref.make<number | undefined>(undefined)
        const BudgetLive = Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 100 }] }).pipe(
          Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
        )
        const [status] = yield* Effect.gen(function*() {
          yield* (yield* LlmClient.LlmClient).complete(request)
          return yield* (yield* Budget.Budget).status
        }).pipe(
          Effect.provide(governedBy({}, "anthropic", anthropicQuota, duringCall).pipe(Layer.provideMerge(BudgetLive)))
        )
        // claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million tokens
        const expected = (300 * 3 + 6_000 * 0.3 + 1_500 * 3.75 + 200 * 15) / 1_000_000
        expect(status?.spentUsd).toBeCloseTo(expected, 9)
        expect(status?.reservedUsd).toBe(0)
      }))
  })

  describe("reservations that expect the cache", () => {
    const key = "anthropic/claude-sonnet-4-5"
    const contract = { ...request, system: "You extract facts from contracts. ".repeat(1_000) }
    const usage = (plain: number, read: number, write: number): LlmClient.Usage => ({
      inputTokens: plain,
      cacheReadInputTokens: read,
      cacheWriteInputTokens: write,
      outputTokens: 100
    })

    /** A provider that answers each call with the next usage of `script` and records what each call held of the input bucket. */
    const scripted = (
      script: ReadonlyArray<LlmClient.Usage>,
      held: Ref.Ref<ReadonlyArray<number>>,
      options: Governor.Options = {}
    ) => {
      let next = 0
      let levelBefore = 0
      const provider = Layer.effect(
        LlmClient.LlmClient,
        Effect.map(RateLimiter.RateLimiter, (limiter) =>
          LlmClient.LlmClient.of({
            provider: "anthropic",
            complete: (call) =>
              Effect.gen(function*() {
                const level = (yield* Effect.orDie(limiter.stats(key))).levels.inputTokens!.level
                yield* Ref.update(held, (all) => [...all, levelBefore - level])
                return {
                  id: "msg",
                  model: call.model,
                  content: [{ type: "text", text: "ok" }],
                  stopReason: "end_turn",
                  usage: script[next++]!,
                  rateLimits: RateLimitSnapshot.empty
                }
              }),
            stream: () => Effect.dieMessage("not streamed") as never
          }))
      )
      const governed = Governor.layer({ retry: false, ...options }).pipe(
        Layer.provide(provider),
        Layer.provideMerge(
          RateLimiter.layerMemory({
            quotas: {
              [key]: { requests: perMinute(100), inputTokens: perMinute(100_000), outputTokens: perMinute(10_000) }
            }
          })
        ),
        Layer.provide(EstimatorFast)
      )
      const call = (text: string, base: LlmClient.Request = contract) =>
        Effect.gen(function*() {
          levelBefore = (yield* (yield* RateLimiter.RateLimiter).stats(key)).levels.inputTokens?.level ?? 100_000
          yield* (yield* LlmClient.LlmClient).complete({ ...base, messages: [{ role: "user", content: text }] })
        })
      return { governed, call }
    }

    it.effect("a call whose prefix was answered holds only its uncached part; a miss settles in full and drops the prediction", () =>
      Effect.gen(function*() {
        const held = yield* Ref.make<ReadonlyArray<number>>([])
        const { call, governed } = scripted([
          usage(50, 0, 8_000),
          usage(40, 8_000, 0),
          usage(8_060, 0, 0),
          usage(45, 0, 8_000)
        ], held)
        const expectations = (outcome: string) =>
          Effect.map(
            Metric.value(Metric.tagged(Metric.tagged(Metrics.promptCacheExpectations, "key", key), "outcome", outcome)),
            (state) => state.count
          )
        const readBefore = yield* expectations("read")
        const missedBefore = yield* expectations("missed")
        const after = yield* Effect.gen(function*() {
          for (const question of ["Who delivers?", "By when?", "Where to?", "What if late?"]) yield* call(question)
          return (yield* (yield* RateLimiter.RateLimiter).stats(key)).levels.inputTokens!.level
        }).pipe(Effect.provide(governed))
        const [first, second, third, fourth] = yield* Ref.get(held)
        // the first call knows nothing cached: it holds the whole prompt (about 8,300 tokens by the estimate)
        expect(first).toBeGreaterThan(8_000)
        // the second expects to read the 8,000 the first wrote: it holds the rest
        expect(second).toBeLessThan(first! - 7_000)
        expect(second).toBeGreaterThan(0)
        // the third expected the same and missed: it held little, and settled to the 8,060 the provider counted
        expect(third).toBeLessThan(first! - 7_000)
        // after the miss the prediction is gone: the whole prompt again
        expect(fourth).toBeGreaterThan(8_000)
        // the bucket ends at what the provider counted (no time passes under TestClock): 50 + 8,000, 40, 8,060, 45 + 8,000
        expect(after).toBe(100_000 - (8_050 + 40 + 8_060 + 8_045))
        // one expectation met, one missed: sluice_prompt_cache_expectations_total
        expect((yield* expectations("read")) - readBefore).toBe(1)
        expect((yield* expectations("missed")) - missedBefore).toBe(1)
      }))

    it.effect("another prefix, a rule that counts cache reads, or the option off: the whole prompt is held", () =>
      Effect.gen(function*() {
        const script = [usage(50, 0, 8_000), usage(40, 0, 8_000), usage(40, 8_000, 0)]
        const otherPrefix = Effect.gen(function*() {
          const held = yield* Ref.make<ReadonlyArray<number>>([])
          const { call, governed } = scripted(script, held)
          yield* Effect.gen(function*() {
            yield* call("one")
            yield* call("two", { ...contract, system: `${contract.system} Amended.` })
          }).pipe(Effect.provide(governed))
          return yield* Ref.get(held)
        })
        const readsCount = (options: Governor.Options) =>
          Effect.gen(function*() {
            const held = yield* Ref.make<ReadonlyArray<number>>([])
            const { call, governed } = scripted(script, held, options)
            yield* Effect.gen(function*() {
              yield* call("one")
              yield* call("two")
            }).pipe(Effect.provide(governed))
            return yield* Ref.get(held)
          })
        for (
          const held of [
            yield* otherPrefix,
            yield* readsCount({ cacheCounting: { anthropic: { cacheReadsCount: true, cacheWritesCount: true } } }),
            yield* readsCount({ predictCacheReads: false })
          ]
        ) {
          expect(held[0]).toBeGreaterThan(8_000)
          expect(held[1]).toBeGreaterThan(8_000)
        }
      }))
  })

  describe("the budget's worst case", () => {
    it.effect("a call that marks the cache reserves its input at the cache-write price, one that does not at the input price", () =>
      Effect.gen(function*() {
        const price = Either.getOrThrow(Pricing.lookup(Pricing.defaultTable, "claude-sonnet-4-5"))
        // claude-sonnet-4-5: $3 input, $3.75 cache write, $15 output per million tokens
        expect(Pricing.worstCaseMicros(price, { inputTokens: 1_000_000, maxOutputTokens: 1_000 })).toBe(
          3_000_000 + 15_000
        )
        expect(Pricing.worstCaseMicros(price, { inputTokens: 1_000_000, maxOutputTokens: 1_000, cacheable: true }))
          .toBe(3_750_000 + 15_000)
        expect(LlmClient.marksCache(request)).toBe(true)
        expect(LlmClient.marksCache({ ...request, systemCacheControl: undefined })).toBe(false)
        expect(
          LlmClient.marksCache({
            ...request,
            systemCacheControl: undefined,
            messages: [{ role: "user", content: [{ type: "text", text: "x", cacheControl: { type: "ephemeral" } }] }]
          })
        ).toBe(true)

        // Through the Governor: a budget between the two worst cases of the same prompt admits it uncached and refuses it cached.
        const estimate = yield* Effect.flatMap(
          TokenEstimator.TokenEstimator,
          (estimator) => estimator.estimate(request)
        ).pipe(Effect.provide(EstimatorFast))
        const worst = (cacheable: boolean) =>
          Pricing.worstCaseMicros(price, {
            inputTokens: estimate.inputTokens,
            maxOutputTokens: request.maxOutputTokens,
            cacheable
          })
        const between = Pricing.toUsd((worst(false) + worst(true)) / 2)
        const duringCall = yield* Ref.make<number | undefined>(undefined)
        const tight = Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: between }] }).pipe(
          Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
        )
        const quota = { requests: perMinute(100), inputTokens: perMinute(50_000), outputTokens: perMinute(10_000) }
        const attempt = (call: LlmClient.Request) =>
          Effect.flip(Effect.flatMap(LlmClient.LlmClient, (client) => client.complete(call))).pipe(
            Effect.map((error) => error._tag),
            Effect.catchAllDefect(() => Effect.succeed("defect")),
            Effect.orElseSucceed(() => "answered"),
            Effect.provide(governedBy({}, "anthropic", quota, duringCall).pipe(Layer.provideMerge(tight)))
          )
        expect(yield* attempt({ ...request, systemCacheControl: undefined })).toBe("answered")
        expect(yield* attempt(request)).toBe("BudgetExceeded")
      }))
  })

  describe("prices per part", () => {
    it("each part at its own price, adding up to the whole", () => {
      const price = Either.getOrThrow(Pricing.lookup(Pricing.defaultTable, "claude-sonnet-4-5"))
      const parts = Pricing.costPartsMicros(price, cachedUsage)
      expect(parts).toEqual({ input: 900, output: 3_000, cacheRead: 1_800, cacheWrite: 5_625 })
      expect(Pricing.costMicros(price, cachedUsage)).toBe(900 + 3_000 + 1_800 + 5_625)
      // the same input uncached costs more than this mix of reads and writes
      const uncached = Pricing.costMicros(price, {
        ...cachedUsage,
        inputTokens: 7_800,
        cacheReadInputTokens: 0,
        cacheWriteInputTokens: 0
      })
      expect(uncached).toBeGreaterThan(Pricing.costMicros(price, cachedUsage))
    })
  })
})
