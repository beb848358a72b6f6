import { describe, expect, it } from "@effect/vitest"
import { RateLimiter } from "@sluice/core"
import type { Cost, Priority } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import { Clock, Duration, Effect, Exit, Fiber, Layer, Ref, TestClock } from "effect"
import type { Scope } from "effect"
import { Redis } from "ioredis"
import { afterAll } from "vitest"

const KEY = "sim/embeddings"

/** Lets every forked fiber run until it blocks, without moving time. */
const flush = TestClock.adjust(0)

const advance = (millis: number) => TestClock.adjust(Duration.millis(millis))

/** 600 input tokens a minute: 10 a second, one every 100 ms. */
const quota = { inputTokens: { limit: 600, per: "1 minute" } }

/** A limiter over the memory store; the transit margin off, so bucket arithmetic is exact. */
const withLimiter =
  (options: RateLimiter.Options = {}) => <A, E>(self: Effect.Effect<A, E, RateLimiter.RateLimiter | Scope.Scope>) =>
    Effect.scoped(self).pipe(
      Effect.provide(RateLimiter.layerMemory({ transitMargin: 0, quotas: { [KEY]: quota }, ...options }))
    )

const levelOf = (limiter: RateLimiter.RateLimiter["Type"]) =>
  Effect.map(limiter.stats(KEY), (stats) => stats.levels.inputTokens?.level)

const waitingOf = (limiter: RateLimiter.RateLimiter["Type"]) =>
  Effect.map(limiter.stats(KEY), (stats) => stats.waiting.batch + stats.waiting.normal + stats.waiting.interactive)

/** Records when each labelled call (an acquire or a take) is granted. */
const harness = Effect.gen(function*() {
  const limiter = yield* RateLimiter.RateLimiter
  const log = yield* Ref.make<Record<string, number>>({})
  const mark = (label: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (at) => Ref.update(log, (times) => ({ ...times, [label]: at })))
  const acquire = (label: string, cost: Cost.Cost, priority?: Priority.Class) =>
    Effect.fork(Effect.scoped(Effect.zipRight(limiter.acquire(KEY, cost, { priority }), mark(label))))
  const take = (label: string, cost: Cost.Cost, priority?: Priority.Class) =>
    Effect.fork(Effect.zipRight(limiter.take(KEY, cost, { priority }), mark(label)))
  return { limiter, acquire, take, times: Ref.get(log) }
})

