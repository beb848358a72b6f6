import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { LlmClient } from "@sluice/core"
import { type Source, syntheticSource } from "@sluice/examples/extract/Documents"
import * as Fleet from "@sluice/examples/extract/Fleet"
import * as Job from "@sluice/examples/extract/Job"
import * as Queue from "@sluice/examples/extract/Queue"
import * as Report from "@sluice/examples/extract/Report"
import type { Limits } from "@sluice/examples/extract/Summary"
import { SimulatedClient } from "@sluice/simulator"
import { Clock, Deferred, Effect, Fiber, Layer, Redacted, Stream, TestClock } from "effect"
import { Redis } from "ioredis"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import "../setup/pgPool.js"
import { databasePerRun } from "../setup/database.js"

const { PgClient } = await import("@effect/sql-pg")

const dir = mkdtempSync(join(tmpdir(), "sluice-fleet-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const freshFile = () => join(dir, `fleet-${++files}.db`)

// One database per run, dropped at the end.
const url = databasePerRun("fleet")

const tight: Limits = { requestsPerMinute: 60, inputTokensPerMinute: 60_000, outputTokensPerMinute: 12_000 }
const roomy: Limits = {
  requestsPerMinute: 100_000,
  inputTokensPerMinute: 100_000_000,
  outputTokensPerMinute: 10_000_000
}
const requestBound: Limits = {
  requestsPerMinute: 60,
  inputTokensPerMinute: 10_000_000,
  outputTokensPerMinute: 10_000_000
}
const simulator = (limits: Limits) =>
  SimulatedClient.layer({ quota: limits, latency: { baseMs: 500, perOutputTokenMs: 5, jitterMs: 200 }, seed: 3 })

const none: Source = { description: "no documents", count: 0, documents: Stream.empty }

type WorkerConfig = Job.Config & { readonly fleet: Job.Fleet }

const worker = (
  name: string,
  options:
    & { readonly limits?: Limits; readonly source?: Source; readonly extra?: Partial<Job.Config> }
    & Partial<
      Job.Fleet
    > = {}
): WorkerConfig => {
  const { extra, limits, source, ...fleet } = options
  return {
    source: source ?? none,
    model: "claude-haiku-4-5",
    limits: limits ?? tight,
    timeScale: 1,
    concurrency: 3,
    job: "fleet-test",
    ...extra,
    fleet: { worker: name, lease: "30 seconds", host: "test-host", pid: 1, ...fleet }
  }
}

/** What several fibers of one process share: the queue, its database, the provider. */
type Shared = Queue.WorkQueue | SqlClient.SqlClient | LlmClient.LlmClient | SimulatedClient.SimulatedStats

/** The queue over a database, its tables emptied (the PostgreSQL database is shared by the file's tests). */
const emptied = Layer.effect(
  Queue.WorkQueue,
  Effect.gen(function*() {
    const queue = yield* Queue.make
    yield* Fleet.createTables
    const sql = yield* SqlClient.SqlClient
    for (const table of ["documents", "extractions", "failures", "workers", "fleet_samples"]) {
      yield* sql.unsafe(`DELETE FROM ${table}`)
    }
    for (const table of ["sluice_budget_counters", "sluice_budget_holds"]) {
      yield* Effect.ignore(sql.unsafe(`DELETE FROM ${table}`))
    }
    return queue
  })
)

/**
 * Advances the test clock a second at a time until every fiber is done. Between
 * steps it lets the event loop run (a real database answers through it), so
 * that simulated time does not race ahead of the workers' queries.
 */
const driveAll = <A, E>(fibers: ReadonlyArray<Fiber.RuntimeFiber<A, E>>, pace: number, limitSeconds = 3_600) =>
  Effect.gen(function*() {
    for (let i = 0; i < limitSeconds; i++) {
      const exits = yield* Effect.forEach(fibers, (fiber) => fiber.poll)
      if (exits.every((exit) => exit._tag === "Some")) return yield* Effect.forEach(fibers, Fiber.join)
      yield* advance(1, pace)
    }
    return yield* Effect.dieMessage("the fleet did not finish")
  })

const advance = (seconds: number, pace: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds; i++) {
      yield* TestClock.adjust("1 second")
      // Time is the test clock's; this real pause only lets the database's I/O (SQLite, PostgreSQL),
      // which no clock drives, answer between ticks. No assertion reads the wall clock.
      yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, pace)))
    }
  })

