/**
 * The sentence the job's summary and report carry when the quota was the
 * bottleneck: when it appears, which limit it names, and its estimate — from
 * the pure function, then from real runs against the simulator under
 * `TestClock`.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { syntheticSource } from "@sluice/examples/extract/Documents"
import * as Job from "@sluice/examples/extract/Job"
import * as Report from "@sluice/examples/extract/Report"
import * as Store from "@sluice/examples/extract/Store"
import type { Limits } from "@sluice/examples/extract/Summary"
import { bottleneck } from "@sluice/examples/extract/Summary"
import { SimulatedClient } from "@sluice/simulator"
import { Effect, Fiber, Layer, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

const limits: Limits = { requestsPerMinute: 1_000, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 }
const work = { requests: 600, inputTokens: 300_000, outputTokens: 20_000 }
const calm = { wallSeconds: 560, timeScale: 1, waitP95Seconds: 0.4, http429: 0, attempts: 600 }

describe("the bottleneck sentence", () => {
  it("is absent when waits stay under two seconds at p95 and 429s under half a percent", () => {
    expect(bottleneck({ work, limits, ...calm })).toBeUndefined()
    expect(bottleneck({ work, limits, ...calm, http429: 3 })).toBeUndefined() // exactly 0.5 %
    expect(bottleneck({ work, limits, ...calm, waitP95Seconds: undefined })).toBeUndefined()
  })

  it("names the binding limit and estimates the run at twice it from the work per dimension over the limit", () => {
    const found = bottleneck({ work, limits, ...calm, waitP95Seconds: 40 })!
    expect(found.dimension).toBe("inputTokens")
    // least time: (300,000 − 30,000) / 30,000 = 9 min of the 9m20s; at 60,000: (300,000 − 60,000) / 60,000 = 4 min;
    // output's own least time (20,000 − 8,000) / 8,000 = 1.5 min does not bind; the 20 s the quota does not explain stay
    expect(found.estimatedSeconds).toBeCloseTo(4 * 60 + 20, 6)
    expect(found.sentence).toBe(
      "Input tokens per minute bound this run (waits of 40.0 s at p95): at 2× that limit (60,000 a minute) it would have finished in about 4m20s instead of 9m20s."
    )
  })

  it("takes 429s above half a percent as a sign too, and lets the next limit bind when the first is raised", () => {
    const found = bottleneck({ work: { ...work, outputTokens: 40_000 }, limits, ...calm, http429: 4 })!
    expect(found.sentence).toContain("0.7 % of calls answered 429")
    // output needs (40,000 − 8,000) / 8,000 = 4 min as well: at 2× the input limit the run still takes 4 min + 20 s
    expect(found.dimension).toBe("inputTokens")
    expect(found.estimatedSeconds).toBeCloseTo(4 * 60 + 20, 6)
    // a 3× factor: input would need 2.33 min, but output still needs 4
    expect(
      bottleneck({ work: { ...work, outputTokens: 40_000 }, limits, ...calm, http429: 4, factor: 3 })!.estimatedSeconds
    ).toBeCloseTo(4 * 60 + 20, 6)
  })

  it("counts in provider minutes: a simulator at 40× speed gives wall seconds 40 times shorter", () => {
    const found = bottleneck({ work, limits, ...calm, wallSeconds: 14, timeScale: 40, waitP95Seconds: 3 })!
    // 14 s at 40× is 9m20s of provider time, as above
    expect(found.estimatedSeconds).toBeCloseTo((4 * 60 + 20) / 40, 6)
  })

  it("is absent when the work fits in the quota's first minute, whatever the waits", () => {
    expect(
      bottleneck({ work: { requests: 10, inputTokens: 1_000, outputTokens: 500 }, limits, ...calm, waitP95Seconds: 9 })
    ).toBeUndefined()
  })

  it("stands out in the report, under the headline, and is not repeated among the notes", () => {
    const sentence = bottleneck({ work, limits, ...calm, waitP95Seconds: 40 })!.sentence
    const summary = {
      documents: 600,
      succeeded: 600,
      failed: 0,
      shed: 0,
      overBudget: 0,
      skipped: 0,
      http429: 0,
      http529: 0,
      retries: 0,
      inputTokens: 300_000,
      outputTokens: 20_000,
      costUsd: 1,
      wallSeconds: 560,
      requestsPerMinute: 64,
      inputTokensPerMinute: 32_000,
      outputTokensPerMinute: 2_100,
      interrupted: false,
      waitP95Seconds: 40,
      bottleneck: sentence
    }
    const html = Report.render({
      title: "Run",
      generatedAt: "2026-11-22T00:00:00Z",
      model: "claude-haiku-4-5",
      limits,
      samples: [],
      summary,
      notes: [sentence, "Another note."]
    })
    expect(html).toContain(`<p class="bottleneck">${Report.escapeHtml(sentence)}</p>`)
    expect(html.split(Report.escapeHtml(sentence)).length - 1).toBe(1)
    expect(html).toContain("<li>Another note.</li>")
    expect(html).toContain("Limiter wait, 95th percentile")
  })
})

describe("the job's summary", () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bottleneck-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  let files = 0
  const sqlite = () =>
    Store.layer.pipe(Layer.provideMerge(SqliteClient.layer({ filename: join(dir, `run-${++files}.db`) })))
  const simulator = (quota: Limits) =>
    SimulatedClient.layer({ quota, latency: { baseMs: 500, perOutputTokenMs: 5, jitterMs: 200 }, seed: 3 })
  const runOf = (quota: Limits, documents: number) =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Job.run({
        source: syntheticSource(documents, 5),
        model: "claude-haiku-4-5",
        limits: quota,
        timeScale: 1,
        concurrency: Job.defaultConcurrency(quota),
        job: "bottleneck"
      }))
      for (let second = 0; second < 3_600 && fiber.unsafePoll() === null; second++) yield* TestClock.adjust("1 second")
      return yield* Fiber.join(fiber)
    }).pipe(Effect.provide(Layer.mergeAll(sqlite(), simulator(quota))))

  it.scoped("under a tight request limit says that requests bound the run, with a shorter estimate, in the summary and first among the notes", () =>
    Effect.gen(function*() {
      const result = yield* runOf({
        requestsPerMinute: 20,
        inputTokensPerMinute: 1_000_000,
        outputTokensPerMinute: 1_000_000
      }, 60)
      expect(result.summary.waitP95Seconds).toBeGreaterThan(2)
      expect(result.summary.bottleneck).toMatch(
        /^Requests per minute bound this run \(waits of [\d.]+ s at p95\): at 2× that limit \(40 a minute\)/
      )
      expect(result.notes[0]).toBe(result.summary.bottleneck)
      // 60 requests at 20 a minute: at least 2 minutes; at 40 a minute, about half a minute of refill
      expect(result.summary.wallSeconds).toBeGreaterThan(120)
      const estimate = bottleneck({
        work: { requests: 60, inputTokens: result.summary.inputTokens, outputTokens: result.summary.outputTokens },
        limits: { requestsPerMinute: 20, inputTokensPerMinute: 1_000_000, outputTokensPerMinute: 1_000_000 },
        wallSeconds: result.summary.wallSeconds,
        timeScale: 1,
        waitP95Seconds: result.summary.waitP95Seconds,
        http429: 0,
        attempts: 60
      })!
      expect(estimate.estimatedSeconds).toBeLessThan(result.summary.wallSeconds / 2)
    }))

  it.scoped("under roomy limits has no bottleneck sentence", () =>
    Effect.gen(function*() {
      const result = yield* runOf({
        requestsPerMinute: 100_000,
        inputTokensPerMinute: 100_000_000,
        outputTokensPerMinute: 10_000_000
      }, 20)
      expect(result.summary.waitP95Seconds ?? 0).toBeLessThan(2)
      expect(result.summary.bottleneck).toBeUndefined()
    }))
})
