import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing } from "@sluice/core"
import { Effect, Layer } from "effect"
import { budgetLedgerSuite } from "./suites/budgetLedger.js"

budgetLedgerSuite("memory", () => Budget.layerLedgerMemory)

describe("Budget limits", () => {
  it.effect("invalid limits are refused with the field named", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Budget.make({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: -1 }] })
      )
      expect(error._tag).toBe("InvalidBudget")
      expect(error.issues.map((issue) => issue.path)).toEqual(["limits.0.limitUsd"])
      const rolling = yield* Effect.flip(
        Budget.make({ limits: [{ scope: { _tag: "global" }, window: { rolling: "a while" }, limitUsd: 1 }] })
      )
      expect(rolling.message).toContain("a while")
    }).pipe(Effect.provide(Layer.merge(Pricing.layer(), Budget.layerLedgerMemory).pipe(Layer.orDie))))

  it.effect("an unknown model is refused, not reserved at zero", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 1 }] })
      const error = yield* Effect.flip(budget.reserve({ model: "mystery", inputTokens: 1, maxOutputTokens: 1 }))
      expect(error._tag).toBe("UnknownModel")
    }).pipe(Effect.provide(Layer.merge(Pricing.layer(), Budget.layerLedgerMemory).pipe(Layer.orDie))))
})

describe("Budget arithmetic", () => {
  it("a rolling window sums its last 61 slices and adds to the newest; a calendar window is one counter kept to its end", () => {
    const hour = 3_600_000
    const rolling = Budget.countersAt("b", { _tag: "rolling", windowMs: hour }, 10 * hour + 30_000)
    expect(rolling.summed.length).toBe(Budget.rollingSlices + 1)
    expect(rolling.current).toBe(rolling.summed[rolling.summed.length - 1])
    expect(rolling.current).toBe("b#600")
    // the slice's end, then the window, then the margin
    expect(rolling.keepMs).toBe(30_000 + hour + Budget.counterMarginMs)
    expect(Budget.countersAt("d", { _tag: "calendar", endsAt: 24 * hour }, 20 * hour)).toEqual({
      current: "d",
      summed: ["d"],
      keepMs: 4 * hour + Budget.counterMarginMs
    })
  })

  it("a threshold fires when crossed, once, and re-arms when the spend is seen under its line again", () => {
    const fired = new Set<number>()
    expect(Budget.crossedThresholds([0.5, 0.8], 100, 40, 60, fired)).toEqual([0.5])
    expect(Budget.crossedThresholds([0.5, 0.8], 100, 60, 70, fired)).toEqual([])
    // the old spend aged out: under the line again, then across it
    expect(Budget.crossedThresholds([0.5, 0.8], 100, 10, 90, fired)).toEqual([0.5, 0.8])
    expect([...fired]).toEqual([0.5, 0.8])
  })
})
