import { describe, expect, it } from "@effect/vitest"
import { LlmClient } from "@sluice/core"
import * as Anthropic from "@sluice/providers/Anthropic"
import * as Simulator from "@sluice/simulator/Simulator"
import { Chunk, ConfigProvider, Effect, Option, Redacted, Stream } from "effect"

const extractionTool: LlmClient.Tool = {
  name: "record_extraction",
  description: "Record what the document is about",
  inputSchema: {
    type: "object",
    properties: {
      title: { type: "string" },
      summary: { type: "string" },
      keywords: { type: "array", items: { type: "string" } },
      category: { type: "string", enum: ["finance", "technology", "health", "other"] },
      sentiment: { type: "string", enum: ["positive", "neutral", "negative"] }
    },
    required: ["title", "summary", "keywords", "category", "sentiment"]
  }
}

const ask = (text: string, maxOutputTokens = 200): LlmClient.Request => ({
  model: "claude-haiku-4-5",
  system: "You are terse.",
  messages: [{ role: "user", content: text }],
  maxOutputTokens
})

/** A client on a fresh simulator; both stop with the test's scope. */
const clientOn = (config: Simulator.Config) =>
  Effect.gen(function*() {
    const running = yield* Simulator.serve({ port: 0, ...config })
    const client = yield* Anthropic.make({ apiKey: Redacted.make("sim-key"), baseURL: running.url })
    return { client, running }
  })

