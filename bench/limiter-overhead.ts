/**
 * What the limiter costs per call: acquire + settle + release on the memory
 * store, with a quota that never binds, sequentially and with 64 callers.
 *
 *   pnpm bench:overhead
 */
import { NodeRuntime } from "@effect/platform-node"
import { RateLimiter } from "@sluice/core"
import { Console, Effect } from "effect"

const KEY = "bench/model"
const N = 100_000

const run = (label: string, concurrency: number) =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    const latencies: Array<number> = []
    const one = Effect.suspend(() => {
      const started = performance.now()
      return limiter.withPermit(KEY, { inputTokens: 500, outputTokens: 200 }, (permit) =>
        permit.settle({ inputTokens: 480, outputTokens: 150 })).pipe(
          Effect.tap(() =>
            Effect.sync(() =>
              latencies.push(performance.now() - started)
            )
          )
        )
    })
    const started = performance.now()
    yield* Effect.forEach(Array.from({ length: N }), () => one, { concurrency, discard: true })
    const seconds = (performance.now() - started) / 1000
    latencies.sort((a, b) => a - b)
    yield* Console.log(
      `${label.padEnd(14)} ${Math.round(N / seconds).toLocaleString("en-US").padStart(9)} acquire+settle/s   p50 ${
        latencies[Math.floor(N * 0.5)]!.toFixed(3)
      } ms   p99 ${latencies[Math.floor(N * 0.99)]!.toFixed(3)} ms`
    )
  })

const program = Effect.gen(function*() {
  yield* Console.log(
    `${N.toLocaleString("en-US")} calls per run, memory store, quota never binding, Node ${process.version}`
  )
  yield* run("sequential", 1)
  yield* run("64 concurrent", 64)
})

program.pipe(
  Effect.provide(RateLimiter.layerMemory({
    maxInFlight: 1_000,
    quotas: {
      [KEY]: {
        requests: { limit: 1e12, per: "1 minute" },
        inputTokens: { limit: 1e15, per: "1 minute" },
        outputTokens: { limit: 1e15, per: "1 minute" }
      }
    }
  })),
  NodeRuntime.runMain
)
