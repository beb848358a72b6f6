/**
 * The behaviour every budget ledger must have, run against each store.
 */
import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import { Deferred, Effect, Fiber, Layer, TestClock } from "effect"

const haiku = { model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 } // worst case $0.10 + $0.10
const used = (inputTokens: number, outputTokens: number) => ({
  inputTokens,
  outputTokens,
  cacheReadInputTokens: 0,
  cacheWriteInputTokens: 0
})

export const budgetLedgerSuite = (name: string, ledger: () => Layer.Layer<Budget.BudgetLedger, unknown>) =>
  describe(`Budget over the ${name} ledger`, () => {
    const budgetWith = (options: Budget.Options) =>
      Budget.layer(options).pipe(Layer.provide(Pricing.layer()), Layer.provide(ledger()), Layer.orDie)

    it.effect("reserve then settle replaces the worst case by the real cost", () =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const reservation = yield* budget.reserve(haiku)
        expect(reservation.reservedUsd).toBeCloseTo(0.2, 9)
        expect((yield* budget.status)[0]).toMatchObject({ spentUsd: 0, reservedUsd: 0.2 })
        yield* reservation.settle(used(80_000, 5_000)) // $0.08 + $0.025
        expect((yield* budget.status)[0]).toMatchObject({ spentUsd: 0.105, reservedUsd: 0 })
      }).pipe(Effect.provide(budgetWith({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 10 }] }))))

    it.effect("BudgetExceeded comes before the spend would pass the limit, and nothing is reserved anywhere", () =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const first = yield* budget.reserve({ ...haiku, tenant: "acme" })
        yield* first.settle(used(100_000, 20_000)) // $0.20 of the tenant's $0.30
        const error = yield* Effect.flip(budget.reserve({ ...haiku, tenant: "acme" }))
        expect(error).toMatchObject({ _tag: "BudgetExceeded", scope: "tenant:acme", window: "day", limitUsd: 0.3 })
        if (error._tag === "BudgetExceeded") {
          expect(error.spentUsd).toBeCloseTo(0.2, 9)
          expect(error.attemptedUsd).toBeCloseTo(0.2, 9)
        }
        // all or none: the global limit got no reservation from the refused call
        const status = yield* budget.status
        expect(status.find((s) => s.scope === "global")?.reservedUsd).toBe(0)
        // another tenant is unaffected
        yield* budget.reserve({ ...haiku, tenant: "other" })
      }).pipe(Effect.provide(budgetWith({
        limits: [
          { scope: { _tag: "global" }, window: "day", limitUsd: 100 },
          { scope: { _tag: "tenant", id: "acme" }, window: "day", limitUsd: 0.3 }
        ]
      }))))

    it.effect("thresholds fire once each, in order", () =>
      Effect.gen(function*() {
        const fired: Array<number> = []
        const budget = yield* Budget.make({
          limits: [{ scope: { _tag: "job", id: "j1" }, window: "month", limitUsd: 1 }],
          onThreshold: (event) => Effect.sync(() => fired.push(event.threshold))
        })
        for (let i = 0; i < 10; i++) {
          const reservation = yield* budget.reserve({ ...haiku, maxOutputTokens: 0, inputTokens: 50_000, job: "j1" })
          yield* reservation.settle(used(90_000, 0)) // $0.09 each
        }
        expect(fired).toEqual([0.5, 0.8])
        const last = yield* Effect.either(
          budget.reserve({ ...haiku, maxOutputTokens: 0, inputTokens: 50_000, job: "j1" })
        )
        expect(last._tag).toBe("Right")
        if (last._tag === "Right") yield* last.right.settle(used(100_000, 0)) // $0.10: exactly the limit
        expect(fired).toEqual([0.5, 0.8, 1])
      }).pipe(Effect.provide(Layer.merge(Pricing.layer(), ledger()).pipe(Layer.orDie))))

    it.effect("a new UTC day starts a day window afresh; a rolling window forgets what is older than it", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.UTC(2026, 10, 22, 23, 59))
        const budget = yield* Budget.Budget
        const spend = Effect.flatMap(budget.reserve(haiku), (r) => r.settle(used(100_000, 20_000)))
        yield* spend
        expect((yield* budget.status).map((s) => s.spentUsd)).toEqual([0.2, 0.2])
        yield* TestClock.adjust("2 minutes")
        expect((yield* budget.status).map((s) => s.spentUsd)).toEqual([0, 0.2])
        yield* TestClock.adjust("2 hours")
        expect((yield* budget.status).map((s) => s.spentUsd)).toEqual([0, 0])
      }).pipe(Effect.provide(budgetWith({
        limits: [
          { scope: { _tag: "global" }, window: "day", limitUsd: 10 },
          { scope: { _tag: "global" }, window: { rolling: "1 hour" }, limitUsd: 10 }
        ]
      }))))

    it.effect("cancel gives a reservation back", () =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const reservation = yield* budget.reserve(haiku)
        yield* reservation.cancel
        expect((yield* budget.status)[0]).toMatchObject({ spentUsd: 0, reservedUsd: 0 })
      }).pipe(Effect.provide(budgetWith({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 1 }] }))))

    it.effect("two budgets sharing the ledger (two processes) reserving at the same instant keep both reservations", () =>
      Effect.gen(function*() {
        const limits = [{ scope: { _tag: "global" as const }, window: "day" as const, limitUsd: 10 }]
        const one = yield* Budget.make({ limits })
        const two = yield* Budget.make({ limits })
        const first = yield* one.reserve(haiku)
        yield* two.reserve(haiku)
        expect((yield* one.status)[0]?.reservedUsd).toBeCloseTo(0.4, 9)
        // settling one process's reservation leaves the other's in place
        yield* first.settle(used(0, 0))
        expect((yield* two.status)[0]?.reservedUsd).toBeCloseTo(0.2, 9)
      }).pipe(Effect.provide(Layer.merge(Pricing.layer(), ledger()).pipe(Layer.orDie))))

    it.effect("an interrupt landing while the ledger's reserve is in flight leaves nothing reserved", () =>
      Effect.gen(function*() {
        const written = yield* Deferred.make<void>()
        const reply = yield* Deferred.make<void>()
        const real = yield* Budget.BudgetLedger
        // The store has written the reservation; its answer is still on the way.
        const slow = Budget.BudgetLedger.of({
          ...real,
          reserve: (...args) =>
            Effect.zipLeft(
              real.reserve(...args),
              Effect.zipRight(Deferred.succeed(written, undefined), Deferred.await(reply))
            )
        })
        const budget = yield* Budget.make({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 10 }] })
          .pipe(
            Effect.provideService(Budget.BudgetLedger, slow)
          )
        const call = yield* Effect.fork(budget.reserve(haiku))
        yield* Deferred.await(written)
        const interrupting = yield* Effect.fork(Fiber.interrupt(call))
        yield* Effect.yieldNow()
        yield* Deferred.succeed(reply, undefined)
        yield* Fiber.join(interrupting)
        expect((yield* budget.status)[0]).toMatchObject({ reservedUsd: 0 })
      }).pipe(Effect.provide(Layer.merge(Pricing.layer(), ledger()).pipe(Layer.orDie))))

    it.effect("an interrupt landing while the ledger's settle is in flight still records the spend", () =>
      Effect.gen(function*() {
        const sent = yield* Deferred.make<void>()
        const reply = yield* Deferred.make<void>()
        const real = yield* Budget.BudgetLedger
        const slow = Budget.BudgetLedger.of({
          ...real,
          settle: (...args) =>
            Effect.zipRight(
              Effect.zipRight(Deferred.succeed(sent, undefined), Deferred.await(reply)),
              real.settle(...args)
            )
        })
        const budget = yield* Budget.make({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 10 }] })
          .pipe(
            Effect.provideService(Budget.BudgetLedger, slow)
          )
        const reservation = yield* budget.reserve(haiku)
        const call = yield* Effect.fork(reservation.settle(used(100_000, 0)))
        yield* Deferred.await(sent)
        const interrupting = yield* Effect.fork(Fiber.interrupt(call))
        yield* Effect.yieldNow()
        yield* Deferred.succeed(reply, undefined)
        yield* Fiber.join(interrupting)
        expect((yield* budget.status)[0]).toMatchObject({ spentUsd: 0.1, reservedUsd: 0 })
      }).pipe(Effect.provide(Layer.merge(Pricing.layer(), ledger()).pipe(Layer.orDie))))

    it.effect("settle reports thresholds from the ledger's answer, without reading usage", () =>
      Effect.gen(function*() {
        const real = yield* Budget.BudgetLedger
        let reads = 0
        const counted = Budget.BudgetLedger.of({
          ...real,
          usage: (...args) => Effect.zipRight(Effect.sync(() => reads++), real.usage(...args))
        })
        const fired: Array<number> = []
        const budget = yield* Budget.make({
          limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 1 }, {
            scope: { _tag: "global" },
            window: { rolling: "1 hour" },
            limitUsd: 1
          }],
          onThreshold: (event) => Effect.sync(() => fired.push(event.threshold))
        }).pipe(Effect.provideService(Budget.BudgetLedger, counted))
        yield* Effect.flatMap(budget.reserve(haiku), (r) => r.settle(used(600_000, 0))) // $0.60
        expect(fired).toEqual([0.5, 0.5])
        expect(reads).toBe(0)
      }).pipe(Effect.provide(Layer.merge(Pricing.layer(), ledger()).pipe(Layer.orDie))))

    it.effect("a rolling window's threshold fires again once its spend has fallen back under the line", () =>
      Effect.gen(function*() {
        const fired: Array<number> = []
        const budget = yield* Budget.make({
          limits: [{ scope: { _tag: "global" }, window: { rolling: "1 hour" }, limitUsd: 1, thresholds: [0.5] }],
          onThreshold: (event) => Effect.sync(() => fired.push(event.threshold))
        })
        const spend = Effect.flatMap(budget.reserve(haiku), (r) => r.settle(used(600_000, 0))) // $0.60
        yield* spend
        expect(fired).toEqual([0.5])
        yield* TestClock.adjust("2 hours")
        yield* spend
        expect(fired).toEqual([0.5, 0.5])
      }).pipe(Effect.provide(Layer.merge(Pricing.layer(), ledger()).pipe(Layer.orDie))))

    it.effect("a reservation never settled (its process died) is given back after reservationTtl", () =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        yield* budget.reserve(haiku) // $0.20 of $0.30, never settled
        expect((yield* Effect.flip(budget.reserve(haiku)))._tag).toBe("BudgetExceeded")
        yield* TestClock.adjust("11 minutes")
        yield* budget.reserve(haiku)
        expect((yield* budget.status)[0]?.reservedUsd).toBeCloseTo(0.2, 9)
      }).pipe(
        Effect.provide(
          budgetWith({
            limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 0.3 }],
            reservationTtl: "10 minutes"
          })
        )
      ))
  })
