/**
 * Priority classes: named, not numeric.
 *
 * `interactive` work (a user is waiting) is served before `normal`, and
 * `normal` before `batch`. Within a class, arrival order holds. A waiter that
 * has waited long is promoted one class per `promoteAfter`, so batch work never
 * starves behind a steady stream of interactive calls.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"

/**
 * The priority classes, lowest first.
 *
 * @since 0.1.0
 * @category utilities
 */
export const classes = ["batch", "normal", "interactive"] as const

/**
 * A priority class.
 *
 * @since 0.1.0
 * @category models
 */
export type Class = (typeof classes)[number]

/**
 * The rank of a class: batch 0, normal 1, interactive 2. Higher is served first.
 *
 * @since 0.1.0
 * @category utilities
 */
export const rank = (priority: Class): number => classes.indexOf(priority)

/**
 * The highest rank.
 *
 * @since 0.1.0
 * @category utilities
 */
export const topRank: number = classes.length - 1

/**
 * The class of a rank, clamped into range.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromRank = (value: number): Class => classes[Math.max(0, Math.min(topRank, Math.floor(value)))]!

/**
 * The rank a waiter competes with after waiting `waited`: its own, plus one for
 * every `promoteAfter` waited, up to the top.
 *
 * @since 0.1.0
 * @category utilities
 */
export const effectiveRank = (priority: Class, waited: Duration.Duration, promoteAfter: Duration.Duration): number => {
  const step = Duration.toMillis(promoteAfter)
  if (!(step > 0) || !Number.isFinite(step)) return rank(priority)
  return Math.min(topRank, rank(priority) + Math.floor(Duration.toMillis(waited) / step))
}
