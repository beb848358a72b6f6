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
 *
 * With `Config.fleet` the same job runs as one worker of a fleet (many
 * processes, many machines): the documents come from the shared `WorkQueue`
 * (`Queue.ts`) instead of the source, each outcome is written by the worker
 * holding the document when its claim ends, the limiter and budget are shared
 * (Redis) or split (a static share of the quota, the budget in the queue's
 * database), and the worker records its progress for the fleet's status and
 * report (`Fleet.ts`).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
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
import * as BudgetRedis from "@sluice/core/Budget/Redis"
import * as BudgetSql from "@sluice/core/Budget/Sql"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import type { SluiceConfig } from "@sluice/providers"
import {
  Chunk,
  Clock,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Metric,
  MetricState,
  Option,
  Ref,
  type Scope,
  Stream,
  SubscriptionRef
} from "effect"
import * as Os from "node:os"
import type { Document, Source } from "./Documents.js"
import * as Extraction from "./Extraction.js"
import * as FleetView from "./Fleet.js"
import * as Queue from "./Queue.js"
import { type ExtractionRow, layerCheckpoint, Store } from "./Store.js"
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
  /**
   * Run as one worker of a fleet over a shared `WorkQueue` (PostgreSQL for
   * many machines, or SQLite for processes of one machine) instead of the
   * single-process `Store`. Absent: the single-process job.
   */
  readonly fleet?: Fleet | undefined
}

/**
 * One worker of a fleet. The worker loads `Config.source` into the queue (new
 * ids only; an empty source joins the work already loaded), then claims
 * `batch` documents at a time when its pipeline has room (so it holds about
 * `concurrency + batch` at most), renews its claims every `lease / 3`, writes
 * each outcome (an extraction, or a failure row with its reason) through
 * `WorkQueue.complete` in the transaction that ends its claim, and ends when
 * every document of the queue is done. When nothing is left to claim while
 * other workers hold leases, it looks again every `lease / 4` (at most every 2
 * seconds), so a dead worker's documents are taken over once its lease expires.
 * On a stop, an interruption or a failure, the documents it holds without an
 * outcome are given back at once (`release`).
 */
export interface Fleet {
  /** Unique id of this worker, e.g. `${os.hostname()}/${process.pid}`. */
  readonly worker: string
  /** How long a claim lasts without renewal. Default "2 minutes". */
  readonly lease?: Duration.DurationInput | undefined
  /** Documents claimed at once. Default: the concurrency (at least 1). */
  readonly batch?: number | undefined
  /**
   * Limiter store and budget ledger on Redis, shared by every worker of the
   * fleet: the quota and `budgetUsd` hold for the fleet as a whole. Without it,
   * the budget ledger is the queue's database (fleet-wide on PostgreSQL) and the
   * limiter is in memory with `quotaShare` of the quota.
   */
  readonly redis?: { readonly url: string; readonly prefix: string } | undefined
  /** Without `redis`: the static share of the quota this worker holds (1/N for N workers). Default 1. */
  readonly quotaShare?: number | undefined
  /** The host and process id recorded in the `workers` table (`Fleet.ts`). Default this machine's and process's. */
  readonly host?: string | undefined
  readonly pid?: number | undefined
}

