/**
 * The whole stack, end to end, over real HTTP: the simulator starts in process
 * on a free port with Anthropic's tier-1 Sonnet limits (50 requests, 30,000
 * input and 8,000 output tokens a minute) at 20× speed, the real
 * `@anthropic-ai/sdk` is pointed at it, and a batch of synthetic documents of
 * heavy-tailed sizes goes through the Governor (estimation, limiter, retry,
 * settle, header feedback) as tool-use extractions, next to a few interactive
 * calls. It prints progress, then what the simulator — the judge — counted:
 * 429s received, and how much of what the quota allowed over the run was used.
 *
 *   pnpm demo:governed    (from the repository root; about 20 seconds)
 *
 * A short tour; the main job is `pnpm start` (`extract.ts`).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import { Anthropic } from "@sluice/providers"
import { Simulator } from "@sluice/simulator"
import { Clock, Console, Duration, Effect, Layer, Random, Redacted } from "effect"
import { documents, extract, limiterQuota } from "./workload.js"

const MODEL = "claude-haiku-4-5"
const TIME_SCALE = 20
const DOCUMENTS = 120
const quota = Simulator.defaultQuota

const program = (url: string, stats: Effect.Effect<Simulator.Stats>) =>
  Effect.gen(function*() {
    const client = yield* LlmClient.LlmClient
    const start = yield* Clock.currentTimeMillis
    let done = 0
    let failed = 0
    const seconds = Effect.map(Clock.currentTimeMillis, (now) => ((now - start) / 1000).toFixed(1))
    yield* Console.log(
      `simulator at ${url}: ${quota.requestsPerMinute} requests, ${quota.inputTokensPerMinute} input and ${quota.outputTokensPerMinute} output tokens per minute, time ×${TIME_SCALE}`
    )

    const docs = yield* documents(DOCUMENTS, 2026)
    const batch = Effect.forEach(docs, (doc) =>
      client.complete(extract(MODEL, doc)).pipe(
        Effect.tap(() => Effect.sync(() => done++)),
        Effect.tapError((error) =>
          Effect.zipRight(Effect.sync(() => failed++), Console.error(`${doc.id}: ${error.message}`))
        ),
        Effect.either
      ), { concurrency: 32 })

    const interactive = Effect.forEach([1, 2, 3, 4, 5], (i) =>
      Effect.gen(function*() {
        yield* Effect.sleep(Duration.seconds(3))
        const asked = yield* Clock.currentTimeMillis
        yield* client.complete({
          model: MODEL,
          messages: [{ role: "user", content: `Quick question ${i}: what is a token bucket?` }],
          maxOutputTokens: 100,
          metadata: { priority: "interactive" }
        })
        yield* Console.log(
          `${yield* seconds}s  interactive call ${i} answered after ${((yield* Clock.currentTimeMillis) - asked)} ms`
        )
      }), { concurrency: 1 })

    const progress = Effect.gen(function*() {
      yield* Effect.sleep(Duration.seconds(3))
      yield* Console.log(`${yield* seconds}s  ${done}/${DOCUMENTS} documents${failed > 0 ? `, ${failed} failed` : ""}`)
    }).pipe(Effect.forever)

    // Measured when the batch ends: that is the work the quota paced.
    let finished: { readonly wall: number; readonly stats: Simulator.Stats } | undefined
    const measured = Effect.tap(batch, () =>
      Effect.gen(function*() {
        finished = { wall: ((yield* Clock.currentTimeMillis) - start) / 1000, stats: yield* stats }
      }))
    yield* Effect.raceFirst(Effect.all([measured, interactive], { concurrency: 2 }), progress)
    const wall = finished?.wall ?? 0
    const [key] = (finished?.stats.keys ?? []).filter((k) => k.model === MODEL)
    yield* Console.log("")
    yield* Console.log(
      `${done} of ${DOCUMENTS} documents extracted, ${failed} failed; the batch took ${wall.toFixed(1)} s (${
        (wall * TIME_SCALE / 60).toFixed(1)
      } simulated minutes)`
    )
    yield* Console.log(
      `the simulator counted: ${key?.accepted ?? 0} calls accepted, ${key?.rateLimited ?? 0} answered 429, ${
        key?.inputTokens ?? 0
      } input and ${key?.outputTokens ?? 0} output tokens`
    )
    // Of what the quota allowed over the run (a full bucket at the start plus the refill since), how much was used.
    const minutes = (wall * TIME_SCALE) / 60
    const share = (used: number, perMinute: number) => `${((100 * used) / (perMinute * (1 + minutes))).toFixed(0)} %`
    yield* Console.log(
      `of what the quota allowed over the run: requests ${share(key?.accepted ?? 0, quota.requestsPerMinute)}, ` +
        `input tokens ${share(key?.inputTokens ?? 0, quota.inputTokensPerMinute)}, output tokens ${
          share(key?.outputTokens ?? 0, quota.outputTokensPerMinute)
        }`
    )
  })

const main = Effect.gen(function*() {
  const running = yield* Simulator.serve({
    timeScale: TIME_SCALE,
    latency: { baseMs: 400, perOutputTokenMs: 10, jitterMs: 300 }
  })
  // The limiter is told the same quota, scaled: a simulated minute lasts 60 / TIME_SCALE seconds.
  const GovernedLive = Governor.layer({ count: "estimate" }).pipe(
    Layer.provide(Anthropic.layer({ apiKey: Redacted.make("sim-key"), baseURL: running.url })),
    Layer.provide(RateLimiter.layerMemory({
      quotas: { [`anthropic/${MODEL}`]: limiterQuota(quota, TIME_SCALE) }
    })),
    Layer.provide(TokenEstimator.layer())
  )
  yield* program(running.url, running.stats).pipe(Effect.provide(GovernedLive))
}).pipe(Effect.scoped)

main.pipe(Effect.withRandom(Random.make(2026)), NodeRuntime.runMain)
