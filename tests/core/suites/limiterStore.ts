/**
 * The behaviour every LimiterStore must have, run against each store (memory
 * and Redis). Time is read by the store itself, so the suite asserts only what
 * holds whatever the store's clock: all-or-nothing, waits that shrink as time
 * passes, refunds, clamps, pauses, snapshots discounted by their age.
 *
 * A store whose clock is the `TestClock` (memory) lets time pass with
 * `TestClock.adjust`; one on a server's clock (Redis) runs `live`, and the few
 * cases that need time to pass sleep a fraction of a second: the server's clock
 * cannot be driven.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cost, LimiterStore, Quota } from "@sluice/core"
import { Clock, Duration, Effect, Layer, TestClock } from "effect"

const quota = Quota.decodeSync({
  requests: { limit: 10, per: "1 hour" },
  inputTokens: { limit: 6_000, per: "1 hour" }
})

/** Within one unit: a few milliseconds of refill at 6,000 an hour is a fraction of a token. */
const near = (actual: number | undefined, expected: number) => {
  expect(actual).toBeDefined()
  expect(Math.abs(actual! - expected)).toBeLessThan(1)
}

/** What a case gets: a fresh key, and a way to let time pass on the store's clock. */
export interface CaseContext {
  readonly key: () => string
  readonly elapse: (duration: Duration.DurationInput) => Effect.Effect<void>
}

/** One behaviour of the suite. */
export interface Case {
  readonly name: string
  readonly run: (context: CaseContext) => Effect.Effect<void, unknown, LimiterStore.LimiterStore>
}

/** The suite's cases, for running them elsewhere (e.g. proving that they fail against a store that cannot work). */
export const limiterStoreCases: Array<Case> = []

const behaviour = (name: string, run: Case["run"]) => {
  limiterStoreCases.push({ name, run })
}

behaviour(
  "reserves every dimension or none, and says how long until the cost fits",
  ({ key }) =>
    Effect.gen(function*() {
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
    })
)

behaviour("a cost larger than a bucket is TooLarge, naming the dimension", ({ key }) =>
  Effect.gen(function*() {
    const s = yield* LimiterStore.LimiterStore
    const k = key()
    yield* s.define(k, quota)
    const answer = yield* s.reserve(k, Cost.amounts({ inputTokens: 6_001 }), { headroom: 0 })
    expect(answer).toMatchObject({ _tag: "TooLarge", dimension: "inputTokens", amount: 6_001, capacity: 6_000 })
  }))

behaviour("adjust refunds and charges; a charge may leave a debt", ({ key }) =>
  Effect.gen(function*() {
    const s = yield* LimiterStore.LimiterStore
    const k = key()
    yield* s.define(k, quota)
    yield* s.reserve(k, Cost.amounts({ inputTokens: 5_000 }), { headroom: 0 })
    near((yield* s.adjust(k, { inputTokens: -2_000 })).inputTokens?.level, 3_000)
    near((yield* s.adjust(k, { inputTokens: 5_000 })).inputTokens?.level, -2_000)
  }))

behaviour("headroom keeps a share of each bucket free", ({ key }) =>
  Effect.gen(function*() {
    const s = yield* LimiterStore.LimiterStore
    const k = key()
    yield* s.define(k, quota)
    yield* s.reserve(k, Cost.amounts({ inputTokens: 5_000 }), { headroom: 0 })
    expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 500 }), { headroom: 0.1 }))._tag).toBe("Wait")
    expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 500 }), { headroom: 0 }))._tag).toBe("Granted")
  }))

behaviour(
  "the transit margin keeps that many milliseconds of each bucket's refill free, for every class",
  ({ key }) =>
    Effect.gen(function*() {
      const s = yield* LimiterStore.LimiterStore
      const k = key()
      yield* s.define(k, quota)
      yield* s.reserve(k, Cost.amounts({ inputTokens: 5_000 }), { headroom: 0 })
      // 1,000 left; six minutes of refill at 6,000 an hour is 600: a take of 500 would leave less.
      const held = yield* s.reserve(k, Cost.amounts({ inputTokens: 500 }), { headroom: 0, margin: 360_000 })
      expect(held._tag).toBe("Wait")
      expect(held._tag === "Wait" && held.reason).toBe("inputTokens")
      expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 400 }), { headroom: 0, margin: 360_000 }))._tag).toBe(
        "Granted"
      )
    })
)

behaviour(
  "observe lowers to what the provider says remains and lowers a limit above the provider's",
  ({ key }) =>
    Effect.gen(function*() {
      const s = yield* LimiterStore.LimiterStore
      const k = key()
      yield* s.define(k, quota)
      const observation = yield* s.observe(k, { dimensions: { inputTokens: { remaining: 1_000, limit: 3_000 } } })
      expect(observation.lowered).toEqual([{ dimension: "inputTokens", from: 6_000, to: 3_000 }])
      expect(observation.levels.inputTokens?.capacity).toBe(3_000)
      near(observation.levels.inputTokens?.level, 1_000)
      const raised = yield* s.observe(k, { dimensions: { inputTokens: { remaining: 2_500 } } })
      near(raised.levels.inputTokens?.level, 1_000)
    })
)

