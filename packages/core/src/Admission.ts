/**
 * The admission path: the one place where a governed call takes quota and
 * money, and gives them back. The Governor (`complete` and `stream`), the
 * `@effect/ai` layer (`generateText`, `generateObject`, `streamText`) and,
 * through the Governor, the Promise facade all pass here; none keeps a copy.
 *
 * One attempt, in order: reserve the budget's worst case (all limits or none),
 * wait for the limiter's permit (the estimate, less expected cache reads), run
 * the call, then settle both to what the provider counted, observe its
 * rate-limit headers and let the estimator and the cache prediction learn.
 *
 * How each exit ends, exactly once (the release runs uninterruptibly):
 *
 * | the attempt ended… | limiter reservation | budget reservation |
 * |---|---|---|
 * | answered, usage known | settled to the counted usage | settled to the real cost |
 * | answered, no usage | kept | settled to the worst case |
 * | refused by the provider (429, 529, 5xx, 4xx, billing) | refunded | cancelled |
 * | timeout, reset, interrupt or defect after it was sent | kept | settled to the worst case |
 * | refused by Sluice, or interrupted before it was sent | never taken, or refunded by the limiter | cancelled |
 *
 * "Sent" is the instant the provider call starts: the worst case is charged
 * only when the request may have reached the provider (`SluiceError.classify(error).mayHaveRun`).
 *
 * A 429 observes its headers and closes the key's gate (`RateLimiter.pause`,
 * capped there by `maxPause`) for every waiter at once.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Admission, LlmClient, Quota, TokenEstimator } from "@sluice/core"
 *
 * const governedCall = (client: LlmClient.Provider, request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const admission = yield* Admission.make()
 *     const estimator = yield* TokenEstimator.TokenEstimator
 *     const estimate = yield* estimator.estimate(request)
 *     const counting = Quota.cacheCountingFor(Quota.defaultCacheCounting, "anthropic", request.model)
 *     return yield* admission.run(
 *       { key: `anthropic/${request.model}`, request, estimate, counting, priority: "normal" },
 *       client.complete(request),
 *       Admission.answerOfResponse
 *     )
 *   })
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Budget from "./Budget.js"
import { makeLabeller } from "./internal/limiterMetrics.js"
import { tagged } from "./internal/taggedMetric.js"
import * as LlmClient from "./LlmClient.js"
import * as Metrics from "./Metrics.js"
import type * as Pricing from "./Pricing.js"
import type * as Priority from "./Priority.js"
import * as PromptCache from "./PromptCache.js"
import type * as Quota from "./Quota.js"
import * as RateLimiter from "./RateLimiter.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"
import * as SluiceError from "./SluiceError.js"
import * as TokenEstimator from "./TokenEstimator.js"

/**
 * Options of an admission path. Every field has a default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** What a 429 without a `retry-after` closes its key's gate for. Default 1 second. */
  readonly pauseWithoutHint?: Duration.DurationInput | undefined
  /**
   * Whether a call whose cached prefix was answered recently on its key
   * reserves only the input that will count. Default true.
   */
  readonly predictCacheReads?: boolean | undefined
  /** How long a cached prefix is expected to live after its last answer. Default 5 minutes. */
  readonly promptCacheTtl?: Duration.DurationInput | undefined
  /**
   * How many distinct keys get their own `key` label on admission's metrics;
   * further keys share `key="_other"`, so the metric registry stays bounded. Default 1,000.
   */
  readonly metricKeys?: number | undefined
}

/**
 * One call, as the admission path needs to know it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Call {
  /** The quota key. */
  readonly key: string
  /** The request: its model prices the budget, its `maxOutputTokens` and cache marks make the worst case. */
  readonly request: LlmClient.Request
  /** The estimate of its input and output. */
  readonly estimate: TokenEstimator.Estimate
  /** Which input parts count against the input-token limits, for this provider and model. */
  readonly counting: Quota.CacheCounting
  readonly priority: Priority.Class
  /** Give up with `RateLimiter.WaitTimeout` when not admitted within this long. */
  readonly maxWait?: Duration.DurationInput | undefined
}

/**
 * What an answer tells the admission path: the provider's usage, and its rate-limit headers when there are any.
 *
 * @since 0.1.0
 * @category models
 */
export interface Answer {
  readonly usage: LlmClient.Usage
  readonly rateLimits?: RateLimitSnapshot | undefined
}

/**
 * Everything admission itself can refuse a call with.
 *
 * @since 0.1.0
 * @category models
 */
export type AdmissionError =
  | RateLimiter.RateLimiterError
  | Budget.BudgetExceeded
  | Budget.BudgetLedgerError
  | Pricing.UnknownModel

