/**
 * Where bucket state lives.
 *
 * The interface is shaped for a store in another process (Redis, in
 * `@sluice/core/LimiterStore/Redis`): every operation is one atomic step on one
 * key, and every answer is relative to the store's own clock — a reservation
 * either is granted or says how long until it fits, so callers never compare
 * clocks with the store.
 *
 * `layerMemory` keeps state in a `Map` changed only in synchronous steps, and
 * reads time from the Effect `Clock`, so `TestClock` drives it.
 *
 * Snapshots carry their age (`RateLimitSnapshot.observedAt`): headers read at a
 * stream's start are a minute old at its end. Every store keeps, per dimension,
 * a short history of what it granted ({@link GrantHistory}) and projects the
 * provider's `remaining` forward to now before comparing it with its own level
 * ({@link projectRemaining}); a snapshot older than that history teaches limits
 * but clamps nothing.
 *
 * The memory store reclaims an entry idle for `idleAfter` (full buckets, no
 * pause) and keeps only the key's definition (its configured or learned limits,
 * a few numbers per dimension), so the key comes back with full buckets at those
 * limits, never unlimited. Memory is then bounded by the keys in use plus one
 * small definition per key ever limited.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Cost from "./Cost.js"
import * as SyncStore from "./internal/syncStore.js"
import * as Quota from "./Quota.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"
import { LimiterStoreError } from "./SluiceError.js"
import * as TokenBucket from "./TokenBucket.js"

/**
 * One bucket's level and capacity, as last seen by the store.
 *
 * @since 0.1.0
 * @category models
 */
export interface Level {
  readonly level: number
  readonly capacity: number
}

/**
 * The levels of a key's buckets. A key without buckets has none.
 *
 * @since 0.1.0
 * @category models
 */
export type Levels = { readonly [D in Quota.Dimension]?: Level }

/**
 * Which backend of a store granted a reservation: the shared one, or a local fallback.
 *
 * @since 0.1.0
 * @category models
 */
export type Origin = "shared" | "local"

/**
 * The answer to a reservation.
 *
 * @since 0.1.0
 * @category models
 */
export type Reservation =
  /**
   * Every dimension was taken, atomically. `origin` names the backend that
   * granted it (a store with a fallback: `"shared"` or `"local"`); settlements
   * of that reservation go back to it (`adjust`'s `origin`).
   */
  | { readonly _tag: "Granted"; readonly levels: Levels; readonly origin?: Origin | undefined }
  /** Nothing was taken; the cost fits after `delay` at the earliest (store clock). */
  | {
    readonly _tag: "Wait"
    readonly delay: Duration.Duration
    /** The dimension that fits last, or `"paused"` while the key's gate is closed. */
    readonly reason: Quota.Dimension | "paused"
    readonly levels: Levels
  }
  /** Nothing was taken; the cost can never fit in this dimension's bucket. */
  | {
    readonly _tag: "TooLarge"
    readonly dimension: Quota.Dimension
    readonly amount: number
    readonly capacity: number
  }

/**
 * What folding a provider's snapshot changed.
 *
 * @since 0.1.0
 * @category models
 */
export interface Observation {
  /** Configured limits above the provider's stated limit, now lowered to it. */
  readonly lowered: ReadonlyArray<{ readonly dimension: Quota.Dimension; readonly from: number; readonly to: number }>
  /** Dimensions the store had no bucket for, now created from the provider's limit. */
  readonly discovered: ReadonlyArray<Quota.Dimension>
  readonly levels: Levels
}

/**
 * A key's state: its levels and how long its gate stays closed.
 *
 * @since 0.1.0
 * @category models
 */
export interface KeyState {
  readonly levels: Levels
  readonly pausedFor: Duration.Duration
}

// Defined in `SluiceError` with every error a call can fail with; named here as the store's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  LimiterStoreError
} from "./SluiceError.js"

/**
 * The period assumed for a limit learned from headers: Anthropic and OpenAI state per-minute limits.
 *
 * @since 0.1.0
 * @category utilities
 */
export const discoveredPeriod: Duration.Duration = Duration.minutes(1)

/**
 * Where bucket state lives. Every operation is atomic per key.
 *
 * @since 0.1.0
 * @category errors
 */
