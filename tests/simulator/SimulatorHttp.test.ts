import { describe, expect, it } from "@effect/vitest"
import * as Simulator from "@sluice/simulator/Simulator"
import { Effect } from "effect"

const post = (url: string, body: unknown, headers: Record<string, string> = { "x-api-key": "key-a" }) =>
  Effect.promise(() =>
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body)
    })
      .then(async (response) => ({
        status: response.status,
        headers: response.headers,
        body: await response.json() as Record<string, any>
      }))
  )

const message = { model: "claude-haiku-4-5", max_tokens: 50, messages: [{ role: "user", content: "hello there" }] }

describe("Simulator over HTTP", () => {
  it.scoped("counts accepted calls and 429s per key and model; per-key quotas are independent", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({
        quota: { requestsPerMinute: 1, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 },
        quotas: { "key-b": { requestsPerMinute: 3, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 } }
      })
      const url = `${running.url}/v1/messages`
      expect((yield* post(url, message)).status).toBe(200)
      const limited = yield* post(url, message)
      expect(limited.status).toBe(429)
      expect(limited.body).toMatchObject({ type: "error", error: { type: "rate_limit_error" } })
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0)
      for (let i = 0; i < 3; i++) expect((yield* post(url, message, { "x-api-key": "key-b" })).status).toBe(200)
      const stats = yield* Effect.promise(() =>
        fetch(`${running.url}/_sim/stats`).then((response) => response.json() as Promise<Simulator.Stats>)
      )
      const byKey = Object.fromEntries(stats.keys.map((key) => [key.apiKey, key]))
      expect(byKey["key-a"]).toMatchObject({ accepted: 1, rateLimited: 1 })
      expect(byKey["key-b"]).toMatchObject({ accepted: 3, rateLimited: 0 })
      expect(byKey["key-b"]?.bestMinuteUtilisation.requests).toBe(1)
      expect(yield* running.stats).toEqual(stats)
    }))

  it.scoped("refuses a missing key, bad JSON and a missing field, naming it, in Anthropic's error shape", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const url = `${running.url}/v1/messages`
      expect((yield* post(url, message, {})).body).toMatchObject({ error: { type: "authentication_error" } })
      const badJson = yield* post(url, "{not json")
      expect(badJson.status).toBe(400)
      expect(badJson.body.error.type).toBe("invalid_request_error")
      const noMax = yield* post(url, { ...message, max_tokens: undefined })
      expect(noMax.status).toBe(400)
      expect(noMax.body.error.message).toContain("max_tokens")
      expect(badJson.headers.get("request-id")).toMatch(/^req_/)
    }))

  it.scoped("count_tokens answers the simulator's own count", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({})
      const counted = yield* post(`${running.url}/v1/messages/count_tokens`, {
        model: message.model,
        messages: message.messages
      })
      expect(counted.body.input_tokens).toBe(Simulator.countTokens(message))
    }))
})
