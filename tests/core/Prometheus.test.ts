/**
 * The Prometheus exposition: after a governed run against the in-process
 * simulator, the text parses line by line with a strict parser written here
 * (not the renderer's own code), and its counters are the run's counts.
 */
import { NodeHttpServer } from "@effect/platform-node"
import * as HttpClient from "@effect/platform/HttpClient"
import { describe, expect, it } from "@effect/vitest"
import { Governor, LlmClient, Metrics, Pricing, RateLimiter, TokenEstimator } from "@sluice/core"
import * as Prometheus from "@sluice/core/Metrics/Prometheus"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Duration, Effect, Exit, Fiber, Layer, Metric, MetricBoundaries, Random, TestClock } from "effect"

// ---------------------------------------------------------------------------
// A strict parser of the text exposition format (version 0.0.4)
// ---------------------------------------------------------------------------

interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

interface Family {
  readonly name: string
  type: string | undefined
  help: string | undefined
  readonly samples: Array<Sample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*/

/** A sample value: a Go float (`+Inf`, `-Inf`, `NaN` or a decimal / exponent number). */
const parseValue = (text: string, line: number): number => {
  if (text === "+Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  if (text === "NaN") return Number.NaN
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`line ${line}: bad value "${text}"`)
  return Number(text)
}

/** `{name="value",…}` read character by character: only `\\`, `\"` and `\n` escapes are allowed. */
const parseLabels = (
  text: string,
  line: number
): { readonly labels: Record<string, string>; readonly rest: string } => {
  const labels: Record<string, string> = {}
  let i = 1
  while (text[i] !== "}") {
    const name = labelName.exec(text.slice(i))?.[0]
    if (name === undefined) throw new Error(`line ${line}: bad label name at ${i}`)
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`)
    i += name.length
    if (text.slice(i, i + 2) !== "=\"") throw new Error(`line ${line}: expected =" after ${name}`)
    i += 2
    let value = ""
    for (;;) {
      const c = text[i]
      if (c === undefined || c === "\n") throw new Error(`line ${line}: unterminated label value`)
      if (c === "\"") break
      if (c === "\\") {
        const next = text[i + 1]
        if (next === "\\") value += "\\"
        else if (next === "\"") value += "\""
        else if (next === "n") value += "\n"
        else throw new Error(`line ${line}: bad escape \\${next}`)
        i += 2
        continue
      }
      value += c
      i++
    }
    labels[name] = value
    i++
    if (text[i] === ",") i++
    else if (text[i] !== "}") throw new Error(`line ${line}: expected , or } at ${i}`)
  }
  return { labels, rest: text.slice(i + 1) }
}

/** The family a sample name belongs to, given its type's suffixes. */
const familyOf = (families: Map<string, Family>, name: string): Family | undefined => {
  for (const suffix of ["_bucket", "_sum", "_count", ""]) {
    if (!name.endsWith(suffix)) continue
    const family = families.get(name.slice(0, name.length - suffix.length))
    if (family !== undefined && (suffix === "" || family.type === "histogram" || family.type === "summary")) {
      return family
    }
  }
  return undefined
}

/**
 * Parses the exposition strictly: every line is a HELP, a TYPE or a sample; a
 * family's TYPE comes before its samples and once; a family's samples are
 * contiguous; no series appears twice; histograms are cumulative and end with
 * `le="+Inf"` equal to `_count`; counters end in `_total`. Throws on the first
 * violation.
 */
const parse = (text: string): Map<string, Family> => {
  expect(text.endsWith("\n")).toBe(true)
  const families = new Map<string, Family>()
  const seen = new Set<string>()
  let current: Family | undefined
  const lines = text.slice(0, -1).split("\n")
  lines.forEach((line, index) => {
    const n = index + 1
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
      if (match === null) throw new Error(`line ${n}: bad comment "${line}"`)
      const [, kind, name, rest] = match as unknown as [string, string, string, string]
      let family = families.get(name)
      if (family === undefined) {
        family = { name, type: undefined, help: undefined, samples: [] }
        families.set(name, family)
      } else if (family !== current || family.samples.length > 0) {
        throw new Error(`line ${n}: ${kind} of ${name} after its samples or out of its block`)
      }
      current = family
      if (kind === "TYPE") {
        if (family.type !== undefined) throw new Error(`line ${n}: second TYPE for ${name}`)
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) {
          throw new Error(`line ${n}: bad type ${rest}`)
        }
        family.type = rest
      } else {
        if (family.help !== undefined) throw new Error(`line ${n}: second HELP for ${name}`)
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`line ${n}: bad escape in HELP`)
        family.help = rest
      }
      return
    }
    const name = metricName.exec(line)?.[0]
    if (name === undefined) throw new Error(`line ${n}: bad sample "${line}"`)
    let rest = line.slice(name.length)
    let labels: Record<string, string> = {}
    if (rest.startsWith("{")) ({ labels, rest } = parseLabels(rest, n))
    const parts = /^ (\S+)( -?\d+)?$/.exec(rest)
    if (parts === null) throw new Error(`line ${n}: bad value part "${rest}"`)
    const family = familyOf(families, name)
    if (family === undefined || family.type === undefined) throw new Error(`line ${n}: sample ${name} without a TYPE`)
    if (family !== current) throw new Error(`line ${n}: sample ${name} outside its family's block`)
    if (family.type === "counter" && !name.endsWith("_total")) {
      throw new Error(`line ${n}: counter ${name} without _total`)
    }
    const id = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(id)) throw new Error(`line ${n}: series ${id} twice`)
    seen.add(id)
    family.samples.push({ name, labels, value: parseValue(parts[1]!, n) })
  })
  for (const family of families.values()) {
    if (family.type !== "histogram") continue
    const series = new Map<string, Array<Sample>>()
    for (const sample of family.samples) {
      const { le: _le, ...rest } = sample.labels
      const id = JSON.stringify(Object.entries(rest).sort())
      series.set(id, [...(series.get(id) ?? []), sample])
    }
    for (const samples of series.values()) {
      const buckets = samples.filter((sample) => sample.name === `${family.name}_bucket`)
      const count = samples.find((sample) => sample.name === `${family.name}_count`)
      expect(samples.some((sample) => sample.name === `${family.name}_sum`)).toBe(true)
      expect(buckets.at(-1)?.labels.le).toBe("+Inf")
      expect(buckets.at(-1)?.value).toBe(count?.value)
      for (let i = 1; i < buckets.length; i++) {
        expect(Number(buckets[i]!.labels.le!.replace("+Inf", "Infinity"))).toBeGreaterThan(
          Number(buckets[i - 1]!.labels.le)
        )
        expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value)
      }
    }
  }
  return families
}