export class LimiterStore extends Context.Tag("@sluice/core/LimiterStore")<LimiterStore, {
  /** Sets a key's limits. Existing levels are kept (cut to a lower capacity); new buckets start full. */
  readonly define: (key: string, quota: Quota.Quota) => Effect.Effect<Levels, LimiterStoreError>
  /**
   * Takes `amounts` from every bucket of the key, or nothing. `headroom` is the
   * fraction of each bucket the take must leave (for higher priorities);
   * `margin`, milliseconds of each bucket's refill it must leave besides (for
   * the spread of transit times between here and the provider; 0 when
   * absent). A cost too large to leave both needs a full bucket.
   * A key the store does not know has no buckets: it is granted.
   */
  readonly reserve: (
    key: string,
    amounts: Cost.Amounts,
    options: { readonly headroom: number; readonly margin?: number | undefined }
  ) => Effect.Effect<Reservation, LimiterStoreError>
  /**
   * Charges (positive) or refunds (negative) each dimension of a key. `origin`:
   * the backend that granted the reservation being corrected (from `Granted`),
   * so that a refund goes where the take was made.
   */
  readonly adjust: (
    key: string,
    delta: Cost.Delta,
    origin?: Origin | undefined
  ) => Effect.Effect<Levels, LimiterStoreError>
  /** Folds a provider's snapshot into the key: lowers levels and limits, learns unknown limits, pauses on retry-after. */
  readonly observe: (key: string, snapshot: RateLimitSnapshot) => Effect.Effect<Observation, LimiterStoreError>
  /** Closes the key's gate for `duration` from now (or keeps a later close). Answers how long it stays closed. */
  readonly pause: (key: string, duration: Duration.Duration) => Effect.Effect<Duration.Duration, LimiterStoreError>
  /** A key's levels and pause, for metrics and diagnostics. */
  readonly state: (key: string) => Effect.Effect<KeyState, LimiterStoreError>
}>() {}

// ---------------------------------------------------------------------------
// The in-memory store
// ---------------------------------------------------------------------------

/**
 * A key's state in the memory store. A reservation or a settlement (every
 * call, twice) changes the store's own entry in place, in one synchronous
 * step: its buckets, its grant histories, its `touchedAt`. The rarer
 * operations (define, observe, pause) build a new entry from pure functions.
 */
interface Entry {
  readonly buckets: { [D in Quota.Dimension]?: Bucket }
  /** The stated limit per dimension (the bucket holds the burst). */
  readonly limits: { readonly [D in Quota.Dimension]?: number }
  readonly pausedUntil: number
  /** What the provider's `remaining` taught about consumers this store does not see, per dimension. */
  readonly drift: { readonly [D in Quota.Dimension]?: Drift }
  /** What this store granted per dimension, to discount from a snapshot read before it. */
  readonly granted: { [D in Quota.Dimension]?: History }
  /** The last operation on the key (for reclaiming idle entries). */
  touchedAt: number
}

/** A bucket the memory store owns: a reservation or a settlement changes it in place. */
type Bucket = { -readonly [K in keyof TokenBucket.TokenBucket]: TokenBucket.TokenBucket[K] }

/** A {@link GrantHistory} the memory store owns, changed in place as {@link recordGrant} would answer. */
interface History {
  since: number
  base: number
  readonly groups: Array<[first: number, atFirst: number, last: number, cumulative: number]>
}

// ---------------------------------------------------------------------------
// What was granted since a snapshot was read
// ---------------------------------------------------------------------------

/**
 * What a store granted on one dimension, net of settlements, as a cumulative
 * count with a few time-stamped groups, so that it can tell how much it granted
 * since any instant of the last few minutes.
 *
 * Operations less than {@link grantGroupSpan} after a group's first share it
 * (`[first, cumulative after the first instant, last, cumulative after]`); at
 * most {@link grantGroups} groups are kept, so the history covers at least
 * `grantGroups × grantGroupSpan` (three minutes) of steady traffic and longer
 * of sparse traffic. `since` is the earliest instant it accounts for (the
 * bucket's creation, or the end of the last group dropped), `base` the
 * cumulative count there.
 *
 * @since 0.1.0
 * @category models
 */
export interface GrantHistory {
  readonly since: number
  readonly base: number
  readonly groups: ReadonlyArray<readonly [first: number, atFirst: number, last: number, cumulative: number]>
}

