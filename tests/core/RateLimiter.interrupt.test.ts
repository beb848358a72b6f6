import { describe, expect, it } from "@effect/vitest"
import { RateLimiter } from "@sluice/core"
import type { Priority } from "@sluice/core"
import { Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, TestClock } from "effect"

/**
 * Interruption at every yield point: every slot, reservation and waiter is
 * given back exactly once, whatever the instant the interrupt lands.
 */

const KEY = "interrupt/model"
/**
 * Ops between yields, swept from here: below about ten, a fiber's own
 * scheduling costs more ops than it has, and it never gets anywhere.
 */
const MIN_OPS = 10
// Five settings of the yield point × every interrupt step keeps the suite near a minute; SWEEP_OPS=40 sweeps wider.
const SWEEP_OPS = Number(process.env.SWEEP_OPS ?? 5)
const MAX_YIELDS = Number(process.env.SWEEP_YIELDS ?? 16)

/** A quota that refills so slowly that a test's milliseconds add nothing measurable: a full bucket means every take came back. */
const slowQuota = {
  requests: { limit: 100, per: "1 day" },
  inputTokens: { limit: 1_000_000, per: "1 day" }
} as const

const flush = TestClock.adjust(0)

/** What the callers hold: granted and not yet settled (settling refunds it all). */
interface Held {
  requests: number
  inputTokens: number
}

/**
 * After every fiber ended: nothing in flight, nobody waiting, the buckets
 * short of exactly what callers hold unsettled — give or take what the
 * interrupted callers cost: a grant that lands at the instant its caller is
 * interrupted keeps its reservation, as a permit released unsettled does —
 * and a fresh call granted at once. A bucket short of anything refills at its
 * rate meanwhile: `since` (the test clock when the program began) bounds that
 * refill, 11.6 input tokens a second of `slowQuota`.
 */
const expectKeyWhole = (
  limiter: RateLimiter.RateLimiter["Type"],
  key: string,
  bounds: { readonly held: Held; readonly slack: Held; readonly since?: number } | undefined
) =>
  Effect.gen(function*() {
    const stats = yield* limiter.stats(key)
    expect(stats.inFlight).toBe(0)
    expect(stats.waiting).toEqual({ batch: 0, normal: 0, interactive: 0 })
    if (bounds !== undefined) {
      const { held, slack } = bounds
      const elapsed = bounds.since === undefined ? 0 : (yield* Clock.currentTimeMillis) - bounds.since
      const refill = (limit: number) => (limit * elapsed) / 86_400_000
      const requests = stats.levels.requests!.level
      const inputTokens = stats.levels.inputTokens!.level
      expect(requests).toBeLessThanOrEqual(100 - held.requests + refill(100) + 0.01)
      expect(requests).toBeGreaterThanOrEqual(100 - held.requests - slack.requests - 0.01)
      expect(inputTokens).toBeLessThanOrEqual(1_000_000 - held.inputTokens + refill(1_000_000) + 1)
      expect(inputTokens).toBeGreaterThanOrEqual(1_000_000 - held.inputTokens - slack.inputTokens - 1)
    }
    const fresh = yield* Effect.forkDaemon(Effect.scoped(limiter.acquire(key, { requests: 0 })))
    yield* flush
    const exit = fresh.unsafePoll()
    expect(exit !== null && Exit.isSuccess(exit)).toBe(true)
  })

/**
 * Moves the clock a millisecond at a time until every fiber has ended (or a
 * generous bound passed): a fiber that yields after every operation needs
 * many scheduler turns, each of which a `TestClock.adjust` gives it.
 */
const runUntilDone = (fibers: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>) =>
  Effect.gen(function*() {
    for (let round = 0; round < 300 && fibers.some((fiber) => fiber.unsafePoll() === null); round++) {
      yield* TestClock.adjust(Duration.millis(1))
    }
  })

/** One caller: acquire, hold a little, settle to nothing; `held` counts what it holds unsettled. */
const call = (
  limiter: RateLimiter.RateLimiter["Type"],
  key: string,
  inputTokens: number,
  priority: Priority.Class,
  held: Held,
  hold = 10
) =>
  Effect.scoped(Effect.gen(function*() {
    const permit = yield* limiter.acquire(key, { inputTokens }, { priority })
    held.requests += 1
    held.inputTokens += inputTokens
    yield* Effect.sleep(Duration.millis(hold))
    yield* permit.settle({ requests: 0, inputTokens: 0 })
    held.requests -= 1
    held.inputTokens -= inputTokens
  }))

