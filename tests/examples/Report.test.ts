/**
 * The run report is pure: these render it from samples built here and read the
 * HTML back (charts by `data-chart`, lines by `data-series`).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Report from "@sluice/examples/extract/Report"
import { allowance, type Limits, type Sample, type Summary } from "@sluice/examples/extract/Summary"

const limits: Limits = { requestsPerMinute: 2_000, inputTokensPerMinute: 4_000_000, outputTokensPerMinute: 200_000 }
const noLimits: Limits = { requestsPerMinute: 0, inputTokensPerMinute: 0, outputTokensPerMinute: 0 }
const summary: Summary = {
  documents: 60,
  succeeded: 58,
  failed: 2,
  shed: 0,
  overBudget: 0,
  skipped: 0,
  http429: 1,
  http529: 0,
  retries: 3,
  inputTokens: 123_456,
  outputTokens: 7_890,
  costUsd: 0.1234,
  wallSeconds: 61.5,
  requestsPerMinute: 1_500,
  inputTokensPerMinute: 3_000_000,
  outputTokensPerMinute: 150_000,
  interrupted: false
}
/**
 * The sample at second `at` of a run counting 1,500 requests, 3,000,000 input and
 * 150,000 output tokens a minute, each scaled by `f` (0 gives an all-zero sample).
 */
const sample = (at: number, f = 1): Sample => ({
  atSeconds: at,
  quotaMinutes: at / 60,
  requests: 25 * at * f,
  inputTokens: 50_000 * at * f,
  outputTokens: 2_500 * at * f,
  queue: { interactive: 0, normal: (at % 3) * f, batch: 10 * f },
  inFlight: 8 * f,
  done: at * f,
  http429: at > 30 ? f : 0,
  http529: 0,
  retries: Math.floor(at / 20) * f,
  costUsd: (at / 500) * f
})
const input = (samples: ReadonlyArray<Sample>, extra: Partial<Report.ReportInput> = {}): Report.ReportInput => ({
  title: "Run",
  generatedAt: "2026-11-22T00:00:00Z",
  model: "claude-haiku-4-5",
  limits,
  samples,
  summary,
  notes: [],
  ...extra
})

/** The `<svg>` element of one chart, or "" when the page has none. */
const svgOf = (html: string, chart: string): string => {
  const start = html.indexOf(`data-chart="${chart}"`)
  return start < 0 ? "" : html.slice(start, html.indexOf("</svg>", start))
}
/** The points of one series' polyline in one chart. */
const seriesPoints = (html: string, chart: string, series: string): ReadonlyArray<readonly [number, number]> => {
  const match = svgOf(html, chart).match(new RegExp(`data-series="${series}"[^>]*points="([^"]*)"`))
  return (match?.[1] ?? "").split(" ").filter((p) => p !== "").map((p) => {
    const [x, y] = p.split(",").map(Number)
    return [x!, y!] as const
  })
}
/** The text of each `<text>` in one chart. */
const labels = (html: string, chart: string): ReadonlyArray<string> =>
  Array.from(svgOf(html, chart).matchAll(/<text[^>]*>([^<]*)<\/text>/g), (m) => m[1]!)

const charts = [
  "requests",
  "requestsAllowed",
  "inputTokens",
  "inputTokensAllowed",
  "outputTokens",
  "outputTokensAllowed",
  "queue",
  "errors",
  "done"
] as const