/**
 * Operations closer than this to a group's first share the group, in a {@link GrantHistory}.
 *
 * @since 0.1.0
 * @category utilities
 */
export const grantGroupSpan = 5_000

/**
 * The most groups a {@link GrantHistory} keeps.
 *
 * @since 0.1.0
 * @category utilities
 */
export const grantGroups = 36

/**
 * Pure: an empty history, accounting from `now`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const grantHistory = (now: number): GrantHistory => ({ since: now, base: 0, groups: [] })

/** Pure: the cumulative count of a history. */
const grantTotal = (history: GrantHistory): number =>
  history.groups.length === 0 ? history.base : history.groups[history.groups.length - 1]![3]

/**
 * Pure: records `amount` granted (negative: refunded) at `now`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const recordGrant = (history: GrantHistory, amount: number, now: number): GrantHistory => {
  if (amount === 0) return history
  const total = grantTotal(history) + amount
  const groups = history.groups
  const last = groups[groups.length - 1]
  if (last !== undefined && now - last[0] < grantGroupSpan) {
    const merged = [last[0], now <= last[0] ? total : last[1], Math.max(last[2], now), total] as const
    return { ...history, groups: [...groups.slice(0, -1), merged] }
  }
  const next = [...groups, [now, total, now, total] as const]
  if (next.length <= grantGroups) return { ...history, groups: next }
  const dropped = next[0]!
  return { since: dropped[2], base: dropped[3], groups: next.slice(1) }
}

/** An empty history the memory store owns, accounting from `now`. */
const ownHistory = (now: number): History => ({ since: now, base: 0, groups: [] })

/** `recordGrant`, in place: the memory store's own history, without copying its groups. */
const recordGrantInPlace = (history: History, amount: number, now: number): void => {
  if (amount === 0) return
  const total = grantTotal(history) + amount
  const groups = history.groups
  const last = groups[groups.length - 1]
  if (last !== undefined && now - last[0] < grantGroupSpan) {
    if (now > last[0]) last[2] = Math.max(last[2], now)
    else last[1] = total
    last[3] = total
    return
  }
  groups.push([now, total, now, total])
  if (groups.length <= grantGroups) return
  const dropped = groups.shift()!
  history.since = dropped[2]
  history.base = dropped[3]
}

/**
 * Pure: how much was granted after `at`; undefined when `at` is older than the
 * history accounts for. Within a group, the count is interpolated over its span.
 *
 * @since 0.1.0
 * @category utilities
 */
export const grantedSince = (history: GrantHistory, at: number): number | undefined => {
  if (at < history.since) return undefined
  const total = grantTotal(history)
  let before = history.base
  for (const [first, atFirst, last, cumulative] of history.groups) {
    if (at < first) return total - before
    if (at < last) return total - (atFirst + (cumulative - atFirst) * (at - first) / (last - first))
    before = cumulative
  }
  return total - before
}

/**
 * Pure: what the provider's bucket holds now, from a `remaining` read `age`
 * milliseconds ago: refilled at the provider's rate since (up to capacity),
 * minus what this store granted since.
 *
 * @since 0.1.0
 * @category utilities
 */
export const projectRemaining = (
  remaining: number,
  age: number,
  ratePerMilli: number,
  capacity: number,
  granted: number
): number => Math.min(capacity, remaining + ratePerMilli * Math.max(0, age)) - granted

/**
 * The refill a bucket has learned to expect. Another consumer on the same key
 * (a script, a colleague, another tool) takes from the provider's bucket
 * unseen; its only trace is a provider's `remaining` below the local level.
 * The store refills at `nominal − max(0, estimate)`, and the estimate follows
 * the gap between the local level and the provider's (`remaining + 1`, since
 * `remaining` is a floor):
 *
 * - a positive gap is tokens someone else took: the local level drops to
 *   `remaining` and the estimate rises by `gap / τ`, τ a twelfth of the
 *   bucket's period (five seconds for a per-minute limit), so a steady drain
 *   is matched within a few τ;
 * - a change of a non-positive gap moves the estimate by `change / (6τ)`: a
 *   provider that keeps showing more than the store counts (the other consumer
 *   stopped) brings the refill back within a few periods, while the noise of
 *   calls in flight (reservations not yet settled) moves it little.
 *
 * The estimate is signed, within ±90 % of the nominal refill, so noise around
 * zero cancels out instead of ratcheting up.
 *
 * @since 0.1.0
 * @category models
 */