/** `call`, through `withPermit`: no `Scope`, the release a handler of the region that granted. */
const callWithPermit = (
  limiter: RateLimiter.RateLimiter["Type"],
  key: string,
  inputTokens: number,
  held: Held
) =>
  limiter.withPermit(key, { inputTokens }, (permit) =>
    Effect.gen(function*() {
      held.requests += 1
      held.inputTokens += inputTokens
      yield* Effect.sleep(Duration.millis(10))
      yield* permit.settle({ requests: 0, inputTokens: 0 })
      held.requests -= 1
      held.inputTokens -= inputTokens
    }))

/**
 * Three callers on a key that runs one call at a time; the second runs with
 * `opsBeforeYield` and is interrupted after the test fiber yielded `yields`
 * times, so across the sweep the interrupt lands on every step of its
 * acquisition: before its lane, in it, at its grant, in its use.
 */
const sweepOnce = (
  limiter: RateLimiter.RateLimiter["Type"],
  key: string,
  opsBeforeYield: number,
  yields: number,
  held: Held
) =>
  Effect.gen(function*() {
    const first = yield* Effect.forkDaemon(call(limiter, key, 100, "normal", held))
    const victim = yield* Effect.forkDaemon(
      call(limiter, key, 200, "interactive", held).pipe(Effect.withMaxOpsBeforeYield(opsBeforeYield))
    )
    const third = yield* Effect.forkDaemon(
      call(limiter, key, 300, "batch", held).pipe(Effect.withMaxOpsBeforeYield(opsBeforeYield + 1))
    )
    for (let i = 0; i < yields; i++) yield* Effect.yieldNow()
    yield* Fiber.interruptFork(victim)
    yield* runUntilDone([first, victim, third])
    // Polled, not awaited: a caller stuck for good must fail the test, not hang it.
    expect(victim.unsafePoll()).not.toBeNull()
    expect(first.unsafePoll()).toEqual(Exit.void)
    expect(third.unsafePoll()).toEqual(Exit.void)
  })

