/**
 * Sluice's metrics, as Effect `Metric`s. They live in Effect's global registry;
 * every one is tagged with the quota `key`, and with `class` or `dimension`
 * where it applies, so one process can tell its keys apart.
 *
 * | metric | type | tags |
 * |---|---|---|
 * | `sluice_limiter_wait_seconds` | histogram | key, class |
 * | `sluice_limiter_queue_depth` | gauge | key, class |
 * | `sluice_limiter_bucket_level` | gauge | key, dimension |
 * | `sluice_limiter_in_flight` | gauge | key |
 * | `sluice_limiter_grants_total` | counter | key, class |
 * | `sluice_limiter_shed_total` | counter | key, class, reason |
 * | `sluice_limiter_pauses_total` | counter | key |
 * | `sluice_quota_time_left_seconds` | gauge | key, dimension |
 * | `sluice_requests_total` | counter | key, outcome |
 * | `sluice_tokens_total` | counter | key, direction |
 * | `sluice_cost_usd_total` | counter | key |
 * | `sluice_call_retries_total` | counter | key, error |
 * | `sluice_prompt_cache_expectations_total` | counter | key, outcome |
 *
 * The other modules keep their own: `sluice_retries_total` (Retry),
 * `sluice_budget_*` (Budget), `sluice_breaker_*` (CircuitBreaker),
 * `sluice_router_*` (Router), `sluice_coalesced_total` and
 * `sluice_cache_hits_total` (Coalesce), `sluice_limiter_store_fallbacks_total`
 * (the Redis store). `docs/metrics.md` lists them all; `Metrics/Prometheus`
 * and `Metrics/OpenTelemetry` export them.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type * as MetricState from "effect/MetricState"
import * as SluiceError from "./SluiceError.js"

/**
 * Time from `acquire` to grant, in seconds (10 ms to about 5.5 min, doubling).
 *
 * @since 0.1.0
 * @category utilities
 */
export const waitSeconds = Metric.histogram(
  "sluice_limiter_wait_seconds",
  MetricBoundaries.exponential({ start: 0.01, factor: 2, count: 16 }),
  "Time a call waited for its permit, by key and priority class"
)

/**
 * Waiters queued, by key and class.
 *
 * @since 0.1.0
 * @category utilities
 */
export const queueDepth = Metric.gauge("sluice_limiter_queue_depth", {
  description: "Callers waiting for a permit, by key and priority class"
})

/**
 * A bucket's level after the last operation on it, by key and dimension.
 *
 * @since 0.1.0
 * @category utilities
 */
export const bucketLevel = Metric.gauge("sluice_limiter_bucket_level", {
  description: "Units left in a bucket, by key and dimension (negative: a debt from under-reservation)"
})

/**
 * Permits held, by key.
 *
 * @since 0.1.0
 * @category utilities
 */
export const inFlight = Metric.gauge("sluice_limiter_in_flight", {
  description: "Permits granted and not yet released, by key"
})

/**
 * Permits granted, by key and class.
 *
 * @since 0.1.0
 * @category utilities
 */
export const grants = Metric.counter("sluice_limiter_grants_total", {
  description: "Permits granted, by key and priority class",
  incremental: true
})

/**
 * Waiters shed, by key, class and reason.
 *
 * @since 0.1.0
 * @category utilities
 */
export const shed = Metric.counter("sluice_limiter_shed_total", {
  description: "Callers turned away because their lane or the queue was full",
  incremental: true
})

/**
 * Gates closed on a key (pauses after a 429).
 *
 * @since 0.1.0
 * @category utilities
 */
export const pauses = Metric.counter("sluice_limiter_pauses_total", {
  description: "Times a key's gate was closed by a pause",
  incremental: true
})

/**
 * Seconds until a quota's bucket runs out at the current rate, by key and
 * dimension: the level over the net drain (consumption minus refill). `+Inf`
 * while the bucket is not draining; 0 while callers wait on this dimension.
 * Refreshed every few seconds, and on every limiter event of a key with waiters.
 *
 * @since 0.1.0
 * @category utilities
 */
export const quotaTimeLeft = Metric.gauge("sluice_quota_time_left_seconds", {
  description:
    "Seconds until the quota runs out at the current rate (+Inf: not draining; 0: callers are waiting on it), by key and dimension"
})

/**
 * Calls the Governor made, one per attempt on a rung, by key and outcome
 * (`ok`, `rate_limited`, `quota_exhausted`, `overloaded`, `server_error`, `timeout`,
 * `network_error`, `bad_request`, `unauthorized`, `not_found`, `shed`,
 * `cost_too_large`, `budget_exceeded`, `circuit_open`, `interrupted`, …: see
 * {@link outcomeOf}).
 *
 * @since 0.1.0
 * @category utilities
 */
export const requests = Metric.counter("sluice_requests_total", {
  description: "Calls made through the Governor, one per attempt, by key and outcome",
  incremental: true
})

