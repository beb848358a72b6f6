/**
 * The behaviour every LimiterStore must have, run against each store (memory
 * now; Redis in its own issue). Time is read by the store itself, so the suite
 * asserts only what holds whatever the store's clock: all-or-nothing, waits that
 * shrink as time passes, refunds, clamps, pauses.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cost, LimiterStore, Quota } from "@sluice/core"
import { Duration, Effect, Layer } from "effect"

const quota = Quota.decodeSync({
  requests: { limit: 10, per: "1 hour" },
  inputTokens: { limit: 6_000, per: "1 hour" }
})

/** Within one unit: a few milliseconds of refill at 6,000 an hour is a fraction of a token. */
const near = (actual: number | undefined, expected: number) => {
  expect(actual).toBeDefined()
  expect(Math.abs(actual! - expected)).toBeLessThan(1)
}

export const limiterStoreSuite = (name: string, store: () => Layer.Layer<LimiterStore.LimiterStore, unknown>, key: () => string) =>
  describe(`LimiterStore: ${name}`, () => {
    const withStore = <A, E>(self: Effect.Effect<A, E, LimiterStore.LimiterStore>) => Effect.provide(self, Layer.orDie(store()))

    it.effect("reserves every dimension or none, and says how long until the cost fits", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        const first = yield* s.reserve(k, Cost.amounts({ inputTokens: 6_000 }), { headroom: 0 })
        expect(first._tag).toBe("Granted")
        const second = yield* s.reserve(k, Cost.amounts({ inputTokens: 100 }), { headroom: 0 })
        expect(second._tag).toBe("Wait")
        if (second._tag === "Wait") {
          expect(second.reason).toBe("inputTokens")
          // 100 tokens at 6,000 an hour: a minute
          expect(Math.abs(Duration.toMillis(second.delay) - 60_000)).toBeLessThan(1_000)
        }
        const state = yield* s.state(k)
        near(state.levels.requests?.level, 9)
      })))

    it.effect("a cost larger than a bucket is TooLarge, naming the dimension", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        const answer = yield* s.reserve(k, Cost.amounts({ inputTokens: 6_001 }), { headroom: 0 })
        expect(answer).toMatchObject({ _tag: "TooLarge", dimension: "inputTokens", amount: 6_001, capacity: 6_000 })
      })))

    it.effect("adjust refunds and charges; a charge may leave a debt", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        yield* s.reserve(k, Cost.amounts({ inputTokens: 5_000 }), { headroom: 0 })
        near((yield* s.adjust(k, { inputTokens: -2_000 })).inputTokens?.level, 3_000)
        near((yield* s.adjust(k, { inputTokens: 5_000 })).inputTokens?.level, -2_000)
      })))

    it.effect("headroom keeps a share of each bucket free", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        yield* s.reserve(k, Cost.amounts({ inputTokens: 5_000 }), { headroom: 0 })
        expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 500 }), { headroom: 0.1 }))._tag).toBe("Wait")
        expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 500 }), { headroom: 0 }))._tag).toBe("Granted")
      })))

    it.effect("observe lowers to what the provider says remains and lowers a limit above the provider's", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        const observation = yield* s.observe(k, { dimensions: { inputTokens: { remaining: 1_000, limit: 3_000 } } })
        expect(observation.lowered).toEqual([{ dimension: "inputTokens", from: 6_000, to: 3_000 }])
        expect(observation.levels.inputTokens?.capacity).toBe(3_000)
        near(observation.levels.inputTokens?.level, 1_000)
        const raised = yield* s.observe(k, { dimensions: { inputTokens: { remaining: 2_500 } } })
        near(raised.levels.inputTokens?.level, 1_000)
      })))

    it.effect("a remaining that keeps falling below the local level slows the refill; one above it restores it", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        // Another consumer takes 600 tokens between two responses, twice: far faster than this
        // limit refills (6,000 an hour), so the store credits it the most it may, 90 % of the refill.
        near((yield* s.observe(k, { dimensions: { inputTokens: { remaining: 5_400 } } })).levels.inputTokens?.level, 5_400)
        near((yield* s.observe(k, { dimensions: { inputTokens: { remaining: 4_800 } } })).levels.inputTokens?.level, 4_800)
        expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 4_790 }), { headroom: 0 }))._tag).toBe("Granted")
        const slowed = yield* s.reserve(k, Cost.amounts({ inputTokens: 100 }), { headroom: 0 })
        expect(slowed._tag).toBe("Wait")
        // 90 tokens at a tenth of 6,000 an hour: nine minutes, not 54 seconds.
        if (slowed._tag === "Wait") expect(Duration.toMillis(slowed.delay)).toBeGreaterThan(5 * 60_000)
        // The provider shows more than the store counts: nobody else is taking, the refill is whole again.
        near((yield* s.observe(k, { dimensions: { inputTokens: { remaining: 2_000 } } })).levels.inputTokens?.level, 10)
        const restored = yield* s.reserve(k, Cost.amounts({ inputTokens: 100 }), { headroom: 0 })
        expect(restored._tag).toBe("Wait")
        if (restored._tag === "Wait") expect(Duration.toMillis(restored.delay)).toBeLessThan(2 * 60_000)
      })))

    it.effect("an unknown key is granted until a snapshot states its limits", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 1e9 }), { headroom: 0 }))._tag).toBe("Granted")
        const observation = yield* s.observe(k, { dimensions: { requests: { limit: 5, remaining: 4 } } })
        expect(observation.discovered).toEqual(["requests"])
        expect(observation.levels.requests?.capacity).toBe(5)
        near(observation.levels.requests?.level, 4)
      })))

    it.effect("a pause closes the key until it ends; a shorter pause does not shorten it", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        near(Duration.toMillis(yield* s.pause(k, Duration.seconds(5))) / 1_000, 5)
        expect(Duration.toMillis(yield* s.pause(k, Duration.seconds(1)))).toBeGreaterThan(4_000)
        const answer = yield* s.reserve(k, Cost.amounts({}), { headroom: 0 })
        expect(answer).toMatchObject({ _tag: "Wait", reason: "paused" })
        if (answer._tag === "Wait") expect(Duration.toMillis(answer.delay)).toBeGreaterThan(4_000)
      })))
  })
