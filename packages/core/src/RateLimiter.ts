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
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Cost from "./Cost.js"
import * as KeyRuntime from "./internal/keyRuntime.js"
import * as LimiterMetrics from "./internal/limiterMetrics.js"
import { withSpan } from "./internal/tracing.js"
import * as LimiterStore from "./LimiterStore.js"
import * as Priority from "./Priority.js"
import * as Quota from "./Quota.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"
import type { RateLimiterError } from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

// Defined in `SluiceError` with every error a call can fail with; named here as the limiter's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  CostTooLarge,
  /**
   * @since 0.1.0
   * @category errors
   */
  Shed,
  /**
   * @since 0.1.0
   * @category errors
   */
  UnknownKey,
  /**
   * @since 0.1.0
   * @category errors
   */
  WaitTimeout
} from "./SluiceError.js"
export type {
  /**
   * @since 0.1.0
   * @category errors
   */
  RateLimiterError
} from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Permit and service
// ---------------------------------------------------------------------------

/**
 * Capacity held for one call. Release (closing its scope) frees the in-flight
 * slot but keeps the reservation; `settle` corrects the reservation to what the
 * call really used.
 *
 * @since 0.1.0
 * @category models
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

/**
 * Options of one acquisition.
 *
 * @since 0.1.0
 * @category models
 */
export interface AcquireOptions {
  /** The class to wait in; `normal` when absent. */
  readonly priority?: Priority.Class | undefined
  /** Give up with `WaitTimeout` when not granted within this long. Default: no deadline. */
  readonly maxWait?: Duration.DurationInput | undefined
}

/**
 * What the limiter knows of a key right now.
 *
 * @since 0.1.0
 * @category models
 */
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

/**
 * A time a pause lasts until: a `Date`, or a duration from now.
 *
 * @since 0.1.0
 * @category models
 */
export type PauseUntil = Date | Duration.DurationInput

