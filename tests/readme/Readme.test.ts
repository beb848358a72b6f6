/**
 * The README's commands, run as a newcomer would type them, so that the README
 * stays true. Every line of every ```sh block is a command; each one must have a
 * runner here (a new command without one fails the first test). Long jobs run
 * with a flag that makes them small (`--docs`), and what they print is held
 * against the output the README shows next to them. The test command itself is
 * not run (it is this suite); the check is that `.ci/run` picks exactly it.
 *
 * These run on the real clock: they spawn `pnpm` and servers, and assert what
 * happened, never how long it took. They take minutes, so they are not part of
 * `pnpm test`: `pnpm test:readme` runs them (vitest.readme.config.ts), and
 * `.ci/run` runs both and counts both.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { fleetPrefix } from "@sluice/examples/extract/Cli"
import { withoutProviderVariables } from "@sluice/examples/providerEnv"
import { Effect, Redacted } from "effect"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll } from "vitest"
import "../setup/pgPool.js"
import { postgresUrl } from "../setup/postgres.js"

const { PgClient } = await import("@effect/sql-pg")

const root = resolve(__dirname, "../..")
const readme = readFileSync(join(root, "README.md"), "utf8")
const dir = mkdtempSync(join(tmpdir(), "sluice-readme-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** A command of a ```sh block: the line without its trailing comment, and the comment lines under it. */
interface Command {
  readonly line: string
  readonly samples: ReadonlyArray<string>
}

