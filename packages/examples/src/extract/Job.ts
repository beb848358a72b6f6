/**
 * The extraction job: every document of a source goes through one governed
 * tool-use call into SQLite, with bounded concurrency, exactly one outcome per
 * document, a checkpoint in the tables themselves, and a snapshot of progress
 * every second for a display and the report.
 *
 * It takes the raw provider (`LlmClient`) from context and puts Sluice on top:
 * a meter (which sees every attempt and every 429 the Governor absorbs), then
 * the Governor with an in-memory limiter holding the configured quota, the
 * calibrated token estimator, and, with a budget, the budget over the job's own
 * database (so a resumed job keeps counting what it spent).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import {
  Budget,
  CircuitBreaker,
  Governor,
  LimiterStore,
  LlmClient,
  Metrics,
  Pipeline,
  Pricing,
  Priority,
  type Quota,
  QuotaKeys,
  RateLimiter,
  TokenEstimator
} from "@sluice/core"
import * as BudgetSql from "@sluice/core/Budget/Sql"
import type { SluiceConfig } from "@sluice/providers"
import {
  Chunk,
  Clock,
  Data,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Metric,
  MetricState,
  Option,
  Ref,
  Stream
} from "effect"
import type { Source } from "./Documents.js"
import * as Extraction from "./Extraction.js"
import { layerCheckpoint, Store } from "./Store.js"
import { allowance, bottleneck, type Limits, type Sample, type Summary } from "./Summary.js"

/** What a run is told. */
export interface Config {
  readonly source: Source
  readonly model: string
  /** The quota Sluice assumes, per minute. */
  readonly limits: Limits
  /** How much faster than real time the provider's minute runs (the simulator's speed); 1 for a real provider. */
  readonly timeScale: number
  /** Documents in flight at once. */
  readonly concurrency: number
  /** At most this much spend for the job (over all its runs on the same database). */
  readonly budgetUsd?: number | undefined
  /** The job's name, for its budget. */
  readonly job: string
  /** Completes when the run should stop taking documents (Ctrl-C): calls in flight finish and are recorded. */
  readonly stop?: Effect.Effect<void> | undefined
  /** Called with every snapshot, for a display. */
  readonly onSnapshot?: ((snapshot: Pipeline.Snapshot) => Effect.Effect<void>) | undefined
  /** How often a snapshot is taken. Default 1 second. */
  readonly every?: Duration.DurationInput | undefined
  /**
   * A configuration file's stack (`--config`): its quotas (for keys other than
   * the job's, whose quota is `limits`), limiter options, Governor options
   * (retry, ladder), breaker and budget limits (beside `budgetUsd`).
   */
  readonly sluice?: SluiceConfig.SluiceConfig | undefined
}

/** What a run measured. */
export interface Result {
  readonly summary: Summary
  readonly samples: ReadonlyArray<Sample>
  /** Sentences for a person: utilisation, where the run stopped, how to resume. */
  readonly notes: ReadonlyArray<string>
  /** Of what the quota allowed over the run (a full bucket plus the refill), the share used. */
  readonly utilisation: { readonly requests: number; readonly inputTokens: number; readonly outputTokens: number }
}

/** A document rejected before any call. */
export class DocumentRejected
  extends Data.TaggedError("DocumentRejected")<{ readonly documentId: string; readonly reason: string }>
{
  override get message(): string {
    return this.reason
  }
}

/** A document the quota can never admit. */
export class DocumentTooLarge extends Data.TaggedError("DocumentTooLarge")<{
  readonly documentId: string
  readonly dimension: string
  readonly amount: number
  readonly perMinute: number
}> {
  override get message(): string {
    return `too large: it needs about ${this.amount.toLocaleString("en-US")} ${
      this.dimension === "inputTokens" ? "input tokens" : this.dimension
    }, ` +
      `more than the ${this.perMinute.toLocaleString("en-US")} a minute the quota can ever admit`
  }
}

/** The limiter's quota for the limits, its minute compressed by `timeScale`. */
export const quotaOf = (limits: Limits, timeScale: number) => {
  const per = 60_000 / timeScale
  return {
    requests: { limit: limits.requestsPerMinute, per },
    inputTokens: { limit: limits.inputTokensPerMinute, per },
    outputTokens: { limit: limits.outputTokensPerMinute, per }
  }
}