describe("the run report", () => {
  const samples = Array.from({ length: 60 }, (_, i) => sample(i + 1))
  const html = Report.render(input(samples))

  it("is one self-contained document: no script, no stylesheet link, no URL but the SVG namespace", () => {
    expect(html.startsWith("<!doctype html>")).toBe(true)
    expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|url\(/i)
    expect(html).toContain("http://www.w3.org/2000/svg")
    expect(html.replaceAll("http://www.w3.org/2000/svg", "")).not.toMatch(/https?:\/\/|\/\/[a-z]/i)
  })

  it("charts every sample of each series, with the limit where the scale puts it", () => {
    for (const chart of charts) expect(html).toContain(`data-chart="${chart}"`)
    const used = seriesPoints(html, "requests", "value")
    expect(used.length).toBe(60)
    const limit = seriesPoints(html, "requests", "limit")
    // The values (at most 1,500 in a minute) stay under the limit (2,000), so the limit sets the range.
    const scale = Report.scale(60, 2_000 * 1.1)
    expect(limit.length).toBe(2)
    for (const [, y] of limit) expect(y).toBeCloseTo(Report.yOf(scale, 2_000), 1)
    // One second in, the trailing minute holds that second's 25 requests; a minute in, the minute's 1,500.
    expect(used[0]![1]).toBeCloseTo(Report.yOf(scale, 25), 1)
    expect(used.at(-1)![1]).toBeCloseTo(Report.yOf(scale, 1_500), 1)
    // The limit runs across the whole x axis.
    expect(limit[0]![0]).toBeCloseTo(Report.xOf(scale, 0), 1)
    expect(limit[1]![0]).toBeCloseTo(Report.xOf(scale, 60), 1)
    expect(svgOf(html, "requests")).toMatch(/data-series="limit"[^>]*stroke-dasharray/)
    for (const series of ["interactive", "normal", "batch", "inFlight"]) {
      expect(seriesPoints(html, "queue", series).length).toBe(60)
    }
    for (const series of ["http429", "http529", "retries"]) expect(seriesPoints(html, "errors", series).length).toBe(60)
    // Cumulative retries rise, which is drawn higher (a smaller y).
    const retries = seriesPoints(html, "errors", "retries")
    expect(retries.at(-1)![1]).toBeLessThan(retries[0]![1])
  })

  it("stretches a rate chart's range over values above the limit", () => {
    const over = Report.render(input(samples.map((s) => sample(s.atSeconds, 2)))) // 3,000 requests a minute against 2,000
    const scale = Report.scale(60, 3_000 * 1.1)
    expect(seriesPoints(over, "requests", "limit")[0]![1]).toBeCloseTo(Report.yOf(scale, 2_000), 1)
    const top = Math.min(...seriesPoints(over, "requests", "value").map(([, y]) => y))
    expect(top).toBeCloseTo(Report.yOf(scale, 3_000), 1)
    expect(top).toBeGreaterThanOrEqual(scale.top)
  })

  it("gives every chart a title, a legend and labelled ticks on both axes", () => {
    for (const chart of charts) {
      const svg = svgOf(html, chart)
      expect(svg).toMatch(/viewBox="0 0 \d+ \d+"/)
      expect(svg).toMatch(/<title>[^<]+<\/title>/)
      expect(labels(html, chart)).toContain("seconds")
      expect(labels(html, chart).length).toBeGreaterThanOrEqual(6)
    }
    expect(labels(html, "requests")).toEqual(expect.arrayContaining(["0", "500", "1k", "2k", "counted", "limit"]))
    expect(labels(html, "requestsAllowed")).toEqual(expect.arrayContaining(["used", "allowed"]))
    expect(labels(html, "queue")).toEqual(expect.arrayContaining(["interactive", "normal", "batch", "in flight"]))
  })

  it("counts the x axis in minutes once the run is longer than five minutes", () => {
    const long = Report.render(input(Array.from({ length: 60 }, (_, i) => sample((i + 1) * 10)))) // 10 minutes
    for (const chart of charts) {
      expect(labels(long, chart)).toContain("minutes")
      expect(labels(long, chart)).not.toContain("seconds")
    }
    expect(labels(long, "requests")).toEqual(expect.arrayContaining(["0", "2", "4", "10"]))
    const last = seriesPoints(long, "requests", "value").at(-1)!
    expect(last[0]).toBeCloseTo(Report.xOf(Report.scale(10, 1), 10), 1)
    // Ten minutes at 1,500 a minute against 2,000: the trailing minute reads 1,500 throughout, not 25 a second.
    const scale = Report.scale(10, 2_000 * 1.1)
    for (const [, y] of seriesPoints(long, "requests", "value").slice(5)) {
      expect(y).toBeCloseTo(Report.yOf(scale, 1_500), 1)
    }
  })

  it("draws each series in one colour in every chart, and no two series alike", () => {
    const strokes = new Map<string, Set<string>>()
    for (const m of html.matchAll(/data-series="(\w+)"[^>]*stroke="(#[0-9a-f]{6})"/g)) {
      strokes.set(m[1]!, (strokes.get(m[1]!) ?? new Set()).add(m[2]!))
    }
    expect([...strokes.keys()].sort()).toEqual(
      ["batch", "done", "http429", "http529", "inFlight", "interactive", "limit", "normal", "retries", "value"]
    )
    for (const [series, colours] of strokes) expect([series, colours.size]).toEqual([series, 1])
    const used = [...strokes.values()].map((set) => [...set][0])
    expect(new Set(used).size).toBe(used.length)
  })

  it("rounds every number it writes into an SVG attribute to one decimal", () => {
    const odd = Report.render(input(Array.from({ length: 37 }, (_, i) => sample((i + 1) * 1.37, 1 / 3))))
    const attributes = Array.from(odd.matchAll(/<svg[\s\S]*?<\/svg>/g), (m) => m[0])
      .flatMap((svg) => Array.from(svg.matchAll(/ [\w-]+="([^"]*)"/g), (m) => m[1]!))
    const numbers = attributes.flatMap((value) => value.match(/-?\d+(?:\.\d+)?/g) ?? [])
    expect(numbers.length).toBeGreaterThan(1_000)
    expect(numbers.filter((n) => /\.\d{2,}/.test(n))).toEqual([])
  })

  it("formats the summary, one row per field, and escapes what it is given", () => {
    const escaped = Report.render(input(samples, {
      title: "<b>x</b>",
      notes: ["<script>alert(1)</script>", "resume with --resume"],
      model: "m&m",
      generatedAt: "\"now\""
    }))
    expect(escaped).toContain("&lt;script&gt;alert(1)&lt;/script&gt;")
    expect(escaped).not.toContain("<script>")
    expect(escaped).toContain("<title>&lt;b&gt;x&lt;/b&gt;</title>")
    expect(escaped).toContain("m&amp;m")
    expect(escaped).toContain("&quot;now&quot;")
    expect(escaped).toContain("<li>resume with --resume</li>")
    const rows = Array.from(
      html.matchAll(/<tr><td>([^<]*)<\/td><td>([^<]*)<\/td><\/tr>/g),
      (m) => [m[1]!, m[2]!] as const
    )
    expect(rows.length).toBe(Object.keys(summary).length)
    expect(new Set(rows.map(([label]) => label)).size).toBe(rows.length)
    const row = (label: string) => rows.find(([l]) => l === label)?.[1]
    expect(row("Input tokens")).toBe("123,456")
    expect(row("Cost")).toBe("$0.1234")
    expect(row("Wall time")).toBe("61.5 s")
    expect(row("Requests per minute")).toBe("1,500 (75 % of 2,000)")
    expect(row("Input tokens per minute")).toBe("3,000,000 (75 % of 4,000,000)")
    expect(row("Stopped early")).toBe("no")
    expect(html).toMatch(/58 of 60 documents extracted, 2 not \(failed 2/)
  })

  it("never prints NaN or Infinity: no samples, one sample, all zeros, a limit of 0", () => {
    const zeros = samples.map((s) => sample(s.atSeconds, 0))
    const cases = {
      none: Report.render(input([])),
      one: Report.render(input([sample(0)])),
      zeros: Report.render(input(zeros, { summary: { ...summary, documents: 0, wallSeconds: 0 } })),
      noLimit: Report.render(input(samples, { limits: noLimits })),
      everythingZero: Report.render(input([sample(0, 0)], { limits: noLimits }))
    }
    for (const [name, page] of Object.entries(cases)) {
      expect([name, page.match(/NaN|Infinity|undefined/)]).toEqual([name, null])
    }
    expect(cases.none).toContain("No samples")
    expect(cases.none).not.toContain("<svg")
    // One sample: a dot for the value, and the limit still spans the axis.
    expect(svgOf(cases.one, "requests")).toMatch(/<circle data-series="value"/)
    const [from, to] = seriesPoints(cases.one, "requests", "limit")
    expect(to![0]).toBeGreaterThan(from![0])
    // A limit of 0 sits on the x axis and is never divided by.
    const scale = Report.scale(60, 1_500 * 1.1)
    expect(seriesPoints(cases.noLimit, "requests", "limit")[0]![1]).toBeCloseTo(Report.yOf(scale, 0), 1)
    expect(cases.noLimit).toContain("1,500 (limit 0)")
  })

  it("charts what the provider counts: a burst at the start reads as the minute's count, the steady run at the limit as the limit", () => {
    // The bucket starts full: 600,000 input tokens in the first second, then the refill's 10,000 a second.
    const tokens = { ...limits, inputTokensPerMinute: 600_000 }
    const burst = Array.from({ length: 181 }, (_, at) => ({
      ...sample(at),
      inputTokens: at === 0 ? 0 : 600_000 + 10_000 * (at - 1)
    }))
    const counted = Report.trailingMinute(burst, "inputTokens")
    expect(counted[1]).toBe(600_000) // not 600,000 × 6 extrapolated from a 10-second window
    expect(counted[60]).toBeCloseTo(1_190_000, 3) // the full bucket and the refill of the first minute
    for (const value of counted.slice(61)) expect(value).toBeCloseTo(600_000, 3) // at the limit, read as the limit
    const page = Report.render(input(burst, { limits: tokens }))
    const scale = Report.scale(180, 1_190_000 * 1.1)
    const drawn = seriesPoints(page, "inputTokens", "value")
    expect(drawn.length).toBe(181)
    expect(drawn.at(-1)![1]).toBeCloseTo(Report.yOf(scale, 600_000), 1)
    expect(seriesPoints(page, "inputTokens", "limit")[0]![1]).toBeCloseTo(Report.yOf(scale, 600_000), 1)
  })

  it("measures the trailing minute in the provider's minutes, interpolating between samples", () => {
    // A simulator at 10× speed: a provider minute lasts 6 s; 100 requests a provider minute, sampled every 2 s.
    const fast = Array.from({ length: 16 }, (_, i) => ({
      ...sample(2 * i),
      quotaMinutes: (2 * i * 10) / 60,
      requests: (100 * 2 * i * 10) / 60
    }))
    const counted = Report.trailingMinute(fast, "requests")
    expect(counted[0]).toBe(0)
    expect(counted[1]).toBeCloseTo(100 / 3, 9) // a third of a minute since the start
    for (const value of counted.slice(3)) expect(value).toBeCloseTo(100, 9) // 6 s back falls between samples
    expect(Report.trailingMinute([], "requests")).toEqual([])
  })

  it("draws what the run used since the start against the allowance: the full bucket at the start plus the refill since", () => {
    const used = seriesPoints(html, "requestsAllowed", "value")
    const allowed = seriesPoints(html, "requestsAllowed", "limit")
    expect(used.length).toBe(60)
    expect(allowed.length).toBe(60)
    // At 60 s: 1,500 requests used of 2,000 × (1 + 1) = 4,000 allowed, on a range up to 4,000 × 1.1.
    const scale = Report.scale(60, 4_000 * 1.1)
    expect(used.at(-1)![1]).toBeCloseTo(Report.yOf(scale, 1_500), 1)
    expect(allowed.at(-1)![1]).toBeCloseTo(Report.yOf(scale, allowance(2_000, 1)), 1)
    expect(allowed[0]![1]).toBeCloseTo(Report.yOf(scale, 2_000 * (1 + 1 / 60)), 1)
    expect(svgOf(html, "requestsAllowed")).toMatch(/data-series="limit"[^>]*stroke-dasharray/)
    expect(labels(html, "inputTokensAllowed")).toEqual(expect.arrayContaining(["used", "allowed"]))
  })

  it("says when the run was stopped early", () => {
    const stopped = Report.render(input(samples, { summary: { ...summary, interrupted: true } }))
    expect(stopped).toContain("stopped early")
    expect(stopped).toMatch(/<td>Stopped early<\/td><td>yes<\/td>/)
  })
})

describe("ticks", () => {
  it("are round numbers from 0 up to the maximum", () => {
    expect(Report.ticks(2_200)).toEqual([0, 500, 1_000, 1_500, 2_000])
    expect(Report.ticks(4_400_000)).toEqual([0, 1_000_000, 2_000_000, 3_000_000, 4_000_000])
    expect(Report.ticks(0.66)).toEqual([0, 0.2, 0.4, 0.6])
    expect(Report.ticks(0)).toEqual([0])
    expect(Report.ticks(Number.NaN)).toEqual([0])
  })

  it("are whole numbers for counts", () => {
    expect(Report.ticks(1.1, true)).toEqual([0, 1])
    expect(Report.ticks(11, true)).toEqual([0, 5, 10])
    const idle = Report.render(input(Array.from({ length: 10 }, (_, i) => sample(i, 0))))
    const numeric = labels(idle, "errors").filter((label) => /^[\d.]+$/.test(label))
    expect(numeric.length).toBeGreaterThan(2)
    for (const label of numeric) expect(label).toMatch(/^\d+$/)
  })
})
