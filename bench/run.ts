/**
 * `pnpm bench`: Sluice side by side with the tools users would pick instead,
 * on the same simulator configuration and the same generated workload (fixed
 * seed), in one run. The simulator's stats are the judge of 429s and
 * utilisation, not the contenders' own counters.
 *
 *   pnpm bench              the full run (about 11 minutes on two cores)
 *   pnpm bench --quick      a smoke run (about two minutes)
 *   pnpm bench --help
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Simulator } from "@sluice/simulator"
import { Console, Effect, Option } from "effect"
import { spawn } from "node:child_process"
import { writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import { fleet as fleetJob } from "./fleet.js"
import { idealMinutes, type Limits, percentile, type RunResult, workload } from "./peers/common.js"
import type { ContenderName } from "./peers/contenders.js"
import { overhead } from "./peers/overhead.js"
import type { WorkerInput } from "./peers/worker.js"

const root = join(import.meta.dirname, "..")
const latency = { baseMs: 500, perOutputTokenMs: 6, jitterMs: 400 }

/** Runs a worker process and reads its result. */
const worker = (input: WorkerInput) =>
  Effect.async<RunResult, Error>((resume) => {
    // SLUICE_BENCH_PROFILE=DIR writes a V8 CPU profile of every worker into DIR (open it in Chrome's DevTools).
    const profile = process.env.SLUICE_BENCH_PROFILE
      ? ["--cpu-prof", `--cpu-prof-dir=${process.env.SLUICE_BENCH_PROFILE}`]
      : []
    const child = spawn(process.execPath, [
      ...profile,
      "--import",
      "tsx",
      "--conditions=@sluice/source",
      join(root, "bench/peers/worker.ts"),
      JSON.stringify(input)
    ], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk) => (out += String(chunk)))
    child.stderr.on("data", (chunk) => (err += String(chunk)))
    child.on("exit", (code) => {
      const line = out.trim().split("\n").at(-1) ?? ""
      try {
        resume(Effect.succeed(JSON.parse(line) as RunResult))
      } catch {
        resume(Effect.fail(new Error(`${input.contender} exited with ${code}: ${err.slice(-2_000)}`)))
      }
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** Scenario 6 in a process of its own (bench/peers/scale-main.ts): the harness's memory is not the pipeline's. */
const scaleProcess = (documents: number) =>
  Effect.async<string, Error>((resume) => {
    const profile = process.env.SLUICE_BENCH_PROFILE
      ? ["--cpu-prof", `--cpu-prof-dir=${process.env.SLUICE_BENCH_PROFILE}`]
      : []
    const child = spawn(process.execPath, [
      ...profile,
      "--import",
      "tsx",
      "--conditions=@sluice/source",
      join(root, "bench/peers/scale-main.ts"),
      String(documents)
    ], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk) => (out += String(chunk)))
    child.stderr.on("data", (chunk) => (err += String(chunk)))
    child.on("exit", (code) => {
      try {
        resume(Effect.succeed(JSON.parse(out.trim().split("\n").at(-1) ?? "") as string))
      } catch {
        resume(Effect.fail(new Error(`scenario 6 exited with ${code}: ${err.slice(-2_000)}`)))
      }
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

interface Measured {
  readonly name: string
  readonly results: ReadonlyArray<RunResult>
  readonly makespanMs: number
  readonly idealMs: number
  readonly completed: number
  readonly docs: number
  readonly rateLimited: number
  readonly overloaded: number
  readonly peak: { readonly requests: number; readonly inputTokens: number; readonly outputTokens: number }
  readonly timedOut: boolean
}

interface Scenario {
  readonly docs: number
  readonly seed: number
  readonly limits: Limits
  readonly timeScale: number
  readonly foreignShare?: number
  readonly processes?: number
  readonly interactive?: { readonly meanGapSeconds: number; readonly seed: number }
}

/** One contender on a fresh simulator: its processes, then the simulator's verdict. */
const measure = (name: ContenderName, label: string, scenario: Scenario, redisUrl: string) =>
  Effect.scoped(Effect.gen(function*() {
    const sim = yield* Simulator.serve({
      quota: scenario.limits,
      timeScale: scenario.timeScale,
      latency,
      seed: scenario.seed,
      ...(scenario.foreignShare === undefined ? {} : { foreignLoad: { share: scenario.foreignShare } })
    })
    const docs = yield* workload(scenario.docs, scenario.seed)
    const idealMs = (idealMinutes(docs, scenario.limits, 1 - (scenario.foreignShare ?? 0)) * 60_000) /
      scenario.timeScale
    const processes = scenario.processes ?? 1
    const share = name === "static 1/N split" ? 1 / processes : 1
    const limits = {
      requestsPerMinute: scenario.limits.requestsPerMinute * share,
      inputTokensPerMinute: scenario.limits.inputTokensPerMinute * share,
      outputTokensPerMinute: scenario.limits.outputTokensPerMinute * share
    }
    const prefix = `bench-${process.pid}-${Date.now()}`
    const results = yield* Effect.forEach(Array.from({ length: processes }, (_, index) => index), (index) =>
      worker({
        contender: name,
        baseURL: sim.url,
        apiKey: "bench-key",
        docs: scenario.docs,
        seed: scenario.seed,
        shard: { index, of: processes },
        limits,
        timeScale: scenario.timeScale,
        deadlineMs: Math.max(2 * idealMs, idealMs + 5_000),
        interactive: scenario.interactive,
        redis: { url: redisUrl, prefix }
      }), { concurrency: "unbounded" })
    const stats = yield* sim.stats
    const key = stats.keys.find((k) => k.apiKey === "bench-key")
    return {
      name: label,
      results,
      makespanMs: Math.max(...results.map((r) => r.makespanMs)),
      idealMs,
      completed: results.reduce((n, r) => n + r.completed, 0),
      docs: scenario.docs,
      rateLimited: key?.rateLimited ?? 0,
      overloaded: key?.overloaded ?? 0,
      peak: key?.bestMinuteUtilisation ?? { requests: 0, inputTokens: 0, outputTokens: 0 },
      timedOut: results.some((r) => r.timedOut)
    } satisfies Measured
  }))

const pct = (x: number) => `${Math.round(100 * x)} %`
const ratio = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : "—")

/** The table of a throughput scenario. */
const table = (rows: ReadonlyArray<Measured>) => {
  const sluice = rows.find((row) => row.name.startsWith("sluice"))
  const lines = [
    "| contender | done | makespan / ideal | vs Sluice | 429s | 529s | peak requests | peak input | peak output |",
    "|---|---|---|---|---|---|---|---|---|"
  ]
  for (const row of rows) {
    const done = row.completed === row.docs
      ? `${row.completed}`
      : `${row.completed} of ${row.docs}${row.timedOut ? " (stopped at 2× ideal)" : ""}`
    const vs = sluice === undefined ? Number.NaN : row.makespanMs / sluice.makespanMs
    lines.push(
      `| ${row.name} | ${done} | ${row.timedOut ? "> " : ""}${ratio(row.makespanMs / row.idealMs)} | ${
        ratio(vs)
      } | ${row.rateLimited} | ${row.overloaded} | ` +
        `${pct(row.peak.requests)} | ${pct(row.peak.inputTokens)} | ${pct(row.peak.outputTokens)} |`
    )
  }
  return lines.join("\n")
}

const mixedTable = (rows: ReadonlyArray<Measured>) => {
  const lines = [
    "| contender | interactive p50 | interactive p99 | interactive calls | batch makespan / ideal | 429s |",
    "|---|---|---|---|---|---|"
  ]
  for (const row of rows) {
    const latencies = row.results.flatMap((r) => r.interactiveLatenciesMs ?? [])
    // SLUICE_BENCH_DEBUG=1: each contender's interactive latencies, in the order the calls finished.
    if (process.env.SLUICE_BENCH_DEBUG) console.log(row.name, JSON.stringify(latencies.map((l) => Math.round(l))))
    const s = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : "—")
    lines.push(
      `| ${row.name} | ${s(percentile(latencies, 50))} | ${s(percentile(latencies, 99))} | ${latencies.length} | ${
        row.timedOut ? "> " : ""
      }${ratio(row.makespanMs / row.idealMs)} | ${row.rateLimited} |`
    )
  }
  return lines.join("\n")
}

const single: ReadonlyArray<ContenderName> = [
  "sdk+p-limit",
  "bottleneck",
  "p-queue",
  "effect RateLimiter",
  "cookbook",
  "sluice"
]
const fleet: ReadonlyArray<ContenderName> = [
  "sluice (redis)",
  "bottleneck (redis)",
  "@effect/experimental (redis)",
  "static 1/N split"
]

const command = Command.make("bench", {
  quick: Options.boolean("quick").pipe(
    Options.withDescription("A smoke run: fewer documents, a faster clock, fewer operations")
  ),
  timeScale: Options.float("time-scale").pipe(
    Options.optional,
    Options.withDescription("How many times faster than real time the provider's minute runs (default 40, quick 60)")
  ),
  scenarios: Options.text("scenarios").pipe(
    Options.withDefault("1,2,3,4,5,6,7"),
    Options.withDescription("Which scenarios to run, e.g. 1,3")
  ),
  only: Options.text("only").pipe(
    Options.optional,
    Options.withDescription("Run only these contenders (comma-separated names)")
  ),
  out: Options.text("out").pipe(
    Options.optional,
    Options.withDescription("Also write the tables (markdown) to this file")
  ),
  scaleDocs: Options.integer("scale-docs").pipe(
    Options.optional,
    Options.withDescription(
      "Documents in scenario 6 (default 50,000; quick 20,000; the issue's figure is 1,000,000, about 10 minutes)"
    )
  )
}, (flags) =>
  Effect.gen(function*() {
    const scale = Option.getOrElse(flags.timeScale, () => (flags.quick ? 60 : 40))
    const docs = flags.quick ? 500 : 5_000
    const wanted = new Set(flags.scenarios.split(",").map((s) => s.trim()))
    const only = Option.map(flags.only, (text) => new Set(text.split(",").map((s) => s.trim())))
    const pick = (names: ReadonlyArray<ContenderName>) =>
      names.filter((name) => Option.isNone(only) || only.value.has(name))
    const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
    // The quick run has a tenth of the documents and smaller limits (still above the largest document), so it is a few provider minutes of work too.
    const limits: Limits = flags.quick
      ? { requestsPerMinute: 150, inputTokensPerMinute: 60_000, outputTokensPerMinute: 12_000 }
      : { requestsPerMinute: 1_000, inputTokensPerMinute: 400_000, outputTokensPerMinute: 80_000 }
    const out: Array<string> = []
    const say = (text: string) => Effect.zipRight(Console.log(text), Effect.sync(() => void out.push(text)))
    const started = Date.now()
    yield* say(
      `Node ${process.version}, ${cpus().length} cores, ${new Date().toISOString().slice(0, 10)}; ${
        flags.quick ? "quick" : "full"
      } run; ` +
        `one provider minute lasts ${(60 / scale).toFixed(2)} s (time scale ${scale})`
    )
    yield* say(
      `Workload: ${
        docs.toLocaleString("en-US")
      } synthetic documents (seed 2026; 200 to 40,000 tokens, median ~320); limits ${
        limits.requestsPerMinute.toLocaleString("en-US")
      } requests, ` +
        `${limits.inputTokensPerMinute.toLocaleString("en-US")} input and ${
          limits.outputTokensPerMinute.toLocaleString("en-US")
        } output tokens a minute; answers take 500 ms + 6 ms a token + up to 400 ms (scaled).`
    )
    const run = (
      names: ReadonlyArray<ContenderName>,
      scenario: Scenario,
      label: (name: ContenderName) => string = (name) => name
    ) =>
      Effect.forEach(names, (name) =>
        Effect.tap(measure(name, label(name), scenario, redisUrl), (row) =>
          Console.error(
            `  ${row.name}: ${row.completed}/${row.docs} in ${(row.makespanMs / 1000).toFixed(1)} s (ideal ${
              (row.idealMs / 1000).toFixed(1)
            } s), ${row.rateLimited} × 429`
          )))

    if (wanted.has("1")) {
      yield* say("\n### 1. Steady batch\n")
      yield* say(table(yield* run(pick(single), { docs, seed: 2026, limits, timeScale: scale })))
    }
    if (wanted.has("2")) {
      yield* say("\n### 2. Foreign load (30 % of the key taken by an unseen consumer)\n")
      yield* say(table(yield* run(pick(single), { docs, seed: 2026, limits, timeScale: scale, foreignShare: 0.3 })))
    }
    if (wanted.has("3")) {
      const batch = Math.round(docs / 5)
      yield* say(
        `\n### 3. Mixed priority (${batch} batch documents; interactive calls every ${
          (15 / scale).toFixed(2)
        } s on average)\n`
      )
      // Limits at 40 %: the batch is about four provider minutes of work, and saturates them.
      const share = {
        requestsPerMinute: limits.requestsPerMinute * 0.4,
        inputTokensPerMinute: limits.inputTokensPerMinute * 0.4,
        outputTokensPerMinute: limits.outputTokensPerMinute * 0.4
      }
      yield* say(
        mixedTable(
          yield* run(pick(single), {
            docs: batch,
            seed: 2026,
            limits: share,
            timeScale: scale,
            interactive: { meanGapSeconds: 15 / scale, seed: 7 }
          })
        )
      )
    }
    if (wanted.has("4")) {
      const fleetDocs = Math.round(docs * 0.4)
      const fleetLimits = {
        requestsPerMinute: limits.requestsPerMinute * 0.4,
        inputTokensPerMinute: limits.inputTokensPerMinute * 0.4,
        outputTokensPerMinute: limits.outputTokensPerMinute * 0.4
      }
      yield* say(`\n### 4. Fleet (4 processes, one key, ${fleetDocs.toLocaleString("en-US")} documents)\n`)
      yield* say(
        table(
          yield* run(pick(fleet), { docs: fleetDocs, seed: 2026, limits: fleetLimits, timeScale: scale, processes: 4 })
        )
      )
    }
    if (wanted.has("5")) {
      yield* say("\n### 5. Overhead (acquire and settle, no binding limit)\n")
      yield* say(yield* overhead({ quick: flags.quick, redisUrl }))
    }
    if (wanted.has("6")) {
      yield* say("\n### 6. Scale (tiny documents through the pipeline, in-process provider, no binding limit)\n")
      yield* say(yield* scaleProcess(Option.getOrElse(flags.scaleDocs, () => (flags.quick ? 20_000 : 50_000))))
    }
    if (wanted.has("7")) {
      const fleetDocs = Math.round(docs * 0.4)
      yield* say(
        `\n### 7. The extraction job as a fleet (4 processes: one PostgreSQL queue and a Redis quota, against a static split; ${
          fleetDocs.toLocaleString("en-US")
        } documents)\n`
      )
      // The same key as scenario 4; the job's own command line in every process.
      const postgresUrl = process.env.DATABASE_URL ?? process.env.PG_URL ??
        "postgres://postgres@127.0.0.1:5432/postgres"
      yield* say(
        yield* fleetJob({
          docs: fleetDocs,
          seed: 2026,
          limits: {
            requestsPerMinute: limits.requestsPerMinute * 0.4,
            inputTokensPerMinute: limits.inputTokensPerMinute * 0.4,
            outputTokensPerMinute: limits.outputTokensPerMinute * 0.4
          },
          timeScale: scale,
          processes: 4,
          redisUrl,
          postgresUrl
        }).pipe(
          Effect.catchAll((error) =>
            Effect.succeed(
              `skipped: ${
                error instanceof Error ? error.message : String(error)
              } (it needs PostgreSQL at DATABASE_URL and Redis at REDIS_URL)`
            )
          )
        )
      )
    }
    yield* say(`\nThe whole run took ${((Date.now() - started) / 60_000).toFixed(1)} minutes.`)
    if (Option.isSome(flags.out)) writeFileSync(flags.out.value, `${out.join("\n")}\n`)
  })).pipe(
    Command.withDescription(
      "Sluice against bottleneck, p-queue, p-limit + SDK retries, Effect's RateLimiter, @effect/experimental and the OpenAI cookbook's processor"
    )
  )

Command.run(command, { name: "bench", version: "0.1.0" })(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
