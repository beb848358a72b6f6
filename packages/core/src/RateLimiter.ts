/**
 * The limiter every model call passes.
 *
 * `acquire(key, cost, { priority })` reserves every dimension of the cost at
 * once — or waits, without polling, until it fits — and returns a scoped
 * {@link Permit}. When the call returns, `permit.settle(actual)` refunds what
 * was over-reserved and charges what was under-reserved. What the provider says
 * (`observe`) lowers the local view, a 429 closes the key's gate (`pause`) for
 * all its waiters at once, and unknown keys are discovered from headers.
 *
 * How waiting works: each key has a FIFO lane per priority class and one
 * driver fiber. Only the driver reserves, always for the head waiter (highest
 * class, earliest arrival, promoted when old), so a small late request never
 * overtakes a large early one. When the head does not fit, the store says how
 * long until it does and the driver sleeps exactly that long on the Effect
 * `Clock` — or less, if a settlement, a release, an arrival or an observation
 * wakes it first.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RateLimiter } from "@sluice/core"
 *
 * const program = Effect.gen(function*() {
 *   const limiter = yield* RateLimiter.RateLimiter
 *   yield* Effect.scoped(Effect.gen(function*() {
 *     const permit = yield* limiter.acquire("anthropic/claude-sonnet-4-5", { inputTokens: 1_800, outputTokens: 1_024 })
 *     // ... call the model ...
 *     yield* permit.settle({ inputTokens: 1_750, outputTokens: 310 })
 *   }))
 * })
 *
 * program.pipe(Effect.provide(RateLimiter.layerMemory({
 *   quotas: {
 *     "anthropic/claude-sonnet-4-5": {
 *       requests: { limit: 50, per: "1 minute" },
 *       inputTokens: { limit: 30_000, per: "1 minute" },
 *       outputTokens: { limit: 8_000, per: "1 minute" }
 *     }
 *   }
 * })))
 * ```
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Cost from "./Cost.js"
import * as Drain from "./internal/drain.js"
import { Lanes, type Waiter as LaneWaiter } from "./internal/lanes.js"
import { tagged } from "./internal/taggedMetric.js"
import * as LimiterStore from "./LimiterStore.js"
import * as Metrics from "./Metrics.js"
import * as Priority from "./Priority.js"
import * as Quota from "./Quota.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"
import { CostTooLarge, type RateLimiterError, Shed, UnknownKey, WaitTimeout } from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

// Defined in `SluiceError` with every error a call can fail with; named here as the limiter's.
export { CostTooLarge, Shed, UnknownKey, WaitTimeout } from "./SluiceError.js"
export type { RateLimiterError } from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Permit and service
// ---------------------------------------------------------------------------

/**
 * Capacity held for one call. Release (closing its scope) frees the in-flight
 * slot but keeps the reservation; `settle` corrects the reservation to what the
 * call really used.
 */
export interface Permit {
  readonly key: string
  readonly priority: Priority.Class
  /** What was reserved, every dimension filled in. */
  readonly reserved: Cost.Amounts
  /** How long the caller waited for it. */
  readonly waited: Duration.Duration
  /**
   * Corrects the reservation to `actual`: refunds what was over-reserved,
   * charges what was under-reserved (a bucket may go into debt). May be called
   * again with a later figure (streaming); each call corrects from the last.
   */
  readonly settle: (actual: Cost.Cost) => Effect.Effect<void, Cost.InvalidCost | LimiterStore.LimiterStoreError>
}

/** Options of one acquisition. */
export interface AcquireOptions {
  /** The class to wait in; `normal` when absent. */
  readonly priority?: Priority.Class | undefined
  /** Give up with `WaitTimeout` when not granted within this long. Default: no deadline. */
  readonly maxWait?: Duration.DurationInput | undefined
}

/** What the limiter knows of a key right now. */
export interface KeyStats {
  readonly key: string
  readonly waiting: { readonly [C in Priority.Class]: number }
  readonly inFlight: number
  readonly maxInFlight: number
  /** True while the key's limits are unknown and it runs one call at a time. */
  readonly discovering: boolean
  readonly levels: LimiterStore.Levels
  readonly pausedFor: Duration.Duration
  /**
   * Whether the key has a live runtime (lanes, driver fiber) in this process.
   * False for a key not used yet, or reclaimed after `idleAfter` without a
   * call: its state stays in the store and the runtime comes back on the next call.
   */
  readonly resident: boolean
}

/** A time a pause lasts until: a `Date`, or a duration from now. */
export type PauseUntil = Date | Duration.DurationInput

/**
 * The limiter service.
 */
