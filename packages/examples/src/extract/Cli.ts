/**
 * The extraction job's command line (`pnpm start`, `pnpm extract --help`).
 *
 * With no flags it generates 5,000 synthetic documents, starts the provider
 * simulator in process on a free port with the default limits, points the
 * real `@anthropic-ai/sdk` at it, and extracts every document into
 * `out/extractions.db`, writing a report to `out/report.html`.
 *
 * Only a flag sends documents anywhere else (`--provider anthropic`,
 * `--base-url URL`); an API key in the environment never does, and a run on a
 * real provider is always under a budget (see `Provider.ts`).
 *
 * `--config FILE` (YAML or JSON, docs/configuration.md) sets the job's quotas,
 * limiter, Governor, retry, breaker, ladder and budget limits from a file; where
 * the calls go is still chosen by the flags alone.
 *
 * With `--db postgres://…` the job runs as one worker of a fleet (docs/fleet.md):
 * the documents are loaded into the database's queue (once, by id), and every
 * worker running the same command claims them in small leased batches;
 * `--redis redis://…` shares the key's quota and the budget between the
 * workers; `--workers N` forks N such workers on this machine and reports on
 * the fleet; `pnpm extract status --db postgres://…` shows its progress.
 * `--workers` tells its workers their id, their number and the simulator's URL
 * through `SLUICE_FLEET_WORKER`, `SLUICE_FLEET_WORKERS` and `SLUICE_SIM_URL`
 * (not meant to be set by hand).
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import { FileSystem } from "@effect/platform"
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { type Pipeline, Pricing, Quota, QuotaKeys, TokenEstimator } from "@sluice/core"
import { Anthropic, SluiceConfig } from "@sluice/providers"
import { Simulator } from "@sluice/simulator"
import {
  Chunk,
  Clock,
  Config,
  Console,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Logger,
  Option,
  Redacted,
  Ref,
  Stream
} from "effect"
import { Redis } from "ioredis"
import { type ChildProcess, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { hostname } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as Display from "./Display.js"
import { inputSource, type Source, syntheticSource } from "./Documents.js"
import * as Extraction from "./Extraction.js"
import * as Fleet from "./Fleet.js"
import * as Job from "./Job.js"
import * as Provider from "./Provider.js"
import * as Queue from "./Queue.js"
import { render } from "./Report.js"
import * as Store from "./Store.js"
import { allowance, type Limits, type Sample, type Summary } from "./Summary.js"

/**
 * The limits Sluice assumes unless told otherwise: 2,000 requests, 1,000,000
 * input and 200,000 output tokens a minute, the order of Anthropic's tier 3
 * for Claude Haiku 4.5.
 */
export const defaultLimits: Limits = {
  requestsPerMinute: 2_000,
  inputTokensPerMinute: 1_000_000,
  outputTokensPerMinute: 200_000
}

/** The simulator's answer latency: about what Haiku takes for a short tool call. */
export const simulatorLatency = { baseMs: 500, perOutputTokenMs: 6, jitterMs: 400 }

const invalid = (message: string) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(message)))

const positiveInt = (name: string) => (value: number) =>
  Number.isInteger(value) && value > 0
    ? Effect.succeed(value)
    : invalid(`--${name} must be a whole number above 0, got ${value}`)
const positive = (name: string) => (value: number) =>
  Number.isFinite(value) && value > 0
    ? Effect.succeed(value)
    : invalid(`--${name} must be a number above 0, got ${value}`)

/** A duration flag: `500ms`, `30s`, `2m`, `1h`, or Effect's own form (`"90 seconds"`); above 0 and finite. */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const short = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(text.trim())
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const
  const parsed = short === null
    ? Duration.decodeUnknown(text.trim())
    : Option.some(Duration.millis(Number(short[1]) * unit[short[2] as keyof typeof unit]))
  return Option.filter(parsed, (duration) => Duration.isFinite(duration) && Duration.toMillis(duration) > 0)
}

const limit = (name: string, fallback: number, what: string) =>
  Options.integer(name).pipe(
    Options.withDefault(fallback),
    Options.withDescription(
      `${what} per minute Sluice assumes for the key (the built-in simulator enforces the same unless --sim-${name} says otherwise)`
    ),
    Options.mapEffect(positiveInt(name))
  )
const simLimit = (name: string, what: string) =>
  Options.integer(`sim-${name}`).pipe(
    Options.optional,
    Options.withDescription(`${what} per minute the built-in simulator enforces (default: --${name})`),
    Options.mapEffect(Option.match({
      onNone: () => Effect.succeed(Option.none<number>()),
      onSome: (n) => Effect.map(positiveInt(`sim-${name}`)(n), Option.some)
    }))
  )

