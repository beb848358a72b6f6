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
  Clock,
  Config,
  Console,
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
import * as Path from "node:path"
import * as Display from "./Display.js"
import { inputSource, type Source, syntheticSource } from "./Documents.js"
import * as Extraction from "./Extraction.js"
import * as Job from "./Job.js"
import * as Provider from "./Provider.js"
import { render } from "./Report.js"
import * as Store from "./Store.js"
import type { Limits } from "./Summary.js"

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
    Options.withDescription("The SQLite database: tables extractions and failures; a rerun resumes from it")
  ),
  fresh: Options.boolean("fresh").pipe(
    Options.withDescription("Start over: clear the database's extractions, failures and budget before the run")
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

/** Where the calls go: the simulator unless a flag says otherwise (`Provider.choose`). */
const providerOf = (flags: Flags, limits: Limits) =>
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
        })
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
      layer: Anthropic.layer({ apiKey: Redacted.make("sluice-simulator"), baseURL: running.url })
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

/** The whole job: flags checked, database opened, provider chosen, documents extracted, summary printed. */
const extract = (flags: Flags, stop: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    if (Option.isSome(flags.docs) && Option.isSome(flags.input)) {
      return yield* new InvalidFlags({
        message: "give --docs (synthetic documents) or --input (your documents), not both"
      })
    }
    const out = (text: string) => flags.json ? Console.error(text) : Console.log(text)
    const source: Source = Option.isSome(flags.input)
      ? yield* inputSource(flags.input.value)
      : syntheticSource(Option.getOrElse(flags.docs, () => 5_000), flags.seed)
    const sluice = Option.isSome(flags.config) ? yield* SluiceConfig.load(flags.config.value) : undefined
    const flagLimits: Limits = {
      requestsPerMinute: flags.rpm,
      inputTokensPerMinute: flags.itpm,
      outputTokensPerMinute: flags.otpm
    }
    const limits = sluice === undefined ? flagLimits : limitsFromConfig(sluice, flags.model, flagLimits)
    const provider = yield* providerOf(flags, limits)
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
      yield* out(
        `${
          s.succeeded.toLocaleString("en-US")
        } extracted, ${s.failed} failed, ${s.shed} shed, ${s.overBudget} over budget` +
          (s.skipped > 0 ? `, ${s.skipped.toLocaleString("en-US")} skipped (extracted by an earlier run)` : "") +
          ` of ${s.documents.toLocaleString("en-US")} documents in ${s.wallSeconds.toFixed(1)} s`
      )
      yield* out(
        `${s.http429} × 429 and ${s.http529} × 529 received, ${s.retries} retries; ${
          s.inputTokens.toLocaleString("en-US")
        } input and ${s.outputTokens.toLocaleString("en-US")} output tokens, $${s.costUsd.toFixed(4)}`
      )
      yield* out(
        `per minute: ${Math.round(s.requestsPerMinute).toLocaleString("en-US")} requests, ${
          Math.round(s.inputTokensPerMinute).toLocaleString("en-US")
        } input and ` +
          `${Math.round(s.outputTokensPerMinute).toLocaleString("en-US")} output tokens`
      )
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

/**
 * The command. Ctrl-C stops taking documents, lets the calls in flight finish
 * and be recorded, prints the summary and how to resume; a second Ctrl-C
 * quits at once (what was recorded stays recorded).
 */
export const command = Command.make("extract", options, (flags) =>
  Effect.gen(function*() {
    const stop = yield* Deferred.make<void>()
    // With --json, stdout carries the one summary object: Sluice's log lines (a limit lowered by the provider's headers) go to stderr.
    const logs = flags.json
      ? Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.stringLogger))
      : Layer.empty
    const job = yield* Effect.forkDaemon(Effect.scoped(extract(flags, stop)).pipe(Effect.provide(logs)))
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
  })).pipe(Command.withDescription(
    "Extract title, summary, keywords, category and sentiment from every document with a tool-use call, into SQLite, under the provider's rate limits"
  ))

const run = Command.run(command, { name: "sluice-extract", version: "0.1.0" })

/**
 * The command line, ready for `process.argv`. A flag that does not parse is
 * reported by `@effect/cli` with the help; any other error is printed as one
 * `error: …` line on stderr, and the effect fails with it.
 */
export const cli = (argv: ReadonlyArray<string>) =>
  run(argv).pipe(
    Effect.tapError((error) =>
      ValidationError.isValidationError(error) ? Effect.void : Console.error(`error: ${error.message}`)
    )
  )
