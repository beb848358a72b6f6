import { describe, expect, it } from "@effect/vitest"
import { Pricing } from "@sluice/core"
import { Effect, Either, HashMap, Logger, Option } from "effect"

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

  it("every family and each of its published snapshots and aliases prices at its own list price", () => {
    // [model, input, output, cache read, cache write] per million tokens, as the providers publish them.
    const listed: ReadonlyArray<readonly [string, number, number, number, number]> = [
      ["claude-opus-4-5", 5, 25, 0.5, 6.25],
      ["claude-opus-4-5-20251101", 5, 25, 0.5, 6.25],
      ["claude-opus-4-1-20250805", 15, 75, 1.5, 18.75],
      ["claude-opus-4-20250514", 15, 75, 1.5, 18.75],
      ["claude-opus-4-0", 15, 75, 1.5, 18.75],
      ["claude-sonnet-4-5-20250929", 3, 15, 0.3, 3.75],
      ["claude-sonnet-4-20250514", 3, 15, 0.3, 3.75],
      ["claude-3-7-sonnet-20250219", 3, 15, 0.3, 3.75],
      ["claude-haiku-4-5-20251001", 1, 5, 0.1, 1.25],
      ["claude-3-5-haiku-20241022", 0.8, 4, 0.08, 1],
      ["claude-3-5-haiku-latest", 0.8, 4, 0.08, 1],
      ["claude-3-haiku-20240307", 0.25, 1.25, 0.03, 0.3],
      ["gpt-5", 1.25, 10, 0.125, 1.25],
      ["gpt-5-mini-2025-08-07", 0.25, 2, 0.025, 0.25],
      ["gpt-5-nano", 0.05, 0.4, 0.005, 0.05],
      ["gpt-4.1-2025-04-14", 2, 8, 0.5, 2],
      ["gpt-4.1-mini", 0.4, 1.6, 0.1, 0.4],
      ["gpt-4.1-nano", 0.1, 0.4, 0.025, 0.1],
      ["gpt-4.1-nano-2025-04-14", 0.1, 0.4, 0.025, 0.1],
      ["gpt-4o-2024-11-20", 2.5, 10, 1.25, 2.5],
      ["gpt-4o-2024-05-13", 5, 15, 5, 5],
      ["gpt-4o-mini-2024-07-18", 0.15, 0.6, 0.075, 0.15],
      ["o3", 2, 8, 0.5, 2],
      ["o4-mini-2025-04-16", 1.1, 4.4, 0.275, 1.1]
    ]
    for (const [model, input, output, cacheRead, cacheWrite] of listed) {
      const resolved = Either.getOrThrow(Pricing.resolve(Pricing.defaultTable, model))
      expect({ model, inferred: resolved.inferred, entry: resolved.entry, ...resolved.price }).toEqual({
        model,
        inferred: false,
        entry: model,
        inputPerMTok: input,
        outputPerMTok: output,
        cacheReadPerMTok: cacheRead,
        cacheWritePerMTok: cacheWrite
      })
    }
  })

  it("a longer family never takes a shorter family's price", () => {
    const shorterOnly = {
      "claude-opus-4": Pricing.defaultTable["claude-opus-4"]!,
      "gpt-4.1": Pricing.defaultTable["gpt-4.1"]!
    }
    for (const model of ["claude-opus-4-5", "claude-opus-4-5-20251101", "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"]) {
      expect(Either.isLeft(Pricing.lookup(shorterOnly, model)), model).toBe(true)
    }
    // In the default table each has its own, lower price.
    expect(Either.getOrThrow(Pricing.lookup(Pricing.defaultTable, "claude-opus-4-5")).inputPerMTok).toBe(5)
    expect(Either.getOrThrow(Pricing.lookup(Pricing.defaultTable, "gpt-4.1-nano")).inputPerMTok).toBe(0.1)
  })

  it("an unlisted dated snapshot or -latest of an entry is inferred as that entry", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["claude-sonnet-4-5-20260115", "claude-sonnet-4-5"],
      ["claude-opus-4-5-latest", "claude-opus-4-5"],
      ["gpt-4.1-nano-2026-03-01", "gpt-4.1-nano"],
      ["gpt-5-latest", "gpt-5"]
    ]
    for (const [model, entry] of cases) {
      const resolved = Either.getOrThrow(Pricing.resolve(Pricing.defaultTable, model))
      expect({ model, entry: resolved.entry, inferred: resolved.inferred }).toEqual({ model, entry, inferred: true })
      expect(resolved.price).toEqual(Pricing.defaultTable[entry])
    }
  })

  it("a name that is not an entry plus a date or -latest is unknown", () => {
    for (
      const model of [
        "claude-sonnet", // a prefix of entries, not an entry
        "claude-opus-4-6", // another model of the family
        "gpt-5-chat-latest", // -latest of a name the table lacks
        "gpt-5-pro",
        "claude-sonnet-4-5-20251399", // not a date
        "claude-sonnet-4-5-2025", // not a date
        "gpt-4.1-nano-0414"
      ]
    ) {
      expect(Either.isLeft(Pricing.resolve(Pricing.defaultTable, model)), model).toBe(true)
    }
  })

  it("UnknownModel names the model and the table's families, not their snapshots", () => {
    const error = Either.getLeft(Pricing.lookup(Pricing.defaultTable, "gpt-9")).pipe(Option.getOrThrow)
    expect(error.model).toBe("gpt-9")
    expect(error.known).toContain("claude-opus-4-5")
    expect(error.known).toContain("gpt-4.1-nano")
    expect(error.known).not.toContain("claude-opus-4-5-20251101")
    expect(error.known).not.toContain("claude-3-5-haiku-latest")
    expect(error.message).toContain(`"gpt-9"`)
    expect(error.message).toContain("gpt-5-mini")
  })

  it.effect("an inferred price is logged as a warning once per model name, an own entry never", () =>
    Effect.gen(function*() {
      const warnings: Array<{ readonly message: string; readonly model: unknown }> = []
      const capture = Logger.make(({ annotations, logLevel, message }) => {
        if (logLevel._tag !== "Warning") return
        warnings.push({
          message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
          model: HashMap.get(annotations, "model").pipe(Option.getOrUndefined)
        })
      })
      yield* Effect.gen(function*() {
        const pricing = yield* Pricing.make()
        yield* pricing.cost("claude-sonnet-4-5-20260115", usage)
        yield* pricing.worstCase("claude-sonnet-4-5-20260115", { inputTokens: 1, maxOutputTokens: 1 })
        yield* pricing.price("claude-sonnet-4-5-20260115")
        yield* pricing.price("gpt-4.1-2026-03-01")
        yield* pricing.price("claude-sonnet-4-5-20250929")
        yield* pricing.price("gpt-4.1")
      }).pipe(Effect.provide(Logger.add(capture)))
      expect(warnings.map((warning) => warning.model)).toEqual(["claude-sonnet-4-5-20260115", "gpt-4.1-2026-03-01"])
      expect(warnings[0]!.message).toContain(`"claude-sonnet-4-5"`)
    }))

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
