import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { syntheticSource } from "@sluice/examples/extract/Documents"
import * as Job from "@sluice/examples/extract/Job"
import * as Queue from "@sluice/examples/extract/Queue"
import type { Limits } from "@sluice/examples/extract/Summary"
import { SimulatedClient } from "@sluice/simulator"
import { Effect, Fiber, Layer, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

const dir = mkdtempSync(join(tmpdir(), "sluice-fleet-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const freshFile = () => join(dir, `fleet-${++files}.db`)

const tight: Limits = { requestsPerMinute: 60, inputTokensPerMinute: 40_000, outputTokensPerMinute: 12_000 }
const simulatorQuota = (limits: Limits) => ({
  quota: limits,
  latency: { baseMs: 500, perOutputTokenMs: 5, jitterMs: 200 },
  seed: 3
})

const worker = (name: string, workers: number, extra: Partial<Job.Fleet> = {}): Job.Config & { fleet: Job.Fleet } => ({
  source: syntheticSource(0, 1),
  model: "claude-haiku-4-5",
  limits: tight,
  timeScale: 1,
  concurrency: 4,
  job: "fleet-test",
  fleet: { worker: name, lease: "30 seconds", quotaShare: 1 / workers, ...extra }
})

/** Advances the test clock a second at a time until every fiber is done. */
const driveAll = <A, E>(fibers: ReadonlyArray<Fiber.RuntimeFiber<A, E>>, limitSeconds = 3_600) =>
  Effect.gen(function*() {
    for (let i = 0; i < limitSeconds; i++) {
      const exits = yield* Effect.forEach(fibers, (fiber) => fiber.poll)
      if (exits.every((exit) => exit._tag === "Some")) return yield* Effect.forEach(fibers, Fiber.join)
      yield* TestClock.adjust("1 second")
    }
    return yield* Effect.dieMessage("the fleet did not finish")
  })

const tables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
  const failures = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM failures`).map((row) => row.doc_id)
  return { extracted, failures }
})

describe("the extraction job as a fleet", () => {
  it.scoped("three workers over one SQLite database: every document in exactly one table, once", () =>
    Effect.gen(function*() {
      yield* Queue.loadAll(syntheticSource(60, 5).documents)
      const fibers = yield* Effect.forEach(["w1", "w2", "w3"], (name) => Effect.fork(Job.run(worker(name, 3))))
      const results = yield* driveAll(fibers)
      const { extracted, failures } = yield* tables
      expect(extracted.length + failures.length).toBe(60)
      expect(new Set([...extracted, ...failures]).size).toBe(60)
      expect(results.reduce((n, r) => n + r.summary.succeeded + r.summary.failed, 0)).toBe(60)
      expect(results.every((r) => r.summary.succeeded > 0)).toBe(true)
    }).pipe(Effect.provide(Layer.mergeAll(
      Queue.layer.pipe(Layer.provideMerge(SqliteClient.layer({ filename: freshFile() }))),
      SimulatedClient.layer(simulatorQuota(tight))
    ))))
})
