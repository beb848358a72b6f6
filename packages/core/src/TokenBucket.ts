/**
 * Token-bucket arithmetic, as plain functions over plain data (no Effect).
 *
 * A bucket holds up to `capacity` units and refills continuously at
 * `ratePerMilli` units per millisecond, the way Anthropic documents its limits.
 * The level may go below zero when a settlement charges more than was reserved:
 * later callers then wait for the debt to refill as well.
 *
 * Time is a number of milliseconds on whatever clock the caller uses (the
 * Effect `Clock` in memory, the server's `TIME` in Redis). Fractions are kept,
 * so a 2,000,000 units/minute bucket really refills 33.33… units every
 * millisecond; nothing is rounded to whole permits.
 *
 * @example
 * ```ts
 * import { TokenBucket } from "@sluice/core"
 *
 * const bucket = TokenBucket.make({ capacity: 60_000, ratePerMilli: 1, now: 0, level: 0 })
 * TokenBucket.fitsAt(bucket, 1_500, 0) // 1500: the instant 1,500 units are there
 * ```
 *
 * @since 0.1.0
 */

/**
 * A bucket's state at `updatedAt`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TokenBucket {
  readonly capacity: number
  readonly ratePerMilli: number
  readonly level: number
  readonly updatedAt: number
}

/**
 * How far short of a cost a level may be and still be taken as enough: float
 * rounding in `rate × elapsed` must not make a waiter sleep one more tick.
 */
const tolerance = (amount: number): number => 1e-9 * Math.max(1, Math.abs(amount))

/**
 * A bucket, full unless `level` says otherwise.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: {
  readonly capacity: number
  readonly ratePerMilli: number
  readonly now: number
  readonly level?: number | undefined
}): TokenBucket => ({
  capacity: options.capacity,
  ratePerMilli: options.ratePerMilli,
  level: options.level ?? options.capacity,
  updatedAt: options.now
})

/**
 * The level at `now`: refilled since the last update, never above capacity.
 *
 * @since 0.1.0
 * @category utilities
 */
export const levelAt = (bucket: TokenBucket, now: number): number => {
  const elapsed = Math.max(0, now - bucket.updatedAt)
  if (bucket.level >= bucket.capacity) return Math.min(bucket.level, bucket.capacity)
  return Math.min(bucket.capacity, bucket.level + elapsed * bucket.ratePerMilli)
}

/**
 * The same bucket with its refill applied up to `now` (a clock that went back changes nothing).
 *
 * @since 0.1.0
 * @category utilities
 */
export const advance = (bucket: TokenBucket, now: number): TokenBucket =>
  now <= bucket.updatedAt ? bucket : { ...bucket, level: levelAt(bucket, now), updatedAt: now }

/**
 * Takes `amount` unconditionally; the level may go negative (a debt).
 *
 * @since 0.1.0
 * @category utilities
 */
export const take = (bucket: TokenBucket, amount: number, now: number): TokenBucket => {
  const current = advance(bucket, now)
  return { ...current, level: current.level - amount }
}

/**
 * Gives `amount` back, up to capacity.
 *
 * @since 0.1.0
 * @category utilities
 */
export const refund = (bucket: TokenBucket, amount: number, now: number): TokenBucket => {
  const current = advance(bucket, now)
  return { ...current, level: Math.min(current.capacity, current.level + amount) }
}

/**
 * Charges a positive `delta`, refunds a negative one.
 *
 * @since 0.1.0
 * @category utilities
 */
export const adjust = (bucket: TokenBucket, delta: number, now: number): TokenBucket =>
  delta >= 0 ? take(bucket, delta, now) : refund(bucket, -delta, now)

/**
 * The units a take must leave in the bucket to honour `headroom` (a fraction of
 * capacity kept for higher priorities) and `marginMillis` (the refill of that
 * many milliseconds, kept against the spread of the calls' transit times: see
 * `RateLimiter.Options.transitMargin`). A cost too large to leave them needs
 * only a full bucket, so neither makes a cost impossible.
 *
 * @since 0.1.0
 * @category utilities
 */
export const reserveFor = (bucket: TokenBucket, amount: number, headroom: number, marginMillis = 0): number =>
  Math.max(0, Math.min(headroom * bucket.capacity + marginMillis * bucket.ratePerMilli, bucket.capacity - amount))

/**
 * Whether `amount` can be taken at `now` while leaving `reserve` units in the bucket.
 *
 * @since 0.1.0
 * @category utilities
 */
export const fits = (bucket: TokenBucket, amount: number, now: number, reserve = 0): boolean =>
  levelAt(bucket, now) - amount >= reserve - tolerance(amount + reserve)

/**
 * The first instant at which `amount` fits (leaving `reserve` units), computed
 * from the refill rate: `now` when it fits already, `Infinity` when it never
 * can because it is larger than the bucket.
 *
 * @since 0.1.0
 * @category utilities
 */
export const fitsAt = (bucket: TokenBucket, amount: number, now: number, reserve = 0): number => {
  const needed = amount + reserve
  if (needed > bucket.capacity + tolerance(needed)) return Number.POSITIVE_INFINITY
  const level = levelAt(bucket, now)
  if (level >= needed - tolerance(needed)) return now
  return Math.max(now, bucket.updatedAt) + (needed - level) / bucket.ratePerMilli
}

/**
 * Lowers the level to what the provider says `remaining` is, when the provider
 * knows less is left than we think. Never raises it: in-flight calls the provider
 * has not seen yet are still ours to count.
 *
 * @since 0.1.0
 * @category utilities
 */
export const clamp = (bucket: TokenBucket, remaining: number, now: number): TokenBucket => {
  const current = advance(bucket, now)
  return remaining < current.level ? { ...current, level: remaining } : current
}

/**
 * Changes the limits (capacity and rate) and keeps the level, cut to the new
 * capacity.
 *
 * @since 0.1.0
 * @category utilities
 */
export const resize = (bucket: TokenBucket, capacity: number, ratePerMilli: number, now: number): TokenBucket => {
  const current = advance(bucket, now)
  return { capacity, ratePerMilli, level: Math.min(current.level, capacity), updatedAt: current.updatedAt }
}
