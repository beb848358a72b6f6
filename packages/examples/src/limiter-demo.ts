/**
 * The limiter on its own, in real time: a batch of documents of very uneven
 * sizes and a trickle of interactive calls share one quota (requests, input
 * and output tokens per minute). A stand-in model answers after a random
 * latency and reports its own token count, which differs from the estimate;
 * each permit settles to it.
 *
 * It prints every grant as it happens, then what it measured: how much of
 * what the quota allowed over the run was used, per dimension, and how long
 * interactive calls waited while the batch saturated the quota. Run it with `pnpm demo:limiter` (about 15 seconds).
 *
 * This is not the main job: the document-extraction job over the provider
 * simulator arrives with the pipeline issue.
 */
import { NodeRuntime } from "@effect/platform-node"
import { RateLimiter } from "@sluice/core"
import type { Priority } from "@sluice/core"
import { Array as Arr, Clock, Console, Duration, Effect, Random } from "effect"

const KEY = "demo/model"
const limits = { requests: 300, inputTokens: 60_000, outputTokens: 12_000 } // per minute
const documents = 60
const interactiveCalls = 10
const maxOutput = 300

/** A heavy-tailed document size (Pareto, alpha 1.2), 200 to 12,000 tokens. */
const documentTokens = Effect.map(Random.next, (u) => Math.min(12_000, Math.round(200 / Math.pow(1 - u, 1 / 1.2))))

interface Outcome {
  readonly id: string
  readonly priority: Priority.Class
  readonly waitedMs: number
  readonly inputTokens: number
  readonly outputTokens: number
}

const program = Effect.gen(function*() {
  const limiter = yield* RateLimiter.RateLimiter
  const start = yield* Clock.currentTimeMillis
  const elapsed = Effect.map(Clock.currentTimeMillis, (now) => ((now - start) / 1000).toFixed(2).padStart(6))

  /** One governed call: reserve the estimate, "call the model", settle to what it reports. */
  const call = (id: string, estimate: number, priority: Priority.Class) =>
    limiter.withPermit(KEY, { inputTokens: estimate, outputTokens: maxOutput }, (permit) =>
      Effect.gen(function*() {
        yield* Console.log(
          `${yield* elapsed}s  ${priority.padEnd(11)} ${id.padEnd(8)} ${String(estimate).padStart(6)} tokens  waited ${
            Duration.format(permit.waited)
          }`
        )
        yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(150, 450)))
        // The provider counts tokens its own way and rarely writes max_tokens.
        const inputTokens = Math.round(estimate * (yield* Random.nextRange(0.95, 1.1)))
        const outputTokens = yield* Random.nextIntBetween(40, maxOutput)
        yield* permit.settle({ inputTokens, outputTokens })
        return { id, priority, waitedMs: Duration.toMillis(permit.waited), inputTokens, outputTokens } satisfies Outcome
      }), { priority })

  const sizes = yield* Effect.replicateEffect(documentTokens, documents)
  const batch = Effect.forEach(sizes, (size, i) => call(`doc-${i}`, size, "batch"), { concurrency: 16 })
  const interactive = Effect.forEach(
    Arr.range(1, interactiveCalls),
    (i) => Effect.delay(call(`user-${i}`, 800, "interactive"), Duration.seconds(1)),
    { concurrency: 1 }
  )

  const [batchOutcomes, interactiveOutcomes] = yield* Effect.all([batch, interactive], { concurrency: 2 })
  const makespan = (yield* Clock.currentTimeMillis) - start

  // How much of what the quota allowed over the run was used: a full bucket
  // at the start plus the refill during the run, per dimension.
  const all = [...batchOutcomes, ...interactiveOutcomes]
  const used = {
    requests: all.length,
    inputTokens: all.reduce((sum, outcome) => sum + outcome.inputTokens, 0),
    outputTokens: all.reduce((sum, outcome) => sum + outcome.outputTokens, 0)
  }
  const utilisation = (["requests", "inputTokens", "outputTokens"] as const).map((dimension) => {
    const allowed = limits[dimension] + (limits[dimension] / 60_000) * makespan
    return `${dimension} ${((100 * used[dimension]) / allowed).toFixed(0)} %`
  })
  const waits = interactiveOutcomes.map((outcome) => outcome.waitedMs).sort((a, b) => a - b)
  yield* Console.log("")
  yield* Console.log(
    `${all.length} calls, ${used.inputTokens} input and ${used.outputTokens} output tokens (as the stand-in model counted them)`
  )
  yield* Console.log(
    `all done after ${(makespan / 1000).toFixed(1)} s; of what the quota allowed in that time, used: ${
      utilisation.join(", ")
    }`
  )
  yield* Console.log(
    `interactive waits: median ${waits[Math.floor(waits.length / 2)]} ms, max ${waits[waits.length - 1]} ms`
  )
  const stats = yield* limiter.stats(KEY)
  yield* Console.log(
    `left in the buckets: ${
      JSON.stringify(
        Object.fromEntries(
          Object.entries(stats.levels).map(([dimension, level]) => [dimension, Math.round(level.level)])
        )
      )
    }`
  )
})

const LimiterLive = RateLimiter.layerMemory({
  quotas: {
    [KEY]: {
      requests: { limit: limits.requests, per: "1 minute" },
      inputTokens: { limit: limits.inputTokens, per: "1 minute" },
      outputTokens: { limit: limits.outputTokens, per: "1 minute" }
    }
  }
})

program.pipe(Effect.provide(LimiterLive), NodeRuntime.runMain)