export interface Drift {
  /** The configured refill, per millisecond. */
  readonly nominal: number
  /** The unseen consumers' estimated take per millisecond (signed; only its positive part slows the refill). */
  readonly estimate: number
  /** The gap carried from the last observation: −1 after a clamp, else the (non-positive) gap. */
  readonly gap: number
}

/**
 * The most of a bucket's refill that may be credited to unseen consumers.
 *
 * @since 0.1.0
 * @category utilities
 */
export const maxForeignShare = 0.9

/**
 * Pure: folds one observed `remaining` into a bucket's drift; answers the new drift and the bucket at its new rate.
 *
 * @since 0.1.0
 * @category utilities
 */
export const learnDrift = (
  bucket: TokenBucket.TokenBucket,
  drift: Drift | undefined,
  remaining: number,
  now: number
): readonly [Drift, TokenBucket.TokenBucket] => {
  const nominal = drift?.nominal ?? bucket.ratePerMilli
  const gap = TokenBucket.levelAt(bucket, now) - (remaining + 1)
  const before = drift?.estimate ?? 0
  let estimate = before
  if (drift !== undefined && nominal > 0) {
    const tau = bucket.capacity / nominal / 12
    const bound = maxForeignShare * nominal
    const taken = Math.max(0, gap)
    const settled = Math.min(0, gap) - drift.gap
    estimate = Math.min(bound, Math.max(-bound, estimate + taken / tau + settled / (6 * tau)))
  }
  const rated = Math.max(0, estimate) === Math.max(0, before)
    ? bucket
    : TokenBucket.resize(bucket, bucket.capacity, nominal - Math.max(0, estimate), now)
  return gap > 0
    ? [{ nominal, estimate, gap: -1 }, TokenBucket.clamp(rated, remaining, now)]
    : [{ nominal, estimate, gap }, rated]
}

/** A key with no state: no buckets, no pause. */
const emptyEntry = (now: number): Entry => ({
  buckets: {},
  limits: {},
  pausedUntil: Number.NEGATIVE_INFINITY,
  drift: {},
  granted: {},
  touchedAt: now
})

/** What survives a reclaimed entry: each dimension's limits. */
interface Definition {
  readonly [dimension: string]: { readonly capacity: number; readonly ratePerMilli: number; readonly limit: number }
}

/** Pure: an entry's definition (the refill it was configured or learned with, unseen consumers aside). */
const definitionOf = (entry: Entry): Definition | undefined => {
  const definition: { [dimension: string]: Definition[string] } = {}
  let any = false
  for (const dimension of Quota.dimensions) {
    const bucket = entry.buckets[dimension]
    if (bucket === undefined) continue
    any = true
    definition[dimension] = {
      capacity: bucket.capacity,
      ratePerMilli: entry.drift[dimension]?.nominal ?? bucket.ratePerMilli,
      limit: entry.limits[dimension] ?? bucket.capacity
    }
  }
  return any ? definition : undefined
}

/** Pure: a reclaimed key back from its definition, buckets full. */
const restoreEntry = (definition: Definition, now: number): Entry => {
  const buckets: { [D in Quota.Dimension]?: Bucket } = {}
  const limits: { [D in Quota.Dimension]?: number } = {}
  const granted: { [D in Quota.Dimension]?: History } = {}
  for (const dimension of Quota.dimensions) {
    const limit = definition[dimension]
    if (limit === undefined) continue
    buckets[dimension] = TokenBucket.make({ capacity: limit.capacity, ratePerMilli: limit.ratePerMilli, now })
    limits[dimension] = limit.limit
    granted[dimension] = ownHistory(now)
  }
  return { ...emptyEntry(now), buckets, limits, granted }
}

/** Whether an entry may be reclaimed: untouched since `idleSince`, unpaused, every bucket full. */
const isIdle = (entry: Entry, now: number, idleSince: number): boolean =>
  entry.touchedAt <= idleSince && entry.pausedUntil <= now &&
  Quota.dimensions.every((dimension) => {
    const bucket = entry.buckets[dimension]
    return bucket === undefined || TokenBucket.levelAt(bucket, now) >= bucket.capacity
  })

