/**
 * What the Governor costs per call, by what it is asked to do: a provider that
 * answers at once, a quota that never binds, 64 calls at a time. Each line
 * turns one part off, so the difference between two lines is that part's cost.
 *
 *   pnpm bench:governor              every variant
 *   pnpm bench:governor everything   one of them
 */
import { NodeRuntime } from "@effect/platform-node"
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import { Console, Effect, Layer } from "effect"
import { countingScheduler, instantProvider } from "./peers/scale.js"

const N = 20_000

// Effect's scheduler, counting fiber steps and tasks: a measure of the work per call that the host's load does not move.
const { scheduler: counting, steps } = countingScheduler()
const MODEL = "claude-haiku-4-5"
const huge = {
  requests: { limit: 1e12, per: "1 minute" },
  inputTokens: { limit: 1e15, per: "1 minute" },
  outputTokens: { limit: 1e15, per: "1 minute" }
} as const

const Instant = Layer.succeed(
  LlmClient.LlmClient,
  LlmClient.LlmClient.of({ ...instantProvider, provider: "anthropic" })
)

/** A character-count estimator, to take tiktoken out of the figure. */
const Chars = Layer.succeed(
  TokenEstimator.TokenEstimator,
  TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
)

const variants: ReadonlyArray<readonly [string, Governor.Options, Layer.Layer<TokenEstimator.TokenEstimator>]> = [
  ["everything", {}, TokenEstimator.layer()],
  ["no coalescing", { coalesce: false }, TokenEstimator.layer()],
  ["no retry", { retry: false }, TokenEstimator.layer()],
  ["neither", { coalesce: false, retry: false }, TokenEstimator.layer()],
  ["neither, chars", { coalesce: false, retry: false }, Chars]
]

const request = (i: number): LlmClient.Request => ({
  model: MODEL,
  messages: [{ role: "user", content: `Document ${i}: quarterly figures and outlook.` }],
  maxOutputTokens: 50
})

const measure = (label: string, options: Governor.Options, estimator: Layer.Layer<TokenEstimator.TokenEstimator>) =>
  Effect.gen(function*() {
    const client = yield* LlmClient.LlmClient
    // Warm up the JIT and the estimator's memo.
    yield* Effect.forEach(Array.from({ length: 2_000 }, (_, i) => i), (i) => client.complete(request(i)), {
      concurrency: 64,
      discard: true
    })
    const started = performance.now()
    const cpu = process.cpuUsage()
    steps.ops = 0
    steps.tasks = 0
    yield* Effect.forEach(Array.from({ length: N }, (_, i) => i), (i) => client.complete(request(i)), {
      concurrency: 64,
      discard: true
    }).pipe(Effect.withScheduler(counting))
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    const cpuMillis = (used.user + used.system) / 1000
    yield* Console.log(
      `${label.padEnd(16)} ${Math.round(N / seconds).toLocaleString("en-US").padStart(7)} calls/s   ${
        (1000 * seconds / N).toFixed(3)
      } ms a call   ${(cpuMillis / N).toFixed(3)} ms of CPU a call   ${(steps.ops / N).toFixed(1)} fiber steps and ${
        (steps.tasks / N).toFixed(2)
      } scheduler tasks a call`
    )
  }).pipe(
    Effect.provide(
      Governor.layer(options).pipe(
        Layer.provide(Instant),
        Layer.provide(RateLimiter.layerMemory({ quotas: { [`anthropic/${MODEL}`]: huge } })),
        Layer.provide(estimator)
      )
    )
  )

// `pnpm bench:governor everything` runs one variant.
const only = process.argv[2]
NodeRuntime.runMain(
  Effect.forEach(
    variants.filter(([label]) => only === undefined || label === only),
    ([label, options, estimator]) => measure(label, options, estimator),
    { discard: true }
  )
)
