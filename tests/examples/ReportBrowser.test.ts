/**
 * The run report as a reader sees it: a small real run of the extraction job
 * (the simulator under a tight quota, on the TestClock) rendered to a file and
 * opened in headless Chromium, driven by playwright-core. The page must load
 * without a script error or a console error, every chart must have plotted
 * data, and in each "used and allowed" chart the run's use must never rise above
 * what the quota allowed: Sluice governed the run.
 *
 * Chromium is the system's (`/usr/bin/chromium`, Debian's `chromium` package;
 * `CHROMIUM_PATH` overrides): without it this suite fails, saying how to
 * install it, rather than passing on a fallback. `.ci/run` installs it.
 *
 * `SLUICE_REFRESH_REPORT_PNG=1` also screenshots the page to docs/report.png;
 * `SLUICE_REPORT_HTML=<file>` checks (and screenshots) that report instead of
 * this test's run, e.g. one written by `pnpm start --report <file>`.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { syntheticSource } from "@sluice/examples/extract/Documents"
import * as Job from "@sluice/examples/extract/Job"
import * as Report from "@sluice/examples/extract/Report"
import * as Store from "@sluice/examples/extract/Store"
import { allowance, limitOf, type Limits } from "@sluice/examples/extract/Summary"
import { SimulatedClient } from "@sluice/simulator"
import { Data, Effect, Layer, TestClock } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { chromium } from "playwright-core"
import { afterAll } from "vitest"

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const refreshPng = process.env.SLUICE_REFRESH_REPORT_PNG === "1"
const givenReport = process.env.SLUICE_REPORT_HTML

const dir = mkdtempSync(join(tmpdir(), "sluice-report-browser-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Input tokens bind: 60 documents of about 700 tokens against 20,000 a minute take about two minutes. */
const limits: Limits = { requestsPerMinute: 60, inputTokensPerMinute: 20_000, outputTokensPerMinute: 8_000 }

const dimensions = ["requests", "inputTokens", "outputTokens"] as const

