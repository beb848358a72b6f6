/**
 * The per-key runtime of a limiter: a key's lanes, its slot count, its driver
 * fiber, the hand-off of a grant to a waiter, the fast path that skips the
 * driver, the reclaim of an idle key, and its metric handles.
 *
 * The fast path: when nobody waits, a slot is free and the store lives in this
 * process (it registered a `SyncStore`), a grant is one synchronous step on the
 * key's state — its slot counts and the store's buckets, changed in place —
 * run in the same uninterruptible region that installs its release, with no
 * `Deferred`, no span, no fiber and no metric effect. A settlement and a
 * release are one such step each, and none of them wakes the driver while no
 * waiter needs it. The grant counter and the wait histogram are counted on the
 * spot (a field update in the metric's hook); the gauges (in flight, bucket
 * levels, time left) are read from the key's fields and the store every
 * {@link gaugeRefresh}, and on every event of a key that has waiters. Anything
 * else (a waiter ahead, no slot, a cost that must wait, a store in another
 * process) takes the path that can wait, unchanged.
 *
 * `RateLimiter.make` resolves its options into {@link Settings} and builds one
 * registry of keys with {@link make}; every input it needs (the store, the
 * scope its drivers live in, the settings, the metric labeller) is passed in,
 * and it imports nothing of the limiter's contract, so `RateLimiter.ts` reads
 * as types and constructors (as `@effect/sql` keeps `internal/client.ts`
 * behind `SqlClient.ts`). See the module docs of `RateLimiter.ts` and
 * `docs/limiter.md` for how the waiting works.
 */
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Cost from "../Cost.js"
import * as LimiterStore from "../LimiterStore.js"
import * as Metrics from "../Metrics.js"
import * as Priority from "../Priority.js"
import * as Quota from "../Quota.js"
import { CostTooLarge, type RateLimiterError, Shed, UnknownKey, WaitTimeout } from "../SluiceError.js"
import * as Drain from "./drain.js"
import { Lanes, type Waiter as LaneWaiter } from "./lanes.js"
import { type KeyMetrics, keyMetrics, shedCounter } from "./limiterMetrics.js"
import * as SyncStore from "./syncStore.js"

/** The limiter's options that govern a key's runtime, defaults applied and bounds enforced. */
export interface Settings {
  readonly maxInFlight: number
  readonly discover: boolean
  readonly laneBounds: Readonly<Record<Priority.Class, number>>
  readonly maxWaiting: number
  readonly headroom: number
  /** Milliseconds of refill every take leaves in each bucket (`transitMargin`). */
  readonly marginMillis: number
  readonly recentMillis: number
  readonly promoteAfter: Duration.Duration
  readonly idleMillis: number
}

/** What a registry of keys is made from. */
export interface Inputs {
  readonly store: LimiterStore.LimiterStore["Type"]
  /** Where the drivers are forked: the limiter's layer scope. */
  readonly scope: Scope.Scope
  readonly settings: Settings
  /** The `key` label of a key's metrics (bounded by `metricKeys`). */
  readonly labelOf: (key: string) => string
}

/**
 * A held permit: `RateLimiter.Permit`, restated because this module must not
 * import its contract (that would be a cycle); `RateLimiter.make` hands these
 * out as `Permit`s, so the compiler checks the two agree.
 */
export interface Permit {
  readonly key: string
  readonly priority: Priority.Class
  readonly reserved: Cost.Amounts
  readonly waited: Duration.Duration
  readonly settle: (actual: Cost.Cost) => Effect.Effect<void, Cost.InvalidCost | LimiterStore.LimiterStoreError>
}

/** A call waiting in one of a key's lanes for the driver to grant it. */
export interface Waiter extends LaneWaiter {
  /**
   * Completed in the same synchronous step as the waiter leaves its lane
   * (granted, failed, timed out), so a waiter that is no longer `waiting` always
   * has its answer: whoever loses a race reads it instead of guessing.
   */
  readonly deferred: Deferred.Deferred<number, RateLimiterError>
  /** The backend that granted it, from the store's `Granted`. */
  origin: LimiterStore.Origin | undefined
  /**
   * A `take`: reserved without an in-flight slot (it waits for none, except
   * the one discovery slot of a key whose limits are unknown) and holds none
   * once granted.
   */
  readonly slotless: boolean
}

/**
 * One resident key: its lanes, slot counts, discovery state and metric
 * handles. Mutated only in synchronous steps, by its driver, by an arrival (the
 * fast path, publishing a waiter) and by a permit's release.
 */
export interface KeyRuntime {
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
  /** Frees one permit's slot: the release of every permit of the key, built once. */
  readonly release: Effect.Effect<void>
  /**
   * `withPermit`'s continuations on the fast path, built once per key: each
   * frees the slot (at the clock of the fiber that ends the call) and passes
   * the outcome on.
   */
  readonly releasing: {
    readonly onFailure: (cause: Cause.Cause<unknown>) => Effect.Effect<never, unknown>
    readonly onSuccess: (value: unknown) => Effect.Effect<unknown>
  }
  /** The dimension the head waiter last waited for; undefined once granted. */
  blockedOn: Quota.Dimension | undefined
  readonly metrics: KeyMetrics
}

/**
 * How often every resident key's gauges are brought up to date: an idle key's
 * time left decays to +Inf, and an uncontended key's in-flight, bucket-level
 * and time-left gauges (which its calls leave alone) are read afresh.
 */
export const gaugeRefresh = Duration.seconds(5)

