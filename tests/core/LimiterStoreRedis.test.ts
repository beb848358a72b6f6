import { describe, expect, it } from "@effect/vitest"
import { Cost, Quota } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import { Duration, Effect, Metric, Schedule } from "effect"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { createServer } from "node:net"
import { afterAll } from "vitest"
import { limiterStoreSuite } from "./suites/limiterStore.js"

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `sluice-test-${process.pid}-${Date.now()}`
let keys = 0

/** A free port on 127.0.0.1. */
const freePort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })
)

/** A redis-server of the test's own on `port`, killed with the scope. */
const redisServer = (port: number) =>
  Effect.acquireRelease(
    Effect.sync(() => spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })),
    (child) => Effect.sync(() => child.kill("SIGKILL"))
  )

afterAll(async () => {
  const redis = new Redis(REDIS_URL)
  const found = await redis.keys(`${prefix}*`)
  if (found.length > 0) await redis.del(...found)
  redis.disconnect()
})

const store = (options: Partial<RedisStore.Options> = {}) =>
  RedisStore.make({ url: REDIS_URL, prefix, idleTtl: "1 minute", ...options })

limiterStoreSuite("Redis", () => RedisStore.layer({ url: REDIS_URL, prefix, idleTtl: "1 minute" }), () => `suite/${++keys}`)

const slow = Quota.decodeSync({ requests: { limit: 5, per: "1 hour" }, inputTokens: { limit: 1_000_000, per: "1 hour" } })