/**
 * The admission path.
 *
 * @since 0.1.0
 * @category models
 */
export interface Admission {
  /**
   * One governed attempt of a whole call. `answerOf` reads the usage (and
   * headers) from the call's result; undefined when it has none.
   */
  readonly run: <A, E, R>(
    call: Call,
    attempt: Effect.Effect<A, E, R>,
    answerOf: (value: A) => Answer | undefined
  ) => Effect.Effect<A, E | AdmissionError, R>
  /**
   * One governed streamed call: admitted before its first element is pulled,
   * settled when an element carries the answer (`answerOf`), or when the stream
   * ends, fails or is abandoned. The provider call starts when the stream is
   * first pulled.
   */
  readonly stream: <A, E, R>(
    call: Call,
    attempt: Stream.Stream<A, E, R>,
    answerOf: (value: A) => Answer | undefined
  ) => Stream.Stream<A, E | AdmissionError, R>
}

const admissionOrigins: ReadonlySet<SluiceError.Origin | undefined> = new Set(["limiter", "budget", "pricing"] as const)

/**
 * Whether a failure is admission's own refusal (the limiter's, the budget's or
 * the price table's), not the call's: `SluiceError.classify(error).origin`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isAdmissionError = (error: unknown): error is AdmissionError =>
  admissionOrigins.has(SluiceError.classify(error).origin)

/**
 * `answerOf` for an `LlmClient.Response`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const answerOfResponse = (response: LlmClient.Response): Answer => ({
  usage: response.usage,
  rateLimits: response.rateLimits
})

/**
 * `answerOf` for `LlmClient.StreamEvent`s: the `Done` event carries the answer.
 *
 * @since 0.1.0
 * @category utilities
 */
export const answerOfEvent = (event: LlmClient.StreamEvent): Answer | undefined =>
  event._tag === "Done" ? answerOfResponse(event.response) : undefined

/**
 * Where one attempt stands, for its release: `waiting` until the provider call
 * starts; then `sent` (it may have run), `answered` or `refused`.
 */
type Stage =
  | { readonly _tag: "waiting" }
  | { readonly _tag: "sent" }
  | { readonly _tag: "answered"; readonly usage: LlmClient.Usage | undefined }
  | { readonly _tag: "refused" }

const waiting: Stage = { _tag: "waiting" }
const sent: Stage = { _tag: "sent" }
const refused: Stage = { _tag: "refused" }

const nothing = { requests: 0, inputTokens: 0, outputTokens: 0, tokens: 0 }

/** What the limiter reserves for a call, and what its answer teaches the prompt-cache prediction. */
interface Plan {
  readonly cost: { readonly inputTokens: number; readonly outputTokens: number }
  readonly learn: (usage: LlmClient.Usage) => Effect.Effect<void>
}

/** The `learn` of a call without a prompt-cache prediction: nothing to learn. */
const noLearning = (_: LlmClient.Usage): Effect.Effect<void> => Effect.void

