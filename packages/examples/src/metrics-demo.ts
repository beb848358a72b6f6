/**
 * `npx tsx --conditions=@sluice/source packages/examples/src/metrics-demo.ts`:
 * a burst of governed calls against the in-process simulator (its minute lasts
 * a second, with a few 529s), Sluice's metrics served at
 * `http://localhost:9464/metrics` (`PORT` to change it), scraped once and the
 * main series printed.
 */
import { FetchHttpClient, HttpClient } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import * as Prometheus from "@sluice/core/Metrics/Prometheus"
import { SimulatedClient } from "@sluice/simulator"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"

const port = Number(process.env.PORT ?? 9464)
const key = "simulator/claude-haiku-4-5"
const quota = { requestsPerMinute: 50, inputTokensPerMinute: 20_000, outputTokensPerMinute: 4_000 }

const GovernedLive = Governor.layer().pipe(
  Layer.provide(SimulatedClient.layer({ quota, timeScale: 60, faults: { overloadedRate: 0.05 }, seed: 1 })),
  Layer.provide(RateLimiter.layerMemory({
    quotas: {
      [key]: { // a simulated minute lasts a second
        requests: { limit: quota.requestsPerMinute, per: "1 second" },
        inputTokens: { limit: quota.inputTokensPerMinute, per: "1 second" },
        outputTokens: { limit: quota.outputTokensPerMinute, per: "1 second" }
      }
    }
  })),
  Layer.provide(TokenEstimator.layer())
)

// The endpoint: the metrics route on a Node HTTP server.
const MetricsServer = Prometheus.layerServer().pipe(Layer.provide(NodeHttpServer.layer(createServer, { port })))

const program = Effect.gen(function*() {
  const client = yield* LlmClient.LlmClient
  yield* Effect.forEach(
    Array.from({ length: 120 }, (_, i) => i),
    (i) =>
      Effect.either(
        client.complete({
          model: "claude-haiku-4-5",
          messages: [{ role: "user", content: `Document ${i}: ${"quarterly figures. ".repeat(5 + (i % 20))}` }],
          maxOutputTokens: 60
        })
      ),
    { concurrency: 32 }
  )
  const body = yield* HttpClient.get(`http://localhost:${port}/metrics`).pipe(
    Effect.flatMap((response) => response.text)
  )
  const shown =
    /^sluice_(requests_total|tokens_total|cost_usd_total|call_retries_total|limiter_wait_seconds_count|quota_time_left_seconds)\b/
  for (const line of body.split("\n")) if (shown.test(line)) console.log(line)
  console.log(`(${body.split("\n").length} lines in all at http://localhost:${port}/metrics)`)
})

Effect.runPromise(program.pipe(Effect.provide(Layer.mergeAll(GovernedLive, MetricsServer, FetchHttpClient.layer))))
