/**
 * The limiter's metric handles: one set per resident key, labelled once, and
 * the bound on how many keys get a label of their own (Effect's registry keeps
 * every labelled series for the life of the process).
 */
import * as Metric from "effect/Metric"
import * as Metrics from "../Metrics.js"
import * as Priority from "../Priority.js"
import * as Quota from "../Quota.js"
import { tagged } from "./taggedMetric.js"

/** The `key` label shared by the keys past `metricKeys`. */
export const otherKeysLabel = "_other"

export const byClass = <A>(f: (priority: Priority.Class) => A): Record<Priority.Class, A> => ({
  batch: f("batch"),
  normal: f("normal"),
  interactive: f("interactive")
})

export const byDimension = <A>(f: (dimension: Quota.Dimension) => A): Record<Quota.Dimension, A> => ({
  requests: f("requests"),
  inputTokens: f("inputTokens"),
  outputTokens: f("outputTokens"),
  tokens: f("tokens")
})

/** A metric with tags, added data-first (the piped form loses the metric's input type). */
export const withTags: <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  tags: Record<string, string>
) => Metric.Metric<Type, In, Out> = tagged

/** The metric handles of one resident key, resolved once when its runtime is made. */
export interface KeyMetrics {
  readonly queueDepth: Record<Priority.Class, Metric.Metric.Gauge<number>>
  readonly waitSeconds: Record<Priority.Class, Metric.Metric.Histogram<number>>
  readonly grants: Record<Priority.Class, Metric.Metric.Counter<number>>
  readonly bucketLevel: Record<Quota.Dimension, Metric.Metric.Gauge<number>>
  readonly inFlight: Metric.Metric.Gauge<number>
  readonly timeLeft: Record<Quota.Dimension, Metric.Metric.Gauge<number>>
}

/** The handles of a key whose `key` label is `label`. */
export const keyMetrics = (label: string): KeyMetrics => ({
  queueDepth: byClass((priority) => withTags(Metrics.queueDepth, { key: label, class: priority })),
  waitSeconds: byClass((priority) => withTags(Metrics.waitSeconds, { key: label, class: priority })),
  grants: byClass((priority) => withTags(Metrics.grants, { key: label, class: priority })),
  bucketLevel: byDimension((dimension) => withTags(Metrics.bucketLevel, { key: label, dimension })),
  inFlight: withTags(Metrics.inFlight, { key: label }),
  timeLeft: byDimension((dimension) => withTags(Metrics.quotaTimeLeft, { key: label, dimension }))
})

/**
 * The `key` label of a key's metrics: its own for the first `metricKeys` keys,
 * then `_other`. The returned function remembers which keys got their own.
 */
export const makeLabeller = (metricKeys: number): (key: string) => string => {
  const labelled = new Set<string>()
  return (key) => {
    if (labelled.has(key)) return key
    if (labelled.size < metricKeys) {
      labelled.add(key)
      return key
    }
    return otherKeysLabel
  }
}

/** Counts a shed waiter. */
export const shedCounter = (label: string, priority: Priority.Class, reason: string) =>
  Metric.increment(withTags(Metrics.shed, { key: label, class: priority, reason }))

/** Counts a pause of a key (a `pause` call or an observed `retry-after`). */
export const pauseCounter = (label: string) => Metric.increment(withTags(Metrics.pauses, { key: label }))
