/**
 * `Metric.tagged` unions its tags with the fiber's on every update, and the
 * fresh array misses the metric's hook cache (a `WeakMap` keyed by the array),
 * so each update builds and hashes a new `MetricKey`. A limiter updates several
 * metrics per call; this keeps one label array per tagged metric, so every
 * update after the first is a cache hit.
 */
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"

/** `metric` with `tags`, resolved once: updates reuse one label array. */
export const tagged = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  tags: Readonly<Record<string, string>>
): Metric.Metric<Type, In, Out> => {
  const labels = Object.entries(tags).map(([name, value]) => MetricLabel.make(name, value))
  const withExtra = (
    extra: ReadonlyArray<MetricLabel.MetricLabel>
  ) => (extra.length === 0 ? labels : [...labels, ...extra])
  return Metric.make(
    metric.keyType,
    (input: In, extra: ReadonlyArray<MetricLabel.MetricLabel>) => metric.unsafeUpdate(input, withExtra(extra)),
    (extra: ReadonlyArray<MetricLabel.MetricLabel>) => metric.unsafeValue(withExtra(extra)),
    (input: In, extra: ReadonlyArray<MetricLabel.MetricLabel>) => metric.unsafeModify(input, withExtra(extra))
  )
}
