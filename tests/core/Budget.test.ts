import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import { Effect, Layer } from "effect"
import { budgetLedgerSuite } from "./suites/budgetLedger.js"

budgetLedgerSuite("memory", () => Budget.layerLedgerMemory)

describe("Budget limits", () => {
  it.effect("invalid limits are refused with the field named", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Budget.make({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: -1 }] }))
      expect(error._tag).toBe("InvalidBudget")
      expect(error.issues.map((issue) => issue.path)).toEqual(["limits.0.limitUsd"])
      const rolling = yield* Effect.flip(Budget.make({ limits: [{ scope: { _tag: "global" }, window: { rolling: "a while" }, limitUsd: 1 }] }))
      expect(rolling.message).toContain("a while")
    }).pipe(Effect.provide(Layer.merge(Pricing.layer(), Budget.layerLedgerMemory).pipe(Layer.orDie))))

  it.effect("an unknown model is refused, not reserved at zero", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 1 }] })
      const error = yield* Effect.flip(budget.reserve({ model: "mystery", inputTokens: 1, maxOutputTokens: 1 }))
      expect(error._tag).toBe("UnknownModel")
    }).pipe(Effect.provide(Layer.merge(Pricing.layer(), Budget.layerLedgerMemory).pipe(Layer.orDie))))
})
