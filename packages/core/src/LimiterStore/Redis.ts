/**
 * A `LimiterStore` on Redis, so that many processes on many machines share one
 * quota. Reached by its own subpath (`@sluice/core/LimiterStore/Redis`); its
 * client, `ioredis`, is an optional peer dependency.
 *
 * - Every operation is one atomic Lua script on one key, loaded once and called
 *   by hash (`defineCommand`: EVALSHA, re-sent when the server forgot it).
 * - Time is the Redis server's (`TIME`), so the clocks of the machines do not
 *   matter; answers are "granted" or "fits after a delay".
 * - The pause after a 429 and the provider's observed snapshot live in the same
 *   key: one process's 429 pauses every process.
 * - Keys carry a prefix and expire when idle (`idleTtl`, default 10 minutes; a
 *   bucket idle that long is full anyway). The quota travels with every call, so
 *   an expired key comes back with full buckets, never unlimited.
 * - When Redis cannot be reached, the store answers from a local memory store
 *   holding `localShare` of every quota (1/N for N processes), logs and counts
 *   the switch, and goes back to Redis as soon as it answers. While Redis is
 *   down, the fleet can admit at most `N × localShare` of the quota per key on top
 *   of what it had already reserved — at most the quota itself when
 *   `localShare = 1/N` and N is right.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "@sluice/core"
 * import * as RedisStore from "@sluice/core/LimiterStore/Redis"
 *
 * const LimiterLive = RateLimiter.layer({ quotas }).pipe(
 *   Layer.provide(RedisStore.layer({ url: "redis://127.0.0.1:6379", prefix: "myapp", localShare: 1 / 4 }))
 * )
 * ```
 */
import * as Effect from "effect/Effect"
import * as Duration from "effect/Duration"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"
import type * as Cost from "../Cost.js"
import * as LimiterStore from "../LimiterStore.js"
import type * as Quota from "../Quota.js"
import type { RateLimitSnapshot } from "../RateLimitSnapshot.js"

