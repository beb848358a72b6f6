import { describe, expect, it } from "@effect/vitest"
import { LlmClient } from "@sluice/core"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Duration, Effect, Fiber, TestClock } from "effect"

const ask = (text: string, maxOutputTokens = 100): LlmClient.Request => ({
  model: "claude-haiku-4-5",
  messages: [{ role: "user", content: text }],
  maxOutputTokens
})

const tier = (requestsPerMinute: number) => ({
  requestsPerMinute,
  inputTokensPerMinute: 30_000,
  outputTokensPerMinute: 8_000
})

describe("SimulatedClient (in process, TestClock)", () => {
  it.scoped("over the request limit it answers 429 with a retry-after, and after that long it admits again", () =>
    Effect.gen(function*() {
      const { client, stats } = yield* SimulatedClient.make({ quota: tier(2) })
      yield* client.complete(ask("one"))
      yield* client.complete(ask("two"))
      const error = yield* Effect.flip(client.complete(ask("three")))
      expect(error._tag).toBe("RateLimited")
      if (error._tag !== "RateLimited") return
      expect(error.dimension).toBe("requests")
      expect(error.retryAfter).toEqual(Duration.seconds(30))
      expect(error.rateLimits?.dimensions.requests?.remaining).toBe(0)
      yield* TestClock.adjust(Duration.seconds(29))
      expect((yield* Effect.flip(client.complete(ask("too early"))))._tag).toBe("RateLimited")
      yield* TestClock.adjust(Duration.seconds(1))
      const response = yield* client.complete(ask("now"))
      expect(response.rateLimits.dimensions.requests).toMatchObject({ limit: 2, remaining: 0 })
      const [key] = (yield* stats.stats).keys
      expect(key).toMatchObject({ apiKey: "sim-key", model: "claude-haiku-4-5", accepted: 3, rateLimited: 2 })
      // Which limit refused each 429: the judge of a run says where the client overstepped.
      expect(key?.rateLimitedBy).toEqual({ requests: 2, inputTokens: 0, outputTokens: 0, tokens: 0 })
      expect(key?.bestMinuteUtilisation.requests).toBe(1.5)
    }))

  it.scoped("input tokens are charged on admission by the simulator's own count, output after the answer", () =>
    Effect.gen(function*() {
      const { client } = yield* SimulatedClient.make({ quota: tier(50) })
      const response = yield* client.complete(ask("a short question about quotas"))
      const input = response.rateLimits.dimensions.inputTokens
      const output = response.rateLimits.dimensions.outputTokens
      expect(input?.remaining).toBe(30_000 - response.usage.inputTokens)
      expect(output?.remaining).toBe(8_000 - response.usage.outputTokens)
      expect(yield* client.countTokens!(ask("a short question about quotas"))).toBe(response.usage.inputTokens)
      expect(response.usage.outputTokens).toBeLessThanOrEqual(100)
    }))

  it.scoped("latency is slept on the Effect clock", () =>
    Effect.gen(function*() {
      const { client } = yield* SimulatedClient.make({ latency: { baseMs: 800 } })
      const fiber = yield* Effect.fork(client.complete(ask("slow")))
      yield* TestClock.adjust(Duration.millis(799))
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(Duration.millis(1))
      expect((yield* Fiber.join(fiber)).usage.outputTokens).toBeGreaterThan(0)
    }))

  it.scoped("a foreign consumer takes its share of the key's quota", () =>
    Effect.gen(function*() {
      const { client, stats } = yield* SimulatedClient.make({ quota: tier(50), foreignLoad: { share: 0.5 } })
      yield* client.complete(ask("wake the key"))
      yield* TestClock.adjust(Duration.minutes(1))
      const [key] = (yield* stats.stats).keys
      expect(key?.foreignInputTokens).toBeGreaterThanOrEqual(14_900)
      expect(key?.foreignInputTokens).toBeLessThanOrEqual(15_100)
    }))

  it.scoped("faults: a 529 overloaded and a reset are typed and retryable", () =>
    Effect.gen(function*() {
      const overloaded = yield* SimulatedClient.make({ faults: { overloadedRate: 1 } })
      const error = yield* Effect.flip(overloaded.client.complete(ask("busy?")))
      expect(error._tag).toBe("Overloaded")
      expect(error.retryable).toBe(true)
      const reset = yield* SimulatedClient.make({ faults: { resetRate: 1 } })
      const network = yield* Effect.flip(reset.client.complete(ask("hello?")))
      expect(network._tag).toBe("NetworkError")
      expect(network.retryable).toBe(true)
    }))

  it.scoped("a bad request is refused and not retryable", () =>
    Effect.gen(function*() {
      const { client } = yield* SimulatedClient.make({})
      const error = yield* Effect.flip(client.complete({ ...ask("x"), messages: [] }))
      expect(error._tag).toBe("BadRequest")
      expect(error.retryable).toBe(false)
      expect(error.message).toContain("messages")
    }))

  it.scoped("a tool-use request gets a deterministic tool call that fills the schema", () =>
    Effect.gen(function*() {
      const { client } = yield* SimulatedClient.make({})
      const request: LlmClient.Request = {
        ...ask("Market update\nShares fell sharply after the weak results and the lawsuit concerns.", 400),
        tools: [{
          name: "extract",
          inputSchema: {
            type: "object",
            properties: {
              title: { type: "string" },
              summary: { type: "string" },
              keywords: { type: "array", items: { type: "string" } },
              category: { type: "string", enum: ["markets", "sports", "science"] },
              sentiment: { type: "string", enum: ["positive", "neutral", "negative"] }
            }
          }
        }],
        toolChoice: { type: "tool", name: "extract" }
      }
      const first = LlmClient.toolCalls(yield* client.complete(request))[0]
      const second = LlmClient.toolCalls(yield* client.complete(request))[0]
      expect(first?.input).toEqual(second?.input)
      expect(first?.input).toMatchObject({ title: "Market update", sentiment: "negative", category: "markets" })
      expect((first?.input as { keywords: Array<string> }).keywords.length).toBeGreaterThan(0)
    }))
})