export class RateLimiter extends Context.Tag("@sluice/core/RateLimiter")<RateLimiter, {
  /**
   * Waits until `cost` fits in every bucket of `key`, reserves it atomically
   * and returns a permit held until the scope closes.
   */
  readonly acquire: (key: string, cost: Cost.Cost, options?: AcquireOptions) => Effect.Effect<Permit, RateLimiterError, Scope.Scope>
  /** `acquire`, run `use` with the permit, release. */
  readonly withPermit: <A, E, R>(
    key: string,
    cost: Cost.Cost,
    use: (permit: Permit) => Effect.Effect<A, E, R>,
    options?: AcquireOptions
  ) => Effect.Effect<A, E | RateLimiterError, R>
  /** Sets or replaces a key's quota. */
  readonly define: (key: string, quota: Quota.QuotaInput) => Effect.Effect<void, Quota.InvalidQuota | LimiterStore.LimiterStoreError>
  /** Folds what the provider said into the key: never above its `remaining`; learns limits; pauses on retry-after. */
  readonly observe: (key: string, snapshot: RateLimitSnapshot) => Effect.Effect<void, LimiterStore.LimiterStoreError>
  /** Closes the key's gate: every waiter resumes at the same instant, once. */
  readonly pause: (key: string, until: PauseUntil) => Effect.Effect<void, LimiterStore.LimiterStoreError>
  /** Queue, in-flight and bucket levels of a key. */
  readonly stats: (key: string) => Effect.Effect<KeyStats, LimiterStore.LimiterStoreError>
  /**
   * How long until `cost` could be granted on `key`, by the limiter's own view,
   * reserving nothing: the key's pause, then each bucket refilling (at its
   * quota's rate) past what the waiters of the same or a higher class already
   * queued ahead need. Zero for a key whose limits are unknown. A router asks
   * this of every key of a pool to send a call where it is admitted soonest.
   *
   * @example
   * ```ts
   * const wait = yield* limiter.admitsIn("azure-east/gpt-4o", { inputTokens: 1_800, outputTokens: 512 })
   * ```
   */
  readonly admitsIn: (key: string, cost: Cost.Cost, options?: AcquireOptions) => Effect.Effect<Duration.Duration, Cost.InvalidCost | LimiterStore.LimiterStoreError>
}>() {}

/** Options of a limiter. Every field has a default. */
export interface Options {
  /** Quotas by key, defined when the limiter starts. */
  readonly quotas?: { readonly [key: string]: Quota.QuotaInput } | undefined
  /** Calls in flight per key, at most. Default 256. */
  readonly maxInFlight?: number | undefined
  /**
   * What an unknown key does: `true` (default) runs it one call at a time until
   * a response's headers tell its limits; `false` fails with `UnknownKey`.
   */
  readonly discover?: boolean | undefined
  /** Waiters per class and key, at most. Default 1,000 interactive, 10,000 normal, 100,000 batch. */
  readonly lanes?: { readonly [C in Priority.Class]?: number } | undefined
  /** Waiters per key across classes, at most; the lowest class is shed first. Default 100,000. */
  readonly maxWaiting?: number | undefined
  /**
   * The fraction of each bucket a lower class leaves untouched while a higher
   * class is waiting or was seen within `recentWindow`. Default 0.1.
   */
  readonly headroom?: number | undefined
  /** How long a class counts as active after its last call. Default 10 seconds. */
  readonly recentWindow?: Duration.DurationInput | undefined
  /** A waiter is promoted one class for every `promoteAfter` it waits. Default 1 minute. */
  readonly promoteAfter?: Duration.DurationInput | undefined
  /**
   * The longest a key's gate closes for one `pause` or one observed
   * `retry-after`; a longer hint is cut to it (the caller that got it gives up
   * instead of waiting, see `Retry`). Default 60 seconds.
   */
  readonly maxPause?: Duration.DurationInput | undefined
  /**
   * How long a key stays resident (its lanes, driver fiber and metric handles)
   * with no waiter and nothing in flight before it is reclaimed. Its levels,
   * pause and learned limits stay in the store and come back on the next call.
   * Default 2 minutes; never below `recentWindow`, whose memory of recent
   * higher-class work a reclaim forgets.
   */
  readonly idleAfter?: Duration.DurationInput | undefined
  /**
   * How many distinct keys get their own `key` label on the limiter's metrics;
   * further keys share `key="_other"`. Effect's metric registry keeps every
   * labelled series for the life of the process, so this bounds its size
   * (about 25 series per key). Default 1,000.
   */
  readonly metricKeys?: number | undefined
}

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

interface Waiter extends LaneWaiter {
  /**
   * Completed in the same synchronous step as the waiter leaves its lane
   * (granted, failed, timed out), so a waiter that is no longer `waiting` always
   * has its answer: whoever loses a race reads it instead of guessing.
   */
  readonly deferred: Deferred.Deferred<number, RateLimiterError>
  /** The backend that granted it, from the store's `Granted`. */
  origin: LimiterStore.Origin | undefined
}

interface KeyRuntime {
  readonly key: string
  readonly lanes: Lanes<Waiter>
  /**
   * Slots taken: permits held plus reservations under way (the driver's, a fast
   * path's). Taken and given back synchronously, so an interrupt can never
   * separate a slot from the code that gives it back.
   */
  taken: number
  /** Opened to wake the driver. */
  readonly wake: Effect.Latch
  maxInFlight: number
  /** Permits held (granted and not yet released). */
  held: number
  discovering: boolean
  capacities: { [D in Quota.Dimension]?: number }
  /** Last arrival per class rank, for headroom. */
  readonly lastSeen: Array<number>
  /** The last arrival or release: the key is reclaimed `idleAfter` after it, when nothing waits or is held. */
  lastActive: number
  /** Set by the driver when it reclaims the key; an arrival that finds it set asks for a fresh runtime. */
  retired: boolean
  /** Each bucket's consumption rate, for `sluice_quota_time_left_seconds`. */
  drains: { [D in Quota.Dimension]?: Drain.Drain }
  /** The dimension the head waiter last waited for; undefined once granted. */
  blockedOn: Quota.Dimension | undefined
  readonly metrics: {
    readonly queueDepth: Record<Priority.Class, Metric.Metric.Gauge<number>>
    readonly waitSeconds: Record<Priority.Class, Metric.Metric.Histogram<number>>
    readonly grants: Record<Priority.Class, Metric.Metric.Counter<number>>
    readonly bucketLevel: Record<Quota.Dimension, Metric.Metric.Gauge<number>>
    readonly inFlight: Metric.Metric.Gauge<number>
    readonly timeLeft: Record<Quota.Dimension, Metric.Metric.Gauge<number>>
  }
}

