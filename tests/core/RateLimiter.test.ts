import { describe, expect, it } from "@effect/vitest"
import { Metrics, RateLimiter } from "@sluice/core"
import type { Cost, Priority } from "@sluice/core"
import { Clock, Deferred, Duration, Effect, Fiber, Metric, Option, Ref, TestClock } from "effect"
import type { Scope } from "effect"

const KEY = "sim/model"

/** Lets every forked fiber run until it blocks, without moving time. */
const flush = TestClock.adjust(0)

/** Moves the test clock forward. */
const advance = (millis: number) => TestClock.adjust(Duration.millis(millis))

/**
 * A limiter over the memory store. These tests check the buckets' arithmetic to the
 * millisecond, so the transit margin is off unless a test sets it ("transit margin" below).
 */
const withLimiter =
  (options: RateLimiter.Options) => <A, E>(self: Effect.Effect<A, E, RateLimiter.RateLimiter | Scope.Scope>) =>
    Effect.scoped(self).pipe(Effect.provide(RateLimiter.layerMemory({ transitMargin: 0, ...options })))

interface Grant {
  readonly label: string
  readonly at: number
}

/** Starts labelled acquisitions in the background and records when each is granted. */
const harness = Effect.gen(function*() {
  const limiter = yield* RateLimiter.RateLimiter
  const log = yield* Ref.make<ReadonlyArray<Grant>>([])
  const start = (
    label: string,
    cost: Cost.Cost,
    options: { readonly priority?: Priority.Class; readonly hold?: Effect.Effect<void>; readonly key?: string } = {}
  ) =>
    Effect.fork(Effect.scoped(Effect.gen(function*() {
      const permit = yield* limiter.acquire(options.key ?? KEY, cost, { priority: options.priority })
      const at = yield* Clock.currentTimeMillis
      yield* Ref.update(log, (grants) => [...grants, { label, at }])
      if (options.hold !== undefined) yield* options.hold
      return permit
    })))
  const granted = Effect.map(Ref.get(log), (grants) => grants.map((grant) => grant.label))
  const grantTimes = Effect.map(
    Ref.get(log),
    (grants) => Object.fromEntries(grants.map((grant) => [grant.label, grant.at]))
  )
  return { limiter, start, granted, grantTimes }
})

const perMinute = (limit: number, burst?: number) =>
  burst === undefined ? { limit, per: "1 minute" } : { limit, per: "1 minute", burst }

