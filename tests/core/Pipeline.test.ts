import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { LlmClient, Pipeline, RateLimiter } from "@sluice/core"
import * as PipelineSql from "@sluice/core/Pipeline/Sql"
import { Chunk, Data, Effect, Fiber, Layer, Ref, Stream, SubscriptionRef, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

class Boom extends Data.TaggedError("Boom")<{ readonly message: string }> {}

const docs = (n: number) =>
  Stream.fromIterable(Array.from({ length: n }, (_, i) => ({ id: `d${i}`, text: i % 7 === 3 ? "" : `text ${i}` })))

/** Fails empty documents, succeeds the rest. */
const process = (doc: { readonly id: string; readonly text: string }) =>
  doc.text === "" ? Effect.fail(new Boom({ message: `document ${doc.id} is empty` })) : Effect.succeed(doc.text.length)

const dir = mkdtempSync(join(tmpdir(), "sluice-pipeline-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("Pipeline", () => {
  it.effect("every document gets exactly one outcome; failures carry their reason; nothing is dropped", () =>
    Effect.gen(function*() {
      const progress = yield* SubscriptionRef.make(Pipeline.emptyProgress)
      const outcomes = Chunk.toReadonlyArray(
        yield* Stream.runCollect(Pipeline.run(docs(50), process, { concurrency: 8, progress }))
      )
      expect(new Set(outcomes.map((o) => o.id)).size).toBe(50)
      const failed = outcomes.filter((o) => o._tag === "Failed")
      expect(failed.length).toBe(7)
      expect(failed.every((o) => o._tag === "Failed" && o.reason.includes("is empty"))).toBe(true)
      expect(yield* SubscriptionRef.get(progress)).toMatchObject({ started: 50, succeeded: 43, failed: 7, inFlight: 0 })
    }).pipe(Effect.provide(Pipeline.layerCheckpointMemory)))

  it.effect("an outcome read from the stream is already counted in the progress, with many documents counting at once", () =>
    Effect.gen(function*() {
      const progress = yield* SubscriptionRef.make(Pipeline.emptyProgress)
      const meter = yield* Pipeline.makeMeter({ progress })
      const client = meter.wrap({
        provider: "test",
        complete: (request) =>
          Effect.succeed({
            id: "r",
            model: request.model,
            content: [],
            stopReason: "end_turn",
            usage: { inputTokens: 3, outputTokens: 1, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 },
            rateLimits: { dimensions: {} }
          }),
        stream: () => Stream.empty
      })
      const ask = (doc: { readonly id: string }) =>
        client.complete({
          model: "m",
          messages: [{ role: "user", content: "hi" }],
          maxOutputTokens: 1,
          metadata: { documentId: doc.id }
        })
      let read = 0
      const behind: Array<string> = []
      yield* Pipeline.run(docs(300), ask, { concurrency: 32, meter }).pipe(
        Stream.runForEach((outcome) =>
          Effect.map(SubscriptionRef.get(progress), (p) => {
            read++
            if (Pipeline.done(p) < read || p.requests < read) {
              behind.push(`${outcome.id}: ${Pipeline.done(p)} < ${read}`)
            }
          })
        )
      )
      expect(behind).toEqual([])
      expect(yield* SubscriptionRef.get(progress)).toMatchObject({
        started: 300,
        succeeded: 300,
        inFlight: 0,
        attempts: 300,
        requests: 300,
        inputTokens: 900,
        outputTokens: 300
      })
    }).pipe(Effect.provide(Pipeline.layerCheckpointNone)))

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
      const outcomes = Chunk.toReadonlyArray(
        yield* Stream.runCollect(Pipeline.run(
          Stream.make({ id: "a" }, { id: "b" }),
          (doc) =>
            doc.id === "a"
              ? Effect.fail(new RateLimiter.Shed({ key: "k", priority: "batch", reason: "lane-full", waiting: 3 }))
              : Effect.fail({ _tag: "BudgetExceeded", message: "over the day's budget" })
        ))
      )
      expect(outcomes.map((o) => o._tag).sort()).toEqual(["OverBudget", "Shed"])
    }).pipe(Effect.provide(Pipeline.layerCheckpointMemory)))

  it.effect("a rerun over the same SQLite checkpoint skips what succeeded and retries what did not", () =>
    Effect.gen(function*() {
      const CheckpointLive = PipelineSql.layer.pipe(
        Layer.provide(SqliteClient.layer({ filename: join(dir, "checkpoint.db") })),
        Layer.orDie
      )
      const calls = yield* Ref.make(0)
      const counted = (doc: { readonly id: string; readonly text: string }) =>
        Effect.zipRight(Ref.update(calls, (n) => n + 1), process(doc))
      const first = Chunk.toReadonlyArray(
        yield* Stream.runCollect(Pipeline.run(docs(20), counted)).pipe(Effect.provide(CheckpointLive))
      )
      expect(first.filter((o) => o._tag === "Succeeded").length).toBe(17)
      const second = Chunk.toReadonlyArray(
        yield* Stream.runCollect(Pipeline.run(docs(20), counted)).pipe(Effect.provide(CheckpointLive))
      )
      expect(second.filter((o) => o._tag === "Skipped").length).toBe(17)
      expect(second.filter((o) => o._tag === "Failed").length).toBe(3)
      // 20 calls the first time, only the 3 failures again
      expect(yield* Ref.get(calls)).toBe(23)
    }))
})

