/**
 * Mixed load: a batch job saturates the quota while interactive requests
 * arrive at random on the same key; it prints how long each class waited in
 * Sluice (p50, p95, p99), once with priorities and once with every call in
 * the same class, so the difference is Sluice's priority lanes and headroom.
 *
 *   pnpm example:mixed                 (about a minute)
 *   pnpm example:mixed --help
 *
 * The provider is the simulator, in process on a free port, through the real
 * `@anthropic-ai/sdk`; its minute runs `--speed` times faster. A call's wait
 * is its whole time minus the time the provider took to answer it (measured
 * under the Governor, retries included).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Governor, LimiterStore, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import { Anthropic } from "@sluice/providers"
import { Simulator } from "@sluice/simulator"
import { Clock, Console, Duration, Effect, Fiber, Random, Redacted, Stream } from "effect"
import { syntheticSource } from "./extract/Documents.js"
import * as Extraction from "./extract/Extraction.js"
import { quotaOf } from "./extract/Job.js"
import type { Limits } from "./extract/Summary.js"

const MODEL = "claude-haiku-4-5"

/** The p-th percentile (0–100) of sorted numbers, nearest rank. */
export const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

interface Waits {
  readonly batch: Array<number>
  readonly interactive: Array<number>
  batchSeconds: number
  rateLimited: number
}

/** One pass: the batch plus interactive arrivals, over a fresh simulator. */
const pass = (
  config: {
    readonly limits: Limits
    readonly speed: number
    readonly docs: number
    readonly arrivalSeconds: number
    readonly priorities: boolean
    readonly seed: number
  }
) =>
  Effect.scoped(Effect.gen(function*() {
    const running = yield* Simulator.serve({
      quota: config.limits,
      timeScale: config.speed,
      latency: { baseMs: 500, perOutputTokenMs: 6, jitterMs: 400 },
      seed: config.seed
    })
    const sdk = yield* Anthropic.make({ apiKey: Redacted.make("sluice-simulator"), baseURL: running.url })
    // Time the provider spent on each call, by call id (retries add up).
    const providerMillis = new Map<string, number>()
    const waits: Waits = { batch: [], interactive: [], batchSeconds: 0, rateLimited: 0 }
    const timed: LlmClient.Provider = {
      ...sdk,
      complete: (request) =>
        Effect.gen(function*() {
          const started = yield* Clock.currentTimeMillis
          const id = request.metadata?.documentId ?? ""
          return yield* sdk.complete(request).pipe(
            Effect.tapError((error) => Effect.sync(() => error._tag === "RateLimited" && waits.rateLimited++)),
            Effect.ensuring(Effect.flatMap(Clock.currentTimeMillis, (now) =>
              Effect.sync(() => providerMillis.set(id, (providerMillis.get(id) ?? 0) + now - started))))
          )
        })
    }
    const limiter = yield* RateLimiter.make({
      quotas: { [`anthropic/${MODEL}`]: quotaOf(config.limits, config.speed) }
    }).pipe(
      Effect.provideServiceEffect(LimiterStore.LimiterStore, LimiterStore.makeMemory),
      Effect.orDie
    )
    const client = yield* Governor.make({ count: "estimate" }).pipe(
      Effect.provideService(LlmClient.LlmClient, LlmClient.LlmClient.of(timed)),
      Effect.provideService(RateLimiter.RateLimiter, limiter),
      Effect.provideServiceEffect(TokenEstimator.TokenEstimator, TokenEstimator.make())
    )
    const call = (request: LlmClient.Request, into: Array<number>) =>
      Effect.gen(function*() {
        const started = yield* Clock.currentTimeMillis
        yield* client.complete(request)
        const total = (yield* Clock.currentTimeMillis) - started
        into.push(total - (providerMillis.get(request.metadata?.documentId ?? "") ?? 0))
      }).pipe(Effect.catchAll((error) =>
        Console.error(`${request.metadata?.documentId}: ${error.message}`)
      ))

    const started = yield* Clock.currentTimeMillis
    const source = syntheticSource(config.docs, config.seed)
    const batch = yield* source.documents.pipe(
      Stream.mapEffect((doc) =>
        call({
          ...Extraction.request(MODEL, doc, "mixed"),
          metadata: { documentId: doc.id, priority: config.priorities ? "batch" : "normal" }
        }, waits.batch), { concurrency: 64 }),
      Stream.runDrain,
      Effect.zipRight(
        Effect.flatMap(
          Clock.currentTimeMillis,
          (now) => Effect.sync(() => (waits.batchSeconds = (now - started) / 1000))
        )
      ),
      Effect.fork
    )
    // Interactive arrivals: exponential gaps with the given mean, until the batch ends.
    let n = 0
    const interactive = yield* Effect.gen(function*() {
      const gap = -Math.log(1 - (yield* Random.next)) * config.arrivalSeconds
      yield* Effect.sleep(Duration.seconds(gap))
      const id = `interactive-${++n}`
      yield* Effect.fork(call({
        model: MODEL,
        messages: [{ role: "user", content: `Question ${n}: in one sentence, what does a token bucket limit?` }],
        maxOutputTokens: 120,
        metadata: { documentId: id, priority: config.priorities ? "interactive" : "normal" }
      }, waits.interactive))
    }).pipe(Effect.forever, Effect.withRandom(Random.make(config.seed)), Effect.fork)
    yield* Fiber.join(batch)
    yield* Fiber.interrupt(interactive)
    return waits
  }))

