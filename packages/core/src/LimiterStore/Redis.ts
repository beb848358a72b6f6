/**
 * A `LimiterStore` on Redis, so that many processes on many machines share one
 * quota. Reached by its own subpath (`@sluice/core/LimiterStore/Redis`); its
 * client, `ioredis`, is an optional peer dependency.
 *
 * - Every operation is one atomic Lua script on one limiter key, loaded once and
 *   called by hash (`defineCommand`: EVALSHA, re-sent when the server forgot it).
 * - One round trip per call: the refund that settles a shared reservation
 *   (`adjust` with origin `"shared"` and no positive change, the common case:
 *   the estimate was above the usage) is not sent by itself; it travels with the
 *   key's next operation, which applies it first, and `adjust` answers at once
 *   with the levels it will leave (estimated from Redis's last answer). A refund
 *   no operation on its key carries within `settleWithin` (default 50 ms) is
 *   sent alone by the store's one flusher (a single fiber that sleeps until the
 *   oldest pending settlement is due, not a timer per call); closing the store's
 *   scope sends what is pending. A settlement that charges more (usage above the
 *   estimate) is sent at once, carrying the refunds pending on its key: other
 *   processes must see a charge before they grant against it. **Bound:** another
 *   process sees this one's refunds at most `settleWithin` late, which only
 *   makes it more careful; its reservations and charges at once. A settlement
 *   that cannot be delivered (its carrier fails) is dropped, as any shared
 *   settlement while Redis is unreachable (below). Strict stores and
 *   `settleWithin: 0` send every settlement at once.
 * - The per-call reservation has no span of its own (a span cost about as much
 *   CPU as the rest of the store's work); the other operations have one each.
 * - Time is the Redis server's (`TIME`), so the clocks of the machines do not
 *   matter; answers are "granted" or "fits after a delay". A snapshot's age is
 *   sent as a duration measured on this process's `Clock`, never as an instant.
 * - The pause after a 429 and the provider's observed snapshot live in the same
 *   entry: one process's 429 pauses every process.
 * - Snapshots carry their age: the script projects a `remaining` read `age` ago
 *   to now and discounts what it granted since (a per-dimension grant history in
 *   the entry, `LimiterStore.GrantHistory`); a snapshot older than that history
 *   teaches limits but clamps nothing.
 *
 * State that expires carries what it needs to come back right:
 *
 * - The entry (`<prefix>:limiter:<key>`: buckets, pause, grant history) is
 *   MessagePack, exact to the last bit of every level and cheaper for the script
 *   to read and write than JSON (about 30 µs a call on Redis instead of 36); an
 *   entry an earlier version wrote as JSON is read and written back so.
 * - An entry expires `idleTtl` (default 10 minutes) after the last operation,
 *   but never before its pause has ended and its buckets are full again, so an
 *   expired entry is one that would come back full and unpaused anyway.
 * - Each key's definition (its configured or learned limits) lives in a second
 *   key, `<prefix>:limiter:<key>:definition`, rewritten whenever the limits change
 *   and kept `definitionTtl` (default 24 hours) past the entry. A key whose entry
 *   expired comes back with full buckets from it, whichever process touches it
 *   first, even one that never saw the headers that taught the limits; without
 *   it, from the definition this process sends (configured, or learned from the
 *   snapshots it observed). A key is unlimited only while nobody has defined it
 *   and no snapshot has stated its limits. (In a Redis Cluster, give `prefix` a
 *   hash tag, e.g. `"{sluice}"`, so that both keys share a slot.)
 *
 * Fallback (unless `strict`): when Redis fails (refuses, errors, or does not
 * answer within `timeout`) the store answers from a local memory store holding
 * `localShare` of every quota — configured limits and learned ones alike, and a
 * learned limit is learned as `limit × localShare` — and logs and counts the
 * switch. A circuit then keeps operations off Redis: they are answered locally at
 * once, and one operation at a time probes Redis on the `probe` schedule
 * (default: exponential from 100 ms, at most every 5 s) until one succeeds. A
 * Redis that hangs costs the operations in flight one `timeout`, not every
 * later operation. Pauses are mirrored into the local store, so a 429 seen
 * while Redis was up still holds once it is down.
 *
 * - Down or hanging: each process admits at most `localShare` of each quota's
 *   refill (and a bucket of `localShare` of its burst) from the moment it falls
 *   back, on top of what the fleet had reserved before: with N processes and
 *   `localShare = 1/N`, the fleet stays within the quota. A key this process has
 *   no definition for (never defined, no snapshot observed) is unlimited locally
 *   until a snapshot states its limits.
 * - Settlements go back where the reservation was taken (`Granted.origin`,
 *   `adjust`'s `origin`): a reservation granted locally is settled locally even
 *   after Redis is back; one granted by Redis is settled on Redis, and while Redis
 *   is unreachable its settlement is dropped — a refund lost leaves the shared
 *   bucket lower until it refills, a charge lost is at most that call's excess
 *   over its estimate, which the provider's next `remaining` corrects. Never is
 *   a shared reservation settled into the local share.
 * - Restarted (state lost): entries come back full from the definitions this
 *   process sends (the definition keys are gone too), like a first start: the
 *   overshoot is at most one full bucket per key, which the provider's headers
 *   clamp on the first responses.
 * - `strict: true` disables the fallback: every failure is a `LimiterStoreError`
 *   (used by the conformance suite, which must fail without Redis).
 *
 * @example
 * ```ts
 * import { RateLimiter } from "@sluice/core"
 * import * as RedisStore from "@sluice/core/LimiterStore/Redis"
 * import { Layer } from "effect"
 *
 * const quotas = { "anthropic/claude-haiku-4-5": { inputTokens: { limit: 400_000, per: "1 minute" } } } as const
 * const LimiterLive = RateLimiter.layer({ quotas }).pipe(
 *   Layer.provide(RedisStore.layer({ url: "redis://127.0.0.1:6379", prefix: "myapp", localShare: 1 / 4 }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"
import type * as Cost from "../Cost.js"
import * as LimiterStore from "../LimiterStore.js"
import * as Quota from "../Quota.js"
import type { RateLimitSnapshot } from "../RateLimitSnapshot.js"

/**
 * The Lua script: `KEYS[1]` the entry, `KEYS[2]` the definition; `ARGV` op, JSON
 * payload, idle TTL (ms), this process's JSON definition or "", definition TTL (ms),
 * and a settlement carried from earlier calls (a JSON delta, applied before the
 * operation as `adjust` would) or "".
 *
 * @since 0.1.0
 * @category utilities
 */