const shellBlocks = (text: string): ReadonlyArray<ReadonlyArray<Command>> =>
  [...text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map(([, body]) => {
    const commands: Array<{ line: string; samples: Array<string> }> = []
    for (const raw of body!.split("\n")) {
      if (raw.trim() === "") continue
      if (raw.startsWith("#")) commands.at(-1)?.samples.push(raw.replace(/^#\s?/, ""))
      else commands.push({ line: raw.replace(/\s+#.*$/, "").trim(), samples: [] })
    }
    return commands
  })

/** The fenced block (any language) that follows the first occurrence of `marker`. */
const blockAfter = (marker: string): string => {
  const at = readme.indexOf(marker)
  expect(at, `README.md has no "${marker}"`).toBeGreaterThanOrEqual(0)
  const match = /```[a-z]*\n([\s\S]*?)```/.exec(readme.slice(at))
  return match![1]!
}

const env = () => ({ ...withoutProviderVariables(process.env), FORCE_COLOR: "0", CI: "1" })

/** Runs a shell command in the repository root to its end. */
const run = (command: string) =>
  Effect.async<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resume) => {
    const child = spawn("bash", ["-c", command], { cwd: root, env: env(), detached: true })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => {
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {
        // already gone
      }
    })
  })

const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A sample line as a pattern: its numbers may differ from run to run, its words may not. */
const shapeOf = (sample: string) =>
  new RegExp(
    `^${
      sample.trim().replace(/\s+\(.*\)$/, "").replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(
        /\d[\d,]*(\\\.\d+)?/g,
        "[\\d,.]+"
      )
        .replace(/\s+/g, "\\s+")
    }$`
  )

const commands = shellBlocks(readme).flat()
const find = (pattern: RegExp) => {
  const found = commands.find((command) => pattern.test(command.line))
  expect(found, `README.md has no command matching ${pattern}`).toBeDefined()
  return found!
}

/** Every README command and what runs it here. */
const runners: ReadonlyArray<{ readonly name: string; readonly matches: RegExp }> = [
  { name: "the main job", matches: /^npx -y pnpm@10 install && npx -y pnpm@10 start$/ },
  { name: "the tests", matches: /^npx -y pnpm@10 install && npx -y pnpm@10 test$/ },
  { name: "the simulator", matches: /^npx -y pnpm@10 simulator --port 8787 / },
  { name: "the simulator's stats", matches: /^curl http:\/\/127\.0\.0\.1:8787\/_sim\/stats$/ },
  { name: "several processes", matches: /^npx -y pnpm@10 example:multi --workers 4$/ },
  { name: "the router", matches: /^npx -y pnpm@10 example:router$/ },
  {
    name: "the fleet",
    matches: /^npx -y pnpm@10 extract (status )?--db postgres:\/\/postgres@127\.0\.0\.1:5432\/sluice(\s|$)/
  }
]

describe("README.md's commands", () => {
  it("every command in a sh block has a runner in this file, and the first two are the main job and the tests", () => {
    expect(commands.length).toBeGreaterThan(2)
    for (const command of commands) {
      expect(runners.some((runner) => runner.matches.test(command.line)), `no runner for: ${command.line}`).toBe(true)
    }
    expect(runners[0]!.matches.test(commands[0]!.line)).toBe(true)
    expect(runners[1]!.matches.test(commands[1]!.line)).toBe(true)
  })

  it("the test command is the one .ci/run runs", () => {
    const ci = readFileSync(join(root, ".ci/run"), "utf8")
    const grep = /grep -m1 -E '([^']+)' README\.md/.exec(ci)
    expect(grep, ".ci/run no longer reads the test command from README.md").not.toBeNull()
    const picked = readme.split("\n").find((line) => new RegExp(grep![1]!).test(line))
    expect(picked?.replace(/\s+#.*$/, "").trim()).toBe(find(/pnpm@10 test$/).line)
  })

  it.live(
    "the main job, small, prints the lines the README shows and a --json object with the README's fields",
    () =>
      Effect.gen(function*() {
        const start = find(/pnpm@10 start$/).line.replace(/^npx -y pnpm@10 install && /, "")
        const db = join(dir, "main.db")
        const result = yield* run(`${start} --docs 12 --db ${db} --report ${join(dir, "report.html")}`)
        expect(result.code, result.stderr).toBe(0)
        const lines = result.stdout.split("\n").map((line) => line.trim()).filter((line) => line !== "")
        const sample = blockAfter("It ends like this").split("\n").filter((line) => line.trim() !== "")
        // The first line and the last two, whose words do not depend on the run's size.
        expect(lines.some((line) => shapeOf(sample[0]!.replace("5,000 documents", "12 documents")).test(line))).toBe(
          true
        )
        expect(lines).toContain(`database ${db}: 12 rows in extractions, 0 in failures`)
        expect(lines.some((line) => line.startsWith("report "))).toBe(true)

        const json = yield* run(`${start} --docs 12 --db ${db} --json`)
        expect(json.code, json.stderr).toBe(0)
        const printed = JSON.parse(json.stdout.trim().split("\n").at(-1)!) as Record<string, unknown>
        const shown = JSON.parse(blockAfter("`--json` prints this object")) as Record<string, unknown>
        expect(Object.keys(shown).sort()).toEqual(Object.keys(printed).sort())
        expect(printed["documents"]).toBe(12)
        expect(printed["skipped"]).toBe(12)
      }),
    { timeout: 240_000 }
  )

  it.live("the simulator answers, and its stats are what the curl line reads", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const server = find(/pnpm@10 simulator /).line.replace("8787", String(port))
      const curl = find(/^curl /).line.replace("8787", String(port))
      const result = yield* run(
        `${server} > ${join(dir, "sim.log")} 2>&1 & pid=$!
         for i in $(seq 1 120); do curl -sf http://127.0.0.1:${port}/_sim/stats > /dev/null && break; sleep 0.5; done
         ${curl}; status=$?; kill -- -$pid 2>/dev/null || kill $pid; exit $status`
      )
      expect(result.code, result.stderr).toBe(0)
      const stats = JSON.parse(result.stdout) as Record<string, unknown>
      expect(Object.keys(stats).length).toBeGreaterThan(0)
    }), { timeout: 120_000 })

  it.live(
    "several processes share one key through Redis with no 429, next to the static split",
    () =>
      Effect.gen(function*() {
        const result = yield* run(`${find(/example:multi/).line} --docs 24`)
        expect(result.code, result.stderr).toBe(0)
        const sample = blockAfter("example:multi --workers 4     #").split("\n").filter((line) => line.trim() !== "")
        const lines = result.stdout.split("\n").map((line) => line.trim())
        for (const shown of sample) {
          const shape = shapeOf(shown.replace(/160\/160/, "24/24"))
          expect(lines.some((line) => shape.test(line)), `no line shaped like: ${shown}`).toBe(true)
        }
        expect(lines.filter((line) => /429s 0 /.test(line))).toHaveLength(2)
      }),
    { timeout: 240_000 }
  )

  it.live("the router spreads the work over the three deployments as shown, with no 429", () =>
    Effect.gen(function*() {
      const command = find(/example:router/)
      const result = yield* run(command.line)
      expect(result.code, result.stderr).toBe(0)
      const lines = result.stdout.split("\n").map((line) => line.trim())
      for (const shown of command.samples) {
        const shape = shapeOf(shown.replace(/\s+\(.*$/, ""))
        expect(lines.some((line) => shape.test(line)), `no line shaped like: ${shown}`).toBe(true)
      }
      expect(lines.filter((line) => /, 0 429s$/.test(line))).toHaveLength(3)
    }), { timeout: 240_000 })

  it.live(
    "the fleet: 4 workers on one machine, then one more worker with the same queue and Redis, then the status of all five",
    () =>
      Effect.gen(function*() {
        // A database of this run's own instead of `sluice`, created here and dropped at the end, and its Redis keys deleted.
        const admin = new URL(postgresUrl())
        const name = `sluice_readme_${process.pid}_${Date.now()}`
        const adminSql = (statement: string) =>
          Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))).pipe(
            Effect.provide(PgClient.layer({ url: Redacted.make(admin.toString()) })),
            Effect.orDie
          )
        const db = new URL(admin)
        db.pathname = `/${name}`
        const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
        yield* Effect.acquireRelease(adminSql(`CREATE DATABASE ${name}`), () =>
          Effect.zipRight(
            adminSql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
            Effect.promise(async () => {
              const redis = new Redis(redisUrl)
              const keys = await redis.keys(`${fleetPrefix(db.toString(), "claude-haiku-4-5")}:*`)
              if (keys.length > 0) await redis.del(...keys)
              await redis.quit()
            })
          ))
        const small = (line: string, docs: number) =>
          line.replace("postgres://postgres@127.0.0.1:5432/sluice", db.toString())
            .replace("redis://127.0.0.1:6379", redisUrl)
            .replace("--docs 2000", `--docs ${docs} --sim-speed 20`)
        const report = join(dir, "fleet.html")

        const forked = yield* run(`${small(find(/--workers 4$/).line, 24)} --report ${report}`)
        expect(forked.code, forked.stderr).toBe(0)
        expect(forked.stdout).toContain("Sluice extraction, a fleet of 4 workers on this machine: 24 documents")
        expect(forked.stdout).toContain("no --redis: each of the 4 workers on this machine holds 1/4 of the quota")
        expect(forked.stdout).toMatch(
          /^the fleet \(4 workers\): 24 extracted, 0 failed, 0 shed, 0 over budget of 24 documents/m
        )
        expect(forked.stdout).toMatch(/^the simulator counted 24 calls, 0 × 429/m)
        expect(existsSync(report)).toBe(true)

        // The same queue, 24 more documents, and the Redis the machines would share.
        const joined = yield* run(`${small(find(/--redis redis:/).line, 48)} --report none`)
        expect(joined.code, joined.stderr).toBe(0)
        expect(joined.stdout).toContain("24 new, 24 already in the queue")
        expect(joined.stdout).toContain("quota and budget shared by the fleet through Redis")
        expect(joined.stdout).toMatch(/: 48 of 48 documents done \(48 in extractions, 0 in failures\)/)

        const status = yield* run(small(find(/extract status /).line, 0))
        expect(status.code, status.stderr).toBe(0)
        expect(status.stdout).toContain("fleet: 48 / 48 documents done (100 %)")
        expect(status.stdout).toMatch(/5 workers \(0 running\)/)
      }).pipe(Effect.scoped),
    { timeout: 300_000 }
  )
})