const row = (name: string, waits: ReadonlyArray<number>) => {
  const sorted = [...waits].sort((a, b) => a - b)
  const ms = (p: number) => `${(percentile(sorted, p) / 1000).toFixed(2)} s`.padStart(9)
  return `${name.padEnd(12)} ${String(waits.length).padStart(6)} ${ms(50)} ${ms(95)} ${ms(99)}`
}

const command = Command.make("mixed-load", {
  docs: Options.integer("docs").pipe(Options.withDefault(400), Options.withDescription("Batch documents per pass")),
  speed: Options.float("speed").pipe(
    Options.withDefault(10),
    Options.withDescription("How many times faster than real time the simulator's minute runs")
  ),
  arrival: Options.float("arrival").pipe(
    Options.withDefault(0.5),
    Options.withDescription("Mean seconds between interactive arrivals (exponential)")
  ),
  seed: Options.integer("seed").pipe(Options.withDefault(7), Options.withDescription("Seed of documents and arrivals"))
}, ({ arrival, docs, seed, speed }) =>
  Effect.gen(function*() {
    const limits: Limits = { requestsPerMinute: 120, inputTokensPerMinute: 60_000, outputTokensPerMinute: 12_000 }
    yield* Console.log(
      `quota ${limits.requestsPerMinute} requests, ${limits.inputTokensPerMinute.toLocaleString("en-US")} input and ${
        limits.outputTokensPerMinute.toLocaleString("en-US")
      } output tokens a minute; ` +
        `a minute lasts ${
          (60 / speed).toFixed(1)
        } s; ${docs} batch documents, 64 in flight; an interactive call every ${arrival} s on average`
    )
    const results: Array<readonly [string, Waits]> = []
    for (const priorities of [true, false]) {
      yield* Console.log(
        priorities ? "\npass 1: interactive and batch classes" : "\npass 2: every call in one class (no priorities)"
      )
      const waits = yield* pass({ limits, speed, docs, arrivalSeconds: arrival, priorities, seed })
      results.push([priorities ? "priorities" : "one class", waits] as const)
      yield* Console.log(
        `${"class".padEnd(12)} ${"calls".padStart(6)} ${"p50".padStart(9)} ${"p95".padStart(9)} ${
          "p99".padStart(9)
        }   (time waiting in Sluice)`
      )
      yield* Console.log(row("interactive", waits.interactive))
      yield* Console.log(row("batch", waits.batch))
      yield* Console.log(`batch took ${waits.batchSeconds.toFixed(1)} s; ${waits.rateLimited} × 429`)
    }
    const [withClasses, without] = results.map(([, w]) => percentile([...w.interactive].sort((a, b) => a - b), 50))
    yield* Console.log(
      `\ninteractive p50 wait: ${((withClasses ?? 0) / 1000).toFixed(2)} s with priorities, ${
        ((without ?? 0) / 1000).toFixed(2)
      } s without`
    )
  })).pipe(
    Command.withDescription(
      "A saturating batch and random interactive calls on one key: the wait of each class, with and without priorities"
    )
  )

Command.run(command, { name: "mixed-load", version: "0.1.0" })(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
