// Smoke test of the packed packages from TypeScript (NodeNext, strict), run by
// scripts/package-check.sh in a fresh project outside the workspace: Governor.layer over the
// Anthropic layer, against a simulator started here. Fails unless the call returned text and
// the simulator counted it.
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import { Anthropic } from "@sluice/providers"
import { Simulator } from "@sluice/simulator"
import { Effect, Layer, Redacted } from "effect"

const quota = {
  requests: { limit: 50, per: "1 minute" },
  inputTokens: { limit: 30_000, per: "1 minute" },
  outputTokens: { limit: 8_000, per: "1 minute" }
}

const program = Effect.gen(function*() {
  const running = yield* Simulator.serve()
  const GovernedLive = Governor.layer({ retry: false }).pipe(
    Layer.provide([
      Anthropic.layer({ apiKey: Redacted.make("sim-key"), baseURL: running.url }),
      RateLimiter.layerMemory({ quotas: { "anthropic/claude-haiku-4-5": quota } }),
      TokenEstimator.layer()
    ])
  )
  const request: LlmClient.Request = {
    model: "claude-haiku-4-5",
    maxOutputTokens: 64,
    messages: [{ role: "user", content: "Say hello." }]
  }
  const response = yield* Effect.flatMap(LlmClient.LlmClient, (client) => client.complete(request)).pipe(
    Effect.provide(GovernedLive)
  )
  const text: string = LlmClient.text(response)
  if (text.length === 0 || response.usage.outputTokens <= 0) {
    return yield* Effect.dieMessage(`expected text and usage, got ${JSON.stringify(response)}`)
  }
  const stats = yield* running.stats
  const accepted = stats.keys.reduce((sum, key) => sum + key.accepted, 0)
  if (accepted !== 1) {
    return yield* Effect.dieMessage(`expected the simulator to have accepted 1 call, it counted ${accepted}`)
  }
  return response.usage
})

Effect.runPromise(Effect.scoped(program)).then(
  (usage) => console.log(`smoke.ts: ok (${usage.inputTokens} in, ${usage.outputTokens} out)`),
  (error: unknown) => {
    console.error("smoke.ts:", error)
    process.exit(1)
  }
)
