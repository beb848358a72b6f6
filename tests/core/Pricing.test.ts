import { describe, expect, it } from "@effect/vitest"
import { Pricing } from "@sluice/core"
import { Effect, Either } from "effect"

const usage = {
  inputTokens: 1_000_000,
  outputTokens: 100_000,
  cacheReadInputTokens: 2_000_000,
  cacheWriteInputTokens: 10_000
}

describe("Pricing", () => {
  it.effect("prices every part of the usage at its own price", () =>
    Effect.gen(function*() {
      const pricing = yield* Pricing.make()
      // 1M input × $3 + 0.1M output × $15 + 2M cache reads × $0.30 + 0.01M cache writes × $3.75
      expect(yield* pricing.cost("claude-sonnet-4-5", usage)).toBeCloseTo(3 + 1.5 + 0.6 + 0.0375, 9)
      expect(yield* pricing.worstCase("claude-haiku-4-5", { inputTokens: 10_000, maxOutputTokens: 1_000 })).toBeCloseTo(
        0.01 + 0.005,
        9
      )
    }))

  it.effect("an unknown model is an error, never a zero cost", () =>
    Effect.gen(function*() {
      const pricing = yield* Pricing.make()
      const error = yield* Effect.flip(pricing.cost("mystery-model", usage))
      expect(error).toMatchObject({ _tag: "UnknownModel", model: "mystery-model" })
      expect(error.message).toContain("mystery-model")
    }))

  it("dated model names find their entry by the longest prefix", () => {
    const table = {
      "claude-sonnet-4": Pricing.defaultTable["claude-sonnet-4"]!,
      "claude-sonnet-4-5": { inputPerMTok: 9, outputPerMTok: 9, cacheReadPerMTok: 9, cacheWritePerMTok: 9 }
    }
    expect(Either.getOrThrow(Pricing.lookup(table, "claude-sonnet-4-5-20250929")).inputPerMTok).toBe(9)
    expect(Either.getOrThrow(Pricing.lookup(table, "claude-sonnet-4-20250514")).inputPerMTok).toBe(3)
    expect(Either.isLeft(Pricing.lookup(table, "claude-sonnet"))).toBe(true)
  })

  it.effect("an invalid table is refused with the field named", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Pricing.make({
          "my-model": { inputPerMTok: 1, outputPerMTok: -2, cacheReadPerMTok: 0.1, cacheWritePerMTok: 1 }
        })
      )
      expect(error._tag).toBe("InvalidPriceTable")
      expect(error.issues.map((issue) => issue.path)).toEqual(["my-model.outputPerMTok"])
      const missing = yield* Effect.flip(
        Pricing.make({ "my-model": { inputPerMTok: 1, outputPerMTok: 2, cacheReadPerMTok: 0.1 } })
      )
      expect(missing.issues.map((issue) => issue.path)).toEqual(["my-model.cacheWritePerMTok"])
    }))
})
