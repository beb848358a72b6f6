/**
 * A circuit breaker per key (provider + model): closed, open, half-open.
 *
 * - **Closed**: calls pass. The breaker opens when `consecutiveFailures`
 *   counted failures come in a row, or when, over the last `failureRate.window`,
 *   at least `minCalls` calls ended and more than `threshold` of them failed.
 * - **Open**: calls fail at once with {@link CircuitOpen}, which says when the
 *   breaker will let a probe through (`probeAt` = opened + `openFor`).
 * - **Half-open**: from `probeAt`, up to `halfOpenProbes` calls pass as probes
 *   and the rest fail fast. The first probe to succeed closes the breaker (its
 *   counts start afresh); the first to fail re-opens it for another `openFor`.
 *
 * What counts as a failure is `isFailure` (default: a retryable provider error
 * — 429, 529, 5xx, timeouts, network errors — i.e. trouble on the provider's
 * side). Any other outcome — a `BadRequest`, which is the caller's fault, a
 * non-provider error, a defect, an interruption — is neutral: it neither
 * counts as a failure nor resets the run of failures, and a neutral probe
 * frees its slot for another. An outcome that arrives after the breaker has
 * changed state since its call was let through (a slow call from before it
 * opened) is ignored.
 *
 * Time is read only through `Clock`; the move from open to half-open happens
 * when the next call (or `state`) looks at the key after `probeAt`, so no fiber
 * runs in the background. Every transition is logged, counted in
 * `sluice_breaker_transitions_total{key,from,to}` and reflected in the gauge
 * `sluice_breaker_state{key}` (0 closed, 1 half-open, 2 open).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker, LlmClient } from "@sluice/core"
 *
 * const call = (request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const breaker = yield* CircuitBreaker.CircuitBreaker
 *     const client = yield* LlmClient.LlmClient
 *     return yield* breaker.run(`anthropic/${request.model}`, client.complete(request))
 *   })
 *
 * const BreakerLive = CircuitBreaker.layer({ consecutiveFailures: 5, openFor: "30 seconds" })
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Retry from "./Retry.js"
import { CircuitOpen, type CircuitReason } from "./SluiceError.js"

// ---------------------------------------------------------------------------
// States, reasons, errors
// ---------------------------------------------------------------------------

/**
 * Where a key's breaker stands.
 *
 * @since 0.1.0
 * @category models
 */
export type State = "closed" | "half-open" | "open"

/**
 * Why a breaker opened: a run of failures, the failure rate over the window,
 * or a failed probe while half-open.
 *
 * @since 0.1.0
 * @category models
 */
export type Reason = CircuitReason

// Defined in `SluiceError` with every error a call can fail with; named here as the breaker's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  CircuitOpen
} from "./SluiceError.js"

const formatInstant = (millis: number): string => new Date(millis).toISOString()

/**
 * A change of state of one key's breaker, as `onTransition` receives it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transition {
  readonly key: string
  readonly from: State
  readonly to: State
  /** When it happened (ms, Clock). */
  readonly at: number
  /** Why, when the breaker opened. */
  readonly reason?: Reason | undefined
}

/**
 * What a key's breaker knows right now.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly key: string
  readonly state: State
  /** Counted failures in a row (closed only). */
  readonly consecutiveFailures: number
  /** Calls that ended, and the counted failures among them, over the failure-rate window (closed only). */
  readonly windowCalls: number
  readonly windowFailures: number
  /** Probes under way (half-open only). */
  readonly probesInFlight: number
  /** When it last opened, when it probes, and why (open and half-open only). */
  readonly openedAt?: number | undefined
  readonly probeAt?: number | undefined
  readonly reason?: Reason | undefined
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * Opening on the failure rate over a sliding window.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailureRateOptions {
  /** Opens when the share of failed calls is more than this. Default 0.5. */
  readonly threshold?: number | undefined
  /** …with at least this many calls ended in the window. Default 20. */
  readonly minCalls?: number | undefined
  /** The window, sliding in steps of 1/60 of it. Default 1 minute. */
  readonly window?: Duration.DurationInput | undefined
}

/**
 * The breaker's knobs. Every field has a default ({@link defaults}).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Opens after this many counted failures in a row; `false` turns the rule off. Default 5. */
  readonly consecutiveFailures?: number | false | undefined
  /** Opens on the failure rate over a window; `false` turns the rule off. Default `{ threshold: 0.5, minCalls: 20, window: "1 minute" }`. */
  readonly failureRate?: FailureRateOptions | false | undefined
  /** How long it stays open before it lets probes through. Default 30 seconds. */
  readonly openFor?: Duration.DurationInput | undefined
  /** Calls let through at once while half-open; the others fail fast. Default 1. */
  readonly halfOpenProbes?: number | undefined
  /** Which errors count as failures. Default: retryable provider errors ({@link Retry.isRetryable}). */
  readonly isFailure?: ((error: unknown) => boolean) | undefined
  /** Runs after every transition, e.g. to switch a fallback; its failures are ignored (a defect is logged). */
  readonly onTransition?: ((transition: Transition) => Effect.Effect<void>) | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  consecutiveFailures: 5,
  failureRate: { threshold: 0.5, minCalls: 20, window: Duration.minutes(1) },
  openFor: Duration.seconds(30),
  halfOpenProbes: 1
} as const

