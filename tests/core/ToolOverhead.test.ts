import { describe, expect, it } from "@effect/vitest"
import { type LlmClient, ToolOverhead } from "@sluice/core"
import { Either } from "effect"

const tool: LlmClient.Tool = { name: "record", inputSchema: { type: "object" } }
const request = (model: string, toolChoice?: LlmClient.ToolChoice): LlmClient.Request => ({
  model,
  messages: [{ role: "user", content: "hi" }],
  tools: [tool],
  toolChoice,
  maxOutputTokens: 16
})

describe("ToolOverhead", () => {
  it("holds Anthropic's published counts by tool choice: auto/none vs any/tool", () => {
    const table = ToolOverhead.defaultTable
    for (
      const model of [
        "claude-opus-4-1-20250805",
        "claude-opus-4-20250514",
        "claude-sonnet-4-5",
        "claude-sonnet-4-20250514",
        "claude-haiku-4-5",
        "claude-3-7-sonnet-20250219"
      ]
    ) {
      expect(ToolOverhead.tokensFor(table, model, { type: "auto" })).toBe(346)
      expect(ToolOverhead.tokensFor(table, model, { type: "none" })).toBe(346)
      expect(ToolOverhead.tokensFor(table, model, undefined)).toBe(346)
      expect(ToolOverhead.tokensFor(table, model, { type: "any" })).toBe(313)
      expect(ToolOverhead.tokensFor(table, model, { type: "tool", name: "record" })).toBe(313)
    }
    expect(ToolOverhead.tokensFor(table, "claude-3-5-haiku-20241022", { type: "auto" })).toBe(264)
    expect(ToolOverhead.tokensFor(table, "claude-3-5-haiku-20241022", { type: "any" })).toBe(340)
    expect(ToolOverhead.tokensFor(table, "claude-3-opus-20240229", { type: "auto" })).toBe(530)
    expect(ToolOverhead.tokensFor(table, "claude-3-5-sonnet-20241022", { type: "any" })).toBe(313)
    expect(ToolOverhead.tokensFor(table, "claude-3-5-sonnet-20240620", { type: "any" })).toBe(261) // the exact (longer) key wins
    expect(ToolOverhead.tokensFor(table, "gpt-4o-mini", { type: "auto" })).toBe(12)
  })

  it("finds the longest prefix that ends at a '-', and nothing for a model it does not know", () => {
    const table: ToolOverhead.Table = { "x/claude-3": { auto: 1, any: 1 }, "x/claude-3-5-haiku": { auto: 2, any: 2 } }
    expect(ToolOverhead.lookup(table, "claude-3-5-haiku-20241022")).toEqual({ auto: 2, any: 2 })
    expect(ToolOverhead.lookup(table, "claude-3-opus")).toEqual({ auto: 1, any: 1 })
    expect(ToolOverhead.lookup(table, "claude-3")).toEqual({ auto: 1, any: 1 })
    expect(ToolOverhead.lookup(table, "claude-35")).toBeUndefined() // not at a '-'
    expect(ToolOverhead.lookup(ToolOverhead.defaultTable, "gpt-4o")).toEqual({ auto: 12, any: 12 })
    expect(ToolOverhead.lookup(ToolOverhead.defaultTable, "llama-3-70b")).toBeUndefined()
    expect(ToolOverhead.tokensFor(ToolOverhead.defaultTable, "llama-3-70b", { type: "any" })).toBe(0)
  })

  it("with a provider, keys of another provider do not match; bare keys match any provider", () => {
    const table: ToolOverhead.Table = {
      "anthropic/claude-sonnet-4": { auto: 346, any: 313 },
      "llama-3": { auto: 9, any: 9 }
    }
    expect(ToolOverhead.tokensFor(table, "claude-sonnet-4-5", undefined, "anthropic")).toBe(346)
    expect(ToolOverhead.tokensFor(table, "claude-sonnet-4-5", undefined, "openrouter")).toBe(0)
    expect(ToolOverhead.tokensFor(table, "claude-sonnet-4-5", undefined)).toBe(346)
    expect(ToolOverhead.tokensFor(table, "llama-3-8b", undefined, "groq")).toBe(9)
  })

  it("a request pays it only when it offers at least one tool", () => {
    expect(
      ToolOverhead.ofRequest(ToolOverhead.defaultTable, request("claude-sonnet-4-5", { type: "tool", name: "record" }))
    ).toBe(313)
    expect(ToolOverhead.ofRequest(ToolOverhead.defaultTable, { ...request("claude-sonnet-4-5"), tools: [] })).toBe(0)
    expect(ToolOverhead.ofRequest(ToolOverhead.defaultTable, { ...request("claude-sonnet-4-5"), tools: undefined }))
      .toBe(0)
  })

  it("decodeTable accepts a table and names every wrong field", () => {
    expect(Either.isRight(ToolOverhead.decodeTable({ "acme/llama-3": { auto: 40, any: 60 } }))).toBe(true)
    const wrong = ToolOverhead.decodeTable({ "acme/llama-3": { auto: -1, any: 1.5 }, "b/m": { auto: 1 } })
    expect(Either.isLeft(wrong)).toBe(true)
    if (Either.isLeft(wrong)) {
      const paths = wrong.left.issues.map((issue) => issue.path)
      expect(paths).toContain("acme/llama-3.auto")
      expect(paths).toContain("acme/llama-3.any")
      expect(paths).toContain("b/m.any")
      expect(wrong.left.message).toContain("acme/llama-3.auto")
    }
    expect(Either.isRight(ToolOverhead.decodeTable(ToolOverhead.defaultTable))).toBe(true)
  })
})
