import { describe, expect, it } from "@effect/vitest"
import { RateLimiter } from "@sluice/core"
import { Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, Ref, TestClock } from "effect"

const KEY = "prop/model"

interface Grant {
  readonly at: number
  readonly requests: number
  readonly inputTokens: number
}

/** The most any interval of grants takes from a bucket that started full, over what it may. */
const worstExcess = (
  grants: ReadonlyArray<Grant>,
  amount: (grant: Grant) => number,
  capacity: number,
  ratePerMilli: number
) => {
  const sorted = [...grants].sort((a, b) => a.at - b.at)
  let worst = Number.NEGATIVE_INFINITY
  for (let i = 0; i < sorted.length; i++) {
    let total = 0
    for (let j = i; j < sorted.length; j++) {
      total += amount(sorted[j]!)
      worst = Math.max(worst, total - (capacity + ratePerMilli * (sorted[j]!.at - sorted[i]!.at)))
    }
  }
  return worst
}

describe("RateLimiter properties", () => {
  it.effect.prop(
    "for random arrivals, no bucket admits more than capacity + rate × elapsed in any interval, and every caller is granted or fails typed",
    {
      requestsPerMinute: fc.integer({ min: 5, max: 600 }),
      tokensPerMinute: fc.integer({ min: 1_000, max: 2_000_000 }),
      burst: fc.option(fc.double({ min: 0.05, max: 1, noNaN: true }), { nil: undefined }),
      maxInFlight: fc.integer({ min: 1, max: 8 }),
      arrivals: fc.array(
        fc.record({
          gap: fc.integer({ min: 0, max: 4_000 }),
          size: fc.double({ min: 0, max: 1.3, noNaN: true }),
          priority: fc.constantFrom("batch" as const, "normal" as const, "interactive" as const),
          hold: fc.integer({ min: 0, max: 3_000 })
        }),
        { minLength: 1, maxLength: 25 }
      )
    },
    ({ arrivals, burst, maxInFlight, requestsPerMinute, tokensPerMinute }) => {
      const tokenCapacity = burst === undefined ? tokensPerMinute : Math.max(1, Math.floor(burst * tokensPerMinute))
      return Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const start = yield* Clock.currentTimeMillis
        const grants = yield* Ref.make<ReadonlyArray<Grant>>([])
        const fibers: Array<
          { readonly fiber: Fiber.RuntimeFiber<void, RateLimiter.RateLimiterError>; readonly inputTokens: number }
        > = []
        for (const arrival of arrivals) {
          yield* TestClock.adjust(Duration.millis(arrival.gap))
          const inputTokens = Math.floor(arrival.size * tokenCapacity)
          const fiber = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
            yield* limiter.acquire(KEY, { inputTokens }, { priority: arrival.priority })
            const at = (yield* Clock.currentTimeMillis) - start
            yield* Ref.update(grants, (all) => [...all, { at, requests: 1, inputTokens }])
            yield* Effect.sleep(Duration.millis(arrival.hold))
          })))
          fibers.push({ fiber, inputTokens })
        }
        // Let everything that can be granted be granted.
        for (let round = 0; round < 200 && fibers.some(({ fiber }) => fiber.unsafePoll() === null); round++) {
          yield* TestClock.adjust(Duration.minutes(1))
        }
        for (const { fiber, inputTokens } of fibers) {
          const exit = yield* Fiber.await(fiber)
          if (Exit.isSuccess(exit)) {
            expect(inputTokens).toBeLessThanOrEqual(tokenCapacity)
          } else {
            const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
            expect(failure?._tag).toBe("CostTooLarge")
            expect(inputTokens).toBeGreaterThan(tokenCapacity)
          }
        }
        const all = yield* Ref.get(grants)
        expect(all.length).toBe(fibers.filter(({ inputTokens }) => inputTokens <= tokenCapacity).length)
        const tolerance = 1e-6
        expect(worstExcess(all, (grant) => grant.requests, requestsPerMinute, requestsPerMinute / 60_000))
          .toBeLessThanOrEqual(tolerance)
        expect(worstExcess(all, (grant) => grant.inputTokens, tokenCapacity, tokensPerMinute / 60_000))
          .toBeLessThanOrEqual(tolerance * tokenCapacity)
      }).pipe(
        Effect.scoped,
        Effect.provide(RateLimiter.layerMemory({
          maxInFlight,
          quotas: {
            [KEY]: {
              requests: { limit: requestsPerMinute, per: "1 minute" },
              inputTokens: burst === undefined
                ? { limit: tokensPerMinute, per: "1 minute" }
                : { limit: tokensPerMinute, per: "1 minute", burst: tokenCapacity }
            }
          }
        }))
      )
    },
    { fastCheck: { numRuns: 40 } }
  )
})
