import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { LlmClient } from "@sluice/core"
import type { Source } from "@sluice/examples/extract/Documents"
import { syntheticSource } from "@sluice/examples/extract/Documents"
import * as Job from "@sluice/examples/extract/Job"
import * as Store from "@sluice/examples/extract/Store"
import type { Limits } from "@sluice/examples/extract/Summary"
import { SimulatedClient } from "@sluice/simulator"
import { Deferred, Effect, Fiber, Layer, Stream, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

const dir = mkdtempSync(join(tmpdir(), "sluice-job-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const freshFile = () => join(dir, `job-${++files}.db`)

const tight: Limits = { requestsPerMinute: 30, inputTokensPerMinute: 20_000, outputTokensPerMinute: 6_000 }
const roomy: Limits = {
  requestsPerMinute: 100_000,
  inputTokensPerMinute: 100_000_000,
  outputTokensPerMinute: 10_000_000
}
const simulatorQuota = (limits: Limits) => ({
  quota: limits,
  latency: { baseMs: 500, perOutputTokenMs: 5, jitterMs: 200 },
  seed: 3
})

const sqlite = (filename: string) => Store.layer.pipe(Layer.provideMerge(SqliteClient.layer({ filename })))

const config = (
  source: Source,
  limits: Limits,
  extra: Partial<Job.Config> & { readonly fleet?: undefined } = {}
): Job.Config & { readonly fleet?: undefined } => ({
  source,
  model: "claude-haiku-4-5",
  limits,
  timeScale: 1,
  concurrency: Job.defaultConcurrency(limits),
  job: "test",
  ...extra
})

/** Advances the test clock a second at a time until the fiber is done. */
const drive = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, limitSeconds = 3_600) =>
  Effect.gen(function*() {
    for (let i = 0; i < limitSeconds; i++) {
      const exit = yield* fiber.poll
      if (exit._tag === "Some") return yield* exit.value
      yield* TestClock.adjust("1 second")
    }
    return yield* Effect.dieMessage("the job did not finish")
  })

/** Every document id in each table. */
const tables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
  const failures = yield* sql<
    { doc_id: string; outcome: string; reason: string; attempts: number }
  >`SELECT doc_id, outcome, reason, attempts FROM failures`
  return { extracted, failures }
})