/** The Lua script: `KEYS[1]` the key; `ARGV` op, JSON payload, idle TTL (ms), JSON quota definition or "". */
export const script = `
local key = KEYS[1]
local op = ARGV[1]
local arg = cjson.decode(ARGV[2])
local ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local dims = {'requests', 'inputTokens', 'outputTokens', 'tokens'}
local raw = redis.call('GET', key)
local e
if raw then e = cjson.decode(raw) else e = { b = {}, l = {}, p = -1 } end
if type(e.b) ~= 'table' then e.b = {} end
if type(e.l) ~= 'table' then e.l = {} end
if type(e.d) ~= 'table' then e.d = {} end

local function level(b)
  if b.v >= b.c then return math.min(b.v, b.c) end
  return math.min(b.c, b.v + math.max(0, now - b.u) * b.r)
end
local function advance(b)
  if now > b.u then b.v = level(b); b.u = now end
end
local function levels()
  local out = {}
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then out[d] = { level = level(b), capacity = b.c } end
  end
  return out
end
local function define(def)
  local buckets, limits = {}, {}
  for _, d in ipairs(dims) do
    local q = def[d]
    if q then
      local old = e.b[d]
      if old then
        advance(old)
        buckets[d] = { c = q.c, r = q.r, v = math.min(old.v, q.c), u = old.u }
      else
        buckets[d] = { c = q.c, r = q.r, v = q.c, u = now }
      end
      limits[d] = q.l
    end
  end
  e.b = buckets
  e.l = limits
  e.d = {}
end
local function save()
  redis.call('SET', key, cjson.encode(e), 'PX', ttl)
end

if ARGV[4] ~= '' and (not raw or op == 'define') then define(cjson.decode(ARGV[4])) end

if op == 'define' then
  save()
  return cjson.encode({ levels = levels() })
elseif op == 'reserve' then
  if e.p > now then
    if not raw then save() end
    return cjson.encode({ tag = 'Wait', delay = e.p - now, reason = 'paused', levels = levels() })
  end
  local latest, reason = now, nil
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then
      local amount = arg.amounts[d]
      local need = amount + math.max(0, math.min(arg.headroom * b.c, b.c - amount))
      local tol = 1e-9 * math.max(1, math.abs(need))
      if need > b.c + tol then
        return cjson.encode({ tag = 'TooLarge', dimension = d, amount = amount, capacity = b.c })
      end
      local lv = level(b)
      local at = now
      if lv < need - tol then at = math.max(now, b.u) + (need - lv) / b.r end
      if at > latest then latest = at; reason = d end
    end
  end
  if reason then
    if not raw then save() end
    return cjson.encode({ tag = 'Wait', delay = latest - now, reason = reason, levels = levels() })
  end
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then advance(b); b.v = b.v - arg.amounts[d] end
  end
  save()
  return cjson.encode({ tag = 'Granted', levels = levels() })
elseif op == 'adjust' then
  for _, d in ipairs(dims) do
    local b = e.b[d]
    local change = arg.delta[d]
    if b and change and change ~= 0 then
      advance(b)
      if change >= 0 then b.v = b.v - change else b.v = math.min(b.c, b.v - change) end
    end
  end
  save()
  return cjson.encode({ levels = levels() })
elseif op == 'observe' then
  local lowered, discovered = {}, {}
  for _, d in ipairs(dims) do
    local s = arg.dimensions[d]
    if s then
      local b = e.b[d]
      local stated = nil
      if type(s.limit) == 'number' and s.limit > 0 then stated = s.limit end
      if not b then
        if stated then
          local remaining = stated
          if type(s.remaining) == 'number' then remaining = math.min(stated, s.remaining) end
          b = { c = stated, r = stated / 60000, v = remaining, u = now }
          e.l[d] = stated
          table.insert(discovered, d)
        end
      elseif stated and stated < (e.l[d] or b.c) then
        local from = e.l[d] or b.c
        advance(b)
        b.r = b.r * stated / from
        b.c = math.min(b.c, stated)
        b.v = math.min(b.v, b.c)
        local dr = e.d[d]
        if dr then dr.n = dr.n * stated / from; dr.f = dr.f * stated / from end
        e.l[d] = stated
        table.insert(lowered, { dimension = d, from = from, to = stated })
      end
      if b and type(s.remaining) == 'number' then
        -- LimiterStore.learnDrift: refill at nominal - max(0, estimate); a positive gap raises the
        -- estimate by gap / tau, a change of a non-positive gap moves it by change / (6 tau).
        advance(b)
        local r = math.max(0, s.remaining)
        local dr = e.d[d]
        local nominal = b.r
        local estimate = 0
        if dr then nominal = dr.n; estimate = dr.f end
        local gap = b.v - (r + 1)
        if dr and nominal > 0 then
          local tau = b.c / nominal / 12
          local bound = 0.9 * nominal
          local settled = math.min(0, gap) - dr.g
          estimate = math.min(bound, math.max(-bound, estimate + math.max(0, gap) / tau + settled / (6 * tau)))
          b.r = nominal - math.max(0, estimate)
        end
        if gap > 0 then
          b.v = r
          e.d[d] = { n = nominal, f = estimate, g = -1 }
        else
          e.d[d] = { n = nominal, f = estimate, g = gap }
        end
      end
      if b then e.b[d] = b end
    end
  end
  if type(arg.retryAfter) == 'number' then e.p = math.max(e.p, now + arg.retryAfter) end
  save()
  return cjson.encode({ lowered = lowered, discovered = discovered, levels = levels() })
elseif op == 'pause' then
  e.p = math.max(e.p, now + arg.ms)
  save()
  return cjson.encode({ pausedFor = e.p - now })
elseif op == 'state' then
  return cjson.encode({ levels = levels(), pausedFor = math.max(0, e.p - now) })
end
return redis.error_reply('unknown operation ' .. tostring(op))
`

/** Options of the Redis store. */
export interface Options {
  /** A connected client to use (not closed by the store), or a URL to connect to (closed with the scope). */
  readonly client?: IORedis | undefined
  readonly url?: string | undefined
  /** Prefix of every key. Default "sluice". */
  readonly prefix?: string | undefined
  /** A key untouched this long expires. Default 10 minutes. */
  readonly idleTtl?: Duration.DurationInput | undefined
  /** The share of every quota this process may use while Redis is down (1/N for N processes). Default 1. */
  readonly localShare?: number | undefined
  /** How long one Redis operation may take before the process falls back. Default 1 second. */
  readonly timeout?: Duration.DurationInput | undefined
}