export const script = `
local key = KEYS[1]
local defKey = KEYS[2]
local op = ARGV[1]
local arg = cjson.decode(ARGV[2])
local ttl = tonumber(ARGV[3])
local defTtl = tonumber(ARGV[5])
local carry = ARGV[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local dims = {'requests', 'inputTokens', 'outputTokens', 'tokens'}
local span, maxGroups = 5000, 36
local raw = redis.call('GET', key)
local e
-- The entry is MessagePack (exact doubles, and cheaper to read and write than JSON); an entry
-- written as JSON by an earlier version is still read.
if raw then
  if string.byte(raw, 1) == 123 then e = cjson.decode(raw) else e = cmsgpack.unpack(raw) end
else
  e = { b = {}, l = {}, p = -1 }
end
if type(e.b) ~= 'table' then e.b = {} end
if type(e.l) ~= 'table' then e.l = {} end
if type(e.d) ~= 'table' then e.d = {} end
if type(e.g) ~= 'table' then e.g = {} end
-- Whether the entry must be written even by an operation that changes nothing (it was missing or came back).
local fresh = not raw
-- Whether the definition changed, so that the long-lived definition key is rewritten.
local redefined = false
-- Whether a settlement carried from earlier calls changed the entry, so that even a Wait or a state saves it.
local carried = false

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
-- LimiterStore.GrantHistory: what was granted per dimension, in groups of [first, at first, last, cumulative].
local function total(h)
  local n = #h.g
  if n > 0 then return h.g[n][4] end
  return h.b
end
local function record(d, amount)
  if type(amount) ~= 'number' or amount == 0 or not e.b[d] then return end
  local h = e.g[d]
  if type(h) ~= 'table' or type(h.g) ~= 'table' then h = { s = now, b = 0, g = {} } end
  local sum = total(h) + amount
  local last = h.g[#h.g]
  if last and now - last[1] < span then
    if now <= last[1] then last[2] = sum end
    last[3] = math.max(last[3], now)
    last[4] = sum
  else
    table.insert(h.g, { now, sum, now, sum })
    if #h.g > maxGroups then
      local dropped = table.remove(h.g, 1)
      h.s = dropped[3]
      h.b = dropped[4]
    end
  end
  e.g[d] = h
end
local function grantedSince(d, at)
  local h = e.g[d]
  if type(h) ~= 'table' or type(h.g) ~= 'table' or at < h.s then return nil end
  local sum = total(h)
  local before = h.b
  for i = 1, #h.g do
    local g = h.g[i]
    if at < g[1] then return sum - before end
    if at < g[3] then return sum - (g[2] + (g[4] - g[2]) * (at - g[1]) / (g[3] - g[1])) end
    before = g[4]
  end
  return sum - before
end
local function define(def)
  local buckets, limits, grants = {}, {}, {}
  for _, d in ipairs(dims) do
    local q = def[d]
    if type(q) == 'table' then
      local old = e.b[d]
      if old then
        advance(old)
        buckets[d] = { c = q.c, r = q.r, v = math.min(old.v, q.c), u = old.u }
      else
        buckets[d] = { c = q.c, r = q.r, v = q.c, u = now }
      end
      limits[d] = q.l
      grants[d] = e.g[d] or { s = now, b = 0, g = {} }
    end
  end
  e.b = buckets
  e.l = limits
  e.d = {}
  e.g = grants
  redefined = true
end
-- The definition that outlives the entry: each bucket's capacity, nominal refill and stated limit.
local function definition()
  local out = {}
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then
      local r = b.r
      if e.d[d] then r = e.d[d].n end
      out[d] = { c = b.c, r = r, l = e.l[d] or b.c }
    end
  end
  return out
end
-- A settlement: charges (positive) and refunds (negative) per dimension; a refund never fills past capacity.
local function settle(delta)
  for _, d in ipairs(dims) do
    local b = e.b[d]
    local change = delta[d]
    if b and type(change) == 'number' and change ~= 0 then
      advance(b)
      if change >= 0 then b.v = b.v - change else b.v = math.min(b.c, b.v - change) end
      record(d, change)
      carried = true
    end
  end
end
local function save()
  -- The entry lives until its pause has ended and its buckets are full again, and idleTtl at least.
  local quiet = math.max(0, e.p - now)
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then
      local missing = b.c - level(b)
      if missing > 0 then
        if b.r > 0 then quiet = math.max(quiet, missing / b.r) else quiet = math.max(quiet, ttl) end
      end
    end
  end
  local px = math.max(ttl, math.ceil(math.min(quiet, 2592000000)) + 1000)
  redis.call('SET', key, cmsgpack.pack(e), 'PX', px)
  if redefined and next(e.b) ~= nil then
    redis.call('SET', defKey, cjson.encode(definition()), 'PX', math.max(defTtl, px))
  elseif fresh and next(e.b) ~= nil then
    redis.call('PEXPIRE', defKey, math.max(defTtl, px))
  end
end

if op ~= 'define' and next(e.b) == nil then
  -- A key with no buckets (new, or expired) comes back with its definition: the one persisted by any
  -- process, else this process's (configured or learned); never unlimited while either exists.
  local persisted = redis.call('GET', defKey)
  if persisted then
    define(cjson.decode(persisted))
    redefined = false
    fresh = true
  elseif ARGV[4] ~= '' then
    define(cjson.decode(ARGV[4]))
    fresh = true
  end
end
-- What earlier calls settled comes first: it happened before this operation.
if carry and carry ~= '' then settle(cjson.decode(carry)) end
if op == 'define' and ARGV[4] ~= '' then define(cjson.decode(ARGV[4])) end

if op == 'define' then
  save()
  return cjson.encode({ levels = levels() })
elseif op == 'reserve' then
  if e.p > now then
    if fresh or carried then save() end
    return cjson.encode({ tag = 'Wait', delay = e.p - now, reason = 'paused', levels = levels() })
  end
  local latest, reason = now, nil
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then
      local amount = arg.amounts[d]
      local need = amount + math.max(0, math.min(arg.headroom * b.c + (arg.margin or 0) * b.r, b.c - amount))
      local tol = 1e-9 * math.max(1, math.abs(need))
      if need > b.c + tol then
        if carried then save() end
        return cjson.encode({ tag = 'TooLarge', dimension = d, amount = amount, capacity = b.c })
      end
      local lv = level(b)
      local at = now
      if lv < need - tol then at = math.max(now, b.u) + (need - lv) / b.r end
      if at > latest then latest = at; reason = d end
    end
  end
  if reason then
    if fresh or carried then save() end
    return cjson.encode({ tag = 'Wait', delay = latest - now, reason = reason, levels = levels() })
  end
  for _, d in ipairs(dims) do
    local b = e.b[d]
    if b then
      advance(b)
      b.v = b.v - arg.amounts[d]
      record(d, arg.amounts[d])
    end
  end
  save()
  return cjson.encode({ tag = 'Granted', levels = levels() })
elseif op == 'adjust' then
  settle(arg.delta)
  save()
  return cjson.encode({ levels = levels() })
elseif op == 'observe' then
  -- A snapshot read age ms ago: its remaining is projected to now (LimiterStore.projectRemaining).
  local age = 0
  if type(arg.age) == 'number' and arg.age > 0 then age = arg.age end
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
          if type(s.remaining) == 'number' then remaining = math.min(stated, math.max(0, s.remaining) + stated / 60000 * age) end
          b = { c = stated, r = stated / 60000, v = remaining, u = now }
          e.l[d] = stated
          e.g[d] = { s = now, b = 0, g = {} }
          redefined = true
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
        redefined = true
        table.insert(lowered, { dimension = d, from = from, to = stated })
      end
      if b and type(s.remaining) == 'number' then
        advance(b)
        local r = math.max(0, s.remaining)
        local dr = e.d[d]
        local nominal = b.r
        local estimate = 0
        if dr then nominal = dr.n; estimate = dr.f end
        local known = true
        if age > 0 then
          local since = grantedSince(d, now - age)
          if since == nil then known = false else r = math.min(b.c, r + nominal * age) - since end
        end
        if known then
          -- LimiterStore.learnDrift: refill at nominal - max(0, estimate); a positive gap raises the
          -- estimate by gap / tau, a change of a non-positive gap moves it by change / (6 tau).
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
      end
      if b then e.b[d] = b end
    end
  end
  if type(arg.retryAfter) == 'number' then e.p = math.max(e.p, now + arg.retryAfter - age) end
  save()
  return cjson.encode({ lowered = lowered, discovered = discovered, levels = levels() })
elseif op == 'pause' then
  e.p = math.max(e.p, now + arg.ms)
  save()
  return cjson.encode({ pausedFor = e.p - now })
elseif op == 'state' then
  if carried then save() end
  return cjson.encode({ levels = levels(), pausedFor = math.max(0, e.p - now) })
end
return redis.error_reply('unknown operation ' .. tostring(op))
`