/**
 * Builds the admission path over the `RateLimiter` and `TokenEstimator` in
 * context, and the `Budget` when one is provided.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<
  Admission,
  never,
  RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    const estimator = yield* TokenEstimator.TokenEstimator
    const budget = yield* Effect.serviceOption(Budget.Budget)
    const pauseWithoutHint = Duration.decode(options.pauseWithoutHint ?? Duration.seconds(1))
    const predictor = options.predictCacheReads === false ? undefined : PromptCache.makePredictor({
      ttlMillis: Duration.toMillis(Duration.decode(options.promptCacheTtl ?? Duration.minutes(5))),
      maxEntries: 10_000
    })
    // Bounded: the first `metricKeys` keys have a label of their own, the others share one.
    const labelOf = makeLabeller(options.metricKeys ?? 1_000)
    const expectations = new Map<string, Metric.Metric.Counter<number>>()
    const expectation = (rawKey: string, outcome: "read" | "missed") => {
      const key = labelOf(rawKey)
      const id = `${key}\u0000${outcome}`
      let found = expectations.get(id)
      if (found === undefined) {
        found = tagged(Metrics.promptCacheExpectations, { key, outcome })
        expectations.set(id, found)
      }
      return found
    }

    /** The plan of a call the prompt-cache prediction does not apply to (most): its estimate, nothing to learn. */
    const plainPlan = (call: Call): Plan | undefined =>
      predictor === undefined || call.counting.cacheReadsCount !== false || !LlmClient.marksCache(call.request)
        ? {
          cost: { inputTokens: call.estimate.inputTokens, outputTokens: call.estimate.outputTokens },
          learn: noLearning
        }
        : undefined

    /**
     * What to reserve at the limiter: the estimate, less the cache reads its
     * prefix is expected to make when they do not count; and what to learn
     * from its answer. Most calls mark no cache: no clock read, no hashing.
     */
    const limiterPlan = (call: Call): Effect.Effect<Plan> => {
      const plain = plainPlan(call)
      if (plain !== undefined || predictor === undefined) return Effect.succeed(plain!)
      const cost = { inputTokens: call.estimate.inputTokens, outputTokens: call.estimate.outputTokens }
      return Effect.map(Clock.currentTimeMillis, (now) => {
        const plan = PromptCache.plan(predictor, call.request, call.key, call.estimate.inputTokens, now)
        return {
          cost: { ...cost, inputTokens: plan.inputTokens },
          learn: (usage: LlmClient.Usage): Effect.Effect<void> =>
            Effect.clockWith((clock) => {
              const outcome = plan.learn(usage, clock.unsafeCurrentTimeMillis())
              return outcome === undefined ? Effect.void : Metric.increment(expectation(call.key, outcome))
            })
        }
      })
    }

    /** The budget's reservation of the call's worst case; none without a budget. */
    const reserveBudget = (call: Call): Effect.Effect<Budget.Reservation | undefined, AdmissionError> =>
      Option.isNone(budget) ? Effect.succeed(undefined) : budget.value.reserve({
        model: call.request.model,
        tenant: call.request.metadata?.tenant,
        job: call.request.metadata?.job,
        inputTokens: call.estimate.inputTokens,
        maxOutputTokens: call.request.maxOutputTokens,
        cacheable: LlmClient.marksCache(call.request)
      })

    /** How the budget's reservation ends, by the stage the attempt reached. */
    const settleBudget = (call: Call, spend: Budget.Reservation | undefined, stage: Stage): Effect.Effect<void> => {
      if (spend === undefined) return Effect.void
      const worstCase = () => LlmClient.worstCaseUsage(call.request, call.estimate.inputTokens)
      const settled = stage._tag === "waiting" || stage._tag === "refused"
        ? spend.cancel
        : spend.settle(stage._tag === "answered" && stage.usage !== undefined ? stage.usage : worstCase())
      return Effect.catchAllCause(settled, (cause) =>
        Effect.logWarning(`Sluice could not settle the budget of a call on key "${call.key}"`, cause))
    }

    /** What a failure tells the limiter: a 429's headers, and its pause for every waiter of the key. */
    const learnFromError = (key: string, error: LlmClient.ProviderError) =>
      error._tag !== "RateLimited" ? Effect.void : Effect.ignore(Effect.zipRight(
        error.rateLimits === undefined ? Effect.void : limiter.observe(key, error.rateLimits),
        limiter.pause(key, error.retryAfter ?? pauseWithoutHint)
      ))

    /** The answer came: settle the permit, observe the headers, learn. Never fails the call. */
    const onAnswer = (
      call: Call,
      permit: RateLimiter.Permit,
      learn: (usage: LlmClient.Usage) => Effect.Effect<void>,
      answer: Answer
    ) =>
      Effect.suspend(() => {
        // A chain, as `Effect.all` of the four in order (the first failure ends it), without its `forEach`.
        const settled = permit.settle(LlmClient.usageCost(answer.usage, call.counting))
        const learned = learn === noLearning ? settled : Effect.zipRight(settled, learn(answer.usage))
        const observed = answer.rateLimits === undefined
          ? learned
          : Effect.zipRight(learned, limiter.observe(call.key, answer.rateLimits))
        return Effect.ignore(Effect.zipRight(observed, estimator.observe(call.estimate, answer.usage)))
      })

    /** The call failed after it was sent: the stage it leaves, and what the limiter learns. */
    const onFailure = (call: Call, permit: RateLimiter.Permit, error: unknown): Effect.Effect<Stage> => {
      // Only the provider's own refusal is refunded. Anything else that ends a
      // sent call (a defect, an error Sluice does not know, an inner layer's
      // refusal) is charged as sent.
      if (!SluiceError.isProviderError(error)) {
        return Effect.succeed(sent)
      }
      if (SluiceError.classify(error).mayHaveRun) {
        return Effect.as(learnFromError(call.key, error), sent)
      }
      return Effect.as(Effect.zipRight(Effect.ignore(permit.settle(nothing)), learnFromError(call.key, error)), refused)
    }

    /**
     * Takes the budget's reservation and the limiter's permit in `scope`; the
     * budget's release reads `stage` when the scope closes.
     */
    const admit = (call: Call, state: { stage: Stage }): Effect.Effect<
      { readonly permit: RateLimiter.Permit; readonly learn: (usage: LlmClient.Usage) => Effect.Effect<void> },
      AdmissionError,
      Scope.Scope
    > =>
      Effect.gen(function*() {
        const plan = yield* limiterPlan(call)
        // Acquired uninterruptibly, released exactly once by the stage reached.
        yield* Effect.acquireRelease(
          reserveBudget(call),
          (spend) =>
            Effect.suspend(() => settleBudget(call, spend, state.stage))
        )
        const permit = yield* acquirePermit(call, plan.cost)
        return { permit, learn: plan.learn }
      })

    const permitOptions = (call: Call): RateLimiter.AcquireOptions =>
      call.maxWait === undefined ? { priority: call.priority } : { priority: call.priority, maxWait: call.maxWait }
    const acquirePermit = (call: Call, cost: { readonly inputTokens: number; readonly outputTokens: number }) =>
      limiter.acquire(call.key, cost, permitOptions(call))

    // The continuations of an attempt, built by functions rather than written in `run`'s literal: esbuild's
    // `keepNames` (tsx) names each function written as a property, a `defineProperty` on every call.
    /** An answer: its stage, then the permit settled, the headers observed, the estimator taught. */
    const afterAnswer = <A>(
      call: Call,
      permit: RateLimiter.Permit,
      learn: Plan["learn"],
      state: { stage: Stage },
      answerOf: (value: A) => Answer | undefined
    ) =>
    (value: A): Effect.Effect<A> => {
      const answer = answerOf(value)
      state.stage = { _tag: "answered", usage: answer?.usage }
      return answer === undefined ? Effect.succeed(value) : Effect.as(onAnswer(call, permit, learn, answer), value)
    }
    /** A failure: the stage it leaves and what the limiter learns; an interrupt or a defect changes neither. */
    const afterRefusal =
      <E>(call: Call, permit: RateLimiter.Permit, state: { stage: Stage }) =>
      (cause: Cause.Cause<E>): Effect.Effect<never, E> => {
        const failure = Cause.failureOption(cause)
        if (Option.isNone(failure)) return Effect.failCause(cause)
        return Effect.zipRight(
          Effect.map(onFailure(call, permit, failure.value), (stage) => void (state.stage = stage)),
          Effect.failCause(cause)
        )
      }

    // `run` holds the budget with `acquireUseRelease` and the permit with `withPermit`, not a `Scope`: the same
    // guarantees (taken uninterruptibly, released exactly once by the stage reached), without a scope and its
    // finalizer map per call.
    const run = <A, E, R>(call: Call, attempt: Effect.Effect<A, E, R>, answerOf: (value: A) => Answer | undefined) =>
      Effect.suspend(() => {
        const state: { stage: Stage } = { stage: waiting }
        const withPlan = (plan: Plan) =>
          limiter.withPermit(call.key, plan.cost, (permit) =>
            // As `Effect.onExit`: what the attempt's end teaches runs uninterruptibly, however it ended.
            Effect.uninterruptibleMask((restore) =>
              Effect.matchCauseEffect(
                restore(Effect.suspend(() => {
                  state.stage = sent
                  return attempt
                })),
                {
                  onFailure: afterRefusal<E>(call, permit, state),
                  onSuccess: afterAnswer(call, permit, plan.learn, state, answerOf)
                }
              )
            ), permitOptions(call))
        const plain = plainPlan(call)
        const use = plain === undefined ? Effect.flatMap(limiterPlan(call), withPlan) : withPlan(plain)
        // Without a budget there is nothing to hold around the call: its release would do nothing.
        if (Option.isNone(budget)) return use
        return Effect.acquireUseRelease(
          reserveBudget(call),
          () => use,
          (spend) => Effect.suspend(() => settleBudget(call, spend, state.stage))
        )
      })

    const stream = <A, E, R>(call: Call, attempt: Stream.Stream<A, E, R>, answerOf: (value: A) => Answer | undefined) =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const state: { stage: Stage } = { stage: waiting }
        const { learn, permit } = yield* admit(call, state)
        return Stream.suspend(() => {
          state.stage = sent
          return attempt
        }).pipe(
          Stream.tap((value) => {
            const answer = answerOf(value)
            if (answer === undefined) return Effect.void
            state.stage = { _tag: "answered", usage: answer.usage }
            return onAnswer(call, permit, learn, answer)
          }),
          Stream.tapError((error) =>
            state.stage._tag === "answered"
              ? Effect.void
              : Effect.map(onFailure(call, permit, error), (stage) => void (state.stage = stage))
          )
        )
      }))

    return { run, stream }
  })