/**
 * Runs `self` with the test clock's time in whole milliseconds, as a real clock
 * gives it: the budget ledger's PostgreSQL columns are integers, and TestClock's
 * time has fractions once the simulator's latencies (with jitter) have passed.
 */
const wholeMillis = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.clock, (clock) =>
    Effect.withClock(self, {
      [Clock.ClockTypeId]: Clock.ClockTypeId,
      unsafeCurrentTimeMillis: () => Math.floor(clock.unsafeCurrentTimeMillis()),
      currentTimeMillis: Effect.sync(() => Math.floor(clock.unsafeCurrentTimeMillis())),
      unsafeCurrentTimeNanos: () => clock.unsafeCurrentTimeNanos(),
      currentTimeNanos: clock.currentTimeNanos,
      sleep: (duration) => clock.sleep(duration)
    }))

const tables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
  const failures = yield* sql<{ doc_id: string; outcome: string; reason: string }>`SELECT doc_id, outcome, reason
    FROM failures`
  return { extracted, failures, failed: failures.map((row) => row.doc_id) }
})

const heldBy = (name: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ id: string }>`SELECT id FROM documents WHERE claimed_by = ${name} AND completed_at IS NULL`,
      (rows) => rows.map((row) => row.id).sort()
    ))

/** Every document of `ids` in exactly one of the tables, and nothing else there. */
const expectExactlyOnce = (ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { extracted, failed } = yield* tables
    expect([...extracted, ...failed].sort()).toEqual([...ids].sort())
    expect(new Set([...extracted, ...failed]).size).toBe(ids.length)
    return yield* tables
  })

/** The ids of a source. */
const idsOf = (source: Source) =>
  Effect.map(Stream.runCollect(source.documents), (chunk) => [...chunk].map((document) => document.id))

const problems: Source = {
  description: "documents that cannot be sent",
  count: 2,
  documents: Stream.make(
    { id: "zz-empty", text: "", problem: "empty document: nothing to extract from" },
    { id: "zz-huge", text: "word ".repeat(80_000) }
  )
}
const mixed = (count: number, seed: number): Source => ({
  description: "synthetic and broken documents",
  count: count + problems.count,
  documents: Stream.concat(syntheticSource(count, seed).documents, problems.documents)
})

