/**
 * The Governor: the composition users reach for. It wraps any `LlmClient`
 * with estimation, the limiter, a breaker, a model ladder, coalescing and
 * retry, and is itself an `LlmClient`, so a pipeline swaps providers (or the
 * simulator) without changing.
 *
 * One call, from the outside in:
 *
 * 1. **Coalescing** — an identical request already in flight is joined, not
 *    repeated, and is charged once.
 * 2. **Retry** (`Retry.retry`) — re-runs everything below after a retryable
 *    failure, with full jitter and the provider's `retry-after` as the floor;
 *    every retry passes the limiter again.
 * 3. **Fallback** — the request's model, then each `fallback` rung; a
 *    `RateLimited`, `Overloaded` or `CircuitOpen` on a rung that has a
 *    successor moves on at once; on the last rung it is retried. When every
 *    rung failed, the error is `AllRungsFailed` listing each rung's reason.
 * 4. **Breaker** (when a `CircuitBreaker` is in context) per quota key; while
 *    open, the response cache (when `cacheTtl` is set) may answer.
 * 5. **Estimation** — the request's input (calibrated, or the provider's own
 *    count with `count: "provider"`) and output (`max_tokens`).
 * 6. **Limiter** — the whole cost is reserved in every dimension before the
 *    call; after it, the permit settles to the real usage, the response's
 *    rate-limit snapshot is observed (429s included), a 429's `retry-after`
 *    pauses the key for every waiter, and the estimator learns. Prompt caching:
 *    a prompt whose cached prefix was answered recently reserves only what will
 *    count (`predictCacheReads`), any other its whole; the settlement counts
 *    cache reads and writes as the provider's rule says (`cacheCounting`).
 *
 * A refusal by the limiter (`Shed`, `CostTooLarge`) is not retried and takes no
 * quota. A call the provider refused (429, 5xx, 4xx) is refunded in full; a
 * call that timed out or lost its connection keeps its reservation, since the
 * provider may have run it.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
 * import { Anthropic } from "@sluice/providers"
 *
 * const quotas = { "anthropic/claude-sonnet-4-5": { requests: { limit: 50, per: "1 minute" } } } as const
 * const GovernedLive = Governor.layer({ fallback: [{ model: "claude-haiku-4-5" }] }).pipe(
 *   Layer.provide([Anthropic.layerConfig(), RateLimiter.layerMemory({ quotas }), TokenEstimator.layer()])
 * )
 * const answer = Effect.flatMap(LlmClient.LlmClient, (client) =>
 *   client.complete({ model: "claude-sonnet-4-5", messages: [{ role: "user", content: "Say hi" }], maxOutputTokens: 64 })
 * ).pipe(Effect.provide(GovernedLive))
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Admission from "./Admission.js"
import * as CircuitBreaker from "./CircuitBreaker.js"
import * as Coalesce from "./Coalesce.js"
import * as Fallback from "./Fallback.js"
import { makeLabeller } from "./internal/limiterMetrics.js"
import { tagged } from "./internal/taggedMetric.js"
import { withSpan } from "./internal/tracing.js"
import * as LlmClient from "./LlmClient.js"
import * as Metrics from "./Metrics.js"
import * as Pricing from "./Pricing.js"
import type * as Priority from "./Priority.js"
import * as Quota from "./Quota.js"
import * as RateLimiter from "./RateLimiter.js"
import * as Retry from "./Retry.js"
import * as TokenEstimator from "./TokenEstimator.js"

/**
 * Options of a Governor. Every field has a default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The quota key of a call. Default: `provider/model`, plus `/tenant` when the
   * request's metadata names a tenant and `perTenant` is on.
   */
  readonly key?: ((request: LlmClient.Request, provider: string) => string) | undefined
  /** Tenants have quotas of their own (the default key gains `/tenant`). Default false. */
  readonly perTenant?: boolean | undefined
  /** Models to fall back to, in order, after the request's own. Default none. */
  readonly fallback?: ReadonlyArray<Fallback.Rung> | undefined
  /** The retry policy, or false for none. Default `Retry.defaults`. */
  readonly retry?: Retry.Options | false | undefined
  /** Join identical requests in flight. Default true. */
  readonly coalesce?: boolean | undefined
  /** Keep responses this long to answer while a breaker is open. Default off. */
  readonly cacheTtl?: Duration.DurationInput | undefined
  /**
   * Where the input estimate comes from: the calibrated `TokenEstimator`
   * (default), or the provider's own count-tokens call when it has one (exact,
   * one more round trip per call).
   */
  readonly count?: "estimate" | "provider" | undefined
  /**
   * Which parts of the input (uncached, cache reads, cache writes) count
   * against the input-token limits, by provider or `provider/model` (prefixes
   * match): merged over `Quota.defaultCacheCounting`, an entry here wins. A call
   * finds its rule with `Quota.cacheCountingFor` from the provider's name and
   * the model. The reservation before the call cannot know the cache hits: it
   * takes the whole prompt as uncached input, and the settlement gives back
   * what the rule does not count.
   *
   * @example
   * ```ts
   * import { Governor } from "@sluice/core"
   *
   * const GovernorLive = Governor.layer({
   *   cacheCounting: { "my-gateway": { cacheReadsCount: true, cacheWritesCount: true } }
   * })
   * ```
   */
  readonly cacheCounting?: Quota.CacheCountingTable | undefined
  /**
   * Whether cache reads count against the input-token quota, for every
   * provider and model, over `cacheCounting`. Kept for compatibility; prefer
   * `cacheCounting`. Default: the rule of the table.
   */
  readonly cacheReadsCount?: boolean | undefined
  /**
   * Whether a call whose cached prefix was answered recently on its key
   * reserves only the input that will count: the estimate less the tokens the
   * last answer read and wrote for that prefix, when the rule says cache reads
   * do not count. A miss settles to what the provider counted, as any
   * under-estimate does. Default true.
   */
  readonly predictCacheReads?: boolean | undefined
  /** How long a cached prefix is expected to live after its last answer. Default 5 minutes (Anthropic's ephemeral cache). */
  readonly promptCacheTtl?: Duration.DurationInput | undefined
  /** The class of a call whose metadata names none. Default "normal". */
  readonly priority?: Priority.Class | undefined
  /** What a 429 without a `retry-after` pauses its key for. Default 1 second. */
  readonly pauseWithoutHint?: Duration.DurationInput | undefined
  /**
   * How many distinct quota keys get their own `key` label on the Governor's
   * metrics; further keys share `key="_other"` (`RateLimiter.otherKeysLabel`).
   * Effect's metric registry keeps every labelled series for the life of the
   * process, so this bounds it. Default 1,000.
   */
  readonly metricKeys?: number | undefined
  /**
   * How long a call may wait for the limiter before it fails with
   * `RateLimiter.WaitTimeout`; a request's `metadata.maxWait` wins. Default: no deadline.
   */
  readonly maxWait?: Duration.DurationInput | undefined
}