const options = {
  config: Options.file("config").pipe(
    Options.optional,
    Options.withDescription(
      "A Sluice configuration file (YAML or JSON, see docs/configuration.md): quotas, limiter, Governor, retry, breaker, " +
        "fallback and budget; the quota it gives the model's key replaces --rpm/--itpm/--otpm. Where calls go is still chosen by the flags"
    )
  ),
  docs: Options.integer("docs").pipe(
    Options.optional,
    Options.withDescription("How many synthetic documents to generate (default 5,000; not with --input)"),
    Options.mapEffect(
      Option.match({
        onNone: () => Effect.succeed(Option.none<number>()),
        onSome: (n) => Effect.map(positiveInt("docs")(n), Option.some)
      })
    )
  ),
  input: Options.text("input").pipe(
    Options.optional,
    Options.withDescription(
      "Documents to extract from: a folder of .txt/.md files (the id is the file name) or a .jsonl file of {\"id\", \"text\"} lines"
    )
  ),
  seed: Options.integer("seed").pipe(
    Options.withDefault(2026),
    Options.withDescription("Seed of the synthetic documents (the same seed gives the same documents)")
  ),
  db: Options.text("db").pipe(
    Options.withDefault("out/extractions.db"),
    Options.withDescription(
      "The SQLite database (a path): tables extractions and failures; a rerun resumes from it. " +
        "Or a PostgreSQL database (postgres://…): the job runs as one worker of a fleet sharing its queue of documents"
    )
  ),
  fresh: Options.boolean("fresh").pipe(
    Options.withDescription(
      "Start over: clear the database's extractions, failures and budget before the run " +
        "(on PostgreSQL also the queue of documents, the workers and their samples; give it to one worker, before the others start)"
    )
  ),
  redis: Options.redacted("redis").pipe(
    Options.optional,
    Options.withDescription(
      "With --db postgres://…: a Redis (redis://…) where every worker's limiter and budget share the key's quota and the job's budget"
    )
  ),
  workers: Options.integer("workers").pipe(
    Options.optional,
    Options.withDescription(
      "With --db postgres://…: fork this many worker processes of the same command on this machine, wait for them and report on the fleet " +
        "(default 1: this process is the one worker; without --redis each of N holds 1/N of the quota)"
    ),
    Options.mapEffect(Option.match({
      onNone: () => Effect.succeed(Option.none<number>()),
      onSome: (n) => Effect.map(positiveInt("workers")(n), Option.some)
    }))
  ),
  lease: Options.text("lease").pipe(
    Options.optional,
    Options.withDescription(
      "With --db postgres://…: how long a claimed batch stays a worker's without news (renewed while it works): " +
        "a killed worker's documents go back to the queue after it (default 2m; e.g. 30s, 2m, \"90 seconds\")"
    ),
    Options.mapEffect(Option.match({
      onNone: () => Effect.succeed(Option.none<Duration.Duration>()),
      onSome: (text) =>
        Option.match(parseDuration(text), {
          onNone: () => invalid(`--lease must be a duration above 0 such as 30s, 2m or "90 seconds", got ${text}`),
          onSome: (duration) => Effect.succeed(Option.some(duration))
        })
    }))
  ),
  model: Options.text("model").pipe(
    Options.withDefault("claude-haiku-4-5"),
    Options.withDescription("The model to call")
  ),
  provider: Options.choice("provider", Provider.providerNames).pipe(
    Options.optional,
    Options.withDescription(
      "Where the calls go: simulator (the default, built in, nothing leaves the machine) or anthropic (the paid Anthropic API, key from ANTHROPIC_API_KEY; " +
        `budget $${Provider.defaultBudgetUsd} unless --budget-usd). A key in the environment alone never selects the real API`
    )
  ),
  baseUrl: Options.text("base-url").pipe(
    Options.optional,
    Options.withDescription(
      "An Anthropic-compatible endpoint to call instead of the built-in simulator, with ANTHROPIC_API_KEY if set (as a real provider: " +
        `budget $${Provider.defaultBudgetUsd} unless --budget-usd). ANTHROPIC_BASE_URL is not read`
    )
  ),
  rpm: limit("rpm", defaultLimits.requestsPerMinute, "Requests"),
  itpm: limit("itpm", defaultLimits.inputTokensPerMinute, "Input tokens"),
  otpm: limit("otpm", defaultLimits.outputTokensPerMinute, "Output tokens"),
  concurrency: Options.integer("concurrency").pipe(
    Options.optional,
    Options.withDescription(
      "Documents in flight at once (default: what keeps the request limit busy at 4 s latency, 4 to 256)"
    ),
    Options.mapEffect(
      Option.match({
        onNone: () => Effect.succeed(Option.none<number>()),
        onSome: (n) => Effect.map(positiveInt("concurrency")(n), Option.some)
      })
    )
  ),
  budgetUsd: Options.float("budget-usd").pipe(
    Options.optional,
    Options.withDescription(
      "Spend at most this many US dollars on the job (over all its runs on this database); documents past it are recorded as over budget " +
        `(default: none on the simulator, $${Provider.defaultBudgetUsd} on a real provider)`
    ),
    Options.mapEffect(
      Option.match({
        onNone: () => Effect.succeed(Option.none<number>()),
        onSome: (n) => Effect.map(positive("budget-usd")(n), Option.some)
      })
    )
  ),
  report: Options.text("report").pipe(
    Options.withDefault("out/report.html"),
    Options.withDescription(
      "Where to write the HTML report (charts of the run and the summary); \"none\" for no report"
    )
  ),
  json: Options.boolean("json").pipe(
    Options.withDescription(
      "Print one JSON object with the summary at the end and nothing else on stdout (progress goes to stderr)"
    )
  ),
  simRpm: simLimit("rpm", "Requests"),
  simItpm: simLimit("itpm", "Input tokens"),
  simOtpm: simLimit("otpm", "Output tokens"),
  simSpeed: Options.float("sim-speed").pipe(
    Options.withDefault(1),
    Options.withDescription(
      "Run the built-in simulator's clock this many times faster (its minute lasts 60/N s; Sluice's quota follows)"
    ),
    Options.mapEffect(positive("sim-speed"))
  ),
  simForeign: Options.float("sim-foreign-share").pipe(
    Options.withDefault(0),
    Options.withDescription("Share (0 to 1) of the simulated key's quota taken by another, unseen consumer"),
    Options.mapEffect((value) =>
      value >= 0 && value < 1
        ? Effect.succeed(value)
        : invalid(`--sim-foreign-share must be at least 0 and below 1, got ${value}`)
    )
  )
}

type Flags = Command.Command.ParseConfig<typeof options>

/**
 * The per-minute limits a configuration gives the key of `model` on the
 * Anthropic API (under either spelling of its key), each dimension it leaves
 * out taken from `fallback`.
 */
export const limitsFromConfig = (config: SluiceConfig.SluiceConfig, model: string, fallback: Limits): Limits => {
  const name = QuotaKeys.lookup(Object.keys(config.quotas), `anthropic/${model}`)
  if (name === undefined) return fallback
  const quota = Quota.decodeSync(config.quotas[name], name)
  const perMinute = (limit: Quota.Limit | undefined, otherwise: number) =>
    limit === undefined ? otherwise : Math.round(limit.limit * 60_000 / Duration.toMillis(limit.per))
  return {
    requestsPerMinute: perMinute(quota.requests, fallback.requestsPerMinute),
    inputTokensPerMinute: perMinute(quota.inputTokens, fallback.inputTokensPerMinute),
    outputTokensPerMinute: perMinute(quota.outputTokens, fallback.outputTokensPerMinute)
  }
}

/** Flags that parse but do not go together. */
export const InvalidFlags = Provider.InvalidFlags
export type InvalidFlags = Provider.InvalidFlags

/**
 * Where the calls go: the simulator unless a flag says otherwise (`Provider.choose`).
 * With `simulatorUrl` (a worker forked by `--workers`, or a test), the built-in
 * simulator already runs there, started by the parent for the whole fleet: the
 * worker calls it instead of starting its own.
 */