interface Config {
  readonly consecutiveFailures: number
  readonly failureRate: {
    readonly threshold: number
    readonly minCalls: number
    readonly windowMillis: number
    readonly stepMillis: number
  } | undefined
  readonly openForMillis: number
  readonly halfOpenProbes: number
  readonly isFailure: (error: unknown) => boolean
}

const configOf = (options: Options): Config => {
  const rate = options.failureRate === false ? undefined : options.failureRate ?? {}
  const windowMillis = Math.max(1, Duration.toMillis(rate?.window ?? defaults.failureRate.window))
  return {
    consecutiveFailures: options.consecutiveFailures === false
      ? Infinity
      : Math.max(1, options.consecutiveFailures ?? defaults.consecutiveFailures),
    failureRate: rate === undefined ? undefined : {
      threshold: rate.threshold ?? defaults.failureRate.threshold,
      minCalls: Math.max(1, rate.minCalls ?? defaults.failureRate.minCalls),
      windowMillis,
      stepMillis: Math.max(1, Math.ceil(windowMillis / 60))
    },
    openForMillis: Math.max(0, Duration.toMillis(options.openFor ?? defaults.openFor)),
    halfOpenProbes: Math.max(1, Math.floor(options.halfOpenProbes ?? defaults.halfOpenProbes)),
    isFailure: options.isFailure ?? Retry.isRetryable
  }
}

// ---------------------------------------------------------------------------
// The state machine, as plain functions
// ---------------------------------------------------------------------------

/** Calls and failures that ended in one step of the window, from `start`. */
interface Bucket {
  readonly start: number
  readonly calls: number
  readonly failures: number
}

/** A key's state. `generation` changes on every transition, so late outcomes can be told apart. */
type KeyState =
  | {
    readonly _tag: "Closed"
    readonly generation: number
    readonly consecutive: number
    readonly buckets: ReadonlyArray<Bucket>
  }
  | {
    readonly _tag: "Open"
    readonly generation: number
    readonly openedAt: number
    readonly probeAt: number
    readonly reason: Reason
  }
  | {
    readonly _tag: "HalfOpen"
    readonly generation: number
    readonly openedAt: number
    readonly probeAt: number
    readonly reason: Reason
    readonly probes: number
  }

type Outcome = "success" | "failure" | "neutral"

interface Ticket {
  readonly generation: number
}

const closed = (generation: number): KeyState => ({ _tag: "Closed", generation, consecutive: 0, buckets: [] })

const stateOf = (state: KeyState): State =>
  state._tag === "Closed" ? "closed" : state._tag === "Open" ? "open" : "half-open"

const level: Record<State, number> = { closed: 0, "half-open": 1, open: 2 }

interface Step<A> {
  readonly state: KeyState
  readonly result: A
  readonly transitions: ReadonlyArray<Transition>
}

const transition = (key: string, from: KeyState, to: KeyState, at: number): Transition => ({
  key,
  from: stateOf(from),
  to: stateOf(to),
  at,
  reason: to._tag === "Open" ? to.reason : undefined
})

/** Open past its `probeAt` becomes half-open. */
const advance = (key: string, state: KeyState, now: number): Step<void> => {
  if (state._tag !== "Open" || now < state.probeAt) return { state, result: undefined, transitions: [] }
  const next: KeyState = { ...state, _tag: "HalfOpen", generation: state.generation + 1, probes: 0 }
  return { state: next, result: undefined, transitions: [transition(key, state, next, now)] }
}

const admit = (key: string, config: Config, current: KeyState, now: number): Step<Ticket | CircuitOpen> => {
  const advanced = advance(key, current, now)
  const state = advanced.state
  const refuse = (
    s: { readonly openedAt: number; readonly probeAt: number; readonly reason: Reason },
    as: "open" | "half-open"
  ) => ({
    ...advanced,
    result: new CircuitOpen({ key, openedAt: s.openedAt, probeAt: s.probeAt, reason: s.reason, state: as })
  })
  switch (state._tag) {
    case "Closed":
      return { ...advanced, result: { generation: state.generation } }
    case "Open":
      return refuse(state, "open")
    case "HalfOpen":
      return state.probes < config.halfOpenProbes
        ? { ...advanced, state: { ...state, probes: state.probes + 1 }, result: { generation: state.generation } }
        : refuse(state, "half-open")
  }
}