/**
 * Options of the Redis store.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** A connected client to use (not closed by the store), or a URL to connect to (closed with the scope). */
  readonly client?: IORedis | undefined
  readonly url?: string | undefined
  /** Prefix of every key. Default "sluice". */
  readonly prefix?: string | undefined
  /** A key untouched this long expires, once its pause has ended and its buckets are full. Default 10 minutes. */
  readonly idleTtl?: Duration.DurationInput | undefined
  /** How long a key's definition (configured or learned limits) outlives its entry. Default 24 hours. */
  readonly definitionTtl?: Duration.DurationInput | undefined
  /** The share of every quota this process may use while Redis is down (1/N for N processes). Default 1. */
  readonly localShare?: number | undefined
  /** How long one Redis operation may take before the process falls back. Default 1 second. */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * When to probe Redis again after a failure, one operation at a time (its
   * input: the failure). Default: exponential from 100 ms, at most every 5 seconds.
   */
  readonly probe?: Schedule.Schedule<unknown, LimiterStore.LimiterStoreError> | undefined
  /** No fallback: a Redis failure fails the operation. For conformance tests. Default false. */
  readonly strict?: boolean | undefined
  /**
   * How long a settlement of a shared reservation may wait to travel with the
   * key's next operation (no round trip of its own) before it is sent alone:
   * the longest another process sees a key without this one's settlements.
   * Zero sends every settlement at once. Default 50 ms.
   */
  readonly settleWithin?: Duration.DurationInput | undefined
}

