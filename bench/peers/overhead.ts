/**
 * Scenario 5: what a limiter costs per call, with a quota that never binds:
 * acquire then settle (or the tool's nearest: consume then reward), one call
 * at a time, in memory and on the same Redis server. "sluice take" is
 * Sluice's plain consume (`RateLimiter.take`: reserve and keep, no permit),
 * the like of @effect/experimental's consume.
 */
import * as ExperimentalRateLimiter from "@effect/experimental/RateLimiter"
import * as ExperimentalRedis from "@effect/experimental/RateLimiter/Redis"
import { LimiterStore, RateLimiter } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import Bottleneck from "bottleneck"
import { Effect, Layer } from "effect"
import { Redis as IORedis } from "ioredis"
import { RateLimiterMemory, RateLimiterRedis } from "rate-limiter-flexible"
import { percentile } from "./common.js"

interface Row {
  readonly name: string
  readonly store: "memory" | "redis"
  readonly opsPerSecond: number
  readonly p99Ms: number
}

/**
 * Times `n` sequential calls of `op`, after as many untimed ones. A path of
 * many functions is still being optimised by V8 through its first thousands
 * of calls, and the first contender of the process also pays for the Effect
 * runtime's own warm-up: measured in interleaved rounds of 20,000 calls,
 * Sluice's first round cost 10.7 µs of CPU a call and its later ones 2.6,
 * @effect/experimental's (run second) 4.6 then 1.8. With 2,000 untimed calls
 * (until 2026-12-03) the table measured that warm-up for whoever came first.
 */
const time = async (name: string, store: Row["store"], n: number, op: () => Promise<unknown>): Promise<Row> => {
  for (let i = 0; i < n; i++) await op()
  const latencies: Array<number> = []
  const started = performance.now()
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await op()
    latencies.push(performance.now() - t)
  }
  return { name, store, opsPerSecond: n / ((performance.now() - started) / 1000), p99Ms: percentile(latencies, 99) }
}

const huge = {
  requests: { limit: 1e12, per: "1 minute" },
  inputTokens: { limit: 1e15, per: "1 minute" },
  outputTokens: { limit: 1e15, per: "1 minute" }
} as const

const sluice = (store: Row["store"], n: number, redisUrl: string, prefix: string, form: "permit" | "take" = "permit") =>
  Effect.scoped(Effect.gen(function*() {
    const limiterStore = store === "memory"
      ? yield* LimiterStore.makeMemory
      : yield* RedisStore.make({ url: redisUrl, prefix })
    const limiter = yield* RateLimiter.make({ quotas: { "bench/model": huge }, maxInFlight: 1_000 }).pipe(
      Effect.provideService(LimiterStore.LimiterStore, limiterStore),
      Effect.orDie
    )
    const op = form === "take"
      ? () => Effect.runPromise(limiter.take("bench/model", { inputTokens: 500, outputTokens: 200 }))
      : () =>
        Effect.runPromise(
          limiter.withPermit("bench/model", { inputTokens: 500, outputTokens: 200 }, (permit) =>
            permit.settle({ inputTokens: 480, outputTokens: 150 }))
        )
    return yield* Effect.promise(() => time(form === "take" ? "sluice take" : "sluice", store, n, op))
  }))

const experimental = (store: Row["store"], n: number, redisUrl: string, prefix: string) => {
  const url = new URL(redisUrl)
  const storeLayer = store === "memory"
    ? ExperimentalRateLimiter.layerStoreMemory
    : ExperimentalRedis.layerStore({ host: url.hostname, port: Number(url.port || 6379), prefix })
  return Effect.gen(function*() {
    const limiter = yield* ExperimentalRateLimiter.RateLimiter
    const op = () =>
      Effect.runPromise(
        limiter.consume({ key: "bench", limit: 1e12, window: "1 minute", tokens: 500, algorithm: "token-bucket" })
      )
    return yield* Effect.promise(() => time("@effect/experimental", store, n, op))
  }).pipe(Effect.provide(ExperimentalRateLimiter.layer.pipe(Layer.provide(storeLayer))))
}

