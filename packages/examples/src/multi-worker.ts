/**
 * One worker of the multi-process example (started by multi.ts): extracts its
 * slice of the documents through the Governor, with the limiter's state either
 * shared through Redis (MODE=shared) or a static 1/N share in memory
 * (MODE=split). Prints one JSON line with what it observed.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import { Anthropic } from "@sluice/providers"
import { Simulator } from "@sluice/simulator"
import { Clock, Config, Effect, Layer, Redacted } from "effect"
import { documents, extract, limiterQuota } from "./workload.js"

const MODEL = "claude-haiku-4-5"

const program = Effect.gen(function*() {
  const url = yield* Config.string("SIM_URL")
  const worker = yield* Config.integer("WORKER")
  const workers = yield* Config.integer("WORKERS")
  const total = yield* Config.integer("DOCS")
  const mode = yield* Config.literal("shared", "split")("MODE")
  const timeScale = yield* Config.number("TIME_SCALE")
  const redisUrl = yield* Config.string("REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379"))
  const prefix = yield* Config.string("PREFIX")

  const all = yield* documents(total, 2026)
  const mine = all.filter((_, i) => i % workers === worker)
  const key = `anthropic/${MODEL}`
  const quota = limiterQuota(Simulator.defaultQuota, timeScale, mode === "shared" ? 1 : 1 / workers)
  const LimiterLive = mode === "shared"
    ? RateLimiter.layer({ quotas: { [key]: quota } }).pipe(
      Layer.provide(RedisStore.layer({ url: redisUrl, prefix, localShare: 1 / workers }))
    )
    : RateLimiter.layerMemory({ quotas: { [key]: quota } })
  // The provider's own count (count_tokens): exact from the first call, before any calibration.
  const GovernedLive = Governor.layer({ count: "provider" }).pipe(
    Layer.provide(Anthropic.layer({ apiKey: Redacted.make("sim-key"), baseURL: url })),
    Layer.provide(LimiterLive),
    Layer.provide(TokenEstimator.layer())
  )
  const start = yield* Clock.currentTimeMillis
  let rateLimited = 0
  const outcomes = yield* Effect.flatMap(
    LlmClient.LlmClient,
    (client) =>
      Effect.forEach(mine, (doc) =>
        client.complete(extract(MODEL, doc)).pipe(
          Effect.tapError((error) => Effect.sync(() => error._tag === "RateLimited" && rateLimited++)),
          Effect.either
        ), { concurrency: 16 })
  ).pipe(Effect.provide(GovernedLive), Effect.orDie)
  const seconds = ((yield* Clock.currentTimeMillis) - start) / 1000
  process.stdout.write(
    `${
      JSON.stringify({
        worker,
        documents: mine.length,
        succeeded: outcomes.filter((o) => o._tag === "Right").length,
        seconds,
        rateLimitedErrors: rateLimited
      })
    }\n`
  )
})

program.pipe(NodeRuntime.runMain)
