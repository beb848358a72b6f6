/**
 * Scenario 5 on Redis, taken apart: CPU per call and calls a second, one call at
 * a time, in interleaved rounds (the least CPU and the best rate of the rounds,
 * so that a busy host disturbs the comparison less):
 * - rate-limiter-flexible's consume + reward;
 * - the store's script called directly with ioredis (one round trip, no Effect);
 * - the Redis store's reserve + shared settle;
 * - the Redis store's reserve + observe of a response's headers (two scripts: the Governor's pair);
 * - the limiter's acquire + settle on the Redis store (scenario 5's operation).
 * It also prints the script's server time per call (`INFO commandstats`).
 *
 *   npx tsx --conditions=@sluice/source bench/redis-store-overhead.ts [calls] [rounds]
 */
import { Cost, LimiterStore, Quota, RateLimiter } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import { Clock, Effect } from "effect"
import { Redis as IORedis } from "ioredis"
import { RateLimiterRedis } from "rate-limiter-flexible"

const calls = Number(process.argv[2] ?? 2_000)
const rounds = Number(process.argv[3] ?? 4)
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `bench-redis-store-${process.pid}`
const huge = {
  requests: { limit: 1e12, per: "1 minute" },
  inputTokens: { limit: 1e15, per: "1 minute" },
  outputTokens: { limit: 1e15, per: "1 minute" }
} as const

const best: Record<string, { cpu: number; rate: number; serverUs: number }> = {}

const time = async (admin: IORedis, label: string, op: () => Promise<unknown>) => {
  for (let i = 0; i < 200; i++) await op()
  await admin.config("RESETSTAT")
  const started = performance.now()
  const before = process.cpuUsage()
  for (let i = 0; i < calls; i++) await op()
  const used = process.cpuUsage(before)
  const rate = calls / ((performance.now() - started) / 1_000)
  const stats = await admin.info("commandstats")
  const evalsha = stats.match(/cmdstat_evalsha:calls=(\d+),usec=(\d+)/)
  const serverUs = evalsha ? Number(evalsha[2]) / calls : 0
  const cpu = (used.user + used.system) / calls
  const previous = best[label]
  best[label] = {
    cpu: Math.min(cpu, previous?.cpu ?? Infinity),
    rate: Math.max(rate, previous?.rate ?? 0),
    serverUs: Math.min(serverUs, previous?.serverUs ?? Infinity)
  }
}

const program = Effect.gen(function*() {
  const admin = yield* Effect.acquireRelease(
    Effect.sync(() => new IORedis(url)),
    (redis) =>
      Effect.promise(async () => {
        const keys = await redis.keys(`${prefix}*`)
        if (keys.length > 0) await redis.del(...keys)
        redis.disconnect()
      })
  )
  const raw = yield* Effect.acquireRelease(
    Effect.sync(() => new IORedis(url)),
    (redis) => Effect.sync(() => redis.disconnect())
  )
  const store = yield* RedisStore.make({ url, prefix })
  const quota = Quota.decodeSync(huge)
  yield* store.define("store", quota)
  yield* store.define("observed", quota)
  const limiter = yield* RateLimiter.make({ quotas: { limiter: huge }, maxInFlight: 1_000 }).pipe(
    Effect.provideService(LimiterStore.LimiterStore, store),
    Effect.orDie
  )
  raw.defineCommand("sluiceLimiter", { numberOfKeys: 3, lua: RedisStore.script })
  const direct = raw as unknown as {
    sluiceLimiterBuffer: (...args: ReadonlyArray<string | number>) => Promise<Buffer>
  }
  const definition = JSON.stringify(RedisStore.definitionOf(quota))
  const amounts = Cost.amounts({ inputTokens: 500, outputTokens: 200 })
  const flexible = new RateLimiterRedis({ storeClient: raw, points: 1e12, duration: 60, keyPrefix: `${prefix}-rlf` })
  const ops: Record<string, () => Promise<unknown>> = {
    "rate-limiter-flexible": async () => {
      await flexible.consume("bench", 500)
      await flexible.reward("bench", 20)
    },
    "script, ioredis only": () =>
      direct.sluiceLimiterBuffer(
        `${prefix}:limiter:direct`,
        `${prefix}:limiter:direct:definition`,
        `${prefix}:limiter:direct:cold`,
        "reserve",
        "600000",
        definition,
        "86400000",
        // The previous call's settlement, carried (requests, inputTokens, outputTokens, tokens).
        0,
        -20,
        -50,
        0,
        amounts.requests,
        amounts.inputTokens,
        amounts.outputTokens,
        amounts.tokens,
        0,
        0
      ),
    "store reserve + settle": () =>
      Effect.runPromise(
        Effect.zipRight(
          store.reserve("store", amounts, { headroom: 0 }),
          store.adjust("store", { inputTokens: -20, outputTokens: -50 }, "shared")
        )
      ),
    // A response's headers folded in (read 2 ms before): what the Governor does after each call.
    "store reserve + observe": () =>
      Effect.runPromise(
        Effect.zipRight(
          store.reserve("observed", amounts, { headroom: 0 }),
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            store.observe("observed", {
              dimensions: { inputTokens: { limit: 1e15, remaining: 1e15 - 1_000 } },
              observedAt: now - 2
            }))
        )
      ),
    "limiter acquire + settle": () =>
      Effect.runPromise(
        limiter.withPermit("limiter", { inputTokens: 500, outputTokens: 200 }, (permit) =>
          permit.settle({ inputTokens: 480, outputTokens: 150 }))
      )
  }
  yield* Effect.promise(async () => {
    for (let round = 0; round < rounds; round++) {
      for (const [label, op] of Object.entries(ops)) await time(admin, label, op)
    }
  })
  console.log(`${calls} calls per round, ${rounds} rounds, Node ${process.version}`)
  console.log("| operation | calls a second (best) | client CPU per call (least) | script time on Redis per call |")
  console.log("|---|---|---|---|")
  for (const [label, row] of Object.entries(best)) {
    console.log(
      `| ${label} | ${Math.round(row.rate).toLocaleString("en-US")} | ${row.cpu.toFixed(0)} µs | ${
        row.serverUs > 0 ? `${row.serverUs.toFixed(0)} µs` : "–"
      } |`
    )
  }
})

void Effect.runPromise(Effect.scoped(program))
