/**
 * How fast a bucket is being consumed, learned from its levels: between two
 * readings the bucket would have refilled (up to its capacity), so whatever is
 * missing was consumed — by this process's grants and settlements, and by
 * anyone else the store or the provider's headers account for. The rate is an
 * exponentially weighted average over {@link window}, so a burst fades and an
 * idle key decays to zero; for a young drain it is corrected for the time it
 * has been watched (as Adam corrects its moments), so it is the average since
 * the first reading rather than a slow ramp from zero.
 */

/** The averaging window: a quota minute's worth of behaviour, weighted to the last half minute. */
export const window = 30_000

/** A young drain's correction counts at least this long, so one early grant does not read as a torrent. */
export const warmup = 5_000

/**
 * One bucket's last reading and its consumption rate (units per millisecond,
 * uncorrected). Owned by one key's runtime and folded in place: a reading
 * comes with every grant and settlement, and a new object for each would be
 * most of what a call allocates.
 */
export interface Drain {
  level: number
  at: number
  rate: number
  /** The first reading. */
  readonly since: number
}

/**
 * Folds a new reading of a bucket into its drain, in place (a new drain for
 * the first reading), and answers it. A refund (a level above the expected
 * refill) lowers the rate.
 */
export const observe = (
  previous: Drain | undefined,
  level: number,
  capacity: number,
  refillPerMilli: number,
  now: number
): Drain => {
  if (previous === undefined) return { level, at: now, rate: 0, since: now }
  const elapsed = Math.max(0, now - previous.at)
  const expected = Math.max(previous.level, Math.min(capacity, previous.level + refillPerMilli * elapsed))
  const consumed = expected - level
  // Readings within one millisecond (a grant and its settlement) decay nothing.
  previous.rate = (elapsed === 0 ? previous.rate : previous.rate * Math.exp(-elapsed / window)) + consumed / window
  previous.level = level
  previous.at = now
  return previous
}

/** The consumption rate now (units per millisecond, never negative), decayed since the last reading. */
export const rateAt = (drain: Drain, now: number): number =>
  Math.max(0, drain.rate * Math.exp(-Math.max(0, now - drain.at) / window)) /
  (1 - Math.exp(-Math.max(warmup, now - drain.since) / window))

/** The level now if nothing was consumed since the last reading. */
export const levelAt = (drain: Drain, capacity: number, refillPerMilli: number, now: number): number =>
  Math.max(drain.level, Math.min(capacity, drain.level + refillPerMilli * Math.max(0, now - drain.at)))
