/**
 * The retry policy for model calls: exponential backoff with full jitter, a
 * cap on each delay, a bound on attempts and on total time, and the provider's
 * `retry-after` as the floor of the next delay. Only retryable
 * {@link SluiceError.ProviderError}s retry (`error.retryable`, which already folds
 * in `x-should-retry`); every other failure — a `BadRequest`, a limiter's
 * `Shed`, a defect — ends the call at once.
 *
 * Retries are a safety net, not the flow control: the limiter should keep
 * calls under the quota. So a retry re-runs the whole effect, and the caller
 * puts the limiter acquisition *inside* it: every retry waits for its permit
 * again, behind the calls already queued, instead of jumping the line.
 *
 * The n-th retry (n = 1 after the first failure) waits
 *
 * ```text
 * ceiling(n) = min(maxDelay, base * factor^(n-1))
 * delay(n)   = max(U * ceiling(n), retryAfter)      U uniform in [0, 1) from Effect's Random
 * ```
 *
 * (`jitter: "none"` takes U = 1). A `retry-after` may exceed `maxDelay` — the
 * provider's word wins — but a retry that would start later than `maxElapsed`
 * after the first attempt began is not made: the last error is returned. A
 * `retry-after` longer than `maxRetryAfter` (default 60 seconds, the limiter's
 * default `maxPause`) ends the retries at once (`retry-after-too-long`): a
 * provider asking for an hour or a day has refused this call.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LlmClient, RateLimiter, Retry } from "@sluice/core"
 *
 * const call = (request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const limiter = yield* RateLimiter.RateLimiter
 *     const client = yield* LlmClient.LlmClient
 *     // The permit is taken inside the retried effect: each retry queues again.
 *     return yield* limiter.withPermit("anthropic/claude-haiku-4-5", { inputTokens: 900, outputTokens: 256 }, () =>
 *       client.complete(request))
 *   }).pipe(Retry.retry({ maxAttempts: 4 }))
 * ```
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Metric from "effect/Metric"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleInterval from "effect/ScheduleInterval"
import * as SluiceError from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * The policy's knobs. Every field has a default ({@link defaults}).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The ceiling of the first retry's delay. Default 1 second. */
  readonly base?: Duration.DurationInput | undefined
  /** How much the ceiling grows per retry. Default 2. */
  readonly factor?: number | undefined
  /** The most a drawn delay may be (a provider's `retry-after` may exceed it). Default 60 seconds. */
  readonly maxDelay?: Duration.DurationInput | undefined
  /** Attempts in all, the first included; at least 1. Default 6. */
  readonly maxAttempts?: number | undefined
  /** No retry starts later than this after the first attempt began. Default 10 minutes. */
  readonly maxElapsed?: Duration.DurationInput | undefined
  /** A `retry-after` longer than this is a refusal: no retry. Default 60 seconds. */
  readonly maxRetryAfter?: Duration.DurationInput | undefined
  /** `full`: each delay is drawn uniformly from [0, ceiling]; `none`: each delay is the ceiling. Default `full`. */
  readonly jitter?: "full" | "none" | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  base: Duration.seconds(1),
  factor: 2,
  maxDelay: Duration.seconds(60),
  maxAttempts: 6,
  maxElapsed: Duration.minutes(10),
  maxRetryAfter: Duration.seconds(60),
  jitter: "full"
} as const

interface Resolved {
  readonly baseMillis: number
  readonly factor: number
  readonly maxDelayMillis: number
  readonly maxAttempts: number
  readonly maxElapsedMillis: number
  readonly maxRetryAfterMillis: number
  readonly jitter: "full" | "none"
}

