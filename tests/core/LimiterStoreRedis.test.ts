import { describe, expect, it } from "@effect/vitest"
import { Cost, LimiterStore, Quota } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import { Clock, Duration, Effect, Metric, Schedule, TestClock } from "effect"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { createServer, type Server } from "node:net"
import { afterAll } from "vitest"
import { limiterStoreCases, limiterStoreSuite } from "./suites/limiterStore.js"

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
    Effect.sync(() =>
      spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: "ignore"
      })
    ),
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

// Strict: the conformance run fails when Redis does not answer instead of passing on the local fallback.
limiterStoreSuite(
  "Redis",
  () => RedisStore.layer({ url: REDIS_URL, prefix, idleTtl: "1 minute", strict: true }),
  () => `suite/${++keys}`,
  { live: true }
)

const slow = Quota.decodeSync({
  requests: { limit: 5, per: "1 hour" },
  inputTokens: { limit: 1_000_000, per: "1 hour" }
})

describe("LimiterStore on Redis, several processes", () => {
  it.scoped("independent clients hammering one key never admit more than the quota", () =>
    Effect.gen(function*() {
      const key = `hammer/${++keys}`
      const clients = yield* Effect.all(Array.from({ length: 4 }, () => store()))
      yield* Effect.forEach(clients, (client) => client.define(key, slow))
      const answers = yield* Effect.all(
        clients.flatMap((client) =>
          Array.from({ length: 25 }, () => client.reserve(key, Cost.amounts({ inputTokens: 10 }), { headroom: 0 }))
        ),
        { concurrency: "unbounded" }
      )
      // five requests an hour: whatever the interleaving, five grants in total
      expect(answers.filter((answer) => answer._tag === "Granted").length).toBe(5)
      expect(
        answers.filter((answer) => answer._tag === "Wait").every((answer) =>
          answer._tag === "Wait" && answer.reason === "requests"
        )
      ).toBe(true)
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

  it.live(
    "a Redis that hangs is timed out, by the store's own client and around a client given without a command timeout, and the local share answers",
    () =>
      Effect.gen(function*() {
        const port = yield* freePort
        yield* redisServer(port)
        // Commands queue until it connects: the first ping answers once the server is up.
        const admin = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis(port, "127.0.0.1", { retryStrategy: () => 50 })),
          (redis) => Effect.sync(() => redis.disconnect())
        )
        yield* Effect.tryPromise(() => admin.ping()).pipe(Effect.timeout("5 seconds"))
        const given = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis(port, "127.0.0.1", { enableOfflineQueue: false, maxRetriesPerRequest: 0 })),
          (redis) => Effect.sync(() => redis.disconnect())
        )
        yield* Effect.retry(
          Effect.tryPromise(() => given.ping()),
          Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds"))
        )
        const own = yield* RedisStore.make({
          url: `redis://127.0.0.1:${port}`,
          prefix,
          localShare: 0.1,
          timeout: "200 millis"
        })
        const around = yield* RedisStore.make({ client: given, prefix, localShare: 0.1, timeout: "200 millis" })
        const quota = Quota.decodeSync({ requests: { limit: 100, per: "1 hour" } })
        for (const [name, store] of [["own", own], ["given", around]] as const) {
          const key = `hang/${name}/${++keys}`
          yield* store.define(key, quota)
          expect((yield* store.reserve(key, Cost.amounts({}), { headroom: 0 }))._tag).toBe("Granted")
          // Every client's commands now wait 1.5 s at the server: the store gives up after its 200 ms.
          yield* Effect.tryPromise(() => admin.call("CLIENT", "PAUSE", "1500", "ALL"))
          const started = Date.now()
          const answers = yield* Effect.all(
            Array.from({ length: 12 }, () => store.reserve(key, Cost.amounts({}), { headroom: 0 })),
            { concurrency: "unbounded" }
          )
          expect({ name, waited: Date.now() - started < 1_000 }).toEqual({ name, waited: true })
          // the local tenth of the quota: 10 of 100 requests
          expect(answers.filter((answer) => answer._tag === "Granted").length).toBe(10)
          // The admin is paused too: its UNPAUSE answers when the pause ends, and the next store starts on a live server.
          yield* Effect.tryPromise(() => admin.call("CLIENT", "UNPAUSE"))
        }
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "when Redis stops the store falls back to its local share, and returns when Redis answers again",
    () =>
      Effect.gen(function*() {
        const port = yield* freePort
        const startRedis = redisServer(port)
        const answers = Effect.flatMap(
          Effect.promise(() =>
            new Redis(port, "127.0.0.1", { lazyConnect: true }).connect().then(() => true, () => false)
          ),
          (ok) => ok ? Effect.void : Effect.fail("not yet")
        )
        const key = `outage/${++keys}`
        const localQuota = Quota.decodeSync({ requests: { limit: 100, per: "1 hour" } })
        const toLocal = Metric.tagged(RedisStore.fallbacks, "to", "local")
        const toRedis = Metric.tagged(RedisStore.fallbacks, "to", "redis")
        const localBefore = (yield* Metric.value(toLocal)).count
        const redisBefore = (yield* Metric.value(toRedis)).count
        // Redis up: the store works on it.
        const server = yield* redisServer(port)
        yield* Effect.retry(answers, Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
        const s = yield* RedisStore.make({
          url: `redis://127.0.0.1:${port}`,
          prefix,
          localShare: 0.1,
          timeout: "300 millis"
        })
        yield* s.define(key, localQuota)
        yield* Effect.retry(
          Effect.flatMap(
            s.reserve(key, Cost.amounts({}), { headroom: 0 }),
            (answer) => answer._tag === "Granted" ? Effect.void : Effect.fail("wait")
          ),
          Schedule.spaced("50 millis").pipe(Schedule.upTo("3 seconds"))
        )
        // Redis stops: answers come from the local tenth of the quota (10 requests), without hanging.
        server.kill("SIGKILL")
        yield* Effect.sleep("200 millis")
        const during = yield* Effect.all(
          Array.from({ length: 15 }, () => s.reserve(key, Cost.amounts({}), { headroom: 0 }))
        ).pipe(Effect.timeout("10 seconds"))
        expect(during.filter((answer) => answer._tag === "Granted").length).toBe(10)
        expect((yield* Metric.value(toLocal)).count - localBefore).toBe(1)
        // Redis is back: the store returns to it.
        yield* startRedis
        yield* Effect.retry(answers, Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
        yield* Effect.retry(
          Effect.flatMap(
            s.state(key),
            () =>
              Effect.flatMap(Metric.value(toRedis), (value) =>
                value.count > redisBefore ? Effect.void : Effect.fail("still local"))
          ),
          Schedule.spaced("100 millis").pipe(Schedule.upTo("8 seconds"))
        )
        expect((yield* Metric.value(toRedis)).count - redisBefore).toBe(1)
      }).pipe(Effect.scoped),
    30_000
  )
})

/** A client of the test's own on the shared Redis: `disconnect()` takes Redis away from the store, `connect()` brings it back. */
const ownClient = Effect.acquireRelease(
  Effect.promise(async () => {
    const client = new Redis(REDIS_URL, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1_000,
      lazyConnect: true,
      retryStrategy: () => null
    })
    client.on("error", () => {})
    await client.connect()
    return client
  }),
  (client) => Effect.sync(() => client.disconnect())
)

/** An admin connection to the shared Redis, to inspect and delete the store's keys. */
const admin = Effect.acquireRelease(
  Effect.sync(() => new Redis(REDIS_URL)),
  (redis) => Effect.sync(() => redis.disconnect())
)

/** Takes Redis away from a client of our own, once the connection has really ended. */
const takeAway = (client: Redis) =>
  Effect.async<void>((resume) => {
    client.once("end", () => resume(Effect.void))
    client.disconnect()
  })

const entryOf = (key: string) => `${prefix}:limiter:${key}`

const granted = (answers: ReadonlyArray<LimiterStore.Reservation>) =>
  answers.filter((answer) => answer._tag === "Granted").length

const reserveTimes = (s: LimiterStore.LimiterStore["Type"], key: string, times: number) =>
  Effect.all(Array.from({ length: times }, () => s.reserve(key, Cost.amounts({}), { headroom: 0 })))

describe("LimiterStore on Redis: state that expires comes back right", () => {
  it.scoped("a key discovered from headers keeps its learned limit after its entry expires, in this process and in one that never saw the headers", () =>
    Effect.gen(function*() {
      const redis = yield* admin
      const key = `learned/${++keys}`
      const a = yield* store()
      yield* a.observe(key, { dimensions: { requests: { limit: 5, remaining: 5 } } })
      yield* Effect.promise(() => redis.del(entryOf(key)))
      expect(granted(yield* reserveTimes(a, key, 8))).toBe(5)
      yield* Effect.promise(() => redis.del(entryOf(key)))
      const b = yield* store()
      expect(granted(yield* reserveTimes(b, key, 8))).toBe(5)
    }))

  it.scoped("a pause longer than idleTtl, and a bucket that refills slower, keep the entry until they end", () =>
    Effect.gen(function*() {
      const redis = yield* admin
      const paused = `long-pause/${++keys}`
      const s = yield* store({ idleTtl: "1 second" })
      yield* s.define(paused, slow)
      yield* s.pause(paused, Duration.minutes(5))
      yield* s.reserve(paused, Cost.amounts({}), { headroom: 0 })
      expect(yield* Effect.promise(() => redis.pttl(entryOf(paused)))).toBeGreaterThan(4 * 60_000)
      // Five requests an hour: one taken refills in twelve minutes.
      const drained = `slow-refill/${++keys}`
      yield* s.define(drained, slow)
      yield* s.reserve(drained, Cost.amounts({}), { headroom: 0 })
      expect(yield* Effect.promise(() => redis.pttl(entryOf(drained)))).toBeGreaterThan(11 * 60_000)
    }))

  /** Writes an entry in the layout of an earlier version (one key): JSON, or MessagePack (encoded by Redis's own cmsgpack). */
  const writeOld = (redis: Redis, key: string, entry: unknown, encoding: "JSON" | "MessagePack") =>
    Effect.promise(() =>
      encoding === "JSON"
        ? redis.set(entryOf(key), JSON.stringify(entry))
        : redis.eval(
          "redis.call('SET', KEYS[1], cmsgpack.pack(cjson.decode(ARGV[1])))",
          1,
          entryOf(key),
          JSON.stringify(entry)
        )
    )

  for (const encoding of ["JSON", "MessagePack"] as const) {
    it.scoped(`an entry an earlier version wrote as ${encoding} in one key is read with its exact levels and written back in the split layout`, () =>
      Effect.gen(function*() {
        const redis = yield* admin
        const key = `old-entry-${encoding}/${++keys}`
        const [seconds, micros] = yield* Effect.promise(() => redis.time())
        const now = Number(seconds) * 1000 + Number(micros) / 1000
        // A burst of 1,000 of a stated 2,000 an hour, 100 left: the bucket as the one-key layout held it.
        const bucket = { c: 1_000, r: 2_000 / 3_600_000, v: 100, u: now }
        yield* writeOld(redis, key, { b: { inputTokens: bucket }, l: { inputTokens: 2_000 }, p: -1 }, encoding)
        const s = yield* store()
        expect((yield* s.reserve(key, Cost.amounts({ inputTokens: 200 }), { headroom: 0 }))._tag).toBe("Wait")
        const granted = yield* s.reserve(key, Cost.amounts({ inputTokens: 60 }), { headroom: 0 })
        expect(granted._tag).toBe("Granted")
        if (granted._tag === "Granted") expect(Math.abs(granted.levels.inputTokens!.level - 40)).toBeLessThan(1)
        const raw = yield* Effect.promise(() => redis.getBuffer(entryOf(key)))
        // The split layout's marker byte; the stated limit moved to the cold key.
        expect(raw?.[0]).toBe(1)
        expect(yield* Effect.promise(() => redis.exists(`${entryOf(key)}:cold`))).toBe(1)
        expect(yield* Effect.promise(() => redis.pttl(entryOf(key)))).toBeGreaterThan(59_000)
        // The stated limit (above the bucket's capacity here) was kept: a lower one stated by the provider lowers from it.
        const observed = yield* s.observe(key, { dimensions: { inputTokens: { limit: 1_500 } } })
        expect(observed.lowered).toEqual([{ dimension: "inputTokens", from: 2_000, to: 1_500 }])
      }))

    it.scoped(`the grant history of an entry an earlier version wrote as ${encoding} still projects an old snapshot, across a group that closes`, () =>
      Effect.gen(function*() {
        const redis = yield* admin
        const key = `old-history-${encoding}/${++keys}`
        const [seconds, micros] = yield* Effect.promise(() => redis.time())
        const now = Number(seconds) * 1000 + Number(micros) / 1000
        // 10,000 an hour (1/360 a ms), 5,000 left; granted 300 from 20 s to 15 s ago, then 200 from 10 s to 9 s ago.
        const bucket = { c: 10_000, r: 10_000 / 3_600_000, v: 5_000, u: now }
        const history = {
          s: now - 20_000,
          b: 0,
          g: [[now - 20_000, 100, now - 15_000, 300], [now - 10_000, 400, now - 9_000, 500]]
        }
        yield* writeOld(
          redis,
          key,
          { b: { inputTokens: bucket }, l: { inputTokens: 10_000 }, p: -1, g: { inputTokens: history } },
          encoding
        )
        const s = yield* store()
        // The last group (10 s old) closes into the cold key as this grant opens a new one.
        expect((yield* s.reserve(key, Cost.amounts({ inputTokens: 50 }), { headroom: 0 }))._tag).toBe("Granted")
        // Read 9.5 s ago, halfway through the closed group: 1,000 then, plus 9.5 s of refill (26.4), less the
        // 100 granted since (50 of the closed group, interpolated, and the 50 just now); the ms that passed since
        // the entry was written move it by a few tokens at most.
        const observed = yield* s.observe(key, {
          dimensions: { inputTokens: { remaining: 1_000 } },
          observedAt: (yield* Clock.currentTimeMillis) - 9_500
        })
        expect(Math.abs(observed.levels.inputTokens!.level - (1_000 + 9_500 / 360 - 100))).toBeLessThan(15)
      }))
  }
})

describe("LimiterStore on Redis: fallback", () => {
  const quota = Quota.decodeSync({ inputTokens: { limit: 1_000, per: "1 hour" } })
  const near = (actual: number | undefined, expected: number) => {
    expect(actual).toBeDefined()
    expect(Math.abs(actual! - expected)).toBeLessThan(5)
  }

  it.scoped("a reservation is settled where it was granted: a local one locally after Redis is back, a shared one never into the local share", () =>
    Effect.gen(function*() {
      const client = yield* ownClient
      const s = yield* RedisStore.make({ client, prefix, localShare: 0.5 })
      const key = `origin/${++keys}`
      yield* s.define(key, quota)
      const shared = yield* s.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })
      expect(shared).toMatchObject({ _tag: "Granted", origin: "shared" })
      // Redis goes away: the local half of the quota answers.
      yield* takeAway(client)
      const local = yield* s.reserve(key, Cost.amounts({ inputTokens: 200 }), { headroom: 0 })
      expect(local).toMatchObject({ _tag: "Granted", origin: "local" })
      // The shared reservation's refund cannot reach Redis: it is dropped, not put into the local share.
      yield* s.adjust(key, { inputTokens: -400 }, "shared")
      near((yield* s.state(key)).levels.inputTokens?.level, 300)
      // Redis is back; once the probe finds it, the store answers from it again.
      yield* Effect.promise(() => client.connect())
      yield* TestClock.adjust("1 minute")
      near((yield* s.state(key)).levels.inputTokens?.level, 600)
      // The local reservation's refund goes to the local share, not to Redis.
      yield* s.adjust(key, { inputTokens: -200 }, "local")
      near((yield* s.state(key)).levels.inputTokens?.level, 600)
    }))

  it.scoped("a key discovered from headers has a local share when Redis goes down, and a limit learned while it is down is learned as the share", () =>
    Effect.gen(function*() {
      const client = yield* ownClient
      const s = yield* RedisStore.make({ client, prefix, localShare: 0.1 })
      const before = `discovered-before/${++keys}`
      const during = `discovered-during/${++keys}`
      yield* s.observe(before, { dimensions: { requests: { limit: 100, remaining: 100 } } })
      yield* takeAway(client)
      expect(granted(yield* reserveTimes(s, before, 15))).toBe(10)
      yield* s.observe(during, { dimensions: { requests: { limit: 100, remaining: 100 } } })
      expect(granted(yield* reserveTimes(s, during, 15))).toBe(10)
    }))

  /** A server that accepts connections and never answers, a client on it, and how many scripts it was sent. */
  const blackHole = Effect.gen(function*() {
    let received = ""
    const port = yield* Effect.acquireRelease(
      Effect.async<readonly [number, Server]>((resume) => {
        const server = createServer((socket) => {
          socket.on("data", (chunk) => (received += chunk.toString()))
        })
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed([typeof address === "object" && address !== null ? address.port : 0, server]))
        })
      }),
      ([, server]) => Effect.sync(() => server.close())
    ).pipe(Effect.map(([port]) => port))
    const client = yield* Effect.acquireRelease(
      Effect.promise(async () => {
        const client = new Redis(port, "127.0.0.1", {
          enableReadyCheck: false,
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          commandTimeout: 100,
          lazyConnect: true
        })
        client.on("error", () => {})
        await client.connect()
        return client
      }),
      (client) => Effect.sync(() => client.disconnect())
    )
    // Scripts are sent as EVAL or EVALSHA.
    return { client, sent: () => (received.match(/\r\neval(sha)?\r\n/gi) ?? []).length }
  })

  it.scoped("a Redis that hangs costs one timeout, not one per operation: the circuit answers locally and probes one operation at a time", () =>
    Effect.gen(function*() {
      const { client, sent } = yield* blackHole
      const s = yield* RedisStore.make({ client, prefix, localShare: 0.1, probe: Schedule.spaced("10 seconds") })
      const key = `hang-circuit/${++keys}`
      yield* s.define(key, Quota.decodeSync({ requests: { limit: 100, per: "1 hour" } }))
      // The define timed out; twenty reservations then go to the local tenth without asking Redis.
      expect(granted(yield* reserveTimes(s, key, 20))).toBe(10)
      expect(sent()).toBe(1)
      // Ten seconds on, one operation probes Redis; those beside it answer locally.
      yield* TestClock.adjust("10 seconds")
      yield* Effect.all(Array.from({ length: 5 }, () => s.state(key)), { concurrency: "unbounded" })
      expect(sent()).toBe(2)
    }))

  it.scoped("operations in flight when Redis starts hanging open the circuit once: the first probe comes after the schedule's first delay", () =>
    Effect.gen(function*() {
      const { client, sent } = yield* blackHole
      const s = yield* RedisStore.make({ client, prefix, localShare: 0.1, probe: Schedule.exponential("1 second") })
      const key = `hang-burst/${++keys}`
      yield* Effect.all(Array.from({ length: 12 }, () => s.state(key)), { concurrency: "unbounded" })
      expect(sent()).toBe(12)
      yield* TestClock.adjust("1 second")
      yield* s.state(key)
      expect(sent()).toBe(13)
    }))
})