const providerOf = (flags: Flags, limits: Limits, simulatorUrl: Option.Option<string> = Option.none()) =>
  Effect.gen(function*() {
    const apiKey = yield* Config.option(Config.redacted("ANTHROPIC_API_KEY"))
    const choice = yield* Provider.choose({
      provider: flags.provider,
      baseUrl: flags.baseUrl,
      anthropicKeySet: Option.isSome(apiKey)
    })
    if (choice._tag === "Anthropic") {
      return {
        choice,
        description: choice.baseUrl === Provider.anthropicApi
          ? `the Anthropic API (${choice.baseUrl}), paid`
          : `the endpoint at ${choice.baseUrl}`,
        timeScale: 1,
        // The base URL always given: the SDK would otherwise take ANTHROPIC_BASE_URL from the environment.
        layer: Anthropic.layer({
          apiKey: Option.getOrElse(apiKey, () => Redacted.make("sluice-no-key")),
          baseURL: choice.baseUrl
        }),
        simulator: Option.none<Simulator.Running>()
      }
    }
    if (Option.isSome(simulatorUrl)) {
      return {
        choice,
        description: `the built-in simulator at ${simulatorUrl.value} (the fleet's${
          flags.simSpeed === 1 ? "" : `, ${flags.simSpeed}× speed`
        })`,
        timeScale: flags.simSpeed,
        layer: Anthropic.layer({ apiKey: Redacted.make("sluice-simulator"), baseURL: simulatorUrl.value }),
        simulator: Option.none<Simulator.Running>()
      }
    }
    const quota = {
      requestsPerMinute: Option.getOrElse(flags.simRpm, () => limits.requestsPerMinute),
      inputTokensPerMinute: Option.getOrElse(flags.simItpm, () => limits.inputTokensPerMinute),
      outputTokensPerMinute: Option.getOrElse(flags.simOtpm, () => limits.outputTokensPerMinute)
    }
    const running = yield* Simulator.serve({
      quota,
      timeScale: flags.simSpeed,
      latency: simulatorLatency,
      seed: flags.seed,
      ...(flags.simForeign > 0 ? { foreignLoad: { share: flags.simForeign } } : {})
    })
    return {
      choice,
      description:
        `the built-in simulator at ${running.url} (${quota.requestsPerMinute.toLocaleString("en-US")} requests, ` +
        `${quota.inputTokensPerMinute.toLocaleString("en-US")} input and ${
          quota.outputTokensPerMinute.toLocaleString("en-US")
        } output tokens a minute` +
        `${flags.simSpeed === 1 ? "" : `, ${flags.simSpeed}× speed`}${
          flags.simForeign > 0 ? `, ${Math.round(flags.simForeign * 100)} % taken by unseen load` : ""
        })`,
      timeScale: flags.simSpeed,
      layer: Anthropic.layer({ apiKey: Redacted.make("sluice-simulator"), baseURL: running.url }),
      simulator: Option.some(running)
    }
  })

/** The job's name: its budget's scope and its requests' metadata. */
const jobName = "extract"

const clearTables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  for (const table of ["extractions", "failures", "sluice_budget_events", "sluice_budget_reservations"]) {
    yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
  }
})

/** What a run of either kind decides before it opens its database: limits, provider, budget, concurrency. */
const setupOf = (flags: Flags, simulatorUrl: Option.Option<string> = Option.none()) =>
  Effect.gen(function*() {
    const sluice = Option.isSome(flags.config) ? yield* SluiceConfig.load(flags.config.value) : undefined
    const flagLimits: Limits = {
      requestsPerMinute: flags.rpm,
      inputTokensPerMinute: flags.itpm,
      outputTokensPerMinute: flags.otpm
    }
    const limits = sluice === undefined ? flagLimits : limitsFromConfig(sluice, flags.model, flagLimits)
    const provider = yield* providerOf(flags, limits, simulatorUrl)
    const budget = Provider.budgetOf(provider.choice, flags.budgetUsd)
    // A real provider's spend is bounded by the budget, which needs the model's price.
    const price = Pricing.lookup(Pricing.defaultTable, flags.model)
    if (provider.choice._tag !== "Simulator" && Either.isLeft(price)) {
      return yield* new Provider.InvalidFlags({
        message:
          `no price is known for --model ${flags.model}, so a run on a real provider could not be bounded by a budget; use a model of the price table`
      })
    }
    const concurrency = Option.getOrElse(flags.concurrency, () => Job.defaultConcurrency(limits, provider.timeScale))
    return { sluice, limits, provider, budget, price, concurrency }
  })

/** The three closing lines of a run: outcomes, what the provider answered and cost, the rates. */
const summaryLines = (s: Summary, what = ""): ReadonlyArray<string> => [
  `${what}${
    s.succeeded.toLocaleString("en-US")
  } extracted, ${s.failed} failed, ${s.shed} shed, ${s.overBudget} over budget` +
  (s.skipped > 0 ? `, ${s.skipped.toLocaleString("en-US")} skipped (extracted by an earlier run)` : "") +
  ` of ${s.documents.toLocaleString("en-US")} documents in ${s.wallSeconds.toFixed(1)} s`,
  `${s.http429} × 429 and ${s.http529} × 529 received, ${s.retries} retries; ${
    s.inputTokens.toLocaleString("en-US")
  } input and ${s.outputTokens.toLocaleString("en-US")} output tokens, $${s.costUsd.toFixed(4)}`,
  `per minute: ${Math.round(s.requestsPerMinute).toLocaleString("en-US")} requests, ${
    Math.round(s.inputTokensPerMinute).toLocaleString("en-US")
  } input and ` +
  `${Math.round(s.outputTokensPerMinute).toLocaleString("en-US")} output tokens`
]

// ---------------------------------------------------------------------------
// The fleet: --db postgres://…
// ---------------------------------------------------------------------------

/** Whether `--db` names a PostgreSQL database (the fleet mode, a shared queue) rather than a SQLite file. */
export const isPostgres = (db: string): boolean => /^postgres(ql)?:\/\//i.test(db)

/** A URL with its password, if it has one, shown as `***`: how the output names `--db` and `--redis`. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password === "") return url
    parsed.password = "***"
    return parsed.toString()
  } catch {
    return url
  }
}

/**
 * The Redis prefix of a fleet's limiter and budget: the same for every worker
 * of one job (the database's host, port and name, and the model, whatever the
 * user and password), different for another job.
 *
 * @example
 * fleetPrefix("postgres://app:secret@db.internal/jobs", "claude-haiku-4-5") // "sluice:extract:<12 hex>:claude-haiku-4-5"
 */
export const fleetPrefix = (db: string, model: string): string => {
  const url = new URL(db)
  const where = `${url.hostname.toLowerCase()}:${url.port === "" ? "5432" : url.port}${url.pathname}`
  return `sluice:extract:${createHash("sha256").update(where).digest("hex").slice(0, 12)}:${model}`
}

/**
 * Documents a worker claims at once: small next to what it keeps in flight,
 * so that the fleet's work spreads over its workers and a killed worker's
 * lease holds back few; a claim is one short statement.
 */
export const fleetBatch = (concurrency: number): number => Math.max(1, Math.min(16, Math.ceil(concurrency / 8)))

/** What `--fresh` drops on PostgreSQL: the queue, the outcomes, the workers and their samples, the budget ledger. */
export const fleetTables: ReadonlyArray<string> = [
  "documents",
  "extractions",
  "failures",
  "workers",
  "fleet_samples",
  "sluice_budget_events",
  "sluice_budget_reservations"
]

