import { describe, expect, it } from "@effect/vitest"
import { Cost, LimiterStore, Quota, TokenBucket } from "@sluice/core"
import { Duration, Effect, TestClock } from "effect"
import { limiterStoreSuite } from "./suites/limiterStore.js"

let keys = 0
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
        yield* store.observe("k", { dimensions: { inputTokens: { remaining: Math.max(0, Math.floor(TokenBucket.levelAt(provider, now))) } } })
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
