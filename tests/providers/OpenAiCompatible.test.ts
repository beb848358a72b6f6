import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { LlmClient } from "@sluice/core"
import * as OpenAiCompatible from "@sluice/providers/OpenAiCompatible"
import * as Simulator from "@sluice/simulator/Simulator"
import { Chunk, Effect, Redacted, Stream } from "effect"

const ask = (text: string): LlmClient.Request => ({
  model: "gpt-4o-mini",
  system: "You are terse.",
  messages: [{ role: "user", content: text }],
  maxOutputTokens: 100
})

const clientOn = (config: Simulator.Config) =>
  Effect.gen(function*() {
    const running = yield* Simulator.serve({ port: 0, ...config })
    const client = yield* OpenAiCompatible.make({ apiKey: Redacted.make("sim-key"), baseURL: `${running.url}/v1` })
    return { client, running }
  }).pipe(Effect.provide(FetchHttpClient.layer))

describe("OpenAI-compatible layer against the simulator", () => {
  it.scoped("a chat completion succeeds with usage and the x-ratelimit headers parsed", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      const response = yield* client.complete(ask("Hello there"))
      expect(LlmClient.text(response).length).toBeGreaterThan(0)
      expect(response.usage.inputTokens).toBeGreaterThan(0)
      expect(response.usage.outputTokens).toBeGreaterThan(0)
      expect(response.rateLimits.dimensions.requests?.limit).toBeGreaterThan(0)
      expect(response.rateLimits.dimensions.requests?.remaining).toBeDefined()
      expect(response.rateLimits.dimensions.tokens?.limit).toBeGreaterThan(0)
      expect(response.rateLimits.dimensions.tokens?.resetAfter).toBeDefined()
    }))

  it.scoped("tool calls come back as tool_use blocks with parsed arguments", () =>
    Effect.gen(function*() {
      const { client } = yield* clientOn({})
      const response = yield* client.complete({
        ...ask("Launch day\nThe new product launch went wonderfully well."),
        tools: [{
          name: "record",
          inputSchema: {
            type: "object",
            properties: { title: { type: "string" }, keywords: { type: "array", items: { type: "string" } } },
            required: ["title", "keywords"]
          }
        }],
        toolChoice: { type: "tool", name: "record" }
      })
      const [call] = LlmClient.toolCalls(response)
      expect(response.stopReason).toBe("tool_use")
      expect(call?.name).toBe("record")
      expect(typeof (call?.input as { title?: unknown }).title).toBe("string")
    }))

  it.scoped("stream reads the server-sent chunks: text as it comes, a tool call whole, Done with the usage", () =>
    Effect.gen(function*() {
      const { client, running } = yield* clientOn({})
      const whole = yield* client.complete(ask("Tell me about token buckets."))
      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(client.stream(ask("Tell me about token buckets."))))
      const deltas = events.flatMap((event) => event._tag === "TextDelta" ? [event.text] : [])
      expect(deltas.length).toBeGreaterThan(1)
      expect(deltas.join("")).toBe(LlmClient.text(whole))
      const done = events.at(-1)
      expect(done?._tag).toBe("Done")
      if (done?._tag === "Done") expect(done.response.usage).toEqual(whole.usage)
      // Only a request with a native body gets the API's own chunks.
      expect(events.some((event) => event._tag === "Native")).toBe(false)

      const tool = {
        ...ask("Launch day\nThe new product launch went wonderfully well."),
        tools: [{
          name: "record",
          inputSchema: { type: "object", properties: { title: { type: "string" } }, required: ["title"] }
        }],
        toolChoice: { type: "tool", name: "record" }
      } satisfies LlmClient.Request
      const streamed = Chunk.toReadonlyArray(yield* Stream.runCollect(client.stream(tool)))
      const call = streamed.find((event) => event._tag === "ToolCall")
      expect(call?._tag === "ToolCall" && typeof (call.call.input as { title?: unknown }).title).toBe("string")
      expect(streamed.at(-1)?._tag === "Done" && streamed.at(-1)).toMatchObject({
        response: { stopReason: "tool_use" }
      })

      const native = yield* Stream.runCollect(client.stream({
        ...ask("Hi"),
        native: OpenAiCompatible.native({ model: "ignored", messages: [{ role: "user", content: "Hi" }], stream: true })
      }))
      const chunks = Chunk.toReadonlyArray(native).flatMap((event) => event._tag === "Native" ? [event.event] : [])
      expect(chunks.every((chunk) => chunk.api === "openai")).toBe(true)
      // Every chunk, the usage chunk last (the layer asked for it), each with the request's model.
      expect(chunks.at(-1)?.body).toMatchObject({ choices: [], usage: { completion_tokens: expect.any(Number) } })
      expect(chunks.every((chunk) => (chunk.body as { model: string }).model === "gpt-4o-mini")).toBe(true)
      expect((yield* running.stats).keys.find((entry) => entry.model === "gpt-4o-mini")?.accepted).toBe(4)
    }))

  it.scoped("over the limit it is RateLimited with a retry-after; a missing key is Unauthorized", () =>
    Effect.gen(function*() {
      const { client, running } = yield* clientOn({
        quota: { requestsPerMinute: 1, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 }
      })
      yield* client.complete(ask("one"))
      const error = yield* Effect.flip(client.complete(ask("two")))
      expect(error._tag).toBe("RateLimited")
      expect(error.retryable).toBe(true)
      if (error._tag === "RateLimited") expect(error.retryAfter).toBeDefined()
      const anonymous = yield* OpenAiCompatible.make({ apiKey: Redacted.make(""), baseURL: `${running.url}/v1` }).pipe(
        Effect.provide(FetchHttpClient.layer)
      )
      const unauthorized = yield* Effect.flip(anonymous.complete(ask("who am I")))
      expect(unauthorized._tag).toBe("Unauthorized")
      expect(unauthorized.retryable).toBe(false)
    }))
})