/**
 * Options that could not be accepted; each issue names its field (`retry.maxAttempts`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidGovernorOptions extends Data.TaggedError("InvalidGovernorOptions")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid Governor options: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

const DurationInput = Schema.Union(Schema.String, Schema.Number, Schema.DurationFromSelf).pipe(
  Schema.filter((input) =>
    Duration.decodeUnknown(input)._tag === "Some" ||
    `Expected a duration such as "30 seconds", got ${JSON.stringify(input)}`
  )
)
const exact = { exact: true } as const

/** The data part of the options (functions aside), as a schema. */
const OptionsSchema = Schema.Struct({
  perTenant: Schema.optionalWith(Schema.Boolean, exact),
  fallback: Schema.optionalWith(
    Schema.Array(
      Schema.Struct({ model: Schema.NonEmptyString, key: Schema.optionalWith(Schema.NonEmptyString, exact) })
    ),
    exact
  ),
  retry: Schema.optionalWith(
    Schema.Union(
      Schema.Literal(false),
      Schema.Struct({
        base: Schema.optionalWith(DurationInput, exact),
        factor: Schema.optionalWith(Schema.Number.pipe(Schema.finite(), Schema.greaterThanOrEqualTo(1)), exact),
        maxDelay: Schema.optionalWith(DurationInput, exact),
        maxAttempts: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), exact),
        maxElapsed: Schema.optionalWith(DurationInput, exact),
        maxRetryAfter: Schema.optionalWith(DurationInput, exact),
        jitter: Schema.optionalWith(Schema.Literal("full", "none"), exact)
      })
    ),
    exact
  ),
  coalesce: Schema.optionalWith(Schema.Boolean, exact),
  cacheTtl: Schema.optionalWith(DurationInput, exact),
  count: Schema.optionalWith(Schema.Literal("estimate", "provider"), exact),
  cacheCounting: Schema.optionalWith(Quota.CacheCountingTable, exact),
  cacheReadsCount: Schema.optionalWith(Schema.Boolean, exact),
  predictCacheReads: Schema.optionalWith(Schema.Boolean, exact),
  promptCacheTtl: Schema.optionalWith(DurationInput, exact),
  priority: Schema.optionalWith(Schema.Literal("interactive", "normal", "batch"), exact),
  pauseWithoutHint: Schema.optionalWith(DurationInput, exact),
  maxWait: Schema.optionalWith(DurationInput, exact),
  metricKeys: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), exact)
})