const levelsOf = (entry: Entry, now: number): Levels => {
  const levels: { [D in Quota.Dimension]?: Level } = {}
  for (const dimension of Quota.dimensions) {
    const bucket = entry.buckets[dimension]
    if (bucket !== undefined) levels[dimension] = { level: TokenBucket.levelAt(bucket, now), capacity: bucket.capacity }
  }
  return levels
}

/** `TokenBucket.adjust` (a take when positive, a refund up to capacity when negative), on the store's own bucket in place. */
const adjustBucket = (bucket: Bucket, delta: number, now: number): void => {
  if (now > bucket.updatedAt) {
    bucket.level = TokenBucket.levelAt(bucket, now)
    bucket.updatedAt = now
  }
  bucket.level = delta >= 0 ? bucket.level - delta : Math.min(bucket.capacity, bucket.level - delta)
}

/** Pure: defines a key's limits on an entry. */
const defineEntry = (entry: Entry, quota: Quota.Quota, now: number): Entry => {
  const buckets: { [D in Quota.Dimension]?: Bucket } = {}
  const limits: { [D in Quota.Dimension]?: number } = {}
  const granted: { [D in Quota.Dimension]?: History } = {}
  for (const dimension of Quota.dimensions) {
    const limit = quota[dimension]
    if (limit === undefined) continue
    const capacity = Quota.capacity(limit)
    const rate = Quota.ratePerMilli(limit)
    const existing = entry.buckets[dimension]
    buckets[dimension] = existing === undefined
      ? TokenBucket.make({ capacity, ratePerMilli: rate, now })
      : TokenBucket.resize(existing, capacity, rate, now)
    limits[dimension] = limit.limit
    granted[dimension] = entry.granted[dimension] ?? ownHistory(now)
  }
  // New limits start a new account of unseen consumers.
  return { ...entry, buckets, limits, drift: {}, granted }
}

/** One reservation on the store's own entry: every bucket is taken from in place (true), or none. */
const reserveEntry = (
  entry: Entry,
  amounts: Cost.Amounts,
  headroom: number,
  margin: number,
  now: number
): true | Exclude<Reservation, { readonly _tag: "Granted" }> => {
  if (entry.pausedUntil > now) {
    return {
      _tag: "Wait",
      delay: Duration.millis(entry.pausedUntil - now),
      reason: "paused",
      levels: levelsOf(entry, now)
    }
  }
  let latest = now
  let reason: Quota.Dimension | undefined
  for (const dimension of Quota.dimensions) {
    const bucket = entry.buckets[dimension]
    if (bucket === undefined) continue
    const amount = amounts[dimension]
    const at = TokenBucket.fitsAt(bucket, amount, now, TokenBucket.reserveFor(bucket, amount, headroom, margin))
    if (at === Number.POSITIVE_INFINITY) {
      return { _tag: "TooLarge", dimension, amount, capacity: bucket.capacity }
    }
    if (at > latest) {
      latest = at
      reason = dimension
    }
  }
  if (reason !== undefined) {
    return { _tag: "Wait", delay: Duration.millis(latest - now), reason, levels: levelsOf(entry, now) }
  }
  adjustEntry(entry, amounts, now)
  return true
}

/** Charges (positive) or refunds (negative) each dimension of the store's own entry in place, and records it as granted. */
const adjustEntry = (entry: Entry, delta: Cost.Delta, now: number): void => {
  for (const dimension of Quota.dimensions) {
    const bucket = entry.buckets[dimension]
    const change = delta[dimension]
    if (bucket === undefined || change === undefined || change === 0) continue
    adjustBucket(bucket, change, now)
    const history = entry.granted[dimension] ?? (entry.granted[dimension] = ownHistory(now))
    recordGrantInPlace(history, change, now)
  }
}

/**
 * Pure: folds a snapshot read `age` milliseconds ago. Its `remaining` is
 * projected to now ({@link projectRemaining}) before it is compared with the
 * bucket; a snapshot older than the grant history clamps nothing.
 */