/** What a run measured. */
export interface Result {
  readonly summary: Summary
  readonly samples: ReadonlyArray<Sample>
  /** Sentences for a person: utilisation, where the run stopped, how to resume. */
  readonly notes: ReadonlyArray<string>
  /** Of what the quota allowed over the run (a full bucket plus the refill), the share used. */
  readonly utilisation: { readonly requests: number; readonly inputTokens: number; readonly outputTokens: number }
  /**
   * In fleet mode: this worker's id, how many of its documents were finished
   * by another worker after its lease expired (it wrote nothing for them), and
   * how many it gave back unstarted at the end (a stop, an interruption).
   */
  readonly fleet?: { readonly worker: string; readonly notHeld: number; readonly released: number } | undefined
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

/** The provider and Sluice on top of it: what both modes of `run` share. */
interface Governed {
  readonly meter: Pipeline.Meter
  /** The limiter key of the job's calls (`provider/model`). */
  readonly key: string
  readonly limiter: RateLimiter.RateLimiter["Type"]
  readonly client: LlmClient.Client<LlmClient.CallError>
  readonly price: Pricing.ModelPrice | undefined
}

/** A quota's limits (and bursts) times `share`: a worker's static part of the quota. */
const shareOf = (quota: Quota.QuotaInput, share: number): Quota.QuotaInput =>
  share === 1 ? quota : Object.fromEntries(
    Object.entries(quota).map(([dimension, limit]) => [
      dimension,
      {
        ...limit,
        limit: limit.limit * share,
        ...(limit.burst === undefined ? {} : { burst: limit.burst * share })
      }
    ])
  )

/**
 * The meter, limiter, budget and Governor over the provider: the limiter on
 * `limiterStore` with `share` of every quota, the budget (when there is one)
 * on `ledger`.
 */
const govern = <E1, R1, E2, R2>(
  config: Config,
  provider: LlmClient.LlmClient["Type"],
  stores: {
    readonly limiterStore: Effect.Effect<LimiterStore.LimiterStore["Type"], E1, R1>
    readonly ledger: Effect.Effect<Budget.BudgetLedger["Type"], E2, R2>
    readonly share: number
  }
) =>
  Effect.gen(function*() {
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
    ) => [name, shareOf(scaled(quota, config.timeScale), stores.share)])
    const limiter = yield* QuotaKeys.make({
      ...sluice?.limiter,
      quotas: {
        ...Object.fromEntries(fileQuotas),
        [key]: shareOf(quotaOf(config.limits, config.timeScale), stores.share)
      }
    }).pipe(
      Effect.provideServiceEffect(LimiterStore.LimiterStore, stores.limiterStore),
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
          Effect.provideServiceEffect(Budget.BudgetLedger, stores.ledger)
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
    return { meter, key, limiter, client, price } satisfies Governed
  })

/** One document through the governed client: the row to store, or why there is none. */
const extractRow = (config: Config, governed: Governed) => (document: Document) =>
  Effect.gen(function*() {
    if (document.problem !== undefined) {
      return yield* new DocumentRejected({ documentId: document.id, reason: document.problem })
    }
    const response = yield* governed.client.complete(Extraction.request(config.model, document, config.job)).pipe(
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
    const price = governed.price
    const costUsd = price === undefined ? 0 : Pricing.toUsd(Pricing.costMicros(price, response.usage))
    return {
      docId: document.id,
      extraction,
      model: response.model,
      inputTokens: response.usage.inputTokens + response.usage.cacheReadInputTokens +
        response.usage.cacheWriteInputTokens,
      outputTokens: response.usage.outputTokens,
      costUsd
    } satisfies ExtractionRow
  })

/** Snapshots of the run every `config.every` into samples (and the display), until `end`. */
const observe = (
  config: Config,
  governed: Governed,
  total: number,
  also?: (snapshot: Pipeline.Snapshot) => Effect.Effect<void>
) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    // The registry is global: this run's waits are what the histogram gained from here on.
    const waitsBefore = yield* waitsOf(governed.key)
    const samples = yield* Ref.make(Chunk.empty<Sample>())
    const finished = yield* Effect.makeLatch(false)
    const snapshots = Pipeline.monitor(governed.meter.progress, {
      every: config.every ?? Duration.seconds(1),
      total,
      limits: {
        requests: config.limits.requestsPerMinute,
        inputTokens: config.limits.inputTokensPerMinute,
        outputTokens: config.limits.outputTokensPerMinute
      },
      limiter: { limiter: governed.limiter, key: governed.key }
    })
    const record = (snapshot: Pipeline.Snapshot) =>
      Effect.all([
        Ref.update(samples, Chunk.append(toSample(snapshot, config.timeScale))),
        config.onSnapshot === undefined ? Effect.void : config.onSnapshot(snapshot),
        also === undefined ? Effect.void : also(snapshot)
      ], { discard: true })
    const watching = yield* snapshots.pipe(Stream.interruptWhen(finished.await), Stream.runForEach(record), Effect.fork)
    /** Ends the snapshots; the run's wall time. */
    const end = Effect.gen(function*() {
      const wallMillis = (yield* Clock.currentTimeMillis) - start
      yield* finished.open
      yield* Fiber.join(watching)
      return wallMillis
    })
    return { start, waitsBefore, samples, end }
  })