describe("RateLimiter under interruption", () => {
  it.effect(
    "an interrupt at any step of acquire, use or settle leaves nothing held, nothing waiting, nothing reserved (maxInFlight 1)",
    () =>
      Effect.gen(function*() {
        const leaks: Array<string> = []
        for (let opsBeforeYield = MIN_OPS; opsBeforeYield < MIN_OPS + SWEEP_OPS; opsBeforeYield++) {
          for (let yields = 0; yields <= MAX_YIELDS; yields++) {
            const whole = yield* Effect.scoped(
              Effect.gen(function*() {
                const limiter = yield* RateLimiter.RateLimiter
                const held = { requests: 0, inputTokens: 0 }
                return yield* Effect.exit(Effect.zipRight(
                  sweepOnce(limiter, KEY, opsBeforeYield, yields, held),
                  Effect.suspend(() => expectKeyWhole(limiter, KEY, { held, slack: { requests: 1, inputTokens: 200 } }))
                ))
              }).pipe(Effect.provide(RateLimiter.layerMemory({ maxInFlight: 1, quotas: { [KEY]: slowQuota } })))
            )
            if (Exit.isFailure(whole)) leaks.push(`${opsBeforeYield}/${yields}`)
          }
        }
        expect(leaks).toEqual([])
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "an interrupt at any step of a call on a key in discovery leaves the key able to grant again",
    () =>
      Effect.gen(function*() {
        const leaks: Array<string> = []
        for (let opsBeforeYield = MIN_OPS; opsBeforeYield < MIN_OPS + SWEEP_OPS; opsBeforeYield++) {
          for (let yields = 0; yields <= MAX_YIELDS; yields += 2) {
            const whole = yield* Effect.scoped(
              Effect.gen(function*() {
                const limiter = yield* RateLimiter.RateLimiter
                const held = { requests: 0, inputTokens: 0 }
                return yield* Effect.exit(Effect.zipRight(
                  sweepOnce(limiter, "discover/model", opsBeforeYield, yields, held),
                  expectKeyWhole(limiter, "discover/model", undefined)
                ))
              }).pipe(Effect.provide(RateLimiter.layerMemory({})))
            )
            if (Exit.isFailure(whole)) leaks.push(`${opsBeforeYield}/${yields}`)
          }
        }
        expect(leaks).toEqual([])
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "an interrupt at any step of a call granted at once (resident key, nobody waiting) releases its slot exactly once, by acquire and by withPermit",
    () =>
      Effect.gen(function*() {
        const leaks: Array<string> = []
        // The grant and its release's installation are one step of one uninterruptible region, so no
        // interrupt can land between them; across the sweep it lands before the grant and in the use.
        for (let opsBeforeYield = MIN_OPS; opsBeforeYield < MIN_OPS + SWEEP_OPS; opsBeforeYield++) {
          for (let yields = 0; yields <= MAX_YIELDS; yields++) {
            for (const form of ["acquire", "withPermit"] as const) {
              const whole = yield* Effect.scoped(
                Effect.gen(function*() {
                  const limiter = yield* RateLimiter.RateLimiter
                  // A first call makes the key resident: the next one takes the fast path.
                  yield* Effect.scoped(limiter.acquire(KEY, { requests: 0 }))
                  const held = { requests: 0, inputTokens: 0 }
                  const victim = yield* Effect.forkDaemon(
                    (form === "acquire"
                      ? call(limiter, KEY, 200, "normal", held)
                      : callWithPermit(limiter, KEY, 200, held)).pipe(Effect.withMaxOpsBeforeYield(opsBeforeYield))
                  )
                  for (let i = 0; i < yields; i++) yield* Effect.yieldNow()
                  yield* Fiber.interruptFork(victim)
                  yield* runUntilDone([victim])
                  expect(victim.unsafePoll()).not.toBeNull()
                  return yield* Effect.exit(
                    expectKeyWhole(limiter, KEY, { held, slack: { requests: 1, inputTokens: 200 } })
                  )
                }).pipe(Effect.provide(RateLimiter.layerMemory({ maxInFlight: 1, quotas: { [KEY]: slowQuota } })))
              )
              if (Exit.isFailure(whole)) leaks.push(`${form} ${opsBeforeYield}/${yields}`)
            }
          }
        }
        expect(leaks).toEqual([])
      }),
    { timeout: 120_000 }
  )

  it.effect.prop(
    "random programs of acquires, settles and interrupts under TestClock end with nothing held or reserved, and the key grants again",
    {
      calls: fc.array(
        fc.record({
          cost: fc.integer({ min: 0, max: 40_000 }),
          priority: fc.constantFrom("batch" as const, "normal" as const, "interactive" as const),
          hold: fc.integer({ min: 0, max: 50 }),
          interruptAfter: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }),
          opsBeforeYield: fc.integer({ min: MIN_OPS, max: 60 }),
          gap: fc.integer({ min: 0, max: 3 })
        }),
        { minLength: 1, maxLength: 12 }
      ),
      maxInFlight: fc.integer({ min: 1, max: 3 })
    },
    ({ calls, maxInFlight }) =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const since = yield* Clock.currentTimeMillis
        const held = { requests: 0, inputTokens: 0 }
        const slack = { requests: 0, inputTokens: 0 }
        const fibers: Array<Fiber.RuntimeFiber<void, RateLimiter.RateLimiterError>> = []
        const interrupts: Array<readonly [number, Fiber.RuntimeFiber<void, RateLimiter.RateLimiterError>]> = []
        for (const spec of calls) {
          for (let i = 0; i < spec.gap; i++) yield* Effect.yieldNow()
          const fiber = yield* Effect.forkDaemon(
            call(limiter, KEY, spec.cost, spec.priority, held, spec.hold).pipe(
              Effect.withMaxOpsBeforeYield(spec.opsBeforeYield)
            )
          )
          fibers.push(fiber)
          if (spec.interruptAfter !== undefined) {
            interrupts.push([spec.interruptAfter, fiber])
            slack.requests += 1
            slack.inputTokens += spec.cost
          }
        }
        for (let tick = 0; tick <= 40; tick++) {
          for (const [at, fiber] of interrupts) if (at === tick) yield* Fiber.interruptFork(fiber)
          yield* Effect.yieldNow()
        }
        yield* runUntilDone(fibers)
        for (const fiber of fibers) {
          const exit = fiber.unsafePoll()
          expect(exit).not.toBeNull()
          if (exit !== null && Exit.isFailure(exit)) expect(Exit.isInterrupted(exit)).toBe(true)
        }
        yield* expectKeyWhole(limiter, KEY, { held, slack, since })
      }).pipe(
        Effect.scoped,
        Effect.provide(RateLimiter.layerMemory({ maxInFlight, quotas: { [KEY]: slowQuota } }))
      ),
    { fastCheck: { numRuns: Number(process.env.PROP_RUNS ?? 40), seed: 20_251_107 } }
  )
})
