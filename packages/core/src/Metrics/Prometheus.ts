/**
 * Sluice's metrics — and every other Effect `Metric` of the process — in the
 * Prometheus text exposition format (version 0.0.4), and an HTTP endpoint
 * that serves them, built on `@effect/platform` so it runs on any of its
 * servers (Node, Bun, the browser's service worker…).
 *
 * The registry is Effect's global one (`Metric.snapshot`); nothing is copied
 * or kept. Each metric becomes one family with `# HELP` and `# TYPE` lines:
 *
 * - a counter is a `counter` and its name ends in `_total` (added if missing);
 * - a gauge is a `gauge` (`+Inf`, `-Inf` and `NaN` as Prometheus spells them);
 * - a histogram is a `histogram`: `_bucket{le="…"}` cumulative, ending with
 *   `le="+Inf"`, then `_sum` and `_count`;
 * - a summary is a `summary`: `{quantile="…"}`, `_sum`, `_count`;
 * - a frequency is a `counter` with one series per observed `value`.
 *
 * Names and label names are sanitised to Prometheus' alphabets; label values
 * and help text are escaped. Families and series come out sorted, so two
 * scrapes of the same state are identical.
 *
 * `@effect/platform` is an optional peer dependency of `@sluice/core`: only
 * this module needs it.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { HttpRouter, HttpServerResponse } from "@effect/platform"
 * import { NodeHttpServer } from "@effect/platform-node"
 * import * as Prometheus from "@sluice/core/Metrics/Prometheus"
 * import { Layer } from "effect"
 *
 * // GET http://localhost:9464/metrics
 * const MetricsServer = Prometheus.layerServer().pipe(Layer.provide(NodeHttpServer.layer(createServer, { port: 9464 })))
 * const main = Layer.launch(MetricsServer) // merged with the app's layers; run with NodeRuntime.runMain(main)
 *
 * // or on a router the app already has:
 * const router = HttpRouter.empty.pipe(
 *   HttpRouter.get("/metrics", Prometheus.handler),
 *   HttpRouter.get("/", HttpServerResponse.text("ok"))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"

/**
 * The content type of the text exposition format.
 *
 * @since 0.1.0
 * @category utilities
 */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/**
 * Options of the rendering and the endpoint.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Only metrics whose (sanitised) name starts with this, e.g. `"sluice_"`. Default: all of them. */
  readonly prefix?: string | undefined
}

/**
 * Options of the endpoint.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServeOptions extends Options {
  /** The path to serve. Default `/metrics`. */
  readonly path?: `/${string}` | undefined
}

type FamilyType = "counter" | "gauge" | "histogram" | "summary"

interface Family {
  readonly name: string
  readonly type: FamilyType
  readonly help: string | undefined
  /** Sample lines by the labels of their series, for sorting and de-duplication. */
  readonly series: Map<string, ReadonlyArray<string>>
}

/**
 * A metric name in Prometheus' alphabet: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const sanitizeName = (name: string): string => {
  const cleaned = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[a-zA-Z_:]/.test(cleaned) ? cleaned : `_${cleaned}`
}

/**
 * A label name in Prometheus' alphabet: `[a-zA-Z_][a-zA-Z0-9_]*`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const sanitizeLabelName = (name: string): string => {
  const cleaned = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return /^[a-zA-Z_]/.test(cleaned) ? cleaned : `_${cleaned}`
}

/**
 * A label value escaped for the exposition format: backslash, double quote and line feed.
 *
 * @since 0.1.0
 * @category utilities
 */
export const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

/**
 * Help text escaped for the exposition format: backslash and line feed.
 *
 * @since 0.1.0
 * @category utilities
 */
export const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

/**
 * A sample value as Prometheus spells it: `+Inf`, `-Inf`, `NaN`, or the number.
 *
 * @since 0.1.0
 * @category utilities
 */
export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

