import { LanguageModel } from "@effect/ai"
import { AnthropicClient, AnthropicLanguageModel } from "@effect/ai-anthropic"
import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Budget, Pricing, RateLimiter, TokenEstimator } from "@sluice/core"
import type { Quota } from "@sluice/core"
import * as EffectAi from "@sluice/providers/EffectAi"
import * as Simulator from "@sluice/simulator/Simulator"
import { Chunk, Effect, Either, Fiber, Layer, Option, Redacted, Schema, Stream } from "effect"

const model = "claude-haiku-4-5"
const key = `anthropic/${model}`
const maxTokens = 256

/** A quota that barely refills during a test, so that bucket levels show exactly what was charged. */
const slow: Quota.QuotaInput = {
  requests: { limit: 1_000, per: "30 days" },
  inputTokens: { limit: 1_000_000, per: "30 days" },
  outputTokens: { limit: 1_000_000, per: "30 days" }
}

/** `@effect/ai-anthropic`'s model over the simulator: what an app already has. */
const anthropicOn = (url: string) =>
  AnthropicLanguageModel.model(model, { max_tokens: maxTokens }).pipe(
    Layer.provide(AnthropicClient.layer({ apiKey: Redacted.make("sim-key"), apiUrl: url })),
    Layer.provide(FetchHttpClient.layer)
  )

/** The one layer more that governs it, with the limiter and estimator exposed to the test. */
const governedOn = (url: string, quota: Quota.QuotaInput, options: Partial<EffectAi.Options> = {}) =>
  EffectAi.layerGoverned({ model, maxOutputTokens: maxTokens, ...options }).pipe(
    Layer.provide(anthropicOn(url)),
    Layer.provideMerge(RateLimiter.layerMemory({ quotas: { [key]: quota } })),
    Layer.provideMerge(TokenEstimator.layer())
  )

const statsOf = (running: Simulator.Running) =>
  Effect.map(running.stats, (stats) => stats.keys.find((entry) => entry.model === model))

const document =
  "Quarterly results\nRevenue grew strongly and the team is delighted with the excellent growth in cloud services."

