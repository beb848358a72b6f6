/**
 * Scenario 7: the extraction job as a fleet against the static split, both
 * with the job's own command line (`packages/examples/src/extract.ts`) in N
 * processes on one simulator:
 *
 * - **fleet**: every process runs `--db postgres://… --redis redis://…`: the
 *   documents loaded once into one PostgreSQL queue, claimed a batch at a time
 *   by whichever worker has room, the key's quota shared through Redis;
 * - **static split**: process i gets every N-th document (a `.jsonl` of its own,
 *   `--input`), its own SQLite file and 1/N of the quota (`--rpm/--itpm/--otpm`).
 *
 * The makespan runs from the first worker's start of work (after Node, tsx and
 * the tokenizer have loaded) to the last one's end; the ideal is the least time
 * the quota allows for all the documents. The simulator counts the 429s.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Limits } from "@sluice/examples/extract/Summary"
import { withoutProviderVariables } from "@sluice/examples/providerEnv"
import { Simulator } from "@sluice/simulator"
import { Console, Effect, Redacted } from "effect"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { idealMinutes, MODEL, workload } from "./peers/common.js"

const root = join(import.meta.dirname, "..")
const latency = { baseMs: 500, perOutputTokenMs: 6, jitterMs: 400 }

/** What scenario 7 is given. */
export interface FleetOptions {
  readonly docs: number
  readonly seed: number
  /** The key's quota, a minute. */
  readonly limits: Limits
  readonly timeScale: number
  readonly processes: number
  readonly redisUrl: string
  /** A PostgreSQL server where a database of the run's own is created, and dropped at the end. */
  readonly postgresUrl: string
}

interface Worker {
  readonly code: number | null
  /** When it exited (ms since the epoch) and how long its job ran by its own clock. */
  readonly endedAt: number
  readonly wallSeconds: number
  readonly succeeded: number
  readonly stderr: string
}