const suite = (name: string, client: () => Layer.Layer<SqlClient.SqlClient, unknown>, pace: number) =>
  describe(`the extraction job as a fleet over ${name}`, () => {
    const provide = <A, E>(self: Effect.Effect<A, E, Shared>, provider = simulator(tight)) =>
      Effect.provide(self, Layer.mergeAll(emptied.pipe(Layer.provideMerge(client())), provider).pipe(Layer.orDie))

    it.scoped("four workers loading the same source: every document in exactly one table once, no 429, status and report sum the workers", () =>
      provide(Effect.gen(function*() {
        const source = mixed(46, 5)
        const ids = yield* idsOf(source)
        const names = ["w1", "w2", "w3", "w4"]
        const fibers = yield* Effect.forEach(
          names,
          (name) => Effect.fork(Job.run(worker(name, { source, quotaShare: 1 / 4, batch: 2 })))
        )
        const results = yield* driveAll(fibers, pace)
        const { extracted, failures } = yield* expectExactlyOnce(ids)
        // The failures went through complete too, with their reasons.
        expect(failures.map((row) => row.doc_id).sort()).toEqual(["zz-empty", "zz-huge"])
        expect(failures.find((row) => row.doc_id === "zz-huge")?.reason).toMatch(/too large/)
        expect(failures.find((row) => row.doc_id === "zz-empty")?.reason).toMatch(/empty document/)
        // Each worker's counts are its own: they add up to the tables, and each did a share.
        const total = (f: (r: Job.Result) => number) => results.reduce((n, r) => n + f(r), 0)
        expect(total((r) => r.summary.succeeded)).toBe(extracted.length)
        expect(total((r) => r.summary.failed + r.summary.shed + r.summary.overBudget)).toBe(failures.length)
        expect(results.every((r) => r.summary.succeeded > 0)).toBe(true)
        expect(results.every((r) => r.summary.documents === ids.length && !r.summary.interrupted)).toBe(true)
        expect(total((r) => r.fleet?.notHeld ?? 0)).toBe(0)
        // Four quarters of the quota: the provider never refused a call.
        const judge = (yield* Effect.flatMap(SimulatedClient.SimulatedStats, (s) => s.stats)).keys[0]!
        expect(judge.rateLimited).toBe(0)

        const status = yield* Fleet.status
        expect(status.counts).toMatchObject({ documents: ids.length, done: ids.length, leased: 0 })
        expect(status.workers.map((w) => w.worker)).toEqual(names)
        expect(status.workers.every((w) => w.finishedAt !== undefined && w.host === "test-host")).toBe(true)
        expect(status.totals.succeeded).toBe(extracted.length)
        expect(status.totals.failed).toBe(failures.length)
        expect(status.totals.inputTokens).toBe(judge.inputTokens)
        expect(status.totals.outputTokens).toBe(judge.outputTokens)
        expect(status.totals.costUsd).toBeCloseTo(total((r) => r.summary.costUsd), 9)
        // Since the start: the fleet's requests over the time from the first start to the last end.
        expect(status.startedAt).toBe(Math.min(...status.workers.map((w) => w.startedAt)))
        expect(status.perMinute.sinceStart.requests).toBeCloseTo(
          status.totals.requests / ((status.finishedAt! - status.startedAt!) / 60_000),
          6
        )
        const text = Fleet.renderStatus(status, { limits: tight, timeScale: 1 })
        expect(text).toContain(`${ids.length} / ${ids.length} documents done (100 %), 0 leased`)
        expect(text).toContain("of 60 requests")
        for (const n of names) expect(text).toMatch(new RegExp(`${n}: finished`))

        const { samples, summary } = yield* Fleet.report
        expect(summary).toMatchObject({
          documents: ids.length,
          succeeded: extracted.length,
          failed: failures.length,
          inputTokens: judge.inputTokens,
          outputTokens: judge.outputTokens,
          interrupted: false
        })
        expect(samples.at(-1)?.done).toBe(ids.length)
        expect(samples.at(-1)?.requests).toBe(status.totals.requests)
        const html = Report.render({
          title: "fleet",
          generatedAt: "2026-01-01T00:00:00.000Z",
          model: "claude-haiku-4-5",
          limits: tight,
          samples,
          summary,
          notes: []
        })
        expect(html).toContain("<svg")
        expect(html).toContain(String(extracted.length))
        expect(
          samples.every((s, i) =>
            i === 0 || (s.done >= samples[i - 1]!.done && s.atSeconds > samples[i - 1]!.atSeconds)
          )
        )
          .toBe(true)
        // The fleet's samples are the sums of the workers' (more than any one worker's).
        expect(Math.max(...results.map((r) => r.samples.at(-1)?.done ?? 0))).toBeLessThan(ids.length)
      })))

    it.scoped("while the fleet runs, the status sums the workers' latest counts and the trailing minute's rate", () =>
      provide(
        Effect.gen(function*() {
          const source = syntheticSource(240, 4)
          yield* Queue.loadAll(source.documents)
          const fibers = yield* Effect.forEach(
            ["r1", "r2"],
            (name) => Effect.fork(Job.run(worker(name, { limits: requestBound, quotaShare: 1 / 2 })))
          )
          yield* advance(90, pace)
          const status = yield* Fleet.status
          expect(status.workers.map((w) => w.worker)).toEqual(["r1", "r2"])
          expect(status.workers.every((w) => w.finishedAt === undefined && status.at - w.seenAt <= 2_000)).toBe(true)
          expect(status.counts.leased).toBeGreaterThan(0)
          expect(status.counts.done).toBeGreaterThan(0)
          expect(status.counts.done).toBeLessThan(240)
          // The totals are the sums of the workers' rows, which are at most a second behind the tables.
          expect(status.totals.succeeded).toBe(status.workers[0]!.succeeded + status.workers[1]!.succeeded)
          expect(status.totals.succeeded).toBeLessThanOrEqual(status.counts.extractions)
          expect(status.totals.succeeded).toBeGreaterThanOrEqual(status.counts.extractions - 6)
          // The first minute's burst is behind: the trailing minute runs at the refill, 60 requests a minute.
          expect(status.perMinute.trailingMinute.requests).toBeGreaterThan(45)
          expect(status.perMinute.trailingMinute.requests).toBeLessThanOrEqual(63)
          expect(status.perMinute.sinceStart.requests).toBeCloseTo(
            status.totals.requests / ((status.at - status.startedAt!) / 60_000),
            6
          )
          const text = Fleet.renderStatus(status, { limits: requestBound, timeScale: 1 })
          expect(text).toMatch(/documents done \(\d+ %\), [1-9]\d* leased/)
          expect(text).toMatch(/r1: running, seen \ds ago/)
          expect(text).toMatch(/r2: running, seen \ds ago/)
          expect(text).toMatch(/last minute, per minute: \d+ of 60 requests/)
          yield* Effect.forEach(fibers, Fiber.interrupt)
        }),
        simulator(requestBound)
      ))

    it.scoped("a worker killed mid-batch (no release): the others finish its documents once its lease expires, once", () =>
      provide(Effect.gen(function*() {
        const source = syntheticSource(30, 7)
        const ids = yield* idsOf(source)
        yield* Queue.loadAll(source.documents)
        const queue = yield* Queue.WorkQueue
        // kill -9: no finalizer gives its documents back.
        const killed = yield* Effect.fork(
          Job.run(worker("killed", { quotaShare: 1 / 3, batch: 4 })).pipe(
            Effect.provideService(Queue.WorkQueue, { ...queue, release: () => Effect.void })
          )
        )
        yield* advance(3, pace)
        yield* Fiber.interrupt(killed)
        const doneBefore = (yield* queue.counts).done
        const orphans = yield* heldBy("killed")
        expect(orphans.length).toBeGreaterThan(0)
        const others = yield* Effect.forEach(
          ["w2", "w3"],
          (name) => Effect.fork(Job.run(worker(name, { quotaShare: 1 / 3, batch: 2 })))
        )
        // Before its lease (30 s) expires nobody takes them.
        yield* advance(20, pace)
        expect(yield* heldBy("killed")).toEqual(orphans)
        const results = yield* driveAll(others, pace)
        const { extracted, failed } = yield* expectExactlyOnce(ids)
        expect(yield* heldBy("killed")).toEqual([])
        for (const id of orphans) expect([...extracted, ...failed]).toContain(id)
        // The others wrote every outcome the killed worker had not.
        expect(results.reduce((n, r) => n + r.summary.succeeded + r.summary.failed, 0)).toBe(ids.length - doneBefore)
        // The status shows the dead worker as stale, the others finished.
        const text = Fleet.renderStatus(yield* Fleet.status, { limits: tight, timeScale: 1, lease: "30 seconds" })
        expect(text).toMatch(/killed: STALE/)
        expect(text).toMatch(/w2: finished/)
      })))

    it.scoped("a stopped worker gives back the documents it held and had not started, at once", () =>
      provide(Effect.gen(function*() {
        const source = syntheticSource(24, 8)
        const ids = yield* idsOf(source)
        yield* Queue.loadAll(source.documents)
        const stop = yield* Deferred.make<void>()
        const stopping = yield* Effect.fork(
          Job.run(worker("stopping", { batch: 8, extra: { concurrency: 2, stop: Deferred.await(stop) } }))
        )
        yield* advance(2, pace)
        expect((yield* heldBy("stopping")).length).toBeGreaterThan(2)
        yield* Deferred.succeed(stop, undefined)
        const [stopped] = yield* driveAll([stopping], pace)
        expect(stopped!.fleet?.released).toBeGreaterThan(0)
        expect(stopped!.summary.interrupted).toBe(true)
        expect(stopped!.notes.join(" ")).toMatch(/Start a worker again/)
        // Given back, not left to expire: claimable at once.
        expect(yield* heldBy("stopping")).toEqual([])
        const queue = yield* Queue.WorkQueue
        const done = (yield* queue.counts).done
        expect(done).toBe(stopped!.summary.succeeded + stopped!.summary.failed)
        expect((yield* queue.claim("probe", 100, "1 second")).length).toBe(ids.length - done)
        yield* TestClock.adjust("2 seconds")
        const [rest] = yield* driveAll([yield* Effect.fork(Job.run(worker("rest")))], pace)
        expect(rest!.summary.succeeded).toBe(ids.length - done)
        yield* expectExactlyOnce(ids)
      })))

    it.scoped("a worker whose lease was taken over writes nothing for its late outcomes (NotHeld), and says so", () =>
      provide(
        Effect.gen(function*() {
          const source = syntheticSource(12, 9)
          const ids = yield* idsOf(source)
          yield* Queue.loadAll(source.documents)
          const queue = yield* Queue.WorkQueue
          const provider = yield* LlmClient.LlmClient
          // A worker whose heartbeat lies (it renews nothing: a clock far behind) and whose calls take 40 s.
          const slow = yield* Effect.fork(
            Job.run(worker("slow", { batch: 3, lease: "10 seconds", extra: { concurrency: 3 } })).pipe(
              Effect.provideService(Queue.WorkQueue, { ...queue, renew: (_, ids) => Effect.succeed(ids) }),
              Effect.provideService(LlmClient.LlmClient, {
                ...provider,
                complete: (request) => Effect.zipRight(Effect.sleep("40 seconds"), provider.complete(request))
              })
            )
          )
          yield* advance(3, pace)
          const taken = yield* heldBy("slow")
          // A batch, and a second one while the pipeline has room (concurrency + batch at most).
          expect(taken.length).toBeGreaterThanOrEqual(3)
          expect(taken.length).toBeLessThanOrEqual(6)
          const fast = yield* Effect.fork(Job.run(worker("fast", { lease: "10 seconds" })))
          const [slowResult, fastResult] = yield* driveAll([slow, fast], pace)
          const { extracted } = yield* expectExactlyOnce(ids)
          expect(slowResult!.fleet?.notHeld).toBeGreaterThanOrEqual(taken.length)
          expect(slowResult!.notes.join(" ")).toMatch(
            /documents finished by another worker after this one's lease expired/
          )
          // Its late outcomes are not counted as its own: the workers' counts add up to the table.
          expect(slowResult!.summary.succeeded + fastResult!.summary.succeeded).toBe(extracted.length)
          const status = yield* Fleet.status
          expect(status.totals.notHeld).toBe(slowResult!.fleet?.notHeld)
          expect(status.totals.succeeded).toBe(extracted.length)
        }),
        simulator(roomy)
      ))

    it.scoped("the budget holds for the fleet through the database's ledger: documents past it are over budget, once", () =>
      provide(
        Effect.gen(function*() {
          const source = syntheticSource(40, 13)
          const ids = yield* idsOf(source)
          yield* Queue.loadAll(source.documents)
          const fibers = yield* Effect.forEach(
            ["b1", "b2", "b3"],
            (name) =>
              Effect.fork(
                wholeMillis(Job.run(worker(name, { limits: roomy, extra: { budgetUsd: 0.02, concurrency: 2 } })))
              )
          )
          const results = yield* driveAll(fibers, pace)
          const { extracted, failures } = yield* expectExactlyOnce(ids)
          const spent = results.reduce((n, r) => n + r.summary.costUsd, 0)
          expect(spent).toBeLessThanOrEqual(0.02)
          expect(spent).toBeGreaterThan(0.01)
          expect(failures.length).toBeGreaterThan(0)
          expect(failures.filter((row) => !(row.outcome === "over-budget" && /budget/i.test(row.reason)))).toEqual([])
          expect(failures.every((row) => row.outcome === "over-budget" && /budget/i.test(row.reason))).toBe(true)
          expect(results.reduce((n, r) => n + r.summary.overBudget, 0)).toBe(failures.length)
          expect(extracted.length + failures.length).toBe(ids.length)
          expect((yield* Fleet.status).totals.costUsd).toBeCloseTo(spent, 9)
        }),
        simulator(roomy)
      ))
  })