describe("RateLimiter.take", () => {
  it.effect("takes at once on a free key: the buckets are charged, no slot is held (maxInFlight 1)", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      // First use: the key is not resident yet (the path that can wait, granted at once).
      yield* limiter.take(KEY, { inputTokens: 200 })
      expect(yield* levelOf(limiter)).toBe(400)
      // Resident and uncontended: the synchronous fast path.
      yield* limiter.take(KEY, { inputTokens: 100 })
      const stats = yield* limiter.stats(KEY)
      expect(stats.levels.inputTokens?.level).toBe(300)
      expect(stats.inFlight).toBe(0)
      // The one slot is free: an acquire is granted at once, and a take is not held up by it.
      yield* Effect.scoped(Effect.gen(function*() {
        const permit = yield* limiter.acquire(KEY, { inputTokens: 50 })
        expect((yield* limiter.stats(KEY)).inFlight).toBe(1)
        yield* limiter.take(KEY, { inputTokens: 50 })
        yield* permit.settle({ inputTokens: 50 })
      }))
      // Nothing refunded: the takes stay charged.
      expect(yield* levelOf(limiter)).toBe(200)
      expect((yield* limiter.stats(KEY)).inFlight).toBe(0)
    }).pipe(withLimiter({ maxInFlight: 1 })))

  it.effect("a take queued while every slot is held is granted when its cost refills, without a slot", () =>
    Effect.gen(function*() {
      const { limiter, take, times } = yield* harness
      yield* limiter.take(KEY, { inputTokens: 600 })
      yield* Effect.scoped(Effect.gen(function*() {
        yield* limiter.acquire(KEY, { inputTokens: 0 })
        yield* take("t", { inputTokens: 300 })
        yield* flush
        yield* advance(29_999)
        expect(yield* times).toEqual({})
        yield* advance(1)
        // Granted at 30 s although the only slot is still held.
        expect(yield* times).toEqual({ t: 30_000 })
        expect((yield* limiter.stats(KEY)).inFlight).toBe(1)
      }))
    }).pipe(withLimiter({ maxInFlight: 1 })))

  it.effect("waits FIFO behind a queued acquire of its class, granted when its cost has refilled", () =>
    Effect.gen(function*() {
      const { acquire, limiter, take, times } = yield* harness
      yield* limiter.take(KEY, { inputTokens: 600 })
      yield* acquire("a", { inputTokens: 300 })
      yield* flush
      yield* take("t", { inputTokens: 100 })
      yield* flush
      expect(yield* waitingOf(limiter)).toBe(2)
      yield* advance(30_000)
      expect(yield* times).toEqual({ a: 30_000 })
      yield* advance(9_999)
      expect(yield* times).toEqual({ a: 30_000 })
      yield* advance(1)
      expect(yield* times).toEqual({ a: 30_000, t: 40_000 })
      expect(yield* waitingOf(limiter)).toBe(0)
      expect(yield* levelOf(limiter)).toBe(0)
    }).pipe(withLimiter()))

  it.effect("a take of a higher class goes ahead of a queued batch acquire", () =>
    Effect.gen(function*() {
      const { acquire, limiter, take, times } = yield* harness
      yield* limiter.take(KEY, { inputTokens: 600 })
      yield* acquire("batch", { inputTokens: 300 }, "batch")
      yield* flush
      yield* take("interactive", { inputTokens: 300 }, "interactive")
      yield* flush
      yield* advance(30_000)
      expect(yield* times).toEqual({ interactive: 30_000 })
      yield* advance(30_000)
      expect(yield* times).toEqual({ interactive: 30_000, batch: 60_000 })
    }).pipe(withLimiter({ headroom: 0 })))

  it.effect("fails with CostTooLarge when the cost exceeds a bucket, on a new and on a resident key", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const first = yield* Effect.flip(limiter.take(KEY, { inputTokens: 601 }))
      expect(first._tag).toBe("CostTooLarge")
      yield* limiter.take(KEY, { inputTokens: 1 })
      const again = yield* Effect.flip(limiter.take(KEY, { inputTokens: 601 }))
      expect(again).toMatchObject({ _tag: "CostTooLarge", dimension: "inputTokens", amount: 601, capacity: 600 })
      const invalid = yield* Effect.flip(limiter.take(KEY, { inputTokens: -1 }))
      expect(invalid._tag).toBe("InvalidCost")
      expect(yield* levelOf(limiter)).toBe(599)
    }).pipe(withLimiter()))

  it.effect("maxWait: WaitTimeout, holding and reserving nothing", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      yield* limiter.take(KEY, { inputTokens: 600 })
      const fiber = yield* Effect.fork(Effect.flip(limiter.take(KEY, { inputTokens: 300 }, { maxWait: "1 second" })))
      yield* flush
      yield* advance(1_000)
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("WaitTimeout")
      expect(yield* waitingOf(limiter)).toBe(0)
      // Only the refill of one second: the take reserved nothing.
      expect(yield* levelOf(limiter)).toBe(10)
      yield* advance(29_000)
      yield* limiter.take(KEY, { inputTokens: 300 })
      expect(yield* levelOf(limiter)).toBe(0)
    }).pipe(withLimiter()))

  it.effect(
    "an interrupt at any step of a take (queued or at once) leaves nothing waiting, held or half reserved",
    () =>
      Effect.gen(function*() {
        const leaks: Array<string> = []
        for (let ops = 16; ops <= 64; ops++) {
          for (const queued of [true, false]) {
            for (let yields = 0; yields <= 3; yields++) {
              const whole = yield* Effect.gen(function*() {
                const limiter = yield* RateLimiter.RateLimiter
                // Queued: the bucket is empty; else the key is resident and free (the fast path).
                yield* limiter.take(KEY, { inputTokens: queued ? 600 : 0 })
                const before = (yield* levelOf(limiter))!
                const victim = yield* Effect.forkDaemon(
                  limiter.take(KEY, { inputTokens: 300 }).pipe(Effect.withMaxOpsBeforeYield(ops))
                )
                for (let i = 0; i < yields; i++) yield* Effect.yieldNow()
                yield* Fiber.interrupt(victim)
                const exit = victim.unsafePoll()!
                const stats = yield* limiter.stats(KEY)
                const taken = before - stats.levels.inputTokens!.level
                const ok = stats.inFlight === 0 &&
                  stats.waiting.normal === 0 &&
                  (queued ? Exit.isInterrupted(exit) && taken === 0 : taken === (Exit.isSuccess(exit) ? 300 : taken)) &&
                  (taken === 0 || taken === 300)
                if (!ok) return false
                // Nothing left behind: after 30 s a take of 300 is granted at once.
                yield* advance(30_000)
                const next = yield* Effect.fork(limiter.take(KEY, { inputTokens: 300 }))
                yield* flush
                return next.unsafePoll() !== null && Exit.isSuccess(next.unsafePoll()!)
              }).pipe(withLimiter({ maxInFlight: 1 }))
              if (!whole) leaks.push(`${queued ? "queued" : "at once"} ${ops}/${yields}`)
            }
          }
        }
        expect(leaks).toEqual([])
      }),
    { timeout: 120_000 }
  )
})

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `sluice-take-test-${process.pid}-${Date.now()}`

