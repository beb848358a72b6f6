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
 * const outcomes = Pipeline.run(documents, (doc) => client.complete(requestFor(doc)), { concurrency: 32 })
 * ```
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"

/** Anything with an id. */
export interface Document {
  readonly id: string
}

/** What happened to one document. */
export type Outcome<A> =
  | { readonly _tag: "Succeeded"; readonly id: string; readonly value: A }
  | { readonly _tag: "Failed"; readonly id: string; readonly reason: string; readonly error: unknown }
  | { readonly _tag: "Shed"; readonly id: string; readonly reason: string }
  | { readonly _tag: "OverBudget"; readonly id: string; readonly reason: string }
  | { readonly _tag: "Skipped"; readonly id: string }

/** Counts so far. */
export interface Progress {
  readonly started: number
  readonly succeeded: number
  readonly failed: number
  readonly shed: number
  readonly overBudget: number
  readonly skipped: number
  readonly inFlight: number
}

export const emptyProgress: Progress = { started: 0, succeeded: 0, failed: 0, shed: 0, overBudget: 0, skipped: 0, inFlight: 0 }

/** The checkpoint could not be read or written. */
export class CheckpointError extends Data.TaggedError("CheckpointError")<{ readonly operation: string; readonly cause: unknown }> {
  override get message(): string {
    return `Checkpoint failed to ${this.operation}: ${String(this.cause)}`
  }
}

/** Where outcomes are recorded, so that a rerun resumes. */
export class Checkpoint extends Context.Tag("@sluice/core/Pipeline/Checkpoint")<Checkpoint, {
  /** Whether the document succeeded in an earlier run. */
  readonly succeeded: (id: string) => Effect.Effect<boolean, CheckpointError>
  /** Records an outcome (replacing an earlier one of the same document). */
  readonly record: (id: string, status: "succeeded" | "failed" | "shed" | "over-budget", reason: string | undefined) => Effect.Effect<void, CheckpointError>
}>() {}

/** A checkpoint in memory: one run of one process. */
export const layerCheckpointMemory: Layer.Layer<Checkpoint> = Layer.effect(
  Checkpoint,
  Effect.map(Effect.suspend(() => Ref.make(new Map<string, string>())), (ref) =>
    Checkpoint.of({
      succeeded: (id) => Effect.map(Ref.get(ref), (map) => map.get(id) === "succeeded"),
      record: (id, status) => Ref.update(ref, (map) => new Map(map).set(id, status))
    }))
)

/** Options of a run. */
export interface Options {
  /** Documents in flight at once. Default 16. */
  readonly concurrency?: number | undefined
  /** Where the counts go, for a progress display. */
  readonly progress?: SubscriptionRef.SubscriptionRef<Progress> | undefined
}

const tagOf = (error: unknown): string | undefined =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined

const reasonOf = (error: unknown): string =>
  Predicate.hasProperty(error, "message") && typeof error.message === "string" && error.message !== ""
    ? error.message
    : String(error)

/** The outcome of a failure: `Shed` and `BudgetExceeded` have outcomes of their own. */
export const classify = (id: string, error: unknown): Outcome<never> => {
  switch (tagOf(error)) {
    case "Shed":
      return { _tag: "Shed", id, reason: reasonOf(error) }
    case "BudgetExceeded":
      return { _tag: "OverBudget", id, reason: reasonOf(error) }
    default:
      return { _tag: "Failed", id, reason: reasonOf(error), error }
  }
}

const statusOf = { Succeeded: "succeeded", Failed: "failed", Shed: "shed", OverBudget: "over-budget" } as const

/**
 * Runs `process` once per document, `concurrency` at a time, and emits every
 * document's outcome (in completion order). A failure of `process` is an
 * outcome, not a failure of the stream; a failure to read the checkpoint is.
 */
export const run = <D extends Document, A, E, R, E2, R2>(
  documents: Stream.Stream<D, E2, R2>,
  process: (document: D) => Effect.Effect<A, E, R>,
  options: Options = {}
): Stream.Stream<Outcome<A>, E2 | CheckpointError, R | R2 | Checkpoint> =>
  Stream.unwrap(Effect.gen(function*() {
    const checkpoint = yield* Checkpoint
    const progress = options.progress
    const count = (f: (p: Progress) => Progress) => progress === undefined ? Effect.void : SubscriptionRef.update(progress, f)
    const one = (document: D): Effect.Effect<Outcome<A>, CheckpointError, R> =>
      Effect.gen(function*() {
        if (yield* checkpoint.succeeded(document.id)) {
          yield* count((p) => ({ ...p, skipped: p.skipped + 1 }))
          return { _tag: "Skipped", id: document.id } as const
        }
        yield* count((p) => ({ ...p, started: p.started + 1, inFlight: p.inFlight + 1 }))
        const result = yield* Effect.either(process(document))
        const outcome: Outcome<A> = result._tag === "Right"
          ? { _tag: "Succeeded", id: document.id, value: result.right }
          : classify(document.id, result.left)
        yield* checkpoint.record(document.id, statusOf[outcome._tag as keyof typeof statusOf], outcome._tag === "Succeeded" || outcome._tag === "Skipped" ? undefined : outcome.reason)
        yield* count((p) => ({
          ...p,
          inFlight: p.inFlight - 1,
          succeeded: p.succeeded + (outcome._tag === "Succeeded" ? 1 : 0),
          failed: p.failed + (outcome._tag === "Failed" ? 1 : 0),
          shed: p.shed + (outcome._tag === "Shed" ? 1 : 0),
          overBudget: p.overBudget + (outcome._tag === "OverBudget" ? 1 : 0)
        }))
        return outcome
      }).pipe(Effect.withSpan("Pipeline.document", { attributes: { id: document.id } }))
    return Stream.mapEffect(documents, one, { concurrency: Math.max(1, options.concurrency ?? 16), unordered: true })
  }))
