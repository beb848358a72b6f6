/**
 * Pipelines over a `Stream` of documents: one governed call per document with
 * bounded concurrency, exactly one outcome per document (succeeded, failed with
 * its reason, shed, over budget, or skipped because a checkpoint says it is
 * done), nothing dropped, and a progress `SubscriptionRef` for any front end.
 *
 * The input is consumed as a stream, so memory stays bounded for any number
 * of documents. A `Checkpoint` (in memory here, SQL in `Pipeline/Sql`) records
 * each outcome; a rerun over the same checkpoint skips what succeeded and
 * retries what did not.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { LlmClient, Pipeline } from "@sluice/core"
 *
 * const documents = Stream.make({ id: "a", text: "First document" }, { id: "b", text: "Second document" })
 * const outcomes = Pipeline.run(
 *   documents,
 *   (doc) =>
 *     Effect.flatMap(LlmClient.LlmClient, (client) =>
 *       client.complete({ model: "claude-haiku-4-5", messages: [{ role: "user", content: doc.text }], maxOutputTokens: 256 })),
 *   { concurrency: 32 }
 * ).pipe(Stream.runCollect, Effect.provide(Pipeline.layerCheckpointMemory))
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { withSpan } from "./internal/tracing.js"
import { mapUnordered } from "./internal/workerPool.js"
import type * as LlmClient from "./LlmClient.js"
import type * as Priority from "./Priority.js"
import type * as RateLimiter from "./RateLimiter.js"

/**
 * Anything with an id.
 *
 * @since 0.1.0
 * @category models
 */
export interface Document {
  readonly id: string
}

/**
 * What happened to one document.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome<A> =
  | { readonly _tag: "Succeeded"; readonly id: string; readonly value: A }
  | {
    readonly _tag: "Failed"
    readonly id: string
    readonly reason: string
    readonly error: unknown
    readonly attempts: number
  }
  | { readonly _tag: "Shed"; readonly id: string; readonly reason: string }
  | { readonly _tag: "OverBudget"; readonly id: string; readonly reason: string }
  | { readonly _tag: "Skipped"; readonly id: string }

/**
 * An outcome a checkpoint records: every one but `Skipped`.
 *
 * @since 0.1.0
 * @category models
 */
export type Recorded = Exclude<Outcome<unknown>, { readonly _tag: "Skipped" }>

/**
 * How a checkpoint names an outcome.
 *
 * @since 0.1.0
 * @category utilities
 */
export const statusOf = {
  Succeeded: "succeeded",
  Failed: "failed",
  Shed: "shed",
  OverBudget: "over-budget"
} as const satisfies Record<Recorded["_tag"], string>

/**
 * Counts so far: documents by outcome, and (when a {@link Meter} watches the
 * provider) the calls under them: every attempt, the 429s and 529s, retries,
 * tokens and cost as the provider reported them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Progress {
  readonly started: number
  readonly succeeded: number
  readonly failed: number
  readonly shed: number
  readonly overBudget: number
  readonly skipped: number
  readonly inFlight: number
  /** Calls sent to the provider, retries included. */
  readonly attempts: number
  /** Calls the provider answered (and so charged against the request quota). */
  readonly requests: number
  /** Attempts after a document's first. */
  readonly retries: number
  /** 429 answers. */
  readonly rateLimited: number
  /** 529 answers. */
  readonly overloaded: number
  readonly inputTokens: number
  readonly outputTokens: number
  /** Cost in micro-dollars, when the meter has prices. */
  readonly costMicros: number
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const emptyProgress: Progress = {
  started: 0,
  succeeded: 0,
  failed: 0,
  shed: 0,
  overBudget: 0,
  skipped: 0,
  inFlight: 0,
  attempts: 0,
  requests: 0,
  retries: 0,
  rateLimited: 0,
  overloaded: 0,
  inputTokens: 0,
  outputTokens: 0,
  costMicros: 0
}

/**
 * Documents with an outcome (skipped ones included).
 *
 * @since 0.1.0
 * @category utilities
 */