const observeEntry = (
  entry: Entry,
  snapshot: RateLimitSnapshot,
  age: number,
  now: number
): readonly [Observation, Entry] => {
  const granted: { [D in Quota.Dimension]?: History } = { ...entry.granted }
  const buckets: { [D in Quota.Dimension]?: Bucket } = { ...entry.buckets }
  const limits: { [D in Quota.Dimension]?: number } = { ...entry.limits }
  const drift: { [D in Quota.Dimension]?: Drift } = { ...entry.drift }
  const lowered: Array<Observation["lowered"][number]> = []
  const discovered: Array<Quota.Dimension> = []
  for (const dimension of Quota.dimensions) {
    const state = snapshot.dimensions[dimension]
    if (state === undefined) continue
    let bucket = buckets[dimension]
    const stated = state.limit !== undefined && Number.isFinite(state.limit) && state.limit > 0
      ? state.limit
      : undefined
    if (bucket === undefined) {
      if (stated === undefined) continue
      const rate = stated / Duration.toMillis(discoveredPeriod)
      bucket = TokenBucket.make({
        capacity: stated,
        ratePerMilli: rate,
        now,
        level: state.remaining === undefined
          ? stated
          : projectRemaining(Math.max(0, state.remaining), age, rate, stated, 0)
      })
      limits[dimension] = stated
      granted[dimension] = ownHistory(now)
      discovered.push(dimension)
    } else if (stated !== undefined && stated < (limits[dimension] ?? bucket.capacity)) {
      const from = limits[dimension] ?? bucket.capacity
      const scale = stated / from
      bucket = TokenBucket.resize(bucket, Math.min(bucket.capacity, stated), bucket.ratePerMilli * scale, now)
      const learned = drift[dimension]
      if (learned !== undefined) {
        drift[dimension] = { ...learned, nominal: learned.nominal * scale, estimate: learned.estimate * scale }
      }
      limits[dimension] = stated
      lowered.push({ dimension, from, to: stated })
    }
    if (state.remaining !== undefined && Number.isFinite(state.remaining)) {
      const remaining = Math.max(0, state.remaining)
      const history = granted[dimension]
      const since = age <= 0 ? 0 : history === undefined ? undefined : grantedSince(history, now - age)
      if (since !== undefined) {
        const nominal = drift[dimension]?.nominal ?? bucket.ratePerMilli
        const [learned, next] = learnDrift(
          bucket,
          drift[dimension],
          projectRemaining(remaining, age, nominal, bucket.capacity, since),
          now
        )
        drift[dimension] = learned
        bucket = next
      }
    }
    buckets[dimension] = bucket
  }
  // A retry-after counts from the response that carried it.
  const pausedUntil = snapshot.retryAfter === undefined
    ? entry.pausedUntil
    : Math.max(entry.pausedUntil, now + Duration.toMillis(snapshot.retryAfter) - age)
  const next: Entry = { ...entry, buckets, limits, pausedUntil, drift, granted }
  return [{ lowered, discovered, levels: levelsOf(next, now) }, next]
}

/**
 * Options of the memory store.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions {
  /**
   * An entry untouched this long, with full buckets and no pause, is reclaimed;
   * its key keeps its limits and comes back with full buckets. Default 10 minutes.
   */
  readonly idleAfter?: Duration.DurationInput | undefined
}

/**
 * The memory store, with the number of entries it holds (for diagnostics and tests).
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryStore extends Context.Tag.Service<LimiterStore> {
  /** Entries held now (reclaimed ones not counted; their definitions are). */
  readonly entries: Effect.Effect<number>
}

