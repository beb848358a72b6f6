import { describe, expect, it } from "@effect/vitest"
import { type LlmClient, TokenEstimator } from "@sluice/core"
import { Effect, FastCheck as fc, Layer } from "effect"
import { Tiktoken } from "js-tiktoken/lite"
import o200k from "js-tiktoken/ranks/o200k_base"

// The reference: js-tiktoken itself, special-token text treated as text.
const tokenizer = new Tiktoken(o200k)
const exact = (text: string) => tokenizer.encode(text, [], []).length
const utf8 = new TextEncoder()
const longestPiece = (text: string) =>
  Math.max(0, ...Array.from(text.matchAll(new RegExp(o200k.pat_str, "gu")), (match) => utf8.encode(match[0]).length))

/** Integer arithmetic for ⌈n × (1 + p/100)⌉, free of floating-point dust. */
const withMargin = (n: number, percent = 5) => Math.ceil((n * (100 + percent)) / 100)

const question = "Summarise the attached quarterly report in three bullet points."
const report = Array.from(
  { length: 40 },
  (_, i) => `Quarter ${i % 4 + 1}: revenue grew ${i * 3 + 2} % while costs fell; the board approved dividend no. ${i}.`
).join("\n")

const base: LlmClient.Request = {
  model: "claude-haiku-4-5",
  messages: [{ role: "user", content: question }],
  maxOutputTokens: 512
}

const usage = (inputTokens: number, outputTokens = 100): LlmClient.Usage => ({
  inputTokens,
  outputTokens,
  cacheReadInputTokens: 0,
  cacheWriteInputTokens: 0
})

const recordTool: LlmClient.Tool = {
  name: "record_summary",
  description: "Record the summary as bullet points",
  inputSchema: {
    type: "object",
    properties: { bullets: { type: "array", items: { type: "string" } } },
    required: ["bullets"]
  }
}

/** Estimates, then reports `ratio` × the raw count as the provider's input, `times` times. */
const train = (
  estimator: TokenEstimator.TokenEstimator["Type"],
  request: LlmClient.Request,
  ratio: number,
  times: number
) =>
  Effect.gen(function*() {
    for (let i = 0; i < times; i++) {
      const estimate = yield* estimator.estimate(request)
      yield* estimator.observe(estimate, usage(Math.round(estimate.rawInputTokens * ratio)))
    }
  })