describe("LimiterStore on Redis: the conformance run cannot pass without Redis", () => {
  it.live("every case of the suite fails against a strict store on a closed port", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const s = yield* RedisStore.make({
        url: `redis://127.0.0.1:${port}`,
        prefix,
        strict: true,
        timeout: "200 millis"
      })
      for (const test of limiterStoreCases) {
        const error = yield* Effect.flip(
          Effect.provideService(
            test.run({
              key: () => `closed/${++keys}`,
              elapse: () => Effect.void
            }),
            LimiterStore.LimiterStore,
            s
          )
        )
        expect({ name: test.name, tag: (error as { _tag?: string })._tag }).toEqual({
          name: test.name,
          tag: "LimiterStoreError"
        })
      }
    }).pipe(Effect.scoped), 30_000)
})

describe("LimiterStore on Redis: one round trip per call", () => {
  const quota = Quota.decodeSync({ inputTokens: { limit: 1_000, per: "1 hour" } })
  const near = (actual: number | undefined, expected: number) => {
    expect(actual).toBeDefined()
    expect(Math.abs(actual! - expected)).toBeLessThan(5)
  }

  /** No carried settlement: a zero change in each dimension. */
  const none = "0,0,0,0"

  /** A client of our own that records each script it sends: the operation and the settlement it carries. */
  const countingClient = Effect.map(ownClient, (client) => {
    const scripts: Array<{ readonly op: string; readonly carried: string }> = []
    const send = client.sendCommand.bind(client)
    client.sendCommand = (command, ...rest) => {
      if (command.name === "evalsha" || command.name === "eval") {
        // evalsha sha numberOfKeys entry definition cold op ttl definition definitionTtl, then the carried change per dimension
        const args = command.args.map(String)
        scripts.push({ op: args[5]!, carried: args.slice(9, 13).join(",") })
      }
      return send(command, ...rest)
    }
    return { client, scripts }
  })

  it.scoped("a settlement travels with the key's next reservation: one script per acquire and settle", () =>
    Effect.gen(function*() {
      const { client, scripts } = yield* countingClient
      const s = yield* RedisStore.make({ client, prefix })
      const key = `one-trip/${++keys}`
      yield* s.define(key, quota)
      expect(yield* s.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })).toMatchObject({
        _tag: "Granted",
        origin: "shared"
      })
      // The refund answers at once, with the levels it will leave.
      near((yield* s.adjust(key, { inputTokens: -100 }, "shared")).inputTokens?.level, 700)
      near((yield* s.adjust(key, { inputTokens: -50 }, "shared")).inputTokens?.level, 750)
      const next = yield* s.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })
      expect(next._tag).toBe("Granted")
      if (next._tag === "Granted") near(next.levels.inputTokens?.level, 350)
      expect(scripts).toEqual([
        { op: "define", carried: none },
        { op: "reserve", carried: none },
        { op: "reserve", carried: "0,-150,0,0" }
      ])
    }))

  it.scoped("a settlement that charges more is sent at once, with the refunds pending on its key", () =>
    Effect.gen(function*() {
      const { client, scripts } = yield* countingClient
      const s = yield* RedisStore.make({ client, prefix, settleWithin: "1 hour" })
      const b = yield* store()
      const key = `charge-now/${++keys}`
      yield* s.define(key, quota)
      yield* s.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })
      yield* s.reserve(key, Cost.amounts({ inputTokens: 100 }), { headroom: 0 })
      yield* s.adjust(key, { inputTokens: -100 }, "shared")
      near((yield* s.adjust(key, { inputTokens: 300 }, "shared")).inputTokens?.level, 300)
      expect(scripts.slice(3)).toEqual([{ op: "adjust", carried: "0,-100,0,0" }])
      // Another process sees the charge at once, not within settleWithin.
      near((yield* b.state(key)).levels.inputTokens?.level, 300)
    }))

  it.scoped("a settlement no call follows is sent within settleWithin, and another process sees it", () =>
    Effect.gen(function*() {
      const { client, scripts } = yield* countingClient
      const a = yield* RedisStore.make({ client, prefix, settleWithin: "1 second" })
      const b = yield* store()
      const key = `flush/${++keys}`
      yield* a.define(key, quota)
      yield* a.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })
      yield* a.adjust(key, { inputTokens: -200 }, "shared")
      yield* TestClock.adjust("999 millis")
      expect(scripts.map((script) => script.op)).toEqual(["define", "reserve"])
      near((yield* b.state(key)).levels.inputTokens?.level, 600)
      // At the bound the store's one flusher sends it alone.
      yield* TestClock.adjust("1 millis")
      for (let i = 0; i < 10 && scripts.length < 3; i++) yield* Effect.yieldNow()
      expect(scripts.at(-1)).toEqual({ op: "adjust", carried: "0,-200,0,0" })
      // What a's connection sent before its state, b reads after it.
      yield* a.state(key)
      near((yield* b.state(key)).levels.inputTokens?.level, 800)
    }))

  it.scoped("closing the store's scope sends what is pending", () =>
    Effect.gen(function*() {
      const b = yield* store()
      const key = `close/${++keys}`
      yield* Effect.scoped(Effect.gen(function*() {
        const a = yield* store({ settleWithin: "1 hour" })
        yield* a.define(key, quota)
        yield* a.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })
        yield* a.adjust(key, { inputTokens: -300 }, "shared")
      }))
      near((yield* b.state(key)).levels.inputTokens?.level, 900)
    }))

  it.scoped("a pending settlement whose carrier fails is dropped, as a shared settlement while Redis is unreachable, never put into the local share", () =>
    Effect.gen(function*() {
      const { client, scripts } = yield* countingClient
      const s = yield* RedisStore.make({ client, prefix, localShare: 0.5 })
      const key = `carrier-fails/${++keys}`
      yield* s.define(key, quota)
      yield* s.reserve(key, Cost.amounts({ inputTokens: 400 }), { headroom: 0 })
      yield* s.adjust(key, { inputTokens: -400 }, "shared")
      yield* takeAway(client)
      expect(yield* s.reserve(key, Cost.amounts({ inputTokens: 200 }), { headroom: 0 })).toMatchObject({
        _tag: "Granted",
        origin: "local"
      })
      // The local half: 500 less the local reservation; the shared refund is not in it.
      near((yield* s.state(key)).levels.inputTokens?.level, 300)
      yield* Effect.promise(() => client.connect())
      yield* TestClock.adjust("1 minute")
      // Back on Redis: the refund was lost with the reservation that carried it (the bucket refills by itself).
      near((yield* s.state(key)).levels.inputTokens?.level, 600)
      expect(scripts.filter((script) => script.op === "adjust")).toEqual([])
    }))
})