export const done = (progress: Progress): number =>
  progress.succeeded + progress.failed + progress.shed + progress.overBudget + progress.skipped

// ---------------------------------------------------------------------------
// Counting into a progress ref
// ---------------------------------------------------------------------------

/** What a count adds to each field of `Progress` (every field is a sum; `inFlight` goes down too). */
type Delta = { -readonly [K in keyof Progress]?: number }

/** The counts not yet in a progress ref, and whether a fiber is about to put them there. */
interface Tally {
  pending: Delta | undefined
  scheduled: boolean
}

/** One tally per progress ref: the meter and the pipeline counting into the same ref share it. */
const tallies = new WeakMap<SubscriptionRef.SubscriptionRef<Progress>, Tally>()

const tallyOf = (progress: SubscriptionRef.SubscriptionRef<Progress>): Tally => {
  let tally = tallies.get(progress)
  if (tally === undefined) {
    tally = { pending: undefined, scheduled: false }
    tallies.set(progress, tally)
  }
  return tally
}

const applyDelta = (progress: Progress, delta: Delta): Progress => {
  const next: { -readonly [K in keyof Progress]: number } = { ...progress }
  for (const field in delta) next[field as keyof Progress] += delta[field as keyof Progress]!
  return next
}

/** Puts every pending count of `progress` in it, in one update; nothing when none is pending. */
const flush = (progress: SubscriptionRef.SubscriptionRef<Progress>): Effect.Effect<void> =>
  Effect.suspend(() => {
    const tally = tallyOf(progress)
    tally.scheduled = false
    const delta = tally.pending
    if (delta === undefined) return Effect.void
    tally.pending = undefined
    return SubscriptionRef.update(progress, (p) => applyDelta(p, delta))
  })

/**
 * Adds `delta` to `progress`. A `SubscriptionRef.update` is about 40 fiber
 * steps (a semaphore, a publish to its subscribers), and a pipeline of many
 * short documents made three per document: the counts of every fiber that
 * counts during one turn of the scheduler go in with one update instead. The
 * first of them yields once and then puts them all in (uninterruptibly, so
 * none is lost); the others only add theirs. Counts are additive, so updates
 * of the ref made elsewhere (`SubscriptionRef.update`) compose with these in
 * any order. A fiber that counts alone finds its count in the ref when its
 * count returns; {@link run} puts in what is pending before each outcome it
 * emits, and every count is in when its stream ends.
 */
const count = (progress: SubscriptionRef.SubscriptionRef<Progress>, delta: Delta): Effect.Effect<void> =>
  Effect.suspend(() => {
    const tally = tallyOf(progress)
    const pending = tally.pending
    if (pending === undefined) tally.pending = { ...delta }
    else {for (const field in delta) {
        pending[field as keyof Progress] = (pending[field as keyof Progress] ?? 0) + delta[field as keyof Progress]!
      }}
    if (tally.scheduled) return Effect.void
    tally.scheduled = true
    return Effect.uninterruptible(Effect.zipRight(Effect.yieldNow(), flush(progress)))
  })

// ---------------------------------------------------------------------------
// Meter: what the provider saw, per document
// ---------------------------------------------------------------------------

/**
 * Watches the calls a pipeline makes to its provider. Put its `wrap` between
 * the provider and the Governor, so that it sees every attempt (a retry is a
 * second attempt) and every 429 the Governor absorbs; a request whose
 * `metadata.documentId` names a document is counted against that document.
 *
 * @since 0.1.0
 * @category models
 */
export interface Meter {
  readonly progress: SubscriptionRef.SubscriptionRef<Progress>
  /** The same client, counting each call into `progress`. */
  readonly wrap: <E>(client: LlmClient.Client<E>) => LlmClient.Client<E>
  /** The attempts made for a document so far; forgets the document. */
  readonly takeAttempts: (documentId: string) => Effect.Effect<number>
}

/**
 * Options of a meter.
 *
 * @since 0.1.0
 * @category models
 */