/** The result of a run: the summary, the samples ending at the final counts, the notes. */
const conclude = (
  config: Config,
  governed: Governed,
  observed: { readonly waitsBefore: MetricState.MetricState.Histogram; readonly samples: Ref.Ref<Chunk.Chunk<Sample>> },
  run: {
    readonly wallMillis: number
    readonly documents: number
    readonly interrupted: boolean
    /** The sentence saying where the run stopped, when `interrupted`. */
    readonly stoppedNote: string
    readonly notes: ReadonlyArray<string>
  }
) =>
  Effect.gen(function*() {
    const { key, meter, price } = governed
    const { samples, waitsBefore } = observed
    const wallMillis = run.wallMillis
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
      documents: run.documents,
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
      interrupted: run.interrupted,
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
      ...run.notes,
      ...(run.interrupted ? [run.stoppedNote] : [])
    ]
    return { summary, samples: Chunk.toReadonlyArray(yield* Ref.get(samples)), notes, utilisation }
  })

/** The single-process job: the documents of `config.source`, the tables of the `Store` as checkpoint. */
const runLocal = (config: Config) =>
  Effect.gen(function*() {
    const provider = yield* LlmClient.LlmClient
    const store = yield* Store
    const governed = yield* govern(config, provider, {
      limiterStore: LimiterStore.makeMemory,
      ledger: BudgetSql.make,
      share: 1
    })
    const toRow = extractRow(config, governed)
    // A failed write is not the document's fault: it stops the job (the checkpoint keeps what was done).
    const extract = (document: Document) =>
      Effect.flatMap(toRow(document), (row) => Effect.orDie(store.saveExtraction(row)))

    const observed = yield* observe(config, governed, config.source.count)
    const stopped = yield* Ref.make(false)
    const documents = config.stop === undefined
      ? config.source.documents
      : Stream.interruptWhen(config.source.documents, Effect.zipRight(config.stop, Ref.set(stopped, true)))
    yield* Pipeline.run(documents, extract, { concurrency: config.concurrency, meter: governed.meter }).pipe(
      Stream.runDrain,
      Effect.provide(layerCheckpoint.pipe(Layer.provide(Layer.succeed(Store, store))))
    )
    const wallMillis = yield* observed.end
    const progress = yield* Ref.get(governed.meter.progress)
    const result: Result = yield* conclude(config, governed, observed, {
      wallMillis,
      documents: config.source.count,
      interrupted: (yield* Ref.get(stopped)) && Pipeline.done(progress) < config.source.count,
      stoppedNote: `Stopped before the end: ${
        (config.source.count - Pipeline.done(progress)).toLocaleString("en-US")
      } documents were not started. Run the same command again to resume; extracted documents are skipped.`,
      notes: []
    })
    return result
  })

/** The counter a recorded outcome adds to in `Pipeline.Progress`. */
const counterOf = {
  Succeeded: "succeeded",
  Failed: "failed",
  Shed: "shed",
  OverBudget: "overBudget"
} as const satisfies Record<Pipeline.Recorded["_tag"], keyof Pipeline.Progress>

/** A document the heartbeat found taken over before this worker started it: it is not sent. */
class LeaseLost extends Data.TaggedError("LeaseLost")<{ readonly documentId: string }> {
  override get message(): string {
    return `the lease on ${this.documentId} expired and another worker took it over`
  }
}

/** A claimed document reached the pipeline after a stop: it is given back, not sent. */
class Unstarted extends Data.TaggedError("Unstarted")<{ readonly documentId: string }> {}

const checkpointError = (operation: string) => (cause: unknown) => new Pipeline.CheckpointError({ operation, cause })

/**
 * One worker of a fleet: the documents come from the shared `WorkQueue`, a
 * batch at a time, and each outcome is written through `complete` by the
 * worker holding the document.
 */