const byClass = <A>(f: (priority: Priority.Class) => A): Record<Priority.Class, A> => ({
  batch: f("batch"),
  normal: f("normal"),
  interactive: f("interactive")
})

const byDimension = <A>(f: (dimension: Quota.Dimension) => A): Record<Quota.Dimension, A> => ({
  requests: f("requests"),
  inputTokens: f("inputTokens"),
  outputTokens: f("outputTokens"),
  tokens: f("tokens")
})

/** How often an idle key's time-left gauge is brought up to date. */
const timeLeftRefresh = Duration.seconds(5)

/** The `key` label shared by the keys past `metricKeys`. */
export const otherKeysLabel = "_other"

const defaults = {
  maxInFlight: 256,
  lanes: { interactive: 1_000, normal: 10_000, batch: 100_000 },
  maxWaiting: 100_000,
  headroom: 0.1,
  recentWindow: Duration.seconds(10),
  promoteAfter: Duration.minutes(1),
  maxPause: Duration.seconds(60),
  // Longer than `promoteAfter` and `recentWindow`, so a reclaim forgets no
  // state a live key still uses, and than the gap between calls of any key in
  // steady use, so busy keys do not churn; short enough that a burst of
  // one-off keys (per-tenant keys, a key per user) is freed within minutes.
  idleAfter: Duration.minutes(2),
  metricKeys: 1_000
} as const

/** A duration cut to `[0, max]`. */
const capped = (duration: Duration.Duration, max: Duration.Duration): Duration.Duration =>
  Duration.lessThan(duration, Duration.zero) ? Duration.zero : Duration.min(duration, max)

/**
 * Builds a limiter over the `LimiterStore` in context. Its per-key driver
 * fibers live in the surrounding scope.
 */