export interface MeterOptions {
  /** The cost of a call's usage in micro-dollars (see `Pricing.costMicros`); unpriced when absent. */
  readonly price?: ((model: string, usage: LlmClient.Usage) => number) | undefined
  /** Where to count; a new ref when absent. */
  readonly progress?: SubscriptionRef.SubscriptionRef<Progress> | undefined
}

const tagOf = (error: unknown): string | undefined =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined

/**
 * Builds a meter.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMeter = (options: MeterOptions = {}): Effect.Effect<Meter> =>
  Effect.gen(function*() {
    const progress = options.progress ?? (yield* SubscriptionRef.make(emptyProgress))
    // Attempts of the documents in flight; a document leaves when its outcome is taken.
    const attempts = new Map<string, number>()
    const countCall = (
      request: LlmClient.Request,
      answer: { readonly response?: LlmClient.Response; readonly error?: unknown }
    ) =>
      Effect.suspend(() => {
        const id = request.metadata?.documentId
        if (id !== undefined) attempts.set(id, (attempts.get(id) ?? 0) + 1)
        const usage = answer.response?.usage
        const tag = tagOf(answer.error)
        const cost = usage === undefined || options.price === undefined
          ? 0
          : options.price(answer.response?.model ?? request.model, usage)
        return count(progress, {
          attempts: 1,
          requests: usage === undefined ? 0 : 1,
          rateLimited: tag === "RateLimited" ? 1 : 0,
          overloaded: tag === "Overloaded" ? 1 : 0,
          inputTokens: usage === undefined
            ? 0
            : usage.inputTokens + usage.cacheReadInputTokens + usage.cacheWriteInputTokens,
          outputTokens: usage?.outputTokens ?? 0,
          costMicros: cost
        })
      })
    const wrap = <E>(client: LlmClient.Client<E>): LlmClient.Client<E> => ({
      ...client,
      complete: (request) =>
        client.complete(request).pipe(
          Effect.tap((response) => countCall(request, { response })),
          Effect.tapError((error) => countCall(request, { error }))
        ),
      stream: (request) =>
        client.stream(request).pipe(
          Stream.tap((event) => event._tag === "Done" ? countCall(request, { response: event.response }) : Effect.void),
          Stream.tapError((error) => countCall(request, { error }))
        )
    })
    const takeAttempts = (documentId: string) =>
      Effect.sync(() => {
        const n = attempts.get(documentId) ?? 0
        attempts.delete(documentId)
        return n
      })
    return { progress, wrap, takeAttempts }
  })

/**
 * The checkpoint could not be read or written.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointError
  extends Data.TaggedError("CheckpointError")<{ readonly operation: string; readonly cause: unknown }>
{
  override get message(): string {
    return `Checkpoint failed to ${this.operation}: ${String(this.cause)}`
  }
}

/**
 * Where outcomes are recorded, so that a rerun resumes.
 *
 * @since 0.1.0
 * @category errors
 */
export class Checkpoint extends Context.Tag("@sluice/core/Pipeline/Checkpoint")<Checkpoint, {
  /** Whether the document succeeded in an earlier run. */
  readonly succeeded: (id: string) => Effect.Effect<boolean, CheckpointError>
  /** Records an outcome (replacing an earlier one of the same document). */
  readonly record: (outcome: Recorded) => Effect.Effect<void, CheckpointError>
}>() {}

/**
 * A checkpoint in memory: one run of one process. It keeps one entry per document.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerCheckpointMemory: Layer.Layer<Checkpoint> = Layer.sync(Checkpoint, () => {
  const statuses = new Map<string, string>()
  return Checkpoint.of({
    succeeded: (id) => Effect.sync(() => statuses.get(id) === "succeeded"),
    record: (outcome) => Effect.sync(() => void statuses.set(outcome.id, statusOf[outcome._tag]))
  })
})

/**
 * No checkpoint: nothing is skipped and nothing kept (a run that need not resume, over any number of documents).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerCheckpointNone: Layer.Layer<Checkpoint> = Layer.succeed(
  Checkpoint,
  Checkpoint.of({ succeeded: () => Effect.succeed(false), record: () => Effect.void })
)

/**
 * Options of a run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Documents in flight at once. Default 16. */
  readonly concurrency?: number | undefined
  /** Where the counts go, for a progress display. The meter's, when a meter is given. */
  readonly progress?: SubscriptionRef.SubscriptionRef<Progress> | undefined
  /** The meter watching the provider: failed outcomes then carry their attempts, and retries are counted. */
  readonly meter?: Meter | undefined
}