suite("SQLite", () => SqliteClient.layer({ filename: freshFile() }), 0)
suite("PostgreSQL", () => PgClient.layer({ url: Redacted.make(url.toString()), maxConnections: 10 }), 3)

describe("the extraction job as a fleet with Redis", () => {
  const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
  const prefix = `sluice-fleet-test-${process.pid}-${Date.now()}`
  afterAll(async () => {
    const redis = new Redis(redisUrl)
    const keys = await redis.keys(`${prefix}*`)
    if (keys.length > 0) await redis.del(...keys)
    await redis.quit()
  })

  it.scoped("the limiter and the budget on Redis: the budget holds for the fleet, every document once", () =>
    Effect.gen(function*() {
      const source = syntheticSource(40, 21)
      const ids = yield* idsOf(source)
      yield* Queue.loadAll(source.documents)
      const fibers = yield* Effect.forEach(["x1", "x2", "x3"], (name) =>
        Effect.fork(wholeMillis(Job.run(worker(name, {
          limits: roomy,
          redis: { url: redisUrl, prefix },
          extra: { budgetUsd: 0.02, concurrency: 2 }
        })))))
      const results = yield* driveAll(fibers, 3)
      const { failures } = yield* expectExactlyOnce(ids)
      const spent = results.reduce((n, r) => n + r.summary.costUsd, 0)
      expect(spent).toBeLessThanOrEqual(0.02)
      expect(spent).toBeGreaterThan(0.01)
      expect(failures.length).toBeGreaterThan(0)
      expect(failures.filter((row) => !(row.outcome === "over-budget" && /budget/i.test(row.reason)))).toEqual([])
      // The ledger is Redis's, not the database's.
      const sql = yield* SqlClient.SqlClient
      expect(yield* Effect.either(sql`SELECT COUNT(*) AS n FROM sluice_budget_holds`)).toMatchObject({ _tag: "Left" })
    }).pipe(Effect.provide(
      Layer.mergeAll(
        Queue.layer.pipe(Layer.provideMerge(SqliteClient.layer({ filename: freshFile() }))),
        simulator(roomy)
      ).pipe(Layer.orDie)
    )))
})