/** One issue per field, the deepest: a union's members would otherwise each report the same field. */
const deepestIssues = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>) => {
  const byPath = new Map<string, string>()
  for (const issue of issues) {
    const path = issue.path.map(String).join(".")
    if (!byPath.has(path)) byPath.set(path, issue.message)
  }
  const paths = [...byPath.keys()]
  return paths
    .filter((path) => !paths.some((other) => other !== path && other.startsWith(`${path}.`)))
    .map((path) => ({ path, message: byPath.get(path)! }))
}

/**
 * Checks plain options; the error names every wrong field.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validate = (options: Options): Either.Either<Options, InvalidGovernorOptions> => {
  const { key: _key, ...data } = options
  return Either.map(
    Either.mapLeft(
      Schema.decodeUnknownEither(OptionsSchema, { errors: "all", onExcessProperty: "error" })(data),
      (error) =>
        new InvalidGovernorOptions({ issues: deepestIssues(ParseResult.ArrayFormatter.formatErrorSync(error)) })
    ),
    () => options
  )
}

/** The default of `Options.metricKeys`, as the limiter's. */
const defaultMetricKeys = 1_000

/**
 * The default quota key: `provider/model`, with `/tenant` when asked.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultKey = (perTenant: boolean) => (request: LlmClient.Request, provider: string): string =>
  perTenant && request.metadata?.tenant !== undefined
    ? `${provider}/${request.model}/${request.metadata.tenant}`
    : `${provider}/${request.model}`

/**
 * Builds a governed client over the `LlmClient` in context. Uses the
 * `RateLimiter` and `TokenEstimator` in context, and a `CircuitBreaker` when
 * one is provided.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<
  LlmClient.Client<LlmClient.CallError>,
  never,
  LlmClient.LlmClient | RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Effect.gen(function*() {
    const inner = yield* LlmClient.LlmClient
    const estimator = yield* TokenEstimator.TokenEstimator
    const breaker = yield* Effect.serviceOption(CircuitBreaker.CircuitBreaker)
    const coalescer = yield* Coalesce.make<LlmClient.Response>(
      options.cacheTtl === undefined ? {} : { cacheTtl: options.cacheTtl }
    )
    const keyOf = options.key ?? defaultKey(options.perTenant ?? false)
    const cacheCounting: Quota.CacheCountingTable = { ...Quota.defaultCacheCounting, ...options.cacheCounting }
    /** What of a call's input counts against the quota, by the provider and the model (looked up once per model). */
    const countingByModel = new Map<string, Quota.CacheCounting>()
    const countingOf = (model: string): Quota.CacheCounting => {
      let counting = countingByModel.get(model)
      if (counting === undefined) {
        const rule = Quota.cacheCountingFor(cacheCounting, inner.provider, model)
        counting = options.cacheReadsCount === undefined ? rule : { ...rule, cacheReadsCount: options.cacheReadsCount }
        countingByModel.set(model, counting)
      }
      return counting
    }
    const admission = yield* Admission.make({
      ...(options.metricKeys === undefined ? {} : { metricKeys: options.metricKeys }),
      pauseWithoutHint: options.pauseWithoutHint ?? Duration.seconds(1),
      ...(options.predictCacheReads === undefined ? {} : { predictCacheReads: options.predictCacheReads }),
      ...(options.promptCacheTtl === undefined ? {} : { promptCacheTtl: options.promptCacheTtl })
    })
    const pricing = yield* Effect.serviceOption(Pricing.Pricing)
    const prices = Option.match(pricing, { onNone: () => Pricing.defaultTable, onSome: (service) => service.table })
    // Looked up once per model: a model without a price would build an `UnknownModel` error (and its stack) on every call.
    const priceByModel = new Map<string, Pricing.ModelPrice | undefined>()
    const priceOf = (model: string) => {
      if (!priceByModel.has(model)) priceByModel.set(model, Either.getOrUndefined(Pricing.lookup(prices, model)))
      return priceByModel.get(model)
    }

    // Metrics: one tagged series per key and label, resolved once (see internal/taggedMetric). The first
    // `metricKeys` keys get a label of their own, the others share `_other`: this cache and Effect's registry,
    // which keeps every series for the life of the process, stay bounded however many keys (tenants) pass.
    const labelOf = makeLabeller(options.metricKeys ?? defaultMetricKeys)
    const series = new Map<Metric.Metric.Counter<number>, Map<string, Metric.Metric.Counter<number>>>()
    const counter = (metric: Metric.Metric.Counter<number>, rawKey: string, label: string, value: string) => {
      let byLabels = series.get(metric)
      if (byLabels === undefined) {
        byLabels = new Map()
        series.set(metric, byLabels)
      }
      const key = labelOf(rawKey)
      const id = `${key}\u0000${value}`
      let found = byLabels.get(id)
      if (found === undefined) {
        found = tagged(metric, label === "" ? { key } : { key, [label]: value })
        byLabels.set(id, found)
      }
      return found
    }
    const countOutcome = (key: string, outcome: string) =>
      Metric.increment(counter(Metrics.requests, key, "outcome", outcome))
    /**
     * A call the provider answered: `ok`, its tokens by direction, its cost at the table's price. One step, as
     * `Metric.increment` does each update (with the fiber's metric labels), instead of six effects.
     */
    const countAnswer = (key: string, response: LlmClient.Response) =>
      Effect.withFiberRuntime<void>((fiber) => {
        countAnswerWith(key, response, fiber.getFiberRef(FiberRef.currentMetricLabels))
        return Effect.void
      })
    /** `countAnswer`'s updates, with the calling fiber's metric labels. */
    const countAnswerWith = (
      key: string,
      response: LlmClient.Response,
      tags: ReadonlyArray<MetricLabel.MetricLabel>
    ): void => {
      const { usage } = response
      const answers = answerSeriesOf(key)
      answers.ok.unsafeUpdate(1, tags)
      answers.input.unsafeUpdate(usage.inputTokens, tags)
      answers.output.unsafeUpdate(usage.outputTokens, tags)
      answers.cacheRead.unsafeUpdate(usage.cacheReadInputTokens, tags)
      answers.cacheWrite.unsafeUpdate(usage.cacheWriteInputTokens, tags)
      const price = priceOf(response.model)
      if (price !== undefined) answers.cost.unsafeUpdate(Pricing.toUsd(Pricing.costMicros(price, usage)), tags)
    }
    /** The six series an answer updates, by `key` label: looked up once per call, not built from strings six times. */
    const answerSeries = new Map<
      string,
      Record<"ok" | "input" | "output" | "cacheRead" | "cacheWrite" | "cost", Metric.Metric.Counter<number>>
    >()
    const answerSeriesOf = (rawKey: string) => {
      const label = labelOf(rawKey)
      let found = answerSeries.get(label)
      if (found === undefined) {
        found = {
          ok: counter(Metrics.requests, rawKey, "outcome", "ok"),
          input: counter(Metrics.tokens, rawKey, "direction", "input"),
          output: counter(Metrics.tokens, rawKey, "direction", "output"),
          cacheRead: counter(Metrics.tokens, rawKey, "direction", "cache_read"),
          cacheWrite: counter(Metrics.tokens, rawKey, "direction", "cache_write"),
          cost: counter(Metrics.costUsd, rawKey, "", "")
        }
        answerSeries.set(label, found)
      }
      return found
    }
    /** Counts one attempt on a key by how it ended. */
    const counted = <E, R>(key: string, call: Effect.Effect<LlmClient.Response, E, R>) =>
      // As `Effect.onExit(call, count)`: the continuations run uninterruptibly, whatever ended the call (an
      // interrupt too), and an answer's metrics are updated in the continuation itself, without effects of their own.
      Effect.uninterruptibleMask((restore) =>
        Effect.matchCauseEffect(restore(call), { onFailure: countingFailure<E>(key), onSuccess: countingAnswer(key) })
      )
    // Built by functions, not written in the literal above: esbuild's `keepNames` (tsx) names each function
    // written as a property, a `defineProperty` on every call.
    const countingFailure = <E>(key: string) => (cause: Cause.Cause<E>): Effect.Effect<never, E> =>
      Effect.zipRight(
        countOutcome(
          key,
          Option.match(Cause.failureOption(cause), {
            onNone: () => Cause.isInterruptedOnly(cause) ? "interrupted" : "error",
            onSome: Metrics.outcomeOf
          })
        ),
        Effect.failCause(cause)
      )
    const countingAnswer = (key: string) => (response: LlmClient.Response): Effect.Effect<LlmClient.Response> => {
      const fiber = Option.getOrUndefined(Fiber.getCurrentFiber())
      countAnswerWith(key, response, fiber === undefined ? [] : fiber.getFiberRef(FiberRef.currentMetricLabels))
      return Effect.succeed(response)
    }

    const countTokens = options.count === "provider" ? inner.countTokens : undefined
    const estimateOf = (request: LlmClient.Request): Effect.Effect<TokenEstimator.Estimate> =>
      countTokens === undefined
        ? estimator.estimate(request)
        : Effect.flatMap(estimator.estimate(request), (estimate) =>
          Effect.map(Effect.option(countTokens(request)), (counted) =>
            Option.match(counted, {
              onNone: () => estimate,
              onSome: (inputTokens) => ({ ...estimate, inputTokens })
            })))

    /** The admission path's view of one call on one rung. */
    const admissionCall = (
      request: LlmClient.Request,
      key: string,
      estimate: TokenEstimator.Estimate
    ): Admission.Call => {
      const maxWait = request.metadata?.maxWait ?? options.maxWait
      return {
        key,
        request,
        estimate,
        counting: countingOf(request.model),
        priority: request.metadata?.priority ?? options.priority ?? "normal",
        ...(maxWait === undefined ? {} : { maxWait })
      }
    }

    /** One call on one rung: estimate, then the admission path (budget, limiter, call, settle, observe, learn). */
    const callOnce = (request: LlmClient.Request, key: string) =>
      Effect.flatMap(estimateOf(request), (estimate) =>
        admission.run(admissionCall(request, key, estimate), inner.complete(request), Admission.answerOfResponse))

    const onRung =
      (request: LlmClient.Request) => (rung: Fallback.Rung): Effect.Effect<LlmClient.Response, LlmClient.CallError> => {
        const routed = { ...request, model: rung.model }
        const key = rung.key ?? keyOf(routed, inner.provider)
        const call = counted(key, callOnce(routed, key))
        if (Option.isNone(breaker)) {
          return call
        }
        return breaker.value.run(key, call).pipe(
          Effect.catchTag("CircuitOpen", (open) =>
            Effect.zipRight(
              countOutcome(key, Metrics.outcomeOf(open)),
              // A native body is opaque to the coalescing key: its cached twin may be another request.
              routed.native === undefined ? coalescer.cached(routed) : Effect.succeed(Option.none<LlmClient.Response>())
            ).pipe(Effect.flatMap(Option.match({
              onNone: () =>
                Effect.fail<LlmClient.CallError>(open),
              onSome: Effect.succeed
            }))))
        )
      }

    const complete = (request: LlmClient.Request): Effect.Effect<LlmClient.Response, LlmClient.CallError> => {
      const rungs: ReadonlyArray<Fallback.Rung> = [{ model: request.model }, ...(options.fallback ?? [])]
      let tried: Array<{ readonly model: string; readonly key: string | undefined; readonly error: unknown }> = []
      // A pass after a failed one is a retry, counted against the key of the request's own model.
      let failedWith: string | undefined
      const pass = Effect.suspend(() => {
        tried = []
        // One rung (no fallback) is its attempt alone: the ladder never falls back from its last rung.
        const attempt = rungs.length === 1
          ? onRung(request)(rungs[0]!)
          : Fallback.ladder(rungs, onRung(request), (error, index) =>
            index < rungs.length - 1 && Fallback.isFallbackError(error), tried)
        return (failedWith === undefined ? attempt : Effect.zipRight(
          Metric.increment(counter(Metrics.callRetries, keyOf(request, inner.provider), "error", failedWith)),
          attempt
        )).pipe(Effect.tapError((error) =>
          Effect.sync(() =>
            void (failedWith = Metrics.outcomeOf(error))
          )
        ))
      })
      const retried = options.retry === false ? pass : Retry.retry(pass, options.retry ?? {})
      const reported = rungs.length === 1
        ? retried
        : Effect.catchAll(retried, (error) =>
          Fallback.isFallbackError(error)
            ? Effect.fail(
              new Fallback.AllRungsFailed({
                attempts: [...tried, { model: rungs[rungs.length - 1]!.model, key: undefined, error }]
              })
            )
            : Effect.fail(error))
      // A request carrying a provider-native body is never joined: two bodies may differ where their translations agree.
      const governed = options.coalesce === false || request.native !== undefined
        ? reported
        : coalescer.run(request, reported)
      return withSpan(governed, "Governor.complete", {
        attributes: { model: request.model },
        captureStackTrace: false
      })
    }

    /**
     * A streamed call: admitted like `complete` (budget and limiter), settled
     * when the stream's `Done` arrives, refunded when the provider refuses it.
     * Not retried or coalesced: a stream that already produced text cannot be
     * replayed safely.
     */
    const stream = (request: LlmClient.Request): Stream.Stream<LlmClient.StreamEvent, LlmClient.CallError> => {
      const key = keyOf(request, inner.provider)
      return Stream.unwrap(Effect.map(estimateOf(request), (estimate) =>
        admission.stream(admissionCall(request, key, estimate), inner.stream(request), Admission.answerOfEvent))).pipe(
          Stream.tap((event) =>
            event._tag === "Done" ? countAnswer(key, event.response) : Effect.void
          ),
          Stream.tapError((error) =>
            countOutcome(key, Metrics.outcomeOf(error))
          )
        )
    }

    return {
      provider: inner.provider,
      complete,
      stream,
      ...(inner.countTokens === undefined ? {} : { countTokens: inner.countTokens })
    }
  })