const runFleet = (config: Config, fleet: Fleet) =>
  Effect.scoped(Effect.gen(function*() {
    const provider = yield* LlmClient.LlmClient
    const queue = yield* Queue.WorkQueue
    const sql = yield* SqlClient.SqlClient
    const worker = fleet.worker
    const lease = Duration.decode(fleet.lease ?? defaultLease)
    const leaseMillis = Duration.toMillis(lease)
    const concurrency = Math.max(1, Math.floor(config.concurrency))
    const batch = Math.max(1, Math.floor(fleet.batch ?? concurrency))
    const redis = fleet.redis
    const governed = redis === undefined
      ? yield* govern(config, provider, {
        limiterStore: LimiterStore.makeMemory,
        ledger: BudgetSql.make,
        share: fleet.quotaShare ?? 1
      })
      : yield* govern(config, provider, {
        limiterStore: RedisStore.make({ url: redis.url, prefix: redis.prefix }),
        ledger: BudgetRedis.make({ url: redis.url, prefix: redis.prefix }),
        share: 1
      })
    const toRow = extractRow(config, governed)
    const meter = governed.meter

    // The source's documents join the queue (new ids only); an empty source joins the work already loaded.
    yield* Queue.loadAll(config.source.documents)
    const total = (yield* queue.counts).documents

    /** Claimed and without an outcome written by this worker (dropped when the heartbeat finds one taken over). */
    const held = new Set<string>()
    // A claim takes `batch` permits and gives back what it did not get; an outcome gives back one.
    // So a claim waits until no more than `concurrency` documents are held.
    const permits = yield* Effect.makeSemaphore(concurrency + batch)
    // Completed when `held` empties, so a worker waiting for the fleet looks again at once.
    let emptied = yield* Deferred.make<void>()
    const notHeld = yield* Ref.make(0)
    const released = yield* Ref.make(0)
    const poll = Duration.millis(Math.max(1, Math.min(leaseMillis / 4, 2_000)))

    const drop = (id: string) =>
      Effect.suspend(() => {
        if (!held.delete(id) || held.size > 0) return Effect.void
        const signal = emptied
        return Effect.flatMap(Deferred.make<void>(), (next) => {
          emptied = next
          return Deferred.succeed(signal, undefined)
        })
      })

    /** The next batch of claimed documents; none when every document of the queue is done. */
    const next: Effect.Effect<Chunk.Chunk<Queue.Claimed>, Option.Option<SqlError | Queue.InvalidClaim>> = Effect.gen(
      function*() {
        while (true) {
          yield* permits.take(batch)
          // A document this worker still has in its pipeline comes back only if its lease expired unrenewed
          // (the database was out of reach): it is not started a second time.
          const claimed = yield* Effect.uninterruptible(Effect.map(queue.claim(worker, batch, lease), (documents) =>
            documents.filter((document) => {
              if (held.has(document.id)) return false
              held.add(document.id)
              return true
            })))
          yield* permits.release(batch - claimed.length)
          if (claimed.length > 0) {
            return Chunk.unsafeFromArray(claimed)
          }
          const counts = yield* queue.counts
          if (counts.done >= counts.documents) {
            return yield* Effect.fail(Option.none())
          }
          // Others (or this worker) still hold documents: look again when a lease may have expired.
          yield* held.size === 0
            ? Effect.sleep(poll)
            : Effect.race(Effect.sleep(poll), Deferred.await(emptied))
        }
      }
    ).pipe(Effect.mapError((error) =>
      Option.isOption(error) ? error : Option.some(error)
    ))

    const heartbeat = Effect.gen(function*() {
      const ids = [...held]
      if (ids.length === 0) return
      const renewed = new Set(yield* queue.renew(worker, ids, lease))
      for (const id of ids) if (!renewed.has(id)) yield* drop(id)
    }).pipe(
      Effect.catchAll((error) => Effect.logWarning(`worker ${worker}: could not renew its leases`, error))
    )
    yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(Effect.sleep(Duration.millis(Math.max(1, leaseMillis / 3))), heartbeat))
    )

    // After a stop, calls in flight finish; documents claimed and not yet started go back.
    let stopping = false
    const extract = (document: Queue.Claimed) =>
      Effect.gen(function*() {
        if (stopping) return yield* new Unstarted({ documentId: document.id })
        if (!held.has(document.id)) return yield* new LeaseLost({ documentId: document.id })
        return yield* toRow(document)
      })

    const checkpoint = Pipeline.Checkpoint.of({
      succeeded: () => Effect.succeed(false),
      record: (outcome) =>
        Effect.gen(function*() {
          if (outcome._tag === "Failed" && outcome.error instanceof Unstarted) {
            // Not an outcome: the document stays held, to be given back; the pipeline's count of it is taken back.
            yield* permits.release(1)
            return yield* SubscriptionRef.update(meter.progress, (p) => ({
              ...p,
              started: p.started - 1,
              failed: p.failed - 1
            }))
          }
          const written: Queue.Outcome = outcome._tag === "Succeeded"
            ? { _tag: "Extracted", row: outcome.value as ExtractionRow }
            : {
              _tag: "Failed",
              row: {
                docId: outcome.id,
                outcome: Pipeline.statusOf[outcome._tag],
                reason: outcome.reason,
                attempts: outcome._tag === "Failed" ? outcome.attempts : 0
              }
            }
          // A document taken over before it started is not completed at all (not even as a failure):
          // were it claimed by this worker again meanwhile, its failure row would be a lie.
          const completion: Queue.Completion = outcome._tag === "Failed" && outcome.error instanceof LeaseLost
            ? { _tag: "NotHeld", heldBy: null, done: false }
            : yield* Effect.mapError(queue.complete(worker, outcome.id, written), checkpointError("record"))
          yield* drop(outcome.id)
          yield* permits.release(1)
          if (completion._tag === "NotHeld") {
            // Not this worker's outcome: the pipeline's count of it is taken back here.
            const counter = counterOf[outcome._tag]
            yield* Ref.update(notHeld, (n) => n + 1)
            yield* SubscriptionRef.update(meter.progress, (p) => ({ ...p, [counter]: p[counter] - 1 }))
          }
        })
    })

    // The worker's progress in the database, for the fleet's status and report: at most once a second, and at the end.
    yield* FleetView.createTables
    const startedAt = yield* Clock.currentTimeMillis
    let lastRecorded = Number.NEGATIVE_INFINITY
    const progressEntry = (progress: Pipeline.Progress, at: number, notHeldCount: number) => ({
      worker,
      host: fleet.host ?? Os.hostname(),
      pid: fleet.pid ?? process.pid,
      startedAt,
      at,
      timeScale: config.timeScale,
      counters: {
        requests: progress.requests,
        inputTokens: progress.inputTokens,
        outputTokens: progress.outputTokens,
        http429: progress.rateLimited,
        http529: progress.overloaded,
        retries: progress.retries,
        succeeded: progress.succeeded,
        failed: progress.failed,
        shed: progress.shed,
        overBudget: progress.overBudget,
        notHeld: notHeldCount,
        costUsd: Pricing.toUsd(progress.costMicros)
      }
    })
    const recordSnapshot = (snapshot: Pipeline.Snapshot) =>
      Effect.gen(function*() {
        const at = yield* Clock.currentTimeMillis
        if (at - lastRecorded < 1_000) return
        lastRecorded = at
        yield* FleetView.record({
          ...progressEntry(snapshot.progress, at, yield* Ref.get(notHeld)),
          queue: snapshot.queue,
          inFlight: snapshot.limiterInFlight
        })
      }).pipe(
        Effect.catchAll((error) => Effect.logWarning(`worker ${worker}: could not record its progress`, error)),
        Effect.provideService(SqlClient.SqlClient, sql)
      )

    const observed = yield* observe(config, governed, total, recordSnapshot)
    const stopped = yield* Ref.make(false)
    const claimed = Stream.repeatEffectChunkOption(next)
    const documents = config.stop === undefined
      ? claimed
      : Stream.interruptWhen(
        claimed,
        Effect.zipRight(
          config.stop,
          Effect.zipRight(Effect.sync(() => stopping = true), Ref.set(stopped, true))
        )
      )
    // Whatever ends the run (the end, a stop, an interruption, a failure), documents held without an outcome go back.
    const giveBack = Effect.suspend(() => {
      const ids = [...held]
      return Effect.zipRight(queue.release(worker, ids), Ref.update(released, (n) => n + ids.length))
    }).pipe(Effect.catchAll((error) => Effect.logWarning(`worker ${worker}: could not give back its documents`, error)))
    yield* Pipeline.run(documents, extract, { concurrency, meter }).pipe(
      Stream.runDrain,
      Effect.provideService(Pipeline.Checkpoint, checkpoint),
      Effect.ensuring(giveBack)
    )
    const wallMillis = yield* observed.end
    const counts = yield* queue.counts
    const notHeldCount = yield* Ref.get(notHeld)
    yield* FleetView.record({
      ...progressEntry(yield* Ref.get(meter.progress), yield* Clock.currentTimeMillis, notHeldCount),
      queue: { interactive: 0, normal: 0, batch: 0 },
      inFlight: 0,
      finished: true
    }).pipe(Effect.catchAll((error) => Effect.logWarning(`worker ${worker}: could not record its end`, error)))
    const releasedCount = yield* Ref.get(released)
    const result: Result = {
      ...(yield* conclude(config, governed, observed, {
        wallMillis,
        documents: counts.documents,
        interrupted: (yield* Ref.get(stopped)) && counts.done < counts.documents,
        stoppedNote:
          `Stopped before the end: ${
            (counts.documents - counts.done).toLocaleString("en-US")
          } of the fleet's documents have no outcome yet` +
          (releasedCount > 0 ? `; this worker gave back the ${releasedCount} it held and had not started` : "") +
          `. Start a worker again (the same command) to resume; done documents are not claimed again.`,
        notes: [
          `These are worker ${worker}'s figures (its documents, its calls, against the fleet's whole quota); ` +
          `the fleet's are in the status and report of the database.`,
          ...(notHeldCount === 0 ? [] : [
            `${
              notHeldCount.toLocaleString("en-US")
            } documents finished by another worker after this one's lease expired: ` +
            `this worker wrote nothing for them.`
          ])
        ]
      })),
      fleet: { worker, notHeld: notHeldCount, released: releasedCount }
    }
    return result
  }))