/**
 * Set by `--workers N` for the processes it forks, not meant to be set by hand:
 * the worker's id, how many local workers share the quota (without `--redis`),
 * and the URL of the simulator the parent started for all of them.
 */
const forkedConfig = Config.all({
  worker: Config.option(Config.string("SLUICE_FLEET_WORKER")),
  workers: Config.option(Config.integer("SLUICE_FLEET_WORKERS")),
  simulatorUrl: Config.option(Config.string("SLUICE_SIM_URL"))
})

/** The flags that only make sense with a PostgreSQL database, refused with a SQLite path. */
const sqliteOnly = (flags: Flags) => {
  const fleetFlag = Option.isSome(flags.workers)
    ? "--workers"
    : Option.isSome(flags.redis)
    ? "--redis"
    : Option.isSome(flags.lease)
    ? "--lease"
    : undefined
  return fleetFlag === undefined ? Effect.void : new InvalidFlags({
    message: `${fleetFlag} needs --db postgres://…: a SQLite file is one process's checkpoint, ` +
      "and one process already keeps a key's quota busy; a fleet shares its documents through a PostgreSQL queue"
  })
}

/** The fleet's PostgreSQL database does not answer (down, wrong address, missing database, refused login). */
export class DatabaseUnavailable extends Data.TaggedError("DatabaseUnavailable")<{
  /** `--db`, its password shown as `***`. */
  readonly db: string
  readonly reason: string
}> {
  override get message(): string {
    return `cannot open --db ${this.db}: ${this.reason}` +
      (/does not exist/.test(this.reason) ? " (create it first, e.g. createdb, or CREATE DATABASE in psql)" : "")
  }
}

/** The deepest message of an error's causes. */
const reasonOf = (error: unknown): string => {
  let current: unknown = error
  let reason = String(error)
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const message = (current as { message?: unknown }).message
    if (typeof message === "string" && message !== "") reason = message
    current = (current as { cause?: unknown }).cause
  }
  return reason
}

/** The PostgreSQL client for `--db` (`@effect/sql-pg` loads only when a fleet runs: `pnpm start` never needs `pg`). */
const pgLayer = (url: string) =>
  Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/sql-pg")),
      ({ PgClient }) => PgClient.layer({ url: Redacted.make(url) })
    )
  ).pipe(Layer.mapError((error) => new DatabaseUnavailable({ db: redactUrl(url), reason: reasonOf(error) })))

/** The documents `--docs` or `--input` name, if either does (a fleet worker may load none: the queue has them). */
const sourceOf = (flags: Flags) =>
  Option.isSome(flags.input)
    ? Effect.map(inputSource(flags.input.value), Option.some)
    : Effect.succeed(Option.map(flags.docs, (n) => syntheticSource(n, flags.seed)))

/** `--fresh` on PostgreSQL: the fleet's tables dropped, and with `--redis` its budget ledger there deleted (not the limiter's buckets: the provider still counts those calls). */
const dropFleet = (flags: Flags) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const table of fleetTables) yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
    if (Option.isSome(flags.redis)) {
      const pattern = `${fleetPrefix(flags.db, flags.model)}:budget:*`
      const url = Redacted.value(flags.redis.value)
      yield* Effect.acquireUseRelease(
        Effect.sync(() => new Redis(url, { maxRetriesPerRequest: 2 })),
        (redis) =>
          Effect.promise(async () => {
            let cursor = "0"
            do {
              const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1_000)
              if (keys.length > 0) await redis.del(...keys)
              cursor = next
            } while (cursor !== "0")
          }),
        (redis) => Effect.promise(() => redis.quit().catch(() => "OK"))
      )
    }
  })

/** Loads the documents of `--docs`/`--input` into the queue (new ids only) and says how many it holds. */
const loadDocuments = (flags: Flags, source: Option.Option<Source>, out: (text: string) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const queue = yield* Queue.WorkQueue
    if (Option.isSome(source)) {
      const loaded = yield* Queue.loadAll(source.value.documents)
      yield* out(
        `loaded ${source.value.description}: ${loaded.toLocaleString("en-US")} new, ${
          (source.value.count - loaded).toLocaleString("en-US")
        } already in the queue`
      )
    }
    const counts = yield* queue.counts
    if (counts.documents === 0) {
      return yield* new InvalidFlags({
        message: `the queue of ${
          redactUrl(flags.db)
        } has no documents: give --docs N or --input PATH (any worker may; each id is loaded once)`
      })
    }
    return counts
  })

/**
 * On a real provider, before the first call: what the queue's open documents
 * could cost at most (`Provider.worstCase`), read from the database a page at a
 * time. A fleet's budget bounds what they spend whatever this says.
 */
const fleetWorstCase = (
  flags: Flags,
  setup: { readonly provider: { readonly choice: Provider.Choice }; readonly budget: Provider.BudgetChoice },
  price: Either.Either<Pricing.ModelPrice, unknown>,
  out: (text: string) => Effect.Effect<void>
) =>
  Effect.gen(function*() {
    if (setup.provider.choice._tag === "Simulator" || Either.isLeft(price)) return
    const sql = yield* SqlClient.SqlClient
    const page = 500
    const open = Stream.paginateChunkEffect("", (after) =>
      Effect.map(
        sql<{ id: string; text: string; problem: string | null }>`SELECT id, text, problem FROM documents
          WHERE completed_at IS NULL AND id > ${after} ORDER BY id LIMIT ${page}`,
        (rows) =>
          [
            Chunk.unsafeFromArray(rows.map((row) => ({
              id: row.id,
              text: row.text,
              ...(row.problem === null ? {} : { problem: row.problem })
            }))),
            rows.length < page ? Option.none<string>() : Option.some(rows.at(-1)!.id)
          ] as const
      ))
    const worst = yield* Provider.worstCase(open, {
      request: (document) => Extraction.request(flags.model, document, jobName),
      estimator: yield* TokenEstimator.make(),
      price: price.right
    })
    yield* out(Provider.worstCaseLine(flags.model, worst, setup.budget.usd))
  })

/** How the fleet shares the quota, for the header. */
const quotaLine = (flags: Flags, localWorkers: number | undefined) =>
  Option.isSome(flags.redis)
    ? `quota and budget shared by the fleet through Redis at ${redactUrl(Redacted.value(flags.redis.value))} (prefix ${
      fleetPrefix(flags.db, flags.model)
    })`
    : localWorkers === undefined || localWorkers === 1
    ? "no --redis: this worker assumes the whole quota (run one worker per key, or give every worker --redis to share it)"
    : `no --redis: each of the ${localWorkers} workers on this machine holds 1/${localWorkers} of the quota`