/** A quota with its periods compressed by `timeScale`. */
const scaled = (quota: Quota.QuotaInput, timeScale: number): Quota.QuotaInput =>
  Object.fromEntries(
    Object.entries(quota).map(([dimension, limit]) => [
      dimension,
      { ...limit, per: Duration.toMillis(Duration.decode(limit.per as Duration.DurationInput)) / timeScale }
    ])
  )

/**
 * Calls in flight that keep the quota busy: the requests a minute allows in
 * four seconds of provider latency (Little's law with room for slow answers),
 * between 4 and 256.
 */
export const defaultConcurrency = (limits: Limits, timeScale = 1): number =>
  Math.max(4, Math.min(256, Math.ceil((limits.requestsPerMinute * timeScale / 60) * 4)))

/** A snapshot as a report sample: its time in wall seconds and in quota minutes, and the counts so far. */
export const toSample = (snapshot: Pipeline.Snapshot, timeScale: number): Sample => ({
  atSeconds: snapshot.elapsedMillis / 1000,
  quotaMinutes: (snapshot.elapsedMillis / 60_000) * timeScale,
  requests: snapshot.progress.requests,
  inputTokens: snapshot.progress.inputTokens,
  outputTokens: snapshot.progress.outputTokens,
  queue: snapshot.queue,
  inFlight: snapshot.limiterInFlight,
  done: Pipeline.done(snapshot.progress),
  http429: snapshot.progress.rateLimited,
  http529: snapshot.progress.overloaded,
  retries: snapshot.progress.retries,
  costUsd: Pricing.toUsd(snapshot.progress.costMicros)
})

const percent = (x: number) => `${(100 * x).toFixed(0)} %`

/** The limiter's wait histograms of a key, every class summed into one (they share their boundaries). */
export const waitsOf = (key: string): Effect.Effect<MetricState.MetricState.Histogram> =>
  Effect.map(
    Effect.forEach(Priority.classes, (priority) =>
      Metric.value(Metrics.waitSeconds.pipe(Metric.tagged("key", key), Metric.tagged("class", priority)))),
    (states) =>
      MetricState.histogram({
        buckets: states[0]!.buckets.map(([upper], i) =>
          [
            upper,
            states.reduce((sum, state) =>
              sum + (state.buckets[i]?.[1] ?? 0), 0)
          ] as const
        ),
        count: states.reduce((sum, state) => sum + state.count, 0),
        min: Math.min(...states.map((state) => state.min)),
        max: Math.max(...states.map((state) => state.max)),
        sum: states.reduce((sum, state) => sum + state.sum, 0)
      })
  )

