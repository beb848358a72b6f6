/**
 * Quota-aware routing over a pool of deployments (or keys) that serve the
 * same models, each with its own quota, weight and breaker. The Router is
 * itself an `LlmClient`: provide it where you would provide a Governor.
 *
 * Each deployment gets a Governor of its own (estimate, budget, breaker,
 * limiter on the deployment's quota key, settle, observe the headers); the
 * Router adds, from the outside in:
 *
 * 1. **Coalescing** — identical calls in flight share one call.
 * 2. **Retry** — a retryable failure re-runs the whole route, so the retry
 *    goes wherever is best by then.
 * 3. **Fallback** — the request's model, then each `fallback` model; every rung
 *    is served by the pool of deployments that serve its model.
 * 4. **Routing** — among the deployments of the rung, the one that can admit
 *    the call soonest, by the limiter's own view of its buckets (what is
 *    left, the refill, the waiters queued ahead: `RateLimiter.admitsIn`);
 *    when several can admit at once, the one with the most left (as a
 *    fraction of its bucket) after the call, then the higher `weight`. A
 *    deployment whose key is paused (it answered 429, until its `retry-after`
 *    ends) or whose breaker is open (until half-open) drops out while any
 *    other is up. A sticky key keeps its calls on one deployment while that
 *    one is up and admits within `stickyWithin`.
 * 5. **Failover** — a `RateLimited`, `Overloaded` or `CircuitOpen` from a
 *    deployment moves the call at once to the next best deployment of the
 *    pool; when none is left, the rung fails with that error.
 *
 * Under a load above the pool's quota, each call joins the deployment whose
 * queue drains first, so the pool fills in proportion to the deployments'
 * quotas, and the limiter keeps each one below its quota (no 429s).
 *
 * @example
 * ```ts
 * import { Config, Effect, Layer } from "effect"
 * import { RateLimiter, Router, TokenEstimator } from "@sluice/core"
 * import { Anthropic } from "@sluice/providers"
 *
 * const RouterLive = Router.layerEffect(Effect.gen(function*() {
 *   const east = yield* Anthropic.make({ apiKey: yield* Config.redacted("ANTHROPIC_EAST_KEY") })
 *   const west = yield* Anthropic.make({ apiKey: yield* Config.redacted("ANTHROPIC_WEST_KEY") })
 *   return {
 *     deployments: [
 *       { name: "east", client: east, quota: { inputTokens: { limit: 400_000, per: "1 minute" } } },
 *       { name: "west", client: west, quota: { inputTokens: { limit: 200_000, per: "1 minute" } } }
 *     ]
 *   }
 * })).pipe(Layer.provide([RateLimiter.layerMemory(), TokenEstimator.layer()]))
 * // every LlmClient.complete now goes to east or west, whichever admits it first
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as CircuitBreaker from "./CircuitBreaker.js"
import * as Coalesce from "./Coalesce.js"
import * as Cost from "./Cost.js"
import * as Fallback from "./Fallback.js"
import * as Governor from "./Governor.js"
import * as LlmClient from "./LlmClient.js"
import type * as Priority from "./Priority.js"
import * as Quota from "./Quota.js"
import * as RateLimiter from "./RateLimiter.js"
import * as Retry from "./Retry.js"
import * as TokenEstimator from "./TokenEstimator.js"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * One deployment or key of the pool.
 *
 * @since 0.1.0
 * @category models
 */
export interface Deployment {
  /** A unique name: the `deployment` tag of the metrics, and the default quota key's prefix. */
  readonly name: string
  /** The provider client that reaches this deployment (its endpoint, its key). */
  readonly client: LlmClient.Provider
  /**
   * The limiter key of this deployment's quota for a model. Default
   * `name/model`. A string is one key for every model.
   */
  readonly key?: string | ((model: string) => string) | undefined
  /**
   * The deployment's quota, defined on its key (for each model) the first time
   * the Router uses it. Absent: the key's quota is whatever the limiter has
   * (configured there, or discovered from the first response's headers).
   */
  readonly quota?: Quota.QuotaInput | undefined
  /** Breaks ties between deployments that would admit a call equally soon. Default 1. */
  readonly weight?: number | undefined
  /** The models it serves. Default every model. */
  readonly models?: ReadonlyArray<string> | undefined
}