/** The value of one series, 0 when absent. */
const valueOf = (families: Map<string, Family>, name: string, labels: Record<string, string>): number => {
  const family = familyOf(families, name)
  const sample = family?.samples.find((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  )
  return sample?.value ?? 0
}

/** The sum of every series of `name` whose labels include `labels`. */
const sumOf = (families: Map<string, Family>, name: string, labels: Record<string, string>): number =>
  (familyOf(families, name)?.samples ?? [])
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0)

// ---------------------------------------------------------------------------
// A governed run
// ---------------------------------------------------------------------------

const MODEL = "claude-haiku-4-5"
const quota = { requestsPerMinute: 60, inputTokensPerMinute: 20_000, outputTokensPerMinute: 4_000 }

const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)

const governed = (key: string) =>
  Governor.layer({ key: () => key, count: "provider", retry: { maxAttempts: 4 } }).pipe(
    Layer.provideMerge(SimulatedClient.layer({
      quota,
      faults: { overloadedRate: 0.1, bursts: [{ startSeconds: 20, durationSeconds: 3, status: 429 }] },
      seed: 11
    })),
    Layer.provideMerge(RateLimiter.layerMemory({
      quotas: {
        [key]: {
          requests: { limit: quota.requestsPerMinute, per: "1 minute" },
          inputTokens: { limit: quota.inputTokensPerMinute, per: "1 minute" },
          outputTokens: { limit: quota.outputTokensPerMinute, per: "1 minute" }
        }
      }
    })),
    Layer.provide(EstimatorFast)
  )