/** `{a="1",b="2"}`, or "" without labels. Later labels of the same name win (a fiber's tag over the metric's). */
const labelText = (labels: ReadonlyArray<readonly [string, string]>): string => {
  const byName = new Map<string, string>()
  for (const [name, value] of labels) byName.set(sanitizeLabelName(name), value)
  if (byName.size === 0) return ""
  return `{${[...byName].map(([name, value]) => `${name}="${escapeLabelValue(value)}"`).join(",")}}`
}

const withTotal = (name: string) => (name.endsWith("_total") ? name : `${name}_total`)

/** The family a pair belongs to, its name and type, and its sample lines. */
const samplesOf = (
  pair: MetricPair.MetricPair.Untyped
): { readonly name: string; readonly type: FamilyType; readonly lines: ReadonlyArray<string> } | undefined => {
  const base = sanitizeName(pair.metricKey.name)
  const tags: ReadonlyArray<readonly [string, string]> = pair.metricKey.tags.map((label) =>
    [label.key, label.value] as const
  )
  const state = pair.metricState
  if (MetricState.isCounterState(state)) {
    const name = withTotal(base)
    return {
      name,
      type: "counter",
      lines: [`${name}${labelText(tags)} ${formatValue(state.count as number | bigint)}`]
    }
  }
  if (MetricState.isGaugeState(state)) {
    return {
      name: base,
      type: "gauge",
      lines: [`${base}${labelText(tags)} ${formatValue(state.value as number | bigint)}`]
    }
  }
  if (MetricState.isHistogramState(state)) {
    const lines: Array<string> = []
    let infinite = false
    for (const [upper, cumulative] of state.buckets) {
      if (upper === Number.POSITIVE_INFINITY) infinite = true
      lines.push(`${base}_bucket${labelText([...tags, ["le", formatValue(upper)]])} ${formatValue(cumulative)}`)
    }
    if (!infinite) lines.push(`${base}_bucket${labelText([...tags, ["le", "+Inf"]])} ${formatValue(state.count)}`)
    lines.push(`${base}_sum${labelText(tags)} ${formatValue(state.sum)}`)
    lines.push(`${base}_count${labelText(tags)} ${formatValue(state.count)}`)
    return { name: base, type: "histogram", lines }
  }
  if (MetricState.isSummaryState(state)) {
    return {
      name: base,
      type: "summary",
      lines: [
        ...state.quantiles.map(([q, value]) =>
          `${base}${labelText([...tags, ["quantile", formatValue(q)]])} ${
            formatValue(Option.getOrElse(value, () => Number.NaN))
          }`
        ),
        `${base}_sum${labelText(tags)} ${formatValue(state.sum)}`,
        `${base}_count${labelText(tags)} ${formatValue(state.count)}`
      ]
    }
  }
  if (MetricState.isFrequencyState(state)) {
    const name = withTotal(base)
    return {
      name,
      type: "counter",
      lines: [...state.occurrences].map(([value, count]) =>
        `${name}${labelText([...tags, ["value", value]])} ${formatValue(count)}`
      )
    }
  }
  return undefined
}