const resolve = (options: Options = {}): Resolved => ({
  baseMillis: Math.max(0, Duration.toMillis(options.base ?? defaults.base)),
  factor: Math.max(1, options.factor ?? defaults.factor),
  maxDelayMillis: Math.max(0, Duration.toMillis(options.maxDelay ?? defaults.maxDelay)),
  maxAttempts: Math.max(1, Math.floor(options.maxAttempts ?? defaults.maxAttempts)),
  maxElapsedMillis: Math.max(0, Duration.toMillis(options.maxElapsed ?? defaults.maxElapsed)),
  maxRetryAfterMillis: Math.max(0, Duration.toMillis(options.maxRetryAfter ?? defaults.maxRetryAfter)),
  jitter: options.jitter ?? defaults.jitter
})

// ---------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------

/**
 * Whether a value is one of the {@link SluiceError.ProviderError}s
 * (`SluiceError.isProviderError`: by its type id and tag, so that two copies of
 * the package agree).
 *
 * @since 0.1.0
 * @category guards
 */
export const isProviderError: (u: unknown) => u is SluiceError.ProviderError = SluiceError.isProviderError

/**
 * Whether a failure may be retried: a provider error whose `retryable` verdict
 * is true (429, 529, 5xx, timeouts, network errors, unless `x-should-retry`
 * said otherwise). Anything else — other tagged errors included — is not.
 * `SluiceError.classify(u).retryable`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isRetryable = (u: unknown): boolean => SluiceError.classify(u).retryable

/**
 * The provider's `retry-after`, when the error carries one.
 *
 * @since 0.1.0
 * @category utilities
 */
export const retryAfterOf = (u: unknown): Duration.Duration | undefined =>
  isProviderError(u) && "retryAfter" in u ? u.retryAfter : undefined

// ---------------------------------------------------------------------------
// Pure arithmetic
// ---------------------------------------------------------------------------

/**
 * The ceiling of the n-th retry's delay (n from 1): `min(maxDelay, base * factor^(n-1))`.
 *
 * @example
 * ```ts
 * import { Retry } from "@sluice/core"
 *
 * Retry.ceiling({ base: "500 millis" }, 3) // 2 seconds
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const ceiling = (options: Options, retry: number): Duration.Duration =>
  Duration.millis(ceilingMillis(resolve(options), retry))

const ceilingMillis = (resolved: Resolved, retry: number): number =>
  Math.min(resolved.maxDelayMillis, resolved.baseMillis * Math.pow(resolved.factor, Math.max(0, retry - 1)))

/**
 * Why the policy stopped.
 *
 * @since 0.1.0
 * @category models
 */
export type StopReason = "not-retryable" | "max-attempts" | "max-elapsed" | "retry-after-too-long"

/**
 * What the policy does after a failed attempt.
 *
 * @since 0.1.0
 * @category models
 */
export type Decision =
  | {
    readonly _tag: "Retry"
    /** Which retry this is, from 1. */
    readonly retry: number
    readonly delay: Duration.Duration
  }
  | { readonly _tag: "Stop"; readonly reason: StopReason }

/**
 * What {@link decide} looks at.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure {
  /** The error the attempt failed with. */
  readonly error: unknown
  /** Attempts made so far, this one included (1 after the first failure). */
  readonly attempts: number
  /** Time from the start of the first attempt to this failure. */
  readonly elapsed: Duration.DurationInput
  /** A number in [0, 1) that picks the delay under full jitter (ignored with `jitter: "none"`). */
  readonly draw: number
}

