/**
 * The extraction command end to end: the real `@anthropic-ai/sdk` over HTTP to
 * the simulator in process, into SQLite. These run on the real clock (the
 * simulator is a real server); they assert what happened, never how long it
 * took. The last one kills a child process with SIGKILL part-way and resumes.
 */
import { NodeContext } from "@effect/platform-node"
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import {
  cli,
  defaultLimits,
  fleetBatch,
  fleetPrefix,
  parseDuration,
  redactUrl,
  workerArgs
} from "@sluice/examples/extract/Cli"
import { withoutProviderVariables } from "@sluice/examples/providerEnv"
import { Simulator } from "@sluice/simulator"
import { ConfigProvider, Console, Duration, Effect, Option, Redacted } from "effect"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll } from "vitest"
import "../setup/pgPool.js"
import { postgresUrl } from "../setup/postgres.js"

const { PgClient } = await import("@effect/sql-pg")

const dir = mkdtempSync(join(tmpdir(), "sluice-cli-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const root = resolve(__dirname, "../..")

// The fleet's tests: a PostgreSQL database of this file's own, dropped at the end, and its Redis keys deleted.
const admin = new URL(postgresUrl())
const database = `sluice_cli_test_${process.pid}_${Date.now()}`
const pgUrl = (() => {
  const url = new URL(admin)
  url.pathname = `/${database}`
  return url.toString()
})()
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const adminSql = (statement: string) =>
  Effect.runPromise(
    Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))).pipe(
      Effect.provide(PgClient.layer({ url: Redacted.make(admin.toString()) }))
    )
  )
let created = false
const ensureDatabase = Effect.promise(async () => {
  if (!created) await adminSql(`CREATE DATABASE ${database}`)
  created = true
})
afterAll(async () => {
  if (created) await adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
  const redis = new Redis(redisUrl)
  const keys = await redis.keys(`${fleetPrefix(pgUrl, "claude-haiku-4-5")}:*`)
  if (keys.length > 0) await redis.del(...keys)
  await redis.quit()
})

/**
 * The environment of a spawned job: this process's without any provider
 * variable (vitest.config.ts removed them already; a child is given its
 * environment explicitly all the same), plus `extra`.
 */
const childEnv = (extra: Record<string, string> = {}) => ({ ...withoutProviderVariables(process.env), ...extra })

/** `pnpm extract …` as a child process: node itself with tsx as a loader (the tsx command would run the script in a grandchild a kill would miss). */
const spawnExtract = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  spawn(process.execPath, [
    "--import",
    "tsx",
    "--conditions=@sluice/source",
    join(root, "packages/examples/src/extract.ts"),
    ...args
  ], { cwd: root, env })

/** Runs the job as a child process to its end: its exit code and what it printed. */
const runChild = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.async<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resume) => {
    const child = spawnExtract(args, env)
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** Runs the command in process with `args`, capturing what it prints; `env` is all the environment `Config` sees. */
const runCli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const base = yield* Effect.console
    const capture: Console.Console = {
      ...base,
      log: (...parts) => Effect.sync(() => void stdout.push(parts.map(String).join(" "))),
      error: (...parts) => Effect.sync(() => void stderr.push(parts.map(String).join(" "))),
      unsafe: {
        ...base.unsafe,
        log: (...parts) => void stdout.push(parts.map(String).join(" ")),
        error: (...parts) => void stderr.push(parts.map(String).join(" "))
      }
    }
    const exit = yield* Effect.exit(
      cli(["node", "extract", ...args]).pipe(
        Effect.withConsole(capture),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
        Effect.provide(NodeContext.layer)
      )
    )
    return { exit, stdout, stderr }
  })

const rowsOf = (filename: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
    const failures = yield* sql<{ doc_id: string; reason: string }>`SELECT doc_id, reason FROM failures`
    const [sums] = yield* sql<
      { input: number; output: number; cost: number }
    >`SELECT SUM(input_tokens) AS input, SUM(output_tokens) AS output, SUM(cost_usd) AS cost FROM extractions`
    return { extracted, failures, sums: sums! }
  }).pipe(Effect.provide(SqliteClient.layer({ filename })))