/** How long a fleet worker's claim lasts without renewal when `Fleet.lease` is not given. */
export const defaultLease: Duration.DurationInput = "2 minutes"

/** What `run` can fail with (a database that cannot be read or written, an unreadable input, …). */
export type RunError =
  | Effect.Effect.Error<ReturnType<typeof runLocal>>
  | Effect.Effect.Error<ReturnType<typeof runFleet>>

/**
 * Runs the job over the provider in context. Without `config.fleet`, over the
 * documents of `config.source` into the `Store` (one process). With it, as one
 * worker of a fleet: `config.source` is loaded into the shared `WorkQueue` (new
 * ids only), then the worker claims, extracts and completes documents until
 * every document of the queue is done (see {@link Fleet}).
 */
export function run(config: Config & { readonly fleet: Fleet }): Effect.Effect<Result, RunError, FleetRequirements>
export function run(
  config: Config & { readonly fleet?: undefined }
): Effect.Effect<Result, RunError, Requirements | Scope.Scope>
export function run(
  config: Config
): Effect.Effect<Result, RunError, Requirements | FleetRequirements | Scope.Scope>
export function run(
  config: Config
): Effect.Effect<Result, RunError, Requirements | FleetRequirements | Scope.Scope> {
  return config.fleet === undefined ? runLocal(config) : runFleet(config, config.fleet)
}

/** What `run` needs besides the provider: the database (and a `Scope` for its limiter). */
export type Requirements = LlmClient.LlmClient | Store | SqlClient.SqlClient

/** What `run` needs in fleet mode: the provider, the shared queue and its database (for the budget ledger). */
export type FleetRequirements = LlmClient.LlmClient | Queue.WorkQueue | SqlClient.SqlClient