export const make = (options: Options = {}): Effect.Effect<
  RateLimiter["Type"],
  Quota.InvalidQuota | LimiterStore.LimiterStoreError,
  LimiterStore.LimiterStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const store = yield* LimiterStore.LimiterStore
    const scope = yield* Effect.scope
    const maxInFlight = Math.max(1, options.maxInFlight ?? defaults.maxInFlight)
    const discover = options.discover ?? true
    const laneBounds = { ...defaults.lanes, ...options.lanes }
    const maxWaiting = options.maxWaiting ?? defaults.maxWaiting
    const headroom = Math.max(0, Math.min(1, options.headroom ?? defaults.headroom))
    const recentMillis = Duration.toMillis(options.recentWindow ?? defaults.recentWindow)
    const promoteAfter = Duration.decode(options.promoteAfter ?? defaults.promoteAfter)
    const maxPause = Duration.decode(options.maxPause ?? defaults.maxPause)
    const idleMillis = Math.max(recentMillis, Duration.toMillis(options.idleAfter ?? defaults.idleAfter))
    const metricKeys = Math.max(0, options.metricKeys ?? defaults.metricKeys)

    const runtimes = new Map<string, KeyRuntime>()
    const defined = new Set<string>()
    /** Each defined key's refill per millisecond and dimension, for `admitsIn`. */
    const rates = new Map<string, { [D in Quota.Dimension]?: number }>()
    /** The keys that have their own metric label; at most `metricKeys`. */
    const labelled = new Set<string>()

    /** The `key` label of a key's metrics: its own for the first `metricKeys` keys, then `_other`. */
    const labelOf = (key: string): string => {
      if (labelled.has(key)) return key
      if (labelled.size < metricKeys) {
        labelled.add(key)
        return key
      }
      return otherKeysLabel
    }

    /** A bucket's refill per millisecond: its quota's, or a discovered key's capacity per minute. */
    const refillOf = (key: string, dimension: Quota.Dimension, capacity: number) =>
      rates.get(key)?.[dimension] ?? capacity / Duration.toMillis(LimiterStore.discoveredPeriod)

    /** Sets the time-left gauge of a bucket from its level and drain. */
    const setTimeLeft = (runtime: KeyRuntime, dimension: Quota.Dimension, level: number, capacity: number, now: number) => {
      const drain = runtime.drains[dimension]
      if (drain === undefined) return
      runtime.metrics.timeLeft[dimension].unsafeUpdate(
        Metrics.timeLeftSeconds({
          level,
          consumptionPerSecond: Drain.rateAt(drain, now) * 1000,
          refillPerSecond: refillOf(runtime.key, dimension, capacity) * 1000,
          blocked: runtime.blockedOn === dimension && runtime.lanes.total() > 0
        }),
        []
      )
    }

    // Synchronous: this runs twice per call, and a forEach of Metric.set effects cost a quarter of a grant.
    const rememberLevels = (runtime: KeyRuntime, levels: LimiterStore.Levels) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          const now = clock.unsafeCurrentTimeMillis()
          for (const dimension of Quota.dimensions) {
            const level = levels[dimension]
            if (level === undefined) continue
            runtime.capacities[dimension] = level.capacity
            runtime.metrics.bucketLevel[dimension].unsafeUpdate(level.level, [])
            runtime.drains[dimension] = Drain.observe(runtime.drains[dimension], level.level, level.capacity, refillOf(runtime.key, dimension, level.capacity), now)
            setTimeLeft(runtime, dimension, level.level, level.capacity, now)
          }
        })
      )

    /**
     * Every few seconds, the time-left gauges of every key as if nothing had
     * happened since its last event: an idle key's drain decays and its gauge
     * goes back to +Inf instead of keeping its last busy value.
     */
    const refreshTimeLeft = Effect.clockWith((clock) =>
      Effect.sync(() => {
        const now = clock.unsafeCurrentTimeMillis()
        for (const runtime of runtimes.values()) {
          for (const dimension of Quota.dimensions) {
            const drain = runtime.drains[dimension]
            const capacity = runtime.capacities[dimension]
            if (drain === undefined || capacity === undefined) continue
            setTimeLeft(runtime, dimension, Drain.levelAt(drain, capacity, refillOf(runtime.key, dimension, capacity), now), capacity, now)
          }
        }
      })
    )

    const setDepth = (runtime: KeyRuntime, priority: Priority.Class) =>
      Metric.set(runtime.metrics.queueDepth[priority], runtime.lanes.size(priority))

    /** Takes a waiter out of its lane with an error, if it is still waiting; its answer in the same step. */
    const failWaiter = (runtime: KeyRuntime, waiter: Waiter, error: RateLimiterError) =>
      Effect.suspend(() =>
        runtime.lanes.leave(waiter, "failed")
          ? (Deferred.unsafeDone(waiter.deferred, Exit.fail(error)), setDepth(runtime, waiter.priority))
          : Effect.void
      )

    /** Whether the head must leave headroom: a higher class waits or was seen recently. */
    const headroomFor = (runtime: KeyRuntime, rank: number, now: number): { readonly fraction: number; readonly until: number } => {
      let until = Number.NEGATIVE_INFINITY
      for (let higher = Math.floor(rank) + 1; higher <= Priority.topRank; higher++) {
        if (runtime.lanes.size(Priority.fromRank(higher)) > 0) return { fraction: headroom, until: Number.POSITIVE_INFINITY }
        const seen = runtime.lastSeen[higher]!
        if (now - seen < recentMillis) until = Math.max(until, seen + recentMillis)
      }
      return until > now ? { fraction: headroom, until } : { fraction: 0, until: Number.POSITIVE_INFINITY }
    }

    /** Sleeps `millis` (rounded up to the clock's tick) unless something wakes the driver first. */
    const sleepOrWake = (runtime: KeyRuntime, millis: number) =>
      Number.isFinite(millis)
        ? Effect.raceFirst(Effect.sleep(Duration.millis(Math.max(0, Math.ceil(millis)))), runtime.wake.await)
        : runtime.wake.await

    /** Gives back a slot a caller took for a reservation that was not granted, and wakes the driver for it. */
    const giveBackSlot = (runtime: KeyRuntime) => {
      runtime.taken--
      runtime.wake.unsafeOpen()
    }

    /** The driver's own give-back: it does not wake itself, or a waiting head would spin. */
    const driverGivesBack = (runtime: KeyRuntime) => {
      runtime.taken--
    }

    /**
     * The driver with no waiter: reclaims the key when it has been idle for
     * `idleAfter`, else sleeps until then or until something wakes it. The
     * check and the reclaim are one synchronous step, so no arrival can slip
     * in between; an arrival holding the old runtime sees `retired` and starts
     * a fresh one. Answers whether the driver goes on.
     */
    const idle = (runtime: KeyRuntime, now: number): Effect.Effect<boolean> => {
      const reclaimAt = runtime.lastActive + idleMillis
      if (now >= reclaimAt && runtime.taken === 0 && runtime.lanes.total() === 0) {
        runtime.retired = true
        if (runtimes.get(runtime.key) === runtime) runtimes.delete(runtime.key)
        return Effect.succeed(false)
      }
      return Effect.as(sleepOrWake(runtime, reclaimAt - now), true)
    }

    /** One turn of a key's driver: serve the head waiter, or sleep until it can be served. Answers whether the driver goes on. */
    const turn = (runtime: KeyRuntime): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        yield* runtime.wake.close
        const now = yield* Clock.currentTimeMillis
        const head = runtime.lanes.head(now, promoteAfter)
        if (head === undefined) return yield* idle(runtime, now)
        // A release opens the latch, so this wakes when a slot frees.
        if (runtime.taken >= runtime.maxInFlight) return yield* Effect.as(runtime.wake.await, true)
        runtime.taken++
        const room = headroomFor(runtime, head.rank, now)
        const reservation = yield* Effect.either(store.reserve(runtime.key, head.waiter.amounts, { headroom: room.fraction }))
        if (Either.isLeft(reservation)) {
          driverGivesBack(runtime)
          yield* failWaiter(runtime, head.waiter, reservation.left)
          return true
        }
        const answer = reservation.right
        switch (answer._tag) {
          case "Granted": {
            runtime.blockedOn = undefined
            yield* rememberLevels(runtime, answer.levels)
            yield* grant(runtime, head.waiter, answer.origin)
            return true
          }
          case "TooLarge": {
            driverGivesBack(runtime)
            runtime.capacities[answer.dimension] = answer.capacity
            yield* failWaiter(
              runtime,
              head.waiter,
              new CostTooLarge({ key: runtime.key, dimension: answer.dimension, amount: answer.amount, capacity: answer.capacity })
            )
            return true
          }
          case "Wait": {
            driverGivesBack(runtime)
            runtime.blockedOn = answer.reason === "paused" ? undefined : answer.reason
            yield* rememberLevels(runtime, answer.levels)
            const wakeAt = Math.min(
              now + Duration.toMillis(answer.delay),
              runtime.lanes.nextPromotion(now, promoteAfter),
              room.until
            )
            yield* sleepOrWake(runtime, wakeAt - now)
            return true
          }
        }
      })

    /**
     * Hands the reserved capacity and the taken slot to the head waiter — its
     * state, its count and its answer in one synchronous step — or, if it left
     * while the store answered, gives both back to where they came from.
     */
    const grant = (runtime: KeyRuntime, waiter: Waiter, origin: LimiterStore.Origin | undefined) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        if (!runtime.lanes.leave(waiter, "granted")) {
          driverGivesBack(runtime)
          return yield* Effect.ignore(store.adjust(runtime.key, negate(waiter.amounts), origin))
        }
        waiter.origin = origin
        runtime.held++
        Deferred.unsafeDone(waiter.deferred, Exit.succeed(now))
        yield* Metric.set(runtime.metrics.inFlight, runtime.held)
        yield* setDepth(runtime, waiter.priority)
        yield* Metric.increment(runtime.metrics.grants[waiter.priority])
        yield* Metric.update(runtime.metrics.waitSeconds[waiter.priority], Math.max(0, now - waiter.arrivedAt) / 1000)
      })

    const drive = (runtime: KeyRuntime): Effect.Effect<boolean> =>
      Effect.iterate(true, {
        while: (alive) => alive,
        body: () =>
          turn(runtime).pipe(
            Effect.catchAllCause((cause) =>
              Effect.gen(function*() {
                yield* Effect.logError(`Sluice limiter driver for key "${runtime.key}" failed; failing its waiters`, cause)
                for (const waiter of runtime.lanes.all()) {
                  if (runtime.lanes.leave(waiter, "failed")) Deferred.unsafeDone(waiter.deferred, Exit.failCause(cause as never))
                }
                return true
              })
            )
          )
      })

    const newRuntime = (key: string, known: boolean, now: number): KeyRuntime => {
      const size = known || !discover ? maxInFlight : 1
      const label = labelOf(key)
      return {
        key,
        lanes: new Lanes<Waiter>(),
        taken: 0,
        wake: Effect.unsafeMakeLatch(false),
        maxInFlight: size,
        held: 0,
        discovering: !known && discover,
        capacities: {},
        lastSeen: Priority.classes.map(() => Number.NEGATIVE_INFINITY),
        lastActive: now,
        retired: false,
        drains: {},
        blockedOn: undefined,
        metrics: {
          queueDepth: byClass((priority) => withTags(Metrics.queueDepth, { key: label, class: priority })),
          waitSeconds: byClass((priority) => withTags(Metrics.waitSeconds, { key: label, class: priority })),
          grants: byClass((priority) => withTags(Metrics.grants, { key: label, class: priority })),
          bucketLevel: byDimension((dimension) => withTags(Metrics.bucketLevel, { key: label, dimension: dimension })),
          inFlight: withTags(Metrics.inFlight, { key: label }),
          timeLeft: byDimension((dimension) => withTags(Metrics.quotaTimeLeft, { key: label, dimension }))
        }
      }
    }

    /**
     * The runtime of a key, created (and its driver started) on first use, or
     * again after it was reclaimed: from the store's state, so a key whose
     * buckets the store knows (defined, or learned from headers) is governed
     * at once and not discovered again.
     */
    const runtimeFor = (key: string): Effect.Effect<KeyRuntime, UnknownKey | LimiterStore.LimiterStoreError> =>
      Effect.suspend(() => {
        const existing = runtimes.get(key)
        if (existing !== undefined) return Effect.succeed(existing)
        return Effect.gen(function*() {
          // Another process (a shared store) may know the key already.
          const state = yield* store.state(key)
          const again = runtimes.get(key)
          if (again !== undefined) return again
          const known = defined.has(key) || Quota.dimensions.some((dimension) => state.levels[dimension] !== undefined)
          if (!known && !discover) return yield* new UnknownKey({ key })
          const runtime = newRuntime(key, known, yield* Clock.currentTimeMillis)
          runtimes.set(key, runtime)
          yield* rememberLevels(runtime, state.levels)
          yield* Effect.forkIn(drive(runtime), scope)
          return runtime
        })
      })

    const wake = (runtime: KeyRuntime) => Effect.sync(() => runtime.wake.unsafeOpen())

    /** Leaves discovery: the key's limits are known, so it may run `maxInFlight` calls. */
    const endDiscovery = (runtime: KeyRuntime) =>
      Effect.suspend(() => {
        if (!runtime.discovering) return Effect.void
        runtime.discovering = false
        runtime.maxInFlight = maxInFlight
        runtime.wake.unsafeOpen()
        return Effect.logInfo(`Sluice learned the limits of key "${runtime.key}"; up to ${maxInFlight} calls in flight`)
      })

    /**
     * Puts a waiter in its lane, shedding by the lane and queue bounds, in one
     * synchronous step with the check that the runtime is still live. Answers
     * `retired` (ask for a fresh runtime), the `Shed` of the waiter itself, or
     * the waiter it displaced (to fail), if any.
     */
    const publish = (runtime: KeyRuntime, waiter: Waiter):
      | { readonly _tag: "Retired" }
      | { readonly _tag: "Shed"; readonly error: Shed }
      | { readonly _tag: "Queued"; readonly displaced: Waiter | undefined } => {
      if (runtime.retired) return { _tag: "Retired" }
      const { lanes } = runtime
      if (lanes.size(waiter.priority) >= laneBounds[waiter.priority]) {
        return { _tag: "Shed", error: new Shed({ key: runtime.key, priority: waiter.priority, reason: "lane-full", waiting: lanes.size(waiter.priority) }) }
      }
      let displaced: Waiter | undefined
      if (lanes.total() >= maxWaiting) {
        const lowest = lanes.lowest()
        if (lowest === undefined || Priority.rank(lowest.priority) >= Priority.rank(waiter.priority)) {
          return { _tag: "Shed", error: new Shed({ key: runtime.key, priority: waiter.priority, reason: "queue-full", waiting: lanes.total() }) }
        }
        displaced = lowest
      }
      lanes.push(waiter)
      runtime.wake.unsafeOpen()
      return { _tag: "Queued", displaced }
    }

    const shedCounter = (key: string, priority: Priority.Class, reason: Shed["reason"]) =>
      Metric.increment(withTags(Metrics.shed, { key: labelOf(key), class: priority, reason }))

    /** Frees a permit's slot: its finalizer. */
    const release = (runtime: KeyRuntime) =>
      Effect.clockWith((clock) =>
        Effect.suspend(() => {
          runtime.held--
          runtime.taken--
          runtime.lastActive = clock.unsafeCurrentTimeMillis()
          runtime.wake.unsafeOpen()
          return Metric.set(runtime.metrics.inFlight, runtime.held)
        })
      )

    /** Gives back a granted permit nobody will use: its slot, and its reservation to the backend that granted it. */
    const abandon = (runtime: KeyRuntime, waiter: Waiter) =>
      Effect.zipRight(release(runtime), Effect.ignore(store.adjust(runtime.key, negate(waiter.amounts), waiter.origin)))

    const makePermit = (
      runtime: KeyRuntime,
      waiter: Pick<Waiter, "priority" | "amounts" | "arrivedAt" | "origin">,
      grantedAt: number
    ): Permit => {
      let charged = waiter.amounts
      return {
        key: runtime.key,
        priority: waiter.priority,
        reserved: waiter.amounts,
        waited: Duration.millis(Math.max(0, grantedAt - waiter.arrivedAt)),
        settle: (actual) =>
          Effect.gen(function*() {
            const amounts = yield* Cost.validate(runtime.key, actual)
            const delta = Cost.difference(amounts, charged)
            charged = amounts
            if (Cost.isEmpty(delta)) return
            // To the backend that granted the reservation: a fallback's take is refunded to the fallback.
            const levels = yield* store.adjust(runtime.key, delta, waiter.origin)
            yield* rememberLevels(runtime, levels)
            yield* wake(runtime)
          })
      }
    }

    /**
     * Reserves at once, with the slot the caller already took; undefined when
     * the cost must wait (the caller then queues). Runs uninterruptibly: the
     * slot and the reservation end up in a permit with its finalizer, or are
     * given back.
     */
    const tryAtOnce = (runtime: KeyRuntime, amounts: Cost.Amounts, priority: Priority.Class, now: number) =>
      Effect.gen(function*() {
        const answer = yield* Effect.either(store.reserve(runtime.key, amounts, { headroom: headroomFor(runtime, Priority.rank(priority), now).fraction }))
        if (Either.isLeft(answer)) {
          giveBackSlot(runtime)
          return yield* Effect.fail(answer.left)
        }
        const reservation = answer.right
        if (reservation._tag !== "Granted") {
          giveBackSlot(runtime)
          if (reservation._tag === "TooLarge") {
            runtime.capacities[reservation.dimension] = reservation.capacity
            return yield* new CostTooLarge({ key: runtime.key, dimension: reservation.dimension, amount: reservation.amount, capacity: reservation.capacity })
          }
          return undefined
        }
        runtime.held++
        yield* Effect.addFinalizer(() => release(runtime))
        yield* rememberLevels(runtime, reservation.levels)
        yield* Metric.set(runtime.metrics.inFlight, runtime.held)
        yield* Metric.increment(runtime.metrics.grants[priority])
        yield* Metric.update(runtime.metrics.waitSeconds[priority], 0)
        return makePermit(runtime, { priority, amounts, arrivedAt: now, origin: reservation.origin }, now)
      })

    /**
     * Waits for a published waiter's answer. Called inside the mask that
     * published it; only the wait itself is interruptible. On interruption the
     * waiter leaves its lane, or, granted in the meantime, gives its permit
     * back. At `maxWait` it leaves with `WaitTimeout` — unless it was granted
     * at that same instant, when it keeps the permit: its answer decides,
     * exactly once.
     */
    const awaitGrant = (
      runtime: KeyRuntime,
      waiter: Waiter,
      maxWait: Duration.Duration | undefined,
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
    ): Effect.Effect<Permit, RateLimiterError, Scope.Scope> =>
      Effect.gen(function*() {
        const waited = Deferred.await(waiter.deferred).pipe(
          Effect.withSpan("RateLimiter.wait", { attributes: { key: runtime.key, priority: waiter.priority }, captureStackTrace: false })
        )
        yield* restore(maxWait === undefined ? Effect.asVoid(waited) : Effect.asVoid(Effect.timeoutOption(waited, maxWait))).pipe(
          Effect.catchAll(() => Effect.void),
          Effect.onInterrupt(() =>
            Effect.suspend(() => {
              if (runtime.lanes.leave(waiter, "cancelled")) return Effect.zipRight(setDepth(runtime, waiter.priority), wake(runtime))
              return waiter.state === "granted" ? abandon(runtime, waiter) : Effect.void
            })
          )
        )
        if (maxWait !== undefined && runtime.lanes.leave(waiter, "failed")) {
          Deferred.unsafeDone(waiter.deferred, Exit.fail(new WaitTimeout({ key: runtime.key, priority: waiter.priority, maxWait })))
          runtime.wake.unsafeOpen()
          yield* setDepth(runtime, waiter.priority)
        }
        // The waiter has left its lane, so its answer is in: this does not wait.
        const grantedAt = yield* Deferred.await(waiter.deferred)
        yield* Effect.addFinalizer(() => release(runtime))
        return makePermit(runtime, waiter, grantedAt)
      })

    const acquire = (key: string, cost: Cost.Cost, acquireOptions?: AcquireOptions): Effect.Effect<Permit, RateLimiterError, Scope.Scope> =>
      Effect.gen(function*() {
        const amounts = yield* Cost.validate(key, cost)
        const priority = acquireOptions?.priority ?? "normal"
        const maxWait = acquireOptions?.maxWait === undefined ? undefined : Duration.decode(acquireOptions.maxWait)
        // Whatever is taken below (a slot, a place in a lane) is taken inside this
        // mask, in the same step as the code that gives it back is installed.
        return yield* Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            for (;;) {
              const runtime = yield* restore(runtimeFor(key))
              for (const dimension of Quota.dimensions) {
                const capacity = runtime.capacities[dimension]
                if (capacity !== undefined && amounts[dimension] > capacity) {
                  return yield* new CostTooLarge({ key, dimension, amount: amounts[dimension], capacity })
                }
              }
              const now = yield* Clock.currentTimeMillis
              // Reclaimed since runtimeFor answered: ask again.
              if (runtime.retired) continue
              runtime.lastSeen[Priority.rank(priority)] = now
              runtime.lastActive = now
              // Fast path: nobody is waiting and a slot is free, so there is no order to
              // keep: reserve here instead of handing over to the driver.
              if (runtime.lanes.total() === 0 && runtime.taken < runtime.maxInFlight) {
                runtime.taken++
                const permit = yield* tryAtOnce(runtime, amounts, priority, now)
                if (permit !== undefined) return permit
              }
              const waiter: Waiter = {
                seq: runtime.lanes.nextSeq(),
                priority,
                arrivedAt: now,
                amounts,
                state: "waiting",
                deferred: Deferred.unsafeMake<number, RateLimiterError>(FiberId.none),
                origin: undefined
              }
              const published = publish(runtime, waiter)
              if (published._tag === "Retired") continue
              if (published._tag === "Shed") {
                yield* shedCounter(key, priority, published.error.reason)
                return yield* published.error
              }
              if (published.displaced !== undefined) {
                const lowest = published.displaced
                yield* shedCounter(key, lowest.priority, "displaced")
                yield* failWaiter(runtime, lowest, new Shed({ key, priority: lowest.priority, reason: "displaced", waiting: runtime.lanes.total() }))
              }
              yield* setDepth(runtime, priority)
              // Only a call that waits gets a span: on the fast path a span would cost more than the grant.
              return yield* awaitGrant(runtime, waiter, maxWait, restore)
            }
          })
        )
      })

    const define = (key: string, input: Quota.QuotaInput) =>
      Effect.gen(function*() {
        const quota = yield* Quota.decode(input, key)
        const levels = yield* store.define(key, quota)
        defined.add(key)
        const refill: { [D in Quota.Dimension]?: number } = {}
        for (const dimension of Quota.dimensions) {
          const limit = quota[dimension]
          if (limit !== undefined) refill[dimension] = Quota.ratePerMilli(limit)
        }
        rates.set(key, refill)
        const runtime = runtimes.get(key)
        if (runtime !== undefined) {
          runtime.capacities = {}
          // A new quota: the drain starts again from its levels.
          runtime.drains = {}
          yield* rememberLevels(runtime, levels)
          yield* endDiscovery(runtime)
          yield* wake(runtime)
        }
      })

    const observe = (key: string, snapshot: RateLimitSnapshot) =>
      Effect.gen(function*() {
        // An absurd retry-after (a day, a typo in a proxy) would close the key for every caller.
        const bounded = snapshot.retryAfter === undefined ? snapshot : { ...snapshot, retryAfter: capped(snapshot.retryAfter, maxPause) }
        const observation = yield* store.observe(key, bounded)
        for (const lowered of observation.lowered) {
          // The store slowed the refill in proportion.
          const refill = rates.get(key)
          const rate = refill?.[lowered.dimension]
          if (refill !== undefined && rate !== undefined) refill[lowered.dimension] = rate * lowered.to / lowered.from
          yield* Effect.logWarning(
            `Sluice lowered the ${lowered.dimension} limit of key "${key}" from ${lowered.from} to ${lowered.to}, the provider's stated limit`
          )
        }
        if (snapshot.retryAfter !== undefined) yield* Metric.increment(withTags(Metrics.pauses, { key: labelOf(key) }))
        const runtime = runtimes.get(key)
        if (runtime === undefined) return
        yield* rememberLevels(runtime, observation.levels)
        if (Quota.dimensions.some((dimension) => observation.levels[dimension] !== undefined)) yield* endDiscovery(runtime)
        yield* wake(runtime)
      }).pipe(Effect.withSpan("RateLimiter.observe", { attributes: { key }, captureStackTrace: false }))

    const pause = (key: string, until: PauseUntil) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const duration = until instanceof Date ? Duration.millis(Math.max(0, until.getTime() - now)) : Duration.decode(until)
        yield* store.pause(key, capped(duration, maxPause))
        yield* Metric.increment(withTags(Metrics.pauses, { key: labelOf(key) }))
        const runtime = runtimes.get(key)
        if (runtime !== undefined) yield* wake(runtime)
      }).pipe(Effect.withSpan("RateLimiter.pause", { attributes: { key }, captureStackTrace: false }))

    const stats = (key: string) =>
      Effect.map(store.state(key), (state): KeyStats => {
        const runtime = runtimes.get(key)
        return {
          key,
          waiting: byClass((priority) => runtime?.lanes.size(priority) ?? 0),
          inFlight: runtime?.held ?? 0,
          maxInFlight: runtime?.maxInFlight ?? maxInFlight,
          discovering: runtime?.discovering ?? false,
          levels: state.levels,
          pausedFor: state.pausedFor,
          resident: runtime !== undefined
        }
      })

    const admitsIn = (key: string, cost: Cost.Cost, acquireOptions?: AcquireOptions) =>
      Effect.gen(function*() {
        const amounts = yield* Cost.validate(key, cost)
        const state = yield* store.state(key)
        const runtime = runtimes.get(key)
        const rank = Priority.rank(acquireOptions?.priority ?? "normal")
        return Duration.millis(admissionDelay(
          state,
          rates.get(key) ?? {},
          amounts,
          runtime === undefined ? [] : Priority.classes.filter((priority) => Priority.rank(priority) >= rank).map((priority) => runtime.lanes.queued(priority))
        ))
      })

    for (const [key, quota] of Object.entries(options.quotas ?? {})) yield* define(key, quota)
    yield* Effect.forkIn(Effect.forever(Effect.zipRight(Effect.sleep(timeLeftRefresh), refreshTimeLeft)), scope)

    return RateLimiter.of({
      acquire,
      withPermit: (key, cost, use, acquireOptions) => Effect.scoped(Effect.flatMap(acquire(key, cost, acquireOptions), use)),
      define,
      observe,
      pause,
      stats,
      admitsIn
    })
  })

