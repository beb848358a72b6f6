/**
 * `pnpm example:router`: three simulated deployments with quotas 1:2:3 (the
 * simulator's minute lasts a second) behind one Router; each deployment's
 * share of the work, and its 429s.
 */
import { RateLimiter, Router, TokenEstimator } from "@sluice/core"
import { SimulatedClient } from "@sluice/simulator"
import { Effect, Layer } from "effect"

const sizes = [1, 2, 3]
const quota = (k: number) => ({
  requestsPerMinute: 100 * k,
  inputTokensPerMinute: 4_000 * k,
  outputTokensPerMinute: 10_000 * k
})

const program = Effect.gen(function*() {
  const sims = yield* Effect.forEach(sizes, (k) => SimulatedClient.make({ quota: quota(k), timeScale: 60 }))
  const router = yield* Router.make({
    deployments: sims.map(({ client }, i) => ({
      name: `deployment-${i + 1}`,
      client,
      quota: { // a simulated minute lasts a second
        requests: { limit: quota(sizes[i]!).requestsPerMinute, per: "1 second" },
        inputTokens: { limit: quota(sizes[i]!).inputTokensPerMinute, per: "1 second" },
        outputTokens: { limit: quota(sizes[i]!).outputTokensPerMinute, per: "1 second" }
      }
    }))
  })
  yield* Effect.forEach(
    Array.from({ length: 300 }, (_, i) => i),
    (i) =>
      router.complete({
        model: "claude-haiku-4-5",
        messages: [{ role: "user", content: `Document ${i}: ${"figures and outlook. ".repeat(10 + (i % 40))}` }],
        maxOutputTokens: 60
      }),
    { concurrency: 40 }
  )
  for (const [i, sim] of sims.entries()) {
    const [stats] = (yield* sim.stats.stats).keys
    console.log(
      `deployment-${i + 1}: ${stats?.inputTokens} input tokens, ${stats?.accepted} calls, ${stats?.rateLimited} 429s`
    )
  }
})

Effect.runPromise(
  program.pipe(Effect.scoped, Effect.provide(Layer.merge(RateLimiter.layerMemory(), TokenEstimator.layer())))
)
