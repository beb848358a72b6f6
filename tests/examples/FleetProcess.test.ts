/**
 * The extraction job as a fleet of real processes: `pnpm extract --db
 * postgres://… --redis redis://…` run four times at once against one
 * PostgreSQL database, one Redis and one simulator (started here, as the
 * parent of `--workers N` does, its URL given to each worker).
 *
 * The last one runs `--workers 3` itself: the parent starts the one
 * simulator, forks the workers and reports on the fleet; a Ctrl-C stops
 * them cleanly and the same command finishes the rest.
 *
 * These run on the real clock with real servers; they assert outcomes (every
 * document in exactly one table, the simulator's 429s and its count of
 * tokens against the budget), never timings. A database and a Redis prefix of
 * their own per run, dropped and deleted at the end.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Pricing } from "@sluice/core"
import { defaultLimits, fleetPrefix, simulatorLatency } from "@sluice/examples/extract/Cli"
import { withoutProviderVariables } from "@sluice/examples/providerEnv"
import { Simulator } from "@sluice/simulator"
import { Effect, Either, Fiber, Random, Redacted } from "effect"
import { Redis } from "ioredis"
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { afterAll, beforeAll } from "vitest"
import "../setup/pgPool.js"
import { postgresUrl } from "../setup/postgres.js"

const { PgClient } = await import("@effect/sql-pg")

const root = resolve(__dirname, "../..")
const model = "claude-haiku-4-5"
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const admin = new URL(postgresUrl())
const databases: Array<string> = []

/** A database of its own for one test: created now, dropped after the file. */
const freshDatabase = (name: string) =>
  Effect.gen(function*() {
    const database = `sluice_fleet_${name}_${process.pid}_${Date.now()}`
    databases.push(database)
    yield* adminSql(`CREATE DATABASE ${database}`)
    const url = new URL(admin)
    url.pathname = `/${database}`
    return url.toString()
  })

const adminSql = (statement: string) =>
  Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(admin.toString()) })),
    Effect.orDie
  )

/** Deletes a fleet's keys (its limiter and budget) from Redis. */
const deleteKeys = async (prefix: string) => {
  const redis = new Redis(redisUrl)
  try {
    const found = await redis.keys(`${prefix}:*`)
    if (found.length > 0) await redis.del(...found)
  } finally {
    await redis.quit()
  }
}
const prefixes: Array<string> = []

beforeAll(() => Effect.runPromise(adminSql("SELECT 1")))
afterAll(async () => {
  for (const database of databases) {
    await Effect.runPromise(adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))
  }
  for (const prefix of prefixes) await deleteKeys(prefix)
})

/** A worker: `pnpm extract …` as node with tsx as a loader (a kill reaches the job itself, not a wrapper). */
const spawnWorker = (args: ReadonlyArray<string>, simulatorUrl: string) =>
  spawn(process.execPath, [
    "--import",
    "tsx",
    "--conditions=@sluice/source",
    join(root, "packages/examples/src/extract.ts"),
    ...args
  ], {
    cwd: root,
    // No provider key, token or endpoint reaches a worker; the simulator's URL does.
    env: { ...withoutProviderVariables(process.env), SLUICE_SIM_URL: simulatorUrl }
  })

interface Ended {
  readonly code: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
}

/** Waits for a worker to exit (its output kept); interrupting the wait kills it. */
const ended = (child: ChildProcessWithoutNullStreams) =>
  Effect.async<Ended>((resume) => {
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code, signal) => resume(Effect.succeed({ code, signal, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** What the tables hold at the end. */
const outcomes = (db: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
    const failures = yield* sql<{ doc_id: string; outcome: string }>`SELECT doc_id, outcome FROM failures`
    const open = yield* sql<{ n: string }>`SELECT COUNT(*) AS n FROM documents WHERE completed_at IS NULL`
    return { extracted, failures, open: Number(open[0]!.n) }
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(db) })), Effect.scoped, Effect.orDie)

/** How many documents are done, and which workers hold leases now. */
const progress = (db: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const done = yield* sql<{ n: string }>`SELECT COUNT(*) AS n FROM documents WHERE completed_at IS NOT NULL`
    const holders = yield* sql<{ claimed_by: string }>`SELECT DISTINCT claimed_by FROM documents
      WHERE completed_at IS NULL AND claimed_by IS NOT NULL`
    return { done: Number(done[0]!.n), holders: holders.map((row) => row.claimed_by) }
  }).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(db) })),
    Effect.scoped,
    // Before the first worker has created the tables there is nothing to see.
    Effect.orElseSucceed(() => ({ done: 0, holders: [] as ReadonlyArray<string> }))
  )