const negate = (amounts: Cost.Amounts): Cost.Delta => {
  const delta: { [D in Quota.Dimension]?: number } = {}
  for (const dimension of Quota.dimensions) if (amounts[dimension] !== 0) delta[dimension] = -amounts[dimension]
  return delta
}

/** The extra labels of the fast path's metric updates: none, one array for every call. */
const noLabels: ReadonlyArray<MetricLabel.MetricLabel> = []

/** The clock of a running fiber, read without an effect of its own. */
const clockOf = (fiber: { readonly currentDefaultServices: Context.Context<Clock.Clock> }) =>
  Context.get(fiber.currentDefaultServices, Clock.Clock)

/**
 * The time on the clock of the fiber running now, from a continuation of that
 * fiber (the runtime makes it current for every step it runs); `otherwise`
 * if none is (never, from a continuation).
 */
const nowOfCurrentFiber = (otherwise: number): number => {
  const fiber = Option.getOrUndefined(Fiber.getCurrentFiber())
  return fiber === undefined ? otherwise : clockOf(fiber).unsafeCurrentTimeMillis()
}

/** The keys of one limiter: their runtimes, and what `define` told it of their quotas. */
export interface Keys {
  /** The resident runtime of a key, if any. */
  readonly get: (key: string) => KeyRuntime | undefined
  /** Each defined key's refill per millisecond and dimension, for `admitsIn`; lowered by `observe`. */
  readonly rates: Map<string, { [D in Quota.Dimension]?: number }>
  /** `RateLimiter.acquire`: validates `cost`, waits until it is granted on `key`, returns its permit. */
  readonly acquire: (
    key: string,
    cost: Cost.Cost,
    options?: {
      readonly priority?: Priority.Class | undefined
      readonly maxWait?: Duration.DurationInput | undefined
    }
  ) => Effect.Effect<Permit, Cost.InvalidCost | RateLimiterError, Scope.Scope>
  /** `RateLimiter.withPermit`: `acquire`, `use`, release; a permit granted at once needs no `Scope`. */
  readonly withPermit: <A, E, R>(
    key: string,
    cost: Cost.Cost,
    use: (permit: Permit) => Effect.Effect<A, E, R>,
    options?: {
      readonly priority?: Priority.Class | undefined
      readonly maxWait?: Duration.DurationInput | undefined
    }
  ) => Effect.Effect<A, E | Cost.InvalidCost | RateLimiterError, R>
  /** `RateLimiter.take`: validates `cost`, waits until it is granted on `key`, keeps it charged; no slot held. */
  readonly take: (
    key: string,
    cost: Cost.Cost,
    options?: {
      readonly priority?: Priority.Class | undefined
      readonly maxWait?: Duration.DurationInput | undefined
    }
  ) => Effect.Effect<void, Cost.InvalidCost | RateLimiterError>
  /** Records a new quota the store accepted, and resets a resident runtime to it. */
  readonly defined: (key: string, quota: Quota.Quota, levels: LimiterStore.Levels) => Effect.Effect<void>
  /** Folds levels the store answered into a resident runtime (bucket gauges, capacities, drains). */
  readonly rememberLevels: (runtime: KeyRuntime, levels: LimiterStore.Levels) => Effect.Effect<void>
  /** Leaves discovery: the key's limits are known, so it may run `maxInFlight` calls. */
  readonly endDiscovery: (runtime: KeyRuntime) => Effect.Effect<void>
  /** Wakes a key's driver: something that could change its answer happened. */
  readonly wake: (runtime: KeyRuntime) => Effect.Effect<void>
  /** Brings every resident key's gauges up to date (every {@link gaugeRefresh}). */
  readonly refreshGauges: Effect.Effect<void>
}