const reasonOf = (error: unknown): string =>
  Predicate.hasProperty(error, "message") && typeof error.message === "string" && error.message !== ""
    ? error.message
    : String(error)

/**
 * The outcome of a failure: `Shed` and `BudgetExceeded` have outcomes of their own.
 *
 * @since 0.1.0
 * @category utilities
 */
export const classify = (id: string, error: unknown, attempts = 0): Outcome<never> => {
  switch (tagOf(error)) {
    case "Shed":
      return { _tag: "Shed", id, reason: reasonOf(error) }
    case "BudgetExceeded":
      return { _tag: "OverBudget", id, reason: reasonOf(error) }
    default:
      return { _tag: "Failed", id, reason: reasonOf(error), error, attempts }
  }
}

/**
 * Runs `process` once per document, `concurrency` at a time, and emits every
 * document's outcome (in completion order). A failure of `process` is an
 * outcome, not a failure of the stream; a failure to read the checkpoint is.
 *
 * @since 0.1.0
 * @category utilities
 */
export const run = <D extends Document, A, E, R, E2, R2>(
  documents: Stream.Stream<D, E2, R2>,
  process: (document: D) => Effect.Effect<A, E, R>,
  options: Options = {}
): Stream.Stream<Outcome<A>, E2 | CheckpointError, R | R2 | Checkpoint> =>
  Stream.unwrap(Effect.gen(function*() {
    const checkpoint = yield* Checkpoint
    const meter = options.meter
    const progress = options.progress ?? meter?.progress
    const counted = (delta: Delta) => progress === undefined ? Effect.void : count(progress, delta)
    const one = (document: D): Effect.Effect<Outcome<A>, CheckpointError, R> =>
      withSpan(
        Effect.gen(function*() {
          if (yield* checkpoint.succeeded(document.id)) {
            yield* counted({ skipped: 1 })
            return { _tag: "Skipped", id: document.id } as const
          }
          yield* counted({ started: 1, inFlight: 1 })
          const result = yield* Effect.either(process(document))
          const attempts = meter === undefined ? 0 : yield* meter.takeAttempts(document.id)
          const outcome: Outcome<A> = result._tag === "Right"
            ? { _tag: "Succeeded", id: document.id, value: result.right }
            : classify(document.id, result.left, attempts)
          yield* checkpoint.record(outcome as Recorded)
          yield* counted({
            inFlight: -1,
            retries: Math.max(0, attempts - 1),
            succeeded: outcome._tag === "Succeeded" ? 1 : 0,
            failed: outcome._tag === "Failed" ? 1 : 0,
            shed: outcome._tag === "Shed" ? 1 : 0,
            overBudget: outcome._tag === "OverBudget" ? 1 : 0
          })
          return outcome
        }),
        "Pipeline.document",
        { attributes: { id: document.id }, captureStackTrace: false }
      )
    const outcomes = mapUnordered(documents, one, Math.max(1, options.concurrency ?? 16))
    // Whoever reads an outcome finds it in the progress: what is pending goes in before a chunk is emitted.
    return progress === undefined
      ? outcomes
      : Stream.mapChunksEffect(outcomes, (chunk) => Effect.as(flush(progress), chunk))
  }))

// ---------------------------------------------------------------------------
// Monitor: a progress stream for front ends
// ---------------------------------------------------------------------------

/**
 * Per-minute limits to show rates against.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  readonly requests?: number | undefined
  readonly inputTokens?: number | undefined
  readonly outputTokens?: number | undefined
}

/**
 * Rates per minute.
 *
 * @since 0.1.0
 * @category models
 */