describe("Prometheus", () => {
  it.effect("after a governed run the exposition parses strictly and its counters are the run's counts", () =>
    Effect.gen(function*() {
      const key = "prometheus-test/run"
      const client = yield* LlmClient.LlmClient
      const sim = yield* SimulatedClient.SimulatedStats
      const fibers = yield* Effect.forEach(
        Array.from(
          { length: 90 },
          (_, i) => `Invoice ${i} from supplier ${i % 5}: totals, dates and the terms of payment.`
        ),
        (text) =>
          Effect.fork(
            client.complete({ model: MODEL, messages: [{ role: "user", content: text }], maxOutputTokens: 80 })
          )
      )
      for (let round = 0; round < 60 && fibers.some((fiber) => fiber.unsafePoll() === null); round++) {
        yield* TestClock.adjust(Duration.seconds(10))
      }
      const exits = yield* Effect.forEach(fibers, Fiber.await)
      const succeeded = exits.filter(Exit.isSuccess)
      const [provider] = (yield* sim.stats).keys
      // the run did see trouble, or this test would prove little
      expect(provider!.rateLimited).toBeGreaterThan(0)
      expect(provider!.overloaded).toBeGreaterThan(0)

      const text = yield* Prometheus.text()
      const families = parse(text)
      const requests = (outcome: string) => valueOf(families, "sluice_requests_total", { key, outcome })
      expect(requests("ok")).toBe(succeeded.length)
      expect(requests("ok")).toBe(provider!.accepted)
      expect(requests("rate_limited")).toBe(provider!.rateLimited)
      expect(requests("overloaded")).toBe(provider!.overloaded)
      expect(valueOf(families, "sluice_tokens_total", { key, direction: "input" })).toBe(provider!.inputTokens)
      expect(valueOf(families, "sluice_tokens_total", { key, direction: "output" })).toBe(provider!.outputTokens)
      const price = (yield* Pricing.make()).table[MODEL]!
      expect(valueOf(families, "sluice_cost_usd_total", { key })).toBeCloseTo(
        (provider!.inputTokens * price.inputPerMTok + provider!.outputTokens * price.outputPerMTok) / 1e6,
        9
      )
      // every attempt passed the limiter once, and every attempt but a call's first is a retry
      const attempts = sumOf(families, "sluice_requests_total", { key })
      expect(sumOf(families, "sluice_limiter_grants_total", { key })).toBe(attempts)
      expect(sumOf(families, "sluice_call_retries_total", { key })).toBe(attempts - exits.length)
      expect(valueOf(families, "sluice_limiter_wait_seconds_count", { key, class: "normal" })).toBe(attempts)
      // the families carry their documentation and types
      expect(families.get("sluice_requests_total")?.type).toBe("counter")
      expect(families.get("sluice_limiter_wait_seconds")?.type).toBe("histogram")
      expect(families.get("sluice_quota_time_left_seconds")?.type).toBe("gauge")
      expect(families.get("sluice_requests_total")?.help).toContain("by key and outcome")
      expect(valueOf(families, "sluice_limiter_wait_seconds_bucket", { key, class: "normal", le: "+Inf" })).toBe(
        attempts
      )
    }).pipe(Effect.provide(governed("prometheus-test/run")), Effect.withRandom(Random.make(5))))

  it.effect("label values and help text are escaped, names sanitised, and every kind of metric renders", () =>
    Effect.gen(function*() {
      const awkward = "a \"quoted\" back\\slash\nand a new line"
      yield* Metric.increment(
        Metric.tagged(
          Metric.counter("prometheus.test-odd name", { description: "help with a \\ and a\nline" }),
          "weird-label",
          awkward
        )
      )
      yield* Metric.set(Metric.gauge("prometheus_test_gauge").pipe(Metric.tagged("k", "v")), Number.POSITIVE_INFINITY)
      yield* Metric.update(
        Metric.histogram("prometheus_test_seconds", MetricBoundaries.fromIterable([0.5, 1])).pipe(
          Metric.tagged("k", "v")
        ),
        0.7
      )
      yield* Metric.update(
        Metric.summary({
          name: "prometheus_test_summary",
          maxAge: "1 minute",
          maxSize: 10,
          error: 0.01,
          quantiles: [0.5, 0.9]
        }),
        3
      )
      yield* Metric.update(Metric.frequency("prometheus_test_frequency"), "x")
      const families = parse(yield* Prometheus.text({ prefix: "prometheus" }))
      expect([...families.keys()].every((name) => name.startsWith("prometheus"))).toBe(true)
      const odd = families.get("prometheus_test_odd_name_total")
      expect(odd?.type).toBe("counter")
      expect(odd?.help).toBe("help with a \\\\ and a\\nline")
      expect(odd?.samples[0]?.labels.weird_label).toBe(awkward)
      expect(valueOf(families, "prometheus_test_gauge", { k: "v" })).toBe(Number.POSITIVE_INFINITY)
      expect(valueOf(families, "prometheus_test_seconds_bucket", { k: "v", le: "0.5" })).toBe(0)
      expect(valueOf(families, "prometheus_test_seconds_bucket", { k: "v", le: "1" })).toBe(1)
      expect(valueOf(families, "prometheus_test_seconds_sum", { k: "v" })).toBe(0.7)
      expect(families.get("prometheus_test_summary")?.type).toBe("summary")
      expect(valueOf(families, "prometheus_test_summary", { quantile: "0.5" })).toBe(3)
      expect(valueOf(families, "prometheus_test_frequency_total", { value: "x" })).toBe(1)
    }))

  it.live("the endpoint serves the exposition with its content type; other paths are 404", () =>
    Effect.gen(function*() {
      yield* Metric.increment(
        Metric.tagged(Metric.tagged(Metrics.requests, "key", "prometheus-test/http"), "outcome", "ok")
      )
      const client = yield* HttpClient.HttpClient
      const response = yield* client.get("/metrics")
      expect(response.status).toBe(200)
      expect(response.headers["content-type"]).toBe(Prometheus.contentType)
      const families = parse(yield* response.text)
      expect(valueOf(families, "sluice_requests_total", { key: "prometheus-test/http", outcome: "ok" })).toBe(1)
      expect((yield* client.get("/elsewhere")).status).toBe(404)
    }).pipe(Effect.provide(Prometheus.layerServer().pipe(Layer.provideMerge(NodeHttpServer.layerTest))), Effect.scoped))
})