/**
 * The limiter service.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimiter extends Context.Tag("@sluice/core/RateLimiter")<RateLimiter, {
  /**
   * Waits until `cost` fits in every bucket of `key`, reserves it atomically
   * and returns a permit held until the scope closes.
   */
  readonly acquire: (
    key: string,
    cost: Cost.Cost,
    options?: AcquireOptions
  ) => Effect.Effect<Permit, RateLimiterError, Scope.Scope>
  /** `acquire`, run `use` with the permit, release. */
  readonly withPermit: <A, E, R>(
    key: string,
    cost: Cost.Cost,
    use: (permit: Permit) => Effect.Effect<A, E, R>,
    options?: AcquireOptions
  ) => Effect.Effect<A, E | RateLimiterError, R>
  /**
   * Takes `cost` from every bucket of `key` and keeps it: waits as `acquire`
   * does (FIFO behind the key's waiters of its class, by priority, with the
   * same headroom and transit margin), then answers once it is reserved.
   * Nothing to settle or release, and no in-flight slot is held (only a key
   * still discovering its limits lets one call at a time through, a take
   * included): for a cost known up front, or a plain counter. The charge
   * stays as a permit released unsettled leaves it. Fails as `acquire` does
   * (`CostTooLarge`, `Shed`, `WaitTimeout` after `maxWait`, `InvalidCost`, a
   * store error). Interrupted while it waits, it takes nothing; once the store
   * has granted it, the charge stays, as a released permit's does.
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { RateLimiter } from "@sluice/core"
   *
   * const embed = Effect.gen(function*() {
   *   const limiter = yield* RateLimiter.RateLimiter
   *   yield* limiter.take("openai/text-embedding-3-small", { requests: 1, inputTokens: 8_000 })
   *   // ... call the embeddings endpoint ...
   * })
   * ```
   *
   * @since 0.1.0
   */
  readonly take: (
    key: string,
    cost: Cost.Cost,
    options?: AcquireOptions
  ) => Effect.Effect<void, RateLimiterError>
  /** Sets or replaces a key's quota. */
  readonly define: (
    key: string,
    quota: Quota.QuotaInput
  ) => Effect.Effect<void, Quota.InvalidQuota | LimiterStore.LimiterStoreError>
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
   * import { Effect } from "effect"
   * import { RateLimiter } from "@sluice/core"
   *
   * const wait = Effect.gen(function*() {
   *   const limiter = yield* RateLimiter.RateLimiter
   *   return yield* limiter.admitsIn("azure-east/gpt-4o", { inputTokens: 1_800, outputTokens: 512 })
   * })
   * ```
   */
  readonly admitsIn: (
    key: string,
    cost: Cost.Cost,
    options?: AcquireOptions
  ) => Effect.Effect<Duration.Duration, Cost.InvalidCost | LimiterStore.LimiterStoreError>
}>() {}

/**
 * Options of a limiter. Every field has a default.
 *
 * @since 0.1.0
 * @category models
 */
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
  /**
   * The refill of this long that every take leaves in each bucket, whatever
   * its class. A call is admitted here and counted by the provider when it
   * arrives there; arrivals come closer together than the admissions when one
   * call's transit (serialisation, event loop, network) is quicker than the one
   * before, and a bucket kept at exactly zero would then answer 429. Holding
   * the refill of the largest such spread back absorbs it: at steady state the
   * rate is unchanged, and the cost is this much of the quota once.
   * Default 100 milliseconds (at 1,000,000 tokens a minute, 1,667 tokens).
   */
  readonly transitMargin?: Duration.DurationInput | undefined
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
// Constructors
// ---------------------------------------------------------------------------

/**
 * The `key` label shared by the keys past `metricKeys`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const otherKeysLabel = LimiterMetrics.otherKeysLabel

const defaults = {
  maxInFlight: 256,
  lanes: { interactive: 1_000, normal: 10_000, batch: 100_000 },
  maxWaiting: 100_000,
  headroom: 0.1,
  transitMargin: Duration.millis(100),
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

/** Every option with its default applied and its bound enforced; the key runtime's settings among them. */
interface Resolved extends KeyRuntime.Settings {
  readonly maxPause: Duration.Duration
  readonly metricKeys: number
}

const resolve = (options: Options): Resolved => {
  const maxInFlight = Math.max(1, options.maxInFlight ?? defaults.maxInFlight)
  const discover = options.discover ?? true
  const laneBounds = { ...defaults.lanes, ...options.lanes }
  const maxWaiting = options.maxWaiting ?? defaults.maxWaiting
  const headroom = Math.max(0, Math.min(1, options.headroom ?? defaults.headroom))
  const marginMillis = Math.max(0, Duration.toMillis(options.transitMargin ?? defaults.transitMargin))
  const recentMillis = Duration.toMillis(options.recentWindow ?? defaults.recentWindow)
  const promoteAfter = Duration.decode(options.promoteAfter ?? defaults.promoteAfter)
  const maxPause = Duration.decode(options.maxPause ?? defaults.maxPause)
  const idleMillis = Math.max(recentMillis, Duration.toMillis(options.idleAfter ?? defaults.idleAfter))
  const metricKeys = Math.max(0, options.metricKeys ?? defaults.metricKeys)
  return {
    maxInFlight,
    discover,
    laneBounds,
    maxWaiting,
    headroom,
    marginMillis,
    recentMillis,
    promoteAfter,
    maxPause,
    idleMillis,
    metricKeys
  }
}

/** Whether a snapshot says anything a store would fold in: a dimension's limit or remaining. */
const informs = (snapshot: RateLimitSnapshot): boolean => {
  for (const dimension of Quota.dimensions) {
    const state = snapshot.dimensions[dimension]
    if (state !== undefined && (state.limit !== undefined || state.remaining !== undefined)) return true
  }
  return false
}

/** A duration cut to `[0, max]`. */
const capped = (duration: Duration.Duration, max: Duration.Duration): Duration.Duration =>
  Duration.lessThan(duration, Duration.zero) ? Duration.zero : Duration.min(duration, max)

/**
 * Builds a limiter over the `LimiterStore` in context. Its per-key driver
 * fibers live in the surrounding scope. The per-key runtime (lanes, driver,
 * grants, idle reclaim) is `internal/keyRuntime.ts`; the methods here are what
 * the store and that runtime are told.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<
  RateLimiter["Type"],
  Quota.InvalidQuota | LimiterStore.LimiterStoreError,
  LimiterStore.LimiterStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const store = yield* LimiterStore.LimiterStore
    const scope = yield* Effect.scope
    const settings = resolve(options)
    const { maxPause } = settings
    const labelOf = LimiterMetrics.makeLabeller(settings.metricKeys)
    const keys = KeyRuntime.make({ store, scope, settings, labelOf })

    const define = (key: string, input: Quota.QuotaInput) =>
      Effect.gen(function*() {
        const quota = yield* Quota.decode(input, key)
        const levels = yield* store.define(key, quota)
        yield* keys.defined(key, quota, levels)
      })

    const observeNow = (key: string, snapshot: RateLimitSnapshot) =>
      Effect.gen(function*() {
        // An absurd retry-after (a day, a typo in a proxy) would close the key for every caller.
        const bounded = snapshot.retryAfter === undefined
          ? snapshot
          : { ...snapshot, retryAfter: capped(snapshot.retryAfter, maxPause) }
        const observation = yield* store.observe(key, bounded)
        for (const lowered of observation.lowered) {
          // The store slowed the refill in proportion.
          const refill = keys.rates.get(key)
          const rate = refill?.[lowered.dimension]
          if (refill !== undefined && rate !== undefined) refill[lowered.dimension] = rate * lowered.to / lowered.from
          yield* Effect.logWarning(
            `Sluice lowered the ${lowered.dimension} limit of key "${key}" from ${lowered.from} to ${lowered.to}, the provider's stated limit`
          )
        }
        if (snapshot.retryAfter !== undefined) yield* LimiterMetrics.pauseCounter(labelOf(key))
        const runtime = keys.get(key)
        if (runtime === undefined) return
        yield* keys.rememberLevels(runtime, observation.levels)
        if (Quota.dimensions.some((dimension) => observation.levels[dimension] !== undefined)) {
          yield* keys.endDiscovery(runtime)
        }
        yield* keys.wake(runtime)
      })

    // A snapshot with no limit, no remaining and no retry-after (a provider or a proxy that sends no
    // rate-limit headers) changes nothing in any store: it is not sent there, unless the key is still
    // discovering (the store may have learned its limits from another process).
    const observe = (key: string, snapshot: RateLimitSnapshot) =>
      Effect.suspend(() =>
        snapshot.retryAfter === undefined && !informs(snapshot) && keys.get(key)?.discovering !== true
          ? Effect.void
          : withSpan(observeNow(key, snapshot), "RateLimiter.observe", {
            attributes: { key },
            captureStackTrace: false
          })
      )

    const pause = (key: string, until: PauseUntil) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const duration = until instanceof Date
          ? Duration.millis(Math.max(0, until.getTime() - now))
          : Duration.decode(until)
        yield* store.pause(key, capped(duration, maxPause))
        yield* LimiterMetrics.pauseCounter(labelOf(key))
        const runtime = keys.get(key)
        if (runtime !== undefined) yield* keys.wake(runtime)
      }).pipe((effect) => withSpan(effect, "RateLimiter.pause", { attributes: { key }, captureStackTrace: false }))

    const stats = (key: string) =>
      Effect.map(store.state(key), (state): KeyStats => {
        const runtime = keys.get(key)
        return {
          key,
          waiting: LimiterMetrics.byClass((priority) => runtime?.lanes.size(priority) ?? 0),
          inFlight: runtime?.held ?? 0,
          maxInFlight: runtime?.maxInFlight ?? settings.maxInFlight,
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
        const runtime = keys.get(key)
        const rank = Priority.rank(acquireOptions?.priority ?? "normal")
        return Duration.millis(admissionDelay(
          state,
          keys.rates.get(key) ?? {},
          amounts,
          runtime === undefined
            ? []
            : Priority.classes.filter((priority) => Priority.rank(priority) >= rank).map((priority) =>
              runtime.lanes.queued(priority)
            )
        ))
      })

    for (const [key, quota] of Object.entries(options.quotas ?? {})) yield* define(key, quota)
    yield* Effect.forkIn(
      Effect.forever(Effect.zipRight(Effect.sleep(KeyRuntime.gaugeRefresh), keys.refreshGauges)),
      scope
    )

    return RateLimiter.of({
      // Validation, the fast path and the waiting are internal/keyRuntime.ts's.
      acquire: keys.acquire,
      withPermit: keys.withPermit,
      take: keys.take,
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
 * import { Duration } from "effect"
 * import { Cost, RateLimiter } from "@sluice/core"
 *
 * RateLimiter.admissionDelay(
 *   { levels: { inputTokens: { level: 1_000, capacity: 60_000 } }, pausedFor: Duration.zero },
 *   { inputTokens: 1 },
 *   Cost.amounts({ inputTokens: 3_000 })
 * ) // 2000: two seconds until 2,000 more tokens have refilled
 * ```
 *
 * @since 0.1.0
 * @category utilities
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

/**
 * A limiter over the `LimiterStore` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<RateLimiter, Quota.InvalidQuota | LimiterStore.LimiterStoreError, LimiterStore.LimiterStore> =>
  Layer.scoped(RateLimiter, make(options))

/**
 * A limiter with its own in-memory store: one process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: Options = {}): Layer.Layer<RateLimiter, Quota.InvalidQuota> =>
  layer(options).pipe(
    Layer.provide(LimiterStore.layerMemory),
    // The memory store never fails.
    Layer.catchAll((error) => error._tag === "InvalidQuota" ? Layer.fail(error) : Layer.die(error))
  )