describe("LimiterStore on Redis, several processes", () => {
  it.scoped("independent clients hammering one key never admit more than the quota", () =>
    Effect.gen(function*() {
      const key = `hammer/${++keys}`
      const clients = yield* Effect.all(Array.from({ length: 4 }, () => store()))
      yield* Effect.forEach(clients, (client) => client.define(key, slow))
      const answers = yield* Effect.all(
        clients.flatMap((client) => Array.from({ length: 25 }, () => client.reserve(key, Cost.amounts({ inputTokens: 10 }), { headroom: 0 }))),
        { concurrency: "unbounded" }
      )
      // five requests an hour: whatever the interleaving, five grants in total
      expect(answers.filter((answer) => answer._tag === "Granted").length).toBe(5)
      expect(answers.filter((answer) => answer._tag === "Wait").every((answer) => answer._tag === "Wait" && answer.reason === "requests")).toBe(true)
    }))

  it.scoped("a 429 pause set by one client holds the others", () =>
    Effect.gen(function*() {
      const key = `pause/${++keys}`
      const [a, b] = yield* Effect.all([store(), store()])
      yield* a!.define(key, slow)
      yield* b!.define(key, slow)
      yield* a!.observe(key, { dimensions: {}, retryAfter: Duration.seconds(30) })
      const answer = yield* b!.reserve(key, Cost.amounts({}), { headroom: 0 })
      expect(answer._tag).toBe("Wait")
      if (answer._tag === "Wait") {
        expect(answer.reason).toBe("paused")
        expect(Duration.toMillis(answer.delay)).toBeGreaterThan(29_000)
      }
    }))

  it.live("a Redis that hangs is timed out, by the store's own client and around a client given without a command timeout, and the local share answers", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      yield* redisServer(port)
      // Commands queue until it connects: the first ping answers once the server is up.
      const admin = yield* Effect.acquireRelease(Effect.sync(() => new Redis(port, "127.0.0.1", { retryStrategy: () => 50 })), (redis) => Effect.sync(() => redis.disconnect()))
      yield* Effect.tryPromise(() => admin.ping()).pipe(Effect.timeout("5 seconds"))
      const given = yield* Effect.acquireRelease(Effect.sync(() => new Redis(port, "127.0.0.1", { enableOfflineQueue: false, maxRetriesPerRequest: 0 })), (redis) => Effect.sync(() => redis.disconnect()))
      yield* Effect.retry(Effect.tryPromise(() => given.ping()), Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
      const own = yield* RedisStore.make({ url: `redis://127.0.0.1:${port}`, prefix, localShare: 0.1, timeout: "200 millis" })
      const around = yield* RedisStore.make({ client: given, prefix, localShare: 0.1, timeout: "200 millis" })
      const quota = Quota.decodeSync({ requests: { limit: 100, per: "1 hour" } })
      for (const [name, store] of [["own", own], ["given", around]] as const) {
        const key = `hang/${name}/${++keys}`
        yield* store.define(key, quota)
        expect((yield* store.reserve(key, Cost.amounts({}), { headroom: 0 }))._tag).toBe("Granted")
        // Every client's commands now wait 1.5 s at the server: the store gives up after its 200 ms.
        yield* Effect.tryPromise(() => admin.call("CLIENT", "PAUSE", "1500", "ALL"))
        const started = Date.now()
        const answers = yield* Effect.all(Array.from({ length: 12 }, () => store.reserve(key, Cost.amounts({}), { headroom: 0 })), { concurrency: "unbounded" })
        expect({ name, waited: Date.now() - started < 1_000 }).toEqual({ name, waited: true })
        // the local tenth of the quota: 10 of 100 requests
        expect(answers.filter((answer) => answer._tag === "Granted").length).toBe(10)
        // The admin is paused too: its UNPAUSE answers when the pause ends, and the next store starts on a live server.
        yield* Effect.tryPromise(() => admin.call("CLIENT", "UNPAUSE"))
      }
    }).pipe(Effect.scoped), 30_000)

  it.live("when Redis stops the store falls back to its local share, and returns when Redis answers again", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const startRedis = redisServer(port)
      const answers = Effect.flatMap(Effect.promise(() => new Redis(port, "127.0.0.1", { lazyConnect: true }).connect().then(() => true, () => false)), (ok) => ok ? Effect.void : Effect.fail("not yet"))
      const key = `outage/${++keys}`
      const localQuota = Quota.decodeSync({ requests: { limit: 100, per: "1 hour" } })
      const toLocal = Metric.tagged(RedisStore.fallbacks, "to", "local")
      const toRedis = Metric.tagged(RedisStore.fallbacks, "to", "redis")
      const localBefore = (yield* Metric.value(toLocal)).count
      const redisBefore = (yield* Metric.value(toRedis)).count
      // Redis up: the store works on it.
      const server = yield* redisServer(port)
      yield* Effect.retry(answers, Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
      const s = yield* RedisStore.make({ url: `redis://127.0.0.1:${port}`, prefix, localShare: 0.1, timeout: "300 millis" })
      yield* s.define(key, localQuota)
      yield* Effect.retry(
        Effect.flatMap(s.reserve(key, Cost.amounts({}), { headroom: 0 }), (answer) => answer._tag === "Granted" ? Effect.void : Effect.fail("wait")),
        Schedule.spaced("50 millis").pipe(Schedule.upTo("3 seconds"))
      )
      // Redis stops: answers come from the local tenth of the quota (10 requests), without hanging.
      server.kill("SIGKILL")
      yield* Effect.sleep("200 millis")
      const during = yield* Effect.all(Array.from({ length: 15 }, () => s.reserve(key, Cost.amounts({}), { headroom: 0 }))).pipe(Effect.timeout("10 seconds"))
      expect(during.filter((answer) => answer._tag === "Granted").length).toBe(10)
      expect((yield* Metric.value(toLocal)).count - localBefore).toBe(1)
      // Redis is back: the store returns to it.
      yield* startRedis
      yield* Effect.retry(answers, Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
      yield* Effect.retry(
        Effect.flatMap(s.state(key), () => Effect.flatMap(Metric.value(toRedis), (value) => value.count > redisBefore ? Effect.void : Effect.fail("still local"))),
        Schedule.spaced("100 millis").pipe(Schedule.upTo("8 seconds"))
      )
      expect((yield* Metric.value(toRedis)).count - redisBefore).toBe(1)
    }).pipe(Effect.scoped), 30_000)
})