/** The fleet's report: every worker's samples and the summary of the whole run. */
const writeFleetReport = (
  flags: Flags,
  limits: Limits,
  title: string,
  report: { readonly samples: ReadonlyArray<Sample>; readonly summary: Summary },
  notes: ReadonlyArray<string>,
  out: (text: string) => Effect.Effect<void>
) =>
  Effect.gen(function*() {
    if (flags.report === "none") return
    const fs = yield* FileSystem.FileSystem
    yield* fs.makeDirectory(Path.dirname(Path.resolve(flags.report)), { recursive: true })
    const generatedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
    yield* fs.writeFileString(
      flags.report,
      render({
        title,
        generatedAt,
        model: flags.model,
        limits,
        samples: report.samples,
        summary: report.summary,
        notes
      })
    )
    yield* out(`report ${flags.report}`)
  })

/** One worker of the fleet, in this process: loads what it is given, claims and extracts until the queue is empty. */
const fleetWorker = (flags: Flags, stop: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const forked = yield* forkedConfig
    const out = (text: string) => flags.json ? Console.error(text) : Console.log(text)
    const source = yield* sourceOf(flags)
    const { budget, concurrency, limits, price, provider, sluice } = yield* setupOf(flags, forked.simulatorUrl)
    const worker = Option.getOrElse(forked.worker, () => `${hostname()}/${process.pid}`)
    const localWorkers = Option.getOrUndefined(forked.workers)
    const lease = Option.getOrElse(flags.lease, () => Duration.minutes(2))

    const program = Effect.gen(function*() {
      if (flags.fresh) yield* dropFleet(flags)
      const queue = yield* Queue.make
      return yield* Effect.gen(function*() {
        if (provider.choice._tag === "Simulator" && provider.choice.notice !== undefined) {
          yield* out(provider.choice.notice)
        }
        const counts = yield* loadDocuments(flags, source, out)
        yield* out(
          `Sluice extraction, fleet worker ${worker}: ${
            counts.documents.toLocaleString("en-US")
          } documents in the queue of ${redactUrl(flags.db)} (${counts.done.toLocaleString("en-US")} done, ${
            counts.leased.toLocaleString("en-US")
          } leased)`
        )
        yield* out(`model ${flags.model} on ${provider.description}`)
        if (Option.isSome(flags.config)) yield* out(`configuration ${flags.config.value}`)
        yield* out(
          `Sluice assumes ${limits.requestsPerMinute.toLocaleString("en-US")} requests, ${
            limits.inputTokensPerMinute.toLocaleString("en-US")
          } input and ${
            limits.outputTokensPerMinute.toLocaleString("en-US")
          } output tokens a minute; ${concurrency} documents in flight at most; lease ${Duration.format(lease)}`
        )
        yield* out(quotaLine(flags, localWorkers))
        const budgetLine = Provider.budgetLine(budget)
        if (budgetLine !== undefined) yield* out(`${budgetLine}, for the fleet`)
        yield* fleetWorstCase(flags, { provider, budget }, price, out)
        const ticks = yield* Ref.make(0)
        const onSnapshot = (snapshot: Pipeline.Snapshot) =>
          Effect.flatMap(
            Ref.getAndUpdate(ticks, (n) => n + 1),
            (n) => n % 5 === 0 ? out(Display.line(snapshot, limits, provider.timeScale)) : Effect.void
          )
        const result = yield* Job.run({
          source: {
            description: `the queue of ${redactUrl(flags.db)}`,
            count: counts.documents - counts.done,
            documents: Stream.empty
          },
          model: flags.model,
          limits,
          timeScale: provider.timeScale,
          concurrency,
          budgetUsd: budget.usd,
          job: jobName,
          stop: Deferred.await(stop),
          onSnapshot,
          sluice,
          fleet: {
            worker,
            lease,
            batch: fleetBatch(concurrency),
            redis: Option.match(flags.redis, {
              onNone: () => undefined,
              onSome: (url) => ({ url: Redacted.value(url), prefix: fleetPrefix(flags.db, flags.model) })
            }),
            quotaShare: Option.isNone(flags.redis) && localWorkers !== undefined ? 1 / localWorkers : undefined
          }
        })
        const after = yield* queue.counts
        yield* out("")
        for (const line of summaryLines(result.summary, `worker ${worker}: `)) yield* out(line)
        for (const note of result.notes) yield* out(note)
        yield* out(
          `queue of ${redactUrl(flags.db)}: ${after.done.toLocaleString("en-US")} of ${
            after.documents.toLocaleString("en-US")
          } documents done (${after.extractions.toLocaleString("en-US")} in extractions, ${
            after.failures.toLocaleString("en-US")
          } in failures), ${after.leased.toLocaleString("en-US")} leased by other workers`
        )
        if (flags.report !== "none") {
          const report = yield* Fleet.report
          yield* writeFleetReport(flags, limits, "Sluice extraction run (the fleet so far)", report, [
            `Every worker of the fleet, as recorded in ${redactUrl(flags.db)} when worker ${worker} finished.`
          ], out)
        }
        if (flags.json) yield* Console.log(JSON.stringify(result.summary))
        return result
      }).pipe(Effect.provideService(Queue.WorkQueue, queue))
    })
    return yield* program.pipe(Effect.provide(Layer.mergeAll(pgLayer(flags.db), provider.layer)))
  })

/** The extraction script, to fork workers of: this module's sibling `extract.ts` (or `.js` when built). */
const extractScript = fileURLToPath(
  new URL(import.meta.url.endsWith(".ts") ? "../extract.ts" : "../extract.js", import.meta.url)
)

/** Node's flags for a forked worker: this process's own when it runs the script, else tsx with the sources' condition. */
const workerExecArgv = (): ReadonlyArray<string> =>
  process.argv[1] !== undefined && Path.resolve(process.argv[1]) === extractScript
    ? process.execArgv.filter((flag) => !flag.startsWith("--inspect"))
    : extractScript.endsWith(".ts")
    ? ["--import", "tsx", "--conditions=@sluice/source"]
    : []

const parentOnly: Readonly<Record<string, "value" | "boolean">> = {
  "--workers": "value",
  "--docs": "value",
  "--input": "value",
  "--report": "value",
  "--fresh": "boolean",
  "--json": "boolean"
}

/**
 * The arguments of a worker forked by `--workers N`: the command's own, less
 * what only the parent does (fork, load, start over, write the report, print
 * JSON), plus `--report none --json` (the parent reads each worker's summary).
 *
 * @example
 * workerArgs(["--db", "postgres://h/db", "--workers", "4", "--docs=2000", "--fresh"]) // ["--db", "postgres://h/db", "--report", "none", "--json"]
 */