describe("Fleet.renderStatus", () => {
  const row = (worker: string, seenAt: number, finishedAt?: number): Fleet.Worker => ({
    ...Fleet.zero,
    worker,
    host: "h",
    pid: 1,
    startedAt: 0,
    seenAt,
    finishedAt,
    timeScale: 10,
    requests: 100,
    succeeded: 90,
    failed: 2,
    shed: 1
  })
  it("shows rates per provider minute, and marks a worker not seen for more than a lease as stale", () => {
    const workers = [row("a/1", 599_000), row("b/2", 400_000), row("c/3", 500_000, 500_000)]
    const text = Fleet.renderStatus({
      at: 600_000,
      counts: { documents: 400, done: 279, leased: 12, extractions: 270, failures: 9 },
      workers,
      totals: Fleet.sum(workers),
      startedAt: 0,
      finishedAt: undefined,
      perMinute: {
        trailingMinute: { requests: 5_000, inputTokens: 1_000_000, outputTokens: 200_000 },
        sinceStart: { requests: 300, inputTokens: 60_000, outputTokens: 6_000 }
      }
    }, {
      limits: { requestsPerMinute: 1_000, inputTokensPerMinute: 200_000, outputTokensPerMinute: 40_000 },
      timeScale: 10,
      lease: "2 minutes"
    })
    expect(text).toContain(
      "279 / 400 documents done (70 %), 12 leased, 270 extracted, 9 failures; 3 workers (1 running)"
    )
    // A wall minute of a simulator at 10× speed is ten provider minutes.
    expect(text).toContain(
      "last minute, per provider minute (simulator at 10× speed): 500 of 1,000 requests, 100,000 of 200,000 input tokens"
    )
    expect(text).toContain("since the start (10m00s), per provider minute")
    expect(text).toContain("a/1: running, seen 1s ago; 93 done (90 extracted, 3 failures)")
    expect(text).toContain("b/2: STALE: not seen for 3m20s")
    expect(text).toContain("c/3: finished 1m40s ago")
    expect(text).toContain("300 requests")
    expect(text).not.toContain("holds the start")
  })

  it("says when the last minute holds the run's start, whose full bucket reads above the limits", () => {
    const workers = [row("a/1", 29_000)]
    const early = (at: number) =>
      Fleet.renderStatus({
        at,
        counts: { documents: 400, done: 100, leased: 12, extractions: 100, failures: 0 },
        workers,
        totals: Fleet.sum(workers),
        startedAt: 0,
        finishedAt: undefined,
        perMinute: {
          trailingMinute: { requests: 3_000, inputTokens: 600_000, outputTokens: 20_000 },
          sinceStart: { requests: 3_000, inputTokens: 600_000, outputTokens: 20_000 }
        }
      }, {
        limits: { requestsPerMinute: 1_000, inputTokensPerMinute: 200_000, outputTokensPerMinute: 40_000 },
        timeScale: 1
      })
    expect(early(30_000)).toContain("this minute holds the start: the quota's bucket starts full")
    expect(early(60_000)).not.toContain("holds the start")
  })
})