/**
 * Pure: metric pairs (a `Metric.snapshot`) in the text exposition format, one
 * family per metric name, sorted, ending with a line feed. A series repeated
 * in the registry (same name and labels) is written once; a metric whose
 * type differs from its family's first is left out rather than making the
 * output invalid.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import * as Prometheus from "@sluice/core/Metrics/Prometheus"
 *
 * const body = Effect.map(Metric.snapshot, (pairs) => Prometheus.render(pairs))
 * // # HELP sluice_requests_total Calls made through the Governor, one per attempt, by key and outcome
 * // # TYPE sluice_requests_total counter
 * // sluice_requests_total{key="anthropic/claude-haiku-4-5",outcome="ok"} 1200
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const render = (pairs: Iterable<MetricPair.MetricPair.Untyped>, options: Options = {}): string => {
  const families = new Map<string, Family>()
  for (const pair of pairs) {
    const samples = samplesOf(pair)
    if (samples === undefined) continue
    if (options.prefix !== undefined && !samples.name.startsWith(options.prefix)) continue
    let family = families.get(samples.name)
    if (family === undefined) {
      family = {
        name: samples.name,
        type: samples.type,
        help: Option.getOrUndefined(pair.metricKey.description),
        series: new Map()
      }
      families.set(samples.name, family)
    }
    if (family.type !== samples.type) continue
    const id = labelText(pair.metricKey.tags.map((label) => [label.key, label.value] as const))
    if (!family.series.has(id)) family.series.set(id, samples.lines)
  }
  const out: Array<string> = []
  for (const family of [...families.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (family.help !== undefined && family.help !== "") out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`)
    out.push(`# TYPE ${family.name} ${family.type}`)
    for (const id of [...family.series.keys()].sort()) {
      for (const line of family.series.get(id)!) out.push(line)
    }
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}

/**
 * The process's metrics now, in the exposition format.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Prometheus from "@sluice/core/Metrics/Prometheus"
 *
 * const program = Effect.gen(function*() {
 *   const body = yield* Prometheus.text({ prefix: "sluice_" })
 *   yield* Effect.log(body)
 * })
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const text = (options: Options = {}): Effect.Effect<string> =>
  Effect.map(Metric.snapshot, (pairs) => render(pairs, options))

/**
 * A request handler answering with the metrics, `Content-Type`
 * {@link contentType}: mount it on any `HttpRouter` path.
 *
 * @example
 * ```ts
 * import { HttpRouter } from "@effect/platform"
 * import * as Prometheus from "@sluice/core/Metrics/Prometheus"
 *
 * const router = HttpRouter.empty.pipe(HttpRouter.get("/metrics", Prometheus.handler))
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const handler: Effect.Effect<HttpServerResponse.HttpServerResponse> = Effect.map(
  text(),
  (body) => HttpServerResponse.text(body, { contentType })
)

/**
 * {@link handler} with options (a name prefix).
 *
 * @since 0.1.0
 * @category utilities
 */
export const handlerWith = (options: Options): Effect.Effect<HttpServerResponse.HttpServerResponse> =>
  Effect.map(text(options), (body) => HttpServerResponse.text(body, { contentType }))

/**
 * A `GET` route serving the metrics (at `/metrics` by default), to add to an
 * existing router with `HttpRouter.append`.
 *
 * @example
 * ```ts
 * import { HttpRouter, HttpServerResponse } from "@effect/platform"
 * import * as Prometheus from "@sluice/core/Metrics/Prometheus"
 *
 * const app = HttpRouter.empty.pipe(
 *   HttpRouter.get("/", HttpServerResponse.text("ok")),
 *   HttpRouter.append(Prometheus.route())
 * )
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const route = (options: ServeOptions = {}): HttpRouter.Route<never, never> =>
  HttpRouter.makeRoute("GET", options.path ?? "/metrics", handlerWith(options))

/**
 * A router with only the metrics route; `HttpRouter.concat` it with yours, or serve it alone.
 *
 * @since 0.1.0
 * @category utilities
 */
export const router = (options: ServeOptions = {}): HttpRouter.HttpRouter =>
  HttpRouter.append(HttpRouter.empty, route(options))

/**
 * Serves the metrics route on the `HttpServer` in context (every other path:
 * 404). Give it a server layer of the platform, e.g.
 * `NodeHttpServer.layer(createServer, { port: 9464 })`.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { NodeHttpServer } from "@effect/platform-node"
 * import * as Prometheus from "@sluice/core/Metrics/Prometheus"
 * import { Layer } from "effect"
 *
 * const MetricsLive = Prometheus.layerServer().pipe(Layer.provide(NodeHttpServer.layer(createServer, { port: 9464 })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerServer = (options: ServeOptions = {}): Layer.Layer<never, never, HttpServer.HttpServer> =>
  HttpServer.serve(router(options))
