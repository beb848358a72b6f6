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
  requests: { limit: 10, per: "1 minute" },
  inputTokens: { limit: 6_000, per: "1 minute" }
})

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
          expect(Duration.toMillis(second.delay)).toBeCloseTo(1_000, 0)
        }
        const state = yield* s.state(k)
        expect(state.levels.requests?.level).toBe(9)
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
        expect((yield* s.adjust(k, { inputTokens: -2_000 })).inputTokens?.level).toBe(3_000)
        expect((yield* s.adjust(k, { inputTokens: 5_000 })).inputTokens?.level).toBe(-2_000)
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
        expect(observation.levels.inputTokens).toEqual({ level: 1_000, capacity: 3_000 })
        const raised = yield* s.observe(k, { dimensions: { inputTokens: { remaining: 2_500 } } })
        expect(raised.levels.inputTokens?.level).toBe(1_000)
      })))

    it.effect("an unknown key is granted until a snapshot states its limits", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 1e9 }), { headroom: 0 }))._tag).toBe("Granted")
        const observation = yield* s.observe(k, { dimensions: { requests: { limit: 5, remaining: 4 } } })
        expect(observation.discovered).toEqual(["requests"])
        expect(observation.levels.requests).toEqual({ level: 4, capacity: 5 })
      })))

    it.effect("a pause closes the key until it ends; a shorter pause does not shorten it", () =>
      withStore(Effect.gen(function*() {
        const s = yield* LimiterStore.LimiterStore
        const k = key()
        yield* s.define(k, quota)
        expect(Duration.toMillis(yield* s.pause(k, Duration.seconds(5)))).toBe(5_000)
        expect(Duration.toMillis(yield* s.pause(k, Duration.seconds(1)))).toBe(5_000)
        const answer = yield* s.reserve(k, Cost.amounts({}), { headroom: 0 })
        expect(answer).toMatchObject({ _tag: "Wait", reason: "paused" })
        if (answer._tag === "Wait") expect(Duration.toMillis(answer.delay)).toBeGreaterThan(4_000)
      })))
  })
