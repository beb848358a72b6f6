/**
 * Sluice's metrics through OpenTelemetry: a governed call under the layer, then
 * an in-memory exporter behind a periodic reader holds them, with their names,
 * kinds and attributes.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  PeriodicExportingMetricReader
} from "@opentelemetry/sdk-metrics"
import type { MetricData } from "@opentelemetry/sdk-metrics"
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import * as SluiceOtel from "@sluice/core/Metrics/OpenTelemetry"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Effect, Layer } from "effect"

const MODEL = "claude-haiku-4-5"
const KEY = "otel-test/key"

const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)

const Governed = Governor.layer({ key: () => KEY }).pipe(
  Layer.provideMerge(SimulatedClient.layer({})),
  Layer.provideMerge(
    RateLimiter.layerMemory({
      quotas: { [KEY]: { requests: { limit: 50, per: "1 minute" }, inputTokens: { limit: 30_000, per: "1 minute" } } }
    })
  ),
  Layer.provide(EstimatorFast)
)

/** Every data point of the metric named `name` whose attributes include `attributes`. */
const pointsOf = (metrics: ReadonlyArray<MetricData>, name: string, attributes: Record<string, string>) =>
  metrics
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints.map((point) => ({ metric, point })))
    .filter(({ point }) => Object.entries(attributes).every(([k, v]) => point.attributes[k] === v))

describe("Metrics/OpenTelemetry", () => {
  it.live("the Sluice metrics of a governed run arrive at the reader's exporter, with their kinds and attributes", () =>
    Effect.gen(function*() {
      const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
      const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 })
      const response = yield* Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        return yield* client.complete({
          model: MODEL,
          messages: [{ role: "user", content: "Count my tokens, please." }],
          maxOutputTokens: 64
        })
      }).pipe(Effect.provide(Layer.merge(Governed, SluiceOtel.layer(() => reader, { serviceName: "otel-test" }))))
      // The layer was released: its shutdown flushed the reader one last time.
      const exported = exporter.getMetrics()
      expect(exported.length).toBeGreaterThan(0)
      const last = exported.at(-1)!
      expect(last.resource.attributes["service.name"]).toBe("otel-test")
      const metrics = last.scopeMetrics.flatMap((scope) => scope.metrics)

      const ok = pointsOf(metrics, "sluice_requests_total", { key: KEY, outcome: "ok" })
      expect(ok.length).toBe(1)
      expect(ok[0]!.metric.dataPointType).toBe(DataPointType.SUM)
      expect(ok[0]!.point.value).toBe(1)

      const input = pointsOf(metrics, "sluice_tokens_total", { key: KEY, direction: "input" })
      expect(input[0]!.point.value).toBe(response.usage.inputTokens)
      const output = pointsOf(metrics, "sluice_tokens_total", { key: KEY, direction: "output" })
      expect(output[0]!.point.value).toBe(response.usage.outputTokens)

      const waits = pointsOf(metrics, "sluice_limiter_wait_seconds", { key: KEY, class: "normal" })
      expect(waits[0]!.metric.dataPointType).toBe(DataPointType.HISTOGRAM)
      expect((waits[0]!.point.value as { readonly count: number }).count).toBe(1)

      const level = pointsOf(metrics, "sluice_limiter_bucket_level", { key: KEY, dimension: "requests" })
      expect(level[0]!.metric.dataPointType).toBe(DataPointType.GAUGE)
      // one request taken from 50 (plus whatever refilled in the real milliseconds since)
      expect(level[0]!.point.value).toBeGreaterThanOrEqual(49)
      expect(level[0]!.point.value).toBeLessThan(50)
      expect(pointsOf(metrics, "sluice_quota_time_left_seconds", { key: KEY, dimension: "inputTokens" }).length).toBe(1)
    }))
})