/**
 * A governed `LlmClient` over the `LlmClient` below it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<
  LlmClient.LlmClient,
  InvalidGovernorOptions,
  LlmClient.LlmClient | RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Layer.effect(
    LlmClient.LlmClient,
    Effect.flatMap(validate(options), (valid) => Effect.map(make(valid), LlmClient.LlmClient.of))
  )

/**
 * The Governor's options from configuration (environment variables by
 * default), validated, each error naming its variable:
 *
 * | variable | meaning | default |
 * |---|---|---|
 * | `SLUICE_RETRY_MAX_ATTEMPTS` | attempts per call, the first included (integer ≥ 1) | 6 |
 * | `SLUICE_RETRY_BASE` | first retry's delay bound (duration, e.g. `1 second`) | 1 second |
 * | `SLUICE_RETRY_MAX_DELAY` | cap on each delay (duration) | 60 seconds |
 * | `SLUICE_RETRY_MAX_ELAPSED` | give up after (duration) | 10 minutes |
 * | `SLUICE_FALLBACK` | comma-separated models to fall back to | none |
 * | `SLUICE_COALESCE` | join identical calls in flight (boolean) | true |
 * | `SLUICE_CACHE_TTL` | response cache for open breakers (duration) | off |
 * | `SLUICE_COUNT` | `estimate` or `provider` | estimate |
 * | `SLUICE_PER_TENANT` | tenants have their own quota keys (boolean) | false |
 * | `SLUICE_PREDICT_CACHE_READS` | reserve only what a cached prefix will count (boolean) | true |
 * | `SLUICE_PROMPT_CACHE_TTL` | how long a cached prefix is expected to live (duration) | 5 minutes |
 *
 * @since 0.1.0
 * @category utilities
 */
