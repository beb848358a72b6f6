import { describe, expect, it } from "@effect/vitest"
import { Pricing, TokenEstimator } from "@sluice/core"
import type { Document } from "@sluice/examples/extract/Documents"
import * as Extraction from "@sluice/examples/extract/Extraction"
import * as Provider from "@sluice/examples/extract/Provider"
import { Effect, Either, Option, Stream } from "effect"

const none = Option.none<never>()
const choose = (flags: { provider?: Provider.ProviderName; baseUrl?: string }, anthropicKeySet: boolean) =>
  Provider.choose({
    provider: Option.fromNullable(flags.provider),
    baseUrl: Option.fromNullable(flags.baseUrl),
    anthropicKeySet
  })

describe("where the extraction job's calls go", () => {
  it("a key in the environment and no flag: the simulator, with one line naming the flag for the real API", () => {
    expect(choose({}, true)).toEqual(Either.right({
      _tag: "Simulator",
      notice:
        "ANTHROPIC_API_KEY is set but not used: this run calls the built-in simulator (--provider anthropic calls the real Anthropic API)"
    }))
    expect(choose({}, false)).toEqual(Either.right({ _tag: "Simulator", notice: undefined }))
    expect(choose({ provider: "simulator" }, true)).toEqual(choose({}, true))
  })

  it("only --provider anthropic or --base-url leave the simulator, and the endpoint is always named", () => {
    expect(choose({ provider: "anthropic" }, true)).toEqual(
      Either.right({ _tag: "Anthropic", baseUrl: "https://api.anthropic.com" })
    )
    expect(choose({ baseUrl: "http://127.0.0.1:8787" }, false)).toEqual(
      Either.right({ _tag: "Anthropic", baseUrl: "http://127.0.0.1:8787" })
    )
    expect(choose({ provider: "anthropic", baseUrl: "http://gateway:1" }, true)).toEqual(
      Either.right({ _tag: "Anthropic", baseUrl: "http://gateway:1" })
    )
  })

  it("refuses --provider anthropic without a key, and --provider simulator with --base-url", () => {
    const noKey = choose({ provider: "anthropic" }, false)
    expect(Either.isLeft(noKey) && noKey.left.message).toBe(
      "--provider anthropic needs the API key in ANTHROPIC_API_KEY"
    )
    const both = choose({ provider: "simulator", baseUrl: "http://127.0.0.1:8787" }, true)
    expect(Either.isLeft(both) && both.left._tag).toBe("InvalidFlags")
  })

  it("a real provider always has a budget: --budget-usd, else the $5 default; the simulator only when asked", () => {
    const real: Provider.Choice = { _tag: "Anthropic", baseUrl: Provider.anthropicApi }
    const simulator: Provider.Choice = { _tag: "Simulator", notice: undefined }
    expect(Provider.defaultBudgetUsd).toBe(5)
    expect(Provider.budgetOf(real, none)).toEqual({ usd: 5, isDefault: true })
    expect(Provider.budgetOf(real, Option.some(40))).toEqual({ usd: 40, isDefault: false })
    expect(Provider.budgetOf(simulator, none)).toEqual({ usd: undefined, isDefault: false })
    expect(Provider.budgetOf(simulator, Option.some(2))).toEqual({ usd: 2, isDefault: false })
    expect(Provider.budgetLine(Provider.budgetOf(real, none))).toBe(
      "budget $5.00 for the job (the default on a real provider; --budget-usd sets another)"
    )
    expect(Provider.budgetLine(Provider.budgetOf(simulator, none))).toBeUndefined()
  })

  it.effect("the worst case adds every sendable document's estimated input and max_tokens of output at the model's price", () =>
    Effect.gen(function*() {
      // One token per four characters, no margin: the sums are checkable by hand.
      const estimator = TokenEstimator.makeWith((text) => Math.ceil(text.length / 4), { safetyMargin: 0 })
      const price: Pricing.ModelPrice = {
        inputPerMTok: 1,
        outputPerMTok: 5,
        cacheReadPerMTok: 0.1,
        cacheWritePerMTok: 1.25
      }
      const documents: ReadonlyArray<Document> = [
        { id: "a", text: "x".repeat(4_000) },
        { id: "b", text: "x".repeat(40_000) },
        { id: "bad", text: "", problem: "empty document" }
      ]
      const request = (document: Document) => Extraction.request("claude-haiku-4-5", document, "test")
      const each = yield* Effect.forEach(
        documents.slice(0, 2),
        (document) => Effect.map(estimator.estimate(request(document)), (e) => e.inputTokens)
      )
      const worst = yield* Provider.worstCase(Stream.fromIterable(documents), { request, estimator, price })
      expect(worst.documents).toBe(2)
      expect(worst.inputTokens).toBe(each[0]! + each[1]!)
      expect(each[1]! - each[0]!).toBe(9_000)
      expect(worst.outputTokens).toBe(2 * Extraction.maxOutputTokens)
      // $1 per million input tokens, $5 per million output tokens, in micro-dollars.
      expect(worst.micros).toBe(worst.inputTokens * 1 + worst.outputTokens * 5)
      expect(
        Provider.worstCaseLine("claude-haiku-4-5", {
          documents: 5_000,
          inputTokens: 3_150_000,
          outputTokens: 3_000_000,
          micros: 18_150_000
        }, 5)
      ).toBe(
        "worst case $18.15: 5,000 documents to send, about 3,150,000 input tokens and 3,000,000 output tokens (max_tokens of each) at claude-haiku-4-5's list price; " +
          "this run spends at most $5.00 (the budget), documents past it are recorded as over budget"
      )
    }))
})
