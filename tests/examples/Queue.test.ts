import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Either, FastCheck as fc, Layer, Redacted, Stream, TestClock } from "effect"
import * as Queue from "../../packages/examples/src/extract/Queue.js"
import "../setup/pgPool.js"
import { databasePerRun } from "../setup/database.js"

const { PgClient } = await import("@effect/sql-pg")

// One database per run, dropped at the end.
const url = databasePerRun("queue")
// An empty one of its own, for workers starting at once on it.
const startUrl = databasePerRun("queue_start")

const pg = (maxConnections = 8) => PgClient.layer({ url: Redacted.make(url.toString()), maxConnections })

/** The queue over an empty database: its tables created, then emptied (the PostgreSQL database is shared by the file). */
const emptyQueue = Layer.effect(
  Queue.WorkQueue,
  Effect.gen(function*() {
    const queue = yield* Queue.make
    const sql = yield* SqlClient.SqlClient
    for (const table of ["documents", "extractions", "failures"]) yield* sql.unsafe(`DELETE FROM ${table}`)
    return queue
  })
)

const documents = (n: number, prefix = "doc") =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${String(i).padStart(4, "0")}`, text: `text ${i}` }))

const failed = (id: string, reason = "no luck"): Queue.Outcome => ({
  _tag: "Failed",
  row: { docId: id, outcome: "failed", reason, attempts: 1 }
})
const extracted = (id: string): Queue.Outcome => ({
  _tag: "Extracted",
  row: {
    docId: id,
    extraction: { title: `t ${id}`, summary: "s", category: "other", sentiment: "neutral", keywords: ["k"] },
    model: "claude-haiku-4-5",
    inputTokens: 10,
    outputTokens: 5,
    costUsd: 0.0001
  }
})

const outcomeIds = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const extractions = yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`
  const failures = yield* sql<{ doc_id: string }>`SELECT doc_id FROM failures`
  return {
    extractions: extractions.map((row) => row.doc_id),
    failures: failures.map((row) => row.doc_id)
  }
})

