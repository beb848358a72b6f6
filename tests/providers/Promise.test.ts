import AnthropicSdk from "@anthropic-ai/sdk"
import type * as Sdk from "@anthropic-ai/sdk/resources/messages/messages"
import { LlmClient } from "@sluice/core"
import {
  BudgetExceededError,
  ClosedError,
  createClient,
  InvalidOptionsError,
  layer,
  RateLimitedError,
  SluiceError,
  toRequest
} from "@sluice/providers/Promise"
import * as Simulator from "@sluice/simulator/Simulator"
import { Effect, Exit, ManagedRuntime, Scope } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { describe, expect, it } from "vitest"

const model = "claude-haiku-4-5"

/** Runs `f` against a fresh simulator, stopped afterwards. */
const withSimulator = async <A>(
  config: Simulator.Config,
  f: (running: Simulator.Running) => Promise<A>
): Promise<A> => {
  const scope = Effect.runSync(Scope.make())
  try {
    const running = await Effect.runPromise(Scope.extend(Simulator.serve(config), scope))
    return await f(running)
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/**
 * A Messages API endpoint that records every body it receives, refuses the
 * models in `limited` with a 429 and answers the others with `message`.
 */
const withRecorder = async <A>(
  limited: ReadonlyArray<string>,
  message: Sdk.Message,
  f: (url: string, bodies: Array<Record<string, unknown>>) => Promise<A>
): Promise<A> => {
  const bodies: Array<Record<string, unknown>> = []
  const server = createServer((req, res) => {
    let text = ""
    req.on("data", (chunk: Buffer) => text += chunk.toString())
    req.on("end", () => {
      const body = JSON.parse(text) as Record<string, unknown>
      bodies.push(body)
      if (limited.includes(String(body.model))) {
        res.writeHead(429, { "content-type": "application/json", "retry-after": "1" })
        res.end(
          JSON.stringify({
            type: "error",
            error: { type: "rate_limit_error", message: "Number of requests has exceeded your rate limit" }
          })
        )
      } else {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({ ...message, model: body.model }))
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  try {
    return await f(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies)
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

const statsOf = async (running: Simulator.Running) =>
  (await Effect.runPromise(running.stats)).keys.find((entry) => entry.model === model)

const ask = (text: string): Sdk.MessageCreateParamsNonStreaming => ({
  model,
  max_tokens: 200,
  system: "You are terse.",
  messages: [{ role: "user", content: text }]
})

const roomy = {
  requests: { limit: 1_000, per: "1 minute" },
  inputTokens: { limit: 1_000_000, per: "1 minute" },
  outputTokens: { limit: 1_000_000, per: "1 minute" }
}

describe("createClient: the Anthropic SDK's messages surface, governed", () => {
  it("messages.create answers in the SDK's own shape, the same fields a plain SDK call returns", () =>
    withSimulator({}, async (running) => {
      const plain = new AnthropicSdk({ apiKey: "sim-key", baseURL: running.url, maxRetries: 0 })
      const anthropic = createClient({ apiKey: "sim-key", baseURL: running.url, quotas: { [model]: roomy } })
      try {
        const before = await plain.messages.create(ask("Tell me about token buckets."))
        const after = await anthropic.messages.create(ask("Tell me about token buckets."))
        expect(after.type).toBe("message")
        expect(after.role).toBe("assistant")
        expect(Object.keys(after).sort()).toEqual(Object.keys(before).sort())
        expect(Object.keys(after.usage).sort()).toEqual(Object.keys(before.usage).sort())
        expect(after.content[0]?.type).toBe("text")
        expect(after.usage.input_tokens).toBeGreaterThan(0)
        // The provider counted one call each, and the permit was released.
        expect(await statsOf(running)).toMatchObject({
          accepted: 2,
          outputTokens: before.usage.output_tokens + after.usage.output_tokens
        })
        expect((await anthropic.stats(model)).inFlight).toBe(0)
      } finally {
        await anthropic.close()
      }
    }))

  it("tools and tool_choice pass through to the SDK unchanged, and countTokens is the provider's count", () =>
    withSimulator({}, async (running) => {
      const plain = new AnthropicSdk({ apiKey: "sim-key", baseURL: running.url, maxRetries: 0 })
      const anthropic = createClient({ apiKey: "sim-key", baseURL: running.url })
      try {
        const params: Sdk.MessageCreateParamsNonStreaming = {
          ...ask(
            "Quarterly results\nRevenue grew strongly and the team is delighted with the excellent growth in cloud services."
          ),
          tools: [{
            name: "record_extraction",
            description: "Record what the document is about",
            input_schema: {
              type: "object",
              properties: {
                title: { type: "string" },
                sentiment: { type: "string", enum: ["positive", "neutral", "negative"] }
              },
              required: ["title", "sentiment"]
            }
          }],
          tool_choice: { type: "tool", name: "record_extraction" }
        }
        const message = await anthropic.messages.create(params)
        const call = message.content.find((block) => block.type === "tool_use")
        expect(call?.type === "tool_use" && call.name).toBe("record_extraction")
        expect(message.stop_reason).toBe("tool_use")
        const { model: _m, max_tokens: _x, tool_choice: _c, ...countable } = params
        const counted = await anthropic.messages.countTokens({ model, ...countable })
        expect(counted.input_tokens).toBe((await plain.messages.countTokens({ model, ...countable })).input_tokens)
      } finally {
        await anthropic.close()
      }
    }))

  it("a burst beyond the quota waits for capacity and draws no 429, where the plain SDK draws them", () => {
    // 4 requests a simulated minute; a simulated minute lasts one real second.
    const simulator = {
      timeScale: 60,
      quota: { requestsPerMinute: 4, inputTokensPerMinute: 1_000_000, outputTokensPerMinute: 1_000_000 }
    }
    const burst = Array.from({ length: 6 }, (_, i) => ask(`Question number ${i}: what is a token bucket?`))
    return withSimulator(simulator, async (bare) => {
      const plain = new AnthropicSdk({ apiKey: "sim-key", baseURL: bare.url, maxRetries: 0 })
      const results = await Promise.allSettled(burst.map((params) => plain.messages.create(params)))
      expect(
        results.some((result) => result.status === "rejected" && (result.reason as { status?: number }).status === 429)
      ).toBe(true)
    }).then(() =>
      withSimulator(simulator, async (running) => {
        // A little under the provider's 4 a second, as a user would configure it.
        const anthropic = createClient({
          apiKey: "sim-key",
          baseURL: running.url,
          quotas: {
            [model]: {
              requests: { limit: 3, per: "1 second" },
              inputTokens: { limit: 1_000_000, per: "1 second" },
              outputTokens: { limit: 1_000_000, per: "1 second" }
            }
          }
        })
        try {
          const messages = await Promise.all(burst.map((params) => anthropic.messages.create(params)))
          expect(messages.every((message) => message.type === "message")).toBe(true)
          expect(await statsOf(running)).toMatchObject({ accepted: 6, rateLimited: 0 })
        } finally {
          await anthropic.close()
        }
      })
    )
  })

  it("bad options throw an InvalidOptionsError naming every bad option", () => {
    const create = () =>
      createClient({
        apiKey: "",
        quotas: { [model]: { requests: { limit: -1, per: "1 minute" } } },
        maxConcurrency: 0,
        retry: { maxAttempts: 0 },
        ...({ concurency: 4 } as object)
      })
    expect(create).toThrow(InvalidOptionsError)
    try {
      create()
    } catch (error) {
      expect(error).toBeInstanceOf(Error)
      expect(error).toBeInstanceOf(SluiceError)
      const invalid = error as InvalidOptionsError
      expect(invalid._tag).toBe("InvalidClientOptions")
      expect(invalid.reason.issues.map((issue) => issue.path).sort()).toEqual([
        "apiKey",
        "concurency",
        "maxConcurrency",
        `quotas.${model}.requests.limit`,
        "retry.maxAttempts"
      ])
      expect(invalid.message).toContain(`quotas.${model}.requests.limit`)
    }
  })

  it("failures are Error subclasses carrying the typed reason: a budget refusal, a 400, a 429 past the retries", () =>
    withSimulator(
      { faults: { bursts: [{ startSeconds: 0, durationSeconds: 60, status: 429 }] } },
      async (limited) =>
        withSimulator({}, async (running) => {
          const budgeted = createClient({
            apiKey: "sim-key",
            baseURL: running.url,
            budget: { limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 0.0001 }] }
          })
          const open = createClient({ apiKey: "sim-key", baseURL: running.url })
          const noRetry = createClient({ apiKey: "sim-key", baseURL: limited.url, retry: false })
          try {
            const refused = await budgeted.messages.create(ask("Spend my money.")).catch((error: unknown) => error)
            expect(refused).toBeInstanceOf(Error)
            expect(refused).toBeInstanceOf(BudgetExceededError)
            if (refused instanceof BudgetExceededError) {
              expect(refused._tag).toBe("BudgetExceeded")
              expect(refused.reason.limitUsd).toBe(0.0001)
            }
            // The budget refused before any call reached the provider.
            expect((await statsOf(running))?.accepted ?? 0).toBe(0)

            const bad = await open.messages.create({ ...ask("hello"), messages: [] }).catch((error: unknown) => error)
            expect(bad).toBeInstanceOf(SluiceError)
            if (bad instanceof SluiceError) {
              expect(bad._tag).toBe("BadRequest")
              expect(bad.status).toBe(400)
            }

            const limitedError = await noRetry.messages.create(ask("anyone?")).catch((error: unknown) => error)
            expect(limitedError).toBeInstanceOf(RateLimitedError)
            if (limitedError instanceof RateLimitedError) {
              expect(limitedError.status).toBe(429)
              expect(limitedError.reason.retryAfter).toBeDefined()
            }
          } finally {
            await Promise.all([budgeted.close(), open.close(), noRetry.close()])
          }
        })
    ))

  it("close() releases the client: later calls reject with ClosedError, and closing again is harmless", () =>
    withSimulator({}, async (running) => {
      const anthropic = createClient({ apiKey: "sim-key", baseURL: running.url })
      await anthropic.messages.create(ask("one"))
      await anthropic.close()
      const after = await anthropic.messages.create(ask("two")).catch((error: unknown) => error)
      expect(after).toBeInstanceOf(ClosedError)
      expect(after).toBeInstanceOf(Error)
      await expect(anthropic.close()).resolves.toBeUndefined()
      expect((await statsOf(running))?.accepted).toBe(1)
    }))

  it("the SDK's cache_control marks reach Sluice's request: on system blocks and on message text", () => {
    const cached = toRequest({
      model: "claude-haiku-4-5",
      max_tokens: 100,
      system: [{ type: "text", text: "A long contract.", cache_control: { type: "ephemeral" } }],
      messages: [{
        role: "user",
        content: [{ type: "text", text: "Who delivers?", cache_control: { type: "ephemeral" } }]
      }]
    })
    expect(cached.system).toBe("A long contract.")
    expect(cached.systemCacheControl).toEqual({ type: "ephemeral" })
    expect(cached.messages[0]!.content).toEqual([{
      type: "text",
      text: "Who delivers?",
      cacheControl: { type: "ephemeral" }
    }])
    const plain = toRequest({
      model: "claude-haiku-4-5",
      max_tokens: 100,
      system: [{ type: "text", text: "Terse." }],
      messages: [{ role: "user", content: "Hi" }]
    })
    expect(plain.systemCacheControl).toBeUndefined()
  })

  it("a fallback rung sends the caller's params as they are, with the rung's model, and the caller gets the message the API returned", () => {
    // Fields and blocks Sluice's own request has no place for: they reach the API only if the params travel whole.
    const params: Sdk.MessageCreateParamsNonStreaming = {
      model: "claude-primary",
      max_tokens: 300,
      service_tier: "standard_only",
      metadata: { user_id: "user-7" },
      system: [{ type: "text", text: "You read receipts.", cache_control: { type: "ephemeral" } }],
      messages: [{
        role: "user",
        content: [
          { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
          { type: "text", text: "What is the total?" }
        ]
      }]
    }
    const answer = {
      id: "msg_fallback",
      type: "message",
      role: "assistant",
      model: "claude-fallback",
      content: [{ type: "thinking", thinking: "Add the lines.", signature: "sig-1" }, {
        type: "text",
        text: "12.50",
        citations: null
      }],
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: {
        input_tokens: 90,
        output_tokens: 12,
        cache_read_input_tokens: 0,
        cache_creation_input_tokens: 0,
        service_tier: "standard"
      }
    } as unknown as Sdk.Message
    return withRecorder(["claude-primary"], answer, async (url, bodies) => {
      const anthropic = createClient({ apiKey: "sim-key", baseURL: url, retry: false, fallback: ["claude-fallback"] })
      try {
        const message = await anthropic.messages.create(params)
        expect(bodies.map((body) => body.model)).toEqual(["claude-primary", "claude-fallback"])
        expect(bodies[0]).toEqual({ ...params, stream: false })
        expect(bodies[1]).toEqual({ ...params, model: "claude-fallback", stream: false })
        expect({ ...message }).toEqual(answer)
      } finally {
        await anthropic.close()
      }
    })
  })

  it("the params and the message travel as typed data: `native` on the governed request and response, no symbol-keyed property on either", () =>
    withSimulator({}, async (running) => {
      const params = ask("Tell me about token buckets.")
      const request = toRequest(params, { tenant: "acme" })
      expect(Object.getOwnPropertySymbols(request)).toEqual([])
      expect(request.native).toEqual({ api: "anthropic", body: params })
      expect(request.metadata).toEqual({ tenant: "acme" })
      const runtime = ManagedRuntime.make(layer({ apiKey: "sim-key", baseURL: running.url }))
      try {
        const response = await runtime.runPromise(
          Effect.flatMap(LlmClient.LlmClient, (client) => client.complete(request))
        )
        expect(Object.getOwnPropertySymbols(response)).toEqual([])
        expect(response.native?.api).toBe("anthropic")
        const message = response.native?.body as Sdk.Message
        expect(message.type).toBe("message")
        expect(message.id).toBe(response.id)
        expect(message.usage.output_tokens).toBe(response.usage.outputTokens)
      } finally {
        await runtime.dispose()
      }
    }))
})