export const workerArgs = (args: ReadonlyArray<string>): ReadonlyArray<string> => {
  const kept: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    const kind = parentOnly[arg.split("=", 1)[0]!]
    if (kind === undefined) kept.push(arg)
    else if (arg.includes("=")) continue
    else if (kind === "value" || /^(true|false|yes|no|y|n|on|off|1|0)$/i.test(args[i + 1] ?? "")) i++
  }
  return [...kept, "--report", "none", "--json"]
}

/** How a forked worker ended. */
interface WorkerExit {
  readonly name: string
  readonly id: string
  readonly code: number | null
  readonly signal: string | null
  readonly summary: Summary | undefined
  /** Its last lines on stderr, for an error. */
  readonly tail: ReadonlyArray<string>
}

/** A worker forked by `--workers`. */
export class WorkerFailed extends Data.TaggedError("WorkerFailed")<{
  readonly failed: ReadonlyArray<
    { readonly name: string; readonly code: number | null; readonly signal: string | null }
  >
}> {
  override get message(): string {
    return `${
      this.failed.map((w) => `${w.name} ${w.signal === null ? `exited with ${w.code}` : `was killed (${w.signal})`}`)
        .join(", ")
    }; ` +
      "the documents it held go back to the queue when their lease ends: run the same command again to finish them"
  }
}

/**
 * Forks one worker and waits for it. Its own process group: a Ctrl-C at the
 * terminal reaches the parent only, which passes one SIGINT on (a worker given
 * two quits at once).
 */
const forkWorker = (
  name: string,
  id: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  started: (child: ChildProcess) => void
) =>
  Effect.async<WorkerExit>((resume) => {
    const child = spawn(process.execPath, [...workerExecArgv(), extractScript, ...args], {
      env: { ...process.env, ...env, SLUICE_FLEET_WORKER: id },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true
    })
    started(child)
    let stdout = ""
    const tail: Array<string> = []
    let partial = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n")
      partial = lines.pop() ?? ""
      for (const line of lines) tail.push(line)
      tail.splice(0, Math.max(0, tail.length - 20))
    })
    child.on("close", (code, signal) => {
      if (partial !== "") tail.push(partial)
      let summary: Summary | undefined
      try {
        summary = JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as Summary
      } catch {
        summary = undefined
      }
      resume(Effect.succeed({ name, id, code, signal, summary, tail }))
    })
    return Effect.sync(() => {
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {
        // already gone
      }
    })
  })

/** `--workers N`: loads the documents once, forks N workers of the same command, follows the queue, reports on the fleet. */
const fleetParent = (flags: Flags, stop: Deferred.Deferred<void>, args: ReadonlyArray<string>, n: number) =>
  Effect.gen(function*() {
    const out = (text: string) => flags.json ? Console.error(text) : Console.log(text)
    const source = yield* sourceOf(flags)
    // The one simulator of the fleet (when the calls go to the built-in one): the workers get its URL.
    const { budget, limits, price, provider } = yield* setupOf(flags)
    const lease = Option.getOrElse(flags.lease, () => Duration.minutes(2))
    const program = Effect.gen(function*() {
      if (flags.fresh) yield* dropFleet(flags)
      const queue = yield* Queue.make
      return yield* Effect.gen(function*() {
        if (provider.choice._tag === "Simulator" && provider.choice.notice !== undefined) {
          yield* out(provider.choice.notice)
        }
        const counts = yield* loadDocuments(flags, source, out)
        yield* out(
          `Sluice extraction, a fleet of ${n} workers on this machine: ${
            counts.documents.toLocaleString("en-US")
          } documents in the queue of ${redactUrl(flags.db)} (${counts.done.toLocaleString("en-US")} done)`
        )
        yield* out(`model ${flags.model} on ${provider.description}`)
        yield* out(
          `Sluice assumes ${limits.requestsPerMinute.toLocaleString("en-US")} requests, ${
            limits.inputTokensPerMinute.toLocaleString("en-US")
          } input and ${
            limits.outputTokensPerMinute.toLocaleString("en-US")
          } output tokens a minute for the key; lease ${Duration.format(lease)}`
        )
        yield* out(quotaLine(flags, n))
        const budgetLine = Provider.budgetLine(budget)
        if (budgetLine !== undefined) yield* out(`${budgetLine}, for the fleet`)
        yield* fleetWorstCase(flags, { provider, budget }, price, out)

        const children: Array<ChildProcess> = []
        // Ctrl-C: each worker is told once, stops taking documents, finishes and records the calls in flight.
        yield* Effect.forkScoped(Effect.zipRight(
          Deferred.await(stop),
          Effect.sync(() => {
            for (const child of children) if (child.exitCode === null) child.kill("SIGINT")
          })
        ))
        const started = yield* Clock.currentTimeMillis
        const running = yield* Ref.make(n)
        const tty = flags.json ? process.stderr.isTTY === true : process.stdout.isTTY === true
        const progress = yield* Effect.forkScoped(
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            const line = Display.fleetLine(yield* queue.counts, (now - started) / 1000, yield* Ref.get(running), n)
            yield* tty
              ? Effect.sync(() => (flags.json ? process.stderr : process.stdout).write(`\r\x1b[2K${line}`))
              : out(line)
          }).pipe(
            Effect.catchAll(() => Effect.void),
            Effect.delay(tty ? "1 second" : "5 seconds"),
            Effect.forever
          )
        )
        const forkedEnv: Record<string, string> = {
          SLUICE_FLEET_WORKERS: String(n),
          ...Option.match(provider.simulator, { onNone: () => ({}), onSome: (sim) => ({ SLUICE_SIM_URL: sim.url }) })
        }
        const childArgs = workerArgs(args)
        const exits = yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i + 1),
          (i) =>
            forkWorker(
              `w${i}`,
              `${hostname()}/${process.pid}.${i}`,
              childArgs,
              forkedEnv,
              (child) => void children.push(child)
            ).pipe(Effect.tap(() => Ref.update(running, (k) => k - 1))),
          { concurrency: "unbounded" }
        )
        yield* Fiber.interrupt(progress)
        if (tty) yield* Effect.sync(() => (flags.json ? process.stderr : process.stdout).write("\n"))

        const report = yield* Fleet.report
        const after = yield* queue.counts
        const s = report.summary
        yield* out("")
        for (const line of summaryLines(s, `the fleet (${n} workers): `)) yield* out(line)
        for (const exit of exits) {
          const w = exit.summary
          yield* out(
            `  ${exit.name} ${exit.id}: ${
              w === undefined
                ? exit.signal === null ? `exited with ${exit.code}, no summary` : `killed (${exit.signal})`
                : `${w.succeeded.toLocaleString("en-US")} extracted, ${
                  (w.failed + w.shed + w.overBudget).toLocaleString("en-US")
                } failures, ${w.http429} × 429, $${w.costUsd.toFixed(4)} in ${w.wallSeconds.toFixed(1)} s`
            }`
          )
        }
        const notes: Array<string> = []
        if (Option.isSome(provider.simulator)) {
          const stats = yield* provider.simulator.value.stats
          const key = stats.keys.filter((k) => k.model === flags.model)
          const sum = (f: (k: Simulator.KeyStats) => number) => key.reduce((total, k) => total + f(k), 0)
          const line = `the simulator counted ${sum((k) => k.accepted).toLocaleString("en-US")} calls, ${
            sum((k) => k.rateLimited)
          } × 429, ${
            sum((k) => k.inputTokens + k.cacheWriteInputTokens + k.cacheReadInputTokens).toLocaleString("en-US")
          } input and ${sum((k) => k.outputTokens).toLocaleString("en-US")} output tokens`
          yield* out(line)
          notes.push(`${line[0]!.toUpperCase()}${line.slice(1)}.`)
        }
        // As the single process says it: what the fleet used of what the key's quota allowed over the run.
        const quotaMinutes = (s.wallSeconds / 60) * provider.timeScale
        const used = (n: number, limit: number) => `${Math.round((100 * n) / allowance(limit, quotaMinutes))} %`
        const utilisation =
          `Of what the quota allowed over the run (a full minute's bucket at the start plus the refill since), the fleet used requests ${
            used(s.requestsPerMinute * quotaMinutes, limits.requestsPerMinute)
          }, input tokens ${used(s.inputTokens, limits.inputTokensPerMinute)}, output tokens ${
            used(s.outputTokens, limits.outputTokensPerMinute)
          }.`
        yield* out(utilisation)
        notes.push(utilisation)
        yield* out(
          `queue of ${redactUrl(flags.db)}: ${after.done.toLocaleString("en-US")} of ${
            after.documents.toLocaleString("en-US")
          } documents done (${after.extractions.toLocaleString("en-US")} in extractions, ${
            after.failures.toLocaleString("en-US")
          } in failures)`
        )
        if (after.done < after.documents) {
          yield* out(
            `${
              (after.documents - after.done).toLocaleString("en-US")
            } documents are not done: run the same command again to resume (the queue keeps what was done)`
          )
        }
        yield* writeFleetReport(flags, limits, `Sluice extraction run (a fleet of ${n} workers)`, report, notes, out)
        if (flags.json) yield* Console.log(JSON.stringify(s))
        const failed = exits.filter((exit) => exit.code !== 0)
        for (const exit of failed) {
          for (const line of exit.tail.slice(-5)) yield* Console.error(`  ${exit.name} | ${line}`)
        }
        if (failed.length > 0) return yield* new WorkerFailed({ failed })
        return report
      }).pipe(Effect.provideService(Queue.WorkQueue, queue))
    })
    return yield* program.pipe(Effect.provide(pgLayer(flags.db)))
  })

