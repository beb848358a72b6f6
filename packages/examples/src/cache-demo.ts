/**
 * `npx -y pnpm@10 example:cache`: prompt caching, accounted. Six questions
 * about one long contract go through a Governor and the real Anthropic SDK to
 * the HTTP simulator, the contract marked as a cache breakpoint. The first call
 * writes the cache, the others read it. For each call it prints the usage the
 * provider reported, what the limiter kept against the input-token quota (cache
 * reads are free for Anthropic's current models) and the call's price, each
 * part of the input at its own price.
 */
import { Budget, Governor, LlmClient, Pricing, Quota, RateLimiter, TokenEstimator } from "@sluice/core"
import { Anthropic } from "@sluice/providers"
import { Simulator } from "@sluice/simulator"
import { Effect, Layer, Redacted } from "effect"

const model = "claude-haiku-4-5"
const key = `anthropic/${model}`
const contract = Array.from(
  { length: 300 },
  (_, i) => `Clause ${i + 1}: the supplier delivers the goods on time and in full.`
).join(" ")
const questions = [
  "Who delivers?",
  "By when?",
  "Where to?",
  "Is partial delivery allowed?",
  "What if late?",
  "Who pays freight?"
]

const main = Effect.gen(function*() {
  const simulator = yield* Simulator.serve({
    quota: { requestsPerMinute: 1_000, inputTokensPerMinute: 50_000, outputTokensPerMinute: 20_000 }
  })

  const Governed = Governor.layer().pipe(
    Layer.provide(Anthropic.layer({ apiKey: Redacted.make("sim-key"), baseURL: simulator.url })),
    Layer.provideMerge(RateLimiter.layerMemory({
      quotas: {
        [key]: {
          requests: { limit: 1_000, per: "1 minute" },
          inputTokens: { limit: 50_000, per: "1 minute" },
          outputTokens: { limit: 20_000, per: "1 minute" }
        }
      }
    })),
    Layer.provideMerge(Budget.layer({ limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 10 }] })),
    Layer.provideMerge(Layer.mergeAll(Pricing.layer(), Budget.layerLedgerMemory)),
    Layer.provideMerge(TokenEstimator.layer())
  )

  yield* Effect.gen(function*() {
    const client = yield* LlmClient.LlmClient
    const pricing = yield* Pricing.Pricing
    const budget = yield* Budget.Budget
    console.log("call  input  cache write  cache read  output  counted against ITPM      price")
    for (const [i, question] of questions.entries()) {
      const { usage } = yield* client.complete({
        model,
        system: contract,
        systemCacheControl: { type: "ephemeral" }, // the contract is the cached prefix
        messages: [{ role: "user", content: question }],
        maxOutputTokens: 200
      })
      // The rule the Governor settled by: for Anthropic's current models, cache reads are free against ITPM.
      const counted =
        LlmClient.usageCost(usage, Quota.cacheCountingFor(Quota.defaultCacheCounting, "anthropic", model)).inputTokens
      const price = yield* pricing.cost(model, usage)
      console.log(
        `${String(i + 1).padStart(4)}  ${String(usage.inputTokens).padStart(5)}  ${
          String(usage.cacheWriteInputTokens).padStart(11)
        }  ` +
          `${String(usage.cacheReadInputTokens).padStart(10)}  ${String(usage.outputTokens).padStart(6)}  ${
            String(counted).padStart(21)
          }  $${price.toFixed(6)}`
      )
    }
    const [spent] = yield* budget.status
    const uncached = yield* pricing.cost(model, {
      inputTokens: Simulator.countTokens({ system: contract }) * questions.length,
      outputTokens: 0,
      cacheReadInputTokens: 0,
      cacheWriteInputTokens: 0
    })
    const stats = (yield* simulator.stats).keys[0]
    console.log(
      `the budget was charged $${spent?.spentUsd.toFixed(6)}; the contract alone, uncached, would have cost $${
        uncached.toFixed(6)
      }`
    )
    console.log(
      `the provider saw ${stats?.accepted} calls, ${stats?.rateLimited} 429s, ${stats?.cacheReadInputTokens} tokens read from its cache`
    )
  }).pipe(Effect.provide(Governed))
})

Effect.runPromise(Effect.scoped(main))