/** Switches between Redis and the local fallback, by direction. */
export const fallbacks = Metric.counter("sluice_limiter_store_fallbacks_total", {
  description: "Switches of the limiter store between Redis and the local fallback",
  incremental: true
})

interface SluiceCommands {
  sluiceLimiter(key: string, op: string, payload: string, ttl: string, quota: string): Promise<string>
}

const encodeQuota = (quota: Quota.Quota): string => {
  const out: Record<string, { c: number; r: number; l: number }> = {}
  for (const dimension of ["requests", "inputTokens", "outputTokens", "tokens"] as const) {
    const limit = quota[dimension]
    if (limit !== undefined) {
      out[dimension] = { c: limit.burst ?? limit.limit, r: limit.limit / Duration.toMillis(limit.per), l: limit.limit }
    }
  }
  return JSON.stringify(out)
}

const scaled = (quota: Quota.Quota, share: number): Quota.Quota => {
  const out: { -readonly [D in Quota.Dimension]?: Quota.Limit } = {}
  for (const dimension of ["requests", "inputTokens", "outputTokens", "tokens"] as const) {
    const limit = quota[dimension]
    if (limit !== undefined) {
      out[dimension] = { ...limit, limit: limit.limit * share, ...(limit.burst === undefined ? {} : { burst: limit.burst * share }) }
    }
  }
  return out as Quota.Quota
}

/** Lua's cjson turns an empty object into `{}` or `[]` alike: normalise level maps. */
const levelsOf = (value: unknown): LimiterStore.Levels =>
  Array.isArray(value) || typeof value !== "object" || value === null ? {} : value as LimiterStore.Levels

/**
 * Builds the Redis store (with its local fallback). A client created from `url`
 * is closed when the scope closes.
 */