describe("Fleet.report", () => {
  const entry = (worker: string, at: number, requests: number, extra: Partial<Fleet.Entry> = {}): Fleet.Entry => ({
    worker,
    host: "h",
    pid: 1,
    startedAt: worker === "a" ? 0 : 2_000,
    at,
    timeScale: 2,
    counters: { ...Fleet.zero, requests, succeeded: requests, costUsd: requests / 100 },
    queue: { interactive: 0, normal: 0, batch: 1 },
    inFlight: 1,
    ...extra
  })
  it.effect(
    "merges the workers' samples: at each second the sum of each one's latest counts, gauges only while it runs",
    () =>
      Effect.gen(function*() {
        const queue = yield* Queue.WorkQueue
        yield* queue.load([{ id: "d1", text: "x" }, { id: "d2", text: "y" }])
        yield* Fleet.createTables
        // Worker a: 0 s → 3 s (finished), worker b: 2 s → 5 s.
        for (
          const e of [
            entry("a", 0, 0),
            entry("a", 1_000, 2),
            entry("a", 2_500, 5),
            entry("a", 3_000, 6, { finished: true, inFlight: 0, queue: { interactive: 0, normal: 0, batch: 0 } }),
            entry("b", 2_000, 0),
            entry("b", 4_000, 3),
            entry("b", 5_000, 4, { finished: true, inFlight: 0, queue: { interactive: 0, normal: 0, batch: 0 } })
          ]
        ) yield* Fleet.record(e)
        yield* TestClock.adjust("10 seconds")
        const { samples, summary } = yield* Fleet.report
        expect(samples.map((s) => [s.atSeconds, s.requests, s.inFlight])).toEqual([
          [0, 0, 1],
          [1, 2, 1],
          [2, 2 + 0, 1 + 1],
          [3, 6 + 0, 0 + 1],
          [4, 6 + 3, 1],
          [5, 6 + 4, 0]
        ])
        // A provider minute of a simulator at 2× speed lasts 30 s.
        expect(samples.at(-1)?.quotaMinutes).toBeCloseTo(5 / 30, 9)
        expect(samples.at(-1)?.costUsd).toBeCloseTo(0.1, 9)
        expect(summary).toMatchObject({
          documents: 2,
          succeeded: 10,
          wallSeconds: 5,
          interrupted: true
        })
        expect(summary.requestsPerMinute).toBeCloseTo(10 / (5 / 30), 6)
      }).pipe(
        Effect.provide(Queue.layer.pipe(Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" })))),
        Effect.orDie
      )
  )
})