/**
 * The in-memory store: one `Map` of every key's buckets, time from `Clock`.
 * Idle entries are swept at most once per `idleAfter`, during an operation, so
 * the store needs no fiber of its own.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemoryWith = (options: MemoryOptions = {}): Effect.Effect<MemoryStore> =>
  Effect.sync(() => {
    const idleAfter = Duration.toMillis(Duration.decode(options.idleAfter ?? Duration.minutes(10)))
    // Owned by this store alone and changed only in synchronous calls: each operation is atomic.
    const entries = new Map<string, Entry>()
    /** Limits of reclaimed keys: one small record per key ever limited. */
    const definitions = new Map<string, Definition>()
    let sweptAt = Number.NEGATIVE_INFINITY

    const sweep = (now: number) => {
      sweptAt = now
      for (const [key, entry] of entries) {
        if (!isIdle(entry, now, now - idleAfter)) continue
        const definition = definitionOf(entry)
        if (definition !== undefined) definitions.set(key, definition)
        entries.delete(key)
      }
    }

    /** A key's entry at `now`: stored, or back from its definition, or empty (not stored by this). */
    const current = (key: string, now: number): Entry => {
      if (now - sweptAt >= idleAfter) sweep(now)
      const stored = entries.get(key)
      if (stored !== undefined) return stored
      const definition = definitions.get(key)
      return definition === undefined ? emptyEntry(now) : restoreEntry(definition, now)
    }

    /**
     * One atomic step on a key at `now` that answers a new entry (the pure
     * operations); `touch`: the step counts as use (everything but `state`).
     */
    const step = <A>(
      key: string,
      f: (entry: Entry, now: number) => readonly [A, Entry],
      now: number,
      touch = true
    ): A => {
      const entry = current(key, now)
      const [result, next] = f(entry, now)
      // Replacing the entry keeps each operation O(1) however many keys there are.
      if (touch) {
        next.touchedAt = now
        entries.set(key, next)
      } else if (next !== entry) entries.set(key, next)
      return result
    }

    /** The key's entry at `now`, stored and touched: the store's own, for an operation in place. */
    const own = (key: string, now: number): Entry => {
      if (now - sweptAt >= idleAfter) sweep(now)
      let entry = entries.get(key)
      if (entry === undefined) {
        const definition = definitions.get(key)
        entry = definition === undefined ? emptyEntry(now) : restoreEntry(definition, now)
        entries.set(key, entry)
      }
      entry.touchedAt = now
      return entry
    }

    /** `step` at the calling fiber's `Clock`. */
    const update = <A>(
      key: string,
      f: (entry: Entry, now: number) => readonly [A, Entry],
      touch = true
    ): Effect.Effect<A> =>
      Effect.clockWith((clock) => Effect.sync(() => step(key, f, clock.unsafeCurrentTimeMillis(), touch)))

    /** A reservation at the calling fiber's `Clock`, with the levels after it. */
    const reserve = (
      key: string,
      amounts: Cost.Amounts,
      headroom: number,
      margin: number,
      now: number
    ): Reservation => {
      const entry = own(key, now)
      const answer = reserveEntry(entry, amounts, headroom, margin, now)
      return answer === true ? { _tag: "Granted", levels: levelsOf(entry, now) } : answer
    }

    const store: MemoryStore = {
      define: (key, quota) =>
        update(key, (entry, now) => {
          const next = defineEntry(entry, quota, now)
          return [levelsOf(next, now), next]
        }),
      reserve: (key, amounts, options) =>
        Effect.clockWith((clock) =>
          Effect.sync(() =>
            reserve(key, amounts, options.headroom, options.margin ?? 0, clock.unsafeCurrentTimeMillis())
          )
        ),
      adjust: (key, delta) =>
        Effect.clockWith((clock) =>
          Effect.sync(() => {
            const now = clock.unsafeCurrentTimeMillis()
            const entry = own(key, now)
            adjustEntry(entry, delta, now)
            return levelsOf(entry, now)
          })
        ),
      observe: (key, snapshot) =>
        update(key, (entry, now) =>
          observeEntry(
            entry,
            snapshot,
            snapshot.observedAt === undefined ? 0 : Math.max(0, now - snapshot.observedAt),
            now
          )),
      pause: (key, duration) =>
        update(key, (entry, now) => {
          const pausedUntil = Math.max(entry.pausedUntil, now + Duration.toMillis(duration))
          return [Duration.millis(pausedUntil - now), { ...entry, pausedUntil }]
        }),
      state: (key) =>
        update(key, (entry, now) => [{
          levels: levelsOf(entry, now),
          pausedFor: Duration.millis(Math.max(0, entry.pausedUntil - now))
        }, entry], false),
      entries: Effect.sync(() => entries.size)
    }
    // The limiter's uncontended path calls these directly: one synchronous step each, in place, no levels.
    return SyncStore.register(store, {
      reserve: (key, amounts, headroom, margin, now) => reserveEntry(own(key, now), amounts, headroom, margin, now),
      adjust: (key, delta, now) => adjustEntry(own(key, now), delta, now),
      levels: (key, now) => levelsOf(current(key, now), now)
    })
  })

/**
 * The in-memory store with default options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<LimiterStore["Type"]> = makeMemoryWith()

/**
 * The in-memory store, for one process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<LimiterStore> = Layer.effect(LimiterStore, makeMemory)