export const make = (options: Options): Effect.Effect<LimiterStore.LimiterStore["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = options.client ?? (yield* Effect.acquireRelease(
      Effect.sync(() =>
        new IORedis(options.url ?? "redis://127.0.0.1:6379", {
          // Fail fast while Redis is away: the fallback answers instead of a queue that hangs.
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          // The client times each command out itself: cheaper than a timer fiber raced against every call.
          commandTimeout: Math.max(1, Math.round(Duration.toMillis(Duration.decode(options.timeout ?? Duration.seconds(1))))),
          lazyConnect: true,
          retryStrategy: (times) => Math.min(1_000, times * 100)
        })
      ),
      (redis) => Effect.sync(() => redis.disconnect())
    ).pipe(
      // Wait for the first connection (briefly): without it every early call would fall back.
      Effect.tap((redis) =>
        Effect.tryPromise(() => redis.connect()).pipe(
          Effect.timeout(options.timeout ?? Duration.seconds(1)),
          Effect.catchAll((cause) => Effect.logWarning(`Sluice limiter store: Redis did not answer at start (${String(cause)}); using the local share until it does`))
        )
      )
    ))
    client.on("error", () => {
      // Connection errors surface as failed operations, which fall back; nothing to do here.
    })
    client.defineCommand("sluiceLimiter", { numberOfKeys: 1, lua: script })
    const redis = client as unknown as IORedis & SluiceCommands
    const prefix = options.prefix ?? "sluice"
    const ttl = String(Math.max(1_000, Math.round(Duration.toMillis(options.idleTtl ?? Duration.minutes(10)))))
    const timeout = Duration.decode(options.timeout ?? Duration.seconds(1))
    const share = options.localShare ?? 1
    /** Each key's quota, encoded once for the script (it travels with every call). */
    const quotas = new Map<string, string>()
    const local = yield* LimiterStore.makeMemory
    let usingLocal = false

    // A client that times its commands out (ours does) needs no timeout of ours; a client given without one gets it.
    const timesOut = client.options.commandTimeout !== undefined && client.options.commandTimeout > 0
    const call = (key: string, op: string, payload: unknown): Effect.Effect<any, LimiterStore.LimiterStoreError> => {
      const quota = quotas.get(key) ?? ""
      const sent = Effect.tryPromise({
        try: () => redis.sluiceLimiter(`${prefix}:limiter:${key}`, op, JSON.stringify(payload), ttl, quota),
        catch: (cause) => new LimiterStore.LimiterStoreError({ key, operation: op, cause })
      })
      return (timesOut
        ? sent
        : Effect.timeoutFail(sent, { duration: timeout, onTimeout: () => new LimiterStore.LimiterStoreError({ key, operation: op, cause: "timed out" }) })).pipe(
          Effect.map((answer) => JSON.parse(answer) as unknown)
        )
    }

    /** Redis when it answers, the local share when it does not; switches are logged and counted. */
    const either = <A>(key: string, op: string, remote: Effect.Effect<A, LimiterStore.LimiterStoreError>, fallback: Effect.Effect<A, LimiterStore.LimiterStoreError>) =>
      remote.pipe(
        Effect.tap(() =>
          usingLocal
            ? Effect.zipRight(
              Effect.sync(() => (usingLocal = false)),
              Effect.zipRight(Effect.logInfo("Sluice limiter store: Redis answers again; back to the shared quota"), Metric.increment(Metric.tagged(fallbacks, "to", "redis")))
            )
            : Effect.void
        ),
        Effect.catchAll((error) =>
          Effect.zipRight(
            usingLocal
              ? Effect.void
              : Effect.zipRight(
                Effect.sync(() => (usingLocal = true)),
                Effect.zipRight(
                  Effect.logWarning(`Sluice limiter store: Redis failed to ${op} (${String(error.cause)}); using the local share (${share}) of each quota until it answers`),
                  Metric.increment(Metric.tagged(fallbacks, "to", "local"))
                )
              ),
            fallback
          )
        ),
        Effect.withSpan(`LimiterStore.Redis.${op}`, { attributes: { key }, captureStackTrace: false })
      )

    return LimiterStore.LimiterStore.of({
      define: (key, quota) =>
        Effect.suspend(() => {
          quotas.set(key, encodeQuota(quota))
          // The local share is always defined, so that a fallback finds the quota.
          return Effect.flatMap(local.define(key, scaled(quota, share)), (localLevels) =>
            either(key, "define", Effect.map(call(key, "define", {}), (answer) => levelsOf(answer.levels)), Effect.succeed(localLevels)))
        }),
      reserve: (key, amounts: Cost.Amounts, reserveOptions) =>
        either(
          key,
          "reserve",
          Effect.map(call(key, "reserve", { amounts, headroom: reserveOptions.headroom }), (answer): LimiterStore.Reservation =>
            answer.tag === "Granted"
              ? { _tag: "Granted", levels: levelsOf(answer.levels) }
              : answer.tag === "TooLarge"
              ? { _tag: "TooLarge", dimension: answer.dimension, amount: answer.amount, capacity: answer.capacity }
              : { _tag: "Wait", delay: Duration.millis(answer.delay), reason: answer.reason, levels: levelsOf(answer.levels) }),
          local.reserve(key, amounts, reserveOptions)
        ),
      adjust: (key, delta) => either(key, "adjust", Effect.map(call(key, "adjust", { delta }), (answer) => levelsOf(answer.levels)), local.adjust(key, delta)),
      observe: (key, snapshot: RateLimitSnapshot) =>
        either(
          key,
          "observe",
          Effect.map(
            call(key, "observe", {
              dimensions: Object.fromEntries(Object.entries(snapshot.dimensions).map(([dimension, state]) => [dimension, { limit: state?.limit, remaining: state?.remaining }])),
              retryAfter: snapshot.retryAfter === undefined ? undefined : Duration.toMillis(snapshot.retryAfter)
            }),
            (answer): LimiterStore.Observation => ({
              lowered: Array.isArray(answer.lowered) ? answer.lowered : [],
              discovered: Array.isArray(answer.discovered) ? answer.discovered : [],
              levels: levelsOf(answer.levels)
            })
          ),
          local.observe(key, snapshot)
        ),
      pause: (key, duration) =>
        either(key, "pause", Effect.map(call(key, "pause", { ms: Duration.toMillis(duration) }), (answer) => Duration.millis(answer.pausedFor)), local.pause(key, duration)),
      state: (key) =>
        either(
          key,
          "state",
          Effect.map(call(key, "state", {}), (answer): LimiterStore.KeyState => ({ levels: levelsOf(answer.levels), pausedFor: Duration.millis(answer.pausedFor) })),
          local.state(key)
        )
    })
  })

/** The Redis store as a layer. */
export const layer = (options: Options): Layer.Layer<LimiterStore.LimiterStore> => Layer.scoped(LimiterStore.LimiterStore, make(options))
