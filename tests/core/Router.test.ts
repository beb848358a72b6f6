import { describe, expect, it } from "@effect/vitest"
import { CircuitBreaker, Cost, LlmClient, RateLimiter, Router, TokenEstimator } from "@sluice/core"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Clock, Duration, Effect, Exit, Fiber, Layer, Metric, TestClock } from "effect"

const MODEL = "claude-haiku-4-5"

type SimQuota = NonNullable<SimulatedClient.Options["quota"]>
type Faults = SimulatedClient.Options["faults"]

/** The limiter's quota for a simulated deployment: exactly the simulator's. */
const limiterQuota = (quota: SimQuota) => ({
  requests: { limit: quota.requestsPerMinute, per: "1 minute" },
  inputTokens: { limit: quota.inputTokensPerMinute, per: "1 minute" },
  outputTokens: { limit: quota.outputTokensPerMinute, per: "1 minute" }
})

/** A character-count estimator: these tests are about routing, not tiktoken. */
const EstimatorFast = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)
const Base = Layer.merge(RateLimiter.layerMemory(), EstimatorFast)

interface Spec {
  readonly name: string
  readonly quota: SimQuota
  readonly faults?: Faults
  readonly models?: ReadonlyArray<string>
  readonly weight?: number
}

/** A Router over one in-process simulator per deployment, each with its own quota; and each simulator's stats. */
const pool = (specs: ReadonlyArray<Spec>, options: Omit<Router.Options, "deployments"> = {}) =>
  Effect.gen(function*() {
    const sims = yield* Effect.forEach(specs, (spec, i) =>
      SimulatedClient.make({ quota: spec.quota, faults: spec.faults, seed: i + 1 }))
    const router = yield* Router.make({
      ...options,
      deployments: specs.map((spec, i) => ({
        name: spec.name,
        client: sims[i]!.client,
        quota: limiterQuota(spec.quota),
        weight: spec.weight,
        models: spec.models
      }))
    })
    /** What each deployment's provider counted, summed over models. */
    const seen = Effect.forEach(specs, (spec, i) =>
      Effect.map(sims[i]!.stats.stats, ({ keys }) => ({
        name: spec.name,
        accepted: keys.reduce((sum, key) =>
          sum + key.accepted, 0),
        rateLimited: keys.reduce((sum, key) => sum + key.rateLimited, 0),
        overloaded: keys.reduce((sum, key) => sum + key.overloaded, 0),
        inputTokens: keys.reduce((sum, key) => sum + key.inputTokens, 0)
      })))
    return { router, seen }
  })

/** Call `i`: uneven sizes, about 70 to 500 input tokens. */
const ask = (i: number, metadata?: LlmClient.RequestMetadata): LlmClient.Request => ({
  model: MODEL,
  messages: [{
    role: "user",
    content: `Document ${i}: ${"quarterly figures for the northern region and the outlook. ".repeat(4 + (i * 7) % 29)}`
  }],
  maxOutputTokens: 60,
  ...(metadata === undefined ? {} : { metadata })
})

/** Advances the clock `step` at a time until every fiber is done. */
const drain = <A, E>(fibers: ReadonlyArray<Fiber.RuntimeFiber<A, E>>, step: Duration.DurationInput = "1 second") =>
  Effect.gen(function*() {
    for (let round = 0; round < 2_000 && fibers.some((fiber) => fiber.unsafePoll() === null); round++) {
      yield* TestClock.adjust(step)
    }
    return yield* Effect.forEach(fibers, Fiber.await)
  })

const routedTo = (name: string) =>
  Effect.map(Metric.value(Metric.tagged(Router.routed, "deployment", name)), (state) => state.count)

