import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import * as BudgetSql from "@sluice/core/Budget/Sql"
import { Duration, Effect, Layer, Redacted, TestClock } from "effect"
import "../setup/pgPool.js"
import { databasePerRun } from "../setup/database.js"
import { budgetLedgerSuite } from "./suites/budgetLedger.js"

const { PgClient } = await import("@effect/sql-pg")

// One database per run, dropped at the end.
const url = databasePerRun("budget")

const client = (maxConnections = 4) => PgClient.layer({ url: Redacted.make(url.toString()), maxConnections })

// The suite's tests each expect an empty ledger: one database, emptied before each ledger.
const emptyLedger = Layer.effect(
  Budget.BudgetLedger,
  Effect.gen(function*() {
    const ledger = yield* BudgetSql.make
    const sql = yield* SqlClient.SqlClient
    yield* sql`DELETE FROM sluice_budget_counters`
    yield* sql`DELETE FROM sluice_budget_holds`
    return ledger
  })
)

budgetLedgerSuite("PostgreSQL", () => emptyLedger.pipe(Layer.provide(client())))

describe("Budget over PostgreSQL, several connections", () => {
  it.scoped("concurrent reserves from several processes' connections never pass the limit (no write skew)", () =>
    Effect.gen(function*() {
      const limits = [{ scope: { _tag: "global" as const }, window: "day" as const, limitUsd: 1 }, {
        scope: { _tag: "tenant" as const, id: "acme" },
        window: "month" as const,
        limitUsd: 5
      }]
      // Four processes, each with its own pool of four connections; made one after the other
      // (CREATE TABLE IF NOT EXISTS is not safe to race on PostgreSQL).
      const budgets = yield* Effect.forEach(
        Array.from({ length: 4 }, (_, i) => i),
        () =>
          Effect.flatMap(
            Layer.build(emptyLedger.pipe(Layer.provide(client()))),
            (context) =>
              Budget.make({ limits }).pipe(Effect.provide(context), Effect.provide(Pricing.layer()), Effect.orDie)
          )
      )
      const results = yield* Effect.all(
        budgets.flatMap((budget) =>
          Array.from(
            { length: 10 },
            () =>
              Effect.either(
                budget.reserve({
                  model: "claude-haiku-4-5",
                  inputTokens: 100_000,
                  maxOutputTokens: 20_000,
                  tenant: "acme"
                })
              )
          )
        ),
        { concurrency: "unbounded" }
      )
      // $0.20 each against $1 shared: five fit, whichever connection asked
      expect(results.filter((result) => result._tag === "Right").length).toBe(5)
      expect((yield* budgets[0]!.status).map((status) => status.reservedUsd)).toEqual([
        expect.closeTo(1, 9),
        expect.closeTo(1, 9)
      ])
    }).pipe(Effect.orDie))

  it.effect("the day's spend and a rolling window survive a new pool (a restart)", () =>
    Effect.gen(function*() {
      const limits = [{ scope: { _tag: "global" as const }, window: "day" as const, limitUsd: 10 }, {
        scope: { _tag: "global" as const },
        window: { rolling: "1 hour" },
        limitUsd: 10
      }]
      const used = { inputTokens: 100_000, outputTokens: 20_000, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }
      yield* Effect.flatMap(Budget.Budget, (budget) =>
        Effect.flatMap(
          budget.reserve({ model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 }),
          (r) => r.settle(used)
        )).pipe(
          Effect.provide(
            Budget.layer({ limits }).pipe(
              Layer.provide(Pricing.layer()),
              Layer.provide(emptyLedger.pipe(Layer.provide(client()))),
              Layer.orDie
            )
          )
        )
      const status = yield* Effect.flatMap(Budget.Budget, (budget) => budget.status).pipe(
        Effect.provide(
          Budget.layer({ limits }).pipe(
            Layer.provide(Pricing.layer()),
            Layer.provide(BudgetSql.layer.pipe(Layer.provide(client()))),
            Layer.orDie
          )
        )
      )
      expect(status.map((s) => s.spentUsd)).toEqual([0.2, 0.2])
    }))

  it.effect("a clock with fractions of a millisecond (TestClock after fractional sleeps) reserves, settles and reads", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust(Duration.micros(2_500n))
      const limits = [{ scope: { _tag: "global" as const }, window: { rolling: "1 hour" }, limitUsd: 10 }]
      const used = { inputTokens: 100_000, outputTokens: 20_000, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }
      const status = yield* Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const reservation = yield* budget.reserve({
          model: "claude-haiku-4-5",
          inputTokens: 100_000,
          maxOutputTokens: 20_000
        })
        yield* TestClock.adjust(Duration.micros(1_300n))
        yield* reservation.settle(used)
        return yield* budget.status
      }).pipe(
        Effect.provide(
          Budget.layer({ limits }).pipe(
            Layer.provide(Pricing.layer()),
            Layer.provide(emptyLedger.pipe(Layer.provide(client()))),
            Layer.orDie
          )
        )
      )
      expect(status.map((s) => [s.spentUsd, s.reservedUsd])).toEqual([[0.2, 0]])
    }))
})
