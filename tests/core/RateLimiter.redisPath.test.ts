import { afterAll, describe, expect, it } from "@effect/vitest"
import { RateLimiter } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import { Effect, Exit, Fiber, Layer } from "effect"
import { Redis } from "ioredis"

/**
 * acquire + settle on a store in another process, on the path a resident key
 * nobody waits on takes (one store call, its answer handled in one step):
 * every slot is given back exactly once whatever the instant an interrupt
 * lands, and a call that cannot be granted at once still goes the path that
 * can wait.
 */

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `sluice-redispath-test-${process.pid}-${Date.now()}`

afterAll(async () => {
  const redis = new Redis(REDIS_URL)
  const found = await redis.keys(`${prefix}*`)
  if (found.length > 0) await redis.del(...found)
  redis.disconnect()
})

const redisLimiter = RateLimiter.layer({
  maxInFlight: 1,
  transitMargin: 0
}).pipe(Layer.provide(RedisStore.layer({ url: REDIS_URL, prefix, idleTtl: "1 minute", strict: true })))

/** 1,000 an hour: a test's milliseconds refill under a token. */
const quota = { inputTokens: { limit: 1_000, per: "1 hour" } } as const

describe("RateLimiter acquire + settle on Redis, granted at once", () => {
  it.live(
    "an interrupt at any step of acquire or withPermit, use or settle leaves nothing held or waiting, and charges all or nothing",
    () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const leaks: Array<string> = []
        let n = 0
        for (let ops = 16; ops <= 64; ops += 4) {
          for (const form of ["acquire", "withPermit"] as const) {
            // Yields land the interrupt before or at the store's call; a millisecond or two of sleep, in the use or after it.
            for (let yields = 0; yields <= 4; yields++) {
              const key = `redis/sweep-${++n}`
              yield* limiter.define(key, quota)
              // Resident: the next call takes the path granted at once.
              yield* Effect.scoped(limiter.acquire(key, { inputTokens: 0 }))
              const level = Effect.map(limiter.stats(key), (stats) => stats.levels.inputTokens!.level)
              const before = yield* level
              // Settled to 100 of the 300 reserved: a charge of 100 once settled, 300 if interrupted before.
              const body = form === "acquire"
                ? Effect.scoped(
                  Effect.flatMap(limiter.acquire(key, { inputTokens: 300 }), (permit) =>
                    permit.settle({ inputTokens: 100 }))
                )
                : limiter.withPermit(key, { inputTokens: 300 }, (permit) =>
                  permit.settle({ inputTokens: 100 }))
              const victim = yield* Effect.forkDaemon(body.pipe(Effect.withMaxOpsBeforeYield(ops)))
              for (let i = 0; i < Math.min(yields, 2); i++) yield* Effect.yieldNow()
              if (yields > 2) yield* Effect.sleep(`${yields - 2} millis`)
              const exit = yield* Fiber.interrupt(victim)
              const stats = yield* limiter.stats(key)
              const taken = Math.round(before - stats.levels.inputTokens!.level)
              // The key grants again at once, its one slot free.
              const again = yield* Effect.exit(
                limiter.withPermit(key, { inputTokens: 0 }, () => Effect.void).pipe(Effect.timeout("500 millis"))
              )
              const ok = stats.inFlight === 0 && stats.waiting.normal === 0 && Exit.isSuccess(again) &&
                (taken === 0 || taken === 100 || taken === 300) && (!Exit.isSuccess(exit) || taken === 100)
              if (!ok) {
                leaks.push(
                  `${form} ${ops}/${yields}: taken ${taken}, in flight ${stats.inFlight}, ${exit._tag}, again ${again._tag}`
                )
              }
            }
          }
        }
        expect(leaks).toEqual([])
      }).pipe(Effect.provide(redisLimiter)),
    { timeout: 60_000 }
  )

  it.live("a cost that must wait goes the path that can wait, and one too large fails, each holding nothing", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const key = "redis/wait"
      yield* limiter.define(key, quota)
      yield* limiter.take(key, { inputTokens: 900 })
      // Resident and nobody waits: the at-once path asks the store, which answers Wait.
      const timedOut = yield* Effect.flip(
        Effect.scoped(limiter.acquire(key, { inputTokens: 300 }, { maxWait: "50 millis" }))
      )
      expect(timedOut._tag).toBe("WaitTimeout")
      const tooLarge = yield* Effect.flip(limiter.withPermit(key, { inputTokens: 5_000 }, () => Effect.void))
      expect(tooLarge._tag).toBe("CostTooLarge")
      const stats = yield* limiter.stats(key)
      expect(stats.inFlight).toBe(0)
      expect(stats.waiting.normal).toBe(0)
      expect(Math.round(stats.levels.inputTokens!.level)).toBe(100)
      // Granted at once, settled below the reservation: the difference comes back.
      yield* limiter.withPermit(key, { inputTokens: 80 }, (permit) => permit.settle({ inputTokens: 30 }))
      expect(Math.round((yield* limiter.stats(key)).levels.inputTokens!.level)).toBe(70)
    }).pipe(Effect.provide(redisLimiter)))
})