/**
 * Options of a Router. Only `deployments` is required.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The pool. At least one deployment; names unique. */
  readonly deployments: ReadonlyArray<Deployment>
  /**
   * Models to fall back to, in order, after the request's own; each rung is
   * served by the deployments that serve its model (a rung is a pool).
   */
  readonly fallback?: ReadonlyArray<{ readonly model: string }> | undefined
  /** The sticky key of a call. Default the request's `metadata.stickyKey`. */
  readonly sticky?: ((request: LlmClient.Request) => string | undefined) | undefined
  /**
   * How long a sticky call may wait for its deployment before it moves to a
   * better one. Default 2 seconds.
   */
  readonly stickyWithin?: Duration.DurationInput | undefined
  /** Sticky keys remembered, at most (the least recently used are forgotten). Default 10,000. */
  readonly maxStickyKeys?: number | undefined
  /** The retry policy around the whole route, or false for none. Default `Retry.defaults`. */
  readonly retry?: Retry.Options | false | undefined
  /** Join identical requests in flight. Default true. */
  readonly coalesce?: boolean | undefined
  /** Options of each deployment's Governor (its key, retry, coalescing and fallback belong to the Router). */
  readonly governor?: Pick<Governor.Options, "count" | "cacheReadsCount" | "priority" | "pauseWithoutHint"> | undefined
  /** The provider name the Router reports. Default the first deployment's. */
  readonly provider?: string | undefined
}

/**
 * Options that could not be accepted; each issue names its field (`deployments.1.weight`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRouterOptions extends Data.TaggedError("InvalidRouterOptions")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid Router options: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

const serves = (deployment: Deployment, model: string): boolean =>
  deployment.models === undefined || deployment.models.includes(model)

/**
 * Checks the options; the error names every wrong field.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validate = (options: Options): Either.Either<Options, InvalidRouterOptions> => {
  const issues: Array<{ path: string; message: string }> = []
  if (options.deployments.length === 0) {
    issues.push({ path: "deployments", message: "A pool needs at least one deployment" })
  }
  const names = new Set<string>()
  options.deployments.forEach((deployment, index) => {
    if (deployment.name === "") issues.push({ path: `deployments.${index}.name`, message: "A deployment needs a name" })
    if (names.has(deployment.name)) {
      issues.push({ path: `deployments.${index}.name`, message: `Duplicate deployment name "${deployment.name}"` })
    }
    names.add(deployment.name)
    const weight = deployment.weight
    if (weight !== undefined && !(Number.isFinite(weight) && weight > 0)) {
      issues.push({
        path: `deployments.${index}.weight`,
        message: `Expected a finite number > 0, got ${String(weight)}`
      })
    }
    if (deployment.quota !== undefined) {
      const decoded = Quota.decodeEither(deployment.quota, deployment.name)
      if (Either.isLeft(decoded)) {
        for (const issue of decoded.left.issues) {
          issues.push({
            path: `deployments.${index}.quota${issue.path === "" ? "" : `.${issue.path}`}`,
            message: issue.message
          })
        }
      }
    }
  })
  options.fallback?.forEach((rung, index) => {
    if (!options.deployments.some((deployment) => serves(deployment, rung.model))) {
      issues.push({ path: `fallback.${index}.model`, message: `No deployment serves model "${rung.model}"` })
    }
  })
  if (options.stickyWithin !== undefined && Option.isNone(Duration.decodeUnknown(options.stickyWithin))) {
    issues.push({
      path: "stickyWithin",
      message: `Expected a duration such as "2 seconds", got ${JSON.stringify(options.stickyWithin)}`
    })
  }
  if (options.maxStickyKeys !== undefined && !(Number.isInteger(options.maxStickyKeys) && options.maxStickyKeys >= 0)) {
    issues.push({ path: "maxStickyKeys", message: `Expected an integer >= 0, got ${String(options.maxStickyKeys)}` })
  }
  const governed = Governor.validate({
    ...options.governor,
    ...(options.retry === undefined ? {} : { retry: options.retry })
  })
  if (Either.isLeft(governed)) { for (const issue of governed.left.issues) issues.push(issue) }
  return issues.length === 0 ? Either.right(options) : Either.left(new InvalidRouterOptions({ issues }))
}

// ---------------------------------------------------------------------------
// Choosing: plain data
// ---------------------------------------------------------------------------

/**
 * What the Router knows of one deployment when it routes a call.
 *
 * @since 0.1.0
 * @category models
 */
