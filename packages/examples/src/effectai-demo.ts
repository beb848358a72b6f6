/**
 * `pnpm example:effectai`: an app written against @effect/ai's LanguageModel,
 * governed by Sluice with one more layer; twelve calls at once against a
 * provider that admits six a second, and the provider's count of 429s.
 */
import { LanguageModel } from "@effect/ai"
import { AnthropicClient, AnthropicLanguageModel } from "@effect/ai-anthropic"
import { FetchHttpClient } from "@effect/platform"
import { RateLimiter, TokenEstimator } from "@sluice/core"
import * as EffectAi from "@sluice/providers/EffectAi"
import { Simulator } from "@sluice/simulator"
import { Effect, Layer, Redacted } from "effect"

// The app, written against @effect/ai only: unchanged by Sluice.
const app = Effect.forEach(
  Array.from({ length: 12 }, (_, i) => `Question ${i}: what is a token bucket?`),
  (prompt) => Effect.map(LanguageModel.generateText({ prompt }), (response) => response.usage.outputTokens),
  { concurrency: "unbounded" }
)

const main = Effect.gen(function*() {
  // A simulated provider allowing 6 requests a (simulated) minute; a minute lasts a second.
  const simulator = yield* Simulator.serve({
    timeScale: 60,
    quota: { requestsPerMinute: 6, inputTokensPerMinute: 100_000, outputTokensPerMinute: 100_000 }
  })

  // The one layer more: a governed LanguageModel over @effect/ai-anthropic's.
  const Model = EffectAi.layerGoverned({ model: "claude-haiku-4-5", maxOutputTokens: 256 }).pipe(
    Layer.provide(AnthropicLanguageModel.model("claude-haiku-4-5", { max_tokens: 256 })),
    Layer.provide(AnthropicClient.layer({ apiKey: Redacted.make("sim-key"), apiUrl: simulator.url })),
    Layer.provide([
      FetchHttpClient.layer,
      RateLimiter.layerMemory({
        quotas: {
          "anthropic/claude-haiku-4-5": {
            requests: { limit: 5, per: "1 second" },
            inputTokens: { limit: 100_000, per: "1 second" },
            outputTokens: { limit: 100_000, per: "1 second" }
          }
        }
      }),
      TokenEstimator.layer()
    ])
  )

  const outputs = yield* app.pipe(Effect.provide(Model))
  const stats = yield* simulator.stats
  console.log(
    `${outputs.length} answers; the provider saw`,
    stats.keys.map(({ accepted, rateLimited }) => ({ accepted, rateLimited }))
  )
})

Effect.runPromise(Effect.scoped(main))