/** One process of the job, to its end. */
const runWorker = (args: ReadonlyArray<string>, simulatorUrl: string) =>
  Effect.async<Worker, Error>((resume) => {
    const child = spawn(process.execPath, [
      "--import",
      "tsx",
      "--conditions=@sluice/source",
      join(root, "packages/examples/src/extract.ts"),
      ...args,
      "--report",
      "none",
      "--json"
    ], {
      cwd: root,
      env: { ...withoutProviderVariables(process.env), SLUICE_SIM_URL: simulatorUrl },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk) => (out += String(chunk)))
    child.stderr.on("data", (chunk) => (err += String(chunk)))
    child.on("close", (code) => {
      const endedAt = Date.now()
      try {
        const summary = JSON.parse(out.trim().split("\n").at(-1) ?? "") as { wallSeconds: number; succeeded: number }
        resume(
          Effect.succeed({ code, endedAt, wallSeconds: summary.wallSeconds, succeeded: summary.succeeded, stderr: err })
        )
      } catch {
        resume(Effect.fail(new Error(`a worker exited with ${code}: ${err.slice(-2_000)}`)))
      }
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

interface Row {
  readonly name: string
  readonly completed: number
  readonly makespanMs: number
  readonly rateLimited: number
  readonly peak: { readonly requests: number; readonly inputTokens: number; readonly outputTokens: number }
  /** Each worker's documents, to show how even the split was, and when it started and ended its work (s after the first start). */
  readonly perWorker: ReadonlyArray<number>
  readonly spans: ReadonlyArray<readonly [number, number]>
}

/** N workers on a fresh simulator (worker i started `delayMs(i)` after the others); the simulator's verdict. */
const measure = (
  name: string,
  options: FleetOptions,
  argsOf: (index: number) => ReadonlyArray<string>,
  delayMs: (index: number) => number = () => 0
) =>
  Effect.scoped(Effect.gen(function*() {
    const sim = yield* Simulator.serve({
      quota: options.limits,
      timeScale: options.timeScale,
      latency,
      seed: options.seed
    })
    const workers = yield* Effect.forEach(
      Array.from({ length: options.processes }, (_, i) => i),
      (i) => Effect.delay(runWorker(argsOf(i), sim.url), delayMs(i)),
      { concurrency: "unbounded" }
    )
    const stats = (yield* sim.stats).keys.filter((key) => key.model === MODEL)
    const started = Math.min(...workers.map((w) => w.endedAt - w.wallSeconds * 1000))
    return {
      name,
      completed: workers.reduce((n, w) => n + w.succeeded, 0),
      makespanMs: Math.max(...workers.map((w) => w.endedAt)) - started,
      rateLimited: stats.reduce((n, key) => n + key.rateLimited, 0),
      peak: stats[0]?.bestMinuteUtilisation ?? { requests: 0, inputTokens: 0, outputTokens: 0 },
      perWorker: workers.map((w) => w.succeeded),
      spans: workers.map((w) => [(w.endedAt - w.wallSeconds * 1000 - started) / 1000, (w.endedAt - started) / 1000])
    } satisfies Row
  }))

const pct = (x: number) => `${Math.round(100 * x)} %`

let databases = 0

/** A database of the run's own on the PostgreSQL server, dropped when the scope closes. */
const database = (postgresUrl: string) =>
  Effect.gen(function*() {
    const { PgClient } = yield* Effect.promise(() => import("@effect/sql-pg"))
    const admin = (statement: string) =>
      Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))).pipe(
        Effect.provide(PgClient.layer({ url: Redacted.make(postgresUrl) }))
      )
    const name = `sluice_bench_fleet_${process.pid}_${Date.now()}_${++databases}`
    yield* Effect.acquireRelease(
      admin(`CREATE DATABASE ${name}`),
      () => Effect.orElse(admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`), () => Effect.void)
    )
    const url = new URL(postgresUrl)
    url.pathname = `/${name}`
    return url.toString()
  })

/** Deletes the keys of the fleet's limiter and budget from Redis. */
const deleteKeys = (redisUrl: string, pattern: string) =>
  Effect.promise(async () => {
    const redis = new Redis(redisUrl)
    try {
      const keys = await redis.keys(pattern)
      if (keys.length > 0) await redis.del(...keys)
    } finally {
      await redis.quit()
    }
  })

/** Scenario 7's table (markdown), or why it was skipped. */
export const fleet = (options: FleetOptions): Effect.Effect<string, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const { fleetPrefix } = yield* Effect.promise(() => import("@sluice/examples/extract/Cli"))
    // A database for each fleet run, its Redis keys deleted at the end.
    const fleetDatabase = Effect.tap(
      database(options.postgresUrl),
      (db) => Effect.addFinalizer(() => deleteKeys(options.redisUrl, `${fleetPrefix(db, MODEL)}:*`))
    )
    const dbs = [yield* fleetDatabase, yield* fleetDatabase] as const
    const dir = mkdtempSync(join(tmpdir(), "sluice-bench-fleet-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))

    const docs = yield* workload(options.docs, options.seed)
    const idealMs = (idealMinutes(docs, options.limits) * 60_000) / options.timeScale
    const n = options.processes
    const quotaFlags = (share: number) => [
      "--rpm",
      String(Math.floor(options.limits.requestsPerMinute * share)),
      "--itpm",
      String(Math.floor(options.limits.inputTokensPerMinute * share)),
      "--otpm",
      String(Math.floor(options.limits.outputTokensPerMinute * share)),
      "--sim-speed",
      String(options.timeScale)
    ]
    const shards = Array.from({ length: n }, (_, i) => {
      const file = join(dir, `shard-${i}.jsonl`)
      writeFileSync(
        file,
        docs.filter((_, j) => j % n === i).map((doc) => JSON.stringify({ id: doc.id, text: doc.text })).join("\n")
      )
      return file
    })
    const report = (row: Row) =>
      Console.error(
        `  ${row.name}: ${row.completed}/${options.docs} in ${(row.makespanMs / 1000).toFixed(1)} s (ideal ${
          (idealMs / 1000).toFixed(1)
        } s), ${row.rateLimited} × 429; per worker ${
          row.perWorker.map((n, i) => `${n} (${row.spans[i]![0].toFixed(1)} to ${row.spans[i]![1].toFixed(1)} s)`).join(
            ", "
          )
        }`
      )

    const fleetArgs = (run: number) => () => [
      "--db",
      dbs[run - 1]!,
      "--redis",
      options.redisUrl,
      "--docs",
      String(options.docs),
      "--seed",
      String(options.seed),
      ...quotaFlags(1)
    ]
    const splitArgs = (run: number) => (i: number) => [
      "--db",
      join(dir, `shard-${run}-${i}.db`),
      "--input",
      shards[i]!,
      ...quotaFlags(1 / n)
    ]
    // The second pair: the last worker starts a quarter of the ideal after the others (a machine that comes up late).
    const lateMs = Math.round(idealMs / 4)
    const late = (i: number) => i === n - 1 ? lateMs : 0
    const rows: Array<Row> = []
    for (
      const [name, args, delay] of [
        ["fleet job (PostgreSQL queue, Redis quota)", fleetArgs(1), undefined],
        [`static split (1/${n} of the documents and of the quota each)`, splitArgs(1), undefined],
        [`fleet job, worker ${n} started ${(lateMs / 1000).toFixed(1)} s late`, fleetArgs(2), late],
        [`static split, worker ${n} started ${(lateMs / 1000).toFixed(1)} s late`, splitArgs(2), late]
      ] as const
    ) {
      rows.push(yield* Effect.tap(measure(name, options, args, delay), report))
    }
    const [fleetRow] = rows as [Row, ...Array<Row>]
    const lines = [
      "| run | done | makespan / ideal | vs fleet | 429s | peak requests | peak input | peak output | documents per worker |",
      "|---|---|---|---|---|---|---|---|---|"
    ]
    for (const row of rows) {
      lines.push(
        `| ${row.name} | ${row.completed} | ${(row.makespanMs / idealMs).toFixed(2)}× | ${
          (row.makespanMs / fleetRow.makespanMs).toFixed(2)
        }× | ${row.rateLimited} | ${pct(row.peak.requests)} | ${pct(row.peak.inputTokens)} | ${
          pct(row.peak.outputTokens)
        } | ${row.perWorker.join(" / ")} |`
      )
    }
    lines.push(
      "",
      `Ideal ${(idealMs / 1000).toFixed(1)} s (${idealMinutes(docs, options.limits).toFixed(1)} provider minutes). ` +
        "Makespan: from the first worker's start of work to the last one's end (process start-up excluded)."
    )
    return lines.join("\n")
  }))