describe("the extraction job", () => {
  it.scoped("under a tight quota every document is extracted with no 429, and the summary matches the database and the provider", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Job.run(config(syntheticSource(80, 5), tight)))
      const result = yield* drive(fiber)
      const { extracted, failures } = yield* tables
      const stats = yield* Effect.flatMap(SimulatedClient.SimulatedStats, (s) => s.stats)
      const judge = stats.keys[0]!
      expect(extracted.length).toBe(80)
      expect(new Set(extracted).size).toBe(80)
      expect(failures).toEqual([])
      expect(result.summary).toMatchObject({ documents: 80, succeeded: 80, failed: 0, http429: 0, interrupted: false })
      expect(judge.rateLimited).toBe(0)
      // The job's own counts agree with what the provider counted.
      expect(result.summary.inputTokens).toBe(judge.inputTokens)
      expect(result.summary.outputTokens).toBe(judge.outputTokens)
      const sql = yield* SqlClient.SqlClient
      const [sums] = yield* sql<
        { input: number; cost: number }
      >`SELECT SUM(input_tokens) AS input, SUM(cost_usd) AS cost FROM extractions`
      expect(sums!.input).toBe(result.summary.inputTokens)
      expect(sums!.cost).toBeCloseTo(result.summary.costUsd, 9)
      // 80 documents against 30 requests a minute: the quota binds, and the job used most of what it allowed.
      expect(result.summary.wallSeconds).toBeGreaterThan(60)
      expect(Math.max(result.utilisation.requests, result.utilisation.inputTokens, result.utilisation.outputTokens))
        .toBeGreaterThan(0.8)
      // Samples were taken through the run and end at the final count.
      expect(result.samples.length).toBeGreaterThan(60)
      expect(result.samples.at(-1)?.done).toBe(80)
    }).pipe(Effect.provide(Layer.mergeAll(sqlite(freshFile()), SimulatedClient.layer(simulatorQuota(tight))))))

  it.scoped("a run interrupted part-way and run again ends with every document in exactly one table, once", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const source = syntheticSource(60, 9)
      const provider = SimulatedClient.layer(simulatorQuota(tight))
      const first = yield* Effect.fork(
        Job.run(config(source, tight)).pipe(Effect.provide(Layer.mergeAll(sqlite(filename), provider)))
      )
      yield* TestClock.adjust("40 seconds")
      yield* Fiber.interrupt(first)
      const partial = yield* tables.pipe(Effect.provide(sqlite(filename)))
      expect(partial.extracted.length).toBeGreaterThan(0)
      expect(partial.extracted.length).toBeLessThan(60)

      const second = yield* Effect.fork(
        Job.run(config(source, tight)).pipe(Effect.provide(Layer.mergeAll(sqlite(filename), provider)))
      )
      const result = yield* drive(second)
      const done = yield* tables.pipe(Effect.provide(sqlite(filename)))
      expect(result.summary.skipped).toBe(partial.extracted.length)
      expect(result.summary.succeeded).toBe(60 - partial.extracted.length)
      expect(done.extracted.length).toBe(60)
      expect(new Set(done.extracted).size).toBe(60)
      expect(done.failures).toEqual([])
    }))

  it.scoped("asked to stop, the job takes no new documents, finishes and records the calls in flight, and says how to resume", () =>
    Effect.gen(function*() {
      const stop = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(Job.run(config(syntheticSource(60, 11), tight, { stop: Deferred.await(stop) })))
      yield* TestClock.adjust("30 seconds")
      yield* Deferred.succeed(stop, undefined)
      const result = yield* drive(fiber)
      const { extracted, failures } = yield* tables
      expect(result.summary.interrupted).toBe(true)
      expect(result.summary.succeeded).toBeGreaterThan(0)
      expect(result.summary.succeeded).toBeLessThan(60)
      // Every document that was started has its row: nothing was left half-done.
      expect(extracted.length + failures.length).toBe(result.summary.succeeded + result.summary.failed)
      expect(result.notes.join(" ")).toContain("Run the same command again to resume")
    }).pipe(Effect.provide(Layer.mergeAll(sqlite(freshFile()), SimulatedClient.layer(simulatorQuota(tight))))))

  it.scoped("documents that cannot be processed land in failures with a reason a person understands", () =>
    Effect.gen(function*() {
      const huge = "word ".repeat(30_000)
      const source: Source = {
        description: "test documents",
        count: 6,
        documents: Stream.fromIterable([
          { id: "fine", text: "Quarterly revenue grew strongly in the energy market." },
          { id: "empty", text: "", problem: "empty document: nothing to extract from" },
          { id: "binary", text: "\u0000\u0001", problem: "not text: it contains NUL bytes (a binary file?)" },
          { id: "huge", text: huge },
          { id: "bad-answer", text: "The model will answer this one wrongly." },
          { id: "also-fine", text: "Patients in the clinical trial improved." }
        ])
      }
      // A provider whose answer for one document breaks the schema.
      const wrongAnswers = Layer.effect(
        LlmClient.LlmClient,
        Effect.map(SimulatedClient.make(simulatorQuota(roomy)), ({ client }) =>
          LlmClient.LlmClient.of({
            ...client,
            complete: (request) =>
              Effect.map(client.complete(request), (response) =>
                request.metadata?.documentId === "bad-answer"
                  ? {
                    ...response,
                    content: [{
                      type: "tool_use",
                      id: "t",
                      name: "record_extraction",
                      input: { title: "", summary: "s", keywords: [], category: "sports", sentiment: "happy" }
                    }]
                  }
                  : response)
          }))
      )
      const limits = { ...roomy, inputTokensPerMinute: 20_000 }
      const fiber = yield* Effect.fork(Job.run(config(source, limits)).pipe(Effect.provide(wrongAnswers)))
      const result = yield* drive(fiber)
      const { extracted, failures } = yield* tables
      expect(extracted.sort()).toEqual(["also-fine", "fine"])
      const reason = (id: string) => failures.find((row) => row.doc_id === id)?.reason ?? ""
      expect(reason("empty")).toMatch(/empty document/)
      expect(reason("binary")).toMatch(/not text/)
      expect(reason("huge")).toMatch(
        /too large: it needs about [\d,]+ input tokens, more than the 20,000 a minute the quota can ever admit/
      )
      expect(reason("bad-answer")).toMatch(/does not match the extraction schema/)
      expect(reason("bad-answer")).toMatch(/category/)
      expect(failures.find((row) => row.doc_id === "bad-answer")?.attempts).toBe(1)
      expect(failures.find((row) => row.doc_id === "empty")?.attempts).toBe(0)
      expect(result.summary).toMatchObject({ documents: 6, succeeded: 2, failed: 4 })
    }).pipe(Effect.provide(sqlite(freshFile()))))

  it.scoped("a budget stops spending: documents past it are recorded as over budget, not dropped", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(
        Job.run(config(syntheticSource(40, 13), roomy, { budgetUsd: 0.02, concurrency: 4 }))
      )
      const result = yield* drive(fiber)
      const { extracted, failures } = yield* tables
      expect(result.summary.overBudget).toBeGreaterThan(0)
      expect(result.summary.succeeded + result.summary.overBudget).toBe(40)
      expect(extracted.length).toBe(result.summary.succeeded)
      expect(failures.every((row) => row.outcome === "over-budget" && /budget/i.test(row.reason))).toBe(true)
      expect(result.summary.costUsd).toBeLessThanOrEqual(0.02)
    }).pipe(Effect.provide(Layer.mergeAll(sqlite(freshFile()), SimulatedClient.layer(simulatorQuota(roomy))))))
})
