import { describe, expect, it } from "@effect/vitest"
import { Cost, LimiterStore, Quota, TokenBucket } from "@sluice/core"
import { Clock, Duration, Effect, TestClock } from "effect"
import { limiterStoreSuite } from "./suites/limiterStore.js"

let keys = 0

/** Within one unit. */
const near = (actual: number | undefined, expected: number) => {
  expect(actual).toBeDefined()
  expect(Math.abs(actual! - expected)).toBeLessThan(1)
}
limiterStoreSuite("memory", () => LimiterStore.layerMemory, () => `memory-suite/${++keys}`)

describe("LimiterStore: unseen consumers", () => {
  it.effect("learns the rate another consumer takes from the provider's remaining, and refills at what is left", () =>
    Effect.gen(function*() {
      const store = yield* LimiterStore.makeMemory
      const quota = Quota.decodeSync({ inputTokens: { limit: 60_000, per: "1 minute" } })
      yield* store.define("k", quota)
      // The provider's bucket: the same limit, with a foreign consumer taking 30 % of its refill.
      let provider = TokenBucket.make({ capacity: 60_000, ratePerMilli: 1, now: 0 })
      for (let step = 1; step <= 240; step++) {
        yield* TestClock.adjust(Duration.millis(500))
        const now = step * 500
        provider = TokenBucket.take(provider, 150, now)
        // This process takes whatever its own view allows, in calls of 2,000 tokens.
        for (;;) {
          const answer = yield* store.reserve("k", Cost.amounts({ inputTokens: 2_000 }), { headroom: 0 })
          if (answer._tag !== "Granted") break
          provider = TokenBucket.take(provider, 2_000, now)
        }
        yield* store.observe("k", {
          dimensions: { inputTokens: { remaining: Math.max(0, Math.floor(TokenBucket.levelAt(provider, now))) } }
        })
      }
      // Two simulated minutes on: the provider's bucket is not overdrawn by more than a call or two...
      expect(TokenBucket.levelAt(provider, 120_000)).toBeGreaterThan(-4_000)
      // ...and the store's refill is what the other consumer leaves: 1,000 tokens take about 1.43 s, not 1 s.
      const answer = yield* store.reserve("k", Cost.amounts({ inputTokens: 60_000 }), { headroom: 0 })
      expect(answer._tag).toBe("Wait")
      const state = yield* store.state("k")
      const level = state.levels.inputTokens?.level ?? 0
      if (answer._tag === "Wait") {
        const ratePerMilli = (60_000 - level) / Duration.toMillis(answer.delay)
        expect(ratePerMilli).toBeGreaterThan(0.6)
        expect(ratePerMilli).toBeLessThan(0.8)
      }
    }))
})

describe("LimiterStore: snapshots carry their age", () => {
  const quota = Quota.decodeSync({ inputTokens: { limit: 60_000, per: "1 minute" } })

  it.effect("headers read at a 60 s stream's start and folded in at its end do not cut the refill: the next 30,000-token calls wait 30 s, not 300 s", () =>
    Effect.gen(function*() {
      const store = yield* LimiterStore.makeMemory
      yield* store.define("k", quota)
      // An earlier call's fresh headers: the provider's view matches the store's.
      yield* store.observe("k", {
        dimensions: { inputTokens: { limit: 60_000, remaining: 60_000 } },
        observedAt: yield* Clock.currentTimeMillis
      })
      // The stream reserves 30,000 tokens; its headers, read when the response starts, say 30,000 remain.
      expect((yield* store.reserve("k", Cost.amounts({ inputTokens: 30_000 }), { headroom: 0 }))._tag).toBe("Granted")
      const atStart = {
        dimensions: { inputTokens: { limit: 60_000, remaining: 30_000 } },
        observedAt: yield* Clock.currentTimeMillis
      }
      // The stream runs a minute and its snapshot is folded in at its end.
      yield* TestClock.adjust("60 seconds")
      const observation = yield* store.observe("k", atStart)
      near(observation.levels.inputTokens?.level, 60_000)
      expect((yield* store.reserve("k", Cost.amounts({ inputTokens: 30_000 }), { headroom: 0 }))._tag).toBe("Granted")
      expect((yield* store.reserve("k", Cost.amounts({ inputTokens: 30_000 }), { headroom: 0 }))._tag).toBe("Granted")
      const third = yield* store.reserve("k", Cost.amounts({ inputTokens: 30_000 }), { headroom: 0 })
      expect(third._tag).toBe("Wait")
      if (third._tag === "Wait") expect(Duration.toMillis(third.delay)).toBeLessThanOrEqual(30_001)
    }))

  it.effect("a stale snapshot still reveals another consumer's take, once what the store granted since is discounted", () =>
    Effect.gen(function*() {
      const store = yield* LimiterStore.makeMemory
      yield* store.define("k", quota)
      yield* store.observe("k", { dimensions: { inputTokens: { remaining: 60_000 } } })
      yield* store.reserve("k", Cost.amounts({ inputTokens: 30_000 }), { headroom: 0 })
      // Someone else took 15,000 before the headers were read.
      const atStart = { dimensions: { inputTokens: { remaining: 15_000 } }, observedAt: yield* Clock.currentTimeMillis }
      yield* TestClock.adjust("10 seconds")
      yield* store.reserve("k", Cost.amounts({ inputTokens: 20_000 }), { headroom: 0 })
      yield* TestClock.adjust("10 seconds")
      // The provider, projected: 15,000 + 20 s of refill − the 20,000 granted since = 15,000; the store counted 30,000.
      near((yield* store.observe("k", atStart)).levels.inputTokens?.level, 15_000)
    }))

  it.effect("a snapshot older than the store's account of its grants learns limits but does not clamp", () =>
    Effect.gen(function*() {
      const store = yield* LimiterStore.makeMemory
      yield* TestClock.adjust("1 hour")
      yield* store.define("k", quota)
      const old = {
        dimensions: { inputTokens: { limit: 30_000, remaining: 100 } },
        observedAt: (yield* Clock.currentTimeMillis) - 60_000
      }
      const observation = yield* store.observe("k", old)
      expect(observation.lowered).toEqual([{ dimension: "inputTokens", from: 60_000, to: 30_000 }])
      near(observation.levels.inputTokens?.level, 30_000)
    }))
})