export const config: Config.Config<Options> = Config.all({
  maxAttempts: Config.integer("SLUICE_RETRY_MAX_ATTEMPTS").pipe(
    Config.validate({ message: "SLUICE_RETRY_MAX_ATTEMPTS must be an integer >= 1", validation: (n) => n >= 1 }),
    Config.withDefault(Retry.defaults.maxAttempts)
  ),
  base: Config.duration("SLUICE_RETRY_BASE").pipe(Config.withDefault(Retry.defaults.base)),
  maxDelay: Config.duration("SLUICE_RETRY_MAX_DELAY").pipe(Config.withDefault(Retry.defaults.maxDelay)),
  maxElapsed: Config.duration("SLUICE_RETRY_MAX_ELAPSED").pipe(Config.withDefault(Retry.defaults.maxElapsed)),
  fallback: Config.string("SLUICE_FALLBACK").pipe(
    Config.map((text) => text.split(",").map((model) => model.trim()).filter((model) => model !== "")),
    Config.withDefault([] as ReadonlyArray<string>)
  ),
  coalesce: Config.boolean("SLUICE_COALESCE").pipe(Config.withDefault(true)),
  cacheTtl: Config.option(Config.duration("SLUICE_CACHE_TTL")),
  count: Config.literal("estimate", "provider")("SLUICE_COUNT").pipe(Config.withDefault("estimate" as const)),
  perTenant: Config.boolean("SLUICE_PER_TENANT").pipe(Config.withDefault(false)),
  predictCacheReads: Config.boolean("SLUICE_PREDICT_CACHE_READS").pipe(Config.withDefault(true)),
  promptCacheTtl: Config.duration("SLUICE_PROMPT_CACHE_TTL").pipe(Config.withDefault(Duration.minutes(5)))
}).pipe(Config.map((values): Options => ({
  retry: {
    maxAttempts: values.maxAttempts,
    base: values.base,
    maxDelay: values.maxDelay,
    maxElapsed: values.maxElapsed
  },
  fallback: values.fallback.map((model) => ({ model })),
  coalesce: values.coalesce,
  count: values.count,
  perTenant: values.perTenant,
  predictCacheReads: values.predictCacheReads,
  promptCacheTtl: values.promptCacheTtl,
  ...(Option.isSome(values.cacheTtl) ? { cacheTtl: values.cacheTtl.value } : {})
})))

/**
 * A governed `LlmClient` configured from the environment (see {@link config}).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options> = config
): Layer.Layer<
  LlmClient.LlmClient,
  ConfigError.ConfigError | InvalidGovernorOptions,
  LlmClient.LlmClient | RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> => Layer.unwrapEffect(Effect.map(options, layer))
