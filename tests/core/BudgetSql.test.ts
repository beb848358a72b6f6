import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import * as BudgetSql from "@sluice/core/Budget/Sql"
import { Effect, Layer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { budgetLedgerSuite } from "./suites/budgetLedger.js"

const dir = mkdtempSync(join(tmpdir(), "sluice-budget-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const freshFile = () => join(dir, `ledger-${++files}.db`)

const sqliteLedger = (filename: string) => BudgetSql.layer.pipe(Layer.provide(SqliteClient.layer({ filename })))

budgetLedgerSuite("SQLite", () => sqliteLedger(freshFile()))

describe("Budget over SQLite", () => {
  const limits = [{ scope: { _tag: "global" as const }, window: "day" as const, limitUsd: 1 }]
  const used = { inputTokens: 100_000, outputTokens: 20_000, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }

  it.effect("the day's spend survives a new layer over the same file", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const budgetOn = Budget.layer({ limits }).pipe(
        Layer.provide(Pricing.layer()),
        Layer.provide(sqliteLedger(filename)),
        Layer.orDie
      )
      yield* Effect.flatMap(Budget.Budget, (budget) =>
        Effect.flatMap(
          budget.reserve({ model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 }),
          (r) => r.settle(used)
        )).pipe(Effect.provide(budgetOn))
      const status = yield* Effect.flatMap(Budget.Budget, (budget) => budget.status).pipe(Effect.provide(budgetOn))
      expect(status[0]?.spentUsd).toBeCloseTo(0.2, 9)
    }))

  it.effect("concurrent reserves never pass the limit", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      const results = yield* Effect.all(
        Array.from({ length: 20 }, () =>
          Effect.either(budget.reserve({ model: "claude-haiku-4-5", inputTokens: 100_000, maxOutputTokens: 20_000 }))),
        { concurrency: "unbounded" }
      )
      // $0.20 each against $1: five fit
      expect(
        results.filter((result) =>
          result._tag === "Right"
        ).length
      ).toBe(5)
      expect((yield* budget.status)[0]?.reservedUsd).toBeCloseTo(1, 9)
    }).pipe(
      Effect.provide(
        Budget.layer({ limits }).pipe(
          Layer.provide(Pricing.layer()),
          Layer.provide(sqliteLedger(freshFile())),
          Layer.orDie
        )
      )
    ))
})
