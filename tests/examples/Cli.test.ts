/**
 * The extraction command end to end: the real `@anthropic-ai/sdk` over HTTP to
 * the simulator in process, into SQLite. These run on the real clock (the
 * simulator is a real server); they assert what happened, never how long it
 * took. The last one kills a child process with SIGKILL part-way and resumes.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { cli } from "@sluice/examples/extract/Cli"
import { Console, Effect } from "effect"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll } from "vitest"

const dir = mkdtempSync(join(tmpdir(), "sluice-cli-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Runs the command in process with `args`, capturing what it prints. */
const runCli = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const base = yield* Effect.console
    const capture: Console.Console = {
      ...base,
      log: (...parts) => Effect.sync(() => void stdout.push(parts.map(String).join(" "))),
      error: (...parts) => Effect.sync(() => void stderr.push(parts.map(String).join(" "))),
      unsafe: { ...base.unsafe, log: (...parts) => void stdout.push(parts.map(String).join(" ")), error: (...parts) => void stderr.push(parts.map(String).join(" ")) }
    }
    const exit = yield* Effect.exit(cli(["node", "extract", ...args]).pipe(Effect.withConsole(capture), Effect.provide(NodeContext.layer)))
    return { exit, stdout, stderr }
  })

const rowsOf = (filename: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const extracted = (yield* sql<{ doc_id: string }>`SELECT doc_id FROM extractions`).map((row) => row.doc_id)
    const failures = (yield* sql<{ doc_id: string; reason: string }>`SELECT doc_id, reason FROM failures`)
    const [sums] = yield* sql<{ input: number; output: number; cost: number }>`SELECT SUM(input_tokens) AS input, SUM(output_tokens) AS output, SUM(cost_usd) AS cost FROM extractions`
    return { extracted, failures, sums: sums! }
  }).pipe(Effect.provide(SqliteClient.layer({ filename })))

const summaryFields = [
  "documents", "succeeded", "failed", "shed", "overBudget", "http429", "http529", "retries", "inputTokens", "outputTokens",
  "costUsd", "wallSeconds", "requestsPerMinute", "inputTokensPerMinute", "outputTokensPerMinute"
]

describe("the extract command", () => {
  it.live("--json prints one object with the summary, consistent with the database, with no 429 under the default limits", () =>
    Effect.gen(function*() {
      const db = join(dir, "e2e.db")
      const report = join(dir, "e2e.html")
      const { exit, stderr, stdout } = yield* runCli(["--docs", "40", "--db", db, "--report", report, "--json", "--sim-speed", "20"])
      expect(exit._tag, stderr.join("\n")).toBe("Success")
      expect(stdout.length).toBe(1)
      const summary = JSON.parse(stdout[0]!) as Record<string, number>
      for (const field of summaryFields) expect(typeof summary[field], field).toBe("number")
      expect(summary).toMatchObject({ documents: 40, succeeded: 40, failed: 0, shed: 0, overBudget: 0, http429: 0, http529: 0 })
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
      writeFileSync(input, [
        JSON.stringify({ id: "ok-1", text: "Revenue grew in the quarter; margins were strong." }),
        JSON.stringify({ id: "blank", text: "   " }),
        "{ not json",
        JSON.stringify({ id: "big", text: "token ".repeat(20_000) }),
        JSON.stringify({ id: "ok-2", text: "The clinical trial enrolled patients." })
      ].join("\n"))
      const db = join(dir, "bad.db")
      const { exit, stdout } = yield* runCli(["--input", input, "--db", db, "--itpm", "10000", "--report", "none", "--json"])
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
      expect([...zero.stdout, ...zero.stderr].join("\n") + String(zero.exit)).toContain("--docs must be a whole number above 0")
      const both = yield* runCli(["--docs", "3", "--input", dir, "--db", join(dir, "x.db")])
      expect(both.exit._tag).toBe("Failure")
      expect(both.stderr.join("\n")).toContain("error: give --docs (synthetic documents) or --input (your documents), not both")
      const missing = yield* runCli(["--input", join(dir, "missing"), "--db", join(dir, "x.db")])
      expect(missing.stderr.join("\n")).toContain(`error: Cannot read --input ${join(dir, "missing")}: no such file or folder`)
      const share = yield* runCli(["--sim-foreign-share", "1.5", "--db", join(dir, "x.db")])
      expect([...share.stdout, ...share.stderr].join("\n") + String(share.exit)).toContain("--sim-foreign-share must be at least 0 and below 1")
    }))

  it.live("a run killed with SIGKILL part-way and run again ends with every document in exactly one table, once", () =>
    Effect.gen(function*() {
      const db = join(dir, "killed.db")
      const root = resolve(__dirname, "../..")
      // node itself with tsx as a loader (the tsx command would run the script in a grandchild the kill would miss).
      const child = spawn(process.execPath, [
        "--import", "tsx", "--conditions=@sluice/source", join(root, "packages/examples/src/extract.ts"),
        "--docs", "200", "--db", db, "--rpm", "60", "--sim-speed", "2", "--report", "none", "--json"
      ], { stdio: "ignore", cwd: root })
      // Waits (polling the database, not asserting any time) until some documents are in.
      let before = 0
      for (let i = 0; i < 600 && before < 20; i++) {
        yield* Effect.sleep("100 millis")
        if (existsSync(db)) before = (yield* Effect.orElseSucceed(rowsOf(db), () => ({ extracted: [] as Array<string> }))).extracted.length
      }
      child.kill("SIGKILL")
      yield* Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
        else child.once("exit", () => resume(Effect.void))
      })
      const partial = yield* rowsOf(db)
      expect(partial.extracted.length).toBeGreaterThanOrEqual(20)
      expect(partial.extracted.length).toBeLessThan(200)

      const rerun = yield* runCli(["--docs", "200", "--db", db, "--rpm", "100000", "--itpm", "100000000", "--otpm", "10000000", "--report", "none", "--json", "--sim-speed", "20"])
      expect(rerun.exit._tag).toBe("Success")
      const summary = JSON.parse(rerun.stdout[0]!) as Record<string, number>
      expect(summary.skipped).toBe(partial.extracted.length)
      const { extracted, failures } = yield* rowsOf(db)
      const all = [...extracted, ...failures.map((row) => row.doc_id)]
      expect(all.length).toBe(200)
      expect(new Set(all).size).toBe(200)
    }), { timeout: 90_000 })
})
