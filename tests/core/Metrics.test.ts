/**
 * The metric helpers and the time-left gauge the limiter keeps. Every test
 * has its own key, so the global registry's other series do not interfere.
 */
import { describe, expect, it } from "@effect/vitest"
import { LlmClient, Metrics, RateLimiter } from "@sluice/core"
import { Duration, Effect, Fiber, Metric, MetricBoundaries, TestClock } from "effect"

const perMinute = (limit: number) => ({ limit, per: "1 minute" })

/** The time-left gauge of one key and dimension. */
const timeLeftOf = (key: string, dimension: string) =>
  Effect.map(
    Metric.value(Metrics.quotaTimeLeft.pipe(Metric.tagged("key", key), Metric.tagged("dimension", dimension))),
    (state) => state.value
  )

/** Takes `amount` input tokens on `key` every second, `seconds` times, keeping each reservation. */
const consume = (key: string, amount: number, seconds: number) =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    for (let second = 0; second < seconds; second++) {
      yield* Effect.scoped(limiter.acquire(key, { requests: 0, inputTokens: amount }))
      yield* TestClock.adjust(Duration.seconds(1))
    }
  })

describe("Metrics.timeLeftSeconds", () => {
  it("is the level over the net drain, +Inf when the refill keeps up, 0 when callers wait", () => {
    expect(Metrics.timeLeftSeconds({ level: 30_000, consumptionPerSecond: 1_500, refillPerSecond: 1_000 })).toBe(60)
    expect(Metrics.timeLeftSeconds({ level: 30_000, consumptionPerSecond: 1_000, refillPerSecond: 1_000 })).toBe(
      Number.POSITIVE_INFINITY
    )
    expect(Metrics.timeLeftSeconds({ level: 30_000, consumptionPerSecond: 0, refillPerSecond: 1_000 })).toBe(
      Number.POSITIVE_INFINITY
    )
    expect(Metrics.timeLeftSeconds({ level: -200, consumptionPerSecond: 1_500, refillPerSecond: 1_000 })).toBe(0)
    expect(Metrics.timeLeftSeconds({ level: 30_000, consumptionPerSecond: 0, refillPerSecond: 1_000, blocked: true }))
      .toBe(0)
  })
})

describe("Metrics.quantile", () => {
  const histogram = Metric.histogram("sluice_test_quantile_seconds", MetricBoundaries.fromIterable([1, 2, 4, 8]))

  it.effect("interpolates inside the bucket that holds the rank, and reads only what came after `since`", () =>
    Effect.gen(function*() {
      const series = histogram.pipe(Metric.tagged("test", "quantile"))
      const empty = yield* Metric.value(series)
      expect(Metrics.quantile(empty, 0.95)).toBeUndefined()
      // 10 values: 9 in (0, 1], 1 in (2, 4]
      for (let i = 0; i < 9; i++) yield* Metric.update(series, 0.5)
      yield* Metric.update(series, 3)
      const first = yield* Metric.value(series)
      expect(Metrics.quantile(first, 0.5)).toBeCloseTo(5 / 9, 6)
      // rank 9.5 of 10 falls halfway into the (2, 4] bucket
      expect(Metrics.quantile(first, 0.95)).toBeCloseTo(3, 6)
      // later: 4 values of 6 (the (4, 8] bucket); before them the 10 above
      for (let i = 0; i < 4; i++) yield* Metric.update(series, 6)
      const second = yield* Metric.value(series)
      expect(Metrics.quantile(second, 0.5, first)).toBeCloseTo(6, 6)
      // above the last finite boundary: the largest value seen
      yield* Metric.update(series, 100)
      expect(Metrics.quantile(yield* Metric.value(series), 1)).toBe(100)
    }))
})

describe("Metrics.outcomeOf", () => {
  it("is the error's tag in snake case, or `error` for something untagged", () => {
    expect(Metrics.outcomeOf(new LlmClient.RateLimited({ provider: "x", detail: "" }))).toBe("rate_limited")
    expect(Metrics.outcomeOf(new LlmClient.NetworkError({ provider: "x", detail: "" }))).toBe("network_error")
    expect(Metrics.outcomeOf(new Error("boom"))).toBe("error")
  })
})

describe("the limiter's time-left gauge", () => {
  it.scoped("reads level / (consumption − refill) under steady use, +Inf after the key idles, +Inf for a key used below its refill", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const busy = "time-left/busy"
      const light = "time-left/light"
      yield* consume(busy, 200, 20)
      const level = (yield* limiter.stats(busy)).levels.inputTokens!.level
      // 20 reservations of 200 and 20 s of refill at 100 a second: 6,000 − 4,000 + 2,000
      expect(level).toBeCloseTo(4_000, -1)
      const left = yield* timeLeftOf(busy, "inputTokens")
      // about 4,000 / (200 − 100) = 40 s; the rate is an average, so allow for its lag
      expect(left).toBeGreaterThan(25)
      expect(left).toBeLessThan(55)
      // idle for five minutes: the periodic refresh lets the drain decay
      yield* TestClock.adjust(Duration.minutes(5))
      expect(yield* timeLeftOf(busy, "inputTokens")).toBe(Number.POSITIVE_INFINITY)
      // half the refill: the bucket never runs out
      yield* consume(light, 50, 20)
      expect(yield* timeLeftOf(light, "inputTokens")).toBe(Number.POSITIVE_INFINITY)
    }).pipe(Effect.provide(RateLimiter.layerMemory({
      quotas: {
        "time-left/busy": { inputTokens: perMinute(6_000) },
        "time-left/light": { inputTokens: perMinute(6_000) }
      }
    }))))

  it.scoped("is 0 on the dimension callers are waiting for, and only on it", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const key = "time-left/blocked"
      yield* Effect.scoped(limiter.acquire(key, { requests: 1, inputTokens: 5_000 }))
      // 1,000 tokens are left, and by the drain alone they would last about a second more; the waiter needs 3,000
      const waiter = yield* Effect.fork(Effect.scoped(limiter.acquire(key, { requests: 1, inputTokens: 3_000 })))
      yield* TestClock.adjust(Duration.millis(100))
      expect(yield* timeLeftOf(key, "inputTokens")).toBe(0)
      // one request of 600 a minute: not running out
      expect(yield* timeLeftOf(key, "requests")).toBe(Number.POSITIVE_INFINITY)
      // 2,000 more tokens refill in 20 s: the waiter is served; once the key rests, the bucket is not running out
      yield* TestClock.adjust(Duration.seconds(20))
      yield* Fiber.join(waiter)
      yield* TestClock.adjust(Duration.minutes(5))
      expect(yield* timeLeftOf(key, "inputTokens")).toBe(Number.POSITIVE_INFINITY)
    }).pipe(
      Effect.provide(
        RateLimiter.layerMemory({
          quotas: { "time-left/blocked": { requests: perMinute(600), inputTokens: perMinute(6_000) } }
        })
      )
    ))
})