/** `--db postgres://…`: this process is one worker, or with `--workers N` the parent of N. */
const fleet = (flags: Flags, stop: Deferred.Deferred<void>, args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    if (Option.isSome(flags.redis) && !/^rediss?:\/\//i.test(Redacted.value(flags.redis.value))) {
      return yield* new InvalidFlags({ message: "--redis must be a redis:// or rediss:// URL" })
    }
    const n = Option.getOrElse(flags.workers, () => 1)
    return n > 1 ? yield* fleetParent(flags, stop, args, n) : yield* fleetWorker(flags, stop)
  })

/** The whole job: flags checked, database opened, provider chosen, documents extracted, summary printed. */
const extract = (flags: Flags, stop: Deferred.Deferred<void>, args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    if (Option.isSome(flags.docs) && Option.isSome(flags.input)) {
      return yield* new InvalidFlags({
        message: "give --docs (synthetic documents) or --input (your documents), not both"
      })
    }
    if (isPostgres(flags.db)) return yield* fleet(flags, stop, args)
    yield* sqliteOnly(flags)
    const out = (text: string) => flags.json ? Console.error(text) : Console.log(text)
    const source: Source = Option.isSome(flags.input)
      ? yield* inputSource(flags.input.value)
      : syntheticSource(Option.getOrElse(flags.docs, () => 5_000), flags.seed)
    // SLUICE_SIM_URL (set by a harness that runs the simulator, as `--workers` does for its children): call it instead of starting one.
    const { budget, concurrency, limits, price, provider, sluice } = yield* setupOf(
      flags,
      (yield* forkedConfig).simulatorUrl
    )

    yield* fs.makeDirectory(Path.dirname(Path.resolve(flags.db)), { recursive: true })
    const SqlLive = SqliteClient.layer({ filename: flags.db })
    const StoreLive = Store.layer.pipe(Layer.provideMerge(SqlLive))

    const program = Effect.gen(function*() {
      const store = yield* Store.Store
      const before = yield* store.counts
      if (provider.choice._tag === "Simulator" && provider.choice.notice !== undefined) {
        yield* out(provider.choice.notice)
      }
      yield* out(`Sluice extraction: ${source.description} → ${flags.db}`)
      yield* out(`model ${flags.model} on ${provider.description}`)
      if (Option.isSome(flags.config)) yield* out(`configuration ${flags.config.value}`)
      yield* out(
        `Sluice assumes ${limits.requestsPerMinute.toLocaleString("en-US")} requests, ${
          limits.inputTokensPerMinute.toLocaleString("en-US")
        } input and ` +
          `${
            limits.outputTokensPerMinute.toLocaleString("en-US")
          } output tokens a minute; ${concurrency} documents in flight at most`
      )
      const budgetLine = Provider.budgetLine(budget)
      if (budgetLine !== undefined) yield* out(budgetLine)
      if (provider.choice._tag !== "Simulator" && Either.isRight(price)) {
        // Before the first call: what the documents still to send could cost at most.
        const worst = yield* Provider.worstCase(
          Stream.filterEffect(
            source.documents,
            (document) => Effect.map(store.isExtracted(document.id), (done) => !done)
          ),
          {
            request: (document) => Extraction.request(flags.model, document, jobName),
            estimator: yield* TokenEstimator.make(),
            price: price.right
          }
        )
        yield* out(Provider.worstCaseLine(flags.model, worst, budget.usd))
      }
      if (before.extractions + before.failures > 0) {
        yield* out(
          `resuming: ${before.extractions.toLocaleString("en-US")} documents already extracted are skipped, ${
            before.failures.toLocaleString("en-US")
          } earlier failures are retried (--fresh starts over)`
        )
      }
      const tty = flags.json ? process.stderr.isTTY === true : process.stdout.isTTY === true
      const ticks = yield* Ref.make(0)
      const onSnapshot = (snapshot: Pipeline.Snapshot) =>
        tty
          ? Effect.sync(() =>
            (flags.json ? process.stderr : process.stdout).write(
              `\r\x1b[2K${
                Display.bar(
                  snapshot,
                  limits,
                  provider.timeScale,
                  (flags.json ? process.stderr : process.stdout).columns ?? 120
                )
              }`
            )
          )
          : Effect.flatMap(
            Ref.getAndUpdate(ticks, (n) => n + 1),
            (n) => n % 5 === 0 ? out(Display.line(snapshot, limits, provider.timeScale)) : Effect.void
          )
      const result = yield* Job.run({
        source,
        model: flags.model,
        limits,
        timeScale: provider.timeScale,
        concurrency,
        budgetUsd: budget.usd,
        job: jobName,
        stop: Deferred.await(stop),
        onSnapshot,
        sluice
      })
      if (tty) yield* Effect.sync(() => (flags.json ? process.stderr : process.stdout).write("\n"))
      const after = yield* store.counts
      const s = result.summary
      yield* out("")
      for (const line of summaryLines(s)) yield* out(line)
      for (const note of result.notes) yield* out(note)
      yield* out(
        `database ${flags.db}: ${after.extractions.toLocaleString("en-US")} rows in extractions, ${
          after.failures.toLocaleString("en-US")
        } in failures`
      )
      if (flags.report !== "none") {
        yield* fs.makeDirectory(Path.dirname(Path.resolve(flags.report)), { recursive: true })
        const generatedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
        yield* fs.writeFileString(
          flags.report,
          render({
            title: "Sluice extraction run",
            generatedAt,
            model: flags.model,
            limits,
            samples: result.samples,
            summary: s,
            notes: result.notes
          })
        )
        yield* out(`report ${flags.report}`)
      }
      if (flags.json) yield* Console.log(JSON.stringify(s))
      return result
    })
    return yield* program.pipe(
      Effect.provide(Layer.mergeAll(StoreLive, provider.layer)),
      Effect.provide(flags.fresh ? Layer.effectDiscard(clearTables).pipe(Layer.provideMerge(SqlLive)) : Layer.empty)
    )
  })

