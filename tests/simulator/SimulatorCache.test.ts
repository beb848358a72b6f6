import { describe, expect, it } from "@effect/vitest"
import { Budget, Governor, LlmClient, Pricing, RateLimiter, TokenEstimator } from "@sluice/core"
import * as Anthropic from "@sluice/providers/Anthropic"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import * as Simulator from "@sluice/simulator/Simulator"
import { Chunk, Duration, Effect, Fiber, Layer, Redacted, Stream, TestClock } from "effect"

const MODEL = "claude-haiku-4-5"

/** A long system prompt, about 3,400 tokens by the simulator's count: above the 1,024-token minimum. */
const SYSTEM = Array.from(
  { length: 200 },
  (_, i) => `Clause ${i}: the supplier delivers the goods on time and in full.`
).join(" ")

const ask = (
  text: string,
  options: { readonly cached?: boolean; readonly system?: string } = {}
): LlmClient.Request => ({
  model: MODEL,
  system: options.system ?? SYSTEM,
  ...(options.cached === false ? {} : { systemCacheControl: { type: "ephemeral" } as const }),
  messages: [{ role: "user", content: text }],
  maxOutputTokens: 100
})

/** The simulator's count of the cached prefix (the system prompt) and of a whole request. */
const prefixTokens = (system = SYSTEM) => Simulator.countTokens({ system })
const totalTokens = (text: string) =>
  Simulator.countTokens({ system: SYSTEM, messages: [{ role: "user", content: text }] })

const quota = { requestsPerMinute: 100, inputTokensPerMinute: 30_000, outputTokensPerMinute: 10_000 }
const limiterQuota = {
  requests: { limit: quota.requestsPerMinute, per: "1 minute" },
  inputTokens: { limit: quota.inputTokensPerMinute, per: "1 minute" },
  outputTokens: { limit: quota.outputTokensPerMinute, per: "1 minute" }
}

/** A character-count estimator: these tests are about caching, not tiktoken. */
const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)

const BudgetLive = Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 100 }] }).pipe(
  Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
)

/** USD of a usage at the default table's prices for the model, each part at its own price. */
const usd = (usage: LlmClient.Usage) => Effect.flatMap(Pricing.make(), (pricing) => pricing.cost(MODEL, usage))