class BrowserFailed extends Data.TaggedError("BrowserFailed")<{ readonly step: string; readonly cause: unknown }> {
  override get message() {
    return `${this.step}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** Runs the job on the TestClock, a second at a time, and renders its report. */
const reportOfARun = Effect.gen(function*() {
  const fiber = yield* Effect.fork(Job.run({
    source: syntheticSource(60, 7),
    model: "claude-haiku-4-5",
    limits,
    timeScale: 1,
    concurrency: Job.defaultConcurrency(limits),
    job: "report-browser"
  }))
  for (let second = 0; second < 3_600; second++) {
    const exit = yield* fiber.poll
    if (exit._tag === "Some") {
      const result = yield* exit.value
      // The quota bound this run (else the charts would show nothing near a limit): input tokens came near
      // their limit in some trailing minute, and the run used most of what the quota allowed.
      const last = result.samples.at(-1)!
      expect(Math.max(...Report.trailingMinute(result.samples, "inputTokens"))).toBeGreaterThan(
        0.8 * limits.inputTokensPerMinute
      )
      expect(last.inputTokens).toBeGreaterThan(0.8 * allowance(limits.inputTokensPerMinute, last.quotaMinutes))
      // In the numbers as on the page: at no sample did the run use more than the quota allowed.
      for (const dimension of dimensions) {
        const over = result.samples.filter((sample) =>
          sample[dimension] > allowance(limitOf(limits, dimension), sample.quotaMinutes)
        )
        expect([dimension, over]).toEqual([dimension, []])
      }
      return Report.render({
        title: "Sluice extraction run",
        generatedAt: "2026-12-02T00:00:00.000Z",
        model: "claude-haiku-4-5",
        limits,
        samples: result.samples,
        summary: result.summary,
        notes: result.notes
      })
    }
    yield* TestClock.adjust("1 second")
  }
  return yield* Effect.dieMessage("the job did not finish within an hour of test time")
}).pipe(
  Effect.provide(Layer.mergeAll(
    Store.layer.pipe(Layer.provideMerge(SqliteClient.layer({ filename: join(dir, "run.db") }))),
    SimulatedClient.layer({
      quota: limits,
      latency: { baseMs: 500, perOutputTokenMs: 5, jitterMs: 200 },
      seed: 5
    })
  ))
)

/** What the page shows of one chart: its size on screen, and each plotted series' points in SVG coordinates. */
interface DrawnChart {
  readonly id: string
  readonly width: number
  readonly height: number
  readonly series: ReadonlyArray<{ readonly name: string; readonly points: ReadonlyArray<readonly [number, number]> }>
}

const missing = `No Chromium at ${chromiumPath}: the report's browser test needs one. Install Debian's package ` +
  "(`sudo apt-get install chromium`; bash .ci/run does so when it is missing) or set CHROMIUM_PATH."

/** Headless Chromium, closed on every exit. */
const browser = Effect.acquireRelease(
  Effect.tryPromise({
    try: () => chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] }),
    catch: (cause) => new BrowserFailed({ step: existsSync(chromiumPath) ? `launch ${chromiumPath}` : missing, cause })
  }),
  (b) => Effect.promise(() => b.close())
)

/** The little of the DOM read in the page (the repository's TypeScript has no DOM library). */
interface PageElement {
  readonly tagName: string
  getAttribute(name: string): string | null
  querySelectorAll(selector: string): ArrayLike<PageElement>
  getBoundingClientRect(): { readonly width: number; readonly height: number }
}

/** Opens `file` in Chromium: the errors the page raised or logged, and its charts as drawn. */
const open = (file: string, screenshot: string | undefined) =>
  Effect.gen(function*() {
    const b = yield* browser
    const page = yield* Effect.tryPromise({
      try: () => b.newPage({ viewport: { width: 1150, height: 1180 } }),
      catch: (cause) => new BrowserFailed({ step: "open a page", cause })
    })
    const errors: Array<string> = []
    page.on("pageerror", (error) => errors.push(`page error: ${error.message}`))
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(`console error: ${message.text()}`)
    })
    page.on("requestfailed", (request) => errors.push(`request failed: ${request.url()}`))
    yield* Effect.tryPromise({
      try: () => page.goto(pathToFileURL(file).href, { waitUntil: "load" }),
      catch: (cause) => new BrowserFailed({ step: `load ${file}`, cause })
    })
    const charts = yield* Effect.tryPromise({
      try: () =>
        page.$$eval("svg[data-chart]", (svgs) =>
          (svgs as unknown as ReadonlyArray<PageElement>).map((svg) => {
            const box = svg.getBoundingClientRect()
            return {
              id: svg.getAttribute("data-chart") ?? "",
              width: box.width,
              height: box.height,
              series: Array.from(svg.querySelectorAll("[data-series]"), (shape) => ({
                name: shape.getAttribute("data-series") ?? "",
                points: shape.tagName === "circle"
                  ? [[Number(shape.getAttribute("cx")), Number(shape.getAttribute("cy"))] as const]
                  : (shape.getAttribute("points") ?? "").split(" ").filter((p) => p !== "").map((p) => {
                    const [x, y] = p.split(",").map(Number)
                    return [x!, y!] as const
                  })
              }))
            }
          })),
      catch: (cause) => new BrowserFailed({ step: "read the charts", cause })
    })
    if (screenshot !== undefined) {
      yield* Effect.tryPromise({
        try: () => page.screenshot({ path: screenshot, fullPage: false }),
        catch: (cause) => new BrowserFailed({ step: `screenshot to ${screenshot}`, cause })
      })
    }
    return { errors, charts: charts as ReadonlyArray<DrawnChart> }
  })

const expectedCharts = [...dimensions.flatMap((d) => [d, `${d}Allowed`]), "queue", "errors", "done"]

describe("the run report in headless Chromium", () => {
  it("finds Chromium (install Debian's chromium package, as .ci/run does, or set CHROMIUM_PATH)", () => {
    expect(existsSync(chromiumPath), missing).toBe(true)
  })

  it.scoped("renders a governed run's report with no script error, data in every chart, and use never above the allowance", () =>
    Effect.gen(function*() {
      const html = givenReport === undefined ? yield* reportOfARun : readFileSync(givenReport, "utf8")
      const file = join(dir, "report.html")
      writeFileSync(file, html)
      const screenshot = refreshPng ? resolve(import.meta.dirname, "../../docs/report.png") : undefined
      const { charts, errors } = yield* open(file, screenshot)

      expect(errors).toEqual([])
      expect(charts.map((chart) => chart.id)).toEqual(expectedCharts)
      for (const chart of charts) {
        // On screen, not collapsed; every series has points, each a pair of finite coordinates.
        expect([chart.id, chart.width > 300 && chart.height > 100]).toEqual([chart.id, true])
        expect(chart.series.length).toBeGreaterThan(0)
        for (const series of chart.series) {
          expect([chart.id, series.name, series.points.length > 1]).toEqual([chart.id, series.name, true])
          for (const [x, y] of series.points) expect(Number.isFinite(x) && Number.isFinite(y)).toBe(true)
        }
      }
      // SVG's y grows downwards: use at or under the allowance is drawn at or below it (0.1 for rounding).
      for (const dimension of dimensions) {
        const chart = charts.find((c) => c.id === `${dimension}Allowed`)!
        const used = chart.series.find((s) => s.name === "value")!.points
        const allowed = chart.series.find((s) => s.name === "limit")!.points
        expect(used.length).toBe(allowed.length)
        const above = used.filter(([, y], i) => y < allowed[i]![1] - 0.1)
        expect([dimension, above]).toEqual([dimension, []])
      }
    }))
})
