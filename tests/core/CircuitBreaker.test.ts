import { describe, expect, it } from "@effect/vitest"
import * as CircuitBreaker from "@sluice/core/CircuitBreaker"
import * as LlmClient from "@sluice/core/LlmClient"
import { Data, Deferred, Duration, Effect, Exit, Fiber, Metric, Ref, TestClock } from "effect"

const unavailable = new LlmClient.ServerError({ provider: "sim", status: 503, detail: "unavailable" })
const badRequest = new LlmClient.BadRequest({ provider: "sim", status: 400, detail: "bad" })

class Shed extends Data.TaggedError("Shed")<{ readonly key: string }> {}

const advance = (ms: number) => TestClock.adjust(Duration.millis(ms))

/** A unique key per test, so that the global metric registry tells tests apart. */
let keys = 0
const uniqueKey = (name: string) => `test/${name}/${++keys}`

/** A breaker and a counter of the calls that really ran. */
const setup = (options: CircuitBreaker.Options) =>
  Effect.gen(function*() {
    const breaker = yield* CircuitBreaker.make(options)
    const runs = yield* Ref.make(0)
    const counted = <A, E>(effect: Effect.Effect<A, E>) => Effect.zipRight(Ref.update(runs, (n) => n + 1), effect)
    const fail = (key: string, error: unknown = unavailable) =>
      Effect.flip(breaker.run(key, counted(Effect.fail(error))))
    const succeed = (key: string) => breaker.run(key, counted(Effect.succeed("ok")))
    return { breaker, runs: Ref.get(runs), counted, fail, succeed }
  })

