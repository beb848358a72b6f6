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
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

/** Time from `acquire` to grant, in seconds (10 ms to about 5.5 min, doubling). */
export const waitSeconds = Metric.histogram(
  "sluice_limiter_wait_seconds",
  MetricBoundaries.exponential({ start: 0.01, factor: 2, count: 16 }),
  "Time a call waited for its permit, by key and priority class"
)

/** Waiters queued, by key and class. */
export const queueDepth = Metric.gauge("sluice_limiter_queue_depth", {
  description: "Callers waiting for a permit, by key and priority class"
})

/** A bucket's level after the last operation on it, by key and dimension. */
export const bucketLevel = Metric.gauge("sluice_limiter_bucket_level", {
  description: "Units left in a bucket, by key and dimension (negative: a debt from under-reservation)"
})

/** Permits held, by key. */
export const inFlight = Metric.gauge("sluice_limiter_in_flight", {
  description: "Permits granted and not yet released, by key"
})

/** Permits granted, by key and class. */
export const grants = Metric.counter("sluice_limiter_grants_total", {
  description: "Permits granted, by key and priority class",
  incremental: true
})

/** Waiters shed, by key, class and reason. */
export const shed = Metric.counter("sluice_limiter_shed_total", {
  description: "Callers turned away because their lane or the queue was full",
  incremental: true
})

/** Gates closed on a key (pauses after a 429). */
export const pauses = Metric.counter("sluice_limiter_pauses_total", {
  description: "Times a key's gate was closed by a pause",
  incremental: true
})