const queueSuite = (name: string, client: () => Layer.Layer<SqlClient.SqlClient, unknown>) =>
  describe(`WorkQueue over ${name}`, () => {
    const provide = <A, E>(self: Effect.Effect<A, E, Queue.WorkQueue | SqlClient.SqlClient>) =>
      Effect.provide(self, emptyQueue.pipe(Layer.provideMerge(client()), Layer.orDie))

    it.effect("load adds each id once: duplicates within a batch and across loads are dropped", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        const first = yield* queue.load([...documents(3), { id: "doc-0001", text: "again" }])
        const second = yield* Queue.loadAll(Stream.fromIterable(documents(5)), 2)
        expect([first, second]).toEqual([3, 2])
        expect(yield* queue.counts).toMatchObject({ documents: 5, done: 0, leased: 0 })
        const claimed = yield* queue.claim("w", 10, "1 minute")
        // the first text of an id is the one kept
        expect(claimed.find((document) => document.id === "doc-0001")?.text).toBe("text 1")
      })).pipe(Effect.orDie))

    it.effect("a claim takes at most n open documents, and a second claimer gets the others", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load(documents(5))
        const a = yield* queue.claim("a", 3, "1 minute")
        const b = yield* queue.claim("b", 3, "1 minute")
        const c = yield* queue.claim("c", 3, "1 minute")
        expect([a.length, b.length, c.length]).toEqual([3, 2, 0])
        expect(new Set([...a, ...b].map((document) => document.id)).size).toBe(5)
        expect(a[0]!.leaseExpiresAt).toBe(60_000)
        expect((yield* queue.counts).leased).toBe(5)
      })).pipe(Effect.orDie))

    it.effect("a lease that expires gives the documents back, and the stale worker's complete is refused", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load(documents(4))
        const stale = yield* queue.claim("stale", 10, "30 seconds")
        expect(stale.length).toBe(4)
        yield* TestClock.adjust("29 seconds")
        expect(yield* queue.claim("fresh", 10, "30 seconds")).toEqual([])
        yield* TestClock.adjust("1 second")
        expect((yield* queue.counts).leased).toBe(0)
        const fresh = yield* queue.claim("fresh", 10, "30 seconds")
        expect(fresh.map((document) => document.id)).toEqual(stale.map((document) => document.id))
        // the stale worker finishes late: nothing written
        expect(yield* queue.complete("stale", "doc-0000", extracted("doc-0000"))).toEqual({
          _tag: "NotHeld",
          heldBy: "fresh",
          done: false
        })
        expect(yield* queue.complete("fresh", "doc-0000", failed("doc-0000"))).toEqual({ _tag: "Written" })
        // a second complete of the same document, by anyone, writes nothing
        expect(yield* queue.complete("fresh", "doc-0000", extracted("doc-0000"))).toEqual({
          _tag: "NotHeld",
          heldBy: null,
          done: true
        })
        expect(yield* outcomeIds).toEqual({ extractions: [], failures: ["doc-0000"] })
        expect(yield* queue.counts).toMatchObject({ documents: 4, done: 1, leased: 3, failures: 1, extractions: 0 })
      })).pipe(Effect.orDie))

    it.effect("an expired lease nobody took over may still complete; a done document is never claimed again", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load(documents(1))
        yield* queue.claim("slow", 1, "10 seconds")
        yield* TestClock.adjust("1 minute")
        expect(yield* queue.complete("slow", "doc-0000", extracted("doc-0000"))).toEqual({ _tag: "Written" })
        expect(yield* queue.claim("other", 1, "10 seconds")).toEqual([])
        expect(yield* outcomeIds).toEqual({ extractions: ["doc-0000"], failures: [] })
      })).pipe(Effect.orDie))

    it.effect("release gives a worker's unfinished documents back at once, and only its own", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load(documents(4))
        const mine = yield* queue.claim("me", 2, "1 hour")
        yield* queue.claim("you", 2, "1 hour")
        yield* queue.release("me", [...mine.map((document) => document.id), "doc-0002", "doc-0003"])
        const again = yield* queue.claim("third", 10, "1 hour")
        expect(again.map((document) => document.id)).toEqual(mine.map((document) => document.id))
      })).pipe(Effect.orDie))

    it.effect("renew keeps a live worker's claims past their first lease, and not a claim taken over", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load(documents(3))
        yield* queue.claim("live", 2, "30 seconds")
        yield* queue.claim("gone", 1, "30 seconds")
        yield* TestClock.adjust("20 seconds")
        // (the database answers in no particular order)
        expect([...yield* queue.renew("live", ["doc-0000", "doc-0001", "doc-0002"], "30 seconds")].sort()).toEqual([
          "doc-0000",
          "doc-0001"
        ])
        yield* TestClock.adjust("20 seconds")
        // at 40 s: the renewed claims hold until 50 s, the other expired at 30 s
        expect((yield* queue.claim("next", 10, "30 seconds")).map((document) => document.id)).toEqual(["doc-0002"])
        expect(yield* queue.renew("gone", ["doc-0002"], "30 seconds")).toEqual([])
        expect(yield* queue.complete("live", "doc-0001", failed("doc-0001"))).toEqual({ _tag: "Written" })
        expect(yield* queue.renew("live", ["doc-0000", "doc-0001"], "30 seconds")).toEqual(["doc-0000"])
      })).pipe(Effect.orDie))

    it.effect("a clock with fractions of a millisecond (TestClock after a jittered sleep) claims, renews and counts", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load(documents(2))
        yield* TestClock.adjust(Duration.millis(1_234.567))
        const claimed = yield* queue.claim("w", 1, "1 second")
        expect(claimed[0]!.leaseExpiresAt).toBe(2_234)
        expect(yield* queue.renew("w", ["doc-0000"], "1 second")).toEqual(["doc-0000"])
        expect(yield* queue.counts).toMatchObject({ documents: 2, leased: 1 })
      })).pipe(Effect.orDie))

    it.effect("a claim of no documents or with a lease of zero fails naming the field", () =>
      provide(Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        expect(yield* Effect.flip(queue.claim("w", 0, "1 minute"))).toMatchObject({ _tag: "InvalidClaim", field: "n" })
        expect(yield* Effect.flip(queue.claim("w", 1.5, "1 minute"))).toMatchObject({
          _tag: "InvalidClaim",
          field: "n"
        })
        expect(yield* Effect.flip(queue.claim("w", 1, 0))).toMatchObject({ _tag: "InvalidClaim", field: "lease" })
        expect(yield* Effect.flip(queue.renew("w", [], "-1 second"))).toMatchObject({
          _tag: "InvalidClaim",
          field: "lease"
        })
      })).pipe(Effect.orDie))

    it.effect.prop(
      "every loaded document ends in exactly one of extractions and failures, whoever crashes or arrives late",
      {
        ids: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 60 }),
        workers: fc.array(
          fc.record({
            batch: fc.integer({ min: 1, max: 5 }),
            // per document of a batch: extract, fail, or crash (abandon the batch and stop)
            steps: fc.array(fc.constantFrom("extract", "fail", "crash"), { minLength: 1, maxLength: 30 })
          }),
          { minLength: 1, maxLength: 4 }
        )
      },
      ({ ids, workers }) =>
        provide(Effect.gen(function*() {
          const queue = yield* Queue.WorkQueue
          yield* queue.load(ids.map((i) => ({ id: `d${i}`, text: `text ${i}` })))
          const distinct = [...new Set(ids.map((i) => `d${i}`))].sort()
          const written: Array<string> = []
          const work = (name: string, batch: number, steps: ReadonlyArray<string>) =>
            Effect.gen(function*() {
              let step = 0
              while (true) {
                const claimed = yield* queue.claim(name, batch, "1 minute")
                if (claimed.length === 0) return
                for (const document of claimed) {
                  const action = steps[step++ % steps.length]
                  if (action === "crash") return
                  const outcome = action === "extract" ? extracted(document.id) : failed(document.id)
                  const completion = yield* queue.complete(name, document.id, outcome)
                  expect(completion._tag).toBe("Written")
                  written.push(document.id)
                }
              }
            })
          yield* Effect.all(workers.map((worker, i) => work(`w${i}`, worker.batch, worker.steps)), {
            concurrency: "unbounded"
          })
          // The crashed workers' leases expire; one more worker, which never crashes, finishes the rest.
          yield* TestClock.adjust("1 minute")
          yield* work("sweeper", 3, ["extract", "fail"])
          const outcomes = yield* outcomeIds
          expect([...outcomes.extractions, ...outcomes.failures].sort()).toEqual(distinct)
          expect([...written].sort()).toEqual(distinct)
          expect(yield* queue.counts).toMatchObject({ documents: distinct.length, done: distinct.length, leased: 0 })
        })).pipe(Effect.orDie),
      { fastCheck: { numRuns: 15 } }
    )
  })