/**
 * Switches between Redis and the local fallback, by direction.
 *
 * @since 0.1.0
 * @category utilities
 */
export const fallbacks = Metric.counter("sluice_limiter_store_fallbacks_total", {
  description: "Switches of the limiter store between Redis and the local fallback",
  incremental: true
})

interface SluiceCommands {
  sluiceLimiter(
    key: string,
    definitionKey: string,
    op: string,
    payload: string,
    ttl: string,
    definition: string,
    definitionTtl: string,
    carried: string
  ): Promise<string>
}

/** What this process keeps of a key it has limits for: its Redis keys, its definition, its last levels. */
interface Known {
  readonly entry: string
  readonly definitionKey: string
  /** This process's definition of the key (configured, then learned), and its encoding for the script ("" if none). */
  definition: Definition | undefined
  encoded: string
  /** The levels Redis last answered for the key, and when (this process's clock), to estimate a deferred settlement's. */
  levels: LimiterStore.Levels
  levelsAt: number
}

/** Settlements of shared reservations not yet sent: per key, the summed delta and when the first was made. */
interface Pending {
  readonly delta: { [D in Quota.Dimension]?: number }
  readonly since: number
}

/** A key's definition as the script keeps it: per dimension, capacity, refill per ms, stated limit. */
type Definition = { readonly [D in Quota.Dimension]?: { readonly c: number; readonly r: number; readonly l: number } }

/**
 * Pure: a configured quota as a definition.
 *
 * @since 0.1.0
 * @category utilities
 */
export const definitionOf = (quota: Quota.Quota): Definition => {
  const out: { [D in Quota.Dimension]?: Definition[D] } = {}
  for (const dimension of Quota.dimensions) {
    const limit = quota[dimension]
    if (limit !== undefined) out[dimension] = { c: Quota.capacity(limit), r: Quota.ratePerMilli(limit), l: limit.limit }
  }
  return out
}

/**
 * Pure: what a snapshot teaches a definition, as the store does: a limit for a
 * dimension it lacks (per `LimiterStore.discoveredPeriod`), a lower limit for one
 * stated above the provider's. The same definition when it teaches nothing.
 *
 * @since 0.1.0
 * @category utilities
 */
