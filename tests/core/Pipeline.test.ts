import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Pipeline, RateLimiter } from "@sluice/core"
import * as PipelineSql from "@sluice/core/Pipeline/Sql"
import { Chunk, Data, Effect, Layer, Ref, Stream, SubscriptionRef, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

class Boom extends Data.TaggedError("Boom")<{ readonly message: string }> {}

const docs = (n: number) => Stream.fromIterable(Array.from({ length: n }, (_, i) => ({ id: `d${i}`, text: i % 7 === 3 ? "" : `text ${i}` })))

/** Fails empty documents, succeeds the rest. */
const process = (doc: { readonly id: string; readonly text: string }) =>
  doc.text === "" ? Effect.fail(new Boom({ message: `document ${doc.id} is empty` })) : Effect.succeed(doc.text.length)

const dir = mkdtempSync(join(tmpdir(), "sluice-pipeline-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("Pipeline", () => {
  it.effect("every document gets exactly one outcome; failures carry their reason; nothing is dropped", () =>
    Effect.gen(function*() {
      const progress = yield* SubscriptionRef.make(Pipeline.emptyProgress)
      const outcomes = Chunk.toReadonlyArray(yield* Stream.runCollect(Pipeline.run(docs(50), process, { concurrency: 8, progress })))
      expect(new Set(outcomes.map((o) => o.id)).size).toBe(50)
      const failed = outcomes.filter((o) => o._tag === "Failed")
      expect(failed.length).toBe(7)
      expect(failed.every((o) => o._tag === "Failed" && o.reason.includes("is empty"))).toBe(true)
      expect(yield* SubscriptionRef.get(progress)).toMatchObject({ started: 50, succeeded: 43, failed: 7, inFlight: 0 })
    }).pipe(Effect.provide(Pipeline.layerCheckpointMemory)))

  it.effect("concurrency is bounded", () =>
    Effect.gen(function*() {
      const inFlight = yield* Ref.make(0)
      const peak = yield* Ref.make(0)
      const slow = () =>
        Effect.gen(function*() {
          const now = yield* Ref.updateAndGet(inFlight, (n) => n + 1)
          yield* Ref.update(peak, (p) => Math.max(p, now))
          yield* Effect.sleep("1 second")
          yield* Ref.update(inFlight, (n) => n - 1)
        })
      const fiber = yield* Effect.fork(Stream.runDrain(Pipeline.run(docs(40), slow, { concurrency: 5 })))
      yield* TestClock.adjust("10 seconds")
      yield* fiber.await
      expect(yield* Ref.get(peak)).toBe(5)
    }).pipe(Effect.provide(Pipeline.layerCheckpointMemory)))

  it.effect("Shed and BudgetExceeded are outcomes of their own", () =>
    Effect.gen(function*() {
      const outcomes = Chunk.toReadonlyArray(yield* Stream.runCollect(Pipeline.run(
        Stream.make({ id: "a" }, { id: "b" }),
        (doc) => doc.id === "a"
          ? Effect.fail(new RateLimiter.Shed({ key: "k", priority: "batch", reason: "lane-full", waiting: 3 }))
          : Effect.fail({ _tag: "BudgetExceeded", message: "over the day's budget" })
      )))
      expect(outcomes.map((o) => o._tag).sort()).toEqual(["OverBudget", "Shed"])
    }).pipe(Effect.provide(Pipeline.layerCheckpointMemory)))

  it.effect("a rerun over the same SQLite checkpoint skips what succeeded and retries what did not", () =>
    Effect.gen(function*() {
      const CheckpointLive = PipelineSql.layer.pipe(Layer.provide(SqliteClient.layer({ filename: join(dir, "checkpoint.db") })), Layer.orDie)
      const calls = yield* Ref.make(0)
      const counted = (doc: { readonly id: string; readonly text: string }) => Effect.zipRight(Ref.update(calls, (n) => n + 1), process(doc))
      const first = Chunk.toReadonlyArray(yield* Stream.runCollect(Pipeline.run(docs(20), counted)).pipe(Effect.provide(CheckpointLive)))
      expect(first.filter((o) => o._tag === "Succeeded").length).toBe(17)
      const second = Chunk.toReadonlyArray(yield* Stream.runCollect(Pipeline.run(docs(20), counted)).pipe(Effect.provide(CheckpointLive)))
      expect(second.filter((o) => o._tag === "Skipped").length).toBe(17)
      expect(second.filter((o) => o._tag === "Failed").length).toBe(3)
      // 20 calls the first time, only the 3 failures again
      expect(yield* Ref.get(calls)).toBe(23)
    }))
})