export interface Candidate {
  readonly name: string
  readonly weight: number
  /** Its key is paused (a 429) or its breaker is open. */
  readonly down: boolean
  /** Milliseconds until it could admit the call (the pause included). */
  readonly wait: number
  /** Milliseconds until it is up again (0 when up). */
  readonly recoversIn: number
  /** The smallest fraction of a bucket left after the call (1 when the key has no known buckets). */
  readonly left: number
}

/**
 * Pure: the deployment to route a call to. The sticky one when it is up and
 * admits within `within` ms; else, among those up, the soonest to admit, then
 * the most left, then the heaviest, then the first listed; when none is up,
 * the first to recover (then to admit). Undefined only for no candidates.
 *
 * @example
 * ```ts
 * import { Router } from "@sluice/core"
 *
 * Router.choose([
 *   { name: "a", weight: 1, down: false, wait: 800, recoversIn: 0, left: 0 },
 *   { name: "b", weight: 1, down: false, wait: 200, recoversIn: 0, left: 0 }
 * ]) // b
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const choose = (
  candidates: ReadonlyArray<Candidate>,
  sticky?: { readonly name: string; readonly within: number } | undefined
): Candidate | undefined => {
  if (sticky !== undefined) {
    const kept = candidates.find((candidate) => candidate.name === sticky.name)
    if (kept !== undefined && !kept.down && kept.wait <= sticky.within) return kept
  }
  const up = candidates.filter((candidate) => !candidate.down)
  const better = up.length > 0
    ? (a: Candidate, b: Candidate) => Math.ceil(a.wait) - Math.ceil(b.wait) || b.left - a.left || b.weight - a.weight
    : (a: Candidate, b: Candidate) =>
      Math.ceil(a.recoversIn) - Math.ceil(b.recoversIn) || Math.ceil(a.wait) - Math.ceil(b.wait) || b.weight - a.weight
  let best: Candidate | undefined
  for (const candidate of up.length > 0 ? up : candidates) {
    if (best === undefined || better(candidate, best) < 0) best = candidate
  }
  return best
}

/**
 * Pure: the smallest fraction of a bucket that taking `amounts` leaves (negative when it would not fit now).
 *
 * @since 0.1.0
 * @category utilities
 */