queueSuite("PostgreSQL", () => pg())
queueSuite("SQLite", () => SqliteClient.layer({ filename: ":memory:" }))

describe("WorkQueue over PostgreSQL, several processes", () => {
  it.live("workers starting at once on an empty database all get the tables", () =>
    Effect.gen(function*() {
      const starts = yield* Effect.all(
        Array.from({ length: 6 }, () =>
          Effect.either(Layer.build(
            Queue.layer.pipe(Layer.provide(PgClient.layer({ url: Redacted.make(startUrl.toString()) })))
          ))),
        { concurrency: "unbounded" }
      )
      expect(starts.filter((start) => start._tag === "Left")).toEqual([])
      const queue = Context.get(starts[0]!.pipe(Either.getOrThrow), Queue.WorkQueue)
      expect(yield* queue.load(documents(2))).toBe(2)
    }).pipe(Effect.scoped, Effect.orDie))

  it.effect("concurrent claimers on their own pools never get the same document, and together get them all", () =>
    Effect.gen(function*() {
      // Made one after the other: CREATE TABLE IF NOT EXISTS is not safe to race on PostgreSQL.
      const queues = yield* Effect.forEach(
        Array.from({ length: 4 }, (_, i) => i),
        (i) =>
          Effect.map(
            Layer.build((i === 0 ? emptyQueue : Queue.layer).pipe(Layer.provide(pg(4)), Layer.orDie)),
            Context.get(Queue.WorkQueue)
          )
      )
      yield* queues[0]!.load(documents(200))
      const taken = yield* Effect.all(
        queues.flatMap((queue, process) =>
          // each process runs three claimers at once, each claiming batches of 3 until none is left
          Array.from({ length: 3 }, (_, claimer) =>
            Effect.gen(function*() {
              const mine: Array<string> = []
              while (true) {
                const batch = yield* queue.claim(`p${process}/c${claimer}`, 3, "5 minutes")
                if (batch.length === 0) return mine
                for (const document of batch) mine.push(document.id)
              }
            }))
        ),
        { concurrency: "unbounded" }
      )
      const all = taken.flat()
      expect(all.length).toBe(200)
      expect(new Set(all).size).toBe(200)
      // more than one claimer did the work
      expect(taken.filter((ids) => ids.length > 0).length).toBeGreaterThan(1)
    }).pipe(Effect.scoped, Effect.orDie))
})