/** A registry of keys over `inputs`; drivers are forked into `inputs.scope` on each key's first use. */
export const make = (inputs: Inputs): Keys => {
  const { labelOf, scope, settings, store } = inputs
  const {
    discover,
    headroom,
    idleMillis,
    laneBounds,
    marginMillis,
    maxInFlight,
    maxWaiting,
    promoteAfter,
    recentMillis
  } = settings
  /** The store's synchronous face, when it lives in this process: the fast path's. */
  const sync = SyncStore.of(store)

  const runtimes = new Map<string, KeyRuntime>()
  /** The keys given a quota by `define`: known, so never discovered. */
  const definedKeys = new Set<string>()
  /** Each defined key's refill per millisecond and dimension, for `admitsIn`. */
  const rates = new Map<string, { [D in Quota.Dimension]?: number }>()

  /** A bucket's refill per millisecond: its quota's, or a discovered key's capacity per minute. */
  const refillOf = (key: string, dimension: Quota.Dimension, capacity: number) =>
    rates.get(key)?.[dimension] ?? capacity / Duration.toMillis(LimiterStore.discoveredPeriod)

  /** Sets the time-left gauge of a bucket from its level and drain. */
  const setTimeLeft = (
    runtime: KeyRuntime,
    dimension: Quota.Dimension,
    level: number,
    capacity: number,
    now: number
  ) => {
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

  /** Folds levels the store answered into the runtime: capacities, bucket gauges, drains, time-left gauges. */
  const noteLevels = (runtime: KeyRuntime, levels: LimiterStore.Levels, now: number) => {
    for (const dimension of Quota.dimensions) {
      const level = levels[dimension]
      if (level === undefined) continue
      runtime.capacities[dimension] = level.capacity
      runtime.metrics.bucketLevel[dimension].unsafeUpdate(level.level, [])
      runtime.drains[dimension] = Drain.observe(
        runtime.drains[dimension],
        level.level,
        level.capacity,
        refillOf(runtime.key, dimension, level.capacity),
        now
      )
      setTimeLeft(runtime, dimension, level.level, level.capacity, now)
    }
  }

  // Synchronous: this runs twice per call, and a forEach of Metric.set effects cost a quarter of a grant.
  const rememberLevels = (runtime: KeyRuntime, levels: LimiterStore.Levels) =>
    Effect.clockWith((clock) => Effect.sync(() => noteLevels(runtime, levels, clock.unsafeCurrentTimeMillis())))

  /**
   * Wakes the driver when a waiter may gain from what just happened (a slot
   * freed, a refund). With no waiter there is nothing for it to do, and waking
   * it would cost a turn and a fresh sleep on every call; the next waiter's
   * arrival wakes it.
   */
  const wakeForWaiters = (runtime: KeyRuntime) => {
    if (runtime.lanes.total() > 0) runtime.wake.unsafeOpen()
  }

  /**
   * Every {@link gaugeRefresh}, the gauges of every resident key: its permits
   * in flight and, from a store in this process, its levels now (folded into
   * its drains as any reading is). For a store elsewhere, the time left as if
   * nothing had happened since the key's last event: an idle key's drain
   * decays and its gauge goes back to +Inf instead of keeping its last busy
   * value.
   */
  const refreshGauges = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = clock.unsafeCurrentTimeMillis()
      for (const runtime of runtimes.values()) {
        runtime.metrics.inFlight.unsafeUpdate(runtime.held, [])
        if (sync !== undefined) {
          noteLevels(runtime, sync.levels(runtime.key, now), now)
          continue
        }
        for (const dimension of Quota.dimensions) {
          const drain = runtime.drains[dimension]
          const capacity = runtime.capacities[dimension]
          if (drain === undefined || capacity === undefined) continue
          setTimeLeft(
            runtime,
            dimension,
            Drain.levelAt(drain, capacity, refillOf(runtime.key, dimension, capacity), now),
            capacity,
            now
          )
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
  const headroomFor = (
    runtime: KeyRuntime,
    rank: number,
    now: number
  ): { readonly fraction: number; readonly until: number } => {
    let until = Number.NEGATIVE_INFINITY
    for (let higher = Math.floor(rank) + 1; higher <= Priority.topRank; higher++) {
      if (runtime.lanes.size(Priority.fromRank(higher)) > 0) {
        return { fraction: headroom, until: Number.POSITIVE_INFINITY }
      }
      const seen = runtime.lastSeen[higher]!
      if (now - seen < recentMillis) until = Math.max(until, seen + recentMillis)
    }
    return until > now ? { fraction: headroom, until } : { fraction: 0, until: Number.POSITIVE_INFINITY }
  }

  /** `headroomFor`'s fraction alone, with nothing allocated: the fast path's. */
  const headroomFraction = (runtime: KeyRuntime, rank: number, now: number): number => {
    for (let higher = Math.floor(rank) + 1; higher <= Priority.topRank; higher++) {
      if (runtime.lanes.size(Priority.fromRank(higher)) > 0 || now - runtime.lastSeen[higher]! < recentMillis) {
        return headroom
      }
    }
    return 0
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

  /** Whether a waiter needs a free slot to be granted: a permit does, a take only on a key in discovery. */
  const needsSlot = (runtime: KeyRuntime, waiter: Waiter) => !waiter.slotless || runtime.discovering

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
    if (now < reclaimAt) return Effect.as(sleepOrWake(runtime, reclaimAt - now), true)
    if (runtime.taken === 0 && runtime.lanes.total() === 0) {
      runtime.retired = true
      if (runtimes.get(runtime.key) === runtime) runtimes.delete(runtime.key)
      return Effect.succeed(false)
    }
    // A permit is held past `idleAfter`; its release (which sets `lastActive`) does not
    // wake an idle driver, so look again after another `idleAfter`.
    return Effect.as(sleepOrWake(runtime, idleMillis), true)
  }

  /** One turn of a key's driver: serve the head waiter, or sleep until it can be served. Answers whether the driver goes on. */
  const turn = (runtime: KeyRuntime): Effect.Effect<boolean> =>
    Effect.gen(function*() {
      yield* runtime.wake.close
      const now = yield* Clock.currentTimeMillis
      const head = runtime.lanes.head(now, promoteAfter)
      if (head === undefined) return yield* idle(runtime, now)
      // A release opens the latch, so this wakes when a slot frees. A take needs none, but the
      // one slot of a key in discovery.
      if (runtime.taken >= runtime.maxInFlight && needsSlot(runtime, head.waiter)) {
        return yield* Effect.as(runtime.wake.await, true)
      }
      runtime.taken++
      const room = headroomFor(runtime, head.rank, now)
      const reservation = yield* Effect.either(
        store.reserve(runtime.key, head.waiter.amounts, { headroom: room.fraction, margin: marginMillis })
      )
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
            new CostTooLarge({
              key: runtime.key,
              dimension: answer.dimension,
              amount: answer.amount,
              capacity: answer.capacity
            })
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
      // A take keeps its reservation and gives its slot back in the same step: it holds none.
      if (waiter.slotless) driverGivesBack(runtime)
      else runtime.held++
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
              yield* Effect.logError(
                `Sluice limiter driver for key "${runtime.key}" failed; failing its waiters`,
                cause
              )
              for (const waiter of runtime.lanes.all()) {
                if (runtime.lanes.leave(waiter, "failed")) {
                  Deferred.unsafeDone(waiter.deferred, Exit.failCause(cause as never))
                }
              }
              return true
            })
          )
        )
    })

  const newRuntime = (key: string, known: boolean, now: number): KeyRuntime => {
    const size = known || !discover ? maxInFlight : 1
    const label = labelOf(key)
    const runtime: KeyRuntime = {
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
      release: Effect.clockWith((clock) => Effect.sync(() => releaseNow(runtime, clock.unsafeCurrentTimeMillis()))),
      releasing: {
        onFailure: (cause) => {
          releaseNow(runtime, nowOfCurrentFiber(runtime.lastActive))
          return Effect.failCause(cause)
        },
        onSuccess: (value) => {
          releaseNow(runtime, nowOfCurrentFiber(runtime.lastActive))
          return Effect.succeed(value)
        }
      },
      blockedOn: undefined,
      metrics: keyMetrics(label)
    }
    return runtime
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
        const known = definedKeys.has(key) ||
          Quota.dimensions.some((dimension) => state.levels[dimension] !== undefined)
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
    | { readonly _tag: "Queued"; readonly displaced: Waiter | undefined } =>
  {
    if (runtime.retired) return { _tag: "Retired" }
    const { lanes } = runtime
    if (lanes.size(waiter.priority) >= laneBounds[waiter.priority]) {
      return {
        _tag: "Shed",
        error: new Shed({
          key: runtime.key,
          priority: waiter.priority,
          reason: "lane-full",
          waiting: lanes.size(waiter.priority)
        })
      }
    }
    let displaced: Waiter | undefined
    if (lanes.total() >= maxWaiting) {
      const lowest = lanes.lowest()
      if (lowest === undefined || Priority.rank(lowest.priority) >= Priority.rank(waiter.priority)) {
        return {
          _tag: "Shed",
          error: new Shed({ key: runtime.key, priority: waiter.priority, reason: "queue-full", waiting: lanes.total() })
        }
      }
      displaced = lowest
    }
    lanes.push(waiter)
    runtime.wake.unsafeOpen()
    return { _tag: "Queued", displaced }
  }

  /**
   * Frees a permit's slot at `now`, in one synchronous step: every permit's
   * release (`runtime.release`). With waiters, the driver wakes and the
   * in-flight gauge follows; without, both are left to the next arrival and
   * the gauge refresh.
   */
  const releaseNow = (runtime: KeyRuntime, now: number) => {
    runtime.held--
    runtime.taken--
    runtime.lastActive = now
    if (runtime.lanes.total() > 0) {
      runtime.metrics.inFlight.unsafeUpdate(runtime.held, [])
      runtime.wake.unsafeOpen()
    }
  }

  /** Gives back a granted permit nobody will use: its slot, and its reservation to the backend that granted it. */
  const abandon = (runtime: KeyRuntime, waiter: Waiter) => {
    const refund = Effect.ignore(store.adjust(runtime.key, negate(waiter.amounts), waiter.origin))
    return waiter.slotless ? Effect.zipRight(refund, wake(runtime)) : Effect.zipRight(runtime.release, refund)
  }

  const makePermit = (
    runtime: KeyRuntime,
    waiter: Pick<Waiter, "priority" | "amounts" | "arrivedAt" | "origin">,
    grantedAt: number
  ): Permit => {
    return {
      key: runtime.key,
      priority: waiter.priority,
      reserved: waiter.amounts,
      waited: grantedAt > waiter.arrivedAt ? Duration.millis(grantedAt - waiter.arrivedAt) : Duration.zero,
      settle: settleFor(runtime, waiter.amounts, waiter.origin)
    }
  }

  /**
   * A permit's `settle`, correcting from what it charged last (first the
   * reservation). Built by a function rather than written in the permit's
   * literal: a function written as a property is named on every call under
   * esbuild's `keepNames` (tsx, the bench), a `defineProperty` per permit.
   */
  const settleFor = (
    runtime: KeyRuntime,
    reserved: Cost.Amounts,
    origin: LimiterStore.Origin | undefined
  ): Permit["settle"] => {
    let charged = reserved
    return (actual) =>
      Effect.clockWith((clock): Effect.Effect<void, Cost.InvalidCost | LimiterStore.LimiterStoreError> => {
        const invalid = Cost.invalid(runtime.key, actual)
        if (invalid !== undefined) return Effect.fail(invalid)
        const next = Cost.amounts(actual)
        const delta = Cost.difference(next, charged)
        charged = next
        if (Cost.isEmpty(delta)) return Effect.void
        if (sync !== undefined && runtime.lanes.total() === 0) {
          // One synchronous step, as the grant was; the gauges are left to their refresh.
          sync.adjust(runtime.key, delta, clock.unsafeCurrentTimeMillis())
          return Effect.void
        }
        // To the backend that granted the reservation: a fallback's take is refunded to the fallback.
        return Effect.map(store.adjust(runtime.key, delta, origin), (levels) => {
          noteLevels(runtime, levels, clock.unsafeCurrentTimeMillis())
          wakeForWaiters(runtime)
        })
      })
  }

  /**
   * The fast path, one synchronous step: nobody waits on the key, a slot is
   * free and the store, in this process, grants `amounts` at once. Takes the
   * slot and the reservation and answers the permit, counted in the key's
   * metric handles; undefined, with nothing taken, when the call must take the
   * path that can wait (no resident runtime yet, a waiter ahead, no slot, a
   * cost too large or one that must wait, a store in another process). The
   * caller installs `runtime.release` in the same uninterruptible region.
   */
  const grantNow = (
    runtime: KeyRuntime | undefined,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    now: number
  ): Permit | undefined => {
    if (sync === undefined || runtime === undefined || runtime.retired) return undefined
    if (runtime.lanes.total() !== 0 || runtime.taken >= runtime.maxInFlight) return undefined
    const rank = Priority.rank(priority)
    runtime.lastSeen[rank] = now
    runtime.lastActive = now
    // A cost too large for a bucket is refused here too (TooLarge): the path that can wait says so.
    if (sync.reserve(runtime.key, amounts, headroomFraction(runtime, rank, now), marginMillis, now) !== true) {
      return undefined
    }
    runtime.taken++
    runtime.held++
    // Counted on the spot: a test or a scrape right after the call reads it.
    runtime.metrics.grants[priority].unsafeUpdate(1, noLabels)
    runtime.metrics.waitSeconds[priority].unsafeUpdate(0, noLabels)
    return {
      key: runtime.key,
      priority,
      reserved: amounts,
      waited: Duration.zero,
      settle: settleFor(runtime, amounts, undefined)
    }
  }

  /**
   * `take`'s fast path, one synchronous step: nobody waits on the key and the
   * store, in this process, grants `amounts` at once. The reservation stays,
   * no slot is taken (only a key in discovery needs its one slot free), the
   * grant is counted in the key's metric handles. False, with nothing
   * reserved, when the take must go the path that can wait.
   */
  const takeNow = (
    runtime: KeyRuntime | undefined,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    now: number
  ): boolean => {
    if (sync === undefined || runtime === undefined || runtime.retired || runtime.lanes.total() !== 0) return false
    if (runtime.discovering && runtime.taken >= runtime.maxInFlight) return false
    const rank = Priority.rank(priority)
    runtime.lastSeen[rank] = now
    runtime.lastActive = now
    if (sync.reserve(runtime.key, amounts, headroomFraction(runtime, rank, now), marginMillis, now) !== true) {
      return false
    }
    runtime.metrics.grants[priority].unsafeUpdate(1, noLabels)
    runtime.metrics.waitSeconds[priority].unsafeUpdate(0, noLabels)
    return true
  }

  /**
   * Reserves at once, with the slot the caller already took; undefined when
   * the cost must wait (the caller then queues). Runs uninterruptibly: the
   * slot and the reservation end up in a permit with its finalizer, or are
   * given back.
   */
  const tryAtOnce = (runtime: KeyRuntime, amounts: Cost.Amounts, priority: Priority.Class, now: number) =>
    Effect.gen(function*() {
      const reservation = yield* reserveAtOnce(runtime, amounts, priority, now)
      if (reservation === undefined) return undefined
      runtime.held++
      yield* Effect.addFinalizer(() => runtime.release)
      yield* rememberLevels(runtime, reservation.levels)
      yield* Metric.set(runtime.metrics.inFlight, runtime.held)
      yield* Metric.increment(runtime.metrics.grants[priority])
      yield* Metric.update(runtime.metrics.waitSeconds[priority], 0)
      return makePermit(runtime, { priority, amounts, arrivedAt: now, origin: reservation.origin }, now)
    })

  /**
   * `tryAtOnce` for a take: true when reserved, the reservation kept and the
   * slot (taken for the store's call only) given back.
   */
  const takeAtOnce = (runtime: KeyRuntime, amounts: Cost.Amounts, priority: Priority.Class, now: number) =>
    Effect.gen(function*() {
      const reservation = yield* reserveAtOnce(runtime, amounts, priority, now)
      if (reservation === undefined) return false
      // Given back without waking the driver unless a waiter may gain: a wake would cost it a turn.
      runtime.taken--
      wakeForWaiters(runtime)
      yield* rememberLevels(runtime, reservation.levels)
      yield* Metric.increment(runtime.metrics.grants[priority])
      yield* Metric.update(runtime.metrics.waitSeconds[priority], 0)
      return true
    })

  /**
   * The store's answer to reserving `amounts` now, with the slot the caller
   * took: the grant (the slot still taken), or undefined when the cost must
   * wait, or the failure (the slot given back in both cases).
   */
  const reserveAtOnce = (runtime: KeyRuntime, amounts: Cost.Amounts, priority: Priority.Class, now: number) =>
    Effect.gen(function*() {
      const answer = yield* Effect.either(
        store.reserve(runtime.key, amounts, {
          headroom: headroomFor(runtime, Priority.rank(priority), now).fraction,
          margin: marginMillis
        })
      )
      if (Either.isLeft(answer)) {
        giveBackSlot(runtime)
        return yield* Effect.fail(answer.left)
      }
      const reservation = answer.right
      if (reservation._tag !== "Granted") {
        giveBackSlot(runtime)
        if (reservation._tag === "TooLarge") {
          runtime.capacities[reservation.dimension] = reservation.capacity
          return yield* new CostTooLarge({
            key: runtime.key,
            dimension: reservation.dimension,
            amount: reservation.amount,
            capacity: reservation.capacity
          })
        }
        return undefined
      }
      return reservation
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
    Effect.flatMap(
      awaitAnswer(runtime, waiter, maxWait, restore),
      (grantedAt) => Effect.as(Effect.addFinalizer(() => runtime.release), makePermit(runtime, waiter, grantedAt))
    )

  /** `awaitGrant`'s wait: the instant the waiter was granted, or its error; for a take, all there is. */
  const awaitAnswer = (
    runtime: KeyRuntime,
    waiter: Waiter,
    maxWait: Duration.Duration | undefined,
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ): Effect.Effect<number, RateLimiterError> =>
    Effect.gen(function*() {
      const waited = Deferred.await(waiter.deferred).pipe(
        Effect.withSpan("RateLimiter.wait", {
          attributes: { key: runtime.key, priority: waiter.priority },
          captureStackTrace: false
        })
      )
      yield* restore(
        maxWait === undefined ? Effect.asVoid(waited) : Effect.asVoid(Effect.timeoutOption(waited, maxWait))
      ).pipe(
        Effect.catchAll(() => Effect.void),
        Effect.onInterrupt(() =>
          Effect.suspend(() => {
            if (runtime.lanes.leave(waiter, "cancelled")) {
              return Effect.zipRight(setDepth(runtime, waiter.priority), wake(runtime))
            }
            return waiter.state === "granted" ? abandon(runtime, waiter) : Effect.void
          })
        )
      )
      if (maxWait !== undefined && runtime.lanes.leave(waiter, "failed")) {
        Deferred.unsafeDone(
          waiter.deferred,
          Exit.fail(new WaitTimeout({ key: runtime.key, priority: waiter.priority, maxWait }))
        )
        runtime.wake.unsafeOpen()
        yield* setDepth(runtime, waiter.priority)
      }
      // The waiter has left its lane, so its answer is in: this does not wait.
      return yield* Deferred.await(waiter.deferred)
    })

  /**
   * The path that can wait: creates the runtime, reserves at once when it can
   * (through the store's interface), else queues a waiter for the driver.
   */
  const acquireOrWait = (
    key: string,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    maxWait: Duration.Duration | undefined
  ): Effect.Effect<Permit, RateLimiterError, Scope.Scope> =>
    // Whatever is taken below (a slot, a place in a lane) is taken inside this
    // mask, in the same step as the code that gives it back is installed.
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        for (;;) {
          const runtime = yield* restore(runtimeFor(key))
          const large = tooLarge(runtime, amounts)
          if (large !== undefined) return yield* large
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
          const waiter = yield* enqueue(runtime, amounts, priority, now, false)
          if (waiter === undefined) continue
          // Only a call that waits gets a span: on the fast path a span would cost more than the grant.
          return yield* awaitGrant(runtime, waiter, maxWait, restore)
        }
      })
    )

  /**
   * Publishes a waiter for `amounts` in its lane, or fails with its `Shed`
   * (failing the waiter it displaced, if any). Undefined when the runtime was
   * reclaimed meanwhile: ask for a fresh one. Runs inside the caller's mask.
   */
  const enqueue = (
    runtime: KeyRuntime,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    now: number,
    slotless: boolean
  ): Effect.Effect<Waiter | undefined, Shed> =>
    Effect.gen(function*() {
      const key = runtime.key
      const waiter: Waiter = {
        seq: runtime.lanes.nextSeq(),
        priority,
        arrivedAt: now,
        amounts,
        state: "waiting",
        deferred: Deferred.unsafeMake<number, RateLimiterError>(FiberId.none),
        origin: undefined,
        slotless
      }
      const published = publish(runtime, waiter)
      if (published._tag === "Retired") return undefined
      if (published._tag === "Shed") {
        yield* shedCounter(labelOf(key), priority, published.error.reason)
        return yield* published.error
      }
      if (published.displaced !== undefined) {
        const lowest = published.displaced
        yield* shedCounter(labelOf(key), lowest.priority, "displaced")
        yield* failWaiter(
          runtime,
          lowest,
          new Shed({ key, priority: lowest.priority, reason: "displaced", waiting: runtime.lanes.total() })
        )
      }
      yield* setDepth(runtime, priority)
      return waiter
    })

  /** Fails when a bucket's known capacity is below the cost: it could never be granted. */
  const tooLarge = (runtime: KeyRuntime, amounts: Cost.Amounts): CostTooLarge | undefined => {
    for (const dimension of Quota.dimensions) {
      const capacity = runtime.capacities[dimension]
      if (capacity !== undefined && amounts[dimension] > capacity) {
        return new CostTooLarge({ key: runtime.key, dimension, amount: amounts[dimension], capacity })
      }
    }
    return undefined
  }

  /**
   * `take`'s path that can wait: as `acquireOrWait`, for a reservation that
   * holds no slot. With nobody waiting it reserves at once through the store's
   * interface (a slot taken for the store call only, and only on a key in
   * discovery must one be free); else it queues a slotless waiter for the
   * driver, which grants it in its class's order and gives its slot back in
   * the same step.
   */
  const takeOrWait = (
    key: string,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    maxWait: Duration.Duration | undefined
  ): Effect.Effect<void, RateLimiterError> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        for (;;) {
          const runtime = yield* restore(runtimeFor(key))
          const large = tooLarge(runtime, amounts)
          if (large !== undefined) return yield* large
          const now = yield* Clock.currentTimeMillis
          if (runtime.retired) continue
          runtime.lastSeen[Priority.rank(priority)] = now
          runtime.lastActive = now
          if (runtime.lanes.total() === 0 && (!runtime.discovering || runtime.taken < runtime.maxInFlight)) {
            runtime.taken++
            if (yield* takeAtOnce(runtime, amounts, priority, now)) return
          }
          const waiter = yield* enqueue(runtime, amounts, priority, now, true)
          if (waiter === undefined) continue
          yield* awaitAnswer(runtime, waiter, maxWait, restore)
          return
        }
      })
    )

  /** The options of one acquisition, as `RateLimiter.AcquireOptions`. */
  type Options = {
    readonly priority?: Priority.Class | undefined
    readonly maxWait?: Duration.DurationInput | undefined
  } | undefined

  const maxWaitOf = (options: Options) => options?.maxWait === undefined ? undefined : Duration.decode(options.maxWait)

  // Both run as few fiber steps as an uncontended call allows. The grant is made in the mask's own step:
  // `uninterruptibleMask` calls its function synchronously, inside the step that made the fiber
  // uninterruptible, with that fiber current (`Fiber.getCurrentFiber`), so no step of its own reads the
  // fiber and no interrupt can land between the grant and the code that gives it back.
  const acquire = (
    key: string,
    cost: Cost.Cost,
    options: Options
  ): Effect.Effect<Permit, Cost.InvalidCost | RateLimiterError, Scope.Scope> =>
    Effect.uninterruptibleMask((restore) => {
      const fiber = Option.getOrUndefined(Fiber.getCurrentFiber())
      const invalid = Cost.invalid(key, cost)
      if (invalid !== undefined) return Effect.fail(invalid)
      const amounts = Cost.amounts(cost)
      const priority = options?.priority ?? "normal"
      const runtime = runtimes.get(key)
      const permit = fiber === undefined
        ? undefined
        : grantNow(runtime, amounts, priority, clockOf(fiber).unsafeCurrentTimeMillis())
      if (permit === undefined) {
        if (fiber !== undefined && remoteReady(runtime, amounts)) {
          const scope = Context.unsafeGet(fiber.currentContext, Scope.Scope)
          return grantRemote(
            runtime,
            amounts,
            priority,
            clockOf(fiber).unsafeCurrentTimeMillis(),
            (granted) => Effect.as(Scope.addFinalizer(scope, runtime.release), granted),
            () => restore(acquireOrWait(key, amounts, priority, maxWaitOf(options)))
          )
        }
        return restore(acquireOrWait(key, amounts, priority, maxWaitOf(options)))
      }
      // The caller's scope (`acquire` requires one), without an effect to read it.
      const scope = Context.unsafeGet(fiber!.currentContext, Scope.Scope)
      return Effect.as(Scope.addFinalizer(scope, runtime!.release), permit)
    })

  const withPermit = <A, E, R>(
    key: string,
    cost: Cost.Cost,
    use: (permit: Permit) => Effect.Effect<A, E, R>,
    options: Options
  ): Effect.Effect<A, E | Cost.InvalidCost | RateLimiterError, R> =>
    // As `acquireUseRelease`, with the release a synchronous step of the same region as the grant.
    Effect.uninterruptibleMask((restore) => {
      const fiber = Option.getOrUndefined(Fiber.getCurrentFiber())
      const invalid = Cost.invalid(key, cost)
      if (invalid !== undefined) return Effect.fail(invalid)
      const amounts = Cost.amounts(cost)
      const priority = options?.priority ?? "normal"
      const runtime = runtimes.get(key)
      const clock = fiber === undefined ? undefined : clockOf(fiber)
      const permit = clock === undefined
        ? undefined
        : grantNow(runtime, amounts, priority, clock.unsafeCurrentTimeMillis())
      if (permit === undefined) {
        const waiting = () =>
          restore(Effect.scoped(Effect.flatMap(acquireOrWait(key, amounts, priority, maxWaitOf(options)), use)))
        if (clock !== undefined && remoteReady(runtime, amounts)) {
          return grantRemote(
            runtime,
            amounts,
            priority,
            clock.unsafeCurrentTimeMillis(),
            (granted) => usePermit(runtime, granted, use, restore),
            waiting
          )
        }
        return waiting()
      }
      return usePermit(runtime!, permit, use, restore)
    })

  /**
   * `withPermit`'s use of a permit granted at once, inside its region: `use`
   * builds its effect here (a throw gives the slot back as a defect), runs
   * interruptibly, and the slot is given back in the same step as its exit.
   */
  const usePermit = <A, E, R>(
    runtime: KeyRuntime,
    permit: Permit,
    use: (permit: Permit) => Effect.Effect<A, E, R>,
    restore: <A1, E1, R1>(effect: Effect.Effect<A1, E1, R1>) => Effect.Effect<A1, E1, R1>
  ): Effect.Effect<A, E, R> => {
    let used: Effect.Effect<A, E, R>
    try {
      used = use(permit)
    } catch (defect) {
      releaseNow(runtime, nowOfCurrentFiber(runtime.lastActive))
      return Effect.die(defect)
    }
    return Effect.matchCauseEffect(
      restore(used),
      runtime.releasing as {
        readonly onFailure: (cause: Cause.Cause<E>) => Effect.Effect<never, E>
        readonly onSuccess: (value: A) => Effect.Effect<A>
      }
    )
  }

  /**
   * Whether a call on a store in another process may take {@link grantRemote}:
   * a resident key nobody waits on, a slot free, and no known bucket too small
   * for the cost.
   */
  const remoteReady = (runtime: KeyRuntime | undefined, amounts: Cost.Amounts): runtime is KeyRuntime =>
    sync === undefined && runtime !== undefined && !runtime.retired && runtime.lanes.total() === 0 &&
    runtime.taken < runtime.maxInFlight && tooLarge(runtime, amounts) === undefined

  /**
   * The fast path on a store in another process (no synchronous face): takes
   * the slot, makes one store call, and handles its answer in one synchronous
   * step. Granted: the permit, counted in the key's metric handles, goes to
   * `granted`, which installs its release in that same step. Otherwise the
   * slot is given back (the driver woken only when a waiter may gain) and the
   * call fails (`CostTooLarge`, a store error) or, when the cost must wait,
   * goes `waiting` (the path that can wait). Runs inside the caller's
   * uninterruptible region: the store's call is not interrupted, so its answer
   * is always read and the slot always accounted for.
   */
  const grantRemote = <A, E, R>(
    runtime: KeyRuntime,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    now: number,
    granted: (permit: Permit) => Effect.Effect<A, E, R>,
    waiting: () => Effect.Effect<A, E | Cost.InvalidCost | RateLimiterError, R>
  ): Effect.Effect<A, E | Cost.InvalidCost | RateLimiterError, R> => {
    const rank = Priority.rank(priority)
    runtime.lastSeen[rank] = now
    runtime.lastActive = now
    runtime.taken++
    return Effect.matchEffect(
      store.reserve(runtime.key, amounts, { headroom: headroomFraction(runtime, rank, now), margin: marginMillis }),
      {
        onFailure: (error) => {
          runtime.taken--
          wakeForWaiters(runtime)
          return Effect.fail(error)
        },
        onSuccess: (reservation): Effect.Effect<A, E | Cost.InvalidCost | RateLimiterError, R> => {
          if (reservation._tag === "Granted") {
            runtime.held++
            noteLevels(runtime, reservation.levels, nowOfCurrentFiber(now))
            runtime.metrics.grants[priority].unsafeUpdate(1, noLabels)
            runtime.metrics.waitSeconds[priority].unsafeUpdate(0, noLabels)
            return granted(makePermit(runtime, { priority, amounts, arrivedAt: now, origin: reservation.origin }, now))
          }
          runtime.taken--
          wakeForWaiters(runtime)
          if (reservation._tag === "TooLarge") {
            runtime.capacities[reservation.dimension] = reservation.capacity
            return Effect.fail(
              new CostTooLarge({
                key: runtime.key,
                dimension: reservation.dimension,
                amount: reservation.amount,
                capacity: reservation.capacity
              })
            )
          }
          return waiting()
        }
      }
    )
  }

  // One synchronous step when the fast path grants: no mask is needed, since nothing is held that an
  // interrupt could separate from its release (the reservation stays charged, as a take's should).
  const take = (
    key: string,
    cost: Cost.Cost,
    options: Options
  ): Effect.Effect<void, Cost.InvalidCost | RateLimiterError> =>
    Effect.withFiberRuntime((fiber) => {
      const invalid = Cost.invalid(key, cost)
      if (invalid !== undefined) return Effect.fail(invalid)
      const amounts = Cost.amounts(cost)
      const priority = options?.priority ?? "normal"
      const runtime = runtimes.get(key)
      const now = clockOf(fiber).unsafeCurrentTimeMillis()
      if (takeNow(runtime, amounts, priority, now)) return Effect.void
      const maxWait = maxWaitOf(options)
      if (
        sync === undefined && runtime !== undefined && !runtime.retired && !runtime.discovering &&
        runtime.lanes.total() === 0 && tooLarge(runtime, amounts) === undefined
      ) {
        return takeRemote(runtime, amounts, priority, now, maxWait)
      }
      return takeOrWait(key, amounts, priority, maxWait)
    })

  /**
   * A take on a resident key of a store in another process when nobody waits:
   * one store call and a synchronous step on its answer (no slot: the key is
   * not in discovery). A cost that must wait goes the path that can wait.
   * The store's call is not interrupted, so its answer is always read.
   */
  const takeRemote = (
    runtime: KeyRuntime,
    amounts: Cost.Amounts,
    priority: Priority.Class,
    now: number,
    maxWait: Duration.Duration | undefined
  ): Effect.Effect<void, RateLimiterError> => {
    const rank = Priority.rank(priority)
    runtime.lastSeen[rank] = now
    runtime.lastActive = now
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        Effect.either(
          store.reserve(runtime.key, amounts, { headroom: headroomFraction(runtime, rank, now), margin: marginMillis })
        ),
        (answer): Effect.Effect<void, RateLimiterError> => {
          if (Either.isLeft(answer)) return Effect.fail(answer.left)
          const reservation = answer.right
          switch (reservation._tag) {
            case "Granted": {
              noteLevels(runtime, reservation.levels, nowOfCurrentFiber(now))
              runtime.metrics.grants[priority].unsafeUpdate(1, noLabels)
              runtime.metrics.waitSeconds[priority].unsafeUpdate(0, noLabels)
              return Effect.void
            }
            case "TooLarge": {
              runtime.capacities[reservation.dimension] = reservation.capacity
              return Effect.fail(
                new CostTooLarge({
                  key: runtime.key,
                  dimension: reservation.dimension,
                  amount: reservation.amount,
                  capacity: reservation.capacity
                })
              )
            }
            case "Wait":
              return restore(takeOrWait(runtime.key, amounts, priority, maxWait))
          }
        }
      )
    )
  }

  const defined = (key: string, quota: Quota.Quota, levels: LimiterStore.Levels) =>
    Effect.gen(function*() {
      definedKeys.add(key)
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

  return {
    get: (key) => runtimes.get(key),
    rates,
    acquire,
    withPermit,
    take,
    defined,
    rememberLevels,
    endDiscovery,
    wake,
    refreshGauges
  }
}