/**
 * The policy as a plain function: what to do after a failed attempt.
 *
 * @example
 * ```ts
 * import { LlmClient, Retry } from "@sluice/core"
 *
 * const error = new LlmClient.ServerError({ provider: "sim", detail: "", status: 503 })
 * Retry.decide({}, { error, attempts: 1, elapsed: 0, draw: 0.5 })
 * // { _tag: "Retry", retry: 1, delay: 500 millis }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const decide = (options: Options, failure: Failure): Decision => decideResolved(resolve(options), failure)

const decideResolved = (resolved: Resolved, failure: Failure): Decision => {
  if (!isRetryable(failure.error)) return { _tag: "Stop", reason: "not-retryable" }
  if (failure.attempts >= resolved.maxAttempts) return { _tag: "Stop", reason: "max-attempts" }
  const retry = failure.attempts
  const draw = resolved.jitter === "none" ? 1 : Math.min(1, Math.max(0, failure.draw))
  const drawn = Math.round(draw * ceilingMillis(resolved, retry))
  const retryAfter = retryAfterOf(failure.error)
  // A provider that asks for more than `maxRetryAfter` (an absurd hint, a day) refuses this caller: it gives
  // up now instead of sleeping for it. The limiter caps the key's pause for everyone else (`maxPause`).
  if (retryAfter !== undefined && Duration.toMillis(retryAfter) > resolved.maxRetryAfterMillis) {
    return { _tag: "Stop", reason: "retry-after-too-long" }
  }
  const delayMillis = retryAfter === undefined ? drawn : Math.max(drawn, Math.ceil(Duration.toMillis(retryAfter)))
  if (Duration.toMillis(failure.elapsed) + delayMillis > resolved.maxElapsedMillis) {
    return { _tag: "Stop", reason: "max-elapsed" }
  }
  return { _tag: "Retry", retry, delay: Duration.millis(delayMillis) }
}

/** Draws from `Random` only when the decision needs it, so a stop consumes nothing. */
const nextDecision = (resolved: Resolved, failure: Omit<Failure, "draw">): Effect.Effect<Decision> =>
  resolved.jitter === "full" && isRetryable(failure.error) && failure.attempts < resolved.maxAttempts
    ? Effect.map(Random.next, (draw) => decideResolved(resolved, { ...failure, draw }))
    : Effect.succeed(decideResolved(resolved, { ...failure, draw: 1 }))

/**
 * The delays the policy would wait if each attempt failed at once with the
 * next of `errors`, until it stops or the errors run out. Draws from `Random`
 * like the schedule does; logs and counts nothing. Useful in tests and to
 * explain a policy.
 *
 * @example
 * ```ts
 * import { Effect, Random } from "effect"
 * import { LlmClient, Retry } from "@sluice/core"
 *
 * const overloaded = new LlmClient.Overloaded({ provider: "anthropic", detail: "" })
 * const waits = Retry.delays({ base: "1 second" }, [overloaded, overloaded]).pipe(Effect.withRandom(Random.fixed([0.5])))
 * // Effect.runSync(waits): [500 millis, 1 second]
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const delays = (
  options: Options,
  errors: ReadonlyArray<unknown>
): Effect.Effect<ReadonlyArray<Duration.Duration>> =>
  Effect.gen(function*() {
    const resolved = resolve(options)
    const waited: Array<Duration.Duration> = []
    let elapsed = 0
    for (const [index, error] of errors.entries()) {
      const decision = yield* nextDecision(resolved, { error, attempts: index + 1, elapsed })
      if (decision._tag === "Stop") break
      waited.push(decision.delay)
      elapsed += Duration.toMillis(decision.delay)
    }
    return waited
  })

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/**
 * Retries made, tagged `error` with the tag of the error that caused them.
 *
 * @since 0.1.0
 * @category utilities
 */
export const retries = Metric.counter("sluice_retries_total", {
  description: "Retries of model calls, by the tag of the error retried",
  incremental: true
})

// ---------------------------------------------------------------------------
// Schedule and combinator
// ---------------------------------------------------------------------------

interface State {
  /** Failed attempts so far. */
  readonly failures: number
  /** When the first attempt began (ms, Clock); the first failure when unknown. */
  readonly startedAt: number | undefined
}

