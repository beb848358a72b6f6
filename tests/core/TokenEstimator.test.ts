import { describe, expect, it } from "@effect/vitest"
import type { LlmClient } from "@sluice/core"
import * as TokenEstimator from "@sluice/core/TokenEstimator"
import { Effect, FastCheck as fc, Layer } from "effect"
import { Tiktoken } from "js-tiktoken/lite"
import o200k from "js-tiktoken/ranks/o200k_base"

const tokenizer = new Tiktoken(o200k)
const exact = (text: string) => tokenizer.encode(text, [], []).length

const EstimatorLive = TokenEstimator.layer()

const base: LlmClient.Request = {
  model: "claude-haiku-4-5",
  messages: [{ role: "user", content: "Summarise the attached quarterly report in three bullet points." }],
  maxOutputTokens: 512
}

const usage = (inputTokens: number, outputTokens = 100): LlmClient.Usage => ({
  inputTokens,
  outputTokens,
  cacheReadInputTokens: 0,
  cacheWriteInputTokens: 0
})

describe("TokenEstimator", () => {
  it.layer(EstimatorLive)((it) => {
    it.effect("a known text counts as the tokenizer's exact count plus the documented framing", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const estimate = yield* estimator.estimate(base)
        const text = "Summarise the attached quarterly report in three bullet points."
        expect(estimate.rawInputTokens).toBe(exact(text) + 4 + 8)
        expect(estimate.inputTokens).toBe(Math.ceil(estimate.rawInputTokens * 1.05))
        expect(estimate.outputTokens).toBe(512)
      }))

    it.effect("the count grows with the system prompt, the history, tools and tool blocks", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const raw = (request: LlmClient.Request) => Effect.map(estimator.estimate(request), (e) => e.rawInputTokens)
        const plain = yield* raw(base)
        const withSystem = yield* raw({ ...base, system: "You are a careful analyst." })
        const withHistory = yield* raw({
          ...base,
          messages: [...base.messages, { role: "assistant", content: "Which report?" }, { role: "user", content: "The Q3 one." }]
        })
        const withTool = yield* raw({
          ...base,
          tools: [{ name: "record", description: "Record the summary", inputSchema: { type: "object", properties: { bullets: { type: "array", items: { type: "string" } } } } }]
        })
        const withBlocks = yield* raw({
          ...base,
          messages: [
            ...base.messages,
            { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "lookup", input: { quarter: "Q3", year: 2026 } }] },
            { role: "user", content: [{ type: "tool_result", toolUseId: "t1", content: "Revenue 12.3M, up 8 %." }] }
          ]
        })
        expect(withSystem).toBeGreaterThan(plain)
        expect(withHistory).toBeGreaterThan(plain)
        expect(withTool).toBeGreaterThan(plain)
        expect(withBlocks).toBeGreaterThan(plain)
      }))

    it.effect("calibration moves the estimate toward what the provider counts; models learn apart", () =>
      Effect.gen(function*() {
        const estimator = yield* TokenEstimator.TokenEstimator
        const request = { ...base, model: "calibrated-model" }
        const before = yield* estimator.estimate(request)
        for (let i = 0; i < 20; i++) {
          const estimate = yield* estimator.estimate(request)
          yield* estimator.observe(estimate, usage(Math.round(estimate.rawInputTokens * 1.3)))
        }
        const after = yield* estimator.estimate(request)
        const calibration = yield* estimator.calibration("calibrated-model")
        expect(calibration.samples).toBe(20)
        expect(calibration.inputRatio).toBeCloseTo(1.3, 1)
        const actual = before.rawInputTokens * 1.3
        expect(Math.abs(after.inputTokens - actual * 1.05)).toBeLessThan(Math.abs(before.inputTokens - actual * 1.05))
        expect(after.inputTokens).toBeGreaterThanOrEqual(Math.floor(actual))
        expect((yield* estimator.calibration("another-model")).inputRatio).toBe(1)
      }))

    it.prop(
      "appending a message never lowers the estimate",
      { texts: fc.array(fc.string({ maxLength: 200 }), { minLength: 1, maxLength: 6 }), extra: fc.string({ maxLength: 200 }) },
      ({ extra, texts }) => {
        const encode = (text: string) => exact(text)
        const request: LlmClient.Request = { ...base, messages: texts.map((content) => ({ role: "user" as const, content })) }
        const longer: LlmClient.Request = { ...request, messages: [...request.messages, { role: "assistant", content: extra }] }
        expect(TokenEstimator.countRequest(encode, longer)).toBeGreaterThanOrEqual(TokenEstimator.countRequest(encode, request))
      },
      { fastCheck: { numRuns: 50 } }
    )
  })

  it.effect("with learnOutput the output reservation becomes the learned percentile, never above max_tokens", () =>
    Effect.gen(function*() {
      const estimator = yield* TokenEstimator.TokenEstimator
      expect((yield* estimator.estimate(base)).outputTokens).toBe(512)
      for (const output of [80, 90, 100, 110, 120, 95, 85, 105, 115, 100]) {
        const estimate = yield* estimator.estimate(base)
        yield* estimator.observe(estimate, usage(estimate.rawInputTokens, output))
      }
      const learned = yield* estimator.estimate(base)
      expect(learned.outputTokens).toBe(Math.ceil(120 * 1.05))
      expect((yield* estimator.estimate({ ...base, maxOutputTokens: 50 })).outputTokens).toBe(50)
      expect((yield* estimator.calibration(base.model)).typicalOutput).toBe(Math.ceil(120 * 1.05))
    }).pipe(Effect.provide(Layer.effect(TokenEstimator.TokenEstimator, TokenEstimator.make({ learnOutput: true, minSamples: 5 })))))
})