/** The scenario's table. */
export const overhead = (options: { readonly quick: boolean; readonly redisUrl: string }) =>
  Effect.gen(function*() {
    const nMemory = options.quick ? 2_000 : 20_000
    const nRedis = options.quick ? 500 : 5_000
    const prefix = `bench-overhead-${process.pid}-${Date.now()}`
    const url = new URL(options.redisUrl)
    const redis = new IORedis({ host: url.hostname, port: Number(url.port || 6379), lazyConnect: false })
    const rows: Array<Row> = []
    rows.push(yield* sluice("memory", nMemory, options.redisUrl, prefix))
    rows.push(yield* sluice("memory", nMemory, options.redisUrl, prefix, "take"))
    rows.push(
      yield* Effect.promise(() => {
        const flexible = new RateLimiterMemory({ points: 1e12, duration: 60 })
        return time("rate-limiter-flexible", "memory", nMemory, async () => {
          await flexible.consume("bench", 500)
          await flexible.reward("bench", 20)
        })
      })
    )
    rows.push(
      yield* Effect.promise(() => {
        const limiter = new Bottleneck({ reservoir: 1e12 })
        // bottleneck schedules on a timer (about 200 a second one at a time): a twentieth of the calls measures it as well.
        return time("bottleneck", "memory", Math.max(100, nMemory / 20), () =>
          limiter.schedule({ weight: 1 }, () =>
            Promise.resolve()))
      })
    )
    rows.push(yield* experimental("memory", nMemory, options.redisUrl, prefix))
    rows.push(yield* sluice("redis", nRedis, options.redisUrl, `${prefix}-sluice`))
    rows.push(yield* sluice("redis", nRedis, options.redisUrl, `${prefix}-sluice-take`, "take"))
    rows.push(
      yield* Effect.promise(() => {
        const flexible = new RateLimiterRedis({
          storeClient: redis,
          points: 1e12,
          duration: 60,
          keyPrefix: `${prefix}-rlf`
        })
        return time("rate-limiter-flexible", "redis", nRedis, async () => {
          await flexible.consume("bench", 500)
          await flexible.reward("bench", 20)
        })
      })
    )
    rows.push(
      yield* Effect.promise(async () => {
        const limiter = new Bottleneck({
          reservoir: 1e12,
          id: `${prefix}-bottleneck`,
          datastore: "ioredis",
          clearDatastore: true,
          Redis: IORedis,
          clientOptions: { host: url.hostname, port: Number(url.port || 6379) }
        })
        await limiter.ready()
        const row = await time("bottleneck", "redis", Math.max(100, nRedis / 5), () =>
          limiter.schedule({ weight: 1 }, () =>
            Promise.resolve()))
        await limiter.disconnect()
        return row
      })
    )
    rows.push(yield* experimental("redis", nRedis, options.redisUrl, `${prefix}-exp`))
    // Clean up every key this scenario wrote.
    yield* Effect.promise(async () => {
      const keys = await redis.keys(`*${prefix}*`)
      if (keys.length > 0) {
        await redis.del(...keys)
      }
      await redis.quit()
    })
    const lines = [
      "| limiter | store | calls per second | vs Sluice | p99 latency |",
      "|---|---|---|---|---|"
    ]
    for (const row of rows) {
      const base = rows.find((r) =>
        r.name === "sluice" && r.store === row.store
      )!
      lines.push(
        `| ${row.name} | ${row.store} | ${Math.round(row.opsPerSecond).toLocaleString("en-US")} | ${
          (row.opsPerSecond / base.opsPerSecond).toFixed(2)
        }× | ${row.p99Ms.toFixed(3)} ms |`
      )
    }
    return `${lines.join("\n")}\n\n${nMemory.toLocaleString("en-US")} calls in memory and ${
      nRedis.toLocaleString("en-US")
    } on Redis, one at a time, each after as many untimed. ` +
      "Sluice's operation (\"sluice\", the base of the ratios) reserves three dimensions and settles them (acquire + settle); " +
      "\"sluice take\" reserves them and keeps them (no permit, nothing to settle or release); rate-limiter-flexible's is consume + reward (one dimension); " +
      "bottleneck's is one scheduled no-op job (a twentieth as many calls in memory, a fifth on Redis: it is timer-paced); @effect/experimental's is one consume (it cannot refund)."
  })