describe("RateLimiter", () => {
  it.effect("withPermit whose use throws while building its effect gives the slot back, on the fast path and the waiting one", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const throwing = (): Effect.Effect<void> => {
        throw new Error("boom")
      }
      // Resident and uncontended: granted at once, then the defect.
      yield* limiter.withPermit(KEY, { inputTokens: 1 }, () => Effect.void)
      const fast = yield* Effect.exit(limiter.withPermit(KEY, { inputTokens: 1 }, throwing))
      expect(fast._tag === "Failure" && fast.cause._tag === "Die").toBe(true)
      expect((yield* limiter.stats(KEY)).inFlight).toBe(0)
      // A key seen for the first time takes the path that can wait.
      const slow = yield* Effect.exit(limiter.withPermit("sim/other", { inputTokens: 1 }, throwing))
      expect(slow._tag === "Failure").toBe(true)
      expect((yield* limiter.stats("sim/other")).inFlight).toBe(0)
      // With one slot, the next call is granted: nothing was kept.
      const again = yield* limiter.withPermit(KEY, { inputTokens: 1 }, (permit) => Effect.succeed(permit.key))
      expect(again).toBe(KEY)
    }).pipe(withLimiter({ maxInFlight: 1, quotas: { [KEY]: { inputTokens: { limit: 1_000, per: "1 minute" } } } })))

  describe("timing", () => {
    it.effect("at a low rate a waiter is granted exactly when its cost has refilled", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, start } = yield* harness
        yield* start("a", {})
        yield* start("b", {})
        yield* start("c", {})
        yield* flush
        expect(yield* granted).toEqual(["a"])
        yield* advance(999)
        expect(yield* granted).toEqual(["a"])
        yield* advance(1)
        expect(yield* granted).toEqual(["a", "b"])
        yield* advance(1_000)
        expect(yield* grantTimes).toEqual({ a: 0, b: 1_000, c: 2_000 })
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(60, 1) } } })))

    it.effect("at 2,000,000 tokens a minute the bucket refills at that rate, not at 60,000", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, start } = yield* harness
        yield* start("drain", { inputTokens: 2_000_000 })
        yield* start("next", { inputTokens: 100_000 })
        yield* flush
        yield* advance(2_999)
        expect(yield* granted).toEqual(["drain"])
        yield* advance(1)
        expect(yield* grantTimes).toEqual({ drain: 0, next: 3_000 })
        // a full minute later the whole 2,000,000 is back, minus nothing else taken
        yield* start("full", { inputTokens: 1_900_000 })
        yield* flush
        yield* advance(56_999)
        expect(yield* granted).toEqual(["drain", "next"])
        yield* advance(1)
        expect((yield* grantTimes).full).toBe(60_000)
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(2_000_000) } } })))
  })

  describe("transit margin", () => {
    it.effect("by default every take leaves 100 ms of refill in the bucket: a drained bucket admits later by that much, once", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        // 600,000 a minute: 10 tokens a millisecond, so the margin is 1,000 tokens.
        yield* start("a", { inputTokens: 599_000 })
        yield* start("b", { inputTokens: 10_000 })
        yield* start("c", { inputTokens: 10_000 })
        yield* flush
        yield* advance(1_000)
        yield* advance(1_000)
        yield* advance(1_000)
        // a leaves 1,000 (the margin): b waits for its 10,000 and the margin to refill above it (1,000 ms),
        // then c for its own cost only (1,000 ms more): the margin is paid once, not per call.
        expect(yield* grantTimes).toEqual({ a: 0, b: 1_000, c: 2_000 })
      }).pipe(
        Effect.scoped,
        Effect.provide(RateLimiter.layerMemory({ quotas: { [KEY]: { inputTokens: perMinute(600_000) } } }))
      ))

    it.effect("without it the same calls go as soon as the bucket reaches zero", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        yield* start("a", { inputTokens: 599_000 })
        yield* start("b", { inputTokens: 10_000 })
        yield* start("c", { inputTokens: 10_000 })
        yield* flush
        yield* advance(2_000)
        expect(yield* grantTimes).toEqual({ a: 0, b: 900, c: 1_900 })
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(600_000) } }, transitMargin: 0 })))

    it.effect("a cost too large to leave the margin still goes on a full bucket, never refused", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        yield* start("whole", { inputTokens: 600_000 })
        yield* start("again", { inputTokens: 600_000 })
        yield* flush
        yield* advance(60_000)
        expect(yield* grantTimes).toEqual({ whole: 0, again: 60_000 })
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(600_000) } }, transitMargin: "1 second" })))
  })

  describe("reservation", () => {
    it.effect("reserves every dimension at once or none of them", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, limiter, start } = yield* harness
        yield* start("big", { inputTokens: 1_000 })
        yield* start("small", { inputTokens: 500 })
        yield* flush
        expect(yield* granted).toEqual(["big"])
        // the waiting call holds no request while its tokens are short
        const stats = yield* limiter.stats(KEY)
        expect(stats.levels.requests?.level).toBe(9)
        expect(stats.levels.inputTokens?.level).toBe(0)
        expect(stats.waiting.normal).toBe(1)
        yield* advance(30_000)
        expect((yield* grantTimes).small).toBe(30_000)
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(10), inputTokens: perMinute(1_000) } } })))

    it.effect("a cost larger than a bucket fails at once with the dimension named", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        const error = yield* Effect.flip(limiter.acquire(KEY, { inputTokens: 100, outputTokens: 5_000 }))
        expect(error._tag).toBe("CostTooLarge")
        expect(error).toMatchObject({ key: KEY, dimension: "outputTokens", amount: 5_000, capacity: 4_000 })
        expect(error.message).toContain("outputTokens")
        const stats = yield* limiter.stats(KEY)
        expect(stats.waiting).toEqual({ batch: 0, normal: 0, interactive: 0 })
        expect(stats.levels.requests?.level).toBe(10)
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(10), outputTokens: perMinute(4_000) } } })))

    it.effect("a negative cost is refused with the dimension named", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        const error = yield* Effect.flip(limiter.acquire(KEY, { inputTokens: -3 }))
        expect(error).toMatchObject({ _tag: "InvalidCost", dimension: "inputTokens", value: -3 })
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(1_000) } } })))
  })

  describe("settlement", () => {
    it.effect("settling below the reservation refunds it, so the next waiter is served sooner", () =>
      Effect.gen(function*() {
        const { granted, limiter, start } = yield* harness
        const permit = yield* limiter.acquire(KEY, { inputTokens: 60_000 })
        yield* start("next", { inputTokens: 30_000 })
        yield* flush
        expect(yield* granted).toEqual([])
        yield* permit.settle({ inputTokens: 20_000 })
        yield* flush
        expect(yield* granted).toEqual(["next"])
        expect((yield* limiter.stats(KEY)).levels.inputTokens?.level).toBe(10_000)
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("settling above the reservation charges it: the bucket goes into debt and later waiters wait longer", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, limiter, start } = yield* harness
        const permit = yield* limiter.acquire(KEY, { inputTokens: 10_000 })
        yield* permit.settle({ inputTokens: 70_000 })
        expect((yield* limiter.stats(KEY)).levels.inputTokens?.level).toBe(-10_000)
        yield* start("after", { inputTokens: 10_000 })
        yield* flush
        yield* advance(19_999)
        expect(yield* granted).toEqual([])
        yield* advance(1)
        expect(yield* grantTimes).toEqual({ after: 20_000 })
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("settling again corrects from the last settlement, not from the reservation", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        const permit = yield* limiter.acquire(KEY, { inputTokens: 10_000 })
        yield* permit.settle({ inputTokens: 4_000 })
        yield* permit.settle({ inputTokens: 6_000 })
        expect((yield* limiter.stats(KEY)).levels.inputTokens?.level).toBe(54_000)
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("a permit released without settlement keeps its reservation", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        yield* Effect.scoped(limiter.acquire(KEY, { inputTokens: 45_000 }))
        const stats = yield* limiter.stats(KEY)
        expect(stats.inFlight).toBe(0)
        expect(stats.levels.inputTokens?.level).toBe(15_000)
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))
  })

  describe("provider feedback", () => {
    it.effect("observe lowers the local view to what the provider says remains, never raises it", () =>
      Effect.gen(function*() {
        const { granted, limiter, start } = yield* harness
        yield* limiter.observe(KEY, { dimensions: { inputTokens: { remaining: 1_000 } } })
        expect((yield* limiter.stats(KEY)).levels.inputTokens?.level).toBe(1_000)
        yield* limiter.observe(KEY, { dimensions: { inputTokens: { remaining: 50_000 } } })
        expect((yield* limiter.stats(KEY)).levels.inputTokens?.level).toBe(1_000)
        yield* start("next", { inputTokens: 2_000 })
        yield* flush
        yield* advance(999)
        expect(yield* granted).toEqual([])
        yield* advance(1)
        expect(yield* granted).toEqual(["next"])
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("a configured limit above the provider's stated limit is lowered to it", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        yield* limiter.observe(KEY, { dimensions: { inputTokens: { limit: 50_000, remaining: 50_000 } } })
        expect((yield* limiter.stats(KEY)).levels.inputTokens?.capacity).toBe(50_000)
        const error = yield* Effect.flip(limiter.acquire(KEY, { inputTokens: 60_000 }))
        expect(error).toMatchObject({ _tag: "CostTooLarge", dimension: "inputTokens", capacity: 50_000 })
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(100_000) } } })))

    it.effect("an unknown key runs one call at a time until a response states its limits", () =>
      Effect.gen(function*() {
        const release = yield* Deferred.make<void>()
        const { granted, limiter, start } = yield* harness
        yield* start("first", {}, { hold: Deferred.await(release), key: "new/key" })
        yield* start("second", {}, { hold: Deferred.await(release), key: "new/key" })
        yield* flush
        expect(yield* granted).toEqual(["first"])
        expect(yield* limiter.stats("new/key")).toMatchObject({ discovering: true, inFlight: 1, maxInFlight: 1 })
        yield* limiter.observe("new/key", {
          dimensions: { requests: { limit: 50, remaining: 49 }, inputTokens: { limit: 30_000, remaining: 29_000 } }
        })
        yield* flush
        expect(yield* granted).toEqual(["first", "second"])
        const stats = yield* limiter.stats("new/key")
        expect(stats).toMatchObject({ discovering: false, inFlight: 2, maxInFlight: 256 })
        expect(stats.levels.requests).toEqual({ level: 48, capacity: 50 })
        yield* Deferred.succeed(release, undefined)
      }).pipe(withLimiter({})))

    it.effect("with discovery off an unknown key fails with UnknownKey", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        const error = yield* Effect.flip(limiter.acquire("nobody/knows", {}))
        expect(error).toMatchObject({ _tag: "UnknownKey", key: "nobody/knows" })
      }).pipe(withLimiter({ discover: false })))

    it.effect("a pause holds every waiter of the key until one instant, then lets them through together", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, limiter, start } = yield* harness
        const pausesBefore = (yield* Metric.value(Metrics.pauses.pipe(Metric.tagged("key", KEY)))).count
        yield* limiter.pause(KEY, "5 seconds")
        yield* start("a", {})
        yield* start("b", {})
        yield* advance(2_000)
        yield* start("c", {})
        yield* flush
        yield* advance(2_999)
        expect(yield* granted).toEqual([])
        expect((yield* limiter.stats(KEY)).pausedFor).toEqual(Duration.millis(1))
        yield* advance(1)
        expect(yield* grantTimes).toEqual({ a: 5_000, b: 5_000, c: 5_000 })
        const pausesAfter = (yield* Metric.value(Metrics.pauses.pipe(Metric.tagged("key", KEY)))).count
        expect(pausesAfter - pausesBefore).toBe(1)
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(100) } } })))

    it.effect("a retry-after in an observed snapshot pauses the key; a later, shorter pause does not shorten it", () =>
      Effect.gen(function*() {
        const { granted, limiter, start } = yield* harness
        yield* limiter.observe(KEY, { dimensions: {}, retryAfter: Duration.seconds(3) })
        yield* limiter.pause(KEY, "1 second")
        yield* start("a", {})
        yield* flush
        yield* advance(2_999)
        expect(yield* granted).toEqual([])
        yield* advance(1)
        expect(yield* granted).toEqual(["a"])
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(100) } } })))

    it.effect("a pause until a Date is measured on the Effect clock", () =>
      Effect.gen(function*() {
        const { limiter } = yield* harness
        yield* advance(10_000)
        yield* limiter.pause(KEY, new Date(14_000))
        expect((yield* limiter.stats(KEY)).pausedFor).toEqual(Duration.millis(4_000))
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(100) } } })))
  })

  describe("priorities", () => {
    it.effect("when capacity frees, interactive goes first, then normal, then batch", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, start } = yield* harness
        yield* start("drain", {})
        yield* flush
        yield* start("batch", {}, { priority: "batch" })
        yield* start("normal", {}, { priority: "normal" })
        yield* start("interactive", {}, { priority: "interactive" })
        yield* flush
        expect(yield* granted).toEqual(["drain"])
        yield* advance(3_000)
        expect(yield* granted).toEqual(["drain", "interactive", "normal", "batch"])
        expect(yield* grantTimes).toEqual({ drain: 0, interactive: 1_000, normal: 2_000, batch: 3_000 })
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(60, 1) } } })))

    it.effect("within a class arrival order holds: a small late request does not overtake a large early one", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        yield* start("drain", { inputTokens: 60_000 })
        yield* flush
        yield* start("large", { inputTokens: 30_000 })
        yield* start("small", { inputTokens: 1_000 })
        yield* flush
        yield* advance(31_000)
        expect(yield* grantTimes).toEqual({ drain: 0, large: 30_000, small: 31_000 })
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("batch work leaves headroom while interactive work was seen recently", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        yield* start("interactive", { inputTokens: 1_000 }, { priority: "interactive" })
        yield* flush
        yield* start("batch-1", { inputTokens: 40_000 }, { priority: "batch" })
        yield* start("batch-2", { inputTokens: 10_000 }, { priority: "batch" })
        yield* flush
        // 19,000 left: batch-2 fits, but must leave 25 % (15,000) of the bucket, so it waits 6 s
        yield* advance(6_000)
        expect(yield* grantTimes).toEqual({ "interactive": 0, "batch-1": 0, "batch-2": 6_000 })
      }).pipe(
        withLimiter({
          quotas: { [KEY]: { inputTokens: perMinute(60_000) } },
          headroom: 0.25,
          recentWindow: "30 seconds"
        })
      ))

    it.effect("without recent higher-class work batch uses the whole bucket", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        yield* start("batch-0", { inputTokens: 1_000 }, { priority: "batch" })
        yield* start("batch-1", { inputTokens: 40_000 }, { priority: "batch" })
        yield* start("batch-2", { inputTokens: 10_000 }, { priority: "batch" })
        yield* flush
        expect(yield* grantTimes).toEqual({ "batch-0": 0, "batch-1": 0, "batch-2": 0 })
      }).pipe(
        withLimiter({
          quotas: { [KEY]: { inputTokens: perMinute(60_000) } },
          headroom: 0.25,
          recentWindow: "30 seconds"
        })
      ))

    it.effect("the headroom ends when interactive work has not been seen for the recent window", () =>
      Effect.gen(function*() {
        const { grantTimes, start } = yield* harness
        yield* start("interactive", { inputTokens: 1_000 }, { priority: "interactive" })
        yield* flush
        yield* start("batch-1", { inputTokens: 58_000 }, { priority: "batch" })
        yield* start("batch-2", { inputTokens: 5_000 }, { priority: "batch" })
        yield* flush
        // batch-1 is too large to leave the headroom, so it waits for a full bucket (at 1 s) and leaves 2,000.
        // batch-2 would fit at 4 s, but needs 20,000 (5,000 + 15,000 headroom) while the
        // interactive call is under 10 s old: it goes when the headroom ends, at 10 s.
        yield* advance(9_999)
        expect((yield* grantTimes)["batch-2"]).toBeUndefined()
        yield* advance(1)
        const times = yield* grantTimes
        expect(times["batch-1"]).toBe(1_000)
        expect(times["batch-2"]).toBe(10_000)
      }).pipe(
        withLimiter({
          quotas: { [KEY]: { inputTokens: perMinute(60_000) } },
          headroom: 0.25,
          recentWindow: "10 seconds"
        })
      ))

    it.effect("an interactive call arriving in a saturated batch run waits only for its own cost to refill", () =>
      Effect.gen(function*() {
        const { granted, grantTimes, start } = yield* harness
        for (let i = 0; i < 20; i++) yield* start(`batch-${i}`, { inputTokens: 20_000 }, { priority: "batch" })
        yield* flush
        // batch-3 takes what refilled at 20 s and leaves the bucket empty
        yield* advance(20_000)
        const before = (yield* granted).length
        expect(before).toBe(4)
        yield* start("interactive", { inputTokens: 6_000 }, { priority: "interactive" })
        yield* flush
        yield* advance(6_000)
        expect((yield* grantTimes).interactive).toBe(26_000)
        // no batch call was let in ahead of it
        const order = yield* granted
        expect(order.indexOf("interactive")).toBe(before)
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("a waiter that has waited past promoteAfter is promoted above newer work of the next class", () =>
      Effect.gen(function*() {
        const { granted, start } = yield* harness
        yield* start("drain", {})
        yield* flush
        yield* start("old-batch", {}, { priority: "batch" })
        yield* flush
        yield* advance(9_000)
        yield* start("new-normal", {}, { priority: "normal" })
        yield* flush
        yield* advance(1_000)
        expect(yield* granted).toEqual(["drain", "old-batch"])
        yield* advance(10_000)
        expect(yield* granted).toEqual(["drain", "old-batch", "new-normal"])
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(6, 1) } }, promoteAfter: "10 seconds" })))

    it.effect("without promotion the newer normal work goes first", () =>
      Effect.gen(function*() {
        const { granted, start } = yield* harness
        yield* start("drain", {})
        yield* flush
        yield* start("old-batch", {}, { priority: "batch" })
        yield* flush
        yield* advance(9_000)
        yield* start("new-normal", {}, { priority: "normal" })
        yield* flush
        yield* advance(1_000)
        expect(yield* granted).toEqual(["drain", "new-normal"])
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(6, 1) } }, promoteAfter: "1 hour" })))
  })

  describe("shedding and bounds", () => {
    it.effect("an arrival to a full lane is shed at once with a typed error", () =>
      Effect.gen(function*() {
        const { limiter, start } = yield* harness
        const shedMetric = Metrics.shed.pipe(
          Metric.tagged("key", KEY),
          Metric.tagged("class", "batch"),
          Metric.tagged("reason", "lane-full")
        )
        const before = (yield* Metric.value(shedMetric)).count
        yield* start("drain", {})
        yield* start("b1", {}, { priority: "batch" })
        yield* start("b2", {}, { priority: "batch" })
        yield* flush
        const error = yield* Effect.flip(Effect.scoped(limiter.acquire(KEY, {}, { priority: "batch" })))
        expect(error).toMatchObject({ _tag: "Shed", key: KEY, priority: "batch", reason: "lane-full", waiting: 2 })
        // other classes still queue
        yield* start("n1", {}, { priority: "normal" })
        yield* flush
        expect((yield* limiter.stats(KEY)).waiting).toEqual({ batch: 2, normal: 1, interactive: 0 })
        expect((yield* Metric.value(shedMetric)).count - before).toBe(1)
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(60, 1) } }, lanes: { batch: 2 } })))

    it.effect("when the key's queue is full the lowest class is shed first", () =>
      Effect.gen(function*() {
        const { limiter, start } = yield* harness
        yield* start("drain", {})
        yield* flush
        const a = yield* start("batch-a", {}, { priority: "batch" })
        const b = yield* start("batch-b", {}, { priority: "batch" })
        yield* flush
        const c = yield* start("interactive-c", {}, { priority: "interactive" })
        yield* flush
        // the newest batch waiter made room for the interactive one, and learned it at once
        const shedB = yield* Effect.flip(Fiber.join(b))
        expect(shedB).toMatchObject({ _tag: "Shed", priority: "batch", reason: "displaced" })
        yield* start("normal-d", {}, { priority: "normal" })
        yield* flush
        expect(yield* Effect.flip(Fiber.join(a))).toMatchObject({
          _tag: "Shed",
          priority: "batch",
          reason: "displaced"
        })
        // an arrival no higher than everything queued is itself shed
        const e = yield* Effect.flip(Effect.scoped(limiter.acquire(KEY, {}, { priority: "batch" })))
        expect(e).toMatchObject({ _tag: "Shed", reason: "queue-full" })
        expect((yield* limiter.stats(KEY)).waiting).toEqual({ batch: 0, normal: 1, interactive: 1 })
        yield* advance(1_000)
        expect(Option.isSome(yield* Fiber.poll(c))).toBe(true)
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(60, 1) } }, maxWaiting: 2 })))

    it.effect("maxInFlight bounds the permits held at once, whatever the buckets allow", () =>
      Effect.gen(function*() {
        const releaseFirst = yield* Deferred.make<void>()
        const never = yield* Deferred.make<void>()
        const { granted, limiter, start } = yield* harness
        yield* start("a", {}, { hold: Deferred.await(releaseFirst) })
        yield* start("b", {}, { hold: Deferred.await(never) })
        yield* start("c", {}, { hold: Deferred.await(never) })
        yield* flush
        expect(yield* granted).toEqual(["a", "b"])
        expect(yield* limiter.stats(KEY)).toMatchObject({ inFlight: 2, waiting: { normal: 1 } })
        yield* Deferred.succeed(releaseFirst, undefined)
        yield* flush
        expect(yield* granted).toEqual(["a", "b", "c"])
        expect((yield* limiter.stats(KEY)).inFlight).toBe(2)
      }).pipe(withLimiter({ quotas: { [KEY]: { requests: perMinute(1_000) } }, maxInFlight: 2 })))

    it.effect("an interrupted waiter leaves the queue and the next one is served on its own time", () =>
      Effect.gen(function*() {
        const { grantTimes, limiter, start } = yield* harness
        yield* start("drain", { inputTokens: 60_000 })
        yield* flush
        const large = yield* start("large", { inputTokens: 50_000 })
        yield* start("small", { inputTokens: 2_000 })
        yield* flush
        yield* advance(1_000)
        yield* Fiber.interrupt(large)
        yield* flush
        yield* advance(999)
        expect((yield* grantTimes).small).toBeUndefined()
        yield* advance(1)
        expect(yield* grantTimes).toEqual({ drain: 0, small: 2_000 })
        expect((yield* limiter.stats(KEY)).waiting.normal).toBe(0)
      }).pipe(withLimiter({ quotas: { [KEY]: { inputTokens: perMinute(60_000) } } })))

    it.effect("grants are counted by class and waits recorded", () =>
      Effect.gen(function*() {
        const { start } = yield* harness
        const grantsMetric = Metrics.grants.pipe(
          Metric.tagged("key", "metrics/key"),
          Metric.tagged("class", "interactive")
        )
        const waitMetric = Metrics.waitSeconds.pipe(
          Metric.tagged("key", "metrics/key"),
          Metric.tagged("class", "interactive")
        )
        const grantsBefore = (yield* Metric.value(grantsMetric)).count
        const waitsBefore = (yield* Metric.value(waitMetric)).count
        yield* start("a", {}, { priority: "interactive", key: "metrics/key" })
        yield* start("b", {}, { priority: "interactive", key: "metrics/key" })
        yield* flush
        yield* advance(1_000)
        expect((yield* Metric.value(grantsMetric)).count - grantsBefore).toBe(2)
        const waits = yield* Metric.value(waitMetric)
        expect(waits.count - waitsBefore).toBe(2)
        expect(waits.max).toBeGreaterThanOrEqual(1)
      }).pipe(withLimiter({ quotas: { "metrics/key": { requests: perMinute(60, 1) } } })))

    it.effect("a limiter with an invalid quota fails to start and names the key and field", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Effect.provide(
            RateLimiter.RateLimiter,
            RateLimiter.layerMemory({ quotas: { "bad/key": { requests: { limit: 0, per: "1 minute" } } } })
          )
        )
        expect(error).toMatchObject({ _tag: "InvalidQuota", key: "bad/key" })
        expect(error.issues[0]?.path).toBe("requests.limit")
      }))
  })
})