const policy = (
  options: Options | undefined,
  startedAt: number | undefined
): Schedule.Schedule<Duration.Duration, unknown> => {
  const resolved = resolve(options)
  const step = Schedule.makeWithState<State, unknown, Duration.Duration>(
    { failures: 0, startedAt },
    (now, error, state) => {
      const attempts = state.failures + 1
      const start = state.startedAt ?? now
      const next: State = { failures: attempts, startedAt: start }
      return Effect.flatMap(
        nextDecision(resolved, { error, attempts, elapsed: Math.max(0, now - start) }),
        (decision) => {
          if (decision._tag === "Stop") return Effect.succeed([next, Duration.zero, ScheduleDecision.done] as const)
          const tag = isProviderError(error) ? error._tag : "Unknown"
          return Effect.logDebug(`Sluice retry ${decision.retry} after ${tag} in ${Duration.format(decision.delay)}`)
            .pipe(
              Effect.annotateLogs({
                error: tag,
                retry: decision.retry,
                delayMillis: Duration.toMillis(decision.delay)
              }),
              Effect.zipRight(Metric.increment(Metric.tagged(retries, "error", tag))),
              Effect.as(
                [
                  next,
                  decision.delay,
                  ScheduleDecision.continueWith(ScheduleInterval.after(now + Duration.toMillis(decision.delay)))
                ] as const
              )
            )
        }
      )
    }
  )
  // The step checks retryability itself (so a non-retryable error draws, logs
  // and counts nothing); the guard states the rule at the schedule's surface.
  return Schedule.whileInput(step, isRetryable)
}

/**
 * The retry policy as a `Schedule` for `Effect.retry`. Its input is the error
 * (any error: only retryable provider errors continue); its output is the delay
 * before the retry. Each retry is logged at debug level and counted in
 * `sluice_retries_total{error}`. `maxElapsed` counts from the first failure
 * (the schedule cannot see when the first attempt began); {@link retry} counts
 * from the start of the first attempt.
 *
 * The input type is `unknown` rather than `ProviderError` so that it also
 * retries effects whose error channel holds other errors (a limiter's `Shed`,
 * say), which it never retries.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LlmClient, Retry } from "@sluice/core"
 *
 * const call = (request: LlmClient.Request) =>
 *   Effect.flatMap(LlmClient.LlmClient, (client) => client.complete(request)).pipe(
 *     Effect.retry(Retry.schedule({ maxAttempts: 3 }))
 *   )
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const schedule = (options?: Options): Schedule.Schedule<Duration.Duration, unknown> => policy(options, undefined)

/**
 * Runs `self` and re-runs the whole of it after each retryable failure, by
 * {@link schedule}. Put the limiter acquisition inside `self`: every retry then
 * passes the limiter again. `maxElapsed` counts from the start of the first
 * attempt. The error of the last attempt is the error of the whole.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LlmClient, RateLimiter, Retry } from "@sluice/core"
 *
 * const call = (request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const limiter = yield* RateLimiter.RateLimiter
 *     const client = yield* LlmClient.LlmClient
 *     const key = `anthropic/${request.model}`
 *     const cost = { inputTokens: 900, outputTokens: request.maxOutputTokens }
 *     return yield* limiter.withPermit(key, cost, () => client.complete(request)).pipe(Retry.retry({ maxAttempts: 4 }))
 *     // or data-first: Retry.retry(limiter.withPermit(key, cost, () => client.complete(request)), { maxAttempts: 4 })
 *   })
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const retry: {
  (options?: Options): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, options?: Options): Effect.Effect<A, E, R>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(self: Effect.Effect<A, E, R>, options?: Options): Effect.Effect<A, E, R> =>
    Effect.clockWith((clock) => {
      const startedAt = clock.unsafeCurrentTimeMillis()
      // Most calls succeed the first time: the schedule (a driver, its state) is built only after a retryable failure,
      // and replays that failure as its first input, so it decides exactly as if it had run from the start.
      return Effect.catchAll(self, (first) => {
        if (!isRetryable(first)) return Effect.fail(first)
        let replay = true
        const attempt = Effect.suspend(() => {
          if (!replay) return self
          replay = false
          return Effect.fail(first)
        })
        return Effect.retry(attempt, policy(options, startedAt))
      })
    })
)