/**
 * Pure: the milliseconds until `amounts` fit in a key whose store state is
 * `state` and whose buckets refill at `rates` (units per millisecond), behind
 * the `ahead` amounts already queued: the pause, or the slowest bucket's refill
 * past the queued and the new demand, whichever ends later. A bucket without a
 * known rate (a discovered key) refills its capacity in a minute.
 *
 * @example
 * ```ts
 * RateLimiter.admissionDelay(
 *   { levels: { inputTokens: { level: 1_000, capacity: 60_000 } }, pausedFor: Duration.zero },
 *   { inputTokens: 1 },
 *   Cost.amounts({ inputTokens: 3_000 })
 * ) // 2000: two seconds until 2,000 more tokens have refilled
 * ```
 */
export const admissionDelay = (
  state: LimiterStore.KeyState,
  rates: { readonly [D in Quota.Dimension]?: number },
  amounts: Cost.Amounts,
  ahead: ReadonlyArray<Cost.Amounts> = []
): number => {
  let delay = Math.max(0, Duration.toMillis(state.pausedFor))
  for (const dimension of Quota.dimensions) {
    const level = state.levels[dimension]
    if (level === undefined) continue
    let needed = amounts[dimension] - level.level
    for (const queued of ahead) needed += queued[dimension]
    if (needed <= 0) continue
    const rate = rates[dimension] ?? level.capacity / Duration.toMillis(LimiterStore.discoveredPeriod)
    delay = Math.max(delay, rate > 0 ? needed / rate : Number.POSITIVE_INFINITY)
  }
  return delay
}

/** A metric with tags, added data-first (the piped form loses the metric's input type). */
const withTags: <Type, In, Out>(metric: Metric.Metric<Type, In, Out>, tags: Record<string, string>) => Metric.Metric<Type, In, Out> = tagged

const negate = (amounts: Cost.Amounts): Cost.Delta => {
  const delta: { [D in Quota.Dimension]?: number } = {}
  for (const dimension of Quota.dimensions) if (amounts[dimension] !== 0) delta[dimension] = -amounts[dimension]
  return delta
}

/** A limiter over the `LimiterStore` in context. */
export const layer = (options: Options = {}): Layer.Layer<RateLimiter, Quota.InvalidQuota | LimiterStore.LimiterStoreError, LimiterStore.LimiterStore> =>
  Layer.scoped(RateLimiter, make(options))

/** A limiter with its own in-memory store: one process. */
export const layerMemory = (options: Options = {}): Layer.Layer<RateLimiter, Quota.InvalidQuota> =>
  layer(options).pipe(
    Layer.provide(LimiterStore.layerMemory),
    // The memory store never fails.
    Layer.catchAll((error) => error._tag === "InvalidQuota" ? Layer.fail(error) : Layer.die(error))
  )