/**
 * Tokens the provider reported, by key and direction (`input`, `output`, `cache_read`, `cache_write`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const tokens = Metric.counter("sluice_tokens_total", {
  description: "Tokens the provider reported, by key and direction (input, output, cache_read, cache_write)",
  incremental: true
})

/**
 * Spend in US dollars at the price table's prices, by key.
 *
 * @since 0.1.0
 * @category utilities
 */
export const costUsd = Metric.counter("sluice_cost_usd_total", {
  description: "Spend in USD at the price table's prices, by key",
  incremental: true
})

/**
 * Calls that expected cache reads (`PromptCache`) and reserved less for them,
 * by key and how it went: `read` (the provider read the cache) or `missed`
 * (it did not; the settlement charged the rest). Many misses mean the cache
 * expires or is evicted sooner than `promptCacheTtl`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const promptCacheExpectations = Metric.counter("sluice_prompt_cache_expectations_total", {
  description: "Calls that reserved less for expected prompt-cache reads, by key and outcome (read, missed)",
  incremental: true
})

/**
 * Calls the Governor ran again after a retryable failure, by the key of the call's model and the error retried.
 *
 * @since 0.1.0
 * @category utilities
 */
export const callRetries = Metric.counter("sluice_call_retries_total", {
  description: "Calls retried by the Governor, by key and the error retried",
  incremental: true
})

/**
 * The `outcome` label of an exit: `ok`, or the error's tag in snake case
 * (`RateLimited` → `rate_limited`, `QuotaExhausted` → `quota_exhausted`: the
 * account is out of money, which no wait cures, so alert on it apart from
 * rate limits), `interrupted`, or `error` for anything untagged:
 * `SluiceError.classify(error).outcome`.
 *
 * @example
 * ```ts
 * import { LlmClient, Metrics } from "@sluice/core"
 *
 * Metrics.outcomeOf(new LlmClient.RateLimited({ provider: "anthropic", detail: "" })) // "rate_limited"
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const outcomeOf = (error: unknown): string => SluiceError.classify(error).outcome

/**
 * Pure: seconds until a bucket at `level` runs out when it is consumed at
 * `consumptionPerSecond` and refills at `refillPerSecond`: `level / (consumption
 * − refill)`. `+Inf` when it is not draining (the refill keeps up, or nothing
 * is consumed); 0 when `blocked` (callers already wait for this dimension) or
 * the bucket is empty and draining.
 *
 * The refill is subtracted because a token bucket refills continuously: a key
 * used at half its limit never runs out, however full or empty it is now.
 *
 * @example
 * ```ts
 * import { Metrics } from "@sluice/core"
 *
 * Metrics.timeLeftSeconds({ level: 30_000, consumptionPerSecond: 1_500, refillPerSecond: 1_000 }) // 60
 * Metrics.timeLeftSeconds({ level: 30_000, consumptionPerSecond: 500, refillPerSecond: 1_000 }) // Infinity
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const timeLeftSeconds = (bucket: {
  readonly level: number
  readonly consumptionPerSecond: number
  readonly refillPerSecond: number
  readonly blocked?: boolean | undefined
}): number => {
  if (bucket.blocked === true) return 0
  const drain = bucket.consumptionPerSecond - bucket.refillPerSecond
  if (!(drain > 0)) return Number.POSITIVE_INFINITY
  return Math.max(0, bucket.level) / drain
}

/**
 * Pure: the `q` quantile (0 to 1) of a histogram's state, by linear
 * interpolation inside the bucket that holds it (Prometheus'
 * `histogram_quantile`). The first bucket starts at 0; a quantile in the `+Inf`
 * bucket is the largest value seen. `undefined` for an empty histogram. Pass
 * `since` (an earlier state of the same histogram) to take the quantile of
 * what was recorded after it.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "@sluice/core"
 *
 * const p95 = Effect.gen(function*() {
 *   const waits = Metrics.waitSeconds.pipe(Metric.tagged("key", "anthropic/claude-haiku-4-5"), Metric.tagged("class", "batch"))
 *   const state = yield* Metric.value(waits)
 *   return Metrics.quantile(state, 0.95) // seconds, p95 of the waits (undefined before the first wait)
 * })
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const quantile = (
  state: MetricState.MetricState.Histogram,
  q: number,
  since?: MetricState.MetricState.Histogram
): number | undefined => {
  const before = new Map(since?.buckets ?? [])
  const buckets = state.buckets.map(([upper, cumulative]) => [upper, cumulative - (before.get(upper) ?? 0)] as const)
  const count = buckets.at(-1)?.[1] ?? 0
  if (count <= 0) return undefined
  const rank = Math.min(1, Math.max(0, q)) * count
  let lower = 0
  let below = 0
  for (const [upper, cumulative] of buckets) {
    if (cumulative >= rank && cumulative > below) {
      if (!Number.isFinite(upper)) return state.max
      return lower + (upper - lower) * ((rank - below) / (cumulative - below))
    }
    lower = upper
    below = cumulative
  }
  return state.max
}
