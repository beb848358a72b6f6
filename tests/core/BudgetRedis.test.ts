import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import * as BudgetRedis from "@sluice/core/Budget/Redis"
import { Effect } from "effect"
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
          Budget.make({ limits }).pipe(Effect.provideService(Budget.BudgetLedger, ledger), Effect.provide(Pricing.layer()), Effect.orDie))
      ))
      const results = yield* Effect.all(
        budgets.flatMap((budget) => Array.from({ length: 6 }, () => Effect.either(budget.reserve({ model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 })))),
        { concurrency: "unbounded" }
      )
      // $0.20 each against $1 shared: five fit, whichever process asked
      expect(results.filter((result) => result._tag === "Right").length).toBe(5)
    }))
})
