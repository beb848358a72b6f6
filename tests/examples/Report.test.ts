import { describe, expect, it } from "@effect/vitest"
import * as Report from "@sluice/examples/extract/Report"
import type { Sample, Summary } from "@sluice/examples/extract/Summary"

const limits = { requestsPerMinute: 2_000, inputTokensPerMinute: 4_000_000, outputTokensPerMinute: 200_000 }
const summary: Summary = {
  documents: 60, succeeded: 58, failed: 2, shed: 0, overBudget: 0, skipped: 0, http429: 1, http529: 0, retries: 3,
  inputTokens: 123_456, outputTokens: 7_890, costUsd: 0.1234, wallSeconds: 61.5, requestsPerMinute: 1_500,
  inputTokensPerMinute: 3_000_000, outputTokensPerMinute: 150_000, interrupted: false
}
const sample = (i: number, f = 1): Sample => ({
  atSeconds: i, requestsPerMinute: 1_500 * f, inputTokensPerMinute: 3_000_000 * f, outputTokensPerMinute: 150_000 * f,
  queue: { interactive: 0, normal: i % 3, batch: 10 * f }, inFlight: 8, done: i, http429: i > 30 ? 1 : 0, http529: 0, retries: Math.floor(i / 20), costUsd: i / 500
})
const input = (samples: ReadonlyArray<Sample>, extra: Partial<Report.ReportInput> = {}): Report.ReportInput => ({
  title: "Run", generatedAt: "2026-11-22T00:00:00Z", model: "claude-haiku-4-5", limits, samples, summary, notes: [], ...extra
})
const seriesPoints = (html: string, chart: string, series: string) => {
  const svg = html.slice(html.indexOf(`data-chart="${chart}"`))
  const match = svg.slice(0, svg.indexOf("</svg>")).match(new RegExp(`data-series="${series}"[^>]*points="([^"]*)"`))
  return (match?.[1] ?? "").split(" ").filter((p) => p !== "").map((p) => p.split(",").map(Number) as [number, number])
}

describe("the run report", () => {
  const samples = Array.from({ length: 60 }, (_, i) => sample(i + 1))
  const html = Report.render(input(samples))

  it("is one self-contained document: no script, no stylesheet link, no URL but the SVG namespace", () => {
    expect(html.startsWith("<!doctype html>")).toBe(true)
    expect(html).not.toMatch(/<script|<link|<img/i)
    expect(html.replaceAll("http://www.w3.org/2000/svg", "")).not.toMatch(/https?:\/\//)
  })

  it("charts every sample of each series, with the limit where the scale puts it", () => {
    for (const chart of ["requests", "inputTokens", "outputTokens", "queue", "errors", "done"]) expect(html).toContain(`data-chart="${chart}"`)
    const used = seriesPoints(html, "requests", "value")
    expect(used.length).toBe(60)
    const limit = seriesPoints(html, "requests", "limit")
    const scale = Report.scale(60, 2_000 * 1.1)
    expect(limit[0]![1]).toBeCloseTo(Report.yOf(scale, 2_000), 0)
    // A higher rate is drawn higher (a smaller y).
    expect(used[0]![1]).toBeGreaterThan(limit[0]![1])
    expect(seriesPoints(html, "queue", "batch").length).toBe(60)
    expect(seriesPoints(html, "errors", "retries").at(-1)![1]).toBeLessThan(seriesPoints(html, "errors", "retries")[0]![1])
  })

  it("formats the summary and escapes what it is given", () => {
    const escaped = Report.render(input(samples, { title: "<b>x</b>", notes: ["<script>alert(1)</script>"], model: "m&m" }))
    expect(escaped).toContain("&lt;script&gt;alert(1)&lt;/script&gt;")
    expect(escaped).toContain("&lt;b&gt;x&lt;/b&gt;")
    expect(escaped).toContain("m&amp;m")
    expect(html).toContain("123,456")
    expect(html).toContain("$0.1234")
    expect(html).toContain("3,000,000 (75 % of 4,000,000)")
  })

  it("never prints NaN or Infinity: no samples, one sample, all zeros, a limit of 0", () => {
    const cases = [
      Report.render(input([])),
      Report.render(input([sample(0)])),
      Report.render(input(samples.map((s) => sample(s.atSeconds, 0)))),
      Report.render(input(samples, { limits: { requestsPerMinute: 0, inputTokensPerMinute: 0, outputTokensPerMinute: 0 } }))
    ]
    for (const page of cases) expect(page).not.toMatch(/NaN|Infinity/)
    expect(cases[0]).toContain("No samples")
  })

  it("ticks are round numbers up to the maximum", () => {
    expect(Report.ticks(2_200)).toEqual([0, 500, 1_000, 1_500, 2_000])
    expect(Report.ticks(0)).toEqual([0])
  })
})