describe("Anthropic layer over the real SDK, against the simulator", () => {
  it.scoped("a call succeeds and every rate-limit header is parsed into the snapshot", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({
        quota: { requestsPerMinute: 50, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 }
      })
      const response = yield* client.complete(ask("Tell me about token buckets."))
      expect(LlmClient.text(response).length).toBeGreaterThan(0)
      expect(response.usage.inputTokens).toBeGreaterThan(0)
      expect(response.usage.outputTokens).toBeGreaterThan(0)
      const { dimensions } = response.rateLimits
      expect(dimensions.requests?.limit).toBe(50)
      expect(dimensions.requests?.remaining).toBe(49)
      expect(dimensions.inputTokens?.limit).toBe(30_000)
      expect(dimensions.inputTokens?.remaining).toBe(30_000 - response.usage.inputTokens)
      expect(dimensions.outputTokens?.limit).toBe(8_000)
      expect(dimensions.inputTokens?.resetAfter).toBeDefined()
    }))

  it.scoped("going over a limit yields RateLimited with a retry-after and the bucket that ran out", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({
        quota: { requestsPerMinute: 2, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 }
      })
      yield* client.complete(ask("one"))
      yield* client.complete(ask("two"))
      const error = yield* Effect.flip(client.complete(ask("three")))
      expect(error._tag).toBe("RateLimited")
      expect(error.retryable).toBe(true)
      expect(error.status).toBe(429)
      if (error._tag === "RateLimited") {
        expect(error.retryAfter).toBeDefined()
        expect(error.dimension).toBe("requests")
      }
    }))

  it.scoped("a 529 overloaded_error yields Overloaded, retryable", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({ faults: { overloadedRate: 1 } })
      const error = yield* Effect.flip(client.complete(ask("anyone there?")))
      expect(error._tag).toBe("Overloaded")
      expect(error.status).toBe(529)
      expect(error.retryable).toBe(true)
    }))

  it.scoped("a 400 is a BadRequest and is not retryable", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      const error = yield* Effect.flip(client.complete({ ...ask("hello"), messages: [] }))
      expect(error._tag).toBe("BadRequest")
      expect(error.status).toBe(400)
      expect(error.retryable).toBe(false)
    }))

  it.scoped("counts tokens through the count-tokens endpoint", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      const short = yield* client.countTokens!(ask("hi"))
      const long = yield* client.countTokens!(ask("hi ".repeat(500)))
      expect(short).toBeGreaterThan(0)
      expect(long).toBeGreaterThan(short)
      expect(long).toBe(Simulator.countTokens(Anthropic.toParams(ask("hi ".repeat(500)))))
    }))

  it.scoped("streams text deltas and ends with the usage", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(client.stream(ask("Stream me a story.", 120))))
      const deltas = events.filter((event) => event._tag === "TextDelta")
      const done = events[events.length - 1]
      expect(deltas.length).toBeGreaterThan(0)
      expect(done?._tag).toBe("Done")
      if (done?._tag === "Done") {
        expect(LlmClient.text(done.response)).toBe(
          deltas.map((event) => event._tag === "TextDelta" ? event.text : "").join("")
        )
        expect(done.response.usage.outputTokens).toBeGreaterThan(0)
        expect(done.response.rateLimits.dimensions.requests?.limit).toBeDefined()
      }
    }))

  it.scoped("a tool-use extraction is answered deterministically, in the tool's schema, streamed or not", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      const request: LlmClient.Request = {
        ...ask(
          "Quarterly results\nRevenue grew strongly and the team is delighted with the excellent growth in cloud services."
        ),
        tools: [extractionTool],
        toolChoice: { type: "tool", name: "record_extraction" }
      }
      const first = yield* client.complete(request)
      const second = yield* client.complete(request)
      const [call] = LlmClient.toolCalls(first)
      expect(first.stopReason).toBe("tool_use")
      expect(call?.name).toBe("record_extraction")
      expect(call?.input).toEqual(LlmClient.toolCalls(second)[0]?.input)
      const input = call?.input as Record<string, unknown>
      expect(typeof input.title).toBe("string")
      expect(Array.isArray(input.keywords)).toBe(true)
      expect(["finance", "technology", "health", "other"]).toContain(input.category)
      expect(["positive", "neutral", "negative"]).toContain(input.sentiment)
      const streamed = Chunk.toReadonlyArray(yield* Stream.runCollect(client.stream(request)))
      const toolEvent = streamed.find((event) => event._tag === "ToolCall")
      expect(toolEvent?._tag === "ToolCall" ? toolEvent.call.input : undefined).toEqual(call?.input)
    }))

  it.scoped("a request's native Messages API params are what is sent and counted, with the request's model; its answer carries the SDK's message", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      // The translation says "hi"; the native params, which win, ask at length.
      const long = ask("hi ".repeat(500))
      const nativeParams = { ...Anthropic.toParams(long), model: "a-model-the-rung-replaces" }
      const request: LlmClient.Request = { ...ask("hi"), native: Anthropic.native(nativeParams) }
      expect(yield* client.countTokens!(request)).toBe(yield* client.countTokens!(long))
      const response = yield* client.complete(request)
      const message = Option.getOrThrow(Anthropic.messageOf(response))
      expect(message.type).toBe("message")
      expect(message.model).toBe("claude-haiku-4-5")
      expect(message.usage.input_tokens).toBe(response.usage.inputTokens)
      expect(response.usage.inputTokens).toBe((yield* client.complete(long)).usage.inputTokens)
      // Without native params, the translation is sent and the answer is Sluice's alone.
      const plain = yield* client.complete(ask("hi"))
      expect(plain.native).toBeUndefined()
      expect(Anthropic.messageOf(plain)._tag).toBe("None")
      const streamed = Chunk.toReadonlyArray(yield* Stream.runCollect(client.stream(request)))
      const done = streamed[streamed.length - 1]
      expect(done?._tag === "Done" ? done.response.usage.inputTokens : undefined).toBe(response.usage.inputTokens)
    }))

  it.scoped("the layer reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL through Config, the key redacted", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({ port: 0 })
      const options = yield* Effect.withConfigProvider(
        Anthropic.config,
        ConfigProvider.fromMap(new Map([["ANTHROPIC_API_KEY", "sim-key"], ["ANTHROPIC_BASE_URL", running.url]]))
      )
      expect(String(options.apiKey)).not.toContain("sim-key")
      expect(Redacted.value(options.apiKey)).toBe("sim-key")
      expect(options.baseURL).toBe(running.url)
    }))
})