describe("CircuitBreaker", () => {
  it.effect("opens after N consecutive failures and then fails fast with CircuitOpen carrying probeAt", () =>
    Effect.gen(function*() {
      const key = uniqueKey("consecutive")
      const { breaker, fail, runs, succeed } = yield* setup({ consecutiveFailures: 3, openFor: "30 seconds" })
      yield* advance(1_000)
      expect(yield* fail(key)).toBe(unavailable)
      expect(yield* fail(key)).toBe(unavailable)
      expect(yield* breaker.state(key)).toBe("closed")
      expect(yield* fail(key)).toBe(unavailable)
      expect(yield* breaker.state(key)).toBe("open")

      const refused = yield* Effect.flip(succeed(key))
      expect(refused).toBeInstanceOf(CircuitBreaker.CircuitOpen)
      expect(refused).toMatchObject({
        _tag: "CircuitOpen",
        key,
        openedAt: 1_000,
        probeAt: 31_000,
        reason: "consecutive-failures",
        state: "open"
      })
      expect(refused.message).toContain(key)
      expect(refused.message).toContain(new Date(31_000).toISOString())
      expect(yield* runs).toBe(3)
    }))

  it.effect("a success in between resets the run of failures", () =>
    Effect.gen(function*() {
      const key = uniqueKey("reset")
      const { breaker, fail, succeed } = yield* setup({ consecutiveFailures: 3 })
      yield* fail(key)
      yield* fail(key)
      yield* succeed(key)
      yield* fail(key)
      yield* fail(key)
      expect(yield* breaker.state(key)).toBe("closed")
      expect((yield* breaker.stats(key)).consecutiveFailures).toBe(2)
      yield* fail(key)
      expect(yield* breaker.state(key)).toBe("open")
    }))

  it.effect("opens when more than the threshold of at least minCalls calls in the window failed", () =>
    Effect.gen(function*() {
      const key = uniqueKey("rate")
      const { breaker, fail, succeed } = yield* setup({
        consecutiveFailures: false,
        failureRate: { threshold: 0.5, minCalls: 10, window: "1 minute" }
      })
      for (let i = 0; i < 9; i++) yield* fail(key)
      // 9 of 9 failed, but fewer than minCalls calls
      expect(yield* breaker.state(key)).toBe("closed")
      for (let i = 0; i < 10; i++) yield* succeed(key)
      yield* fail(key)
      // 10 of 20 failed: not more than half
      expect(yield* breaker.stats(key)).toMatchObject({ state: "closed", windowCalls: 20, windowFailures: 10 })
      yield* fail(key)
      // 11 of 21
      const refused = yield* Effect.flip(succeed(key))
      expect(refused).toMatchObject({ _tag: "CircuitOpen", reason: "failure-rate" })
    }))

  it.effect("calls older than the window no longer count toward the failure rate", () =>
    Effect.gen(function*() {
      const key = uniqueKey("window")
      const { breaker, fail } = yield* setup({
        consecutiveFailures: false,
        failureRate: { minCalls: 10, window: "1 minute" }
      })
      for (let i = 0; i < 9; i++) yield* fail(key)
      yield* advance(61_000)
      yield* fail(key)
      expect(yield* breaker.stats(key)).toMatchObject({ state: "closed", windowCalls: 1, windowFailures: 1 })
    }))

  it.effect("after openFor it is half-open and lets exactly halfOpenProbes calls through; the others fail fast", () =>
    Effect.gen(function*() {
      const key = uniqueKey("probes")
      const { breaker, counted, fail, runs, succeed } = yield* setup({
        consecutiveFailures: 1,
        openFor: "10 seconds",
        halfOpenProbes: 2
      })
      yield* fail(key)
      yield* advance(9_999)
      expect(yield* Effect.flip(succeed(key))).toMatchObject({ _tag: "CircuitOpen", state: "open", probeAt: 10_000 })
      yield* advance(1)
      expect(yield* breaker.state(key)).toBe("half-open")

      const gate = yield* Deferred.make<void>()
      const probe = breaker.run(key, counted(Effect.as(Deferred.await(gate), "probed")))
      const first = yield* Effect.fork(probe)
      const second = yield* Effect.fork(probe)
      const third = yield* Effect.fork(probe)
      yield* advance(0)
      expect(yield* runs).toBe(3) // 1 failure + 2 probes
      const refused = yield* Effect.flip(Fiber.join(third))
      expect(refused).toMatchObject({ _tag: "CircuitOpen", state: "half-open", openedAt: 0, probeAt: 10_000 })
      expect(refused.message).toContain("half-open")
      expect((yield* breaker.stats(key)).probesInFlight).toBe(2)

      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(first)).toBe("probed")
      expect(yield* Fiber.join(second)).toBe("probed")
      expect(yield* breaker.state(key)).toBe("closed")
      expect(yield* succeed(key)).toBe("ok")
    }))

  it.effect("a probe's success closes the breaker and its counts start afresh", () =>
    Effect.gen(function*() {
      const key = uniqueKey("close")
      const { breaker, fail, succeed } = yield* setup({ consecutiveFailures: 2, openFor: "5 seconds" })
      yield* fail(key)
      yield* fail(key)
      yield* advance(5_000)
      expect(yield* succeed(key)).toBe("ok")
      expect(yield* breaker.stats(key)).toMatchObject({ state: "closed", consecutiveFailures: 0, windowCalls: 0 })
      yield* fail(key)
      expect(yield* breaker.state(key)).toBe("closed")
    }))

  it.effect("a probe's failure re-opens the breaker for another openFor", () =>
    Effect.gen(function*() {
      const key = uniqueKey("reopen")
      const { breaker, fail, runs, succeed } = yield* setup({ consecutiveFailures: 1, openFor: "10 seconds" })
      yield* fail(key)
      yield* advance(10_000)
      expect(yield* fail(key)).toBe(unavailable)
      expect(yield* breaker.state(key)).toBe("open")
      expect(yield* Effect.flip(succeed(key))).toMatchObject({
        openedAt: 10_000,
        probeAt: 20_000,
        reason: "probe-failed"
      })
      yield* advance(9_999)
      expect(yield* Effect.flip(succeed(key))).toMatchObject({ _tag: "CircuitOpen" })
      expect(yield* runs).toBe(2)
      yield* advance(1)
      expect(yield* succeed(key)).toBe("ok")
    }))

  it.effect("errors that do not count (BadRequest, other tagged errors, defects) never open it", () =>
    Effect.gen(function*() {
      const key = uniqueKey("neutral")
      const { breaker, fail, runs } = yield* setup({ consecutiveFailures: 2, failureRate: { minCalls: 2 } })
      for (let i = 0; i < 10; i++) expect(yield* fail(key, badRequest)).toBe(badRequest)
      yield* fail(key, new Shed({ key }))
      yield* Effect.exit(breaker.run(key, Effect.die("bug")))
      expect(yield* breaker.stats(key)).toMatchObject({ state: "closed", consecutiveFailures: 0, windowCalls: 0 })
      expect(yield* runs).toBe(11)
      // neutral outcomes do not break a run of failures either
      yield* fail(key)
      yield* fail(key, badRequest)
      yield* fail(key)
      expect(yield* breaker.state(key)).toBe("open")
    }))

  it.effect("isFailure decides what counts", () =>
    Effect.gen(function*() {
      const key = uniqueKey("isFailure")
      const { breaker, fail } = yield* setup({ consecutiveFailures: 2, isFailure: (error) => error instanceof Shed })
      yield* fail(key)
      yield* fail(key)
      expect(yield* breaker.state(key)).toBe("closed")
      yield* fail(key, new Shed({ key }))
      yield* fail(key, new Shed({ key }))
      expect(yield* breaker.state(key)).toBe("open")
    }))

  it.effect("keys are independent", () =>
    Effect.gen(function*() {
      const broken = uniqueKey("broken")
      const healthy = uniqueKey("healthy")
      const { breaker, fail, succeed } = yield* setup({ consecutiveFailures: 1 })
      yield* fail(broken)
      expect(yield* breaker.state(broken)).toBe("open")
      expect(yield* succeed(healthy)).toBe("ok")
      expect(yield* breaker.state(healthy)).toBe("closed")
    }))

  it.effect("an interrupted probe frees its slot", () =>
    Effect.gen(function*() {
      const key = uniqueKey("interrupt")
      const { breaker, fail, succeed } = yield* setup({ consecutiveFailures: 1, openFor: "1 second" })
      yield* fail(key)
      yield* advance(1_000)
      const hanging = yield* Effect.fork(breaker.run(key, Effect.never))
      yield* advance(0)
      expect(yield* Effect.flip(succeed(key))).toMatchObject({ state: "half-open" })
      yield* Fiber.interrupt(hanging)
      expect(yield* succeed(key)).toBe("ok")
      expect(yield* breaker.state(key)).toBe("closed")
    }))

  it.effect("an outcome from before the breaker opened is ignored", () =>
    Effect.gen(function*() {
      const key = uniqueKey("late")
      const { breaker, fail } = yield* setup({ consecutiveFailures: 1 })
      const gate = yield* Deferred.make<void>()
      const slow = yield* Effect.fork(breaker.run(key, Deferred.await(gate)))
      yield* advance(0)
      yield* fail(key)
      yield* Deferred.succeed(gate, undefined)
      expect(Exit.isSuccess(yield* Fiber.await(slow))).toBe(true)
      expect(yield* breaker.state(key)).toBe("open")
    }))

  it.effect("transitions are counted, the state gauge follows, and onTransition hears each", () =>
    Effect.gen(function*() {
      const key = uniqueKey("metrics")
      const heard = yield* Ref.make<ReadonlyArray<string>>([])
      const { fail, succeed } = yield* setup({
        consecutiveFailures: 1,
        openFor: "1 second",
        onTransition: (change) => Ref.update(heard, (all) => [...all, `${change.from}->${change.to}@${change.at}`])
      })
      const counter = (from: CircuitBreaker.State, to: CircuitBreaker.State) =>
        Metric.tagged(Metric.tagged(Metric.tagged(CircuitBreaker.transitions, "key", key), "from", from), "to", to)
      const count = (from: CircuitBreaker.State, to: CircuitBreaker.State) =>
        Effect.map(Metric.value(counter(from, to)), (state) => state.count)
      const gauge = Effect.map(
        Metric.value(Metric.tagged(CircuitBreaker.stateGauge, "key", key)),
        (state) => state.value
      )

      expect(yield* count("closed", "open")).toBe(0)
      yield* succeed(key)
      expect(yield* gauge).toBe(0)
      yield* fail(key)
      expect(yield* count("closed", "open")).toBe(1)
      expect(yield* gauge).toBe(2)
      yield* advance(1_000)
      yield* fail(key)
      expect(yield* count("open", "half-open")).toBe(1)
      expect(yield* count("half-open", "open")).toBe(1)
      expect(yield* gauge).toBe(2)
      yield* advance(1_000)
      yield* succeed(key)
      expect(yield* count("open", "half-open")).toBe(2)
      expect(yield* count("half-open", "closed")).toBe(1)
      expect(yield* gauge).toBe(0)
      expect(yield* Ref.get(heard)).toEqual([
        "closed->open@0",
        "open->half-open@1000",
        "half-open->open@1000",
        "open->half-open@2000",
        "half-open->closed@2000"
      ])
    }))

  it.effect("the layer provides the service", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.CircuitBreaker
      const key = uniqueKey("layer")
      expect(yield* breaker.run(key, Effect.succeed(1))).toBe(1)
      expect(yield* breaker.state(key)).toBe("closed")
    }).pipe(Effect.provide(CircuitBreaker.layer())))
})