describe("LimiterStore: idle entries", () => {
  it.effect("an idle key's entry is reclaimed and comes back with its configured or learned limits, never unlimited", () =>
    Effect.gen(function*() {
      const store = yield* LimiterStore.makeMemoryWith({ idleAfter: "10 minutes" })
      yield* store.define("configured", Quota.decodeSync({ requests: { limit: 10, per: "1 minute" } }))
      yield* store.observe("learned", { dimensions: { requests: { limit: 10, remaining: 10 } } })
      yield* store.reserve("configured", Cost.amounts({}), { headroom: 0 })
      yield* store.reserve("learned", Cost.amounts({}), { headroom: 0 })
      yield* store.pause("paused", Duration.minutes(30))
      yield* TestClock.adjust("11 minutes")
      // Any operation sweeps: the two full, idle entries go; the paused one stays.
      yield* store.state("other")
      expect(yield* store.entries).toBe(1)
      expect((yield* store.state("paused")).pausedFor).toEqual(Duration.minutes(19))
      for (const key of ["configured", "learned"]) {
        const answers = yield* Effect.all(
          Array.from({ length: 12 }, () => store.reserve(key, Cost.amounts({}), { headroom: 0 }))
        )
        expect({ key, granted: answers.filter((answer) => answer._tag === "Granted").length }).toEqual({
          key,
          granted: 10
        })
      }
    }))
})

describe("LimiterStore: grant history", () => {
  it("tells what was granted after an instant, counts refunds, and forgets what is older than its groups", () => {
    let history = LimiterStore.grantHistory(0)
    history = LimiterStore.recordGrant(history, 100, 0)
    history = LimiterStore.recordGrant(history, 50, 1_000)
    history = LimiterStore.recordGrant(history, -30, 10_000)
    expect(LimiterStore.grantedSince(history, 0)).toBe(20)
    expect(LimiterStore.grantedSince(history, 10_000)).toBe(0)
    expect(LimiterStore.grantedSince(history, 5_000)).toBe(-30)
    expect(LimiterStore.grantedSince(history, -1)).toBeUndefined()
    for (let step = 1; step <= LimiterStore.grantGroups; step++) {
      history = LimiterStore.recordGrant(history, 1, 10_000 + step * LimiterStore.grantGroupSpan)
    }
    expect(LimiterStore.grantedSince(history, 5_000)).toBeUndefined()
    expect(LimiterStore.grantedSince(history, 10_000 + LimiterStore.grantGroups * LimiterStore.grantGroupSpan)).toBe(0)
  })

  it("projects a remaining read earlier: refilled up to capacity, less what was granted since", () => {
    expect(LimiterStore.projectRemaining(30_000, 60_000, 1, 60_000, 0)).toBe(60_000)
    expect(LimiterStore.projectRemaining(15_000, 20_000, 1, 60_000, 20_000)).toBe(15_000)
  })
})