/** Runs the job over the provider in context, into the `Store`. */
export const run = (config: Config) =>
  Effect.gen(function*() {
    const provider = yield* LlmClient.LlmClient
    const store = yield* Store
    const sluice = config.sluice
    const prices = yield* Pricing.make({ ...Pricing.defaultTable, ...sluice?.budget?.prices }).pipe(Effect.orDie)
    const price = Either.getOrUndefined(Pricing.lookup(Pricing.defaultTable, config.model))
    const meter = yield* Pipeline.makeMeter(
      price === undefined ? {} : { price: (_model, usage) => Pricing.costMicros(price, usage) }
    )
    const key = `${provider.provider}/${config.model}`
    // Quotas under either spelling; a call on a key with no quota is logged once (QuotaKeys).
    const fileQuotas = Object.entries(sluice?.quotas ?? {}).map((
      [name, quota]
    ) => [name, scaled(quota, config.timeScale)])
    const limiter = yield* QuotaKeys.make({
      ...sluice?.limiter,
      quotas: { ...Object.fromEntries(fileQuotas), [key]: quotaOf(config.limits, config.timeScale) }
    }).pipe(
      Effect.provideServiceEffect(LimiterStore.LimiterStore, LimiterStore.makeMemory),
      Effect.orDie
    )
    const budgetLimits: ReadonlyArray<Budget.LimitInput> = [
      ...(config.budgetUsd === undefined ? [] : [{
        scope: { _tag: "job", id: config.job } as const,
        window: { rolling: "3650 days" },
        limitUsd: config.budgetUsd
      }]),
      ...(sluice?.budget?.limits ?? [])
    ]
    const budget = budgetLimits.length === 0
      ? Option.none<Budget.Budget["Type"]>()
      : Option.some(
        yield* Budget.make({
          limits: budgetLimits,
          ...(sluice?.budget?.reservationTtl === undefined ? {} : { reservationTtl: sluice.budget.reservationTtl })
        }).pipe(
          Effect.provideService(Pricing.Pricing, prices),
          Effect.provideServiceEffect(Budget.BudgetLedger, BudgetSql.make)
        )
      )
    const breaker = sluice?.breaker === undefined
      ? Option.none()
      : Option.some(yield* CircuitBreaker.make(sluice.breaker))
    const client = yield* Governor.make({ count: "estimate", ...sluice?.governor }).pipe(
      Effect.provideService(LlmClient.LlmClient, LlmClient.LlmClient.of(meter.wrap(provider))),
      Effect.provideService(RateLimiter.RateLimiter, limiter),
      Effect.provideServiceEffect(TokenEstimator.TokenEstimator, TokenEstimator.make()),
      Option.isSome(budget) ? Effect.provideService(Budget.Budget, budget.value) : (self) => self,
      Option.isSome(breaker) ? Effect.provideService(CircuitBreaker.CircuitBreaker, breaker.value) : (self) => self
    )

    const extract = (document: { readonly id: string; readonly text: string; readonly problem?: string | undefined }) =>
      Effect.gen(function*() {
        if (document.problem !== undefined) {
          return yield* new DocumentRejected({ documentId: document.id, reason: document.problem })
        }
        const response = yield* client.complete(Extraction.request(config.model, document, config.job)).pipe(
          Effect.catchTag("CostTooLarge", (error) =>
            new DocumentTooLarge({
              documentId: document.id,
              dimension: error.dimension,
              amount: error.amount,
              perMinute: error.dimension === "requests"
                ? config.limits.requestsPerMinute
                : error.dimension === "outputTokens"
                ? config.limits.outputTokensPerMinute
                : config.limits.inputTokensPerMinute
            }))
        )
        const extraction = yield* Extraction.decode(document.id, response)
        const costUsd = price === undefined ? 0 : Pricing.toUsd(Pricing.costMicros(price, response.usage))
        // A failed write is not the document's fault: it stops the job (the checkpoint keeps what was done).
        yield* Effect.orDie(store.saveExtraction({
          docId: document.id,
          extraction,
          model: response.model,
          inputTokens: response.usage.inputTokens + response.usage.cacheReadInputTokens +
            response.usage.cacheWriteInputTokens,
          outputTokens: response.usage.outputTokens,
          costUsd
        }))
      })

    const start = yield* Clock.currentTimeMillis
    // The registry is global: this run's waits are what the histogram gained from here on.
    const waitsBefore = yield* waitsOf(key)
    const samples = yield* Ref.make(Chunk.empty<Sample>())
    const finished = yield* Effect.makeLatch(false)
    const snapshots = Pipeline.monitor(meter.progress, {
      every: config.every ?? Duration.seconds(1),
      total: config.source.count,
      limits: {
        requests: config.limits.requestsPerMinute,
        inputTokens: config.limits.inputTokensPerMinute,
        outputTokens: config.limits.outputTokensPerMinute
      },
      limiter: { limiter, key }
    })
    const record = (snapshot: Pipeline.Snapshot) =>
      Effect.zipRight(
        Ref.update(samples, Chunk.append(toSample(snapshot, config.timeScale))),
        config.onSnapshot === undefined ? Effect.void : config.onSnapshot(snapshot)
      )
    const watching = yield* snapshots.pipe(Stream.interruptWhen(finished.await), Stream.runForEach(record), Effect.fork)

    const stopped = yield* Ref.make(false)
    const documents = config.stop === undefined
      ? config.source.documents
      : Stream.interruptWhen(config.source.documents, Effect.zipRight(config.stop, Ref.set(stopped, true)))
    yield* Pipeline.run(documents, extract, { concurrency: config.concurrency, meter }).pipe(
      Stream.runDrain,
      Effect.provide(layerCheckpoint.pipe(Layer.provide(Layer.succeed(Store, store))))
    )
    const wallMillis = (yield* Clock.currentTimeMillis) - start
    yield* finished.open
    yield* Fiber.join(watching)
    const progress = yield* Ref.get(meter.progress)
    // The last word: a sample at the end, so the report's lines reach the final counts.
    yield* Ref.update(samples, (all) => {
      const previous = Chunk.last(all)
      return Option.isNone(previous) ? all : Chunk.append(all, {
        ...previous.value,
        atSeconds: wallMillis / 1000,
        quotaMinutes: (wallMillis / 60_000) * config.timeScale,
        requests: progress.requests,
        inputTokens: progress.inputTokens,
        outputTokens: progress.outputTokens,
        done: Pipeline.done(progress),
        http429: progress.rateLimited,
        http529: progress.overloaded,
        retries: progress.retries,
        costUsd: Pricing.toUsd(progress.costMicros)
      })
    })
    const quotaMinutes = (wallMillis / 60_000) * config.timeScale
    const perMinute = (n: number) => quotaMinutes > 0 ? n / quotaMinutes : 0
    // What the quota allowed over the run: a full bucket at the start plus the refill since.
    const allowed = (limit: number) => allowance(limit, quotaMinutes)
    const utilisation = {
      requests: progress.requests / allowed(config.limits.requestsPerMinute),
      inputTokens: progress.inputTokens / allowed(config.limits.inputTokensPerMinute),
      outputTokens: progress.outputTokens / allowed(config.limits.outputTokensPerMinute)
    }
    const interrupted = (yield* Ref.get(stopped)) && Pipeline.done(progress) < config.source.count
    const waitP95Seconds = Metrics.quantile(yield* waitsOf(key), 0.95, waitsBefore)
    const bound = bottleneck({
      work: { requests: progress.requests, inputTokens: progress.inputTokens, outputTokens: progress.outputTokens },
      limits: config.limits,
      wallSeconds: wallMillis / 1000,
      timeScale: config.timeScale,
      waitP95Seconds,
      http429: progress.rateLimited,
      attempts: progress.attempts
    })
    const summary: Summary = {
      documents: config.source.count,
      succeeded: progress.succeeded,
      failed: progress.failed,
      shed: progress.shed,
      overBudget: progress.overBudget,
      skipped: progress.skipped,
      http429: progress.rateLimited,
      http529: progress.overloaded,
      retries: progress.retries,
      inputTokens: progress.inputTokens,
      outputTokens: progress.outputTokens,
      costUsd: Pricing.toUsd(progress.costMicros),
      wallSeconds: wallMillis / 1000,
      requestsPerMinute: perMinute(progress.requests),
      inputTokensPerMinute: perMinute(progress.inputTokens),
      outputTokensPerMinute: perMinute(progress.outputTokens),
      interrupted,
      ...(waitP95Seconds === undefined ? {} : { waitP95Seconds }),
      ...(bound === undefined ? {} : { bottleneck: bound.sentence })
    }
    const notes = [
      ...(bound === undefined ? [] : [bound.sentence]),
      `Of what the quota allowed over the run (a full minute's bucket at the start plus the refill since), the run used ` +
      `requests ${percent(utilisation.requests)}, input tokens ${percent(utilisation.inputTokens)}, output tokens ${
        percent(utilisation.outputTokens)
      }.`,
      ...(config.timeScale === 1
        ? []
        : [
          `The provider's minute lasted ${
            (60 / config.timeScale).toFixed(1)
          } s (simulator at ${config.timeScale}× speed); per-minute figures are per provider minute.`
        ]),
      ...(price === undefined ? [`No price is known for ${config.model}: costs are shown as 0.`] : []),
      ...(interrupted
        ? [
          `Stopped before the end: ${
            (config.source.count - Pipeline.done(progress)).toLocaleString("en-US")
          } documents were not started. Run the same command again to resume; extracted documents are skipped.`
        ]
        : [])
    ]
    return { summary, samples: Chunk.toReadonlyArray(yield* Ref.get(samples)), notes, utilisation } satisfies Result
  })

/** What `run` needs besides the provider: the database. */
export type Requirements = LlmClient.LlmClient | Store | SqlClient.SqlClient