describe("Prompt caching end to end", () => {
  describe("the in-process simulator under a Governor (TestClock)", () => {
    const governed = (key: string) =>
      Governor.layer({ retry: false }).pipe(
        Layer.provideMerge(SimulatedClient.layer({ quota })),
        Layer.provideMerge(RateLimiter.layerMemory({ quotas: { [key]: limiterQuota } })),
        Layer.provideMerge(BudgetLive),
        Layer.provide(EstimatorFast)
      )

    it.effect("a repeated cached system prompt: the first call writes, later calls read; the limiter is charged plain input and writes only", () =>
      Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const limiter = yield* RateLimiter.RateLimiter
        const questions = [
          "Who delivers?",
          "By when are the goods due?",
          "Is partial delivery allowed?",
          "What happens when late?"
        ]
        const responses = []
        for (const question of questions) responses.push(yield* client.complete(ask(question)))

        const [first, ...later] = responses
        expect(first!.usage).toMatchObject({
          cacheWriteInputTokens: prefixTokens(),
          cacheReadInputTokens: 0,
          inputTokens: totalTokens(questions[0]!) - prefixTokens()
        })
        later.forEach((response, i) => {
          expect(response.usage).toMatchObject({
            cacheWriteInputTokens: 0,
            cacheReadInputTokens: prefixTokens(),
            inputTokens: totalTokens(questions[i + 1]!) - prefixTokens()
          })
        })

        // the limiter's input bucket took plain input and the one write, none of the reads
        const charged = responses.reduce(
          (sum, response) => sum + response.usage.inputTokens + response.usage.cacheWriteInputTokens,
          0
        )
        const level = (yield* limiter.stats(`simulator/${MODEL}`)).levels.inputTokens?.level
        expect(level).toBe(quota.inputTokensPerMinute - charged)
        // and so did the provider's: its remaining agrees with the limiter's view
        expect(responses[3]!.rateLimits.dimensions.inputTokens?.remaining).toBe(quota.inputTokensPerMinute - charged)

        const stats = (yield* (yield* SimulatedClient.SimulatedStats).stats).keys[0]!
        expect(stats).toMatchObject({
          accepted: 4,
          rateLimited: 0,
          cacheWriteInputTokens: prefixTokens(),
          cacheReadInputTokens: 3 * prefixTokens()
        })

        // the budget was charged each part at its own price: reads at $0.10, the write at $1.25 per million
        const [status] = yield* (yield* Budget.Budget).status
        let expected = 0
        for (const response of responses) expected += yield* usd(response.usage)
        expect(status?.spentUsd).toBeCloseTo(expected, 9)
        const uncached = yield* usd({
          inputTokens: 4 * totalTokens(questions[1]!),
          outputTokens: 0,
          cacheReadInputTokens: 0,
          cacheWriteInputTokens: 0
        })
        expect(status!.spentUsd).toBeLessThan(uncached)
      }).pipe(Effect.provide(governed(`simulator/${MODEL}`))))

    it.scoped("a cached prefix lives 5 simulated minutes, refreshed by each read; then it is written again", () =>
      Effect.gen(function*() {
        const { client } = yield* SimulatedClient.make({ quota })
        const write = (yield* client.complete(ask("one"))).usage
        expect(write.cacheWriteInputTokens).toBe(prefixTokens())
        yield* TestClock.adjust(Duration.minutes(4))
        expect((yield* client.complete(ask("two"))).usage.cacheReadInputTokens).toBe(prefixTokens())
        // 8 minutes after the write, 4 after the read that refreshed it
        yield* TestClock.adjust(Duration.minutes(4))
        expect((yield* client.complete(ask("three"))).usage.cacheReadInputTokens).toBe(prefixTokens())
        yield* TestClock.adjust(Duration.minutes(5))
        const expired = (yield* client.complete(ask("four"))).usage
        expect(expired).toMatchObject({ cacheReadInputTokens: 0, cacheWriteInputTokens: prefixTokens() })
      }))

    it.scoped("cache reads are free against the simulator's input limit, writes and plain input are not", () =>
      Effect.gen(function*() {
        // 8,000 input tokens a minute: ten calls that read ~3,400 cached tokens each fit, two uncached ones do not
        const { client, stats } = yield* SimulatedClient.make({ quota: { ...quota, inputTokensPerMinute: 8_000 } })
        for (let i = 0; i < 10; i++) yield* client.complete(ask(`question ${i}`))
        expect((yield* stats.stats).keys[0]).toMatchObject({
          accepted: 10,
          rateLimited: 0,
          cacheReadInputTokens: 9 * prefixTokens()
        })
        yield* client.complete(ask("uncached a", { cached: false }))
        const refused = yield* Effect.flip(client.complete(ask("uncached b", { cached: false })))
        expect(refused._tag).toBe("RateLimited")
        if (refused._tag === "RateLimited") expect(refused.dimension).toBe("inputTokens")
      }))

    it.scoped("a prefix below the minimum is not cached; unmarked prompts are not cached; keys and models have caches of their own", () =>
      Effect.gen(function*() {
        const { client } = yield* SimulatedClient.make({ quota })
        const short = "You are terse."
        for (let i = 0; i < 2; i++) {
          const usage = (yield* client.complete(ask(`short ${i}`, { system: short }))).usage
          expect(usage).toMatchObject({ cacheReadInputTokens: 0, cacheWriteInputTokens: 0 })
        }
        const plain = (yield* client.complete(ask("plain", { cached: false }))).usage
        expect(plain).toMatchObject({
          cacheReadInputTokens: 0,
          cacheWriteInputTokens: 0,
          inputTokens: totalTokens("plain")
        })
        expect((yield* client.complete(ask("haiku"))).usage.cacheWriteInputTokens).toBe(prefixTokens())
        expect((yield* client.complete({ ...ask("sonnet"), model: "claude-sonnet-4-5" })).usage.cacheWriteInputTokens)
          .toBe(prefixTokens())
        const other = yield* SimulatedClient.make({ quota, apiKey: "other-key" })
        expect((yield* other.client.complete(ask("other key"))).usage.cacheWriteInputTokens).toBe(prefixTokens())
      }))

    it.scoped("a conversation that moves its breakpoint forward reads what the last turn wrote", () =>
      Effect.gen(function*() {
        const { client } = yield* SimulatedClient.make({ quota })
        const document = `Contract text. ${SYSTEM}`
        const turn1: LlmClient.Request = {
          model: MODEL,
          messages: [{
            role: "user",
            content: [{ type: "text", text: document, cacheControl: { type: "ephemeral" } }]
          }],
          maxOutputTokens: 100
        }
        const first = yield* client.complete(turn1)
        expect(first.usage.cacheWriteInputTokens).toBeGreaterThan(1_024)
        const turn2: LlmClient.Request = {
          ...turn1,
          messages: [
            { role: "user", content: [{ type: "text", text: document }] },
            { role: "assistant", content: LlmClient.text(first) },
            {
              role: "user",
              content: [{ type: "text", text: "And the penalties?", cacheControl: { type: "ephemeral" } }]
            }
          ]
        }
        const second = (yield* client.complete(turn2)).usage
        expect(second.cacheReadInputTokens).toBe(first.usage.cacheWriteInputTokens)
        expect(second.cacheWriteInputTokens).toBeGreaterThan(0)
        expect(second.inputTokens).toBe(0)
      }))
  })

  describe("reservations that expect the cache (TestClock)", () => {
    // 8,000 input tokens a minute and answers that take 10 s: a whole prompt (~3,400 tokens) fits twice
    const tight = { ...quota, inputTokensPerMinute: 8_000 }
    const key = `simulator/${MODEL}`
    const governedTight = (options: Governor.Options) =>
      Governor.layer({ retry: false, ...options }).pipe(
        Layer.provideMerge(SimulatedClient.layer({ quota: tight, latency: { baseMs: 10_000 } })),
        Layer.provideMerge(
          RateLimiter.layerMemory({
            quotas: { [key]: { ...limiterQuota, inputTokens: { limit: 8_000, per: "1 minute" } } }
          })
        ),
        Layer.provide(EstimatorFast)
      )

    /** One call to warm the cache, then ten at once: how many the limiter lets run together, and what the provider saw. */
    const burst = Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const limiter = yield* RateLimiter.RateLimiter
      const warm = yield* Effect.fork(client.complete(ask("warm the cache")))
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(warm)
      const calls = yield* Effect.fork(
        Effect.forEach(
          Array.from({ length: 10 }, (_, i) => ask(`question ${i}`)),
          (request) => client.complete(request),
          { concurrency: "unbounded" }
        )
      )
      yield* TestClock.adjust("1 second")
      const together = (yield* limiter.stats(key)).inFlight
      yield* TestClock.adjust("5 minutes")
      const responses = yield* Fiber.join(calls)
      const stats = (yield* (yield* SimulatedClient.SimulatedStats).stats).keys[0]!
      return { together, responses, stats }
    })

    it.effect("once a cached prefix has been answered, calls that read it reserve only what counts, so ten run at once where two whole prompts would fit", () =>
      Effect.gen(function*() {
        const { together, responses, stats } = yield* burst
        expect(together).toBe(10)
        expect(responses.every((response) => response.usage.cacheReadInputTokens === prefixTokens())).toBe(true)
        expect(stats).toMatchObject({ accepted: 11, rateLimited: 0 })
      }).pipe(Effect.provide(governedTight({}))))

    it.effect("with the prediction off, the same burst runs at most two at a time", () =>
      Effect.gen(function*() {
        const { together, stats } = yield* burst
        expect(together).toBeGreaterThanOrEqual(1)
        expect(together).toBeLessThanOrEqual(2)
        expect(stats).toMatchObject({ accepted: 11, rateLimited: 0 })
      }).pipe(Effect.provide(governedTight({ predictCacheReads: false }))))

    it.effect("after the prompt cache's TTL the next call reserves its whole prompt again", () =>
      Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const limiter = yield* RateLimiter.RateLimiter
        /** The input a call holds while it is in flight: the level drop one second into its 10-second answer. */
        const held = (text: string) =>
          Effect.gen(function*() {
            const before = (yield* limiter.stats(key)).levels.inputTokens!.level
            const call = yield* Effect.fork(client.complete(ask(text)))
            yield* TestClock.adjust("1 second")
            const during = (yield* limiter.stats(key)).levels.inputTokens!.level
            yield* TestClock.adjust("9 seconds")
            yield* Fiber.join(call)
            // the refill during that second is 8,000 / 60 ≈ 133
            return Math.round(before - during + 8_000 / 60)
          })
        const whole = Math.ceil(totalTokens("first") * 0.9)
        expect(yield* held("first")).toBeGreaterThan(whole)
        expect(yield* held("second")).toBeLessThan(whole / 5)
        yield* TestClock.adjust("6 minutes")
        expect(yield* held("third")).toBeGreaterThan(whole)
      }).pipe(Effect.provide(governedTight({}))))
  })

  describe("reservations that expect the cache, turn by turn (TestClock)", () => {
    const key = `simulator/${MODEL}`
    const Governed = Governor.layer({ retry: false }).pipe(
      Layer.provideMerge(SimulatedClient.layer({ quota, latency: { baseMs: 10_000 } })),
      Layer.provideMerge(RateLimiter.layerMemory({ quotas: { [key]: limiterQuota } })),
      Layer.provide(EstimatorFast)
    )

    it.effect("a conversation that moves its breakpoint forward holds only its new turn: the prefix the last turn cached is expected, as the provider reads it", () =>
      Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const limiter = yield* RateLimiter.RateLimiter
        /** A call's answer, and the input it held one second into its 10-second answer. */
        const turn = (request: LlmClient.Request) =>
          Effect.gen(function*() {
            const before = (yield* limiter.stats(key)).levels.inputTokens!.level
            const call = yield* Effect.fork(client.complete(request))
            yield* TestClock.adjust("1 second")
            const during = (yield* limiter.stats(key)).levels.inputTokens!.level
            yield* TestClock.adjust("9 seconds")
            const response = yield* Fiber.join(call)
            return { response, held: Math.round(before - during + limiterQuota.inputTokens.limit / 60) }
          })
        const document = `Contract text. ${SYSTEM}`
        const marked = (text: string) => [{ type: "text" as const, text, cacheControl: { type: "ephemeral" as const } }]
        const first = yield* turn({
          model: MODEL,
          messages: [{ role: "user", content: marked(document) }],
          maxOutputTokens: 100
        })
        const whole = prefixTokens()
        expect(first.held).toBeGreaterThan(0.9 * whole)
        const second = yield* turn({
          model: MODEL,
          messages: [
            { role: "user", content: [{ type: "text", text: document }] },
            { role: "assistant", content: LlmClient.text(first.response) },
            { role: "user", content: marked("And the penalties?") }
          ],
          maxOutputTokens: 100
        })
        expect(second.response.usage.cacheReadInputTokens).toBe(first.response.usage.cacheWriteInputTokens)
        // the document is expected from the cache: the turn holds its own few tokens and the estimate's margin
        expect(second.held).toBeLessThan(whole / 5)
      }).pipe(Effect.provide(Governed)))
  })

  describe("the HTTP simulator through the real Anthropic SDK", () => {
    const limit = 10_000

    it.scoped("usage reports writes then reads, the input limit is not charged for reads, and a Governor settles and prices accordingly", () =>
      Effect.gen(function*() {
        const running = yield* Simulator.serve({ quota: { ...quota, inputTokensPerMinute: limit } })
        const key = `anthropic/${MODEL}`
        const layer = Governor.layer({ retry: false }).pipe(
          Layer.provide(Anthropic.layer({ apiKey: Redacted.make("sim-key"), baseURL: running.url })),
          Layer.provideMerge(
            RateLimiter.layerMemory({ quotas: { [key]: { ...limiterQuota, inputTokens: { limit, per: "1 minute" } } } })
          ),
          Layer.provideMerge(BudgetLive),
          Layer.provide(EstimatorFast)
        )
        yield* Effect.gen(function*() {
          const client = yield* LlmClient.LlmClient
          const responses = [
            yield* client.complete(ask("Who delivers?")),
            yield* client.complete(ask("By when?")),
            yield* client.complete(ask("Where to?"))
          ]
          expect(responses.map((response) => response.usage.cacheWriteInputTokens)).toEqual([prefixTokens(), 0, 0])
          expect(responses.map((response) => response.usage.cacheReadInputTokens)).toEqual([
            0,
            prefixTokens(),
            prefixTokens()
          ])
          expect(responses[1]!.usage.inputTokens).toBe(totalTokens("By when?") - prefixTokens())

          // Real time passes over HTTP, so the buckets refill a little: the reads (~6,000 tokens) must be missing, not exact figures.
          const charged = responses.reduce(
            (sum, response) => sum + response.usage.inputTokens + response.usage.cacheWriteInputTokens,
            0
          )
          const remaining = responses[2]!.rateLimits.dimensions.inputTokens?.remaining ?? 0
          expect(remaining).toBeGreaterThanOrEqual(limit - charged)
          expect(remaining).toBeLessThan(limit - charged + 1_000)
          const level = (yield* (yield* RateLimiter.RateLimiter).stats(key)).levels.inputTokens?.level ?? 0
          expect(level).toBeGreaterThanOrEqual(limit - charged - 1)
          expect(level).toBeLessThan(limit - charged + 1_000)

          const [status] = yield* (yield* Budget.Budget).status
          let expected = 0
          for (const response of responses) expected += yield* usd(response.usage)
          expect(status?.spentUsd).toBeCloseTo(expected, 9)

          const stats = (yield* running.stats).keys[0]!
          expect(stats).toMatchObject({
            accepted: 3,
            cacheWriteInputTokens: prefixTokens(),
            cacheReadInputTokens: 2 * prefixTokens()
          })
        }).pipe(Effect.provide(layer))
      }))

    it.scoped("a streamed answer carries the cache usage; more than four breakpoints is a 400", () =>
      Effect.gen(function*() {
        const running = yield* Simulator.serve({ quota })
        const client = yield* Anthropic.make({ apiKey: Redacted.make("sim-key"), baseURL: running.url })
        yield* client.complete(ask("warm the cache"))
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(client.stream(ask("streamed"))))
        const done = events.find((event) => event._tag === "Done")
        expect(done?._tag === "Done" && done.response.usage).toMatchObject({
          cacheReadInputTokens: prefixTokens(),
          cacheWriteInputTokens: 0
        })

        const marked = { type: "text" as const, text: "part", cacheControl: { type: "ephemeral" as const } }
        const error = yield* Effect.flip(
          client.complete({
            ...ask("too many"),
            messages: [{ role: "user", content: [marked, marked, marked, marked] }]
          })
        )
        expect(error._tag).toBe("BadRequest")
        expect(error.detail).toContain("maximum of 4 blocks with cache_control")
      }))
  })
})