/** `pnpm extract status --db postgres://…`: the fleet's progress, throughput against the limits, and a line per worker. */
const status = Command.make("status", {
  db: Options.text("db").pipe(Options.withDescription("The fleet's PostgreSQL database (postgres://…)")),
  rpm: limit("rpm", defaultLimits.requestsPerMinute, "Requests"),
  itpm: limit("itpm", defaultLimits.inputTokensPerMinute, "Input tokens"),
  otpm: limit("otpm", defaultLimits.outputTokensPerMinute, "Output tokens"),
  simSpeed: Options.float("sim-speed").pipe(
    Options.withDefault(1),
    Options.withDescription("The fleet's --sim-speed: the provider's minute lasts 60/N s"),
    Options.mapEffect(positive("sim-speed"))
  ),
  lease: Options.text("lease").pipe(
    Options.withDefault("2m"),
    Options.withDescription("The fleet's --lease: a worker not seen for longer is shown as stale"),
    Options.mapEffect((text) =>
      Option.match(parseDuration(text), {
        onNone: () => invalid(`--lease must be a duration above 0 such as 30s, 2m or "90 seconds", got ${text}`),
        onSome: Effect.succeed
      })
    )
  ),
  watch: Options.boolean("watch").pipe(Options.withDescription("Print it again every 5 seconds, until Ctrl-C"))
}, (flags) =>
  Effect.gen(function*() {
    if (!isPostgres(flags.db)) {
      return yield* new InvalidFlags({
        message: "status needs --db postgres://…: the fleet's database (a SQLite run prints its own progress)"
      })
    }
    const limits: Limits = {
      requestsPerMinute: flags.rpm,
      inputTokensPerMinute: flags.itpm,
      outputTokensPerMinute: flags.otpm
    }
    const tty = process.stdout.isTTY === true
    const show = Effect.flatMap(Fleet.status, (current) =>
      Console.log(
        `${flags.watch && tty ? "\x1b[2J\x1b[H" : ""}${
          Fleet.renderStatus(current, { limits, timeScale: flags.simSpeed, lease: flags.lease })
        }${flags.watch && !tty ? "\n" : ""}`
      ))
    yield* (flags.watch ? Effect.forever(Effect.zipRight(show, Effect.sleep("5 seconds"))) : show).pipe(
      Effect.provide(Queue.layer.pipe(Layer.provideMerge(pgLayer(flags.db))))
    )
  })).pipe(
    Command.withDescription(
      "The fleet's progress in its PostgreSQL database: documents, throughput against the limits, each worker"
    )
  )

/**
 * The command, given the arguments it runs with (`--workers N` forks workers of
 * the same command). Ctrl-C stops taking documents, lets the calls in flight
 * finish and be recorded, prints the summary and how to resume; a second Ctrl-C
 * quits at once (what was recorded stays recorded).
 */
export const commandFor = (args: ReadonlyArray<string>) =>
  Command.make("extract", options, (flags) =>
    Effect.gen(function*() {
      const stop = yield* Deferred.make<void>()
      // With --json, stdout carries the one summary object: Sluice's log lines (a limit lowered by the provider's headers) go to stderr.
      const logs = flags.json
        ? Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.stringLogger))
        : Layer.empty
      const job = yield* Effect.forkDaemon(Effect.scoped(extract(flags, stop, args)).pipe(Effect.provide(logs)))
      yield* Fiber.join(job).pipe(
        Effect.onInterrupt(() =>
          Effect.gen(function*() {
            yield* Console.error(
              "\nstopping: no new documents; waiting for the calls in flight (Ctrl-C again quits at once)"
            )
            yield* Deferred.succeed(stop, undefined)
            // The job prints its summary, with where it stopped and how to resume.
            yield* Fiber.await(job)
          })
        )
      )
    })).pipe(
      Command.withDescription(
        "Extract title, summary, keywords, category and sentiment from every document with a tool-use call, into SQLite " +
          "(or, with --db postgres://…, as a fleet of workers sharing a queue), under the provider's rate limits"
      ),
      Command.withSubcommands([status])
    )

/**
 * The command line, ready for `process.argv`. A flag that does not parse is
 * reported by `@effect/cli` with the help; any other error is printed as one
 * `error: …` line on stderr, and the effect fails with it.
 */
export const cli = (argv: ReadonlyArray<string>) =>
  Command.run(commandFor(argv.slice(2)), { name: "sluice-extract", version: "0.1.0" })(argv).pipe(
    Effect.tapError((error) =>
      ValidationError.isValidationError(error) ? Effect.void : Console.error(`error: ${error.message}`)
    )
  )