describe("EffectAi.layerGoverned over @effect/ai-anthropic, against the simulator", () => {
  it.scopedLive("generateText goes through and the provider counted exactly the usage the response reports", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const response = yield* LanguageModel.generateText({
        prompt: [{ role: "system", content: "You are terse." }, {
          role: "user",
          content: "Tell me about token buckets."
        }]
      }).pipe(
        Effect.provide(governedOn(running.url, slow))
      )
      expect(response.text.length).toBeGreaterThan(0)
      const input = response.usage.inputTokens!
      const output = response.usage.outputTokens!
      expect(output).toBeLessThan(maxTokens)
      // The simulator (the judge) counted what the response reported.
      const judged = yield* statsOf(running)
      expect(judged).toMatchObject({ accepted: 1, rateLimited: 0, inputTokens: input, outputTokens: output })
    }))

  it.scopedLive("after a call the buckets hold capacity minus the real usage, and the estimator learned from it", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const { calibration, levels, usage } = yield* Effect.gen(function*() {
        const response = yield* LanguageModel.generateText({ prompt: "Tell me about token buckets." })
        const limiter = yield* RateLimiter.RateLimiter
        const estimator = yield* TokenEstimator.TokenEstimator
        return {
          usage: response.usage,
          levels: (yield* limiter.stats(key)).levels,
          calibration: yield* estimator.calibration(model)
        }
      }).pipe(Effect.provide(governedOn(running.url, slow)))
      // A test lasts a second or so: well under one token of refill at a million tokens a month.
      expect(levels.requests!.level).toBeCloseTo(1_000 - 1, 0)
      expect(levels.inputTokens!.level).toBeCloseTo(1_000_000 - usage.inputTokens!, 0)
      expect(levels.outputTokens!.level).toBeCloseTo(1_000_000 - usage.outputTokens!, 0)
      expect(calibration.samples).toBe(1)
    }))

  it.scopedLive("generateObject decodes the object and is settled like generateText", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const Extraction = Schema.Struct({
        title: Schema.String,
        summary: Schema.String,
        keywords: Schema.Array(Schema.String),
        sentiment: Schema.Literal("positive", "neutral", "negative")
      })
      const { levels, response } = yield* Effect.gen(function*() {
        const response = yield* LanguageModel.generateObject({
          prompt: document,
          schema: Extraction,
          objectName: "record_extraction"
        })
        const limiter = yield* RateLimiter.RateLimiter
        return { response, levels: (yield* limiter.stats(key)).levels }
      }).pipe(Effect.provide(governedOn(running.url, slow)))
      expect(response.value.title.length).toBeGreaterThan(0)
      expect(["positive", "neutral", "negative"]).toContain(response.value.sentiment)
      expect(levels.outputTokens!.level).toBeCloseTo(1_000_000 - response.usage.outputTokens!, 0)
    }))

  it.scopedLive("streamText streams the text and settles with the usage of the finish part", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const { levels, parts } = yield* Effect.gen(function*() {
        const parts = Chunk.toReadonlyArray(
          yield* Stream.runCollect(LanguageModel.streamText({ prompt: "Stream me a story." }))
        )
        const limiter = yield* RateLimiter.RateLimiter
        return { parts, levels: (yield* limiter.stats(key)).levels }
      }).pipe(Effect.provide(governedOn(running.url, slow)))
      const deltas = parts.filter((part) => part.type === "text-delta")
      const finish = parts.find((part) => part.type === "finish")
      expect(deltas.length).toBeGreaterThan(0)
      expect(finish?.type).toBe("finish")
      if (finish?.type === "finish") {
        expect(levels.outputTokens!.level).toBeCloseTo(1_000_000 - finish.usage.outputTokens!, 0)
        expect(levels.inputTokens!.level).toBeCloseTo(1_000_000 - finish.usage.inputTokens!, 0)
      }
    }))

  it.scopedLive("a burst beyond the request quota waits for capacity instead of drawing 429s, where the bare model draws them", () =>
    Effect.gen(function*() {
      // 4 requests a simulated minute; a simulated minute lasts one real second.
      const simulator = {
        timeScale: 60,
        quota: { requestsPerMinute: 4, inputTokensPerMinute: 1_000_000, outputTokensPerMinute: 1_000_000 }
      }
      const burst = Array.from(
        { length: 8 },
        (_, i) => LanguageModel.generateText({ prompt: `Question number ${i}: what is a token bucket?` })
      )

      const bare = yield* Simulator.serve(simulator)
      const unguarded = yield* Effect.all(burst.map(Effect.either), { concurrency: "unbounded" }).pipe(
        Effect.provide(anthropicOn(bare.url))
      )
      expect(unguarded.filter(Either.isLeft).length).toBeGreaterThan(0)
      expect((yield* statsOf(bare))?.rateLimited).toBeGreaterThan(0)

      const governed = yield* Simulator.serve(simulator)
      // Configured a little under the provider's 4 a second, as a user would: the first calls reach the
      // provider some milliseconds after the limiter admitted them, and its bucket starts refilling that much later.
      const quota = {
        requests: { limit: 3, per: "1 second" },
        inputTokens: { limit: 1_000_000, per: "1 second" },
        outputTokens: { limit: 1_000_000, per: "1 second" }
      }
      const answers = yield* Effect.all(burst, { concurrency: "unbounded" }).pipe(
        Effect.provide(governedOn(governed.url, quota, { retry: false }))
      )
      expect(answers.every((answer) => answer.text.length > 0)).toBe(true)
      expect(yield* statsOf(governed)).toMatchObject({ accepted: 8, rateLimited: 0 })
    }))

  it.scopedLive("a 429 pauses the key for its retry-after and the call is retried through the limiter until it succeeds", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({
        faults: { bursts: [{ startSeconds: 0, durationSeconds: 0.5, status: 429 }] }
      })
      const response = yield* LanguageModel.generateText({ prompt: "Anyone there?" }).pipe(
        Effect.provide(governedOn(running.url, slow, { retry: { base: "10 millis", maxAttempts: 4 } }))
      )
      expect(response.text.length).toBeGreaterThan(0)
      // One 429 (retry-after: 1 s) and the retry after it; the pause kept the retry from landing inside the burst.
      expect(yield* statsOf(running)).toMatchObject({ rateLimited: 1, accepted: 1 })
    }))

  it.scopedLive("a provider refusal that is not retryable keeps its AiError and gives the reservation back", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const { error, levels } = yield* Effect.gen(function*() {
        // An empty conversation is a 400.
        const error = yield* Effect.flip(LanguageModel.generateText({ prompt: [] }))
        const limiter = yield* RateLimiter.RateLimiter
        return { error, levels: (yield* limiter.stats(key)).levels }
      }).pipe(Effect.provide(governedOn(running.url, slow)))
      expect(error._tag).toBe("HttpResponseError")
      if (error._tag === "HttpResponseError") expect(error.response.status).toBe(400)
      expect(levels.inputTokens!.level).toBeCloseTo(1_000_000, 0)
      expect(levels.requests!.level).toBeCloseTo(1_000, 0)
    }))

  it.scopedLive("a budget refusal fails before any call, as an AiError carrying the typed BudgetExceeded", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      // The worst case of one call (256 output tokens at $5/M) is above a $0.0001 day.
      const budget = Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 0.0001 }] }).pipe(
        Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
      )
      const error = yield* Effect.flip(LanguageModel.generateText({ prompt: "Spend my money." })).pipe(
        Effect.provide(governedOn(running.url, slow).pipe(Layer.provide(budget)))
      )
      expect(error._tag).toBe("UnknownError")
      const refusal = EffectAi.governanceError(error)
      expect(Option.isSome(refusal)).toBe(true)
      if (Option.isSome(refusal)) {
        expect(refusal.value._tag).toBe("BudgetExceeded")
        expect(error.message).toContain(refusal.value.message)
      }
      expect((yield* statsOf(running))?.accepted ?? 0).toBe(0)
    }))

  it.scopedLive("a limiter refusal (CostTooLarge) leaves no budget reserved, for generateText, generateObject and streamText (#11)", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const budget = Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 10 }] }).pipe(
        Layer.provide([Pricing.layer(), Budget.layerLedgerMemory])
      )
      // An output bucket of 100 tokens can never hold the 256 reserved for each call.
      const tiny: Quota.QuotaInput = {
        requests: { limit: 1_000, per: "1 minute" },
        outputTokens: { limit: 100, per: "1 minute" }
      }
      const status = yield* Effect.gen(function*() {
        const text = yield* Effect.flip(LanguageModel.generateText({ prompt: "Too much." }))
        const object = yield* Effect.flip(
          LanguageModel.generateObject({ prompt: "Too much.", schema: Schema.Struct({ a: Schema.String }) })
        )
        const streamed = yield* Effect.flip(Stream.runDrain(LanguageModel.streamText({ prompt: "Too much." })))
        for (const error of [text, object, streamed]) {
          expect(Option.getOrUndefined(Option.map(EffectAi.governanceError(error), (refusal) => refusal._tag))).toBe(
            "CostTooLarge"
          )
        }
        return yield* (yield* Budget.Budget).status
      }).pipe(Effect.provide(governedOn(running.url, tiny).pipe(Layer.provideMerge(budget))))
      expect(status[0]!.reservedUsd).toBe(0)
      expect(status[0]!.spentUsd).toBe(0)
      expect((yield* statsOf(running))?.accepted ?? 0).toBe(0)
    }))

  it.effect("options are validated and each bad field is named", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Layer.build(
          EffectAi.layerGoverned({ model: "", maxOutputTokens: -1, retry: { maxAttempts: 0 } }).pipe(
            Layer.provide(Layer.succeed(LanguageModel.LanguageModel, {} as LanguageModel.Service)),
            Layer.provide([RateLimiter.layerMemory(), TokenEstimator.layer()])
          )
        ).pipe(Effect.scoped)
      )
      expect(error._tag).toBe("InvalidEffectAiOptions")
      if (error._tag === "InvalidEffectAiOptions") {
        expect(error.issues.map((issue) => issue.path).sort()).toEqual([
          "maxOutputTokens",
          "model",
          "retry.maxAttempts"
        ])
      }
    }))

  it.scopedLive("a cached system prompt, once answered, is expected from the cache: calls that read it reserve only what counts and run at once", () =>
    Effect.gen(function*() {
      // Each answer takes a second, long enough to see which calls hold a permit together.
      const running = yield* Simulator.serve({ latency: { baseMs: 1_000 } })
      const contract = Array.from(
        { length: 200 },
        (_, i) => `Clause ${i}: the supplier delivers the goods on time and in full.`
      ).join(" ")
      const ask = (question: string) =>
        LanguageModel.generateText({
          prompt: [{
            role: "system",
            content: contract,
            options: { anthropic: { cacheControl: { type: "ephemeral" as const } } }
          }, { role: "user", content: question }]
        })
      // 8,000 input tokens every 10 minutes: one whole prompt (about 3,400 tokens) fits twice, and the refill is 13 a second.
      const tight: Quota.QuotaInput = { ...slow, inputTokens: { limit: 8_000, per: "10 minutes" } }
      yield* Effect.gen(function*() {
        yield* ask("warm the cache")
        // While the answers take their second, how many calls hold a permit at once: all five, where whole prompts would fit one or two.
        const limiter = yield* RateLimiter.RateLimiter
        const burst = yield* Effect.fork(
          Effect.all(["Who?", "When?", "Where?", "How?", "Why?"].map(ask), { concurrency: "unbounded" })
        )
        // Live, not TestClock: @effect/ai-anthropic talks HTTP to a real server. The poll asserts no timing, only the most permits held at once.
        let together = 0
        while (burst.unsafePoll() === null) {
          together = Math.max(together, (yield* limiter.stats(key)).inFlight)
          yield* Effect.sleep("20 millis")
        }
        expect(yield* Fiber.join(burst)).toHaveLength(5)
        expect(together).toBe(5)
      }).pipe(Effect.provide(governedOn(running.url, tight, { maxOutputTokens: 64 })))
      const judged = yield* statsOf(running)
      expect(judged).toMatchObject({ accepted: 6, rateLimited: 0 })
      expect(judged!.cacheReadInputTokens).toBeGreaterThanOrEqual(5 * 3_000)
    }))

  it("the request the estimator counts has the system prompt, every turn and the object's schema as a tool", () => {
    const request = EffectAi.toRequest(
      {
        prompt: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hello" },
          { role: "assistant", content: [{ type: "tool-call", id: "t1", name: "lookup", params: { q: "x" } }] },
          {
            role: "tool",
            content: [{
              type: "tool-result",
              id: "t1",
              name: "lookup",
              result: { found: true },
              isFailure: false,
              providerExecuted: false
            }]
          }
        ],
        schema: Schema.Struct({ title: Schema.String }),
        objectName: "extraction"
      },
      model,
      100
    )
    expect(request.system).toBe("Be brief.")
    expect(request.maxOutputTokens).toBe(100)
    expect(request.messages.map((message) => message.role)).toEqual(["user", "assistant", "user"])
    expect(request.messages[1]!.content).toEqual([{ type: "tool_use", id: "t1", name: "lookup", input: { q: "x" } }])
    expect(request.messages[2]!.content).toEqual([{
      type: "tool_result",
      toolUseId: "t1",
      content: "{\"found\":true}",
      isError: false
    }])
    expect(request.tools?.[0]?.name).toBe("extraction")
    expect(request.tools?.[0]?.inputSchema).toMatchObject({ type: "object", required: ["title"] })
  })

  it("Anthropic cache marks (options.anthropic.cacheControl) on a system message, a part or a message's last part reach the request", () => {
    const mark = { anthropic: { cacheControl: { type: "ephemeral" as const } } }
    const request = EffectAi.toRequest(
      {
        prompt: [
          { role: "system", content: "A long contract.", options: mark },
          {
            role: "user",
            content: [{ type: "text", text: "First." }, { type: "text", text: "Marked part.", options: mark }, {
              type: "text",
              text: "Last."
            }]
          },
          { role: "user", content: [{ type: "text", text: "One." }, { type: "text", text: "Two." }], options: mark }
        ]
      },
      model,
      100
    )
    expect(request.systemCacheControl).toEqual({ type: "ephemeral" })
    expect(request.messages[0]!.content).toEqual([
      { type: "text", text: "First." },
      { type: "text", text: "Marked part.", cacheControl: { type: "ephemeral" } },
      { type: "text", text: "Last." }
    ])
    expect(request.messages[1]!.content).toEqual([{ type: "text", text: "One." }, {
      type: "text",
      text: "Two.",
      cacheControl: { type: "ephemeral" }
    }])
    const plain = EffectAi.toRequest(
      { prompt: [{ role: "system", content: "Terse." }, { role: "user", content: "Hi" }] },
      model,
      100
    )
    expect(plain.systemCacheControl).toBeUndefined()
  })
})