const prune = (config: Config, buckets: ReadonlyArray<Bucket>, now: number): ReadonlyArray<Bucket> => {
  const rate = config.failureRate
  if (rate === undefined) return []
  const from = now - rate.windowMillis
  return buckets.filter((bucket) => bucket.start + rate.stepMillis > from)
}

const recordCall = (
  config: Config,
  buckets: ReadonlyArray<Bucket>,
  now: number,
  failed: boolean
): ReadonlyArray<Bucket> => {
  const rate = config.failureRate
  if (rate === undefined) return []
  const kept = prune(config, buckets, now)
  const start = now - (now % rate.stepMillis)
  const last = kept[kept.length - 1]
  return last !== undefined && last.start === start
    ? [...kept.slice(0, -1), { start, calls: last.calls + 1, failures: last.failures + (failed ? 1 : 0) }]
    : [...kept, { start, calls: 1, failures: failed ? 1 : 0 }]
}

const totals = (buckets: ReadonlyArray<Bucket>) =>
  buckets.reduce((sum, bucket) => ({ calls: sum.calls + bucket.calls, failures: sum.failures + bucket.failures }), {
    calls: 0,
    failures: 0
  })

const open = (state: KeyState, now: number, config: Config, reason: Reason): KeyState => ({
  _tag: "Open",
  generation: state.generation + 1,
  openedAt: now,
  probeAt: now + config.openForMillis,
  reason
})