export interface Rates {
  readonly requests: number
  readonly inputTokens: number
  readonly outputTokens: number
}

/**
 * What a progress display shows at one instant.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  /** Milliseconds since the monitor started. */
  readonly elapsedMillis: number
  /** Documents in the run, when known. */
  readonly total: number | undefined
  readonly progress: Progress
  /** Provider-counted rates over the last `window`, per minute. */
  readonly perMinute: Rates
  readonly limits: Limits
  /** Calls waiting in the limiter by class (zeros without a limiter). */
  readonly queue: { readonly [C in Priority.Class]: number }
  /** Calls holding a permit. */
  readonly limiterInFlight: number
}

/**
 * Options of {@link monitor}.
 *
 * @since 0.1.0
 * @category models
 */
export interface MonitorOptions {
  /** How often a snapshot is taken. Default 1 second. */
  readonly every?: Duration.DurationInput | undefined
  /** The window rates are measured over. Default 10 seconds. */
  readonly window?: Duration.DurationInput | undefined
  readonly total?: number | undefined
  readonly limits?: Limits | undefined
  /** The limiter and key whose queue to show. */
  readonly limiter?: { readonly limiter: RateLimiter.RateLimiter["Type"]; readonly key: string } | undefined
}

interface Point {
  readonly at: number
  readonly requests: number
  readonly inputTokens: number
  readonly outputTokens: number
}

/**
 * Rates per minute between the oldest point of `history` and `now` (pure).
 * `history` is ordered by time; an empty or instantaneous history gives zeros.
 *
 * @since 0.1.0
 * @category utilities
 */
export const ratesPerMinute = (history: ReadonlyArray<Point>, now: Point): Rates => {
  const first = history[0]
  if (first === undefined || now.at <= first.at) return { requests: 0, inputTokens: 0, outputTokens: 0 }
  const scale = 60_000 / (now.at - first.at)
  return {
    requests: (now.requests - first.requests) * scale,
    inputTokens: (now.inputTokens - first.inputTokens) * scale,
    outputTokens: (now.outputTokens - first.outputTokens) * scale
  }
}

/**
 * A snapshot of the run every `every` (the first at once): counts, rates per
 * minute over the last `window` against the limits, and the limiter's queue by
 * class. It never ends; take it until the run does (`Stream.interruptWhen`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const monitor = (
  progress: SubscriptionRef.SubscriptionRef<Progress>,
  options: MonitorOptions = {}
): Stream.Stream<Snapshot> =>
  Stream.unwrap(Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const window = Duration.toMillis(Duration.decode(options.window ?? Duration.seconds(10)))
    let history: Array<Point> = [{ at: 0, requests: 0, inputTokens: 0, outputTokens: 0 }]
    const limiter = options.limiter
    const tick = Effect.gen(function*() {
      const elapsedMillis = (yield* Clock.currentTimeMillis) - start
      const current = yield* SubscriptionRef.get(progress)
      const point: Point = {
        at: elapsedMillis,
        requests: current.requests,
        inputTokens: current.inputTokens,
        outputTokens: current.outputTokens
      }
      // Keep the newest point at least `window` old, so the rate spans the whole window.
      history.push(point)
      const cut = history.findIndex((p) => p.at > elapsedMillis - window)
      if (cut > 1) history = history.slice(cut - 1)
      const perMinute = ratesPerMinute(history, point)
      const stats = limiter === undefined
        ? Option.none()
        : yield* Effect.option(limiter.limiter.stats(limiter.key))
      return {
        elapsedMillis,
        total: options.total,
        progress: current,
        perMinute,
        limits: options.limits ?? {},
        queue: Option.match(stats, {
          onNone: () => ({ interactive: 0, normal: 0, batch: 0 }),
          onSome: (s) => s.waiting
        }),
        limiterInFlight: Option.match(stats, { onNone: () => current.inFlight, onSome: (s) => s.inFlight })
      } satisfies Snapshot
    })
    return Stream.repeatEffectWithSchedule(tick, Schedule.spaced(options.every ?? Duration.seconds(1)))
  }))
