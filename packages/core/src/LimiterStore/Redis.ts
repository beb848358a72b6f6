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
 * - The per-call operations, the reservation and the `observe` of a response's
 *   headers, have no span of their own (a span cost about as much CPU as the
 *   rest of the store's work: 12 µs of an observe's 50); the other operations
 *   have one each.
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
 * - The entry (`<prefix>:limiter:<key>`) holds what every operation reads and
 *   writes, as little-endian doubles (exact to the last bit): the pause, and per
 *   bucket its capacity, refill, level, when it was updated, the total granted and
 *   the grant history's open group (the last 5 s); then a tail with each
 *   bucket's stated limit and drift, which a reservation copies without reading.
 *   The history's closed groups live in MessagePack in
 *   `<prefix>:limiter:<key>:cold`, read only by `define`, a key that comes back,
 *   a grant that closes a group, and an `observe` of a snapshot older than the
 *   open group; it lives as long as the entry and `definitionTtl` at least. An
 *   entry an earlier version wrote in one key (JSON or MessagePack) is read and
 *   written back in this layout.
 * - An entry expires `idleTtl` (default 10 minutes; up to a quarter more, so that
 *   most writes keep its expiry) after the last operation, but never before its
 *   pause has ended and its buckets are full again, so an expired entry is one
 *   that would come back full and unpaused anyway.
 * - Each key's definition (its configured or learned limits) lives in a second
 *   key, `<prefix>:limiter:<key>:definition`, rewritten whenever the limits change
 *   and kept `definitionTtl` (default 24 hours) past the entry. A key whose entry
 *   expired comes back with full buckets from it, whichever process touches it
 *   first, even one that never saw the headers that taught the limits; without
 *   it, from the definition this process sends (configured, or learned from the
 *   snapshots it observed). A key is unlimited only while nobody has defined it
 *   and no snapshot has stated its limits. (In a Redis Cluster, give `prefix` a
 *   hash tag, e.g. `"{sluice}"`, so that the three keys share a slot.)
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
 * The Lua script: `KEYS[1]` the entry, `KEYS[2]` the definition, `KEYS[3]` the
 * cold part; `ARGV` op, idle
 * TTL (ms), this process's JSON definition or "", definition TTL (ms), the
 * settlement carried from earlier calls (four numbers, one per dimension in
 * `Quota.dimensions`' order, applied before the operation as `adjust` would; ""
 * or 0 for none), then the operation's own: `reserve` the four amounts, headroom
 * and margin; `adjust` the four changes; `pause` its milliseconds; `observe` the
 * snapshot as JSON. The answer is binary: a tag byte (`G`ranted, `W`ait,
 * `T`ooLarge, `L`evels, `O`bserved, `P`aused, `S`tate), the operation's fields
 * (little-endian doubles; a dimension as its 1-based index, 0 for "paused"), and
 * the levels: a byte with a bit per dimension that has a bucket, then each one's
 * level and capacity; `observe` adds its JSON last when it lowered or discovered a limit.
 *
 * `KEYS[3]` is the cold key. The entry is a marker byte (1), a byte with a bit
 * per dimension that has a bucket, the pause, when the cold key and the entry
 * expire, then per bucket eight doubles: capacity, refill, level, updated at,
 * granted in all and the grant history's open group (first, granted at first,
 * last), then per bucket four doubles: stated limit, and the drift's nominal
 * refill, estimate and last gap (-1 for none). The cold key, MessagePack (the
 * history's closed groups), is read only by `define`, a key that comes back, a
 * grant that closes a 5 s group and an `observe` of a snapshot older than the
 * open group.
 *
 * @since 0.1.0
 * @category utilities
 */
export const script = `
local max, min, floor, ceil = math.max, math.min, math.floor, math.ceil
local spack, sunpack, num = struct.pack, struct.unpack, tonumber
local key = KEYS[1]
local defKey = KEYS[2]
local coldKey = KEYS[3]
local op = ARGV[1]
local ttl = num(ARGV[2])
local defTtl = num(ARGV[4])
local t = redis.call('TIME')
local now = num(t[1]) * 1000 + num(t[2]) / 1000
local dims = {'requests', 'inputTokens', 'outputTokens', 'tokens'}
local span, maxGroups = 5000, 36
-- The entry, read and written by every operation: the pause, when the cold key and the entry expire, and
-- per dimension (B[i], in dims' order) { capacity, refill per ms, level, updated at, granted in all, and the
-- open group of the grant history: first, granted at first, last (first < 0: none) }.
local B = {}
local p, coldUntil, expires = -1, -1, -1
-- The entry's tail, left as it is unless an operation reads it (W, by warm()): per bucket of the parsed
-- mask, { stated limit (< 0: its capacity), and the drift: nominal refill (< 0: none), estimate, last gap }.
-- tailAt: where it starts in the entry read (0: no entry of this layout was read).
local tailAt, tailMask, W = 0, 0, nil
-- The cold key (MessagePack, read only where needed): g the grant history's closed groups per dimension
-- ({ s start, b granted before, g groups of [first, at first, last, cumulative] }).
local C = nil
local coldChanged = false
local raw = redis.call('GET', key)
-- Whether the entry must be written even by an operation that changes nothing (it was missing or came back).
local fresh = not raw
-- Whether the definition changed, so that the long-lived definition key is rewritten.
local redefined = false
-- Whether a settlement carried from earlier calls (or a rewrite of an older layout) changed the entry, so that even a Wait or a state saves it.
local carried = false

local function cold()
  if C == nil then
    local coldRaw = redis.call('GET', coldKey)
    if coldRaw then C = cmsgpack.unpack(coldRaw) end
    if type(C) ~= 'table' then C = {} end
    if type(C.g) ~= 'table' then C.g = {} end
  end
  return C
end
-- The entry's tail, read: W[i] for each bucket that was in the entry when it was read.
local function warm()
  if W == nil then
    W = {}
    local m, pos = tailMask, tailAt
    for i = 1, 4 do
      if m % 2 == 1 then
        if pos > 0 and #raw >= pos + 31 then
          local l, n, f, g, after = sunpack('<dddd', raw, pos)
          W[i] = { l, n, f, g }
          pos = after
        else
          W[i] = { -1, -1, 0, 0 }
        end
      end
      m = floor(m / 2)
    end
  end
  return W
end
local function newHistory() return { s = now, b = 0, g = {} } end
local function total(h)
  local n = #h.g
  if n > 0 then return h.g[n][4] end
  return h.b
end

if raw then
  local first = string.byte(raw, 1)
  if first == 1 then
    local mask, pause, cu, u, pos = sunpack('<Bddd', raw, 2)
    p, coldUntil, expires, tailMask = pause, cu, u, mask
    local n = (mask % 2) + (floor(mask / 2) % 2) + (floor(mask / 4) % 2) + (floor(mask / 8) % 2)
    if n > 0 then
      local f = { sunpack('<' .. string.rep('dddddddd', n), raw, pos) }
      local k = 0
      for i = 1, 4 do
        if mask % 2 == 1 then
          B[i] = { f[k + 1], f[k + 2], f[k + 3], f[k + 4], f[k + 5], f[k + 6], f[k + 7], f[k + 8] }
          k = k + 8
        end
        mask = floor(mask / 2)
      end
      tailAt = pos + 64 * n
    end
  else
    -- An entry an earlier version wrote in one piece (JSON, then MessagePack): its buckets and each
    -- history's last group stay in the entry, the rest goes to the cold key; written back in this layout.
    local old
    if first == 123 then old = cjson.decode(raw) else old = cmsgpack.unpack(raw) end
    if type(old) ~= 'table' then old = {} end
    C = { g = {} }
    coldChanged = true
    W = {}
    carried = true
    local ol, od = old.l, old.d
    if type(ol) ~= 'table' then ol = {} end
    if type(od) ~= 'table' then od = {} end
    if type(old.p) == 'number' then p = old.p end
    local ob, og = old.b, old.g
    if type(og) ~= 'table' then og = {} end
    if type(ob) == 'table' then
      for i, d in ipairs(dims) do
        local b = ob[d]
        if type(b) == 'table' then
          local h = og[d]
          if type(h) ~= 'table' or type(h.g) ~= 'table' then h = newHistory() end
          local sum, gf, ga, gl = h.b, -1, 0, 0
          if #h.g > 0 then
            local last = table.remove(h.g)
            gf, ga, gl, sum = last[1], last[2], last[3], last[4]
          end
          B[i] = { b.c, b.r, b.v, b.u, sum, gf, ga, gl }
          C.g[d] = h
          local w = { -1, -1, 0, 0 }
          if type(ol[d]) == 'number' then w[1] = ol[d] end
          local dr = od[d]
          if type(dr) == 'table' and type(dr.n) == 'number' then w[2], w[3], w[4] = dr.n, dr.f or 0, dr.g or 0 end
          W[i] = w
        end
      end
    end
  end
end

local function level(b)
  if b[3] >= b[1] then return b[1] end
  return min(b[1], b[3] + max(0, now - b[4]) * b[2])
end
local function advance(b)
  if now > b[4] then b[3] = level(b); b[4] = now end
end
-- The levels as the answer carries them: a byte with a bit per dimension that has a bucket (dims' order),
-- then each one's level and capacity (little-endian doubles).
local function levels()
  local mask, n, values = 0, 0, {}
  for i = 1, 4 do
    local b = B[i]
    if b then
      mask = mask + 2 ^ (i - 1)
      values[n + 1] = level(b)
      values[n + 2] = b[1]
      n = n + 2
    end
  end
  return spack('<B' .. string.rep('d', n), mask, unpack(values))
end
-- LimiterStore.GrantHistory: a grant extends the open group (hot) while it is younger than span; a group
-- that closes joins the cold history, which keeps maxGroups groups with the open one.
local function record(i, amount)
  local b = B[i]
  if amount == nil or amount == 0 or not b then return end
  local sum = b[5] + amount
  if b[6] >= 0 and now - b[6] < span then
    if now <= b[6] then b[7] = sum end
    if now > b[8] then b[8] = now end
  else
    if b[6] >= 0 then
      local c = cold()
      local d = dims[i]
      local h = c.g[d]
      if type(h) ~= 'table' or type(h.g) ~= 'table' then
        h = { s = now, b = b[5], g = {} }
      else
        table.insert(h.g, { b[6], b[7], b[8], b[5] })
        while #h.g > maxGroups - 1 do
          local dropped = table.remove(h.g, 1)
          h.s = dropped[3]
          h.b = dropped[4]
        end
      end
      c.g[d] = h
      coldChanged = true
    end
    b[6] = now
    b[7] = sum
    b[8] = now
  end
  b[5] = sum
end
local function grantedSince(i, b, at)
  -- Since a moment within the open group (a snapshot read moments ago): the entry alone answers.
  if b[6] >= 0 and at >= b[6] then
    if at < b[8] then return b[5] - (b[7] + (b[5] - b[7]) * (at - b[6]) / (b[8] - b[6])) end
    return 0
  end
  local h = cold().g[dims[i]]
  if type(h) ~= 'table' or type(h.g) ~= 'table' or at < h.s then return nil end
  local sum = b[5]
  local before = h.b
  local n = #h.g
  for k = 1, n + 1 do
    local f, a, l, cum
    if k <= n then
      local g = h.g[k]
      f, a, l, cum = g[1], g[2], g[3], g[4]
    elseif b[6] >= 0 then
      f, a, l, cum = b[6], b[7], b[8], sum
    else
      break
    end
    if at < f then return sum - before end
    if at < l then return sum - (a + (cum - a) * (at - f) / (l - f)) end
    before = cum
  end
  return sum - before
end
local function define(def)
  local c = cold()
  local buckets, limits, grants = {}, {}, {}
  for i, d in ipairs(dims) do
    local q = def[d]
    if type(q) == 'table' then
      local old = B[i]
      local h = c.g[d]
      if type(h) ~= 'table' or type(h.g) ~= 'table' then h = newHistory() end
      if old then
        advance(old)
        buckets[i] = { q.c, q.r, min(old[3], q.c), old[4], old[5], old[6], old[7], old[8] }
      else
        buckets[i] = { q.c, q.r, q.c, now, total(h), -1, 0, 0 }
      end
      limits[i] = { q.l, -1, 0, 0 }
      grants[d] = h
    end
  end
  B = buckets
  W = limits
  c.g = grants
  coldChanged = true
  redefined = true
end
local function hasBuckets() return B[1] ~= nil or B[2] ~= nil or B[3] ~= nil or B[4] ~= nil end
-- The definition that outlives the entry: each bucket's capacity, nominal refill and stated limit.
local function definition()
  local w = warm()
  local out = {}
  for i, d in ipairs(dims) do
    local b = B[i]
    if b then
      local r, l = b[2], b[1]
      local x = w[i]
      if x then
        if x[2] >= 0 then r = x[2] end
        if x[1] >= 0 then l = x[1] end
      end
      out[d] = { c = b[1], r = r, l = l }
    end
  end
  return out
end
-- A settlement in ARGV[from .. from + 3]: charges (positive) and refunds (negative) per dimension; a refund never fills past capacity.
local function settle(from)
  for i = 1, 4 do
    local b = B[i]
    local change = num(ARGV[from + i - 1])
    if b and change and change ~= 0 then
      advance(b)
      if change >= 0 then b[3] = b[3] - change else b[3] = min(b[1], b[3] - change) end
      record(i, change)
      carried = true
    end
  end
end
local function save()
  -- The entry lives until its pause has ended and its buckets are full again, and idleTtl at least.
  local quiet = max(0, p - now)
  local mask, n, f = 0, 0, {}
  for i = 1, 4 do
    local b = B[i]
    if b then
      local missing = b[1] - level(b)
      if missing > 0 then
        if b[2] > 0 then quiet = max(quiet, missing / b[2]) else quiet = max(quiet, ttl) end
      end
      mask = mask + 2 ^ (i - 1)
      for j = 1, 8 do f[n + j] = b[j] end
      n = n + 8
    end
  end
  local px = max(ttl, ceil(min(quiet, 2592000000)) + 1000)
  -- The cold key lives as long as the entry, and definitionTtl at least: rewritten when it changed, else
  -- its expiry pushed once the entry would outlive it.
  local keep = max(defTtl, px)
  if coldChanged then
    redis.call('SET', coldKey, cmsgpack.pack(C), 'PX', keep)
    coldUntil = now + keep
  elseif coldUntil < now + px then
    redis.call('PEXPIRE', coldKey, keep)
    coldUntil = now + keep
  end
  -- The entry's expiry is set with a quarter of idleTtl to spare, so that most writes keep it as it is.
  local keepTtl = expires >= now + px
  if not keepTtl then expires = now + px + floor(ttl / 4) end
  local head = spack('<BBddd' .. string.rep('d', n), 1, mask, p, coldUntil, expires, unpack(f))
  if keepTtl and W == nil and tailAt > 0 and mask == tailMask then
    -- The same buckets, the tail unread and the expiry kept: only the part before the tail is rewritten.
    redis.call('SETRANGE', key, 0, head)
  else
    local tail = ''
    if W then
      local values, k = {}, 0
      for i = 1, 4 do
        if B[i] then
          local w = W[i] or { -1, -1, 0, 0 }
          values[k + 1], values[k + 2], values[k + 3], values[k + 4] = w[1], w[2], w[3], w[4]
          k = k + 4
        end
      end
      if k > 0 then tail = spack('<' .. string.rep('d', k), unpack(values)) end
    elseif tailAt > 0 then
      tail = string.sub(raw, tailAt)
    end
    if keepTtl then
      redis.call('SET', key, head .. tail, 'KEEPTTL')
    else
      redis.call('SET', key, head .. tail, 'PX', ceil(expires - now))
    end
  end
  if redefined and hasBuckets() then
    redis.call('SET', defKey, cjson.encode(definition()), 'PX', max(defTtl, px))
  elseif fresh and hasBuckets() then
    redis.call('PEXPIRE', defKey, max(defTtl, px))
  end
end

if op ~= 'define' and not hasBuckets() then
  -- A key with no buckets (new, or expired) comes back with its definition: the one persisted by any
  -- process, else this process's (configured or learned); never unlimited while either exists.
  local persisted = redis.call('GET', defKey)
  if persisted then
    define(cjson.decode(persisted))
    redefined = false
    fresh = true
  elseif ARGV[3] ~= '' then
    define(cjson.decode(ARGV[3]))
    fresh = true
  end
end
-- What earlier calls settled comes first: it happened before this operation.
settle(5)
if op == 'define' and ARGV[3] ~= '' then define(cjson.decode(ARGV[3])) end

if op == 'reserve' then
  if p > now then
    if fresh or carried then save() end
    return 'W' .. spack('<dB', p - now, 0) .. levels()
  end
  local headroom = num(ARGV[13])
  local margin = num(ARGV[14]) or 0
  local latest, reason = now, nil
  for i = 1, 4 do
    local b = B[i]
    if b then
      local amount = num(ARGV[8 + i])
      local need = amount + max(0, min(headroom * b[1] + margin * b[2], b[1] - amount))
      local tol = 1e-9 * max(1, math.abs(need))
      if need > b[1] + tol then
        if carried then save() end
        return 'T' .. spack('<Bdd', i, amount, b[1])
      end
      local lv = level(b)
      local at = now
      if lv < need - tol then at = max(now, b[4]) + (need - lv) / b[2] end
      if at > latest then latest = at; reason = i end
    end
  end
  if reason then
    if fresh or carried then save() end
    return 'W' .. spack('<dB', latest - now, reason) .. levels()
  end
  for i = 1, 4 do
    local b = B[i]
    if b then
      local amount = num(ARGV[8 + i])
      advance(b)
      b[3] = b[3] - amount
      record(i, amount)
    end
  end
  save()
  return 'G' .. levels()
elseif op == 'define' then
  save()
  return 'L' .. levels()
elseif op == 'adjust' then
  settle(9)
  save()
  return 'L' .. levels()
elseif op == 'observe' then
  -- A snapshot read age ms ago: its remaining is projected to now (LimiterStore.projectRemaining).
  local arg = cjson.decode(ARGV[9])
  local w = warm()
  local age = 0
  if type(arg.age) == 'number' and arg.age > 0 then age = arg.age end
  local lowered, discovered = {}, {}
  for i, d in ipairs(dims) do
    local s = arg.dimensions[d]
    if s then
      local b = B[i]
      local stated = nil
      if type(s.limit) == 'number' and s.limit > 0 then stated = s.limit end
      if not b then
        if stated then
          local remaining = stated
          if type(s.remaining) == 'number' then remaining = min(stated, max(0, s.remaining) + stated / 60000 * age) end
          b = { stated, stated / 60000, remaining, now, 0, -1, 0, 0 }
          w[i] = { stated, -1, 0, 0 }
          cold().g[d] = newHistory()
          coldChanged = true
          redefined = true
          table.insert(discovered, d)
        end
      elseif stated and stated < (w[i] and w[i][1] >= 0 and w[i][1] or b[1]) then
        local from = w[i] and w[i][1] >= 0 and w[i][1] or b[1]
        advance(b)
        b[2] = b[2] * stated / from
        b[1] = min(b[1], stated)
        b[3] = min(b[3], b[1])
        local dr = w[i] or { -1, -1, 0, 0 }
        if dr[2] >= 0 then dr[2] = dr[2] * stated / from; dr[3] = dr[3] * stated / from end
        dr[1] = stated
        w[i] = dr
        redefined = true
        table.insert(lowered, { dimension = d, from = from, to = stated })
      end
      if b and type(s.remaining) == 'number' then
        advance(b)
        local r = max(0, s.remaining)
        local x = w[i]
        local dr = x and x[2] >= 0
        local nominal = b[2]
        local estimate = 0
        if dr then nominal = x[2]; estimate = x[3] end
        local known = true
        if age > 0 then
          local since = grantedSince(i, b, now - age)
          if since == nil then known = false else r = min(b[1], r + nominal * age) - since end
        end
        if known then
          -- LimiterStore.learnDrift: refill at nominal - max(0, estimate); a positive gap raises the
          -- estimate by gap / tau, a change of a non-positive gap moves it by change / (6 tau).
          local gap = b[3] - (r + 1)
          if dr and nominal > 0 then
            local tau = b[1] / nominal / 12
            local bound = 0.9 * nominal
            local settled = min(0, gap) - x[4]
            estimate = min(bound, max(-bound, estimate + max(0, gap) / tau + settled / (6 * tau)))
            b[2] = nominal - max(0, estimate)
          end
          local stated = -1
          if x then stated = x[1] end
          if gap > 0 then
            b[3] = r
            w[i] = { stated, nominal, estimate, -1 }
          else
            w[i] = { stated, nominal, estimate, gap }
          end
        end
      end
      if b then B[i] = b end
    end
  end
  if type(arg.retryAfter) == 'number' then p = max(p, now + arg.retryAfter - age) end
  save()
  if #lowered == 0 and #discovered == 0 then return 'O' .. levels() end
  return 'O' .. levels() .. cjson.encode({ lowered = lowered, discovered = discovered })
elseif op == 'pause' then
  p = max(p, now + num(ARGV[9]))
  save()
  return 'P' .. spack('<d', p - now)
elseif op == 'state' then
  if carried then save() end
  return 'S' .. spack('<d', max(0, p - now)) .. levels()
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
  /** entry, definition key, cold key, op, idle TTL, definition, definition TTL, four carried changes, the operation's arguments. */
  sluiceLimiterBuffer(...args: ReadonlyArray<string | number>): Promise<Buffer>
}

/** What this process keeps of a key it has limits for: its Redis keys, its definition, its last levels. */
interface Known {
  readonly entry: string
  readonly definitionKey: string
  readonly coldKey: string
  /** This process's definition of the key (configured, then learned), and its encoding for the script ("" if none). */
  definition: Definition | undefined
  encoded: string
  /** The levels Redis last answered for the key, and when (this process's clock), to estimate a deferred settlement's. */
  levels: LimiterStore.Levels
  levelsAt: number
}

/** Settlements of shared reservations not yet sent: per key, the summed change per dimension (`Quota.dimensions`' order) and when the first was made. */
interface Pending {
  readonly delta: Array<number>
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

/** The tags of the script's answers (their first byte). */
const tagGranted = 0x47 // G
const tagWait = 0x57 // W
const tagTooLarge = 0x54 // T

/** The levels in an answer from `offset` on: a byte with a bit per dimension that has a bucket, then each one's level and capacity. */
const levelsAt = (answer: Buffer, offset: number): LimiterStore.Levels => {
  const out: { [D in Quota.Dimension]?: LimiterStore.Level } = {}
  const mask = answer[offset] ?? 0
  let at = offset + 1
  for (let i = 0; i < 4; i++) {
    if ((mask & (1 << i)) === 0) continue
    out[Quota.dimensions[i]!] = { level: answer.readDoubleLE(at), capacity: answer.readDoubleLE(at + 8) }
    at += 16
  }
  return out
}

/** Where the levels that start at `offset` end. */
const levelsEnd = (answer: Buffer, offset: number): number => {
  const mask = answer[offset] ?? 0
  let at = offset + 1
  for (let i = 0; i < 4; i++) if ((mask & (1 << i)) !== 0) at += 16
  return at
}

/** A reservation's options (`LimiterStore.reserve`'s third argument). */
type ReserveOptions = Parameters<LimiterStore.LimiterStore["Type"]["reserve"]>[2]

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
    client.defineCommand("sluiceLimiter", { numberOfKeys: 3, lua: script })
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
          coldKey: `${name}:cold`,
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

    /** The key's pending settlement, taken to travel with the operation being sent. */
    const takePending = (key: string): Pending | undefined => {
      const waiting = pending.get(key)
      if (waiting === undefined) return undefined
      pending.delete(key)
      return waiting
    }

    /** Keeps the levels Redis answered for a key with limits, to estimate the levels after a deferred settlement. */
    const noteLevels = (key: string, levels: LimiterStore.Levels) => {
      const entry = known.get(key) ?? (Object.keys(levels).length > 0 ? knownOf(key) : undefined)
      if (entry === undefined) return
      entry.levels = levels
      entry.levelsAt = clock.unsafeCurrentTimeMillis()
    }

    /** The levels in an answer from `offset` on, kept for the key. */
    const answered = (key: string, answer: Buffer, offset: number): LimiterStore.Levels => {
      const levels = levelsAt(answer, offset)
      noteLevels(key, levels)
      return levels
    }

    /** A reservation answered by the script. */
    const reservationOf = (key: string, answer: Buffer): LimiterStore.Reservation => {
      const tag = answer[0]
      if (tag === tagGranted) return { _tag: "Granted", levels: answered(key, answer, 1), origin: "shared" }
      if (tag === tagWait) {
        const reason = answer[9]!
        return {
          _tag: "Wait",
          delay: Duration.millis(answer.readDoubleLE(1)),
          reason: reason === 0 ? "paused" : Quota.dimensions[reason - 1]!,
          levels: answered(key, answer, 10)
        }
      }
      if (tag === tagTooLarge) {
        return {
          _tag: "TooLarge",
          dimension: Quota.dimensions[answer[1]! - 1]!,
          amount: answer.readDoubleLE(2),
          capacity: answer.readDoubleLE(10)
        }
      }
      throw new Error(`unexpected answer from the limiter script: ${answer.toString("latin1")}`)
    }

    /** Sends the script on the key with the operation's arguments after the common ones, carrying the key's pending settlement. */
    const send = (key: string, op: string, args: ReadonlyArray<string | number>): Promise<Buffer> => {
      const entry = known.get(key)
      const name = entry?.entry ?? `${prefix}:limiter:${key}`
      const carried = takePending(key)?.delta
      return redis.sluiceLimiterBuffer(
        name,
        entry?.definitionKey ?? `${name}:definition`,
        entry?.coldKey ?? `${name}:cold`,
        op,
        ttl,
        entry?.encoded ?? "",
        definitionTtl,
        carried?.[0] ?? 0,
        carried?.[1] ?? 0,
        carried?.[2] ?? 0,
        carried?.[3] ?? 0,
        ...args
      )
    }

    // A client that times its commands out (ours does) needs no timeout of ours; a client given without one gets it.
    const timesOut = client.options.commandTimeout !== undefined && client.options.commandTimeout > 0
    /**
     * One script on the key, carrying the key's pending settlement; `args` are
     * the operation's, `decode` reads the answer's fields.
     */
    const call = <A>(
      key: string,
      op: string,
      args: ReadonlyArray<string | number>,
      decode: (answer: Buffer) => A
    ): Effect.Effect<A, LimiterStore.LimiterStoreError> => {
      const sent = Effect.tryPromise({
        try: () => send(key, op, args),
        catch: (cause) => new LimiterStore.LimiterStoreError({ key, operation: op, cause })
      })
      return (timesOut
        ? sent
        : Effect.timeoutFail(sent, {
          duration: timeout,
          onTimeout: () => new LimiterStore.LimiterStoreError({ key, operation: op, cause: "timed out" })
        })).pipe(Effect.map(decode))
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

    /** The reservation from the local share, as the fallback answers it. */
    const reserveLocal = (key: string, amounts: Cost.Amounts, reserveOptions: ReserveOptions) =>
      Effect.map(
        local.reserve(key, amounts, reserveOptions),
        (reservation): LimiterStore.Reservation =>
          reservation._tag === "Granted" ? { ...reservation, origin: "local" } : reservation
      )

    /** Sends a reservation's script: the common arguments, the key's pending settlement, amounts, headroom and margin. */
    const sendReserve = (
      key: string,
      amounts: Cost.Amounts,
      reserveOptions: ReserveOptions
    ): Promise<Buffer> => {
      const entry = known.get(key)
      if (entry === undefined) {
        return send(key, "reserve", [
          amounts.requests,
          amounts.inputTokens,
          amounts.outputTokens,
          amounts.tokens,
          reserveOptions.headroom,
          reserveOptions.margin ?? 0
        ])
      }
      const carried = takePending(key)?.delta
      return redis.sluiceLimiterBuffer(
        entry.entry,
        entry.definitionKey,
        entry.coldKey,
        "reserve",
        ttl,
        entry.encoded,
        definitionTtl,
        carried?.[0] ?? 0,
        carried?.[1] ?? 0,
        carried?.[2] ?? 0,
        carried?.[3] ?? 0,
        amounts.requests,
        amounts.inputTokens,
        amounts.outputTokens,
        amounts.tokens,
        reserveOptions.headroom,
        reserveOptions.margin ?? 0
      )
    }

    /**
     * The per-call reservation. With the circuit closed (and a client that times
     * its commands out) it is one `Effect.async` around the script: the answer
     * decoded where the promise settles, the fallback built only when Redis fails.
     * Otherwise (circuit open, probing, strict, or a client without a command
     * timeout) it goes through `either` like every other operation.
     */
    const reserve = (
      key: string,
      amounts: Cost.Amounts,
      reserveOptions: ReserveOptions
    ): Effect.Effect<LimiterStore.Reservation, LimiterStore.LimiterStoreError> =>
      Effect.async((resume) => {
        if (strict || circuit.open || !timesOut) {
          resume(either(
            "reserve",
            call(key, "reserve", [
              amounts.requests,
              amounts.inputTokens,
              amounts.outputTokens,
              amounts.tokens,
              reserveOptions.headroom,
              reserveOptions.margin ?? 0
            ], (answer) => reservationOf(key, answer)),
            reserveLocal(key, amounts, reserveOptions)
          ))
          return
        }
        let sent: Promise<Buffer>
        try {
          sent = sendReserve(key, amounts, reserveOptions)
        } catch (cause) {
          sent = Promise.reject(cause)
        }
        sent.then(
          (answer) => {
            let reservation: LimiterStore.Reservation
            try {
              reservation = reservationOf(key, answer)
            } catch (defect) {
              resume(Effect.die(defect))
              return
            }
            // Another operation opened the circuit meanwhile: this answer closes it again.
            resume(circuit.open ? Effect.as(close, reservation) : Effect.succeed(reservation))
          },
          (cause) =>
            resume(Effect.zipRight(
              fail(
                "reserve",
                new LimiterStore.LimiterStoreError({ key, operation: "reserve", cause }),
                clock.unsafeCurrentTimeMillis(),
                "redis"
              ),
              reserveLocal(key, amounts, reserveOptions)
            ))
        )
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
        waiting = { delta: [0, 0, 0, 0], since: now }
        pending.set(key, waiting)
        if (pending.size === 1) flushDue.unsafeOpen()
      }
      const sum = waiting.delta
      for (let i = 0; i < 4; i++) {
        const change = delta[Quota.dimensions[i]!]
        if (change !== undefined && change !== 0) sum[i] = sum[i]! + change
      }
      const entry = known.get(key)
      if (entry === undefined) return {}
      const out: { [D in Quota.Dimension]?: LimiterStore.Level } = {}
      for (let i = 0; i < 4; i++) {
        const dimension = Quota.dimensions[i]!
        const last = entry.levels[dimension]
        if (last === undefined) continue
        const rate = entry.definition?.[dimension]?.r ?? 0
        const refilled = last.level >= last.capacity
          ? last.level
          : Math.min(last.capacity, last.level + rate * Math.max(0, now - entry.levelsAt))
        const change = sum[i]!
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

    const noDelta = [0, 0, 0, 0]
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
          call(key, "adjust", noDelta, (answer) => answered(key, answer, 1)),
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
          traced(key, "define", call(key, "define", [], (answer) => answered(key, answer, 1)), localLevels(key))
        ),
      reserve,
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
        const remote = call(
          key,
          "adjust",
          [delta.requests ?? 0, delta.inputTokens ?? 0, delta.outputTokens ?? 0, delta.tokens ?? 0],
          (answer) => answered(key, answer, 1)
        )
        return traced(key, "adjust", remote, origin === "shared" ? localLevels(key) : local.adjust(key, delta))
      },
      // Per call (every response's headers), so no span of its own, as the reservation.
      observe: (key, snapshot: RateLimitSnapshot) =>
        Effect.suspend(() => {
          const now = clock.unsafeCurrentTimeMillis()
          const age = snapshot.observedAt === undefined ? 0 : Math.max(0, now - snapshot.observedAt)
          const folded = either(
            "observe",
            call(
              key,
              "observe",
              [JSON.stringify({
                dimensions: Object.fromEntries(
                  Object.entries(snapshot.dimensions).map((
                    [dimension, state]
                  ) => [dimension, { limit: state?.limit, remaining: state?.remaining }])
                ),
                retryAfter: snapshot.retryAfter === undefined ? undefined : Duration.toMillis(snapshot.retryAfter),
                age
              })],
              (answer): LimiterStore.Observation => {
                // Nothing lowered or discovered: no JSON. Lua's cjson turns an empty list into `{}`: what
                // is not a list is none.
                const end = levelsEnd(answer, 1)
                const { discovered, lowered } = end < answer.length
                  ? JSON.parse(answer.toString("utf8", end))
                  : { discovered: [], lowered: [] }
                return {
                  lowered: Array.isArray(lowered) ? lowered : [],
                  discovered: Array.isArray(discovered) ? discovered : [],
                  levels: answered(key, answer, 1)
                }
              }
            ),
            // Built only when Redis fails: the local share's snapshot is a copy of every dimension.
            Effect.suspend(() => local.observe(key, localSnapshot(snapshot, share)))
          )
          // Learned after the store has folded the snapshot, so that it reports what it discovered.
          const learned = Effect.tap(
            folded,
            () => setDefinition(key, learn(known.get(key)?.definition ?? {}, snapshot))
          )
          // A 429's pause holds locally too, should Redis fail before it ends.
          return snapshot.retryAfter !== undefined && !strict
            ? Effect.zipRight(
              local.pause(key, Duration.millis(Math.max(0, Duration.toMillis(snapshot.retryAfter) - age))),
              learned
            )
            : learned
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
              [Duration.toMillis(duration)],
              (answer) => Duration.millis(answer.readDoubleLE(1))
            ),
            local.pause(key, duration)
          )
        ),
      state: (key) =>
        traced(
          key,
          "state",
          call(key, "state", [], (answer): LimiterStore.KeyState => ({
            levels: answered(key, answer, 9),
            pausedFor: Duration.millis(answer.readDoubleLE(1))
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
