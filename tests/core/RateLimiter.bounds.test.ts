import { describe, expect, it } from "@effect/vitest"
import { LimiterStore, RateLimiter } from "@sluice/core"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Ref, TestClock } from "effect"

const flush = TestClock.adjust(0)
const advance = (millis: number) => TestClock.adjust(Duration.millis(millis))
const perMinute = (limit: number, burst?: number) =>
  burst === undefined ? { limit, per: "1 minute" } : { limit, per: "1 minute", burst }

/** A limiter over the memory store, without the transit margin: these tests count levels exactly. */
const withLimiter = (options: RateLimiter.Options) => <A, E>(self: Effect.Effect<A, E, RateLimiter.RateLimiter>) =>
  Effect.scoped(self.pipe(Effect.provide(RateLimiter.layerMemory({ transitMargin: 0, ...options }))))

describe("RateLimiter bounds", () => {
  describe("idle keys are reclaimed", () => {
    it.effect("after idleAfter a key's runtime is gone, its pause and levels stay in the store, and the next call is governed by them", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const key = "idle/model"
        yield* Effect.scoped(Effect.zipRight(limiter.acquire(key, {}), limiter.acquire(key, {})))
        expect((yield* limiter.stats(key)).resident).toBe(true)
        yield* limiter.pause(key, "50 seconds")
        yield* advance(20_000)
        const idle = yield* limiter.stats(key)
        expect(idle.resident).toBe(false)
        expect(Duration.toMillis(idle.pausedFor)).toBe(30_000)
        // two taken, 20 s of refill at 2 a minute
        expect(idle.levels.requests?.level).toBeCloseTo(20_000 * 2 / 60_000, 6)
        const next = yield* Effect.fork(Effect.scoped(limiter.acquire(key, {})))
        yield* flush
        expect(next.unsafePoll()).toBeNull()
        expect((yield* limiter.stats(key)).resident).toBe(true)
        yield* advance(29_999)
        expect(next.unsafePoll()).toBeNull()
        yield* advance(1)
        expect(next.unsafePoll()).toEqual(Exit.succeed(expect.anything()))
      }).pipe(withLimiter({ idleAfter: "20 seconds", quotas: { "idle/model": { requests: perMinute(2) } } })))

    it.effect("a discovered key comes back from the store with its learned limits, not in discovery again", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const key = "idle/discovered"
        yield* Effect.scoped(limiter.acquire(key, {}))
        expect((yield* limiter.stats(key)).discovering).toBe(true)
        yield* limiter.observe(key, { dimensions: { requests: { limit: 3, remaining: 0 } } })
        yield* advance(15_000)
        expect((yield* limiter.stats(key)).resident).toBe(false)
        const fibers = yield* Effect.forEach(
          [1, 2],
          () => Effect.fork(Effect.scoped(Effect.zipRight(limiter.acquire(key, {}), Effect.never)))
        )
        yield* flush
        const stats = yield* limiter.stats(key)
        expect(stats).toMatchObject({ resident: true, discovering: false, maxInFlight: 256 })
        // 15 s at 3 a minute refilled 0.75: nothing is granted yet, the learned limit governs
        expect(stats.inFlight).toBe(0)
        yield* advance(5_000)
        expect((yield* limiter.stats(key)).inFlight).toBe(1)
        yield* Effect.forEach(fibers, Fiber.interrupt)
      }).pipe(withLimiter({ idleAfter: "10 seconds" })))

    it.effect("beyond metricKeys distinct keys, further keys share the key=\"_other\" label", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        yield* limiter.pause("labels/a", "1 second")
        yield* limiter.pause("labels/b", "1 second")
        yield* limiter.pause("labels/c", "1 second")
        const { Metric } = yield* Effect.promise(() => import("effect"))
        const { Metrics } = yield* Effect.promise(() => import("@sluice/core"))
        const count = (key: string) =>
          Effect.map(Metric.value(Metrics.pauses.pipe(Metric.tagged("key", key))), (state) => state.count)
        expect(yield* count("labels/a")).toBeGreaterThanOrEqual(1)
        expect(yield* count("labels/c")).toBe(0)
      }).pipe(withLimiter({ metricKeys: 2 })))
  })

  describe("pauses and waits are bounded", () => {
    it.effect("a pause of a day closes the key for maxPause at most", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        yield* limiter.pause("pause/model", "1 day")
        expect(Duration.toMillis((yield* limiter.stats("pause/model")).pausedFor)).toBe(60_000)
      }).pipe(withLimiter({ quotas: { "pause/model": { requests: perMinute(60) } } })))

    it.effect("an observed retry-after of 99999999999999 ms is cut to maxPause before the store sees it", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        yield* limiter.observe("pause/model", { dimensions: {}, retryAfter: Duration.millis(99_999_999_999_999) })
        expect(Duration.toMillis((yield* limiter.stats("pause/model")).pausedFor)).toBe(5_000)
      }).pipe(withLimiter({ maxPause: "5 seconds", quotas: { "pause/model": { requests: perMinute(60) } } })))

    it.effect("a waiter not granted within maxWait fails with WaitTimeout holding nothing, and the next waiter gets the capacity", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const key = "wait/model"
        yield* Effect.scoped(limiter.acquire(key, {}))
        const impatient = yield* Effect.fork(Effect.scoped(limiter.acquire(key, {}, { maxWait: "500 millis" })))
        const patient = yield* Effect.fork(Effect.scoped(limiter.acquire(key, {})))
        yield* flush
        yield* advance(500)
        expect(impatient.unsafePoll()).toEqual(
          Exit.fail(new RateLimiter.WaitTimeout({ key, priority: "normal", maxWait: Duration.millis(500) }))
        )
        expect((yield* limiter.stats(key)).waiting.normal).toBe(1)
        yield* advance(500)
        expect(Exit.isSuccess(yield* Fiber.await(patient))).toBe(true)
      }).pipe(withLimiter({ quotas: { "wait/model": { requests: perMinute(60, 1) } } })))

    it.effect("a deadline at the instant of its grant: the waiter keeps the permit, or the capacity is given back, exactly once", () =>
      Effect.gen(function*() {
        for (const deadline of [999, 1_000, 1_001]) {
          yield* Effect.gen(function*() {
            const limiter = yield* RateLimiter.RateLimiter
            const key = "wait/model"
            yield* Effect.scoped(limiter.acquire(key, {}))
            const held = yield* Deferred.make<void>()
            const waiter = yield* Effect.fork(
              Effect.scoped(
                Effect.zipRight(limiter.acquire(key, {}, { maxWait: Duration.millis(deadline) }), Deferred.await(held))
              )
            )
            yield* flush
            yield* advance(1_000)
            const exit = waiter.unsafePoll()
            const stats = yield* limiter.stats(key)
            if (exit === null) {
              // granted and holding
              expect(stats.inFlight).toBe(1)
              expect(stats.levels.requests?.level).toBeCloseTo(0, 6)
              yield* Deferred.succeed(held, undefined)
              expect(Exit.isSuccess(yield* Fiber.await(waiter))).toBe(true)
            } else {
              expect(exit).toEqual(
                Exit.fail(new RateLimiter.WaitTimeout({ key, priority: "normal", maxWait: Duration.millis(deadline) }))
              )
              expect(stats.inFlight).toBe(0)
              expect(stats.waiting.normal).toBe(0)
              // whatever was reserved for it came back: the next call is granted at once
              const next = yield* Effect.fork(Effect.scoped(limiter.acquire(key, {})))
              yield* flush
              const nextExit = next.unsafePoll()
              expect(nextExit !== null && Exit.isSuccess(nextExit)).toBe(true)
            }
          }).pipe(withLimiter({ quotas: { "wait/model": { requests: perMinute(60, 1) } } }))
        }
      }))
  })

  describe("settlements go to the backend that granted", () => {
    /** The memory store, answering every grant with origin "local" and recording every adjust. */
    const recordingStore = (
      adjusts: Ref.Ref<ReadonlyArray<{ readonly delta: unknown; readonly origin: unknown }>>,
      gate: Ref.Ref<Deferred.Deferred<void> | undefined>
    ) =>
      Layer.effect(
        LimiterStore.LimiterStore,
        Effect.map(LimiterStore.makeMemory, (memory) =>
          LimiterStore.LimiterStore.of({
            ...memory,
            reserve: (key, amounts, options) =>
              Effect.gen(function*() {
                const closed = yield* Ref.get(gate)
                if (closed !== undefined) yield* Deferred.await(closed)
                const answer = yield* memory.reserve(key, amounts, options)
                return answer._tag === "Granted" ? { ...answer, origin: "local" as const } : answer
              }),
            adjust: (key, delta, origin) =>
              Effect.zipRight(
                Ref.update(adjusts, (all) => [...all, { delta, origin }]),
                memory.adjust(key, delta, origin)
              )
          }))
      )

    it.effect("settle, and the refund of a grant whose waiter left while the store answered, pass the Granted origin to adjust", () =>
      Effect.gen(function*() {
        const adjusts = yield* Ref.make<ReadonlyArray<{ readonly delta: unknown; readonly origin: unknown }>>([])
        const gate = yield* Ref.make<Deferred.Deferred<void> | undefined>(undefined)
        yield* Effect.gen(function*() {
          const limiter = yield* RateLimiter.RateLimiter
          const key = "origin/model"
          const { closed, queued } = yield* Effect.scoped(Effect.gen(function*() {
            const permit = yield* limiter.acquire(key, { inputTokens: 100 })
            yield* permit.settle({ inputTokens: 40 })
            // a second caller queues behind the held slot; its reservation will hang at the store
            const closed = yield* Deferred.make<void>()
            yield* Ref.set(gate, closed)
            const queued = yield* Effect.fork(Effect.scoped(limiter.acquire(key, { inputTokens: 7 })))
            yield* flush
            return { queued, closed }
          }))
          // the slot is free: the driver is at the store for the queued caller, which leaves meanwhile
          yield* flush
          yield* Fiber.interrupt(queued)
          yield* Deferred.succeed(closed, undefined)
          yield* flush
          expect((yield* limiter.stats(key)).inFlight).toBe(0)
        }).pipe(
          Effect.provide(
            RateLimiter.layer({ maxInFlight: 1, quotas: { "origin/model": { inputTokens: perMinute(60_000) } } }).pipe(
              Layer.provide(recordingStore(adjusts, gate))
            )
          ),
          Effect.scoped
        )
        expect(yield* Ref.get(adjusts)).toEqual([
          { delta: { inputTokens: -60, tokens: -60 }, origin: "local" },
          { delta: { requests: -1, inputTokens: -7, tokens: -7 }, origin: "local" }
        ])
      }))
  })
})
