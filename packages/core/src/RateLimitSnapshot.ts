/**
 * What a provider's response says about a quota, in provider-neutral terms.
 *
 * Providers parse their headers into a snapshot (see `@sluice/providers`); the
 * limiter folds it into its own view with `RateLimiter.observe`. Resets are
 * durations relative to the response, not instants, so that the clocks of the
 * provider, this process and a shared store never need to agree.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type { Dimension } from "./Quota.js"

/**
 * What the provider says of one dimension. Every field is optional: headers come and go.
 *
 * @since 0.1.0
 * @category models
 */
export interface DimensionState {
  /** The provider's limit for the dimension, per minute for Anthropic and OpenAI. */
  readonly limit?: number | undefined
  /** What is left now. */
  readonly remaining?: number | undefined
  /** When the dimension will be full again (Anthropic) or reset (OpenAI), from now. */
  readonly resetAfter?: Duration.Duration | undefined
}

/**
 * A provider's view of one key at the time of one response.
 *
 * @since 0.1.0
 * @category models
 */
export interface RateLimitSnapshot {
  readonly dimensions: { readonly [D in Dimension]?: DimensionState }
  /** A `retry-after` hint: no call on this key should start before it has passed. */
  readonly retryAfter?: Duration.Duration | undefined
  /**
   * When the headers were read, in milliseconds on the Effect `Clock` of the
   * process that read them. A snapshot read at a stream's start and observed at
   * its end is old: the store discounts what it granted since. Absent: now.
   */
  readonly observedAt?: number | undefined
}

/**
 * A snapshot that says nothing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const empty: RateLimitSnapshot = { dimensions: {} }