export const learn = (definition: Definition, snapshot: RateLimitSnapshot): Definition => {
  let out: { [D in Quota.Dimension]?: Definition[D] } | undefined
  for (const dimension of Quota.dimensions) {
    const stated = snapshot.dimensions[dimension]?.limit
    if (stated === undefined || !Number.isFinite(stated) || stated <= 0) continue
    const known = definition[dimension]
    const next = known === undefined
      ? { c: stated, r: stated / Duration.toMillis(LimiterStore.discoveredPeriod), l: stated }
      : stated < known.l
      ? { c: Math.min(known.c, stated), r: known.r * stated / known.l, l: stated }
      : undefined
    if (next === undefined) continue
    out = out ?? { ...definition }
    out[dimension] = next
  }
  return out ?? definition
}

/**
 * Pure: `share` of a definition, as a quota for the local fallback.
 *
 * @since 0.1.0
 * @category utilities
 */
export const localQuota = (definition: Definition, share: number): Quota.Quota | undefined => {
  const out: { -readonly [D in Quota.Dimension]?: Quota.Limit } = {}
  let any = false
  for (const dimension of Quota.dimensions) {
    const limit = definition[dimension]
    if (limit === undefined) continue
    any = true
    out[dimension] = { limit: limit.l * share, per: Duration.millis(limit.l / limit.r), burst: limit.c * share }
  }
  return any ? out as Quota.Quota : undefined
}

/**
 * Pure: `share` of a snapshot's limits and remaining counts, for the local fallback.
 *
 * @since 0.1.0
 * @category utilities
 */
export const localSnapshot = (snapshot: RateLimitSnapshot, share: number): RateLimitSnapshot => ({
  ...snapshot,
  dimensions: Object.fromEntries(
    Object.entries(snapshot.dimensions).map(([dimension, state]) => [dimension, {
      ...state,
      ...(state?.limit === undefined ? {} : { limit: state.limit * share }),
      ...(state?.remaining === undefined ? {} : { remaining: state.remaining * share })
    }])
  )
})

/** Lua's cjson turns an empty object into `{}` or `[]` alike: normalise level maps. */
const levelsOf = (value: unknown): LimiterStore.Levels =>
  Array.isArray(value) || typeof value !== "object" || value === null ? {} : value as LimiterStore.Levels

/** Where an operation goes: Redis, Redis as the circuit's probe, or the local share. */
type Route = "redis" | "probe" | "local"