const settle = (
  key: string,
  config: Config,
  current: KeyState,
  ticket: Ticket,
  outcome: Outcome,
  now: number
): Step<void> => {
  const advanced = advance(key, current, now)
  const state = advanced.state
  const unchanged = advanced
  if (state.generation !== ticket.generation || (outcome === "neutral" && state._tag === "Closed")) return unchanged
  const moveTo = (next: KeyState): Step<void> => ({
    state: next,
    result: undefined,
    transitions: [...advanced.transitions, transition(key, state, next, now)]
  })
  switch (state._tag) {
    case "Open":
      return unchanged
    case "HalfOpen":
      return outcome === "success"
        ? moveTo(closed(state.generation + 1))
        : outcome === "failure"
        ? moveTo(open(state, now, config, "probe-failed"))
        : { ...advanced, state: { ...state, probes: Math.max(0, state.probes - 1) } }
    case "Closed": {
      const failed = outcome === "failure"
      const consecutive = failed ? state.consecutive + 1 : 0
      const buckets = recordCall(config, state.buckets, now, failed)
      if (failed && consecutive >= config.consecutiveFailures) {
        return moveTo(open(state, now, config, "consecutive-failures"))
      }
      const rate = config.failureRate
      if (failed && rate !== undefined) {
        const { calls, failures } = totals(buckets)
        if (calls >= rate.minCalls && failures / calls > rate.threshold) {
          return moveTo(open(state, now, config, "failure-rate"))
        }
      }
      return { ...advanced, state: { ...state, consecutive, buckets } }
    }
  }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/**
 * Transitions, tagged `key`, `from` and `to`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const transitions = Metric.counter("sluice_breaker_transitions_total", {
  description: "Circuit breaker transitions, by key and the states left and entered",
  incremental: true
})

/**
 * Each key's state: 0 closed, 1 half-open, 2 open.
 *
 * @since 0.1.0
 * @category utilities
 */
export const stateGauge = Metric.gauge("sluice_breaker_state", {
  description: "Circuit breaker state by key: 0 closed, 1 half-open, 2 open"
})

// ---------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------

/**
 * Circuit breakers, one per key, created on first use.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker, LlmClient } from "@sluice/core"
 *
 * const call = (request: LlmClient.Request, fallback: Effect.Effect<LlmClient.Response, LlmClient.CallError>) =>
 *   Effect.gen(function*() {
 *     const breaker = yield* CircuitBreaker.CircuitBreaker
 *     const client = yield* LlmClient.LlmClient
 *     return yield* breaker.run("anthropic/claude-sonnet-4-5", client.complete(request)).pipe(
 *       Effect.catchTag("CircuitOpen", () => fallback)
 *     )
 *   })
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class CircuitBreaker extends Context.Tag("@sluice/core/CircuitBreaker")<CircuitBreaker, {
  /**
   * Runs `effect` under the breaker of `key`: fails at once with `CircuitOpen`
   * when the breaker is open (or half-open with its probes taken), else runs it
   * and records its outcome.
   */
  readonly run: <A, E, R>(key: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpen, R>
  /** The key's state; an open breaker past its `probeAt` turns half-open here. */
  readonly state: (key: string) => Effect.Effect<State>
  /** The key's counts and times. */
  readonly stats: (key: string) => Effect.Effect<Stats>
}>() {}

/**
 * Builds the breakers. Every key shares `options`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CircuitBreaker } from "@sluice/core"
 *
 * const program = Effect.gen(function*() {
 *   const breaker = yield* CircuitBreaker.make({ consecutiveFailures: 3, openFor: "10 seconds" })
 *   return yield* breaker.state("anthropic/claude-haiku-4-5") // "closed"
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<CircuitBreaker["Type"]> =>
  Effect.gen(function*() {
    const config = configOf(options)
    const states = yield* Ref.make(HashMap.empty<string, KeyState>())

    const report = (key: string, step: { readonly transitions: ReadonlyArray<Transition> }, created: boolean) =>
      Effect.gen(function*() {
        if (created) yield* Metric.set(Metric.tagged(stateGauge, "key", key), level.closed)
        for (const change of step.transitions) {
          const counter = Metric.tagged(
            Metric.tagged(Metric.tagged(transitions, "key", key), "from", change.from),
            "to",
            change.to
          )
          yield* Metric.increment(counter)
          yield* Metric.set(Metric.tagged(stateGauge, "key", key), level[change.to])
          const annotations = { key, from: change.from, to: change.to }
          if (change.to === "open") {
            const probeAt = formatInstant(change.at + config.openForMillis)
            yield* Effect.annotateLogs(
              Effect.logWarning(
                `Sluice circuit breaker for key "${key}" opened (${
                  change.reason ?? "unknown"
                }); it probes at ${probeAt}`
              ),
              annotations
            )
          } else {
            yield* Effect.annotateLogs(
              Effect.logInfo(`Sluice circuit breaker for key "${key}" is ${change.to}`),
              annotations
            )
          }
          if (options.onTransition !== undefined) {
            yield* options.onTransition(change).pipe(
              Effect.catchAllDefect((defect) =>
                Effect.logError(`Sluice circuit breaker onTransition failed for key "${key}"`, Cause.die(defect))
              )
            )
          }
        }
      })

    /** Applies a step to a key's state atomically, then reports its transitions. */
    const update = <A>(key: string, f: (state: KeyState, now: number) => Step<A>): Effect.Effect<A> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.flatMap(
          Ref.modify(states, (map) => {
            const found = HashMap.get(map, key)
            const step = f(Option.getOrElse(found, () => closed(0)), now)
            return [{ step, created: Option.isNone(found) }, HashMap.set(map, key, step.state)] as const
          }),
          ({ created, step }) => Effect.as(report(key, step, created), step.result)
        ))

    const outcomeOf = <A, E>(exit: Exit.Exit<A, E>): Outcome =>
      Exit.isSuccess(exit)
        ? "success"
        : Option.match(Cause.failureOption(exit.cause), {
          onNone: () => "neutral",
          onSome: (error) => config.isFailure(error) ? "failure" : "neutral"
        })

    const run = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | CircuitOpen, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          update(key, (state, now) => admit(key, config, state, now)),
          (ticket): Effect.Effect<A, E | CircuitOpen, R> =>
            ticket instanceof CircuitOpen
              ? Effect.fail(ticket)
              : restore(effect).pipe(
                Effect.onExit((exit) =>
                  update(key, (state, now) => settle(key, config, state, ticket, outcomeOf(exit), now))
                )
              )
        )
      )

    const stats = (key: string): Effect.Effect<Stats> =>
      update(key, (current, now) => {
        const step = advance(key, current, now)
        const state = step.state
        const window = state._tag === "Closed" ? totals(prune(config, state.buckets, now)) : { calls: 0, failures: 0 }
        const result: Stats = {
          key,
          state: stateOf(state),
          consecutiveFailures: state._tag === "Closed" ? state.consecutive : 0,
          windowCalls: window.calls,
          windowFailures: window.failures,
          probesInFlight: state._tag === "HalfOpen" ? state.probes : 0,
          openedAt: state._tag === "Closed" ? undefined : state.openedAt,
          probeAt: state._tag === "Closed" ? undefined : state.probeAt,
          reason: state._tag === "Closed" ? undefined : state.reason
        }
        return { ...step, result }
      })

    return CircuitBreaker.of({
      run,
      state: (key) => Effect.map(stats(key), (s) => s.state),
      stats
    })
  })

/**
 * The breakers as a layer.
 *
 * @example
 * ```ts
 * import { CircuitBreaker } from "@sluice/core"
 *
 * const BreakerLive = CircuitBreaker.layer({ failureRate: { threshold: 0.5, minCalls: 20, window: "1 minute" } })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<CircuitBreaker> => Layer.effect(CircuitBreaker, make(options))