afterAll(async () => {
  const redis = new Redis(REDIS_URL)
  const found = await redis.keys(`${prefix}*`)
  if (found.length > 0) await redis.del(...found)
  redis.disconnect()
})

describe("RateLimiter.take on Redis", () => {
  it.live("charges the shared buckets, holds no slot, and a take that must wait times out reserving nothing", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const key = "redis/embeddings"
      yield* limiter.take(key, { inputTokens: 400 })
      yield* limiter.take(key, { inputTokens: 500 })
      const stats = yield* limiter.stats(key)
      expect(stats.inFlight).toBe(0)
      // 1,000 an hour: a second of refill is under a token.
      expect(stats.levels.inputTokens!.level).toBeGreaterThanOrEqual(100)
      expect(stats.levels.inputTokens!.level).toBeLessThan(101)
      // The one slot held by an acquire does not hold a take up.
      yield* Effect.scoped(
        Effect.zipRight(limiter.acquire(key, { inputTokens: 0 }), limiter.take(key, { inputTokens: 50 }))
      )
      const error = yield* Effect.flip(limiter.take(key, { inputTokens: 300 }, { maxWait: "50 millis" }))
      expect(error._tag).toBe("WaitTimeout")
      const after = yield* limiter.stats(key)
      expect(after.waiting.normal).toBe(0)
      expect(after.inFlight).toBe(0)
      expect(after.levels.inputTokens!.level).toBeGreaterThanOrEqual(50)
      expect(after.levels.inputTokens!.level).toBeLessThan(51)
    }).pipe(Effect.provide(redisLimiter)))

  it.live(
    "an interrupt at any step of a take, at once or queued, leaves nothing waiting or held, and reserves all or nothing",
    () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const leaks: Array<string> = []
        let n = 0
        for (let ops = 16; ops <= 64; ops += 4) {
          for (const queued of [false, true]) {
            for (let yields = 0; yields <= 2; yields++) {
              const key = `redis/sweep-${++n}`
              yield* limiter.define(key, { inputTokens: { limit: 1_000, per: "1 hour" } })
              // Resident, and with the bucket empty when the take must queue.
              yield* limiter.take(key, { inputTokens: queued ? 1_000 : 0 })
              const level = Effect.map(limiter.stats(key), (stats) => stats.levels.inputTokens!.level)
              const before = yield* level
              const victim = yield* Effect.forkDaemon(
                limiter.take(key, { inputTokens: 300 }).pipe(Effect.withMaxOpsBeforeYield(ops))
              )
              // Queued: interrupted once it waits in its lane (its store calls take a round trip each).
              for (let i = 0; queued && i < 1_000 && (yield* limiter.stats(key)).waiting.normal === 0; i++) {
                yield* Effect.sleep("1 millis")
              }
              for (let i = 0; i < yields; i++) yield* Effect.yieldNow()
              const exit = yield* Fiber.interrupt(victim)
              const stats = yield* limiter.stats(key)
              // Refill is under a token a second here.
              const taken = Math.round(before - stats.levels.inputTokens!.level)
              const ok = stats.inFlight === 0 && stats.waiting.normal === 0 &&
                (taken === 0 || taken === 300) && (!Exit.isSuccess(exit) || taken === 300) &&
                (!queued || (Exit.isInterrupted(exit) && taken === 0))
              if (!ok) leaks.push(`${queued ? "queued" : "at once"} ${ops}/${yields}: taken ${taken}, ${exit._tag}`)
            }
          }
        }
        expect(leaks).toEqual([])
      }).pipe(Effect.provide(redisLimiter)),
    { timeout: 60_000 }
  )
})

const redisLimiter = RateLimiter.layer({
  maxInFlight: 1,
  transitMargin: 0,
  quotas: { "redis/embeddings": { inputTokens: { limit: 1_000, per: "1 hour" } } }
}).pipe(Layer.provide(RedisStore.layer({ url: REDIS_URL, prefix, idleTtl: "1 minute", strict: true })))