const ids = (n: number) => Array.from({ length: n }, (_, i) => `doc-${String(i).padStart(5, "0")}`)

/** Every document in exactly one of the two tables: none twice, none missing. */
const expectExactlyOnce = (
  tables: { extracted: ReadonlyArray<string>; failures: ReadonlyArray<{ doc_id: string }> },
  n: number
) => {
  const all = [...tables.extracted, ...tables.failures.map((row) => row.doc_id)]
  expect(all.length).toBe(n)
  expect(new Set(all).size).toBe(n)
  expect([...all].sort()).toEqual(ids(n))
}

const docs = 2_000
const speed = 20
/** The simulator as the CLI's own would run: the default limits, at `speed`. */
const simulator = Simulator.serve({ quota: defaultLimits, timeScale: speed, latency: simulatorLatency, seed: 2026 })

const workerFlags = (db: string, extra: ReadonlyArray<string>) => [
  "--db",
  db,
  "--redis",
  redisUrl,
  "--docs",
  String(docs),
  "--sim-speed",
  String(speed),
  "--report",
  "none",
  "--json",
  ...extra
]

describe("the extraction job as a fleet of processes (PostgreSQL queue, Redis quota)", () => {
  it.live(
    "four workers finish 2,000 documents: each in exactly one table, no 429 at the simulator, the simulator's spend within the budget",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const sim = yield* simulator
        const db = yield* freshDatabase("four")
        prefixes.push(fleetPrefix(db, model))
        // About 40 % of what the whole run costs (some $3.5 at Haiku's price): the rest is over budget.
        const budgetUsd = 1.5
        const workers = Array.from({ length: 4 }, () =>
          spawnWorker(workerFlags(db, ["--budget-usd", String(budgetUsd)]), sim.url))
        const exits = yield* Effect.forEach(workers, ended, { concurrency: "unbounded" })
        for (const exit of exits) {
          expect(exit.code, exit.stderr.slice(-3_000)).toBe(0)
        }

        const tables = yield* outcomes(db)
        expectExactlyOnce(tables, docs)
        expect(tables.open).toBe(0)
        // The budget bound: some documents were over it, and recorded so.
        expect(tables.extracted.length).toBeGreaterThan(0)
        expect(
          tables.failures.filter((row) =>
            row.outcome === "over-budget"
          ).length
        ).toBeGreaterThan(0)
        // The workers' own summaries add up to the tables.
        const summaries = exits.map((exit) =>
          JSON.parse(exit.stdout.trim().split("\n").at(-1)!) as Record<string, number>
        )
        expect(summaries.reduce((n, s) => n + s.succeeded!, 0)).toBe(tables.extracted.length)

        // The simulator's word: no 429, and what it counted, at the model's price, within the budget.
        const stats = (yield* sim.stats).keys.filter((key) => key.model === model)
        expect(stats.reduce((n, key) => n + key.rateLimited, 0)).toBe(0)
        expect(stats.reduce((n, key) => n + key.accepted, 0)).toBe(tables.extracted.length)
        const price = Either.getOrThrow(Pricing.lookup(Pricing.defaultTable, model))
        const spentMicros = stats.reduce((micros, key) =>
          micros + Pricing.costMicros(price, {
            inputTokens: key.inputTokens,
            outputTokens: key.outputTokens,
            cacheReadInputTokens: key.cacheReadInputTokens,
            cacheWriteInputTokens: key.cacheWriteInputTokens
          }), 0)
        expect(spentMicros).toBeGreaterThan(0)
        expect(Pricing.toUsd(spentMicros)).toBeLessThanOrEqual(budgetUsd)
      })),
    { timeout: 600_000 }
  )

  it.live(
    "two of four workers killed with SIGKILL while they hold documents: the other two take those over when the lease expires, every document once",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const sim = yield* simulator
        const db = yield* freshDatabase("killed")
        prefixes.push(fleetPrefix(db, model))
        const workers = Array.from({ length: 4 }, () => spawnWorker(workerFlags(db, ["--lease", "3s"]), sim.url))
        const waits = yield* Effect.forEach(workers, (child) => Effect.fork(ended(child)))
        // Two victims, each killed once the fleet has done a random number of documents and while it holds some.
        const order = yield* Random.shuffle([0, 1, 2, 3])
        const victims = [...order].slice(0, 2)
        const heldAtKill: Array<boolean> = []
        for (const victim of victims) {
          const threshold = yield* Random.nextIntBetween(150, 900)
          const child = workers[victim]!
          const id = (pid: number | undefined) => `/${pid}`
          for (let i = 0; i < 6_000; i++) {
            const now = yield* progress(db)
            if (now.done >= threshold && now.holders.some((holder) => holder.endsWith(id(child.pid)))) {
              heldAtKill.push(true)
              break
            }
            if (child.exitCode !== null) break
            yield* Effect.sleep("100 millis")
          }
          child.kill("SIGKILL")
        }
        const exits = yield* Effect.forEach(waits, Fiber.join)
        for (const victim of victims) expect(exits[victim]!.signal).toBe("SIGKILL")
        // Each victim held leased documents when it died, so the survivors had to wait out the lease to finish.
        expect(heldAtKill).toEqual([true, true])
        for (const [i, exit] of exits.entries()) {
          if (!victims.includes(i)) expect(exit.code, exit.stderr.slice(-3_000)).toBe(0)
        }
        const tables = yield* outcomes(db)
        expectExactlyOnce(tables, docs)
        expect(tables.open).toBe(0)
        expect(tables.failures).toEqual([])
      })),
    { timeout: 600_000 }
  )

  it.live(
    "--workers 3: one simulator for the three, the fleet's summary; Ctrl-C stops them cleanly, and the same command again finishes every document once",
    () =>
      Effect.gen(function*() {
        const db = yield* freshDatabase("forked")
        const report = join(mkdtempSync(join(tmpdir(), "sluice-fleet-report-")), "report.html")
        const command = [
          "--db",
          db,
          "--docs",
          "1000",
          "--workers",
          "3",
          "--sim-speed",
          "5",
          "--report",
          report,
          "--json"
        ]
        // No SLUICE_SIM_URL: the parent starts the one simulator, and its workers call it.
        const env = withoutProviderVariables(process.env)
        const parent = spawn(process.execPath, [
          "--import",
          "tsx",
          "--conditions=@sluice/source",
          join(root, "packages/examples/src/extract.ts"),
          ...command
        ], { cwd: root, env })
        const first = yield* Effect.fork(ended(parent))
        // Ctrl-C (SIGINT to the parent alone) once the fleet has done some documents.
        for (let i = 0; i < 6_000 && (yield* progress(db)).done < 100; i++) yield* Effect.sleep("100 millis")
        parent.kill("SIGINT")
        const stopped = yield* Fiber.join(first)
        expect(stopped.stderr).toContain("stopping: no new documents")
        expect(stopped.stderr).toMatch(/^the fleet \(3 workers\): [\d,]+ extracted/m)
        expect(stopped.stderr).toMatch(/documents are not done: run the same command again to resume/)
        const calledFirst = Number(
          /^the simulator counted ([\d,]+) calls, 0 × 429/m.exec(stopped.stderr)![1]!.replace(/,/g, "")
        )
        const partial = yield* outcomes(db)
        // Every call the workers made was to the parent's simulator, and recorded before they stopped.
        expect(calledFirst).toBe(partial.extracted.length)
        expect(partial.extracted.length).toBeGreaterThanOrEqual(100)
        expect(partial.extracted.length).toBeLessThan(1_000)
        expect(partial.failures).toEqual([])
        expect(partial.open).toBe(1_000 - partial.extracted.length)

        const again = yield* ended(spawn(process.execPath, [
          "--import",
          "tsx",
          "--conditions=@sluice/source",
          join(root, "packages/examples/src/extract.ts"),
          ...command.map((arg) => arg === "5" ? "20" : arg)
        ], { cwd: root, env }))
        expect(again.code, again.stderr.slice(-3_000)).toBe(0)
        // --json: stdout is the fleet's summary, nothing else.
        const summary = JSON.parse(again.stdout) as Record<string, number>
        expect(summary).toMatchObject({ documents: 1_000, failed: 0, http429: 0 })
        expect(again.stderr).toContain("0 new, 1,000 already in the queue")
        const calledAgain = Number(
          /^the simulator counted ([\d,]+) calls, 0 × 429/m.exec(again.stderr)![1]!.replace(/,/g, "")
        )
        expect(calledFirst + calledAgain).toBe(1_000)
        // What the fleet used of the quota, as the single process says it: a share of each limit.
        const used = /the fleet used requests (\d+) %, input tokens (\d+) %, output tokens (\d+) %/.exec(again.stderr)
        expect(used, again.stderr.slice(-2_000)).not.toBeNull()
        for (const share of used!.slice(1)) expect(Number(share)).toBeLessThanOrEqual(100)
        expect(Math.max(...used!.slice(1).map(Number))).toBeGreaterThan(0)
        const tables = yield* outcomes(db)
        expectExactlyOnce(tables, 1_000)
        expect(tables.open).toBe(0)
        expect(readFileSync(report, "utf8")).toContain("data-chart=\"requests\"")
        rmSync(dirname(report), { recursive: true, force: true })
      }),
    { timeout: 600_000 }
  )
})