behaviour(
  "a remaining that keeps falling below the local level slows the refill; one above it restores it",
  ({ key }) =>
    Effect.gen(function*() {
      const s = yield* LimiterStore.LimiterStore
      const k = key()
      yield* s.define(k, quota)
      // Another consumer takes 600 tokens between two responses, twice: far faster than this
      // limit refills (6,000 an hour), so the store credits it the most it may, 90 % of the refill.
      near(
        (yield* s.observe(k, { dimensions: { inputTokens: { remaining: 5_400 } } })).levels.inputTokens?.level,
        5_400
      )
      near(
        (yield* s.observe(k, { dimensions: { inputTokens: { remaining: 4_800 } } })).levels.inputTokens?.level,
        4_800
      )
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
    })
)

behaviour("an unknown key is granted until a snapshot states its limits", ({ key }) =>
  Effect.gen(function*() {
    const s = yield* LimiterStore.LimiterStore
    const k = key()
    expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 1e9 }), { headroom: 0 }))._tag).toBe("Granted")
    const observation = yield* s.observe(k, { dimensions: { requests: { limit: 5, remaining: 4 } } })
    expect(observation.discovered).toEqual(["requests"])
    expect(observation.levels.requests?.capacity).toBe(5)
    near(observation.levels.requests?.level, 4)
  }))

behaviour(
  "a pause closes the key until it ends; a shorter pause does not shorten it",
  ({ key }) =>
    Effect.gen(function*() {
      const s = yield* LimiterStore.LimiterStore
      const k = key()
      yield* s.define(k, quota)
      near(Duration.toMillis(yield* s.pause(k, Duration.seconds(5))) / 1_000, 5)
      expect(Duration.toMillis(yield* s.pause(k, Duration.seconds(1)))).toBeGreaterThan(4_000)
      const answer = yield* s.reserve(k, Cost.amounts({}), { headroom: 0 })
      expect(answer).toMatchObject({ _tag: "Wait", reason: "paused" })
      if (answer._tag === "Wait") expect(Duration.toMillis(answer.delay)).toBeGreaterThan(4_000)
    })
)

behaviour(
  "a snapshot read before time passed is projected to now: the refill since is not taken for another consumer's use",
  ({ elapse, key }) =>
    Effect.gen(function*() {
      const s = yield* LimiterStore.LimiterStore
      const k = key()
      // 10 tokens a millisecond: a fraction of a second of refill is thousands of tokens.
      yield* s.define(k, Quota.decodeSync({ inputTokens: { limit: 600_000, per: "1 minute" } }))
      expect((yield* s.reserve(k, Cost.amounts({ inputTokens: 600_000 }), { headroom: 0 }))._tag).toBe("Granted")
      // The headers of the call, read as it starts: nothing remains.
      const atStart = { dimensions: { inputTokens: { remaining: 0 } }, observedAt: yield* Clock.currentTimeMillis }
      yield* elapse("200 millis")
      yield* s.reserve(k, Cost.amounts({ inputTokens: 1_000 }), { headroom: 0 })
      yield* elapse("100 millis")
      // The provider, projected: 0 + 3,000 refilled (at least) − 1,000 granted since; the store holds as
      // much, not the 0 the snapshot said. (On a server's clock, a loaded machine may sleep longer.)
      const age = (yield* Clock.currentTimeMillis) - atStart.observedAt
      const level = (yield* s.observe(k, atStart)).levels.inputTokens?.level ?? 0
      expect(level).toBeGreaterThan(1_500)
      expect(level).toBeLessThan(10 * age - 1_000 + 500)
    })
)

behaviour(
  "a snapshot older than the store's account of its grants learns a lower limit but clamps no level",
  ({ key }) =>
    Effect.gen(function*() {
      const s = yield* LimiterStore.LimiterStore
      const k = key()
      yield* s.define(k, quota)
      const old = {
        dimensions: { inputTokens: { limit: 3_000, remaining: 100 } },
        observedAt: (yield* Clock.currentTimeMillis) - 3_600_000
      }
      const observation = yield* s.observe(k, old)
      expect(observation.lowered).toEqual([{ dimension: "inputTokens", from: 6_000, to: 3_000 }])
      near(observation.levels.inputTokens?.level, 3_000)
    })
)

/**
 * Runs every case against `store`. `live`: the store keeps time on a clock of
 * its own (a server's), so the cases run on the live clock and `elapse` sleeps.
 */
export const limiterStoreSuite = (
  name: string,
  store: () => Layer.Layer<LimiterStore.LimiterStore, unknown>,
  key: () => string,
  options: { readonly live?: boolean } = {}
) =>
  describe(`LimiterStore: ${name}`, () => {
    const context: CaseContext = {
      key,
      elapse: (duration) => options.live === true ? Effect.sleep(duration) : TestClock.adjust(duration)
    }
    for (const test of limiterStoreCases) {
      const run = Effect.provide(test.run(context), Layer.orDie(store()))
      if (options.live === true) it.live(test.name, () => run)
      else it.effect(test.name, () => run)
    }
  })
