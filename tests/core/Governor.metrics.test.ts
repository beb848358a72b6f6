import { describe, expect, it } from "@effect/vitest"
import { Governor, LlmClient, Metrics, RateLimiter, TokenEstimator } from "@sluice/core"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Effect, Fiber, Layer, Metric, Stream, TestClock } from "effect"

const MODEL = "claude-haiku-4-5"
const quota = { requestsPerMinute: 1_000, inputTokensPerMinute: 1_000_000, outputTokensPerMinute: 100_000 }
const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)
const ok = (key: string) =>
  Metric.value(Metrics.requests.pipe(Metric.tagged("key", key), Metric.tagged("outcome", "ok")))
const input = (key: string) =>
  Metric.value(Metrics.tokens.pipe(Metric.tagged("key", key), Metric.tagged("direction", "input")))

// A unique tenant prefix per run: Effect's registry is global to the process.
const tenant = `bounded-${Date.now()}`
const keyOf = (i: number) => `simulator/${MODEL}/${tenant}-${i}`
const limiterQuota = {
  requests: { limit: quota.requestsPerMinute, per: "1 minute" },
  inputTokens: { limit: quota.inputTokensPerMinute, per: "1 minute" },
  outputTokens: { limit: quota.outputTokensPerMinute, per: "1 minute" }
}

describe("Governor metrics", () => {
  it.effect("past metricKeys keys, a key's series is the shared _other one: the registry stays bounded", () =>
    Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      const otherBefore = (yield* ok(RateLimiter.otherKeysLabel)).count
      const otherInputBefore = (yield* input(RateLimiter.otherKeysLabel)).count
      const answers = yield* Effect.forEach([0, 1, 2, 3], (i) =>
        client.complete({
          model: MODEL,
          messages: [{ role: "user", content: `question ${i}` }],
          maxOutputTokens: 10,
          metadata: { tenant: `${tenant}-${i}` }
        }))
      // The first two keys have their own series…
      expect((yield* ok(keyOf(0))).count).toBe(1)
      expect((yield* ok(keyOf(1))).count).toBe(1)
      // …the other two none, and count under _other, tokens included.
      expect((yield* ok(keyOf(2))).count).toBe(0)
      expect((yield* ok(keyOf(3))).count).toBe(0)
      expect((yield* ok(RateLimiter.otherKeysLabel)).count - otherBefore).toBe(2)
      expect((yield* input(RateLimiter.otherKeysLabel)).count - otherInputBefore).toBe(
        answers[2]!.usage.inputTokens + answers[3]!.usage.inputTokens
      )
    }).pipe(
      Effect.provide(
        Governor.layer({ perTenant: true, metricKeys: 2, coalesce: false }).pipe(
          Layer.provideMerge(SimulatedClient.layer({ quota, latency: { baseMs: 0 } })),
          Layer.provideMerge(
            RateLimiter.layerMemory({ quotas: Object.fromEntries([0, 1, 2, 3].map((i) => [keyOf(i), limiterQuota])) })
          ),
          Layer.provide(EstimatorFast)
        )
      )
    ))

  it("metricKeys must be a non-negative integer", () => {
    const result = Governor.validate({ metricKeys: -1 })
    expect(result._tag).toBe("Left")
  })

  it.effect("a call interrupted while the provider works is counted once as interrupted; an answer as ok", () =>
    Effect.gen(function*() {
      const key = `interrupted-${Date.now()}`
      const outcome = (name: string) =>
        Metric.value(Metrics.requests.pipe(Metric.tagged("key", key), Metric.tagged("outcome", name)))
      // A provider that answers after a minute of the test clock.
      const slow: LlmClient.Provider = {
        provider: "slow",
        complete: (request) =>
          Effect.as(Effect.sleep("1 minute"), {
            id: "r",
            model: request.model,
            content: [],
            stopReason: "end_turn",
            usage: { inputTokens: 5, outputTokens: 1, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 },
            rateLimits: { dimensions: {} }
          }),
        stream: () => Stream.empty
      }
      const client = yield* Governor.make({ key: () => key, coalesce: false }).pipe(
        Effect.provideService(LlmClient.LlmClient, LlmClient.LlmClient.of(slow)),
        Effect.provide(RateLimiter.layerMemory({ quotas: { [key]: limiterQuota } })),
        Effect.provide(EstimatorFast)
      )
      const ask = client.complete({ model: MODEL, messages: [{ role: "user", content: "wait" }], maxOutputTokens: 5 })
      const fiber = yield* Effect.fork(ask)
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.interrupt(fiber)
      expect((yield* outcome("interrupted")).count).toBe(1)
      expect((yield* outcome("ok")).count).toBe(0)
      const answered = yield* Effect.fork(ask)
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(answered)
      expect((yield* outcome("ok")).count).toBe(1)
      expect((yield* outcome("interrupted")).count).toBe(1)
    }))
})
