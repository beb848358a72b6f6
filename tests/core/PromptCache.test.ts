import { describe, expect, it } from "@effect/vitest"
import { type LlmClient, PromptCache } from "@sluice/core"

const MODEL = "claude-sonnet-4-5"
const KEY = "anthropic/claude-sonnet-4-5"
const ephemeral = { type: "ephemeral" } as const

const report = (seed: string) =>
  `${seed}: revenue grew while costs fell, and the board approved a dividend. `.repeat(600)

const turn = (document: string, question: string, marked: "document" | "question"): LlmClient.Request => ({
  model: MODEL,
  system: "You answer questions about the document.",
  messages: [{
    role: "user",
    content: [
      { type: "text", text: document, ...(marked === "document" ? { cacheControl: ephemeral } : {}) },
      { type: "text", text: question, ...(marked === "question" ? { cacheControl: ephemeral } : {}) }
    ]
  }],
  maxOutputTokens: 100
})

describe("PromptCache.prefixes", () => {
  it("a long document gives the same prefix ids from another string of the same text, and another id from another text", () => {
    const document = report("Q3")
    const copy = [...document].join("")
    const first = PromptCache.prefixes(turn(document, "Who?", "document"), KEY)!
    expect(PromptCache.prefixes(turn(copy, "Who?", "document"), KEY)).toEqual(first)
    // The same length, one character changed in the middle.
    const middle = Math.floor(document.length / 2)
    const edited = `${document.slice(0, middle)}!${document.slice(middle + 1)}`
    expect(edited.length).toBe(document.length)
    expect(PromptCache.prefixes(turn(edited, "Who?", "document"), KEY)!.last).not.toBe(first.last)
  })

  it("moving the breakpoint past a long document still finds the prefix that marked it", () => {
    const document = report("Q4")
    const cached = PromptCache.prefixes(turn(document, "What grew?", "document"), KEY)!
    const next = PromptCache.prefixes(turn(document, "What fell?", "question"), KEY)!
    expect(next.candidates).toContain(cached.last)
    expect(next.last).not.toBe(cached.last)
  })

  it("a long system prompt and a long string message are told apart from short texts that spell their digest", () => {
    const document = report("FY")
    const long: LlmClient.Request = {
      model: MODEL,
      system: document,
      systemCacheControl: ephemeral,
      messages: [{ role: "user", content: "Summarise." }],
      maxOutputTokens: 10
    }
    const shortSystem = { ...long, system: "#0:0" }
    expect(PromptCache.prefixes(long, KEY)!.last).not.toBe(PromptCache.prefixes(shortSystem, KEY)!.last)
    expect(PromptCache.prefixes({ ...long, system: report("FZ") }, KEY)!.last).not.toBe(
      PromptCache.prefixes(long, KEY)!.last
    )
  })

  it("a predictor learns a long prefix and a later call on it is planned to read it", () => {
    const document = report("H1")
    const predictor = PromptCache.makePredictor({ ttlMillis: 300_000, maxEntries: 100 })
    const first = PromptCache.plan(predictor, turn(document, "A?", "document"), KEY, 20_000, 0)
    expect(first.inputTokens).toBe(20_000)
    first.learn({ inputTokens: 10, outputTokens: 5, cacheReadInputTokens: 0, cacheWriteInputTokens: 15_000 }, 1_000)
    const second = PromptCache.plan(predictor, turn(document, "B?", "question"), KEY, 20_100, 2_000)
    expect(second.inputTokens).toBe(5_100)
  })
})
