import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import * as BudgetRedis from "@sluice/core/Budget/Redis"
import { Effect, TestClock } from "effect"
import { Redis } from "ioredis"
import { afterAll } from "vitest"
import { budgetLedgerSuite } from "./suites/budgetLedger.js"

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const run = `sluice-budget-test-${process.pid}-${Date.now()}`
let ledgers = 0

afterAll(async () => {
  const redis = new Redis(REDIS_URL)
  const found = await redis.keys(`${run}*`)
  if (found.length > 0) await redis.del(...found)
  redis.disconnect()
})

// Each test its own prefix: the suite's tests expect an empty ledger.
budgetLedgerSuite("Redis", () => BudgetRedis.layer({ url: REDIS_URL, prefix: `${run}-${++ledgers}` }))

describe("Budget on Redis, several processes", () => {
  it.scoped("concurrent reserves from separate clients never pass the limit", () =>
    Effect.gen(function*() {
      const prefix = `${run}-shared`
      const limits = [{ scope: { _tag: "global" as const }, window: "day" as const, limitUsd: 1 }]
      const budgets = yield* Effect.all(Array.from({ length: 3 }, () =>
        Effect.flatMap(BudgetRedis.make({ url: REDIS_URL, prefix }), (ledger) =>
          Budget.make({ limits }).pipe(
            Effect.provideService(Budget.BudgetLedger, ledger),
            Effect.provide(Pricing.layer()),
            Effect.orDie
          ))))
      const results = yield* Effect.all(
        budgets.flatMap((budget) =>
          Array.from({ length: 6 }, () =>
            Effect.either(budget.reserve({ model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 })))
        ),
        { concurrency: "unbounded" }
      )
      // $0.20 each against $1 shared: five fit, whichever process asked
      expect(
        results.filter((result) =>
          result._tag === "Right"
        ).length
      ).toBe(5)
    }))
})

describe("Budget on Redis, bounded", () => {
  const usedHaiku = { inputTokens: 100_000, outputTokens: 20_000, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }
  const haiku = { model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 }

  it.scoped("spend is counters whose expiry is set once, at their window's end plus a margin; no key grows with the calls", () =>
    Effect.gen(function*() {
      const start = Date.UTC(2026, 10, 22, 10)
      yield* TestClock.setTime(start)
      const prefix = `${run}-bounded`
      const ledger = yield* BudgetRedis.make({ url: REDIS_URL, prefix })
      const budget = yield* Budget.make({
        limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 1_000 }, {
          scope: { _tag: "global" },
          window: { rolling: "1 hour" },
          limitUsd: 1_000
        }]
      }).pipe(Effect.provideService(Budget.BudgetLedger, ledger), Effect.provide(Pricing.layer()), Effect.orDie)
      for (let i = 0; i < 100; i++) {
        yield* Effect.flatMap(budget.reserve(haiku), (r) => r.settle(usedHaiku))
        yield* TestClock.adjust("1 minute")
      }
      expect((yield* budget.status).map((s) => s.spentUsd)).toEqual([20, 12])
      const redis = new Redis(REDIS_URL)
      yield* Effect.addFinalizer(() => Effect.sync(() => redis.disconnect()))
      const keys = yield* Effect.promise(() => redis.keys(`${prefix}:*`))
      const endOfDay = Date.UTC(2026, 10, 23)
      for (const key of keys) {
        const type = yield* Effect.promise(() => redis.type(key))
        const ttl = yield* Effect.promise(() => redis.pttl(key))
        expect({ key, ttl: ttl > 0 }).toEqual({ key, ttl: true })
        if (key.includes(":spent:") && key.endsWith("|2026-11-22")) {
          expect(type).toBe("string")
          // set when the first call of the day settled, at 10:00, never pushed back
          expect(ttl).toBeLessThanOrEqual(endOfDay - start + Budget.counterMarginMs)
        }
        if (type === "zset") expect(yield* Effect.promise(() => redis.zcard(key))).toBeLessThanOrEqual(1)
      }
      // one counter for the day, one per minute-slice of the rolling hour, the reservation counters
      expect(keys.filter((key) => key.includes(":spent:")).length).toBe(1 + 100)
    }))

  it.scoped("a day window and a rolling window keep their spend across a restart (a new client on the same Redis)", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.UTC(2026, 10, 22, 10))
      const prefix = `${run}-restart`
      const limits = [{ scope: { _tag: "global" as const }, window: "day" as const, limitUsd: 10 }, {
        scope: { _tag: "global" as const },
        window: { rolling: "1 hour" },
        limitUsd: 10
      }]
      const start = Effect.flatMap(
        BudgetRedis.make({ url: REDIS_URL, prefix }),
        (ledger) =>
          Budget.make({ limits }).pipe(
            Effect.provideService(Budget.BudgetLedger, ledger),
            Effect.provide(Pricing.layer()),
            Effect.orDie
          )
      )
      // the first process spends, then goes away with its client
      yield* Effect.scoped(
        Effect.flatMap(start, (before) => Effect.flatMap(before.reserve(haiku), (r) => r.settle(usedHaiku)))
      )
      yield* TestClock.adjust("30 minutes")
      const after = yield* start
      expect((yield* after.status).map((s) => s.spentUsd)).toEqual([0.2, 0.2])
      yield* TestClock.adjust("1 hour")
      expect((yield* after.status).map((s) => s.spentUsd)).toEqual([0.2, 0])
    }))
})
