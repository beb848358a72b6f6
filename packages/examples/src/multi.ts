/**
 * Several processes, one quota: `pnpm example:multi --workers 4`.
 *
 * Starts the provider simulator (Anthropic tier-1 Sonnet limits, 20× time),
 * then runs the same documents twice with N worker processes against the same
 * API key:
 *
 * 1. shared: each worker's limiter keeps its buckets in Redis (`REDIS_URL`,
 *    default redis://127.0.0.1:6379), so the fleet shares one quota;
 * 2. split: each worker holds a static 1/N of the quota in memory.
 *
 * The simulator is the judge: it prints 429s and how much of what the quota
 * allowed over each run was used.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Simulator } from "@sluice/simulator"
import { Clock, Config, Console, Effect } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { withoutProviderVariables } from "./providerEnv.js"

const TIME_SCALE = 20
const MODEL = "claude-haiku-4-5"
const quota = Simulator.defaultQuota

interface WorkerResult {
  readonly worker: number
  readonly documents: number
  readonly succeeded: number
  readonly seconds: number
  readonly rateLimitedErrors: number
}

const runWorker = (env: Record<string, string>) =>
  Effect.async<WorkerResult, Error>((resume) => {
    const child = spawn(process.execPath, [
      "--import",
      "tsx",
      "--conditions=@sluice/source",
      fileURLToPath(new URL("./multi-worker.ts", import.meta.url))
    ], {
      // The workers only talk to the simulator: no provider key, token or endpoint of the shell reaches them.
      env: { ...withoutProviderVariables(process.env), ...env },
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.on("exit", (code) => {
      const line = out.trim().split("\n").pop() ?? ""
      resume(
        code === 0 && line.startsWith("{")
          ? Effect.succeed(JSON.parse(line) as WorkerResult)
          : Effect.fail(new Error(`worker ${env.WORKER} exited with ${code}: ${out}`))
      )
    })
    return Effect.sync(() => child.kill("SIGTERM"))
  })

const phase = (mode: "shared" | "split", workers: number, docs: number, running: Simulator.Running, redisUrl: string) =>
  Effect.gen(function*() {
    yield* running.reset
    const start = yield* Clock.currentTimeMillis
    const prefix = `sluice-example-${process.pid}-${start}`
    const results = yield* Effect.forEach(
      Array.from({ length: workers }, (_, worker) => worker),
      (worker) =>
        runWorker({
          SIM_URL: running.url,
          WORKER: String(worker),
          WORKERS: String(workers),
          DOCS: String(docs),
          MODE: mode,
          TIME_SCALE: String(TIME_SCALE),
          REDIS_URL: redisUrl,
          PREFIX: prefix
        }),
      { concurrency: "unbounded" }
    )
    // The workers' own processing time: process start-up (tsx, tokenizer ranks) is not the quota's.
    const wall = Math.max(...results.map((r) => r.seconds))
    const key = (yield* running.stats).keys.find((k) => k.model === MODEL)
    const minutes = (wall * TIME_SCALE) / 60
    const share = (used: number, perMinute: number) => (100 * used) / (perMinute * (1 + minutes))
    return {
      mode,
      succeeded: results.reduce((sum, r) => sum + r.succeeded, 0),
      wall,
      http429: key?.rateLimited ?? 0,
      requests: share(key?.accepted ?? 0, quota.requestsPerMinute),
      inputTokens: share(key?.inputTokens ?? 0, quota.inputTokensPerMinute),
      outputTokens: share(key?.outputTokens ?? 0, quota.outputTokensPerMinute)
    }
  })

const workersOption = Options.integer("workers").pipe(
  Options.withDefault(4),
  Options.withDescription("Worker processes sharing the key")
)
const docsOption = Options.integer("docs").pipe(
  Options.withDefault(160),
  Options.withDescription("Documents in all, split between the workers")
)

const multi = Command.make(
  "multi",
  { workers: workersOption, docs: docsOption },
  ({ docs, workers }) =>
    Effect.gen(function*() {
      const redisUrl = yield* Config.string("REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379"))
      const running = yield* Simulator.serve({
        timeScale: TIME_SCALE,
        latency: { baseMs: 400, perOutputTokenMs: 10, jitterMs: 300 }
      })
      yield* Console.log(
        `simulator ${running.url}: ${quota.requestsPerMinute} RPM, ${quota.inputTokensPerMinute} ITPM, ${quota.outputTokensPerMinute} OTPM, time ×${TIME_SCALE}; ${workers} workers, ${docs} documents; Redis ${redisUrl}`
      )
      const rows = []
      for (const mode of ["shared", "split"] as const) {
        const row = yield* phase(mode, workers, docs, running, redisUrl)
        rows.push(row)
        yield* Console.log(
          `${
            mode === "shared" ? "shared quota (Redis)" : `static 1/${workers} split   `
          }  ${row.succeeded}/${docs} done in ${
            row.wall.toFixed(1)
          } s  429s ${row.http429}  used of the quota: requests ${row.requests.toFixed(0)} %, input ${
            row.inputTokens.toFixed(0)
          } %, output ${row.outputTokens.toFixed(0)} %`
        )
      }
    }).pipe(Effect.scoped)
)

Command.run(multi, { name: "Sluice multi-process example", version: "0.1.0" })(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
