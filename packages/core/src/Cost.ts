/**
 * Costs: how much of each dimension one call takes.
 *
 * A caller states what it knows (`inputTokens`, `outputTokens`, maybe
 * `requests`); {@link amounts} fills in the rest: one request, and `tokens`
 * (the total dimension) as input + output.
 *
 * @example
 * ```ts
 * import { Cost } from "@sluice/core"
 *
 * Cost.amounts({ inputTokens: 1_200, outputTokens: 512 })
 * // { requests: 1, inputTokens: 1200, outputTokens: 512, tokens: 1712 }
 * ```
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import type { Dimension } from "./Quota.js"
import { dimensions } from "./Quota.js"
import { InvalidCost } from "./SluiceError.js"

/**
 * What a call takes, as the caller knows it. Missing dimensions get their defaults.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cost {
  readonly requests?: number | undefined
  readonly inputTokens?: number | undefined
  readonly outputTokens?: number | undefined
  readonly tokens?: number | undefined
}

/**
 * A cost with every dimension filled in.
 *
 * @since 0.1.0
 * @category models
 */
export type Amounts = { readonly [D in Dimension]: number }

/**
 * A change per dimension: positive charges the bucket, negative refunds it.
 *
 * @since 0.1.0
 * @category models
 */
export type Delta = { readonly [D in Dimension]?: number }

// Defined in `SluiceError` with every error a call can fail with; named here as the cost's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  InvalidCost
} from "./SluiceError.js"

/**
 * Fills in the defaults: one request, `tokens` = input + output.
 *
 * @since 0.1.0
 * @category utilities
 */
export const amounts = (cost: Cost): Amounts => {
  const inputTokens = cost.inputTokens ?? 0
  const outputTokens = cost.outputTokens ?? 0
  return {
    requests: cost.requests ?? 1,
    inputTokens,
    outputTokens,
    tokens: cost.tokens ?? inputTokens + outputTokens
  }
}

/**
 * Checks a cost and fills in its defaults; the error names the wrong dimension.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validate = (key: string, cost: Cost): Either.Either<Amounts, InvalidCost> => {
  const error = invalid(key, cost)
  return error === undefined ? Either.right(amounts(cost)) : Either.left(error)
}

/**
 * What is wrong with a cost, if anything: {@link validate} without the
 * `Either` (a caller on a hot path checks, then takes {@link amounts}).
 *
 * @since 0.1.0
 * @category utilities
 */
export const invalid = (key: string, cost: Cost): InvalidCost | undefined => {
  for (const dimension of dimensions) {
    const value: unknown = cost[dimension]
    if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value) || value < 0)) {
      return new InvalidCost({ key, dimension, value })
    }
  }
  return undefined
}

/**
 * What `actual` adds to (positive) or gives back from (negative) `reserved`, per dimension.
 *
 * @since 0.1.0
 * @category utilities
 */
export const difference = (actual: Amounts, reserved: Amounts): Delta => {
  const delta: { [D in Dimension]?: number } = {}
  for (const dimension of dimensions) {
    const change = actual[dimension] - reserved[dimension]
    if (change !== 0) delta[dimension] = change
  }
  return delta
}

/**
 * Whether a delta changes nothing.
 *
 * @since 0.1.0
 * @category guards
 */
export const isEmpty = (delta: Delta): boolean => {
  for (const dimension of dimensions) if ((delta[dimension] ?? 0) !== 0) return false
  return true
}