/**
 * Builds the Redis store (with its local fallback). A client created from `url`
 * is closed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
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
          commandTimeout: Math.max(
            1,
            Math.round(Duration.toMillis(Duration.decode(options.timeout ?? Duration.seconds(1))))
          ),
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
          Effect.catchAll((cause) =>
            Effect.logWarning(
              `Sluice limiter store: Redis did not answer at start (${
                String(cause)
              }); using the local share until it does`
            )
          )
        )
      )
    ))
    client.on("error", () => {
      // Connection errors surface as failed operations, which fall back; nothing to do here.
    })
    client.defineCommand("sluiceLimiter", { numberOfKeys: 2, lua: script })
    const redis = client as unknown as IORedis & SluiceCommands
    const prefix = options.prefix ?? "sluice"
    const millis = (input: Duration.DurationInput) =>
      String(Math.max(1_000, Math.round(Duration.toMillis(Duration.decode(input)))))
    const ttl = millis(options.idleTtl ?? Duration.minutes(10))
    const definitionTtl = millis(options.definitionTtl ?? Duration.hours(24))
    const timeout = Duration.decode(options.timeout ?? Duration.seconds(1))
    const share = options.localShare ?? 1
    const strict = options.strict === true
    const probe = options.probe ?? Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))
    const settleWithin = Math.max(0, Duration.toMillis(Duration.decode(options.settleWithin ?? Duration.millis(50))))
    const clock = yield* Effect.clock
    /** The keys this process has limits for (defined, learned, or answered by Redis with buckets). */
    const known = new Map<string, Known>()
    /** Settlements not yet sent, oldest first (a key's entry is re-inserted when it is taken and made again). */
    const pending = new Map<string, Pending>()
    /** Open while a settlement is pending: the flusher waits on it. */
    const flushDue = yield* Effect.makeLatch(false)
    const local = yield* LimiterStore.makeMemory

    /** The circuit around Redis: open while the local share answers; one probe at a time once `probeAt` has passed. */
    const circuit = { open: false, probing: false, probeAt: 0, state: probe.initial as unknown }

    const knownOf = (key: string): Known => {
      let entry = known.get(key)
      if (entry === undefined) {
        const name = `${prefix}:limiter:${key}`
        entry = {
          entry: name,
          definitionKey: `${name}:definition`,
          definition: undefined,
          encoded: "",
          levels: {},
          levelsAt: 0
        }
        known.set(key, entry)
      }
      return entry
    }

    /** Records what this process knows of a key and gives the local store its share. */
    const setDefinition = (key: string, definition: Definition) =>
      Effect.suspend(() => {
        const entry = knownOf(key)
        if (entry.definition === definition) return Effect.void
        entry.definition = definition
        entry.encoded = JSON.stringify(definition)
        const quota = localQuota(definition, share)
        return quota === undefined ? Effect.void : Effect.asVoid(local.define(key, quota))
      })

    /** The key's pending settlement, taken to travel with the operation being sent ("" when none). */
    const takePending = (key: string): string => {
      const waiting = pending.get(key)
      if (waiting === undefined) return ""
      pending.delete(key)
      return JSON.stringify(waiting.delta)
    }

    /** Keeps the levels Redis answered for a key with limits, to estimate the levels after a deferred settlement. */
    const noteLevels = (key: string, value: unknown) => {
      if (value === undefined) return
      const levels = levelsOf(value)
      const entry = known.get(key) ?? (Object.keys(levels).length > 0 ? knownOf(key) : undefined)
      if (entry === undefined) return
      entry.levels = levels
      entry.levelsAt = clock.unsafeCurrentTimeMillis()
    }

    // A client that times its commands out (ours does) needs no timeout of ours; a client given without one gets it.
    const timesOut = client.options.commandTimeout !== undefined && client.options.commandTimeout > 0
    /**
     * One script on the key, carrying the key's pending settlement; `payload` is
     * the operation's JSON, `decode` reads the script's parsed answer.
     */
    const call = <A>(
      key: string,
      op: string,
      payload: string,
      decode: (answer: any) => A
    ): Effect.Effect<A, LimiterStore.LimiterStoreError> => {
      const sent = Effect.tryPromise({
        try: () => {
          const entry = known.get(key)
          const name = entry?.entry ?? `${prefix}:limiter:${key}`
          return redis.sluiceLimiter(
            name,
            entry?.definitionKey ?? `${name}:definition`,
            op,
            payload,
            ttl,
            entry?.encoded ?? "",
            definitionTtl,
            takePending(key)
          )
        },
        catch: (cause) => new LimiterStore.LimiterStoreError({ key, operation: op, cause })
      })
      return (timesOut
        ? sent
        : Effect.timeoutFail(sent, {
          duration: timeout,
          onTimeout: () => new LimiterStore.LimiterStoreError({ key, operation: op, cause: "timed out" })
        })).pipe(
          Effect.map((answer) => {
            const parsed = JSON.parse(answer)
            noteLevels(key, parsed.levels)
            return decode(parsed)
          })
        )
    }

    /** Where the next operation goes; claims the probe when it is due. */
    const route = (now: number): Route => {
      if (strict || !circuit.open) return "redis"
      if (circuit.probing || now < circuit.probeAt) return "local"
      circuit.probing = true
      return "probe"
    }

    const close = Effect.suspend(() => {
      if (!circuit.open) return Effect.void
      circuit.open = false
      circuit.state = probe.initial
      return Effect.zipRight(
        Effect.logInfo("Sluice limiter store: Redis answers again; back to the shared quota"),
        Metric.increment(Metric.tagged(fallbacks, "to", "redis"))
      )
    })

    /**
     * After a failure: opens the circuit (logged, counted) and sets the next probe
     * from the schedule. Operations that were already in flight when it opened
     * fail too; they do not move the probe.
     */
    const fail = (op: string, error: LimiterStore.LimiterStoreError, now: number, path: Route) =>
      Effect.gen(function*() {
        const opening = !circuit.open
        if (!opening && path !== "probe") return
        if (opening) circuit.state = probe.initial
        circuit.open = true
        const [state, , decision] = yield* probe.step(now, error, circuit.state)
        circuit.state = state
        circuit.probeAt = ScheduleDecision.isDone(decision) ? now + 5_000 : ScheduleIntervals.start(decision.intervals)
        if (opening) {
          yield* Effect.logWarning(
            `Sluice limiter store: Redis failed to ${op} (${
              String(error.cause)
            }); using the local share (${share}) of each quota until it answers`
          )
          yield* Metric.increment(Metric.tagged(fallbacks, "to", "local"))
        }
      })

    /**
     * Redis when the circuit is closed (or this operation is the probe), the local
     * share otherwise or when Redis fails (`remote` and `fallback` each answer the
     * operation, a reservation with its origin). The probe is claimed and its
     * release installed in one uninterruptible step; with the circuit closed
     * nothing is claimed, so the operation runs as it is.
     */
    const either = <A>(
      op: string,
      remote: Effect.Effect<A, LimiterStore.LimiterStoreError>,
      fallback: Effect.Effect<A, LimiterStore.LimiterStoreError>
    ): Effect.Effect<A, LimiterStore.LimiterStoreError> =>
      Effect.suspend(() => {
        const now = clock.unsafeCurrentTimeMillis()
        if (strict) return Effect.zipLeft(remote, close)
        if (!circuit.open) {
          return Effect.catchAll(
            Effect.zipLeft(remote, close),
            (error) => Effect.zipRight(fail(op, error, now, "redis"), fallback)
          )
        }
        return Effect.uninterruptibleMask((restore) => {
          const path = route(now)
          if (path === "local") return restore(fallback)
          const attempt = restore(Effect.catchAll(
            Effect.zipLeft(remote, close),
            (error) => Effect.zipRight(fail(op, error, now, path), fallback)
          ))
          return path === "probe" ? Effect.ensuring(attempt, Effect.sync(() => (circuit.probing = false))) : attempt
        })
      })

    /** `either` in a span named after the operation: every operation but the per-call reserve. */
    const traced = <A>(
      key: string,
      op: string,
      remote: Effect.Effect<A, LimiterStore.LimiterStoreError>,
      fallback: Effect.Effect<A, LimiterStore.LimiterStoreError>
    ): Effect.Effect<A, LimiterStore.LimiterStoreError> =>
      Effect.withSpan(either(op, remote, fallback), `LimiterStore.Redis.${op}`, {
        attributes: { key },
        captureStackTrace: false
      })

    const localLevels = (key: string) => Effect.map(local.state(key), (state) => state.levels)

    /**
     * Defers a settlement of a shared reservation: it travels with the key's next
     * operation, or the flusher sends it once it is `settleWithin` old. Answers the
     * levels it will leave, estimated from Redis's last answer, the refill since
     * (at the key's nominal rate) and every settlement still pending.
     */
    const defer = (key: string, delta: Cost.Delta): LimiterStore.Levels => {
      const now = clock.unsafeCurrentTimeMillis()
      let waiting = pending.get(key)
      if (waiting === undefined) {
        waiting = { delta: {}, since: now }
        pending.set(key, waiting)
        if (pending.size === 1) flushDue.unsafeOpen()
      }
      for (const dimension of Quota.dimensions) {
        const change = delta[dimension]
        if (change !== undefined && change !== 0) waiting.delta[dimension] = (waiting.delta[dimension] ?? 0) + change
      }
      const entry = known.get(key)
      if (entry === undefined) return {}
      const out: { [D in Quota.Dimension]?: LimiterStore.Level } = {}
      for (const dimension of Quota.dimensions) {
        const last = entry.levels[dimension]
        if (last === undefined) continue
        const rate = entry.definition?.[dimension]?.r ?? 0
        const refilled = last.level >= last.capacity
          ? last.level
          : Math.min(last.capacity, last.level + rate * Math.max(0, now - entry.levelsAt))
        const change = waiting.delta[dimension] ?? 0
        out[dimension] = {
          level: change >= 0 ? refilled - change : Math.min(last.capacity, refilled - change),
          capacity: last.capacity
        }
      }
      return out
    }

    /** Whether a settlement gives back and takes nothing. */
    const refundOnly = (delta: Cost.Delta): boolean => {
      for (const dimension of Quota.dimensions) {
        const change = delta[dimension]
        if (change !== undefined && change > 0) return false
      }
      return true
    }

    const noDelta = JSON.stringify({ delta: {} })
    /**
     * Sends a key's pending settlement by itself (an adjust of nothing that carries
     * it). Where Redis is unreachable it is dropped, as any shared settlement then.
     */
    const flush = (key: string) =>
      Effect.suspend(() => {
        const waiting = pending.get(key)
        if (waiting === undefined) return Effect.void
        return Effect.ignore(either(
          "adjust",
          call(key, "adjust", noDelta, (answer) => levelsOf(answer.levels)),
          Effect.sync((): LimiterStore.Levels => {
            if (pending.get(key) === waiting) pending.delete(key)
            return {}
          })
        ))
      })

    /** The store's one flusher: sleeps until the oldest pending settlement is `settleWithin` old, sends the due ones. */
    const flusher = Effect.gen(function*() {
      while (true) {
        yield* flushDue.await
        const now = clock.unsafeCurrentTimeMillis()
        const due: Array<string> = []
        let next: number | undefined
        for (const [key, waiting] of pending) {
          if (waiting.since + settleWithin > now) {
            next = waiting.since + settleWithin
            break
          }
          due.push(key)
        }
        if (due.length > 0) yield* Effect.forEach(due, flush, { concurrency: "unbounded", discard: true })
        else if (next !== undefined) yield* Effect.sleep(Duration.millis(next - now))
        // Nothing pending: wait for the next settlement (checked and closed in one step, so none is missed).
        else flushDue.unsafeClose()
      }
    })
    yield* Effect.forkScoped(flusher)
    // On scope close, what is pending is sent (or dropped where Redis is unreachable) before the client goes.
    yield* Effect.addFinalizer(() =>
      Effect.forEach(Array.from(pending.keys()), flush, { concurrency: "unbounded", discard: true })
    )

    return LimiterStore.LimiterStore.of({
      define: (key, quota) =>
        Effect.zipRight(
          setDefinition(key, definitionOf(quota)),
          traced(key, "define", call(key, "define", "{}", (answer) => levelsOf(answer.levels)), localLevels(key))
        ),
      reserve: (key, amounts: Cost.Amounts, reserveOptions) =>
        either(
          "reserve",
          call(
            key,
            "reserve",
            JSON.stringify({ amounts, headroom: reserveOptions.headroom, margin: reserveOptions.margin ?? 0 }),
            (answer): LimiterStore.Reservation =>
              answer.tag === "Granted"
                ? { _tag: "Granted", levels: levelsOf(answer.levels), origin: "shared" }
                : answer.tag === "TooLarge"
                ? { _tag: "TooLarge", dimension: answer.dimension, amount: answer.amount, capacity: answer.capacity }
                : {
                  _tag: "Wait",
                  delay: Duration.millis(answer.delay),
                  reason: answer.reason,
                  levels: levelsOf(answer.levels)
                }
          ),
          Effect.map(
            local.reserve(key, amounts, reserveOptions),
            (reservation): LimiterStore.Reservation =>
              reservation._tag === "Granted" ? { ...reservation, origin: "local" } : reservation
          )
        ),
      adjust: (key, delta, origin) => {
        // A local reservation is settled locally, always; a shared one on Redis, or nowhere while
        // Redis is unreachable (the shared bucket refills by itself), never into the local share.
        if (origin === "local") return local.adjust(key, delta)
        // A shared refund travels with the key's next operation (one round trip per call), unless Redis is
        // failing (it is sent now, or dropped), the store is strict (every failure is the caller's), or
        // nothing may wait. A charge goes now: another process would grant against it meanwhile.
        if (origin === "shared" && !strict && !circuit.open && settleWithin > 0 && refundOnly(delta)) {
          return Effect.sync(() => defer(key, delta))
        }
        const remote = call(key, "adjust", JSON.stringify({ delta }), (answer) => levelsOf(answer.levels))
        return traced(key, "adjust", remote, origin === "shared" ? localLevels(key) : local.adjust(key, delta))
      },
      observe: (key, snapshot: RateLimitSnapshot) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const age = snapshot.observedAt === undefined ? 0 : Math.max(0, now - snapshot.observedAt)
          // A 429's pause holds locally too, should Redis fail before it ends.
          if (snapshot.retryAfter !== undefined && !strict) {
            yield* local.pause(key, Duration.millis(Math.max(0, Duration.toMillis(snapshot.retryAfter) - age)))
          }
          const observation = yield* traced(
            key,
            "observe",
            call(
              key,
              "observe",
              JSON.stringify({
                dimensions: Object.fromEntries(
                  Object.entries(snapshot.dimensions).map((
                    [dimension, state]
                  ) => [dimension, { limit: state?.limit, remaining: state?.remaining }])
                ),
                retryAfter: snapshot.retryAfter === undefined ? undefined : Duration.toMillis(snapshot.retryAfter),
                age
              }),
              (answer): LimiterStore.Observation => ({
                lowered: Array.isArray(answer.lowered) ? answer.lowered : [],
                discovered: Array.isArray(answer.discovered) ? answer.discovered : [],
                levels: levelsOf(answer.levels)
              })
            ),
            local.observe(key, localSnapshot(snapshot, share))
          )
          // Learned after the store has folded the snapshot, so that it reports what it discovered.
          yield* setDefinition(key, learn(known.get(key)?.definition ?? {}, snapshot))
          return observation
        }),
      pause: (key, duration) =>
        Effect.zipRight(
          strict ? Effect.void : local.pause(key, duration),
          traced(
            key,
            "pause",
            call(
              key,
              "pause",
              JSON.stringify({ ms: Duration.toMillis(duration) }),
              (answer) => Duration.millis(answer.pausedFor)
            ),
            local.pause(key, duration)
          )
        ),
      state: (key) =>
        traced(
          key,
          "state",
          call(key, "state", "{}", (answer): LimiterStore.KeyState => ({
            levels: levelsOf(answer.levels),
            pausedFor: Duration.millis(answer.pausedFor)
          })),
          local.state(key)
        )
    })
  })

/**
 * The Redis store as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<LimiterStore.LimiterStore> =>
  Layer.scoped(LimiterStore.LimiterStore, make(options))