describe("Router", () => {
  it.scoped("a pool of three deployments with quotas 1:2:3 under a saturating load is filled 1:2:3, with no 429s", () =>
    Effect.gen(function*() {
      const unit = { requestsPerMinute: 100, inputTokensPerMinute: 4_000, outputTokensPerMinute: 10_000 }
      const times = (k: number): SimQuota => ({
        requestsPerMinute: unit.requestsPerMinute * k,
        inputTokensPerMinute: unit.inputTokensPerMinute * k,
        outputTokensPerMinute: unit.outputTokensPerMinute * k
      })
      const { router, seen } = yield* pool([
        { name: "prop-small", quota: times(1) },
        { name: "prop-medium", quota: times(2) },
        { name: "prop-large", quota: times(3) }
      ])
      // 300 calls of 70 to 500 input tokens, 40 at a time: more than twice what the pool admits in a minute.
      const load = yield* Effect.fork(
        Effect.forEach(
          Array.from({ length: 300 }, (_, i) => ask(i)),
          (request) => Effect.exit(router.complete(request)),
          { concurrency: 40 }
        )
      )
      const [exit] = yield* drain([load])
      const exits = Exit.isSuccess(exit!) ? exit.value : []
      expect(exits.filter(Exit.isSuccess).length).toBe(300)
      const stats = yield* seen
      const total = stats.reduce((sum, s) => sum + s.inputTokens, 0)
      const shares = stats.map((s) => s.inputTokens / total)
      // the pool as a whole ran at its quota: the 24,000-token burst, then 24,000 tokens a minute
      const ideal = (total - 24_000) / 24_000 * 60
      expect((yield* Clock.currentTimeMillis) / 1000).toBeLessThan(1.05 * ideal + 2)
      for (const s of stats) expect(s.rateLimited).toBe(0)
      // each deployment's share of the binding dimension (input tokens) is its share of the quota, within 3 points
      for (const [i, share] of shares.entries()) expect(Math.abs(share - (i + 1) / 6)).toBeLessThan(0.03)
    }).pipe(Effect.provide(Base)))

  const equal: SimQuota = { requestsPerMinute: 60, inputTokensPerMinute: 6_000, outputTokensPerMinute: 15_000 }

  /** Runs `calls` calls, `concurrency` at a time, advancing the clock a second at a time; `at(second)` runs after each second. */
  const steady = <A>(
    complete: (request: LlmClient.Request) => Effect.Effect<A, LlmClient.CallError>,
    calls: number,
    concurrency: number,
    at: (second: number) => Effect.Effect<void>
  ) =>
    Effect.gen(function*() {
      const load = yield* Effect.fork(
        Effect.forEach(Array.from({ length: calls }, (_, i) => ask(i)), (request) => Effect.exit(complete(request)), {
          concurrency
        })
      )
      for (let second = 1; second < 2_000 && load.unsafePoll() === null; second++) {
        yield* TestClock.adjust("1 second")
        yield* at(second)
      }
      const exits = yield* Fiber.join(load)
      return exits
    })

  it.scoped("failover: a deployment that answers 429 drops out until its retry-after ends, the others take its load, and it comes back", () =>
    Effect.gen(function*() {
      const { router, seen } = yield* pool([
        { name: "fo429-a", quota: equal },
        { name: "fo429-b", quota: equal, faults: { bursts: [{ startSeconds: 20, durationSeconds: 30, status: 429 }] } },
        { name: "fo429-c", quota: equal }
      ])
      const snapshots: Record<
        number,
        ReadonlyArray<
          {
            readonly name: string
            readonly accepted: number
            readonly rateLimited: number
            readonly inputTokens: number
          }
        >
      > = {}
      const exits = yield* steady(
        router.complete,
        300,
        15,
        (second) => second === 20 || second === 50 ? Effect.map(seen, (s) => void (snapshots[second] = s)) : Effect.void
      )
      expect(exits.every(Exit.isSuccess)).toBe(true)
      const end = yield* seen
      const [before, after] = [snapshots[20]!, snapshots[50]!]
      const delta = (from: typeof before, to: typeof before, i: number) => to[i]!.accepted - from[i]!.accepted
      // before the burst: an even spread
      expect(before[1]!.accepted).toBeGreaterThan(0.25 * before.reduce((sum, s) => sum + s.accepted, 0))
      // during it: b's 429s stay few (one probe per retry-after, plus the calls queued on it when it began)...
      const probes = after[1]!.rateLimited - before[1]!.rateLimited
      expect(probes).toBeLessThan(45)
      // ...and a and c run at their whole quota (the binding 6,000 input tokens a minute each) for those 30 seconds
      expect(after[0]!.inputTokens - before[0]!.inputTokens + after[2]!.inputTokens - before[2]!.inputTokens)
        .toBeGreaterThan(0.9 * 2 * 6_000 * 0.5)
      // after it: b is back and takes its third
      const afterwards = [0, 1, 2].map((i) => delta(after, end, i))
      expect(afterwards[1]! / afterwards.reduce((sum, n) => sum + n, 0)).toBeGreaterThan(0.28)
      // the callers never saw a 429 (every call succeeded) and the other deployments never drew one
      expect(end[0]!.rateLimited + end[2]!.rateLimited).toBe(0)
    }).pipe(Effect.provide(Base)))

  it.scoped("failover: a deployment whose breaker opens drops out until half-open, then a probe brings it back", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.CircuitBreaker
      const { router, seen } = yield* pool([
        { name: "fobr-a", quota: equal },
        { name: "fobr-b", quota: equal, faults: { bursts: [{ startSeconds: 20, durationSeconds: 10, status: 529 }] } },
        { name: "fobr-c", quota: equal }
      ])
      const states: Record<number, CircuitBreaker.State> = {}
      const snapshots: Record<
        number,
        ReadonlyArray<{ readonly name: string; readonly accepted: number; readonly overloaded: number }>
      > = {}
      const exits = yield* steady(router.complete, 300, 15, (second) =>
        second === 20 || second === 35 || second === 60
          ? Effect.all([seen, breaker.state(`fobr-b/${MODEL}`)]).pipe(Effect.map(([s, state]) => {
            snapshots[second] = s
            states[second] = state
          }))
          : Effect.void)
      expect(exits.every(Exit.isSuccess)).toBe(true)
      const end = yield* seen
      expect(states[20]).toBe("closed")
      // the 529s opened it; it stays open for 30 s, past the end of the burst
      expect(states[35]).toBe("open")
      expect(snapshots[35]![1]!.accepted).toBe(snapshots[20]![1]!.accepted)
      // a probe after half-open succeeded: closed again, and b takes load again
      expect(states[60]).toBe("closed")
      expect(end[1]!.accepted).toBeGreaterThan(snapshots[60]![1]!.accepted + 20)
      // the 529s b answered: the three that opened it and the calls already past its breaker, no more
      expect(end[1]!.overloaded).toBeLessThan(20)
    }).pipe(
      Effect.provide(
        Layer.merge(Base, CircuitBreaker.layer({ consecutiveFailures: 3, failureRate: false, openFor: "30 seconds" }))
      )
    ))

  it.scoped("stickiness keeps a key's calls on one deployment while it is healthy, and moves them when it is not", () =>
    Effect.gen(function*() {
      const bursts = (start: number) => ({
        bursts: [{ startSeconds: start, durationSeconds: 20, status: 429 as const }]
      })
      const { router, seen } = yield* pool([
        { name: "st-a", quota: equal, faults: bursts(40) },
        { name: "st-b", quota: equal, faults: bursts(70) },
        { name: "st-c", quota: equal, faults: bursts(100) }
      ])
      /** The deployment that accepted one call. */
      const where = (request: LlmClient.Request) =>
        Effect.gen(function*() {
          const before = yield* seen
          yield* router.complete(request)
          const after = yield* seen
          return after.find((s, i) => s.accepted > before[i]!.accepted)!.name
        })
      // without a sticky key, calls spread by what each deployment has left
      const loose: Array<string> = []
      for (let i = 0; i < 6; i++) loose.push(yield* where(ask(i)))
      expect(loose).toEqual(["st-a", "st-b", "st-c", "st-a", "st-b", "st-c"])
      // with one, they stay; each move happens when the deployment it was on answers 429 (its burst), never otherwise
      const sticky: Array<{ readonly second: number; readonly name: string }> = []
      yield* TestClock.adjust("19 seconds")
      for (let second = 20; second < 130; second++) {
        yield* TestClock.adjust("1 second")
        sticky.push({ second, name: yield* where(ask(1_000 + second, { stickyKey: "conversation-1" })) })
      }
      const burstOf: Record<string, number> = { "st-a": 40, "st-b": 70, "st-c": 100 }
      let moves = 0
      for (let i = 1; i < sticky.length; i++) {
        const [previous, current] = [sticky[i - 1]!, sticky[i]!]
        if (previous.name === current.name) continue
        moves++
        const start = burstOf[previous.name]!
        // the first call after its burst began: the 429 moved it at once
        expect(current.second).toBe(start)
      }
      expect(moves).toBeGreaterThanOrEqual(2)
      expect(sticky.filter((call) => call.second < 40).every((call) => call.name === sticky[0]!.name)).toBe(true)
    }).pipe(Effect.provide(Base)))

  it("the choice: soonest admission, then most left, then weight; a sticky deployment is kept while up and admitting within the bound", () => {
    const up = (name: string, wait: number, left: number, weight = 1): Router.Candidate => ({
      name,
      weight,
      down: false,
      wait,
      recoversIn: 0,
      left
    })
    expect(Router.choose([up("a", 800, 0.9), up("b", 200, 0.1)])?.name).toBe("b")
    expect(Router.choose([up("a", 0, 0.4), up("b", 0, 0.6)])?.name).toBe("b")
    expect(Router.choose([up("a", 0, 0.5), up("b", 0, 0.5, 2)])?.name).toBe("b")
    const down: Router.Candidate = { name: "c", weight: 5, down: true, wait: 0, recoversIn: 1_000, left: 1 }
    expect(Router.choose([down, up("a", 5_000, 0)])?.name).toBe("a")
    expect(Router.choose([up("a", 0, 1), up("b", 1_500, 0)], { name: "b", within: 2_000 })?.name).toBe("b")
    expect(Router.choose([up("a", 0, 1), up("b", 2_500, 0)], { name: "b", within: 2_000 })?.name).toBe("a")
    expect(Router.choose([up("a", 3_000, 1), down], { name: "c", within: 2_000 })?.name).toBe("a")
    // all down: the first to recover
    expect(Router.choose([{ ...down, name: "d", recoversIn: 3_000 }, down])?.name).toBe("c")
  })

  it.effect("admitsIn counts the pause, the queue ahead and each bucket's refill", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const key = "admits/key"
      yield* limiter.define(key, { inputTokens: { limit: 60_000, per: "1 minute" } })
      expect(Duration.toMillis(yield* limiter.admitsIn(key, { inputTokens: 60_000 }))).toBe(0)
      yield* Effect.scoped(limiter.acquire(key, { inputTokens: 59_000 }))
      // 1,000 left at 1 token a millisecond: 3,000 more need 2 seconds
      expect(Duration.toMillis(yield* limiter.admitsIn(key, { inputTokens: 3_000 }))).toBe(2_000)
      // a waiter queued for 4,000 comes first
      const waiter = yield* Effect.fork(Effect.scoped(limiter.acquire(key, { inputTokens: 4_000 })))
      yield* Effect.yieldNow()
      expect(Duration.toMillis(yield* limiter.admitsIn(key, { inputTokens: 3_000 }))).toBe(6_000)
      // but not for a higher class
      expect(Duration.toMillis(yield* limiter.admitsIn(key, { inputTokens: 3_000 }, { priority: "interactive" }))).toBe(
        2_000
      )
      yield* limiter.pause(key, "10 seconds")
      expect(Duration.toMillis(yield* limiter.admitsIn(key, { inputTokens: 3_000 }))).toBe(10_000)
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(waiter)
      expect(
        RateLimiter.admissionDelay(
          { levels: { inputTokens: { level: 1_000, capacity: 60_000 } }, pausedFor: Duration.zero },
          { inputTokens: 1 },
          Cost.amounts({ inputTokens: 3_000 })
        )
      ).toBe(2_000)
    }).pipe(Effect.provide(Base)))

  it.scoped("a ladder rung can be a pool: when every deployment of the first rung is rate limited, the calls move to the next rung's pool and spread over it", () =>
    Effect.gen(function*() {
      const OPUS = "claude-opus-4-1"
      const always429 = { bursts: [{ startSeconds: 0, durationSeconds: 3_600, status: 429 as const }] }
      const { router, seen } = yield* pool([
        { name: "ladder-opus-east", quota: equal, faults: always429, models: [OPUS] },
        { name: "ladder-opus-west", quota: equal, faults: always429, models: [OPUS] },
        { name: "ladder-haiku-1", quota: equal, models: [MODEL] },
        { name: "ladder-haiku-2", quota: equal, models: [MODEL] }
      ], { fallback: [{ model: MODEL }] })
      const before = yield* Effect.forEach(
        ["ladder-opus-east", "ladder-opus-west", "ladder-haiku-1", "ladder-haiku-2"],
        routedTo
      )
      const fibers = yield* Effect.forEach(
        Array.from({ length: 40 }, (_, i) => ({ ...ask(i), model: OPUS })),
        (request) => Effect.fork(router.complete(request))
      )
      const exits = yield* drain(fibers)
      const models = exits.flatMap((exit) => Exit.isSuccess(exit) ? [exit.value.model] : [])
      expect(models.length).toBe(40)
      expect(new Set(models)).toEqual(new Set([MODEL]))
      const stats = yield* seen
      // both opus deployments were tried (each answered 429 at least once), then dropped out while paused
      expect(stats[0]!.rateLimited).toBeGreaterThan(0)
      expect(stats[1]!.rateLimited).toBeGreaterThan(0)
      expect(stats[0]!.rateLimited + stats[1]!.rateLimited).toBeLessThan(40)
      // the haiku rung is a pool: both of its deployments served
      expect(stats[2]!.accepted).toBeGreaterThan(10)
      expect(stats[3]!.accepted).toBeGreaterThan(10)
      const after = yield* Effect.forEach(
        ["ladder-opus-east", "ladder-opus-west", "ladder-haiku-1", "ladder-haiku-2"],
        routedTo
      )
      expect(after[2]! - before[2]! + after[3]! - before[3]!).toBe(40)
    }).pipe(Effect.provide(Base)))
})