describe("Pipeline meter and monitor", () => {
  const usage = { inputTokens: 100, outputTokens: 20, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }
  const response = (model: string): LlmClient.Response => ({
    id: "r",
    model,
    content: [],
    stopReason: "end_turn",
    usage,
    rateLimits: { dimensions: {} }
  })

  /** A provider that answers 429 to a document's first `failFirst` attempts. */
  const flaky = (failFirst: number): LlmClient.Provider => {
    const seen = new Map<string, number>()
    return {
      provider: "test",
      complete: (request) =>
        Effect.suspend(() => {
          const id = request.metadata?.documentId ?? ""
          const n = (seen.get(id) ?? 0) + 1
          seen.set(id, n)
          return n <= failFirst
            ? Effect.fail(
              new LlmClient.RateLimited({ provider: "test", model: request.model, status: 429, detail: "slow down" })
            )
            : Effect.succeed(response(request.model))
        }),
      stream: () => Stream.empty
    }
  }
  const ask = (client: LlmClient.Provider, id: string) =>
    client.complete({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      maxOutputTokens: 10,
      metadata: { documentId: id }
    })

  it.effect("the meter counts every attempt, the 429s under a retry, tokens and cost; a failed outcome carries its attempts", () =>
    Effect.gen(function*() {
      const meter = yield* Pipeline.makeMeter({ price: (_model, u) => u.inputTokens * 2 + u.outputTokens * 10 })
      const client = meter.wrap(flaky(2))
      // d0 and d1 succeed on their third attempt (two retries each); d2 gives up after two.
      const process = (doc: { readonly id: string }) =>
        ask(client, doc.id).pipe(Effect.retry({ times: doc.id === "d2" ? 1 : 5 }))
      const outcomes = Chunk.toReadonlyArray(
        yield* Stream.runCollect(
          Pipeline.run(Stream.make({ id: "d0" }, { id: "d1" }, { id: "d2" }), process, { meter })
        )
      )
      const failed = outcomes.find((o) => o._tag === "Failed")
      expect(failed?._tag === "Failed" && failed.attempts).toBe(2)
      expect(yield* SubscriptionRef.get(meter.progress)).toMatchObject({
        succeeded: 2,
        failed: 1,
        attempts: 8,
        requests: 2,
        rateLimited: 6,
        retries: 5,
        inputTokens: 200,
        outputTokens: 40,
        costMicros: 2 * (200 + 200)
      })
    }).pipe(Effect.provide(Pipeline.layerCheckpointMemory)))

  it("rates per minute span the window from its oldest point", () => {
    const rates = Pipeline.ratesPerMinute(
      [{ at: 0, requests: 0, inputTokens: 0, outputTokens: 0 }],
      { at: 30_000, requests: 10, inputTokens: 5_000, outputTokens: 700 }
    )
    expect(rates).toEqual({ requests: 20, inputTokens: 10_000, outputTokens: 1_400 })
    expect(Pipeline.ratesPerMinute([], { at: 1, requests: 1, inputTokens: 1, outputTokens: 1 }).requests).toBe(0)
  })

  it.effect("the monitor emits a snapshot every interval, with rates over the last window and the limiter's queue", () =>
    Effect.gen(function*() {
      const progress = yield* SubscriptionRef.make(Pipeline.emptyProgress)
      const limiter = yield* RateLimiter.RateLimiter
      const snapshots = yield* Ref.make<Array<Pipeline.Snapshot>>([])
      const fiber = yield* Pipeline.monitor(progress, {
        every: "1 second",
        window: "10 seconds",
        total: 100,
        limiter: { limiter, key: "k" }
      }).pipe(
        Stream.runForEach((snapshot) => Ref.update(snapshots, (all) => [...all, snapshot])),
        Effect.fork
      )
      // 60 requests and 6,000 input tokens a minute for 20 seconds, then nothing.
      for (let second = 1; second <= 30; second++) {
        if (second <= 20) {
          yield* SubscriptionRef.update(
            progress,
            (p) => ({ ...p, requests: p.requests + 1, inputTokens: p.inputTokens + 100 })
          )
        }
        yield* TestClock.adjust("1 second")
      }
      yield* Fiber.interrupt(fiber)
      const all = yield* Ref.get(snapshots)
      expect(all.length).toBe(31)
      const at = (seconds: number) => all.find((s) => s.elapsedMillis === seconds * 1_000)!
      expect(at(15).perMinute.requests).toBeCloseTo(60, 5)
      expect(at(15).perMinute.inputTokens).toBeCloseTo(6_000, 5)
      // Ten seconds after the last request the window is empty again.
      expect(at(30).perMinute.requests).toBe(0)
      expect(at(30).total).toBe(100)
      expect(at(30).queue).toEqual({ interactive: 0, normal: 0, batch: 0 })
    }).pipe(Effect.provide(RateLimiter.layerMemory({ quotas: { k: { requests: { limit: 10, per: 60_000 } } } }))))
})
