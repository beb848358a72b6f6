/**
 * Sluice's metrics through OpenTelemetry, as an optional layer: Effect's
 * metric registry becomes a `MetricProducer` (`@effect/opentelemetry`) read by
 * the `MetricReader`s you give — a `PeriodicExportingMetricReader` over an OTLP
 * exporter, the Prometheus exporter of OpenTelemetry, or an in-memory reader in
 * tests. Counters arrive as monotonic sums, gauges as gauges, histograms with
 * their bucket boundaries; the names and labels are those of
 * `docs/metrics.md`.
 *
 * `@effect/opentelemetry` and `@opentelemetry/sdk-metrics` are optional peer
 * dependencies of `@sluice/core`: only this module needs them.
 *
 * @example
 * ```ts
 * import { ConsoleMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
 * import * as SluiceOtel from "@sluice/core/Metrics/OpenTelemetry"
 * import { Effect } from "effect"
 *
 * // In production, an OTLPMetricExporter (@opentelemetry/exporter-metrics-otlp-http) in place of the console.
 * const MetricsLive = SluiceOtel.layer(
 *   () => new PeriodicExportingMetricReader({ exporter: new ConsoleMetricExporter(), exportIntervalMillis: 10_000 }),
 *   { serviceName: "extraction-job" }
 * )
 * const program = Effect.log("governed work here").pipe(Effect.provide(MetricsLive))
 * ```
 *
 * @since 0.1.0
 */
import * as Metrics from "@effect/opentelemetry/Metrics"
import * as Resource from "@effect/opentelemetry/Resource"
import type * as OtelApi from "@opentelemetry/api"
import type { MetricReader } from "@opentelemetry/sdk-metrics"
import type * as Duration from "effect/Duration"
import * as Layer from "effect/Layer"

/**
 * Options of the layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `service.name` of the resource the metrics are reported under. Default "sluice". */
  readonly serviceName?: string | undefined
  /** `service.version` of the resource. */
  readonly serviceVersion?: string | undefined
  /** More resource attributes (`deployment.environment`, …). */
  readonly attributes?: OtelApi.Attributes | undefined
  /** How long the readers may take to shut down (flushing) when the layer is released. Default 3 seconds. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
}

/**
 * Registers Effect's metrics (Sluice's among them) with the readers `readers`
 * builds, for as long as the layer lives; releasing it shuts the readers down,
 * which flushes a periodic exporter one last time.
 *
 * @example
 * ```ts
 * import { AggregationTemporality, InMemoryMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
 * import * as SluiceOtel from "@sluice/core/Metrics/OpenTelemetry"
 *
 * const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
 * const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 })
 * const MetricsTest = SluiceOtel.layer(() => reader)
 * // ... run, then: await reader.forceFlush(); exporter.getMetrics()
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  readers: () => MetricReader | readonly [MetricReader, ...Array<MetricReader>],
  options: Options = {}
): Layer.Layer<never> =>
  Metrics.layer(readers, options.shutdownTimeout === undefined ? {} : { shutdownTimeout: options.shutdownTimeout })
    .pipe(
      Layer.provide(Resource.layer({
        serviceName: options.serviceName ?? "sluice",
        ...(options.serviceVersion === undefined ? {} : { serviceVersion: options.serviceVersion }),
        ...(options.attributes === undefined ? {} : { attributes: options.attributes })
      }))
    )