const pgRows = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
  const failures = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM failures`).map((row) => row.doc_id)
  return { extracted, failures }
}).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(pgUrl) })), Effect.scoped)

const summaryFields = [
  "documents",
  "succeeded",
  "failed",
  "shed",
  "overBudget",
  "http429",
  "http529",
  "retries",
  "inputTokens",
  "outputTokens",
  "costUsd",
  "wallSeconds",
  "requestsPerMinute",
  "inputTokensPerMinute",
  "outputTokensPerMinute"
]

describe("the extract command", () => {
  it.live("--json prints one object with the summary, consistent with the database, with no 429 under the default limits", () =>
    Effect.gen(function*() {
      const db = join(dir, "e2e.db")
      const report = join(dir, "e2e.html")
      const { exit, stderr, stdout } = yield* runCli([
        "--docs",
        "40",
        "--db",
        db,
        "--report",
        report,
        "--json",
        "--sim-speed",
        "20"
      ])
      expect(exit._tag, stderr.join("\n")).toBe("Success")
      expect(stdout.length).toBe(1)
      const summary = JSON.parse(stdout[0]!) as Record<string, number>
      for (const field of summaryFields) expect(typeof summary[field], field).toBe("number")
      expect(summary).toMatchObject({
        documents: 40,
        succeeded: 40,
        failed: 0,
        shed: 0,
        overBudget: 0,
        http429: 0,
        http529: 0
      })
      const { extracted, failures, sums } = yield* rowsOf(db)
      expect(extracted.sort()).toEqual(Array.from({ length: 40 }, (_, i) => `doc-${String(i).padStart(5, "0")}`))
      expect(failures).toEqual([])
      expect(sums.input).toBe(summary.inputTokens)
      expect(sums.output).toBe(summary.outputTokens)
      expect(sums.cost).toBeCloseTo(summary.costUsd!, 9)
      // The progress and the closing lines went to stderr; the report was written.
      expect(stderr.join("\n")).toContain("40 extracted, 0 failed")
      const html = readFileSync(report, "utf8")
      expect(html).toContain("data-chart=\"requests\"")
      expect(html).not.toMatch(/<script[^>]+src=|<link /)

      // A rerun over the same database skips everything.
      const again = yield* runCli(["--docs", "40", "--db", db, "--report", "none", "--json", "--sim-speed", "20"])
      expect(JSON.parse(again.stdout[0]!)).toMatchObject({ documents: 40, succeeded: 0, skipped: 40 })
    }))

  it.live("bad documents from --input land in failures with their reasons", () =>
    Effect.gen(function*() {
      const input = join(dir, "docs.jsonl")
      writeFileSync(
        input,
        [
          JSON.stringify({ id: "ok-1", text: "Revenue grew in the quarter; margins were strong." }),
          JSON.stringify({ id: "blank", text: "   " }),
          "{ not json",
          JSON.stringify({ id: "big", text: "token ".repeat(20_000) }),
          JSON.stringify({ id: "ok-2", text: "The clinical trial enrolled patients." })
        ].join("\n")
      )
      const db = join(dir, "bad.db")
      const { exit, stdout } = yield* runCli([
        "--input",
        input,
        "--db",
        db,
        "--itpm",
        "10000",
        "--report",
        "none",
        "--json"
      ])
      expect(exit._tag).toBe("Success")
      expect(JSON.parse(stdout[0]!)).toMatchObject({ documents: 5, succeeded: 2, failed: 3 })
      const { extracted, failures } = yield* rowsOf(db)
      expect(extracted.sort()).toEqual(["ok-1", "ok-2"])
      const reasons = Object.fromEntries(failures.map((row) => [row.doc_id, row.reason]))
      expect(reasons["blank"]).toMatch(/empty document/)
      expect(reasons["line-3"]).toMatch(/line 3 is not a JSON object/)
      expect(reasons["big"]).toMatch(/too large/)
    }))

  it.live("bad flags give a clear error naming the flag", () =>
    Effect.gen(function*() {
      const zero = yield* runCli(["--docs", "0", "--db", join(dir, "x.db")])
      expect(zero.exit._tag).toBe("Failure")
      expect([...zero.stdout, ...zero.stderr].join("\n") + String(zero.exit)).toContain(
        "--docs must be a whole number above 0"
      )
      const both = yield* runCli(["--docs", "3", "--input", dir, "--db", join(dir, "x.db")])
      expect(both.exit._tag).toBe("Failure")
      expect(both.stderr.join("\n")).toContain(
        "error: give --docs (synthetic documents) or --input (your documents), not both"
      )
      const missing = yield* runCli(["--input", join(dir, "missing"), "--db", join(dir, "x.db")])
      expect(missing.stderr.join("\n")).toContain(
        `error: Cannot read --input ${join(dir, "missing")}: no such file or folder`
      )
      const share = yield* runCli(["--sim-foreign-share", "1.5", "--db", join(dir, "x.db")])
      expect([...share.stdout, ...share.stderr].join("\n") + String(share.exit)).toContain(
        "--sim-foreign-share must be at least 0 and below 1"
      )
    }))

  it.live(
    "a run killed with SIGKILL part-way and run again ends with every document in exactly one table, once",
    () =>
      Effect.gen(function*() {
        const db = join(dir, "killed.db")
        const child = spawnExtract([
          "--docs",
          "200",
          "--db",
          db,
          "--rpm",
          "60",
          "--sim-speed",
          "2",
          "--report",
          "none",
          "--json"
        ], childEnv())
        // Waits (polling the database, not asserting any time) until some documents are in.
        let before = 0
        for (let i = 0; i < 600 && before < 20; i++) {
          yield* Effect.sleep("100 millis")
          if (existsSync(db)) {
            before =
              (yield* Effect.orElseSucceed(rowsOf(db), () => ({ extracted: [] as Array<string> }))).extracted.length
          }
        }
        child.kill("SIGKILL")
        yield* Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
          else child.once("exit", () => resume(Effect.void))
        })
        const partial = yield* rowsOf(db)
        expect(partial.extracted.length).toBeGreaterThanOrEqual(20)
        expect(partial.extracted.length).toBeLessThan(200)

        const rerun = yield* runCli([
          "--docs",
          "200",
          "--db",
          db,
          "--rpm",
          "100000",
          "--itpm",
          "100000000",
          "--otpm",
          "10000000",
          "--report",
          "none",
          "--json",
          "--sim-speed",
          "20"
        ])
        expect(rerun.exit._tag).toBe("Success")
        const summary = JSON.parse(rerun.stdout[0]!) as Record<string, number>
        expect(summary.skipped).toBe(partial.extracted.length)
        const { extracted, failures } = yield* rowsOf(db)
        const all = [...extracted, ...failures.map((row) => row.doc_id)]
        expect(all.length).toBe(200)
        expect(new Set(all).size).toBe(200)
      }),
    { timeout: 90_000 }
  )

  it.live(
    "with ANTHROPIC_API_KEY set and no flag, `pnpm start` runs on the simulator and says which flag would call the real API",
    () =>
      Effect.gen(function*() {
        // The key is fake, and the endpoint the SDK would fall back to is a closed local port: were the key to switch
        // the job to the real provider, the calls would fail here, on this machine, instead of reaching Anthropic.
        const env = childEnv({ ANTHROPIC_API_KEY: "sk-test", ANTHROPIC_BASE_URL: "http://127.0.0.1:9" })
        const db = join(dir, "keyed.db")
        const { code, stderr, stdout } = yield* runChild([
          "--docs",
          "6",
          "--db",
          db,
          "--sim-speed",
          "20",
          "--report",
          "none",
          "--json"
        ], env)
        expect(code, stderr).toBe(0)
        expect(JSON.parse(stdout.trim().split("\n").pop()!)).toMatchObject({ documents: 6, succeeded: 6, failed: 0 })
        const notice = stderr.split("\n").filter((line) => line.includes("ANTHROPIC_API_KEY"))
        expect(notice).toEqual([
          "ANTHROPIC_API_KEY is set but not used: this run calls the built-in simulator (--provider anthropic calls the real Anthropic API)"
        ])
        expect(stderr).toMatch(/on the built-in simulator at http:\/\/127\.0\.0\.1:\d+/)
      }),
    { timeout: 90_000 }
  )
  it.live("a key in the environment and no flag: the in-process run is on the simulator and prints the one-line notice", () =>
    Effect.gen(function*() {
      const { exit, stderr, stdout } = yield* runCli([
        "--docs",
        "3",
        "--db",
        join(dir, "notice.db"),
        "--report",
        "none",
        "--json",
        "--sim-speed",
        "20"
      ], { ANTHROPIC_API_KEY: "sk-test" })
      expect(exit._tag, stderr.join("\n")).toBe("Success")
      expect(JSON.parse(stdout[0]!)).toMatchObject({ documents: 3, succeeded: 3 })
      expect(stderr[0]).toBe(
        "ANTHROPIC_API_KEY is set but not used: this run calls the built-in simulator (--provider anthropic calls the real Anthropic API)"
      )
      expect(stderr.join("\n")).toContain("on the built-in simulator at")
      expect(stderr.join("\n")).not.toContain("budget $")
    }))

  it.live("--provider anthropic with no key, or with --provider simulator and --base-url together, or with an unpriced model, refuses before any call", () =>
    Effect.gen(function*() {
      const noKey = yield* runCli(["--provider", "anthropic", "--docs", "3", "--db", join(dir, "refused.db")])
      expect(noKey.exit._tag).toBe("Failure")
      expect(noKey.stderr).toContain("error: --provider anthropic needs the API key in ANTHROPIC_API_KEY")
      const both = yield* runCli([
        "--provider",
        "simulator",
        "--base-url",
        "http://127.0.0.1:9",
        "--docs",
        "3",
        "--db",
        join(dir, "refused.db")
      ])
      expect(both.stderr).toContain(
        "error: --provider simulator is the built-in simulator and --base-url an endpoint of your own: give one of them"
      )
      const unpriced = yield* runCli([
        "--provider",
        "anthropic",
        "--model",
        "claude-unknown-9",
        "--docs",
        "3",
        "--db",
        join(dir, "refused.db")
      ], { ANTHROPIC_API_KEY: "sk-test" })
      expect(unpriced.stderr.join("\n")).toContain("error: no price is known for --model claude-unknown-9")
      expect(existsSync(join(dir, "refused.db"))).toBe(false)
    }))

  it.live("--provider anthropic without --budget-usd runs under the default $5 cap, prints the worst case first, and never sends a document whose worst case passes the cap", () =>
    Effect.scoped(Effect.gen(function*() {
      // The real-provider path, pointed by --base-url at a simulator of the test's own: nothing leaves the machine.
      const endpoint = yield* Simulator.serve({ timeScale: 20, quota: defaultLimits })
      const db = join(dir, "capped.db")
      const flags = ["--provider", "anthropic", "--base-url", endpoint.url, "--db", db, "--report", "none", "--json"]
      const key = { ANTHROPIC_API_KEY: "sk-test" }
      const first = yield* runCli(["--docs", "20", ...flags], key)
      expect(first.exit._tag, first.stderr.join("\n")).toBe("Success")
      expect(first.stderr).toContain(
        "budget $5.00 for the job (the default on a real provider; --budget-usd sets another)"
      )
      const worstLine = first.stderr.find((line) => line.startsWith("worst case "))
      expect(worstLine).toMatch(
        /^worst case \$(\d+\.\d\d): 20 documents to send, about [\d,]+ input tokens and 12,000 output tokens \(max_tokens of each\) at claude-haiku-4-5's list price; this run spends at most \$\d+\.\d\d$/
      )
      // Printed before the first call, and a true bound on what the calls cost.
      expect(first.stderr.indexOf(worstLine!)).toBeLessThan(
        first.stderr.findIndex((line) => line.includes("extracted,"))
      )
      const summary = JSON.parse(first.stdout[0]!) as Record<string, number>
      expect(summary).toMatchObject({ documents: 20, succeeded: 20, overBudget: 0 })
      expect(summary.costUsd).toBeGreaterThan(0)
      expect(summary.costUsd).toBeLessThanOrEqual(Number(/^worst case \$(\d+\.\d\d)/.exec(worstLine!)![1]))

      // The cap binds: at Opus prices one document of ~400,000 input tokens may cost over $5 at worst, so the budget
      // refuses it before it is sent (over budget), while a small one goes through.
      const input = join(dir, "costly.jsonl")
      writeFileSync(
        input,
        [
          JSON.stringify({ id: "small", text: "Revenue grew in the quarter; margins were strong." }),
          JSON.stringify({ id: "huge", text: "token ".repeat(400_000) })
        ].join("\n")
      )
      const costly = yield* runCli([
        "--input",
        input,
        "--model",
        "claude-opus-4-1",
        ...flags.map((flag) => flag === db ? join(dir, "costly.db") : flag)
      ], key)
      expect(costly.exit._tag, costly.stderr.join("\n")).toBe("Success")
      expect(costly.stderr.find((line) => line.startsWith("worst case "))).toMatch(
        /^worst case \$\d+\.\d\d: 2 documents to send, .* at claude-opus-4-1's list price; this run spends at most \$5\.00 \(the budget\), documents past it are recorded as over budget$/
      )
      expect(JSON.parse(costly.stdout[0]!)).toMatchObject({ documents: 2, succeeded: 1, overBudget: 1 })
      const { extracted, failures } = yield* rowsOf(join(dir, "costly.db"))
      expect(extracted).toEqual(["small"])
      expect(failures.map((row) => row.doc_id)).toEqual(["huge"])
      // The provider saw the small document only.
      const opus = (yield* endpoint.stats).keys.filter((k) => k.model === "claude-opus-4-1")
      expect(opus.map((k) => k.accepted)).toEqual([1])
      expect(opus[0]!.inputTokens).toBeLessThan(1_000)
    })))

  it("fleet flags: durations, the forked workers' arguments, redacted URLs, the Redis prefix, the claim batch", () => {
    expect(Option.map(parseDuration("3s"), Duration.toMillis)).toEqual(Option.some(3_000))
    expect(Option.map(parseDuration("500ms"), Duration.toMillis)).toEqual(Option.some(500))
    expect(Option.map(parseDuration("2m"), Duration.toMillis)).toEqual(Option.some(120_000))
    expect(Option.map(parseDuration("90 seconds"), Duration.toMillis)).toEqual(Option.some(90_000))
    for (const bad of ["0s", "soon", "-3s", "Infinity"]) expect(Option.isNone(parseDuration(bad)), bad).toBe(true)

    expect(workerArgs([
      "--db",
      "postgres://h/db",
      "--workers",
      "4",
      "--docs=2000",
      "--fresh",
      "--sim-speed",
      "20",
      "--input",
      "docs.jsonl",
      "--json",
      "true",
      "--report",
      "out/r.html",
      "--redis",
      "redis://r"
    ])).toEqual([
      "--db",
      "postgres://h/db",
      "--sim-speed",
      "20",
      "--redis",
      "redis://r",
      "--report",
      "none",
      "--json"
    ])

    expect(redactUrl("postgres://app:s3cret@db.internal:5432/jobs")).toBe("postgres://app:***@db.internal:5432/jobs")
    expect(redactUrl("redis://:s3cret@127.0.0.1:6379/2")).toBe("redis://:***@127.0.0.1:6379/2")
    expect(redactUrl("postgres://db.internal/jobs")).toBe("postgres://db.internal/jobs")

    // Every worker of one job shares the prefix, whoever connects and however the port is spelled; another job does not.
    const prefix = fleetPrefix("postgres://a:x@DB.internal/jobs", "claude-haiku-4-5")
    expect(prefix).toMatch(/^sluice:extract:[0-9a-f]{12}:claude-haiku-4-5$/)
    expect(fleetPrefix("postgres://b:y@db.internal:5432/jobs", "claude-haiku-4-5")).toBe(prefix)
    expect(fleetPrefix("postgres://db.internal/other", "claude-haiku-4-5")).not.toBe(prefix)
    expect(fleetPrefix("postgres://db.internal/jobs", "claude-sonnet-4-5")).not.toBe(prefix)

    expect([fleetBatch(4), fleetBatch(64), fleetBatch(256)]).toEqual([1, 8, 16])
  })

  it.live("fleet flags that do not go together are refused, naming the flag, before any database is opened", () =>
    Effect.gen(function*() {
      const text = (run: { stdout: ReadonlyArray<string>; stderr: ReadonlyArray<string>; exit: unknown }) =>
        [...run.stdout, ...run.stderr].join("\n") + String(run.exit)
      const sqlite = join(dir, "fleet-refused.db")
      const workers = yield* runCli(["--workers", "2", "--db", sqlite])
      expect(workers.exit._tag).toBe("Failure")
      expect(workers.stderr.join("\n")).toContain("error: --workers needs --db postgres://…")
      const redis = yield* runCli(["--redis", redisUrl, "--db", sqlite])
      expect(redis.stderr.join("\n")).toContain("error: --redis needs --db postgres://…")
      const lease = yield* runCli(["--lease", "30s", "--db", sqlite])
      expect(lease.stderr.join("\n")).toContain("error: --lease needs --db postgres://…")
      expect(existsSync(sqlite)).toBe(false)
      const zero = yield* runCli(["--workers", "0", "--db", pgUrl])
      expect(text(zero)).toContain("--workers must be a whole number above 0")
      const badLease = yield* runCli(["--lease", "soon", "--db", pgUrl])
      expect(text(badLease)).toContain("--lease must be a duration above 0")
      const notRedis = yield* runCli(["--redis", "http://127.0.0.1:6379", "--db", pgUrl])
      expect(notRedis.stderr.join("\n")).toContain("error: --redis must be a redis:// or rediss:// URL")
      const status = yield* runCli(["status", "--db", sqlite])
      expect(status.stderr.join("\n")).toContain("error: status needs --db postgres://…")
      // A database that is not there: said so, password hidden, with how to make it.
      const missing = new URL(admin)
      missing.password = "pg-s3cret"
      missing.pathname = `/${database}_missing`
      const absent = yield* runCli(["--db", missing.toString(), "--docs", "3", "--report", "none"])
      expect(absent.stderr.join("\n")).toContain(
        `error: cannot open --db ${
          missing.toString().replace("pg-s3cret", "***")
        }: database "${database}_missing" does not exist (create it first`
      )
    }))

  it.live(
    "--db postgres://: the documents loaded once, a worker extracts them, a second worker finds nothing to do, status shows both; passwords never printed",
    () =>
      Effect.gen(function*() {
        yield* ensureDatabase
        // Trust authentication here: the password is not checked, only kept out of the output.
        const db = pgUrl.replace("postgres://postgres@", "postgres://postgres:pg-s3cret@")
        const redis = redisUrl.replace("redis://", "redis://:redis-s3cret@")
        const flags = ["--db", db, "--redis", redis, "--docs", "30", "--sim-speed", "20", "--report", "none", "--json"]
        const first = yield* runCli([...flags, "--fresh"], { SLUICE_FLEET_WORKER: "first" })
        expect(first.exit._tag, first.stderr.join("\n")).toBe("Success")
        expect(JSON.parse(first.stdout[0]!)).toMatchObject({ documents: 30, succeeded: 30, failed: 0, http429: 0 })
        const header = first.stderr.join("\n")
        expect(header).toContain("loaded 30 synthetic documents (seed 2026): 30 new, 0 already in the queue")
        expect(header).toContain("fleet worker first: 30 documents in the queue of postgres://postgres:***@")
        expect(header).toContain(`quota and budget shared by the fleet through Redis at redis://:***@`)
        // The same command again: the ids are there already, nothing is left to claim, nothing is written twice.
        const second = yield* runCli(flags, { SLUICE_FLEET_WORKER: "second" })
        expect(second.exit._tag, second.stderr.join("\n")).toBe("Success")
        expect(second.stderr.join("\n")).toContain("0 new, 30 already in the queue")
        expect(JSON.parse(second.stdout[0]!)).toMatchObject({ documents: 30, succeeded: 0 })
        const { extracted, failures } = yield* pgRows
        expect(extracted.length).toBe(30)
        expect(new Set(extracted).size).toBe(30)
        expect(failures).toEqual([])

        const status = yield* runCli(["status", "--db", db, "--sim-speed", "20"])
        expect(status.exit._tag, status.stderr.join("\n")).toBe("Success")
        const shown = status.stdout.join("\n")
        expect(shown).toContain("fleet: 30 / 30 documents done (100 %)")
        expect(shown).toMatch(/^ {2}first: finished .*; 30 done \(30 extracted, 0 failures\)/m)
        expect(shown).toMatch(/^ {2}second: finished .*; 0 done/m)
        for (const run of [first, second, status]) {
          expect([...run.stdout, ...run.stderr].join("\n")).not.toMatch(/s3cret/)
        }
      }),
    { timeout: 120_000 }
  )

  it.live("--db postgres:// on a real provider: the fleet's budget, and the worst case of the queue's open documents before the first call", () =>
    Effect.scoped(Effect.gen(function*() {
      yield* ensureDatabase
      // The real-provider path, pointed by --base-url at a simulator of the test's own: nothing leaves the machine.
      const endpoint = yield* Simulator.serve({ timeScale: 20, quota: defaultLimits })
      const run = yield* runCli([
        "--provider",
        "anthropic",
        "--base-url",
        endpoint.url,
        "--db",
        pgUrl,
        "--fresh",
        "--docs",
        "8",
        "--report",
        "none",
        "--json"
      ], { ANTHROPIC_API_KEY: "sk-test" })
      expect(run.exit._tag, run.stderr.join("\n")).toBe("Success")
      expect(run.stderr).toContain(
        "budget $5.00 for the job (the default on a real provider; --budget-usd sets another), for the fleet"
      )
      const worst = run.stderr.find((line) => line.startsWith("worst case "))
      expect(worst).toMatch(
        /^worst case \$(\d+\.\d\d): 8 documents to send, about [\d,]+ input tokens and 4,800 output tokens \(max_tokens of each\)/
      )
      const summary = JSON.parse(run.stdout[0]!) as Record<string, number>
      expect(summary).toMatchObject({ documents: 8, succeeded: 8 })
      expect(summary.costUsd).toBeLessThanOrEqual(Number(/^worst case \$(\d+\.\d\d)/.exec(worst!)![1]))
    })))

  it.live("--db postgres:// with nothing to load and an empty queue says how to load documents", () =>
    Effect.gen(function*() {
      yield* ensureDatabase
      const empty = yield* runCli(["--db", pgUrl, "--fresh", "--sim-speed", "20", "--report", "none"])
      expect(empty.exit._tag).toBe("Failure")
      expect(empty.stderr.join("\n")).toContain("has no documents: give --docs N or --input PATH")
    }))
})