describe("TokenEstimator", () => {
  describe("countRequest", () => {
    it("counts every part of the request with the documented framing", () => {
      const length = (text: string) => text.length
      const request: LlmClient.Request = {
        model: "m",
        system: "sys",
        messages: [
          { role: "user", content: "hello" },
          {
            role: "assistant",
            content: [{ type: "text", text: "hm" }, { type: "tool_use", id: "t1", name: "look", input: { q: 1 } }]
          },
          { role: "user", content: [{ type: "tool_result", toolUseId: "t1", content: "found" }] }
        ],
        tools: [{ name: "look", description: "finds", inputSchema: { type: "object" } }],
        maxOutputTokens: 10
      }
      const expected = 8 + // per request
        (4 + 3) + // system
        (4 + 5) + // "hello"
        (4 + 2 + (2 + 4 + "{\"q\":1}".length)) + // text + tool_use (id, name, input JSON)
        (4 + 2 + 5) + // tool_result (tool-use id, content)
        (4 + 4 + 5 + "{\"type\":\"object\"}".length) // tool (name, description, schema)
      expect(TokenEstimator.countRequest(length, request)).toBe(expected)
      expect(TokenEstimator.countRequest(length, request, { perMessage: 0, perRequest: 0 })).toBe(expected - 8 - 5 * 4)
    })

    it("a tool input JSON cannot render (a cycle, a bigint) counts as nothing instead of failing", () => {
      const cyclic: { self?: unknown } = {}
      cyclic.self = cyclic
      const request: LlmClient.Request = {
        ...base,
        messages: [{
          role: "assistant",
          content: [{ type: "tool_use", id: "a", name: "b", input: cyclic }, {
            type: "tool_use",
            id: "c",
            name: "d",
            input: 1n
          }]
        }]
      }
      expect(TokenEstimator.countRequest((text) => text.length, request)).toBe(8 + 4 + 4)
    })
  })

  describe("the tiktoken encoder", () => {
    it.effect.prop(
      "equals js-tiktoken's own count on any text without a piece longer than 64 UTF-8 bytes",
      {
        text: fc.oneof(
          fc.string({ unit: "binary", maxLength: 20 }),
          fc.string({ unit: "grapheme", maxLength: 120 }),
          fc.string({ maxLength: 300 })
        )
      },
      ({ text }) =>
        Effect.gen(function*() {
          fc.pre(longestPiece(text) <= 64)
          const encode = yield* TokenEstimator.encoder()
          expect(encode(text)).toBe(exact(text))
          expect(encode(text)).toBe(exact(text)) // the memoised second count too
        }),
      { fastCheck: { numRuns: 200 } }
    )

    it.effect("special-token text is counted as text, not refused", () =>
      Effect.gen(function*() {
        const encode = yield* TokenEstimator.encoder()
        const text = "a prompt quoting <|endoftext|> and <|endofprompt|>"
        expect(encode(text)).toBe(exact(text))
      }))

    it.effect(
      "pathological runs (100,000 '=' and an unbroken lowercase run) count quickly and close to tiktoken's rate",
      () =>
        Effect.gen(function*() {
          const encode = yield* TokenEstimator.encoder()
          const equals = "=".repeat(100_000)
          const bases = "acgt".repeat(25_000)
          // js-tiktoken alone needs minutes for either; compare rates on a short run.
          expect(encode(equals) / equals.length).toBeCloseTo(exact("=".repeat(320)) / 320, 2)
          expect(Math.abs(encode(bases) / bases.length - exact(bases.slice(0, 320)) / 320)).toBeLessThan(0.05)
        }),
      5_000
    )
  })

  it.layer(TokenEstimator.layer())((it) => {
    it.effect("a known text counts as the tokenizer's exact count plus the documented framing", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const estimate = yield* estimator.estimate({ ...base, model: "known-text" })
        expect(estimate).toEqual({
          model: "known-text",
          rawInputTokens: exact(question) + 4 + 8,
          inputTokens: withMargin(exact(question) + 4 + 8),
          outputTokens: 512,
          shape: "plain",
          toolOverheadTokens: 0
        })
        const system = "You are a careful analyst."
        const full = yield* estimator.estimate({ ...base, model: "known-text", system, tools: [recordTool] })
        const tool = exact(recordTool.name) + exact(recordTool.description!) +
          exact(JSON.stringify(recordTool.inputSchema))
        expect(full.rawInputTokens).toBe(8 + (4 + exact(system)) + (4 + exact(question)) + (4 + tool))
      }))

    it.effect("the count grows with the system prompt, the history, tools and tool blocks", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const raw = (request: LlmClient.Request) => Effect.map(estimator.estimate(request), (e) => e.rawInputTokens)
        const plain = yield* raw(base)
        const toolUse = (input: unknown): LlmClient.Message => ({
          role: "assistant",
          content: [{ type: "tool_use", id: "toolu_01", name: "lookup", input }]
        })
        expect(yield* raw({ ...base, system: "You are a careful analyst." })).toBeGreaterThan(plain)
        expect(yield* raw({ ...base, messages: [...base.messages, { role: "assistant", content: "Which report?" }] }))
          .toBeGreaterThan(plain)
        expect(yield* raw({ ...base, tools: [recordTool] })).toBeGreaterThan(plain)
        expect(yield* raw({ ...base, tools: [recordTool, { ...recordTool, name: "second" }] })).toBeGreaterThan(
          yield* raw({ ...base, tools: [recordTool] })
        )
        const small = yield* raw({ ...base, messages: [...base.messages, toolUse({ quarter: "Q3" })] })
        const large = yield* raw({
          ...base,
          messages: [...base.messages, toolUse({ quarter: "Q3", year: 2026, regions: ["EMEA", "APAC"] })]
        })
        expect(small).toBeGreaterThan(plain)
        expect(large).toBeGreaterThan(small)
        const result = (content: string): LlmClient.Message => ({
          role: "user",
          content: [{ type: "tool_result", toolUseId: "toolu_01", content }]
        })
        const short = yield* raw({ ...base, messages: [...base.messages, result("ok")] })
        expect(short).toBeGreaterThan(plain)
        expect(yield* raw({ ...base, messages: [...base.messages, result(report)] })).toBeGreaterThan(
          short + exact(report) - exact("ok") - 1
        )
      }))

    it.effect("calibration moves the estimate to the provider's count (1.3 × raw) plus the margin", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const request: LlmClient.Request = {
          ...base,
          model: "calibrated",
          messages: [{ role: "user", content: report }]
        }
        const before = yield* estimator.estimate(request)
        const target = before.rawInputTokens * 1.3 * 1.05
        let previous = before.inputTokens
        for (let i = 0; i < 20; i++) {
          yield* train(estimator, request, 1.3, 1)
          const next = (yield* estimator.estimate(request)).inputTokens
          expect(next).toBeGreaterThanOrEqual(previous) // moves one way, never overshoots
          expect(next).toBeLessThanOrEqual(Math.ceil(target) + 1)
          previous = next
        }
        const calibration = yield* estimator.calibration("calibrated")
        expect(calibration.samples).toBe(20)
        expect(calibration.inputRatio).toBeCloseTo(1.3, 2)
        expect(Math.abs(previous - target)).toBeLessThanOrEqual(2)
        expect(previous).toBeGreaterThan(before.rawInputTokens * 1.3) // covers what the provider counts
      }))

    it.effect("one sample moves the ratio a 1/minSamples step, and an absurd one is clamped to 4×", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        yield* train(estimator, { ...base, model: "one-sample" }, 1.5, 1)
        expect((yield* estimator.calibration("one-sample")).inputRatio).toBeCloseTo(1.1, 1)
        const estimate = yield* estimator.estimate({ ...base, model: "absurd" })
        yield* estimator.observe(estimate, usage(estimate.rawInputTokens * 1_000))
        expect((yield* estimator.calibration("absurd")).inputRatio).toBeCloseTo(1 + 3 / 5, 10)
      }))

    it.effect("the provider's whole input counts: uncached, cache reads and cache writes", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const request: LlmClient.Request = { ...base, model: "cached", messages: [{ role: "user", content: report }] }
        for (let i = 0; i < 10; i++) {
          const estimate = yield* estimator.estimate(request)
          const raw = estimate.rawInputTokens
          yield* estimator.observe(estimate, {
            inputTokens: raw * 0.1,
            cacheReadInputTokens: raw,
            cacheWriteInputTokens: raw * 0.2,
            outputTokens: 50
          })
        }
        expect((yield* estimator.calibration("cached")).inputRatio).toBeCloseTo(1.3, 10)
      }))

    it.effect("models learn apart", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const request: LlmClient.Request = { ...base, messages: [{ role: "user", content: report }] }
        yield* train(estimator, { ...request, model: "wordy" }, 1.3, 10)
        yield* train(estimator, { ...request, model: "terse" }, 0.8, 10)
        expect((yield* estimator.calibration("wordy")).inputRatio).toBeCloseTo(1.3, 2)
        expect((yield* estimator.calibration("terse")).inputRatio).toBeCloseTo(0.8, 2)
        expect(yield* estimator.calibration("untouched")).toEqual({
          model: "untouched",
          shape: "plain",
          samples: 0,
          inputRatio: 1,
          typicalOutput: undefined
        })
        const untouched = yield* estimator.estimate({ ...request, model: "untouched" })
        expect(untouched.inputTokens).toBe(withMargin(untouched.rawInputTokens))
      }))

    it.effect.prop(
      "appending a message never lowers the estimate, whatever was learned",
      {
        texts: fc.array(fc.string({ unit: "grapheme", maxLength: 120 }), { minLength: 1, maxLength: 5 }),
        extra: fc.string({ unit: "grapheme", maxLength: 120 }),
        ratio: fc.double({ min: 0.1, max: 10, noNaN: true })
      },
      ({ extra, ratio, texts }) =>
        Effect.gen(function*() {
          const estimator = yield* TokenEstimator.TokenEstimator
          const request: LlmClient.Request = {
            ...base,
            model: "property",
            messages: texts.map((content) => ({ role: "user" as const, content }))
          }
          yield* train(estimator, request, ratio, 1)
          const longer: LlmClient.Request = {
            ...request,
            messages: [...request.messages, { role: "assistant", content: extra }]
          }
          const shorter = yield* estimator.estimate(request)
          const appended = yield* estimator.estimate(longer)
          expect(appended.rawInputTokens).toBeGreaterThanOrEqual(shorter.rawInputTokens + 4)
          expect(appended.inputTokens).toBeGreaterThanOrEqual(shorter.inputTokens)
        }),
      { fastCheck: { numRuns: 100 } }
    )

    it.effect("by default the output reservation is maxOutputTokens, however much was observed", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        for (let i = 0; i < 10; i++) {
          const estimate = yield* estimator.estimate({ ...base, model: "unlearned-output" })
          yield* estimator.observe(estimate, usage(estimate.rawInputTokens, 40))
        }
        expect((yield* estimator.estimate({ ...base, model: "unlearned-output" })).outputTokens).toBe(512)
        expect((yield* estimator.calibration("unlearned-output")).typicalOutput).toBe(withMargin(40))
      }))
  })

  describe("requests with tools", () => {
    // The provider's truth: 1.1 × the tokenizer's count, plus its tool-use system prompt when tools are offered.
    const encodeExact = (text: string) => exact(text)
    const providerCount = (request: LlmClient.Request, toolPrompt: number) =>
      Math.round(1.1 * TokenEstimator.countRequest(encodeExact, request)) +
      (request.tools !== undefined && request.tools.length > 0 ? toolPrompt : 0)
    const plainCall = (model: string, i: number): LlmClient.Request => ({
      ...base,
      model,
      messages: [{ role: "user", content: `${question} Document ${i}: ${report.slice(0, 400 + (i % 7) * 150)}` }]
    })
    const toolCall = (model: string, i: number): LlmClient.Request => ({
      ...base,
      model,
      system: "Extract the summary with the tool.",
      messages: [{ role: "user", content: `Note ${i}: revenue grew ${i} %.` }],
      tools: [recordTool],
      toolChoice: { type: "tool", name: recordTool.name }
    })
    const observeTruth = (
      estimator: TokenEstimator.TokenEstimator["Type"],
      request: LlmClient.Request,
      toolPrompt: number
    ) =>
      Effect.gen(function*() {
        const estimate = yield* estimator.estimate(request)
        yield* estimator.observe(estimate, usage(providerCount(request, toolPrompt)))
        return estimate
      })
    /** estimate / (truth × margin): 1 is a perfect reservation. */
    const fit = (estimate: TokenEstimator.Estimate, request: LlmClient.Request, toolPrompt: number) =>
      estimate.inputTokens / (providerCount(request, toolPrompt) * 1.05)

    it.layer(TokenEstimator.layer())((it) => {
      it.effect("a stream of tool calls (true count with the 313-token tool prompt) no longer drags the model's plain estimates", () =>
        Effect.gen(function*() {
          const estimator = yield* TokenEstimator.TokenEstimator
          const model = "claude-sonnet-4-5"
          for (let i = 0; i < 10; i++) yield* observeTruth(estimator, plainCall(model, i), 313)
          const plainBefore = fit(yield* estimator.estimate(plainCall(model, 99)), plainCall(model, 99), 313)
          expect(Math.abs(plainBefore - 1)).toBeLessThan(0.03)
          for (let i = 0; i < 60; i++) yield* observeTruth(estimator, toolCall(model, i), 313)
          // Plain calls of the same model are reserved as before the tool calls: within a few %.
          const plainAfter = fit(yield* estimator.estimate(plainCall(model, 99)), plainCall(model, 99), 313)
          expect(Math.abs(plainAfter - 1)).toBeLessThan(0.03)
          // And tool calls are reserved for what the provider counts, overhead included.
          const tools = fit(yield* estimator.estimate(toolCall(model, 99)), toolCall(model, 99), 313)
          expect(Math.abs(tools - 1)).toBeLessThan(0.03)
        }))

      it.effect("a request with tools reserves the model's tool-use prompt by tool choice (Sonnet 4.5: 346 auto, 313 any/tool); a plain one none", () =>
        Effect.gen(function*() {
          const estimator = yield* TokenEstimator.TokenEstimator
          const request = toolCall("claude-sonnet-4-5-20250929", 1)
          const forced = yield* estimator.estimate(request)
          expect(forced.shape).toBe("tools")
          expect(forced.toolOverheadTokens).toBe(313)
          expect(forced.inputTokens).toBe(withMargin(forced.rawInputTokens + 313))
          const auto = yield* estimator.estimate({ ...request, toolChoice: undefined })
          expect(auto.toolOverheadTokens).toBe(346)
          expect(auto.inputTokens).toBe(withMargin(auto.rawInputTokens + 346))
          expect((yield* estimator.estimate({ ...request, model: "claude-3-5-haiku-20241022" })).toolOverheadTokens)
            .toBe(340)
          const plain = yield* estimator.estimate({ ...request, tools: undefined })
          expect(plain.shape).toBe("plain")
          expect(plain.toolOverheadTokens).toBe(0)
        }))

      it.effect("the first tool call of a model starts from the ratio its plain calls taught, then learns its own", () =>
        Effect.gen(function*() {
          const estimator = yield* TokenEstimator.TokenEstimator
          const model = "claude-haiku-4-5"
          for (let i = 0; i < 10; i++) yield* observeTruth(estimator, plainCall(model, i), 313)
          const plain = yield* estimator.calibration(model)
          const tools = yield* estimator.calibration(model, "tools")
          expect(tools.samples).toBe(0)
          expect(tools.inputRatio).toBeCloseTo(plain.inputRatio, 10)
          yield* observeTruth(estimator, toolCall(model, 1), 346)
          expect((yield* estimator.calibration(model, "tools")).samples).toBe(1)
          expect((yield* estimator.calibration(model)).samples).toBe(10)
        }))

      it.effect("a model the table does not know learns its tool calls apart from its plain calls", () =>
        Effect.gen(function*() {
          const estimator = yield* TokenEstimator.TokenEstimator
          const model = "in-house-model"
          for (let i = 0; i < 10; i++) yield* observeTruth(estimator, plainCall(model, i), 200)
          for (let i = 0; i < 60; i++) yield* observeTruth(estimator, toolCall(model, i), 200)
          const plain = fit(yield* estimator.estimate(plainCall(model, 99)), plainCall(model, 99), 200)
          expect(Math.abs(plain - 1)).toBeLessThan(0.03)
          // The tool calls' overhead is learned as their ratio (the prompts are alike, so it fits them closely).
          const tools = fit(yield* estimator.estimate(toolCall(model, 99)), toolCall(model, 99), 200)
          expect(Math.abs(tools - 1)).toBeLessThan(0.1)
        }))
    })
  })

  it.effect("the toolOverhead option replaces the table: an entry of your own, or {} to turn it off", () =>
    Effect.gen(function*() {
      const request: LlmClient.Request = {
        ...base,
        model: "llama-3-70b",
        tools: [recordTool],
        toolChoice: { type: "any" }
      }
      const custom = yield* TokenEstimator.make({ toolOverhead: { "acme/llama-3": { auto: 40, any: 60 } } })
      expect((yield* custom.estimate(request)).toolOverheadTokens).toBe(60)
      const otherProvider = yield* TokenEstimator.make({
        toolOverhead: { "acme/llama-3": { auto: 40, any: 60 } },
        provider: "bedrock"
      })
      expect((yield* otherProvider.estimate(request)).toolOverheadTokens).toBe(0)
      const off = yield* TokenEstimator.make({ toolOverhead: {} })
      const estimate = yield* off.estimate({ ...request, model: "claude-sonnet-4-5" })
      expect(estimate.toolOverheadTokens).toBe(0)
      expect(estimate.inputTokens).toBe(withMargin(estimate.rawInputTokens))
    }))

  describe("with learnOutput", () => {
    const Learning = Layer.effect(
      TokenEstimator.TokenEstimator,
      TokenEstimator.make({ learnOutput: true, minSamples: 5 })
    )
    const observeOutputs = (model: string, outputs: ReadonlyArray<number>) =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        for (const output of outputs) {
          const estimate = yield* estimator.estimate({ ...base, model })
          yield* estimator.observe(estimate, usage(estimate.rawInputTokens, output))
        }
      })

    it.effect("the reservation is maxOutputTokens until minSamples, then the 95th percentile + margin, never above maxOutputTokens", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        yield* observeOutputs("learning", [10, 20, 30, 40])
        expect((yield* estimator.estimate({ ...base, model: "learning" })).outputTokens).toBe(512)
        expect((yield* estimator.calibration("learning")).typicalOutput).toBeUndefined()
        // Then the rest of 1..100: the nearest-rank 95th percentile of 1..100 is 95.
        yield* observeOutputs(
          "learning",
          Array.from({ length: 100 }, (_, i) => i + 1).filter((n) => n % 10 !== 0 || n > 40)
        )
        expect((yield* estimator.calibration("learning")).typicalOutput).toBe(withMargin(95))
        expect((yield* estimator.estimate({ ...base, model: "learning" })).outputTokens).toBe(withMargin(95))
        expect((yield* estimator.estimate({ ...base, model: "learning", maxOutputTokens: 64 })).outputTokens).toBe(64)
        // Another model has learned nothing.
        expect((yield* estimator.estimate({ ...base, model: "other" })).outputTokens).toBe(512)
      }).pipe(Effect.provide(Learning)))

    it.effect("only the last 1,000 outputs of a model are remembered", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        yield* observeOutputs("window", Array.from({ length: 1_000 }, () => 4_000))
        expect((yield* estimator.estimate({ ...base, model: "window", maxOutputTokens: 8_192 })).outputTokens).toBe(
          withMargin(4_000)
        )
        yield* observeOutputs("window", Array.from({ length: 1_000 }, () => 200))
        expect((yield* estimator.estimate({ ...base, model: "window", maxOutputTokens: 8_192 })).outputTokens).toBe(
          withMargin(200)
        )
      }).pipe(Effect.provide(Learning)))
  })
})