export const fractionLeft = (levels: RateLimiter.KeyStats["levels"], amounts: Cost.Amounts): number => {
  let left = 1
  for (const dimension of Quota.dimensions) {
    const level = levels[dimension]
    if (level === undefined || level.capacity <= 0) continue
    left = Math.min(left, (level.level - amounts[dimension]) / level.capacity)
  }
  return left
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/**
 * Calls routed to each deployment (failovers and retries count again).
 *
 * @since 0.1.0
 * @category utilities
 */
export const routed = Metric.counter("sluice_router_routed_total", {
  description: "Calls the router sent to each deployment, tagged deployment",
  incremental: true
})

/**
 * Sticky calls that left their deployment because it was down or too slow to admit.
 *
 * @since 0.1.0
 * @category utilities
 */
export const stickyMoves = Metric.counter("sluice_router_sticky_moves_total", {
  description: "Sticky calls moved off their deployment, tagged deployment (the one left)",
  incremental: true
})

// ---------------------------------------------------------------------------
// The router
// ---------------------------------------------------------------------------

interface Member {
  readonly deployment: Deployment
  readonly index: number
  readonly weight: number
  readonly governed: LlmClient.Client<LlmClient.CallError>
  readonly keyOf: (model: string) => string
}

/**
 * Builds a Router over `options.deployments`. Uses the `RateLimiter` and the
 * `TokenEstimator` in context, and a `CircuitBreaker` and a `Budget` when they
 * are provided (each deployment's Governor uses them on its own key).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<
  LlmClient.Client<LlmClient.CallError>,
  never,
  RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    const estimator = yield* TokenEstimator.TokenEstimator
    const breaker = yield* Effect.serviceOption(CircuitBreaker.CircuitBreaker)
    const coalescer = yield* Coalesce.make<LlmClient.Response>()
    const provider = options.provider ?? options.deployments[0]?.client.provider ?? "router"
    const stickyOf = options.sticky ?? ((request: LlmClient.Request) => request.metadata?.stickyKey)
    const stickyWithin = Duration.toMillis(Duration.decode(options.stickyWithin ?? Duration.seconds(2)))
    const maxStickyKeys = options.maxStickyKeys ?? 10_000

    const members: ReadonlyArray<Member> = yield* Effect.forEach(options.deployments, (deployment, index) => {
      const keyOf = (model: string) =>
        deployment.key === undefined
          ? `${deployment.name}/${model}`
          : typeof deployment.key === "string"
          ? deployment.key
          : deployment.key(model)
      return Effect.map(
        Governor.make({ ...options.governor, key: (request) => keyOf(request.model), retry: false, coalesce: false })
          .pipe(
            Effect.provideService(LlmClient.LlmClient, deployment.client)
          ),
        (governed): Member => ({ deployment, index, weight: deployment.weight ?? 1, governed, keyOf })
      )
    })

    /** Keys whose quota this Router has defined. */
    const defined = new Set<string>()
    const defineOnce = (member: Member, key: string) =>
      Effect.suspend(() => {
        if (member.deployment.quota === undefined || defined.has(key)) return Effect.void
        defined.add(key)
        return limiter.define(key, member.deployment.quota).pipe(
          Effect.catchAll((error) =>
            Effect.logError(`Sluice router could not define the quota of deployment "${member.deployment.name}"`, error)
          )
        )
      })

    /** Sticky key -> deployment name, least recently used first. */
    const stickiness = new Map<string, string>()
    const remember = (stickyKey: string, name: string) =>
      Effect.sync(() => {
        stickiness.delete(stickyKey)
        if (maxStickyKeys === 0) return
        stickiness.set(stickyKey, name)
        if (stickiness.size > maxStickyKeys) stickiness.delete(stickiness.keys().next().value!)
      })

    /** The limiter's and the breaker's view of one deployment for one call. */
    const look = (member: Member, model: string, amounts: Cost.Amounts, priority: Priority.Class, now: number) =>
      Effect.gen(function*() {
        const key = member.keyOf(model)
        yield* defineOnce(member, key)
        const stats = yield* limiter.stats(key)
        const wait = Duration.toMillis(yield* limiter.admitsIn(key, amounts, { priority }))
        let recoversIn = Duration.toMillis(stats.pausedFor)
        if (Option.isSome(breaker)) {
          const state = yield* breaker.value.stats(key)
          if (state.state === "open") recoversIn = Math.max(recoversIn, (state.probeAt ?? now) - now)
        }
        return {
          name: member.deployment.name,
          weight: member.weight,
          down: recoversIn > 0,
          wait,
          recoversIn,
          left: fractionLeft(stats.levels, amounts)
        } satisfies Candidate
      }).pipe(
        // A limiter that cannot tell (its store is down) must not stop the routing.
        Effect.catchAll(() =>
          Effect.succeed<Candidate>({
            name: member.deployment.name,
            weight: member.weight,
            down: false,
            wait: 0,
            recoversIn: 0,
            left: 0
          })
        )
      )

    /** Picks the member for one call among `pool`, and remembers the sticky choice. */
    const route = (request: LlmClient.Request, pool: ReadonlyArray<Member>) =>
      Effect.gen(function*() {
        const estimate = yield* estimator.estimate(request)
        const amounts = Cost.amounts({ inputTokens: estimate.inputTokens, outputTokens: estimate.outputTokens })
        const priority = request.metadata?.priority ?? options.governor?.priority ?? "normal"
        const now = yield* Clock.currentTimeMillis
        const candidates = yield* Effect.forEach(pool, (member) => look(member, request.model, amounts, priority, now))
        const stickyKey = stickyOf(request)
        const stuck = stickyKey === undefined ? undefined : stickiness.get(stickyKey)
        const chosen = choose(candidates, stuck === undefined ? undefined : { name: stuck, within: stickyWithin }) ??
          candidates[0]!
        const member = pool.find((m) => m.deployment.name === chosen.name)!
        if (stickyKey !== undefined) {
          if (stuck !== undefined && stuck !== chosen.name) {
            yield* Metric.increment(Metric.tagged(stickyMoves, "deployment", stuck))
            yield* Effect.logDebug(`Sluice router moved sticky key "${stickyKey}" from "${stuck}" to "${chosen.name}"`)
          }
          yield* remember(stickyKey, chosen.name)
        }
        return { member, chosen }
      })

    const poolOf = (model: string) => members.filter((member) => serves(member.deployment, model))

    const unserved = (model: string) =>
      new LlmClient.NotFound({
        provider,
        model,
        status: 404,
        detail: `No deployment of the router serves model "${model}"`
      })

    /**
     * One rung: route, call, and on a rate limit, overload or open breaker
     * move at once to the next best deployment not tried yet. When every
     * deployment is down and a later rung exists, the rung fails at once
     * (`RateLimited`, its `retryAfter` the soonest recovery) instead of
     * waiting for a pause to end.
     */
    const onPool = (
      request: LlmClient.Request,
      hasNext: boolean
    ): Effect.Effect<LlmClient.Response, LlmClient.CallError> => {
      const pool = poolOf(request.model)
      if (pool.length === 0) return Effect.fail(unserved(request.model))
      const attempt = (tried: ReadonlySet<string>): Effect.Effect<LlmClient.Response, LlmClient.CallError> =>
        Effect.flatMap(
          route(request, pool.filter((member) => !tried.has(member.deployment.name))),
          ({ chosen, member }) =>
            hasNext && chosen.down
              ? Effect.fail(
                new LlmClient.RateLimited({
                  provider,
                  model: request.model,
                  detail: `Every deployment serving ${request.model} is paused after a 429 or has its breaker open`,
                  retryAfter: Duration.millis(Math.ceil(chosen.recoversIn))
                })
              )
              : Effect.zipRight(
                Metric.increment(Metric.tagged(routed, "deployment", chosen.name)),
                member.governed.complete(request)
              ).pipe(
                Effect.withSpan("Router.deployment", {
                  attributes: { deployment: member.deployment.name, model: request.model },
                  captureStackTrace: false
                }),
                Effect.catchAll((error) => {
                  const next = new Set(tried).add(member.deployment.name)
                  return Fallback.isFallbackError(error) && next.size < pool.length
                    ? Effect.zipRight(
                      Effect.logDebug(`Sluice router failed over from "${member.deployment.name}": ${error._tag}`),
                      attempt(next)
                    )
                    : Effect.fail(error)
                })
              )
        )
      return attempt(new Set())
    }

    const complete = (request: LlmClient.Request): Effect.Effect<LlmClient.Response, LlmClient.CallError> => {
      const rungs: ReadonlyArray<Fallback.Rung> = [{ model: request.model }, ...(options.fallback ?? [])]
      let tried: Array<{ readonly model: string; readonly key: string | undefined; readonly error: unknown }> = []
      const pass = Effect.suspend(() => {
        tried = []
        return Fallback.ladder(
          rungs,
          (rung, index) => onPool({ ...request, model: rung.model }, index < rungs.length - 1),
          (error, index) => index < rungs.length - 1 && Fallback.isFallbackError(error),
          tried
        )
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
      const coalesced = options.coalesce === false ? reported : coalescer.run(request, reported)
      return coalesced.pipe(
        Effect.withSpan("Router.complete", { attributes: { model: request.model }, captureStackTrace: false })
      )
    }

    /** A streamed call: routed once (a stream that produced text cannot move), not retried. */
    const stream = (request: LlmClient.Request): Stream.Stream<LlmClient.StreamEvent, LlmClient.CallError> => {
      const pool = poolOf(request.model)
      if (pool.length === 0) return Stream.fail(unserved(request.model))
      return Stream.unwrap(Effect.map(route(request, pool), ({ chosen, member }) =>
        Stream.concat(
          Stream.execute(Metric.increment(Metric.tagged(routed, "deployment", chosen.name))),
          member.governed.stream(request)
        )))
    }

    const countTokens = (request: LlmClient.Request): Effect.Effect<number, LlmClient.CallError> => {
      const counter = poolOf(request.model).find((member) => member.deployment.client.countTokens !== undefined)
      return counter === undefined
        ? Effect.fail(unserved(request.model))
        : counter.deployment.client.countTokens!(request)
    }

    return { provider, complete, stream, countTokens }
  })

/**
 * A Router as the `LlmClient`, over deployments whose clients are at hand.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { type LlmClient, RateLimiter, Router, TokenEstimator } from "@sluice/core"
 *
 * const routerLive = (a: LlmClient.Provider, b: LlmClient.Provider) =>
 *   Router.layer({ deployments: [{ name: "a", client: a }, { name: "b", client: b, weight: 2 }] }).pipe(
 *     Layer.provide([RateLimiter.layerMemory(), TokenEstimator.layer()])
 *   )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<
  LlmClient.LlmClient,
  InvalidRouterOptions,
  RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Layer.effect(
    LlmClient.LlmClient,
    Effect.flatMap(validate(options), (valid) => Effect.map(make(valid), LlmClient.LlmClient.of))
  )

/**
 * A Router as the `LlmClient`, its options built by an effect (which may open
 * the deployments' clients in the layer's scope).
 *
 * @example
 * ```ts
 * import { Config, Effect } from "effect"
 * import { Router } from "@sluice/core"
 * import { Anthropic } from "@sluice/providers"
 *
 * const RouterLive = Router.layerEffect(Effect.gen(function*() {
 *   const east = yield* Anthropic.make({ apiKey: yield* Config.redacted("ANTHROPIC_EAST_KEY") })
 *   const west = yield* Anthropic.make({ apiKey: yield* Config.redacted("ANTHROPIC_WEST_KEY") })
 *   return { deployments: [{ name: "east", client: east }, { name: "west", client: west }] }
 * }))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEffect = <E, R>(options: Effect.Effect<Options, E, R>): Layer.Layer<
  LlmClient.LlmClient,
  E | InvalidRouterOptions,
  Exclude<R, Scope.Scope> | RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Layer.scoped(
    LlmClient.LlmClient,
    Effect.flatMap(Effect.flatMap(options, validate), (valid) => Effect.map(make(valid), LlmClient.LlmClient.of))
  )
